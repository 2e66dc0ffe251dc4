//! The flag-mode DNS server (`svcnet-dns` without `--corefile`): its options, its listener and
//! zone updater ([`start`]), and the CoreDNS-compatible health, ready and metrics routes that
//! Corefile mode uses too. The composition root ([`crate::agent`]) binds and serves the HTTP
//! endpoints and runs the lameduck period.

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
use crate::runtime::signal::Stopping;

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
    if zone.needs_pod_kind() {
        kinds.push(Kind::Pod);
    }
    kinds
}

/// The flag-mode DNS server (`svcnet-dns` without `--corefile`) started by [`start`]: its
/// UDP/TCP listener answers; its health/ready/metrics endpoints are declared
/// ([`FlagServer::endpoints`]) for the composition root to bind and serve.
#[derive(Debug)]
pub struct FlagServer {
    local: SocketAddr,
    plugins: Vec<&'static str>,
    endpoints: Vec<http::Endpoint>,
    stopping: Stopping,
    lameduck: Duration,
    tasks: tokio::task::JoinSet<()>,
}

/// Serves the cluster zone of `reader` with the listener of `options` (the zone updater and
/// the DNS server run from now on). An error means nothing serves.
pub async fn start(reader: CacheReader, options: DnsOptions) -> Result<FlagServer, DnsError> {
    options.validate()?;
    let plugin = ClusterPlugin::new(options.zone.clone());
    let chain = Chain::new(vec![plugin.clone() as Arc<dyn Plugin>]);
    let server = DnsServer::bind(options.server.clone())?;
    let local = server.local_addr();
    let metrics = DnsMetrics::new(&format!("dns://{local}"), ".");
    metrics.set_plugins(&chain.names());
    plugin.set_metrics(metrics.clone());
    let stopping = Stopping::new();
    let ready_chain = chain.clone();
    let endpoints = [
        (options.health, "health", health_routes(&metrics)),
        (
            options.ready,
            "ready",
            ready_routes(stopping.clone(), move || {
                let not_ready = ready_chain.not_ready();
                (!not_ready.is_empty()).then(|| not_ready.join(", "))
            }),
        ),
        (options.metrics, "metrics", metrics_routes(&metrics, None)),
    ]
    .into_iter()
    .filter_map(|(addr, what, routes)| {
        addr.map(|addr| http::Endpoint {
            what,
            addr,
            routes,
            required: true,
        })
    })
    .collect();
    let mut tasks = tokio::task::JoinSet::new();
    let updater = plugin.spawn_updater(reader, options.startup_timeout);
    tasks.spawn(async move {
        let _ = updater.await;
    });
    let plugins = chain.names();
    tasks.spawn(server.serve(chain, metrics));
    Ok(FlagServer {
        local,
        plugins,
        endpoints,
        stopping,
        lameduck: options.lameduck,
        tasks,
    })
}

/// The `DNS server listening` line of a [`FlagServer`], logged once its HTTP endpoints are
/// bound.
#[derive(Debug, Clone)]
pub struct ListeningLog {
    local: SocketAddr,
    plugins: Vec<&'static str>,
}

impl ListeningLog {
    /// Logs the line with the DNS address and the bound HTTP endpoints (`off` for those not
    /// served).
    pub fn log(&self, bound: &[(&'static str, SocketAddr)]) {
        let at = |what: &str| {
            bound
                .iter()
                .find(|(w, _)| *w == what)
                .map_or_else(|| "off".to_string(), |(_, a)| a.to_string())
        };
        tracing::info!(
            listen = %self.local,
            health = %at("health"),
            ready = %at("ready"),
            metrics = %at("metrics"),
            plugins = ?self.plugins,
            "DNS server listening"
        );
    }
}

impl FlagServer {
    /// The bound DNS address (the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The health, ready and metrics endpoints the options ask for (binding them fails the
    /// start).
    pub fn endpoints(&self) -> Vec<http::Endpoint> {
        self.endpoints.clone()
    }

    /// What the `DNS server listening` line needs besides the bound HTTP endpoints.
    pub fn clone_log(&self) -> ListeningLog {
        ListeningLog {
            local: self.local,
            plugins: self.plugins.clone(),
        }
    }

    /// The `--lameduck` period.
    pub fn lameduck(&self) -> Duration {
        self.lameduck
    }

    /// The stop flag `/ready` reads: once set, it answers 503 while DNS keeps answering.
    pub fn stopping(&self) -> Stopping {
        self.stopping.clone()
    }

    /// Serves until `shutdown` completes, then stops the listener and the zone updater (the
    /// lameduck period is the caller's, before `shutdown` completes).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
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
