//! The cluster zone: a pure, hashed lookup structure over a
//! [`Snapshot`](crate::cache::Snapshot), updated incrementally.
//!
//! [`ClusterZone::build`] turns a snapshot into maps keyed by lower-cased names (relative to the
//! zone origin), so a query costs one or two hash lookups and never walks the zone. Negative
//! answers are as cheap as positive ones: a miss in the map is NXDOMAIN, a hit on an empty
//! non-terminal is NODATA. The maps are persistent ([`imbl`]): [`ClusterZone::update`] clones a
//! zone in O(1) and rewrites only the names, PTR buckets and pod records of the services and
//! pods that changed, producing a new immutable zone that shares everything else with the old
//! one. Service entries point at the snapshot's own `Service` and `EndpointSlice` objects
//! instead of copying them; records are built per query from those.
//!
//! Semantics follow the Kubernetes DNS specification 1.1.0 as CoreDNS's `kubernetes` plugin
//! implements it: service A/AAAA, SRV per port (`_port._proto.svc.ns.svc.zone`, and all ports at
//! the service name), endpoint names `<hostname|dashed-ip>.svc.ns.svc.zone`, PTR for cluster
//! IPs (else endpoint names), ExternalName CNAME, pod names `a-b-c-d.ns.pod.zone`,
//! `dns-version` TXT, SOA/NS at each origin with `ns.dns.<zone>`. Services whose name or
//! namespace is not a lower-case DNS label (which the Kubernetes API rejects) have no names.
//!
//! One concept per file:
//! - `options`: [`ZoneOptions`] and [`PodMode`]; `origin`: the served apexes ([`Origin`]) and
//!   which one a name falls in;
//! - `entry`: what a name is (`Node`) and one service as served (`ServiceEntry`);
//! - `build`: [`ClusterZone::build`] / [`ClusterZone::update`] (services, pods, namespaces);
//! - `lookup`: forward names ([`Lookup`], [`Answer`]), endpoint and pod names, CNAME chasing,
//!   [`ClusterZone::client_namespace`]; `srv`: SRV names and answers; `reverse`: PTR lookups
//!   and reverse-name parsing over `reverse_index` (the PTR index in buckets of 256 addresses);
//! - `names` / `records`: name text helpers and address records;
//! - `external`: the `k8s_external` view of the same zone; [`export`]: RFC 1035 zone files
//!   (what the benchmark's Knot DNS serves); not the `file` plugin's zones
//!   (`dns::zonetext`).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use imbl::GenericHashMap;
use imbl::shared_ptr::DefaultSharedPtr;

use crate::model::{ObjectKey, Pod};

mod build;
mod entry;
pub mod export;
mod external;
mod lookup;
mod names;
mod options;
mod origin;
mod records;
mod reverse;
mod reverse_index;
mod srv;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod props;

pub use external::{ExternalAnswer, ExternalOptions};
pub use lookup::{Answer, Lookup};
pub use names::{dashed_ip, lower_fqdn, parse_dashed_ip};
pub use options::{PodMode, ZoneOptions};
pub use origin::{Origin, ReverseFamily};
pub use reverse::reverse_name;

use build::{NsCount, PodsAtAddress};
use entry::Node;
use reverse_index::ReverseIndex;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;
/// A persistent hash map: O(1) clone, updates copy only the path to the changed entry.
type PMap<K, V> = GenericHashMap<K, V, foldhash::fast::RandomState, DefaultSharedPtr>;

/// The Kubernetes DNS schema version served at `dns-version.<zone>`.
pub(crate) const SCHEMA_VERSION: &str = "1.1.0";

/// Default TTL of cluster records (CoreDNS `ttl` default).
pub(crate) const DEFAULT_TTL: u32 = 5;

/// The cluster zone at one snapshot generation. Immutable; cheap to query from many threads,
/// cheap to clone (the maps are persistent).
#[derive(Debug, Clone)]
pub struct ClusterZone {
    options: Arc<ZoneOptions>,
    origins: Vec<Origin>,
    /// Index of the primary forward origin, if any.
    primary: Option<usize>,
    names: PMap<Arc<str>, Node>,
    /// Whether a reverse origin is served (else no PTR index is kept).
    has_reverse: bool,
    /// PTR targets by address; a proper prefix of an address is an empty non-terminal.
    reverse_v4: ReverseIndex<u32>,
    reverse_v6: ReverseIndex<u128>,
    /// Services and pods per lower-case namespace (`<ns>.svc`, `<ns>.pod` exist while > 0).
    namespaces: PMap<Arc<str>, NsCount>,
    /// The pods counted in `namespaces` (pods enabled only).
    pods: PMap<ObjectKey, Arc<Pod>>,
    /// `(lower-case namespace, ip)` of pods with how many pods hold it, for `pods verified`.
    pod_ips: PMap<(Arc<str>, IpAddr), u32>,
    /// The lower-case namespaces of the pods at each address, with how many pods each, for
    /// `autopath` (`pods verified` only; host-network pods share their node's address).
    pods_by_ip: PMap<IpAddr, PodsAtAddress>,
    /// Services by their external addresses (`externalIPs`, load-balancer ingress IPs), in key
    /// order, for `k8s_external` PTR answers.
    external_ptr: PMap<IpAddr, Arc<[ObjectKey]>>,
    ns_addrs: Arc<[IpAddr]>,
    /// External addresses of `dns_service` (`k8s_external`'s name server), else `ns_addrs`.
    ns_external: Arc<[IpAddr]>,
    service_count: usize,
    serial: u32,
    generation: u64,
}

impl ClusterZone {
    /// The options the zone was built with.
    pub fn options(&self) -> &ZoneOptions {
        &self.options
    }

    /// The served origins.
    pub fn origins(&self) -> &[Origin] {
        &self.origins
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The snapshot generation this zone was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of services in the zone.
    pub fn service_count(&self) -> usize {
        self.service_count
    }
}
