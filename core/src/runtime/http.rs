//! The one HTTP server of the process: a route table served on a listener with hyper.
//!
//! Every HTTP endpoint — CoreDNS's `/health`, `/ready` and `/metrics`, kube-proxy's `/healthz`,
//! `/livez` and `/metrics`, the agent's admin endpoint and the per-Service health-check node
//! ports — is a [`Routes`] table handed to [`serve`]. Each connection is HTTP/1.1 with a header
//! read timeout and belongs to the serving task: ending (or aborting) the task closes them all.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
    let routes = Arc::new(routes);
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
                        let reply = routes.answer(req.method(), req.uri().path());
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
