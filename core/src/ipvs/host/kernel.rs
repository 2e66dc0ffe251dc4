//! [`KernelHost`]: applies sysctls, IPVS timeouts, ipsets and iptables rules on the real host,
//! rate-limited and retried with backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::command::{CommandRunner, ProcessRunner};
use super::ipset_model::IpsetModel;
use super::ipset_restore::{diff_ops, restore_ops};
use super::ipset_size::{maxelems_after_restore, parse_maxelems, restore_sizes};
use super::iptables::{JumpPlan, iptables_restore_with, plan_jumps, with_jumps};
use super::sysctl::apply_sysctls;
use super::variant::{Detected, IptablesMode, detect};
use crate::ipvs::backend::{BackendError, IpvsBackend};
use crate::ipvs::config::ProxyConfig;
use crate::ipvs::desired::{Delta, DesiredState, NodeInfo};
use crate::ipvs::extras::HostExtras;
use crate::ipvs::ipset_ops::{IpsetOp, render_text};
use crate::ipvs::netlink::NetlinkIpvs;
use crate::ipvs::netlink::ipset::{IpsetError, IpsetNetlink};
use crate::ipvs::run::HostSetup;
use crate::ipvs::table::{Family, ServiceId};

/// Delay before retrying the ipset/iptables update after `failures` consecutive failures:
/// [`HOST_RETRY_FIRST`] doubling up to [`HOST_RETRY_MAX`].
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (HOST_RETRY_FIRST * (1u32 << doublings)).min(HOST_RETRY_MAX)
}

/// First retry delay after a failed ipset/iptables update.
pub const HOST_RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest retry delay after repeated failed ipset/iptables updates.
pub const HOST_RETRY_MAX: Duration = Duration::from_secs(30);

/// Applies sysctls, timeouts, ipsets and iptables rules on the real host.
///
/// A failed ipset/iptables update (e.g. a transient kernel error) is retried with backoff
/// ([`retry_delay`]) through [`HostSetup::has_pending`], without waiting for the next sync.
pub struct KernelHost {
    runner: Box<dyn CommandRunner>,
    /// How the ipsets are written: over netlink, or with `ipset restore`.
    ipset: IpsetWay,
    mode: Option<IptablesMode>,
    /// The variant detection started by [`KernelHost::new`] on a thread of its own, so that its
    /// `*-save` and probe processes run while the cluster state loads and IPVS is written;
    /// joined at the first iptables update.
    detecting: Option<std::thread::JoinHandle<Detected>>,
    /// The IPv4 `*-save` output read by the variant detection, used (once) by the first update
    /// instead of a save of its own.
    detection_save: Option<String>,
    /// The ipsets as last applied, with who holds each entry; `None`: unknown (rebuilt and
    /// swapped in whole, or diffed against nothing, next time).
    model: Option<IpsetModel>,
    /// What changed in the desired state since the model was last applied.
    dirty: Dirty,
    /// How many times the sets were rebuilt from the whole desired state (not from a delta).
    pub(super) rebuilds: u64,
    /// The view revision of the desired state last seen by
    /// [`observe_update`](HostSetup::observe_update); 0: none.
    observed: u64,
    /// `maxelem` of our hash sets in the kernel after the last restore; `None`: unknown, read
    /// with `ipset list -t` before the next full restore.
    pub(super) maxelems: Option<BTreeMap<String, usize>>,
    last_rules: Option<String>,
    last_apply: Option<Instant>,
    pending: bool,
    failures: u32,
    retry_at: Option<Instant>,
    extras: HostExtras,
    services: crate::ipvs::extras::ExtrasIndex,
    conntrack: crate::ipvs::conntrack::KernelConntrack,
}

impl std::fmt::Debug for KernelHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelHost")
            .field("mode", &self.mode)
            .field("failures", &self.failures)
            .finish()
    }
}

impl Default for KernelHost {
    fn default() -> Self {
        Self::new()
    }
}

/// How [`KernelHost`] writes the ipsets.
#[derive(Debug)]
enum IpsetWay {
    /// Not decided yet: netlink is tried at the first update.
    Unopened,
    /// Over netlink (the default).
    Netlink(IpsetNetlink),
    /// `ipset restore` through the command runner (netlink unavailable, or tests).
    Restore,
}

/// An [`IpsetError`] as a [`BackendError`] (socket errors stay what they are).
fn backend_error(e: IpsetError) -> BackendError {
    match e {
        IpsetError::Socket(b) => b,
        other => BackendError::Ipset(Box::new(other)),
    }
}

/// The virtual servers and addresses changed since the ipsets were last applied.
#[derive(Debug, Default)]
struct Dirty {
    /// Anything may have changed: rebuild the sets and diff them against the last ones.
    full: bool,
    services: BTreeSet<ServiceId>,
    addresses: BTreeSet<IpAddr>,
}

impl Dirty {
    fn everything(&mut self) {
        self.full = true;
        self.services.clear();
        self.addresses.clear();
    }
}

/// Minimum gap between two ipset/iptables updates after incremental syncs.
pub(super) const FILTER_MIN_GAP: Duration = Duration::from_millis(200);

impl KernelHost {
    /// A host setup writing ipsets over netlink (`ipset restore` if the kernel has no ipset
    /// netlink subsystem) and running the iptables tools; it detects the iptables variant on
    /// first use.
    pub fn new() -> Self {
        let mut host = Self::with_runner(Box::new(ProcessRunner));
        host.ipset = IpsetWay::Unopened;
        host.detecting = std::thread::Builder::new()
            .name("iptables-variant".into())
            .spawn(|| detect(&mut ProcessRunner))
            .map_err(|e| tracing::warn!(error = %e, "iptables variant detection runs at first use"))
            .ok();
        host
    }

    /// A host setup running its ipset (`ipset restore`) and iptables commands through `runner`.
    pub(crate) fn with_runner(runner: Box<dyn CommandRunner>) -> Self {
        Self {
            runner,
            ipset: IpsetWay::Restore,
            mode: None,
            detecting: None,
            detection_save: None,
            model: None,
            dirty: Dirty {
                full: true,
                ..Dirty::default()
            },
            observed: 0,
            rebuilds: 0,
            maxelems: None,
            last_rules: None,
            last_apply: None,
            pending: false,
            failures: 0,
            retry_at: None,
            extras: HostExtras::default(),
            services: crate::ipvs::extras::ExtrasIndex::new(),
            conntrack: crate::ipvs::conntrack::KernelConntrack::from_env(),
        }
    }

    /// Sets the [`HostExtras`] (health-check node ports, load-balancer source ranges) the next
    /// update applies; the update follows with the next sync or pending retry.
    pub fn set_extras(&mut self, extras: HostExtras) {
        if self.extras != extras {
            self.extras = extras;
            self.pending = true;
        }
    }

    /// The iptables variant in use, once detected.
    pub fn mode(&self) -> Option<IptablesMode> {
        self.mode
    }

    fn detected_mode(&mut self) -> IptablesMode {
        if let Some(m) = self.mode {
            return m;
        }
        let detected = match self.detecting.take().map(std::thread::JoinHandle::join) {
            Some(Ok(d)) => d,
            _ => detect(self.runner.as_mut()),
        };
        let m = detected.mode;
        tracing::info!(mode = ?m, "iptables variant");
        self.mode = Some(m);
        self.detection_save = detected.saved;
        m
    }

    fn apply_filters(
        &mut self,
        desired: &DesiredState,
        config: &ProxyConfig,
        node: &NodeInfo,
    ) -> Result<(), BackendError> {
        let node_addresses = &node.local_addresses;
        let families: Vec<Family> = desired
            .addresses()
            .map(Family::of)
            .chain([Family::V4])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut rules = String::new();
        let mut per_family = Vec::new();
        for f in &families {
            let text = iptables_restore_with(config, *f, &self.extras, node_addresses);
            rules.push_str(&text);
            per_family.push((*f, text));
        }
        // After an incremental sync of the state the host last saw, the sets follow the
        // sync's delta; otherwise (start, periodic resync, config/node/extras change, a failed
        // update) they are rebuilt and diffed against the last ones.
        let dirty = std::mem::take(&mut self.dirty);
        let follows = !dirty.full && self.observed == desired.view().revision();
        let rebuilds = &mut self.rebuilds;
        let mut rebuild = |extras: &HostExtras| {
            *rebuilds += 1;
            IpsetModel::build(desired, &families, extras, node_addresses)
        };
        let (model, delta_ops, previous) = match self.model.take() {
            Some(mut m) if follows && m.fits(&families, &self.extras, node_addresses) => {
                match m.update(desired, &dirty.services, &dirty.addresses, &self.extras) {
                    Some(Ok(ops)) => (m, Some(ops), None),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "ipset model stale; rebuilding the sets");
                        (rebuild(&self.extras), None, None)
                    }
                    None => (rebuild(&self.extras), None, Some(m)),
                }
            }
            old => (rebuild(&self.extras), None, old),
        };
        if let Err(e) = self.write_ipsets(&model, delta_ops, previous) {
            // Next time: read the sets' sizes again and swap in whole.
            self.model = None;
            self.maxelems = None;
            self.dirty.everything();
            return Err(e);
        }
        self.model = Some(model);
        tracing::debug!("ipsets applied");
        if self.last_rules.as_deref() != Some(rules.as_str()) {
            let started = Instant::now();
            let mode = self.detected_mode();
            for (f, text) in &per_family {
                // One save, taken before the restore (the detection's on the first update),
                // tells which jumps are missing; the restore inserts them with our chains in
                // one transaction. Only a jump whose chain already reaches its target in
                // another spelling is checked with `-C` afterwards, so none is ever doubled.
                let detection_save = match f {
                    Family::V4 => self.detection_save.take(),
                    Family::V6 => None,
                };
                let saved = match detection_save {
                    Some(saved) => Ok(saved),
                    None => self.runner.run(&mode.command(*f, "-save"), &[], None),
                };
                let plan = match saved {
                    Ok(saved) => plan_jumps(&saved),
                    Err(e) => {
                        tracing::warn!(family = ?f, error = %e, "cannot list iptables rules; checking each jump");
                        JumpPlan::check_all()
                    }
                };
                let restore = mode.command(*f, "-restore");
                self.runner.run(
                    &restore,
                    &["--noflush"],
                    Some(&with_jumps(text, &plan.insert)),
                )?;
                tracing::debug!(family = ?f, inserted = plan.insert.len(), "iptables chains restored");
                let bin = mode.command(*f, "");
                for (table, chain, rule) in plan.check {
                    let args: Vec<&str> = rule.split(' ').collect();
                    let mut check = vec!["-w", "-t", table, "-C", chain];
                    check.extend(&args);
                    if self.runner.run(&bin, &check, None).is_err() {
                        let mut insert = vec!["-w", "-t", table, "-I", chain];
                        insert.extend(&args);
                        self.runner.run(&bin, &insert, None)?;
                    }
                }
            }
            let ms = started.elapsed().as_secs_f64() * 1e3;
            tracing::info!(ms, "iptables rules restored and jumps ensured");
            self.last_rules = Some(rules);
        }
        Ok(())
    }

    /// Writes the sets of `model`: entry by entry (`delta_ops` of an incremental update, or a
    /// diff against `previous`) when their sizes are known and none outgrows its `maxelem`,
    /// else a whole swap of each set, sized for its entries.
    fn write_ipsets(
        &mut self,
        model: &IpsetModel,
        delta_ops: Option<Vec<IpsetOp>>,
        previous: Option<IpsetModel>,
    ) -> Result<(), BackendError> {
        let sets = model.sets();
        let outgrown = |sizes: &BTreeMap<String, usize>| {
            sets.iter()
                .any(|s| s.family.is_some() && s.entries.len() > restore_sizes(s, sizes).0)
        };
        let entry_by_entry = match (&self.maxelems, delta_ops, &previous) {
            (Some(sizes), _, _) if outgrown(sizes) => None,
            (Some(_), Some(ops), _) => Some(ops),
            (Some(_), None, Some(prev)) => {
                Some(diff_ops(prev.sets(), sets).map_err(|e| backend_error(IpsetError::from(e)))?)
            }
            _ => None,
        };
        let (ops, sizes) = match entry_by_entry {
            Some(ops) => (ops, None),
            None => {
                let existing = match self.maxelems.take() {
                    Some(known) => known,
                    None => self.existing_maxelems()?,
                };
                let sizes = maxelems_after_restore(sets, &existing);
                let ops =
                    restore_ops(sets, &existing).map_err(|e| backend_error(IpsetError::from(e)))?;
                (ops, Some(sizes))
            }
        };
        if !ops.is_empty() {
            let started = Instant::now();
            self.ipset_way()?;
            let whole = sizes.is_some();
            match &mut self.ipset {
                IpsetWay::Netlink(nl) => {
                    let report = nl.execute(&ops).map_err(backend_error)?;
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    if whole {
                        tracing::info!(
                            ms,
                            requests = report.requests,
                            batches = report.batches,
                            adopted = report.adopted,
                            "ipsets swapped in whole over netlink"
                        );
                    } else {
                        tracing::debug!(
                            ms,
                            requests = report.requests,
                            "ipsets updated over netlink"
                        );
                    }
                }
                _ => {
                    self.runner
                        .run("ipset", &["restore"], Some(&render_text(&ops)))?;
                    if whole {
                        let ms = started.elapsed().as_secs_f64() * 1e3;
                        tracing::info!(ms, "ipsets swapped in whole with ipset restore");
                    }
                }
            }
        }
        if let Some(sizes) = sizes {
            self.maxelems = Some(sizes);
        }
        Ok(())
    }

    /// Opens the ipset netlink socket at first use; falls back to `ipset restore` (one log
    /// line) when the kernel has no ipset netlink subsystem.
    fn ipset_way(&mut self) -> Result<(), BackendError> {
        if matches!(self.ipset, IpsetWay::Unopened) {
            self.ipset = match IpsetNetlink::open() {
                Ok(nl) => IpsetWay::Netlink(nl),
                Err(e @ IpsetError::Unavailable { .. }) => {
                    tracing::warn!(error = %e, "writing ipsets with `ipset restore` instead");
                    IpsetWay::Restore
                }
                Err(e) => return Err(backend_error(e)),
            };
        }
        Ok(())
    }

    /// The `maxelem` of the hash sets in the kernel (a netlink header dump, or `ipset list
    /// -t`). With `ipset restore`, empty if they cannot be listed (the restore then assumes
    /// default sizes and reports its own error if wrong).
    fn existing_maxelems(&mut self) -> Result<BTreeMap<String, usize>, BackendError> {
        self.ipset_way()?;
        if let IpsetWay::Netlink(nl) = &mut self.ipset {
            let sets = nl.list_headers().map_err(backend_error)?;
            return Ok(sets
                .into_iter()
                .filter_map(|(name, h)| Some((name, usize::try_from(h.maxelem?).ok()?)))
                .collect());
        }
        Ok(match self.runner.run("ipset", &["list", "-t"], None) {
            Ok(listing) => parse_maxelems(&listing),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list ipsets; assuming default sizes");
                BTreeMap::new()
            }
        })
    }

    /// [`HostSetup::after_sync`] at time `now`: applies the filters unless rate-limited or
    /// waiting to retry a failure (then it stays pending); a failure schedules a retry.
    pub(super) fn after_sync_at(
        &mut self,
        now: Instant,
        desired: &DesiredState,
        config: &ProxyConfig,
        node: &NodeInfo,
    ) -> Result<(), BackendError> {
        let rate_limited = self
            .last_apply
            .is_some_and(|t| now.saturating_duration_since(t) < FILTER_MIN_GAP);
        let backing_off = self.retry_at.is_some_and(|t| now < t);
        if rate_limited || backing_off {
            self.pending = true;
            return Ok(());
        }
        self.pending = false;
        self.last_apply = Some(now);
        match self.apply_filters(desired, config, node) {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(failures = self.failures, "ipset/iptables update recovered");
                }
                self.failures = 0;
                self.retry_at = None;
                Ok(())
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.retry_at = Some(now + retry_delay(self.failures));
                self.pending = true;
                Err(e)
            }
        }
    }
}

impl HostSetup for KernelHost {
    fn apply_config(&mut self, config: &ProxyConfig) -> Result<(), BackendError> {
        for (path, error) in apply_sysctls(&mut crate::ipvs::conntrack::sysctl::FileIo, config) {
            tracing::warn!(
                sysctl = path,
                %error,
                "setting sysctl failed (in a container /proc/sys is read-only: set it on the \
                 node or with `agentctl sysctls` in a privileged init container)"
            );
        }
        crate::ipvs::conntrack::sysctl::apply_logged(&config.conntrack);
        let secs = |d: Duration| d.as_secs().min(u32::MAX as u64) as u32;
        if !(config.tcp_timeout.is_zero()
            && config.tcp_fin_timeout.is_zero()
            && config.udp_timeout.is_zero())
        {
            NetlinkIpvs::open()?.set_timeouts(
                secs(config.tcp_timeout),
                secs(config.tcp_fin_timeout),
                secs(config.udp_timeout),
            )?;
        }
        self.last_rules = None; // rules depend on the config
        Ok(())
    }

    fn after_sync(
        &mut self,
        desired: &DesiredState,
        config: &ProxyConfig,
        node: &NodeInfo,
    ) -> Result<(), BackendError> {
        self.after_sync_at(Instant::now(), desired, config, node)
    }

    fn has_pending(&self) -> bool {
        self.pending
    }

    fn observe_update(&mut self, desired: &DesiredState, delta: &Delta) {
        let view = desired.view();
        if delta.full || view.previous_revision() != self.observed {
            self.dirty.everything();
        } else if !self.dirty.full {
            self.dirty.services.extend(delta.services.iter().copied());
            self.dirty.addresses.extend(delta.addresses.iter().copied());
        }
        self.observed = view.revision();
        if self.services.observe(view) {
            let extras = self.services.extras();
            self.set_extras(extras);
        }
    }

    fn conntrack(&mut self) -> Option<&mut dyn crate::ipvs::conntrack::ConntrackBackend> {
        self.conntrack.backend()
    }
}

/// Addresses in `desired` of `family` (for callers that bind per family).
pub fn addresses_of(desired: &DesiredState, family: Family) -> Vec<IpAddr> {
    desired
        .addresses()
        .filter(|a| Family::of(a) == family)
        .copied()
        .collect()
}
