//! kube-proxy's `pkg/proxy/conntrack/cleanup_test.go` scenarios as golden tests of the cleanup
//! decisions: the same Service (cluster IP 172.30.1.1, external IP 192.168.99.100, load-balancer
//! IP 1.2.3.4, `dns-tcp` and `dns-udp` on port 53, node port 5353, endpoint 10.240.0.4:5300),
//! the same changes, and kube-proxy's expected deletions written out as filters. Where svcnet
//! deliberately differs, the scenario says so and why.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::cache::new_cache;
use crate::ipvs::config::ProxyConfig;
use crate::ipvs::desired::{NodeInfo, build};
use crate::ipvs::fixtures::{endpoint, service, slice};
use crate::model::{ClusterObject, Endpoint, Kind, Service, ServiceType, TrafficPolicy};

const CLUSTER_IP: &str = "172.30.1.1";
const EXTERNAL_IP: &str = "192.168.99.100";
const LB_IP: &str = "1.2.3.4";
const EP: &str = "10.240.0.4";
const EP2: &str = "10.240.0.5";
const PORT: u16 = 53;
const NODE_PORT: u16 = 5353;
const TARGET: u16 = 5300;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The node: two addresses that get node-port virtual servers, so node-port filters must come
/// out once, not once per address.
fn node() -> NodeInfo {
    NodeInfo {
        node_name: Some(Arc::from("test-worker")),
        local_addresses: vec![ip("192.168.1.5"), ip("10.0.0.5"), ip("127.0.0.1")],
    }
}

/// kube-proxy's `cleanup-test` Service, as a LoadBalancer (svcnet programs load-balancer IPs
/// for `type: LoadBalancer` only; kube-proxy's test sets the status on a ClusterIP Service).
fn cleanup_test_service(protocols: &[Protocol]) -> Service {
    let ports: Vec<(&str, Protocol, u16, u16)> = protocols
        .iter()
        .map(|p| {
            let name = match p {
                Protocol::Tcp => "dns-tcp",
                Protocol::Udp => "dns-udp",
                Protocol::Sctp => "dns-sctp",
            };
            (name, *p, PORT, TARGET)
        })
        .collect();
    let mut svc = service("test", "cleanup-test", CLUSTER_IP, &ports);
    svc.service_type = ServiceType::LoadBalancer;
    svc.external_ips = vec![ip(EXTERNAL_IP)];
    svc.load_balancer_ips = vec![ip(LB_IP)];
    for p in &mut svc.ports {
        // kube-proxy's test gives the UDP port the node port; svcnet needs one per port of a
        // LoadBalancer Service, the TCP one gets its own.
        p.node_port = Some(match p.protocol {
            Protocol::Udp => NODE_PORT,
            Protocol::Tcp => NODE_PORT + 1,
            Protocol::Sctp => NODE_PORT + 2,
        });
    }
    svc
}

fn slice_of(service: &str, protocols: &[Protocol], eps: Vec<Endpoint>) -> ClusterObject {
    let ports: Vec<(&str, Protocol, u16)> = protocols
        .iter()
        .map(|p| {
            let name = match p {
                Protocol::Tcp => "dns-tcp",
                Protocol::Udp => "dns-udp",
                Protocol::Sctp => "dns-sctp",
            };
            (name, *p, TARGET)
        })
        .collect();
    ClusterObject::from(slice("test", &format!("{service}-0"), service, &ports, eps))
}

fn ready(addrs: &[&str]) -> Vec<Endpoint> {
    addrs.iter().map(|a| endpoint(a, true, None)).collect()
}

const TCP_UDP: &[Protocol] = &[Protocol::Tcp, Protocol::Udp];

/// The Service with ready endpoints `eps` on TCP and UDP.
fn cleanup_test(eps: &[&str]) -> Vec<ClusterObject> {
    vec![
        ClusterObject::from(cleanup_test_service(TCP_UDP)),
        slice_of("cleanup-test", TCP_UDP, ready(eps)),
    ]
}

fn udp(addr: &str, port: u16) -> ServiceId {
    ServiceId::new(Protocol::Udp, ip(addr), port)
}

/// `filterForNAT` (svcnet also matches the virtual port, as kube-proxy's newer
/// `filterForIPPortNAT` does, so other ports' flows to the same address survive).
fn nat(vip: &str, ep: &str) -> ConntrackFilter {
    ConntrackFilter::endpoint(&udp(vip, PORT), EntryPoint::ClusterIp, ip(ep))
}

/// `filterForPortNAT`.
fn port_nat(port: u16, ep: &str) -> ConntrackFilter {
    ConntrackFilter {
        family: Family::V4,
        protocol: Protocol::Udp,
        orig_dst: None,
        orig_dst_port: Some(port),
        reply_src: Some(ip(ep)),
    }
}

/// `filterForIP` (plus the port, see [`nat`]).
fn ip_filter(vip: &str) -> ConntrackFilter {
    ConntrackFilter::service(&udp(vip, PORT), EntryPoint::ClusterIp)
}

/// `filterForPort`.
fn port_filter(port: u16) -> ConntrackFilter {
    ConntrackFilter {
        family: Family::V4,
        protocol: Protocol::Udp,
        orig_dst: None,
        orig_dst_port: Some(port),
        reply_src: None,
    }
}

fn sorted(mut v: Vec<ConntrackFilter>) -> Vec<ConntrackFilter> {
    v.sort_unstable();
    v
}

/// Runs one change through the tracker twice, as a full sync and as an incremental one, and
/// checks both decide the same.
fn decide(before: Vec<ClusterObject>, after: Vec<ClusterObject>) -> Vec<ConntrackFilter> {
    let config = ProxyConfig::default();
    let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.update(|tx| {
        for o in before {
            tx.apply(o);
        }
    });
    let first = w.snapshot();
    let mut desired = build(&first, &config, &node());
    let mut incremental = StaleTracker::new();
    assert!(incremental.observe(&desired, None).is_empty(), "seeding");
    let mut full = incremental.clone();
    w.update(|tx| {
        let keys: Vec<_> = first.services().map(|s| s.key.clone()).collect::<Vec<_>>();
        for k in keys {
            tx.delete(Kind::Service, &k);
        }
        let keys: Vec<_> = first.endpoint_slices().map(|s| s.key.clone()).collect();
        for k in keys {
            tx.delete(Kind::EndpointSlice, &k);
        }
        for o in after {
            tx.apply(o);
        }
    });
    let second = w.snapshot();
    let delta = desired.update(&second, &config, &node());
    let by_delta = incremental.observe(&desired, (!delta.full).then_some(&delta.services));
    let rebuilt = build(&second, &config, &node());
    let by_full = full.observe(&rebuilt, None);
    assert_eq!(by_delta, by_full, "incremental and full syncs decide alike");
    by_full
}

/// One golden scenario.
struct Scenario {
    name: &'static str,
    before: Vec<ClusterObject>,
    after: Vec<ClusterObject>,
    want: Vec<ConntrackFilter>,
}

fn scenarios() -> Vec<Scenario> {
    let v6_service = |eps: &[&str]| {
        vec![
            ClusterObject::from(service(
                "test",
                "v6",
                "fd00:96::10",
                &[("dns-udp", Protocol::Udp, PORT, TARGET)],
            )),
            slice_of("v6", &[Protocol::Udp], ready(eps)),
        ]
    };
    let sctp = |eps: &[&str]| {
        vec![
            ClusterObject::from(cleanup_test_service(&[Protocol::Sctp])),
            slice_of("cleanup-test", &[Protocol::Sctp], ready(eps)),
        ]
    };
    let sctp_f = |f: ConntrackFilter| ConntrackFilter {
        protocol: Protocol::Sctp,
        orig_dst_port: f
            .orig_dst_port
            .map(|p| if p == NODE_PORT { NODE_PORT + 2 } else { p }),
        ..f
    };
    let deleted_service = {
        let mut objs = cleanup_test(&[EP]);
        objs.push(ClusterObject::from(service(
            "test",
            "gone",
            "172.30.99.99",
            &[("dns-udp", Protocol::Udp, PORT, TARGET)],
        )));
        objs.push(slice_of("gone", &[Protocol::Udp], ready(&["10.240.9.9"])));
        objs
    };
    let local_policy = |eps: Vec<Endpoint>| {
        let mut svc = cleanup_test_service(&[Protocol::Udp]);
        svc.external_traffic_policy = TrafficPolicy::Local;
        vec![
            ClusterObject::from(svc),
            slice_of("cleanup-test", &[Protocol::Udp], eps),
        ]
    };
    vec![
        Scenario {
            name: "DeletedUDPClusterIPs clears entries for given clusterIPs (only)",
            before: deleted_service,
            after: cleanup_test(&[EP]),
            want: vec![ip_filter("172.30.99.99")],
        },
        Scenario {
            name: "DeletedUDPEndpoints clears NAT entries for all IPs and NodePorts",
            before: cleanup_test(&[EP]),
            after: cleanup_test(&[]),
            want: vec![
                nat(CLUSTER_IP, EP),
                nat(EXTERNAL_IP, EP),
                nat(LB_IP, EP),
                port_nat(NODE_PORT, EP),
            ],
        },
        Scenario {
            name: "DeletedUDPEndpoints with another endpoint left clears only the deleted one",
            before: cleanup_test(&[EP, EP2]),
            after: cleanup_test(&[EP2]),
            want: vec![
                nat(CLUSTER_IP, EP),
                nat(EXTERNAL_IP, EP),
                nat(LB_IP, EP),
                port_nat(NODE_PORT, EP),
            ],
        },
        Scenario {
            name: "NewlyActiveUDPServices clears entries for all IPs and NodePorts",
            before: cleanup_test(&[]),
            after: cleanup_test(&[EP]),
            want: vec![
                ip_filter(CLUSTER_IP),
                ip_filter(EXTERNAL_IP),
                ip_filter(LB_IP),
                port_filter(NODE_PORT),
            ],
        },
        Scenario {
            name: "NewlyActiveUDPServices: a new UDP Service created with endpoints",
            before: vec![],
            after: cleanup_test(&[EP]),
            want: vec![
                ip_filter(CLUSTER_IP),
                ip_filter(EXTERNAL_IP),
                ip_filter(LB_IP),
                port_filter(NODE_PORT),
            ],
        },
        Scenario {
            name: "DeletedUDPEndpoints for unknown Service has no effect",
            before: vec![slice_of("unknown", TCP_UDP, ready(&[EP]))],
            after: vec![slice_of("unknown", TCP_UDP, ready(&[]))],
            want: vec![],
        },
        Scenario {
            name: "NewlyActiveUDPServices for unknown Service has no effect",
            before: vec![slice_of("unknown", TCP_UDP, ready(&[]))],
            after: vec![slice_of("unknown", TCP_UDP, ready(&[EP]))],
            want: vec![],
        },
        Scenario {
            name: "TCP ports are never cleaned",
            before: vec![
                ClusterObject::from(cleanup_test_service(&[Protocol::Tcp])),
                slice_of("cleanup-test", &[Protocol::Tcp], ready(&[EP])),
            ],
            after: vec![
                ClusterObject::from(cleanup_test_service(&[Protocol::Tcp])),
                slice_of("cleanup-test", &[Protocol::Tcp], ready(&[EP2])),
            ],
            want: vec![],
        },
        Scenario {
            name: "an endpoint changing only its port is a deleted endpoint (its address is cleaned)",
            before: cleanup_test(&[EP]),
            after: vec![
                ClusterObject::from(cleanup_test_service(TCP_UDP)),
                ClusterObject::from(slice(
                    "test",
                    "cleanup-test-0",
                    "cleanup-test",
                    &[("dns-udp", Protocol::Udp, TARGET + 1)],
                    ready(&[EP]),
                )),
            ],
            want: vec![
                nat(CLUSTER_IP, EP),
                nat(EXTERNAL_IP, EP),
                nat(LB_IP, EP),
                port_nat(NODE_PORT, EP),
            ],
        },
        Scenario {
            name: "an endpoint that stops being ready is deleted from the service",
            before: cleanup_test(&[EP, EP2]),
            after: vec![
                ClusterObject::from(cleanup_test_service(TCP_UDP)),
                slice_of(
                    "cleanup-test",
                    TCP_UDP,
                    vec![endpoint(EP, false, None), endpoint(EP2, true, None)],
                ),
            ],
            want: vec![
                nat(CLUSTER_IP, EP),
                nat(EXTERNAL_IP, EP),
                nat(LB_IP, EP),
                port_nat(NODE_PORT, EP),
            ],
        },
        Scenario {
            name: "an unchanged resync deletes nothing",
            before: cleanup_test(&[EP, EP2]),
            after: cleanup_test(&[EP, EP2]),
            want: vec![],
        },
        Scenario {
            name: "IPv6 service (TestFilterForNAT ipv6 + UDP)",
            before: v6_service(&["fd00:244::4", "fd00:244::5"]),
            after: v6_service(&["fd00:244::5"]),
            want: vec![ConntrackFilter {
                family: Family::V6,
                protocol: Protocol::Udp,
                orig_dst: Some(ip("fd00:96::10")),
                orig_dst_port: Some(PORT),
                reply_src: Some(ip("fd00:244::4")),
            }],
        },
        Scenario {
            // svcnet differs: kube-proxy cleans UDP only; SCTP associations through IPVS are
            // held by their conntrack entries the same way, so svcnet cleans them too.
            name: "SCTP endpoint deleted (svcnet extension)",
            before: sctp(&[EP]),
            after: sctp(&[]),
            want: vec![
                sctp_f(nat(CLUSTER_IP, EP)),
                sctp_f(nat(EXTERNAL_IP, EP)),
                sctp_f(nat(LB_IP, EP)),
                sctp_f(port_nat(NODE_PORT, EP)),
            ],
        },
        Scenario {
            // svcnet differs: with externalTrafficPolicy Local the node-port and load-balancer
            // virtual servers only ever sent traffic to this node's endpoints, so a remote
            // endpoint going away only concerns the cluster IP (kube-proxy's IPVS mode would
            // also clear node-port entries towards it, of which there can be none).
            name: "externalTrafficPolicy Local: a remote endpoint only concerns the cluster IP",
            before: local_policy(vec![
                endpoint(EP, true, Some("other-node")),
                endpoint(EP2, true, Some("test-worker")),
            ]),
            after: local_policy(vec![endpoint(EP2, true, Some("test-worker"))]),
            want: vec![nat(CLUSTER_IP, EP)],
        },
    ]
}

#[test]
fn kube_proxy_cleanup_scenarios() {
    let mut failures = Vec::new();
    for s in scenarios() {
        let got = decide(s.before, s.after);
        let want = sorted(s.want);
        if got != want {
            failures.push(format!("{}:\n  want {want:#?}\n  got  {got:#?}", s.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_first_sync_only_records() {
    // svcnet differs: kube-proxy's first sync sees every UDP service as newly active and clears
    // their entries; svcnet adopts the running table on restart and keeps established flows.
    let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.update(|tx| {
        for o in cleanup_test(&[EP]) {
            tx.apply(o);
        }
    });
    let desired = build(&w.snapshot(), &ProxyConfig::default(), &node());
    let mut t = StaleTracker::new();
    assert!(t.observe(&desired, None).is_empty());
    // The UDP virtual servers: cluster, external, load-balancer IP and two node addresses.
    assert_eq!(t.len(), 5);
    // Known from now on: emptying the service is a deleted endpoint.
    let empty = build(
        &DesiredStateInput::empty(),
        &ProxyConfig::default(),
        &node(),
    );
    assert_eq!(t.observe(&empty, None), vec![ip_filter(CLUSTER_IP)]);
    assert!(t.is_empty());
}

/// An empty snapshot.
struct DesiredStateInput;

impl DesiredStateInput {
    fn empty() -> Arc<crate::cache::Snapshot> {
        let (w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        w.snapshot()
    }
}

/// kube-proxy's `TestCleanStaleEntries` entry matrix: 3 endpoints (serving 10.240.0.4, not
/// serving 10.240.1.5, deleted 10.240.2.6) × TCP/UDP/SCTP × (cluster, load-balancer, external IP)
/// × (service port, another port), plus node-port entries, plus entries that were never NATed.
/// The deleted endpoint's UDP entries to the service port and node port go, everything else stays.
///
/// svcnet differs in three ways, each on purpose: it decides from what changed rather than by
/// comparing the whole table with the endpoints (kube-proxy's newer reconciler), so entries
/// towards the never-ready 10.240.1.5 (which IPVS never sent traffic to) and never-NATed entries
/// are not its business; and it cleans SCTP like UDP.
#[test]
fn kube_proxy_entry_matrix() {
    const SERVING: &str = "10.240.0.4";
    const NOT_SERVING: &str = "10.240.1.5";
    const DELETED: &str = "10.240.2.6";
    const OTHER_PORT: u16 = 3000;
    let all = &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
    let objects = |eps: &[&str]| {
        let mut e = ready(eps);
        e.push(endpoint(NOT_SERVING, false, None));
        vec![
            ClusterObject::from(cleanup_test_service(all)),
            slice_of("cleanup-test", all, e),
        ]
    };
    let filters = decide(objects(&[SERVING, DELETED]), objects(&[SERVING]));
    let client = ip("192.168.5.5");
    let entry = |proto: u8, dst: &str, dport: u16, reply_src: &str| ConntrackEntry {
        protocol: proto,
        orig: ConntrackTuple {
            src: client,
            dst: ip(dst),
            src_port: 40000,
            dst_port: dport,
        },
        reply: ConntrackTuple {
            src: ip(reply_src),
            dst: client,
            src_port: TARGET,
            dst_port: 40000,
        },
        zone: 0,
        id: None,
    };
    let mut table = MemoryConntrack::default();
    let mut expected_left = Vec::new();
    for dnat in [SERVING, NOT_SERVING, DELETED] {
        for (proto, node_port) in [(6u8, NODE_PORT + 1), (17, NODE_PORT), (132, NODE_PORT + 2)] {
            let cleaned = proto != 6 && dnat == DELETED;
            for vip in [CLUSTER_IP, LB_IP, EXTERNAL_IP] {
                for port in [PORT, OTHER_PORT] {
                    let e = entry(proto, vip, port, dnat);
                    table.entries.push(e);
                    if !(cleaned && port == PORT) {
                        expected_left.push(e);
                    }
                }
            }
            let e = entry(proto, "192.168.1.5", node_port, dnat);
            table.entries.push(e);
            if !cleaned {
                expected_left.push(e);
            }
        }
    }
    for vip in [CLUSTER_IP, LB_IP, EXTERNAL_IP] {
        for port in [PORT, OTHER_PORT] {
            let e = entry(17, vip, port, vip);
            table.entries.push(e);
            expected_left.push(e);
        }
    }
    assert_eq!(table.entries.len(), 63 + 6);
    let report = table.delete_matching(&filters).unwrap();
    assert_eq!(
        report.deleted, 8,
        "UDP and SCTP: 3 service IPs + 1 node port each"
    );
    assert_eq!(report.round_trips, 1);
    assert_eq!(table.calls, 1);
    let left: BTreeSet<_> = table.entries.iter().copied().collect();
    let want: BTreeSet<_> = expected_left.into_iter().collect();
    assert_eq!(left, want);
}

#[test]
fn nothing_to_delete_costs_no_call() {
    let mut table = MemoryConntrack::default();
    assert_eq!(
        table.delete_matching(&[]).unwrap(),
        ConntrackReport::default()
    );
    assert_eq!(table.calls, 0);
}

mod sysctls {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::super::sysctl::*;
    use crate::ipvs::config::ConntrackConfig;

    #[derive(Default)]
    struct FakeIo {
        files: BTreeMap<String, String>,
        read_only: Vec<&'static str>,
        writes: Vec<(String, String)>,
    }

    impl SysctlIo for FakeIo {
        fn read(&mut self, path: &str) -> std::io::Result<String> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        fn write(&mut self, path: &str, value: &str) -> std::io::Result<()> {
            if self.read_only.contains(&path) {
                return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
            }
            self.writes.push((path.into(), value.into()));
            self.files.insert(path.into(), value.into());
            Ok(())
        }
    }

    /// kube-proxy's `TestGetConntrackMax` table (cmd/kube-proxy/app).
    #[test]
    fn conntrack_max_follows_kube_proxy() {
        let cfg = |max_per_core, min| ConntrackConfig {
            max_per_core,
            min,
            ..ConntrackConfig::default()
        };
        for (name, config, cpus, want) in [
            ("no limit", cfg(0, 0), 1, None),
            (
                "max-per-core affected by min",
                cfg(16384, 131072),
                4,
                Some(131072),
            ),
            (
                "max-per-core below min",
                cfg(32768, 131072),
                2,
                Some(131072),
            ),
            (
                "max-per-core above min",
                cfg(32768, 131072),
                8,
                Some(262144),
            ),
            ("zero min", cfg(4096, 0), 4, Some(16384)),
            ("capped at 1M", cfg(65536, 0), 64, Some(1_048_576)),
            (
                "defaults on 2 CPUs",
                ConntrackConfig::default(),
                2,
                Some(131072),
            ),
        ] {
            assert_eq!(conntrack_max(&config, cpus), want, "{name}");
        }
    }

    #[test]
    fn hashsize_grows_to_a_quarter_of_max() {
        assert_eq!(hashsize_for(131072, 16384), Some(32768));
        assert_eq!(hashsize_for(131072, 32768), None);
        assert_eq!(hashsize_for(131072, 65536), None);
    }

    #[test]
    fn applies_what_differs_and_reports_failures() {
        let mut io = FakeIo::default();
        for (p, v) in [
            (MAX_PATH, "65536"),
            (HASHSIZE_PATH, "16384"),
            (
                "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
                "86400",
            ),
            (
                "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait",
                "60",
            ),
            ("/proc/sys/net/netfilter/nf_conntrack_udp_timeout", "30"),
            (
                "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
                "120",
            ),
            ("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal", "0"),
        ] {
            io.files.insert(p.into(), format!("{v}\n"));
        }
        let config = ConntrackConfig {
            udp_timeout: Duration::from_secs(45),
            udp_stream_timeout: Duration::from_secs(180),
            tcp_be_liberal: true,
            ..ConntrackConfig::default()
        };
        let (written, failed) = apply(&mut io, &config, 2);
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(
            written,
            vec![
                (MAX_PATH, 131072),
                (HASHSIZE_PATH, 32768),
                (
                    "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait",
                    3600
                ),
                ("/proc/sys/net/netfilter/nf_conntrack_udp_timeout", 45),
                (
                    "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
                    180
                ),
                ("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal", 1),
            ],
            "the established timeout already had its value"
        );
        // Applying again changes nothing.
        let (again, _) = apply(&mut io, &config, 2);
        assert!(again.is_empty(), "{again:?}");

        // nf_conntrack_max read-only (not the initial network namespace): reported, the hash
        // table left alone, the timeouts still applied.
        let mut io = FakeIo {
            read_only: vec![MAX_PATH],
            ..FakeIo::default()
        };
        io.files.insert(MAX_PATH.into(), "65536".into());
        io.files.insert(HASHSIZE_PATH.into(), "1024".into());
        let (written, failed) = apply(&mut io, &ConntrackConfig::default(), 2);
        assert_eq!(failed.len(), 1);
        assert_eq!((failed[0].path, failed[0].value), (MAX_PATH, 131072));
        assert!(!written.iter().any(|(p, _)| *p == HASHSIZE_PATH));
        assert_eq!(written.len(), 2, "the two TCP timeouts: {written:?}");
    }

    #[test]
    fn zero_leaves_every_setting_alone() {
        let config = ConntrackConfig {
            max_per_core: 0,
            min: 0,
            tcp_established_timeout: Duration::ZERO,
            tcp_close_wait_timeout: Duration::ZERO,
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        };
        assert!(plan(&config, 8).is_empty());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0,2-3,8"), Some(4));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
