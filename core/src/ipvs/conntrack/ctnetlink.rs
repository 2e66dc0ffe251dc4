//! Deleting conntrack entries over ctnetlink (netfilter netlink subsystem `CTNETLINK`), without a
//! `conntrack` process: one dump per address family and protocol of the filters
//! (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`), filtered in the kernel (`CTA_FILTER`, kernels ≥ 5.8;
//! older kernels ignore it and the same filters are applied here), then one
//! `IPCTNL_MSG_CT_DELETE` per matching entry, batched [`BATCH`] per `sendmsg` with only the last
//! one acknowledged (failures are still reported per request).
//!
//! Why a dump first: a delete names one exact entry (its full original tuple, which includes the
//! client's address and port). Deleting by filter (`CTA_FILTER` on a flush) is refused with
//! `EOPNOTSUPP` before kernel 6.8, so on the 6.1 test kernel a cleanup that finds entries costs
//! two round trips (the dump and one delete batch) and one that finds none costs one.
//! The kernel compares IPv6 addresses of a `CTA_FILTER` inverted (`!ipv6_addr_cmp`, still so in
//! 6.12): for IPv6 only the protocol and port are filtered in the kernel, the addresses here.
//!
//! Message layout (kernel `include/uapi/linux/netfilter/nfnetlink_conntrack.h`): the netlink
//! header, `struct nfgenmsg { u8 family; u8 version; be16 res_id }`, then attributes;
//! `CTA_TUPLE_ORIG` nests `CTA_TUPLE_IP` (`CTA_IP_V4_SRC`/`DST`, `CTA_IP_V6_SRC`/`DST`) and
//! `CTA_TUPLE_PROTO` (`CTA_PROTO_NUM` u8, ports big-endian u16).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use neli::consts::socket::NlFamily;

use super::{
    ConntrackBackend, ConntrackEntry, ConntrackFilter, ConntrackReport, ConntrackTuple,
    protocol_number,
};
use crate::ipvs::backend::BackendError;
use crate::ipvs::netlink::nfnl::{Writer, attrs, be16, be32};
use crate::ipvs::netlink::socket::{Conn, SocketStats};
use crate::ipvs::table::Family;

/// `NFNL_SUBSYS_CTNETLINK`.
const SUBSYS_CTNETLINK: u16 = 1;
/// `IPCTNL_MSG_CT_GET`.
const MSG_CT_GET: u16 = 1;
/// `IPCTNL_MSG_CT_DELETE`.
const MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
/// `CTA_FILTER` (nested: `CTA_FILTER_ORIG_FLAGS`, `CTA_FILTER_REPLY_FLAGS`, host-order u32).
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_FILTER_REPLY_FLAGS: u16 = 2;
/// `CTA_FILTER_FLAG(CTA_IP_SRC)` and friends (kernel `net/netfilter/nf_internals.h`).
const FILTER_IP_SRC: u32 = 1 << 0;
const FILTER_IP_DST: u32 = 1 << 1;
const FILTER_PROTO_NUM: u32 = 1 << 3;
const FILTER_PROTO_DST_PORT: u32 = 1 << 5;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `ENOENT`: the entry expired between the dump and the delete.
const ENOENT: i32 = 2;

/// Deletes per `sendmsg`.
pub(crate) const BATCH: usize = 100;

fn find(payload: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(payload)
        .filter(|(t, _)| *t == ty)
        .map(|(_, v)| v)
        .last()
}

fn addr(v: Option<&[u8]>) -> Option<IpAddr> {
    let v = v?;
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
        _ => None,
    }
}

/// Decodes a tuple (the payload of `CTA_TUPLE_ORIG`/`CTA_TUPLE_REPLY`): (protocol, tuple).
fn decode_tuple(payload: &[u8]) -> Option<(u8, ConntrackTuple)> {
    let ip = find(payload, CTA_TUPLE_IP)?;
    let proto = find(payload, CTA_TUPLE_PROTO)?;
    let (src, dst) = match (find(ip, CTA_IP_V4_SRC), find(ip, CTA_IP_V6_SRC)) {
        (Some(s), _) => (addr(Some(s))?, addr(find(ip, CTA_IP_V4_DST))?),
        (None, Some(s)) => (addr(Some(s))?, addr(find(ip, CTA_IP_V6_DST))?),
        (None, None) => return None,
    };
    let num = *find(proto, CTA_PROTO_NUM)?.first()?;
    Some((
        num,
        ConntrackTuple {
            src,
            dst,
            src_port: be16(find(proto, CTA_PROTO_SRC_PORT)).unwrap_or(0),
            dst_port: be16(find(proto, CTA_PROTO_DST_PORT)).unwrap_or(0),
        },
    ))
}

/// Decodes one `IPCTNL_MSG_CT_NEW` message body of a dump (after the netlink header). `None`
/// for an entry without both tuples (nothing cleanup could match).
pub(crate) fn decode_entry(body: &[u8]) -> Option<ConntrackEntry> {
    let rest = body.get(4..)?;
    let (protocol, orig) = decode_tuple(find(rest, CTA_TUPLE_ORIG)?)?;
    let (_, reply) = decode_tuple(find(rest, CTA_TUPLE_REPLY)?)?;
    Some(ConntrackEntry {
        protocol,
        orig,
        reply,
        zone: be16(find(rest, CTA_ZONE)).unwrap_or(0),
        id: be32(find(rest, CTA_ID)),
    })
}

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;

/// Appends a dump request of every entry of every family (the tests' reference for the
/// unfiltered request; the cleanup sends only kernel-filtered dumps).
#[cfg(test)]
fn encode_dump(out: &mut Vec<u8>, seq: u32) {
    let mut w = Writer(out);
    let start = w.header(
        SUBSYS_CTNETLINK,
        MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        0,
    );
    w.finish(start);
}

/// What one kernel-filtered dump asks for: the entries of one family and protocol, narrowed by
/// the fields every filter of the group agrees on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DumpFilter {
    /// Address family of the entries.
    pub family: Family,
    /// IANA protocol number.
    pub protocol: u8,
    /// Original destination address (IPv4 only, see the module notes).
    pub orig_dst: Option<IpAddr>,
    /// Original destination port.
    pub orig_dst_port: Option<u16>,
    /// Reply source address (IPv4 only).
    pub reply_src: Option<IpAddr>,
}

/// The dumps that find every entry `filters` match: one per address family and protocol, each
/// narrowed by the address, port and replying address when all filters of the group name the
/// same one. The entries they return are still matched against `filters` one by one.
pub(crate) fn dump_filters(filters: &[ConntrackFilter]) -> Vec<DumpFilter> {
    fn common<T: Copy + PartialEq>(mut it: impl Iterator<Item = Option<T>>) -> Option<T> {
        let first = it.next()??;
        it.all(|v| v == Some(first)).then_some(first)
    }
    let mut groups: Vec<(Family, u8)> = filters
        .iter()
        .map(|f| (f.family, protocol_number(f.protocol)))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
        .into_iter()
        .map(|(family, protocol)| {
            let group = || {
                filters
                    .iter()
                    .filter(move |f| f.family == family && protocol_number(f.protocol) == protocol)
            };
            let v4 = family == Family::V4;
            DumpFilter {
                family,
                protocol,
                orig_dst: common(group().map(|f| f.orig_dst)).filter(|_| v4),
                orig_dst_port: common(group().map(|f| f.orig_dst_port)),
                reply_src: common(group().map(|f| f.reply_src)).filter(|_| v4),
            }
        })
        .collect()
}

/// Appends a dump request of the entries `filter` describes, filtered in the kernel.
pub(crate) fn encode_filtered_dump(out: &mut Vec<u8>, seq: u32, filter: &DumpFilter) {
    let family = match filter.family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    };
    let mut w = Writer(out);
    let start = w.header(
        SUBSYS_CTNETLINK,
        MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family,
    );
    let mut orig_flags = FILTER_PROTO_NUM;
    let tuple = w.begin(CTA_TUPLE_ORIG);
    if let Some(IpAddr::V4(dst)) = filter.orig_dst {
        orig_flags |= FILTER_IP_DST;
        let ip = w.begin(CTA_TUPLE_IP);
        w.attr(CTA_IP_V4_DST, &dst.octets());
        w.end(ip);
    }
    let proto = w.begin(CTA_TUPLE_PROTO);
    w.attr(CTA_PROTO_NUM, &[filter.protocol]);
    if let Some(port) = filter.orig_dst_port {
        orig_flags |= FILTER_PROTO_DST_PORT;
        w.attr(CTA_PROTO_DST_PORT, &port.to_be_bytes());
    }
    w.end(proto);
    w.end(tuple);
    let mut reply_flags = 0;
    if let Some(IpAddr::V4(src)) = filter.reply_src {
        reply_flags |= FILTER_IP_SRC;
        let tuple = w.begin(CTA_TUPLE_REPLY);
        let ip = w.begin(CTA_TUPLE_IP);
        w.attr(CTA_IP_V4_SRC, &src.octets());
        w.end(ip);
        w.end(tuple);
    }
    let nest = w.begin(CTA_FILTER);
    w.attr(CTA_FILTER_ORIG_FLAGS, &orig_flags.to_ne_bytes());
    w.attr(CTA_FILTER_REPLY_FLAGS, &u32::to_ne_bytes(reply_flags));
    w.end(nest);
    w.finish(start);
}

/// Appends the request deleting exactly `entry` (by original tuple, zone and id).
pub(crate) fn encode_delete(out: &mut Vec<u8>, seq: u32, entry: &ConntrackEntry, ack: bool) {
    let family = match entry.orig.src {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    };
    let flags = NLM_F_REQUEST | if ack { NLM_F_ACK } else { 0 };
    let mut w = Writer(out);
    let start = w.header(SUBSYS_CTNETLINK, MSG_CT_DELETE, flags, seq, family);
    let tuple = w.begin(CTA_TUPLE_ORIG);
    let ip = w.begin(CTA_TUPLE_IP);
    match (entry.orig.src, entry.orig.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            w.attr(CTA_IP_V4_SRC, &s.octets());
            w.attr(CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            w.attr(CTA_IP_V6_SRC, &v6(s));
            w.attr(CTA_IP_V6_DST, &v6(d));
        }
    }
    w.end(ip);
    let proto = w.begin(CTA_TUPLE_PROTO);
    w.attr(CTA_PROTO_NUM, &[entry.protocol]);
    w.attr(CTA_PROTO_SRC_PORT, &entry.orig.src_port.to_be_bytes());
    w.attr(CTA_PROTO_DST_PORT, &entry.orig.dst_port.to_be_bytes());
    w.end(proto);
    w.end(tuple);
    if entry.zone != 0 {
        w.attr(CTA_ZONE, &entry.zone.to_be_bytes());
    }
    if let Some(id) = entry.id {
        w.attr(CTA_ID, &id.to_be_bytes());
    }
    w.finish(start);
}

/// The kernel's conntrack table over ctnetlink.
#[derive(Debug)]
pub struct NetlinkConntrack {
    conn: Conn,
    buf: Vec<u8>,
}

impl NetlinkConntrack {
    /// Opens a `NETLINK_NETFILTER` socket (the kernel loads `nf_conntrack_netlink` at the first
    /// request when it is a module).
    pub fn open() -> Result<Self, BackendError> {
        Ok(Self {
            conn: Conn::open(NlFamily::Netfilter, "ctnetlink")?,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Socket call counters so far.
    pub fn socket_stats(&self) -> SocketStats {
        self.conn.stats()
    }

    /// Every entry of the table that matches one of `filters` (one kernel-filtered dump per
    /// address family and protocol, see [`dump_filters`]); returns them, the number of entries
    /// the kernel returned and the number of dumps (round trips).
    pub fn matching(
        &mut self,
        filters: &[ConntrackFilter],
    ) -> Result<(Vec<ConntrackEntry>, usize, usize), BackendError> {
        let mut found = Vec::new();
        let mut scanned = 0;
        let dumps = dump_filters(filters);
        for dump in &dumps {
            let seq = self.conn.next_seq();
            self.buf.clear();
            encode_filtered_dump(&mut self.buf, seq, dump);
            let buf = std::mem::take(&mut self.buf);
            let r = self.conn.request(&buf, seq, |m| {
                scanned += 1;
                if let Some(e) = decode_entry(m.body)
                    && filters.iter().any(|f| f.matches(&e))
                {
                    found.push(e);
                }
                Ok(())
            });
            self.buf = buf;
            r?;
        }
        Ok((found, scanned, dumps.len()))
    }
}

impl ConntrackBackend for NetlinkConntrack {
    fn delete_matching(
        &mut self,
        filters: &[ConntrackFilter],
    ) -> Result<ConntrackReport, BackendError> {
        if filters.is_empty() {
            return Ok(ConntrackReport::default());
        }
        let (victims, scanned, dumps) = self.matching(filters)?;
        let mut report = ConntrackReport {
            scanned,
            round_trips: dumps,
            ..ConntrackReport::default()
        };
        for chunk in victims.chunks(BATCH) {
            self.buf.clear();
            let (mut first, mut last) = (0, 0);
            for (i, e) in chunk.iter().enumerate() {
                let seq = self.conn.next_seq();
                if i == 0 {
                    first = seq;
                }
                last = seq;
                encode_delete(&mut self.buf, seq, e, i + 1 == chunk.len());
            }
            let buf = std::mem::take(&mut self.buf);
            let errors = self.conn.send_batch(&buf, first, last);
            self.buf = buf;
            let errors = errors?;
            report.round_trips += 1;
            let mut gone = 0;
            for (seq, errno) in errors {
                if errno == ENOENT {
                    // Expired (or replaced) since the dump: nothing left to delete.
                    gone += 1;
                    continue;
                }
                let what = chunk
                    .get(seq.wrapping_sub(first) as usize)
                    .map(|e| format!("deleting conntrack entry {:?}", e.orig))
                    .unwrap_or_else(|| "deleting a conntrack entry".into());
                return Err(BackendError::Kernel { what, errno });
            }
            report.deleted += chunk.len() - gone;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::table::Family;
    use crate::model::Protocol;

    fn entry(v6: bool) -> ConntrackEntry {
        let (c, vip, pod): (IpAddr, IpAddr, IpAddr) = if v6 {
            (
                "fd00::5".parse().unwrap(),
                "fd00:96::a".parse().unwrap(),
                "fd00:244::7".parse().unwrap(),
            )
        } else {
            (
                "192.168.1.5".parse().unwrap(),
                "10.96.0.10".parse().unwrap(),
                "10.244.1.7".parse().unwrap(),
            )
        };
        ConntrackEntry {
            protocol: 17,
            orig: ConntrackTuple {
                src: c,
                dst: vip,
                src_port: 40000,
                dst_port: 53,
            },
            reply: ConntrackTuple {
                src: pod,
                dst: c,
                src_port: 5353,
                dst_port: 40000,
            },
            zone: 3,
            id: Some(0xdead_beef),
        }
    }

    /// A dump reply as the kernel builds it: nfgenmsg, both tuples (nested, with
    /// `NLA_F_NESTED`), a status attribute the decoder skips, the zone and the id.
    fn reply_body(e: &ConntrackEntry) -> Vec<u8> {
        let mut body = vec![
            if e.orig.src.is_ipv4() {
                AF_INET
            } else {
                AF_INET6
            },
            0,
            0,
            0,
        ];
        let mut w = Writer(&mut body);
        for (ty, t) in [(CTA_TUPLE_ORIG, e.orig), (CTA_TUPLE_REPLY, e.reply)] {
            let tuple = w.begin(ty);
            let ip = w.begin(CTA_TUPLE_IP);
            match (t.src, t.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    w.attr(CTA_IP_V4_SRC, &s.octets());
                    w.attr(CTA_IP_V4_DST, &d.octets());
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    w.attr(CTA_IP_V6_SRC, &s.octets());
                    w.attr(CTA_IP_V6_DST, &d.octets());
                }
                _ => unreachable!("one family per tuple"),
            }
            w.end(ip);
            let proto = w.begin(CTA_TUPLE_PROTO);
            w.attr(CTA_PROTO_NUM, &[e.protocol]);
            w.attr(CTA_PROTO_SRC_PORT, &t.src_port.to_be_bytes());
            w.attr(CTA_PROTO_DST_PORT, &t.dst_port.to_be_bytes());
            w.end(proto);
            w.end(tuple);
        }
        w.attr(3, &0x18eu32.to_be_bytes()); // CTA_STATUS
        w.attr(CTA_ZONE, &e.zone.to_be_bytes());
        w.attr(CTA_ID, &e.id.unwrap().to_be_bytes());
        body
    }

    #[test]
    fn decodes_dump_entries_of_both_families() {
        for v6 in [false, true] {
            let e = entry(v6);
            assert_eq!(decode_entry(&reply_body(&e)), Some(e), "v6={v6}");
        }
        // Truncated or tuple-less bodies are skipped, not errors.
        assert_eq!(decode_entry(&[2, 0, 0, 0]), None);
        assert_eq!(decode_entry(&[2]), None);
    }

    #[test]
    fn delete_request_carries_the_original_tuple_zone_and_id() {
        let e = entry(false);
        let mut buf = Vec::new();
        encode_delete(&mut buf, 7, &e, true);
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len());
        assert_eq!(
            u16::from_ne_bytes([buf[4], buf[5]]),
            (1 << 8) | 2,
            "CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE"
        );
        assert_eq!(
            u16::from_ne_bytes([buf[6], buf[7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 7);
        assert_eq!(buf[16], AF_INET);
        let rest = &buf[20..];
        let (proto, orig) = decode_tuple(find(rest, CTA_TUPLE_ORIG).unwrap()).unwrap();
        assert_eq!((proto, orig), (17, e.orig));
        assert_eq!(be16(find(rest, CTA_ZONE)), Some(3));
        assert_eq!(be32(find(rest, CTA_ID)), Some(0xdead_beef));
        assert!(find(rest, CTA_TUPLE_REPLY).is_none());

        let mut buf = Vec::new();
        encode_delete(&mut buf, 8, &entry(true), false);
        assert_eq!(u16::from_ne_bytes([buf[6], buf[7]]), NLM_F_REQUEST);
        assert_eq!(buf[16], AF_INET6);
        let (_, orig) = decode_tuple(find(&buf[20..], CTA_TUPLE_ORIG).unwrap()).unwrap();
        assert_eq!(orig, entry(true).orig);
    }

    #[test]
    fn dump_request_asks_for_every_family() {
        let mut buf = Vec::new();
        encode_dump(&mut buf, 9);
        assert_eq!(buf.len(), 20);
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), (1 << 8) | 1);
        assert_eq!(
            u16::from_ne_bytes([buf[6], buf[7]]),
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(buf[16], 0, "AF_UNSPEC: every family");
    }

    #[test]
    fn decoded_entries_match_the_filters_cleanup_builds() {
        let e = decode_entry(&reply_body(&entry(false))).unwrap();
        let f = ConntrackFilter {
            family: Family::V4,
            protocol: Protocol::Udp,
            orig_dst: Some("10.96.0.10".parse().unwrap()),
            orig_dst_port: Some(53),
            reply_src: Some("10.244.1.7".parse().unwrap()),
        };
        assert!(f.matches(&e));
        assert!(
            !ConntrackFilter {
                reply_src: Some("10.244.1.8".parse().unwrap()),
                ..f
            }
            .matches(&e)
        );
        assert!(
            !ConntrackFilter {
                protocol: Protocol::Sctp,
                ..f
            }
            .matches(&e)
        );
    }

    fn u32_of(v: Option<&[u8]>) -> Option<u32> {
        Some(u32::from_ne_bytes(v?.get(..4)?.try_into().ok()?))
    }

    #[test]
    fn one_filtered_dump_per_family_and_protocol_narrowed_by_what_all_filters_share() {
        let vip: IpAddr = "10.96.0.10".parse().unwrap();
        let f = |dst: &str, port: u16, reply: Option<&str>| ConntrackFilter {
            family: Family::V4,
            protocol: Protocol::Udp,
            orig_dst: Some(dst.parse().unwrap()),
            orig_dst_port: Some(port),
            reply_src: reply.map(|r| r.parse().unwrap()),
        };
        // One endpoint of one service: the dump is as narrow as the filter.
        assert_eq!(
            dump_filters(&[f("10.96.0.10", 53, Some("10.244.1.7"))]),
            vec![DumpFilter {
                family: Family::V4,
                protocol: 17,
                orig_dst: Some(vip),
                orig_dst_port: Some(53),
                reply_src: Some("10.244.1.7".parse().unwrap()),
            }]
        );
        // Two endpoints of one service: the address and port stay, the replying address goes.
        let two = dump_filters(&[
            f("10.96.0.10", 53, Some("10.244.1.7")),
            f("10.96.0.10", 53, Some("10.244.1.8")),
        ]);
        assert_eq!(two.len(), 1);
        assert_eq!(
            (two[0].orig_dst, two[0].orig_dst_port, two[0].reply_src),
            (Some(vip), Some(53), None)
        );
        // A service filter (no replying address) next to an endpoint filter: none either.
        let mixed = dump_filters(&[
            f("10.96.0.10", 53, None),
            f("10.96.0.10", 53, Some("10.244.1.7")),
        ]);
        assert_eq!(mixed[0].reply_src, None);
        // Two services on different ports and addresses: protocol only.
        let apart = dump_filters(&[f("10.96.0.10", 53, None), f("10.96.0.11", 5353, None)]);
        assert_eq!((apart[0].orig_dst, apart[0].orig_dst_port), (None, None));
        // A node port filter has no address: none in the dump either.
        let node_port = ConntrackFilter {
            orig_dst: None,
            ..f("10.96.0.10", 30053, None)
        };
        assert_eq!(dump_filters(&[node_port])[0].orig_dst, None);
        // SCTP and IPv6 filters get dumps of their own; IPv6 addresses are not sent to the kernel.
        let v6 = ConntrackFilter {
            family: Family::V6,
            protocol: Protocol::Udp,
            orig_dst: Some("fd00:96::a".parse().unwrap()),
            orig_dst_port: Some(53),
            reply_src: Some("fd00:244::7".parse().unwrap()),
        };
        let sctp = ConntrackFilter {
            protocol: Protocol::Sctp,
            ..f("10.96.0.10", 53, None)
        };
        let all = dump_filters(&[v6, sctp, f("10.96.0.10", 53, None)]);
        assert_eq!(all.len(), 3);
        let six = all.iter().find(|d| d.family == Family::V6).unwrap();
        assert_eq!(
            (six.protocol, six.orig_dst, six.orig_dst_port, six.reply_src),
            (17, None, Some(53), None)
        );
        assert!(all.iter().any(|d| d.protocol == 132));
        assert!(dump_filters(&[]).is_empty());
    }

    #[test]
    fn filtered_dump_request_carries_the_tuples_and_flags_the_kernel_checks() {
        let filter = DumpFilter {
            family: Family::V4,
            protocol: 17,
            orig_dst: Some("10.96.0.10".parse().unwrap()),
            orig_dst_port: Some(53),
            reply_src: Some("10.244.1.7".parse().unwrap()),
        };
        let mut buf = Vec::new();
        encode_filtered_dump(&mut buf, 11, &filter);
        assert_eq!(
            u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize,
            buf.len()
        );
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), (1 << 8) | 1, "CT_GET");
        assert_eq!(
            u16::from_ne_bytes([buf[6], buf[7]]),
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(buf[16], AF_INET, "a tuple filter needs the family");
        let rest = &buf[20..];
        let orig = find(rest, CTA_TUPLE_ORIG).unwrap();
        let ip = find(orig, CTA_TUPLE_IP).unwrap();
        assert_eq!(addr(find(ip, CTA_IP_V4_DST)), filter.orig_dst);
        assert!(find(ip, CTA_IP_V4_SRC).is_none(), "the client is not known");
        let proto = find(orig, CTA_TUPLE_PROTO).unwrap();
        assert_eq!(find(proto, CTA_PROTO_NUM), Some(&[17u8][..]));
        assert_eq!(be16(find(proto, CTA_PROTO_DST_PORT)), Some(53));
        let reply = find(rest, CTA_TUPLE_REPLY).unwrap();
        assert_eq!(
            addr(find(find(reply, CTA_TUPLE_IP).unwrap(), CTA_IP_V4_SRC)),
            filter.reply_src
        );
        let flags = find(rest, CTA_FILTER).unwrap();
        assert_eq!(
            u32_of(find(flags, CTA_FILTER_ORIG_FLAGS)),
            Some(FILTER_IP_DST | FILTER_PROTO_NUM | FILTER_PROTO_DST_PORT)
        );
        assert_eq!(
            u32_of(find(flags, CTA_FILTER_REPLY_FLAGS)),
            Some(FILTER_IP_SRC)
        );

        // IPv6, any address: protocol and port only, no reply tuple.
        let mut buf = Vec::new();
        encode_filtered_dump(
            &mut buf,
            12,
            &DumpFilter {
                family: Family::V6,
                protocol: 17,
                orig_dst: None,
                orig_dst_port: Some(53),
                reply_src: None,
            },
        );
        assert_eq!(buf[16], AF_INET6);
        let rest = &buf[20..];
        let orig = find(rest, CTA_TUPLE_ORIG).unwrap();
        assert!(find(orig, CTA_TUPLE_IP).is_none());
        assert!(find(rest, CTA_TUPLE_REPLY).is_none());
        let flags = find(rest, CTA_FILTER).unwrap();
        assert_eq!(
            u32_of(find(flags, CTA_FILTER_ORIG_FLAGS)),
            Some(FILTER_PROTO_NUM | FILTER_PROTO_DST_PORT)
        );
        assert_eq!(u32_of(find(flags, CTA_FILTER_REPLY_FLAGS)), Some(0));
    }
}
