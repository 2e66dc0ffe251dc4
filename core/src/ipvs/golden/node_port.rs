//! Node ports: `TestNodePortIPv4`, `TestNodePortIPv6`, `TestOnlyLocalNodePorts`, and the node
//! address selection of `pkg/proxy/util/nodeport_addresses.go` and the IPVS proxier
//! (`isValidForSet`, `GetAllLocalAddressesExcept`).

use super::*;
use crate::model::ServiceType;

fn node_port(protocol: Protocol) -> impl FnOnce(&mut Service) {
    move |s: &mut Service| {
        s.service_type = ServiceType::NodePort;
        s.ports[0].protocol = protocol;
        s.ports[0].node_port = Some(3001);
    }
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "1 service with node port, has 2 endpoints (IPv4)",
            "TestNodePortIPv4",
        )
        .node_ips(&["100.101.102.103", "2001:db8::1:1"])
        .service(svc("ns1", "svc1", "10.20.30.41", node_port(Protocol::Tcp)))
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
            vec![ep("1002:ab8::2:10")],
        ))
        // Issue 20 item 4: no node port on the IPv6 node address for an IPv4-only Service.
        .table(&[
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80",
            "TCP 100.101.102.103:3001 rr -> 10.180.0.1:80",
        ])
        .bound(&["10.20.30.41"])
        .ipset("KUBE-NODE-PORT-TCP", &["3001"])
        .ipset("KUBE-6-NODE-PORT-TCP", &[]),
        Case::new(
            "1 service with node port, has 2 endpoints (IPv6)",
            "TestNodePortIPv6",
        )
        .node_ips(&["100.101.102.103", "2001:db8::1:1"])
        .service(svc("ns1", "svc1", "2020::1", node_port(Protocol::Tcp)))
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
            vec![ep("1002:ab8::2:10")],
        ))
        .table(&[
            "TCP [2001:db8::1:1]:3001 rr -> [1002:ab8::2:10]:80",
            "TCP [2020::1]:80 rr -> [1002:ab8::2:10]:80",
        ])
        .ipset("KUBE-6-NODE-PORT-TCP", &["3001"])
        .ipset("KUBE-NODE-PORT-TCP", &[]),
        Case::new(
            "1 UDP service with node port, has endpoints",
            "TestNodePortIPv4",
        )
        .config(|c| c.node_port_addresses = vec!["0.0.0.0/0".parse().unwrap()])
        .service(svc("ns1", "svc1", "10.20.30.41", node_port(Protocol::Udp)))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Udp,
            vec![ep("10.180.0.1")],
        ))
        .table(&[
            "UDP 10.20.30.41:80 rr -> 10.180.0.1:80",
            "UDP 100.101.102.103:3001 rr -> 10.180.0.1:80",
        ])
        .ipset("KUBE-NODE-PORT-UDP", &["3001"]),
        Case::new(
            "1 UDP IPv4 service with node port on an IPv6-only node: no node port",
            "TestNodePortIPv6 (no action on IPv6 Proxier)",
        )
        .node_ips(&["2001:db8::1:1"])
        .config(|c| c.node_port_addresses = vec!["::/0".parse().unwrap()])
        .service(svc("ns1", "svc1", "10.20.30.41", node_port(Protocol::Udp)))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Udp,
            vec![ep("10.180.0.1")],
        ))
        .table(&["UDP 10.20.30.41:80 rr -> 10.180.0.1:80"])
        .ipset("KUBE-6-NODE-PORT-UDP", &[]),
        Case::new("service has node port but no endpoints", "TestNodePortIPv4")
            .service(svc("ns1", "svc1", "10.20.30.41", node_port(Protocol::Tcp)))
            .table(&[
                "TCP 10.20.30.41:80 rr -> none",
                "TCP 100.101.102.103:3001 rr -> none",
            ]),
        Case::new(
            "node port service with protocol sctp on a node with multiple nodeIPs",
            "TestNodePortIPv4",
        )
        .node_ips(&[
            "100.101.102.103",
            "100.101.102.104",
            "100.101.102.105",
            "2001:db8::1:1",
            "2001:db8::1:2",
            "2001:db8::1:3",
        ])
        .service(svc("ns1", "svc1", "10.20.30.41", node_port(Protocol::Sctp)))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Sctp,
            vec![ep("10.180.0.1")],
        ))
        .table(&[
            "SCTP 10.20.30.41:80 rr -> 10.180.0.1:80",
            "SCTP 100.101.102.103:3001 rr -> 10.180.0.1:80",
            "SCTP 100.101.102.104:3001 rr -> 10.180.0.1:80",
            "SCTP 100.101.102.105:3001 rr -> 10.180.0.1:80",
        ])
        .ipset(
            "KUBE-NODE-PORT-SCTP-HASH",
            &[
                "100.101.102.103,sctp:3001",
                "100.101.102.104,sctp:3001",
                "100.101.102.105,sctp:3001",
            ],
        ),
        Case::new(
            "node port service with protocol sctp and externalTrafficPolicy local",
            "TestNodePortIPv4",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            node_port(Protocol::Sctp)(s);
            s.external_traffic_policy = crate::model::TrafficPolicy::Local;
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Sctp,
            vec![local("10.180.0.1"), remote("10.180.1.1")],
        ))
        .table(&[
            "SCTP 10.20.30.41:80 rr -> 10.180.0.1:80, 10.180.1.1:80",
            "SCTP 100.101.102.103:3001 rr local -> 10.180.0.1:80",
        ])
        .ipset("KUBE-NODE-PORT-SCTP-HASH", &["100.101.102.103,sctp:3001"])
        .ipset(
            "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
            &["100.101.102.103,sctp:3001"],
        ),
        Case::new(
            "only local endpoints for node ports",
            "TestOnlyLocalNodePorts",
        )
        .node_ips(&["100.101.102.103", "2001:db8::1:1"])
        .config(|c| c.node_port_addresses = vec!["100.101.102.0/24".parse().unwrap()])
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            node_port(Protocol::Tcp)(s);
            s.external_traffic_policy = crate::model::TrafficPolicy::Local;
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![remote("10.180.0.1"), local("10.180.2.1")],
        ))
        .table(&[
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80, 10.180.2.1:80",
            "TCP 100.101.102.103:3001 rr local -> 10.180.2.1:80",
        ])
        .ipset("KUBE-NODE-PORT-TCP", &["3001"])
        .ipset("KUBE-NODE-PORT-LOCAL-TCP", &["3001"]),
        Case::new(
            "externalTrafficPolicy Local without local endpoints: the node port gets all endpoints",
            "syncEndpoint (kubernetes PR 97081)",
        )
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            node_port(Protocol::Tcp)(s);
            s.external_traffic_policy = crate::model::TrafficPolicy::Local;
        }))
        .slice(slice(
            "ns1",
            "svc1",
            1,
            Protocol::Tcp,
            vec![remote("10.180.0.1"), remote("10.180.1.1")],
        ))
        // Issue 20 item 1: pods on this node can still reach the node port.
        .table(&[
            "TCP 10.20.30.41:80 rr -> 10.180.0.1:80, 10.180.1.1:80",
            "TCP 100.101.102.103:3001 rr local -> 10.180.0.1:80, 10.180.1.1:80",
        ])
        .ipset("KUBE-NODE-PORT-LOCAL-TCP", &["3001"]),
        Case::new(
            "nodePortAddresses of one family: the other family falls back to all its addresses",
            "nodeport_addresses.go NewNodePortAddresses (zero CIDR per family)",
        )
        .node_ips(&["100.101.102.103", "192.168.0.5", "2001:db8::1:1", "fe80::1"])
        .config(|c| c.node_port_addresses = vec!["100.101.102.0/24".parse().unwrap()])
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            node_port(Protocol::Tcp)(s);
            s.cluster_ips.push("2020::1".parse().unwrap());
        }))
        // Issue 20 item 5: IPv6 node ports on every (non link-local) IPv6 address.
        .table(&[
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.103:3001 rr -> none",
            "TCP [2001:db8::1:1]:3001 rr -> none",
            "TCP [2020::1]:80 rr -> none",
        ]),
        Case::new(
            "nodePortAddresses with an IPv6 CIDR only: IPv4 node ports on every IPv4 address",
            "nodeport_addresses.go NewNodePortAddresses (zero CIDR per family)",
        )
        .node_ips(&[
            "100.101.102.103",
            "192.168.0.5",
            "2001:db8::1:1",
            "2001:db9::1",
        ])
        .config(|c| c.node_port_addresses = vec!["2001:db8::/64".parse().unwrap()])
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            node_port(Protocol::Tcp)(s);
            s.cluster_ips.push("2020::1".parse().unwrap());
        }))
        .table(&[
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.103:3001 rr -> none",
            "TCP 192.168.0.5:3001 rr -> none",
            "TCP [2001:db8::1:1]:3001 rr -> none",
            "TCP [2020::1]:80 rr -> none",
        ]),
        Case::new(
            "loopback addresses never get node ports, even when a CIDR covers them",
            "syncProxyRules (GetNodeIPs minus loopback)",
        )
        .node_ips(&["127.0.0.1", "100.101.102.103", "::1"])
        .config(|c| {
            c.node_port_addresses = vec![
                "127.0.0.0/8".parse().unwrap(),
                "100.101.102.0/24".parse().unwrap(),
                "::1/128".parse().unwrap(),
            ]
        })
        .service(svc("ns1", "svc1", "10.20.30.41", node_port(Protocol::Tcp)))
        // Issue 20 item 6.
        .table(&[
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.103:3001 rr -> none",
        ]),
        Case::new(
            "all addresses: loopback and IPv6 link-local excluded, IPv4 link-local kept",
            "netlink_linux.go isValidForSet",
        )
        .node_ips(&[
            "127.0.0.1",
            "169.254.3.4",
            "100.101.102.103",
            "::1",
            "fe80::1",
            "2001:db8::1:1",
        ])
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            node_port(Protocol::Tcp)(s);
            s.cluster_ips.push("2020::1".parse().unwrap());
        }))
        .table(&[
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.103:3001 rr -> none",
            "TCP 169.254.3.4:3001 rr -> none",
            "TCP [2001:db8::1:1]:3001 rr -> none",
            "TCP [2020::1]:80 rr -> none",
        ]),
        Case::new(
            "nodePortAddresses primary: the primary IP (bindAddress) only",
            "server.go (NodePortAddresses primary -> node IP /32, /128)",
        )
        .node_ips(&["100.101.102.103", "100.101.102.104", "2001:db8::1:1"])
        .config(|c| {
            c.node_port_addresses_primary = true;
            c.bind_address = Some("100.101.102.104".parse().unwrap());
        })
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            node_port(Protocol::Tcp)(s);
            s.cluster_ips.push("2020::1".parse().unwrap());
        }))
        // No IPv6 primary IP known: that family has no CIDR and falls back to all addresses.
        .table(&[
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.104:3001 rr -> none",
            "TCP [2001:db8::1:1]:3001 rr -> none",
            "TCP [2020::1]:80 rr -> none",
        ]),
        Case::new(
            "nodePortAddresses primary without bindAddress: the Node object's InternalIP",
            "server.go (NodePortAddresses primary; detectNodeIPs from the Node object)",
        )
        .node_ips(&["100.101.102.103", "100.101.102.104", "2001:db8::1:1"])
        .node_object(&["100.101.102.104", "100.101.102.103"])
        .config(|c| c.node_port_addresses_primary = true)
        .service(svc("ns1", "svc1", "10.20.30.41", |s| {
            node_port(Protocol::Tcp)(s);
            s.cluster_ips.push("2020::1".parse().unwrap());
        }))
        // The Node has no IPv6 address: that family falls back to all its addresses.
        .table(&[
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.104:3001 rr -> none",
            "TCP [2001:db8::1:1]:3001 rr -> none",
            "TCP [2020::1]:80 rr -> none",
        ]),
        Case::new(
            "nodePortAddresses primary with neither bindAddress nor Node object: all addresses",
            "server.go (NodePortAddresses primary; no node IP of the family)",
        )
        .node_ips(&["100.101.102.103", "100.101.102.104"])
        .config(|c| c.node_port_addresses_primary = true)
        .service(svc("ns1", "svc1", "10.20.30.41", node_port(Protocol::Tcp)))
        .table(&[
            "TCP 10.20.30.41:80 rr -> none",
            "TCP 100.101.102.103:3001 rr -> none",
            "TCP 100.101.102.104:3001 rr -> none",
        ]),
    ]
}

#[test]
fn node_port_scenarios() {
    check(cases());
}
