//! External IPs: `TestExternalIPsNoEndpoint`, `TestExternalIPs`, `TestOnlyLocalExternalIPs` and
//! the per-family filtering of `newBaseServiceInfo` (`MapIPsByIPFamily`).

use super::*;
use crate::model::{ServiceType, TrafficPolicy};

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case::new("external IP without endpoints", "TestExternalIPsNoEndpoint")
            .service(svc("ns1", "svc1", "10.20.30.41", |s| {
                s.external_ips = ips(&["50.60.70.81"]);
            }))
            .table(&[
                "TCP 10.20.30.41:80 rr -> none",
                "TCP 50.60.70.81:80 rr -> none",
            ])
            .bound(&["10.20.30.41", "50.60.70.81"])
            .ipset("KUBE-EXTERNAL-IP", &["50.60.70.81,tcp:80"]),
        Case::new(
            "external IPs: the other family's is dropped",
            "TestExternalIPs",
        )
        .node_ips(&["100.101.102.103", "127.0.0.1"])
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            s.external_ips = ips(&["50.60.70.81", "2012::51", "127.0.0.1"]);
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![ep("10.180.0.1")],
        ))
        // Issue 20 item 3: no [2012::51]:80 for an IPv4 Service, and it is not bound.
        .table(&[
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80",
            "TCP 127.0.0.1:80 rr -> 10.180.0.1:80",
            "TCP 50.60.70.81:80 rr -> 10.180.0.1:80",
        ])
        .bound(&["10.20.30.41", "50.60.70.81"])
        .ipset(
            "KUBE-EXTERNAL-IP",
            &["127.0.0.1,tcp:80", "50.60.70.81,tcp:80"],
        )
        .ipset("KUBE-6-EXTERNAL-IP", &[])
        .differs(
            "kube-proxy also binds 127.0.0.1 on kube-ipvs0; svcnet never binds an address the \
             node already has (the virtual server captures it without the duplicate)",
        ),
        Case::new(
            "externalTrafficPolicy Local: external IPs take local endpoints only",
            "TestOnlyLocalExternalIPs",
        )
        .node_ips(&["100.101.102.103", "127.0.0.1"])
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            s.service_type = ServiceType::NodePort;
            s.external_traffic_policy = TrafficPolicy::Local;
            s.external_ips = ips(&["50.60.70.81", "2012::51", "127.0.0.1"]);
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![remote("10.180.0.1"), local("10.180.1.1")],
        ))
        .table(&[
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80, 10.180.1.1:80",
            "TCP 127.0.0.1:80 rr local -> 10.180.1.1:80",
            "TCP 50.60.70.81:80 rr local -> 10.180.1.1:80",
        ])
        .ipset(
            "KUBE-EXTERNAL-IP-LOCAL",
            &["127.0.0.1,tcp:80", "50.60.70.81,tcp:80"],
        ),
        Case::new(
            "externalTrafficPolicy Local without local endpoints: external IPs get all endpoints",
            "syncEndpoint (kubernetes PR 97081)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            s.service_type = ServiceType::NodePort;
            s.external_traffic_policy = TrafficPolicy::Local;
            s.external_ips = ips(&["50.60.70.81"]);
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![remote("10.180.0.1")],
        ))
        // Issue 20 item 1: the address is bound here, so pods on this node depend on this.
        .table(&[
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80",
            "TCP 50.60.70.81:80 rr local -> 10.180.0.1:80",
        ])
        .bound(&["10.20.30.41", "50.60.70.81"]),
        Case::new(
            "IPv6 service: IPv4 external IPs are dropped",
            "newBaseServiceInfo (MapIPsByIPFamily)",
        )
        .service(svc("ns1", "svc1", "2020::1", |s| {
            s.external_ips = ips(&["50.60.70.81", "2012::51"]);
        }))
        .table(&[
            "TCP [2012::51]:80 rr -> none",
            "TCP [2020::1]:80 rr -> none",
        ])
        .bound(&["2012::51", "2020::1"]),
        Case::new(
            "dual-stack service: external IPs of both families, each with its family's endpoints",
            "newBaseServiceInfo (one proxier per family)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            s.cluster_ips.push("2020::1".parse().unwrap());
            s.external_ips = ips(&["50.60.70.81", "2012::51"]);
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![ep("10.180.0.1")],
        ))
        .slice(slice("ns1", "svc1", 2, Protocol::Tcp, vec![ep("fd00::1")]))
        .table(&[
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80",
            "TCP 50.60.70.81:80 rr -> 10.180.0.1:80",
            "TCP [2012::51]:80 rr -> [fd00::1]:80",
            "TCP [2020::1]:80 rr -> [fd00::1]:80",
        ]),
    ]
}

#[test]
fn external_ip_scenarios() {
    check(cases());
}
