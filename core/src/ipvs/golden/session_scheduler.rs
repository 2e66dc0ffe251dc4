//! Session affinity and scheduler flags: `TestSessionAffinity`, the `mh` source-hash flag of
//! `syncProxyRules` (`FlagSourceHash`), and `TestIPVSSchedulers`-style scheduler choice.

use super::*;
use crate::ipvs::table::Scheduler;
use crate::model::{ServiceType, SessionAffinity};

/// kube-proxy's `TestSessionAffinity` Service, with every entry point: cluster IP, external IP,
/// node port and load-balancer ingress.
fn every_entry(affinity: SessionAffinity) -> Service {
    svc("ns1", "svc1", "10.20.30.41", |s| {
        s.service_type = ServiceType::LoadBalancer;
        s.ports[0].node_port = Some(3001);
        s.external_ips = ips(&["50.60.70.81"]);
        s.load_balancer_ips = ips(&["10.1.2.4"]);
        s.session_affinity = affinity;
    })
}

pub(super) fn cases() -> Vec<Case> {
    let default_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 10800,
    };
    vec![
        Case::new(
            "ClientIP session affinity on every entry point",
            "TestSessionAffinity",
        )
        .service(every_entry(default_affinity))
        .table(&[
            "TCP 10.1.2.4:80 rr persistent 10800 -> none",
            "TCP 10.20.30.41:80 rr persistent 10800 -> none",
            "TCP 100.101.102.103:3001 rr persistent 10800 -> none",
            "TCP 50.60.70.81:80 rr persistent 10800 -> none",
        ]),
        Case::new(
            "ClientIP session affinity with its own timeout",
            "TestSessionAffinity (sessionAffinityConfig.clientIP.timeoutSeconds)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            s.session_affinity = SessionAffinity::ClientIp {
                timeout_seconds: 100,
            };
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![ep("10.180.0.1")],
        ))
        .table(&["TCP 10.20.30.41:80 rr persistent 100 -> 10.180.0.1:80"]),
        Case::new(
            "scheduler mh sets only the source-hash flag (mh-port)",
            "syncProxyRules (FlagSourceHash for mh)",
        )
        .config(|c| c.scheduler = Scheduler::Mh)
        .service(every_entry(SessionAffinity::None))
        // Issue 20 item 7: no mh-fallback.
        .table(&[
            "TCP 10.1.2.4:80 mh mh-port -> none",
            "TCP 10.20.30.41:80 mh mh-port -> none",
            "TCP 100.101.102.103:3001 mh mh-port -> none",
            "TCP 50.60.70.81:80 mh mh-port -> none",
        ]),
        Case::new(
            "scheduler mh with session affinity",
            "syncProxyRules (FlagPersistent | FlagSourceHash)",
        )
        .config(|c| c.scheduler = Scheduler::Mh)
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            s.session_affinity = SessionAffinity::ClientIp {
                timeout_seconds: 10800,
            };
        }))
        .table(&["TCP 10.20.30.41:80 mh persistent 10800 mh-port -> none"]),
        Case::new(
            "other schedulers set no flags",
            "NewProxier (ipvs.scheduler)",
        )
        .config(|c| c.scheduler = Scheduler::Sh)
        .service(svc("ns1", "svc1", "10.20.30.41", |_| {}))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![ep("10.180.0.1"), ep("10.180.0.2")],
        ))
        .table(&["TCP 10.20.30.41:80 sh -> 10.180.0.1:80, 10.180.0.2:80"]),
    ]
}

#[test]
fn session_and_scheduler_scenarios() {
    check(cases());
}
