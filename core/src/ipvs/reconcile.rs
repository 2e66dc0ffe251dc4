//! Reconciler: makes the kernel's IPVS table and `kube-ipvs0` addresses match a
//! [`DesiredState`], changing only what differs.
//!
//! - [`Reconciler::full_sync`] reads the kernel once (dump of services, real servers and bound
//!   addresses), diffs everything and applies the difference. Existing rules are adopted: an
//!   unchanged virtual server is not touched, and stale ones are removed only after every
//!   desired one has been programmed.
//! - [`Reconciler::sync_delta`] diffs only the virtual servers and addresses a
//!   [`Delta`] names, against the reconciler's mirror of the kernel (no dump), so its cost is
//!   proportional to the change.
//! - Removed TCP real servers are drained: weight 0 first, deleted by
//!   [`Reconciler::reap_terminating`] once they have no connections; UDP/SCTP ones go at once.
//!   A real server that comes back while draining gets its weight restored (no delete/add).
//! - A changed scheduler, flag or timeout updates the virtual server in place.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::Protocol;

use super::backend::{AddressBackend, BackendError, IpvsBackend, IpvsOp};
use super::config::ProxyConfig;
use super::desired::{Delta, DesiredState};
use super::table::{DestId, DestParams, Dests, ServiceId, ServiceParams, VirtualServer};

/// The reconciler's record of one kernel virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mirror {
    params: ServiceParams,
    dests: Dests,
}

/// Operations sent to the backend at a time: a full sync of 110,000 objects streams them in
/// pieces instead of holding all of them (a multiple of the netlink batch of 100, so the
/// number of round trips is the same as in one piece).
const APPLY_CHUNK: usize = 10_000;

/// Merges two sorted, duplicate-free sequences into one (sorted, duplicates once).
fn merge_sorted<T: Ord + Copy>(
    a: impl Iterator<Item = T>,
    b: impl Iterator<Item = T>,
) -> impl Iterator<Item = T> {
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) => match x.cmp(y) {
            std::cmp::Ordering::Less => a.next(),
            std::cmp::Ordering::Greater => b.next(),
            std::cmp::Ordering::Equal => {
                b.next();
                a.next()
            }
        },
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether the kernel state was re-read (a full sync).
    pub full: bool,
    /// Virtual servers added.
    pub services_added: usize,
    /// Virtual servers updated in place.
    pub services_updated: usize,
    /// Virtual servers deleted.
    pub services_deleted: usize,
    /// Real servers added.
    pub dests_added: usize,
    /// Real servers whose weight changed (including drain to 0 and restore).
    pub dests_updated: usize,
    /// Real servers deleted.
    pub dests_deleted: usize,
    /// Addresses bound to the dummy link.
    pub addresses_bound: usize,
    /// Addresses removed from the dummy link.
    pub addresses_unbound: usize,
    /// Operations the kernel rejected (the next sync re-reads the kernel).
    pub failures: usize,
    /// Netlink round trips of the IPVS batch.
    pub round_trips: usize,
}

impl SyncReport {
    /// Total IPVS operations sent.
    pub fn operations(&self) -> usize {
        self.services_added
            + self.services_updated
            + self.services_deleted
            + self.dests_added
            + self.dests_updated
            + self.dests_deleted
    }
}

/// Drives an [`IpvsBackend`] and an [`AddressBackend`] towards a desired state.
pub struct Reconciler {
    ipvs: Box<dyn IpvsBackend>,
    addresses: Box<dyn AddressBackend>,
    mirror: BTreeMap<ServiceId, Mirror>,
    bound: BTreeSet<IpAddr>,
    draining: BTreeMap<ServiceId, BTreeSet<DestId>>,
    needs_full: bool,
    synced_once: bool,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("services", &self.mirror.len())
            .field("bound", &self.bound.len())
            .field("draining", &self.draining_count())
            .field("needs_full", &self.needs_full)
            .finish()
    }
}

impl Reconciler {
    /// A reconciler that has not read the kernel yet (its first sync is a full one).
    pub fn new(ipvs: Box<dyn IpvsBackend>, addresses: Box<dyn AddressBackend>) -> Self {
        Self {
            ipvs,
            addresses,
            mirror: BTreeMap::new(),
            bound: BTreeSet::new(),
            draining: BTreeMap::new(),
            needs_full: true,
            synced_once: false,
        }
    }

    /// Whether the next sync must re-read the kernel (first sync, or an earlier failure).
    pub(crate) fn needs_full(&self) -> bool {
        self.needs_full
    }

    /// Real servers currently draining (weight 0, waiting for their connections to end).
    pub fn draining(&self) -> impl Iterator<Item = (&ServiceId, &DestId)> {
        self.draining
            .iter()
            .flat_map(|(s, ds)| ds.iter().map(move |d| (s, d)))
    }

    /// Number of draining real servers.
    pub fn draining_count(&self) -> usize {
        self.draining.values().map(BTreeSet::len).sum()
    }

    #[cfg(test)]
    /// The real servers the mirror says `id` has in the kernel, and whether that list is the
    /// desired state's own (shared, not copied).
    pub(crate) fn mirrored_dests(
        &self,
        id: &ServiceId,
        desired: &DesiredState,
    ) -> Option<(Vec<DestId>, bool)> {
        let m = self.mirror.get(id)?;
        let shared = desired
            .server(id)
            .is_some_and(|vs| m.dests.shares_storage_with(&vs.dests));
        Some((m.dests.keys().copied().collect(), shared))
    }

    /// The address backend (e.g. to read local addresses).
    pub(crate) fn addresses_mut(&mut self) -> &mut dyn AddressBackend {
        self.addresses.as_mut()
    }

    /// Reads the kernel state and applies every difference from `desired`.
    pub fn full_sync(
        &mut self,
        desired: &DesiredState,
        config: &ProxyConfig,
    ) -> Result<SyncReport, BackendError> {
        // Until this sync completes the mirror is not to be trusted.
        self.needs_full = true;
        self.addresses.ensure_link()?;
        // The old mirror goes first: its memory is reused for the new one.
        self.mirror.clear();
        let mut listed: Vec<(ServiceId, Mirror)> = Vec::with_capacity(desired.len());
        self.ipvs.for_each_service(&mut |svc, dests| {
            let dests = dests.iter().map(|d| (d.id, d.params)).collect();
            listed.push((
                svc.id,
                Mirror {
                    params: svc.params,
                    dests,
                },
            ));
        })?;
        self.mirror = listed.into_iter().collect();
        self.bound = self.addresses.bound()?;
        // Draining real servers the kernel no longer has are done.
        self.draining.retain(|id, dests| {
            if let Some(m) = self.mirror.get(id) {
                dests.retain(|d| m.dests.contains_key(d));
            } else {
                dests.clear();
            }
            !dests.is_empty()
        });
        // Every virtual server either side has, in order (both sides are sorted).
        let kernel_ids: Vec<ServiceId> = self.mirror.keys().copied().collect();
        let mut ids = merge_sorted(desired.servers().map(|(id, _)| *id), kernel_ids.into_iter());
        let bound: Vec<IpAddr> = self.bound.iter().copied().collect();
        let addrs: Vec<IpAddr> =
            merge_sorted(desired.addresses().copied(), bound.into_iter()).collect();
        let mut report = self.apply_diff(desired, config, &mut ids, &addrs)?;
        report.full = true;
        self.needs_full = report.failures > 0;
        self.synced_once = true;
        Ok(report)
    }

    /// Applies what `delta` names; falls back to [`full_sync`](Self::full_sync) when the delta
    /// is a full rebuild or the kernel state is uncertain.
    pub fn sync_delta(
        &mut self,
        desired: &DesiredState,
        delta: &Delta,
        config: &ProxyConfig,
    ) -> Result<SyncReport, BackendError> {
        if delta.full || self.needs_full {
            return self.full_sync(desired, config);
        }
        let addrs: Vec<IpAddr> = delta.addresses.iter().copied().collect();
        let report =
            match self.apply_diff(desired, config, &mut delta.services.iter().copied(), &addrs) {
                Ok(report) => report,
                Err(e) => {
                    // Stopped part way (the mirror may already list the real servers of a
                    // virtual server whose additions were not sent): read the kernel again.
                    self.needs_full = true;
                    return Err(e);
                }
            };
        if report.failures > 0 {
            self.needs_full = true;
        }
        Ok(report)
    }

    fn apply_diff(
        &mut self,
        desired: &DesiredState,
        config: &ProxyConfig,
        ids: &mut dyn Iterator<Item = ServiceId>,
        addrs: &[IpAddr],
    ) -> Result<SyncReport, BackendError> {
        let mut report = SyncReport::default();
        // Addresses first, so a new virtual server answers as soon as it exists.
        let to_bind: Vec<IpAddr> = addrs
            .iter()
            .filter(|a| desired.is_bound(a) && !self.bound.contains(*a))
            .copied()
            .collect();
        if !to_bind.is_empty() {
            let failures = self.addresses.bind(&to_bind)?;
            report.failures += failures.len();
            for (a, e) in &failures {
                tracing::warn!(address = %a, error = %e, "binding service address failed");
            }
            report.addresses_bound = to_bind.len() - failures.len();
            self.bound.extend(to_bind);
        }

        let mut ops = Vec::new();
        let mut deletions = Vec::new();
        let mut wanted = Vec::new();
        for id in ids {
            let want = desired.server(&id);
            if want.is_some() {
                wanted.push(id);
            }
            match (want, self.mirror.get(&id)) {
                (Some(vs), None) => {
                    ops.push(IpvsOp::AddService(id, vs.params));
                    for (d, p) in &vs.dests {
                        ops.push(IpvsOp::AddDest(id, *d, *p));
                    }
                    self.draining.remove(&id);
                }
                (Some(vs), Some(have)) => {
                    diff_server(&id, vs, have, &mut ops, &mut self.draining);
                }
                (None, Some(_)) => {
                    if config.is_excluded(id.addr) {
                        continue;
                    }
                    deletions.push(IpvsOp::DeleteService(id));
                    self.draining.remove(&id);
                }
                (None, None) => {}
            }
            while ops.len() >= APPLY_CHUNK {
                let rest = ops.split_off(APPLY_CHUNK);
                self.apply_ops(&ops, desired, &mut report)?;
                ops = rest;
            }
        }
        // Stale virtual servers go last, after everything desired is in place.
        ops.extend(deletions);
        if !ops.is_empty() {
            self.apply_ops(&ops, desired, &mut report)?;
        }
        // Where the kernel now matches, the mirror shares the desired lists of real servers
        // instead of holding a copy.
        for id in wanted {
            if let (Some(vs), Some(m)) = (desired.server(&id), self.mirror.get_mut(&id)) {
                m.dests.share_if_equal(&vs.dests);
            }
        }

        let to_unbind: Vec<IpAddr> = addrs
            .iter()
            .filter(|a| !desired.is_bound(a) && self.bound.contains(*a))
            .copied()
            .collect();
        if !to_unbind.is_empty() {
            let failures = self.addresses.unbind(&to_unbind)?;
            report.failures += failures.len();
            for (a, e) in &failures {
                tracing::warn!(address = %a, error = %e, "unbinding service address failed");
            }
            report.addresses_unbound = to_unbind.len() - failures.len();
            for a in to_unbind {
                self.bound.remove(&a);
            }
        }
        Ok(report)
    }

    /// Sends `ops` to the kernel and records the ones that succeeded in the mirror.
    fn apply_ops(
        &mut self,
        ops: &[IpvsOp],
        desired: &DesiredState,
        report: &mut SyncReport,
    ) -> Result<(), BackendError> {
        let result = self.ipvs.apply(ops)?;
        report.round_trips += result.round_trips;
        let failed: BTreeSet<usize> = result.failures.iter().map(|(i, _)| *i).collect();
        for (i, e) in &result.failures {
            tracing::warn!(op = %ops[*i], error = %e, "IPVS operation failed");
        }
        report.failures += failed.len();
        for (i, op) in ops.iter().enumerate() {
            if !failed.contains(&i) {
                self.record(op, Some(desired), report);
            } else if let IpvsOp::AddDest(id, d, _) = op {
                // A new virtual server's mirror starts out with all its desired real servers
                // (see `record`): one the kernel refused comes out again.
                if let Some(m) = self.mirror.get_mut(id) {
                    m.dests.remove(d);
                }
            }
        }
        Ok(())
    }

    /// Updates the mirror after a successful operation. A virtual server added from `desired`
    /// is recorded with the desired list of real servers, shared rather than copied entry by
    /// entry: its `AddDest` operations follow and then find their entries in place, and
    /// [`apply_ops`](Self::apply_ops) takes out those the kernel refuses. (A cold start adds
    /// 100,000 real servers; the entry-by-entry copy was 4.5 MB of transient memory.)
    fn record(&mut self, op: &IpvsOp, desired: Option<&DesiredState>, report: &mut SyncReport) {
        match *op {
            IpvsOp::AddService(id, params) => {
                report.services_added += 1;
                let dests = desired
                    .and_then(|d| d.server(&id))
                    .map(|vs| vs.dests.clone())
                    .unwrap_or_default();
                self.mirror.insert(id, Mirror { params, dests });
            }
            IpvsOp::UpdateService(id, params) => {
                report.services_updated += 1;
                if let Some(m) = self.mirror.get_mut(&id) {
                    m.params = params;
                }
            }
            IpvsOp::DeleteService(id) => {
                report.services_deleted += 1;
                self.mirror.remove(&id);
            }
            IpvsOp::AddDest(id, d, p) => {
                report.dests_added += 1;
                if let Some(m) = self.mirror.get_mut(&id) {
                    m.dests.insert(d, p);
                }
            }
            IpvsOp::UpdateDest(id, d, p) => {
                report.dests_updated += 1;
                if let Some(m) = self.mirror.get_mut(&id) {
                    m.dests.insert(d, p);
                }
            }
            IpvsOp::DeleteDest(id, d) => {
                report.dests_deleted += 1;
                if let Some(m) = self.mirror.get_mut(&id) {
                    m.dests.remove(&d);
                }
            }
        }
    }

    /// Deletes draining real servers that have no active or inactive connections left.
    /// Reads the real servers of only the virtual servers with draining ones.
    pub fn reap_terminating(&mut self) -> Result<SyncReport, BackendError> {
        let mut ops = Vec::new();
        let services: Vec<ServiceId> = self.draining.keys().copied().collect();
        for id in services {
            let dests = match self.ipvs.list_dests(&id) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(service = %id, error = %e, "listing draining service failed");
                    self.draining.remove(&id);
                    continue;
                }
            };
            let Some(set) = self.draining.get_mut(&id) else {
                continue;
            };
            set.retain(|d| {
                match dests.iter().find(|e| e.id == *d) {
                    None => false,
                    Some(e) if e.params.weight != 0 => false, // restored meanwhile
                    Some(e) if e.conns.active + e.conns.inactive == 0 => {
                        ops.push(IpvsOp::DeleteDest(id, *d));
                        false
                    }
                    Some(_) => true,
                }
            });
            if set.is_empty() {
                self.draining.remove(&id);
            }
        }
        let mut report = SyncReport::default();
        if ops.is_empty() {
            return Ok(report);
        }
        let result = self.ipvs.apply(&ops)?;
        report.round_trips = result.round_trips;
        let failed: BTreeSet<usize> = result.failures.iter().map(|(i, _)| *i).collect();
        report.failures = failed.len();
        for (i, op) in ops.iter().enumerate() {
            if !failed.contains(&i) {
                self.record(op, None, &mut report);
            }
        }
        Ok(report)
    }
}

/// Diffs one virtual server that exists on both sides; real servers that leave a TCP virtual
/// server are drained (weight 0, recorded in `draining`) rather than deleted.
fn diff_server(
    id: &ServiceId,
    want: &VirtualServer,
    have: &Mirror,
    ops: &mut Vec<IpvsOp>,
    draining: &mut BTreeMap<ServiceId, BTreeSet<DestId>>,
) {
    if !want.params.matches(&have.params) {
        ops.push(IpvsOp::UpdateService(*id, want.params));
    }
    for (d, p) in &want.dests {
        match have.dests.get(d) {
            None => ops.push(IpvsOp::AddDest(*id, *d, *p)),
            Some(hp) if hp != p => ops.push(IpvsOp::UpdateDest(*id, *d, *p)),
            Some(_) => {}
        }
    }
    if let Some(set) = draining.get_mut(id) {
        for d in want.dests.keys() {
            set.remove(d);
        }
    }
    for (d, hp) in &have.dests {
        if want.dests.contains_key(d) {
            continue;
        }
        if id.protocol == Protocol::Tcp {
            if hp.weight != 0 {
                ops.push(IpvsOp::UpdateDest(*id, *d, DestParams { weight: 0, ..*hp }));
            }
            draining.entry(*id).or_default().insert(*d);
        } else {
            ops.push(IpvsOp::DeleteDest(*id, *d));
            if let Some(set) = draining.get_mut(id) {
                set.remove(d);
            }
        }
    }
    if draining.get(id).is_some_and(BTreeSet::is_empty) {
        draining.remove(id);
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
