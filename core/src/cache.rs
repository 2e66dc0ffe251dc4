//! The shared informer cache: one writer, many readers of immutable, versioned snapshots.
//!
//! Sources (the Kubernetes API, a manifest directory) drive a [`CacheWriter`] with plain
//! synchronous calls; every committed batch becomes a new [`Snapshot`] with a higher generation,
//! published through a `tokio::sync::watch` channel, so subscribers coalesce bursts for free and
//! never see a half-applied update. Snapshots use persistent maps ([`imbl`]): cloning one is
//! O(1) and applying a change costs O(log n), proportional to the change, not the cluster.
//! A bounded journal inside each snapshot answers "what changed since generation G".

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use imbl::{HashMap as PMap, Vector};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::model::{ClusterObject, EndpointSlice, Kind, Node, ObjectKey, Pod, Service};

/// How many changes a snapshot remembers; older generations get `None` from
/// [`Snapshot::changes_since`] and must rebuild from the full snapshot.
pub(crate) const JOURNAL_CAPACITY: usize = 65_536;

/// One thing that changed between two generations.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Change {
    /// The Service with this key, or one of its EndpointSlices, was added, changed or removed.
    Service(ObjectKey),
    /// The Pod with this key was added, changed or removed.
    Pod(ObjectKey),
    /// The Node with this name was added, changed or removed.
    Node(Arc<str>),
}

/// Names of one Service's EndpointSlices, sorted. Almost always one or two, so kept inline: a
/// tree set per Service cost a tree node each.
type SliceNames = smallvec::SmallVec<[Arc<str>; 2]>;

/// Adds `name` to `names` in order (once).
fn insert_sorted(names: &mut SliceNames, name: Arc<str>) {
    if let Err(pos) = names.binary_search(&name) {
        names.insert(pos, name);
    }
}

/// An immutable view of the cluster at one generation. Cheap to clone.
#[derive(Clone, Default)]
pub struct Snapshot {
    generation: u64,
    services: PMap<ObjectKey, Arc<Service>>,
    slices: PMap<ObjectKey, Arc<EndpointSlice>>,
    slices_by_service: PMap<ObjectKey, SliceNames>,
    pods: PMap<ObjectKey, Arc<Pod>>,
    nodes: PMap<Arc<str>, Arc<Node>>,
    expected: BTreeSet<Kind>,
    synced: BTreeSet<Kind>,
    journal: Vector<(u64, Change)>,
    /// Every change after this generation is in the journal.
    journal_floor: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("services", &self.services.len())
            .field("endpoint_slices", &self.slices.len())
            .field("pods", &self.pods.len())
            .field("nodes", &self.nodes.len())
            .field("synced", &self.is_synced())
            .finish()
    }
}

impl Snapshot {
    /// The generation: 0 for the empty cache, +1 for every published change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True once the initial list of every expected kind has arrived.
    pub fn is_synced(&self) -> bool {
        self.expected.is_subset(&self.synced)
    }

    /// Kinds the source watches.
    pub(crate) fn expected_kinds(&self) -> &BTreeSet<Kind> {
        &self.expected
    }

    /// A service by key.
    pub fn service(&self, key: &ObjectKey) -> Option<&Arc<Service>> {
        self.services.get(key)
    }

    /// All services, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// All EndpointSlices, in no particular order.
    pub(crate) fn endpoint_slices(&self) -> impl Iterator<Item = &Arc<EndpointSlice>> {
        self.slices.values()
    }

    /// An EndpointSlice by key.
    pub fn endpoint_slice(&self, key: &ObjectKey) -> Option<&Arc<EndpointSlice>> {
        self.slices.get(key)
    }

    /// Number of EndpointSlices.
    pub fn endpoint_slice_count(&self) -> usize {
        self.slices.len()
    }

    /// The EndpointSlices that name `service` (label `kubernetes.io/service-name`), by name.
    pub fn endpoint_slices_for<'a>(
        &'a self,
        service: &'a ObjectKey,
    ) -> impl Iterator<Item = &'a Arc<EndpointSlice>> + 'a {
        self.slices_by_service
            .get(service)
            .into_iter()
            .flat_map(|names| names.iter())
            .filter_map(move |name| {
                self.slices
                    .get(&ObjectKey::new(service.namespace.clone(), name.clone()))
            })
    }

    /// A pod by key.
    pub fn pod(&self, key: &ObjectKey) -> Option<&Arc<Pod>> {
        self.pods.get(key)
    }

    /// All pods, in no particular order.
    pub(crate) fn pods(&self) -> impl Iterator<Item = &Arc<Pod>> {
        self.pods.values()
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Arc<Node>> {
        self.nodes.get(name)
    }

    /// All nodes, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.values()
    }

    /// The object of `kind` with `key` (nodes: empty namespace), sharing the snapshot's `Arc`:
    /// one map lookup, no copy.
    pub(crate) fn object(&self, kind: Kind, key: &ObjectKey) -> Option<ClusterObject> {
        match kind {
            Kind::Service => self.services.get(key).cloned().map(ClusterObject::Service),
            Kind::EndpointSlice => self
                .slices
                .get(key)
                .cloned()
                .map(ClusterObject::EndpointSlice),
            Kind::Pod => self.pods.get(key).cloned().map(ClusterObject::Pod),
            Kind::Node => self.nodes.get(&key.name).cloned().map(ClusterObject::Node),
        }
    }

    /// The set of changes after generation `since` up to this snapshot, or `None` when the
    /// journal no longer reaches back that far (the caller then rebuilds from the snapshot).
    pub fn changes_since(&self, since: u64) -> Option<BTreeSet<Change>> {
        if since < self.journal_floor {
            return None;
        }
        if since >= self.generation {
            return Some(BTreeSet::new());
        }
        // The journal is ordered by generation: binary search the first entry after `since`.
        let start = partition_point(&self.journal, |(g, _)| *g <= since);
        Some(
            // `Vector::skip` is O(log n): the cost follows the changes, not the journal's length.
            self.journal
                .skip(start)
                .iter()
                .map(|(_, c)| c.clone())
                .collect(),
        )
    }

    /// Counts of each kind, for status output.
    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            generation: self.generation,
            services: self.services.len(),
            endpoint_slices: self.slices.len(),
            endpoints: self.slices.values().map(|s| s.endpoints.len()).sum(),
            pods: self.pods.len(),
            nodes: self.nodes.len(),
        }
    }
}

fn partition_point<T: Clone>(v: &Vector<T>, pred: impl Fn(&T) -> bool) -> usize {
    let (mut lo, mut hi) = (0, v.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if pred(&v[mid]) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Sizes of a snapshot: the `cache` part of the agent's `/status` document (and of
/// `agentctl status`), which is why it also deserializes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCounts {
    /// Generation.
    pub generation: u64,
    /// Services.
    pub services: usize,
    /// EndpointSlices.
    pub endpoint_slices: usize,
    /// Endpoints summed over all slices.
    pub endpoints: usize,
    /// Pods.
    pub pods: usize,
    /// Nodes.
    pub nodes: usize,
}

/// Creates a cache that expects the initial lists of `expected` kinds before it reports synced.
pub fn new_cache(expected: impl IntoIterator<Item = Kind>) -> (CacheWriter, CacheReader) {
    let snapshot = Snapshot {
        expected: expected.into_iter().collect(),
        ..Snapshot::default()
    };
    let (tx, rx) = watch::channel(Arc::new(snapshot.clone()));
    (
        CacheWriter {
            current: snapshot,
            tx,
        },
        CacheReader { rx },
    )
}

/// The single writer of a cache. Owned by the source task.
pub struct CacheWriter {
    current: Snapshot,
    tx: watch::Sender<Arc<Snapshot>>,
}

impl CacheWriter {
    /// Applies a batch of changes and publishes them as one new generation (if anything changed).
    /// Returns the generation in force afterwards.
    pub fn update(&mut self, f: impl FnOnce(&mut Transaction)) -> u64 {
        let mut tx = Transaction {
            snap: self.current.clone(),
            changes: BTreeSet::new(),
            synced_changed: false,
        };
        f(&mut tx);
        let Transaction {
            mut snap,
            changes,
            synced_changed,
        } = tx;
        if changes.is_empty() && !synced_changed {
            return self.current.generation;
        }
        snap.generation += 1;
        let generation = snap.generation;
        for change in changes {
            snap.journal.push_back((generation, change));
        }
        while snap.journal.len() > JOURNAL_CAPACITY {
            if let Some((g, _)) = snap.journal.pop_front() {
                snap.journal_floor = g;
            }
        }
        self.current = snap;
        self.tx.send_replace(Arc::new(self.current.clone()));
        generation
    }

    /// Adds or replaces one object and publishes.
    pub fn apply(&mut self, object: impl Into<ClusterObject>) -> u64 {
        self.update(|tx| tx.apply(object))
    }

    /// Removes one object and publishes.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) -> u64 {
        self.update(|tx| tx.delete(kind, key))
    }

    /// Replaces every object of `kind` with `objects` (a relist), marks the kind synced, and
    /// publishes: objects absent from the new list are removed.
    pub fn replace_kind(&mut self, kind: Kind, objects: Vec<ClusterObject>) -> u64 {
        self.update(|tx| tx.replace_kind(kind, objects))
    }

    /// The snapshot most recently published.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// A new reader of this cache.
    pub fn reader(&self) -> CacheReader {
        CacheReader {
            rx: self.tx.subscribe(),
        }
    }
}

/// A batch of changes being prepared; see [`CacheWriter::update`].
pub struct Transaction {
    snap: Snapshot,
    changes: BTreeSet<Change>,
    synced_changed: bool,
}

impl Transaction {
    /// Adds or replaces an object. An identical object is a no-op.
    pub fn apply(&mut self, object: impl Into<ClusterObject>) {
        fn same<T: PartialEq>(old: Option<&Arc<T>>, new: &Arc<T>) -> bool {
            old.is_some_and(|old| Arc::ptr_eq(old, new) || **old == **new)
        }
        match object.into() {
            ClusterObject::Service(s) => {
                if same(self.snap.services.get(&s.key), &s) {
                    return;
                }
                self.changes.insert(Change::Service(s.key.clone()));
                self.snap.services.insert(s.key.clone(), s);
            }
            ClusterObject::EndpointSlice(s) => {
                if same(self.snap.slices.get(&s.key), &s) {
                    return;
                }
                self.unlink_slice(&s.key);
                if let Some(svc) = s.service_key() {
                    self.changes.insert(Change::Service(svc.clone()));
                    let names = self.snap.slices_by_service.entry(svc).or_default();
                    insert_sorted(names, s.key.name.clone());
                }
                self.snap.slices.insert(s.key.clone(), s);
            }
            ClusterObject::Pod(p) => {
                if same(self.snap.pods.get(&p.key), &p) {
                    return;
                }
                self.changes.insert(Change::Pod(p.key.clone()));
                self.snap.pods.insert(p.key.clone(), p);
            }
            ClusterObject::Node(n) => {
                if same(self.snap.nodes.get(&n.name), &n) {
                    return;
                }
                self.changes.insert(Change::Node(n.name.clone()));
                self.snap.nodes.insert(n.name.clone(), n);
            }
        }
    }

    /// Removes the slice from its service's index and records the change.
    fn unlink_slice(&mut self, key: &ObjectKey) {
        let Some(old) = self.snap.slices.get(key).cloned() else {
            return;
        };
        if let Some(svc) = old.service_key() {
            self.changes.insert(Change::Service(svc.clone()));
            let now_empty = match self.snap.slices_by_service.get_mut(&svc) {
                Some(names) => {
                    if let Ok(pos) = names.binary_search(&key.name) {
                        names.remove(pos);
                    }
                    names.is_empty()
                }
                None => false,
            };
            if now_empty {
                self.snap.slices_by_service.remove(&svc);
            }
        }
    }

    /// Removes an object; absent objects are a no-op.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) {
        match kind {
            Kind::Service => {
                if self.snap.services.remove(key).is_some() {
                    self.changes.insert(Change::Service(key.clone()));
                }
            }
            Kind::EndpointSlice => {
                self.unlink_slice(key);
                self.snap.slices.remove(key);
            }
            Kind::Pod => {
                if self.snap.pods.remove(key).is_some() {
                    self.changes.insert(Change::Pod(key.clone()));
                }
            }
            Kind::Node => {
                if self.snap.nodes.remove(&key.name).is_some() {
                    self.changes.insert(Change::Node(key.name.clone()));
                }
            }
        }
    }

    /// Replaces every object of `kind` (a relist) and marks the kind synced. The objects' `Arc`s
    /// are stored as they are (no copies); one equal to the stored version is no change.
    pub fn replace_kind(&mut self, kind: Kind, objects: Vec<ClusterObject>) {
        let objects: Vec<ClusterObject> =
            objects.into_iter().filter(|o| o.kind() == kind).collect();
        let keep: HashSet<ObjectKey> = objects.iter().map(ClusterObject::key).collect();
        let stale: Vec<ObjectKey> = match kind {
            Kind::Service => self
                .snap
                .services
                .keys()
                .filter(|k| !keep.contains(*k))
                .cloned()
                .collect(),
            Kind::EndpointSlice => self
                .snap
                .slices
                .keys()
                .filter(|k| !keep.contains(*k))
                .cloned()
                .collect(),
            Kind::Pod => self
                .snap
                .pods
                .keys()
                .filter(|k| !keep.contains(*k))
                .cloned()
                .collect(),
            Kind::Node => self
                .snap
                .nodes
                .keys()
                .map(|n| ObjectKey::new("", n.clone()))
                .filter(|k| !keep.contains(k))
                .collect(),
        };
        for key in stale {
            self.delete(kind, &key);
        }
        for object in objects {
            self.apply(object);
        }
        self.mark_synced(kind);
    }

    /// Records that the initial list of `kind` has arrived.
    pub(crate) fn mark_synced(&mut self, kind: Kind) {
        if self.snap.synced.insert(kind) {
            self.synced_changed = true;
        }
    }

    /// The state as modified so far.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }
}

/// A cloneable handle that reads snapshots and waits for new ones.
#[derive(Clone)]
pub struct CacheReader {
    rx: watch::Receiver<Arc<Snapshot>>,
}

impl CacheReader {
    /// The latest snapshot (does not mark it seen).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    /// Waits until a snapshot newer than the last one seen through this reader is published,
    /// and returns it. Bursts of updates coalesce into one wake-up. Returns `None` once the
    /// writer is gone.
    pub async fn changed(&mut self) -> Option<Arc<Snapshot>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }

    /// Waits until the cache reports synced or `timeout` passes; returns whether it synced.
    pub async fn wait_synced(&mut self, timeout: std::time::Duration) -> bool {
        tokio::time::timeout(timeout, self.rx.wait_for(|s| s.is_synced()))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::project;
    use serde_json::json;

    fn svc(ns: &str, name: &str, ip: &str) -> ClusterObject {
        project::from_json(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}))
        .unwrap()
        .unwrap()
    }

    fn slice(ns: &str, name: &str, service: &str, ips: &[&str]) -> ClusterObject {
        let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
        project::from_json(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": endpoints}))
        .unwrap()
        .unwrap()
    }

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey::new(ns, name)
    }

    #[test]
    fn synced_only_after_every_expected_kind() {
        let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        assert!(!r.snapshot().is_synced());
        w.replace_kind(Kind::Service, vec![svc("a", "s", "10.0.0.1")]);
        assert!(!r.snapshot().is_synced());
        let g = w.replace_kind(Kind::EndpointSlice, vec![]);
        assert!(r.snapshot().is_synced());
        assert_eq!(r.snapshot().generation(), g);
    }

    #[test]
    fn slices_index_follows_label_changes_and_deletes() {
        let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        w.apply(svc("a", "s1", "10.0.0.1"));
        w.apply(svc("a", "s2", "10.0.0.2"));
        w.apply(slice("a", "x", "s1", &["10.1.0.1"]));
        w.apply(slice("a", "y", "s1", &["10.1.0.2"]));
        let snap = r.snapshot();
        assert_eq!(snap.endpoint_slices_for(&key("a", "s1")).count(), 2);
        let g = snap.generation();
        // Relabel slice x to s2: both services change.
        w.apply(slice("a", "x", "s2", &["10.1.0.1"]));
        let snap = r.snapshot();
        assert_eq!(snap.endpoint_slices_for(&key("a", "s1")).count(), 1);
        assert_eq!(snap.endpoint_slices_for(&key("a", "s2")).count(), 1);
        let changes = snap.changes_since(g).unwrap();
        assert_eq!(
            changes,
            [
                Change::Service(key("a", "s1")),
                Change::Service(key("a", "s2"))
            ]
            .into_iter()
            .collect()
        );
        w.delete(Kind::EndpointSlice, &key("a", "y"));
        assert_eq!(r.snapshot().endpoint_slices_for(&key("a", "s1")).count(), 0);
        assert_eq!(r.snapshot().endpoint_slice_count(), 1);
    }

    #[test]
    fn identical_apply_publishes_nothing() {
        let (mut w, r) = new_cache([Kind::Service]);
        let g1 = w.apply(svc("a", "s", "10.0.0.1"));
        let g2 = w.apply(svc("a", "s", "10.0.0.1"));
        assert_eq!(g1, g2);
        assert_eq!(r.snapshot().generation(), g1);
        let g3 = w.delete(Kind::Service, &key("a", "missing"));
        assert_eq!(g3, g1);
    }

    #[test]
    fn relist_removes_objects_missing_from_the_new_list() {
        let (mut w, r) = new_cache([Kind::Service]);
        w.replace_kind(
            Kind::Service,
            vec![svc("a", "keep", "10.0.0.1"), svc("a", "gone", "10.0.0.2")],
        );
        let g = r.snapshot().generation();
        w.replace_kind(
            Kind::Service,
            vec![svc("a", "keep", "10.0.0.1"), svc("a", "new", "10.0.0.3")],
        );
        let snap = r.snapshot();
        assert!(snap.service(&key("a", "gone")).is_none());
        assert!(snap.service(&key("a", "new")).is_some());
        assert_eq!(snap.generation(), g + 1, "one relist, one generation");
        assert_eq!(
            snap.changes_since(g).unwrap(),
            [
                Change::Service(key("a", "gone")),
                Change::Service(key("a", "new"))
            ]
            .into_iter()
            .collect()
        );
    }

    #[test]
    fn old_snapshots_stay_unchanged() {
        let (mut w, r) = new_cache([Kind::Service]);
        w.apply(svc("a", "s", "10.0.0.1"));
        let before = r.snapshot();
        w.apply(svc("a", "s", "10.0.0.9"));
        w.apply(svc("a", "t", "10.0.0.2"));
        assert_eq!(before.service_count(), 1);
        assert_eq!(
            before.service(&key("a", "s")).unwrap().cluster_ips[0].to_string(),
            "10.0.0.1"
        );
        assert_eq!(r.snapshot().service_count(), 2);
    }

    #[test]
    fn changes_since_answers_none_beyond_the_journal() {
        let (mut w, r) = new_cache([Kind::Service]);
        for i in 0..(JOURNAL_CAPACITY + 10) {
            w.apply(svc("a", &format!("s{i}"), "10.0.0.1"));
        }
        let snap = r.snapshot();
        assert!(snap.changes_since(0).is_none());
        let recent = snap.changes_since(snap.generation() - 3).unwrap();
        assert_eq!(recent.len(), 3);
        assert!(snap.changes_since(snap.generation()).unwrap().is_empty());
    }

    #[test]
    fn counts_serialize_as_the_status_cache_object() {
        let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        w.apply(svc("a", "s", "10.0.0.1"));
        w.apply(slice("a", "x", "s", &["10.1.0.1", "10.1.0.2"]));
        let counts = r.snapshot().counts();
        // The `cache` object of `/status` (read by `agentctl status` and the tests): these keys.
        let json = serde_json::to_value(&counts).unwrap();
        assert_eq!(
            json,
            json!({"generation": 2, "services": 1, "endpoint_slices": 1, "endpoints": 2,
                   "pods": 0, "nodes": 0})
        );
        let back: CacheCounts = serde_json::from_value(json).unwrap();
        assert_eq!(back, counts);
    }

    #[tokio::test]
    async fn readers_coalesce_bursts() {
        let (mut w, mut r) = new_cache([Kind::Service]);
        for i in 0..100 {
            w.apply(svc("a", &format!("s{i}"), "10.0.0.1"));
        }
        let snap = r.changed().await.unwrap();
        assert_eq!(
            snap.service_count(),
            100,
            "one wake-up sees the whole burst"
        );
        drop(w);
        assert!(r.changed().await.is_none());
    }
}
