//! In-memory backends with the kernel's semantics (EEXIST/ENOENT, services own their real
//! servers), for reconciler tests and `--dry-run`. Handles are cheap clones of shared state so a
//! test can inspect or tamper with the "kernel" while the reconciler owns its backend.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::backend::{AddressBackend, ApplyReport, BackendError, IpvsBackend, IpvsOp};
use super::table::{
    DestConns, DestEntry, DestId, DestParams, ServiceEntry, ServiceId, ServiceParams, Stats,
    TableDump,
};

/// One in-memory virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryService {
    /// Parameters.
    pub params: ServiceParams,
    /// Real servers with parameters and connection counters.
    pub dests: BTreeMap<DestId, (DestParams, DestConns)>,
}

#[derive(Debug, Default)]
struct IpvsState {
    services: BTreeMap<ServiceId, MemoryService>,
    log: Vec<IpvsOp>,
    batches: usize,
    timeouts: (u32, u32, u32),
    /// Operations refused as a kernel would refuse them (tests).
    refused: Vec<IpvsOp>,
}

/// An in-memory IPVS table.
#[derive(Debug, Clone, Default)]
pub struct MemoryIpvs(Arc<Mutex<IpvsState>>);

impl MemoryIpvs {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, IpvsState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the table.
    pub fn services(&self) -> BTreeMap<ServiceId, MemoryService> {
        self.lock().services.clone()
    }

    /// One virtual server.
    pub fn service(&self, id: &ServiceId) -> Option<MemoryService> {
        self.lock().services.get(id).cloned()
    }

    /// Every operation applied so far, in order.
    pub fn log(&self) -> Vec<IpvsOp> {
        self.lock().log.clone()
    }

    #[cfg(test)]
    /// Forgets the operation log.
    pub(crate) fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Number of `apply` batches so far.
    pub fn batches(&self) -> usize {
        self.lock().batches
    }

    /// The timeouts last set (tcp, tcpfin, udp).
    pub fn timeouts(&self) -> (u32, u32, u32) {
        self.lock().timeouts
    }

    #[cfg(test)]
    /// Sets a real server's connection counters (simulated traffic).
    pub(crate) fn set_conns(&self, id: &ServiceId, dest: &DestId, conns: DestConns) {
        if let Some(d) = self
            .lock()
            .services
            .get_mut(id)
            .and_then(|s| s.dests.get_mut(dest))
        {
            d.1 = conns;
        }
    }

    #[cfg(test)]
    /// Makes every later `apply` of exactly `op` fail (as the kernel refuses an operation, e.g.
    /// for lack of memory), leaving the table unchanged.
    pub(crate) fn refuse(&self, op: IpvsOp) {
        self.lock().refused.push(op);
    }

    /// Applies operations directly, bypassing logging (a change "made by hand").
    pub fn tamper(&self, ops: &[IpvsOp]) {
        let mut st = self.lock();
        for op in ops {
            let _ = apply_one(&mut st.services, op);
        }
    }
}

fn apply_one(
    services: &mut BTreeMap<ServiceId, MemoryService>,
    op: &IpvsOp,
) -> Result<(), BackendError> {
    let missing = |id: &ServiceId| BackendError::NotFound(format!("service {id}"));
    match *op {
        IpvsOp::AddService(id, params) => {
            if services.contains_key(&id) {
                return Err(BackendError::Exists(format!("service {id}")));
            }
            services.insert(
                id,
                MemoryService {
                    params,
                    dests: BTreeMap::new(),
                },
            );
        }
        IpvsOp::UpdateService(id, params) => {
            services.get_mut(&id).ok_or_else(|| missing(&id))?.params = params;
        }
        IpvsOp::DeleteService(id) => {
            services.remove(&id).ok_or_else(|| missing(&id))?;
        }
        IpvsOp::AddDest(id, dest, p) => {
            let svc = services.get_mut(&id).ok_or_else(|| missing(&id))?;
            if svc.dests.contains_key(&dest) {
                return Err(BackendError::Exists(format!("{dest} in {id}")));
            }
            svc.dests.insert(dest, (p, DestConns::default()));
        }
        IpvsOp::UpdateDest(id, dest, p) => {
            let svc = services.get_mut(&id).ok_or_else(|| missing(&id))?;
            svc.dests
                .get_mut(&dest)
                .ok_or_else(|| BackendError::NotFound(format!("{dest} in {id}")))?
                .0 = p;
        }
        IpvsOp::DeleteDest(id, dest) => {
            let svc = services.get_mut(&id).ok_or_else(|| missing(&id))?;
            svc.dests
                .remove(&dest)
                .ok_or_else(|| BackendError::NotFound(format!("{dest} in {id}")))?;
        }
    }
    Ok(())
}

fn dest_entries(svc: &MemoryService) -> Vec<DestEntry> {
    svc.dests
        .iter()
        .map(|(id, (params, conns))| DestEntry {
            id: *id,
            params: *params,
            conns: *conns,
            stats: Stats::default(),
        })
        .collect()
}

impl IpvsBackend for MemoryIpvs {
    fn dump(&mut self) -> Result<TableDump, BackendError> {
        Ok(self
            .lock()
            .services
            .iter()
            .map(|(id, s)| {
                (
                    ServiceEntry {
                        id: *id,
                        params: s.params,
                        stats: Stats::default(),
                    },
                    dest_entries(s),
                )
            })
            .collect())
    }

    fn list_services(&mut self) -> Result<Vec<ServiceEntry>, BackendError> {
        Ok(self
            .lock()
            .services
            .iter()
            .map(|(id, s)| ServiceEntry {
                id: *id,
                params: s.params,
                stats: Stats::default(),
            })
            .collect())
    }

    fn list_dests(&mut self, service: &ServiceId) -> Result<Vec<DestEntry>, BackendError> {
        self.lock()
            .services
            .get(service)
            .map(dest_entries)
            .ok_or_else(|| BackendError::NotFound(format!("service {service}")))
    }

    fn apply(&mut self, ops: &[IpvsOp]) -> Result<ApplyReport, BackendError> {
        let mut st = self.lock();
        st.batches += 1;
        let mut report = ApplyReport {
            applied: ops.len(),
            round_trips: ops.len().div_ceil(100),
            ..ApplyReport::default()
        };
        for (i, op) in ops.iter().enumerate() {
            if st.refused.contains(op) {
                let refused = BackendError::Kernel {
                    what: op.to_string(),
                    errno: libc::ENOMEM,
                };
                report.failures.push((i, refused));
                continue;
            }
            match apply_one(&mut st.services, op) {
                Ok(()) => st.log.push(*op),
                Err(e) => report.failures.push((i, e)),
            }
        }
        Ok(report)
    }

    fn set_timeouts(&mut self, tcp: u32, tcp_fin: u32, udp: u32) -> Result<(), BackendError> {
        let mut st = self.lock();
        let old = st.timeouts;
        st.timeouts = (
            if tcp == 0 { old.0 } else { tcp },
            if tcp_fin == 0 { old.1 } else { tcp_fin },
            if udp == 0 { old.2 } else { udp },
        );
        Ok(())
    }
}

#[derive(Debug, Default)]
struct AddrState {
    link: bool,
    bound: BTreeSet<IpAddr>,
    local: Vec<IpAddr>,
    binds: usize,
    unbinds: usize,
}

/// An in-memory dummy link with addresses, plus injected node addresses.
#[derive(Debug, Clone, Default)]
pub struct MemoryAddresses(Arc<Mutex<AddrState>>);

impl MemoryAddresses {
    /// No link yet; `local` are the node's own addresses.
    pub fn new(local: Vec<IpAddr>) -> Self {
        let me = Self::default();
        me.lock().local = local;
        me
    }

    fn lock(&self) -> MutexGuard<'_, AddrState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    /// Addresses currently bound to the dummy link.
    pub(crate) fn bound_now(&self) -> BTreeSet<IpAddr> {
        self.lock().bound.clone()
    }

    #[cfg(test)]
    /// Whether the dummy link exists.
    pub(crate) fn has_link(&self) -> bool {
        self.lock().link
    }

    #[cfg(test)]
    /// Binds an address directly (state left by an earlier run).
    pub(crate) fn preset(&self, addrs: &[IpAddr]) {
        let mut st = self.lock();
        st.link = true;
        st.bound.extend(addrs.iter().copied());
    }

    /// Number of addresses bound and unbound through the trait so far.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.binds, st.unbinds)
    }
}

impl AddressBackend for MemoryAddresses {
    fn ensure_link(&mut self) -> Result<(), BackendError> {
        self.lock().link = true;
        Ok(())
    }

    fn bound(&mut self) -> Result<BTreeSet<IpAddr>, BackendError> {
        Ok(self.lock().bound.clone())
    }

    fn local_addresses(&mut self) -> Result<Vec<IpAddr>, BackendError> {
        Ok(self.lock().local.clone())
    }

    fn bind(&mut self, addrs: &[IpAddr]) -> Result<Vec<(IpAddr, BackendError)>, BackendError> {
        let mut st = self.lock();
        if !st.link {
            return Err(BackendError::NoLink(super::backend::DUMMY_LINK.into()));
        }
        let mut failures = Vec::new();
        for a in addrs {
            if st.bound.insert(*a) {
                st.binds += 1;
            } else {
                failures.push((*a, BackendError::Exists(format!("address {a}"))));
            }
        }
        Ok(failures)
    }

    fn unbind(&mut self, addrs: &[IpAddr]) -> Result<Vec<(IpAddr, BackendError)>, BackendError> {
        let mut st = self.lock();
        let mut failures = Vec::new();
        for a in addrs {
            if st.bound.remove(a) {
                st.unbinds += 1;
            } else {
                failures.push((*a, BackendError::NotFound(format!("address {a}"))));
            }
        }
        Ok(failures)
    }
}
