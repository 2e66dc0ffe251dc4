//! The small HTTP endpoints next to the DNS server: `/health` (CoreDNS `health`), `/ready`
//! (`ready`) and `/metrics` (`prometheus`), each on its own listener like CoreDNS's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::error::DnsError;

/// What an endpoint answers: status, content type, body.
pub type Reply = (StatusCode, &'static str, String);

/// Answers a request path (`/health`), or `None` for 404.
pub type Route = Arc<dyn Fn(&str) -> Option<Reply> + Send + Sync>;

/// Binds `addr` for the endpoint called `what` (for error messages).
pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, DnsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DnsError::HttpBind { what, addr, source })
}

/// Serves `route` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, route: Route) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let route = route.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let route = route.clone();
                async move {
                    let (status, content_type, body) = route(req.uri().path()).unwrap_or((
                        StatusCode::NOT_FOUND,
                        "text/plain",
                        "not found\n".into(),
                    ));
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
                        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
