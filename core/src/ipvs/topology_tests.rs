//! kube-proxy's topology scenarios (`pkg/proxy/topology_test.go`, `TestCategorizeEndpoints`)
//! as a table over [`categorize`], plus the hint cases kube-proxy added later (node hints,
//! `trafficDistribution`, both hint kinds on one endpoint). Expectations are kube-proxy's.
//!
//! Where svcnet differs on purpose, the row says so:
//! - kube-proxy's `ProxyTerminatingEndpoints` gate is GA (always on); the rows that ran with it
//!   switched off are left out, the "enabled" rows are kept.
//! - Since Kubernetes 1.31 kube-proxy uses hints whenever every ready endpoint carries them and
//!   no longer reads the Service; svcnet (like kube-proxy up to 1.30, and as issue 12 asks)
//!   uses hints only when the Service asks for them (`trafficDistribution`, or the topology
//!   annotation `Auto`/`auto`). The EndpointSlice controller writes hints only for such
//!   Services, so both agree on every cluster whose hints come from it.

use std::sync::Arc;

use super::*;

#[derive(Debug, Clone, Default)]
struct Ep {
    addr: &'static str,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    zones: &'static [&'static str],
    nodes: &'static [&'static str],
}

impl TopologyEndpoint for (Ep, Option<EndpointHints>) {
    fn ready(&self) -> bool {
        self.0.ready
    }
    fn serving(&self) -> bool {
        self.0.serving
    }
    fn terminating(&self) -> bool {
        self.0.terminating
    }
    fn local(&self) -> bool {
        self.0.local
    }
    fn hints(&self) -> Option<&EndpointHints> {
        self.1.as_ref()
    }
}

fn ready(addr: &'static str, zones: &'static [&'static str]) -> Ep {
    Ep {
        addr,
        ready: true,
        zones,
        ..Ep::default()
    }
}

fn unready(addr: &'static str, zones: &'static [&'static str]) -> Ep {
    Ep {
        ready: false,
        ..ready(addr, zones)
    }
}

fn local(ep: Ep) -> Ep {
    Ep { local: true, ..ep }
}

fn terminating(addr: &'static str, is_local: bool) -> Ep {
    Ep {
        addr,
        ready: false,
        serving: true,
        terminating: true,
        local: is_local,
        ..Ep::default()
    }
}

fn not_serving(addr: &'static str, is_local: bool) -> Ep {
    Ep {
        addr,
        local: is_local,
        ..Ep::default()
    }
}

fn nodes(ep: Ep, nodes: &'static [&'static str]) -> Ep {
    Ep { nodes, ..ep }
}

/// The Service side of a row.
#[derive(Clone, Copy, Default)]
struct Svc {
    /// `trafficDistribution`.
    distribution: Option<&'static str>,
    /// The topology annotation's value.
    annotation: Option<&'static str>,
    internal_local: bool,
    external_local: bool,
    /// Has a node port (externally accessible).
    node_port: bool,
}

fn auto() -> Svc {
    Svc {
        annotation: Some("auto"),
        ..Svc::default()
    }
}

struct Row {
    name: &'static str,
    /// This node's zone label (`None`: no label).
    zone: Option<&'static str>,
    svc: Svc,
    endpoints: Vec<Ep>,
    /// `None`: the service does not use that kind of endpoint.
    cluster: Option<&'static [&'static str]>,
    local: Option<&'static [&'static str]>,
    /// Expected union; defaults to whichever of cluster/local is set when only one is.
    all: Option<&'static [&'static str]>,
    /// `hasAnyEndpoints` despite none reachable here.
    only_remote: bool,
}

impl Default for Row {
    fn default() -> Self {
        Row {
            name: "",
            zone: Some("zone-a"),
            svc: Svc::default(),
            endpoints: Vec::new(),
            cluster: None,
            local: None,
            all: None,
            only_remote: false,
        }
    }
}

fn four_zoned() -> Vec<Ep> {
    vec![
        ready("10.1.2.3:80", &["zone-a"]),
        ready("10.1.2.4:80", &["zone-b"]),
        ready("10.1.2.5:80", &["zone-c"]),
        ready("10.1.2.6:80", &["zone-a"]),
    ]
}

const ALL_FOUR: &[&str] = &["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"];

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "hints annotation == auto",
            svc: auto(),
            endpoints: four_zoned(),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            ..Row::default()
        },
        Row {
            name: "hints annotation == disabled, hints ignored",
            svc: Svc {
                annotation: Some("disabled"),
                ..Svc::default()
            },
            endpoints: four_zoned(),
            cluster: Some(ALL_FOUR),
            ..Row::default()
        },
        Row {
            name: "hints annotation == aUto (wrong capitalization), hints ignored",
            svc: Svc {
                annotation: Some("aUto"),
                ..Svc::default()
            },
            endpoints: four_zoned(),
            cluster: Some(ALL_FOUR),
            ..Row::default()
        },
        Row {
            name: "hints annotation empty, hints ignored",
            endpoints: four_zoned(),
            cluster: Some(ALL_FOUR),
            ..Row::default()
        },
        Row {
            name: "externalTrafficPolicy: Local, topology ignored for Local endpoints",
            svc: Svc {
                external_local: true,
                node_port: true,
                ..auto()
            },
            endpoints: vec![
                local(ready("10.1.2.3:80", &["zone-a"])),
                local(ready("10.1.2.4:80", &["zone-b"])),
                ready("10.1.2.5:80", &["zone-c"]),
                ready("10.1.2.6:80", &["zone-a"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            ..Row::default()
        },
        Row {
            name: "internalTrafficPolicy: Local, topology ignored for Local endpoints",
            svc: Svc {
                internal_local: true,
                node_port: true,
                ..auto()
            },
            endpoints: vec![
                local(ready("10.1.2.3:80", &["zone-a"])),
                local(ready("10.1.2.4:80", &["zone-b"])),
                ready("10.1.2.5:80", &["zone-c"]),
                ready("10.1.2.6:80", &["zone-a"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            ..Row::default()
        },
        Row {
            name: "empty node labels",
            zone: None,
            svc: auto(),
            endpoints: vec![ready("10.1.2.3:80", &["zone-a"])],
            cluster: Some(&["10.1.2.3:80"]),
            ..Row::default()
        },
        Row {
            name: "empty zone label",
            zone: Some(""),
            svc: auto(),
            endpoints: vec![ready("10.1.2.3:80", &["zone-a"])],
            cluster: Some(&["10.1.2.3:80"]),
            ..Row::default()
        },
        Row {
            name: "node in different zone, no endpoint filtering",
            zone: Some("zone-b"),
            svc: auto(),
            endpoints: vec![ready("10.1.2.3:80", &["zone-a"])],
            cluster: Some(&["10.1.2.3:80"]),
            ..Row::default()
        },
        Row {
            name: "unready endpoint",
            svc: auto(),
            endpoints: vec![
                ready("10.1.2.3:80", &["zone-a"]),
                ready("10.1.2.4:80", &["zone-b"]),
                ready("10.1.2.5:80", &["zone-c"]),
                unready("10.1.2.6:80", &["zone-a"]),
            ],
            cluster: Some(&["10.1.2.3:80"]),
            ..Row::default()
        },
        Row {
            name: "only unready endpoints in same zone (should not filter)",
            svc: auto(),
            endpoints: vec![
                unready("10.1.2.3:80", &["zone-a"]),
                ready("10.1.2.4:80", &["zone-b"]),
                ready("10.1.2.5:80", &["zone-c"]),
                unready("10.1.2.6:80", &["zone-a"]),
            ],
            cluster: Some(&["10.1.2.4:80", "10.1.2.5:80"]),
            ..Row::default()
        },
        Row {
            name: "normal endpoint filtering, Auto annotation",
            svc: Svc {
                annotation: Some("Auto"),
                ..Svc::default()
            },
            endpoints: four_zoned(),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            ..Row::default()
        },
        Row {
            name: "missing hints, no filtering applied",
            svc: auto(),
            endpoints: vec![
                ready("10.1.2.3:80", &["zone-a"]),
                ready("10.1.2.4:80", &["zone-b"]),
                ready("10.1.2.5:80", &[]),
                ready("10.1.2.6:80", &["zone-a"]),
            ],
            cluster: Some(ALL_FOUR),
            ..Row::default()
        },
        Row {
            name: "multiple hints per endpoint, filtering includes any endpoint with zone included",
            zone: Some("zone-c"),
            svc: auto(),
            endpoints: vec![
                ready("10.1.2.3:80", &["zone-a", "zone-b", "zone-c"]),
                ready("10.1.2.4:80", &["zone-b", "zone-c"]),
                ready("10.1.2.5:80", &["zone-b", "zone-d"]),
                ready("10.1.2.6:80", &["zone-c"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            ..Row::default()
        },
        Row {
            name: "conflicting topology and localness require merging allEndpoints",
            svc: Svc {
                external_local: true,
                node_port: true,
                ..auto()
            },
            endpoints: vec![
                local(ready("10.0.0.0:80", &["zone-a"])),
                local(ready("10.0.0.1:80", &["zone-b"])),
                ready("10.0.0.2:80", &["zone-a"]),
                ready("10.0.0.3:80", &["zone-b"]),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
            local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"]),
            ..Row::default()
        },
        Row {
            name: "internalTrafficPolicy: Local, with empty endpoints",
            svc: Svc {
                internal_local: true,
                ..Svc::default()
            },
            local: Some(&[]),
            ..Row::default()
        },
        Row {
            name: "internalTrafficPolicy: Local, but all endpoints are remote",
            svc: Svc {
                internal_local: true,
                ..Svc::default()
            },
            endpoints: vec![ready("10.0.0.0:80", &[]), ready("10.0.0.1:80", &[])],
            local: Some(&[]),
            only_remote: true,
            ..Row::default()
        },
        Row {
            name: "internalTrafficPolicy: Local, all endpoints are local",
            svc: Svc {
                internal_local: true,
                ..Svc::default()
            },
            endpoints: vec![
                local(ready("10.0.0.0:80", &[])),
                local(ready("10.0.0.1:80", &[])),
            ],
            local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Row::default()
        },
        Row {
            name: "internalTrafficPolicy: Local, some endpoints are local",
            svc: Svc {
                internal_local: true,
                ..Svc::default()
            },
            endpoints: vec![local(ready("10.0.0.0:80", &[])), ready("10.0.0.1:80", &[])],
            local: Some(&["10.0.0.0:80"]),
            ..Row::default()
        },
        Row {
            name: "Cluster traffic policy, endpoints not Ready",
            endpoints: vec![unready("10.0.0.0:80", &[]), unready("10.0.0.1:80", &[])],
            cluster: Some(&[]),
            ..Row::default()
        },
        Row {
            name: "Cluster traffic policy, some endpoints are Ready",
            endpoints: vec![unready("10.0.0.0:80", &[]), ready("10.0.0.1:80", &[])],
            cluster: Some(&["10.0.0.1:80"]),
            ..Row::default()
        },
        Row {
            name: "Cluster traffic policy, PTE enabled, all endpoints are terminating",
            endpoints: vec![
                terminating("10.0.0.0:80", true),
                terminating("10.0.0.1:80", false),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Row::default()
        },
        Row {
            name: "iTP: Local, eTP: Cluster, some endpoints local",
            svc: Svc {
                internal_local: true,
                node_port: true,
                ..Svc::default()
            },
            endpoints: vec![local(ready("10.0.0.0:80", &[])), ready("10.0.0.1:80", &[])],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Row::default()
        },
        Row {
            name: "iTP: Cluster, eTP: Local, some endpoints local",
            svc: Svc {
                external_local: true,
                node_port: true,
                ..Svc::default()
            },
            endpoints: vec![local(ready("10.0.0.0:80", &[])), ready("10.0.0.1:80", &[])],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Row::default()
        },
        Row {
            name: "iTP: Local, eTP: Local, some endpoints local",
            svc: Svc {
                internal_local: true,
                external_local: true,
                node_port: true,
                ..Svc::default()
            },
            endpoints: vec![local(ready("10.0.0.0:80", &[])), ready("10.0.0.1:80", &[])],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Row::default()
        },
        Row {
            name: "iTP: Local, eTP: Local, all endpoints remote",
            svc: Svc {
                internal_local: true,
                external_local: true,
                node_port: true,
                ..Svc::default()
            },
            endpoints: vec![ready("10.0.0.0:80", &[]), ready("10.0.0.1:80", &[])],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&[]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Row::default()
        },
        Row {
            name: "iTP: Local, eTP: Local, PTE enabled, all endpoints remote and terminating",
            svc: Svc {
                internal_local: true,
                external_local: true,
                node_port: true,
                ..Svc::default()
            },
            endpoints: vec![
                terminating("10.0.0.0:80", false),
                terminating("10.0.0.1:80", false),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&[]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: true,
            ..Row::default()
        },
        Row {
            name: "iTP: Cluster, eTP: Local, PTE enabled, with terminating endpoints",
            svc: Svc {
                external_local: true,
                node_port: true,
                ..Svc::default()
            },
            endpoints: vec![
                ready("10.0.0.0:80", &[]),
                not_serving("10.0.0.1:80", true),
                terminating("10.0.0.2:80", true),
                terminating("10.0.0.3:80", false),
            ],
            cluster: Some(&["10.0.0.0:80"]),
            local: Some(&["10.0.0.2:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
            ..Row::default()
        },
        Row {
            name: "externalTrafficPolicy ignored if not externally accessible",
            svc: Svc {
                external_local: true,
                ..Svc::default()
            },
            endpoints: vec![ready("10.0.0.0:80", &[]), local(ready("10.0.0.1:80", &[]))],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Row::default()
        },
        Row {
            name: "no cluster endpoints for iTP:Local internal-only service",
            svc: Svc {
                internal_local: true,
                ..Svc::default()
            },
            endpoints: vec![ready("10.0.0.0:80", &[]), local(ready("10.0.0.1:80", &[]))],
            local: Some(&["10.0.0.1:80"]),
            ..Row::default()
        },
        // Later kube-proxy scenarios: trafficDistribution and node hints (PreferSameNode).
        Row {
            name: "trafficDistribution PreferClose uses zone hints without the annotation",
            svc: Svc {
                distribution: Some("PreferClose"),
                ..Svc::default()
            },
            endpoints: four_zoned(),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            ..Row::default()
        },
        Row {
            name: "trafficDistribution wins over a Disabled annotation",
            svc: Svc {
                distribution: Some("PreferSameZone"),
                annotation: Some("Disabled"),
                ..Svc::default()
            },
            endpoints: four_zoned(),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            ..Row::default()
        },
        Row {
            name: "PreferSameNode: node hints for this node win over zone hints",
            svc: Svc {
                distribution: Some("PreferSameNode"),
                ..Svc::default()
            },
            endpoints: vec![
                nodes(ready("10.1.2.3:80", &["zone-a"]), &["node-a"]),
                nodes(ready("10.1.2.4:80", &["zone-a"]), &["node-b"]),
                nodes(ready("10.1.2.5:80", &["zone-b"]), &["node-c"]),
            ],
            cluster: Some(&["10.1.2.3:80"]),
            ..Row::default()
        },
        Row {
            name: "PreferSameNode: no endpoint for this node falls back to zone hints",
            svc: Svc {
                distribution: Some("PreferSameNode"),
                ..Svc::default()
            },
            endpoints: vec![
                nodes(ready("10.1.2.3:80", &["zone-a"]), &["node-x"]),
                nodes(ready("10.1.2.4:80", &["zone-a"]), &["node-b"]),
                nodes(ready("10.1.2.5:80", &["zone-b"]), &["node-c"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            ..Row::default()
        },
        Row {
            name: "PreferSameNode: an endpoint without node hint falls back to zone hints",
            svc: Svc {
                distribution: Some("PreferSameNode"),
                ..Svc::default()
            },
            endpoints: vec![
                nodes(ready("10.1.2.3:80", &["zone-a"]), &["node-a"]),
                ready("10.1.2.4:80", &["zone-a"]),
                nodes(ready("10.1.2.5:80", &["zone-b"]), &["node-c"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            ..Row::default()
        },
        Row {
            name: "PreferSameNode: node hints only, none for this node: all endpoints",
            svc: Svc {
                distribution: Some("PreferSameNode"),
                ..Svc::default()
            },
            endpoints: vec![
                nodes(ready("10.1.2.3:80", &[]), &["node-b"]),
                nodes(ready("10.1.2.4:80", &[]), &["node-c"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            ..Row::default()
        },
        Row {
            name: "hints ignored for the terminating fallback when nothing is ready",
            svc: auto(),
            endpoints: vec![
                Ep {
                    zones: &["zone-b"],
                    ..terminating("10.1.2.3:80", false)
                },
                Ep {
                    zones: &["zone-a"],
                    ..terminating("10.1.2.4:80", false)
                },
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            ..Row::default()
        },
    ]
}

fn hints_of(ep: &Ep) -> Option<EndpointHints> {
    let h = EndpointHints {
        for_zones: ep.zones.iter().map(|z| Arc::from(*z)).collect(),
        for_nodes: ep.nodes.iter().map(|n| Arc::from(*n)).collect(),
    };
    (!h.is_empty()).then_some(h)
}

fn names(eps: &[(Ep, Option<EndpointHints>)], idx: &[usize]) -> Vec<&'static str> {
    let mut out: Vec<&str> = idx.iter().map(|i| eps[*i].0.addr).collect();
    out.sort_unstable();
    out
}

fn sorted(list: &[&'static str]) -> Vec<&'static str> {
    let mut v = list.to_vec();
    v.sort_unstable();
    v
}

fn policy_of(svc: &Svc) -> PortPolicy {
    PortPolicy {
        hints: svc.distribution.is_some() || matches!(svc.annotation, Some("Auto" | "auto")),
        internal_local: svc.internal_local,
        external_local: svc.external_local,
        externally_accessible: svc.node_port,
    }
}

#[test]
fn kube_proxy_categorize_endpoints_scenarios() {
    let mut failures = Vec::new();
    let rows = rows();
    assert!(rows.len() >= 30, "the table lost rows");
    for row in &rows {
        let eps: Vec<(Ep, Option<EndpointHints>)> = row
            .endpoints
            .iter()
            .map(|e| (e.clone(), hints_of(e)))
            .collect();
        let node = NodeTopology {
            name: Some("node-a"),
            zone: row.zone.filter(|z| !z.is_empty()),
        };
        let got = categorize(&eps, &policy_of(&row.svc), &node);
        let cluster = got.cluster.as_ref().map(|c| names(&eps, c));
        let local = got.local.as_ref().map(|l| names(&eps, l));
        if cluster != row.cluster.map(sorted) {
            failures.push(format!(
                "{}: cluster {cluster:?}, want {:?}",
                row.name, row.cluster
            ));
        }
        if local != row.local.map(sorted) {
            failures.push(format!(
                "{}: local {local:?}, want {:?}",
                row.name, row.local
            ));
        }
        let want_all = match (row.cluster, row.local) {
            (Some(c), None) => sorted(c),
            (None, Some(l)) => sorted(l),
            _ => sorted(row.all.expect("row with both sets needs `all`")),
        };
        let all = names(&eps, &got.all_reachable());
        if all != want_all {
            failures.push(format!("{}: all {all:?}, want {want_all:?}", row.name));
        }
        let want_any = !want_all.is_empty() || row.only_remote;
        if got.has_any != want_any {
            failures.push(format!(
                "{}: has_any {}, want {want_any}",
                row.name, got.has_any
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn zoned(addr: &'static str, zones: &'static [&'static str]) -> (Ep, Option<EndpointHints>) {
    let e = ready(addr, zones);
    let h = hints_of(&e);
    (e, h)
}

#[test]
fn why_hints_were_ignored_is_reported() {
    let node = |name, zone| NodeTopology { name, zone };
    let eps = vec![zoned("a", &["zone-a"]), zoned("b", &["zone-b"])];
    assert_eq!(
        topology_mode(&eps, &node(Some("n"), Some("zone-a"))),
        (TopologyMode::SameZone, None)
    );
    assert_eq!(
        topology_mode(&eps, &node(Some("n"), Some("zone-x"))),
        (
            TopologyMode::None,
            Some(HintsIgnored::NoEndpointForZone("zone-x".into()))
        ),
        "a zone no hint names"
    );
    assert_eq!(
        topology_mode(&eps, &node(Some("n"), None)),
        (TopologyMode::None, Some(HintsIgnored::NodeWithoutZone))
    );
    assert_eq!(
        topology_mode(&eps, &node(None, None)),
        (TopologyMode::None, Some(HintsIgnored::NoNodeName))
    );
    let partial = vec![zoned("a", &["zone-a"]), zoned("b", &[])];
    assert_eq!(
        topology_mode(&partial, &node(Some("n"), Some("zone-a"))),
        (TopologyMode::None, Some(HintsIgnored::MissingHints))
    );
    let none = vec![zoned("a", &[]), zoned("b", &[])];
    assert_eq!(
        topology_mode(&none, &node(Some("n"), Some("zone-a"))),
        (TopologyMode::None, None),
        "no hints at all is not worth a log line"
    );
    let both = vec![(
        nodes(ready("a", &["zone-b"]), &["other"]),
        hints_of(&nodes(ready("a", &["zone-b"]), &["other"])),
    )];
    assert_eq!(
        topology_mode(&both, &node(Some("n"), Some("zone-a"))).1,
        Some(HintsIgnored::NoEndpointForZone("zone-a".into())),
        "both kinds unusable: the zone reason is the last one tried"
    );
}

#[test]
fn wants_hints_reads_distribution_and_annotations() {
    let mut svc = crate::ipvs::fixtures::service("ns", "s", "10.0.0.1", &[]);
    assert!(!wants_hints(&svc));
    for (v, want) in [
        ("Auto", true),
        ("auto", true),
        ("Disabled", false),
        ("x", false),
    ] {
        svc.topology_mode = Some(Arc::from(v));
        assert_eq!(wants_hints(&svc), want, "annotation {v}");
    }
    svc.topology_mode = None;
    svc.traffic_distribution = Some(Arc::from("PreferClose"));
    assert!(wants_hints(&svc));
}

/// Topology-aware routing through the desired state: hints narrow the `Cluster` entry points,
/// this node's zone comes from its Node object, and changes to it apply live.
mod desired_state {
    use std::net::IpAddr;
    use std::sync::Arc;

    use crate::cache::{CacheWriter, new_cache};
    use crate::ipvs::config::ProxyConfig;
    use crate::ipvs::desired::{DesiredState, NodeInfo, build};
    use crate::ipvs::fixtures::{endpoint, service, slice};
    use crate::ipvs::table::ServiceId;
    use crate::model::{
        ClusterObject, Endpoint, EndpointHints, Kind, Node, Protocol, ServiceType, TrafficPolicy,
    };

    fn hinted(addr: &str, node: &str, zones: &[&str], nodes: &[&str]) -> Endpoint {
        Endpoint {
            hints: Some(Box::new(EndpointHints {
                for_zones: zones.iter().map(|z| Arc::from(*z)).collect(),
                for_nodes: nodes.iter().map(|n| Arc::from(*n)).collect(),
            })),
            ..endpoint(addr, true, Some(node))
        }
    }

    fn node_object(zone: Option<&str>) -> ClusterObject {
        ClusterObject::from(Node {
            name: Arc::from("node-a"),
            addresses: vec![],
            zone: zone.map(Arc::from),
        })
    }

    fn this_node() -> NodeInfo {
        NodeInfo {
            node_name: Some(Arc::from("node-a")),
            local_addresses: vec!["192.168.1.5".parse().unwrap()],
        }
    }

    /// `web`: PreferClose, a node port with `externalTrafficPolicy: Local`, and three
    /// endpoints: 10.0.1.1 (zone-a, on node-a), 10.0.2.1 (zone-b), 10.0.1.2 (zone-a).
    fn cluster(endpoints: Vec<Endpoint>, zone: Option<&str>) -> CacheWriter {
        let mut svc = service(
            "default",
            "web",
            "10.96.0.10",
            &[("http", Protocol::Tcp, 80, 8080)],
        );
        svc.traffic_distribution = Some(Arc::from("PreferClose"));
        svc.service_type = ServiceType::NodePort;
        svc.ports[0].node_port = Some(30080);
        svc.external_traffic_policy = TrafficPolicy::Local;
        let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice, Kind::Node]);
        w.update(|tx| {
            tx.apply(ClusterObject::from(svc));
            tx.apply(ClusterObject::from(slice(
                "default",
                "web-1",
                "web",
                &[("http", Protocol::Tcp, 8080)],
                endpoints,
            )));
            tx.apply(node_object(zone));
        });
        w
    }

    fn zoned() -> Vec<Endpoint> {
        vec![
            hinted("10.0.1.1", "node-a", &["zone-a"], &[]),
            hinted("10.0.2.1", "node-b", &["zone-b"], &[]),
            hinted("10.0.1.2", "node-c", &["zone-a"], &[]),
        ]
    }

    fn dests(state: &DesiredState, addr: &str, port: u16) -> Vec<String> {
        let id = ServiceId::new(Protocol::Tcp, addr.parse::<IpAddr>().unwrap(), port);
        let vs = state.server(&id).unwrap_or_else(|| panic!("no {id}"));
        vs.dests.keys().map(|d| d.addr.to_string()).collect()
    }

    #[test]
    fn hints_narrow_the_cluster_ip_but_not_the_local_node_port() {
        let w = cluster(zoned(), Some("zone-a"));
        let state = build(&w.snapshot(), &ProxyConfig::default(), &this_node());
        assert_eq!(
            dests(&state, "10.96.0.10", 80),
            ["10.0.1.1", "10.0.1.2"],
            "cluster IP: zone-a endpoints only"
        );
        assert_eq!(
            dests(&state, "192.168.1.5", 30080),
            ["10.0.1.1"],
            "eTP Local node port: this node's endpoints, hints play no part"
        );
    }

    #[test]
    fn a_zone_no_hint_names_a_node_without_zone_or_object_and_partial_hints_use_everything() {
        let all = ["10.0.1.1", "10.0.1.2", "10.0.2.1"];
        for (what, w) in [
            ("zone no hint names", cluster(zoned(), Some("zone-x"))),
            ("node without zone label", cluster(zoned(), None)),
            ("endpoint without hint", {
                let mut eps = zoned();
                eps[1].hints = None;
                cluster(eps, Some("zone-a"))
            }),
        ] {
            let state = build(&w.snapshot(), &ProxyConfig::default(), &this_node());
            assert_eq!(dests(&state, "10.96.0.10", 80), all, "{what}");
        }
        let w = cluster(zoned(), Some("zone-a"));
        let nameless = NodeInfo {
            node_name: None,
            ..this_node()
        };
        let state = build(&w.snapshot(), &ProxyConfig::default(), &nameless);
        assert_eq!(dests(&state, "10.96.0.10", 80), all, "no --node-name");
    }

    #[test]
    fn both_hint_kinds_prefer_this_node_then_this_zone() {
        let both = vec![
            hinted("10.0.1.1", "node-a", &["zone-a"], &["node-a"]),
            hinted("10.0.2.1", "node-b", &["zone-b"], &["node-b"]),
            hinted("10.0.1.2", "node-c", &["zone-a"], &["node-c"]),
        ];
        let w = cluster(both.clone(), Some("zone-a"));
        let state = build(&w.snapshot(), &ProxyConfig::default(), &this_node());
        assert_eq!(dests(&state, "10.96.0.10", 80), ["10.0.1.1"], "same node");
        let elsewhere = NodeInfo {
            node_name: Some(Arc::from("node-z")),
            ..this_node()
        };
        let mut w = cluster(both, Some("zone-a"));
        w.update(|tx| {
            tx.apply(ClusterObject::from(Node {
                name: Arc::from("node-z"),
                addresses: vec![],
                zone: Some(Arc::from("zone-a")),
            }))
        });
        let state = build(&w.snapshot(), &ProxyConfig::default(), &elsewhere);
        assert_eq!(
            dests(&state, "10.96.0.10", 80),
            ["10.0.1.1", "10.0.1.2"],
            "no endpoint for node-z: its zone's"
        );
    }

    #[test]
    fn a_zone_change_rebuilds_everything_an_endpoint_change_only_its_service() {
        let mut w = cluster(zoned(), Some("zone-a"));
        let config = ProxyConfig::default();
        let mut state = build(&w.snapshot(), &config, &this_node());
        w.update(|tx| tx.apply(node_object(Some("zone-b"))));
        let delta = state.update(&w.snapshot(), &config, &this_node());
        assert!(delta.full, "zone change: full rebuild");
        assert_eq!(dests(&state, "10.96.0.10", 80), ["10.0.2.1"]);

        w.update(|tx| {
            tx.apply(ClusterObject::from(slice(
                "default",
                "web-1",
                "web",
                &[("http", Protocol::Tcp, 8080)],
                vec![
                    hinted("10.0.1.1", "node-a", &["zone-a"], &[]),
                    hinted("10.0.2.1", "node-b", &["zone-b"], &[]),
                    hinted("10.0.2.2", "node-b", &["zone-b"], &[]),
                ],
            )))
        });
        let delta = state.update(&w.snapshot(), &config, &this_node());
        assert!(!delta.full, "an endpoint change is incremental");
        assert_eq!(delta.rebuilt, 1);
        assert_eq!(dests(&state, "10.96.0.10", 80), ["10.0.2.1", "10.0.2.2"]);

        w.update(|tx| tx.apply(node_object(None)));
        let delta = state.update(&w.snapshot(), &config, &this_node());
        assert!(delta.full, "label removed: full rebuild");
        assert_eq!(
            dests(&state, "10.96.0.10", 80),
            ["10.0.1.1", "10.0.2.1", "10.0.2.2"],
            "no zone: every endpoint"
        );
    }
}

#[test]
fn projection_keeps_hints_distribution_and_annotations() {
    use crate::model::project;
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default",
            "annotations": {"service.kubernetes.io/topology-aware-hints": "auto"}},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}],
            "trafficDistribution": "PreferClose"}
    }))
    .unwrap();
    let svc = project::service(&svc).unwrap();
    assert_eq!(svc.traffic_distribution.as_deref(), Some("PreferClose"));
    assert_eq!(
        svc.topology_mode.as_deref(),
        Some("auto"),
        "older annotation"
    );
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.1.1"], "hints": {"forZones": [{"name": "zone-a"}],
                    "forNodes": [{"name": "node-a"}]}},
                {"addresses": ["10.0.1.2"], "hints": {"forZones": []}},
                {"addresses": ["10.0.1.3"]}
            ]
        }))
        .unwrap();
    let slice = project::endpoint_slice(&slice).unwrap();
    let h = slice.endpoints[0].hints.as_deref().expect("hints kept");
    assert_eq!(&*h.for_zones[0], "zone-a");
    assert_eq!(&*h.for_nodes[0], "node-a");
    assert!(
        slice.endpoints[1].hints.is_none(),
        "empty hints are no hints"
    );
    assert!(slice.endpoints[2].hints.is_none());
}
