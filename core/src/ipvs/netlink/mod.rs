//! The kernel backends over netlink, with neli: the generic netlink family `IPVS`
//! ([`ipvs::NetlinkIpvs`]) and rtnetlink for the `kube-ipvs0` dummy link and its addresses
//! ([`rtnl::NetlinkAddresses`]), and ctnetlink for stale conntrack entries
//! ([`ctnetlink::NetlinkConntrack`]). All batch many requests per `sendmsg` ([`socket::Conn`]).

pub mod ctnetlink;
pub mod ipvs;
pub mod procfs;
pub mod rtnl;
pub mod socket;

pub use ipvs::NetlinkIpvs;
pub use rtnl::NetlinkAddresses;
