//! The Kubernetes API source: kube-runtime watchers projected into the cache.
//!
//! One [`watcher`](kube::runtime::watcher()) per watched kind (`Api::<K>::all`, default
//! config: paginated list with `limit=500`, then a watch with bookmarks from the list's
//! `resourceVersion`), each with kube-runtime's default exponential backoff. `managedFields` are
//! dropped on arrival and every object is projected into the compact [`model`](crate::model)
//! right away. The per-kind streams are merged and applied, one event at a time, to the single
//! [`CacheWriter`] by an [`ApiEventApplier`], the same state machine as kube-rs's
//! `Store::apply_watcher_event`: a relist (`Init`, `InitApply`…, `InitDone`) is buffered and
//! replaces the whole kind at once, so objects deleted while the watch was down disappear.
//!
//! Errors never stop the source: a watch failure is logged, shown in the status, retried with
//! backoff, and the cache keeps serving the last state; an object that cannot be projected is
//! logged and reported by kind and `namespace/name`, and its last good version (if any) stays.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::path::Path;
use std::time::{Duration, Instant};

use ::kube::api::{Api, Resource, ResourceExt};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1 as core_v1;
use k8s_openapi::api::discovery::v1 as discovery_v1;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{CacheWriter, Snapshot};
use crate::model::project::{self, ProjectionError};
use crate::model::{ClusterObject, Kind, ObjectKey};

use super::{SourceError, SourceProblem, StatusHandle};

/// How long a watch error stays reported without a new one. kube-runtime's default backoff
/// retries a failing watch at least every 30 s (plus jitter) and resets after 120 s of quiet.
pub const WATCH_ERROR_TTL: Duration = Duration::from_secs(120);

/// Builds a client from `kubeconfig`, or from the in-cluster / default configuration.
pub async fn client(kubeconfig: Option<&Path>) -> Result<::kube::Client, SourceError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = ::kube::config::Kubeconfig::read_from(path)
                .map_err(|e| SourceError::KubeConfig(format!("{}: {e}", path.display())))?;
            ::kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| SourceError::KubeConfig(format!("{}: {e}", path.display())))?
        }
        None => ::kube::Config::infer()
            .await
            .map_err(|e| SourceError::KubeConfig(e.to_string()))?,
    };
    ::kube::Client::try_from(config).map_err(|e| SourceError::KubeConfig(e.to_string()))
}

/// One API resource the source reads, for deriving RBAC rules from the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchedResource {
    /// API group (`""` for the core group, `discovery.k8s.io`).
    pub api_group: &'static str,
    /// Plural resource name (`services`).
    pub resource: &'static str,
    /// Verbs the watcher uses: `list` and `watch`.
    pub verbs: Vec<&'static str>,
}

/// The resources (and verbs) the source needs to watch `kinds`, in the order of `kinds`.
pub fn watched_resources(kinds: &[Kind]) -> Vec<WatchedResource> {
    fn of<K: k8s_openapi::Resource>() -> WatchedResource {
        WatchedResource {
            api_group: K::GROUP,
            resource: K::URL_PATH_SEGMENT,
            verbs: vec!["list", "watch"],
        }
    }
    let mut seen = BTreeSet::new();
    kinds
        .iter()
        .filter(|k| seen.insert(**k))
        .map(|kind| match kind {
            Kind::Service => of::<core_v1::Service>(),
            Kind::EndpointSlice => of::<discovery_v1::EndpointSlice>(),
            Kind::Pod => of::<core_v1::Pod>(),
            Kind::Node => of::<core_v1::Node>(),
        })
        .collect()
}

/// An API object that could not be projected into the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidObject {
    /// Its kind.
    pub kind: Kind,
    /// Its key as far as the metadata tells (nodes: empty namespace).
    pub key: ObjectKey,
    /// Why it could not be projected.
    pub error: ProjectionError,
}

impl InvalidObject {
    /// `Service default/web`, `Node node-a`: where the problem is, for status output.
    pub fn location(&self) -> String {
        location(self.kind, &self.key)
    }

    /// What is wrong, without repeating the location.
    pub fn reason(&self) -> String {
        match &self.error {
            ProjectionError::Missing { field, .. } => format!("missing field {field}"),
            ProjectionError::Invalid { field, reason, .. } => format!("field {field}: {reason}"),
        }
    }
}

fn location(kind: Kind, key: &ObjectKey) -> String {
    if key.namespace.is_empty() {
        format!("{kind} {}", key.name)
    } else {
        format!("{kind} {key}")
    }
}

/// An API object after projection: the model object, or why it could not be made one.
pub type Projected = Result<ClusterObject, InvalidObject>;

/// A k8s-openapi type the source can watch and project.
trait WatchedKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    const KIND: Kind;
    const NAMESPACED: bool;
    fn project(&self) -> Result<ClusterObject, ProjectionError>;
}

impl WatchedKind for core_v1::Service {
    const KIND: Kind = Kind::Service;
    const NAMESPACED: bool = true;
    fn project(&self) -> Result<ClusterObject, ProjectionError> {
        project::service(self).map(ClusterObject::Service)
    }
}

impl WatchedKind for discovery_v1::EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;
    const NAMESPACED: bool = true;
    fn project(&self) -> Result<ClusterObject, ProjectionError> {
        project::endpoint_slice(self).map(ClusterObject::EndpointSlice)
    }
}

impl WatchedKind for core_v1::Pod {
    const KIND: Kind = Kind::Pod;
    const NAMESPACED: bool = true;
    fn project(&self) -> Result<ClusterObject, ProjectionError> {
        project::pod(self).map(ClusterObject::Pod)
    }
}

impl WatchedKind for core_v1::Node {
    const KIND: Kind = Kind::Node;
    const NAMESPACED: bool = false;
    fn project(&self) -> Result<ClusterObject, ProjectionError> {
        project::node(self).map(ClusterObject::Node)
    }
}

/// Projects one API object; failures keep the key so a later delete still finds it.
fn project_object<K: WatchedKind>(object: &K) -> Projected {
    object.project().map_err(|error| {
        // Same key rules as the projection: a missing namespace means `default`.
        let namespace = if K::NAMESPACED {
            object.namespace().unwrap_or_else(|| "default".into())
        } else {
            String::new()
        };
        InvalidObject {
            kind: K::KIND,
            key: ObjectKey::new(namespace, object.meta().name.clone().unwrap_or_default()),
            error,
        }
    })
}

fn project_event<K: WatchedKind>(event: Event<K>) -> Event<Projected> {
    match event {
        Event::Apply(o) => Event::Apply(project_object(&o)),
        Event::Delete(o) => Event::Delete(project_object(&o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(project_object(&o)),
        Event::InitDone => Event::InitDone,
    }
}

/// One item of the merged event stream: which kind, and its watcher event or error.
type KindEvent = (Kind, Result<Event<Projected>, watcher::Error>);

fn kind_events<K: WatchedKind>(
    client: ::kube::Client,
    config: watcher::Config,
) -> BoxStream<'static, KindEvent> {
    ::kube::runtime::watcher(Api::<K>::all(client), config)
        .default_backoff()
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .map(|item| (K::KIND, item.map(project_event::<K>)))
        .boxed()
}

/// Applies projected watcher events of every kind to one [`CacheWriter`], synchronously.
///
/// `Apply` and `Delete` are applied at once; `Init` starts buffering the kind, `InitApply`
/// buffers, and `InitDone` replaces the kind with the buffer ([`CacheWriter::replace_kind`]),
/// which removes objects that vanished while the watch was down and marks the kind synced.
/// Objects that cannot be projected are skipped (their last good version stays) and reported
/// by [`problems`](Self::problems) until they are fixed, deleted, or gone from a relist.
#[derive(Debug, Default)]
pub struct ApiEventApplier {
    /// Kinds in the middle of a relist, with the objects listed so far.
    buffers: HashMap<Kind, Vec<ClusterObject>>,
    /// Invalid objects seen during the relist in progress, per kind.
    invalid_in_relist: HashMap<Kind, BTreeMap<ObjectKey, String>>,
    /// Invalid objects currently reported.
    invalid: BTreeMap<(Kind, ObjectKey), String>,
    /// The last watch error of each kind and when it happened, until the kind delivers an
    /// event again or no error has followed for [`WATCH_ERROR_TTL`].
    watch_errors: BTreeMap<Kind, (String, Instant)>,
    events: u64,
    resyncs: u64,
    problems_version: u64,
}

impl ApiEventApplier {
    /// A new applier with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one watcher event of `kind` to `writer`.
    pub fn apply(&mut self, kind: Kind, event: Event<Projected>, writer: &mut CacheWriter) {
        self.events += 1;
        if self.watch_errors.remove(&kind).is_some() {
            self.problems_version += 1;
        }
        match event {
            Event::Apply(Ok(object)) => {
                self.clear_invalid(kind, &object.key());
                writer.apply(object);
            }
            Event::Apply(Err(invalid)) => self.report_invalid(invalid),
            Event::Delete(projected) => {
                let key = match projected {
                    Ok(object) => object.key(),
                    Err(invalid) => invalid.key,
                };
                self.clear_invalid(kind, &key);
                writer.delete(kind, &key);
            }
            Event::Init => {
                tracing::debug!(%kind, "listing");
                self.buffers.insert(kind, Vec::new());
                self.invalid_in_relist.insert(kind, BTreeMap::new());
            }
            Event::InitApply(projected) => {
                let buffer = self.buffers.entry(kind).or_default();
                match projected {
                    Ok(object) => buffer.push(object),
                    Err(invalid) => {
                        // Keep the last good version through the relist.
                        if let Some(previous) =
                            current_object(&writer.snapshot(), kind, &invalid.key)
                        {
                            buffer.push(previous);
                        }
                        tracing::warn!(
                            object = %invalid.location(),
                            reason = %invalid.reason(),
                            "skipping an object the model cannot use"
                        );
                        let reason = invalid.reason();
                        self.invalid_in_relist
                            .entry(kind)
                            .or_default()
                            .insert(invalid.key, reason);
                    }
                }
            }
            Event::InitDone => {
                let objects = self.buffers.remove(&kind).unwrap_or_default();
                let invalid = self.invalid_in_relist.remove(&kind).unwrap_or_default();
                tracing::info!(%kind, objects = objects.len(), invalid = invalid.len(), "listed");
                writer.replace_kind(kind, objects);
                self.invalid.retain(|(k, _), _| *k != kind);
                self.invalid.extend(
                    invalid
                        .into_iter()
                        .map(|(key, reason)| ((kind, key), reason)),
                );
                self.resyncs += 1;
                self.problems_version += 1;
            }
        }
    }

    /// Records a failed list or watch of `kind` at `now` (the watcher retries with backoff).
    pub fn watch_failed(&mut self, kind: Kind, error: &str, now: Instant) {
        tracing::warn!(%kind, %error, "watch failed; retrying with backoff, serving the last state");
        self.watch_errors.insert(kind, (error.to_string(), now));
        self.problems_version += 1;
    }

    /// Forgets watch errors older than [`WATCH_ERROR_TTL`] at `now`: the watcher retries at
    /// least that often while failing, so a quiet kind has reconnected (a resumed watch emits
    /// no event until something changes). Returns whether anything was forgotten.
    pub fn expire_watch_errors(&mut self, now: Instant) -> bool {
        let before = self.watch_errors.len();
        self.watch_errors
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < WATCH_ERROR_TTL);
        let expired = self.watch_errors.len() != before;
        if expired {
            self.problems_version += 1;
        }
        expired
    }

    /// The problems currently reported: watch errors first, then invalid objects.
    pub fn problems(&self) -> Vec<SourceProblem> {
        let watch = self
            .watch_errors
            .iter()
            .map(|(kind, (error, _))| SourceProblem {
                location: format!("watch {}", kind_resource(*kind)),
                reason: format!("{error} (retrying; serving the last state)"),
            });
        let objects = self
            .invalid
            .iter()
            .map(|((kind, key), reason)| SourceProblem {
                location: location(*kind, key),
                reason: reason.clone(),
            });
        watch.chain(objects).collect()
    }

    /// Changes every time the result of [`problems`](Self::problems) may have changed.
    pub fn problems_version(&self) -> u64 {
        self.problems_version
    }

    /// Events applied so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Completed (re)lists so far.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    fn report_invalid(&mut self, invalid: InvalidObject) {
        tracing::warn!(
            object = %invalid.location(),
            reason = %invalid.reason(),
            "skipping an object the model cannot use; its last good version stays"
        );
        let reason = invalid.reason();
        self.invalid.insert((invalid.kind, invalid.key), reason);
        self.problems_version += 1;
    }

    fn clear_invalid(&mut self, kind: Kind, key: &ObjectKey) {
        if self.invalid.remove(&(kind, key.clone())).is_some() {
            self.problems_version += 1;
        }
    }
}

/// `services`, `endpointslices.discovery.k8s.io`: the resource a kind is watched through.
fn kind_resource(kind: Kind) -> String {
    let r = &watched_resources(&[kind])[0];
    if r.api_group.is_empty() {
        r.resource.to_string()
    } else {
        format!("{}.{}", r.resource, r.api_group)
    }
}

/// The object of `kind` with `key` in `snapshot`, as a [`ClusterObject`].
fn current_object(snapshot: &Snapshot, kind: Kind, key: &ObjectKey) -> Option<ClusterObject> {
    match kind {
        Kind::Service => snapshot
            .service(key)
            .map(|s| ClusterObject::Service((**s).clone())),
        Kind::EndpointSlice => snapshot
            .endpoint_slices()
            .find(|s| s.key == *key)
            .map(|s| ClusterObject::EndpointSlice((**s).clone())),
        Kind::Pod => snapshot.pod(key).map(|p| ClusterObject::Pod((**p).clone())),
        Kind::Node => snapshot
            .node(&key.name)
            .map(|n| ClusterObject::Node((**n).clone())),
    }
}

/// Watches `kinds` through `client` and applies every event to `writer` until cancelled.
///
/// Never returns while at least one kind is watched: errors are reported in `status` and
/// retried with kube-runtime's default backoff, and the cache keeps its last state meanwhile.
pub async fn run(
    client: ::kube::Client,
    kinds: Vec<Kind>,
    writer: CacheWriter,
    status: StatusHandle,
) {
    run_for_node(client, kinds, writer, status, None).await
}

/// The field selector that narrows the Node watch to the node named `node`.
pub fn node_field_selector(node: &str) -> String {
    format!("metadata.name={node}")
}

/// Like [`run`]; with `node` set, Nodes are watched with the field selector
/// `metadata.name=<node>` (only this node's object: its zone label for topology hints).
pub async fn run_for_node(
    client: ::kube::Client,
    kinds: Vec<Kind>,
    mut writer: CacheWriter,
    status: StatusHandle,
    node: Option<String>,
) {
    let mut seen = BTreeSet::new();
    let all = watcher::Config::default;
    let streams: Vec<BoxStream<'static, KindEvent>> = kinds
        .iter()
        .filter(|k| seen.insert(**k))
        .map(|kind| match kind {
            Kind::Service => kind_events::<core_v1::Service>(client.clone(), all()),
            Kind::EndpointSlice => {
                kind_events::<discovery_v1::EndpointSlice>(client.clone(), all())
            }
            Kind::Pod => kind_events::<core_v1::Pod>(client.clone(), all()),
            Kind::Node => kind_events::<core_v1::Node>(
                client.clone(),
                match &node {
                    Some(name) => all().fields(&node_field_selector(name)),
                    None => all(),
                },
            ),
        })
        .collect();
    tracing::info!(
        ?kinds,
        node = node.as_deref(),
        "watching the Kubernetes API"
    );
    let mut events = futures::stream::select_all(streams);
    let mut applier = ApiEventApplier::new();
    let mut published_problems = applier.problems_version();
    let mut expiry = tokio::time::interval(Duration::from_secs(10));
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = events.next() => {
                let Some((kind, item)) = item else { break };
                match item {
                    Ok(event) => applier.apply(kind, event, &mut writer),
                    Err(error) => applier.watch_failed(kind, &error.to_string(), Instant::now()),
                }
            }
            _ = expiry.tick() => {
                if !applier.expire_watch_errors(Instant::now()) {
                    continue;
                }
            }
        }
        let problems = (applier.problems_version() != published_problems).then(|| {
            published_problems = applier.problems_version();
            applier.problems()
        });
        status.update(|s| {
            s.events = applier.events();
            s.resyncs = applier.resyncs();
            if let Some(problems) = problems {
                s.problems = problems;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::new_cache;
    use serde_json::json;

    fn service(name: &str, ip: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        })
    }

    fn node(name: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    }

    /// Projects like the running source does: through the k8s-openapi type.
    fn projected(value: serde_json::Value) -> Projected {
        match value["kind"].as_str() {
            Some("Service") => {
                project_object(&serde_json::from_value::<core_v1::Service>(value).unwrap())
            }
            Some("Node") => {
                project_object(&serde_json::from_value::<core_v1::Node>(value).unwrap())
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    fn cluster_ip(writer: &CacheWriter, name: &str) -> Option<String> {
        writer
            .snapshot()
            .service(&key(name))
            .map(|s| s.cluster_ips[0].to_string())
    }

    fn list(
        applier: &mut ApiEventApplier,
        writer: &mut CacheWriter,
        kind: Kind,
        objects: Vec<serde_json::Value>,
    ) {
        applier.apply(kind, Event::Init, writer);
        for o in objects {
            applier.apply(kind, Event::InitApply(projected(o)), writer);
        }
        applier.apply(kind, Event::InitDone, writer);
    }

    #[test]
    fn initial_list_is_applied_at_init_done_and_marks_synced() {
        let (mut w, r) = new_cache([Kind::Service]);
        let mut a = ApiEventApplier::new();
        a.apply(Kind::Service, Event::Init, &mut w);
        a.apply(
            Kind::Service,
            Event::InitApply(projected(service("a", "10.96.0.1"))),
            &mut w,
        );
        assert_eq!(r.snapshot().service_count(), 0, "buffered until InitDone");
        assert!(!r.snapshot().is_synced());
        a.apply(Kind::Service, Event::InitDone, &mut w);
        let snap = r.snapshot();
        assert!(snap.is_synced());
        assert_eq!(snap.service_count(), 1);
        assert_eq!(a.resyncs(), 1);
        assert!(a.problems().is_empty());
    }

    #[test]
    fn apply_and_delete_take_effect_immediately() {
        let (mut w, r) = new_cache([Kind::Service]);
        let mut a = ApiEventApplier::new();
        list(&mut a, &mut w, Kind::Service, vec![]);
        a.apply(
            Kind::Service,
            Event::Apply(projected(service("a", "10.96.0.1"))),
            &mut w,
        );
        assert_eq!(cluster_ip(&w, "a").as_deref(), Some("10.96.0.1"));
        a.apply(
            Kind::Service,
            Event::Apply(projected(service("a", "10.96.0.2"))),
            &mut w,
        );
        assert_eq!(cluster_ip(&w, "a").as_deref(), Some("10.96.0.2"));
        a.apply(
            Kind::Service,
            Event::Delete(projected(service("a", "10.96.0.2"))),
            &mut w,
        );
        assert_eq!(r.snapshot().service_count(), 0);
    }

    #[test]
    fn relist_removes_objects_deleted_during_the_outage() {
        let (mut w, r) = new_cache([Kind::Service]);
        let mut a = ApiEventApplier::new();
        list(
            &mut a,
            &mut w,
            Kind::Service,
            vec![service("a", "10.96.0.1"), service("b", "10.96.0.2")],
        );
        assert_eq!(r.snapshot().service_count(), 2);
        // The watch broke, `b` was deleted and `c` created meanwhile; the relist has no Delete.
        list(
            &mut a,
            &mut w,
            Kind::Service,
            vec![service("a", "10.96.0.1"), service("c", "10.96.0.3")],
        );
        let snap = r.snapshot();
        assert!(snap.service(&key("a")).is_some());
        assert!(snap.service(&key("b")).is_none());
        assert!(snap.service(&key("c")).is_some());
        assert_eq!(a.resyncs(), 2);
    }

    #[test]
    fn cache_serves_the_old_state_while_a_relist_is_in_progress() {
        let (mut w, r) = new_cache([Kind::Service]);
        let mut a = ApiEventApplier::new();
        list(
            &mut a,
            &mut w,
            Kind::Service,
            vec![service("a", "10.96.0.1")],
        );
        a.apply(Kind::Service, Event::Init, &mut w);
        a.apply(
            Kind::Service,
            Event::InitApply(projected(service("c", "10.96.0.3"))),
            &mut w,
        );
        let snap = r.snapshot();
        assert!(snap.service(&key("a")).is_some());
        assert!(snap.service(&key("c")).is_none());
        assert!(snap.is_synced(), "a relist does not unsync the cache");
    }

    #[test]
    fn invalid_object_is_reported_and_keeps_its_last_good_version() {
        let (mut w, r) = new_cache([Kind::Service]);
        let mut a = ApiEventApplier::new();
        list(
            &mut a,
            &mut w,
            Kind::Service,
            vec![service("a", "10.96.0.1")],
        );
        a.apply(
            Kind::Service,
            Event::Apply(projected(service("a", "not-an-ip"))),
            &mut w,
        );
        assert_eq!(cluster_ip(&w, "a").as_deref(), Some("10.96.0.1"));
        let problems = a.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].location, "Service default/a");
        assert!(
            problems[0].reason.contains("not-an-ip"),
            "{:?}",
            problems[0]
        );

        // Still bad across a relist: the good version stays, the problem stays.
        list(
            &mut a,
            &mut w,
            Kind::Service,
            vec![service("a", "not-an-ip"), service("b", "bad")],
        );
        assert_eq!(cluster_ip(&w, "a").as_deref(), Some("10.96.0.1"));
        assert!(r.snapshot().service(&key("b")).is_none());
        let locations: Vec<_> = a.problems().into_iter().map(|p| p.location).collect();
        assert_eq!(locations, ["Service default/a", "Service default/b"]);

        // Fixing one and deleting the other clears both problems.
        a.apply(
            Kind::Service,
            Event::Apply(projected(service("a", "10.96.0.9"))),
            &mut w,
        );
        a.apply(
            Kind::Service,
            Event::Delete(projected(service("b", "bad"))),
            &mut w,
        );
        assert_eq!(cluster_ip(&w, "a").as_deref(), Some("10.96.0.9"));
        assert!(a.problems().is_empty(), "{:?}", a.problems());
    }

    #[test]
    fn invalid_object_gone_from_a_relist_is_no_longer_reported() {
        let (mut w, _r) = new_cache([Kind::Service]);
        let mut a = ApiEventApplier::new();
        list(&mut a, &mut w, Kind::Service, vec![service("b", "bad")]);
        assert_eq!(a.problems().len(), 1);
        list(&mut a, &mut w, Kind::Service, vec![]);
        assert!(a.problems().is_empty());
    }

    #[test]
    fn watch_errors_are_reported_until_the_kind_delivers_again() {
        let (mut w, r) = new_cache([Kind::Service, Kind::Node]);
        let mut a = ApiEventApplier::new();
        list(
            &mut a,
            &mut w,
            Kind::Service,
            vec![service("a", "10.96.0.1")],
        );
        let t0 = Instant::now();
        a.watch_failed(Kind::Node, "connection refused", t0);
        a.watch_failed(Kind::Service, "connection refused", t0);
        let problems = a.problems();
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].location, "watch services");
        assert_eq!(problems[1].location, "watch nodes");
        assert!(problems[0].reason.contains("connection refused"));
        assert_eq!(r.snapshot().service_count(), 1, "last state kept");
        list(&mut a, &mut w, Kind::Node, vec![node("node-a")]);
        assert_eq!(a.problems().len(), 1);
        assert!(r.snapshot().is_synced());
        assert!(r.snapshot().node("node-a").is_some());

        // A resumed watch is silent: with no new error for the TTL, the error is forgotten.
        assert!(!a.expire_watch_errors(t0 + WATCH_ERROR_TTL / 2));
        a.watch_failed(
            Kind::Service,
            "connection refused",
            t0 + WATCH_ERROR_TTL / 2,
        );
        assert!(!a.expire_watch_errors(t0 + WATCH_ERROR_TTL));
        assert_eq!(a.problems().len(), 1, "a newer error is kept");
        assert!(a.expire_watch_errors(t0 + WATCH_ERROR_TTL * 2));
        assert!(a.problems().is_empty());
    }

    #[test]
    fn kinds_relist_independently() {
        let (mut w, r) = new_cache([Kind::Service, Kind::Node]);
        let mut a = ApiEventApplier::new();
        list(
            &mut a,
            &mut w,
            Kind::Service,
            vec![service("a", "10.96.0.1")],
        );
        assert!(!r.snapshot().is_synced(), "nodes not listed yet");
        a.apply(Kind::Node, Event::Init, &mut w);
        a.apply(
            Kind::Service,
            Event::Apply(projected(service("b", "10.96.0.2"))),
            &mut w,
        );
        a.apply(
            Kind::Node,
            Event::InitApply(projected(node("node-a"))),
            &mut w,
        );
        a.apply(Kind::Node, Event::InitDone, &mut w);
        let snap = r.snapshot();
        assert!(snap.is_synced());
        assert_eq!(snap.service_count(), 2);
        assert_eq!(snap.nodes().count(), 1);
    }

    #[test]
    fn watched_resources_name_groups_and_verbs() {
        let all = watched_resources(&Kind::ALL);
        let names: Vec<_> = all.iter().map(|r| (r.api_group, r.resource)).collect();
        assert_eq!(
            names,
            [
                ("", "services"),
                ("discovery.k8s.io", "endpointslices"),
                ("", "pods"),
                ("", "nodes")
            ]
        );
        assert!(all.iter().all(|r| r.verbs == ["list", "watch"]));
        assert_eq!(
            watched_resources(&[Kind::Service, Kind::Service]).len(),
            1,
            "deduplicated"
        );
    }
}
