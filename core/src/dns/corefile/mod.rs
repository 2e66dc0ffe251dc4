//! The Corefile: CoreDNS's configuration file, parsed into typed per-plugin settings.
//!
//! An unchanged CoreDNS Corefile (such as kubeadm's default) loads as it is: server blocks with
//! zones and ports, nested option blocks, comments, quoted strings, environment references
//! (`{$VAR}`, `{env.VAR}`), snippets and `import` of snippets and files. Every plugin gets its
//! CoreDNS defaults. An unknown plugin or option is an error naming it with file, line and
//! column, or a warning with [`LoadOptions::allow_unknown`].
//!
//! ```
//! use svcnet_core::dns::corefile::{self, LoadOptions};
//! let cf = corefile::parse_str(
//!     "Corefile",
//!     ".:53 {\n  forward . 127.0.0.1:5300\n  cache 30\n}\n",
//!     &LoadOptions::default(),
//! )
//! .unwrap();
//! assert_eq!(cf.servers[0].keys[0].zone, ".");
//! assert_eq!(cf.servers[0].plugins.cache.as_ref().unwrap().success.max_ttl.as_secs(), 30);
//! ```

pub mod directives;
pub mod error;
pub mod files;
pub mod lexer;
pub mod names;
pub mod syntax;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub use directives::Fallthrough;
pub use directives::acl::{AclAction, AclPolicy, AclRule};
pub use directives::autopath::{AutopathConfig, SearchSource};
pub use directives::cache::{CacheConfig, CacheTier, Prefetch, ServeStale};
pub use directives::file::FileConfig;
pub use directives::forward::{ForwardConfig, ForwardTls, Policy, SourcePortMode};
pub use directives::hosts::{HostEntry, HostsConfig};
pub use directives::k8s_external::K8sExternalConfig;
pub use directives::kubernetes::{KubernetesConfig, PodsMode};
pub use directives::observe::{
    Consolidate, ConsolidateLevel, ErrorsConfig, HealthConfig, LogClasses, LogConfig,
    PrometheusConfig, ReadyConfig,
};
pub use directives::rewrite::{
    AnswerRewrite, EdnsAction, EdnsData, NameMatch, Pattern, RewriteAction, RewriteRule,
};
pub use directives::simple::ReloadConfig;
pub use directives::template::TemplateConfig;
pub use directives::tls::{PemFile, TlsConfig};
pub use error::{CorefileError, Diagnostic, Position};
pub use files::{FileSource, MemoryFiles, RealFiles};

use directives::{SetupContext, plugin_error};
use lexer::Token;
use syntax::{Directive, ServerBlockSyntax, SyntaxContext};

/// The DNS port used when a key names none.
pub(crate) const DEFAULT_PORT: u16 = 53;

/// The transport a server block key serves (its `scheme://`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ServerTransport {
    /// `dns://` (or no scheme): UDP and TCP, default port 53.
    #[default]
    Dns,
    /// `tls://`: DNS over TLS (RFC 7858), default port 853; needs the `tls` directive.
    Tls,
    /// `https://`: DNS over HTTPS (RFC 8484, HTTP/2 POST on `/dns-query`), default port 443;
    /// needs the `tls` directive.
    Https,
}

impl ServerTransport {
    /// The scheme as written in a key.
    pub fn scheme(self) -> &'static str {
        match self {
            ServerTransport::Dns => "dns",
            ServerTransport::Tls => "tls",
            ServerTransport::Https => "https",
        }
    }

    /// The port used when a key names none.
    pub(crate) fn default_port(self) -> u16 {
        match self {
            ServerTransport::Dns => DEFAULT_PORT,
            ServerTransport::Tls => 853,
            ServerTransport::Https => 443,
        }
    }
}

/// Plugins that are accepted and have no effect here (each noted with a warning).
pub(crate) const NOOP_PLUGINS: &[&str] =
    &["debug", "pprof", "cancel", "bufsize", "timeouts", "trace"];

/// Plugins that may appear more than once in a server block (each use adds a rule).
pub(crate) const REPEATABLE_PLUGINS: &[&str] = &["rewrite", "template", "acl", "bind"];

/// How to load a Corefile.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Unknown plugins and options are warnings instead of errors.
    pub allow_unknown: bool,
    /// Node-local autopath (`agentctl run --node-local-dns --node-name NODE`): in blocks with
    /// `autopath @kubernetes`, the `kubernetes` plugin knows the pods of this node by address
    /// (its [`KubernetesConfig::autopath_node`]) even without `pods verified`, which keeps its
    /// cluster-wide meaning.
    pub autopath_node: Option<String>,
}

/// A loaded Corefile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corefile {
    /// Server blocks in file order.
    pub servers: Vec<ServerBlock>,
    /// Things accepted but ignored or changed.
    pub warnings: Vec<Diagnostic>,
    /// Every file read (the Corefile first, then imports), for change detection.
    pub files: Vec<PathBuf>,
}

/// One `zone:port` key of a server block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKey {
    /// The zone, lower case and fully qualified (`.` for the root).
    pub zone: String,
    /// The port (default 53, 853 for `tls://`, 443 for `https://`).
    pub port: u16,
    /// Where the key is written.
    pub at: Position,
    /// Its transport (`dns://`, `tls://`, `https://`).
    pub transport: ServerTransport,
}

/// A server block: the zones it serves and its plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBlock {
    /// Its keys (a CIDR key expands to one key per reverse zone).
    pub keys: Vec<ServerKey>,
    /// Its plugins' settings.
    pub plugins: PluginSet,
    /// Where the block starts.
    pub at: Position,
}

impl ServerBlock {
    /// The zones of the block.
    pub fn zones(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for k in &self.keys {
            if !out.contains(&k.zone) {
                out.push(k.zone.clone());
            }
        }
        out
    }

    /// The socket addresses the block listens on: each key's port on each `bind` address
    /// (all IPv4 addresses without `bind`).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (sa, _) in self.listeners() {
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
        out
    }

    /// The socket addresses the block listens on, each with its transport.
    pub fn listeners(&self) -> Vec<(SocketAddr, ServerTransport)> {
        let ips = if self.plugins.bind.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            self.plugins.bind.clone()
        };
        let mut out = Vec::new();
        for k in &self.keys {
            for ip in &ips {
                let l = (SocketAddr::new(*ip, k.port), k.transport);
                if !out.contains(&l) {
                    out.push(l);
                }
            }
        }
        out
    }
}

/// The settings of every plugin a server block uses (`None`/`false`: not used).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginSet {
    /// `errors`.
    pub errors: Option<ErrorsConfig>,
    /// `log`.
    pub log: Option<LogConfig>,
    /// `health`.
    pub health: Option<HealthConfig>,
    /// `ready`.
    pub ready: Option<ReadyConfig>,
    /// `prometheus`.
    pub prometheus: Option<PrometheusConfig>,
    /// `kubernetes`.
    pub kubernetes: Option<KubernetesConfig>,
    /// `forward`.
    pub forward: Option<ForwardConfig>,
    /// `cache`.
    pub cache: Option<CacheConfig>,
    /// `hosts`.
    pub hosts: Option<HostsConfig>,
    /// `rewrite` rules, in the order written (empty: not used).
    pub rewrite: Vec<RewriteRule>,
    /// `autopath`.
    pub autopath: Option<AutopathConfig>,
    /// `k8s_external`.
    pub k8s_external: Option<K8sExternalConfig>,
    /// `loadbalance` (round robin of A/AAAA answers).
    pub loadbalance: bool,
    /// `loop` (forwarding loop detection at start-up).
    pub loop_detect: bool,
    /// `reload`.
    pub reload: Option<ReloadConfig>,
    /// `rrl`: rate limit of large UDP answers on the block's listeners.
    pub rrl: Option<crate::dns::rrl::LargeAnswerLimit>,
    /// `bind` addresses, of every `bind` directive together (empty: all).
    pub bind: Vec<IpAddr>,
    /// `tls`: the certificate of the block's `tls://` and `https://` listeners.
    pub tls: Option<TlsConfig>,
    /// Accepted plugins without effect here, by name.
    pub noops: Vec<String>,
    /// `acl` rules, in the order written (empty: not used).
    pub acl: Vec<AclRule>,
    /// `template` directives, in the order written (empty: not used).
    pub template: Vec<TemplateConfig>,
    /// `file`.
    pub file: Option<FileConfig>,
    /// `whoami` (the client's address and port).
    pub whoami: bool,
    /// `any` (RFC 8482 answer to ANY queries).
    pub any: bool,
    /// `minimal` (no authority/additional in positive answers).
    pub minimal: bool,
    /// `local` (localhost names).
    pub local: bool,
}

/// Loads the Corefile at `path` from the real file system and environment.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Corefile, CorefileError> {
    let text = std::fs::read_to_string(path).map_err(|source| CorefileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let env = |k: &str| std::env::var(k).ok();
    load_from(&path.to_string_lossy(), &text, &RealFiles, &env, options)
}

/// Parses Corefile text named `name`, with imports from the real file system and the process
/// environment.
pub fn parse_str(name: &str, text: &str, options: &LoadOptions) -> Result<Corefile, CorefileError> {
    let env = |k: &str| std::env::var(k).ok();
    load_from(name, text, &RealFiles, &env, options)
}

/// Parses Corefile text with the given files and environment (pure: no other IO).
pub fn load_from(
    name: &str,
    text: &str,
    files: &dyn FileSource,
    env: &dyn Fn(&str) -> Option<String>,
    options: &LoadOptions,
) -> Result<Corefile, CorefileError> {
    let tree = syntax::parse(name, text, &SyntaxContext { files, env })?;
    let mut warnings = tree.warnings;
    let mut servers = Vec::new();
    for block in &tree.blocks {
        servers.push(server_block(block, files, options, &mut warnings)?);
    }
    if servers.is_empty() {
        return Err(CorefileError::Syntax {
            at: Position {
                file: name.into(),
                line: 1,
                column: 1,
            },
            message: "no server blocks".to_string(),
        });
    }
    check_duplicate_keys(&servers)?;
    // Certificate files are watched like imports: a change reloads (and applies) them.
    let mut files = tree.files;
    for s in &servers {
        let server_pems = s.plugins.tls.iter().flat_map(|t| {
            [Some(&t.cert), Some(&t.key), t.ca.as_ref()]
                .into_iter()
                .flatten()
        });
        let forward_pems = s.plugins.forward.iter().map(|f| &f.tls).flat_map(|t| {
            [t.cert.as_ref(), t.key.as_ref(), t.ca.as_ref()]
                .into_iter()
                .flatten()
        });
        for pem in server_pems.chain(forward_pems) {
            if !files.contains(&pem.path) {
                files.push(pem.path.clone());
            }
        }
    }
    Ok(Corefile {
        servers,
        warnings,
        files,
    })
}

fn check_duplicate_keys(servers: &[ServerBlock]) -> Result<(), CorefileError> {
    let mut seen: Vec<(&str, u16, &[IpAddr])> = Vec::new();
    for s in servers {
        for k in &s.keys {
            let id = (k.zone.as_str(), k.port, s.plugins.bind.as_slice());
            if seen.contains(&id) {
                return Err(CorefileError::Syntax {
                    at: k.at.clone(),
                    message: format!(
                        "zone {} on port {} is defined more than once",
                        k.zone, k.port
                    ),
                });
            }
            seen.push(id);
        }
    }
    Ok(())
}

fn server_keys(tok: &Token) -> Result<Vec<ServerKey>, CorefileError> {
    let bad = |m: String| CorefileError::Syntax {
        at: tok.at.clone(),
        message: m,
    };
    let mut text = tok.text.as_str();
    let mut transport = ServerTransport::Dns;
    if let Some((scheme, rest)) = text.split_once("://") {
        transport = match scheme {
            "dns" => ServerTransport::Dns,
            "tls" => ServerTransport::Tls,
            "https" => ServerTransport::Https,
            _ => {
                return Err(bad(format!(
                    "server block key {:?}: transport {scheme}:// is not supported (dns://, tls:// or https://)",
                    tok.text
                )));
            }
        };
        text = rest;
    }
    // `zone:port`; in a CIDR key the port can only follow the prefix length.
    let (zone, port) = match text.split_once('/') {
        Some((net, tail)) => match tail.split_once(':') {
            Some((len, port)) => (format!("{net}/{len}"), Some(port)),
            None => (text.to_string(), None),
        },
        None => match text.rsplit_once(':') {
            Some((z, p)) => (z.to_string(), Some(p)),
            None => (text.to_string(), None),
        },
    };
    let port = match port {
        None => transport.default_port(),
        Some(p) => p.parse::<u16>().map_err(|_| {
            bad(format!(
                "server block key {:?}: {p:?} is not a port",
                tok.text
            ))
        })?,
    };
    let zone = if zone.is_empty() {
        ".".to_string()
    } else {
        zone
    };
    let zones = names::normalize_zone(&zone).map_err(|e| bad(format!("server block key: {e}")))?;
    Ok(zones
        .into_iter()
        .map(|zone| ServerKey {
            zone,
            port,
            at: tok.at.clone(),
            transport,
        })
        .collect())
}

fn server_block(
    block: &ServerBlockSyntax,
    files: &dyn FileSource,
    options: &LoadOptions,
    warnings: &mut Vec<Diagnostic>,
) -> Result<ServerBlock, CorefileError> {
    let mut keys = Vec::new();
    for k in &block.keys {
        keys.extend(server_keys(k)?);
    }
    let at = block
        .keys
        .first()
        .map(|k| k.at.clone())
        .expect("a server block has at least one key");
    let mut zones: Vec<String> = Vec::new();
    for k in &keys {
        if !zones.contains(&k.zone) {
            zones.push(k.zone.clone());
        }
    }
    let mut ctx = SetupContext {
        allow_unknown: options.allow_unknown,
        warnings,
        files,
        server_zones: &zones,
    };
    let mut p = PluginSet::default();
    let mut seen: Vec<String> = Vec::new();
    for d in &block.directives {
        let name = d.name.text.as_str();
        if seen.iter().any(|s| s == name)
            && !NOOP_PLUGINS.contains(&name)
            && !REPEATABLE_PLUGINS.contains(&name)
        {
            return Err(plugin_error(
                name,
                &d.name.at,
                "this plugin can only be used once per server block",
            ));
        }
        seen.push(name.to_string());
        apply_directive(d, &mut p, &mut ctx)?;
    }
    let encrypted = keys.iter().find(|k| k.transport != ServerTransport::Dns);
    match (encrypted, &p.tls) {
        (Some(k), None) => {
            return Err(CorefileError::Syntax {
                at: k.at.clone(),
                message: format!(
                    "a {}:// server block needs a `tls CERT KEY [CA]` directive",
                    k.transport.scheme()
                ),
            });
        }
        (None, Some(_)) => {
            let at = block
                .directives
                .iter()
                .find(|d| d.name.text == "tls")
                .map_or(at.clone(), |d| d.name.at.clone());
            ctx.warn(
                &at,
                "plugin/tls: has no effect in a block without tls:// or https:// keys",
            );
        }
        _ => {}
    }
    check_cluster_users(&p, options.autopath_node.is_some(), &mut ctx)?;
    if let (Some(node), Some(k), Some(a)) = (&options.autopath_node, &mut p.kubernetes, &p.autopath)
        && matches!(a.source, SearchSource::Kubernetes { .. })
    {
        k.autopath_node = Some(node.clone());
    }
    Ok(ServerBlock {
        keys,
        plugins: p,
        at,
    })
}

fn apply_directive(
    d: &Directive,
    p: &mut PluginSet,
    ctx: &mut SetupContext<'_>,
) -> Result<(), CorefileError> {
    use directives::{
        autopath, cache, forward, hosts, k8s_external, kubernetes, observe, rewrite, rrl, simple,
        tls,
    };
    match d.name.text.as_str() {
        "errors" => p.errors = Some(observe::parse_errors(d, ctx)?),
        "log" => p.log = Some(observe::parse_log(d, ctx)?),
        "health" => p.health = Some(observe::parse_health(d, ctx)?),
        "ready" => p.ready = Some(observe::parse_ready(d)?),
        "prometheus" => p.prometheus = Some(observe::parse_prometheus(d)?),
        "kubernetes" => p.kubernetes = Some(kubernetes::parse(d, ctx)?),
        "forward" => p.forward = Some(forward::parse(d, ctx)?),
        "cache" => p.cache = Some(cache::parse(d, ctx)?),
        "hosts" => p.hosts = Some(hosts::parse(d, ctx)?),
        "rewrite" => p.rewrite.extend(rewrite::parse(d, ctx)?),
        "autopath" => p.autopath = Some(autopath::parse(d, ctx)?),
        "k8s_external" => p.k8s_external = Some(k8s_external::parse(d, ctx)?),
        "loadbalance" => {
            simple::parse_loadbalance(d, ctx)?;
            p.loadbalance = true;
        }
        "loop" => {
            simple::parse_loop(d)?;
            p.loop_detect = true;
        }
        "reload" => p.reload = Some(simple::parse_reload(d)?),
        "rrl" => p.rrl = Some(rrl::parse(d, ctx)?),
        "bind" => {
            for ip in simple::parse_bind(d, ctx)? {
                if !p.bind.contains(&ip) {
                    p.bind.push(ip);
                }
            }
        }
        "acl" => p.acl.push(directives::acl::parse(d, ctx)?),
        "template" => p.template.push(directives::template::parse(d, ctx)?),
        "file" => p.file = Some(directives::file::parse(d, ctx)?),
        "whoami" | "any" | "minimal" | "local" => {
            let name = d.name.text.as_str();
            directives::flags::parse_flag(name, d)?;
            *match name {
                "whoami" => &mut p.whoami,
                "any" => &mut p.any,
                "minimal" => &mut p.minimal,
                _ => &mut p.local,
            } = true;
        }
        "tls" => p.tls = Some(tls::parse(d, ctx)?),
        name if NOOP_PLUGINS.contains(&name) => {
            ctx.warn(
                &d.name.at,
                format!("plugin/{name}: accepted, has no effect in svcnet-dns"),
            );
            p.noops.push(name.to_string());
        }
        name => {
            if ctx.allow_unknown {
                ctx.warn(&d.name.at, format!("unknown plugin {name:?} ignored"));
            } else {
                return Err(CorefileError::UnknownPlugin {
                    at: d.name.at.clone(),
                    name: name.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// `k8s_external` and `autopath @kubernetes` answer from the `kubernetes` plugin of their own
/// server block: without one they are an error at their position.
/// `autopath @kubernetes` without `pods verified` has no effect (a warning), unless the agent
/// runs node-local autopath (`node_autopath`).
fn check_cluster_users(
    p: &PluginSet,
    node_autopath: bool,
    ctx: &mut SetupContext<'_>,
) -> Result<(), CorefileError> {
    if let Some(k) = &p.kubernetes {
        if let Some(a) = &p.autopath
            && matches!(a.source, SearchSource::Kubernetes { .. })
            && k.pods != PodsMode::Verified
            && !node_autopath
        {
            ctx.warn(
                &a.at,
                "plugin/autopath: @kubernetes has no effect unless the kubernetes plugin has `pods verified`",
            );
        }
        return Ok(());
    }
    if let Some(e) = &p.k8s_external {
        return Err(plugin_error(
            "k8s_external",
            &e.at,
            "needs the kubernetes plugin in the same server block",
        ));
    }
    if let Some(a) = &p.autopath
        && matches!(a.source, SearchSource::Kubernetes { .. })
    {
        return Err(plugin_error(
            "autopath",
            &a.at,
            "@kubernetes needs the kubernetes plugin in the same server block",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
