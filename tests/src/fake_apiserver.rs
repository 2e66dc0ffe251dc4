//! A fake Kubernetes API server. **This is a TEST DOUBLE**, used only by the end-to-end tests of
//! the Kubernetes source; svcnet's production path talks to a real API server through kube-rs
//! unchanged.
//!
//! It speaks real HTTP/1.1 on `127.0.0.1` and implements the parts of the list/watch protocol
//! a kube-runtime watcher uses, with the real server's semantics:
//!
//! - cluster-wide lists of `/api/v1/services`, `/api/v1/pods`, `/api/v1/nodes` and
//!   `/apis/discovery.k8s.io/v1/endpointslices`, with the list's `metadata.resourceVersion`
//!   and pagination: `limit` plus a `continue` token that serves the rest of the list as it was
//!   when the first page was made (a server may return fewer items than `limit`; the test can
//!   force that with [`FakeApiServer::set_max_page_size`]);
//! - watches (`?watch=true&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=N`) as a
//!   chunked stream of JSON lines, `ADDED`/`MODIFIED`/`DELETED` replayed from the history after
//!   `RV` and then live, `BOOKMARK` events on request; `sendInitialEvents=true` (streaming lists)
//!   is honoured with the `k8s.io/initial-events-end` bookmark;
//! - one global, monotonically increasing resourceVersion (like etcd's revision), a history
//!   that [`FakeApiServer::compact`] forgets, after which a watch from an older version gets an
//!   `ERROR` event carrying a `Status` with code 410, reason `Expired` (and an expired
//!   `continue` token gets HTTP 410), as the real server does;
//! - [`FakeApiServer::cut_connections`] drops every open TCP connection (watches break
//!   mid-stream), [`FakeApiServer::stop`] / [`FakeApiServer::restart`] take the port away and
//!   back;
//! - `fieldSelector=metadata.name=NAME` and `fieldSelector=spec.nodeName=NODE` (the field
//!   selectors svcnet uses) narrow lists and watches;
//! - `GET /readyz` answers `ok` like the real server's readiness endpoint;
//!   [`FakeApiServer::set_starting`] makes the server act as one still starting: `/readyz` 500
//!   and every list/watch 503 `ServiceUnavailable`;
//! - list responses larger than 128 KiB are gzip-compressed (level 1, `Content-Encoding: gzip`)
//!   when the request's `Accept-Encoding` allows gzip, as kube-apiserver does by default
//!   (`APIResponseCompression`, on since 1.16, level 1 since 1.26); watch streams and small
//!   responses are not;
//! - every request is recorded ([`FakeApiServer::requests`]) so tests can see what the client
//!   asked for.
//!
//! Objects are stored as JSON; the test mutates them through [`FakeApiServer::apply`] and
//! [`FakeApiServer::delete`]. Every stored object gets `managedFields` like a real server's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::{AbortHandle, JoinHandle};

/// One API resource the fake serves.
#[derive(Debug)]
struct ResourceType {
    /// URL path of the cluster-wide collection.
    path: &'static str,
    /// `kind` of one object.
    kind: &'static str,
    /// `apiVersion` of objects and lists.
    api_version: &'static str,
    /// Whether objects live in a namespace.
    namespaced: bool,
}

const RESOURCES: [ResourceType; 4] = [
    ResourceType {
        path: "/api/v1/services",
        kind: "Service",
        api_version: "v1",
        namespaced: true,
    },
    ResourceType {
        path: "/apis/discovery.k8s.io/v1/endpointslices",
        kind: "EndpointSlice",
        api_version: "discovery.k8s.io/v1",
        namespaced: true,
    },
    ResourceType {
        path: "/api/v1/pods",
        kind: "Pod",
        api_version: "v1",
        namespaced: true,
    },
    ResourceType {
        path: "/api/v1/nodes",
        kind: "Node",
        api_version: "v1",
        namespaced: false,
    },
];

fn resource_by_kind(kind: &str) -> &'static ResourceType {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve kind {kind:?}"))
}

/// A request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// Whether the request's `Accept-Encoding` allows gzip.
    pub accepts_gzip: bool,
}

impl RecordedRequest {
    /// Whether this is a watch (`watch=true`).
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }

    /// The query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

impl std::fmt::Display for RecordedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        let mut sep = '?';
        for (k, v) in &self.query {
            write!(f, "{sep}{k}={v}")?;
            sep = '&';
        }
        Ok(())
    }
}

/// One entry of the change history, as watches see it.
#[derive(Debug)]
struct HistoryEvent {
    revision: u64,
    resource: &'static str,
    event_type: &'static str,
    object: Value,
}

/// What live watches are told.
#[derive(Debug, Clone)]
enum Broadcast {
    Event(Arc<HistoryEvent>),
    /// A bookmark at a version, for the watches of one resource path or all of them.
    Bookmark(Option<&'static str>, u64),
}

/// A paginated list in progress: the full result as of `revision`.
struct Pager {
    revision: u64,
    items: Arc<Vec<Value>>,
}

#[derive(Default)]
struct State {
    revision: u64,
    /// Objects per resource path, ordered by (namespace, name) like etcd keys.
    objects: HashMap<&'static str, BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<HistoryEvent>>,
    /// Watches from a resourceVersion below this get 410 Expired.
    compacted: u64,
    pagers: HashMap<u64, Pager>,
    next_pager: u64,
    max_page_size: Option<usize>,
    expire_next_continue: bool,
    /// Answering, but not ready (see [`FakeApiServer::set_starting`]).
    starting: bool,
    requests: Vec<RecordedRequest>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Broadcast>,
    connections: Mutex<HashMap<u64, AbortHandle>>,
    next_connection: AtomicU64,
    open_watches: Arc<AtomicUsize>,
    /// List responses sent gzip-compressed.
    compressed_responses: AtomicUsize,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake API server on `127.0.0.1` (or the address given to [`start_on`](Self::start_on));
/// see the [module docs](self). Stops on drop.
pub struct FakeApiServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

impl FakeApiServer {
    /// Starts a fake on a free loopback port, with no objects.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// Starts a fake on a free port of `ip`, with no objects: another address than loopback
    /// lets a user-mode-linux guest reach it over a host tap link (the IPVS benchmark's API
    /// start, so that the server does not share the guest's one CPU with the proxy).
    pub async fn start_on(ip: std::net::IpAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            events,
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            open_watches: Arc::new(AtomicUsize::new(0)),
            compressed_responses: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(Self {
            addr,
            inner,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// `http://127.0.0.1:PORT` (the address it listens on).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server (plain HTTP, no authentication).
    pub fn client(&self) -> kube::Client {
        let url = self.url().parse().expect("a valid URL");
        kube::Client::try_from(kube::Config::new(url)).expect("a kube client")
    }

    /// A kubeconfig file's content pointing at this server.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// Creates or replaces an object (its `kind` picks the resource; a namespaced object
    /// without namespace goes to `default`). Returns its new resourceVersion.
    pub fn apply(&self, mut object: Value) -> u64 {
        let resource = resource_by_kind(object["kind"].as_str().unwrap_or(""));
        let mut state = self.inner.state();
        state.revision += 1;
        let revision = state.revision;
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let namespace = if resource.namespaced {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            object["metadata"]["namespace"] = json!(ns);
            ns
        } else {
            String::new()
        };
        object["apiVersion"] = json!(resource.api_version);
        let objects = state.objects.entry(resource.path).or_default();
        let key = (namespace, name);
        let previous = objects.get(&key);
        let uid = previous
            .and_then(|p| p["metadata"]["uid"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("00000000-0000-0000-0000-{revision:012}"));
        let event_type = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(revision.to_string());
        meta["uid"] = json!(uid);
        meta["managedFields"] = json!([{
            "manager": "fake-apiserver",
            "operation": "Update",
            "apiVersion": resource.api_version,
            "time": "2026-11-26T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {}, "f:spec": {}}
        }]);
        objects.insert(key, object.clone());
        record_event(&mut state, &self.inner.events, resource, event_type, object);
        revision
    }

    /// Deletes an object; returns the deletion's resourceVersion, or `None` if it did not exist.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> Option<u64> {
        let resource = resource_by_kind(kind);
        let namespace = if resource.namespaced { namespace } else { "" };
        let mut state = self.inner.state();
        let mut object = state
            .objects
            .get_mut(resource.path)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        state.revision += 1;
        let revision = state.revision;
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        record_event(&mut state, &self.inner.events, resource, "DELETED", object);
        Some(revision)
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.state().revision
    }

    /// Forgets the whole change history (like etcd compaction): watches from any earlier
    /// resourceVersion, and `continue` tokens of earlier lists, now get 410 Expired.
    pub fn compact(&self) {
        let mut state = self.inner.state();
        state.history.clear();
        state.compacted = state.revision;
    }

    /// Sends a BOOKMARK at the current resourceVersion to every open watch that allows them.
    pub fn bookmark(&self) {
        let state = self.inner.state();
        let _ = self
            .inner
            .events
            .send(Broadcast::Bookmark(None, state.revision));
    }

    /// Sends a BOOKMARK at the current resourceVersion to the open watches of `kind` only
    /// (a real server sends bookmarks to each watch on its own schedule).
    pub fn bookmark_kind(&self, kind: &str) {
        let resource = resource_by_kind(kind);
        let state = self.inner.state();
        let _ = self
            .inner
            .events
            .send(Broadcast::Bookmark(Some(resource.path), state.revision));
    }

    /// Caps every list page at `size` items whatever `limit` the client asked for (`None`:
    /// only `limit` counts).
    pub fn set_max_page_size(&self, size: Option<usize>) {
        self.inner.state().max_page_size = size;
    }

    /// Makes the next `continue` request fail with 410 Expired, as when etcd compacted the
    /// list's revision between two pages (the client must start the list over).
    pub fn expire_next_continue_token(&self) {
        self.inner.state().expire_next_continue = true;
    }

    /// While `true`, the server answers like one still starting up: `/readyz` fails with 500
    /// and lists and watches get 503 `ServiceUnavailable`.
    pub fn set_starting(&self, starting: bool) {
        self.inner.state().starting = starting;
    }

    /// Drops every open TCP connection at once, watches included, without a clean end.
    pub fn cut_connections(&self) {
        let connections: Vec<AbortHandle> = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for connection in connections {
            connection.abort();
        }
    }

    /// Takes the server down: the port stops accepting and every connection is dropped.
    /// The objects and history are kept for [`restart`](Self::restart).
    pub async fn stop(&self) {
        let accept = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(accept) = accept {
            accept.abort();
            let _ = accept.await;
        }
        self.cut_connections();
    }

    /// Brings a [stopped](Self::stop) server back on the same port.
    pub async fn restart(&self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        let accept = tokio::spawn(accept_loop(listener, self.inner.clone()));
        if let Some(old) = self
            .accept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(accept)
        {
            old.abort();
        }
        Ok(())
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.state().requests.clone()
    }

    /// Watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.inner.open_watches.load(Ordering::SeqCst)
    }

    /// List responses sent gzip-compressed so far (larger than 128 KiB, to a client that
    /// accepts gzip).
    pub fn compressed_responses(&self) -> usize {
        self.inner.compressed_responses.load(Ordering::Relaxed)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() {
            accept.abort();
        }
        self.cut_connections();
    }
}

fn record_event(
    state: &mut State,
    events: &broadcast::Sender<Broadcast>,
    resource: &'static ResourceType,
    event_type: &'static str,
    object: Value,
) {
    let event = Arc::new(HistoryEvent {
        revision: state.revision,
        resource: resource.path,
        event_type,
        object,
    });
    state.history.push_back(event.clone());
    // Sent under the state lock, so a watch that subscribes under the lock sees no gap.
    let _ = events.send(Broadcast::Event(event));
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let id = inner.next_connection.fetch_add(1, Ordering::SeqCst);
        let conn_inner = inner.clone();
        let task = tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let inner = conn_inner.clone();
                async move { Ok::<_, Infallible>(handle(&inner, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut connections = inner.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|_, h| !h.is_finished());
        connections.insert(id, task.abort_handle());
    }
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    json_text(status, body.to_string())
}

/// A response carrying `json`, already serialised.
fn json_text(status: StatusCode, json: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json)).boxed_unsync())
        .expect("a valid response")
}

/// A `metav1.Status` failure as the API server writes it.
fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn failure(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(status, status_object(status.as_u16(), reason, message))
}

fn handle(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    let accepts_gzip = req
        .headers()
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts.next() == Some("gzip") && !parts.any(|p| p.replace(' ', "") == "q=0")
        });
    let recorded = RecordedRequest {
        method: req.method().to_string(),
        path: path.clone(),
        query,
        accepts_gzip,
    };
    let starting = {
        let mut state = inner.state();
        state.requests.push(recorded.clone());
        state.starting
    };
    if path == "/readyz" {
        return if starting {
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(
                    Full::new(Bytes::from(
                        "[-]etcd failed: not ready\nreadyz check failed\n",
                    ))
                    .boxed_unsync(),
                )
                .expect("a valid response")
        } else {
            Response::builder()
                .status(StatusCode::OK)
                .body(Full::new(Bytes::from("ok")).boxed_unsync())
                .expect("a valid response")
        };
    }
    if starting {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    }
    let Some(resource) = RESOURCES.iter().find(|r| r.path == path) else {
        return failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        );
    };
    if req.method() != Method::GET {
        return failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake API server only serves list and watch",
        );
    }
    if recorded.is_watch() {
        watch(inner, resource, &recorded)
    } else {
        list(inner, resource, &recorded)
    }
}

/// An object as it appears in a list: without `kind` and `apiVersion`, like the real server.
fn list_item(object: &Value) -> Value {
    let mut item = object.clone();
    if let Some(map) = item.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    item
}

/// The `fieldSelector` of a request (`metadata.name=NAME` or `spec.nodeName=NODE`); `None`:
/// no selector.
fn selected_name(req: &RecordedRequest) -> Option<String> {
    req.param("fieldSelector").map(str::to_owned)
}

/// Whether `object` passes the field selector `selector` (`metadata.name=NAME` or
/// `spec.nodeName=NODE`; any other selector panics: the fake does not know it).
fn selected(object: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let (field, value) = selector
        .split_once('=')
        .unwrap_or_else(|| panic!("field selector `{selector}` has no `=`"));
    let actual = match field {
        "metadata.name" => object["metadata"]["name"].as_str(),
        "spec.nodeName" => object["spec"]["nodeName"].as_str(),
        other => panic!("the fake API server knows no field selector on `{other}`"),
    };
    actual == Some(value)
}

fn list(inner: &Inner, resource: &'static ResourceType, req: &RecordedRequest) -> Response<Body> {
    let name = selected_name(req);
    let mut state = inner.state();
    let limit = req
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let page_size = match (limit, state.max_page_size) {
        (Some(l), Some(m)) => Some(l.min(m)),
        (l, m) => l.or(m),
    };
    let (pager_id, offset, revision, items) = match req.param("continue") {
        Some(token) => {
            let parsed = token
                .split_once('-')
                .and_then(|(id, off)| Some((id.parse::<u64>().ok()?, off.parse::<usize>().ok()?)));
            let Some((id, offset)) = parsed else {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid continue token {token:?}"),
                );
            };
            let forced_expiry = std::mem::take(&mut state.expire_next_continue);
            let Some(pager) = state.pagers.get(&id) else {
                return failure(StatusCode::GONE, "Expired", "unknown continue token");
            };
            if pager.revision < state.compacted || forced_expiry {
                return failure(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter.",
                );
            }
            (id, offset, pager.revision, pager.items.clone())
        }
        None => {
            let items: Vec<Value> = state
                .objects
                .get(resource.path)
                .map(|m| {
                    m.values()
                        .filter(|o| selected(o, name.as_deref()))
                        .map(list_item)
                        .collect()
                })
                .unwrap_or_default();
            let id = state.next_pager;
            state.next_pager += 1;
            (id, 0, state.revision, Arc::new(items))
        }
    };
    let end = page_size.map_or(items.len(), |p| (offset + p).min(items.len()));
    let page: Vec<Value> = items.get(offset..end).unwrap_or_default().to_vec();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if end < items.len() {
        state.pagers.insert(
            pager_id,
            Pager {
                revision,
                items: items.clone(),
            },
        );
        metadata["continue"] = json!(format!("{pager_id}-{end}"));
        metadata["remainingItemCount"] = json!(items.len() - end);
    } else {
        state.pagers.remove(&pager_id);
    }
    drop(state);
    let body = json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version,
        "metadata": metadata,
        "items": page,
    })
    .to_string();
    if req.accepts_gzip && body.len() > GZIP_THRESHOLD_BYTES {
        inner.compressed_responses.fetch_add(1, Ordering::Relaxed);
        return gzipped(StatusCode::OK, body.as_bytes());
    }
    json_text(StatusCode::OK, body)
}

/// kube-apiserver compresses get and list responses larger than this (`defaultGzipThresholdBytes`
/// in its response writers) when the client accepts gzip.
const GZIP_THRESHOLD_BYTES: usize = 128 * 1024;

/// A JSON response compressed as kube-apiserver does it: gzip at level 1, with
/// `Content-Encoding: gzip` and `Vary: Accept-Encoding`.
fn gzipped(status: StatusCode, json: &[u8]) -> Response<Body> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::new(1),
    );
    encoder.write_all(json).expect("gzip into memory");
    let compressed = encoder.finish().expect("gzip into memory");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("vary", "Accept-Encoding")
        .body(Full::new(Bytes::from(compressed)).boxed_unsync())
        .expect("a valid response")
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event_type, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark_line(resource: &ResourceType, revision: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": resource.kind, "apiVersion": resource.api_version, "metadata": metadata}),
    )
}

/// Counts an open watch for as long as its body lives.
struct WatchGuard(Arc<AtomicUsize>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct WatchStream {
    resource: &'static ResourceType,
    backlog: VecDeque<Bytes>,
    live: Option<broadcast::Receiver<Broadcast>>,
    bookmarks: bool,
    /// `fieldSelector` (`metadata.name=NAME` or `spec.nodeName=NODE`).
    name: Option<String>,
    deadline: tokio::time::Instant,
    _guard: WatchGuard,
}

fn watch(inner: &Inner, resource: &'static ResourceType, req: &RecordedRequest) -> Response<Body> {
    let state = inner.state();
    let bookmarks = req.param("allowWatchBookmarks") == Some("true");
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let initial_events = req.param("sendInitialEvents") == Some("true");
    let from = req.param("resourceVersion").unwrap_or("");
    let name = selected_name(req);
    let mut backlog = VecDeque::new();
    let mut live = None;
    let current = || {
        state
            .objects
            .get(resource.path)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|o| selected(o, name.as_deref()))
            .map(|o| event_line("ADDED", o))
    };
    if initial_events || from.is_empty() || from == "0" {
        // "Any" version: the current state as synthetic ADDED events, then live changes.
        backlog.extend(current());
        if initial_events && bookmarks {
            backlog.push_back(bookmark_line(resource, state.revision, true));
        }
        live = Some(inner.events.subscribe());
    } else {
        match from.parse::<u64>() {
            Ok(rv) if rv < state.compacted => {
                let status = status_object(
                    410,
                    "Expired",
                    &format!("too old resource version: {rv} ({})", state.compacted),
                );
                backlog.push_back(event_line("ERROR", &status));
            }
            Ok(rv) => {
                backlog.extend(
                    state
                        .history
                        .iter()
                        .filter(|e| e.revision > rv && e.resource == resource.path)
                        .filter(|e| selected(&e.object, name.as_deref()))
                        .map(|e| event_line(e.event_type, &e.object)),
                );
                live = Some(inner.events.subscribe());
            }
            Err(_) => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid resourceVersion {from:?}"),
                );
            }
        }
    }
    drop(state);
    inner.open_watches.fetch_add(1, Ordering::SeqCst);
    let stream = WatchStream {
        resource,
        backlog,
        live,
        bookmarks,
        name,
        deadline: tokio::time::Instant::now() + Duration::from_secs(timeout),
        _guard: WatchGuard(inner.open_watches.clone()),
    };
    let body = futures::stream::unfold(stream, |mut s| async move {
        loop {
            if let Some(line) = s.backlog.pop_front() {
                return Some((Ok::<_, Infallible>(Frame::data(line)), s));
            }
            let live = s.live.as_mut()?;
            let next = tokio::time::timeout_at(s.deadline, live.recv()).await;
            match next {
                // timeoutSeconds passed: end the stream cleanly, as the server does.
                Err(_) => return None,
                Ok(Ok(Broadcast::Event(e)))
                    if e.resource == s.resource.path && selected(&e.object, s.name.as_deref()) =>
                {
                    s.backlog.push_back(event_line(e.event_type, &e.object));
                }
                Ok(Ok(Broadcast::Bookmark(only, revision)))
                    if s.bookmarks && only.is_none_or(|p| p == s.resource.path) =>
                {
                    s.backlog
                        .push_back(bookmark_line(s.resource, revision, false));
                }
                Ok(Ok(_)) => {}
                // Too slow a reader, or the server is gone: end the watch.
                Ok(Err(_)) => return None,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(StreamBody::new(body.boxed()).boxed_unsync())
        .expect("a valid response")
}
