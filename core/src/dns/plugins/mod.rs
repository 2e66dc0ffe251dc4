//! The plugins of a Corefile beyond the cluster zone: forward, cache, loadbalance, loop,
//! hosts, errors and log, each a [`Plugin`](crate::dns::handler::Plugin) of the request chain.

pub mod cache;
pub mod forward;
pub mod metrics;
pub mod upstream;
