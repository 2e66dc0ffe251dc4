//! Terminating endpoints: `Test_EndpointSliceReadyAndTerminatingCluster`,
//! `Test_EndpointSliceReadyAndTerminatingLocal`, `Test_EndpointSliceOnlyReadyAndTerminatingCluster`,
//! `Test_EndpointSliceOnlyReadyAndTerminatingLocal`.

use super::*;
use crate::model::{ServiceType, TrafficPolicy};

/// kube-proxy's fixture: a LoadBalancer Service 172.20.1.1:80 with ingress 1.2.3.4.
fn lb_service(policy: TrafficPolicy) -> Service {
    svc("ns1", "svc1", "172.20.1.1", |s| {
        s.service_type = ServiceType::LoadBalancer;
        s.load_balancer_ips = ips(&["1.2.3.4"]);
        s.external_traffic_policy = policy;
    })
}

/// Ready and terminating endpoints: 3 local (2 ready, 1 serving+terminating), 1 local
/// terminating and not serving, 1 remote ready.
fn ready_and_terminating() -> EndpointSlice {
    slice(
        "ns1",
        "svc1",
        1,
        Protocol::Tcp,
        vec![
            cond("10.0.1.1", true, true, false, true),
            cond("10.0.1.2", true, true, false, true),
            cond("10.0.1.3", false, true, true, true),
            cond("10.0.1.4", false, false, true, true),
            cond("10.0.1.5", true, true, false, false),
        ],
    )
}

/// No ready endpoints: 2 local serving+terminating, 1 local terminating and not serving,
/// 1 remote serving+terminating, 1 remote neither.
fn only_terminating() -> EndpointSlice {
    slice(
        "ns1",
        "svc1",
        1,
        Protocol::Tcp,
        vec![
            cond("10.0.1.1", false, true, true, true),
            cond("10.0.1.2", false, true, true, true),
            cond("10.0.1.3", false, false, true, true),
            cond("10.0.1.4", false, true, true, false),
            cond("10.0.1.5", false, false, false, false),
        ],
    )
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "ready endpoints win over terminating ones (cluster policy)",
            "Test_EndpointSliceReadyAndTerminatingCluster",
        )
        .service(lb_service(TrafficPolicy::Cluster))
        .slice(ready_and_terminating())
        .table(&[
            "TCP 1.2.3.4:80 rr -> 10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
            "TCP 172.20.1.1:80 rr -> 10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
        ]),
        Case::new(
            "ready local endpoints win over terminating ones (local policy)",
            "Test_EndpointSliceReadyAndTerminatingLocal",
        )
        .service(lb_service(TrafficPolicy::Local))
        .slice(ready_and_terminating())
        .table(&[
            "TCP 1.2.3.4:80 rr local -> 10.0.1.1:80, 10.0.1.2:80",
            "TCP 172.20.1.1:80 rr -> 10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
        ]),
        Case::new(
            "without ready endpoints, serving terminating ones are used (cluster policy)",
            "Test_EndpointSliceOnlyReadyAndTerminatingCluster",
        )
        .service(lb_service(TrafficPolicy::Cluster))
        .slice(only_terminating())
        .table(&[
            "TCP 1.2.3.4:80 rr -> 10.0.1.1:80, 10.0.1.2:80, 10.0.1.4:80",
            "TCP 172.20.1.1:80 rr -> 10.0.1.1:80, 10.0.1.2:80, 10.0.1.4:80",
        ]),
        Case::new(
            "without ready endpoints, local serving terminating ones are used (local policy)",
            "Test_EndpointSliceOnlyReadyAndTerminatingLocal",
        )
        .service(lb_service(TrafficPolicy::Local))
        .slice(only_terminating())
        .table(&[
            "TCP 1.2.3.4:80 rr local -> 10.0.1.1:80, 10.0.1.2:80",
            "TCP 172.20.1.1:80 rr -> 10.0.1.1:80, 10.0.1.2:80, 10.0.1.4:80",
        ]),
        Case::new(
            "local policy: local terminating endpoints win over remote ready ones",
            "CategorizeEndpoints (hasLocalServingTerminatingEndpoints)",
        )
        .service(lb_service(TrafficPolicy::Local))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![
                cond("10.0.1.1", false, true, true, true),
                cond("10.0.1.2", true, true, false, false),
            ],
        ))
        .table(&[
            "TCP 1.2.3.4:80 rr local -> 10.0.1.1:80",
            "TCP 172.20.1.1:80 rr -> 10.0.1.2:80",
        ]),
        Case::new(
            "terminating endpoints that no longer serve are never used",
            "CategorizeEndpoints",
        )
        .service(lb_service(TrafficPolicy::Cluster))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![
                cond("10.0.1.1", false, false, true, true),
                cond("10.0.1.2", false, false, true, false),
            ],
        ))
        .table(&["TCP 1.2.3.4:80 rr -> none", "TCP 172.20.1.1:80 rr -> none"]),
    ]
}

#[test]
fn terminating_scenarios() {
    check(cases());
}
