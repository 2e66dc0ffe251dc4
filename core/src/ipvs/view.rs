//! The proxy's one view of each Service: computed once per changed Service from the cache's
//! `changes_since`, read by the desired IPVS table ([`desired`](super::desired)), the host
//! rules' inputs ([`extras`](super::extras)) and the health-check ports
//! ([`healthcheck`](super::healthcheck)).
//!
//! One filter decides what the proxy looks at, as kube-proxy's informers and endpoint cache do:
//! Services and EndpointSlices owned by another proxy (label
//! `service.kubernetes.io/service-proxy-name`), headless Services and slices (label
//! `service.kubernetes.io/headless`), FQDN slices, ExternalName Services and Services without a
//! cluster IP are not the proxy's; everything else is ([`is_proxied`], [`is_usable_slice`]).
//!
//! [`ProxyView`] follows snapshots: [`ProxyView::observe`] reads again only the Services the
//! snapshot's journal names (all of them the first time, when the journal no longer reaches back,
//! or for another node name) and remembers which they were, so a reader that saw the previous
//! [`revision`](ProxyView::revision) can follow the change ([`ProxyView::changes_since`]).
//!
//! There is one follower per proxy: the control loop's desired state owns it, the host rules'
//! inputs read it in the same step, and [`ViewPublisher`] hands each step's changed views to the
//! health-check task ([`ViewSubscriber`]), which never computes a view itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ipnetwork::IpNetwork;
use smallvec::SmallVec;

use crate::cache::{Change, Snapshot};
use crate::model::{
    AddressType, EndpointSlice, ObjectKey, Protocol, Service, ServiceType, TrafficPolicy,
};

/// Follows cache snapshots for an index of per-Service data that also depends on this node's
/// name (local endpoints): says which Services to read again at each step.
#[derive(Debug, Default, Clone)]
pub(crate) struct ServiceChangeTracker {
    generation: Option<u64>,
    node: Option<Box<str>>,
}

impl ServiceChangeTracker {
    /// Moves to `snapshot` as seen from node `node`. `Some(keys)`: only these Services (added,
    /// changed or removed, or one of their EndpointSlices) need reading again; `None`: read
    /// every Service (the first step, the journal no longer reaching back, another node name).
    pub(crate) fn advance(
        &mut self,
        snapshot: &Snapshot,
        node: Option<&str>,
    ) -> Option<Vec<ObjectKey>> {
        let same_node = self.node.as_deref() == node;
        self.node = node.map(Box::from);
        let changes = self
            .generation
            .filter(|_| same_node)
            .and_then(|g| snapshot.changes_since(g));
        self.generation = Some(snapshot.generation());
        changes.map(|changes| {
            changes
                .into_iter()
                .filter_map(|c| match c {
                    Change::Service(key) => Some(key),
                    _ => None,
                })
                .collect()
        })
    }

    /// The node name of the last [`advance`](Self::advance).
    pub(crate) fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }
}

/// Whether the proxy handles this Service at all: not another proxy's, not headless, not
/// ExternalName, with a cluster IP (kube-proxy's informer filter and `ShouldSkipService`).
pub(crate) fn is_proxied(svc: &Service) -> bool {
    svc.service_proxy_name.is_none()
        && !svc.headless
        && svc.service_type != ServiceType::ExternalName
        && svc.has_cluster_ip()
}

/// Whether the proxy reads this EndpointSlice: not another proxy's, not labelled headless, not
/// of address type FQDN (kube-proxy's informer label selector and its endpoint cache's
/// supported address types).
pub(crate) fn is_usable_slice(slice: &EndpointSlice) -> bool {
    slice.service_proxy_name.is_none() && !slice.headless && slice.address_type != AddressType::Fqdn
}

/// The health-check node port of `svc`, when kube-proxy would serve one: a proxied
/// `LoadBalancer` Service with `externalTrafficPolicy: Local` and `spec.healthCheckNodePort` set
/// (kube-proxy's `NeedsHealthCheck`).
pub(crate) fn health_check_port(svc: &Service) -> Option<u16> {
    if !is_proxied(svc)
        || svc.service_type != ServiceType::LoadBalancer
        || svc.external_traffic_policy != TrafficPolicy::Local
    {
        return None;
    }
    svc.health_check_node_port.filter(|p| *p != 0)
}

/// The load-balancer ingress IPs the proxy captures for `svc`: those of a `LoadBalancer`
/// Service whose `ipMode` is `VIP` (ingress IPs with `ipMode: Proxy` are in
/// [`Service::load_balancer_proxy_ips`] and never captured, as in kube-proxy). Not filtered by
/// family; the desired table and the host rules keep the Service's families only.
pub(crate) fn load_balancer_vips(svc: &Service) -> impl Iterator<Item = &IpAddr> {
    svc.load_balancer_ips
        .iter()
        .filter(move |_| svc.service_type == ServiceType::LoadBalancer)
}

/// Whether `ip` is of one of the families of `svc`'s cluster IPs (kube-proxy programs nothing
/// for an address of another family).
pub(crate) fn of_service_family(svc: &Service, ip: &IpAddr) -> bool {
    svc.cluster_ips.iter().any(|c| c.is_ipv4() == ip.is_ipv4())
}

/// One load-balancer ingress `ip:port` that only sources in `allowed` may reach (a Service's
/// `loadBalancerSourceRanges`, for one of its ports and ingress IPs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRanges {
    /// Ingress IP (`status.loadBalancer.ingress[].ip`).
    pub ip: IpAddr,
    /// Protocol of the port.
    pub protocol: Protocol,
    /// Service port.
    pub port: u16,
    /// Allowed source networks.
    pub allowed: Vec<IpNetwork>,
}

impl SourceRanges {
    /// The ingress as an ipset `ip,proto:port` entry.
    pub(crate) fn ip_port(&self) -> String {
        format!("{},{}:{}", self.ip, self.protocol.as_lower(), self.port)
    }

    /// Whether this node may reach the ingress itself: one of its addresses is in an allowed
    /// range. The node's own packets to the ingress IP (bound to kube-ipvs0) leave with that IP
    /// as their source, so kube-proxy then allows source = ingress IP (`KUBE-LOAD-BALANCER-SOURCE-IP`)
    /// and otherwise drops them on the way out (`KUBE-IPVS-OUT-FILTER`).
    pub(crate) fn allows_node(&self, node_addresses: &[IpAddr]) -> bool {
        self.allowed
            .iter()
            .any(|net| node_addresses.iter().any(|a| net.contains(*a)))
    }
}

/// The `loadBalancerSourceRanges` fences of `svc`: one per captured ingress IP (`ipMode: VIP`,
/// of the Service's families) and port, with the ranges of the ingress IP's family.
fn source_ranges(svc: &Service) -> Vec<SourceRanges> {
    let mut out = Vec::new();
    if svc.service_type != ServiceType::LoadBalancer || svc.load_balancer_source_ranges.is_empty() {
        return out;
    }
    for ip in load_balancer_vips(svc).filter(|ip| of_service_family(svc, ip)) {
        // kube-proxy keeps the ranges of the proxier's family only; with none left, the
        // ingress is not fenced at all (rather than closed to everyone).
        let allowed: Vec<_> = svc
            .load_balancer_source_ranges
            .iter()
            .filter(|net| net.is_ipv4() == ip.is_ipv4())
            .copied()
            .collect();
        if allowed.is_empty() {
            continue;
        }
        for port in &svc.ports {
            out.push(SourceRanges {
                ip: *ip,
                protocol: port.protocol,
                port: port.port,
                allowed: allowed.clone(),
            });
        }
    }
    out
}

/// What the proxy sees of one proxied Service, computed once per change of the Service or its
/// slices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// The Service.
    pub service: Arc<Service>,
    /// Its EndpointSlices the proxy reads ([`is_usable_slice`]), in the cache's order.
    pub slices: SmallVec<[Arc<EndpointSlice>; 2]>,
    /// Addresses of its endpoints on this node (any readiness; the first address of each, as
    /// kube-proxy uses), sorted, once each; empty without a node name. Only they can hairpin
    /// (`KUBE-LOOP-BACK`).
    pub local_endpoints: SmallVec<[IpAddr; 2]>,
    /// Its ready endpoints on this node, counted by address, in slices with a usable port (as
    /// kube-proxy's `LocalReadyEndpoints`). Terminating endpoints are not ready and do not count.
    pub local_ready_endpoints: usize,
    /// Its health-check node port ([`health_check_port`]).
    pub health_check_node_port: Option<u16>,
    /// Its `loadBalancerSourceRanges` fences.
    pub source_ranges: Vec<SourceRanges>,
}

impl ServiceView {
    /// The view of `svc` in `snapshot` from node `node`; `None` when the proxy does not handle
    /// the Service ([`is_proxied`]).
    pub fn compute(snapshot: &Snapshot, svc: &Arc<Service>, node: Option<&str>) -> Option<Self> {
        if !is_proxied(svc) {
            return None;
        }
        let slices: SmallVec<[Arc<EndpointSlice>; 2]> = snapshot
            .endpoint_slices_for(&svc.key)
            .filter(|s| is_usable_slice(s))
            .cloned()
            .collect();
        let mut local: SmallVec<[IpAddr; 2]> = SmallVec::new();
        let mut local_ready: SmallVec<[IpAddr; 2]> = SmallVec::new();
        if let Some(me) = node {
            for slice in &slices {
                let has_port = slice.ports.iter().any(|p| p.port.is_some_and(|p| p != 0));
                for ep in &slice.endpoints {
                    if ep.node_name.as_deref() != Some(me) {
                        continue;
                    }
                    let Some(addr) = ep.addresses.first() else {
                        continue;
                    };
                    local.push(*addr);
                    if ep.ready && has_port {
                        local_ready.push(*addr);
                    }
                }
            }
        }
        local.sort_unstable();
        local.dedup();
        local_ready.sort_unstable();
        local_ready.dedup();
        Some(ServiceView {
            service: svc.clone(),
            slices,
            local_endpoints: local,
            local_ready_endpoints: local_ready.len(),
            health_check_node_port: health_check_port(svc),
            source_ranges: source_ranges(svc),
        })
    }
}

/// Source of [`ProxyView::revision`] numbers, unique across every view of the process, so a
/// reader can never mistake another view's revision for the one it saw.
static NEXT_REVISION: AtomicU64 = AtomicU64::new(1);

/// The [`ServiceView`] of every proxied Service, kept in step with cache snapshots.
#[derive(Debug, Clone, Default)]
pub struct ProxyView {
    tracker: ServiceChangeTracker,
    services: HashMap<ObjectKey, Arc<ServiceView>>,
    /// Changes with every [`observe`](Self::observe); 0 before the first.
    revision: u64,
    /// The revision before the last observe.
    previous: u64,
    /// The Services the last observe read again; `None`: all of them.
    last: Option<Vec<ObjectKey>>,
    /// How many [`ServiceView`]s this view computed (tests count computations per change).
    #[cfg(test)]
    pub(crate) computed: usize,
}

impl ProxyView {
    /// An empty view (the first [`observe`](Self::observe) reads every Service).
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings the view up to `snapshot` as seen from node `node`. Returns the Services read
    /// again (added, changed or removed, or one of their slices), or `None` when every Service
    /// was read again (first step, journal no longer reaching back, another node name).
    pub fn observe(&mut self, snapshot: &Snapshot, node: Option<&str>) -> Option<&[ObjectKey]> {
        self.previous = self.revision;
        self.revision = NEXT_REVISION.fetch_add(1, Ordering::Relaxed);
        match self.tracker.advance(snapshot, node) {
            Some(keys) => {
                #[cfg(test)]
                {
                    self.computed += keys.len();
                }
                for key in &keys {
                    let view = snapshot
                        .service(key)
                        .and_then(|svc| ServiceView::compute(snapshot, svc, node));
                    match view {
                        Some(v) => {
                            self.services.insert(key.clone(), Arc::new(v));
                        }
                        None => {
                            self.services.remove(key);
                        }
                    }
                }
                self.last = Some(keys);
            }
            None => {
                #[cfg(test)]
                {
                    self.computed += snapshot.service_count();
                }
                self.services = snapshot
                    .services()
                    .filter_map(|svc| {
                        ServiceView::compute(snapshot, svc, node)
                            .map(|v| (svc.key.clone(), Arc::new(v)))
                    })
                    .collect();
                self.last = None;
            }
        }
        self.last.as_deref()
    }

    /// The view of one Service, if the proxy handles it.
    pub fn service(&self, key: &ObjectKey) -> Option<&Arc<ServiceView>> {
        self.services.get(key)
    }

    /// Every proxied Service's view, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceView>> {
        self.services.values()
    }

    /// Number of proxied Services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no Service is proxied.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// This node's name as of the last [`observe`](Self::observe).
    pub fn node(&self) -> Option<&str> {
        self.tracker.node()
    }

    /// Identifies the view's state: a new, process-wide unique number after every
    /// [`observe`](Self::observe).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The revision before the last [`observe`](Self::observe) (0: none): a reader that saw it
    /// can follow the last step.
    pub(crate) fn previous_revision(&self) -> u64 {
        self.previous
    }

    /// The Services whose view may differ from revision `seen`: none when `seen` is the current
    /// revision, those the last observe read again when `seen` is the one before it; `None`
    /// (read every Service) otherwise.
    pub fn changes_since(&self, seen: u64) -> Option<&[ObjectKey]> {
        if seen == self.revision {
            return Some(&[]);
        }
        if seen == self.previous && seen != 0 {
            return self.last.as_deref();
        }
        None
    }
}

/// One step of the [`ProxyView`] as a [`ViewSubscriber`] receives it: the views of the Services
/// that changed since the subscriber's last step, or all of them.
#[derive(Debug, Clone)]
pub(crate) enum ViewStep {
    /// These Services changed: their new view, or `None` when the proxy no longer handles them.
    Changes(HashMap<ObjectKey, Option<Arc<ServiceView>>>),
    /// Every proxied Service's view (the subscriber forgets what it had).
    All(HashMap<ObjectKey, Arc<ServiceView>>),
}

impl ViewStep {
    /// Folds the later step `next` into this one.
    fn merge(&mut self, next: ViewStep) {
        match (self, next) {
            (this, next @ ViewStep::All(_)) => *this = next,
            (ViewStep::Changes(c), ViewStep::Changes(n)) => c.extend(n),
            (ViewStep::All(all), ViewStep::Changes(n)) => {
                for (key, view) in n {
                    match view {
                        Some(v) => all.insert(key, v),
                        None => all.remove(&key),
                    };
                }
            }
        }
    }
}

/// The state shared by a [`ViewPublisher`] and its [`ViewSubscriber`].
#[derive(Debug, Default)]
struct Feed {
    /// The steps not taken yet, folded into one (a slow subscriber costs at most one view per
    /// Service).
    step: Option<ViewStep>,
    /// The revision of the view last published (0: none).
    published: u64,
}

#[derive(Debug, Default)]
struct Pending(Mutex<Feed>);

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Feed> {
        // A panic while holding the lock leaves a complete step or none: still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The control loop's end of the view feed: hands each step of its [`ProxyView`] to the
/// health-check task without computing anything again (the views are shared `Arc`s). Clones
/// are handles to the same feed.
#[derive(Debug, Clone)]
pub struct ViewPublisher {
    pending: Arc<Pending>,
    notify: tokio::sync::watch::Sender<()>,
}

/// The health-check task's end of the view feed (see [`view_feed`]).
#[derive(Debug)]
pub struct ViewSubscriber {
    pending: Arc<Pending>,
    notify: tokio::sync::watch::Receiver<()>,
}

/// A feed of [`ProxyView`] steps from the control loop (which owns the one view) to the
/// health-check task.
pub fn view_feed() -> (ViewPublisher, ViewSubscriber) {
    let pending = Arc::new(Pending::default());
    let (tx, rx) = tokio::sync::watch::channel(());
    (
        ViewPublisher {
            pending: pending.clone(),
            notify: tx,
        },
        ViewSubscriber {
            pending,
            notify: rx,
        },
    )
}

impl ViewPublisher {
    /// Hands what changed in `view` since the last publish to the subscriber: the changed
    /// Services' views when `view` is one step on from it, else every view. Nothing when the
    /// view did not move or the subscriber is gone.
    pub(crate) fn publish(&self, view: &ProxyView) {
        if self.notify.is_closed() {
            return; // nobody listens (a dry run without health checks)
        }
        let mut feed = self.pending.lock();
        let step = match view.changes_since(feed.published) {
            Some([]) => return,
            Some(keys) => ViewStep::Changes(
                keys.iter()
                    .map(|k| (k.clone(), view.service(k).cloned()))
                    .collect(),
            ),
            None => ViewStep::All(
                view.services()
                    .map(|v| (v.service.key.clone(), v.clone()))
                    .collect(),
            ),
        };
        feed.published = view.revision();
        match feed.step.as_mut() {
            Some(p) => p.merge(step),
            None => feed.step = Some(step),
        }
        drop(feed);
        self.notify.send_replace(());
    }
}

impl ViewSubscriber {
    /// The steps published since the last call, folded into one; waits for one. `None` once
    /// the publisher is gone and everything it published was taken.
    pub(crate) async fn next(&mut self) -> Option<ViewStep> {
        loop {
            if let Some(step) = self.try_next() {
                return Some(step);
            }
            self.notify.changed().await.ok()?;
        }
    }

    /// The steps published since the last call, folded into one, if any.
    pub(crate) fn try_next(&mut self) -> Option<ViewStep> {
        self.notify.mark_unchanged();
        self.pending.lock().step.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::new_cache;
    use crate::ipvs::fixtures::{endpoint, service, slice};
    use crate::model::{ClusterObject, Kind};

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    #[test]
    fn tracker_names_changed_services_and_rereads_all_for_another_node() {
        let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        w.apply(ClusterObject::from(service(
            "default",
            "s1",
            "10.0.0.1",
            &[("http", Protocol::Tcp, 80, 8080)],
        )));
        let mut t = ServiceChangeTracker::default();
        assert_eq!(
            t.advance(&r.snapshot(), Some("n1")),
            None,
            "first step: read all"
        );
        assert_eq!(t.node(), Some("n1"));
        w.apply(ClusterObject::from(slice(
            "default",
            "s2-x",
            "s2",
            &[("http", Protocol::Tcp, 8080)],
            vec![endpoint("10.1.0.1", true, None)],
        )));
        w.apply(ClusterObject::from(service(
            "default",
            "s3",
            "10.0.0.3",
            &[("http", Protocol::Tcp, 80, 8080)],
        )));
        assert_eq!(
            t.advance(&r.snapshot(), Some("n1")),
            Some(vec![key("s2"), key("s3")])
        );
        assert_eq!(t.advance(&r.snapshot(), Some("n1")), Some(vec![]));
        assert_eq!(t.advance(&r.snapshot(), Some("n2")), None, "node renamed");
    }

    /// One filter for every reader: FQDN slices, slices of another proxy and headless slices
    /// are not read, so their endpoints are neither real servers, nor local endpoints (hairpin
    /// set), nor counted by the health check.
    #[test]
    fn one_filter_drops_fqdn_other_proxy_and_headless_slices() {
        let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        w.apply(ClusterObject::from(service(
            "default",
            "web",
            "10.96.0.20",
            &[("http", Protocol::Tcp, 80, 8080)],
        )));
        let ports = [("http", Protocol::Tcp, 8080)];
        w.apply(ClusterObject::from(slice(
            "default",
            "web-ok",
            "web",
            &ports,
            vec![endpoint("10.244.1.10", true, Some("node-a"))],
        )));
        let mut other = slice(
            "default",
            "web-other",
            "web",
            &ports,
            vec![endpoint("10.244.1.11", true, Some("node-a"))],
        );
        other.service_proxy_name = Some("someone-else".into());
        w.apply(ClusterObject::from(other));
        let mut fqdn = slice(
            "default",
            "web-fqdn",
            "web",
            &ports,
            vec![endpoint("10.244.1.12", true, Some("node-a"))],
        );
        fqdn.address_type = AddressType::Fqdn;
        w.apply(ClusterObject::from(fqdn));
        let mut headless = slice(
            "default",
            "web-headless",
            "web",
            &ports,
            vec![endpoint("10.244.1.13", true, Some("node-a"))],
        );
        headless.headless = true;
        w.apply(ClusterObject::from(headless));

        let mut view = ProxyView::new();
        assert_eq!(view.observe(&r.snapshot(), Some("node-a")), None);
        let web = view.service(&key("web")).expect("web is proxied");
        assert_eq!(
            web.slices
                .iter()
                .map(|s| s.key.name.to_string())
                .collect::<Vec<_>>(),
            ["web-ok"]
        );
        assert_eq!(
            web.local_endpoints.as_slice(),
            ["10.244.1.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(web.local_ready_endpoints, 1);
    }

    #[test]
    fn follows_changes_and_tells_readers_what_changed() {
        let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        let svc = |name: &str, ip: &str| {
            ClusterObject::from(service(
                "default",
                name,
                ip,
                &[("http", Protocol::Tcp, 80, 8080)],
            ))
        };
        w.apply(svc("a", "10.96.0.1"));
        let mut headless = service("default", "h", "10.96.0.2", &[]);
        headless.headless = true;
        w.apply(ClusterObject::from(headless));
        let mut view = ProxyView::new();
        view.observe(&r.snapshot(), None);
        assert_eq!(view.len(), 1, "headless Services are not the proxy's");
        let first = view.revision();
        assert_eq!(view.changes_since(first), Some(&[][..]));

        w.apply(svc("b", "10.96.0.3"));
        assert_eq!(view.observe(&r.snapshot(), None), Some(&[key("b")][..]));
        assert_eq!(view.changes_since(first), Some(&[key("b")][..]));
        assert_eq!(view.changes_since(0), None, "never observed: read all");

        w.delete(Kind::Service, &key("a"));
        view.observe(&r.snapshot(), None);
        assert_eq!(
            view.changes_since(first),
            None,
            "two steps behind: read all"
        );
        assert!(view.service(&key("a")).is_none());
        assert_eq!(view.len(), 1);
    }
}
