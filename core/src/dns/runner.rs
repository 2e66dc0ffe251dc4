//! Running the DNS server: listeners, the HTTP endpoints, the zone updater and lameduck.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;

use super::cluster::ClusterPlugin;
use super::error::DnsError;
use super::handler::{Chain, Plugin};
use super::metrics::DnsMetrics;
use super::server::{DnsServer, ServerConfig};
use super::zone::ZoneOptions;
use crate::cache::CacheReader;
use crate::model::Kind;
use crate::runtime::http::{self, Reply, Routes};
use crate::runtime::signal::{Stopping, shutdown_signal, stop_after_lameduck};

/// Everything `svcnet-dns` (and the DNS part of `agentctl run`) can be told.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// The DNS listener.
    pub server: ServerConfig,
    /// The cluster zone (the `kubernetes` plugin's options).
    pub zone: ZoneOptions,
    /// `/health` listener (CoreDNS `health`, default `:8080`); `None` disables it.
    pub health: Option<SocketAddr>,
    /// `/ready` listener (CoreDNS `ready`, default `:8181`); `None` disables it.
    pub ready: Option<SocketAddr>,
    /// `/metrics` listener (CoreDNS `prometheus`, default `:9153`); `None` disables it.
    pub metrics: Option<SocketAddr>,
    /// How long to wait for the cache to sync before answering from what it has (default 5 s;
    /// until then, names in the cluster zone answer SERVFAIL).
    pub startup_timeout: Duration,
    /// After SIGTERM, keep answering this long while `/ready` reports 503 (default 5 s).
    pub lameduck: Duration,
}

impl Default for DnsOptions {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            zone: ZoneOptions::default(),
            health: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            ready: Some(SocketAddr::from(([0, 0, 0, 0], 8181))),
            metrics: Some(SocketAddr::from(([0, 0, 0, 0], 9153))),
            startup_timeout: Duration::from_secs(5),
            lameduck: Duration::from_secs(5),
        }
    }
}

impl DnsOptions {
    /// Checks values that cannot work (TTL range, zones).
    pub fn validate(&self) -> Result<(), DnsError> {
        if self.zone.ttl > 3600 {
            return Err(DnsError::InvalidOption {
                option: "ttl",
                reason: format!("{} is outside 0..=3600", self.zone.ttl),
            });
        }
        if self.zone.zones.is_empty() {
            return Err(DnsError::InvalidOption {
                option: "zones",
                reason: "at least one zone is needed".into(),
            });
        }
        for z in &self.zone.zones {
            if hickory_proto::rr::Name::from_ascii(z).is_err() {
                return Err(DnsError::InvalidOption {
                    option: "zones",
                    reason: format!("`{z}` is not a domain name"),
                });
            }
        }
        Ok(())
    }
}

/// The cache kinds the DNS zone needs with these options.
pub fn needed_kinds(zone: &ZoneOptions) -> Vec<Kind> {
    let mut kinds = vec![Kind::Service, Kind::EndpointSlice];
    if zone.pods == super::zone::PodMode::Verified {
        kinds.push(Kind::Pod);
    }
    kinds
}

/// Serves the cluster zone of `reader` until SIGTERM or SIGINT, then lameducks and returns.
pub async fn run(reader: CacheReader, options: DnsOptions) -> Result<(), DnsError> {
    run_until(reader, options, shutdown_signal()).await
}

/// Like [`run`], stopping (with lameduck) when `shutdown` completes.
pub async fn run_until(
    reader: CacheReader,
    options: DnsOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DnsError> {
    options.validate()?;
    let plugin = ClusterPlugin::new(options.zone.clone());
    let updater = plugin.spawn_updater(reader, options.startup_timeout);
    let chain = Chain::new(vec![plugin.clone() as Arc<dyn Plugin>]);
    let result = serve(chain, Some(plugin), &options, shutdown).await;
    updater.abort();
    result
}

/// Serves `chain` with the listeners and endpoints of `options` until `shutdown` completes,
/// then keeps answering for the lameduck period while `/ready` reports 503. `cluster`, when
/// given, has its zone rebuilds counted in the metrics. This is the entry point for a chain
/// built from a Corefile.
pub async fn serve(
    chain: Chain,
    cluster: Option<Arc<ClusterPlugin>>,
    options: &DnsOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DnsError> {
    let server = DnsServer::bind(options.server.clone())?;
    let local = server.local_addr();
    let metrics = DnsMetrics::new(&format!("dns://{local}"), ".");
    metrics.set_plugins(&chain.names());
    let serving = chain.clone();
    if let Some(c) = &cluster {
        c.set_metrics(metrics.clone());
    }
    let stopping = Stopping::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut bound: [String; 3] = ["off".into(), "off".into(), "off".into()];
    let endpoints = [
        (options.health, "health", health_routes(&metrics)),
        (
            options.ready,
            "ready",
            ready_routes(stopping.clone(), move || {
                let not_ready = chain.not_ready();
                (!not_ready.is_empty()).then(|| not_ready.join(", "))
            }),
        ),
        (options.metrics, "metrics", metrics_routes(&metrics, None)),
    ];
    for (i, (addr, what, routes)) in endpoints.into_iter().enumerate() {
        if let Some(addr) = addr {
            let listener = bind_http(what, addr).await?;
            bound[i] = listener.local_addr().map_or(addr, |a| a).to_string();
            tasks.spawn(http::serve(listener, routes, std::future::pending()));
        }
    }
    tracing::info!(
        listen = %local,
        health = %bound[0],
        ready = %bound[1],
        metrics = %bound[2],
        plugins = ?serving.names(),
        "DNS server listening"
    );
    tasks.spawn(server.serve(serving, metrics));

    stop_after_lameduck(
        shutdown,
        &stopping,
        options.lameduck,
        "shutting down: lameduck, still answering",
    )
    .await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Binds `addr` for the HTTP endpoint called `what` (for error messages).
pub(crate) async fn bind_http(
    what: &'static str,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, DnsError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DnsError::HttpBind { what, addr, source })
}

/// CoreDNS's `health` endpoint: `/health` answers `OK`, timed in the metrics.
pub(crate) fn health_routes(metrics: &Arc<DnsMetrics>) -> Routes {
    let m = metrics.clone();
    Routes::new().route("/health", move |_| {
        let started = Instant::now();
        let reply = Reply::text(StatusCode::OK, "OK");
        m.health_checked(started.elapsed(), true);
        reply
    })
}

/// CoreDNS's `ready` endpoint: `/ready` answers 503 while stopping or while `not_ready`
/// names what is not ready yet, else `OK`.
pub(crate) fn ready_routes(
    stopping: Stopping,
    not_ready: impl Fn() -> Option<String> + Send + Sync + 'static,
) -> Routes {
    Routes::new().route("/ready", move |_| {
        if stopping.is_set() {
            return Reply::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        }
        match not_ready() {
            None => Reply::text(StatusCode::OK, "OK"),
            Some(why) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, why),
        }
    })
}

/// CoreDNS's `prometheus` endpoint: `/metrics` with the DNS metrics, and those of `extra`
/// (the plugins' registry) appended.
pub(crate) fn metrics_routes(
    metrics: &Arc<DnsMetrics>,
    extra: Option<Arc<prometheus_client::registry::Registry>>,
) -> Routes {
    let m = metrics.clone();
    Routes::new().route("/metrics", move |_| {
        let mut text = m.encode();
        if let Some(registry) = &extra {
            if let Some(stripped) = text.strip_suffix("# EOF\n") {
                text.truncate(stripped.len());
            }
            let _ = prometheus_client::encoding::text::encode(&mut text, registry);
        }
        Reply::openmetrics(text)
    })
}
