//! Pod environment variables exactly as kubelet injects them.
//!
//! kubelet (`pkg/kubelet/kubelet_pods.go`, `getServiceEnvVarMap`) picks the services a pod sees:
//!
//! - only services with a cluster IP (headless and ExternalName services are skipped);
//! - the master service `kubernetes` of namespace `default`, always — even with
//!   `enableServiceLinks: false`;
//! - with `enableServiceLinks` (the default), every service of the pod's own namespace; a
//!   service of that namespace named `kubernetes` replaces the master one.
//!
//! For each of them `pkg/kubelet/envvars/envvars.go` (`FromServices`) emits, in this order:
//! `{SVC}_SERVICE_HOST`, `{SVC}_SERVICE_PORT` (first port), `{SVC}_SERVICE_PORT_{NAME}` for every
//! named port, then the Docker-link set: `{SVC}_PORT` (first port) and, per port,
//! `{SVC}_PORT_{PORT}_{PROTO}`, `..._PROTO`, `..._PORT`, `..._ADDR`. Names are upper-cased with
//! `-` → `_`; the host of the Docker-link URLs is joined like Go's `net.JoinHostPort`, so IPv6
//! cluster IPs are bracketed (`tcp://[fd00::1]:80`). The address is the primary cluster IP.
//!
//! kubelet collects the result in a Go map, so its order inside a container is unspecified;
//! this module is deterministic instead: services sorted by name, each service's variables in
//! `FromServices` order. Where two services produce the same variable name, the later service
//! (by name) wins, as a map would keep one value; the variable stays at its first position.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;

use crate::cache::Snapshot;
use crate::model::Service;

/// The namespace of kubelet's master services.
pub(crate) const MASTER_SERVICE_NAMESPACE: &str = "default";

/// Services whose variables every pod gets (kubelet's `masterServices`).
pub(crate) const MASTER_SERVICES: &[&str] = &["kubernetes"];

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    /// Name, e.g. `KUBERNETES_SERVICE_HOST`.
    pub name: String,
    /// Value, e.g. `10.96.0.1`.
    pub value: String,
}

impl EnvVar {
    fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Which services a pod sees, as kubelet decides it (see the module docs).
///
/// Returns the services sorted by name.
pub(crate) fn services_for_pod<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> Vec<&'a Service> {
    let mut chosen: HashMap<&str, &'a Service> = HashMap::new();
    for service in services {
        if !service.has_cluster_ip() {
            continue;
        }
        let name: &str = &service.key.name;
        let is_master =
            &*service.key.namespace == MASTER_SERVICE_NAMESPACE && MASTER_SERVICES.contains(&name);
        if is_master {
            // A same-namespace service of the same name seen earlier wins.
            chosen.entry(name).or_insert(service);
        } else if &*service.key.namespace == namespace && enable_service_links {
            chosen.insert(name, service);
        }
    }
    let mut list: Vec<&Service> = chosen.into_values().collect();
    list.sort_by(|a, b| a.key.name.cmp(&b.key.name));
    list
}

/// The variables of `services` in kubelet's `FromServices` order (services without a cluster IP
/// are skipped). Duplicated names keep their first position and the last value.
pub(crate) fn from_services<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut push = |var: EnvVar| match index.get(&var.name) {
        Some(&i) => out[i].value = var.value,
        None => {
            index.insert(var.name.clone(), out.len());
            out.push(var);
        }
    };
    for service in services {
        for var in service_vars(service) {
            push(var);
        }
    }
    out
}

/// The variables kubelet gives a pod in `namespace` from the services in `snapshot`.
pub fn pod_env(snapshot: &Snapshot, namespace: &str, enable_service_links: bool) -> Vec<EnvVar> {
    from_services(services_for_pod(
        snapshot.services().map(|s| s.as_ref()),
        namespace,
        enable_service_links,
    ))
}

/// The variables of one service (empty without a cluster IP).
pub(crate) fn service_vars(service: &Service) -> Vec<EnvVar> {
    let Some(ip) = service.cluster_ips.first() else {
        return Vec::new();
    };
    let ip_text = ip.to_string();
    let prefix = env_name(&service.key.name);
    let mut vars = vec![EnvVar::new(format!("{prefix}_SERVICE_HOST"), &ip_text)];
    if let Some(first) = service.ports.first() {
        let port_var = format!("{prefix}_SERVICE_PORT");
        vars.push(EnvVar::new(&port_var, first.port.to_string()));
        for port in service.ports.iter().filter(|p| !p.name.is_empty()) {
            vars.push(EnvVar::new(
                format!("{port_var}_{}", env_name(&port.name)),
                port.port.to_string(),
            ));
        }
    }
    for (i, port) in service.ports.iter().enumerate() {
        let proto = port.protocol.as_lower();
        let url = format!("{proto}://{}", join_host_port(ip, port.port));
        if i == 0 {
            vars.push(EnvVar::new(format!("{prefix}_PORT"), &url));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, port.protocol.as_str());
        vars.push(EnvVar::new(&port_prefix, url));
        vars.push(EnvVar::new(format!("{port_prefix}_PROTO"), proto));
        vars.push(EnvVar::new(
            format!("{port_prefix}_PORT"),
            port.port.to_string(),
        ));
        vars.push(EnvVar::new(format!("{port_prefix}_ADDR"), &ip_text));
    }
    vars
}

/// kubelet's `makeEnvVariableName`: upper case, `-` → `_`.
pub(crate) fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// Go's `net.JoinHostPort`: IPv6 hosts in brackets.
pub(crate) fn join_host_port(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// How [`render`] prints variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvFormat {
    /// `KEY=value` lines, as `env` prints them inside the pod.
    #[default]
    KeyValue,
    /// A JSON array of `{"name": ..., "value": ...}`, the shape of a container's `env`.
    Json,
    /// A file for `docker run --env-file`: `KEY=value` lines, values unquoted, `#` comments.
    DockerEnv,
}

impl FromStr for EnvFormat {
    type Err = EnvError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "env" | "keyvalue" | "key-value" => Ok(EnvFormat::KeyValue),
            "json" => Ok(EnvFormat::Json),
            "docker-env" | "docker" => Ok(EnvFormat::DockerEnv),
            other => Err(EnvError::UnknownFormat(other.to_string())),
        }
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// `--format` names no known format.
    #[error("unknown env format {0:?} (expected env, json or docker-env)")]
    UnknownFormat(String),
    /// A value cannot be written in the chosen format (Docker env files have no escapes).
    #[error("variable {name}: value contains a newline, which a Docker env file cannot hold")]
    Unrepresentable {
        /// The variable.
        name: String,
    },
}

/// Prints `vars` in `format`. `namespace` only appears in the Docker env file's comment header.
pub fn render(vars: &[EnvVar], format: EnvFormat, namespace: &str) -> Result<String, EnvError> {
    let mut out = String::new();
    match format {
        EnvFormat::KeyValue => {
            for v in vars {
                let _ = writeln!(out, "{}={}", v.name, v.value);
            }
        }
        EnvFormat::Json => {
            out = serde_json::to_string_pretty(vars).unwrap_or_else(|_| "[]".into());
            out.push('\n');
        }
        EnvFormat::DockerEnv => {
            let _ = writeln!(
                out,
                "# service environment of a pod in namespace {namespace} (svcnet)"
            );
            for v in vars {
                if v.value.contains('\n') || v.value.contains('\r') {
                    return Err(EnvError::Unrepresentable {
                        name: v.name.clone(),
                    });
                }
                let _ = writeln!(out, "{}={}", v.name, v.value);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ObjectKey, Protocol, ServicePort, ServiceType, SessionAffinity, TargetPort, TrafficPolicy,
    };

    fn svc(ns: &str, name: &str, ips: &[&str], ports: &[(&str, u16, Protocol)]) -> Service {
        Service {
            key: ObjectKey::new(ns, name),
            service_type: if ips.is_empty() {
                ServiceType::ExternalName
            } else {
                ServiceType::ClusterIp
            },
            cluster_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            headless: false,
            ports: ports
                .iter()
                .map(|(n, p, proto)| ServicePort {
                    name: (*n).into(),
                    protocol: *proto,
                    port: *p,
                    target_port: TargetPort::Number(*p),
                    node_port: None,
                })
                .collect(),
            external_ips: vec![],
            load_balancer_ips: vec![],
            load_balancer_proxy_ips: vec![],
            load_balancer_hostnames: vec![],
            session_affinity: SessionAffinity::None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: None,
            load_balancer_source_ranges: Vec::new(),
            external_name: None,
            publish_not_ready_addresses: false,
            selector: None,
            labels: Default::default(),
            service_proxy_name: None,
            traffic_distribution: None,
            topology_mode: None,
            resource_version: None,
        }
    }

    fn names(vars: &[EnvVar]) -> Vec<&str> {
        vars.iter().map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn one_service_in_kubelet_order() {
        let s = svc(
            "ns",
            "my-db",
            &["10.0.0.5"],
            &[("", 5432, Protocol::Tcp), ("metrics", 9187, Protocol::Udp)],
        );
        let vars = service_vars(&s);
        let text = render(&vars, EnvFormat::KeyValue, "ns").unwrap();
        assert_eq!(
            text,
            "MY_DB_SERVICE_HOST=10.0.0.5\n\
             MY_DB_SERVICE_PORT=5432\n\
             MY_DB_SERVICE_PORT_METRICS=9187\n\
             MY_DB_PORT=tcp://10.0.0.5:5432\n\
             MY_DB_PORT_5432_TCP=tcp://10.0.0.5:5432\n\
             MY_DB_PORT_5432_TCP_PROTO=tcp\n\
             MY_DB_PORT_5432_TCP_PORT=5432\n\
             MY_DB_PORT_5432_TCP_ADDR=10.0.0.5\n\
             MY_DB_PORT_9187_UDP=udp://10.0.0.5:9187\n\
             MY_DB_PORT_9187_UDP_PROTO=udp\n\
             MY_DB_PORT_9187_UDP_PORT=9187\n\
             MY_DB_PORT_9187_UDP_ADDR=10.0.0.5\n"
        );
    }

    #[test]
    fn ipv6_primary_ip_is_bracketed_in_urls_only() {
        let s = svc(
            "ns",
            "v6",
            &["fd00:10:96::a", "10.96.0.10"],
            &[("dns", 53, Protocol::Udp)],
        );
        let vars = service_vars(&s);
        let get = |n: &str| vars.iter().find(|v| v.name == n).unwrap().value.clone();
        assert_eq!(get("V6_SERVICE_HOST"), "fd00:10:96::a");
        assert_eq!(get("V6_PORT"), "udp://[fd00:10:96::a]:53");
        assert_eq!(get("V6_PORT_53_UDP_ADDR"), "fd00:10:96::a");
    }

    #[test]
    fn namespace_selection_and_service_links() {
        let all = [
            svc(
                "default",
                "kubernetes",
                &["10.96.0.1"],
                &[("https", 443, Protocol::Tcp)],
            ),
            svc(
                "default",
                "other",
                &["10.96.0.2"],
                &[("", 80, Protocol::Tcp)],
            ),
            svc("apps", "web", &["10.96.0.3"], &[("", 80, Protocol::Tcp)]),
            svc("apps", "alias", &[], &[]),
        ];
        let apps: Vec<_> = services_for_pod(&all, "apps", true)
            .iter()
            .map(|s| s.key.to_string())
            .collect();
        assert_eq!(apps, ["default/kubernetes", "apps/web"]);
        let off: Vec<_> = services_for_pod(&all, "apps", false)
            .iter()
            .map(|s| s.key.to_string())
            .collect();
        assert_eq!(off, ["default/kubernetes"]);
        let off_default: Vec<_> = services_for_pod(&all, "default", false)
            .iter()
            .map(|s| s.key.to_string())
            .collect();
        assert_eq!(off_default, ["default/kubernetes"]);
    }

    #[test]
    fn own_kubernetes_service_replaces_the_master_one_in_either_order() {
        let master = svc(
            "default",
            "kubernetes",
            &["10.96.0.1"],
            &[("https", 443, Protocol::Tcp)],
        );
        let own = svc(
            "apps",
            "kubernetes",
            &["10.96.9.9"],
            &[("", 8080, Protocol::Tcp)],
        );
        for list in [[&master, &own], [&own, &master]] {
            let chosen = services_for_pod(list.iter().copied(), "apps", true);
            assert_eq!(chosen.len(), 1);
            assert_eq!(chosen[0].key.namespace.as_ref(), "apps");
        }
        // Without service links the namespace's own service is not considered.
        let chosen = services_for_pod([&own, &master], "apps", false);
        assert_eq!(chosen[0].key.namespace.as_ref(), "default");
    }

    #[test]
    fn colliding_names_keep_first_position_and_last_value() {
        // `foo`'s Docker link `FOO_PORT_80_TCP_PORT` collides with `foo-port-80-tcp`'s `_PORT`.
        let a = svc("n", "foo", &["10.0.0.1"], &[("", 80, Protocol::Tcp)]);
        let b = svc(
            "n",
            "foo-port-80-tcp",
            &["10.0.0.2"],
            &[("", 81, Protocol::Tcp)],
        );
        let vars = from_services([&a, &b]);
        let hits: Vec<_> = vars
            .iter()
            .filter(|v| v.name == "FOO_PORT_80_TCP_PORT")
            .collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].value, "tcp://10.0.0.2:81");
        assert_eq!(names(&vars)[5], "FOO_PORT_80_TCP_PORT");
    }

    #[test]
    fn formats() {
        let vars = vec![EnvVar::new("A_SERVICE_HOST", "10.0.0.1")];
        assert_eq!(
            render(&vars, EnvFormat::Json, "n").unwrap(),
            "[\n  {\n    \"name\": \"A_SERVICE_HOST\",\n    \"value\": \"10.0.0.1\"\n  }\n]\n"
        );
        assert!(
            render(&vars, EnvFormat::DockerEnv, "n")
                .unwrap()
                .ends_with("\nA_SERVICE_HOST=10.0.0.1\n")
        );
        let bad = vec![EnvVar::new("X", "a\nb")];
        assert!(matches!(
            render(&bad, EnvFormat::DockerEnv, "n"),
            Err(EnvError::Unrepresentable { .. })
        ));
        assert!("yaml".parse::<EnvFormat>().is_err());
    }
}
