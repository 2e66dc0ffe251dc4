//! IPVS service proxy: what kube-proxy does in IPVS mode, programmed over netlink.
//!
//! - [`table`]: the IPVS table as data (virtual/real servers, schedulers, flags).
//! - [`desired`]: the desired state from a cache snapshot, pure and incremental.
//! - [`render`]: `ipvsadm -Ln`-style text of a desired state or a kernel dump.

pub mod app;
pub mod backend;
pub mod config;
pub mod desired;
pub mod fixtures;
pub mod host;
pub mod memory;
pub mod netlink;
pub mod reconcile;
pub mod render;
pub mod run;
pub mod serve;
pub mod table;

pub use config::ProxyConfig;
pub use desired::{DesiredState, NodeInfo, build};
pub use table::{DestId, DestParams, Scheduler, ServiceId, ServiceParams, VirtualServer};
