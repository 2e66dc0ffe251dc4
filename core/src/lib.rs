//! svcnet-core: the service networking of a Kubernetes node in one library.
//!
//! Data flows one way: a [`source`] (the Kubernetes API or a manifest directory) projects API
//! objects into the compact [`model`] and drives the shared [`cache`]; subsystems read immutable
//! snapshots from it and turn them into desired state with no IO — the cluster DNS zone
//! ([`dns`]), the IPVS table ([`ipvs`]), pod environment variables ([`env`]) and `resolv.conf`
//! ([`resolv`]) — which thin IO edges then serve or program.

pub mod agent;
pub mod cache;
pub mod cli;
pub mod dns;
pub(crate) mod duration;
pub mod env;
pub mod ipvs;
pub mod memtrim;
pub mod model;
pub mod resolv;
pub mod runtime;
pub mod source;
pub mod telemetry;
pub mod tls;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

pub use cache::{CacheReader, CacheWriter, Change, Snapshot, new_cache};
pub use model::{ClusterObject, Kind, ObjectKey};
