//! The stand-alone programs (`svcnet-dns`, `svcnet-dns --corefile`, `svcnet-proxy`) composed
//! here, as `agentctl run` is in [`super::run`]: this module starts the one cluster source for
//! the kinds the subsystem needs and hands its reader to the subsystem, which stops on the
//! process's stop signal ([`shutdown_signal`]). `dns/` and `ipvs/` never start a source.

use crate::dns::DnsOptions;
use crate::dns::error::DnsError;
use crate::dns::plugins::serve::{CorefileOptions, CorefileRunError, load_logged, needed_kinds};
use crate::ipvs::app::{AppError, AppOptions, DryRunPlan, kinds_for};
use crate::runtime::signal::shutdown_signal;
use crate::source::{self, SourceConfig, SourceError};

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
pub async fn proxy(config: &SourceConfig, options: AppOptions) -> Result<(), ProgramError> {
    let (src, proxy_config) = proxy_source(config, &options).await?;
    let result =
        crate::ipvs::app::run_proxy(src.reader(), proxy_config, options, shutdown_signal()).await;
    drop(src);
    Ok(result?)
}
