//! `agentctl get`: kubectl-like tables (and JSON/YAML) of what the shared cache holds.
//!
//! Columns and cell formats follow kubectl's printers (`printService`, `printEndpoints`,
//! `printEndpointSlice`): `<none>` for empty cells, `<pending>` for a LoadBalancer without
//! ingress, `port:nodePort/PROTO` port lists, at most three endpoints then `+ N more...`. The
//! model keeps no creation timestamps, so there is no AGE column.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

use crate::cache::Snapshot;
use crate::env::join_host_port;
use crate::model::{AddressType, EndpointSlice, Service, ServiceType};

/// Which namespaces to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceFilter {
    /// One namespace (`-n NS`, default `default`).
    One(String),
    /// All namespaces (`-A`): tables gain a NAMESPACE column.
    All,
}

impl NamespaceFilter {
    fn matches(&self, ns: &str) -> bool {
        match self {
            NamespaceFilter::One(n) => n == ns,
            NamespaceFilter::All => true,
        }
    }
}

/// Output format of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// The kubectl-like table.
    #[default]
    Table,
    /// The table with extra columns (`-o wide`).
    Wide,
    /// The projected objects as JSON.
    Json,
    /// The projected objects as YAML.
    Yaml,
}

impl FromStr for OutputFormat {
    type Err = InspectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "table" => Ok(OutputFormat::Table),
            "wide" => Ok(OutputFormat::Wide),
            "json" => Ok(OutputFormat::Json),
            "yaml" => Ok(OutputFormat::Yaml),
            other => Err(InspectError::UnknownFormat(other.to_string())),
        }
    }
}

/// What to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Services.
    Services,
    /// Endpoints, one row per service (ready addresses, as the v1 Endpoints object).
    Endpoints,
    /// EndpointSlices.
    EndpointSlices,
}

impl FromStr for Resource {
    type Err = InspectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "services" | "service" | "svc" => Ok(Resource::Services),
            "endpoints" | "endpoint" | "ep" => Ok(Resource::Endpoints),
            "endpointslices" | "endpointslice" | "endpointslices.discovery.k8s.io" => {
                Ok(Resource::EndpointSlices)
            }
            other => Err(InspectError::UnknownResource(other.to_string())),
        }
    }
}

/// Errors of `get`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// Unknown `-o` value.
    #[error("unknown output format {0:?} (expected wide, json or yaml)")]
    UnknownFormat(String),
    /// Unknown resource name.
    #[error("unknown resource type {0:?} (expected services, endpoints or endpointslices)")]
    UnknownResource(String),
    /// Serialisation failed.
    #[error("encoding output: {0}")]
    Encode(String),
}

/// Renders `resource` from `snapshot` for `namespaces` in `format`.
pub fn get(
    snapshot: &Snapshot,
    resource: Resource,
    namespaces: &NamespaceFilter,
    format: OutputFormat,
) -> Result<String, InspectError> {
    let mut services: Vec<&Arc<Service>> = snapshot
        .services()
        .filter(|s| namespaces.matches(&s.key.namespace))
        .collect();
    services.sort_by(|a, b| a.key.cmp(&b.key));
    let mut slices: Vec<&Arc<EndpointSlice>> = snapshot
        .endpoint_slices()
        .filter(|s| namespaces.matches(&s.key.namespace))
        .collect();
    slices.sort_by(|a, b| a.key.cmp(&b.key));
    let all = *namespaces == NamespaceFilter::All;
    match (resource, format) {
        (Resource::Services, OutputFormat::Table | OutputFormat::Wide) => {
            Ok(services_table(&services, all, format == OutputFormat::Wide))
        }
        (Resource::Endpoints, OutputFormat::Table | OutputFormat::Wide) => Ok(endpoints_table(
            snapshot,
            &services,
            all,
            format == OutputFormat::Wide,
        )),
        (Resource::EndpointSlices, OutputFormat::Table | OutputFormat::Wide) => {
            Ok(endpoint_slices_table(&slices, all))
        }
        (Resource::Services, f) => encode(&services, f),
        (Resource::EndpointSlices, f) => encode(&slices, f),
        (Resource::Endpoints, f) => {
            let list: Vec<EndpointsView> = services
                .iter()
                .filter(|s| {
                    s.selector.is_some() || snapshot.endpoint_slices_for(&s.key).next().is_some()
                })
                .map(|s| endpoints_view(snapshot, s))
                .collect();
            encode(&list, f)
        }
    }
}

fn encode<T: Serialize>(items: &T, format: OutputFormat) -> Result<String, InspectError> {
    match format {
        OutputFormat::Yaml => {
            serde_saphyr::to_string(items).map_err(|e| InspectError::Encode(e.to_string()))
        }
        _ => serde_json::to_string_pretty(items)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| InspectError::Encode(e.to_string())),
    }
}

/// Lays out rows like kubectl's tab writer (minimum cell width 10, padding 3; the last column
/// is not padded).
pub fn format_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count() + 3).max(10);
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn services_table(services: &[&Arc<Service>], all: bool, wide: bool) -> String {
    if services.is_empty() {
        return String::new();
    }
    let mut rows = Vec::new();
    let mut header: Vec<String> = Vec::new();
    if all {
        header.push("NAMESPACE".into());
    }
    header.extend(
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
            .iter()
            .map(|s| s.to_string()),
    );
    if wide {
        header.push("SELECTOR".into());
    }
    rows.push(header);
    for s in services {
        let mut row = Vec::new();
        if all {
            row.push(s.key.namespace.to_string());
        }
        row.push(s.key.name.to_string());
        row.push(s.service_type.as_str().to_string());
        row.push(cluster_ip_cell(s));
        row.push(external_ip_cell(s, wide));
        row.push(ports_cell(s));
        if wide {
            row.push(selector_cell(s));
        }
        rows.push(row);
    }
    format_table(&rows)
}

fn cluster_ip_cell(s: &Service) -> String {
    if s.headless {
        "None".into()
    } else {
        s.cluster_ips
            .first()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "<none>".into())
    }
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn load_balancer_cell(s: &Service, wide: bool) -> String {
    let mut ingress: Vec<String> = s
        .load_balancer_ips
        .iter()
        .chain(&s.load_balancer_proxy_ips)
        .map(|i| i.to_string())
        .collect();
    ingress.extend(s.load_balancer_hostnames.iter().map(|h| h.to_string()));
    let mut r = ingress.join(",");
    if !wide && r.len() > 16 {
        r = format!("{}...", &r[..13]);
    }
    r
}

fn external_ip_cell(s: &Service, wide: bool) -> String {
    match s.service_type {
        ServiceType::ClusterIp | ServiceType::NodePort => {
            if s.external_ips.is_empty() {
                "<none>".into()
            } else {
                join_ips(&s.external_ips)
            }
        }
        ServiceType::LoadBalancer => {
            let lb = load_balancer_cell(s, wide);
            if !s.external_ips.is_empty() {
                let mut parts = vec![join_ips(&s.external_ips)];
                if !lb.is_empty() {
                    parts.push(lb);
                }
                parts.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        ServiceType::ExternalName => s.external_name.as_deref().unwrap_or("<none>").to_string(),
    }
}

fn ports_cell(s: &Service) -> String {
    if s.ports.is_empty() {
        return "<none>".into();
    }
    s.ports
        .iter()
        .map(|p| match p.node_port {
            Some(np) if np > 0 => format!("{}:{}/{}", p.port, np, p.protocol),
            _ => format!("{}/{}", p.port, p.protocol),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn selector_cell(s: &Service) -> String {
    match &s.selector {
        Some(sel) if !sel.is_empty() => sel
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

/// One service's endpoints as the v1 Endpoints object would hold them.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointsView {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Subsets: a set of ports with its ready and not-ready addresses.
    pub subsets: Vec<EndpointSubset>,
}

/// One subset of an [`EndpointsView`].
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSubset {
    /// Ready addresses, sorted.
    pub addresses: Vec<IpAddr>,
    /// Addresses not ready (terminating endpoints are left out, as the Endpoints controller does).
    pub not_ready_addresses: Vec<IpAddr>,
    /// Ports `(name, port, protocol)`, sorted by name.
    pub ports: Vec<(String, u16, String)>,
}

/// Builds the Endpoints view of `service` from its slices: slices with the same ports form one
/// subset.
pub fn endpoints_view(snapshot: &Snapshot, service: &Service) -> EndpointsView {
    let mut by_ports: BTreeMap<Vec<(String, u16, String)>, EndpointSubset> = BTreeMap::new();
    for slice in snapshot.endpoint_slices_for(&service.key) {
        if slice.address_type == AddressType::Fqdn {
            continue;
        }
        let mut ports: Vec<(String, u16, String)> = slice
            .ports
            .iter()
            .filter_map(|p| {
                p.port
                    .map(|n| (p.name.to_string(), n, p.protocol.as_str().to_string()))
            })
            .collect();
        ports.sort();
        let subset = by_ports
            .entry(ports.clone())
            .or_insert_with(|| EndpointSubset {
                addresses: vec![],
                not_ready_addresses: vec![],
                ports,
            });
        for ep in &slice.endpoints {
            if ep.ready {
                subset.addresses.extend(ep.addresses.iter().copied());
            } else if !ep.terminating {
                subset
                    .not_ready_addresses
                    .extend(ep.addresses.iter().copied());
            }
        }
    }
    let mut subsets: Vec<EndpointSubset> = by_ports
        .into_values()
        .filter(|s| !s.addresses.is_empty() || !s.not_ready_addresses.is_empty())
        .collect();
    for s in &mut subsets {
        s.addresses.sort();
        s.addresses.dedup();
        s.not_ready_addresses.sort();
        s.not_ready_addresses.dedup();
    }
    EndpointsView {
        namespace: service.key.namespace.to_string(),
        name: service.key.name.to_string(),
        subsets,
    }
}

/// kubectl's `formatEndpoints`: ready `ip:port` pairs, at most three, then `+ N more...`.
fn endpoints_cell(view: &EndpointsView) -> String {
    if view.subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    let mut more = false;
    for ss in &view.subsets {
        if ss.ports.is_empty() {
            count += ss.addresses.len();
            for a in &ss.addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(a.to_string());
            }
            continue;
        }
        for (_, port, _) in &ss.ports {
            count += ss.addresses.len();
            for a in &ss.addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(a, *port));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

/// What a Service asks of topology-aware routing: `trafficDistribution`, else the topology
/// annotation's value, else `<none>`.
fn topology_cell(s: &Service) -> String {
    match (&s.traffic_distribution, &s.topology_mode) {
        (Some(d), _) => d.to_string(),
        (None, Some(mode)) => format!("topology-mode={mode}"),
        (None, None) => "<none>".into(),
    }
}

/// The hints of a Service's endpoints: `ADDR(zones:Z1+Z2;nodes:N1)` for each endpoint that
/// has any, sorted by address, at most three, then `+ N more...`; `<none>` when no endpoint
/// has hints.
fn hints_cell(snapshot: &Snapshot, s: &Service) -> String {
    const MAX: usize = 3;
    let mut hinted: Vec<(IpAddr, String)> = Vec::new();
    for slice in snapshot.endpoint_slices_for(&s.key) {
        for ep in &slice.endpoints {
            let (Some(h), Some(addr)) = (ep.hints.as_deref(), ep.addresses.first()) else {
                continue;
            };
            let join = |l: &[Arc<str>]| l.iter().map(|x| &**x).collect::<Vec<_>>().join("+");
            let mut parts = Vec::new();
            if !h.for_zones.is_empty() {
                parts.push(format!("zones:{}", join(&h.for_zones)));
            }
            if !h.for_nodes.is_empty() {
                parts.push(format!("nodes:{}", join(&h.for_nodes)));
            }
            hinted.push((*addr, format!("{addr}({})", parts.join(";"))));
        }
    }
    if hinted.is_empty() {
        return "<none>".into();
    }
    hinted.sort();
    hinted.dedup();
    let count = hinted.len();
    let list: Vec<String> = hinted.into_iter().take(MAX).map(|(_, c)| c).collect();
    list_with_more(list, count > MAX, count, MAX)
}

fn endpoints_table(
    snapshot: &Snapshot,
    services: &[&Arc<Service>],
    all: bool,
    wide: bool,
) -> String {
    if services.is_empty() {
        return String::new();
    }
    let mut rows = vec![];
    let mut header = vec![];
    if all {
        header.push("NAMESPACE".to_string());
    }
    header.push("NAME".into());
    header.push("ENDPOINTS".into());
    if wide {
        header.push("TOPOLOGY".into());
        header.push("HINTS".into());
    }
    rows.push(header);
    for s in services {
        // The Endpoints controller writes an Endpoints object for every service with a
        // selector; a selector-less one (e.g. ExternalName) has one only if someone wrote it.
        if s.selector.is_none() && snapshot.endpoint_slices_for(&s.key).next().is_none() {
            continue;
        }
        let view = endpoints_view(snapshot, s);
        let mut row = vec![];
        if all {
            row.push(view.namespace.clone());
        }
        row.push(view.name.clone());
        row.push(endpoints_cell(&view));
        if wide {
            row.push(topology_cell(s));
            row.push(hints_cell(snapshot, s));
        }
        rows.push(row);
    }
    format_table(&rows)
}

fn list_with_more(list: Vec<String>, more: bool, count: usize, max: usize) -> String {
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - max)
    } else if joined.is_empty() {
        "<unset>".into()
    } else {
        joined
    }
}

fn endpoint_slices_table(slices: &[&Arc<EndpointSlice>], all: bool) -> String {
    if slices.is_empty() {
        return String::new();
    }
    const MAX: usize = 3;
    let mut rows = vec![];
    let mut header = vec![];
    if all {
        header.push("NAMESPACE".to_string());
    }
    header.extend(
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"]
            .iter()
            .map(|s| s.to_string()),
    );
    rows.push(header);
    for s in slices {
        let mut row = vec![];
        if all {
            row.push(s.key.namespace.to_string());
        }
        row.push(s.key.name.to_string());
        row.push(
            match s.address_type {
                AddressType::Ipv4 => "IPv4",
                AddressType::Ipv6 => "IPv6",
                AddressType::Fqdn => "FQDN",
            }
            .into(),
        );
        let mut ports = vec![];
        for p in &s.ports {
            if ports.len() < MAX {
                ports.push(match p.port {
                    Some(n) => n.to_string(),
                    None if !p.name.is_empty() => p.name.to_string(),
                    None => "*".into(),
                });
            }
        }
        let more_ports = s.ports.len() > MAX;
        row.push(list_with_more(ports, more_ports, s.ports.len(), MAX));
        let addrs: Vec<String> = s
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().map(|a| a.to_string()))
            .collect();
        let count = addrs.len();
        let shown: Vec<String> = addrs.into_iter().take(MAX).collect();
        row.push(list_with_more(shown, count > MAX, count, MAX));
        rows.push(row);
    }
    format_table(&rows)
}

/// The message kubectl prints when nothing matches.
pub fn no_resources_message(namespaces: &NamespaceFilter) -> String {
    match namespaces {
        NamespaceFilter::One(ns) => format!("No resources found in {ns} namespace."),
        NamespaceFilter::All => "No resources found".into(),
    }
}

/// The kernel's live IPVS table as `ipvsadm -Ln` (or `-Ln --stats`) prints it.
pub fn live_ipvs_table(stats: bool) -> Result<String, crate::ipvs::backend::BackendError> {
    use crate::ipvs::backend::IpvsBackend as _;
    let mut kernel = crate::ipvs::netlink::NetlinkIpvs::open()?;
    let table = kernel.dump()?;
    Ok(crate::ipvs::render::dump(&table, stats))
}

/// One served zone of `snapshot` (`zone`: the cluster domain, `in-addr.arpa` or `ip6.arpa`) as
/// zone-file text (RFC 1035 master file lines, absolute names, SOA first), built with the same
/// [`ClusterZone`](crate::dns::zone::ClusterZone) the DNS server answers from.
pub fn export_zone(snapshot: &Snapshot, cluster_domain: &str, zone: &str) -> String {
    let options = crate::dns::zone::ZoneOptions::for_domain(cluster_domain);
    let built = crate::dns::zone::ClusterZone::build(snapshot, &options);
    let wanted = zone.trim_end_matches('.').to_ascii_lowercase();
    let mut out = format!(
        "; zone {wanted}. from cache generation {} (svcnet)\n$ORIGIN {wanted}.\n",
        snapshot.generation()
    );
    let apex = hickory_proto::rr::Name::from_ascii(format!("{wanted}.")).ok();
    // The served origins (cluster domain, in-addr.arpa, ip6.arpa) never nest, so the records
    // of one zone are exactly those at or below its apex.
    for record in built.records() {
        if apex.as_ref().is_some_and(|a| a.zone_of(&record.name)) {
            let _ = writeln!(out, "{record}");
        }
    }
    out
}

#[cfg(test)]
mod topology_tests {
    use super::*;
    use crate::cache::new_cache;
    use crate::ipvs::fixtures::{endpoint, service, slice};
    use crate::model::{ClusterObject, EndpointHints, Kind, Protocol};

    #[test]
    fn wide_endpoints_show_the_topology_request_and_hints() {
        let mut svc = service(
            "default",
            "web",
            "10.96.0.10",
            &[("", Protocol::Tcp, 80, 80)],
        );
        svc.traffic_distribution = Some(Arc::from("PreferClose"));
        let hinted = |addr: &str, zones: &[&str], nodes: &[&str]| crate::model::Endpoint {
            hints: Some(Box::new(EndpointHints {
                for_zones: zones.iter().map(|z| Arc::from(*z)).collect(),
                for_nodes: nodes.iter().map(|n| Arc::from(*n)).collect(),
            })),
            ..endpoint(addr, true, None)
        };
        let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        w.update(|tx| {
            tx.apply(ClusterObject::from(svc));
            tx.apply(ClusterObject::from(slice(
                "default",
                "web-1",
                "web",
                &[("", Protocol::Tcp, 80)],
                vec![
                    hinted("10.0.2.1", &["zone-b"], &[]),
                    hinted("10.0.1.1", &["zone-a", "zone-c"], &["node-a"]),
                    endpoint("10.0.3.1", true, None),
                ],
            )));
        });
        let ns = NamespaceFilter::One("default".into());
        let wide = get(&w.snapshot(), Resource::Endpoints, &ns, OutputFormat::Wide).unwrap();
        let lines: Vec<&str> = wide.lines().collect();
        assert!(
            lines[0].contains("TOPOLOGY") && lines[0].contains("HINTS"),
            "{wide}"
        );
        assert!(lines[1].contains("PreferClose"), "{wide}");
        assert!(
            lines[1].ends_with("10.0.1.1(zones:zone-a+zone-c;nodes:node-a),10.0.2.1(zones:zone-b)"),
            "{wide}"
        );
        let plain = get(&w.snapshot(), Resource::Endpoints, &ns, OutputFormat::Table).unwrap();
        assert!(!plain.contains("HINTS"), "hints only with -o wide: {plain}");
    }
}
