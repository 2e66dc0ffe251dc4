//! Running the DNS server: listeners, the HTTP endpoints, the zone updater and lameduck.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;

use super::cluster::ClusterPlugin;
use super::error::DnsError;
use super::handler::{Chain, Plugin};
use super::http;
use super::metrics::DnsMetrics;
use super::server::{DnsServer, ServerConfig};
use super::zone::ZoneOptions;
use crate::cache::CacheReader;
use crate::model::Kind;
use crate::source::{self, SourceConfig};

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

/// Starts the source (`--manifests`/`--kubeconfig`) and serves DNS from it until SIGTERM or
/// SIGINT (then lameduck).
pub async fn run_with_source(config: &SourceConfig, options: DnsOptions) -> Result<(), DnsError> {
    // One rustls provider for the process (the API client's TLS uses it).
    crate::tls::install_crypto_provider();
    options.validate()?;
    let source = source::start(config, &needed_kinds(&options.zone)).await?;
    let result = run(source.reader(), options).await;
    drop(source);
    result
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
    if let Some(c) = &cluster {
        c.set_metrics(metrics.clone());
    }
    let lameduck = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let mut bound: [String; 3] = ["off".into(), "off".into(), "off".into()];

    if let Some(addr) = options.health {
        let listener = http::bind("health", addr).await?;
        bound[0] = listener.local_addr().map_or(addr, |a| a).to_string();
        let m = metrics.clone();
        tasks.spawn(http::serve(
            listener,
            Arc::new(move |path: &str| {
                let started = Instant::now();
                let reply = match path {
                    "/health" => Some((StatusCode::OK, "text/plain", "OK".to_string())),
                    _ => None,
                };
                if reply.is_some() {
                    m.health_checked(started.elapsed(), true);
                }
                reply
            }),
        ));
    }
    if let Some(addr) = options.ready {
        let listener = http::bind("ready", addr).await?;
        bound[1] = listener.local_addr().map_or(addr, |a| a).to_string();
        let chain = chain.clone();
        let lameduck = lameduck.clone();
        tasks.spawn(http::serve(
            listener,
            Arc::new(move |path: &str| {
                if path != "/ready" {
                    return None;
                }
                if lameduck.load(Ordering::Acquire) {
                    return Some((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "shutting down".into(),
                    ));
                }
                let not_ready: Vec<&str> = chain.not_ready();
                Some(if not_ready.is_empty() {
                    (StatusCode::OK, "text/plain", "OK".into())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        not_ready.join(", "),
                    )
                })
            }),
        ));
    }
    if let Some(addr) = options.metrics {
        let listener = http::bind("metrics", addr).await?;
        bound[2] = listener.local_addr().map_or(addr, |a| a).to_string();
        let m = metrics.clone();
        tasks.spawn(http::serve(
            listener,
            Arc::new(move |path: &str| match path {
                "/metrics" => Some((
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    m.encode(),
                )),
                _ => None,
            }),
        ));
    }
    tracing::info!(
        listen = %local,
        health = %bound[0],
        ready = %bound[1],
        metrics = %bound[2],
        plugins = ?chain.names(),
        "DNS server listening"
    );
    tasks.spawn(server.serve(chain, metrics));

    shutdown.await;
    lameduck.store(true, Ordering::Release);
    if !options.lameduck.is_zero() {
        tracing::info!(lameduck = ?options.lameduck, "shutting down: lameduck, still answering");
        tokio::time::sleep(options.lameduck).await;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
