//! The kernel edges the reconciler drives, as small traits: the IPVS table ([`IpvsBackend`])
//! and the `kube-ipvs0` dummy link with its addresses ([`AddressBackend`]). The netlink
//! implementations live in [`super::netlink`]; [`super::memory`] has in-memory ones for tests.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::table::{
    DestEntry, DestId, DestParams, ServiceEntry, ServiceId, ServiceParams, TableDump,
};

/// Name of the dummy link that holds service addresses.
pub(crate) const DUMMY_LINK: &str = "kube-ipvs0";

/// Errors of the kernel edges.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A socket or system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel rejected a request.
    #[error("{what}: kernel error {errno} ({})", std::io::Error::from_raw_os_error(*errno))]
    Kernel {
        /// The request.
        what: String,
        /// The positive errno.
        errno: i32,
    },
    /// The kernel has no generic netlink family `IPVS` (module `ip_vs` missing).
    #[error(
        "IPVS is not available in this kernel (generic netlink family \"IPVS\" not found): \
         load the ip_vs module on the node (modprobe ip_vs)"
    )]
    NoIpvs,
    /// This process lacks a capability the kernel requires for the operation.
    #[error(
        "this process lacks {capability}, which {needed_for} needs (in Kubernetes: add it to \
         the container's securityContext.capabilities, as deploy/ does)"
    )]
    MissingCapability {
        /// The capability, e.g. `CAP_NET_ADMIN`.
        capability: &'static str,
        /// What needs it.
        needed_for: &'static str,
    },
    /// A reply could not be parsed.
    #[error("malformed netlink reply to {what}: {reason}")]
    Malformed {
        /// The request.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// A network link is missing.
    #[error("network link {0} not found")]
    NoLink(String),
    /// Something was requested that does not exist (in-memory backend).
    #[error("{0} does not exist")]
    NotFound(String),
    /// Something was added that already exists (in-memory backend).
    #[error("{0} already exists")]
    Exists(String),
    /// An ipset operation over netlink failed.
    #[error(transparent)]
    Ipset(Box<IpsetError>),
    /// An external command failed.
    #[error("{command}: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr.
        reason: String,
    },
}

impl BackendError {
    /// The errno when the kernel rejected a request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BackendError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// One change to the IPVS table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpvsOp {
    /// `IPVS_CMD_NEW_SERVICE`.
    AddService(ServiceId, ServiceParams),
    /// `IPVS_CMD_SET_SERVICE` (scheduler, flags, timeout changed in place).
    UpdateService(ServiceId, ServiceParams),
    /// `IPVS_CMD_DEL_SERVICE` (its real servers go with it).
    DeleteService(ServiceId),
    /// `IPVS_CMD_NEW_DEST`.
    AddDest(ServiceId, DestId, DestParams),
    /// `IPVS_CMD_SET_DEST`.
    UpdateDest(ServiceId, DestId, DestParams),
    /// `IPVS_CMD_DEL_DEST`.
    DeleteDest(ServiceId, DestId),
}

impl IpvsOp {
    /// The virtual server the operation is about.
    pub fn service(&self) -> &ServiceId {
        match self {
            IpvsOp::AddService(s, _)
            | IpvsOp::UpdateService(s, _)
            | IpvsOp::DeleteService(s)
            | IpvsOp::AddDest(s, _, _)
            | IpvsOp::UpdateDest(s, _, _)
            | IpvsOp::DeleteDest(s, _) => s,
        }
    }
}

impl std::fmt::Display for IpvsOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpvsOp::AddService(s, p) => write!(f, "add service {s} {}", p.scheduler),
            IpvsOp::UpdateService(s, p) => write!(f, "update service {s} {}", p.scheduler),
            IpvsOp::DeleteService(s) => write!(f, "delete service {s}"),
            IpvsOp::AddDest(s, d, p) => write!(f, "add {d} weight {} to {s}", p.weight),
            IpvsOp::UpdateDest(s, d, p) => write!(f, "set {d} weight {} in {s}", p.weight),
            IpvsOp::DeleteDest(s, d) => write!(f, "delete {d} from {s}"),
        }
    }
}

/// Result of a batch: which operations failed (by index into the batch) and how.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Operations sent.
    pub applied: usize,
    /// Failures: index into the batch and the error.
    pub failures: Vec<(usize, BackendError)>,
    /// Netlink round trips (one `sendmsg` and its replies) the batch took.
    pub round_trips: usize,
}

/// The IPVS table of the kernel (or a stand-in).
pub trait IpvsBackend: Send {
    /// Every virtual server (non-fwmark) with its real servers.
    fn dump(&mut self) -> Result<TableDump, BackendError>;
    /// Calls `each` with every virtual server (non-fwmark) and its real servers: what
    /// [`dump`](Self::dump) lists, without building the whole listing first. Only identities,
    /// parameters and active/inactive connection counts are guaranteed; traffic counters and
    /// persistence-template counts may read zero (a backend may read a cheaper source).
    fn for_each_service(
        &mut self,
        each: &mut dyn FnMut(ServiceEntry, &[DestEntry]),
    ) -> Result<(), BackendError> {
        for (svc, dests) in self.dump()? {
            each(svc, &dests);
        }
        Ok(())
    }
    /// Every virtual server, without real servers.
    fn list_services(&mut self) -> Result<Vec<ServiceEntry>, BackendError>;
    /// The real servers of one virtual server.
    fn list_dests(&mut self, service: &ServiceId) -> Result<Vec<DestEntry>, BackendError>;
    /// Applies a batch of operations in order; one failure does not stop the others.
    /// `Err` means the batch as a whole could not be sent (the caller should re-read state).
    fn apply(&mut self, ops: &[IpvsOp]) -> Result<ApplyReport, BackendError>;
    /// Sets the IPVS connection timeouts in seconds (0 leaves one unchanged).
    fn set_timeouts(&mut self, tcp: u32, tcp_fin: u32, udp: u32) -> Result<(), BackendError>;

    /// Adds one virtual server.
    fn add_service(&mut self, id: ServiceId, params: ServiceParams) -> Result<(), BackendError> {
        single(self.apply(&[IpvsOp::AddService(id, params)]))
    }
    /// Changes one virtual server in place.
    fn update_service(&mut self, id: ServiceId, params: ServiceParams) -> Result<(), BackendError> {
        single(self.apply(&[IpvsOp::UpdateService(id, params)]))
    }
    /// Deletes one virtual server.
    fn delete_service(&mut self, id: ServiceId) -> Result<(), BackendError> {
        single(self.apply(&[IpvsOp::DeleteService(id)]))
    }
    /// Adds one real server.
    fn add_dest(&mut self, id: ServiceId, dest: DestId, p: DestParams) -> Result<(), BackendError> {
        single(self.apply(&[IpvsOp::AddDest(id, dest, p)]))
    }
    /// Changes one real server.
    fn update_dest(
        &mut self,
        id: ServiceId,
        dest: DestId,
        p: DestParams,
    ) -> Result<(), BackendError> {
        single(self.apply(&[IpvsOp::UpdateDest(id, dest, p)]))
    }
    /// Deletes one real server.
    fn delete_dest(&mut self, id: ServiceId, dest: DestId) -> Result<(), BackendError> {
        single(self.apply(&[IpvsOp::DeleteDest(id, dest)]))
    }
}

fn single(report: Result<ApplyReport, BackendError>) -> Result<(), BackendError> {
    match report?.failures.pop() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// The dummy link that holds service addresses, and the node's own addresses.
pub trait AddressBackend: Send {
    /// Creates the dummy link (up) when missing.
    fn ensure_link(&mut self) -> Result<(), BackendError>;
    /// Addresses bound to the dummy link (empty when the link does not exist).
    fn bound(&mut self) -> Result<BTreeSet<IpAddr>, BackendError>;
    /// Every local address not on the dummy link (candidates for node ports).
    fn local_addresses(&mut self) -> Result<Vec<IpAddr>, BackendError>;
    /// Binds addresses (/32, /128) to the dummy link; returns failures per address.
    fn bind(&mut self, addrs: &[IpAddr]) -> Result<Vec<(IpAddr, BackendError)>, BackendError>;
    /// Removes addresses from the dummy link; returns failures per address.
    fn unbind(&mut self, addrs: &[IpAddr]) -> Result<Vec<(IpAddr, BackendError)>, BackendError>;
}

/// An ipset netlink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpsetError {
    /// The kernel has no ipset netlink subsystem (module `ip_set` missing or not loadable).
    #[error(
        "ipset is not available over netlink in this kernel ({reason}): load the ip_set module"
    )]
    Unavailable {
        /// What the kernel answered.
        reason: String,
    },
    /// The kernel lacks a set type (its module is missing).
    #[error("the kernel has no ipset type {kind} for family {family} (set {set}): load module ip_set_{}", kind.replace([':', ','], "_"))]
    NoType {
        /// The type.
        kind: &'static str,
        /// `inet`, `inet6` or `unspec`.
        family: &'static str,
        /// The set that needs it.
        set: String,
    },
    /// A set exists with another type or family than the one it must have.
    #[error(
        "ipset {set} already exists as {found} and cannot be used as {wanted}: destroy it \
         (ipset destroy {set}) after removing the rules that use it"
    )]
    WrongType {
        /// The set.
        set: String,
        /// Its type and family in the kernel.
        found: String,
        /// The type and family it needs.
        wanted: String,
    },
    /// The kernel refused one operation.
    #[error("ipset netlink: `{op}` failed: {reason} (error {errno})")]
    Kernel {
        /// The operation, as its `ipset restore` line.
        op: String,
        /// The kernel's error number (ipset's own are 4096 and up).
        errno: i32,
        /// The error in words.
        reason: String,
    },
    /// An entry does not parse as its set's type.
    #[error(transparent)]
    Entry(#[from] crate::ipvs::ipset_ops::EntryError),
    /// The socket failed or a reply was malformed.
    #[error(transparent)]
    Socket(#[from] BackendError),
}
