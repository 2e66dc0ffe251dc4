//! The Kubernetes API source: kube-runtime watchers projected into the cache.
//!
//! One [`watcher`](kube::runtime::watcher()) per watched kind (`Api::<K>::all`, default config:
//! paginated list with `limit=500`, then a watch with bookmarks from the list's `resourceVersion`;
//! list pages are asked for gzip-compressed, as client-go does, unless the kubeconfig says
//! `disable-compression: true`), each retried after a failure with a jittered exponential backoff
//! ([`RetryBackoff`]: 0.8 s doubling to a 10 s cap) that a readiness probe cuts short: while a
//! watch waits to retry, `GET /readyz` is sent every 2 s (± 25 %), and when the API server, having
//! failed the probe, answers again, every waiting watch retries at once. So the cache converges
//! within about 2.5 s of the API server answering after an outage, instead of up to a full backoff
//! period later. `managedFields` are dropped on arrival and every object is projected into the
//! compact [`model`](crate::model) right away. The per-kind streams are merged and applied, one
//! event at a time, to the single [`CacheWriter`] by an [`ApiEventApplier`], the same state machine
//! as kube-rs's `Store::apply_watcher_event`: a relist (`Init`, `InitApply`…, `InitDone`) is
//! buffered and replaces the whole kind at once, so objects deleted while the watch was down
//! disappear.
//!
//! Errors never stop the source: a watch failure is logged, shown in the status, retried with
//! backoff, and the cache keeps serving the last state; an object that cannot be projected is
//! logged and reported by kind and `namespace/name`, and its last good version (if any) stays.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::kube::api::{Api, Resource, ResourceExt};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1 as core_v1;
use k8s_openapi::api::discovery::v1 as discovery_v1;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::CacheWriter;
use crate::model::project::{self, ProjectionError};
use crate::model::{ClusterObject, Kind, ObjectKey};

use super::{SourceError, SourceProblem, StatusHandle};

/// How long a watch error stays reported without a new one. A failing watch is retried at
/// least every [`RETRY_MAX`] (the backoff resets after [`RETRY_RESET_AFTER`] without failures).
pub(crate) const WATCH_ERROR_TTL: Duration = Duration::from_secs(120);

/// The first retry delay after a watch failure (as client-go's reflector and kube-runtime).
pub(crate) const RETRY_INITIAL: Duration = Duration::from_millis(800);
/// The longest retry delay (client-go and kube-runtime use 30 s; the probe makes a shorter cap
/// cheap, and a shorter cap bounds the wait when the probe cannot tell).
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(10);
/// A failure this long after the previous one starts the backoff again from [`RETRY_INITIAL`].
pub(crate) const RETRY_RESET_AFTER: Duration = Duration::from_secs(120);
/// How often the readiness probe asks the API server while a watch waits to retry (± 25 %).
pub(crate) const PROBE_PERIOD: Duration = Duration::from_secs(2);

/// Builds a client from `kubeconfig`, or from the in-cluster / default configuration.
pub(crate) async fn client(kubeconfig: Option<&Path>) -> Result<::kube::Client, SourceError> {
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
    pub(crate) fn location(&self) -> String {
        location(self.kind, &self.key)
    }

    /// What is wrong, without repeating the location.
    pub(crate) fn reason(&self) -> String {
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
        project::service(self).map(ClusterObject::from)
    }
}

impl WatchedKind for discovery_v1::EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;
    const NAMESPACED: bool = true;
    fn project(&self) -> Result<ClusterObject, ProjectionError> {
        project::endpoint_slice(self).map(ClusterObject::from)
    }
}

impl WatchedKind for core_v1::Pod {
    const KIND: Kind = Kind::Pod;
    const NAMESPACED: bool = true;
    fn project(&self) -> Result<ClusterObject, ProjectionError> {
        project::pod(self).map(ClusterObject::from)
    }
}

impl WatchedKind for core_v1::Node {
    const KIND: Kind = Kind::Node;
    const NAMESPACED: bool = false;
    fn project(&self) -> Result<ClusterObject, ProjectionError> {
        project::node(self).map(ClusterObject::from)
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

/// A failed list or watch, with the delay before the watcher tries again.
#[derive(Debug)]
struct WatchFailure {
    error: watcher::Error,
    retry_in: Duration,
}

/// One item of the merged event stream: which kind, and its watcher event or failure.
type KindEvent = (Kind, Result<Event<Projected>, WatchFailure>);

/// The retry delays of one watch: exponential from [`RETRY_INITIAL`], doubling to
/// [`RETRY_MAX`], each scaled by a random factor in [0.5, 1) ("equal jitter") so nodes that lost
/// the API server together do not retry in lockstep; starts over after [`RETRY_RESET_AFTER`]
/// without a failure. Pure: the caller passes the time and the random number.
#[derive(Debug, Clone, Default)]
pub(crate) struct RetryBackoff {
    /// The undithered delay of the last failure, and when it happened.
    last: Option<(Duration, Instant)>,
}

impl RetryBackoff {
    /// The delay before retrying after a failure at `now`; `unit` is uniform in [0, 1).
    pub(crate) fn next_delay(&mut self, now: Instant, unit: f64) -> Duration {
        let nominal = match self.last {
            Some((previous, at)) if now.saturating_duration_since(at) < RETRY_RESET_AFTER => {
                (previous * 2).min(RETRY_MAX)
            }
            _ => RETRY_INITIAL,
        };
        self.last = Some((nominal, now));
        nominal.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

/// Shared between the watches of one source and its readiness probe: how many watches are
/// waiting to retry, and a counter bumped each time the API server answers again after the
/// probe saw it down (which wakes every waiting watch).
#[derive(Clone)]
pub(crate) struct Recovery {
    waiting: Arc<tokio::sync::watch::Sender<usize>>,
    back: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Counts one waiting watch while alive.
struct Waiting(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Recovery {
    pub fn new() -> Self {
        Self {
            waiting: Arc::new(tokio::sync::watch::channel(0).0),
            back: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Waits `delay`, or less if the probe sees the API server answer again meanwhile.
    /// Returns whether the probe cut the wait short.
    pub(crate) async fn wait_to_retry(&self, delay: Duration) -> bool {
        let mut back = self.back.subscribe();
        back.borrow_and_update();
        self.waiting.send_modify(|n| *n += 1);
        let _waiting = Waiting(self.waiting.clone());
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            changed = back.changed() => changed.is_ok(),
        }
    }

    /// Probes with `probe` (true: the API server answers) while any watch waits to retry,
    /// every [`PROBE_PERIOD`] ± 25 %; when a probe succeeds after one failed, wakes the waiting
    /// watches. A probe that succeeds without a failure before it wakes nobody: the API server
    /// answered all along, so the watch failure has another cause and the backoff stands.
    /// Runs until the task is dropped.
    pub(crate) async fn probe_while_waiting<F, Fut>(&self, mut probe: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut waiting = self.waiting.subscribe();
        let mut down = false;
        loop {
            if waiting.wait_for(|n| *n > 0).await.is_err() {
                return;
            }
            let jitter = 0.75 + 0.5 * fastrand::f64();
            tokio::time::sleep(PROBE_PERIOD.mul_f64(jitter)).await;
            if *waiting.borrow() == 0 {
                // Every watch retried on its own; the next outage starts afresh.
                down = false;
                continue;
            }
            if probe().await {
                if down {
                    tracing::info!("the API server answers again; retrying the watches now");
                    self.back.send_modify(|n| *n += 1);
                }
                down = false;
            } else {
                down = true;
            }
        }
    }
}

/// Whether the API server answers: `GET /readyz` gets an HTTP reply that is neither a server
/// error (5xx: not ready yet) nor 429 (overloaded) within 2 s. Any other status (even 401/403/404
/// from a server that hides `/readyz`) means it is up and serving requests.
async fn api_answers(client: &::kube::Client) -> bool {
    let request = match hyper::Request::get("/readyz").body(::kube::client::Body::from(Vec::new()))
    {
        Ok(r) => r,
        Err(_) => return false,
    };
    match tokio::time::timeout(Duration::from_secs(2), client.send(request)).await {
        Ok(Ok(response)) => {
            let status = response.status();
            !status.is_server_error() && status != hyper::StatusCode::TOO_MANY_REQUESTS
        }
        _ => false,
    }
}

/// The watcher stream of `K`, retried after each failure with a [`RetryBackoff`] delay that
/// `recovery` may cut short.
fn kind_events<K: WatchedKind>(
    client: ::kube::Client,
    config: watcher::Config,
    recovery: Recovery,
) -> BoxStream<'static, KindEvent> {
    let stream = ::kube::runtime::watcher(Api::<K>::all(client), config)
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .boxed();
    let state = (stream, RetryBackoff::default(), None::<Duration>);
    futures::stream::unfold(state, move |(mut stream, mut backoff, pending)| {
        let recovery = recovery.clone();
        async move {
            if let Some(delay) = pending
                && recovery.wait_to_retry(delay).await
            {
                tracing::debug!(kind = %K::KIND, "retrying early: the API server is back");
            }
            let item = stream.next().await?;
            let (item, pending) = match item {
                Ok(event) => (Ok(project_event::<K>(event)), None),
                Err(error) => {
                    let retry_in = backoff.next_delay(Instant::now(), fastrand::f64());
                    (Err(WatchFailure { error, retry_in }), Some(retry_in))
                }
            };
            Some(((K::KIND, item), (stream, backoff, pending)))
        }
    })
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
    /// Kinds in the middle of a relist, with the objects listed so far (the projected `Arc`s,
    /// which the cache then stores as they are, as kube-rs's reflector buffers `Arc<K>`).
    buffers: HashMap<Kind, Vec<ClusterObject>>,
    /// Invalid objects seen during the relist in progress, per kind.
    invalid_in_relist: HashMap<Kind, BTreeMap<ObjectKey, String>>,
    /// Invalid objects currently reported.
    invalid: BTreeMap<(Kind, ObjectKey), String>,
    /// The last watch error of each kind and when it happened, until the kind delivers an
    /// event again or no error has followed for [`WATCH_ERROR_TTL`].
    watch_errors: BTreeMap<Kind, (String, Option<Duration>, Instant)>,
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
                        // Keep the last good version through the relist: the stored `Arc`,
                        // found by key.
                        if let Some(previous) = writer.snapshot().object(kind, &invalid.key) {
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
    #[cfg(test)]
    pub(crate) fn watch_failed(&mut self, kind: Kind, error: &str, now: Instant) {
        self.record_watch_failure(kind, error, None, now);
    }

    /// Like [`watch_failed`](Self::watch_failed), knowing when the next try is due.
    fn record_watch_failure(
        &mut self,
        kind: Kind,
        error: &str,
        retry_in: Option<Duration>,
        now: Instant,
    ) {
        let retry = retry_text(retry_in);
        tracing::warn!(%kind, %error, "watch failed; {retry}, serving the last state");
        self.watch_errors
            .insert(kind, (error.to_string(), retry_in, now));
        self.problems_version += 1;
    }

    /// Forgets watch errors older than [`WATCH_ERROR_TTL`] at `now`: the watcher retries at
    /// least that often while failing, so a quiet kind has reconnected (a resumed watch emits
    /// no event until something changes). Returns whether anything was forgotten.
    pub(crate) fn expire_watch_errors(&mut self, now: Instant) -> bool {
        let before = self.watch_errors.len();
        self.watch_errors
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < WATCH_ERROR_TTL);
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
            .map(|(kind, (error, retry_in, _))| SourceProblem {
                location: format!("watch {}", kind_resource(*kind)),
                reason: format!(
                    "{error} ({}; serving the last state)",
                    retry_text(*retry_in)
                ),
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
    pub(crate) fn problems_version(&self) -> u64 {
        self.problems_version
    }

    /// Events applied so far.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Completed (re)lists so far.
    pub(crate) fn resyncs(&self) -> u64 {
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

/// `retrying in 2.1 s`, or `retrying` when the delay is not known.
fn retry_text(retry_in: Option<Duration>) -> String {
    match retry_in {
        Some(d) => format!("retrying in {:.1} s", d.as_secs_f64()),
        None => "retrying".to_string(),
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

/// Watches `kinds` through `client` and applies every event to `writer` until cancelled.
///
/// Never returns while at least one kind is watched: errors are reported in `status` and
/// retried with a [`RetryBackoff`] cut short by the readiness probe (see the module docs), and
/// the cache keeps its last state meanwhile.
pub async fn run(
    client: ::kube::Client,
    kinds: Vec<Kind>,
    writer: CacheWriter,
    status: StatusHandle,
) {
    run_for_node(client, kinds, writer, status, None).await
}

/// The field selector that narrows the Node watch to the node named `node`.
pub(crate) fn node_field_selector(node: &str) -> String {
    format!("metadata.name={node}")
}

/// The field selector that narrows the Pod watch to the pods scheduled on the node `node`.
pub(crate) fn node_pods_field_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// What part of the cluster the node-scoped kinds are watched for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchScope {
    /// This node's name: Nodes are watched with `metadata.name=<node>`.
    pub node: Option<String>,
    /// With `node` set, Pods are watched with `spec.nodeName=<node>` (only this node's pods,
    /// for node-local autopath) instead of cluster-wide.
    pub pods_on_node: bool,
}

/// Like [`run`]; with `node` set, Nodes are watched with the field selector
/// `metadata.name=<node>` (only this node's object: its zone label for topology hints).
pub async fn run_for_node(
    client: ::kube::Client,
    kinds: Vec<Kind>,
    writer: CacheWriter,
    status: StatusHandle,
    node: Option<String>,
) {
    run_scoped(
        client,
        kinds,
        writer,
        status,
        WatchScope {
            node,
            pods_on_node: false,
        },
    )
    .await
}

/// Like [`run_for_node`], with the Pod watch narrowed to this node's pods when `scope` says so.
pub async fn run_scoped(
    client: ::kube::Client,
    kinds: Vec<Kind>,
    mut writer: CacheWriter,
    status: StatusHandle,
    scope: WatchScope,
) {
    let node = scope.node;
    let pods_on_node = scope.pods_on_node;
    let recovery = Recovery::new();
    let mut seen = BTreeSet::new();
    let all = watcher::Config::default;
    let streams: Vec<BoxStream<'static, KindEvent>> = kinds
        .iter()
        .filter(|k| seen.insert(**k))
        .map(|kind| {
            let (c, r) = (client.clone(), recovery.clone());
            match kind {
                Kind::Service => kind_events::<core_v1::Service>(c, all(), r),
                Kind::EndpointSlice => kind_events::<discovery_v1::EndpointSlice>(c, all(), r),
                Kind::Pod => kind_events::<core_v1::Pod>(
                    c,
                    match &node {
                        Some(name) if pods_on_node => all().fields(&node_pods_field_selector(name)),
                        _ => all(),
                    },
                    r,
                ),
                Kind::Node => kind_events::<core_v1::Node>(
                    c,
                    match &node {
                        Some(name) => all().fields(&node_field_selector(name)),
                        None => all(),
                    },
                    r,
                ),
            }
        })
        .collect();
    let probe = {
        let (client, recovery) = (client.clone(), recovery.clone());
        AbortOnDrop(tokio::spawn(async move {
            recovery
                .probe_while_waiting(|| {
                    let client = client.clone();
                    async move { api_answers(&client).await }
                })
                .await
        }))
    };
    tracing::info!(
        ?kinds,
        node = node.as_deref(),
        pods_on_node,
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
                    Err(failure) => applier.record_watch_failure(
                        kind,
                        &failure.error.to_string(),
                        Some(failure.retry_in),
                        Instant::now(),
                    ),
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
    drop(probe);
}

/// Aborts a task when dropped (the source's task is aborted on drop, and its probe with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
            Some("EndpointSlice") => project_object(
                &serde_json::from_value::<discovery_v1::EndpointSlice>(value).unwrap(),
            ),
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

    fn slice(name: &str, ip: &str) -> serde_json::Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "a"}},
            "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": [{"addresses": [ip]}]
        })
    }

    #[test]
    fn invalid_slice_in_a_relist_keeps_the_stored_version_itself() {
        let (mut w, r) = new_cache([Kind::EndpointSlice]);
        let mut a = ApiEventApplier::new();
        let slices = |n: usize, bad: usize| {
            (0..n)
                .map(|i| {
                    let ip = if i == bad {
                        "not-an-ip".to_string()
                    } else {
                        format!("10.0.0.{i}")
                    };
                    slice(&format!("s{i}"), &ip)
                })
                .collect::<Vec<_>>()
        };
        list(&mut a, &mut w, Kind::EndpointSlice, slices(50, usize::MAX));
        let before = r.snapshot();
        let good = before.endpoint_slice(&key("s7")).unwrap().clone();

        // The same list with s7 now invalid: s7's stored `Arc` itself is buffered (found by
        // key, not copied), so nothing changes and no generation is published.
        a.apply(Kind::EndpointSlice, Event::Init, &mut w);
        let shared = Arc::strong_count(&good);
        for (i, s) in slices(50, 7).into_iter().enumerate() {
            a.apply(Kind::EndpointSlice, Event::InitApply(projected(s)), &mut w);
            if i == 7 {
                assert_eq!(Arc::strong_count(&good), shared + 1, "the buffer shares it");
            }
        }
        a.apply(Kind::EndpointSlice, Event::InitDone, &mut w);
        let after = r.snapshot();
        assert_eq!(after.generation(), before.generation(), "nothing changed");
        assert!(Arc::ptr_eq(
            after.endpoint_slice(&key("s7")).unwrap(),
            &good
        ));
        assert_eq!(after.endpoint_slice_count(), 50);
        let problems = a.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].location, "EndpointSlice default/s7");
        assert!(problems[0].reason.contains("not-an-ip"), "{problems:?}");

        // A slice that was never good stays out, and is reported too.
        list(&mut a, &mut w, Kind::EndpointSlice, {
            let mut l = slices(50, 7);
            l.push(slice("new", "bad"));
            l
        });
        assert!(r.snapshot().endpoint_slice(&key("new")).is_none());
        assert_eq!(a.problems().len(), 2);
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

    #[test]
    fn retry_backoff_doubles_to_its_cap_with_jitter_and_resets_after_quiet() {
        let t0 = Instant::now();
        let mut b = RetryBackoff::default();
        // With the largest jitter factor the delays are the nominal ones.
        let top: Vec<f64> = (0..7)
            .map(|i| b.next_delay(t0 + Duration::from_secs(i), 1.0).as_secs_f64())
            .collect();
        assert_eq!(top, [0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]);
        // The smallest factor halves them; jitter never goes past the cap.
        let mut b = RetryBackoff::default();
        assert_eq!(b.next_delay(t0, 0.0), Duration::from_millis(400));
        for _ in 0..10 {
            let d = b.next_delay(t0, fastrand::f64());
            assert!(d >= RETRY_INITIAL / 2 && d <= RETRY_MAX, "{d:?}");
        }
        assert!(b.next_delay(t0, 0.0) == RETRY_MAX / 2, "at the cap");
        // A failure long after the last one starts over.
        let later = t0 + RETRY_RESET_AFTER;
        assert_eq!(b.next_delay(later, 1.0), RETRY_INITIAL);
        assert_eq!(b.next_delay(later, 1.0), RETRY_INITIAL * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_cuts_the_wait_short_only_when_the_api_comes_back() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let recovery = Recovery::new();
        let up = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(AtomicUsize::new(0));
        let prober = {
            let (recovery, up, probes) = (recovery.clone(), up.clone(), probes.clone());
            tokio::spawn(async move {
                recovery
                    .probe_while_waiting(|| {
                        probes.fetch_add(1, Ordering::SeqCst);
                        let up = up.load(Ordering::SeqCst);
                        async move { up }
                    })
                    .await
            })
        };
        // Nobody waits: no probe.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            probes.load(Ordering::SeqCst),
            0,
            "probes only while a watch waits"
        );

        // A watch waits 10 s; the API comes back after 5 s: the wait ends within one probe
        // period (± 25 %) of that.
        let started = tokio::time::Instant::now();
        let waiter = {
            let recovery = recovery.clone();
            tokio::spawn(async move { recovery.wait_to_retry(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        up.store(true, Ordering::SeqCst);
        assert!(waiter.await.unwrap(), "cut short by the probe");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(5)
                && waited <= Duration::from_secs(5) + PROBE_PERIOD * 5 / 4,
            "{waited:?}"
        );
        assert!(probes.load(Ordering::SeqCst) >= 2, "probed down, then up");

        // The API answers all along (the watch fails for another reason): the backoff stands.
        let started = tokio::time::Instant::now();
        let cut = recovery.wait_to_retry(Duration::from_secs(10)).await;
        assert!(!cut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        prober.abort();
    }

    #[test]
    fn watch_failures_report_when_the_next_try_is_due() {
        let (mut w, _r) = new_cache([Kind::Service]);
        let mut a = ApiEventApplier::new();
        list(&mut a, &mut w, Kind::Service, vec![]);
        a.record_watch_failure(
            Kind::Service,
            "connection refused",
            Some(Duration::from_millis(6400)),
            Instant::now(),
        );
        assert_eq!(
            a.problems()[0].reason,
            "connection refused (retrying in 6.4 s; serving the last state)"
        );
    }
}
