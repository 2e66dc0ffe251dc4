//! The one HTTP server of the process: a route table served on a listener with hyper.
//!
//! Every HTTP endpoint — CoreDNS's `/health`, `/ready` and `/metrics`, kube-proxy's `/healthz`,
//! `/livez` and `/metrics`, the agent's admin endpoint and the per-Service health-check node
//! ports — is a [`Routes`] table handed to [`serve`]. Each connection is HTTP/1.1 with a header
//! read timeout and belongs to the serving task: ending (or aborting) the task closes them all.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A client that sends no complete request header within this long is disconnected.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer: status, optional content type, extra headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'static str>,
    /// Further headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A reply with `status`, `content_type` and `body`.
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: Some(content_type),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A `text/plain` reply.
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self::new(status, "text/plain", body)
    }

    /// A reply without a `Content-Type` header.
    pub fn bare(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: None,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The OpenMetrics text of a `/metrics` endpoint.
    pub fn openmetrics(body: String) -> Self {
        Self::new(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        )
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<HeaderName>, value: HeaderValue) -> Self {
        self.headers.push((name.into(), value));
        self
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(Bytes::from(self.body)));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        if let Some(ct) = self.content_type {
            headers.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        resp
    }
}

/// Answers one request path.
pub type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// Answers paths no route matches: `Some` reply, or `None` for the table's 404.
pub type Fallback = Arc<dyn Fn(&str) -> Option<Reply> + Send + Sync>;

/// A route table: exact paths, then a fallback, then a 404.
#[derive(Clone)]
pub struct Routes {
    exact: Vec<(String, Handler)>,
    fallback: Option<Fallback>,
    not_found: Arc<dyn Fn(&str) -> Reply + Send + Sync>,
    only_get: bool,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("paths", &self.paths())
            .field("fallback", &self.fallback.is_some())
            .field("only_get", &self.only_get)
            .finish()
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    /// An empty table: every path is a `404 not found`.
    pub fn new() -> Self {
        Self {
            exact: Vec::new(),
            fallback: None,
            not_found: Arc::new(|_| Reply::text(StatusCode::NOT_FOUND, "not found\n")),
            only_get: false,
        }
    }

    /// Answers `path` with `handler` (a later route for the same path replaces it).
    pub fn route(
        mut self,
        path: impl Into<String>,
        handler: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let path = path.into();
        self.exact.retain(|(p, _)| *p != path);
        self.exact.push((path, Arc::new(handler)));
        self
    }

    /// Adds every route of `other` (its fallback and 404 are ignored).
    pub fn merge(mut self, other: Routes) -> Self {
        for (path, handler) in other.exact {
            self.exact.retain(|(p, _)| *p != path);
            self.exact.push((path, handler));
        }
        self
    }

    /// Asks `fallback` about paths without a route before answering 404.
    pub fn fallback(
        mut self,
        fallback: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static,
    ) -> Self {
        self.fallback = Some(Arc::new(fallback));
        self
    }

    /// Answers every path with `handler` (a health-check port answers the same on any path).
    pub fn any(self, handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        self.fallback(move |path| Some(handler(path)))
    }

    /// Replaces the 404 reply.
    pub fn not_found(mut self, reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        self.not_found = Arc::new(reply);
        self
    }

    /// Answers methods other than GET and HEAD with `405 only GET`.
    pub fn only_get(mut self) -> Self {
        self.only_get = true;
        self
    }

    /// The paths with a route, in the order added.
    pub fn paths(&self) -> Vec<&str> {
        self.exact.iter().map(|(p, _)| p.as_str()).collect()
    }

    /// Whether the table has no route and no fallback.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.fallback.is_none()
    }

    /// The reply to `method path` (pure: what the server sends).
    pub fn answer(&self, method: &Method, path: &str) -> Reply {
        if self.only_get && method != Method::GET && method != Method::HEAD {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        if let Some((_, h)) = self.exact.iter().find(|(p, _)| p == path) {
            return h(path);
        }
        if let Some(reply) = self.fallback.as_ref().and_then(|f| f(path)) {
            return reply;
        }
        (self.not_found)(path)
    }
}

/// Serves `routes` on `listener` until `stop` completes (pass
/// [`std::future::pending`] to serve until the task is aborted). Open connections end with
/// the task.
pub async fn serve(listener: TcpListener, routes: Routes, stop: impl Future<Output = ()>) {
    serve_swappable(listener, Arc::new(ArcSwap::from_pointee(routes)), stop).await
}

/// [`serve`] with a route table that can be replaced while serving (each request reads the
/// table in force when it arrives).
async fn serve_swappable(
    listener: TcpListener,
    routes: Arc<ArcSwap<Routes>>,
    stop: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::debug!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let routes = routes.clone();
                connections.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let reply = routes.load().answer(req.method(), req.uri().path());
                        async move { Ok::<_, Infallible>(reply.into_response()) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await
                    {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stop => return,
        }
    }
}

/// Serves `routes` on `listener` in a task until it is aborted.
pub fn spawn(listener: TcpListener, routes: Routes) -> tokio::task::JoinHandle<()> {
    tokio::spawn(serve(listener, routes, std::future::pending()))
}

/// One HTTP listener a subsystem declares: what it is (for logs and errors), where, its
/// routes, and whether failing to bind it is an error (CoreDNS's endpoints) or only logged
/// (kube-proxy's, whose job is the kernel table).
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `health`, `ready`, `metrics`, `healthz`: names the endpoint in logs and errors.
    pub what: &'static str,
    /// The address to bind.
    pub addr: SocketAddr,
    /// What it answers.
    pub routes: Routes,
    /// A bind failure is an error (`true`) or logged and skipped (`false`).
    pub required: bool,
}

/// An endpoint that could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[error("binding the {what} endpoint on {addr}: {source}")]
pub struct BindError {
    /// Which endpoint.
    pub what: &'static str,
    /// The address asked for.
    pub addr: SocketAddr,
    /// The socket error.
    pub source: std::io::Error,
}

/// A bound endpoint: its task and its swappable routes.
struct Serving {
    what: &'static str,
    asked: SocketAddr,
    bound: SocketAddr,
    routes: Arc<ArcSwap<Routes>>,
    task: tokio::task::JoinHandle<()>,
}

/// A set of endpoints served by [`serve`], changed as a whole by [`EndpointSet::apply`]: an
/// endpoint whose name and address stay keeps its socket (only its routes are replaced), new
/// ones are bound, dropped ones closed. Dropping the set closes every listener.
#[derive(Default)]
pub struct EndpointSet {
    serving: Vec<Serving>,
}

impl std::fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.bound()).finish()
    }
}

impl EndpointSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves exactly `endpoints` from now on. Every new address is bound before anything
    /// changes: when a required one fails, the error is returned and the set stays as it was;
    /// an optional one that fails is logged and left out.
    pub async fn apply(&mut self, endpoints: &[Endpoint]) -> Result<(), BindError> {
        let same = |s: &Serving, e: &Endpoint| s.what == e.what && s.asked == e.addr;
        let mut fresh = Vec::new();
        for e in endpoints {
            if self.serving.iter().any(|s| same(s, e)) {
                continue;
            }
            match TcpListener::bind(e.addr).await {
                Ok(l) => fresh.push((e, l)),
                Err(source) if e.required => {
                    return Err(BindError {
                        what: e.what,
                        addr: e.addr,
                        source,
                    });
                }
                Err(error) => {
                    tracing::warn!(addr = %e.addr, %error, "cannot serve the {} endpoint", e.what)
                }
            }
        }
        let (kept, dropped): (Vec<Serving>, Vec<Serving>) = std::mem::take(&mut self.serving)
            .into_iter()
            .partition(|s| endpoints.iter().any(|e| same(s, e)));
        self.serving = kept;
        for s in dropped {
            // Closed (listener and connections dropped) before this returns.
            s.task.abort();
            let _ = s.task.await;
        }
        for s in &self.serving {
            if let Some(e) = endpoints.iter().find(|e| same(s, e)) {
                s.routes.store(Arc::new(e.routes.clone()));
            }
        }
        for (e, listener) in fresh {
            let bound = listener.local_addr().unwrap_or(e.addr);
            let routes = Arc::new(ArcSwap::from_pointee(e.routes.clone()));
            let task = tokio::spawn(serve_swappable(
                listener,
                routes.clone(),
                std::future::pending(),
            ));
            self.serving.push(Serving {
                what: e.what,
                asked: e.addr,
                bound,
                routes,
                task,
            });
        }
        Ok(())
    }

    /// The endpoints served and their bound addresses (the real port when `:0` was asked).
    pub fn bound(&self) -> Vec<(&'static str, SocketAddr)> {
        self.serving.iter().map(|s| (s.what, s.bound)).collect()
    }
}

impl Drop for EndpointSet {
    fn drop(&mut self) {
        for s in &self.serving {
            s.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_routes_then_fallback_then_not_found() {
        let routes = Routes::new()
            .route("/health", |_| Reply::text(StatusCode::OK, "OK"))
            .fallback(|p| {
                p.strip_prefix("/proxy/")
                    .map(|rest| Reply::text(StatusCode::OK, rest.to_string()))
            });
        let get = |p: &str| routes.answer(&Method::GET, p);
        assert_eq!(get("/health").body, "OK");
        assert_eq!(get("/proxy/plan").body, "plan");
        let missing = get("/nope");
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.body, "not found\n");
        // Without `only_get`, other methods are answered like GET.
        assert_eq!(
            routes.answer(&Method::POST, "/health").status,
            StatusCode::OK
        );
    }

    #[test]
    fn only_get_refuses_other_methods_and_not_found_is_replaceable() {
        let routes = Routes::new()
            .route("/a", |_| Reply::text(StatusCode::OK, "a"))
            .only_get()
            .not_found(|p| Reply::text(StatusCode::NOT_FOUND, format!("no {p}")));
        assert_eq!(
            routes.answer(&Method::POST, "/a").status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(routes.answer(&Method::HEAD, "/a").status, StatusCode::OK);
        assert_eq!(routes.answer(&Method::GET, "/b").body, "no /b");
    }

    #[test]
    fn merge_and_any() {
        let a = Routes::new().route("/x", |_| Reply::text(StatusCode::OK, "1"));
        let b = Routes::new()
            .route("/x", |_| Reply::text(StatusCode::OK, "2"))
            .route("/y", |_| Reply::text(StatusCode::OK, "y"));
        let m = a.merge(b);
        assert_eq!(m.paths(), vec!["/x", "/y"]);
        assert_eq!(m.answer(&Method::GET, "/x").body, "2");
        let any = Routes::new().any(|p| Reply::bare(StatusCode::OK, p.to_string()));
        assert_eq!(any.answer(&Method::GET, "/whatever").body, "/whatever");
        assert_eq!(any.answer(&Method::GET, "/whatever").content_type, None);
    }

    async fn get(addr: SocketAddr, path: &str) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    }

    fn endpoint(
        what: &'static str,
        addr: SocketAddr,
        body: &'static str,
        required: bool,
    ) -> Endpoint {
        Endpoint {
            what,
            addr,
            routes: Routes::new().route("/x", move |_| Reply::text(StatusCode::OK, body)),
            required,
        }
    }

    #[tokio::test]
    async fn an_endpoint_set_keeps_rebinds_and_closes_as_declared() {
        // A free port to move to, found by binding and releasing it.
        let free = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut set = EndpointSet::new();
        set.apply(&[endpoint("health", any, "one", true)])
            .await
            .unwrap();
        let [(what, first)] = set.bound()[..] else {
            panic!("{set:?}")
        };
        assert_eq!(what, "health");
        assert_ne!(first.port(), 0);
        assert!(get(first, "/x").await.unwrap().ends_with("one"));
        // Same name and address: the socket stays, the routes change.
        set.apply(&[endpoint("health", any, "two", true)])
            .await
            .unwrap();
        assert_eq!(set.bound(), vec![("health", first)]);
        assert!(get(first, "/x").await.unwrap().ends_with("two"));
        // A new address: bound, and the old one closed.
        set.apply(&[endpoint("health", free, "three", true)])
            .await
            .unwrap();
        assert_eq!(set.bound(), vec![("health", free)]);
        assert!(get(free, "/x").await.unwrap().ends_with("three"));
        tokio::task::yield_now().await;
        assert!(
            get(first, "/x").await.is_none(),
            "the old listener is closed"
        );
        // A required endpoint on a taken address: an error naming it, nothing changes.
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken_addr = taken.local_addr().unwrap();
        let err = set
            .apply(&[endpoint("ready", taken_addr, "no", true)])
            .await
            .unwrap_err();
        assert_eq!((err.what, err.addr), ("ready", taken_addr));
        assert!(
            err.to_string().starts_with("binding the ready endpoint on"),
            "{err}"
        );
        assert_eq!(set.bound(), vec![("health", free)]);
        // An optional one is left out and the rest applies.
        set.apply(&[endpoint("healthz", taken_addr, "no", false)])
            .await
            .unwrap();
        assert!(set.bound().is_empty());
        drop(set);
    }

    #[tokio::test]
    async fn serves_over_tcp_and_stops_when_asked() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = Routes::new().route("/ready", |_| {
            Reply::text(StatusCode::SERVICE_UNAVAILABLE, "not yet")
                .with_header(HeaderName::from_static("x-test"), HeaderValue::from(7u16))
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, routes, async {
            let _ = stop_rx.await;
        }));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.contains("content-type: text/plain"), "{out}");
        assert!(out.contains("x-test: 7"), "{out}");
        assert!(out.ends_with("not yet"), "{out}");
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("stops")
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
