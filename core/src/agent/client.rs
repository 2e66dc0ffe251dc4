//! HTTP client of a running agent's admin endpoint (`agentctl status`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

use super::status::AgentStatus;

/// Why the admin endpoint could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No connection.
    #[error("connecting to the agent at {addr}: {source}")]
    Connect {
        /// The admin address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("HTTP request to {addr}{path}: {reason}")]
    Http {
        /// The admin address.
        addr: SocketAddr,
        /// The path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// No answer in time.
    #[error("the agent at {addr} did not answer {path} within {timeout:?}")]
    Timeout {
        /// The admin address.
        addr: SocketAddr,
        /// The path.
        path: String,
        /// The limit.
        timeout: Duration,
    },
    /// The body is not an agent status.
    #[error("{addr}/status did not return an agent status: {reason}")]
    BadStatus {
        /// The admin address.
        addr: SocketAddr,
        /// What is wrong.
        reason: String,
    },
}

/// GETs `path` from the agent at `addr`; returns the HTTP status code and body.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), ClientError> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let http = |reason: String| ClientError::Http {
            addr,
            path: path.to_string(),
            reason,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        let code = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| http(e.to_string()))?
            .to_bytes();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ClientError::Timeout {
            addr,
            path: path.to_string(),
            timeout,
        })?
}

/// Fetches and decodes `/status`.
pub async fn fetch_status(addr: SocketAddr, timeout: Duration) -> Result<AgentStatus, ClientError> {
    let (code, body) = get(addr, "/status", timeout).await?;
    if code != 200 {
        return Err(ClientError::BadStatus {
            addr,
            reason: format!("HTTP {code}: {}", body.trim()),
        });
    }
    serde_json::from_str(&body).map_err(|e| ClientError::BadStatus {
        addr,
        reason: e.to_string(),
    })
}
