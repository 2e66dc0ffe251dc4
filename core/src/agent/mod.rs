//! The one-binary node agent (`agentctl run`) and the operator tools around it.
//!
//! [`run`] starts one [`source`](crate::source), hence one shared cache, then the subsystems
//! chosen in [`AgentOptions`] (cluster DNS, IPVS proxy) on readers of that cache, and one admin
//! endpoint ([`admin`]) with `/status`, `/health`, `/ready` and merged `/metrics`. A stop
//! request (SIGTERM in `agentctl run`) marks the agent not ready, lets DNS answer through its
//! lameduck period, stops every subsystem and returns; the proxy leaves the kernel rules in
//! place so traffic keeps flowing across a restart.
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
    launch: LaunchFn,
}

impl SubsystemLauncher {
    /// A launcher of subsystem `name` needing `kinds` from the cache.
    pub fn new(name: &'static str, kinds: Vec<Kind>, launch: LaunchFn) -> Self {
        Self {
            name,
            kinds,
            launch,
        }
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
    let src = source::start_for_node(&options.source, &kinds, options.node_name.as_deref()).await?;
    let reader = src.reader();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut running = Vec::new();
    for launch in options.subsystems {
        running.push((launch.launch)(reader.clone(), shutdown_rx.clone()).await?);
    }
    let handles: Vec<Arc<dyn Subsystem>> = running.iter().map(|r| r.handle.clone()).collect();
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
    tracing::info!(lameduck = ?options.lameduck, "stopping: not ready from now on");
    state.set_stopping();
    if !options.lameduck.is_zero() {
        tokio::time::sleep(options.lameduck).await;
    }
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
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    sync_task.abort();
    drop(src);
    tracing::info!("agent stopped");
    Ok(())
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
