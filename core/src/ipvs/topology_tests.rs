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
