//! The kernel backends over netlink, with neli: the generic netlink family `IPVS`
//! ([`ipvs::NetlinkIpvs`]) and rtnetlink for the `kube-ipvs0` dummy link and its addresses
//! ([`rtnl::NetlinkAddresses`]); ctnetlink for stale conntrack entries lives in
//! [`crate::ipvs::conntrack::ctnetlink`] on top of this module's [`socket::Conn`], and ipsets
//! over the netfilter subsystem `IPSET` in [`ipset::IpsetNetlink`]. All batch many requests per `sendmsg` ([`socket::Conn`]).

mod dump_ring;
pub mod ipset;
pub mod ipvs;
pub(crate) mod nfnl;
pub mod procfs;
pub mod rtnl;
pub mod socket;

pub use ipvs::NetlinkIpvs;
pub use rtnl::NetlinkAddresses;
