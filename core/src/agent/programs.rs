//! The stand-alone programs (`svcnet-dns`, `svcnet-dns --corefile`, `svcnet-proxy`) composed
//! here. `svcnet-proxy` is the agent of [`super::run_with`] with one subsystem and no admin
//! endpoint. `svcnet-dns` (both modes) and `svcnet-proxy --dry-run` still start the one cluster
//! source for their kinds here and hand its reader to the DNS server or the plan, which stops on
//! the process's stop signal ([`shutdown_signal`]). `dns/` and `ipvs/` never start a source.

use crate::dns::DnsOptions;
use crate::dns::error::DnsError;
use crate::dns::plugins::serve::{CorefileOptions, CorefileRunError, load_logged, needed_kinds};
use crate::ipvs::app::{AppError, AppOptions, DryRunPlan, kinds_for};
use crate::ipvs::run::StatusHandle;
use crate::ipvs::serve::{ProxyMetrics, status_with_metrics};
use crate::runtime::signal::shutdown_signal;
use crate::source::{self, SourceConfig, SourceError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::status::SubsystemStatus;
use super::{AgentError, AgentOptions, RunningSubsystem, Subsystem, SubsystemLauncher};

/// Why a stand-alone program could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramError {
    /// The cluster state source could not start.
    #[error("starting the cluster state source: {0}")]
    Source(#[from] SourceError),
    /// The DNS server failed.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// Serving the Corefile failed.
    #[error(transparent)]
    Corefile(#[from] CorefileRunError),
    /// The proxy failed.
    #[error(transparent)]
    Proxy(#[from] AppError),
    /// The agent around the program failed.
    #[error(transparent)]
    Agent(AgentError),
}

/// `svcnet-dns` (flag mode): starts the source for the zone's kinds and serves DNS from it
/// until SIGTERM or SIGINT (then lameduck).
pub async fn dns(config: &SourceConfig, options: DnsOptions) -> Result<(), ProgramError> {
    // One rustls provider for the process (the API client's TLS uses it).
    crate::tls::install_crypto_provider();
    options.validate()?;
    let kinds = crate::dns::runner::needed_kinds(&options.zone);
    let src = source::start(config, &kinds).await?;
    let result = crate::dns::run(src.reader(), options).await;
    drop(src);
    Ok(result?)
}

/// `svcnet-dns --corefile`: starts the source for the Corefile's kinds and serves the
/// Corefile from it until SIGTERM or SIGINT (then lameduck).
pub async fn corefile(config: &SourceConfig, options: CorefileOptions) -> Result<(), ProgramError> {
    crate::tls::install_crypto_provider();
    let cf = load_logged(&options).map_err(CorefileRunError::from)?;
    let src = source::start(config, &needed_kinds(&cf)).await?;
    let result =
        crate::dns::plugins::serve::run_corefile(src.reader(), options, shutdown_signal()).await;
    drop(src);
    Ok(result?)
}

/// Starts the source the proxy needs (its own Node when it has a node name).
async fn proxy_source(
    config: &SourceConfig,
    options: &AppOptions,
) -> Result<(source::Source, crate::ipvs::config::ProxyConfig), ProgramError> {
    let proxy_config = options.load_config()?;
    let node_name = options.source_node_name(&proxy_config);
    let src = source::start_for_node(
        config,
        &kinds_for(node_name.as_deref()),
        node_name.as_deref(),
    )
    .await?;
    Ok((src, proxy_config))
}

/// `svcnet-proxy --dry-run`: the plan a run would program for the cluster of `config`.
pub async fn proxy_dry_run(
    config: &SourceConfig,
    options: &AppOptions,
) -> Result<DryRunPlan, ProgramError> {
    let (src, proxy_config) = proxy_source(config, options).await?;
    let plan = crate::ipvs::app::dry_run_plan(src.reader(), proxy_config, options).await;
    drop(src);
    Ok(plan?)
}

/// `svcnet-proxy`: programs the kernel from the cluster of `config` until SIGTERM or SIGINT
/// (or once, with `once`); the rules stay in place when it stops.
///
/// It is the agent of [`super::run_with`] with one subsystem (the proxy) and no admin endpoint:
/// the agent starts the source for the kinds the proxy declares and stops the subsystem on the
/// stop signal. The proxy's own end (after `--once`, or an error such as no IPVS) also stops the
/// agent, and its result is the program's.
pub async fn proxy(config: &SourceConfig, options: AppOptions) -> Result<(), ProgramError> {
    // The configuration is read before the source starts, so a bad file is reported first.
    let proxy_config = options.load_config()?;
    let node_name = options.source_node_name(&proxy_config);
    let kinds = kinds_for(node_name.as_deref());
    let outcome: Arc<Mutex<Option<Result<(), AppError>>>> = Arc::default();
    let ended = Arc::new(tokio::sync::Notify::new());
    let launcher = {
        let (outcome, ended) = (outcome.clone(), ended.clone());
        SubsystemLauncher::new(
            "proxy",
            kinds.clone(),
            Box::new(move |reader, shutdown| {
                Box::pin(async move {
                    Ok(start_proxy(
                        reader,
                        proxy_config,
                        options,
                        shutdown,
                        outcome,
                        ended,
                    ))
                })
            }),
        )
    };
    let agent = AgentOptions {
        source: config.clone(),
        kinds,
        node_name,
        admin: None,
        subsystems: vec![launcher],
        lameduck: Duration::ZERO,
    };
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            () = ended.notified() => {}
        }
    };
    super::run_with(agent, stop, |_| {})
        .await
        .map_err(|e| match e {
            AgentError::Source(e) => ProgramError::Source(e),
            other => ProgramError::Agent(other),
        })?;
    let result = outcome
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or(Err(AppError::Stopped));
    Ok(result?)
}

/// The proxy as the one subsystem of `svcnet-proxy`: its status and metrics, as the control
/// loop reports them.
struct ProgramProxy {
    status: StatusHandle,
    metrics: Arc<ProxyMetrics>,
    config_file: Option<String>,
}

impl Subsystem for ProgramProxy {
    fn name(&self) -> &'static str {
        "proxy"
    }

    fn status(&self) -> SubsystemStatus {
        let s = self.status.get();
        SubsystemStatus {
            ready: s.syncs > 0 && s.last_error.is_none(),
            summary: "IPVS proxy".into(),
            applied_generation: None,
            syncs: s.syncs,
            last_sync_seconds: s.last_sync.map(|_| s.last_duration.as_secs_f64()),
            query_rate_per_second: None,
            config_files: self.config_file.iter().cloned().collect(),
            last_reload_error: None,
            last_error: s.last_error,
            details: Default::default(),
        }
    }

    fn encode_metrics(&self, out: &mut String) {
        out.push_str(&self.metrics.encode());
    }
}

/// Starts [`run_proxy_reporting`](crate::ipvs::app::run_proxy_reporting) on `reader`; it stops
/// when `shutdown` turns true, leaves its result in `outcome` and then wakes `ended`.
fn start_proxy(
    reader: crate::cache::CacheReader,
    config: crate::ipvs::config::ProxyConfig,
    options: AppOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    outcome: Arc<Mutex<Option<Result<(), AppError>>>>,
    ended: Arc<tokio::sync::Notify>,
) -> RunningSubsystem {
    let metrics = Arc::new(ProxyMetrics::new());
    let status = status_with_metrics(metrics.clone());
    let handle = Arc::new(ProgramProxy {
        status: status.clone(),
        metrics: metrics.clone(),
        config_file: options
            .config_file
            .as_ref()
            .map(|p| p.display().to_string()),
    });
    let stop = async move {
        // An error means the agent is gone: stop as well.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let task = tokio::spawn(async move {
        let result =
            crate::ipvs::app::run_proxy_reporting(reader, config, options, stop, status, metrics)
                .await;
        *outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        // `notify_one` keeps the wake-up if the agent is not waiting yet.
        ended.notify_one();
    });
    RunningSubsystem { handle, task }
}
