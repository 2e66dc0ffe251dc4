//! Cluster DNS: the `cluster.local` zone built from snapshots, and its server.
//!
//! - [`handler`]: the request path, a chain of [`handler::Plugin`]s (CoreDNS style).
//! - [`wire`]: parsing requests and encoding responses.

pub mod handler;
pub mod wire;
pub mod corefile;
pub mod cluster;
pub mod zone;
pub mod plugins;
