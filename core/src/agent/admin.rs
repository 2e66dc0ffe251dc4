//! The agent's one admin endpoint: `/status` (JSON), `/health`, `/ready` and `/metrics` (the
//! agent's own metrics merged with every subsystem's).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use hyper::StatusCode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Subsystem;
use super::status::{AgentStatus, SourceReport};
use crate::cache::CacheReader;
use crate::runtime::http::{self, Reply, Routes};
use crate::source::StatusHandle;

/// Everything the admin endpoint reads.
pub struct AdminState {
    started: Instant,
    reader: CacheReader,
    source: StatusHandle,
    subsystems: Vec<Arc<dyn Subsystem>>,
    stopping: AtomicBool,
    initial_sync: OnceLock<f64>,
}

impl AdminState {
    /// State over a source's cache reader and status, with the running subsystems.
    pub fn new(
        reader: CacheReader,
        source: StatusHandle,
        subsystems: Vec<Arc<dyn Subsystem>>,
    ) -> Self {
        Self {
            started: Instant::now(),
            reader,
            source,
            subsystems,
            stopping: AtomicBool::new(false),
            initial_sync: OnceLock::new(),
        }
    }

    /// Records that the source has synced (the first call wins).
    pub fn mark_synced(&self) {
        let _ = self.initial_sync.set(self.started.elapsed().as_secs_f64());
    }

    /// Marks the agent as shutting down: `/ready` answers 503 from now on.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Why the agent is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Some("shutting down".into());
        }
        if !self.reader.snapshot().is_synced() {
            return Some("source not synced".into());
        }
        let waiting: Vec<&str> = self
            .subsystems
            .iter()
            .filter(|s| !s.status().ready)
            .map(|s| s.name())
            .collect();
        if waiting.is_empty() {
            None
        } else {
            Some(format!("not ready: {}", waiting.join(", ")))
        }
    }

    /// The current `/status` document.
    pub fn status(&self) -> AgentStatus {
        let snap = self.reader.snapshot();
        let src = self.source.get();
        AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            ready: self.not_ready_reason().is_none(),
            stopping: self.stopping.load(Ordering::SeqCst),
            source: SourceReport {
                description: src.description,
                synced: snap.is_synced(),
                initial_sync_seconds: self.initial_sync.get().copied(),
                resyncs: src.resyncs,
                events: src.events,
                problems: src
                    .problems
                    .iter()
                    .map(|p| format!("{}: {}", p.location, p.reason))
                    .collect(),
            },
            cache: snap.counts(),
            subsystems: self
                .subsystems
                .iter()
                .map(|s| (s.name().to_string(), s.status()))
                .collect(),
        }
    }

    /// The merged OpenMetrics text.
    pub fn metrics(&self) -> String {
        let status = self.status();
        let mut registry = Registry::with_prefix("svcnet");
        let gauge = |v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            g
        };
        registry.register(
            "cache_generation",
            "Generation of the shared cache snapshot",
            gauge(status.cache.generation as i64),
        );
        registry.register(
            "cache_services",
            "Services in the shared cache",
            gauge(status.cache.services as i64),
        );
        registry.register(
            "cache_endpoint_slices",
            "EndpointSlices in the shared cache",
            gauge(status.cache.endpoint_slices as i64),
        );
        registry.register(
            "cache_endpoints",
            "Endpoints over all EndpointSlices in the shared cache",
            gauge(status.cache.endpoints as i64),
        );
        registry.register(
            "source_synced",
            "1 once the source has delivered every initial list",
            gauge(i64::from(status.source.synced)),
        );
        registry.register(
            "source_problems",
            "Problems the source currently reports",
            gauge(status.source.problems.len() as i64),
        );
        registry.register(
            "source_events",
            "Events the source has applied to the cache",
            gauge(status.source.events as i64),
        );
        registry.register(
            "agent_ready",
            "1 when /ready answers 200",
            gauge(i64::from(status.ready)),
        );
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        let mut merged = strip_eof(&out).to_string();
        for s in &self.subsystems {
            let mut part = String::new();
            s.encode_metrics(&mut part);
            let part = strip_eof(&part);
            merged.push_str(part);
            if !part.is_empty() && !part.ends_with('\n') {
                merged.push('\n');
            }
        }
        merged.push_str("# EOF\n");
        merged
    }
}

fn strip_eof(text: &str) -> &str {
    text.strip_suffix("# EOF\n")
        .or_else(|| text.strip_suffix("# EOF"))
        .unwrap_or(text)
}

/// The admin endpoint's route table over `state`.
pub fn routes(state: Arc<AdminState>) -> Routes {
    let subsystem_routes = state
        .subsystems
        .iter()
        .fold(Routes::new(), |routes, s| routes.merge(s.routes()));
    let (st, ready, metrics) = (state.clone(), state.clone(), state);
    let ok = |_: &str| Reply::text(StatusCode::OK, "OK\n");
    let ready_reply = move |_: &str| match ready.not_ready_reason() {
        None => Reply::text(StatusCode::OK, "OK\n"),
        Some(why) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, why + "\n"),
    };
    let ready_reply = Arc::new(ready_reply);
    let readyz = ready_reply.clone();
    subsystem_routes
        .only_get()
        .route("/status", move |_| {
            let body = serde_json::to_string_pretty(&st.status()).unwrap_or_default();
            Reply::new(StatusCode::OK, "application/json", body + "\n")
        })
        .route("/health", ok)
        .route("/healthz", ok)
        .route("/livez", ok)
        .route("/ready", move |p| ready_reply(p))
        .route("/readyz", move |p| readyz(p))
        .route("/metrics", move |_| Reply::openmetrics(metrics.metrics()))
        .not_found(|other| {
            Reply::text(
                StatusCode::NOT_FOUND,
                format!("no such endpoint {other}; try /status, /health, /ready, /metrics\n"),
            )
        })
}

/// Binds the admin endpoint on `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the admin endpoint on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    http::serve(listener, routes(state), async move {
        let _ = shutdown.wait_for(|s| *s).await;
    })
    .await;
}
