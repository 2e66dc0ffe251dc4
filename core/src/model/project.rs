//! Projection of Kubernetes API objects (k8s-openapi types) into the compact [`model`](super).
//!
//! Every function checks what the model relies on (IPs parse, ports are in range, names are
//! present) and names the object and field in its error. Names are checked here with the API
//! server's own rules ([`NameRule`]), once for every source: an object the API server would refuse
//! (a Service named `Bad_Name.with.dots` in a manifest) reaches neither the proxy nor DNS.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core_v1;
use k8s_openapi::api::discovery::v1 as discovery_v1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::intern::intern;
use super::*;

/// Label naming the Service an EndpointSlice belongs to.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label that hands a Service (or slice) to another proxy.
pub(crate) const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label the EndpointSlice controller puts on slices of headless services.
pub(crate) const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Service annotation that asks for topology-aware routing (`Auto`).
pub(crate) const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";
/// The older spelling of [`TOPOLOGY_MODE_ANNOTATION`] (`auto`), read when the newer is absent.
pub(crate) const TOPOLOGY_AWARE_HINTS_ANNOTATION: &str =
    "service.kubernetes.io/topology-aware-hints";
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub(crate) const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// Why an API object could not be projected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// A required field is missing.
    #[error("{kind} {object}: missing field {field}")]
    Missing {
        /// Kind of the object.
        kind: Kind,
        /// `namespace/name` (or what is known of it).
        object: String,
        /// JSON path of the field.
        field: String,
    },
    /// A field has a value the model cannot use.
    #[error("{kind} {object}: field {field}: {reason}")]
    Invalid {
        /// Kind of the object.
        kind: Kind,
        /// `namespace/name` (or what is known of it).
        object: String,
        /// JSON path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

struct Ctx {
    kind: Kind,
    object: String,
}

impl Ctx {
    fn missing(&self, field: impl Into<String>) -> ProjectionError {
        ProjectionError::Missing {
            kind: self.kind,
            object: self.object.clone(),
            field: field.into(),
        }
    }
    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> ProjectionError {
        ProjectionError::Invalid {
            kind: self.kind,
            object: self.object.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
    fn ip(&self, field: impl Into<String>, value: &str) -> Result<IpAddr, ProjectionError> {
        value
            .trim()
            .parse()
            .map_err(|_| self.invalid(field, format!("{value:?} is not an IP address")))
    }
    fn port(&self, field: impl Into<String>, value: i32) -> Result<u16, ProjectionError> {
        match u16::try_from(value) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(self.invalid(field, format!("{value} is not a port (1-65535)"))),
        }
    }
    fn protocol(&self, field: &str, value: Option<&str>) -> Result<Protocol, ProjectionError> {
        match value.unwrap_or("TCP") {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(self.invalid(field, format!("unknown protocol {other:?}"))),
        }
    }
}

/// The name rules of the API server (`k8s.io/apimachinery/pkg/util/validation`): every object
/// that reaches the cache passed the same check, so the proxy and DNS never disagree about one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// RFC 1035 label (`IsDNS1035Label`): Service names.
    Dns1035Label,
    /// RFC 1123 label (`IsDNS1123Label`): namespaces, port names, host names.
    Dns1123Label,
    /// RFC 1123 subdomain (`IsDNS1123Subdomain`): EndpointSlice, Pod and Node names.
    Dns1123Subdomain,
}

fn is_label_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
}

/// An RFC 1123 label without the length limit: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_1123_label_body(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|c| is_label_char(*c)) && s[0] != b'-' && s[s.len() - 1] != b'-'
}

impl NameRule {
    /// Checks `value`; the error says what the rule requires, in the API server's words.
    pub(crate) fn check(self, value: &str) -> Result<(), String> {
        let b = value.as_bytes();
        let (max, ok, what, example) = match self {
            NameRule::Dns1035Label => (
                63,
                is_1123_label_body(b) && b[0].is_ascii_lowercase(),
                "a DNS-1035 label: lower case alphanumeric characters or '-', starting with a \
                 letter and ending with an alphanumeric character",
                "my-name",
            ),
            NameRule::Dns1123Label => (
                63,
                is_1123_label_body(b),
                "a DNS-1123 label: lower case alphanumeric characters or '-', starting and \
                 ending with an alphanumeric character",
                "my-name",
            ),
            NameRule::Dns1123Subdomain => (
                253,
                b.split(|c| *c == b'.').all(is_1123_label_body),
                "a DNS-1123 subdomain: lower case alphanumeric characters, '-' or '.', each \
                 dot-separated part starting and ending with an alphanumeric character",
                "example.com",
            ),
        };
        if b.len() > max {
            return Err(format!(
                "{value:?} is longer than {max} characters (must be {what})"
            ));
        }
        if !ok {
            return Err(format!("{value:?} is not {what} (e.g. '{example}')"));
        }
        Ok(())
    }
}

fn meta_key(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    namespaced: bool,
    rule: NameRule,
) -> Result<(ObjectKey, Ctx), ProjectionError> {
    let name = meta.name.as_deref().unwrap_or("");
    let namespace = if namespaced {
        meta.namespace.as_deref().unwrap_or("default")
    } else {
        ""
    };
    let ctx = Ctx {
        kind,
        object: if namespaced {
            format!("{namespace}/{name}")
        } else {
            name.to_string()
        },
    };
    if name.is_empty() {
        return Err(ctx.missing("metadata.name"));
    }
    if namespaced {
        NameRule::Dns1123Label
            .check(namespace)
            .map_err(|reason| ctx.invalid("metadata.namespace", reason))?;
    }
    rule.check(name)
        .map_err(|reason| ctx.invalid("metadata.name", reason))?;
    Ok((ObjectKey::new(intern(namespace), name), ctx))
}

impl Ctx {
    /// Checks an optional name-like field (port name, host name) that must be a DNS-1123 label
    /// when set.
    fn label_field(
        &self,
        field: impl Into<String>,
        value: Option<&str>,
    ) -> Result<(), ProjectionError> {
        match value.filter(|v| !v.is_empty()) {
            Some(v) => NameRule::Dns1123Label
                .check(v)
                .map_err(|reason| self.invalid(field, reason)),
            None => Ok(()),
        }
    }
}

fn label(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<Arc<str>> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(|v| Arc::from(v.as_str()))
}

fn opt_arc(s: &Option<String>) -> Option<Arc<str>> {
    s.as_deref().filter(|s| !s.is_empty()).map(Arc::from)
}

/// Like `opt_arc`, for strings that repeat across objects (node names, zones).
fn opt_interned(s: &Option<String>) -> Option<Arc<str>> {
    s.as_deref().filter(|s| !s.is_empty()).map(intern)
}

/// Projects a `v1/Service`. A namespace missing from the object is taken as `default`.
pub fn service(svc: &core_v1::Service) -> Result<Service, ProjectionError> {
    let (key, ctx) = meta_key(Kind::Service, &svc.metadata, true, NameRule::Dns1035Label)?;
    let spec = svc.spec.as_ref().ok_or_else(|| ctx.missing("spec"))?;
    let service_type = match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" => ServiceType::ClusterIp,
        "NodePort" => ServiceType::NodePort,
        "LoadBalancer" => ServiceType::LoadBalancer,
        "ExternalName" => ServiceType::ExternalName,
        other => return Err(ctx.invalid("spec.type", format!("unknown service type {other:?}"))),
    };
    let mut headless = false;
    let raw_ips: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    // Vectors sized exactly: a pushed-to vector starts at four elements, and one Service port
    // in a four-port vector cost ~2 MB over 10,000 Services.
    let mut cluster_ips = Vec::with_capacity(raw_ips.len());
    if service_type != ServiceType::ExternalName {
        for (i, raw) in raw_ips.iter().enumerate() {
            if raw.is_empty() {
                continue;
            }
            if raw.eq_ignore_ascii_case("none") {
                headless = true;
                continue;
            }
            cluster_ips.push(ctx.ip(format!("spec.clusterIPs[{i}]"), raw)?);
        }
    }
    let mut ports = Vec::with_capacity(spec.ports.as_ref().map_or(0, Vec::len));
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        ctx.label_field(format!("{field}.name"), p.name.as_deref())?;
        let port = ctx.port(format!("{field}.port"), p.port)?;
        let target_port = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => {
                TargetPort::Number(ctx.port(format!("{field}.targetPort"), *n)?)
            }
            Some(IntOrString::String(s)) => match s.parse::<i32>() {
                Ok(n) => TargetPort::Number(ctx.port(format!("{field}.targetPort"), n)?),
                Err(_) if s.is_empty() => TargetPort::Number(port),
                Err(_) => TargetPort::Name(Arc::from(s.as_str())),
            },
        };
        let node_port = match p.node_port {
            Some(0) | None => None,
            Some(n) => Some(ctx.port(format!("{field}.nodePort"), n)?),
        };
        ports.push(ServicePort {
            name: intern(p.name.as_deref().unwrap_or("")),
            protocol: ctx.protocol(&format!("{field}.protocol"), p.protocol.as_deref())?,
            port,
            target_port,
            node_port,
        });
    }
    let mut external_ips = Vec::with_capacity(spec.external_ips.as_ref().map_or(0, Vec::len));
    for (i, raw) in spec.external_ips.iter().flatten().enumerate() {
        external_ips.push(ctx.ip(format!("spec.externalIPs[{i}]"), raw)?);
    }
    let mut load_balancer_ips = Vec::new();
    let mut load_balancer_proxy_ips = Vec::new();
    let mut load_balancer_hostnames = Vec::new();
    if let Some(ingress) = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
    {
        for (i, ing) in ingress.iter().enumerate() {
            if let Some(ip) = ing.ip.as_deref().filter(|s| !s.is_empty()) {
                let ip = ctx.ip(format!("status.loadBalancer.ingress[{i}].ip"), ip)?;
                match ing.ip_mode.as_deref() {
                    None | Some("VIP") => load_balancer_ips.push(ip),
                    Some("Proxy") => load_balancer_proxy_ips.push(ip),
                    Some(other) => {
                        return Err(ctx.invalid(
                            format!("status.loadBalancer.ingress[{i}].ipMode"),
                            format!("unknown ipMode {other:?} (expected VIP or Proxy)"),
                        ));
                    }
                }
            }
            if let Some(h) = opt_arc(&ing.hostname) {
                load_balancer_hostnames.push(h);
            }
        }
    }
    let session_affinity = match spec.session_affinity.as_deref().unwrap_or("None") {
        "None" => SessionAffinity::None,
        "ClientIP" => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_seconds = match timeout {
                None => DEFAULT_AFFINITY_TIMEOUT,
                Some(t) if (1..=86400).contains(&t) => t as u32,
                Some(t) => {
                    return Err(ctx.invalid(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("{t} is outside 1-86400"),
                    ));
                }
            };
            SessionAffinity::ClientIp { timeout_seconds }
        }
        other => {
            return Err(ctx.invalid(
                "spec.sessionAffinity",
                format!("unknown session affinity {other:?}"),
            ));
        }
    };
    let policy = |field: &str, v: &Option<String>| match v.as_deref() {
        None | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(ctx.invalid(field, format!("unknown traffic policy {other:?}"))),
    };
    let external_name = if service_type == ServiceType::ExternalName {
        let name = spec
            .external_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ctx.missing("spec.externalName"))?;
        Some(Arc::from(name.trim_end_matches('.')))
    } else {
        None
    };
    Ok(Service {
        service_type,
        cluster_ips,
        headless,
        ports,
        external_ips,
        load_balancer_ips,
        load_balancer_proxy_ips,
        load_balancer_hostnames,
        session_affinity,
        external_traffic_policy: policy(
            "spec.externalTrafficPolicy",
            &spec.external_traffic_policy,
        )?,
        internal_traffic_policy: policy(
            "spec.internalTrafficPolicy",
            &spec.internal_traffic_policy,
        )?,
        health_check_node_port: match spec.health_check_node_port {
            Some(0) | None => None,
            Some(n) => Some(ctx.port("spec.healthCheckNodePort", n)?),
        },
        external_name,
        load_balancer_source_ranges: spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, raw)| {
                raw.trim().parse::<ipnetwork::IpNetwork>().map_err(|e| {
                    ctx.invalid(
                        format!("spec.loadBalancerSourceRanges[{i}]"),
                        format!("{raw:?} is not a CIDR: {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
        selector: spec
            .selector
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| Labels::from_pairs(s.iter().map(|(k, v)| (k.as_str(), v.as_str())))),
        labels: svc
            .metadata
            .labels
            .as_ref()
            .map(|l| Labels::from_pairs(l.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
            .unwrap_or_default(),
        service_proxy_name: label(&svc.metadata, SERVICE_PROXY_NAME_LABEL),
        traffic_distribution: spec
            .traffic_distribution
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(intern),
        topology_mode: svc.metadata.annotations.as_ref().and_then(|a| {
            a.get(TOPOLOGY_MODE_ANNOTATION)
                .or_else(|| a.get(TOPOLOGY_AWARE_HINTS_ANNOTATION))
                .map(|v| intern(v))
        }),
        resource_version: opt_arc(&svc.metadata.resource_version),
        key,
    })
}

/// Projects a `discovery.k8s.io/v1/EndpointSlice`. Addresses of type FQDN are dropped.
pub fn endpoint_slice(
    slice: &discovery_v1::EndpointSlice,
) -> Result<EndpointSlice, ProjectionError> {
    let (key, ctx) = meta_key(
        Kind::EndpointSlice,
        &slice.metadata,
        true,
        NameRule::Dns1123Subdomain,
    )?;
    let address_type = match slice.address_type.as_str() {
        "IPv4" => AddressType::Ipv4,
        "IPv6" => AddressType::Ipv6,
        "FQDN" => AddressType::Fqdn,
        other => return Err(ctx.invalid("addressType", format!("unknown address type {other:?}"))),
    };
    let mut ports = Vec::with_capacity(slice.ports.as_ref().map_or(0, Vec::len));
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        ctx.label_field(format!("ports[{i}].name"), p.name.as_deref())?;
        ports.push(EndpointPort {
            name: intern(p.name.as_deref().unwrap_or("")),
            protocol: ctx.protocol(&format!("ports[{i}].protocol"), p.protocol.as_deref())?,
            port: match p.port {
                None => None,
                Some(n) => Some(ctx.port(format!("ports[{i}].port"), n)?),
            },
        });
    }
    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    for (i, ep) in slice.endpoints.iter().enumerate() {
        ctx.label_field(format!("endpoints[{i}].hostname"), ep.hostname.as_deref())?;
        let mut addresses = EndpointAddresses::with_capacity(ep.addresses.len());
        if address_type != AddressType::Fqdn {
            for (j, raw) in ep.addresses.iter().enumerate() {
                let ip = ctx.ip(format!("endpoints[{i}].addresses[{j}]"), raw)?;
                let family_ok = match address_type {
                    AddressType::Ipv4 => ip.is_ipv4(),
                    _ => ip.is_ipv6(),
                };
                if !family_ok {
                    return Err(ctx.invalid(
                        format!("endpoints[{i}].addresses[{j}]"),
                        format!("{raw} does not match addressType {}", slice.address_type),
                    ));
                }
                addresses.push(ip);
            }
        }
        let cond = ep.conditions.as_ref();
        let ready = cond.and_then(|c| c.ready).unwrap_or(true);
        let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
        endpoints.push(Endpoint {
            addresses,
            ready,
            serving,
            terminating,
            hostname: opt_arc(&ep.hostname),
            node_name: opt_interned(&ep.node_name),
            zone: opt_interned(&ep.zone),
            target_ref: ep.target_ref.as_ref().map(|r| TargetRef {
                kind: intern(r.kind.as_deref().unwrap_or("")),
                namespace: intern(r.namespace.as_deref().unwrap_or("")),
                name: Arc::from(r.name.as_deref().unwrap_or("")),
            }),
            hints: ep.hints.as_ref().and_then(|h| {
                let hints = EndpointHints {
                    for_zones: h
                        .for_zones
                        .iter()
                        .flatten()
                        .map(|z| intern(&z.name))
                        .collect(),
                    for_nodes: h
                        .for_nodes
                        .iter()
                        .flatten()
                        .map(|n| intern(&n.name))
                        .collect(),
                };
                (!hints.is_empty()).then(|| Box::new(hints))
            }),
        });
    }
    Ok(EndpointSlice {
        service_name: label(&slice.metadata, SERVICE_NAME_LABEL),
        service_proxy_name: label(&slice.metadata, SERVICE_PROXY_NAME_LABEL),
        headless: slice
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(HEADLESS_LABEL)),
        resource_version: opt_arc(&slice.metadata.resource_version),
        address_type,
        ports,
        endpoints,
        key,
    })
}

/// Projects a `v1/Pod`.
pub fn pod(pod: &core_v1::Pod) -> Result<Pod, ProjectionError> {
    let (key, ctx) = meta_key(Kind::Pod, &pod.metadata, true, NameRule::Dns1123Subdomain)?;
    let status = pod.status.as_ref();
    let mut ips = Vec::new();
    match status
        .and_then(|s| s.pod_ips.as_ref())
        .filter(|v| !v.is_empty())
    {
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                ips.push(ctx.ip(format!("status.podIPs[{i}].ip"), &p.ip)?);
            }
        }
        None => {
            if let Some(ip) = status
                .and_then(|s| s.pod_ip.as_deref())
                .filter(|s| !s.is_empty())
            {
                ips.push(ctx.ip("status.podIP", ip)?);
            }
        }
    }
    // A pod in a terminal phase has released its addresses (they may already belong to a new
    // pod), whatever its status still says.
    if status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
    {
        ips.clear();
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let spec = pod.spec.as_ref();
    ctx.label_field("spec.hostname", spec.and_then(|s| s.hostname.as_deref()))?;
    ctx.label_field("spec.subdomain", spec.and_then(|s| s.subdomain.as_deref()))?;
    let mut container_ports = Vec::new();
    for (ci, c) in spec
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let field = format!("spec.containers[{ci}].ports[{pi}]");
            container_ports.push(ContainerPort {
                name: Arc::from(name),
                protocol: ctx.protocol(&format!("{field}.protocol"), p.protocol.as_deref())?,
                port: ctx.port(format!("{field}.containerPort"), p.container_port)?,
            });
        }
    }
    Ok(Pod {
        ips,
        labels: pod
            .metadata
            .labels
            .as_ref()
            .map(|l| Labels::from_pairs(l.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
            .unwrap_or_default(),
        node_name: spec.and_then(|s| opt_interned(&s.node_name)),
        hostname: spec.and_then(|s| opt_arc(&s.hostname)),
        subdomain: spec.and_then(|s| opt_arc(&s.subdomain)),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        container_ports,
        key,
    })
}

/// Projects a `v1/Node`. Addresses that are not IPs (hostnames) are skipped.
pub fn node(node: &core_v1::Node) -> Result<Node, ProjectionError> {
    let (key, _ctx) = meta_key(
        Kind::Node,
        &node.metadata,
        false,
        NameRule::Dns1123Subdomain,
    )?;
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            // InternalIP before ExternalIP, each in status order (kube-proxy's node IP order).
            ["InternalIP", "ExternalIP"]
                .iter()
                .flat_map(|kind| a.iter().filter(move |a| a.type_ == *kind))
                .filter_map(|a| a.address.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Ok(Node {
        name: key.name,
        addresses,
        zone: label(&node.metadata, "topology.kubernetes.io/zone").map(|z| intern(&z)),
    })
}

/// Projects any supported object given as JSON (`apiVersion` + `kind`), e.g. from a manifest.
/// Returns `Ok(None)` for kinds the cache does not hold (Deployments, ConfigMaps, ...).
pub fn from_json(value: serde_json::Value) -> Result<Option<ClusterObject>, ProjectionError> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>")
        .to_string();
    fn decode<T: serde::de::DeserializeOwned>(
        kind: Kind,
        name: &str,
        value: serde_json::Value,
    ) -> Result<T, ProjectionError> {
        serde_json::from_value(value).map_err(|e| ProjectionError::Invalid {
            kind,
            object: name.to_string(),
            field: "(document)".into(),
            reason: e.to_string(),
        })
    }
    Ok(Some(match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => ClusterObject::from(service(&decode(Kind::Service, &name, value)?)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            ClusterObject::from(endpoint_slice(&decode(Kind::EndpointSlice, &name, value)?)?)
        }
        ("v1", "Pod") => ClusterObject::from(pod(&decode(Kind::Pod, &name, value)?)?),
        ("v1", "Node") => ClusterObject::from(node(&decode(Kind::Node, &name, value)?)?),
        _ => return Ok(None),
    }))
}

/// Whether `labels` satisfy an equality-based `selector` (every pair present).
pub(crate) fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.selects(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Result<Service, ProjectionError> {
        service(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn projects_dual_stack_service_with_named_ports() {
        let s = svc(json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"service.kubernetes.io/service-proxy-name": "other"}},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "fd00::5"],
                "ports": [{"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080},
                          {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}],
                "externalIPs": ["1.2.3.4"],
                "sessionAffinity": "ClientIP",
                "externalTrafficPolicy": "Local",
                "selector": {"app": "web"}
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}}
        }))
        .unwrap();
        assert_eq!(s.key, ObjectKey::new("shop", "web"));
        assert_eq!(s.service_type, ServiceType::NodePort);
        assert_eq!(
            s.cluster_ips,
            vec![
                "10.96.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert!(!s.headless);
        assert_eq!(s.ports[0].target_port, TargetPort::Name("web".into()));
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(s.ports[1].protocol, Protocol::Udp);
        assert_eq!(s.ports[1].target_port, TargetPort::Number(5353));
        assert_eq!(s.external_ips, vec!["1.2.3.4".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            s.load_balancer_ips,
            vec!["5.6.7.8".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            s.load_balancer_hostnames,
            vec![Arc::<str>::from("lb.example.com")]
        );
        assert_eq!(
            s.session_affinity,
            SessionAffinity::ClientIp {
                timeout_seconds: 10800
            }
        );
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(s.service_proxy_name.as_deref(), Some("other"));
    }

    #[test]
    fn headless_and_external_name() {
        let h = svc(json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None"}})).unwrap();
        assert!(h.headless);
        assert!(h.cluster_ips.is_empty());
        assert_eq!(h.key.namespace.as_ref(), "default");
        let e = svc(json!({"metadata": {"name": "ext", "namespace": "a"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com."}}))
        .unwrap();
        assert_eq!(e.external_name.as_deref(), Some("db.example.com"));
        let missing = svc(
            json!({"metadata": {"name": "ext", "namespace": "a"}, "spec": {"type": "ExternalName"}}),
        );
        assert!(
            matches!(missing, Err(ProjectionError::Missing { ref field, .. }) if field == "spec.externalName")
        );
    }

    #[test]
    fn ingress_ip_mode_splits_vip_and_proxy_addresses() {
        let s = svc(json!({
            "metadata": {"name": "lb", "namespace": "n"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "203.0.113.1"},
                {"ip": "203.0.113.2", "ipMode": "VIP"},
                {"ip": "203.0.113.3", "ipMode": "Proxy"}
            ]}}
        }))
        .unwrap();
        let v = |l: &[IpAddr]| l.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(v(&s.load_balancer_ips), ["203.0.113.1", "203.0.113.2"]);
        assert_eq!(v(&s.load_balancer_proxy_ips), ["203.0.113.3"]);
        let err = svc(json!({
            "metadata": {"name": "lb", "namespace": "n"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1", "ipMode": "Tunnel"}]}}
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service n/lb: field status.loadBalancer.ingress[0].ipMode: unknown ipMode \"Tunnel\" (expected VIP or Proxy)"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let err = svc(json!({"metadata": {"name": "x", "namespace": "n"},
            "spec": {"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}}))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service n/x: field spec.clusterIPs[0]: \"10.0.0.300\" is not an IP address"
        );
        let err = svc(json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 70000}]}}))
            .unwrap_err();
        assert!(err.to_string().contains("spec.ports[0].port"), "{err}");
        let err = svc(json!({"metadata": {}, "spec": {}})).unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
        let err = svc(
            json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer",
            "loadBalancerSourceRanges": ["192.0.2.0/24", "10.0.0.0/33"]}}),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.loadBalancerSourceRanges[1]: \"10.0.0.0/33\" is not a CIDR"),
            "{err}"
        );
        let ok = svc(
            json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer",
            "loadBalancerSourceRanges": [" 192.0.2.0/24", "2001:db8::/32"]}}),
        )
        .unwrap();
        assert_eq!(ok.load_balancer_source_ranges.len(), 2);
    }

    #[test]
    fn endpoint_conditions_default_like_kubernetes() {
        let s = endpoint_slice(
            &serde_json::from_value(json!({
                "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {"addresses": ["10.1.0.1"], "hostname": "web-0", "nodeName": "n1"},
                    {"addresses": ["10.1.0.2"], "conditions": {"ready": false}},
                    {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}}
                ]
            }))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(s.service_key(), Some(ObjectKey::new("shop", "web")));
        let e = &s.endpoints;
        assert!(e[0].ready && e[0].serving && !e[0].terminating);
        assert_eq!(e[0].hostname.as_deref(), Some("web-0"));
        assert!(!e[1].ready && !e[1].serving);
        assert!(!e[2].ready && e[2].serving && e[2].terminating);
        let bad = endpoint_slice(
            &serde_json::from_value(json!({
                "metadata": {"name": "w", "namespace": "s"}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["fd00::1"]}]
            }))
            .unwrap(),
        )
        .unwrap_err();
        assert!(
            bad.to_string().contains("endpoints[0].addresses[0]"),
            "{bad}"
        );
    }

    #[test]
    fn from_json_skips_unknown_kinds() {
        assert!(
            from_json(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}})
            )
            .unwrap()
            .is_none()
        );
        let pod = from_json(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n", "labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": "10.0.0.9", "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
        .unwrap();
        let ClusterObject::Pod(pod) = pod else {
            panic!()
        };
        assert!(pod.ready);
        assert_eq!(pod.container_ports[0].port, 8080);
    }
    #[test]
    fn names_are_validated_like_the_api_server() {
        // The rules themselves, with the API server's own examples.
        for ok in ["a", "my-name", "abc-123", &"a".repeat(63)] {
            assert_eq!(NameRule::Dns1035Label.check(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1abc", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(NameRule::Dns1035Label.check(bad).is_err(), "{bad}");
        }
        assert_eq!(NameRule::Dns1123Label.check("1abc"), Ok(()));
        assert!(NameRule::Dns1123Label.check("a.b").is_err());
        for ok in [
            "web-abc12",
            "a.b-c.d",
            "1.2",
            &format!("{}.{}", "a".repeat(63), "b".repeat(189)),
        ] {
            assert_eq!(NameRule::Dns1123Subdomain.check(ok), Ok(()), "{ok}");
        }
        for bad in ["a..b", ".a", "a.", "a_b", "A.b", "a.-b", &"a".repeat(254)] {
            assert!(NameRule::Dns1123Subdomain.check(bad).is_err(), "{bad}");
        }
        assert!(
            NameRule::Dns1123Subdomain
                .check(&"a".repeat(254))
                .unwrap_err()
                .contains("longer than 253 characters")
        );

        // Each kind names the object and the field.
        let err = svc(
            json!({"metadata": {"name": "Bad_Name.with.dots", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service shop/Bad_Name.with.dots: field metadata.name: \"Bad_Name.with.dots\" is not \
             a DNS-1035 label: lower case alphanumeric characters or '-', starting with a letter \
             and ending with an alphanumeric character (e.g. 'my-name')"
        );
        let err =
            svc(json!({"metadata": {"name": "web", "namespace": "Shop"}, "spec": {}})).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "Service Shop/web: field metadata.namespace: \"Shop\" is not a DNS-1123 label"
            ),
            "{err}"
        );
        let err = svc(json!({"metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80}, {"name": "Web_UI", "port": 81}]}}))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("field spec.ports[1].name: \"Web_UI\""),
            "{err}"
        );

        let slice = |v: serde_json::Value| endpoint_slice(&serde_json::from_value(v).unwrap());
        assert!(
            slice(
                json!({"metadata": {"name": "web-abc.v2", "namespace": "s"}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"], "hostname": "web-0"}]})
            )
            .is_ok()
        );
        let err = slice(json!({"metadata": {"name": "web_abc", "namespace": "s"}, "addressType": "IPv4", "endpoints": []}))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("EndpointSlice s/web_abc: field metadata.name: \"web_abc\" is not a DNS-1123 subdomain"),
            "{err}"
        );
        let err = slice(
            json!({"metadata": {"name": "w", "namespace": "s"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "hostname": "web.0"}]}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("field endpoints[0].hostname"),
            "{err}"
        );
        let err = slice(
            json!({"metadata": {"name": "w", "namespace": "s"}, "addressType": "IPv4",
            "ports": [{"name": "HTTP", "port": 80}], "endpoints": []}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("field ports[0].name"), "{err}");

        let err = from_json(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n"}, "spec": {"containers": [], "subdomain": "Sub"}}))
        .unwrap_err();
        assert!(
            err.to_string().contains("Pod n/p: field spec.subdomain"),
            "{err}"
        );
        let err =
            from_json(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "Node_1"}}))
                .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Node Node_1: field metadata.name"),
            "{err}"
        );
        assert!(
            from_json(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1.example.com"}}))
                .is_ok()
        );
    }
}
