//! Cluster DNS as an agent subsystem: the DNS helper's building blocks
//! ([`ClusterPlugin`] over the shared cache, [`DnsServer`] for UDP and TCP, [`DnsMetrics`])
//! with the agent's admin endpoint in place of CoreDNS's separate health/ready/metrics ports.
//!
//! A counting plugin in front of the chain measures the query rate for `/status`. On a stop
//! request the agent first reports not ready and waits its lameduck period while this keeps
//! answering; then the listener stops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::status::SubsystemStatus;
use super::{AgentError, RunningSubsystem, Subsystem, SubsystemLauncher};
use crate::cache::CacheReader;
use crate::dns::cluster::ClusterPlugin;
use crate::dns::handler::{Chain, Plugin};
use crate::dns::metrics::DnsMetrics;
use crate::dns::plugins::serve::{
    CorefileControl, CorefileOptions, CorefileReadiness, CorefileRunError, load_logged,
};
use crate::dns::server::{DnsServer, ServerConfig};
use crate::dns::zone::ZoneOptions;
use crate::runtime::http::Endpoint;

/// Options of the DNS subsystem.
#[derive(Debug, Clone)]
pub struct DnsSubsystemOptions {
    /// UDP and TCP listen address (port 0: any free port, reported in `/status`).
    pub listen: SocketAddr,
    /// The cluster zone.
    pub zone: ZoneOptions,
    /// Answer from whatever is cached after this long without a sync.
    pub startup_timeout: Duration,
    /// UDP receive loops (0: one per core).
    pub udp_workers: usize,
    /// Node-local DNS addresses also listened on, port 53, unless `listen` covers them
    /// (`--node-local-dns`; the host side is [`super::nodelocal`]).
    pub node_local: Vec<std::net::IpAddr>,
}

impl Default for DnsSubsystemOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 53)),
            zone: ZoneOptions::default(),
            startup_timeout: Duration::from_secs(5),
            udp_workers: 0,
            node_local: Vec::new(),
        }
    }
}

/// Queries per second over a sliding window of samples.
struct RateWindow {
    samples: Mutex<Vec<(Instant, u64)>>,
}

impl RateWindow {
    const WINDOW: Duration = Duration::from_secs(10);

    /// Records the counter's value at `now` (called every second, and on each status read).
    fn sample(&self, now: Instant, total: u64) {
        if let Ok(mut s) = self.samples.lock() {
            s.push((now, total));
            s.retain(|(t, _)| now.duration_since(*t) <= Self::WINDOW);
        }
    }

    /// The rate between the oldest sample in the window and `total` at `now`.
    fn rate(&self, now: Instant, total: u64) -> f64 {
        self.sample(now, total);
        let Ok(s) = self.samples.lock() else {
            return 0.0;
        };
        match s.first() {
            Some((t0, n0)) if now.duration_since(*t0) > Duration::from_millis(100) => {
                (total - n0) as f64 / now.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

struct DnsSubsystem {
    plugin: Arc<ClusterPlugin>,
    metrics: Arc<DnsMetrics>,
    listen: SocketAddr,
    zones: Vec<String>,
    rates: Arc<RateWindow>,
}

impl Subsystem for DnsSubsystem {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn status(&self) -> SubsystemStatus {
        let zone = self.plugin.zone();
        let total = self.metrics.exchanges_total();
        let mut details = BTreeMap::new();
        details.insert("listen".into(), self.listen.to_string().into());
        details.insert("zones".into(), self.zones.join(" ").into());
        details.insert("zone_services".into(), zone.service_count().into());
        details.insert("queries_total".into(), total.into());
        SubsystemStatus {
            ready: self.plugin.is_synced(),
            summary: format!("cluster DNS on {} (UDP+TCP)", self.listen),
            applied_generation: Some(zone.generation()),
            syncs: self.plugin.rebuilds(),
            last_sync_seconds: self.plugin.last_build().map(|d| d.as_secs_f64()),
            query_rate_per_second: Some(self.rates.rate(Instant::now(), total)),
            config_files: Vec::new(),
            last_reload_error: None,
            last_error: None,
            details,
        }
    }

    fn encode_metrics(&self, out: &mut String) {
        out.push_str(&self.metrics.encode());
    }
}

/// A launcher of the DNS subsystem for [`AgentOptions::subsystems`](super::AgentOptions).
/// It needs Services and EndpointSlices, and Pods for `pods verified` (all of them) or
/// node-local autopath (`zone.autopath_node`: only this node's, declared with
/// [`SubsystemLauncher::with_node_pods`]).
pub fn launcher(options: DnsSubsystemOptions) -> SubsystemLauncher {
    let kinds = crate::dns::runner::needed_kinds(&options.zone);
    let node_pods = options.zone.needs_node_pods_only();
    let l = SubsystemLauncher::new(
        "dns",
        kinds,
        Box::new(
            move |reader: CacheReader, shutdown: watch::Receiver<bool>| {
                Box::pin(async move { start(options, reader, shutdown).await })
            },
        ),
    );
    if node_pods { l.with_node_pods() } else { l }
}

/// The `autopath @kubernetes` plugin of the agent's own configuration (node-local autopath):
/// every zone, the cluster search path only (no host search domains), as CoreDNS's
/// `autopath @kubernetes` in a `.` block.
fn node_autopath(cluster: Arc<dyn Plugin>) -> Arc<dyn Plugin> {
    let config = crate::dns::corefile::AutopathConfig {
        zones: vec![".".into()],
        source: crate::dns::corefile::SearchSource::Kubernetes {
            host_search: Vec::new(),
        },
        at: crate::dns::corefile::Position {
            file: Arc::from("<agentctl run --node-local-dns>"),
            line: 0,
            column: 0,
        },
    };
    Arc::new(crate::dns::plugins::autopath::AutoPath::new(
        &config,
        Some(cluster),
        None,
    ))
}

async fn start(
    options: DnsSubsystemOptions,
    reader: CacheReader,
    mut shutdown: watch::Receiver<bool>,
) -> Result<RunningSubsystem, AgentError> {
    let dns_options = crate::dns::DnsOptions {
        zone: options.zone.clone(),
        ..Default::default()
    };
    dns_options.validate().map_err(|e| AgentError::Subsystem {
        subsystem: "dns",
        reason: e.to_string(),
    })?;
    let server = DnsServer::bind(ServerConfig {
        listen: options.listen,
        udp_workers: options.udp_workers,
        ..ServerConfig::default()
    })
    .map_err(|e| AgentError::Subsystem {
        subsystem: "dns",
        reason: e.to_string(),
    })?;
    let listen = server.local_addr();
    let mut node_local_servers = Vec::new();
    for addr in super::nodelocal::extra_listen_addrs(&[listen], &options.node_local) {
        node_local_servers.push(
            DnsServer::bind(ServerConfig {
                listen: addr,
                udp_workers: options.udp_workers,
                ..ServerConfig::default()
            })
            .map_err(|e| AgentError::Subsystem {
                subsystem: "dns",
                reason: format!("node-local DNS: {e}"),
            })?,
        );
    }
    let plugin = ClusterPlugin::new(options.zone.clone());
    let metrics = DnsMetrics::new(&format!("dns://{}", options.listen), ".");
    plugin.set_metrics(metrics.clone());
    let mut plugins: Vec<Arc<dyn Plugin>> = Vec::new();
    if options.zone.autopath_node.is_some() {
        plugins.push(node_autopath(plugin.clone()));
    }
    plugins.push(plugin.clone() as Arc<dyn Plugin>);
    let chain = Chain::new(plugins);
    metrics.set_plugins(&chain.names());
    let updater = plugin.spawn_updater(reader, options.startup_timeout);
    let handle = Arc::new(DnsSubsystem {
        plugin,
        metrics: metrics.clone(),
        listen,
        zones: options.zone.zones.clone(),
        rates: Arc::new(RateWindow {
            samples: Mutex::new(Vec::new()),
        }),
    });
    let (rates, sampled) = (handle.rates.clone(), metrics.clone());
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            rates.sample(Instant::now(), sampled.exchanges_total());
        }
    });
    tracing::info!(listen = %listen, "cluster DNS listening");
    let mut node_local_tasks = tokio::task::JoinSet::new();
    for s in node_local_servers {
        tracing::info!(listen = %s.local_addr(), "node-local DNS listening");
        node_local_tasks.spawn(s.serve(chain.clone(), metrics.clone()));
    }
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = server.serve(chain, metrics) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
        node_local_tasks.abort_all();
        updater.abort();
        sampler.abort();
        tracing::info!("cluster DNS stopped");
    });
    Ok(RunningSubsystem { handle, task })
}

/// Options of the DNS subsystem when it serves a Corefile (`agentctl run --corefile`).
#[derive(Debug, Clone)]
pub struct CorefileSubsystemOptions {
    /// The Corefile.
    pub path: std::path::PathBuf,
    /// Listen here instead of the Corefile's addresses.
    pub listen_override: Option<SocketAddr>,
    /// Answer from whatever is cached after this long without a sync.
    pub startup_timeout: Duration,
    /// Unknown plugins and options are warnings instead of errors.
    pub allow_unknown: bool,
    /// Node-local DNS addresses every `dns://` block also listens on, port 53, unless its
    /// addresses cover them (`--node-local-dns`).
    pub node_local: Vec<std::net::IpAddr>,
    /// Node-local autopath for the pods of this node (`--node-local-dns` with `--node-name`):
    /// see [`LoadOptions::autopath_node`](crate::dns::corefile::LoadOptions).
    pub autopath_node: Option<String>,
}

/// The cache kinds a Corefile needs (`pods verified` and node-local autopath add Pods).
pub fn corefile_kinds(
    options: &CorefileSubsystemOptions,
) -> Result<Vec<crate::model::Kind>, AgentError> {
    let cf = load_corefile(options)?;
    Ok(crate::dns::plugins::serve::needed_kinds(&cf))
}

fn parse_corefile(
    options: &CorefileSubsystemOptions,
) -> Result<crate::dns::corefile::Corefile, crate::dns::corefile::CorefileError> {
    crate::dns::corefile::load(
        &options.path,
        &crate::dns::corefile::LoadOptions {
            allow_unknown: options.allow_unknown,
            autopath_node: options.autopath_node.clone(),
        },
    )
}

fn load_corefile(
    options: &CorefileSubsystemOptions,
) -> Result<crate::dns::corefile::Corefile, AgentError> {
    parse_corefile(options).map_err(|e| AgentError::Subsystem {
        subsystem: "dns",
        reason: e.to_string(),
    })
}

/// The DNS subsystem serving a Corefile: status from memory, the Corefile's HTTP endpoints
/// declared to the agent, its lameduck read at stop time.
pub(crate) struct CorefileDns {
    path: String,
    /// The DNS listeners' addresses at start.
    listen: Vec<SocketAddr>,
    /// The plugins at start, for the `DNS server listening` line.
    plugins: Vec<&'static str>,
    /// What the Corefile's `ready` endpoint answers, in memory.
    readiness: CorefileReadiness,
    has_ready_endpoint: bool,
    /// The outcome of the last reload the server ran (`None`: none failed since).
    reload_error: watch::Receiver<Option<String>>,
    exit_error: Arc<Mutex<Option<String>>>,
    /// Stop request and lameduck of the running server (`None` when it did not start).
    control: Option<CorefileControl>,
    /// The Corefile's health/ready/metrics endpoints.
    http: Option<watch::Receiver<Vec<Endpoint>>>,
}

impl Subsystem for CorefileDns {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn status(&self) -> SubsystemStatus {
        let exit_error = self.exit_error.lock().ok().and_then(|e| e.clone());
        let mut details = BTreeMap::new();
        details.insert(
            "listen".into(),
            self.listen
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" ")
                .into(),
        );
        details.insert(
            "readiness".into(),
            if self.has_ready_endpoint {
                "from the Corefile's ready endpoint".into()
            } else {
                "no ready plugin in the Corefile: ready once serving".into()
            },
        );
        SubsystemStatus {
            // Without a `ready` plugin: ready once serving.
            ready: exit_error.is_none()
                && match self.readiness.ready() {
                    Some(ready) => ready || !self.has_ready_endpoint,
                    None => false,
                },
            summary: format!("DNS serving Corefile {}", self.path),
            applied_generation: None,
            syncs: 0,
            last_sync_seconds: None,
            query_rate_per_second: None,
            config_files: vec![self.path.clone()],
            last_reload_error: self.reload_error.borrow().clone(),
            last_error: exit_error,
            details,
        }
    }

    fn listeners(&self) -> Option<watch::Receiver<Vec<Endpoint>>> {
        self.http.clone()
    }

    /// Logs `DNS server listening` with the DNS and the bound HTTP addresses (`off` for an
    /// endpoint the Corefile does not configure).
    fn listening(&self, bound: &[(&'static str, SocketAddr)]) {
        let at = |what: &str| {
            bound
                .iter()
                .find(|(w, _)| *w == what)
                .map_or_else(|| "off".to_string(), |(_, a)| a.to_string())
        };
        let listen: Vec<String> = self.listen.iter().map(|a| a.to_string()).collect();
        tracing::info!(
            listen = %listen.join(" "),
            health = %at("health"),
            ready = %at("ready"),
            metrics = %at("metrics"),
            plugins = ?self.plugins,
            corefile = %self.path,
            "DNS server listening"
        );
    }

    fn lameduck(&self) -> Duration {
        self.control
            .as_ref()
            .map(CorefileControl::lameduck)
            .unwrap_or_default()
    }

    fn stopping(&self) {
        if let Some(c) = &self.control {
            c.set_stopping();
        }
    }
}

/// Starts serving the Corefile of `options` on `reader` until `shutdown` turns true: the
/// subsystem handle, and the server's task (its result is the serving's outcome). A start
/// that fails (Corefile, listener) is returned as is, nothing serving.
pub(crate) async fn start_corefile(
    mut options: CorefileOptions,
    reader: CacheReader,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(Arc<CorefileDns>, JoinHandle<Result<(), CorefileRunError>>), CorefileRunError> {
    let cf = load_logged(&options)?;
    let has_ready_endpoint = cf.servers.iter().any(|s| s.plugins.ready.is_some());
    let readiness = CorefileReadiness::new();
    let (reload_tx, reload_error) = watch::channel(None);
    options.readiness = Some(readiness.clone());
    options.reload_outcome = Some(reload_tx);
    let path = options.path.display().to_string();
    let server = crate::dns::plugins::serve::start_corefile(reader, options).await?;
    let handle = Arc::new(CorefileDns {
        path,
        listen: server.dns_addrs(),
        plugins: server.plugin_names(),
        readiness,
        has_ready_endpoint,
        reload_error,
        exit_error: Arc::new(Mutex::new(None)),
        control: Some(server.control()),
        http: Some(server.listeners()),
    });
    let exit_error = handle.exit_error.clone();
    let task = tokio::spawn(async move {
        let stop = async move {
            // An error means the agent is gone: stop as well.
            let _ = shutdown.wait_for(|s| *s).await;
        };
        let result = server.run(stop).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "DNS (Corefile) stopped");
            if let Ok(mut slot) = exit_error.lock() {
                *slot = Some(e.to_string());
            }
        }
        result
    });
    Ok((handle, task))
}

/// A launcher of the DNS subsystem serving a Corefile with the DNS helper's
/// [`CorefileServer`](crate::dns::plugins::serve::CorefileServer): the health/ready/metrics
/// endpoints the Corefile configures are declared to the agent, which serves them (and
/// re-binds them when a reload moves them); reload included. The agent reports the Corefile
/// in force, readiness as the Corefile's `ready` endpoint answers (read in memory), and the
/// outcome of the last reload the server ran (`reload` plugin): the error of a rejected
/// Corefile — unparsable, deleted, or failing to apply (a listen port in use) — until a later
/// reload succeeds. A server that cannot start is reported as the subsystem's `last_error`.
/// The Corefile is read here for the kinds it needs (`pods verified` adds Pods): a Corefile
/// that does not load is an error before anything starts.
pub fn corefile_launcher(
    options: CorefileSubsystemOptions,
) -> Result<SubsystemLauncher, AgentError> {
    let cf = load_corefile(&options)?;
    let kinds = crate::dns::plugins::serve::needed_kinds(&cf);
    let node_pods = crate::dns::plugins::serve::needs_node_pods_only(&cf);
    let launcher = SubsystemLauncher::new(
        "dns",
        kinds,
        Box::new(
            move |reader: CacheReader, shutdown: watch::Receiver<bool>| {
                Box::pin(async move {
                    let serve_options = CorefileOptions {
                        path: options.path.clone(),
                        text: None,
                        listener: Default::default(),
                        lameduck: None,
                        load: crate::dns::corefile::LoadOptions {
                            allow_unknown: options.allow_unknown,
                            autopath_node: options.autopath_node.clone(),
                        },
                        listen_override: options.listen_override,
                        startup_timeout: options.startup_timeout,
                        udp_workers: 0,
                        reload_outcome: None,
                        readiness: None,
                        node_local: options.node_local.clone(),
                    };
                    match start_corefile(serve_options, reader, shutdown).await {
                        Ok((handle, task)) => Ok(RunningSubsystem {
                            handle: handle as Arc<dyn Subsystem>,
                            task: tokio::spawn(async move {
                                let _ = task.await;
                            }),
                        }),
                        Err(e) => {
                            tracing::error!(error = %e, "DNS (Corefile) stopped");
                            let (_, reload_error) = watch::channel(None);
                            let handle = Arc::new(CorefileDns {
                                path: options.path.display().to_string(),
                                listen: Vec::new(),
                                plugins: Vec::new(),
                                readiness: CorefileReadiness::new(),
                                has_ready_endpoint: false,
                                reload_error,
                                exit_error: Arc::new(Mutex::new(Some(e.to_string()))),
                                control: None,
                                http: None,
                            });
                            Ok(RunningSubsystem {
                                handle: handle as Arc<dyn Subsystem>,
                                task: tokio::spawn(async {}),
                            })
                        }
                    }
                })
            },
        ),
    );
    Ok(if node_pods {
        launcher.with_node_pods()
    } else {
        launcher
    })
}
