//! Load balancers: `TestLoadBalancer`, `TestOnlyLocalLoadBalancing`,
//! `TestLoadBalancerSourceRanges`, `TestHealthCheckNodePort`, and the ingress filtering of
//! `newBaseServiceInfo` (`ipMode: Proxy`, other family).

use super::*;
use crate::model::{ServiceType, TrafficPolicy};

fn lb(ingress: &[&str]) -> impl FnOnce(&mut Service) {
    let ingress = ips(ingress);
    move |s: &mut Service| {
        s.service_type = ServiceType::LoadBalancer;
        s.ports[0].node_port = Some(3001);
        s.load_balancer_ips = ingress;
    }
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case::new("load balancer with an ingress IP", "TestLoadBalancer")
            .service(svc("ns1", "svc1", "10.20.30.41", lb(&["10.1.2.4"])))
            .slice(slice(
                "ns1",
                "svc1",
                1,
                Protocol::Tcp,
                vec![ep("10.180.0.1")],
            ))
            .table(&[
                "TCP 10.1.2.4:80 rr -> 10.180.0.1:80",
                "TCP 10.20.30.41:80 rr -> 10.180.0.1:80",
                "TCP 100.101.102.103:3001 rr -> 10.180.0.1:80",
            ])
            .bound(&["10.1.2.4", "10.20.30.41"])
            .ipset("KUBE-LOAD-BALANCER", &["10.1.2.4,tcp:80"])
            .ipset("KUBE-LOAD-BALANCER-LOCAL", &[])
            .ipset("KUBE-NODE-PORT-TCP", &["3001"]),
        Case::new(
            "externalTrafficPolicy Local load balancer takes local endpoints",
            "TestOnlyLocalLoadBalancing",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            lb(&["10.1.2.4"])(s);
            s.external_traffic_policy = TrafficPolicy::Local;
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![local("10.180.0.1"), remote("10.180.1.1")],
        ))
        .table(&[
            "TCP 10.1.2.4:80 rr local -> 10.180.0.1:80",
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80, 10.180.1.1:80",
            "TCP 100.101.102.103:3001 rr local -> 10.180.0.1:80",
        ])
        .ipset("KUBE-LOAD-BALANCER", &["10.1.2.4,tcp:80"])
        .ipset("KUBE-LOAD-BALANCER-LOCAL", &["10.1.2.4,tcp:80"])
        .ipset("KUBE-NODE-PORT-LOCAL-TCP", &["3001"]),
        Case::new(
            "externalTrafficPolicy Local load balancer without local endpoints gets all endpoints",
            "syncEndpoint (kubernetes PR 97081)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            lb(&["10.1.2.4"])(s);
            s.external_traffic_policy = TrafficPolicy::Local;
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![remote("10.180.0.1"), remote("10.180.1.1")],
        ))
        // Issue 20 item 1: pods here reach their LoadBalancer IP (bound on kube-ipvs0).
        .table(&[
            "TCP 10.1.2.4:80 rr local -> 10.180.0.1:80, 10.180.1.1:80",
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80, 10.180.1.1:80",
            "TCP 100.101.102.103:3001 rr local -> 10.180.0.1:80, 10.180.1.1:80",
        ]),
        Case::new(
            "loadBalancerSourceRanges fill the firewall sets",
            "TestLoadBalancerSourceRanges",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            lb(&["10.1.2.4"])(s);
            s.load_balancer_source_ranges = vec!["1.2.3.0/28".parse().unwrap()];
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![ep("10.180.0.1")],
        ))
        .table(&[
            "TCP 10.1.2.4:80 rr -> 10.180.0.1:80",
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80",
            "TCP 100.101.102.103:3001 rr -> 10.180.0.1:80",
        ])
        .ipset("KUBE-LOAD-BALANCER-FW", &["10.1.2.4,tcp:80"])
        .ipset(
            "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            &["10.1.2.4,tcp:80,1.2.3.0/28"],
        )
        .ipset("KUBE-LOAD-BALANCER-SOURCE-IP", &[]),
        Case::new(
            "a source range holding a node IP lets the node reach the ingress",
            "TestLoadBalancerSourceRanges (allowFromNode)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            lb(&["10.1.2.4"])(s);
            s.load_balancer_source_ranges = vec![
                "1.2.3.0/28".parse().unwrap(),
                "100.101.102.0/24".parse().unwrap(),
            ];
        }))
        .table(&[
            "TCP 10.1.2.4:80 rr -> none",
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.103:3001 rr -> none",
        ])
        .ipset(
            "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            &[
                "10.1.2.4,tcp:80,1.2.3.0/28",
                "10.1.2.4,tcp:80,100.101.102.0/24",
            ],
        )
        .ipset(
            "KUBE-LOAD-BALANCER-SOURCE-IP",
            &["10.1.2.4,tcp:80,10.1.2.4"],
        ),
        Case::new(
            "source ranges of the other family are ignored",
            "newBaseServiceInfo (loadBalancerSourceRanges by family)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            lb(&["10.1.2.4"])(s);
            s.load_balancer_source_ranges = vec![
                "1.2.3.0/28".parse().unwrap(),
                "2001:db8::/64".parse().unwrap(),
            ];
        }))
        .table(&[
            "TCP 10.1.2.4:80 rr -> none",
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.103:3001 rr -> none",
        ])
        .ipset(
            "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            &["10.1.2.4,tcp:80,1.2.3.0/28"],
        )
        .ipset("KUBE-6-LOAD-BALANCER-SOURCE-CID", &[]),
        Case::new(
            "health check node port of an externalTrafficPolicy Local load balancer",
            "TestHealthCheckNodePort",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            lb(&["10.1.2.4"])(s);
            s.external_traffic_policy = TrafficPolicy::Local;
            s.health_check_node_port = Some(30000);
        }))
        .table(&[
            "TCP 10.1.2.4:80 rr local -> none",
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.103:3001 rr local -> none",
        ])
        .ipset("KUBE-HEALTH-CHECK-NODE-PORT", &["30000"]),
        Case::new(
            "ingress IPs with ipMode Proxy are not captured",
            "newBaseServiceInfo (IsVIPMode), TestLoadBalancerIngressRouteTypeProxy",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            lb(&["10.1.2.4"])(s);
            s.load_balancer_proxy_ips = ips(&["10.1.2.5"]);
            s.load_balancer_source_ranges = vec!["1.2.3.0/28".parse().unwrap()];
        }))
        // Issue 20 item 2: no 10.1.2.5 virtual server, binding or firewall entry.
        .table(&[
            "TCP 10.1.2.4:80 rr -> none",
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.103:3001 rr -> none",
        ])
        .bound(&["10.1.2.4", "10.20.30.41"])
        .ipset("KUBE-LOAD-BALANCER", &["10.1.2.4,tcp:80"])
        .ipset("KUBE-LOAD-BALANCER-FW", &["10.1.2.4,tcp:80"]),
        Case::new(
            "ingress IPs of the other family are dropped",
            "newBaseServiceInfo (ingress family)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            lb(&["10.1.2.4", "2001:db8:1::4"])(s);
            s.load_balancer_source_ranges = vec!["2001:db8::/32".parse().unwrap()];
        }))
        .table(&[
            "TCP 10.1.2.4:80 rr -> none",
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.103:3001 rr -> none",
        ])
        .bound(&["10.1.2.4", "10.20.30.41"])
        .ipset("KUBE-6-LOAD-BALANCER", &[])
        .ipset("KUBE-6-LOAD-BALANCER-FW", &[])
        // The only range is IPv6: the IPv4 ingress is not fenced (kube-proxy's per-family
        // ranges are empty), rather than closed to everyone.
        .ipset("KUBE-LOAD-BALANCER-FW", &[]),
    ]
}

#[test]
fn load_balancer_scenarios() {
    check(cases());
}
