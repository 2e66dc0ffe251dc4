//! The stand-alone programs (`svcnet-dns`, `svcnet-dns --corefile`, `svcnet-proxy`,
//! `svcnet-proxy --dry-run`), each the agent of [`super::run_with`] with one subsystem and no
//! admin endpoint (`run_one`): the agent starts the one cluster source for the kinds the
//! subsystem needs, binds and serves the HTTP endpoints it declares (CoreDNS's health, ready
//! and metrics; kube-proxy's healthz and metrics), and on SIGTERM or SIGINT
//! ([`shutdown_signal`]) marks it not ready, waits its lameduck and stops it. A subsystem that
//! ends by itself (`--once`, a dry run's plan, an error) ends the program; its start error or
//! result is the program's. `dns/` and `ipvs/` never start a source.
//!
//! Flag mode of `svcnet-dns` serves the Corefile its flags mean, through the same path.

use crate::dns::DnsOptions;
use crate::dns::error::DnsError;
use crate::dns::plugins::serve::{CorefileOptions, CorefileRunError, load_logged, needed_kinds};
use crate::ipvs::app::{AppError, AppOptions, DryRunPlan, kinds_for};
use crate::ipvs::run::StatusHandle;
use crate::ipvs::serve::{ProxyMetrics, status_with_metrics};
use crate::runtime::http::Endpoint;
use crate::runtime::signal::shutdown_signal;
use crate::source::{SourceConfig, SourceError};
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
    /// The program's subsystem ended without a result (it panicked, or did not stop in time).
    #[error("the {0} task ended without a result")]
    Ended(&'static str),
}

/// `svcnet-dns` (flag mode): the Corefile the flags mean ([`DnsOptions::corefile`]) served as
/// [`corefile`] serves one, with the flags' listener, lameduck and startup settings.
pub async fn dns(config: &SourceConfig, options: DnsOptions) -> Result<(), ProgramError> {
    options.validate()?;
    tracing::debug!(corefile = %options.corefile(), "flags as a Corefile");
    corefile(config, CorefileOptions::for_flags(&options)).await
}

/// `svcnet-dns --corefile`: the agent of [`super::run_with`] with one subsystem (the
/// Corefile's server) and no admin endpoint. The agent starts the source for the Corefile's
/// kinds, binds and serves the Corefile's health/ready/metrics endpoints, and on SIGTERM or
/// SIGINT marks it not ready, waits the Corefile's `health { lameduck }` (as the Corefile in
/// force says at that moment) and then stops it. A start failure, or a forwarding loop found
/// while serving, is the program's error.
pub async fn corefile(config: &SourceConfig, options: CorefileOptions) -> Result<(), ProgramError> {
    crate::tls::install_crypto_provider();
    let cf = load_logged(&options).map_err(CorefileRunError::from)?;
    let kinds = needed_kinds(&cf);
    run_one(config, kinds, None, "dns", move |reader, shutdown| {
        Box::pin(async move {
            let (handle, task) = super::dns::start_corefile(options, reader, shutdown).await?;
            Ok((handle as Arc<dyn Subsystem>, task))
        })
    })
    .await
}

/// How a program's one subsystem starts: its handle and its task, whose result is the
/// program's.
type StartOne<T, E> = Box<
    dyn FnOnce(
            crate::cache::CacheReader,
            tokio::sync::watch::Receiver<bool>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = Result<
                            (Arc<dyn Subsystem>, tokio::task::JoinHandle<Result<T, E>>),
                            E,
                        >,
                    > + Send,
            >,
        > + Send,
>;

/// Runs a stand-alone program: the agent of [`super::run_with`] with the one subsystem `start`
/// makes and no admin endpoint, until SIGTERM or SIGINT or until the subsystem ends by itself
/// (after `--once`, or an error). Its start error or its task's result is the program's.
async fn run_one<T, E>(
    config: &SourceConfig,
    kinds: Vec<crate::model::Kind>,
    node_name: Option<String>,
    name: &'static str,
    start: impl FnOnce(
        crate::cache::CacheReader,
        tokio::sync::watch::Receiver<bool>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<(Arc<dyn Subsystem>, tokio::task::JoinHandle<Result<T, E>>), E>,
                > + Send,
        >,
    > + Send
    + 'static,
) -> Result<T, ProgramError>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
    ProgramError: From<E>,
{
    let start: StartOne<T, E> = Box::new(start);
    let outcome: Arc<Mutex<Option<Result<T, E>>>> = Arc::new(Mutex::new(None));
    let ended = Arc::new(tokio::sync::Notify::new());
    let launcher = {
        let (outcome, ended) = (outcome.clone(), ended.clone());
        SubsystemLauncher::new(
            name,
            kinds.clone(),
            Box::new(move |reader, shutdown| {
                Box::pin(async move {
                    match start(reader, shutdown).await {
                        Ok((handle, task)) => {
                            let task = tokio::spawn(async move {
                                let result = task.await.ok();
                                *outcome.lock().unwrap_or_else(|e| e.into_inner()) = result;
                                // `notify_one` keeps the wake-up if the agent is not waiting yet.
                                ended.notify_one();
                            });
                            Ok(RunningSubsystem { handle, task })
                        }
                        Err(e) => {
                            let reason = e.to_string();
                            *outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(Err(e));
                            Err(AgentError::Subsystem {
                                subsystem: name,
                                reason,
                            })
                        }
                    }
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
    let taken = |outcome: &Mutex<Option<Result<T, E>>>| {
        outcome.lock().unwrap_or_else(|e| e.into_inner()).take()
    };
    match super::run_with(agent, stop, |_| {}).await {
        Ok(()) => {}
        Err(e) => {
            return Err(match (taken(&outcome), e) {
                (Some(Err(e)), _) => ProgramError::from(e),
                (_, AgentError::Source(e)) => ProgramError::Source(e),
                (_, other) => ProgramError::Agent(other),
            });
        }
    }
    match taken(&outcome) {
        Some(result) => Ok(result?),
        None => Err(ProgramError::Ended(name)),
    }
}

/// `svcnet-proxy --dry-run`: the plan a run would program for the cluster of `config`. Like
/// [`proxy`], it is the agent with one subsystem (which computes the plan once the source has
/// synced and then ends, ending the agent) and no admin endpoint; it touches nothing and
/// serves nothing.
pub async fn proxy_dry_run(
    config: &SourceConfig,
    options: &AppOptions,
) -> Result<DryRunPlan, ProgramError> {
    let proxy_config = options.load_config()?;
    let node_name = options.source_node_name(&proxy_config);
    let kinds = kinds_for(node_name.as_deref());
    let options = options.clone();
    run_one(config, kinds, node_name, "proxy", move |reader, mut shutdown| {
        Box::pin(async move {
            let handle: Arc<dyn Subsystem> = Arc::new(DryRunProxy);
            let task = tokio::spawn(async move {
                tokio::select! {
                    plan = crate::ipvs::app::dry_run_plan(reader, proxy_config, &options) => plan,
                    _ = shutdown.wait_for(|s| *s) => Err(AppError::Stopped),
                }
            });
            Ok::<_, AppError>((handle, task))
        })
    })
    .await
}

/// The dry run as the one subsystem of `svcnet-proxy --dry-run`: nothing to report but that it
/// runs.
struct DryRunProxy;

impl Subsystem for DryRunProxy {
    fn name(&self) -> &'static str {
        "proxy"
    }

    fn status(&self) -> SubsystemStatus {
        SubsystemStatus {
            ready: false,
            summary: "IPVS proxy dry run".into(),
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
}

/// `svcnet-proxy`: programs the kernel from the cluster of `config` until SIGTERM or SIGINT
/// (or once, with `once`); the rules stay in place when it stops.
///
/// It is the agent of [`super::run_with`] with one subsystem (the proxy) and no admin endpoint:
/// the agent starts the source for the kinds the proxy declares, serves the proxy's `/healthz`
/// and `/metrics` endpoints (re-binding them when the configuration moves them) and stops the
/// subsystem on the stop signal. The proxy's own end (after `--once`, or an error such as no
/// IPVS) also stops the agent, and its result is the program's.
pub async fn proxy(config: &SourceConfig, options: AppOptions) -> Result<(), ProgramError> {
    // The configuration is read before the source starts, so a bad file is reported first.
    let proxy_config = options.load_config()?;
    let node_name = options.source_node_name(&proxy_config);
    let kinds = kinds_for(node_name.as_deref());
    run_one(
        config,
        kinds,
        node_name,
        "proxy",
        move |reader, shutdown| {
            Box::pin(async move {
                let (handle, task) = start_proxy(reader, proxy_config, options, shutdown);
                Ok::<_, AppError>((handle, task))
            })
        },
    )
    .await
}

/// The proxy as the one subsystem of `svcnet-proxy`: its status and metrics, as the control
/// loop reports them, and its `/healthz` and `/metrics` endpoints.
struct ProgramProxy {
    status: StatusHandle,
    metrics: Arc<ProxyMetrics>,
    config_file: Option<String>,
    endpoints: tokio::sync::watch::Receiver<Vec<Endpoint>>,
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

    fn listeners(&self) -> Option<tokio::sync::watch::Receiver<Vec<Endpoint>>> {
        Some(self.endpoints.clone())
    }
}

/// Starts [`run_proxy_reporting`](crate::ipvs::app::run_proxy_reporting) on `reader`; it stops
/// when `shutdown` turns true.
fn start_proxy(
    reader: crate::cache::CacheReader,
    config: crate::ipvs::config::ProxyConfig,
    options: AppOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> (
    Arc<dyn Subsystem>,
    tokio::task::JoinHandle<Result<(), AppError>>,
) {
    let metrics = Arc::new(ProxyMetrics::new());
    let status = status_with_metrics(metrics.clone());
    let (declare, endpoints) = tokio::sync::watch::channel(crate::ipvs::serve::endpoints(
        &config,
        status.clone(),
        metrics.clone(),
    ));
    let handle = Arc::new(ProgramProxy {
        status: status.clone(),
        metrics: metrics.clone(),
        config_file: options
            .config_file
            .as_ref()
            .map(|p| p.display().to_string()),
        endpoints,
    });
    let stop = async move {
        // An error means the agent is gone: stop as well.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let task = tokio::spawn(crate::ipvs::app::run_proxy_reporting(
        reader, config, options, stop, status, metrics, declare,
    ));
    (handle, task)
}
