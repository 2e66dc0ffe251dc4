//! Serving a Corefile: listeners per address, the HTTP endpoints it declares (bound and served
//! by the composition root, which re-binds them when a reload moves them), and `reload`.
//!
//! Each listen address has one DNS listener whose chain is a [`SwapRouter`]: the current
//! configuration's [`ZoneRouter`] behind an atomically swapped `Arc`. A reload builds the new
//! configuration aside, binds the listeners of new addresses, then swaps every router at once;
//! listeners whose address stays are never closed, queries in flight finish on the chain they
//! started with, and listeners of addresses no longer used are stopped. A Corefile that does
//! not load (or whose new addresses cannot be bound) is rejected: the reason is logged,
//! `coredns_reload_failed_total` counts it, and the old configuration keeps serving.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::build::{BuildContext, BuildError, ClusterFactory, Listener, build};
use super::metrics::PluginMetrics;
use super::router::ZoneRouter;
use crate::cache::CacheReader;
use crate::dns::cluster::ClusterPlugin;
use crate::dns::corefile::{
    self, Corefile, CorefileError, LoadOptions, RealFiles, ReloadConfig, ServerTransport,
};
use crate::dns::encrypted::EncryptedServer;
use crate::dns::error::DnsError;
use crate::dns::handler::{Chain, Next, Plugin, Reply, Request};
use crate::dns::metrics::DnsMetrics;
use crate::dns::runner;
use crate::dns::server::{DnsServer, ServerConfig};
use crate::dns::zone::{PodMode, ZoneOptions};
use crate::model::Kind;
use crate::runtime::http;
use crate::runtime::signal::Stopping;
use crate::runtime::watch::{FileWatch, fingerprint};
use crate::tls::ServerTls;

/// How to serve a Corefile.
#[derive(Debug, Clone)]
pub struct CorefileOptions {
    /// The Corefile (with [`CorefileOptions::text`], only its name in messages).
    pub path: PathBuf,
    /// The Corefile's text, when it is not read from `path` (the Corefile `svcnet-dns`
    /// synthesises from its flags): nothing is read or watched, `reload` has nothing to follow.
    pub text: Option<String>,
    /// Unknown plugins/options as warnings.
    pub load: LoadOptions,
    /// Listen here instead of the Corefile's addresses (all blocks share it).
    pub listen_override: Option<SocketAddr>,
    /// How long the cluster zone waits for the cache to sync before answering.
    pub startup_timeout: Duration,
    /// UDP receive loops per listener (0: one per core).
    pub udp_workers: usize,
    /// The settings of every `dns://` listener besides its address and worker count: TCP
    /// limits, and the large-answer limit of blocks without an `rrl` plugin.
    pub listener: ServerConfig,
    /// Replaces the Corefile's `health { lameduck }` (the flag `--lameduck`).
    pub lameduck: Option<Duration>,
    /// Told the outcome of every reload that runs: `None` once a changed Corefile is in force,
    /// the error when it was rejected (the previous configuration keeps serving). The agent's
    /// `/status` shows it as `last_reload_error`.
    pub reload_outcome: Option<tokio::sync::watch::Sender<Option<String>>>,
    /// Filled once the listeners serve: what `/ready` answers, read in memory (the agent's
    /// `/status` uses it instead of polling the endpoint).
    pub readiness: Option<CorefileReadiness>,
    /// Node-local DNS addresses every `dns://` block also listens on, port 53, unless the
    /// block's own addresses cover them (`agentctl run --node-local-dns`).
    pub node_local: Vec<std::net::IpAddr>,
}

/// The readiness of a served Corefile, in memory: what its `ready` endpoint answers.
#[derive(Clone, Default)]
pub struct CorefileReadiness(Arc<std::sync::OnceLock<ServingRouters>>);

/// The stop flag of a served Corefile and the routers of its listeners.
type ServingRouters = (Stopping, Arc<Vec<Arc<SwapRouter>>>);

impl std::fmt::Debug for CorefileReadiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CorefileReadiness")
            .field(&self.ready())
            .finish()
    }
}

impl CorefileReadiness {
    /// A readiness not yet serving.
    pub fn new() -> Self {
        Self::default()
    }

    /// `None` before the listeners serve; then `Some(true)` while every listener's plugins
    /// are ready and no stop was requested (the `ready` plugin's 200).
    pub fn ready(&self) -> Option<bool> {
        let (stopping, swaps) = self.0.get()?;
        Some(!stopping.is_set() && swaps.iter().all(|s| s.ready()))
    }
}

impl CorefileOptions {
    /// How to serve the Corefile the flags of `svcnet-dns` mean ([`runner::DnsOptions::corefile`]):
    /// its text under the name `(flags)`, listening on `server.listen`, with the TCP and
    /// large-answer limits, the lameduck and the startup timeout of the flags.
    pub fn for_flags(flags: &runner::DnsOptions) -> Self {
        Self {
            text: Some(flags.corefile()),
            listen_override: Some(flags.server.listen),
            startup_timeout: flags.startup_timeout,
            udp_workers: flags.server.udp_workers,
            listener: flags.server.clone(),
            lameduck: Some(flags.lameduck),
            ..Self::new("(flags)")
        }
    }

    /// The settings of a `dns://` listener on `addr`; `rrl`: its block's large-answer limit,
    /// which replaces the flags' one.
    fn listener_at(
        &self,
        addr: SocketAddr,
        rrl: Option<crate::dns::rrl::LargeAnswerLimit>,
    ) -> ServerConfig {
        ServerConfig {
            listen: addr,
            udp_workers: self.udp_workers,
            large_answers: rrl.or(self.listener.large_answers),
            ..self.listener.clone()
        }
    }

    /// Options for `path` with defaults (5 s startup timeout).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            text: None,
            load: LoadOptions::default(),
            listen_override: None,
            startup_timeout: Duration::from_secs(5),
            udp_workers: 0,
            listener: ServerConfig::default(),
            lameduck: None,
            reload_outcome: None,
            readiness: None,
            node_local: Vec::new(),
        }
    }
}

/// Why serving a Corefile stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorefileRunError {
    /// The Corefile does not load.
    #[error("{0}")]
    Load(#[from] CorefileError),
    /// The Corefile cannot be served as written.
    #[error("{0}")]
    Build(#[from] BuildError),
    /// A listener or endpoint could not be bound.
    #[error("{0}")]
    Dns(#[from] DnsError),
    /// `loop` found a forwarding loop.
    #[error("{0}")]
    LoopDetected(String),
    /// A reloaded Corefile needs cluster objects the running source does not watch (the
    /// source's kinds are chosen at start: `pods verified` turned on needs a restart).
    #[error(
        "the Corefile needs {kinds} objects, which the running source does not watch: restart to apply it"
    )]
    KindsNotWatched {
        /// The missing kinds.
        kinds: String,
    },
}

/// The chain of a listener: the current router, swapped on reload.
pub struct SwapRouter {
    current: ArcSwap<ZoneRouter>,
}

impl SwapRouter {
    /// A swapper starting with `router`.
    pub fn new(router: ZoneRouter) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(router),
        })
    }

    /// Installs `router` for the next queries.
    pub fn store(&self, router: ZoneRouter) {
        self.current.store(Arc::new(router));
        crate::dns::answer_cache::invalidate_all();
    }
}

impl Plugin for SwapRouter {
    fn name(&self) -> &'static str {
        "router"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        self.current.load().handle(req, next)
    }

    fn ready(&self) -> bool {
        self.current.load().ready()
    }

    fn passes_answers_unchanged(&self) -> bool {
        self.current.load().passes_answers_unchanged()
    }
}

/// A cluster plugin, its options and its updater task.
type PooledCluster = (ZoneOptions, Arc<ClusterPlugin>, JoinHandle<()>);

/// Cluster plugins kept across reloads while their options stay the same (a reload then
/// neither rebuilds the zone nor waits for a sync).
struct ClusterPool {
    reader: CacheReader,
    startup_timeout: Duration,
    metrics: Arc<DnsMetrics>,
    instances: Mutex<Vec<PooledCluster>>,
}

impl ClusterPool {
    fn get(&self, options: &ZoneOptions) -> Arc<ClusterPlugin> {
        let mut inst = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p, _)) = inst.iter().find(|(o, _, _)| o == options) {
            return p.clone();
        }
        let plugin = ClusterPlugin::new(options.clone());
        plugin.set_metrics(self.metrics.clone());
        let snapshot = self.reader.snapshot();
        if snapshot.is_synced() {
            // Ready before it is swapped in: no query sees an empty zone.
            plugin.install(&snapshot);
        }
        let updater = plugin.spawn_updater(self.reader.clone(), self.startup_timeout);
        inst.push((options.clone(), plugin.clone(), updater));
        plugin
    }

    /// Stops the plugins whose options are not in `keep`.
    fn retain(&self, keep: &[ZoneOptions]) {
        let mut inst = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        inst.retain(|(o, _, updater)| {
            let kept = keep.contains(o);
            if !kept {
                updater.abort();
            }
            kept
        });
    }
}

fn used_zone_options(cf: &Corefile) -> Vec<ZoneOptions> {
    cf.servers
        .iter()
        .filter_map(|s| s.plugins.kubernetes.as_ref())
        .map(super::build::zone_options)
        .collect()
}

/// The cache kinds a Corefile's cluster zones need.
pub fn needed_kinds(cf: &Corefile) -> Vec<Kind> {
    let mut kinds = vec![Kind::Service, Kind::EndpointSlice];
    if used_zone_options(cf).iter().any(|o| o.needs_pod_kind()) {
        kinds.push(Kind::Pod);
    }
    kinds
}

/// Whether the Pods a Corefile's cluster zones need are only this node's (node-local
/// autopath, and no block with `pods verified`, which needs every pod).
pub fn needs_node_pods_only(cf: &Corefile) -> bool {
    let used = used_zone_options(cf);
    used.iter().any(|o| o.autopath_node.is_some())
        && used.iter().all(|o| o.pods != PodMode::Verified)
}

/// Loads the Corefile, logging its warnings.
pub(crate) fn load_logged(options: &CorefileOptions) -> Result<Corefile, CorefileError> {
    let cf = match &options.text {
        Some(text) => corefile::parse_str(&options.path.to_string_lossy(), text, &options.load)?,
        None => corefile::load(&options.path, &options.load)?,
    };
    for w in &cf.warnings {
        tracing::warn!("{w}");
    }
    Ok(cf)
}

fn reload_config(cf: &Corefile) -> Option<ReloadConfig> {
    cf.servers.iter().find_map(|s| s.plugins.reload)
}

struct Running {
    swap: Arc<SwapRouter>,
    task: JoinHandle<()>,
    /// The large-answer limiter of a `dns://` listener.
    limiter: Option<Arc<crate::dns::rrl::LargeAnswerLimiter>>,
    transport: ServerTransport,
    /// The certificate of a `tls://`/`https://` listener.
    tls: Option<Arc<ServerTls>>,
}

/// A listener bound by [`State::apply`] and not yet serving.
enum Bound {
    Dns(DnsServer),
    Encrypted(EncryptedServer, Arc<ServerTls>),
}

/// The TLS settings of an encrypted listener, checked (certificate, key, CA).
fn listener_tls(l: &Listener) -> Result<Arc<ServerTls>, DnsError> {
    let cfg = l.tls.as_ref().ok_or_else(|| DnsError::Tls {
        addr: l.addr,
        message: "no `tls` directive for this listener".to_string(),
    })?;
    ServerTls::new(cfg.pem()).map_err(|e| DnsError::Tls {
        addr: l.addr,
        message: e.to_string(),
    })
}

struct State {
    options: CorefileOptions,
    pool: Arc<ClusterPool>,
    ctx: BuildContext,
    dns_metrics: Arc<DnsMetrics>,
    plugin_metrics: PluginMetrics,
    listeners: HashMap<SocketAddr, Running>,
    current: Corefile,
    fingerprint: u64,
    /// Stop flag and lameduck, shared with the composition root.
    control: CorefileControl,
    /// The `--listen` override's listener when it asked for port 0, bound before the metrics
    /// were labelled with its real port; the first [`State::apply`] takes it.
    prebound: HashMap<SocketAddr, DnsServer>,
    /// The plugins of the configuration in force, in chain order.
    plugin_names: Vec<&'static str>,
}

impl State {
    /// Builds `cf` on a blocking thread (the cluster zone may be built there).
    async fn build(&self, cf: &Corefile) -> Result<Vec<Listener>, BuildError> {
        let ctx = self.ctx.clone();
        let cf = cf.clone();
        match tokio::task::spawn_blocking(move || build(&cf, &ctx)).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Binds new addresses, swaps routers and certificates, stops listeners no longer used.
    /// Nothing changes unless every new address binds and every certificate loads.
    fn apply(&mut self, listeners: Vec<Listener>) -> Result<(), DnsError> {
        let mut fresh = Vec::new();
        let mut new_tls: HashMap<SocketAddr, Arc<ServerTls>> = HashMap::new();
        for l in &listeners {
            let encrypted = l.transport != ServerTransport::Dns;
            if let Some(r) = self.listeners.get(&l.addr) {
                if r.transport != l.transport {
                    return Err(DnsError::Tls {
                        addr: l.addr,
                        message: format!(
                            "the address changes from {}:// to {}://, which needs a restart",
                            r.transport.scheme(),
                            l.transport.scheme()
                        ),
                    });
                }
                if encrypted {
                    new_tls.insert(l.addr, listener_tls(l)?);
                }
                continue;
            }
            let bound = if encrypted {
                let tls = listener_tls(l)?;
                Bound::Encrypted(
                    EncryptedServer::bind(l.addr, l.transport, tls.clone())?,
                    tls,
                )
            } else {
                match self.prebound.remove(&l.addr) {
                    Some(server) => Bound::Dns(server),
                    None => Bound::Dns(DnsServer::bind(self.options.listener_at(l.addr, l.rrl))?),
                }
            };
            fresh.push((l.addr, bound));
        }
        let mut names: Vec<&'static str> = Vec::new();
        for l in &listeners {
            for n in l.router.plugin_names() {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        self.dns_metrics.set_plugins(&names);
        self.plugin_names = names;
        let mut fresh: HashMap<SocketAddr, Bound> = fresh.into_iter().collect();
        let mut keep = Vec::new();
        for l in listeners {
            keep.push(l.addr);
            match self.listeners.get(&l.addr) {
                Some(r) => {
                    r.swap.store(l.router.clone());
                    if let Some(limiter) = &r.limiter {
                        limiter.set(l.rrl);
                    }
                    if let (Some(current), Some(next)) = (&r.tls, new_tls.get(&l.addr)) {
                        current.replace_from(next);
                    }
                }
                None => {
                    let bound = fresh.remove(&l.addr).expect("bound above");
                    let swap = SwapRouter::new(l.router.clone());
                    let chain = Chain::new(vec![swap.clone() as Arc<dyn Plugin>]);
                    let metrics = self.dns_metrics.clone();
                    let (task, limiter, tls) = match bound {
                        Bound::Dns(server) => {
                            let local = server.local_addr();
                            tracing::info!(listen = %local, zones = ?l.router.zones(), "DNS server listening");
                            let limiter = server.limiter();
                            (
                                tokio::spawn(server.serve(chain, metrics)),
                                Some(limiter),
                                None,
                            )
                        }
                        Bound::Encrypted(server, tls) => {
                            let local = server.local_addr();
                            tracing::info!(
                                listen = %local,
                                transport = l.transport.scheme(),
                                zones = ?l.router.zones(),
                                "encrypted DNS server listening"
                            );
                            (tokio::spawn(server.serve(chain, metrics)), None, Some(tls))
                        }
                    };
                    self.listeners.insert(
                        l.addr,
                        Running {
                            swap,
                            task,
                            limiter,
                            transport: l.transport,
                            tls,
                        },
                    );
                }
            }
            // The loop probe is a UDP query: only plain DNS listeners can receive it.
            if l.transport == ServerTransport::Dns {
                for lp in l.loops {
                    tokio::spawn(lp.probe(l.addr));
                }
            }
        }
        self.listeners.retain(|addr, r| {
            let kept = keep.contains(addr);
            if !kept {
                tracing::info!(listen = %addr, "DNS listener no longer configured: closed");
                r.task.abort();
            }
            kept
        });
        Ok(())
    }

    /// Checks the Corefile and applies it when it changed and is valid; `true` when a new
    /// configuration is in force.
    async fn reload(&mut self) -> bool {
        let fp = fingerprint(&self.current.files);
        if fp == self.fingerprint {
            return false;
        }
        let started = Instant::now();
        let result = async {
            let cf = load_logged(&self.options)?;
            // Kinds the new configuration needs beyond what runs now and is watched.
            let watched = self.pool.reader.snapshot().expected_kinds().clone();
            let current = needed_kinds(&self.current);
            let missing: Vec<String> = needed_kinds(&cf)
                .into_iter()
                .filter(|k| !watched.contains(k) && !current.contains(k))
                .map(|k| format!("{k:?}"))
                .chain(
                    // Pods watched on this node only cannot serve `pods` records.
                    (needs_node_pods_only(&self.current)
                        && needed_kinds(&cf).contains(&Kind::Pod)
                        && !needs_node_pods_only(&cf))
                    .then(|| "Pod (cluster-wide; only this node's are watched)".to_string()),
                )
                .collect();
            if !missing.is_empty() {
                return Err(CorefileRunError::KindsNotWatched {
                    kinds: missing.join(", "),
                });
            }
            let listeners = self.build(&cf).await?;
            self.apply(listeners)?;
            Ok::<Corefile, CorefileRunError>(cf)
        }
        .await;
        match result {
            Ok(cf) => {
                // In force before the reload is reported: a SIGTERM right after sees it.
                self.control
                    .set_lameduck(self.options.lameduck.unwrap_or_else(|| lameduck(&cf)));
                self.fingerprint = fingerprint(&cf.files);
                self.pool.retain(&used_zone_options(&cf));
                self.current = cf;
                tracing::info!(took = ?started.elapsed(), "plugin/reload: running configuration replaced");
                if let Some(tx) = &self.options.reload_outcome {
                    tx.send_replace(None);
                }
                true
            }
            Err(e) => {
                // Do not retry the same broken content until it changes again.
                self.fingerprint = fp;
                self.pool.retain(&used_zone_options(&self.current));
                self.plugin_metrics.reload_failed.inc();
                tracing::error!(
                    "plugin/reload: Corefile rejected, previous configuration keeps serving: {e}"
                );
                if let Some(tx) = &self.options.reload_outcome {
                    tx.send_replace(Some(e.to_string()));
                }
                false
            }
        }
    }
}

type HttpAddrs = (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>);

fn http_addrs(cf: &Corefile) -> HttpAddrs {
    let p = |f: &dyn Fn(&crate::dns::corefile::PluginSet) -> Option<SocketAddr>| {
        cf.servers.iter().find_map(|s| f(&s.plugins))
    };
    (
        p(&|s| s.health.as_ref().map(|h| h.addr)),
        p(&|s| s.ready.as_ref().map(|h| h.addr)),
        p(&|s| s.prometheus.as_ref().map(|h| h.addr)),
    )
}

fn lameduck(cf: &Corefile) -> Duration {
    cf.servers
        .iter()
        .find_map(|s| s.plugins.health.as_ref().map(|h| h.lameduck))
        .unwrap_or_default()
}

/// Follows the Corefile and its imports with the process's one [`FileWatch`] (the `reload`
/// plugin's own timer does the periodic checks).
fn watch(files: &[PathBuf]) -> FileWatch {
    FileWatch::new(files.to_vec(), None, "plugin/reload")
}

/// The `server` label of the DNS metrics: CoreDNS's `dns://:PORT` for the Corefile's first
/// port, or the `--listen` address when it replaces the Corefile's (`dns://:PORT` for an
/// unspecified IP, else `dns://IP:PORT`).
fn metrics_server_label(listen_override: Option<SocketAddr>, corefile_port: u16) -> String {
    match listen_override {
        Some(a) if a.ip().is_unspecified() => format!("dns://:{}", a.port()),
        Some(a) => format!("dns://{a}"),
        None => format!("dns://:{corefile_port}"),
    }
}

/// A Corefile being served: its DNS listeners run; the HTTP endpoints it configures are
/// declared ([`CorefileServer::listeners`]) for the composition root to bind and serve, and
/// [`CorefileServer::run`] follows the `reload` plugin until asked to stop.
pub struct CorefileServer {
    state: State,
    dns_metrics: Arc<DnsMetrics>,
    registry: Arc<Registry>,
    control: CorefileControl,
    http: tokio::sync::watch::Sender<Vec<http::Endpoint>>,
    loops: mpsc::UnboundedReceiver<String>,
}

impl std::fmt::Debug for CorefileServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorefileServer")
            .field("path", &self.state.options.path)
            .finish_non_exhaustive()
    }
}

/// The stop request and lameduck of a served Corefile, shared with its composition root.
#[derive(Debug, Clone, Default)]
pub struct CorefileControl {
    stopping: Stopping,
    lameduck: Arc<Mutex<Duration>>,
}

impl CorefileControl {
    /// Marks the server as stopping: its `/ready` answers 503 from now on (it keeps answering
    /// DNS until [`CorefileServer::run`]'s shutdown completes).
    pub fn set_stopping(&self) {
        self.stopping.set();
    }

    /// The `health` plugin's `lameduck` of the Corefile in force (zero without one).
    pub fn lameduck(&self) -> Duration {
        *self.lameduck.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_lameduck(&self, d: Duration) {
        *self.lameduck.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }
}

/// The HTTP endpoints of `cf` (from the first block that configures each): CoreDNS's
/// `health`, `ready` and `prometheus`. Binding them fails the start.
fn http_endpoints(
    cf: &Corefile,
    dns_metrics: &Arc<DnsMetrics>,
    registry: &Arc<Registry>,
    stopping: &Stopping,
    swaps: Arc<Vec<Arc<SwapRouter>>>,
) -> Vec<http::Endpoint> {
    let (health, ready, prometheus) = http_addrs(cf);
    let endpoints = [
        (health, "health", runner::health_routes(dns_metrics)),
        (
            ready,
            "ready",
            runner::ready_routes(stopping.clone(), move || {
                (!swaps.iter().all(|s| s.ready())).then(|| "not ready".to_string())
            }),
        ),
        (
            prometheus,
            "metrics",
            runner::metrics_routes(dns_metrics, Some(registry.clone())),
        ),
    ];
    endpoints
        .into_iter()
        .filter_map(|(addr, what, routes)| {
            addr.map(|addr| http::Endpoint {
                what,
                addr,
                routes,
                required: true,
            })
        })
        .collect()
}

/// Loads the Corefile of `options` and starts its DNS listeners on `reader`; an error means
/// nothing serves. The HTTP endpoints are declared, not bound: see [`CorefileServer`].
pub async fn start_corefile(
    reader: CacheReader,
    options: CorefileOptions,
) -> Result<CorefileServer, CorefileRunError> {
    crate::tls::install_crypto_provider();
    let mut options = options;
    let cf = load_logged(&options)?;
    // `--listen ADDR:0`: bind now, so that the metrics and the listening line name the port.
    let mut prebound = HashMap::new();
    if let Some(addr) = options.listen_override.filter(|a| a.port() == 0) {
        let server = DnsServer::bind(options.listener_at(addr, None))?;
        let real = server.local_addr();
        options.listen_override = Some(real);
        prebound.insert(real, server);
    }
    let first = cf
        .servers
        .first()
        .and_then(|s| s.keys.first())
        .map(|k| (k.zone.clone(), k.port));
    let (zone, port) = first.unwrap_or_else(|| (".".into(), 53));
    let dns_metrics = DnsMetrics::new(&metrics_server_label(options.listen_override, port), &zone);
    let mut registry = Registry::default();
    let plugin_metrics = PluginMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    let pool = Arc::new(ClusterPool {
        reader,
        startup_timeout: options.startup_timeout,
        metrics: dns_metrics.clone(),
        instances: Mutex::new(Vec::new()),
    });
    let (loop_tx, loops) = mpsc::unbounded_channel::<String>();
    let factory_pool = pool.clone();
    let cluster: ClusterFactory =
        Arc::new(move |o: &ZoneOptions| factory_pool.get(o) as Arc<dyn Plugin>);
    let ctx = BuildContext {
        metrics: Some(plugin_metrics.clone()),
        cluster,
        files: Arc::new(RealFiles),
        on_loop: Arc::new(move |msg| {
            let _ = loop_tx.send(msg);
        }),
        listen_override: options.listen_override,
        node_local: options.node_local.clone(),
    };
    let mut state = State {
        options,
        pool,
        ctx,
        dns_metrics: dns_metrics.clone(),
        plugin_metrics,
        listeners: HashMap::new(),
        fingerprint: fingerprint(&cf.files),
        current: cf.clone(),
        control: CorefileControl::default(),
        prebound,
        plugin_names: Vec::new(),
    };
    let built = state.build(&cf).await;
    if let Err(e) = built
        .map_err(CorefileRunError::from)
        .and_then(|listeners| state.apply(listeners).map_err(CorefileRunError::from))
    {
        for (_, r) in state.listeners.drain() {
            r.task.abort();
        }
        state.pool.retain(&[]);
        return Err(e);
    }
    let control = state.control.clone();
    control.set_lameduck(state.options.lameduck.unwrap_or_else(|| lameduck(&cf)));
    let swaps: Arc<Vec<Arc<SwapRouter>>> =
        Arc::new(state.listeners.values().map(|r| r.swap.clone()).collect());
    if let Some(r) = &state.options.readiness {
        let _ = r.0.set((control.stopping.clone(), swaps.clone()));
    }
    let endpoints = http_endpoints(&cf, &dns_metrics, &registry, &control.stopping, swaps);
    let (http, _) = tokio::sync::watch::channel(endpoints);
    Ok(CorefileServer {
        state,
        dns_metrics,
        registry,
        control,
        http,
        loops,
    })
}

impl CorefileServer {
    /// The HTTP endpoints the Corefile in force configures; a reload that moves them sends
    /// the new set (the composition root re-binds them).
    pub fn listeners(&self) -> tokio::sync::watch::Receiver<Vec<http::Endpoint>> {
        self.http.subscribe()
    }

    /// The addresses of the DNS listeners serving now (the real port of a `:0` listen).
    pub fn dns_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self.state.listeners.keys().copied().collect();
        addrs.sort();
        addrs
    }

    /// The names of the plugins of the Corefile in force, in chain order, without repeats.
    pub fn plugin_names(&self) -> Vec<&'static str> {
        self.state.plugin_names.clone()
    }

    /// The stop request and lameduck, for the composition root.
    pub fn control(&self) -> CorefileControl {
        self.control.clone()
    }

    /// Follows the `reload` plugin until `shutdown` completes (or `loop` finds a forwarding
    /// loop: an error), then closes the DNS listeners. The lameduck period is the caller's:
    /// it calls [`CorefileControl::set_stopping`] and waits [`CorefileControl::lameduck`]
    /// before completing `shutdown`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), CorefileRunError> {
        let CorefileServer {
            mut state,
            dns_metrics,
            registry,
            control,
            http: http_tx,
            loops: mut loop_rx,
        } = self;
        // Reload: periodic checks with jitter, and file notifications.
        let mut watcher = reload_config(&state.current).map(|_| watch(&state.current.files));
        let next_check = |cf: &Corefile| {
            reload_config(cf).map(|r| {
                let jitter = r.jitter.as_secs_f64() * (fastrand::f64() * 2.0 - 1.0);
                Duration::from_secs_f64((r.interval.as_secs_f64() + jitter).max(1.0))
            })
        };
        let mut timer_for = next_check(&state.current);
        tokio::pin!(shutdown);
        let result = loop {
            let sleep = async {
                match timer_for {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                msg = loop_rx.recv() => {
                    if let Some(msg) = msg {
                        break Err(CorefileRunError::LoopDetected(msg));
                    }
                }
                _ = sleep => {}
                () = async {
                    match watcher.as_mut() {
                        Some(w) => w.changed().await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            if reload_config(&state.current).is_none() {
                timer_for = None;
                watcher = None;
                continue;
            }
            let files_before = state.current.files.clone();
            let old_http = http_addrs(&state.current);
            if state.reload().await {
                if http_addrs(&state.current) != old_http {
                    tracing::info!("health/ready/prometheus addresses changed: re-binding");
                }
                // Declared after every applied reload: `/ready` then covers the listeners in
                // force, and a set that could not be bound last time is tried again.
                let swaps: Arc<Vec<Arc<SwapRouter>>> =
                    Arc::new(state.listeners.values().map(|r| r.swap.clone()).collect());
                http_tx.send_replace(http_endpoints(
                    &state.current,
                    &dns_metrics,
                    &registry,
                    &control.stopping,
                    swaps,
                ));
            }
            if state.current.files != files_before || watcher.is_none() {
                watcher = Some(watch(&state.current.files));
            }
            timer_for = next_check(&state.current);
        };
        drop(watcher);
        for (_, r) in state.listeners.drain() {
            r.task.abort();
        }
        state.pool.retain(&[]);
        result
    }
}
