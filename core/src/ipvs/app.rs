//! The `svcnet-proxy` program on a cache reader: config file, kernel backends, control loop
//! (`run_proxy_reporting`, whose health and metrics endpoints the composition root serves);
//! and `--dry-run`, which computes the plan without touching the kernel. Starting the cluster
//! source and waiting for the stop signal is the composition root's job
//! ([`crate::agent::programs`]).

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::backend::{AddressBackend, BackendError};
use super::config::ProxyConfig;
use super::config::file::{ConfigError, load};
use super::config::watch::watch_config;
use super::desired::{NodeInfo, build};
use super::netlink::{NetlinkAddresses, NetlinkIpvs};
use super::reconcile::Reconciler;
use super::run::{ProxyError, RunOptions, run};
use crate::cache::CacheReader;
use crate::model::Kind;

/// Kinds the proxy needs from the source without a node name.
pub const KINDS: [Kind; 2] = [Kind::Service, Kind::EndpointSlice];

/// Kinds the proxy needs when it runs as node `node_name`: with a name, also its own Node
/// object (watched alone, by field selector), whose `topology.kubernetes.io/zone` label
/// topology-aware routing reads. Without a name, logs once that hints are ignored.
pub fn kinds_for(node_name: Option<&str>) -> Vec<Kind> {
    let mut kinds = KINDS.to_vec();
    match node_name {
        Some(_) => kinds.push(Kind::Node),
        None => tracing::info!(
            "no node name (--node-name or hostnameOverride): topology hints of EndpointSlices \
             are ignored and every ready endpoint is used"
        ),
    }
    kinds
}

/// Errors of the proxy program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The configuration file is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cache did not sync.
    #[error("the cluster source did not sync within {0:?}")]
    NotSynced(Duration),
    /// The kernel backends failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The control loop stopped with an error.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The proxy's task ended without a result (it panicked).
    #[error("the proxy task ended without a result")]
    Stopped,
}

/// What `svcnet-proxy` was asked to do.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// `--config FILE`: a KubeProxyConfiguration, watched live.
    pub config_file: Option<PathBuf>,
    /// `--node-name`.
    pub node_name: Option<String>,
    /// `--node-ip` (repeatable): node addresses instead of the kernel's.
    pub node_addresses: Option<Vec<IpAddr>>,
    /// Program once and exit.
    pub once: bool,
    /// How long to wait for the source's initial lists.
    pub sync_timeout: Duration,
}

impl AppOptions {
    /// Default options: no configuration file, node name or addresses; 60 s sync timeout.
    pub fn new() -> Self {
        Self {
            config_file: None,
            node_name: None,
            node_addresses: None,
            once: false,
            sync_timeout: Duration::from_secs(60),
        }
    }

    /// The configuration to start with: the `--config` file (its ignored fields logged) or
    /// the defaults.
    pub(crate) fn load_config(&self) -> Result<ProxyConfig, AppError> {
        match &self.config_file {
            None => Ok(ProxyConfig::default()),
            Some(p) => {
                let loaded = load(p)?;
                if !loaded.ignored.is_empty() {
                    tracing::info!(fields = ?loaded.ignored, "configuration fields without effect in svcnet-proxy");
                }
                Ok(loaded.config)
            }
        }
    }

    /// The node name the source watches: the configuration's `hostnameOverride`, else
    /// `--node-name`.
    pub(crate) fn source_node_name(&self, config: &ProxyConfig) -> Option<String> {
        config
            .hostname_override
            .clone()
            .or_else(|| self.node_name.clone())
    }
}

impl Default for AppOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// The kernel's local addresses (read over rtnetlink, no privileges needed) as node addresses
/// for node ports in a dry run; none if they cannot be read (logged).
pub(crate) fn kernel_node_addresses() -> Vec<IpAddr> {
    match NetlinkAddresses::open().and_then(|mut a| a.local_addresses()) {
        Ok(addresses) => addresses,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the node's addresses: no node-port entries");
            Vec::new()
        }
    }
}

/// Computes the IPVS table for the cluster of `reader` and renders it as `ipvsadm -Ln` would
/// print it once programmed; touches nothing (node addresses are read, unprivileged, unless
/// given).
pub async fn dry_run(
    reader: CacheReader,
    config: ProxyConfig,
    options: &AppOptions,
) -> Result<String, AppError> {
    Ok(dry_run_plan(reader, config, options).await?.table)
}

/// Everything a run would program, rendered: the IPVS table and the host side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunPlan {
    /// The IPVS table, as `ipvsadm -Ln` prints it.
    pub table: String,
    /// `kube-ipvs0` addresses, ipsets and iptables rules.
    pub host: super::render::HostPlan,
}

impl DryRunPlan {
    /// All sections, each under a `# ...` heading (`--dry-run --show=all`).
    pub fn all(&self) -> String {
        format!(
            "# IPVS table (ipvsadm -Ln)\n{}\n# kube-ipvs0 addresses\n{}\n# ipsets (ipset save)\n{}\n# iptables rules\n{}",
            self.table, self.host.addresses, self.host.ipsets, self.host.iptables
        )
    }
}

/// [`dry_run`] with the host side too: computes the table and the `kube-ipvs0` addresses,
/// ipset contents and iptables rules a run would program; touches nothing.
pub(crate) async fn dry_run_plan(
    mut reader: CacheReader,
    config: ProxyConfig,
    options: &AppOptions,
) -> Result<DryRunPlan, AppError> {
    let node_name = options.source_node_name(&config);
    if !reader.wait_synced(options.sync_timeout).await {
        return Err(AppError::NotSynced(options.sync_timeout));
    }
    let local_addresses = match &options.node_addresses {
        Some(a) => a.clone(),
        None => kernel_node_addresses(),
    };
    let node = NodeInfo {
        node_name: node_name.map(Arc::from),
        local_addresses,
    };
    let snapshot = reader.snapshot();
    let desired = build(&snapshot, &config, &node);
    let extras = super::extras::HostExtras::of_view(desired.view());
    Ok(DryRunPlan {
        table: super::render::desired(&desired),
        host: super::render::host_plan(&desired, &config, &extras, &node),
    })
}

/// Runs the proxy on `reader` against the kernel until `stop` completes (or once, with
/// `once`), starting from `config` and following the `--config` file; reports its syncs to
/// `status` and `metrics` (built by [`status_with_metrics`](super::serve::status_with_metrics))
/// and declares its `/healthz` and `/metrics` endpoints to `endpoints`, following the
/// configuration, for the composition root to serve.
pub(crate) async fn run_proxy_reporting(
    reader: CacheReader,
    config: ProxyConfig,
    options: AppOptions,
    stop: impl Future<Output = ()> + Send + 'static,
    status: super::run::StatusHandle,
    metrics: Arc<super::serve::ProxyMetrics>,
    endpoints: watch::Sender<Vec<crate::runtime::http::Endpoint>>,
) -> Result<(), AppError> {
    let ipvs = NetlinkIpvs::open()?;
    let addresses = NetlinkAddresses::open()?;
    let reconciler = Reconciler::new(Box::new(ipvs), Box::new(addresses));
    let host = super::host::KernelHost::new();
    let (config_tx, config_rx) = watch::channel(config);
    let _watcher = options
        .config_file
        .clone()
        .map(|p| watch_config(p, config_tx.clone(), None));
    // Health and metrics endpoints follow the config live: a changed bind address rebinds.
    let servers =
        super::serve::declare_following(config_rx.clone(), status.clone(), metrics, endpoints);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        tracing::info!("shutting down; IPVS rules stay in place");
        let _ = shutdown_tx.send(true);
    });
    // Health-check node ports of `externalTrafficPolicy: Local` load balancers.
    let (view_feed, views) = super::view::view_feed();
    let health_checks = (!options.once).then(|| {
        super::healthcheck::spawn(
            views,
            config_rx.clone(),
            super::healthcheck::HealthCheckOptions {
                node_addresses: options.node_addresses.clone(),
                listen: None,
                proxy_healthy: super::healthcheck::proxy_health(status.clone(), config_rx.clone()),
            },
        )
    });
    let run_options = RunOptions {
        node_name: options.node_name.as_deref().map(Arc::from),
        node_addresses: options.node_addresses.clone(),
        sync_timeout: options.sync_timeout,
        once: options.once,
        view_feed: Some(view_feed),
    };
    let result = run(
        reader,
        reconciler,
        Some(Box::new(host)),
        config_rx,
        run_options,
        status,
        shutdown_rx,
    )
    .await;
    servers.abort();
    if let Some(h) = health_checks {
        h.abort();
    }
    result.map_err(AppError::from)
}
