//! ipsets over netlink (netfilter netlink subsystem `IPSET`, 6), without an `ipset` process.
//!
//! Message layout (kernel `include/uapi/linux/netfilter/ipset/ip_set.h`): the netlink header,
//! `struct nfgenmsg { u8 family; u8 version; be16 res_id }`, then attributes. Every request
//! carries `IPSET_ATTR_PROTOCOL`; entries and create parameters are nested in
//! `IPSET_ATTR_DATA`, addresses nested once more (`IPSET_ATTR_IPADDR_IPV4`/`IPV6`). Numbers
//! wider than a byte are big-endian and flagged `NLA_F_NET_BYTEORDER`, nests `NLA_F_NESTED`:
//! the kernel refuses them otherwise (`IPSET_ERR_PROTOCOL`). `-exist` is the absence of
//! `NLM_F_EXCL`.
//!
//! Requests are sent [`BATCH`] per `sendmsg` with only the last one acknowledged (the kernel
//! still answers each failing one), as the IPVS backend does; a batch never runs past a
//! `swap`, so a set is swapped only after all of its temporary set's entries went in.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use neli::consts::socket::NlFamily;

use crate::ipvs::backend::BackendError;
use crate::ipvs::ipset_ops::{IpsetEntry, IpsetOp, SetType};
use crate::ipvs::netlink::nfnl::{NLA_F_NET_BYTEORDER, Writer, attrs, be32};
use crate::ipvs::netlink::socket::{Conn, Message, SocketStats};
use crate::ipvs::table::Family;

/// `NFNL_SUBSYS_IPSET`.
const SUBSYS_IPSET: u16 = 6;
/// The protocol version sent (`IPSET_PROTOCOL_MIN` of current kernels, the only one of 3.x-5.x).
pub(crate) const PROTOCOL: u8 = 6;

const CMD_PROTOCOL: u16 = 1;
const CMD_CREATE: u16 = 2;
const CMD_DESTROY: u16 = 3;
const CMD_FLUSH: u16 = 4;
const CMD_SWAP: u16 = 6;
const CMD_LIST: u16 = 7;
const CMD_ADD: u16 = 9;
const CMD_DEL: u16 = 10;
const CMD_TYPE: u16 = 13;

const ATTR_PROTOCOL: u16 = 1;
const ATTR_SETNAME: u16 = 2;
const ATTR_TYPENAME: u16 = 3;
const ATTR_SETNAME2: u16 = 3;
const ATTR_REVISION: u16 = 4;
const ATTR_FAMILY: u16 = 5;
const ATTR_FLAGS: u16 = 6;
const ATTR_DATA: u16 = 7;

const ATTR_IP: u16 = 1;
const ATTR_CIDR: u16 = 3;
const ATTR_PORT: u16 = 4;
const ATTR_PORT_TO: u16 = 5;
const ATTR_PROTO: u16 = 7;
const ATTR_HASHSIZE: u16 = 18;
const ATTR_MAXELEM: u16 = 19;
const ATTR_ELEMENTS: u16 = 24;
const ATTR_IP2: u16 = 20;
const ATTR_CIDR2: u16 = 21;

const ATTR_IPADDR_IPV4: u16 = 1;
const ATTR_IPADDR_IPV6: u16 = 2;

/// `IPSET_FLAG_LIST_HEADER`: list the sets' headers, not their entries.
const FLAG_LIST_HEADER: u32 = 1 << 2;

const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_DUMP: u16 = 0x300;

/// Requests per `sendmsg`.
pub(crate) const BATCH: usize = 256;

pub use crate::ipvs::backend::IpsetError;

/// The kernel's error number for a request, in words (ipset's own numbers, then system ones).
pub(crate) fn describe(errno: i32, op: &IpsetOp) -> String {
    let s = match errno {
        4097 => "kernel and program do not speak the same ipset protocol",
        4098 => "the set type is not supported by the kernel",
        4099 => "the kernel's maximum number of sets is reached",
        4100 => {
            "the set is in use by a kernel component (an iptables rule) and cannot be destroyed"
        }
        4101 => "the second set does not exist",
        4102 => "the two sets are of different types or families",
        4103 => match op {
            IpsetOp::Create { .. } => {
                "a set of this name already exists with another type or other parameters"
            }
            IpsetOp::Add { .. } => "the entry is already in the set",
            IpsetOp::Del { .. } => "the entry is not in the set",
            _ => "element or set already exists",
        },
        4104 => "invalid CIDR prefix",
        4105 => "invalid netmask",
        4106 => "invalid address family for the set",
        4107 => "the set has no timeout support",
        4108 => "the set is referenced and cannot be destroyed or renamed",
        4109 => "an IPv4 address was expected",
        4110 => "an IPv6 address was expected",
        4352 => match op {
            IpsetOp::Add { .. } => {
                "the set is full (a hash set's maxelem reached) or the port is outside a bitmap \
                 set's range"
            }
            _ => "type-specific error (hash set full / port outside a bitmap set's range)",
        },
        4353 => "zero-valued element or range size",
        4354 => "invalid protocol",
        4355 => "protocol missing",
        4356 => "ranges are not supported by this set type",
        4357 => "invalid range",
        2 => "the set does not exist",
        1 => "operation not permitted (CAP_NET_ADMIN is needed)",
        _ => return std::io::Error::from_raw_os_error(errno).to_string(),
    };
    s.to_owned()
}

/// ipset's attribute kinds and header, on the shared nfnetlink writer.
impl Writer<'_> {
    fn u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }
    fn be16(&mut self, ty: u16, v: u16) {
        self.attr(ty | NLA_F_NET_BYTEORDER, &v.to_be_bytes());
    }
    fn be32(&mut self, ty: u16, v: u32) {
        self.attr(ty | NLA_F_NET_BYTEORDER, &v.to_be_bytes());
    }
    fn string(&mut self, ty: u16, s: &str) {
        let mut b = Vec::with_capacity(s.len() + 1);
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        self.attr(ty, &b);
    }
    fn ip(&mut self, ty: u16, ip: IpAddr) {
        let at = self.begin(ty);
        match ip {
            IpAddr::V4(a) => self.attr(ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &a.octets()),
            IpAddr::V6(a) => self.attr(ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &a.octets()),
        }
        self.end(at);
    }
    /// The netlink and nfgenmsg headers and `IPSET_ATTR_PROTOCOL`; returns the message start.
    fn ipset_header(&mut self, cmd: u16, flags: u16, seq: u32) -> usize {
        let start = self.header(SUBSYS_IPSET, cmd, flags, seq, NFPROTO_IPV4);
        self.u8(ATTR_PROTOCOL, PROTOCOL);
        start
    }
}

fn nfproto(family: Option<Family>) -> u8 {
    match family {
        Some(Family::V4) => NFPROTO_IPV4,
        Some(Family::V6) => NFPROTO_IPV6,
        None => NFPROTO_UNSPEC,
    }
}

fn nfproto_name(p: u8) -> &'static str {
    match p {
        NFPROTO_IPV4 => "inet",
        NFPROTO_IPV6 => "inet6",
        _ => "unspec",
    }
}

fn entry_data(w: &mut Writer<'_>, entry: &IpsetEntry) {
    let data = w.begin(ATTR_DATA);
    match *entry {
        IpsetEntry::Port(p) => w.be16(ATTR_PORT, p),
        IpsetEntry::Ip(ip) => w.ip(ATTR_IP, ip),
        IpsetEntry::Net(ip, len) => {
            w.ip(ATTR_IP, ip);
            w.u8(ATTR_CIDR, len);
        }
        IpsetEntry::IpPort(ip, proto, port) => {
            w.ip(ATTR_IP, ip);
            w.be16(ATTR_PORT, port);
            w.u8(ATTR_PROTO, proto);
        }
        IpsetEntry::IpPortIp(ip, proto, port, ip2) => {
            w.ip(ATTR_IP, ip);
            w.be16(ATTR_PORT, port);
            w.u8(ATTR_PROTO, proto);
            w.ip(ATTR_IP2, ip2);
        }
        IpsetEntry::IpPortNet(ip, proto, port, net, len) => {
            w.ip(ATTR_IP, ip);
            w.be16(ATTR_PORT, port);
            w.u8(ATTR_PROTO, proto);
            w.ip(ATTR_IP2, net);
            w.u8(ATTR_CIDR2, len);
        }
    }
    w.end(data);
}

/// Appends the request for `op` with sequence number `seq` (`ack`: ask for an ACK);
/// `revision` is the type revision a `Create` asks for.
pub(crate) fn encode_op(out: &mut Vec<u8>, op: &IpsetOp, seq: u32, ack: bool, revision: u8) {
    let mut w = Writer(out);
    let ack = if ack { NLM_F_ACK } else { 0 };
    let excl = |exist: bool| if exist { 0 } else { NLM_F_EXCL };
    let start = match op {
        IpsetOp::Create {
            name,
            kind,
            family,
            hashsize,
            maxelem,
            exist,
        } => {
            let start = w.ipset_header(CMD_CREATE, NLM_F_REQUEST | ack | excl(*exist), seq);
            w.string(ATTR_SETNAME, name);
            w.string(ATTR_TYPENAME, kind.name());
            w.u8(ATTR_REVISION, revision);
            let family = if kind.is_hash() { *family } else { None };
            w.u8(ATTR_FAMILY, nfproto(family));
            let data = w.begin(ATTR_DATA);
            if kind.is_hash() {
                w.be32(ATTR_HASHSIZE, *hashsize);
                w.be32(ATTR_MAXELEM, *maxelem);
            } else {
                w.be16(ATTR_PORT, 0);
                w.be16(ATTR_PORT_TO, u16::MAX);
            }
            w.end(data);
            start
        }
        IpsetOp::Add { set, entry, exist } | IpsetOp::Del { set, entry, exist } => {
            let cmd = if matches!(op, IpsetOp::Add { .. }) {
                CMD_ADD
            } else {
                CMD_DEL
            };
            let start = w.ipset_header(cmd, NLM_F_REQUEST | ack | excl(*exist), seq);
            w.string(ATTR_SETNAME, set);
            entry_data(&mut w, entry);
            start
        }
        IpsetOp::Swap { from, to } => {
            let start = w.ipset_header(CMD_SWAP, NLM_F_REQUEST | ack, seq);
            w.string(ATTR_SETNAME, from);
            w.string(ATTR_SETNAME2, to);
            start
        }
        IpsetOp::Destroy { set } | IpsetOp::Flush { set } => {
            let cmd = if matches!(op, IpsetOp::Destroy { .. }) {
                CMD_DESTROY
            } else {
                CMD_FLUSH
            };
            let start = w.ipset_header(cmd, NLM_F_REQUEST | ack, seq);
            w.string(ATTR_SETNAME, set);
            start
        }
    };
    w.finish(start);
}

/// Appends a `IPSET_CMD_TYPE` request: which revisions of `kind` for `family` the kernel has.
pub(crate) fn encode_type_query(out: &mut Vec<u8>, seq: u32, kind: SetType, family: u8) {
    let mut w = Writer(out);
    let start = w.ipset_header(CMD_TYPE, NLM_F_REQUEST | NLM_F_ACK, seq);
    w.string(ATTR_TYPENAME, kind.name());
    w.u8(ATTR_FAMILY, family);
    w.finish(start);
}

/// Appends a header-only dump of every set (what `ipset list -t` asks).
pub(crate) fn encode_list_headers(out: &mut Vec<u8>, seq: u32) {
    let mut w = Writer(out);
    let start = w.ipset_header(CMD_LIST, NLM_F_REQUEST | NLM_F_DUMP, seq);
    w.be32(ATTR_FLAGS, FLAG_LIST_HEADER);
    w.finish(start);
}

/// Appends a `IPSET_CMD_PROTOCOL` request (is the subsystem there, which versions).
pub(crate) fn encode_protocol(out: &mut Vec<u8>, seq: u32) {
    let mut w = Writer(out);
    let start = w.ipset_header(CMD_PROTOCOL, NLM_F_REQUEST | NLM_F_ACK, seq);
    w.finish(start);
}

fn find(payload: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(payload).find(|(t, _)| *t == ty).map(|(_, v)| v)
}

fn cstr(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// A set as the kernel lists it (header only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetHeader {
    /// Type name, e.g. `hash:ip,port`.
    pub kind: String,
    /// `NFPROTO_*` family (2 inet, 10 inet6, 0 for bitmap types).
    pub family: u8,
    /// Type revision.
    pub revision: u8,
    /// `maxelem` (hash types).
    pub maxelem: Option<u32>,
    /// Number of entries, when the kernel tells.
    pub elements: Option<u32>,
}

/// Decodes one message of a header dump: (set name, header).
pub(crate) fn decode_header(body: &[u8]) -> Option<(String, SetHeader)> {
    let rest = body.get(4..)?;
    let name = cstr(find(rest, ATTR_SETNAME)?);
    let data = find(rest, ATTR_DATA).unwrap_or(&[]);
    Some((
        name,
        SetHeader {
            kind: cstr(find(rest, ATTR_TYPENAME)?),
            family: *find(rest, ATTR_FAMILY)?.first()?,
            revision: find(rest, ATTR_REVISION)
                .and_then(|v| v.first().copied())
                .unwrap_or(0),
            maxelem: be32(find(data, ATTR_MAXELEM)),
            elements: be32(find(data, ATTR_ELEMENTS)),
        },
    ))
}

/// What one [`IpsetNetlink::execute`] cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecReport {
    /// Requests sent.
    pub requests: usize,
    /// `sendmsg` batches.
    pub batches: usize,
    /// Creates skipped because the set already exists with the right type.
    pub adopted: usize,
}

/// The kernel's ipsets over a `NETLINK_NETFILTER` socket.
#[derive(Debug)]
pub struct IpsetNetlink {
    conn: Conn,
    buf: Vec<u8>,
    /// Highest revision of each (type, family) the kernel has.
    revisions: HashMap<(SetType, u8), u8>,
}

/// Whether the answer to the protocol request means "no ipset here": nfnetlink answers EINVAL
/// for a subsystem it does not have (after trying to load its module); EPROTONOSUPPORT and
/// EOPNOTSUPP come from kernels without netfilter netlink.
fn unavailable(errno: i32) -> bool {
    matches!(errno, 22 | 93 | 95)
}

impl IpsetNetlink {
    /// Opens a `NETLINK_NETFILTER` socket and checks that the kernel speaks ipset (the kernel
    /// loads `ip_set` at the first request when it is a module): [`IpsetError::Unavailable`]
    /// if it does not.
    pub fn open() -> Result<Self, IpsetError> {
        let conn = Conn::open(NlFamily::Netfilter, "ipset").map_err(|e| match e {
            BackendError::Io { source, .. }
                if source.raw_os_error().is_some_and(|n| n == 93 || n == 97) =>
            {
                IpsetError::Unavailable {
                    reason: format!("no netfilter netlink: {source}"),
                }
            }
            other => IpsetError::Socket(other),
        })?;
        let mut me = Self {
            conn,
            buf: Vec::with_capacity(64 * 1024),
            revisions: HashMap::new(),
        };
        let seq = me.conn.next_seq();
        me.buf.clear();
        encode_protocol(&mut me.buf, seq);
        let buf = std::mem::take(&mut me.buf);
        let r = me.conn.request(&buf, seq, |_| Ok(()));
        me.buf = buf;
        match r {
            Ok(()) => Ok(me),
            Err(BackendError::Kernel { errno, .. }) if unavailable(errno) => {
                Err(IpsetError::Unavailable {
                    reason: format!(
                        "protocol request refused: {}",
                        std::io::Error::from_raw_os_error(errno)
                    ),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Socket call counters so far.
    pub fn socket_stats(&self) -> SocketStats {
        self.conn.stats()
    }

    /// Every set in the kernel with its header (type, family, `maxelem`), by name: one dump.
    pub fn list_headers(&mut self) -> Result<BTreeMap<String, SetHeader>, IpsetError> {
        let seq = self.conn.next_seq();
        self.buf.clear();
        encode_list_headers(&mut self.buf, seq);
        let buf = std::mem::take(&mut self.buf);
        let mut sets = BTreeMap::new();
        let r = self.conn.request(&buf, seq, |m: Message<'_>| {
            // A set's header may come in several messages; the first with a type wins.
            if let Some((name, header)) = decode_header(m.body) {
                let e = sets.entry(name).or_insert(header.clone());
                if e.maxelem.is_none() {
                    e.maxelem = header.maxelem;
                }
                if e.elements.is_none() {
                    e.elements = header.elements;
                }
            }
            Ok(())
        });
        self.buf = buf;
        r?;
        Ok(sets)
    }

    /// The highest revision of `kind` for `family` the kernel has (cached).
    fn revision(&mut self, kind: SetType, family: u8, set: &str) -> Result<u8, IpsetError> {
        if let Some(r) = self.revisions.get(&(kind, family)) {
            return Ok(*r);
        }
        let seq = self.conn.next_seq();
        self.buf.clear();
        encode_type_query(&mut self.buf, seq, kind, family);
        let buf = std::mem::take(&mut self.buf);
        let mut rev = None;
        let r = self.conn.request(&buf, seq, |m| {
            if let Some(v) = m.body.get(4..).and_then(|a| find(a, ATTR_REVISION)) {
                rev = v.first().copied();
            }
            Ok(())
        });
        self.buf = buf;
        match r {
            Ok(()) => {}
            Err(BackendError::Kernel { errno, .. }) if errno == 4098 || errno == 2 => {
                return Err(IpsetError::NoType {
                    kind: kind.name(),
                    family: nfproto_name(family),
                    set: set.to_owned(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        let rev = rev.ok_or_else(|| {
            IpsetError::Socket(BackendError::Malformed {
                what: format!("ipset type query for {}", kind.name()),
                reason: "no revision in the reply".into(),
            })
        })?;
        self.revisions.insert((kind, family), rev);
        Ok(rev)
    }

    /// Applies `ops` in order, [`BATCH`] requests per `sendmsg`. A `create -exist` of a set
    /// that already exists with the same type and family is skipped (its parameters may differ,
    /// e.g. a set made by kube-proxy or an older run: the swap that follows replaces them); one
    /// of another type is [`IpsetError::WrongType`]. A leftover temporary set (created without
    /// `-exist` below) is destroyed first. On the first failure nothing after it is sent except
    /// the destruction of the temporary sets, and the error names the operation.
    pub fn execute(&mut self, ops: &[IpsetOp]) -> Result<ExecReport, IpsetError> {
        let mut report = ExecReport::default();
        let needs_listing = ops.iter().any(|o| matches!(o, IpsetOp::Create { .. }));
        let existing = if needs_listing {
            self.list_headers()?
        } else {
            BTreeMap::new()
        };
        let mut temporaries: Vec<&str> = Vec::new();
        let mut plan: Vec<(&IpsetOp, u8)> = Vec::with_capacity(ops.len());
        for op in ops {
            if let IpsetOp::Create {
                name,
                kind,
                family,
                exist,
                ..
            } = op
            {
                let fam = if kind.is_hash() {
                    nfproto(*family)
                } else {
                    NFPROTO_UNSPEC
                };
                if let Some(h) = existing.get(&**name) {
                    if *exist {
                        let same = h.kind == kind.name() && h.family == fam;
                        if !same {
                            return Err(IpsetError::WrongType {
                                set: name.to_string(),
                                found: format!("{} family {}", h.kind, nfproto_name(h.family)),
                                wanted: format!("{} family {}", kind.name(), nfproto_name(fam)),
                            });
                        }
                        report.adopted += 1;
                        continue;
                    } else if !temporaries.contains(&&**name) {
                        // Left by an interrupted run.
                        self.destroy_quietly(name);
                    }
                }
                if !*exist && !temporaries.contains(&&**name) {
                    temporaries.push(name);
                }
                let rev = self.revision(*kind, fam, name)?;
                plan.push((op, rev));
            } else {
                plan.push((op, 0));
            }
        }
        let mut at = 0;
        while at < plan.len() {
            // A batch ends before a swap and with it: the swap goes alone once the entries are in.
            let mut end = at;
            while end < plan.len() && end - at < BATCH {
                let is_swap = matches!(plan[end].0, IpsetOp::Swap { .. });
                if is_swap && end > at {
                    break;
                }
                end += 1;
                if is_swap {
                    break;
                }
            }
            let batch = &plan[at..end];
            self.buf.clear();
            let first = self.conn.next_seq();
            let mut last = first;
            for (i, (op, rev)) in batch.iter().enumerate() {
                let seq = if i == 0 { first } else { self.conn.next_seq() };
                last = seq;
                encode_op(&mut self.buf, op, seq, i + 1 == batch.len(), *rev);
            }
            let buf = std::mem::take(&mut self.buf);
            let r = self.conn.send_batch(&buf, first, last);
            self.buf = buf;
            report.batches += 1;
            report.requests += batch.len();
            let errors = r?;
            if let Some((seq, errno)) = errors.into_iter().min_by_key(|(s, _)| *s) {
                let op = batch[seq.wrapping_sub(first) as usize].0;
                for t in &temporaries {
                    self.destroy_quietly(t);
                }
                return Err(IpsetError::Kernel {
                    op: op.to_string(),
                    errno,
                    reason: describe(errno, op),
                });
            }
            at = end;
        }
        Ok(report)
    }

    /// Destroys `set`, ignoring errors (cleanup of a temporary set).
    fn destroy_quietly(&mut self, set: &str) {
        let op = IpsetOp::Destroy { set: set.into() };
        let seq = self.conn.next_seq();
        self.buf.clear();
        encode_op(&mut self.buf, &op, seq, true, 0);
        let buf = std::mem::take(&mut self.buf);
        let _ = self.conn.send_batch(&buf, seq, seq);
        self.buf = buf;
    }
}

#[cfg(test)]
#[path = "ipset_tests.rs"]
mod tests;
