//! Cluster IPs: `TestIPv4Proxier`, `TestIPv6Proxier`, `TestMultiPortServiceBindAddr` and the
//! service/endpoint filtering kube-proxy's change trackers do.

use std::sync::Arc;

use super::*;
use crate::model::{ServicePort, ServiceType, TargetPort};

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case::new("cluster IP service with endpoints", "TestIPv4Proxier")
            .service(svc("ns1", "svc1", "10.20.30.41", |_| {}))
            .slice(slice(
                "ns1",
                "svc1",
                1,
                Protocol::Tcp,
                vec![ep("10.180.0.1")],
            ))
            // An IPv6 slice of an IPv4 Service is ignored by the IPv4 proxier.
            .slice(slice(
                "ns1",
                "svc1",
                2,
                Protocol::Tcp,
                vec![ep("1009:ab8::5:6")],
            ))
            .table(&["TCP 10.20.30.41:80 rr -> 10.180.0.1:80"])
            .bound(&["10.20.30.41"])
            .ipset("KUBE-CLUSTER-IP", &["10.20.30.41,tcp:80"]),
        Case::new("cluster IP service with no endpoints", "TestIPv4Proxier")
            .service(svc("ns2", "svc2", "10.20.30.42", |_| {}))
            .table(&["TCP 10.20.30.42:80 rr -> none"])
            .bound(&["10.20.30.42"])
            .ipset("KUBE-CLUSTER-IP", &["10.20.30.42,tcp:80"]),
        Case::new("external name service gets nothing", "TestIPv4Proxier")
            .service(svc("ns3", "svc3", "10.20.30.43", |s| {
                s.service_type = ServiceType::ExternalName;
                s.cluster_ips.clear();
                s.external_name = Some(Arc::from("foo.bar.com"));
            }))
            .table(&[])
            .bound(&[]),
        Case::new("IPv6 cluster IP service with endpoints", "TestIPv6Proxier")
            .node_ips(&["2001:db8::1:1"])
            .service(svc("ns1", "svc1", "1002:ab8::2:1", |s| {
                s.ports[0].port = 8080;
            }))
            .slice(fixtures::slice(
                "ns1",
                "svc1-1",
                "svc1",
                &[("p80", Protocol::Tcp, 8080)],
                vec![ep("1009:ab8::5:6")],
            ))
            .slice(fixtures::slice(
                "ns1",
                "svc1-2",
                "svc1",
                &[("p80", Protocol::Tcp, 8080)],
                vec![ep("10.180.0.1")],
            ))
            .table(&["TCP [1002:ab8::2:1]:8080 rr -> [1009:ab8::5:6]:8080"])
            .bound(&["1002:ab8::2:1"])
            .ipset("KUBE-6-CLUSTER-IP", &["1002:ab8::2:1,tcp:8080"]),
        Case::new(
            "a multi-port service binds its address once",
            "TestMultiPortServiceBindAddr",
        )
        .service(svc("ns1", "svc1", "172.16.55.4", |s| {
            s.ports = [("port1", 1234), ("port2", 1235), ("port3", 1236)]
                .iter()
                .map(|(n, p)| ServicePort {
                    name: Arc::from(*n),
                    protocol: Protocol::Tcp,
                    port: *p,
                    target_port: TargetPort::Number(*p),
                    node_port: None,
                })
                .collect();
        }))
        .table(&[
            "TCP 172.16.55.4:1234 rr -> none",
            "TCP 172.16.55.4:1235 rr -> none",
            "TCP 172.16.55.4:1236 rr -> none",
        ])
        .bound(&["172.16.55.4"]),
        Case::new(
            "dual-stack service: one virtual server per family with that family's endpoints",
            "TestDualStack (proxier per family, metaproxier)",
        )
        .node_ips(&["100.101.102.103", "2001:db8::1:1"])
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            s.cluster_ips.push("fd00:20::41".parse().unwrap());
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![ep("10.180.0.1")],
        ))
        .slice(slice(
            "ns1",
            "svc1",
            2,
            Protocol::Tcp,
            vec![ep("fd00:180::1")],
        ))
        .table(&[
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80",
            "TCP [fd00:20::41]:80 rr -> [fd00:180::1]:80",
        ])
        .bound(&["10.20.30.41", "fd00:20::41"]),
        Case::new(
            "headless service gets nothing",
            "servicechangetracker (ClusterIP None)",
        )
        .service(svc("ns1", "headless", "10.20.30.41", |s| {
            s.headless = true;
            s.cluster_ips.clear();
        }))
        .slice(slice(
            "ns1",
            "headless",
            1,
            Protocol::Tcp,
            vec![ep("10.180.0.1")],
        ))
        .table(&[])
        .bound(&[]),
        Case::new(
            "a service labelled for another proxy gets nothing",
            "kube-proxy's informer selector (service.kubernetes.io/service-proxy-name)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            s.service_proxy_name = Some(Arc::from("other-proxy"));
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![ep("10.180.0.1")],
        ))
        .table(&[])
        .bound(&[]),
        Case::new(
            "not-ready, non-terminating endpoints are not used",
            "Test_EndpointSliceReadyAndTerminatingCluster",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |_| {}))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![
                cond("10.0.1.1", true, true, false, false),
                cond("10.0.1.2", false, false, false, false),
            ],
        ))
        .table(&["TCP 10.20.30.41:80 rr -> 10.0.1.1:80"]),
        Case::new(
            "the target port comes from the slice port with the service port's name",
            "TestEndpointSliceE2E (named ports)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            s.ports[0].target_port = TargetPort::Name(Arc::from("http"));
        }))
        .slice(fixtures::slice(
            "ns1",
            "svc1-1",
            "svc1",
            &[("p80", Protocol::Tcp, 8080), ("other", Protocol::Tcp, 9090)],
            vec![ep("10.180.0.1")],
        ))
        .table(&["TCP 10.20.30.41:80 rr -> 10.180.0.1:8080"]),
        Case::new(
            "an endpoint listed in two slices is one real server",
            "endpointslicecache (dedup by address)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |_| {}))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![ep("10.180.0.1"), ep("10.180.0.2")],
        ))
        .slice(slice(
            "ns1",
            "svc1",
            2,
            Protocol::Tcp,
            vec![ep("10.180.0.1")],
        ))
        .table(&["TCP 10.20.30.41:80 rr -> 10.180.0.1:80, 10.180.0.2:80"]),
        Case::new(
            "a UDP port only takes the slice port of the same protocol",
            "TestEndpointSliceE2E (protocol match)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            s.ports[0].protocol = Protocol::Udp;
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![ep("10.180.0.1")],
        ))
        .slice(slice(
            "ns1",
            "svc1",
            2,
            Protocol::Udp,
            vec![ep("10.180.0.2")],
        ))
        .table(&["UDP 10.20.30.41:80 rr -> 10.180.0.2:80"])
        .ipset("KUBE-CLUSTER-IP", &["10.20.30.41,udp:80"]),
        Case::new(
            "only endpoints on this node are in KUBE-LOOP-BACK",
            "TestIPv4Proxier (loopback set)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |_| {}))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![local("10.180.0.1"), remote("10.180.1.1")],
        ))
        .table(&["TCP 10.20.30.41:80 rr -> 10.180.0.1:80, 10.180.1.1:80"])
        .ipset("KUBE-LOOP-BACK", &["10.180.0.1,tcp:80,10.180.0.1"]),
    ]
}

#[test]
fn cluster_ip_scenarios() {
    check(cases());
}
