//! The one-binary node agent (`agentctl run`) and the operator tools around it.
//!
//! [`run`] starts one [`source`](crate::source), hence one shared cache, then the subsystems
//! chosen in [`AgentOptions`] (cluster DNS, IPVS proxy) on readers of that cache, and one admin
//! endpoint ([`admin`]) with `/status`, `/health`, `/ready` and merged `/metrics`. It binds and
//! serves the HTTP endpoints each [`Subsystem`] declares ([`Subsystem::listeners`]), re-binding
//! them when a subsystem declares a new set. A stop request (SIGTERM in `agentctl run`) marks
//! the agent and its subsystems not ready, serves through the longest lameduck period (the
//! agent's, or a subsystem's [`Subsystem::lameduck`] read at that moment), then stops every
//! subsystem (10 s each, counted after the lameduck) and returns; the proxy leaves the kernel
//! rules in place so traffic keeps flowing across a restart.
//!
//! - [`inspect`]: kubectl-like tables of the shared cache (`agentctl get`).
//! - [`status`]: the `/status` document and its text form (`agentctl status`).
//! - [`client`]: reading a running agent's admin endpoint.
//! - [`admin`]: the admin endpoint itself.
//! - [`dig`]: a small DNS client (`agentctl dns query`).
//! - [`programs`]: the stand-alone `svcnet-dns` and `svcnet-proxy` programs, composed here.
//! - [`proxy`]: the IPVS proxy subsystem (kernel or dry run).
//! - [`dns`]: the cluster DNS subsystem.
//! - [`nodelocal`]: node-local DNS (`--node-local-dns`): the link-local address, its link and NOTRACK rules.

pub mod admin;
pub mod client;
pub mod dig;
pub mod dns;
pub mod inspect;
pub mod nodelocal;
pub mod programs;
pub mod proxy;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cache::CacheReader;
use crate::model::Kind;
use crate::runtime::http::{BindError, Endpoint, EndpointSet};
use crate::source::{self, SourceConfig, SourceError};
use status::SubsystemStatus;

/// A subsystem running on the shared cache, as the admin endpoint sees it.
pub trait Subsystem: Send + Sync {
    /// Short name (`dns`, `proxy`): the key in `/status`.
    fn name(&self) -> &'static str;
    /// Current status.
    fn status(&self) -> SubsystemStatus;
    /// Appends the subsystem's metrics in OpenMetrics text (a trailing `# EOF` is removed).
    fn encode_metrics(&self, _out: &mut String) {}
    /// The subsystem's own admin routes, full paths under `/<name>/` (e.g. `/proxy/plan`),
    /// merged into the admin endpoint's route table.
    fn routes(&self) -> crate::runtime::http::Routes {
        crate::runtime::http::Routes::new()
    }
    /// The subsystem's own HTTP listeners (CoreDNS's health/ready/metrics, kube-proxy's
    /// healthz/metrics), which the agent binds and serves; a new value (a reload moved them)
    /// re-binds the changed ones. `None`: only the admin endpoint.
    fn listeners(&self) -> Option<watch::Receiver<Vec<Endpoint>>> {
        None
    }
    /// Told once the agent serves the initial listeners, with their bound addresses.
    fn listening(&self, _bound: &[(&'static str, SocketAddr)]) {}
    /// How long to keep serving after a stop request (read at stop time: a reload may change
    /// it). The agent waits the longest of its subsystems' before stopping them.
    fn lameduck(&self) -> Duration {
        Duration::ZERO
    }
    /// Told when a stop was requested, before the lameduck period: readiness turns false.
    fn stopping(&self) {}
}

/// A started subsystem: its status handle and its task, which ends after shutdown.
pub struct RunningSubsystem {
    /// Status, metrics and admin paths.
    pub handle: Arc<dyn Subsystem>,
    /// The task; it returns once the shutdown signal has been seen and the work wound down.
    pub task: JoinHandle<()>,
}

/// Starts a subsystem on a cache reader; it must stop when the shutdown flag turns true.
pub type LaunchFn = Box<
    dyn FnOnce(
            CacheReader,
            watch::Receiver<bool>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<RunningSubsystem, AgentError>> + Send>,
        > + Send,
>;

/// A subsystem before it starts: its name, the cache kinds it needs (the agent's source
/// watches their union) and how to start it.
pub struct SubsystemLauncher {
    name: &'static str,
    kinds: Vec<Kind>,
    /// Its Pods need only be this node's (node-local autopath).
    node_pods: bool,
    launch: LaunchFn,
}

impl SubsystemLauncher {
    /// A launcher of subsystem `name` needing `kinds` from the cache.
    pub fn new(name: &'static str, kinds: Vec<Kind>, launch: LaunchFn) -> Self {
        Self {
            name,
            kinds,
            node_pods: false,
            launch,
        }
    }

    /// The same launcher, declaring that the Pods it needs are only those on this node.
    pub fn with_node_pods(mut self) -> Self {
        self.node_pods = true;
        self
    }

    /// Whether the Pods it needs are only those on this node.
    pub fn node_pods(&self) -> bool {
        self.node_pods
    }

    /// The subsystem's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The cache kinds it needs.
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }
}

/// Whether Pods can be watched on this node only: some launcher needs Pods, and every one
/// that does declares [`SubsystemLauncher::with_node_pods`] (`extra` needing Pods: all).
fn pods_on_node_only(extra: &[Kind], launchers: &[SubsystemLauncher]) -> bool {
    let mut needing = launchers.iter().filter(|l| l.kinds.contains(&Kind::Pod));
    !extra.contains(&Kind::Pod) && needing.clone().next().is_some() && needing.all(|l| l.node_pods)
}

/// The union of `extra` and every launcher's kinds, in first-seen order.
fn union_of_kinds(extra: &[Kind], launchers: &[SubsystemLauncher]) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = Vec::new();
    for k in extra
        .iter()
        .chain(launchers.iter().flat_map(|l| l.kinds.iter()))
    {
        if !kinds.contains(k) {
            kinds.push(*k);
        }
    }
    kinds
}

/// What `agentctl run` starts.
pub struct AgentOptions {
    /// The one source of cluster state.
    pub source: SourceConfig,
    /// Kinds the source watches besides those the subsystems declare.
    pub kinds: Vec<Kind>,
    /// This node's name: when `kinds` has [`Kind::Node`], the API source watches only this
    /// Node (field selector `metadata.name`), for its zone label (topology hints).
    pub node_name: Option<String>,
    /// Admin endpoint address; `None` = no admin endpoint.
    pub admin: Option<SocketAddr>,
    /// The subsystems, started in order once the source is running.
    pub subsystems: Vec<SubsystemLauncher>,
    /// How long to keep serving after a stop request while reporting not ready (DNS lameduck).
    pub lameduck: Duration,
}

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The source failed to start.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// The admin endpoint could not bind.
    #[error("admin endpoint {addr}: {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// A subsystem's HTTP listener could not be bound.
    #[error(transparent)]
    HttpBind(BindError),
    /// A subsystem failed to start.
    #[error("{subsystem}: {reason}")]
    Subsystem {
        /// Which one.
        subsystem: &'static str,
        /// Why.
        reason: String,
    },
}

/// Handles to a started agent, for callers that need the admin address (tests, embedding).
pub struct Started {
    /// Where the admin endpoint listens (with the real port when `:0` was asked for).
    pub admin: Option<SocketAddr>,
    /// The shared cache.
    pub reader: CacheReader,
}

/// Runs the agent until `stop` completes, then shuts down cleanly.
pub async fn run(options: AgentOptions, stop: impl Future<Output = ()>) -> Result<(), AgentError> {
    run_with(options, stop, |_| {}).await
}

/// Like [`run`], calling `on_started` once everything is listening.
pub async fn run_with(
    options: AgentOptions,
    stop: impl Future<Output = ()>,
    on_started: impl FnOnce(Started),
) -> Result<(), AgentError> {
    // One rustls provider for the process (kube's client and the DoT/DoH code share it).
    crate::tls::install_crypto_provider();
    let kinds = union_of_kinds(&options.kinds, &options.subsystems);
    let scope = source::kube::WatchScope {
        node: options.node_name.clone(),
        pods_on_node: pods_on_node_only(&options.kinds, &options.subsystems),
    };
    let src = source::start_for_node(&options.source, &kinds, scope).await?;
    let reader = src.reader();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut running = Vec::new();
    for launch in options.subsystems {
        running.push((launch.launch)(reader.clone(), shutdown_rx.clone()).await?);
    }
    let handles: Vec<Arc<dyn Subsystem>> = running.iter().map(|r| r.handle.clone()).collect();
    let mut listener_tasks = Vec::new();
    for h in &handles {
        if let Some(declared) = h.listeners() {
            listener_tasks.push(serve_listeners(h.clone(), declared).await?);
        }
    }
    let state = Arc::new(admin::AdminState::new(
        reader.clone(),
        src.status_handle(),
        handles,
    ));

    let mut admin_addr = None;
    let mut admin_task = None;
    if let Some(addr) = options.admin {
        let listener = admin::bind(addr)
            .await
            .map_err(|source| AgentError::AdminBind { addr, source })?;
        admin_addr = listener.local_addr().ok();
        admin_task = Some(tokio::spawn(admin::serve(
            listener,
            state.clone(),
            shutdown_rx.clone(),
        )));
    }
    tracing::info!(
        source = %options.source.describe(),
        admin = ?admin_addr,
        subsystems = ?running.iter().map(|r| r.handle.name()).collect::<Vec<_>>(),
        "agent started"
    );
    on_started(Started {
        admin: admin_addr,
        reader: reader.clone(),
    });

    // Record the initial sync time for /status.
    let sync_state = state.clone();
    let mut sync_reader = reader.clone();
    let sync_task = tokio::spawn(async move {
        if sync_reader
            .wait_synced(Duration::from_secs(86_400 * 365))
            .await
        {
            sync_state.mark_synced();
            tracing::info!("source synced");
        }
    });

    stop.await;
    // Through the longest lameduck of the agent and of the subsystems still running (one that
    // ended by itself serves nothing any more), read now: a reload may have changed it.
    let lameduck = running
        .iter()
        .filter(|r| !r.task.is_finished())
        .map(|r| r.handle.lameduck())
        .fold(options.lameduck, Duration::max);
    tracing::info!(lameduck = ?lameduck, "stopping: not ready from now on");
    state.set_stopping();
    for r in &running {
        r.handle.stopping();
    }
    if !lameduck.is_zero() {
        tracing::info!(lameduck = ?lameduck, "shutting down: lameduck, still answering");
        tokio::time::sleep(lameduck).await;
    }
    // The 10 s limit for each subsystem counts from the end of the lameduck.
    let _ = shutdown_tx.send(true);
    for r in running {
        let name = r.handle.name();
        if tokio::time::timeout(Duration::from_secs(10), r.task)
            .await
            .is_err()
        {
            tracing::warn!(subsystem = name, "did not stop within 10 s");
        }
    }
    for t in listener_tasks {
        t.abort();
    }
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    sync_task.abort();
    drop(src);
    tracing::info!("agent stopped");
    Ok(())
}

/// Binds the listeners `subsystem` declares now (an error stops the start), tells it the
/// bound addresses, and follows its later declarations in a task: a set that cannot be bound
/// is logged and the previous one keeps serving. Aborting the task closes the listeners.
async fn serve_listeners(
    subsystem: Arc<dyn Subsystem>,
    mut declared: watch::Receiver<Vec<Endpoint>>,
) -> Result<JoinHandle<()>, AgentError> {
    let mut set = EndpointSet::new();
    let initial = declared.borrow_and_update().clone();
    set.apply(&initial).await.map_err(AgentError::HttpBind)?;
    let bound = set.bound();
    if !bound.is_empty() {
        tracing::info!(subsystem = subsystem.name(), endpoints = ?bound, "HTTP endpoints served");
    }
    subsystem.listening(&bound);
    Ok(tokio::spawn(async move {
        while declared.changed().await.is_ok() {
            let next = declared.borrow_and_update().clone();
            match set.apply(&next).await {
                Ok(()) => tracing::info!(
                    subsystem = subsystem.name(),
                    endpoints = ?set.bound(),
                    "HTTP endpoints now served"
                ),
                Err(e) => tracing::error!(
                    subsystem = subsystem.name(),
                    "{e}: the previous HTTP endpoints keep serving"
                ),
            }
        }
        // The subsystem is gone: keep serving until the agent aborts this task.
        std::future::pending::<()>().await;
        drop(set);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_watches_the_union_of_what_subsystems_declare() {
        let launcher = |name, kinds| {
            SubsystemLauncher::new(
                name,
                kinds,
                Box::new(|_, _| Box::pin(async { unreachable!("not started") })),
            )
        };
        let launchers = [
            launcher("dns", vec![Kind::Service, Kind::EndpointSlice, Kind::Pod]),
            launcher(
                "proxy",
                vec![Kind::Service, Kind::EndpointSlice, Kind::Node],
            ),
        ];
        assert_eq!(launchers[1].name(), "proxy");
        assert_eq!(launchers[0].kinds().len(), 3);
        assert_eq!(
            union_of_kinds(&[Kind::Service], &launchers),
            vec![Kind::Service, Kind::EndpointSlice, Kind::Pod, Kind::Node]
        );
    }

    #[test]
    fn pods_are_watched_on_this_node_only_when_every_user_says_so() {
        let launcher = |kinds: Vec<Kind>| {
            SubsystemLauncher::new(
                "dns",
                kinds,
                Box::new(|_, _| Box::pin(async { unreachable!("not started") })),
            )
        };
        let node = || launcher(vec![Kind::Service, Kind::Pod]).with_node_pods();
        let all = || launcher(vec![Kind::Service, Kind::Pod]);
        let none = || launcher(vec![Kind::Service, Kind::Node]);
        assert!(node().node_pods());
        assert!(pods_on_node_only(&[], &[node(), none()]));
        assert!(!pods_on_node_only(&[], &[node(), all()]));
        assert!(!pods_on_node_only(&[Kind::Pod], &[node()]));
        assert!(!pods_on_node_only(&[], &[none()]));
    }

    /// A subsystem with one declared `/ready` endpoint and a lameduck, recording when the
    /// agent marks it stopping and when its task sees the shutdown.
    struct Ducking {
        endpoints: watch::Receiver<Vec<Endpoint>>,
        stopping: crate::runtime::signal::Stopping,
        lameduck: Duration,
        bound: std::sync::Mutex<Vec<(&'static str, SocketAddr)>>,
    }

    impl Subsystem for Ducking {
        fn name(&self) -> &'static str {
            "ducking"
        }
        fn status(&self) -> SubsystemStatus {
            SubsystemStatus {
                ready: !self.stopping.is_set(),
                summary: String::new(),
                applied_generation: None,
                syncs: 0,
                last_sync_seconds: None,
                query_rate_per_second: None,
                config_files: Vec::new(),
                last_reload_error: None,
                last_error: None,
                details: Default::default(),
            }
        }
        fn listeners(&self) -> Option<watch::Receiver<Vec<Endpoint>>> {
            Some(self.endpoints.clone())
        }
        fn listening(&self, bound: &[(&'static str, SocketAddr)]) {
            *self.bound.lock().unwrap() = bound.to_vec();
        }
        fn lameduck(&self) -> Duration {
            self.lameduck
        }
        fn stopping(&self) {
            self.stopping.set();
        }
    }

    fn ducking(
        addr: SocketAddr,
        lameduck: Duration,
        shutdown_seen: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
        handle_out: tokio::sync::oneshot::Sender<Arc<Ducking>>,
    ) -> SubsystemLauncher {
        use crate::runtime::http::{Reply, Routes};
        SubsystemLauncher::new(
            "ducking",
            vec![Kind::Service],
            Box::new(move |_, mut shutdown| {
                Box::pin(async move {
                    let stopping = crate::runtime::signal::Stopping::new();
                    let s = stopping.clone();
                    let routes = Routes::new().route("/ready", move |_| {
                        if s.is_set() {
                            Reply::text(hyper::StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                        } else {
                            Reply::text(hyper::StatusCode::OK, "OK")
                        }
                    });
                    let (declare, endpoints) = watch::channel(vec![Endpoint {
                        what: "ready",
                        addr,
                        routes,
                        required: true,
                    }]);
                    let handle = Arc::new(Ducking {
                        endpoints,
                        stopping,
                        lameduck,
                        bound: Default::default(),
                    });
                    let _ = handle_out.send(handle.clone());
                    let task = tokio::spawn(async move {
                        let _declare = declare;
                        let _ = shutdown.wait_for(|s| *s).await;
                        *shutdown_seen.lock().unwrap() = Some(std::time::Instant::now());
                    });
                    Ok(RunningSubsystem { handle, task })
                })
            }),
        )
    }

    async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        out.get(9..12)?.parse().ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_agent_serves_declared_listeners_through_the_longest_lameduck() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
        let lameduck = Duration::from_millis(1500);
        let seen = Arc::new(std::sync::Mutex::new(None));
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let options = AgentOptions {
            source: SourceConfig::Manifests(dir),
            kinds: Vec::new(),
            node_name: None,
            admin: None,
            subsystems: vec![ducking(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                lameduck,
                seen.clone(),
                handle_tx,
            )],
            // The subsystem's own lameduck is longer: it wins.
            lameduck: Duration::from_millis(100),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(run(options, async {
            let _ = stop_rx.await;
        }));
        let handle = handle_rx.await.unwrap();
        let mut ready_at = None;
        for _ in 0..100 {
            if let Some(&(what, addr)) = handle.bound.lock().unwrap().first() {
                assert_eq!(what, "ready");
                assert_ne!(addr.port(), 0, "the bound port is reported");
                ready_at = Some(addr);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ready_at = ready_at.expect("told the bound address");
        assert_eq!(http_status(ready_at, "/ready").await, Some(200));
        let stopped = std::time::Instant::now();
        stop_tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            handle.stopping.is_set(),
            "told to stop before the lameduck ends"
        );
        assert_eq!(
            http_status(ready_at, "/ready").await,
            Some(503),
            "still served, not ready, during the lameduck"
        );
        assert!(
            seen.lock().unwrap().is_none(),
            "not shut down during the lameduck"
        );
        tokio::time::timeout(Duration::from_secs(10), agent)
            .await
            .expect("stops")
            .unwrap()
            .unwrap();
        let shut = seen
            .lock()
            .unwrap()
            .expect("the subsystem saw the shutdown");
        assert!(
            shut.duration_since(stopped) >= lameduck,
            "shut down {:?} after the stop request, before the lameduck ended",
            shut.duration_since(stopped)
        );
        assert_eq!(
            http_status(ready_at, "/ready").await,
            None,
            "listener closed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_declared_listener_that_cannot_bind_fails_the_start() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let (handle_tx, _handle_rx) = tokio::sync::oneshot::channel();
        let options = AgentOptions {
            source: SourceConfig::Manifests(dir),
            kinds: Vec::new(),
            node_name: None,
            admin: None,
            subsystems: vec![ducking(addr, Duration::ZERO, Default::default(), handle_tx)],
            lameduck: Duration::ZERO,
        };
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            run(options, std::future::pending()),
        )
        .await
        .expect("fails at once")
        .unwrap_err();
        assert!(
            matches!(&err, AgentError::HttpBind(b) if b.addr == addr && b.what == "ready"),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("binding the ready endpoint on {addr}")),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_with_reports_the_admin_address_and_stops_on_request() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
        let options = AgentOptions {
            source: SourceConfig::Manifests(dir),
            kinds: Vec::new(),
            node_name: None,
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            subsystems: vec![proxy::launcher(proxy::ProxyOptions {
                dry_run: true,
                node_name: Some("node-a".into()),
                sync_timeout: Duration::from_secs(10),
                ..Default::default()
            })],
            lameduck: Duration::ZERO,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let agent = tokio::spawn(run_with(
            options,
            async {
                let _ = stop_rx.await;
            },
            move |started| {
                let _ = addr_tx.send(started.admin);
            },
        ));
        let admin = addr_rx.await.unwrap().expect("admin address");
        assert_ne!(admin.port(), 0, "the real port is reported");
        let mut status = None;
        for _ in 0..100 {
            let st = client::fetch_status(admin, Duration::from_secs(2))
                .await
                .unwrap();
            if st.ready {
                status = Some(st);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = status.expect("ready within 5 s");
        assert!(status.source.synced);
        assert_eq!(status.cache.services, 10);
        let proxy = &status.subsystems["proxy"];
        assert!(proxy.ready && proxy.syncs >= 1);
        let (code, plan) = client::get(admin, "/proxy/plan", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(code, 200);
        assert!(plan.contains("TCP  10.96.10.10:80 rr"), "{plan}");
        let (code, _) = client::get(admin, "/nope", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(code, 404);
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), agent)
            .await
            .expect("stops within 10 s")
            .unwrap()
            .unwrap();
        assert!(
            client::fetch_status(admin, Duration::from_secs(1))
                .await
                .is_err(),
            "admin endpoint closed after stop"
        );
    }
}
