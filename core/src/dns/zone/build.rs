//! Building the zone from a snapshot and updating it incrementally from the changes of the
//! next one: services, pods, namespaces and the k8s_external address index.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::cache::{Change, Snapshot};
use crate::model::{ObjectKey, Pod, Service};

use super::entry::{Node, external_addresses, service_entry};
use super::names::{is_dns_label, lower};
use super::origin::build_origins;
use super::reverse_index::{CLUSTER_IP, ReverseBatch, ReverseIndex};
use super::{ClusterZone, PMap, PodMode, ZoneOptions};

/// The lower-case namespaces of the pods sharing one address, with how many pods each.
pub(super) type PodsAtAddress = Arc<[(Arc<str>, u32)]>;

/// How many services and pods of one (lower-case) namespace the zone holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct NsCount {
    pub(super) services: u32,
    pub(super) pods: u32,
}

impl ClusterZone {
    /// Builds the zone from `snapshot`, with SOA serial = the snapshot generation (truncated).
    pub fn build(snapshot: &Snapshot, options: &ZoneOptions) -> ClusterZone {
        Self::build_with_serial(snapshot, options, snapshot.generation() as u32)
    }

    /// Builds the zone with an explicit SOA serial (the live server uses one that only grows).
    pub(crate) fn build_with_serial(
        snapshot: &Snapshot,
        options: &ZoneOptions,
        serial: u32,
    ) -> Self {
        let mut zone = Self::empty(Arc::new(options.clone()), serial);
        zone.generation = snapshot.generation();
        let mut batch = ReverseBatch::default();
        for svc in snapshot.services() {
            zone.add_service(snapshot, svc, &mut batch);
        }
        if zone.options.uses_pods() {
            for pod in snapshot.pods() {
                zone.add_pod(pod);
            }
        }
        zone.finish(snapshot, batch);
        zone
    }

    /// The zone of `snapshot`, derived from this zone (built from an earlier snapshot of the
    /// same cache) by applying `changes` — what [`Snapshot::changes_since`] reports between
    /// the two. Only the changed services and pods are rewritten; everything else is shared
    /// with `self`, which stays valid and unchanged. Node changes are ignored (the zone holds no
    /// node data), pod changes matter only when pod records are enabled.
    pub fn update(&self, snapshot: &Snapshot, changes: &BTreeSet<Change>, serial: u32) -> Self {
        let mut zone = self.clone();
        if serial != zone.serial {
            zone.serial = serial;
            let (origins, primary) = build_origins(&zone.options, serial);
            zone.origins = origins;
            zone.primary = primary;
        }
        zone.generation = snapshot.generation();
        let pods = zone.options.uses_pods();
        let mut batch = ReverseBatch::default();
        for change in changes {
            match change {
                Change::Service(key) => {
                    zone.remove_service(key, &mut batch);
                    if let Some(svc) = snapshot.service(key) {
                        zone.add_service(snapshot, svc, &mut batch);
                    }
                }
                Change::Pod(key) if pods => {
                    zone.remove_pod(key);
                    if let Some(pod) = snapshot.pod(key) {
                        zone.add_pod(pod);
                    }
                }
                Change::Pod(_) | Change::Node(_) => {}
            }
        }
        zone.finish(snapshot, batch);
        zone
    }

    /// Whether `change` can alter a zone built with `options` (node changes never do; pod
    /// changes only with pod records enabled).
    pub(crate) fn is_affected_by(options: &ZoneOptions, change: &Change) -> bool {
        match change {
            Change::Service(_) => true,
            Change::Pod(_) => options.uses_pods(),
            Change::Node(_) => false,
        }
    }

    /// A zone with the fixed names only.
    pub(super) fn empty(options: Arc<ZoneOptions>, serial: u32) -> Self {
        let (origins, primary) = build_origins(&options, serial);
        let has_reverse = origins.iter().any(|o| o.reverse.is_some());
        let mut names = PMap::default();
        for (key, node) in [
            ("", Node::Apex),
            ("dns-version", Node::DnsVersion),
            ("ns.dns", Node::NsHost),
            ("dns", Node::Empty),
            ("svc", Node::Empty),
            ("pod", Node::Empty),
        ] {
            names.insert(Arc::from(key), node);
        }
        ClusterZone {
            options,
            origins,
            primary,
            names,
            has_reverse,
            reverse_v4: ReverseIndex::default(),
            reverse_v6: ReverseIndex::default(),
            namespaces: PMap::default(),
            pods: PMap::default(),
            pod_ips: PMap::default(),
            pods_by_ip: PMap::default(),
            external_ptr: PMap::default(),
            ns_addrs: Arc::from(Vec::new()),
            ns_external: Arc::from(Vec::new()),
            service_count: 0,
            serial,
            generation: 0,
        }
    }

    /// Writes the batched PTR changes and refreshes the NS target's addresses.
    pub(super) fn finish(&mut self, snapshot: &Snapshot, batch: ReverseBatch) {
        if self.has_reverse {
            self.reverse_v4
                .apply(&batch.touched_v4, &batch.removed, batch.added_v4);
            self.reverse_v6
                .apply(&batch.touched_v6, &batch.removed, batch.added_v6);
        }
        let mut ns_addrs: Vec<IpAddr> = snapshot
            .service(&self.options.dns_service)
            .map(|dns| dns.cluster_ips.clone())
            .unwrap_or_default();
        if ns_addrs.is_empty() {
            ns_addrs = self.options.ns_fallback.clone();
        }
        let mut ns_external: Vec<IpAddr> = snapshot
            .service(&self.options.dns_service)
            .map(|dns| external_addresses(dns))
            .unwrap_or_default();
        if ns_external.is_empty() {
            ns_external = ns_addrs.clone();
        }
        if *self.ns_addrs != *ns_addrs {
            self.ns_addrs = Arc::from(ns_addrs);
        }
        if *self.ns_external != *ns_external {
            self.ns_external = Arc::from(ns_external);
        }
    }

    /// Adds `svc` (absent from the zone) if it has any DNS presence.
    pub(super) fn add_service(
        &mut self,
        snapshot: &Snapshot,
        svc: &Arc<Service>,
        batch: &mut ReverseBatch,
    ) {
        let Some(entry) = service_entry(snapshot, svc, &self.options) else {
            return;
        };
        let entry = Arc::new(entry);
        self.adjust_namespace(&svc.key.namespace, 1, 0);
        self.names
            .insert(entry.relative.clone(), Node::Service(entry.clone()));
        self.service_count += 1;
        self.index_external(svc, true);
        if self.has_reverse {
            for ip in entry.cluster_ips() {
                batch.add(*ip, &entry, CLUSTER_IP, 0);
            }
            for p in entry.unique() {
                batch.add(p.ip, &entry, p.slice, p.index);
            }
        }
    }

    /// Removes the service `key` and everything it contributed, if the zone holds it.
    pub(super) fn remove_service(&mut self, key: &ObjectKey, batch: &mut ReverseBatch) {
        if !is_dns_label(&key.name) || !is_dns_label(&key.namespace) {
            return;
        }
        let relative = format!("{}.{}.svc", key.name, key.namespace);
        let entry = match self.names.get(relative.as_str()) {
            Some(Node::Service(e)) if e.key() == key => e.clone(),
            _ => return,
        };
        self.names.remove(relative.as_str());
        self.service_count -= 1;
        self.index_external(&entry.service, false);
        self.adjust_namespace(&key.namespace, -1, 0);
        if self.has_reverse {
            batch.removed.insert(key.clone());
            for ip in entry.cluster_ips() {
                batch.touch(*ip);
            }
            for p in entry.published() {
                batch.touch(p.ip);
            }
        }
    }

    /// Counts `pod` (absent from the zone) in its namespace (pod records on) and, in verified
    /// mode, its IPs; indexes its IPs for autopath when [`ZoneOptions::indexes_client`].
    pub(super) fn add_pod(&mut self, pod: &Arc<Pod>) {
        if !self.options.namespace_exposed(&pod.key.namespace) {
            return;
        }
        let counted = self.options.counts_pods();
        let indexed = self.options.indexes_client(pod);
        if !counted && !indexed {
            return;
        }
        self.pods.insert(pod.key.clone(), pod.clone());
        if counted {
            self.adjust_namespace(&pod.key.namespace, 0, 1);
        }
        let ns: Arc<str> = Arc::from(pod.key.namespace.to_ascii_lowercase());
        if self.options.pods == PodMode::Verified {
            for ip in &pod.ips {
                *self.pod_ips.entry((ns.clone(), *ip)).or_insert(0) += 1;
            }
        }
        if indexed {
            for ip in &pod.ips {
                self.count_pod_at(*ip, &ns, 1);
            }
        }
    }

    /// Removes the pod `key` if the zone counts it.
    pub(super) fn remove_pod(&mut self, key: &ObjectKey) {
        let Some(pod) = self.pods.remove(key) else {
            return;
        };
        if self.options.counts_pods() {
            self.adjust_namespace(&key.namespace, 0, -1);
        }
        let ns: Arc<str> = Arc::from(key.namespace.to_ascii_lowercase());
        if self.options.indexes_client(&pod) {
            for ip in &pod.ips {
                self.count_pod_at(*ip, &ns, -1);
            }
        }
        if self.options.pods == PodMode::Verified {
            for ip in &pod.ips {
                let k = (ns.clone(), *ip);
                match self.pod_ips.get(&k).copied() {
                    Some(n) if n > 1 => {
                        self.pod_ips.insert(k, n - 1);
                    }
                    _ => {
                        self.pod_ips.remove(&k);
                    }
                }
            }
        }
    }

    /// Adds `delta` to the pods of namespace `ns` (lower case) at `ip`.
    pub(super) fn count_pod_at(&mut self, ip: IpAddr, ns: &Arc<str>, delta: i32) {
        let mut entries: Vec<(Arc<str>, u32)> = self
            .pods_by_ip
            .get(&ip)
            .map(|e| e.to_vec())
            .unwrap_or_default();
        match entries.iter().position(|(n, _)| n == ns) {
            Some(i) => entries[i].1 = entries[i].1.saturating_add_signed(delta),
            None if delta > 0 => entries.push((ns.clone(), delta as u32)),
            None => {}
        }
        entries.retain(|(_, n)| *n > 0);
        entries.sort();
        if entries.is_empty() {
            self.pods_by_ip.remove(&ip);
        } else {
            self.pods_by_ip.insert(ip, Arc::from(entries));
        }
    }

    /// Adds (`add`) or removes `key` as a holder of each external address of `svc`.
    pub(super) fn index_external(&mut self, svc: &Service, add: bool) {
        for ip in external_addresses(svc) {
            let mut keys: Vec<ObjectKey> = self
                .external_ptr
                .get(&ip)
                .map(|k| k.to_vec())
                .unwrap_or_default();
            keys.retain(|k| *k != svc.key);
            if add {
                keys.push(svc.key.clone());
                keys.sort();
            }
            if keys.is_empty() {
                self.external_ptr.remove(&ip);
            } else {
                self.external_ptr.insert(ip, Arc::from(keys));
            }
        }
    }

    /// Changes the counts of `namespace` and creates or removes `<ns>.svc` and `<ns>.pod`
    /// when they cross zero.
    pub(super) fn adjust_namespace(&mut self, namespace: &str, services: i32, pods: i32) {
        let lower = lower(namespace);
        let before = self
            .namespaces
            .get(lower.as_ref())
            .copied()
            .unwrap_or_default();
        let after = NsCount {
            services: before.services.saturating_add_signed(services),
            pods: before.pods.saturating_add_signed(pods),
        };
        if after == NsCount::default() {
            self.namespaces.remove(lower.as_ref());
        } else if let Some(count) = self.namespaces.get_mut(lower.as_ref()) {
            *count = after;
        } else {
            self.namespaces.insert(Arc::from(lower.as_ref()), after);
        }
        if (before.services > 0) != (after.services > 0) {
            let key: Arc<str> = Arc::from(format!("{lower}.svc"));
            if after.services > 0 {
                self.names.insert(key, Node::Empty);
            } else {
                self.names.remove(&key);
            }
        }
        let had = before != NsCount::default();
        let has = after != NsCount::default();
        if self.options.pods != PodMode::Disabled && had != has {
            let key: Arc<str> = Arc::from(format!("{lower}.pod"));
            if has {
                self.names.insert(key, Node::PodNamespace);
            } else {
                self.names.remove(&key);
            }
        }
    }
}
