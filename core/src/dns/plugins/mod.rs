//! The plugins of a Corefile beyond the cluster zone: forward, cache, loadbalance, loop,
//! hosts, rewrite, template, acl, whoami, any, minimal, local, file, errors and log, each a [`Plugin`](crate::dns::handler::Plugin) of the request chain.

pub mod acl;
pub mod any;
pub mod autopath;
pub mod build;
pub mod cache;
pub(crate) mod external_name;
pub mod file;
mod file_poll;
pub mod forward;
pub mod hosts;
pub mod k8s_external;
pub mod loadbalance;
pub mod local;
pub(crate) mod loop_detect;
pub mod metrics;
pub mod minimal;
pub mod observe;
pub mod rewrite;
pub mod router;
pub mod serve;
pub mod template;
pub mod upstream;
pub mod whoami;
