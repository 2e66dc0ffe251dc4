//! The IPVS proxy as an agent subsystem: [`crate::ipvs::run::run`] on the shared cache, against
//! the kernel over netlink, or — with `dry_run` — against an in-memory kernel
//! ([`MemoryIpvs`](crate::ipvs::memory::MemoryIpvs)) whose table is served at `/proxy/plan`.
//!
//! On shutdown the control loop stops; the kernel rules stay as programmed, so traffic keeps
//! flowing across an agent restart (the next start adopts them).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::status::SubsystemStatus;
use super::{AgentError, RunningSubsystem, Subsystem, SubsystemLauncher};
use crate::cache::CacheReader;
use crate::ipvs::backend::IpvsBackend as _;
use crate::ipvs::config::ProxyConfig;
use crate::ipvs::memory::{MemoryAddresses, MemoryIpvs};
use crate::ipvs::netlink::{NetlinkAddresses, NetlinkIpvs};
use crate::ipvs::reconcile::Reconciler;
use crate::ipvs::run::{RunOptions, StatusHandle};

/// Options of the proxy subsystem.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Program an in-memory table instead of the kernel (no privileges needed).
    pub dry_run: bool,
    /// A `KubeProxyConfiguration` file; `None` = defaults.
    pub config_file: Option<PathBuf>,
    /// This node's name (for `Local` traffic policies).
    pub node_name: Option<String>,
    /// Node addresses for node ports; `None` = read from the kernel (dry run: none).
    pub node_addresses: Option<Vec<IpAddr>>,
    /// How long to wait for the cache to sync.
    pub sync_timeout: Duration,
}

struct ProxySubsystem {
    status: StatusHandle,
    dry_run: Option<MemoryIpvs>,
    config_file: Option<String>,
    ignored_fields: Vec<String>,
    exit_error: Arc<std::sync::Mutex<Option<String>>>,
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
            last_reload_error: None,
            last_error: exit_error.or(s.last_error),
            details,
        }
    }

    fn encode_metrics(&self, out: &mut String) {
        let s = self.status.get();
        let gauges: [(&str, &str, f64); 4] = [
            ("svcnet_proxy_syncs", "Proxy syncs done", s.syncs as f64),
            (
                "svcnet_proxy_last_sync_seconds",
                "Duration of the last proxy sync",
                s.last_duration.as_secs_f64(),
            ),
            (
                "svcnet_proxy_virtual_servers",
                "IPVS virtual servers desired",
                s.services as f64,
            ),
            (
                "svcnet_proxy_real_servers",
                "IPVS real servers desired",
                s.dests as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }

    fn admin_get(&self, path: &str) -> Option<(&'static str, String)> {
        match (path, &self.dry_run) {
            ("plan", Some(memory)) => {
                let mut table = memory.clone();
                let text = match table.dump() {
                    Ok(dump) => crate::ipvs::render::dump(&dump, false),
                    Err(e) => format!("error: {e}\n"),
                };
                Some(("text/plain; charset=utf-8", text))
            }
            _ => None,
        }
    }
}

/// A launcher of the proxy subsystem for [`AgentOptions::subsystems`](super::AgentOptions).
pub fn launcher(options: ProxyOptions) -> SubsystemLauncher {
    Box::new(
        move |reader: CacheReader, shutdown: watch::Receiver<bool>| {
            Box::pin(async move { start(options, reader, shutdown).await })
        },
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
    let (reconciler, memory, node_addresses) = if options.dry_run {
        let memory = MemoryIpvs::new();
        let addrs = options.node_addresses.clone().unwrap_or_default();
        let reconciler = Reconciler::new(
            Box::new(memory.clone()),
            Box::new(MemoryAddresses::new(addrs.clone())),
        );
        (reconciler, Some(memory), Some(addrs))
    } else {
        let ipvs = NetlinkIpvs::open().map_err(|e| fail(e.to_string()))?;
        let addrs = NetlinkAddresses::open().map_err(|e| fail(e.to_string()))?;
        (
            Reconciler::new(Box::new(ipvs), Box::new(addrs)),
            None,
            options.node_addresses.clone(),
        )
    };
    let status = StatusHandle::default();
    let (_config_tx, config_rx) = watch::channel(config);
    let run_options = RunOptions {
        node_name: options.node_name.as_deref().map(Arc::from),
        node_addresses,
        sync_timeout: options.sync_timeout,
        once: false,
    };
    let exit_error = Arc::new(std::sync::Mutex::new(None));
    let handle = Arc::new(ProxySubsystem {
        status: status.clone(),
        dry_run: memory,
        config_file: options
            .config_file
            .as_ref()
            .map(|p| p.display().to_string()),
        ignored_fields: ignored,
        exit_error: exit_error.clone(),
    });
    let task = tokio::spawn(async move {
        // Keep the config sender alive for the loop's lifetime (no live reload yet).
        let _config_tx = _config_tx;
        let result = crate::ipvs::run::run(
            reader,
            reconciler,
            None,
            config_rx,
            run_options,
            status,
            shutdown,
        )
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "proxy stopped");
            if let Ok(mut slot) = exit_error.lock() {
                *slot = Some(e.to_string());
            }
        }
    });
    Ok(RunningSubsystem { handle, task })
}
