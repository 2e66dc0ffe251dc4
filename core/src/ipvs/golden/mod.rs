//! kube-proxy's own IPVS scenarios as golden tests of the pure desired state.
//!
//! Each [`Case`] translates one scenario of kube-proxy's `pkg/proxy/ipvs/proxier_test.go`
//! (v1.30–1.32; a few come from `pkg/proxy/util` or `servicechangetracker` tests, named in
//! `from`): the same Services, EndpointSlices, node IPs and `nodePortAddresses`, and the virtual
//! servers, real servers, bound addresses and ipset entries kube-proxy expects, written out by
//! hand. Where svcnet deliberately differs, the case says so in `differs` and why.
//!
//! Every case is checked twice: a full [`build`] and an incremental [`DesiredState::update`]
//! from an empty cache must both give the expected table.
//!
//! One module per concept. Topology-aware routing (`pkg/proxy/topology_test.go`) and stale
//! conntrack cleanup (`pkg/proxy/conntrack/cleanup_test.go`) get modules of their own here
//! (`topology`, `conntrack`), next to these, written with the code that implements them.

mod cluster_ip;
mod external_ip;
mod load_balancer;
mod node_port;
mod session_scheduler;
mod terminating;
mod traffic_policy;

use std::net::IpAddr;
use std::sync::Arc;

use super::desired::{DesiredState, NodeInfo, build};
use super::extras::HostExtras;
use super::host::ipsets_with;
use super::table::{FLAG_PERSISTENT, FLAG_SCHED1, FLAG_SCHED2, Family, ServiceId, VirtualServer};
use super::{ProxyConfig, fixtures};
use crate::cache::new_cache;
use crate::model::{ClusterObject, Endpoint, EndpointSlice, Kind, Protocol, Service};

/// kube-proxy's test node name (`testHostname`).
pub(super) const HOST: &str = "test-hostname";

/// One kube-proxy scenario.
pub(super) struct Case {
    /// The scenario's name (kube-proxy's, where it has one).
    name: &'static str,
    /// The kube-proxy test it comes from.
    from: &'static str,
    objects: Vec<ClusterObject>,
    node: NodeInfo,
    config: ProxyConfig,
    /// Every virtual server, sorted by identity, as [`line`] renders it.
    table: Vec<String>,
    /// The addresses bound on `kube-ipvs0` (unchecked when `None`).
    bound: Option<Vec<String>>,
    /// ipsets compared exactly (others are not looked at).
    ipsets: Vec<(&'static str, Vec<String>)>,
    /// Where svcnet deliberately differs from kube-proxy here, and why.
    differs: Option<&'static str>,
}

impl Case {
    /// A scenario on node [`HOST`] with address `100.101.102.103` (kube-proxy's test node IP).
    pub(super) fn new(name: &'static str, from: &'static str) -> Self {
        Self {
            name,
            from,
            objects: Vec::new(),
            node: node(&["100.101.102.103"]),
            config: ProxyConfig::default(),
            table: Vec::new(),
            bound: None,
            ipsets: Vec::new(),
            differs: None,
        }
    }

    pub(super) fn service(mut self, svc: Service) -> Self {
        self.objects.push(ClusterObject::from(svc));
        self
    }

    pub(super) fn slice(mut self, slice: EndpointSlice) -> Self {
        self.objects.push(ClusterObject::from(slice));
        self
    }

    /// This node's Node object (named [`HOST`]) with `status.addresses` `ips` (InternalIP
    /// first, as the projection orders them).
    pub(super) fn node_object(mut self, ips: &[&str]) -> Self {
        self.objects.push(ClusterObject::from(crate::model::Node {
            name: Arc::from(HOST),
            addresses: ips.iter().map(|a| a.parse().expect("node IP")).collect(),
            zone: None,
        }));
        self
    }

    pub(super) fn node_ips(mut self, ips: &[&str]) -> Self {
        self.node = node(ips);
        self
    }

    pub(super) fn config(mut self, f: impl FnOnce(&mut ProxyConfig)) -> Self {
        f(&mut self.config);
        self
    }

    pub(super) fn table(mut self, lines: &[&str]) -> Self {
        self.table = lines.iter().map(|l| l.to_string()).collect();
        self
    }

    pub(super) fn bound(mut self, addrs: &[&str]) -> Self {
        self.bound = Some(addrs.iter().map(|a| a.to_string()).collect());
        self
    }

    pub(super) fn ipset(mut self, name: &'static str, entries: &[&str]) -> Self {
        let mut e: Vec<String> = entries.iter().map(|a| a.to_string()).collect();
        e.sort();
        self.ipsets.push((name, e));
        self
    }

    pub(super) fn differs(mut self, why: &'static str) -> Self {
        self.differs = Some(why);
        self
    }

    /// The differences from the expectation, empty when the case passes.
    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice, Kind::Node]);
        let mut incremental = build(&w.snapshot(), &self.config, &self.node);
        w.update(|tx| {
            for o in &self.objects {
                tx.apply(o.clone());
            }
        });
        let snapshot = w.snapshot();
        let full = build(&snapshot, &self.config, &self.node);
        incremental.update(&snapshot, &self.config, &self.node);
        let mut expected = self.table.clone();
        expected.sort();
        for (how, state) in [("build", &full), ("update", &incremental)] {
            let got = table(state);
            if got != expected {
                out.push(format!(
                    "{how}: table\n    got      {got:#?}\n    expected {expected:#?}"
                ));
            }
        }
        if let Some(bound) = &self.bound {
            let got: Vec<String> = full.addresses().map(|a| a.to_string()).collect();
            let mut want = bound.clone();
            want.sort_by_key(|a| a.parse::<IpAddr>().ok());
            if got != want {
                out.push(format!("bound: got {got:?}, expected {want:?}"));
            }
        }
        if !self.ipsets.is_empty() {
            let extras = HostExtras::of_view(full.view());
            let sets: Vec<_> = [Family::V4, Family::V6]
                .into_iter()
                .flat_map(|f| ipsets_with(&full, f, &extras, &self.node.local_addresses))
                .collect();
            for (name, want) in &self.ipsets {
                match sets.iter().find(|s| s.name == *name) {
                    None => out.push(format!("ipset {name}: no such set")),
                    Some(set) => {
                        let got: Vec<String> = set.entries.iter().cloned().collect();
                        if &got != want {
                            out.push(format!("ipset {name}: got {got:?}, expected {want:?}"));
                        }
                    }
                }
            }
        }
        out
    }
}

/// Runs `cases`, panicking with every failing case (name, source, what differs).
pub(super) fn check(cases: Vec<Case>) {
    let mut failed = Vec::new();
    for case in &cases {
        assert!(
            !case.table.is_empty() || case.name.contains("nothing"),
            "{}: no expectation",
            case.name
        );
        let f = case.failures();
        if !f.is_empty() {
            failed.push(format!(
                "{} ({}){}:\n  {}",
                case.name,
                case.from,
                case.differs
                    .map(|d| format!(" [differs: {d}]"))
                    .unwrap_or_default(),
                f.join("\n  ")
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} scenarios differ:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// One virtual server as a line: `TCP 10.20.30.41:80 rr [persistent 10800] [mh-fallback]
/// [mh-port] -> 10.180.0.1:80, ...` (`-> none` without real servers), marked `local` when it
/// only takes endpoints on this node (`externalTrafficPolicy`/`internalTrafficPolicy: Local`).
pub(super) fn line(id: &ServiceId, vs: &VirtualServer) -> String {
    let mut s = format!("{id} {}", vs.params.scheduler);
    if vs.params.flags & FLAG_PERSISTENT != 0 {
        s.push_str(&format!(" persistent {}", vs.params.timeout));
    }
    if vs.params.flags & FLAG_SCHED1 != 0 {
        s.push_str(" mh-fallback");
    }
    if vs.params.flags & FLAG_SCHED2 != 0 {
        s.push_str(" mh-port");
    }
    if vs.local_only {
        s.push_str(" local");
    }
    s.push_str(" ->");
    if vs.dests.is_empty() {
        s.push_str(" none");
    }
    let dests: Vec<String> = vs.dests.keys().map(|d| d.to_string()).collect();
    if !dests.is_empty() {
        s.push(' ');
        s.push_str(&dests.join(", "));
    }
    s
}

fn table(state: &DesiredState) -> Vec<String> {
    let mut v: Vec<String> = state.servers().map(|(id, vs)| line(id, vs)).collect();
    v.sort();
    v
}

/// The node [`HOST`] with `ips` as its local addresses.
pub(super) fn node(ips: &[&str]) -> NodeInfo {
    NodeInfo {
        node_name: Some(Arc::from(HOST)),
        local_addresses: ips.iter().map(|a| a.parse().expect("node IP")).collect(),
    }
}

/// kube-proxy's `makeTestService(ns, name, ...)`: a ClusterIP Service with cluster IP `ip` and
/// one port `p80` (TCP 80), changed by `f`.
pub(super) fn svc(ns: &str, name: &str, ip: &str, f: impl FnOnce(&mut Service)) -> Service {
    let mut s = fixtures::service(ns, name, ip, &[("p80", Protocol::Tcp, 80, 80)]);
    f(&mut s);
    s
}

/// kube-proxy's `makeTestEndpointSlice(ns, name, idx, ...)` with port `p80` (`protocol`, 80).
pub(super) fn slice(
    ns: &str,
    svc: &str,
    idx: u32,
    protocol: Protocol,
    eps: Vec<Endpoint>,
) -> EndpointSlice {
    fixtures::slice(
        ns,
        &format!("{svc}-{idx}"),
        svc,
        &[("p80", protocol, 80)],
        eps,
    )
}

/// A ready endpoint with no node.
pub(super) fn ep(addr: &str) -> Endpoint {
    fixtures::endpoint(addr, true, None)
}

/// A ready endpoint on this node.
pub(super) fn local(addr: &str) -> Endpoint {
    fixtures::endpoint(addr, true, Some(HOST))
}

/// A ready endpoint on another node.
pub(super) fn remote(addr: &str) -> Endpoint {
    fixtures::endpoint(addr, true, Some("otherHost"))
}

/// An endpoint with kube-proxy's three conditions, on this node or another.
pub(super) fn cond(
    addr: &str,
    ready: bool,
    serving: bool,
    terminating: bool,
    on_host: bool,
) -> Endpoint {
    Endpoint {
        ready,
        serving,
        terminating,
        ..fixtures::endpoint(addr, false, Some(if on_host { HOST } else { "otherHost" }))
    }
}

pub(super) fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().expect("test IP")).collect()
}

#[test]
fn the_suite_has_at_least_forty_scenarios() {
    let n = cluster_ip::cases().len()
        + node_port::cases().len()
        + external_ip::cases().len()
        + load_balancer::cases().len()
        + traffic_policy::cases().len()
        + terminating::cases().len()
        + session_scheduler::cases().len();
    assert!(n >= 40, "only {n} golden scenarios");
}
