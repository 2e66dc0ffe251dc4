//! `loop`: detects a forwarding loop at start-up (CoreDNS's loop plugin).
//!
//! The server sends itself a query `HINFO <random>.<random>.<zone>`; if that query comes back
//! more than twice, queries are going round in circles (typically `forward . /etc/resolv.conf`
//! with a resolv.conf that points back at this server). That is reported with a clear message
//! and the server stops.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use hickory_proto::op::Query;
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::upstream::{Proto, SentQuery, Upstream};
use crate::dns::handler::{Next, Plugin, Reply, Request, Response};

/// What the server does when a loop is found (stop with the message).
pub(crate) type LoopHandler = Arc<dyn Fn(String) + Send + Sync>;

/// How long probes are sent before giving up (CoreDNS: 30 s).
const PROBE_PERIOD: Duration = Duration::from_secs(30);

/// The loop plugin of one server block.
pub struct Loop {
    probe: String,
    zone: String,
    seen: AtomicU32,
    fired: AtomicBool,
    disabled: AtomicBool,
    on_loop: LoopHandler,
    target: std::sync::Mutex<Option<SocketAddr>>,
}

impl Loop {
    /// A loop detector for `zone` (the server block's zone) with a fresh random probe name.
    pub fn new(zone: &str, on_loop: LoopHandler) -> Arc<Self> {
        let suffix = if zone == "." {
            String::new()
        } else {
            zone.to_string()
        };
        let probe = format!("{}.{}.{}", fastrand::u64(..), fastrand::u64(..), suffix);
        Arc::new(Self {
            probe,
            zone: zone.to_string(),
            seen: AtomicU32::new(0),
            fired: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            on_loop,
            target: std::sync::Mutex::new(None),
        })
    }

    #[cfg(test)]
    /// The probe name (lower case, fully qualified).
    pub(crate) fn probe_name(&self) -> &str {
        &self.probe
    }

    /// Times the probe was seen.
    pub fn seen(&self) -> u32 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Sends the probe to the server's own `listen` address until an answer comes back or 30 s
    /// pass; the answer (or the loop) is noticed in [`Plugin::handle`].
    pub async fn probe(self: Arc<Self>, listen: SocketAddr) {
        let ip = match listen.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let target = SocketAddr::new(ip, listen.port());
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
        let Ok(name) = Name::from_ascii(&self.probe) else {
            return;
        };
        let up = Upstream::new(target);
        let started = std::time::Instant::now();
        while started.elapsed() < PROBE_PERIOD && !self.fired.load(Ordering::Acquire) {
            let mut q = Query::query(name.clone(), RecordType::HINFO);
            q.set_query_class(DNSClass::IN);
            let Ok(sent) = SentQuery::new(q, true, false, None, false) else {
                return;
            };
            match up
                .exchange(&sent, Proto::Udp, Duration::from_secs(2), Duration::ZERO)
                .await
            {
                Ok(_) => break, // an answer: no loop
                Err(e) => {
                    tracing::debug!(error = %e, "plugin/loop: probe got no answer, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // Later queries for the probe name are ordinary ones.
        self.disabled.store(true, Ordering::Release);
    }
}

impl Plugin for Loop {
    fn name(&self) -> &'static str {
        "loop"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        if req.record_type() == RecordType::HINFO
            && req.lower_name() == self.probe
            && !self.disabled.load(Ordering::Acquire)
        {
            let seen = self.seen.fetch_add(1, Ordering::AcqRel) + 1;
            if seen > 2 {
                if !self.fired.swap(true, Ordering::AcqRel) {
                    let target = self
                        .target
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .map_or_else(|| "self".to_string(), |t| t.to_string());
                    let msg = format!(
                        "Loop ({target} -> {target}) detected for zone {:?}: the probe query \"HINFO {}\" came back {seen} times. \
                         Queries sent upstream return to this server (check forward and the resolv.conf it reads); \
                         see https://coredns.io/plugins/loop#troubleshooting",
                        self.zone, self.probe
                    );
                    tracing::error!(target: "plugin/loop", "{msg}");
                    (self.on_loop)(msg);
                }
                return Reply::Ready(Response::servfail());
            }
        }
        next.run(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::handler::Chain;
    use std::sync::Mutex;

    #[test]
    fn third_sighting_fires_once() {
        let fired: Arc<Mutex<Vec<String>>> = Arc::default();
        let f = fired.clone();
        let lp = Loop::new(".", Arc::new(move |m| f.lock().unwrap().push(m)));
        let probe = lp.probe_name().to_string();
        assert_eq!(probe.matches('.').count(), 2, "{probe}");
        let chain = Chain::new(vec![lp.clone()]);
        let req = Request::new(Name::from_ascii(&probe).unwrap(), RecordType::HINFO);
        for _ in 0..5 {
            let _ = chain.handle(&req);
        }
        let other = Request::new(Name::from_ascii(&probe).unwrap(), RecordType::A);
        let _ = chain.handle(&other);
        assert_eq!(lp.seen(), 5);
        let msgs = fired.lock().unwrap();
        assert_eq!(msgs.len(), 1);
        assert!(
            msgs[0].contains("Loop") && msgs[0].contains(&probe),
            "{}",
            msgs[0]
        );
    }
}
