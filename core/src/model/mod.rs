//! The compact cluster model: only the fields the proxy, DNS and pod environment need,
//! projected from Kubernetes API objects (see [`project`]). Raw API objects are never kept.

pub(crate) mod intern;
pub mod project;
pub mod selector;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

/// A small sorted set of labels (or selector terms): `key=value` pairs with interned strings.
///
/// Far smaller than a `BTreeMap<String, String>` for the one to three labels objects usually
/// carry (a B-tree node alone is over 500 bytes), which matters with 10,000s of objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Labels(Box<[(Arc<str>, Arc<str>)]>);

impl Labels {
    /// Builds the set from pairs (sorted by key; a repeated key keeps the last value).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            map.insert(k, v);
        }
        Labels(
            map.into_iter()
                .map(|(k, v)| (intern::intern(k), intern::intern(v)))
                .collect(),
        )
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// Whether there are no pairs.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs, sorted by key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Whether every pair of `self` (a selector) is present in `labels`.
    pub(crate) fn selects(&self, labels: &Labels) -> bool {
        self.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Namespace and name of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectKey {
    /// Namespace of the object.
    pub namespace: Arc<str>,
    /// Name of the object.
    pub name: Arc<str>,
}

impl ObjectKey {
    /// Builds a key from a namespace and a name.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The object kinds the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub enum Kind {
    /// `v1/Service`.
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `v1/Pod`.
    Pod,
    /// `v1/Node` (cluster-scoped: its key has an empty namespace).
    Node,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 4] = [Kind::Service, Kind::EndpointSlice, Kind::Pod, Kind::Node];

    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Node => "Node",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    /// TCP (the Kubernetes default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Upper-case name as Kubernetes writes it (`TCP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// Lower-case name as DNS SRV labels and Docker links use it (`tcp`).
    pub(crate) fn as_lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.type` of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ServiceType {
    /// Reachable inside the cluster on its cluster IPs.
    ClusterIp,
    /// ClusterIP plus a port on every node.
    NodePort,
    /// NodePort plus an external load balancer.
    LoadBalancer,
    /// A DNS alias (CNAME) to an external name.
    ExternalName,
}

impl ServiceType {
    /// The spelling used by the API (`ClusterIP`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        }
    }
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum TrafficPolicy {
    /// Any endpoint in the cluster (default).
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

/// `targetPort` of a service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum TargetPort {
    /// A port number on the pod.
    Number(u16),
    /// A named container port, resolved per pod.
    Name(Arc<str>),
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ServicePort {
    /// Port name; empty when the service has a single unnamed port.
    pub name: Arc<str>,
    /// Protocol.
    pub protocol: Protocol,
    /// The service port.
    pub port: u16,
    /// Where traffic goes on the endpoints.
    pub target_port: TargetPort,
    /// NodePort, when allocated.
    pub node_port: Option<u16>,
}

/// Session affinity of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum SessionAffinity {
    /// No affinity.
    #[default]
    None,
    /// Same client IP, same endpoint, for `timeout_seconds` (default 10800).
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds`.
        timeout_seconds: u32,
    },
}

/// A projected Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Namespace and name.
    pub key: ObjectKey,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (falling back to `spec.clusterIP`), empty when headless or ExternalName.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.clusterIP: None`.
    pub headless: bool,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// IPs from `status.loadBalancer.ingress[].ip` whose `ipMode` is `VIP` (or unset): the load
    /// balancer delivers packets with these as destination, so the proxy captures them.
    pub load_balancer_ips: Vec<IpAddr>,
    /// IPs from `status.loadBalancer.ingress[].ip` with `ipMode: Proxy`: the load balancer
    /// rewrites the destination (e.g. PROXY protocol), so the proxy must not capture them
    /// (kube-proxy skips them too).
    pub load_balancer_proxy_ips: Vec<IpAddr>,
    /// Hostnames from `status.loadBalancer.ingress[].hostname`.
    pub load_balancer_hostnames: Vec<Arc<str>>,
    /// Session affinity.
    pub session_affinity: SessionAffinity,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// `spec.healthCheckNodePort`.
    pub health_check_node_port: Option<u16>,
    /// `spec.loadBalancerSourceRanges`: the only sources allowed to reach the load-balancer
    /// ingress IPs (empty: any).
    pub load_balancer_source_ranges: Vec<ipnetwork::IpNetwork>,
    /// `spec.externalName` for ExternalName services.
    pub external_name: Option<Arc<str>>,
    /// `spec.publishNotReadyAddresses`.
    pub publish_not_ready_addresses: bool,
    /// `spec.selector`; `None` when the service has no selector.
    pub selector: Option<Labels>,
    /// `metadata.labels` (the DNS `labels` option selects services by them).
    pub labels: Labels,
    /// Label `service.kubernetes.io/service-proxy-name`: set means another proxy owns it.
    pub service_proxy_name: Option<Arc<str>>,
    /// `spec.trafficDistribution` (`PreferClose`, `PreferSameZone`, `PreferSameNode`).
    pub traffic_distribution: Option<Arc<str>>,
    /// Annotation `service.kubernetes.io/topology-mode`, else the older
    /// `service.kubernetes.io/topology-aware-hints`.
    pub topology_mode: Option<Arc<str>>,
    /// `metadata.resourceVersion`, if any.
    pub resource_version: Option<Arc<str>>,
}

impl Service {
    /// Whether this service has at least one cluster IP (not headless, not ExternalName).
    pub fn has_cluster_ip(&self) -> bool {
        !self.cluster_ips.is_empty()
    }
}

/// `addressType` of an EndpointSlice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AddressType {
    /// IPv4 addresses.
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
    /// FQDNs (deprecated; addresses are not IPs and are dropped on projection).
    Fqdn,
}

/// One port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct EndpointPort {
    /// Name, matching the service port's name (empty for unnamed).
    pub name: Arc<str>,
    /// Protocol.
    pub protocol: Protocol,
    /// Port number on the endpoints; `None` means "all ports" and is unusable for proxying.
    pub port: Option<u16>,
}

/// Reference to the object behind an endpoint (usually a Pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TargetRef {
    /// Kind, e.g. `Pod`.
    pub kind: Arc<str>,
    /// Namespace (may be empty).
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

/// The addresses of one endpoint: one inline (the common case, no allocation), more on the heap.
/// Derefs to `&[IpAddr]`; build it with `vec![ip].into()` or `EndpointAddresses::from_slice`.
pub(crate) type EndpointAddresses = smallvec::SmallVec<[IpAddr; 1]>;

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// Addresses (all of the slice's family; almost always exactly one, kept inline).
    pub addresses: EndpointAddresses,
    /// `conditions.ready` (unset means ready).
    pub ready: bool,
    /// `conditions.serving` (unset means same as ready).
    pub serving: bool,
    /// `conditions.terminating` (unset means false).
    pub terminating: bool,
    /// `hostname`.
    pub hostname: Option<Arc<str>>,
    /// `nodeName`.
    pub node_name: Option<Arc<str>>,
    /// `zone`.
    pub zone: Option<Arc<str>>,
    /// `targetRef`.
    pub target_ref: Option<TargetRef>,
    /// `hints` (topology-aware routing); `None` when the endpoint has none (the common case,
    /// one pointer wide).
    pub hints: Option<Box<EndpointHints>>,
}

/// `hints` of an endpoint: where the EndpointSlice controller wants it used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct EndpointHints {
    /// `hints.forZones[].name`: the zones whose nodes should use this endpoint.
    pub for_zones: Box<[Arc<str>]>,
    /// `hints.forNodes[].name`: the nodes that should use this endpoint.
    pub for_nodes: Box<[Arc<str>]>,
}

impl EndpointHints {
    /// Whether both lists are empty (as good as no hints).
    pub(crate) fn is_empty(&self) -> bool {
        self.for_zones.is_empty() && self.for_nodes.is_empty()
    }
}

/// A projected EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    /// Namespace and name of the slice itself.
    pub key: ObjectKey,
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service_name: Option<Arc<str>>,
    /// Address family.
    pub address_type: AddressType,
    /// Ports.
    pub ports: Vec<EndpointPort>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Label `service.kubernetes.io/service-proxy-name`.
    pub service_proxy_name: Option<Arc<str>>,
    /// Label `service.kubernetes.io/headless` present.
    pub headless: bool,
    /// `metadata.resourceVersion`, if any.
    pub resource_version: Option<Arc<str>>,
}

impl EndpointSlice {
    /// Key of the owning service, if the slice names one.
    pub(crate) fn service_key(&self) -> Option<ObjectKey> {
        self.service_name
            .as_ref()
            .map(|name| ObjectKey::new(self.key.namespace.clone(), name.clone()))
    }
}

/// A named container port of a pod (to resolve named target ports).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ContainerPort {
    /// Name.
    pub name: Arc<str>,
    /// Protocol.
    pub protocol: Protocol,
    /// Number.
    pub port: u16,
}

/// A projected Pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// Namespace and name.
    pub key: ObjectKey,
    /// `status.podIPs` (falling back to `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// Labels (for selectors).
    pub labels: Labels,
    /// `spec.nodeName`.
    pub node_name: Option<Arc<str>>,
    /// `spec.hostname`.
    pub hostname: Option<Arc<str>>,
    /// `spec.subdomain`.
    pub subdomain: Option<Arc<str>>,
    /// Condition `Ready` is `True`.
    pub ready: bool,
    /// `metadata.deletionTimestamp` set.
    pub terminating: bool,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// Named container ports.
    pub container_ports: Vec<ContainerPort>,
}

/// A projected Node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Name.
    pub name: Arc<str>,
    /// `status.addresses` of type InternalIP, then ExternalIP, that parse as IPs.
    pub addresses: Vec<IpAddr>,
    /// Label `topology.kubernetes.io/zone`.
    pub zone: Option<Arc<str>>,
}

/// Any object the cache can hold, behind an `Arc`: projected once, then shared without copying
/// by the source that made it (a relist buffer, the manifest directory's last good files), the
/// cache's snapshots and every reader, as kube-rs's reflector stores `Arc<K>`.
///
/// Build one from a model object with `ClusterObject::from(service)` (or `.into()`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum ClusterObject {
    /// A Service.
    Service(Arc<Service>),
    /// An EndpointSlice.
    EndpointSlice(Arc<EndpointSlice>),
    /// A Pod.
    Pod(Arc<Pod>),
    /// A Node.
    Node(Arc<Node>),
}

impl ClusterObject {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            ClusterObject::Service(_) => Kind::Service,
            ClusterObject::EndpointSlice(_) => Kind::EndpointSlice,
            ClusterObject::Pod(_) => Kind::Pod,
            ClusterObject::Node(_) => Kind::Node,
        }
    }

    /// The object's key (nodes have an empty namespace).
    pub(crate) fn key(&self) -> ObjectKey {
        match self {
            ClusterObject::Service(s) => s.key.clone(),
            ClusterObject::EndpointSlice(s) => s.key.clone(),
            ClusterObject::Pod(p) => p.key.clone(),
            ClusterObject::Node(n) => ObjectKey::new("", n.name.clone()),
        }
    }
}

/// `From<T>` and `From<Arc<T>>` for each kind's variant.
macro_rules! cluster_object_from {
    ($($variant:ident),*) => {$(
        impl From<$variant> for ClusterObject {
            fn from(o: $variant) -> Self {
                ClusterObject::$variant(Arc::new(o))
            }
        }

        impl From<Arc<$variant>> for ClusterObject {
            fn from(o: Arc<$variant>) -> Self {
                ClusterObject::$variant(o)
            }
        }
    )*};
}

cluster_object_from!(Service, EndpointSlice, Pod, Node);
