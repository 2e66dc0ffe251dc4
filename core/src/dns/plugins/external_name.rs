//! ExternalName targets outside the cluster zones, resolved through the server's own chain.
//!
//! CoreDNS's kubernetes plugin answers an A/AAAA query for an ExternalName Service with the
//! CNAME to `spec.externalName` and, when the target is outside its zones, looks the target up
//! through the server's own plugin chain again (`plugin/pkg/upstream`: usually `forward`) and
//! appends the records found (`plugin/backend_lookup.go`, `A()`/`AAAA()`); targets inside its
//! zones it chases itself, which [`crate::dns::zone::ClusterZone`] already does.
//!
//! [`ExternalNameUpstream`] wraps a block's `kubernetes` plugin and does the outside part: when
//! the cluster answer to an A/AAAA question ends in a CNAME whose target is served by none of
//! the cluster zones and has no records in the answer, the target is asked through the
//! server's router (the block that serves the target's zone on the same address, as CoreDNS's
//! `server.ServeDNS`) and its answer records are appended. Re-entry is bounded by
//! [`MAX_HOPS`] (CoreDNS's `MaxreentryLoopCount`), so an ExternalName whose target a `rewrite`
//! maps back into the cluster zone ends with the CNAME instead of looping.

use std::sync::{Arc, OnceLock};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::router::WeakRouter;
use crate::dns::handler::{Next, Plugin, Reply, Request, Response};

/// How often one query may re-enter the server's chain (CoreDNS: `MaxreentryLoopCount` 3).
pub(crate) const MAX_HOPS: u8 = 3;

/// The `kubernetes` plugin of one server block, completing ExternalName answers through the
/// server (see the module documentation).
pub(crate) struct ExternalNameUpstream {
    cluster: Arc<dyn Plugin>,
    /// The router of the block's (first) address, set once the routers are built.
    upstream: OnceLock<WeakRouter>,
}

impl ExternalNameUpstream {
    /// Wraps `cluster`; answers stay CNAME-only until [`Self::set_upstream`].
    pub(crate) fn new(cluster: Arc<dyn Plugin>) -> Self {
        Self {
            cluster,
            upstream: OnceLock::new(),
        }
    }

    /// Where targets outside the cluster zones are asked (the first call wins).
    pub(crate) fn set_upstream(&self, router: WeakRouter) {
        let _ = self.upstream.set(router);
        // Answers given without an upstream (CNAME only) may now be completed.
        crate::dns::answer_cache::invalidate_all();
    }

    /// The CNAME target to look up for `resp`, the cluster answer to `req`, if any.
    fn dangling_target(&self, req: &Request, resp: &Response) -> Option<Name> {
        if resp.rcode != ResponseCode::NoError {
            return None;
        }
        let last = resp.answers.last()?;
        let RData::CNAME(target) = &last.data else {
            return None;
        };
        let target = target.0.clone();
        // Chased already (in-zone), or pointing at itself.
        if resp.answers.iter().any(|r| r.name == target) || target == *req.name() {
            return None;
        }
        let lower = lower_fqdn(&target);
        let zone = self.cluster.cluster_zone()?;
        if zone.origin_of(&lower).is_some() {
            return None;
        }
        Some(target)
    }
}

/// `name` in lower case with the trailing dot.
fn lower_fqdn(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// `resp` with the answer records of `found` appended (CoreDNS appends them whatever the
/// lookup's response code: the reply stays the cluster's NOERROR with the CNAME).
fn append(mut resp: Response, found: &Response) -> Response {
    if found.answers.is_empty() {
        return resp;
    }
    let mut answers: Vec<Record> = Vec::with_capacity(resp.answers.len() + found.answers.len());
    answers.extend(resp.answers.iter().cloned());
    answers.extend(found.answers.iter().cloned());
    resp.answers = answers.into();
    resp
}

impl Plugin for ExternalNameUpstream {
    fn name(&self) -> &'static str {
        self.cluster.name()
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let reply = self.cluster.handle(req, next);
        if !matches!(req.record_type(), RecordType::A | RecordType::AAAA) || req.hops >= MAX_HOPS {
            return reply;
        }
        // Only the cluster's own (synchronous) answers; a pending reply came from a later
        // plugin (fallthrough) and is not ours to complete.
        let Reply::Ready(mut resp) = reply else {
            return reply;
        };
        let Some(target) = self.dangling_target(req, &resp) else {
            return Reply::Ready(resp);
        };
        let Some(chain) = self
            .upstream
            .get()
            .and_then(|r| r.route(&lower_fqdn(&target)))
        else {
            return Reply::Ready(resp);
        };
        // Whatever the upstream answers (now or, if cached there, differently later) is not
        // served data of ours: this answer is not to be sent again from the wire cache.
        resp.reusable = false;
        let mut query = req.query.clone();
        query.set_name(target);
        // A new question as CoreDNS's upstream asks it: RD set, no EDNS, from the same client.
        let mut sub = Request::from_query(req.id, query, req.client, req.transport);
        sub.hops = req.hops + 1;
        match chain.handle(&sub) {
            Reply::Ready(found) => Reply::Ready(append(resp, &found)),
            Reply::Pending(fut) => {
                // A pending reply names its plugin itself (see `Response::plugin`).
                let plugin = resp.plugin.or(Some(self.cluster.name()));
                Reply::pending(async move {
                    let mut out = append(resp, &fut.await);
                    out.plugin = plugin;
                    out
                })
            }
        }
    }

    fn ready(&self) -> bool {
        self.cluster.ready()
    }

    fn cluster_zone(&self) -> Option<Arc<crate::dns::zone::ClusterZone>> {
        self.cluster.cluster_zone()
    }

    /// As the wrapped plugin; the answers it completes from the upstream are marked as not
    /// reusable.
    fn passes_answers_unchanged(&self) -> bool {
        self.cluster.passes_answers_unchanged()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::cluster::ClusterPlugin;
    use crate::dns::handler::Chain;
    use crate::dns::plugins::router::ZoneRouter;
    use crate::dns::zone::ZoneOptions;
    use crate::dns::zone::fixtures::{FIXTURE, snapshot};
    use hickory_proto::rr::rdata::{A, CNAME};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers every A question with 192.0.2.50 (like a forward upstream), optionally later
    /// (a pending reply), and counts the questions it saw.
    struct Upstream {
        asked: AtomicUsize,
        pending: bool,
    }
    impl Plugin for Upstream {
        fn name(&self) -> &'static str {
            "forward"
        }
        fn handle(&self, req: &Request, _next: Next) -> Reply {
            self.asked.fetch_add(1, Ordering::Relaxed);
            let rec = Record::from_rdata(req.name().clone(), 60, RData::A(A::new(192, 0, 2, 50)));
            let resp = Response::with_records(
                ResponseCode::NoError,
                vec![rec].into(),
                crate::dns::handler::empty_records(),
                crate::dns::handler::empty_records(),
            );
            if self.pending {
                Reply::pending(async move { resp })
            } else {
                Reply::Ready(resp)
            }
        }
    }

    /// Rewrites every name outside the cluster zone back to the ExternalName service (a loop).
    struct Back;
    impl Plugin for Back {
        fn name(&self) -> &'static str {
            "rewrite"
        }
        fn handle(&self, req: &Request, next: Next) -> Reply {
            if req.lower_name().ends_with("cluster.local.") {
                return next.run(req);
            }
            let mut q = req.query.clone();
            q.set_name(Name::from_ascii("mysql-external.default.svc.cluster.local.").unwrap());
            let mut out = Request::from_query(req.id, q, req.client, req.transport);
            out.hops = req.hops;
            next.run(&out)
        }
    }

    fn served(plugins: Vec<Arc<dyn Plugin>>, wrapper: &ExternalNameUpstream) -> ZoneRouter {
        let router = ZoneRouter::new(vec![(".".into(), Chain::new(plugins))]);
        wrapper.set_upstream(router.downgrade());
        router
    }

    fn cluster() -> Arc<ClusterPlugin> {
        let c = ClusterPlugin::new(ZoneOptions::default());
        c.install(&snapshot(FIXTURE));
        c
    }

    fn texts(resp: &Response) -> Vec<String> {
        resp.answers.iter().map(|r| r.to_string()).collect()
    }

    async fn ask(router: &ZoneRouter, name: &str, t: RecordType) -> Response {
        let req = Request::new(Name::from_ascii(name).unwrap(), t);
        Chain::new(vec![Arc::new(router.clone())])
            .handle(&req)
            .resolve()
            .await
    }

    #[tokio::test]
    async fn an_outside_target_is_resolved_through_the_server_and_appended() {
        for pending in [false, true] {
            let wrapper = Arc::new(ExternalNameUpstream::new(cluster()));
            let up = Arc::new(Upstream {
                asked: AtomicUsize::new(0),
                pending,
            });
            let router = served(vec![wrapper.clone(), up.clone()], &wrapper);
            let resp = ask(
                &router,
                "mysql-external.default.svc.cluster.local.",
                RecordType::A,
            )
            .await;
            assert_eq!(resp.rcode, ResponseCode::NoError);
            assert!(resp.authoritative, "still the cluster's answer");
            assert_eq!(resp.plugin, Some("kubernetes"));
            assert_eq!(
                texts(&resp),
                vec![
                    "mysql-external.default.svc.cluster.local. 5 IN CNAME mysql.example.com.",
                    "mysql.example.com. 60 IN A 192.0.2.50",
                ],
                "pending upstream: {pending}"
            );
            assert_eq!(up.asked.load(Ordering::Relaxed), 1);
            // A CNAME question gets the CNAME alone; other types are not completed either.
            let cname = ask(
                &router,
                "mysql-external.default.svc.cluster.local.",
                RecordType::CNAME,
            )
            .await;
            assert_eq!(cname.answers.len(), 1);
            assert!(matches!(cname.answers[0].data, RData::CNAME(CNAME(_))));
            assert_eq!(up.asked.load(Ordering::Relaxed), 1);
            // Ordinary cluster answers are untouched and never reach the upstream.
            let svc = ask(
                &router,
                "demoapp-svc.default.svc.cluster.local.",
                RecordType::A,
            )
            .await;
            assert_eq!(svc.answers.len(), 1);
            assert_eq!(up.asked.load(Ordering::Relaxed), 1);
        }
    }

    #[tokio::test]
    async fn a_target_that_leads_back_into_the_zone_stops_after_the_hop_limit() {
        let wrapper = Arc::new(ExternalNameUpstream::new(cluster()));
        let up = Arc::new(Upstream {
            asked: AtomicUsize::new(0),
            pending: false,
        });
        let router = served(vec![Arc::new(Back), wrapper.clone(), up.clone()], &wrapper);
        let resp = ask(
            &router,
            "mysql-external.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(resp.rcode, ResponseCode::NoError);
        // The first CNAME, then one CNAME per re-entry (the rewritten question keeps its
        // name), and no address: the loop was cut after MAX_HOPS re-entries.
        let cnames = resp
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .count();
        assert_eq!(cnames, usize::from(MAX_HOPS) + 1, "{:?}", texts(&resp));
        assert_eq!(up.asked.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn without_a_route_or_a_live_router_the_cname_stands_alone() {
        let wrapper = Arc::new(ExternalNameUpstream::new(cluster()));
        let router = served(vec![wrapper.clone()], &wrapper);
        // Nothing after the cluster plugin: the chain REFUSES the target, nothing appended.
        let resp = ask(
            &router,
            "mysql-external.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(resp.answers.len(), 1);
        // The router is gone (a reload replaced it): the weak handle does not keep it alive.
        let chain = Chain::new(vec![wrapper.clone() as Arc<dyn Plugin>]);
        drop(router);
        let req = Request::new(
            Name::from_ascii("mysql-external.default.svc.cluster.local.").unwrap(),
            RecordType::A,
        );
        assert_eq!(chain.handle(&req).resolve().await.answers.len(), 1);
    }
}
