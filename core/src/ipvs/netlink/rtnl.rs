//! rtnetlink with neli: the `kube-ipvs0` dummy link and its /32 and /128 addresses.
//!
//! neli (already used for IPVS) rather than the `rtnetlink` crate: the same batching
//! [`Conn`] packs 100 address changes per `sendmsg`, which binding 10,000 service addresses
//! needs, and it keeps one netlink stack in the tree.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Arphrd, Ifa, IfaF, Ifla, IflaInfo, RtAddrFamily, RtScope, Rtm};
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder, RtattrBuilder};
use neli::types::{Buffer, RtBuffer};
use neli::{FromBytesWithInput, Size, ToBytes};

use super::socket::Conn;
use crate::ipvs::backend::{AddressBackend, BackendError, DUMMY_LINK};

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;

fn enc_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Malformed {
        what: "encoding an rtnetlink request".into(),
        reason: e.to_string(),
    }
}

fn push_message<P: Size + ToBytes>(
    out: &mut Vec<u8>,
    kind: Rtm,
    flags: NlmF,
    seq: u32,
    payload: P,
) -> Result<(), BackendError> {
    let msg = NlmsghdrBuilder::default()
        .nl_type(kind)
        .nl_flags(flags)
        .nl_seq(seq)
        .nl_payload(NlPayload::Payload(payload))
        .build()
        .map_err(enc_err)?;
    let start = out.len() as u64;
    let mut cur = Cursor::new(std::mem::take(out));
    cur.set_position(start);
    msg.to_bytes(&mut cur).map_err(enc_err)?;
    *out = cur.into_inner();
    Ok(())
}

fn octets(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The `ifaddrmsg` for binding or unbinding `addr` (full-length prefix) on link `index`.
pub(crate) fn address_message(addr: &IpAddr, index: u32) -> Result<Ifaddrmsg, BackendError> {
    let (family, prefix) = match addr {
        IpAddr::V4(_) => (RtAddrFamily::Inet, 32),
        IpAddr::V6(_) => (RtAddrFamily::Inet6, 128),
    };
    let mut attrs = RtBuffer::new();
    for ty in [Ifa::Local, Ifa::Address] {
        attrs.push(
            RtattrBuilder::default()
                .rta_type(ty)
                .rta_payload(Buffer::from(octets(addr)))
                .build()
                .map_err(enc_err)?,
        );
    }
    IfaddrmsgBuilder::default()
        .ifa_family(family)
        .ifa_prefixlen(prefix)
        // No duplicate address detection: the address must be usable at once.
        .ifa_flags(if addr.is_ipv6() {
            IfaF::NODAD
        } else {
            IfaF::empty()
        })
        .ifa_scope(RtScope::Universe)
        .ifa_index(index)
        .rtattrs(attrs)
        .build()
        .map_err(enc_err)
}

/// The dummy link and addresses over rtnetlink.
#[derive(Debug)]
pub struct NetlinkAddresses {
    conn: Conn,
    link: String,
    index: Option<u32>,
    batch: usize,
}

impl NetlinkAddresses {
    /// Opens a rtnetlink socket for the link `kube-ipvs0`.
    pub fn open() -> Result<Self, BackendError> {
        Self::open_link(DUMMY_LINK)
    }

    /// Opens a rtnetlink socket for a dummy link with another name (tests).
    pub(crate) fn open_link(name: &str) -> Result<Self, BackendError> {
        Ok(Self {
            conn: Conn::open(NlFamily::Route, "rtnetlink")?,
            link: name.to_string(),
            index: None,
            batch: super::ipvs::DEFAULT_BATCH,
        })
    }

    /// The link's index, if it exists.
    pub(crate) fn link_index(&mut self) -> Result<Option<u32>, BackendError> {
        let seq = self.conn.next_seq();
        let mut attrs = RtBuffer::new();
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifla::Ifname)
                .rta_payload(self.link.as_str())
                .build()
                .map_err(enc_err)?,
        );
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_type(Arphrd::from(0))
            .rtattrs(attrs)
            .build()
            .map_err(enc_err)?;
        let mut buf = Vec::new();
        push_message(&mut buf, Rtm::Getlink, NlmF::REQUEST | NlmF::ACK, seq, msg)?;
        let mut index = None;
        let r = self.conn.request(&buf, seq, |m| {
            let info = Ifinfomsg::from_bytes_with_input(&mut Cursor::new(m.body), m.body.len())
                .map_err(|e| BackendError::Malformed {
                    what: "RTM_GETLINK reply".into(),
                    reason: e.to_string(),
                })?;
            index = u32::try_from(*info.ifi_index()).ok();
            Ok(())
        });
        match r {
            Ok(()) => Ok(index),
            Err(BackendError::Kernel { errno, .. }) if errno == ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_dummy(&mut self) -> Result<(), BackendError> {
        let seq = self.conn.next_seq();
        let kind = RtattrBuilder::default()
            .rta_type(IflaInfo::Kind)
            .rta_payload("dummy")
            .build()
            .map_err(enc_err)?;
        let linkinfo = RtattrBuilder::default()
            .rta_type(Ifla::Linkinfo)
            .rta_payload(Buffer::new())
            .build()
            .map_err(enc_err)?
            .nest(&kind)
            .map_err(enc_err)?;
        let mut attrs = RtBuffer::new();
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifla::Ifname)
                .rta_payload(self.link.as_str())
                .build()
                .map_err(enc_err)?,
        );
        attrs.push(linkinfo);
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_type(Arphrd::from(0))
            .rtattrs(attrs)
            .build()
            .map_err(enc_err)?;
        let mut buf = Vec::new();
        push_message(
            &mut buf,
            Rtm::Newlink,
            NlmF::REQUEST | NlmF::ACK | NlmF::CREATE | NlmF::EXCL,
            seq,
            msg,
        )?;
        match self.conn.request(&buf, seq, |_| Ok(())) {
            Ok(()) => Ok(()),
            Err(BackendError::Kernel { errno, .. }) if errno == EEXIST => Ok(()),
            Err(BackendError::Kernel { errno, .. }) => Err(BackendError::Kernel {
                what: format!("creating dummy link {}", self.link),
                errno,
            }),
            Err(e) => Err(e),
        }
    }

    /// Deletes the link (with its addresses); a missing link is no error.
    pub(crate) fn delete_link(&mut self) -> Result<(), BackendError> {
        let Some(index) = self.link_index()? else {
            return Ok(());
        };
        let seq = self.conn.next_seq();
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_type(Arphrd::from(0))
            .ifi_index(i32::try_from(index).unwrap_or(0))
            .build()
            .map_err(enc_err)?;
        let mut buf = Vec::new();
        push_message(&mut buf, Rtm::Dellink, NlmF::REQUEST | NlmF::ACK, seq, msg)?;
        self.index = None;
        match self.conn.request(&buf, seq, |_| Ok(())) {
            Ok(()) => Ok(()),
            Err(BackendError::Kernel { errno, .. }) if errno == ENODEV => Ok(()),
            Err(BackendError::Kernel { errno, .. }) => Err(BackendError::Kernel {
                what: format!("deleting link {}", self.link),
                errno,
            }),
            Err(e) => Err(e),
        }
    }

    /// Every address on every link, as (link index, address).
    pub(crate) fn all_addresses(&mut self) -> Result<Vec<(u32, IpAddr)>, BackendError> {
        let seq = self.conn.next_seq();
        let msg = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Unspecified)
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::Universe)
            .ifa_index(0)
            .build()
            .map_err(enc_err)?;
        let mut buf = Vec::new();
        push_message(&mut buf, Rtm::Getaddr, NlmF::REQUEST | NlmF::DUMP, seq, msg)?;
        let mut out = Vec::new();
        self.conn.request(&buf, seq, |m| {
            let a = Ifaddrmsg::from_bytes_with_input(&mut Cursor::new(m.body), m.body.len())
                .map_err(|e| BackendError::Malformed {
                    what: "RTM_GETADDR reply".into(),
                    reason: e.to_string(),
                })?;
            let handle = a.rtattrs().get_attr_handle();
            let raw = handle
                .get_attribute(Ifa::Local)
                .or_else(|| handle.get_attribute(Ifa::Address))
                .map(|r| r.rta_payload().as_ref().to_vec());
            let addr = match raw.as_deref() {
                Some(b) if b.len() == 4 => Some(IpAddr::V4(Ipv4Addr::from(
                    <[u8; 4]>::try_from(b).unwrap_or_default(),
                ))),
                Some(b) if b.len() == 16 => Some(IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(b).unwrap_or_default(),
                ))),
                _ => None,
            };
            if let Some(addr) = addr {
                out.push((*a.ifa_index(), addr));
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn change(
        &mut self,
        kind: Rtm,
        addrs: &[IpAddr],
        ignore: i32,
    ) -> Result<Vec<(IpAddr, BackendError)>, BackendError> {
        let Some(index) = self.index.or(self.link_index()?) else {
            return Err(BackendError::NoLink(self.link.clone()));
        };
        self.index = Some(index);
        let mut failures = Vec::new();
        let flags = match kind {
            Rtm::Newaddr => NlmF::REQUEST | NlmF::CREATE | NlmF::EXCL,
            _ => NlmF::REQUEST,
        };
        for chunk in addrs.chunks(self.batch) {
            let mut buf = Vec::new();
            let (mut first, mut last) = (0, 0);
            for (i, a) in chunk.iter().enumerate() {
                let seq = self.conn.next_seq();
                if i == 0 {
                    first = seq;
                }
                last = seq;
                let f = if i + 1 == chunk.len() {
                    flags | NlmF::ACK
                } else {
                    flags
                };
                push_message(&mut buf, kind, f, seq, address_message(a, index)?)?;
            }
            for (seq, errno) in self.conn.send_batch(&buf, first, last)? {
                if errno == ignore {
                    continue;
                }
                let a = chunk[seq.wrapping_sub(first) as usize];
                failures.push((
                    a,
                    BackendError::Kernel {
                        what: format!("{kind:?} {a} on {}", self.link),
                        errno,
                    },
                ));
            }
        }
        Ok(failures)
    }
}

impl AddressBackend for NetlinkAddresses {
    fn ensure_link(&mut self) -> Result<(), BackendError> {
        if let Some(i) = self.link_index()? {
            self.index = Some(i);
            return Ok(());
        }
        self.create_dummy()?;
        self.index = self.link_index()?;
        match self.index {
            Some(_) => Ok(()),
            None => Err(BackendError::NoLink(self.link.clone())),
        }
    }

    fn bound(&mut self) -> Result<BTreeSet<IpAddr>, BackendError> {
        let Some(index) = self.link_index()? else {
            return Ok(BTreeSet::new());
        };
        self.index = Some(index);
        Ok(self
            .all_addresses()?
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, a)| a)
            .collect())
    }

    fn local_addresses(&mut self) -> Result<Vec<IpAddr>, BackendError> {
        let index = self.link_index()?;
        Ok(self
            .all_addresses()?
            .into_iter()
            .filter(|(i, _)| Some(*i) != index)
            .map(|(_, a)| a)
            .collect())
    }

    fn bind(&mut self, addrs: &[IpAddr]) -> Result<Vec<(IpAddr, BackendError)>, BackendError> {
        self.change(Rtm::Newaddr, addrs, EEXIST)
    }

    fn unbind(&mut self, addrs: &[IpAddr]) -> Result<Vec<(IpAddr, BackendError)>, BackendError> {
        self.change(Rtm::Deladdr, addrs, EADDRNOTAVAIL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn bind_ipv4_address_golden_bytes() {
        let mut buf = Vec::new();
        let msg = address_message(&"10.96.0.1".parse().unwrap(), 7).unwrap();
        push_message(
            &mut buf,
            Rtm::Newaddr,
            NlmF::REQUEST | NlmF::CREATE | NlmF::EXCL,
            3,
            msg,
        )
        .unwrap();
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            40, 0, 0, 0,  20, 0,  0x01, 0x06,  3, 0, 0, 0,  0, 0, 0, 0, // RTM_NEWADDR, REQUEST|EXCL|CREATE
            2, 32, 0, 0,  7, 0, 0, 0,                                   // AF_INET /32, flags 0, scope 0, index 7
            8, 0, 2, 0,   10, 96, 0, 1,                                 // IFA_LOCAL
            8, 0, 1, 0,   10, 96, 0, 1,                                 // IFA_ADDRESS
        ];
        assert_eq!(buf, want);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn bind_ipv6_address_without_dad() {
        let msg = address_message(&"fd00::a".parse().unwrap(), 7).unwrap();
        let mut buf = Vec::new();
        push_message(&mut buf, Rtm::Deladdr, NlmF::REQUEST, 4, msg).unwrap();
        assert_eq!(buf.len(), 16 + 8 + 20 + 20);
        assert_eq!(&buf[4..6], &[21, 0]); // RTM_DELADDR
        assert_eq!(&buf[16..20], &[10, 128, 0x02, 0]); // AF_INET6 /128 IFA_F_NODAD
    }

    #[test]
    fn reads_the_loopback_link_and_its_address_from_this_kernel() {
        let mut lo = NetlinkAddresses::open_link("lo").unwrap();
        let index = lo.link_index().unwrap().expect("lo exists");
        let bound = lo.bound().unwrap();
        assert!(
            bound.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()),
            "{bound:?}"
        );
        assert!(lo.all_addresses().unwrap().iter().any(|(i, _)| *i == index));
        let mut missing = NetlinkAddresses::open_link("svcnet-none0").unwrap();
        assert_eq!(missing.link_index().unwrap(), None);
        assert!(missing.bound().unwrap().is_empty());
    }
}
