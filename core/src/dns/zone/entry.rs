//! What a name in a forward zone is ([`Node`]) and one service as the zone serves it
//! ([`ServiceEntry`]): the snapshot's objects, shared, not copied.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::Name;

use crate::cache::Snapshot;
use crate::model::{Endpoint, EndpointSlice, ObjectKey, Protocol, Service, ServiceType};

use super::names::{dashed_ip, is_dns_label, lower};
use super::reverse_index::CLUSTER_IP;
use super::{FastSet, ZoneOptions};

/// What a name in a forward zone is (keys are relative to the origin, lower-case).
#[derive(Debug, Clone)]
pub(super) enum Node {
    /// The zone apex: SOA, NS.
    Apex,
    /// An empty non-terminal: exists, has no records (NODATA).
    Empty,
    /// `dns-version`: TXT.
    DnsVersion,
    /// `ns.dns`: the NS target's addresses.
    NsHost,
    /// `<svc>.<ns>.svc`. SRV names (`_port._proto.<svc>...`) and endpoint names below it are
    /// answered from the entry. A service without a name of its own (headless without
    /// endpoints, empty under `ignore empty_service`) is kept too (`exists: false`) and answers
    /// NXDOMAIN like an absent name.
    Service(Arc<ServiceEntry>),
    /// `<ns>.pod`: exists when pods are enabled.
    PodNamespace,
}

#[derive(Debug)]
pub(super) enum ServiceKind {
    ClusterIp,
    Headless,
    /// The CNAME target (boxed: a `Name` is large and few services have one).
    External(Box<Name>),
}

/// One service as the zone serves it: the snapshot's objects, shared, not copied.
#[derive(Debug)]
pub(super) struct ServiceEntry {
    pub(super) service: Arc<Service>,
    /// `<svc>.<ns>.svc` (lower case, relative to the forward origin).
    pub(super) relative: Arc<str>,
    pub(super) kind: ServiceKind,
    /// The service's EndpointSlices in name order (none for ExternalName or `noendpoints`).
    pub(super) slices: Box<[Arc<EndpointSlice>]>,
    /// Whether `<svc>.<ns>.svc` exists.
    pub(super) exists: bool,
    /// `endpoint_pod_names`: endpoints without hostname are named by their pod.
    pub(super) pod_names: bool,
}

/// One published address of an endpoint of a service.
#[derive(Clone, Copy)]
pub(super) struct Published<'a> {
    pub(super) ip: IpAddr,
    pub(super) endpoint: &'a Endpoint,
    /// Index of the slice in the service's slices.
    pub(super) slice: u16,
    /// Index of the endpoint in its slice.
    pub(super) index: u32,
}

impl ServiceEntry {
    pub(super) fn key(&self) -> &ObjectKey {
        &self.service.key
    }

    pub(super) fn cluster_ips(&self) -> &[IpAddr] {
        match self.kind {
            ServiceKind::ClusterIp => &self.service.cluster_ips,
            _ => &[],
        }
    }

    /// Every published address (ready endpoints, or all with `publishNotReadyAddresses`), in
    /// slice, endpoint and address order, duplicates included.
    pub(super) fn published(&self) -> impl Iterator<Item = Published<'_>> + '_ {
        let not_ready_too = self.service.publish_not_ready_addresses;
        self.slices
            .iter()
            .take(usize::from(CLUSTER_IP))
            .enumerate()
            .flat_map(move |(si, slice)| {
                slice
                    .endpoints
                    .iter()
                    .enumerate()
                    .filter(move |(_, ep)| ep.ready || not_ready_too)
                    .flat_map(move |(ei, ep)| {
                        ep.addresses.iter().map(move |ip| Published {
                            ip: *ip,
                            endpoint: ep,
                            slice: si as u16,
                            index: ei as u32,
                        })
                    })
            })
    }

    /// [`published`](Self::published) without repeated `(address, name)` pairs (first kept).
    pub(super) fn unique(&self) -> Vec<Published<'_>> {
        let all: Vec<Published<'_>> = self.published().collect();
        // Usually every address appears once: check that cheaply before comparing names.
        let mut ips: FastSet<IpAddr> = FastSet::default();
        ips.reserve(all.len());
        if all.iter().all(|p| ips.insert(p.ip)) {
            return all;
        }
        let mut seen: FastSet<(IpAddr, Option<Cow<'_, str>>)> = FastSet::default();
        all.into_iter()
            .filter(|p| seen.insert((p.ip, self.label(p.endpoint).map(lower))))
            .collect()
    }

    /// The endpoint's own label (hostname, or pod name with `endpoint_pod_names`), if any;
    /// without one it is named by its dashed IP.
    pub(super) fn label<'a>(&self, ep: &'a Endpoint) -> Option<&'a str> {
        endpoint_name(ep, self.pod_names)
    }

    /// The endpoint's label as served (lower case, or the dashed IP).
    pub(super) fn label_text(&self, ep: &Endpoint, ip: IpAddr) -> String {
        match self.label(ep) {
            Some(l) => l.to_ascii_lowercase(),
            None => dashed_ip(ip),
        }
    }

    /// `(port name, protocol)` of the ports that get SRV names: named ports of the service, or
    /// for headless services the named ports of its endpoint slices (duplicates included).
    pub(super) fn srv_ports(&self) -> Box<dyn Iterator<Item = (&Arc<str>, Protocol)> + '_> {
        match self.kind {
            ServiceKind::ClusterIp => Box::new(
                self.service
                    .ports
                    .iter()
                    .filter(|p| !p.name.is_empty())
                    .map(|p| (&p.name, p.protocol)),
            ),
            ServiceKind::Headless => Box::new(
                self.slices
                    .iter()
                    .flat_map(|s| s.ports.iter())
                    .filter(|p| !p.name.is_empty())
                    .map(|p| (&p.name, p.protocol)),
            ),
            ServiceKind::External(_) => Box::new(std::iter::empty()),
        }
    }

    /// The protocol of `_<port>._<proto>` if the service has that SRV name.
    pub(super) fn srv_port(&self, port: &str, proto: &str) -> Option<Protocol> {
        self.srv_ports()
            .find(|(name, p)| p.as_lower() == proto && name.eq_ignore_ascii_case(port))
            .map(|(_, p)| p)
    }

    /// Whether `_<proto>.<svc>...` exists (some SRV name uses that protocol).
    pub(super) fn has_srv_protocol(&self, proto: &str) -> bool {
        self.srv_ports().any(|(_, p)| p.as_lower() == proto)
    }

    /// The sorted, deduplicated SRV owner names relative to the origin (for export).
    pub(super) fn srv_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .srv_ports()
            .map(|(name, p)| {
                format!(
                    "_{}._{}.{}",
                    name.to_ascii_lowercase(),
                    p.as_lower(),
                    self.relative
                )
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Builds the entry of one service, or `None` when it has no DNS presence at all.
pub(super) fn service_entry(
    snapshot: &Snapshot,
    svc: &Arc<Service>,
    opts: &ZoneOptions,
) -> Option<ServiceEntry> {
    if !opts.service_exposed(svc)
        || !is_dns_label(&svc.key.name)
        || !is_dns_label(&svc.key.namespace)
    {
        return None;
    }
    let relative: Arc<str> = Arc::from(format!("{}.{}.svc", svc.key.name, svc.key.namespace));
    let kind = if svc.service_type == ServiceType::ExternalName {
        let target = svc.external_name.as_deref()?;
        // An IP in externalName is not a name: CoreDNS serves nothing for it.
        if target.parse::<IpAddr>().is_ok() {
            return None;
        }
        let mut name = Name::from_ascii(target).ok()?;
        name.set_fqdn(true);
        ServiceKind::External(Box::new(name))
    } else if svc.headless || svc.cluster_ips.is_empty() {
        ServiceKind::Headless
    } else {
        ServiceKind::ClusterIp
    };
    let slices: Box<[Arc<EndpointSlice>]> =
        if opts.noendpoints || matches!(kind, ServiceKind::External(_)) {
            Box::new([])
        } else {
            snapshot.endpoint_slices_for(&svc.key).cloned().collect()
        };
    let mut entry = ServiceEntry {
        service: svc.clone(),
        relative,
        kind,
        slices,
        exists: true,
        pod_names: opts.endpoint_pod_names,
    };
    // Headless services without endpoints and empty services under `ignore empty_service` do
    // not exist (NXDOMAIN), but their namespace does.
    entry.exists = match entry.kind {
        ServiceKind::Headless => entry.published().next().is_some(),
        ServiceKind::ClusterIp => {
            !(opts.ignore_empty_service && entry.published().next().is_none())
        }
        ServiceKind::External(_) => true,
    };
    Some(entry)
}

/// The external addresses of `svc` that `k8s_external` serves: `spec.externalIPs`, then the
/// load-balancer ingress IPs (either `ipMode`), without repeats.
pub(super) fn external_addresses(svc: &Service) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in svc
        .external_ips
        .iter()
        .chain(&svc.load_balancer_ips)
        .chain(&svc.load_balancer_proxy_ips)
    {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// The label of an endpoint in its service: hostname, else (with `endpoint_pod_names`) the pod
/// name if it is a valid label, else `None` (the dashed IP). Not lower-cased.
pub(super) fn endpoint_name(ep: &Endpoint, pod_names: bool) -> Option<&str> {
    if let Some(h) = &ep.hostname
        && !h.is_empty()
    {
        return Some(h);
    }
    if pod_names
        && let Some(t) = &ep.target_ref
        && !t.name.is_empty()
        && t.name.len() < 64
    {
        return Some(&t.name);
    }
    None
}
