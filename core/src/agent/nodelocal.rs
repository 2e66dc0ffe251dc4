//! Node-local DNS (`agentctl run --node-local-dns`): the agent answers DNS on a link-local
//! address (default `169.254.20.10`) bound on a dummy link it creates and owns (`nodelocaldns`,
//! the name NodeLocal DNSCache uses), and keeps DNS to and from that address out of conntrack.
//!
//! What is installed, as NodeLocal DNSCache's `cmd/node-cache` installs it, but in chains of
//! our own so that removal is one flush and delete (per address, port 53, UDP and TCP):
//!
//! | table | built-in chain | our chain | rules |
//! |---|---|---|---|
//! | raw | PREROUTING | `SVCNET-NODELOCAL-PRE` | `-d ADDR --dport 53 -j NOTRACK` |
//! | raw | OUTPUT | `SVCNET-NODELOCAL-OUT` | `-s ADDR --sport 53 -j NOTRACK`, `-d ADDR --dport 53 -j NOTRACK` |
//! | filter | INPUT | `SVCNET-NODELOCAL-IN` | `-d ADDR --dport 53 -j ACCEPT` |
//! | filter | OUTPUT | `SVCNET-NODELOCAL-OUT` | `-s ADDR --sport 53 -j ACCEPT` |
//!
//! Each chain is reached by one jump inserted first in its built-in chain. The iptables
//! variant (legacy or nft) is the one the proxy's detection picks ([`detect_mode`]).
//! [`NodeLocal::setup`] is all or nothing: a failure undoes what it set up. [`NodeLocal::teardown`]
//! runs on a clean stop. The rule tables ([`setup_script`], [`teardown_script`]) are pure.

use std::net::{IpAddr, Ipv4Addr};

use tokio::sync::watch;

use super::{AgentError, SubsystemLauncher};
use crate::cache::CacheReader;
use crate::ipvs::backend::{AddressBackend, BackendError};
use crate::ipvs::host::{CommandRunner, IptablesMode, ProcessRunner, detect_mode};
use crate::ipvs::netlink::NetlinkAddresses;
use crate::ipvs::table::Family;

/// The default node-local DNS address (NodeLocal DNSCache's).
pub const DEFAULT_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 20, 10));
/// The dummy link holding the node-local addresses.
pub const DEFAULT_LINK: &str = "nodelocaldns";
/// The port pods ask (their `resolv.conf` has no port).
pub const DNS_PORT: u16 = crate::dns::plugins::build::NODE_LOCAL_PORT;

const RAW_PRE: &str = "SVCNET-NODELOCAL-PRE";
const RAW_OUT: &str = "SVCNET-NODELOCAL-OUT";
const FILTER_IN: &str = "SVCNET-NODELOCAL-IN";
const FILTER_OUT: &str = "SVCNET-NODELOCAL-OUT";

/// (table, built-in chain, our chain): where each of our chains is jumped to from.
const JUMPS: [(&str, &str, &str); 4] = [
    ("raw", "PREROUTING", RAW_PRE),
    ("raw", "OUTPUT", RAW_OUT),
    ("filter", "INPUT", FILTER_IN),
    ("filter", "OUTPUT", FILTER_OUT),
];

const ENOTSUP: i32 = 95;

/// Node-local DNS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLocalOptions {
    /// The addresses to answer on (IPv4 and/or IPv6), port 53.
    pub addresses: Vec<IpAddr>,
    /// The dummy link to create and bind them on.
    pub link: String,
    /// Leave the link, its addresses and the rules in place on a clean stop (for restarts and
    /// upgrades: while no agent listens, a pod's query to the address gets an ICMP port
    /// unreachable at once and its resolver asks its next nameserver, instead of the query
    /// leaving the node and timing out). The next start adopts them.
    pub keep_on_exit: bool,
}

impl Default for NodeLocalOptions {
    fn default() -> Self {
        Self {
            addresses: vec![DEFAULT_ADDRESS],
            link: DEFAULT_LINK.to_string(),
            keep_on_exit: false,
        }
    }
}

/// Why node-local DNS could not be set up (nothing of it is left on the node).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeLocalError {
    /// No address, or an address that cannot be a listen address.
    #[error("node-local DNS address {0}: not usable (needs a unicast address)")]
    BadAddress(IpAddr),
    /// No address given.
    #[error("node-local DNS needs at least one address")]
    NoAddress,
    /// The address is already bound on another interface of this node.
    #[error(
        "node-local DNS address {addr} is already bound on another interface of this node (link index {index}); pick another with --node-local-dns=ADDR"
    )]
    AddressInUse {
        /// The address.
        addr: IpAddr,
        /// The link holding it.
        index: u32,
    },
    /// The kernel cannot create dummy links.
    #[error(
        "creating dummy link {link} for node-local DNS: the kernel has no dummy link support (module `dummy` missing?): {source}"
    )]
    NoDummy {
        /// The link.
        link: String,
        /// The kernel's answer.
        source: BackendError,
    },
    /// The link or its addresses could not be changed.
    #[error("node-local DNS link {link}: {source}")]
    Link {
        /// The link.
        link: String,
        /// The failure.
        source: BackendError,
    },
    /// iptables could not be read or changed (missing, or the kernel lacks the raw table).
    #[error("node-local DNS iptables rules ({command}): {source}")]
    Iptables {
        /// The command (`iptables-legacy-restore`, ...).
        command: String,
        /// The failure.
        source: BackendError,
    },
}

/// The link side of the setup: a small trait so the all-or-nothing logic is tested without a
/// kernel.
pub(crate) trait LinkOps: Send {
    /// Whether the dummy link exists.
    fn link_exists(&mut self) -> Result<bool, BackendError>;
    /// Creates the dummy link.
    fn create_link(&mut self) -> Result<(), BackendError>;
    /// Deletes the dummy link (and with it its addresses).
    fn delete_link(&mut self) -> Result<(), BackendError>;
    /// Addresses bound on links other than the dummy link, with their link index.
    fn addresses_elsewhere(&mut self) -> Result<Vec<(u32, IpAddr)>, BackendError>;
    /// Binds the addresses on the dummy link (already bound: fine).
    fn bind(&mut self, addrs: &[IpAddr]) -> Result<(), BackendError>;
}

/// [`LinkOps`] over rtnetlink (the `kube-ipvs0` code, on another link name).
struct NetlinkLink(NetlinkAddresses);

impl LinkOps for NetlinkLink {
    fn link_exists(&mut self) -> Result<bool, BackendError> {
        Ok(self.0.link_index()?.is_some())
    }

    fn create_link(&mut self) -> Result<(), BackendError> {
        self.0.ensure_link()
    }

    fn delete_link(&mut self) -> Result<(), BackendError> {
        self.0.delete_link()
    }

    fn addresses_elsewhere(&mut self) -> Result<Vec<(u32, IpAddr)>, BackendError> {
        let own = self.0.link_index()?;
        Ok(self
            .0
            .all_addresses()?
            .into_iter()
            .filter(|(i, _)| Some(*i) != own)
            .collect())
    }

    fn bind(&mut self, addrs: &[IpAddr]) -> Result<(), BackendError> {
        match AddressBackend::bind(&mut self.0, addrs)?.into_iter().next() {
            None => Ok(()),
            Some((_, e)) => Err(e),
        }
    }
}

/// The families of `addrs`, each with its addresses.
fn by_family(addrs: &[IpAddr]) -> Vec<(Family, Vec<IpAddr>)> {
    let mut out: Vec<(Family, Vec<IpAddr>)> = Vec::new();
    for a in addrs {
        let f = if a.is_ipv4() { Family::V4 } else { Family::V6 };
        match out.iter_mut().find(|(g, _)| *g == f) {
            Some((_, v)) => v.push(*a),
            None => out.push((f, vec![*a])),
        }
    }
    out
}

fn host_cidr(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

/// The rules of our chains for `addrs` (one family), as `iptables-restore` lines per table:
/// NodeLocal DNSCache's NOTRACK and ACCEPT rules for UDP and TCP port 53.
pub(crate) fn chain_rules(addrs: &[IpAddr]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for a in addrs {
        let a = host_cidr(a);
        for p in ["tcp", "udp"] {
            let to = format!("-d {a} -p {p} -m {p} --dport {DNS_PORT}");
            let from = format!("-s {a} -p {p} -m {p} --sport {DNS_PORT}");
            out.push(("raw", format!("-A {RAW_PRE} {to} -j NOTRACK")));
            out.push(("raw", format!("-A {RAW_OUT} {from} -j NOTRACK")));
            // Locally generated queries (host-network pods, the node itself).
            out.push(("raw", format!("-A {RAW_OUT} {to} -j NOTRACK")));
            out.push(("filter", format!("-A {FILTER_IN} {to} -j ACCEPT")));
            out.push(("filter", format!("-A {FILTER_OUT} {from} -j ACCEPT")));
        }
    }
    out
}

/// The jump rules to our chains present in an `iptables-save` output, as `(table, line)`.
fn present_jumps(saved: &str) -> Vec<(String, String)> {
    let mut table = String::new();
    let mut out = Vec::new();
    for line in saved.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
            continue;
        }
        for (t, builtin, ours) in JUMPS {
            if t == table
                && line.starts_with(&format!("-A {builtin} "))
                && line.trim_end().ends_with(&format!("-j {ours}"))
            {
                out.push((table.clone(), line.trim_end().to_string()));
            }
        }
    }
    out
}

/// The `iptables-restore --noflush` script installing our chains for `addrs` (one family),
/// given the current `iptables-save` output: our chains are (re)declared, which empties them,
/// refilled, and jumped to first from their built-in chains unless a jump is there already.
pub(crate) fn setup_script(addrs: &[IpAddr], saved: &str) -> String {
    let present = present_jumps(saved);
    let rules = chain_rules(addrs);
    let mut out = String::new();
    for table in ["raw", "filter"] {
        out.push_str(&format!("*{table}\n"));
        for (t, _, ours) in JUMPS {
            if t == table {
                out.push_str(&format!(":{ours} - [0:0]\n"));
            }
        }
        for (t, line) in &rules {
            if *t == table {
                out.push_str(line);
                out.push('\n');
            }
        }
        for (t, builtin, ours) in JUMPS {
            if t == table && !present.iter().any(|(pt, l)| pt == t && l.ends_with(ours)) {
                out.push_str(&format!("-I {builtin} 1 -j {ours}\n"));
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The `iptables-restore --noflush` script removing our jumps (every copy found in `saved`)
/// and our chains; `None` when nothing of ours is there.
pub(crate) fn teardown_script(saved: &str) -> Option<String> {
    let present = present_jumps(saved);
    let declared = |table: &str, chain: &str| {
        let mut t = "";
        saved.lines().any(|l| {
            if let Some(x) = l.strip_prefix('*') {
                t = x.trim();
            }
            t == table && l.starts_with(&format!(":{chain} "))
        })
    };
    let mut out = String::new();
    for table in ["raw", "filter"] {
        let chains: Vec<&str> = JUMPS
            .iter()
            .filter(|(t, _, ours)| *t == table && declared(table, ours))
            .map(|(_, _, ours)| *ours)
            .collect();
        let jumps: Vec<&String> = present
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, l)| l)
            .collect();
        if chains.is_empty() && jumps.is_empty() {
            continue;
        }
        out.push_str(&format!("*{table}\n"));
        for c in &chains {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for j in jumps {
            out.push_str(&format!("-D{}\n", &j[2..]));
        }
        for c in &chains {
            out.push_str(&format!("-X {c}\n"));
        }
        out.push_str("COMMIT\n");
    }
    (!out.is_empty()).then_some(out)
}

/// Node-local DNS set up on this node: the link, its addresses and the rules.
pub struct NodeLocal {
    options: NodeLocalOptions,
    mode: Option<IptablesMode>,
    created_link: bool,
}

fn iptables_err(command: String) -> impl FnOnce(BackendError) -> NodeLocalError {
    move |source| NodeLocalError::Iptables { command, source }
}

impl NodeLocal {
    /// Sets node-local DNS up on the real host (rtnetlink, the `iptables-*` tools).
    pub fn setup_host(options: &NodeLocalOptions) -> Result<Self, NodeLocalError> {
        let link_err = |source| NodeLocalError::Link {
            link: options.link.clone(),
            source,
        };
        let mut link = NetlinkLink(NetlinkAddresses::open_link(&options.link).map_err(link_err)?);
        Self::setup(options, &mut link, &mut ProcessRunner)
    }

    /// Checks the addresses are free, creates the link, binds them, installs the rules; any
    /// failure undoes what was done before it and is returned.
    pub(crate) fn setup(
        options: &NodeLocalOptions,
        link: &mut dyn LinkOps,
        runner: &mut dyn CommandRunner,
    ) -> Result<Self, NodeLocalError> {
        if options.addresses.is_empty() {
            return Err(NodeLocalError::NoAddress);
        }
        for a in &options.addresses {
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                return Err(NodeLocalError::BadAddress(*a));
            }
        }
        let link_err = |source| NodeLocalError::Link {
            link: options.link.clone(),
            source,
        };
        let elsewhere = link.addresses_elsewhere().map_err(link_err)?;
        if let Some((index, addr)) = elsewhere
            .iter()
            .find(|(_, a)| options.addresses.contains(a))
        {
            return Err(NodeLocalError::AddressInUse {
                addr: *addr,
                index: *index,
            });
        }
        let created_link = !link.link_exists().map_err(link_err)?;
        if created_link {
            link.create_link().map_err(|source| match source {
                BackendError::Kernel { errno, .. } if errno == ENOTSUP => NodeLocalError::NoDummy {
                    link: options.link.clone(),
                    source,
                },
                source => link_err(source),
            })?;
        }
        let mut me = Self {
            options: options.clone(),
            mode: None,
            created_link,
        };
        if let Err(e) = link.bind(&options.addresses) {
            me.undo(link, runner);
            return Err(link_err(e));
        }
        let mode = detect_mode(runner);
        me.mode = Some(mode);
        for (family, addrs) in by_family(&options.addresses) {
            let result = (|| {
                let save = mode.command(family, "-save");
                let saved = runner.run(&save, &[], None).map_err(iptables_err(save))?;
                let restore = mode.command(family, "-restore");
                runner
                    .run(
                        &restore,
                        &["--noflush"],
                        Some(&setup_script(&addrs, &saved)),
                    )
                    .map_err(iptables_err(restore))
            })();
            if let Err(e) = result {
                me.undo(link, runner);
                return Err(e);
            }
        }
        tracing::info!(
            link = %options.link,
            addresses = ?options.addresses,
            iptables = ?mode,
            "node-local DNS set up: addresses bound, DNS to and from them not tracked"
        );
        Ok(me)
    }

    /// Undoes a partial setup, logging what could not be undone.
    fn undo(&mut self, link: &mut dyn LinkOps, runner: &mut dyn CommandRunner) {
        for e in self.remove(link, runner, self.created_link) {
            tracing::warn!(error = %e, "undoing a failed node-local DNS setup");
        }
    }

    /// Removes the rules (every family), then the link with its addresses when `delete_link`.
    fn remove(
        &mut self,
        link: &mut dyn LinkOps,
        runner: &mut dyn CommandRunner,
        delete_link: bool,
    ) -> Vec<NodeLocalError> {
        let mut errors = Vec::new();
        if let Some(mode) = self.mode {
            for (family, _) in by_family(&self.options.addresses) {
                let save = mode.command(family, "-save");
                let result = runner
                    .run(&save, &[], None)
                    .map_err(iptables_err(save))
                    .and_then(|saved| match teardown_script(&saved) {
                        None => Ok(()),
                        Some(script) => {
                            let restore = mode.command(family, "-restore");
                            runner
                                .run(&restore, &["--noflush"], Some(&script))
                                .map(drop)
                                .map_err(iptables_err(restore))
                        }
                    });
                if let Err(e) = result {
                    errors.push(e);
                }
            }
        }
        if delete_link && let Err(source) = link.delete_link() {
            errors.push(NodeLocalError::Link {
                link: self.options.link.clone(),
                source,
            });
        }
        errors
    }

    /// Removes what [`setup`](Self::setup) installed from the real host (clean stop): the
    /// rules, then the link with its addresses. Returns what could not be removed.
    pub fn teardown_host(mut self) -> Vec<NodeLocalError> {
        match NetlinkAddresses::open_link(&self.options.link) {
            Ok(a) => self.remove(&mut NetlinkLink(a), &mut ProcessRunner, true),
            Err(source) => vec![NodeLocalError::Link {
                link: self.options.link.clone(),
                source,
            }],
        }
    }

    /// Like [`teardown_host`](Self::teardown_host) over given IO.
    #[cfg(test)]
    pub(crate) fn teardown(
        mut self,
        link: &mut dyn LinkOps,
        runner: &mut dyn CommandRunner,
    ) -> Vec<NodeLocalError> {
        self.remove(link, runner, true)
    }
}

pub use crate::dns::plugins::build::node_local_listeners as extra_listen_addrs;

/// Wraps the DNS subsystem's launcher: before it starts, node-local DNS is set up on the host
/// (all or nothing; an error stops the agent's start with what and why); when the DNS
/// subsystem has stopped (after its lameduck), the rules, addresses and link are removed
/// unless [`NodeLocalOptions::keep_on_exit`] (a failed start always removes them). The DNS
/// subsystem itself must listen on the addresses (its `node_local` option).
pub fn launcher(mut inner: SubsystemLauncher, options: NodeLocalOptions) -> SubsystemLauncher {
    let name = inner.name;
    // Only the start function is wrapped; the launcher keeps everything else it declares.
    let launch = inner.launch;
    inner.launch = Box::new(
        move |reader: CacheReader, shutdown: watch::Receiver<bool>| {
            Box::pin(async move {
                let opts = options.clone();
                let keep = options.keep_on_exit;
                let setup = tokio::task::spawn_blocking(move || NodeLocal::setup_host(&opts)).await;
                let nodelocal = match setup {
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        return Err(AgentError::Subsystem {
                            subsystem: name,
                            reason: e.to_string(),
                        });
                    }
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                let teardown = |n: NodeLocal| async move {
                    let errors = tokio::task::spawn_blocking(move || n.teardown_host())
                        .await
                        .unwrap_or_default();
                    if errors.is_empty() {
                        tracing::info!("node-local DNS removed: rules, addresses and link");
                    }
                    for e in errors {
                        tracing::warn!(error = %e, "removing node-local DNS");
                    }
                };
                match launch(reader, shutdown).await {
                    Ok(mut running) => {
                        let task = running.task;
                        running.task = tokio::spawn(async move {
                            let _ = task.await;
                            if keep {
                                tracing::info!(
                                    "node-local DNS kept for the next start: link, addresses and rules stay"
                                );
                            } else {
                                teardown(nodelocal).await;
                            }
                        });
                        Ok(running)
                    }
                    Err(e) => {
                        teardown(nodelocal).await;
                        Err(e)
                    }
                }
            })
        },
    );
    inner
}

#[cfg(test)]
#[path = "nodelocal_tests.rs"]
mod tests;
