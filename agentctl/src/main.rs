//! `agentctl`: the svcnet node agent (`agentctl run`) and its operator CLI.
//!
//! Thin: parse flags, set up tracing, call svcnet-core.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use svcnet_core::agent::inspect::{self, NamespaceFilter, OutputFormat, Resource};
use svcnet_core::agent::{self, AgentOptions, client, dig};
use svcnet_core::cli::{LogFlags, SourceFlags};
use svcnet_core::model::Kind;
use svcnet_core::resolv::{self, DnsPolicy, KubeletDns, PodDnsConfig, PodDnsSpec};
use svcnet_core::source::{self, SourceConfig};
use svcnet_core::{ObjectKey, Snapshot, env};

const EXAMPLES: &str = "\
Examples:
  agentctl get services -n default --manifests examples/cluster
  agentctl get endpoints -A --kubeconfig ~/.kube/config -o wide
  agentctl env -n default --manifests examples/cluster --format docker-env
  agentctl resolv-conf -n demo --nameserver 10.96.0.10 --host-resolv-conf /etc/resolv.conf
  agentctl run --manifests examples/cluster --dns-listen 127.0.0.1:5353 --admin 127.0.0.1:9900
  agentctl status --admin 127.0.0.1:9900
  agentctl dns query demoapp.default.svc.cluster.local A --server 127.0.0.1:5353
  agentctl completions bash > /etc/bash_completion.d/agentctl";

/// svcnet node agent and operator CLI.
#[derive(Parser, Debug)]
#[command(name = "agentctl", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogFlags,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print services, endpoints or endpoint slices from the shared cache, like kubectl get.
    #[command(after_help = "\
Examples:
  agentctl get services --manifests examples/cluster
  agentctl get svc -A -o wide --manifests examples/cluster
  agentctl get endpoints -n demo --manifests examples/cluster
  agentctl get endpointslices -A -o yaml --kubeconfig ~/.kube/config")]
    Get(GetArgs),
    /// Print the service environment variables kubelet gives a pod in a namespace.
    #[command(after_help = "\
Examples:
  agentctl env -n default --manifests examples/cluster
  agentctl env -n demo --enable-service-links=false --manifests examples/cluster
  agentctl env -n default --format docker-env --manifests examples/cluster > pod.env")]
    Env(EnvArgs),
    /// Print the resolv.conf kubelet writes for a pod.
    #[command(
        name = "resolv-conf",
        after_help = "\
Examples:
  agentctl resolv-conf -n default --nameserver 10.96.0.10
  agentctl resolv-conf -n default --manifests examples/cluster      # nameserver from kube-system/kube-dns
  agentctl resolv-conf --dns-policy ClusterFirst --host-network --host-resolv-conf /etc/resolv.conf
  agentctl resolv-conf --dns-policy None --dns-config dnsconfig.yaml"
    )]
    ResolvConf(ResolvArgs),
    /// Run the node agent: one source, one cache, cluster DNS and the IPVS proxy.
    #[command(after_help = "\
Both subsystems run unless --dns or --proxy picks one. SIGTERM or Ctrl-C stops the agent:
it reports not ready, keeps answering DNS for --lameduck seconds, then stops; the proxy leaves
the kernel's IPVS rules in place so traffic keeps flowing across a restart.

Examples:
  agentctl run --kubeconfig /etc/kubernetes/kubelet.conf --node-name \"$NODE_NAME\"
  agentctl run --manifests examples/cluster --dns-listen 127.0.0.1:5353 --proxy --dns --dry-run
  agentctl run --manifests examples/cluster --dns --dns-listen 127.0.0.1:5353 --admin 127.0.0.1:9900
  agentctl run --kubeconfig /etc/kubernetes/kubelet.conf --node-local-dns   # also 169.254.20.10:53, no conntrack")]
    Run(RunArgs),
    /// Ask a running agent (its admin endpoint) how it is doing.
    #[command(after_help = "\
Examples:
  agentctl status
  agentctl status --admin 127.0.0.1:9900 -o json")]
    Status(StatusArgs),
    /// DNS tools: query a server like dig.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// Print the kernel's IPVS table like `ipvsadm -Ln` (needs CAP_NET_ADMIN).
    #[command(after_help = "\
Examples:
  agentctl ipvs
  agentctl ipvs --stats")]
    Ipvs(IpvsArgs),
    /// Set the kernel settings the IPVS proxy needs (IPVS and conntrack sysctls) and exit: for a
    /// privileged init container, so the agent itself runs without write access to /proc/sys.
    #[command(after_help = "\
Examples:
  agentctl sysctls --proxy-config /etc/svcnet/proxy/config.conf
  agentctl sysctls")]
    Sysctls(SysctlsArgs),
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  agentctl completions bash > /etc/bash_completion.d/agentctl
  agentctl completions zsh > \"${fpath[1]}/_agentctl\"
  agentctl completions fish > ~/.config/fish/completions/agentctl.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Run the cluster DNS server (default: both subsystems).
    #[arg(long)]
    dns: bool,
    /// Run the IPVS proxy (default: both subsystems).
    #[arg(long)]
    proxy: bool,
    /// Admin endpoint (/status, /health, /ready, /metrics).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9900")]
    admin: SocketAddr,
    /// DNS listen address, UDP and TCP (default 0.0.0.0:53, or the Corefile's addresses).
    #[arg(long, value_name = "ADDR:PORT")]
    dns_listen: Option<SocketAddr>,
    /// Serve DNS as this Corefile says (CoreDNS syntax; reloaded live when it has `reload`).
    #[arg(long, value_name = "FILE")]
    corefile: Option<PathBuf>,
    /// Cluster domain served by DNS.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Node-local DNS: also answer on these link-local addresses (port 53; default
    /// 169.254.20.10; comma-separated, IPv6 too), bound on a dummy link the agent creates
    /// (`--node-local-dns-link`), with DNS to and from them kept out of conntrack (raw-table
    /// NOTRACK rules). Removed again on a clean stop unless --node-local-dns-keep. Off unless
    /// given.
    #[arg(long, value_name = "ADDR[,ADDR]", num_args = 0..=1, require_equals = true,
          default_missing_value = "169.254.20.10", value_delimiter = ',',
          env = "SVCNET_NODE_LOCAL_DNS")]
    node_local_dns: Option<Vec<IpAddr>>,
    /// The dummy link node-local DNS creates and binds its addresses on.
    #[arg(long, value_name = "NAME", default_value = agent::nodelocal::DEFAULT_LINK)]
    node_local_dns_link: String,
    /// Node-local DNS: leave the link, addresses and rules in place on a clean stop, for the
    /// next start to adopt (restarts and upgrades: pods' queries meanwhile fail at once with
    /// an ICMP error and go to their next nameserver instead of timing out).
    #[arg(long, requires = "node_local_dns", env = "SVCNET_NODE_LOCAL_DNS_KEEP")]
    node_local_dns_keep: bool,
    /// Proxy: program an in-memory IPVS table instead of the kernel (see /proxy/plan).
    #[arg(long)]
    dry_run: bool,
    /// Proxy: KubeProxyConfiguration file.
    #[arg(long, value_name = "FILE")]
    proxy_config: Option<PathBuf>,
    /// This node's name (for Local traffic policies).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    node_name: Option<String>,
    /// Proxy: node addresses serving node ports (default: read from the kernel).
    #[arg(long, value_name = "IP")]
    node_ip: Vec<IpAddr>,
    /// Seconds to keep answering DNS after a stop request, while reporting not ready.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    lameduck: u64,
    /// How often to give memory freed after a burst (of DNS connections, a large manifest)
    /// back to the system, as svcnet-dns does (glibc builds; the musl image's allocator does
    /// it by itself); 0s turns it off.
    #[arg(long, value_name = "DURATION", default_value = "5s",
          value_parser = svcnet_core::dns::corefile::names::parse_duration)]
    memory_trim_interval: Duration,
}

#[derive(Args, Debug)]
struct SysctlsArgs {
    /// KubeProxyConfiguration file (its `ipvs.strictARP` and `conntrack` fields); without it,
    /// kube-proxy's defaults.
    #[arg(long, value_name = "FILE")]
    proxy_config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// The agent's admin endpoint.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9900")]
    admin: SocketAddr,
    /// Output format: text (default) or json.
    #[arg(short = 'o', long, value_enum, default_value_t = StatusOutput::Text)]
    output: StatusOutput,
    /// How long to wait for the answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    timeout: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum StatusOutput {
    /// Readable text.
    Text,
    /// The /status document.
    Json,
}

#[derive(Subcommand, Debug)]
enum DnsCommand {
    /// Ask one question, print the answer like dig.
    #[command(after_help = "\
Examples:
  agentctl dns query demoapp.default.svc.cluster.local
  agentctl dns query _http._tcp.demoapp-svc.default.svc.cluster.local SRV --server 127.0.0.1:5353
  agentctl dns query 10.10.96.10.in-addr.arpa PTR --tcp --short")]
    Query(DnsQueryArgs),
    /// Print the cluster zone the DNS server would serve, as a zone file.
    #[command(
        name = "export-zone",
        after_help = "\
Examples:
  agentctl dns export-zone --manifests examples/cluster
  agentctl dns export-zone --kubeconfig ~/.kube/config --cluster-domain cluster.local > zone.db"
    )]
    ExportZone(ExportZoneArgs),
}

#[derive(Args, Debug)]
struct ExportZoneArgs {
    /// Cluster domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Which served zone to print: the cluster domain (default), in-addr.arpa or ip6.arpa.
    #[arg(long, value_name = "ZONE")]
    zone: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Args, Debug)]
struct DnsQueryArgs {
    /// The name to look up.
    name: String,
    /// Record type (A, AAAA, SRV, PTR, CNAME, TXT, SOA, NS, ANY...).
    #[arg(default_value = "A")]
    rtype: String,
    /// The server to ask.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:53")]
    server: SocketAddr,
    /// Use TCP (default UDP, falling back to TCP when truncated).
    #[arg(long)]
    tcp: bool,
    /// Print only the answers' data, like dig +short.
    #[arg(long)]
    short: bool,
    /// How long to wait for the answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    timeout: u64,
}

#[derive(Args, Debug)]
struct IpvsArgs {
    /// Show packet and byte counters (ipvsadm -Ln --stats).
    #[arg(long)]
    stats: bool,
}

/// Where cluster state comes from.
#[derive(Args, Debug, Clone)]
struct SourceArgs {
    #[command(flatten)]
    flags: SourceFlags,
    /// How long to wait for the initial sync of the source.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    sync_timeout: u64,
}

impl SourceArgs {
    fn config(&self) -> SourceConfig {
        self.flags.config()
    }

    fn given(&self) -> bool {
        self.flags.given()
    }

    /// Starts the source, waits for its initial sync and returns one snapshot.
    async fn snapshot(&self, kinds: &[Kind]) -> Result<std::sync::Arc<Snapshot>> {
        let config = self.config();
        let src = source::start(&config, kinds)
            .await
            .with_context(|| format!("starting source {}", config.describe()))?;
        let mut reader = src.reader();
        if !reader
            .wait_synced(Duration::from_secs(self.sync_timeout))
            .await
        {
            let problems = src.status().problems;
            bail!(
                "source {} did not sync within {} s{}",
                config.describe(),
                self.sync_timeout,
                problems
                    .iter()
                    .map(|p| format!("\n  {}: {}", p.location, p.reason))
                    .collect::<String>()
            );
        }
        for p in src.status().problems {
            eprintln!("warning: {}: {}", p.location, p.reason);
        }
        Ok(reader.snapshot())
    }
}

/// Namespace selection shared by the commands that take it.
#[derive(Args, Debug, Clone)]
struct NamespaceArgs {
    /// Namespace.
    #[arg(short = 'n', long, value_name = "NS", default_value = "default")]
    namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
}

#[derive(Args, Debug)]
struct GetArgs {
    /// services (svc), endpoints (ep) or endpointslices.
    #[arg(value_name = "RESOURCE")]
    resource: String,
    #[command(flatten)]
    namespaces: NamespaceArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    output: Option<GetOutput>,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum GetOutput {
    /// The table with extra columns (services: SELECTOR).
    Wide,
    /// The projected objects (svcnet's compact model) as JSON.
    Json,
    /// The projected objects (svcnet's compact model) as YAML.
    Yaml,
}

#[derive(Args, Debug)]
struct EnvArgs {
    /// Namespace of the pod.
    #[arg(short = 'n', long, value_name = "NS", default_value = "default")]
    namespace: String,
    /// The pod's spec.enableServiceLinks (false keeps only the KUBERNETES_* variables).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    enable_service_links: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = EnvOutput::Env)]
    format: EnvOutput,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum EnvOutput {
    /// KEY=value lines.
    Env,
    /// JSON array of {name, value}.
    Json,
    /// `docker run --env-file` file.
    DockerEnv,
}

#[derive(Args, Debug)]
struct ResolvArgs {
    /// Namespace of the pod.
    #[arg(short = 'n', long, value_name = "NS", default_value = "default")]
    namespace: String,
    /// The pod's spec.dnsPolicy.
    #[arg(long, value_enum, default_value_t = PolicyArg::ClusterFirst)]
    dns_policy: PolicyArg,
    /// The pod's spec.hostNetwork.
    #[arg(long)]
    host_network: bool,
    /// Cluster DNS server (kubelet --cluster-dns); repeatable. Default: the cluster IPs of
    /// kube-system/kube-dns when a source is given, else none (kubelet then falls back to Default).
    #[arg(long, value_name = "IP")]
    nameserver: Vec<IpAddr>,
    /// kubelet --cluster-domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// kubelet --resolv-conf: the node's resolv.conf ("" = none: 127.0.0.1 and search ".").
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    host_resolv_conf: String,
    /// Node IPs (only used with --host-resolv-conf "").
    #[arg(long, value_name = "IP")]
    node_ip: Vec<IpAddr>,
    /// The pod's spec.dnsConfig as a YAML or JSON file ("-" for stdin).
    #[arg(long, value_name = "FILE")]
    dns_config: Option<PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum PolicyArg {
    #[value(name = "ClusterFirst")]
    ClusterFirst,
    #[value(name = "ClusterFirstWithHostNet")]
    ClusterFirstWithHostNet,
    #[value(name = "Default")]
    Default,
    #[value(name = "None")]
    None,
}

impl From<PolicyArg> for DnsPolicy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::ClusterFirst => DnsPolicy::ClusterFirst,
            PolicyArg::ClusterFirstWithHostNet => DnsPolicy::ClusterFirstWithHostNet,
            PolicyArg::Default => DnsPolicy::Default,
            PolicyArg::None => DnsPolicy::None,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.log.init("warn") {
        eprintln!("agentctl: {e}");
        return std::process::ExitCode::FAILURE;
    }
    if let Command::Run(args) = &cli.command {
        // Before the runtime starts its threads: the allocator settings are process-wide.
        svcnet_core::memtrim::start(args.memory_trim_interval);
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|rt| rt.block_on(dispatch(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Library errors already embed their cause; print each cause only once.
            let mut text = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !text.ends_with(&cause) {
                    if !text.is_empty() {
                        text.push_str(": ");
                    }
                    text.push_str(&cause);
                }
            }
            eprintln!("error: {text}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed pipe (`agentctl ... | head`) is not an error.
fn emit(text: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Get(args) => get(args).await,
        Command::Env(args) => env_cmd(args).await,
        Command::ResolvConf(args) => resolv_conf(args).await,
        Command::Run(args) => run(args).await,
        Command::Status(args) => status(args).await,
        Command::Sysctls(args) => sysctls(args),
        Command::Dns(DnsCommand::Query(args)) => dns_query(args).await,
        Command::Dns(DnsCommand::ExportZone(args)) => {
            let snapshot = args
                .source
                .snapshot(&[Kind::Service, Kind::EndpointSlice])
                .await?;
            let zone = args.zone.as_deref().unwrap_or(&args.cluster_domain);
            emit(inspect::export_zone(&snapshot, &args.cluster_domain, zone).as_bytes())
        }
        Command::Ipvs(args) => {
            emit(inspect::live_ipvs_table(args.stats)?.as_bytes())?;
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "agentctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

fn sysctls(args: SysctlsArgs) -> Result<()> {
    use svcnet_core::ipvs::conntrack::sysctl;
    let config = match &args.proxy_config {
        Some(path) => svcnet_core::ipvs::config::file::load(path)?.config,
        None => svcnet_core::ipvs::ProxyConfig::default(),
    };
    // net.ipv4.vs.* exist once ip_vs is loaded: resolving the IPVS netlink family loads it
    // where it is a module (no capability needed for that).
    let mut failed: Vec<String> = Vec::new();
    if let Err(e) = svcnet_core::ipvs::netlink::NetlinkIpvs::open() {
        failed.push(format!("IPVS: {e}"));
    }
    failed.extend(
        svcnet_core::ipvs::host::apply_sysctls(&mut sysctl::FileIo, &config)
            .into_iter()
            .map(|(path, reason)| format!("/proc/sys/{path}: {reason}")),
    );
    let (written, conntrack_failed) =
        sysctl::apply(&mut sysctl::FileIo, &config.conntrack, sysctl::cpu_count());
    for (path, value) in written {
        println!("{path} = {value}");
    }
    failed.extend(
        conntrack_failed
            .into_iter()
            .map(|f| format!("{} = {}: {}", f.path, f.value, f.reason)),
    );
    if !failed.is_empty() {
        bail!(
            "kernel settings not applied (this needs a privileged container or root on the \
             node):\n  {}",
            failed.join("\n  ")
        );
    }
    println!("kernel settings for the IPVS proxy are in place");
    Ok(())
}

async fn get(args: GetArgs) -> Result<()> {
    let resource: Resource = args.resource.parse()?;
    let namespaces = if args.namespaces.all_namespaces {
        NamespaceFilter::All
    } else {
        NamespaceFilter::One(args.namespaces.namespace.clone())
    };
    let format = match args.output {
        None => OutputFormat::Table,
        Some(GetOutput::Wide) => OutputFormat::Wide,
        Some(GetOutput::Json) => OutputFormat::Json,
        Some(GetOutput::Yaml) => OutputFormat::Yaml,
    };
    let snapshot = args
        .source
        .snapshot(&[Kind::Service, Kind::EndpointSlice])
        .await?;
    let out = inspect::get(&snapshot, resource, &namespaces, format)?;
    if out.is_empty() {
        eprintln!("{}", inspect::no_resources_message(&namespaces));
    }
    emit(out.as_bytes())?;
    Ok(())
}

async fn env_cmd(args: EnvArgs) -> Result<()> {
    let snapshot = args.source.snapshot(&[Kind::Service]).await?;
    let vars = env::pod_env(&snapshot, &args.namespace, args.enable_service_links);
    let format = match args.format {
        EnvOutput::Env => env::EnvFormat::KeyValue,
        EnvOutput::Json => env::EnvFormat::Json,
        EnvOutput::DockerEnv => env::EnvFormat::DockerEnv,
    };
    emit(env::render(&vars, format, &args.namespace)?.as_bytes())?;
    Ok(())
}

async fn resolv_conf(args: ResolvArgs) -> Result<()> {
    let mut cluster_dns = args.nameserver.clone();
    if cluster_dns.is_empty() && args.source.given() {
        let snapshot = args.source.snapshot(&[Kind::Service]).await?;
        let key = ObjectKey::new("kube-system", "kube-dns");
        match snapshot.service(&key) {
            Some(svc) if svc.has_cluster_ip() => cluster_dns = svc.cluster_ips.clone(),
            _ => eprintln!("warning: service kube-system/kube-dns has no cluster IP in the source"),
        }
    }
    let host = if args.host_resolv_conf.is_empty() {
        None
    } else {
        Some(resolv::load_host_resolv_conf(std::path::Path::new(
            &args.host_resolv_conf,
        ))?)
    };
    let dns_config = match &args.dns_config {
        None => None,
        Some(path) => {
            let (text, origin) = if path.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .context("reading dnsConfig from stdin")?;
                (s, "<stdin>".to_string())
            } else {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading dnsConfig {}", path.display()))?;
                (text, path.display().to_string())
            };
            Some(PodDnsConfig::from_yaml(&text, &origin)?)
        }
    };
    let kubelet = KubeletDns {
        cluster_dns,
        cluster_domain: args.cluster_domain.clone(),
        host,
        node_ips: args.node_ip.clone(),
    };
    let pod = PodDnsSpec {
        namespace: args.namespace.clone(),
        policy: args.dns_policy.into(),
        host_network: args.host_network,
        dns_config,
    };
    let conf = resolv::pod_resolv_conf(&kubelet, &pod)?;
    for w in &conf.warnings {
        eprintln!("warning: {w}");
    }
    emit(conf.render().as_bytes())?;
    Ok(())
}

async fn status(args: StatusArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    let st = client::fetch_status(args.admin, timeout).await?;
    match args.output {
        StatusOutput::Text => emit(st.to_text().as_bytes())?,
        StatusOutput::Json => emit((serde_json::to_string_pretty(&st)? + "\n").as_bytes())?,
    }
    Ok(())
}

async fn dns_query(args: DnsQueryArgs) -> Result<()> {
    let rtype = dig::parse_type(&args.rtype)?;
    let result = dig::query(
        args.server,
        &args.name,
        rtype,
        args.tcp,
        Duration::from_secs(args.timeout),
    )
    .await?;
    if args.short {
        emit(result.to_short().as_bytes())?;
    } else {
        emit(result.to_text().as_bytes())?;
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    let (dns, proxy) = match (args.dns, args.proxy) {
        (false, false) => (true, true),
        chosen => chosen,
    };
    // Each subsystem declares the cache kinds it needs; the agent's source watches their union.
    let mut subsystems = Vec::new();
    let node_local = args.node_local_dns.clone().unwrap_or_default();
    let node_local_on = !node_local.is_empty();
    if !node_local.is_empty() && !dns {
        bail!("--node-local-dns needs the DNS subsystem (drop --proxy, or add --dns)");
    }
    if dns {
        let launcher = match &args.corefile {
            Some(path) => {
                let options = agent::dns::CorefileSubsystemOptions {
                    path: path.clone(),
                    listen_override: args.dns_listen,
                    startup_timeout: Duration::from_secs(5),
                    allow_unknown: false,
                    node_local: node_local.clone(),
                    autopath_node: args.node_name.clone().filter(|_| node_local_on),
                };
                agent::dns::corefile_launcher(options)?
            }
            None => agent::dns::launcher(agent::dns::DnsSubsystemOptions {
                listen: args
                    .dns_listen
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 53))),
                zone: svcnet_core::dns::zone::ZoneOptions {
                    // Node-local mode on a known node: autopath for this node's pods, from a
                    // watch of only those pods.
                    autopath_node: args.node_name.clone().filter(|_| node_local_on),
                    ..svcnet_core::dns::zone::ZoneOptions::for_domain(&args.cluster_domain)
                },
                node_local: node_local.clone(),
                ..Default::default()
            }),
        };
        subsystems.push(if node_local.is_empty() {
            launcher
        } else {
            agent::nodelocal::launcher(
                launcher,
                agent::nodelocal::NodeLocalOptions {
                    addresses: node_local,
                    link: args.node_local_dns_link.clone(),
                    keep_on_exit: args.node_local_dns_keep,
                },
            )
        });
    }
    if proxy {
        subsystems.push(agent::proxy::launcher(agent::proxy::ProxyOptions {
            dry_run: args.dry_run,
            config_file: args.proxy_config.clone(),
            node_name: args.node_name.clone(),
            node_addresses: (!args.node_ip.is_empty()).then(|| args.node_ip.clone()),
            sync_timeout: Duration::from_secs(args.source.sync_timeout),
        }));
    }
    let options = AgentOptions {
        source: args.source.config(),
        kinds: Vec::new(),
        // The proxy's Node watch and node-local autopath's Pod watch are scoped to this node.
        node_name: args.node_name.clone().filter(|_| proxy || node_local_on),
        admin: Some(args.admin),
        subsystems,
        lameduck: Duration::from_secs(args.lameduck),
    };
    agent::run(options, svcnet_core::runtime::signal::shutdown_signal()).await?;
    Ok(())
}
