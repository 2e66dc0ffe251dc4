//! The IPVS proxy as an agent subsystem: [`crate::ipvs::run::run`] on the shared cache, against
//! the kernel over netlink, or — with `dry_run` — against an in-memory kernel
//! ([`MemoryIpvs`](crate::ipvs::memory::MemoryIpvs)) whose table is served at `/proxy/plan`, and
//! the host side of the plan ([`HostPlan`](crate::ipvs::render::HostPlan)) at `/proxy/addresses`,
//! `/proxy/ipsets` and `/proxy/iptables`.
//!
//! With a kernel, host setup (sysctls, ipsets, iptables) is the IPVS helper's
//! [`KernelHost`](crate::ipvs::host::KernelHost). The `KubeProxyConfiguration` file is re-read
//! when it changes (the shared [`FileWatch`](crate::runtime::watch::FileWatch): notifications plus
//! a check every second, following symlinks, so ConfigMap `..data` swaps count);
//! an invalid file keeps the running configuration and is reported as the last reload error.
//! Metrics are the IPVS helper's [`ProxyMetrics`](crate::ipvs::serve::ProxyMetrics), merged into
//! the admin endpoint's `/metrics`; with a kernel, the configuration's `healthzBindAddress`
//! (`/healthz`, default `0.0.0.0:10256`) and `metricsBindAddress` (`/metrics`, default
//! `127.0.0.1:10249`) are also served as `svcnet-proxy` and kube-proxy serve them, following
//! the configuration live. A dry run serves neither (nor health-check node ports), so it never
//! takes a port from a kube-proxy running beside it; it reads the node's addresses from the
//! kernel (unprivileged) unless given, so its plan has the node-port virtual servers
//! `svcnet-proxy --dry-run` shows.
//!
//! On shutdown the control loop stops; the kernel rules stay as programmed, so traffic keeps
//! flowing across an agent restart (the next start adopts them).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::status::SubsystemStatus;
use super::{AgentError, RunningSubsystem, Subsystem, SubsystemLauncher};
use crate::cache::CacheReader;
use crate::ipvs::backend::IpvsBackend as _;
use crate::ipvs::config::ProxyConfig;
use crate::ipvs::config::watch::watch_config;
use crate::ipvs::host::KernelHost;
use crate::ipvs::memory::{MemoryAddresses, MemoryIpvs};
use crate::ipvs::netlink::{NetlinkAddresses, NetlinkIpvs};
use crate::ipvs::reconcile::Reconciler;
use crate::ipvs::run::{HostSetup, RunOptions, StatusHandle};
use crate::ipvs::serve::{ProxyMetrics, status_with_metrics};
use crate::runtime::http::{Reply, Routes};
use hyper::StatusCode;

/// Options of the proxy subsystem.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Program an in-memory table instead of the kernel (no privileges needed).
    pub dry_run: bool,
    /// A `KubeProxyConfiguration` file; `None` = defaults.
    pub config_file: Option<PathBuf>,
    /// This node's name (for `Local` traffic policies).
    pub node_name: Option<String>,
    /// Node addresses for node ports; `None` = read from the kernel (a dry run reads them once,
    /// as `svcnet-proxy --dry-run` does).
    pub node_addresses: Option<Vec<IpAddr>>,
    /// How long to wait for the cache to sync.
    pub sync_timeout: Duration,
}

struct ProxySubsystem {
    status: StatusHandle,
    metrics: Arc<ProxyMetrics>,
    dry_run: Option<MemoryIpvs>,
    /// The dry run's host plan (addresses, ipsets, iptables), rendered after syncs.
    host_plan: Option<HostPlanSlot>,
    config_file: Option<String>,
    ignored_fields: Vec<String>,
    reload_error: watch::Receiver<Option<String>>,
    exit_error: Arc<Mutex<Option<String>>>,
    /// `/healthz` and `/metrics` as the configuration says (none in a dry run).
    endpoints: watch::Receiver<Vec<crate::runtime::http::Endpoint>>,
}

impl Subsystem for ProxySubsystem {
    fn name(&self) -> &'static str {
        "proxy"
    }

    fn status(&self) -> SubsystemStatus {
        let s = self.status.get();
        let mut details = std::collections::BTreeMap::new();
        details.insert("virtual_servers".into(), s.services.into());
        details.insert("real_servers".into(), s.dests.into());
        details.insert("full_syncs".into(), s.full_syncs.into());
        details.insert("scheduler".into(), s.scheduler.clone().into());
        if !self.ignored_fields.is_empty() {
            details.insert(
                "ignored_config_fields".into(),
                self.ignored_fields.join(", ").into(),
            );
        }
        let exit_error = self.exit_error.lock().ok().and_then(|e| e.clone());
        SubsystemStatus {
            ready: s.syncs > 0 && s.last_error.is_none() && exit_error.is_none(),
            summary: if self.dry_run.is_some() {
                "IPVS proxy, dry run (in-memory table at /proxy/plan)".into()
            } else {
                "IPVS proxy".into()
            },
            applied_generation: None,
            syncs: s.syncs,
            last_sync_seconds: s.last_sync.map(|_| s.last_duration.as_secs_f64()),
            query_rate_per_second: None,
            config_files: self.config_file.iter().cloned().collect(),
            last_reload_error: self.reload_error.borrow().clone(),
            last_error: exit_error.or(s.last_error),
            details,
        }
    }

    fn encode_metrics(&self, out: &mut String) {
        out.push_str(&self.metrics.encode());
    }

    /// A dry run serves its plan: `/proxy/plan` (the in-memory IPVS table) and
    /// `/proxy/addresses`, `/proxy/ipsets`, `/proxy/iptables` (the host side).
    fn listeners(&self) -> Option<watch::Receiver<Vec<crate::runtime::http::Endpoint>>> {
        Some(self.endpoints.clone())
    }

    fn routes(&self) -> Routes {
        let (Some(memory), Some(slot)) = (self.dry_run.clone(), self.host_plan.clone()) else {
            return Routes::new();
        };
        const TEXT: &str = "text/plain; charset=utf-8";
        let mut routes = Routes::new().route("/proxy/plan", move |_| {
            let mut table = memory.clone();
            let text = match table.dump() {
                Ok(dump) => crate::ipvs::render::dump(&dump, false),
                Err(e) => format!("error: {e}\n"),
            };
            Reply::new(StatusCode::OK, TEXT, text)
        });
        for view in ["addresses", "ipsets", "iptables"] {
            let slot = slot.clone();
            routes = routes.route(format!("/proxy/{view}"), move |_| {
                let plan = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let text = match plan {
                    None => "no sync yet\n".to_string(),
                    Some(p) => match view {
                        "addresses" => p.addresses,
                        "ipsets" => p.ipsets,
                        _ => p.iptables,
                    },
                };
                Reply::new(StatusCode::OK, TEXT, text)
            });
        }
        routes
    }
}

type HostPlanSlot = Arc<Mutex<Option<crate::ipvs::render::HostPlan>>>;

/// A launcher of the proxy subsystem for [`AgentOptions::subsystems`](super::AgentOptions).
/// It needs Services and EndpointSlices, and with a node name its own Node (topology hints).
pub fn launcher(options: ProxyOptions) -> SubsystemLauncher {
    let kinds = crate::ipvs::app::kinds_for(options.node_name.as_deref());
    SubsystemLauncher::new(
        "proxy",
        kinds,
        Box::new(
            move |reader: CacheReader, shutdown: watch::Receiver<bool>| {
                Box::pin(async move { start(options, reader, shutdown).await })
            },
        ),
    )
}

async fn start(
    options: ProxyOptions,
    reader: CacheReader,
    shutdown: watch::Receiver<bool>,
) -> Result<RunningSubsystem, AgentError> {
    let fail = |reason: String| AgentError::Subsystem {
        subsystem: "proxy",
        reason,
    };
    let (config, ignored) = match &options.config_file {
        Some(path) => {
            let loaded = crate::ipvs::config::file::load(path).map_err(|e| fail(e.to_string()))?;
            (loaded.config, loaded.ignored)
        }
        None => (ProxyConfig::default(), Vec::new()),
    };
    let mut host_plan = None;
    let (reconciler, memory, node_addresses, host) = if options.dry_run {
        let memory = MemoryIpvs::new();
        let addrs = options
            .node_addresses
            .clone()
            .unwrap_or_else(crate::ipvs::app::kernel_node_addresses);
        let reconciler = Reconciler::new(
            Box::new(memory.clone()),
            Box::new(MemoryAddresses::new(addrs.clone())),
        );
        // Renders what the host setup would program, without touching the host.
        let plan = crate::ipvs::render::PlanHost::new();
        host_plan = Some(plan.slot());
        let host = Some(Box::new(plan) as Box<dyn HostSetup>);
        (reconciler, Some(memory), Some(addrs), host)
    } else {
        let ipvs = NetlinkIpvs::open().map_err(|e| fail(e.to_string()))?;
        let addrs = NetlinkAddresses::open().map_err(|e| fail(e.to_string()))?;
        (
            Reconciler::new(Box::new(ipvs), Box::new(addrs)),
            None,
            options.node_addresses.clone(),
            Some(Box::new(KernelHost::new()) as Box<dyn HostSetup>),
        )
    };
    let metrics = Arc::new(ProxyMetrics::new());
    let status = status_with_metrics(metrics.clone());
    let (config_tx, config_rx) = watch::channel(config);
    let (reload_tx, reload_error) = watch::channel(None);
    let watcher = options
        .config_file
        .clone()
        .map(|path| watch_config(path, config_tx.clone(), Some(reload_tx)));
    // The control loop hands each step of its per-Service view to the health-check task.
    let (view_feed, views) = crate::ipvs::view::view_feed();
    let run_options = RunOptions {
        node_name: options.node_name.as_deref().map(Arc::from),
        node_addresses,
        sync_timeout: options.sync_timeout,
        once: false,
        view_feed: Some(view_feed),
    };
    let exit_error = Arc::new(Mutex::new(None));
    let (declare, endpoints) = watch::channel(Vec::new());
    let handle = Arc::new(ProxySubsystem {
        status: status.clone(),
        metrics: metrics.clone(),
        reload_error,
        dry_run: memory,
        host_plan,
        config_file: options
            .config_file
            .as_ref()
            .map(|p| p.display().to_string()),
        ignored_fields: ignored,
        exit_error: exit_error.clone(),
        endpoints,
    });
    // Health-check node ports of `externalTrafficPolicy: Local` load balancers (not in a dry
    // run, which must not take ports from a kube-proxy running beside it).
    let health_checks = (!options.dry_run).then(|| {
        crate::ipvs::healthcheck::spawn(
            views,
            config_rx.clone(),
            crate::ipvs::healthcheck::HealthCheckOptions {
                node_addresses: options.node_addresses.clone(),
                listen: None,
                proxy_healthy: crate::ipvs::healthcheck::proxy_health(
                    status.clone(),
                    config_rx.clone(),
                ),
            },
        )
    });
    // kube-proxy's /healthz and /metrics ports, as the configuration says (not in a dry run),
    // served by the agent.
    let servers = (!options.dry_run).then(|| {
        crate::ipvs::serve::declare_following(
            config_rx.clone(),
            status.clone(),
            metrics.clone(),
            declare,
        )
    });
    let task = tokio::spawn(async move {
        // The sender stays alive as long as the loop runs (it ends the loop's config stream).
        let _config_tx = config_tx;
        let result = crate::ipvs::run::run(
            reader,
            reconciler,
            host,
            config_rx,
            run_options,
            status,
            shutdown,
        )
        .await;
        drop(watcher);
        if let Some(h) = health_checks {
            h.abort();
        }
        if let Some(s) = servers {
            s.abort();
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "proxy stopped");
            if let Ok(mut slot) = exit_error.lock() {
                *slot = Some(e.to_string());
            }
        }
    });
    Ok(RunningSubsystem { handle, task })
}
