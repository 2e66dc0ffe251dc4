//! `svcnet-proxy`: the IPVS service proxy (what kube-proxy does in IPVS mode).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use svcnet_core::agent::programs;
use svcnet_core::cli::{LogFlags, SourceFlags};
use svcnet_core::ipvs::app::AppOptions;

/// mimalloc instead of glibc's malloc: glibc keeps memory freed by the worker threads in its
/// per-thread arenas, so the transient peaks of a full sync (tables rendered for ipset and
/// iptables, the kernel listing) stayed in the RSS; mimalloc returns freed pages to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the pages mimalloc holds free back to the system. mimalloc does that on its
/// allocation paths once a page has been free for a while, so a proxy that goes idle after a
/// full sync kept the sync's transient memory; the library calls this after each full sync.
#[allow(unsafe_code)]
fn collect_freed_memory() {
    // mimalloc's own C function, linked in with the allocator (the `mimalloc` crate exposes
    // it only through an extra feature whose dependency this build does not have).
    unsafe extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: takes no pointer; mimalloc collects the calling thread's heap and purges the
    // process's free arena pages under its own locks.
    unsafe { mi_collect(true) }
}

/// IPVS service proxy for a Kubernetes node, programming the kernel over netlink.
#[derive(Debug, Parser)]
#[command(name = "svcnet-proxy", version)]
struct Args {
    /// A KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1), watched live.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    source: SourceFlags,
    /// This node's name, for Local traffic policies.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Node address for node ports (repeatable); default: the kernel's local addresses.
    #[arg(long = "node-ip", value_name = "IP")]
    node_ips: Vec<IpAddr>,
    /// Print the IPVS table that would be programmed, in `ipvsadm -Ln` format, and exit.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: `table` (the IPVS table) or `all` (also the kube-ipvs0 addresses, the
    /// ipset contents and the iptables rules a run would program).
    #[arg(long, value_enum, default_value_t = Show::Table, requires = "dry_run")]
    show: Show,
    /// Program the kernel once and exit.
    #[arg(long)]
    once: bool,
    /// Seconds to wait for the initial cluster state.
    #[arg(long, default_value_t = 60)]
    sync_timeout: u64,
    #[command(flatten)]
    log: LogFlags,
}

/// What `--dry-run` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Show {
    /// The IPVS table only.
    Table,
    /// The IPVS table, kube-ipvs0 addresses, ipsets and iptables rules.
    All,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match real_main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("svcnet-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> anyhow::Result<()> {
    svcnet_core::memtrim::on_burst_end(collect_freed_memory);
    let args = Args::parse();
    args.log.init("info")?;
    let source = args.source.config();
    let mut options = AppOptions::new();
    options.config_file = args.config;
    options.node_name = args.node_name;
    options.node_addresses = (!args.node_ips.is_empty()).then_some(args.node_ips);
    options.once = args.once;
    options.sync_timeout = Duration::from_secs(args.sync_timeout);
    if args.dry_run {
        let plan = programs::proxy_dry_run(&source, &options)
            .await
            .context("dry run")?;
        match args.show {
            Show::Table => print!("{}", plan.table),
            Show::All => print!("{}", plan.all()),
        }
        return Ok(());
    }
    programs::proxy(&source, options)
        .await
        .context("running the proxy")
}
