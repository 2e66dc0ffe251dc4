//! IPVS service proxy: what kube-proxy does in IPVS mode, programmed over netlink.
//!
//! Data flow: cache [`Snapshot`](crate::Snapshot) → [`desired::build`] / [`DesiredState::update`]
//! (pure, incremental) → [`reconcile::Reconciler`] (diff against its mirror of the kernel) →
//! [`backend::IpvsBackend`] + [`backend::AddressBackend`] (netlink, or in-memory for tests).
//!
//! - [`table`]: the IPVS table as data (virtual/real servers, schedulers, flags).
//! - [`view`]: the proxy's one view of each Service (usable slices, local endpoints,
//!   health-check port, source ranges), followed from `changes_since` once per changed Service.
//! - [`desired`]: the desired state from the view, pure and incremental.
//! - [`backend`]: the kernel edges as traits, their operations ([`backend::IpvsOp`]) and errors.
//! - [`netlink`]: the real backends — generic netlink `IPVS` ([`netlink::NetlinkIpvs`], 100
//!   requests per `sendmsg`) and rtnetlink for `kube-ipvs0` ([`netlink::NetlinkAddresses`]).
//! - [`memory`]: in-memory backends with the kernel's semantics.
//! - [`reconcile`]: full and incremental syncs, adoption, graceful termination.
//! - [`host`]: sysctls, IPVS timeouts, ipsets and iptables rules (restore files).
//! - [`ipset_ops`]: ipset changes as typed operations, rendered as `ipset restore` text or sent
//!   over netlink ([`netlink::ipset`]).
//! - [`config`]: `KubeProxyConfiguration` files, validation, live watching.
//! - [`conntrack`]: stale UDP/SCTP conntrack entries after endpoint changes, and the
//!   `conntrack` section's kernel settings.
//! - [`run`]: the control loop ([`run::run`]) taking a [`CacheReader`](crate::CacheReader).
//! - [`app`]: the `svcnet-proxy` program (its control loop on a cache reader, `dry_run`).
//! - [`serve`]: `/healthz`, `/livez`, `/metrics` with kube-proxy's metric names.
//! - [`healthcheck`]: per-Service health-check node ports for `externalTrafficPolicy: Local`
//!   load balancers (kube-proxy's service health server).
//! - [`render`]: `ipvsadm -Ln`-style text of a desired state or a kernel dump.
//! - `fixtures`: Services/EndpointSlices builders and a synthetic large cluster (tests, and the
//!   `test-support` feature for the `svcnet-tests` crate; not in the product).
//!
//! Programming a table directly (as the kernel tests and benchmarks do):
//!
//! ```no_run
//! use svcnet_core::ipvs::{ProxyConfig, NodeInfo, build};
//! use svcnet_core::ipvs::netlink::{NetlinkAddresses, NetlinkIpvs};
//! use svcnet_core::ipvs::reconcile::Reconciler;
//! # fn f(snapshot: &svcnet_core::Snapshot) -> Result<(), svcnet_core::ipvs::backend::BackendError> {
//! let config = ProxyConfig::default();
//! let mut desired = build(snapshot, &config, &NodeInfo::default());
//! let mut rec = Reconciler::new(Box::new(NetlinkIpvs::open()?), Box::new(NetlinkAddresses::open()?));
//! rec.full_sync(&desired, &config)?; // dump, diff, apply (adopts existing rules)
//! // later, after the cache changed:
//! let delta = desired.update(snapshot, &config, &NodeInfo::default());
//! rec.sync_delta(&desired, &delta, &config)?; // only what changed, one batch
//! # Ok(()) }
//! ```

pub mod app;
pub mod backend;
mod caps;
pub mod config;
pub mod conntrack;
pub mod desired;
pub(crate) mod extras;
#[cfg(any(test, feature = "test-support"))]
pub mod fixtures;
pub(crate) mod healthcheck;
pub mod host;
pub mod ipset_ops;
pub mod memory;
pub mod netlink;
pub mod reconcile;
pub mod render;
pub mod run;
pub mod serve;
pub mod table;
pub(crate) mod topology;
pub mod view;

#[cfg(test)]
mod golden;

pub use config::ProxyConfig;
pub use desired::{DesiredState, NodeInfo, build};
pub use table::{DestId, DestParams, Scheduler, ServiceId, ServiceParams, VirtualServer};
