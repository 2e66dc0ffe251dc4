//! kube-proxy's IPVS-mode iptables rules as a table of data — (chain, matches, target) rows per
//! table — rendered for `iptables-restore --noflush` by one function ([`render`]), and the jumps
//! from the built-in chains into ours.
//!
//! Most rules only match ipsets, so they stay the same while services change; the exception is
//! `KUBE-IPVS-OUT-FILTER`, one rule per source-restricted load balancer the node itself may not
//! reach.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::ipset::set_name;
use crate::ipvs::config::ProxyConfig;
use crate::ipvs::extras::{HostExtras, SourceRanges};
use crate::ipvs::table::Family;

/// When a [`Row`] of the rule table is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Always.
    Always,
    /// With `masqueradeAll`.
    MasqueradeAll,
    /// Without `masqueradeAll` and without a cluster CIDR of the family.
    NoClusterCidr,
    /// Without `masqueradeAll`: once per cluster CIDR of the family (`{cidr}` in the matches).
    EachClusterCidr,
}

/// One row of the rule table: `-A {chain} {matches} -j {target}`. In `matches` and `target`,
/// `{NAME}` stands for the ipset `NAME` of the rendered family, `{mark}` for the masquerade
/// mark (hex) and `{cidr}` for a cluster CIDR.
#[derive(Debug)]
struct Row {
    chain: &'static str,
    when: When,
    matches: &'static str,
    target: &'static str,
}

/// The rows of one iptables table, with the chains it declares.
#[derive(Debug)]
struct TableSpec {
    name: &'static str,
    chains: &'static [&'static str],
    rows: &'static [Row],
}

const fn row(chain: &'static str, matches: &'static str, target: &'static str) -> Row {
    Row {
        chain,
        when: When::Always,
        matches,
        target,
    }
}

const fn row_when(
    when: When,
    chain: &'static str,
    matches: &'static str,
    target: &'static str,
) -> Row {
    Row {
        chain,
        when,
        matches,
        target,
    }
}

/// The `nat` table: service capture, masquerading and hairpin.
const NAT: TableSpec = TableSpec {
    name: "nat",
    chains: &[
        "KUBE-SERVICES",
        "KUBE-POSTROUTING",
        "KUBE-NODE-PORT",
        "KUBE-LOAD-BALANCER",
        "KUBE-MARK-MASQ",
    ],
    rows: &[
        row(
            "KUBE-SERVICES",
            "-m comment --comment \"Kubernetes service lb portal\" -m set --match-set {KUBE-LOAD-BALANCER} dst,dst",
            "KUBE-LOAD-BALANCER",
        ),
        row_when(
            When::MasqueradeAll,
            "KUBE-SERVICES",
            "-m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set {KUBE-CLUSTER-IP} dst,dst",
            "KUBE-MARK-MASQ",
        ),
        // Without a cluster CIDR to tell pods from the rest, masquerade what the node itself sends
        // from a cluster IP (kube-proxy does the same): a connection from the node to a cluster IP
        // takes that cluster IP (bound to kube-ipvs0) as its source, and a backend on another node
        // would send its replies to that node's own copy of the address.
        row_when(
            When::NoClusterCidr,
            "KUBE-SERVICES",
            "-m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set {KUBE-CLUSTER-IP} src,dst",
            "KUBE-MARK-MASQ",
        ),
        row_when(
            When::EachClusterCidr,
            "KUBE-SERVICES",
            "! -s {cidr} -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set {KUBE-CLUSTER-IP} dst,dst",
            "KUBE-MARK-MASQ",
        ),
        row(
            "KUBE-SERVICES",
            "-m comment --comment \"Kubernetes service external ip + port with externalTrafficPolicy=local\" -m set --match-set {KUBE-EXTERNAL-IP-LOCAL} dst,dst",
            "ACCEPT",
        ),
        row(
            "KUBE-SERVICES",
            "-m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set {KUBE-EXTERNAL-IP} dst,dst",
            "KUBE-MARK-MASQ",
        ),
        row(
            "KUBE-SERVICES",
            "-m addrtype --dst-type LOCAL",
            "KUBE-NODE-PORT",
        ),
        row(
            "KUBE-SERVICES",
            "-m set --match-set {KUBE-CLUSTER-IP} dst,dst",
            "ACCEPT",
        ),
        row(
            "KUBE-SERVICES",
            "-m set --match-set {KUBE-LOAD-BALANCER} dst,dst",
            "ACCEPT",
        ),
        row(
            "KUBE-LOAD-BALANCER",
            "-m set --match-set {KUBE-LOAD-BALANCER-LOCAL} dst,dst",
            "RETURN",
        ),
        row("KUBE-LOAD-BALANCER", "", "KUBE-MARK-MASQ"),
        row(
            "KUBE-NODE-PORT",
            "-p tcp -m comment --comment \"Kubernetes nodeport TCP port with externalTrafficPolicy=local\" -m set --match-set {KUBE-NODE-PORT-LOCAL-TCP} dst",
            "RETURN",
        ),
        row(
            "KUBE-NODE-PORT",
            "-p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set {KUBE-NODE-PORT-TCP} dst",
            "KUBE-MARK-MASQ",
        ),
        row(
            "KUBE-NODE-PORT",
            "-p udp -m comment --comment \"Kubernetes nodeport UDP port with externalTrafficPolicy=local\" -m set --match-set {KUBE-NODE-PORT-LOCAL-UDP} dst",
            "RETURN",
        ),
        row(
            "KUBE-NODE-PORT",
            "-p udp -m comment --comment \"Kubernetes nodeport UDP port for masquerade purpose\" -m set --match-set {KUBE-NODE-PORT-UDP} dst",
            "KUBE-MARK-MASQ",
        ),
        row(
            "KUBE-NODE-PORT",
            "-p sctp -m comment --comment \"Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'\" -m set --match-set {KUBE-NODE-PORT-LOCAL-SCTP-HASH} dst,dst",
            "RETURN",
        ),
        row(
            "KUBE-NODE-PORT",
            "-p sctp -m comment --comment \"Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'\" -m set --match-set {KUBE-NODE-PORT-SCTP-HASH} dst,dst",
            "KUBE-MARK-MASQ",
        ),
        row(
            "KUBE-POSTROUTING",
            "-m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set {KUBE-LOOP-BACK} dst,dst,src",
            "MASQUERADE",
        ),
        row(
            "KUBE-POSTROUTING",
            "-m mark ! --mark {mark}/{mark}",
            "RETURN",
        ),
        row("KUBE-POSTROUTING", "", "MARK --xor-mark {mark}"),
        row(
            "KUBE-POSTROUTING",
            "-m comment --comment \"kubernetes service traffic requiring SNAT\"",
            "MASQUERADE --random-fully",
        ),
        row("KUBE-MARK-MASQ", "", "MARK --or-mark {mark}"),
    ],
};

/// The `filter` table: forwarding, health-check ports, load-balancer source ranges and the
/// IPVS access filter. No `--ctstate INVALID -j DROP` here (kube-proxy's iptables mode has one):
/// with IPVS and `vs/conntrack=1`, replies bridged between pods (br_netfilter) can look INVALID
/// and would be dropped, breaking pod → cluster IP → pod on the same bridge.
const FILTER: TableSpec = TableSpec {
    name: "filter",
    chains: &[
        "KUBE-FORWARD",
        "KUBE-NODE-PORT",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "KUBE-IPVS-FILTER",
        "KUBE-IPVS-OUT-FILTER",
    ],
    rows: &[
        row(
            "KUBE-FORWARD",
            "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark}",
            "ACCEPT",
        ),
        row(
            "KUBE-FORWARD",
            "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED",
            "ACCEPT",
        ),
        row(
            "KUBE-NODE-PORT",
            "-m comment --comment \"Kubernetes health check node port\" -m set --match-set {KUBE-HEALTH-CHECK-NODE-PORT} dst",
            "ACCEPT",
        ),
        row(
            "KUBE-PROXY-FIREWALL",
            "-m comment --comment \"Kubernetes service load balancer ip + port for load balancer with sourceRange\" -m set --match-set {KUBE-LOAD-BALANCER-FW} dst,dst",
            "KUBE-SOURCE-RANGES-FIREWALL",
        ),
        row(
            "KUBE-SOURCE-RANGES-FIREWALL",
            "-m comment --comment \"Kubernetes service load balancer ip + port + source cidr for packet filter purpose\" -m set --match-set {KUBE-LOAD-BALANCER-SOURCE-CIDR} dst,dst,src",
            "RETURN",
        ),
        row(
            "KUBE-SOURCE-RANGES-FIREWALL",
            "-m comment --comment \"Kubernetes service load balancer ip + port + source IP for packet filter purpose\" -m set --match-set {KUBE-LOAD-BALANCER-SOURCE-IP} dst,dst,src",
            "RETURN",
        ),
        row("KUBE-SOURCE-RANGES-FIREWALL", "", "DROP"),
        row(
            "KUBE-IPVS-FILTER",
            "-m set --match-set {KUBE-LOAD-BALANCER} dst,dst",
            "RETURN",
        ),
        row(
            "KUBE-IPVS-FILTER",
            "-m set --match-set {KUBE-CLUSTER-IP} dst,dst",
            "RETURN",
        ),
        row(
            "KUBE-IPVS-FILTER",
            "-m set --match-set {KUBE-EXTERNAL-IP} dst,dst",
            "RETURN",
        ),
        row(
            "KUBE-IPVS-FILTER",
            "-m set --match-set {KUBE-EXTERNAL-IP-LOCAL} dst,dst",
            "RETURN",
        ),
        row(
            "KUBE-IPVS-FILTER",
            "-m set --match-set {KUBE-HEALTH-CHECK-NODE-PORT} dst",
            "RETURN",
        ),
        row(
            "KUBE-IPVS-FILTER",
            "-m conntrack --ctstate NEW -m set --match-set {KUBE-IPVS-IPS} dst",
            "REJECT",
        ),
    ],
};

/// One rule ready to render: `-A {chain} {matches} -j {target}` (no matches: `-A {chain} -j
/// {target}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    chain: &'static str,
    matches: String,
    target: String,
}

/// The rules of one table, with the chains it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableRules {
    name: &'static str,
    chains: &'static [&'static str],
    rules: Vec<Rule>,
}

/// Replaces the placeholders of a [`Row`]'s text: `{mark}`, `{cidr}`, and `{SET}` (the name of
/// ipset `SET` for `family`).
fn expand(template: &str, family: Family, mark: u32, cidr: &str) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        match &after[..close] {
            "mark" => {
                let _ = write!(out, "{mark:#x}");
            }
            "cidr" => out.push_str(cidr),
            set => out.push_str(&set_name(set, family)),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The rules of `spec` for one family under `config`.
fn table_rules(spec: &TableSpec, config: &ProxyConfig, family: Family) -> TableRules {
    let mark = config.masquerade_mark();
    let cidrs: Vec<String> = config
        .cluster_cidrs
        .iter()
        .filter(|n| Family::of(&n.ip()) == family)
        .map(ToString::to_string)
        .collect();
    let mut rules = Vec::with_capacity(spec.rows.len());
    for r in spec.rows {
        let instances: &[String] = match r.when {
            When::Always => &[String::new()],
            When::MasqueradeAll if config.masquerade_all => &[String::new()],
            When::NoClusterCidr if !config.masquerade_all && cidrs.is_empty() => &[String::new()],
            When::EachClusterCidr if !config.masquerade_all => &cidrs,
            _ => &[],
        };
        for cidr in instances {
            rules.push(Rule {
                chain: r.chain,
                matches: expand(r.matches, family, mark, cidr),
                target: expand(r.target, family, mark, cidr),
            });
        }
    }
    TableRules {
        name: spec.name,
        chains: spec.chains,
        rules,
    }
}

/// The node's own connections to a load balancer whose source ranges exclude it: they come from
/// the ingress IP itself (bound to kube-ipvs0) and would otherwise bypass the firewall. One
/// `KUBE-IPVS-OUT-FILTER` rule per such ingress `ip:port`.
fn out_filter_rules(family: Family, extras: &HostExtras, node_addresses: &[IpAddr]) -> Vec<Rule> {
    let mut no_node_access: Vec<&SourceRanges> = extras
        .source_ranges
        .iter()
        .filter(|r| Family::of(&r.ip) == family && !r.allows_node(node_addresses))
        .collect();
    no_node_access.sort_by_key(|r| (r.ip, r.protocol.as_lower(), r.port));
    no_node_access.dedup_by_key(|r| (r.ip, r.protocol.as_lower(), r.port));
    no_node_access
        .into_iter()
        .map(|r| Rule {
            chain: "KUBE-IPVS-OUT-FILTER",
            matches: format!(
                "-s {ip} -m ipvs --vaddr {ip} --vproto {proto} --vport {port}",
                ip = r.ip,
                proto = r.protocol.as_lower(),
                port = r.port
            ),
            target: "DROP".into(),
        })
        .collect()
}

/// Our chains' rules for one family: the `nat` and `filter` tables.
pub(crate) fn rules(
    config: &ProxyConfig,
    family: Family,
    extras: &HostExtras,
    node_addresses: &[IpAddr],
) -> [TableRules; 2] {
    let nat = table_rules(&NAT, config, family);
    let mut filter = table_rules(&FILTER, config, family);
    filter
        .rules
        .extend(out_filter_rules(family, extras, node_addresses));
    [nat, filter]
}

/// `iptables-restore` text of `tables`: per table its header, chain declarations, rules and
/// `COMMIT`.
pub(crate) fn render(tables: &[TableRules]) -> String {
    let mut out = String::new();
    for t in tables {
        let _ = writeln!(out, "*{}", t.name);
        for c in t.chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for r in &t.rules {
            out.push_str("-A ");
            out.push_str(r.chain);
            if !r.matches.is_empty() {
                out.push(' ');
                out.push_str(&r.matches);
            }
            out.push_str(" -j ");
            out.push_str(&r.target);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Our chains' rules for `iptables-restore --noflush` (one family), without [`HostExtras`].
pub fn iptables_restore(config: &ProxyConfig, family: Family) -> String {
    iptables_restore_with(config, family, &HostExtras::default(), &[])
}

/// Our chains' rules for `iptables-restore --noflush` (one family), as kube-proxy's IPVS mode
/// writes them ([`rules`] rendered by [`render`]). `node_addresses` decide which
/// source-restricted load balancers the node itself may not reach.
pub fn iptables_restore_with(
    config: &ProxyConfig,
    family: Family,
    extras: &HostExtras,
    node_addresses: &[IpAddr],
) -> String {
    render(&rules(config, family, extras, node_addresses))
}
/// Jumps from built-in chains into ours: (table, chain, rule args). Inserted (`-I`) in the
/// restore transaction of our chains when missing ([`plan_jumps`]).
pub const JUMPS: &[(&str, &str, &str)] = &[
    (
        "nat",
        "PREROUTING",
        "-m comment --comment kubernetes-service-portals -j KUBE-SERVICES",
    ),
    (
        "nat",
        "OUTPUT",
        "-m comment --comment kubernetes-service-portals -j KUBE-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        "-m comment --comment kubernetes-postrouting-rules -j KUBE-POSTROUTING",
    ),
    (
        "filter",
        "FORWARD",
        "-m comment --comment kubernetes-forwarding-rules -j KUBE-FORWARD",
    ),
    (
        "filter",
        "INPUT",
        "-m comment --comment kubernetes-health-check-rules -j KUBE-NODE-PORT",
    ),
    (
        "filter",
        "INPUT",
        "-m comment --comment kube-proxy-firewall-rules -j KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "FORWARD",
        "-m comment --comment kube-proxy-firewall-rules -j KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "OUTPUT",
        "-m comment --comment kubernetes-ipvs-access-filter -j KUBE-IPVS-OUT-FILTER",
    ),
    // Inserted last, so first in INPUT (as kube-proxy orders them); tests wait for this one.
    (
        "filter",
        "INPUT",
        "-m comment --comment kubernetes-ipvs-access-filter -j KUBE-IPVS-FILTER",
    ),
];

/// The rules (what follows `-A chain `) of `table`'s `chain` in `iptables-save` output `saved`.
fn chain_rules<'a>(
    saved: &'a str,
    table: &'a str,
    chain: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    let mut in_table = false;
    saved.lines().filter_map(move |line| {
        if let Some(t) = line.strip_prefix('*') {
            in_table = t == table;
            return None;
        }
        if !in_table {
            return None;
        }
        line.strip_prefix("-A ")?
            .strip_prefix(chain)?
            .strip_prefix(' ')
    })
}

/// Whether `iptables-save` output `saved` has `-A chain rule` in `table`.
pub fn saved_has_rule(saved: &str, table: &str, chain: &str, rule: &str) -> bool {
    chain_rules(saved, table, chain).any(|r| r == rule)
}

/// One of the [`JUMPS`]: (table, chain, rule args).
pub type Jump = (&'static str, &'static str, &'static str);

/// How the [`JUMPS`] missing from a host are put in place, decided from one `iptables-save`
/// taken before the restore of our chains.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JumpPlan {
    /// Missing jumps whose chain has no rule jumping to their target: inserted by the restore
    /// transaction itself ([`with_jumps`]), so a start runs one process per family.
    pub insert: Vec<Jump>,
    /// Missing as we write them, but their chain already jumps to their target in another
    /// spelling (or the save failed): checked with `iptables -C` after the restore and inserted
    /// with `-I` only if that finds none, so no jump is ever doubled.
    pub check: Vec<Jump>,
}

impl JumpPlan {
    /// Every jump checked one by one (nothing is known about the host's rules).
    pub fn check_all() -> Self {
        JumpPlan {
            insert: Vec::new(),
            check: JUMPS.to_vec(),
        }
    }
}

/// Sorts the [`JUMPS`] missing from `saved` (an `iptables-save` output) into those the restore
/// inserts and those checked one by one.
pub fn plan_jumps(saved: &str) -> JumpPlan {
    let mut plan = JumpPlan::default();
    for jump @ (table, chain, rule) in JUMPS.iter().copied() {
        if saved_has_rule(saved, table, chain, rule) {
            continue;
        }
        let target = rule.rsplit("-j ").next().unwrap_or(rule);
        if saved_jumps_to(saved, table, chain, target) {
            plan.check.push(jump);
        } else {
            plan.insert.push(jump);
        }
    }
    plan
}

/// Whether `saved` has any rule in `table`'s `chain` jumping to `target`.
fn saved_jumps_to(saved: &str, table: &str, chain: &str, target: &str) -> bool {
    chain_rules(saved, table, chain).any(|rule| {
        let words: Vec<&str> = rule.split(' ').collect();
        words.windows(2).any(|w| w == ["-j", target])
    })
}

/// `restore` (an `iptables-restore --noflush` script of our chains) with `-I` lines for
/// `jumps` at the end of their tables' sections, in [`JUMPS`] order (each inserted first in its
/// chain, so the last one ends up first, as with one `iptables -I` after another). A table the
/// script does not have gets a section of its own.
pub fn with_jumps(restore: &str, jumps: &[Jump]) -> String {
    if jumps.is_empty() {
        return restore.to_owned();
    }
    let inserts = |table: &str, out: &mut String| {
        for (_, chain, rule) in jumps.iter().filter(|(t, _, _)| *t == table) {
            out.push_str(&format!("-I {chain} {rule}\n"));
        }
    };
    let mut out = String::with_capacity(restore.len() + jumps.len() * 80);
    let mut table: Option<&str> = None;
    let mut seen: Vec<&str> = Vec::new();
    for line in restore.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = Some(t);
            seen.push(t);
        } else if line == "COMMIT"
            && let Some(t) = table.take()
        {
            inserts(t, &mut out);
        }
        out.push_str(line);
        out.push('\n');
    }
    let mut missing: Vec<&str> = jumps
        .iter()
        .map(|(t, _, _)| *t)
        .filter(|t| !seen.contains(t))
        .collect();
    missing.dedup();
    for t in missing {
        out.push_str(&format!("*{t}\n"));
        inserts(t, &mut out);
        out.push_str("COMMIT\n");
    }
    out
}
