//! The plugins of a Corefile beyond the cluster zone: forward, cache, loadbalance, loop,
//! hosts, rewrite, errors and log, each a [`Plugin`](crate::dns::handler::Plugin) of the request chain.

pub mod autopath;
pub mod build;
pub mod cache;
pub mod forward;
pub mod hosts;
pub mod k8s_external;
pub mod loadbalance;
pub mod loop_detect;
pub mod metrics;
pub mod observe;
pub mod rewrite;
pub mod router;
pub mod serve;
pub mod upstream;
