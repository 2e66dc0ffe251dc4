//! Topology-aware routing: which endpoints of one service port this node uses, as kube-proxy's
//! `CategorizeEndpoints` (`pkg/proxy/topology.go`) decides it for every proxy mode. Pure: no IO,
//! no logging; what was decided and why comes back as data for the caller to log.
//!
//! - **Cluster endpoints** (traffic policy `Cluster`): the ready endpoints, narrowed by the
//!   EndpointSlice hints when the Service asks for topology-aware routing
//!   (`spec.trafficDistribution`, or the annotation `service.kubernetes.io/topology-mode: Auto`
//!   / the older `service.kubernetes.io/topology-aware-hints: auto`) and the hints are usable:
//!   every ready endpoint has a node hint and one names this node (`PreferSameNode`), else
//!   every ready endpoint has a zone hint and one names this node's zone (`PreferSameZone`),
//!   else the hints are ignored and every ready endpoint is used. With no ready endpoint at
//!   all, the serving-and-terminating ones (hints play no part then).
//! - **Local endpoints** (traffic policy `Local`): this node's ready endpoints, else this
//!   node's serving-and-terminating ones. Hints never narrow them.

use std::sync::Arc;

use crate::model::{EndpointHints, Service};

/// One endpoint as topology-aware routing sees it.
pub(crate) trait TopologyEndpoint {
    /// `conditions.ready`.
    fn ready(&self) -> bool;
    /// `conditions.serving`.
    fn serving(&self) -> bool;
    /// `conditions.terminating`.
    fn terminating(&self) -> bool;
    /// On this node.
    fn local(&self) -> bool;
    /// The endpoint's hints, if any.
    fn hints(&self) -> Option<&EndpointHints>;
}

/// How hints narrow the cluster endpoints (kube-proxy's "topology mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopologyMode {
    /// Every ready endpoint.
    None,
    /// Endpoints hinted for this node's zone.
    SameZone,
    /// Endpoints hinted for this node.
    SameNode,
}

/// Why hints a Service asked for were not used (for one clear log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HintsIgnored {
    /// The proxy was not told its node name (`--node-name` / `hostnameOverride`).
    NoNodeName,
    /// Every ready endpoint has a zone hint, but this node has no `topology.kubernetes.io/zone`
    /// label (or its Node object is not known).
    NodeWithoutZone,
    /// Every ready endpoint has a zone hint, but none names this node's zone.
    NoEndpointForZone(Arc<str>),
    /// Every ready endpoint has a node hint, but none names this node, and the zone hints
    /// could not be used either (missing on some endpoint).
    NoEndpointForNode(Arc<str>),
    /// Some ready endpoint has no hint of the kind the others have: hints are incomplete
    /// (the controller is updating them, or gave up for this Service).
    MissingHints,
}

impl std::fmt::Display for HintsIgnored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HintsIgnored::NoNodeName => f.write_str("the proxy has no node name (--node-name)"),
            HintsIgnored::NodeWithoutZone => {
                f.write_str("this node has no topology.kubernetes.io/zone label")
            }
            HintsIgnored::NoEndpointForZone(z) => {
                write!(f, "no endpoint is hinted for this node's zone {z:?}")
            }
            HintsIgnored::NoEndpointForNode(n) => {
                write!(f, "no endpoint is hinted for this node {n:?}")
            }
            HintsIgnored::MissingHints => f.write_str("some ready endpoint has no hint"),
        }
    }
}

/// This node as topology-aware routing sees it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NodeTopology<'a> {
    /// This node's name.
    pub name: Option<&'a str>,
    /// Its `topology.kubernetes.io/zone` label.
    pub zone: Option<&'a str>,
}

/// The traffic policies of one service port, as kube-proxy's `ServicePort` reports them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PortPolicy {
    /// Whether the Service asked for topology-aware routing ([`wants_hints`]).
    pub hints: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// Reachable from outside the cluster: a node port, an external IP or a load-balancer IP.
    pub externally_accessible: bool,
}

impl PortPolicy {
    /// Some traffic uses the `Cluster` policy. Externally reachable ports always count, even
    /// with `externalTrafficPolicy: Local` (kube-proxy keeps them for short-circuiting traffic
    /// from this node's own pods).
    pub(crate) fn uses_cluster(&self) -> bool {
        !self.internal_local || self.externally_accessible
    }

    /// Some traffic uses the `Local` policy.
    pub(crate) fn uses_local(&self) -> bool {
        self.internal_local || (self.externally_accessible && self.external_local)
    }
}

/// What [`categorize`] decided, as indices into its input (ascending).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Categorized {
    /// Endpoints for `Cluster`-policy traffic; `None` when no traffic uses that policy.
    pub cluster: Option<Vec<usize>>,
    /// Endpoints for `Local`-policy traffic; `None` when no traffic uses that policy.
    pub local: Option<Vec<usize>>,
    /// Some usable endpoint exists somewhere in the cluster (even if none is reachable here).
    pub has_any: bool,
    /// How hints narrowed the cluster endpoints.
    pub mode: Option<TopologyMode>,
    /// Set when the Service asked for hints and they were not used, with the reason.
    pub ignored: Option<HintsIgnored>,
}

impl Categorized {
    /// Every endpoint reachable from this node: the union of the cluster and local ones.
    #[cfg(test)]
    pub(crate) fn all_reachable(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self
            .cluster
            .iter()
            .chain(self.local.iter())
            .flatten()
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// Whether `svc` asks for topology-aware routing: `spec.trafficDistribution` set, or the
/// topology annotation `Auto`/`auto`. Any other annotation value (`Disabled`, a typo) does not.
pub(crate) fn wants_hints(svc: &Service) -> bool {
    svc.traffic_distribution.is_some()
        || matches!(svc.topology_mode.as_deref(), Some("Auto" | "auto"))
}

/// Decides how hints narrow the cluster endpoints, as kube-proxy's `topologyModeFromHints`.
pub(crate) fn topology_mode<E: TopologyEndpoint>(
    endpoints: &[E],
    node: &NodeTopology<'_>,
) -> (TopologyMode, Option<HintsIgnored>) {
    let mut has_ready = false;
    let (mut all_node_hints, mut for_node) = (true, false);
    let (mut all_zone_hints, mut for_zone) = (true, false);
    let mut any_hints = false;
    for ep in endpoints.iter().filter(|e| e.ready()) {
        has_ready = true;
        let hints = ep.hints();
        let nodes = hints.map_or(&[][..], |h| &h.for_nodes[..]);
        let zones = hints.map_or(&[][..], |h| &h.for_zones[..]);
        any_hints |= !nodes.is_empty() || !zones.is_empty();
        if nodes.is_empty() {
            all_node_hints = false;
        } else if node.name.is_some_and(|me| nodes.iter().any(|n| **n == *me)) {
            for_node = true;
        }
        if zones.is_empty() {
            all_zone_hints = false;
        } else if node.zone.is_some_and(|z| zones.iter().any(|h| **h == *z)) {
            for_zone = true;
        }
    }
    if !has_ready {
        return (TopologyMode::None, None);
    }
    let mut why = None;
    if all_node_hints {
        if for_node {
            return (TopologyMode::SameNode, None);
        }
        why = Some(match node.name {
            Some(name) => HintsIgnored::NoEndpointForNode(Arc::from(name)),
            None => HintsIgnored::NoNodeName,
        });
    }
    if all_zone_hints {
        if for_zone {
            return (TopologyMode::SameZone, None);
        }
        why = Some(match (node.name, node.zone) {
            (None, _) => HintsIgnored::NoNodeName,
            (Some(_), None) => HintsIgnored::NodeWithoutZone,
            (Some(_), Some(zone)) => HintsIgnored::NoEndpointForZone(Arc::from(zone)),
        });
    } else if why.is_none() && any_hints {
        why = Some(HintsIgnored::MissingHints);
    }
    (TopologyMode::None, why)
}

/// Whether `ep` is used under `mode` (no fallback here: that was decided by the mode).
fn available<E: TopologyEndpoint>(ep: &E, mode: TopologyMode, node: &NodeTopology<'_>) -> bool {
    let has = |list: Option<&[Arc<str>]>, me: Option<&str>| {
        me.is_some_and(|me| list.is_some_and(|l| l.iter().any(|x| **x == *me)))
    };
    match mode {
        TopologyMode::None => true,
        TopologyMode::SameNode => has(ep.hints().map(|h| &h.for_nodes[..]), node.name),
        TopologyMode::SameZone => has(ep.hints().map(|h| &h.for_zones[..]), node.zone),
    }
}

fn pick<E>(endpoints: &[E], f: impl Fn(&E) -> bool) -> Vec<usize> {
    endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| f(e))
        .map(|(i, _)| i)
        .collect()
}

/// Splits one service port's endpoints (one address family) into the cluster and local sets,
/// as kube-proxy's `CategorizeEndpoints`.
pub(crate) fn categorize<E: TopologyEndpoint>(
    endpoints: &[E],
    policy: &PortPolicy,
    node: &NodeTopology<'_>,
) -> Categorized {
    let mut out = Categorized::default();
    if endpoints.is_empty() {
        if policy.uses_cluster() {
            out.cluster = Some(Vec::new());
        }
        if policy.uses_local() {
            out.local = Some(Vec::new());
        }
        return out;
    }
    if policy.uses_cluster() {
        let (mode, ignored) = if policy.hints {
            topology_mode(endpoints, node)
        } else {
            (TopologyMode::None, None)
        };
        let mut cluster = pick(endpoints, |e| e.ready() && available(e, mode, node));
        if cluster.is_empty() {
            // No ready endpoint anywhere (a mode other than None implies one in this zone).
            cluster = pick(endpoints, |e| e.serving() && e.terminating());
        }
        out.has_any = !cluster.is_empty();
        out.cluster = Some(cluster);
        out.mode = Some(mode);
        out.ignored = ignored;
    }
    if policy.uses_local() {
        let usable = |e: &E| e.ready() || (e.serving() && e.terminating());
        out.has_any |= endpoints.iter().any(usable);
        let local_ready = endpoints.iter().any(|e| e.local() && e.ready());
        out.local = Some(if local_ready {
            pick(endpoints, |e| e.local() && e.ready())
        } else {
            pick(endpoints, |e| e.local() && e.serving() && e.terminating())
        });
    }
    out
}

#[cfg(test)]
#[path = "topology_tests.rs"]
mod tests;
