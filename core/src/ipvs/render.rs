//! `ipvsadm -Ln`-style text for a desired state or a kernel dump, and the host side of a plan
//! ([`HostPlan`]: `kube-ipvs0` addresses, ipset contents, iptables rules) for dry runs.

use std::fmt::Write as _;

use super::desired::DesiredState;
use super::table::{
    DestConns, DestParams, FLAG_PERSISTENT, FLAG_SCHED1, FLAG_SCHED2, Scheduler, ServiceId,
    ServiceParams, SocketText, Stats, TableDump,
};

/// The header `ipvsadm -Ln` prints.
pub(crate) const HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n  \
-> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

/// The header `ipvsadm -Ln --stats` prints.
pub(crate) const STATS_HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  \
-> RemoteAddress:Port\n";

fn service_line(out: &mut String, id: &ServiceId, params: &ServiceParams) {
    let _ = write!(
        out,
        "{}  {} {}",
        id.protocol,
        SocketText(id.addr, id.port),
        params.scheduler
    );
    if params.flags & FLAG_PERSISTENT != 0 {
        let _ = write!(out, " persistent {}", params.timeout);
    }
    if matches!(params.scheduler, Scheduler::Sh | Scheduler::Mh) {
        let name = params.scheduler.as_str();
        if params.flags & FLAG_SCHED1 != 0 {
            let _ = write!(out, " {name}-fallback");
        }
        if params.flags & FLAG_SCHED2 != 0 {
            let _ = write!(out, " {name}-port");
        }
    }
    out.push('\n');
}

fn dest_line(
    out: &mut String,
    dest: &super::table::DestId,
    params: &DestParams,
    conns: &DestConns,
) {
    // ipvsadm: "  -> %-28s %-7s %-6d %-10u %-10u\n"
    let addr = dest.to_string();
    let _ = writeln!(
        out,
        "  -> {addr:<28} {:<7} {:<6} {:<10} {:<10}",
        params.forward.as_str(),
        params.weight,
        conns.active,
        conns.inactive
    );
}

fn stats_numbers(out: &mut String, s: &Stats) {
    let _ = writeln!(
        out,
        " {:>8} {:>8} {:>8} {:>8} {:>8}",
        s.conns, s.in_packets, s.out_packets, s.in_bytes, s.out_bytes
    );
}

/// Renders the desired state as `ipvsadm -Ln` would show it once programmed (no connections).
pub fn desired(state: &DesiredState) -> String {
    let mut out = String::from(HEADER);
    for (id, vs) in state.servers() {
        service_line(&mut out, id, &vs.params);
        for (dest, params) in &vs.dests {
            dest_line(&mut out, dest, params, &DestConns::default());
        }
    }
    out
}

/// Renders a kernel dump as `ipvsadm -Ln` does (sorted), or as `ipvsadm -Ln --stats` with
/// `stats`.
pub fn dump(table: &TableDump, stats: bool) -> String {
    let mut sorted: Vec<_> = table.iter().collect();
    sorted.sort_by_key(|(s, _)| s.id);
    let mut out = String::from(if stats { STATS_HEADER } else { HEADER });
    for (svc, dests) in sorted {
        let mut dests: Vec<_> = dests.iter().collect();
        dests.sort_by_key(|d| d.id);
        if stats {
            let head = format!(
                "{}  {}",
                svc.id.protocol,
                SocketText(svc.id.addr, svc.id.port)
            );
            let _ = write!(out, "{head:<33}");
            stats_numbers(&mut out, &svc.stats);
            for d in dests {
                let _ = write!(out, "  -> {:<28}", d.id.to_string());
                stats_numbers(&mut out, &d.stats);
            }
        } else {
            service_line(&mut out, &svc.id, &svc.params);
            for d in dests {
                dest_line(&mut out, &d.id, &d.params, &d.conns);
            }
        }
    }
    out
}

/// What a run would program on the host besides the IPVS table, as text an operator can review
/// (and compare with a kube-proxy node's `ip addr show kube-ipvs0`, `ipset save`,
/// `iptables-save`). Rendered from the same functions the kernel host uses
/// ([`super::host::ipsets_with`], [`super::host::iptables_restore_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPlan {
    /// Addresses bound on `kube-ipvs0`, one `ADDR/PREFIX dev kube-ipvs0` per line.
    pub addresses: String,
    /// Every ipset with its entries, in `ipset save` syntax (`create` then `add` lines).
    pub ipsets: String,
    /// The rules of our chains per family, in `iptables-restore --noflush` syntax.
    pub iptables: String,
}

/// The [`HostPlan`] for `desired` (families: IPv4 plus those of the bound addresses, as the
/// kernel host programs them).
pub(crate) fn host_plan(
    desired: &DesiredState,
    config: &super::ProxyConfig,
    extras: &super::host::HostExtras,
    node: &super::NodeInfo,
) -> HostPlan {
    use super::table::Family;
    let families: std::collections::BTreeSet<Family> = desired
        .addresses()
        .map(Family::of)
        .chain([Family::V4])
        .collect();
    let mut plan = HostPlan::default();
    for a in desired.addresses() {
        let prefix = if a.is_ipv4() { 32 } else { 128 };
        let _ = writeln!(plan.addresses, "{a}/{prefix} dev kube-ipvs0");
    }
    for f in families {
        for set in super::host::ipsets_with(desired, f, extras, &node.local_addresses) {
            match set.family {
                Some(fam) => {
                    let _ = writeln!(plan.ipsets, "create {} {} family {fam}", set.name, set.kind);
                }
                None => {
                    let _ = writeln!(
                        plan.ipsets,
                        "create {} {} range 0-65535",
                        set.name, set.kind
                    );
                }
            }
            for e in &set.entries {
                let _ = writeln!(plan.ipsets, "add {} {e}", set.name);
            }
        }
        let tool = match f {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        };
        let _ = writeln!(plan.iptables, "# {tool} --noflush");
        plan.iptables.push_str(&super::host::iptables_restore_with(
            config,
            f,
            extras,
            &node.local_addresses,
        ));
    }
    plan
}

/// A [`HostSetup`](super::run::HostSetup) for dry runs: programs nothing and keeps the latest
/// [`HostPlan`] in a shared slot ([`PlanHost::slot`]). Rendering costs a pass over the table, so
/// it happens at most once per [`PlanHost::MIN_GAP`]; a sync inside the gap leaves the plan
/// pending and the control loop comes back for it.
#[derive(Debug, Default)]
pub struct PlanHost {
    extras: super::extras::ExtrasIndex,
    slot: std::sync::Arc<std::sync::Mutex<Option<HostPlan>>>,
    last: Option<std::time::Instant>,
    pending: bool,
}

impl PlanHost {
    /// Shortest time between two renderings of the plan.
    pub const MIN_GAP: std::time::Duration = std::time::Duration::from_millis(500);

    /// A host with no plan yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The slot the latest plan is written to (`None` until the first sync).
    pub fn slot(&self) -> std::sync::Arc<std::sync::Mutex<Option<HostPlan>>> {
        self.slot.clone()
    }
}

impl super::run::HostSetup for PlanHost {
    fn apply_config(
        &mut self,
        _config: &super::ProxyConfig,
    ) -> Result<(), super::backend::BackendError> {
        // Nothing to apply; the full sync that follows renders the plan with the new config.
        self.last = None;
        Ok(())
    }

    fn after_sync(
        &mut self,
        desired: &DesiredState,
        config: &super::ProxyConfig,
        node: &super::NodeInfo,
    ) -> Result<(), super::backend::BackendError> {
        if self.last.is_some_and(|t| t.elapsed() < Self::MIN_GAP) {
            self.pending = true;
            return Ok(());
        }
        let plan = host_plan(desired, config, &self.extras.extras(), node);
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(plan);
        }
        self.last = Some(std::time::Instant::now());
        self.pending = false;
        Ok(())
    }

    fn has_pending(&self) -> bool {
        self.pending
    }

    fn observe_update(&mut self, desired: &DesiredState, _delta: &super::desired::Delta) {
        if self.extras.observe(desired.view()) {
            self.pending = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::run::HostSetup as _;
    use super::*;
    use crate::cache::new_cache;
    use crate::ipvs::fixtures::{endpoint, service, slice};
    use crate::ipvs::{NodeInfo, ProxyConfig, build};
    use crate::model::{ClusterObject, Kind, Protocol, ServiceType};

    fn objects() -> Vec<ClusterObject> {
        let mut svc = service(
            "ns",
            "web",
            "10.96.0.20",
            &[("http", Protocol::Tcp, 80, 8080)],
        );
        svc.cluster_ips.push("fd00::20".parse().unwrap());
        svc.service_type = ServiceType::NodePort;
        svc.ports[0].node_port = Some(30080);
        let sl = slice(
            "ns",
            "web-1",
            "web",
            &[("http", Protocol::Tcp, 8080)],
            vec![endpoint("10.244.1.10", true, Some("node-a"))],
        );
        vec![ClusterObject::from(svc), ClusterObject::from(sl)]
    }

    fn node() -> NodeInfo {
        NodeInfo {
            node_name: Some("node-a".into()),
            local_addresses: vec!["192.168.1.5".parse().unwrap()],
        }
    }

    #[test]
    fn host_plan_lists_addresses_sets_and_rules_of_both_families() {
        let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        w.update(|tx| objects().into_iter().for_each(|o| tx.apply(o)));
        let config = ProxyConfig::default();
        let desired = build(&w.snapshot(), &config, &node());
        let extras = crate::ipvs::extras::HostExtras::of_view(desired.view());
        let plan = host_plan(&desired, &config, &extras, &node());
        assert_eq!(
            plan.addresses,
            "10.96.0.20/32 dev kube-ipvs0\nfd00::20/128 dev kube-ipvs0\n"
        );
        for line in [
            "create KUBE-CLUSTER-IP hash:ip,port family inet",
            "add KUBE-CLUSTER-IP 10.96.0.20,tcp:80",
            "create KUBE-6-CLUSTER-IP hash:ip,port family inet6",
            "add KUBE-6-CLUSTER-IP fd00::20,tcp:80",
            "add KUBE-NODE-PORT-TCP 30080",
            "add KUBE-LOOP-BACK 10.244.1.10,tcp:8080,10.244.1.10",
        ] {
            assert!(
                plan.ipsets.lines().any(|l| l == line),
                "{line:?} in\n{}",
                plan.ipsets
            );
        }
        assert!(
            plan.iptables
                .starts_with("# iptables-restore --noflush\n*nat\n")
        );
        assert!(
            plan.iptables
                .contains("# ip6tables-restore --noflush\n*nat\n")
        );
        assert!(
            plan.iptables
                .contains("--match-set KUBE-6-CLUSTER-IP dst,dst")
        );
    }

    #[test]
    fn plan_host_renders_at_most_once_per_gap_and_follows_extras() {
        let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        let config = ProxyConfig::default();
        let mut host = PlanHost::new();
        let slot = host.slot();
        assert!(
            slot.lock().unwrap().is_none(),
            "no plan before the first sync"
        );
        let empty = build(&w.snapshot(), &config, &node());
        host.observe_update(&empty, &Default::default());
        host.after_sync(&empty, &config, &node()).unwrap();
        assert_eq!(slot.lock().unwrap().as_ref().unwrap().addresses, "");
        assert!(!host.has_pending());

        // A change inside the gap leaves the old plan and a pending render.
        w.update(|tx| objects().into_iter().for_each(|o| tx.apply(o)));
        let desired = build(&w.snapshot(), &config, &node());
        host.observe_update(&desired, &Default::default());
        assert!(
            host.has_pending(),
            "new local endpoint: the loopback set changes"
        );
        host.after_sync(&desired, &config, &node()).unwrap();
        assert!(host.has_pending());
        assert_eq!(slot.lock().unwrap().as_ref().unwrap().addresses, "");

        // After the gap the control loop's retry renders it.
        std::thread::sleep(PlanHost::MIN_GAP);
        host.after_sync(&desired, &config, &node()).unwrap();
        assert!(!host.has_pending());
        let plan = slot.lock().unwrap().clone().unwrap();
        assert!(
            plan.addresses.contains("10.96.0.20/32"),
            "{}",
            plan.addresses
        );
        assert!(
            plan.ipsets
                .contains("add KUBE-LOOP-BACK 10.244.1.10,tcp:8080,10.244.1.10")
        );
        // A new config is rendered by the full sync that follows, without waiting.
        host.apply_config(&config).unwrap();
        host.after_sync(&desired, &config, &node()).unwrap();
        assert!(!host.has_pending());
    }
}
