//! `svcnet-dns`: the cluster DNS server (a drop-in for CoreDNS's kubernetes plugin).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use svcnet_core::cli::{LogFlags, SourceFlags};
use svcnet_core::dns::DnsOptions;
use svcnet_core::dns::rrl::LargeAnswerLimit;
use svcnet_core::dns::server::ServerConfig;
use svcnet_core::dns::zone::{PodMode, ZoneOptions};
use svcnet_core::source::SourceConfig;

/// Authoritative cluster DNS (`cluster.local`) served from the Kubernetes API or a manifest
/// directory.
#[derive(Debug, Parser)]
#[command(name = "svcnet-dns", version, about)]
struct Args {
    /// DNS listen address, UDP and TCP.
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    #[command(flatten)]
    source: SourceFlags,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Zones served (default: the cluster domain, in-addr.arpa and ip6.arpa).
    #[arg(long, value_delimiter = ',', value_name = "ZONE,...")]
    zones: Vec<String>,
    /// TTL of the answers (0-3600).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=3600))]
    ttl: u32,
    /// Pod records: disabled, insecure or verified.
    #[arg(long, default_value = "disabled")]
    pods: PodMode,
    /// Name endpoints without hostname after their pod instead of their dashed IP.
    #[arg(long)]
    endpoint_pod_names: bool,
    /// Serve no endpoint records.
    #[arg(long)]
    noendpoints: bool,
    /// NXDOMAIN for ClusterIP services without ready endpoints.
    #[arg(long)]
    ignore_empty_service: bool,
    /// Only serve these namespaces (default: all).
    #[arg(long, value_delimiter = ',', value_name = "NS,...")]
    namespaces: Vec<String>,
    /// Only serve services matching this label selector (`app=web,tier in (a,b),!canary`).
    #[arg(long, value_name = "SELECTOR")]
    labels: Option<svcnet_core::model::selector::LabelSelector>,
    /// Pass names not found in these zones to the next plugin (no zones: all). Without a
    /// forwarder the answer is then REFUSED.
    #[arg(long, num_args = 0.., value_delimiter = ',', value_name = "ZONE,...")]
    fallthrough: Option<Vec<String>>,
    /// Health endpoint (`/health`); `off` disables it.
    #[arg(long, default_value = "0.0.0.0:8080", value_parser = parse_optional_addr)]
    health: OptionalAddr,
    /// Readiness endpoint (`/ready`); `off` disables it.
    #[arg(long, default_value = "0.0.0.0:8181", value_parser = parse_optional_addr)]
    ready: OptionalAddr,
    /// Prometheus metrics endpoint (`/metrics`); `off` disables it.
    #[arg(long, default_value = "0.0.0.0:9153", value_parser = parse_optional_addr)]
    metrics: OptionalAddr,
    /// How long to wait for the cache to sync before answering from what it has.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    startup_timeout: Duration,
    /// After SIGTERM, keep answering this long while /ready reports 503.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    lameduck: Duration,
    /// UDP receive loops (0: one per core).
    #[arg(long, default_value_t = 0)]
    udp_workers: usize,
    /// Rate-limit UDP answers larger than 512 bytes to this many per second per client
    /// network (/24, IPv6 /56); beyond it the answer is an empty truncated one (TC=1) and the
    /// client retries over TCP. 0 disables the limit. With --corefile, use the `rrl` plugin.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "PER_SECOND",
        conflicts_with = "corefile"
    )]
    large_answer_rate: u32,
    /// MiB of encoded UDP answers each UDP loop keeps to send again to the same question,
    /// while the served data is unchanged (answers of the `kubernetes` plugin, in chains whose
    /// plugins all leave them as they are). 0 turns this off.
    #[arg(long, default_value_t = 4, value_name = "MIB", value_parser = clap::value_parser!(u64).range(0..=4096))]
    answer_cache_mib: u64,
    /// Concurrent TCP connections; near the limit the longest-idle ones are closed first.
    #[arg(long, conflicts_with = "corefile", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_tcp_connections: u64,
    /// Concurrent TCP connections from one client address.
    #[arg(long, conflicts_with = "corefile", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_tcp_per_source: u64,
    /// Pipelined queries of one TCP connection answered concurrently.
    #[arg(long, conflicts_with = "corefile", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=65_535))]
    max_tcp_in_flight: u64,
    /// TCP connections are closed after this long without a query.
    #[arg(long, conflicts_with = "corefile", default_value = "10s", value_parser = parse_duration)]
    tcp_idle_timeout: Duration,
    /// Configure from a CoreDNS Corefile (server blocks, plugins, reload) instead of the zone
    /// flags; `--listen`, when given, replaces every server block's address.
    #[arg(long, value_name = "FILE")]
    corefile: Option<PathBuf>,
    /// With --corefile: unknown plugins and options are warnings instead of errors.
    #[arg(long, requires = "corefile")]
    allow_unknown: bool,
    /// With --corefile: load the Corefile (and what it imports), print its warnings and exit:
    /// 0 when it loads, 1 with the error (file:line:column) when it does not. Serves nothing.
    #[arg(long, requires = "corefile")]
    validate: bool,
    #[command(flatten)]
    log: LogFlags,
    /// How often to give memory freed after a burst back to the system (glibc builds; the
    /// musl image's allocator does it by itself); 0s turns it off.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    memory_trim_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
struct OptionalAddr(Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s == "off" {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("`{s}`: {e} (expected ADDR:PORT or off)"))
}

/// A duration flag: Go syntax (`500ms`, `5s`, `1m`, the Corefile's parser) or a bare number
/// of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>()
        && (0.0..=86_400.0).contains(&secs)
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    svcnet_core::dns::corefile::names::parse_duration(s)
}

fn main() -> anyhow::Result<()> {
    let matches = <Args as clap::CommandFactory>::command().get_matches();
    let args = <Args as clap::FromArgMatches>::from_arg_matches(&matches)?;
    args.log.init("info")?;
    // Before the runtime starts its threads: see svcnet_core::memtrim.
    svcnet_core::memtrim::start(args.memory_trim_interval);
    let source = args.source.config();
    if let Some(path) = &args.corefile
        && args.validate
    {
        return validate_corefile(path, args.allow_unknown);
    }
    if let Some(path) = &args.corefile {
        let listen_given =
            matches.value_source("listen") == Some(clap::parser::ValueSource::CommandLine);
        return corefile_main(&args, path, listen_given, &source);
    }
    let mut zone = ZoneOptions::for_domain(&args.cluster_domain);
    if !args.zones.is_empty() {
        zone.zones = args.zones.clone();
    }
    zone.ttl = args.ttl;
    zone.pods = args.pods;
    zone.endpoint_pod_names = args.endpoint_pod_names;
    zone.noendpoints = args.noendpoints;
    zone.ignore_empty_service = args.ignore_empty_service;
    zone.namespaces = args.namespaces.iter().cloned().collect();
    zone.labels = args.labels.clone();
    zone.fallthrough = args.fallthrough.clone();
    let options = DnsOptions {
        server: server_config(&args),
        zone,
        health: args.health.0,
        ready: args.ready.0,
        metrics: args.metrics.0,
        startup_timeout: args.startup_timeout,
        lameduck: args.lameduck,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime
        .block_on(svcnet_core::agent::programs::dns(&source, options))
        .with_context(|| format!("svcnet-dns ({})", source.describe()));
    // Do not wait for blocking helper threads (file watcher) beyond a moment.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// The listener settings of the flags.
fn server_config(args: &Args) -> ServerConfig {
    ServerConfig {
        listen: args.listen,
        udp_workers: args.udp_workers,
        tcp_idle_timeout: args.tcp_idle_timeout,
        max_tcp_connections: args.max_tcp_connections as usize,
        max_tcp_per_source: args.max_tcp_per_source as usize,
        max_tcp_in_flight: args.max_tcp_in_flight as usize,
        large_answers: (args.large_answer_rate > 0)
            .then(|| LargeAnswerLimit::new(args.large_answer_rate)),
        answer_cache_bytes: (args.answer_cache_mib as usize) << 20,
    }
}

/// `--corefile FILE --validate`: load the Corefile and report, serving nothing.
fn validate_corefile(path: &std::path::Path, allow_unknown: bool) -> anyhow::Result<()> {
    use svcnet_core::dns::corefile::{self, LoadOptions};
    let cf = corefile::load(
        path,
        &LoadOptions {
            allow_unknown,
            ..LoadOptions::default()
        },
    )
    .with_context(|| format!("{} does not load", path.display()))?;
    for w in &cf.warnings {
        println!("warning: {}: {}", w.at, w.message);
    }
    let zones: Vec<String> = cf
        .servers
        .iter()
        .flat_map(|s| s.keys.iter().map(|k| format!("{}:{}", k.zone, k.port)))
        .collect();
    println!(
        "{}: OK, {} server block(s) ({}), {} file(s) read, {} warning(s)",
        path.display(),
        cf.servers.len(),
        zones.join(" "),
        cf.files.len(),
        cf.warnings.len()
    );
    Ok(())
}

/// `--corefile`: serve the Corefile's server blocks (with reload) from `source`.
fn corefile_main(
    args: &Args,
    path: &std::path::Path,
    listen_given: bool,
    source: &SourceConfig,
) -> anyhow::Result<()> {
    use svcnet_core::dns::corefile::LoadOptions;
    use svcnet_core::dns::plugins::serve::CorefileOptions;
    let options = CorefileOptions {
        path: path.to_path_buf(),
        text: None,
        listener: ServerConfig {
            answer_cache_bytes: (args.answer_cache_mib as usize) << 20,
            ..ServerConfig::default()
        },
        lameduck: None,
        load: LoadOptions {
            allow_unknown: args.allow_unknown,
            ..LoadOptions::default()
        },
        listen_override: listen_given.then_some(args.listen),
        startup_timeout: args.startup_timeout,
        udp_workers: args.udp_workers,
        reload_outcome: None,
        readiness: None,
        node_local: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime
        .block_on(svcnet_core::agent::programs::corefile(source, options))
        .with_context(|| format!("svcnet-dns --corefile {}", path.display()));
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}
