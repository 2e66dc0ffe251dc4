//! Cluster DNS: the `cluster.local` zone built from snapshots, and its server.
//!
//! - [`zone`]: the pure zone model, [`zone::ClusterZone`] built from a cache snapshot and updated
//!   incrementally from the changes of the next ones.
//! - [`handler`]: the request path, a chain of [`handler::Plugin`]s (CoreDNS style).
//! - [`cluster`]: the `kubernetes` plugin serving the live zone, and its updater task.
//! - [`wire`]: parsing requests and encoding responses.
//! - [`server`]: UDP/TCP listeners; `encrypted`: DoT/DoH listeners (hickory-server); [`http`]: health, ready, metrics; [`metrics`]: CoreDNS
//!   metric names.
//! - [`zone::export`]: RFC 1035 export of the zone; [`rrl`]: rate limit of large UDP answers.
//! - [`runner`]: the flag mode's options and the Corefile they mean
//!   ([`runner::DnsOptions::corefile`], served by [`plugins::serve`] like any Corefile); the
//!   health/ready/metrics route tables. HTTP endpoints, lameduck and source are the
//!   composition root's ([`crate::agent::programs`]).

pub(crate) mod answer_cache;
pub mod cluster;
pub mod corefile;
pub(crate) mod encrypted;
pub mod error;
pub mod handler;
pub mod metrics;
pub mod plugins;
pub mod rrl;
pub mod runner;
pub mod server;
mod udp_mmsg;
pub mod wire;
pub mod zone;
pub(crate) mod zonetext;

pub use error::DnsError;
pub use runner::DnsOptions;
