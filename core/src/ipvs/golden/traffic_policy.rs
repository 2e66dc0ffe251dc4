//! Traffic policies: `TestInternalTrafficPolicy` and the `Local`/`Cluster` endpoint choice of the
//! IPVS `syncEndpoint` (with `CategorizeEndpoints`' `UsesClusterEndpoints`).

use super::*;
use crate::model::{ServiceType, TrafficPolicy};

fn itp_local(s: &mut Service) {
    s.internal_traffic_policy = TrafficPolicy::Local;
}

fn three(on_host: [bool; 3]) -> EndpointSlice {
    let e = |addr: &str, here: bool| if here { local(addr) } else { remote(addr) };
    slice(
        "ns1",
        "svc1",
        1,
        Protocol::Tcp,
        vec![
            e("10.0.1.1", on_host[0]),
            e("10.0.1.2", on_host[1]),
            e("10.0.1.3", on_host[2]),
        ],
    )
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "internalTrafficPolicy is cluster",
            "TestInternalTrafficPolicy",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |_| {}))
        .slice(three([true, false, false]))
        .table(&["TCP 10.20.30.41:80 rr -> 10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80"]),
        Case::new(
            "internalTrafficPolicy is local and there is one local endpoint",
            "TestInternalTrafficPolicy",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", itp_local))
        .slice(three([true, false, false]))
        .table(&["TCP 10.20.30.41:80 rr local -> 10.0.1.1:80"]),
        Case::new(
            "internalTrafficPolicy is local and there are multiple local endpoints",
            "TestInternalTrafficPolicy",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", itp_local))
        .slice(three([true, true, false]))
        .table(&["TCP 10.20.30.41:80 rr local -> 10.0.1.1:80, 10.0.1.2:80"]),
        Case::new(
            "internalTrafficPolicy is local and there are no local endpoints",
            "TestInternalTrafficPolicy",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", itp_local))
        .slice(three([false, false, false]))
        .table(&["TCP 10.20.30.41:80 rr local -> none"]),
        Case::new(
            "internalTrafficPolicy local on an externally reachable port without local endpoints",
            "syncEndpoint + CategorizeEndpoints (UsesClusterEndpoints)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            itp_local(s);
            s.service_type = ServiceType::NodePort;
            s.ports[0].node_port = Some(3001);
        }))
        .slice(three([false, false, false]))
        // The port accepts external traffic, so cluster endpoints are computed, and the IPVS
        // proxier's "no local endpoints" fallback hands them to the cluster IP too.
        .table(&[
            "TCP 10.20.30.41:80 rr local -> 10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80",
            "TCP 100.101.102.103:3001 rr -> 10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80",
        ]),
        Case::new(
            "internalTrafficPolicy local, externalTrafficPolicy cluster, with a local endpoint",
            "TestInternalTrafficPolicy (node port variant)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            itp_local(s);
            s.service_type = ServiceType::NodePort;
            s.ports[0].node_port = Some(3001);
        }))
        .slice(three([false, true, false]))
        .table(&[
            "TCP 10.20.30.41:80 rr local -> 10.0.1.2:80",
            "TCP 100.101.102.103:3001 rr -> 10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80",
        ]),
        Case::new(
            "both traffic policies local, with local endpoints",
            "CategorizeEndpoints (!UsesClusterEndpoints is false: node port)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            itp_local(s);
            s.external_traffic_policy = TrafficPolicy::Local;
            s.service_type = ServiceType::NodePort;
            s.ports[0].node_port = Some(3001);
        }))
        .slice(three([true, false, true]))
        .table(&[
            "TCP 10.20.30.41:80 rr local -> 10.0.1.1:80, 10.0.1.3:80",
            "TCP 100.101.102.103:3001 rr local -> 10.0.1.1:80, 10.0.1.3:80",
        ]),
    ]
}

#[test]
fn traffic_policy_scenarios() {
    check(cases());
}
