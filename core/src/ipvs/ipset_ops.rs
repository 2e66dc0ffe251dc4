//! ipset changes as typed operations, the one source of both ways to apply them: the
//! `ipset restore` text ([`render_text`]) and the netlink requests
//! ([`crate::ipvs::netlink::ipset::IpsetNetlink::execute`]); [`host`](super::host) builds them.
//!
//! The sets' entries are kept as text (`10.96.0.1,tcp:80`) while they are derived and counted;
//! they are parsed once, here, into [`IpsetEntry`] when operations are built, and their
//! [`Display`](std::fmt::Display) gives the same text back.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::ipvs::table::Family;

/// The ipset types kube-proxy's IPVS mode uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetType {
    /// `hash:ip`.
    HashIp,
    /// `hash:ip,port`.
    HashIpPort,
    /// `hash:ip,port,ip`.
    HashIpPortIp,
    /// `hash:ip,port,net`.
    HashIpPortNet,
    /// `hash:net`.
    HashNet,
    /// `bitmap:port` (range 0-65535).
    BitmapPort,
}

impl SetType {
    /// The type's name as `ipset` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::HashNet => "hash:net",
            SetType::BitmapPort => "bitmap:port",
        }
    }

    /// The type named `name`, if it is one of these.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            SetType::HashIp,
            SetType::HashIpPort,
            SetType::HashIpPortIp,
            SetType::HashIpPortNet,
            SetType::HashNet,
            SetType::BitmapPort,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }

    /// Whether the type is a hash (has a family, `hashsize` and `maxelem`).
    pub fn is_hash(self) -> bool {
        self != SetType::BitmapPort
    }
}

/// One entry of a set, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpsetEntry {
    /// `bitmap:port`: a port.
    Port(u16),
    /// `hash:ip`: an address.
    Ip(IpAddr),
    /// `hash:net`: a network.
    Net(IpAddr, u8),
    /// `hash:ip,port`: address, IP protocol number, port.
    IpPort(IpAddr, u8, u16),
    /// `hash:ip,port,ip`: address, protocol, port, second address.
    IpPortIp(IpAddr, u8, u16, IpAddr),
    /// `hash:ip,port,net`: address, protocol, port, network and prefix length.
    IpPortNet(IpAddr, u8, u16, IpAddr, u8),
}

/// An entry that does not parse as its set's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ipset entry {entry:?} of set {set} ({kind}): {reason}")]
pub struct EntryError {
    /// The set.
    pub set: String,
    /// Its type.
    pub kind: &'static str,
    /// The entry text.
    pub entry: String,
    /// What is wrong.
    pub reason: String,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

fn proto_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(TCP),
        "udp" => Some(UDP),
        "sctp" => Some(SCTP),
        _ => None,
    }
}

fn proto_name(n: u8) -> &'static str {
    match n {
        TCP => "tcp",
        UDP => "udp",
        SCTP => "sctp",
        _ => "unknown",
    }
}

fn parse_net(text: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not address/prefix"))?;
    let ip: IpAddr = ip.parse().map_err(|e| format!("address {ip:?}: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("prefix {len:?}: {e}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix /{len} is longer than {max}"));
    }
    Ok((ip, len))
}

fn parse_ip_port(text: &str) -> Result<(IpAddr, u8, u16), String> {
    let (ip, rest) = text
        .split_once(',')
        .ok_or_else(|| format!("{text:?} is not ip,proto:port"))?;
    let ip: IpAddr = ip.parse().map_err(|e| format!("address {ip:?}: {e}"))?;
    let (proto, port) = rest
        .split_once(':')
        .ok_or_else(|| format!("{rest:?} is not proto:port"))?;
    let proto = proto_number(proto).ok_or_else(|| format!("unknown protocol {proto:?}"))?;
    let port: u16 = port.parse().map_err(|e| format!("port {port:?}: {e}"))?;
    Ok((ip, proto, port))
}

impl IpsetEntry {
    /// Parses `text` as an entry of a set of type `kind`.
    pub fn parse(kind: SetType, text: &str) -> Result<Self, String> {
        let addr = |s: &str| -> Result<IpAddr, String> {
            s.parse().map_err(|e| format!("address {s:?}: {e}"))
        };
        let same_family = |a: IpAddr, b: IpAddr| {
            if a.is_ipv4() == b.is_ipv4() {
                Ok(())
            } else {
                Err(format!("{a} and {b} are of different families"))
            }
        };
        match kind {
            SetType::BitmapPort => text
                .parse()
                .map(IpsetEntry::Port)
                .map_err(|e| format!("port {text:?}: {e}")),
            SetType::HashIp => addr(text).map(IpsetEntry::Ip),
            SetType::HashNet => parse_net(text).map(|(ip, len)| IpsetEntry::Net(ip, len)),
            SetType::HashIpPort => {
                parse_ip_port(text).map(|(ip, proto, port)| IpsetEntry::IpPort(ip, proto, port))
            }
            SetType::HashIpPortIp | SetType::HashIpPortNet => {
                let (head, last) = text
                    .rsplit_once(',')
                    .ok_or_else(|| format!("{text:?} has no third part"))?;
                let (ip, proto, port) = parse_ip_port(head)?;
                if kind == SetType::HashIpPortIp {
                    let ip2 = addr(last)?;
                    same_family(ip, ip2)?;
                    Ok(IpsetEntry::IpPortIp(ip, proto, port, ip2))
                } else {
                    let (net, len) = parse_net(last)?;
                    same_family(ip, net)?;
                    Ok(IpsetEntry::IpPortNet(ip, proto, port, net, len))
                }
            }
        }
    }
}

impl fmt::Display for IpsetEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpsetEntry::Port(p) => write!(f, "{p}"),
            IpsetEntry::Ip(ip) => write!(f, "{ip}"),
            IpsetEntry::Net(ip, len) => write!(f, "{ip}/{len}"),
            IpsetEntry::IpPort(ip, proto, port) => write!(f, "{ip},{}:{port}", proto_name(proto)),
            IpsetEntry::IpPortIp(ip, proto, port, ip2) => {
                write!(f, "{ip},{}:{port},{ip2}", proto_name(proto))
            }
            IpsetEntry::IpPortNet(ip, proto, port, net, len) => {
                write!(f, "{ip},{}:{port},{net}/{len}", proto_name(proto))
            }
        }
    }
}

/// A set's name, shared by the operations on it.
pub type SetName = Arc<str>;

/// One ipset operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpsetOp {
    /// Create a set; with `exist`, an identical existing set is not an error.
    Create {
        /// Set name.
        name: SetName,
        /// Set type.
        kind: SetType,
        /// Family of a hash set (`None` for `bitmap:port`).
        family: Option<Family>,
        /// Initial hash size (hash sets).
        hashsize: u32,
        /// Most entries (hash sets).
        maxelem: u32,
        /// `-exist`.
        exist: bool,
    },
    /// Add an entry; with `exist`, an entry already present is not an error.
    Add {
        /// Set name.
        set: SetName,
        /// The entry.
        entry: IpsetEntry,
        /// `-exist`.
        exist: bool,
    },
    /// Delete an entry; with `exist`, an absent entry is not an error.
    Del {
        /// Set name.
        set: SetName,
        /// The entry.
        entry: IpsetEntry,
        /// `-exist`.
        exist: bool,
    },
    /// Exchange the contents (and parameters) of two sets of the same type.
    Swap {
        /// First set.
        from: SetName,
        /// Second set.
        to: SetName,
    },
    /// Destroy a set.
    Destroy {
        /// Set name.
        set: SetName,
    },
    /// Remove every entry of a set.
    Flush {
        /// Set name.
        set: SetName,
    },
}

impl IpsetOp {
    /// The set the operation works on (the first one, for a swap).
    pub fn set(&self) -> &str {
        match self {
            IpsetOp::Create { name, .. } => name,
            IpsetOp::Add { set, .. } | IpsetOp::Del { set, .. } => set,
            IpsetOp::Swap { from, .. } => from,
            IpsetOp::Destroy { set } | IpsetOp::Flush { set } => set,
        }
    }
}

fn exist_flag(exist: bool) -> &'static str {
    if exist { " -exist" } else { "" }
}

impl fmt::Display for IpsetOp {
    /// The operation as one `ipset restore` line (without the newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpsetOp::Create {
                name,
                kind,
                family,
                hashsize,
                maxelem,
                exist,
            } => {
                write!(f, "create {name} {}", kind.name())?;
                match family {
                    Some(fam) if kind.is_hash() => {
                        let fam = match fam {
                            Family::V4 => "inet",
                            Family::V6 => "inet6",
                        };
                        write!(f, " family {fam} hashsize {hashsize} maxelem {maxelem}")?;
                    }
                    _ => write!(f, " range 0-65535")?,
                }
                f.write_str(exist_flag(*exist))
            }
            IpsetOp::Add { set, entry, exist } => {
                write!(f, "add {set} {entry}{}", exist_flag(*exist))
            }
            IpsetOp::Del { set, entry, exist } => {
                write!(f, "del {set} {entry}{}", exist_flag(*exist))
            }
            IpsetOp::Swap { from, to } => write!(f, "swap {from} {to}"),
            IpsetOp::Destroy { set } => write!(f, "destroy {set}"),
            IpsetOp::Flush { set } => write!(f, "flush {set}"),
        }
    }
}

/// The operations as an `ipset restore` script, one line each.
pub fn render_text(ops: &[IpsetOp]) -> String {
    use fmt::Write as _;
    let mut out = String::new();
    for op in ops {
        let _ = writeln!(out, "{op}");
    }
    out
}

/// The typed type of a set whose type is given by name.
pub(crate) fn set_type(set: &str, kind: &'static str) -> Result<SetType, EntryError> {
    SetType::from_name(kind).ok_or_else(|| EntryError {
        set: set.to_owned(),
        kind,
        entry: String::new(),
        reason: format!("unsupported set type {kind}"),
    })
}

/// Parses `text` as an entry of set `set` of type `kind`, naming both on failure.
pub(crate) fn entry_of(
    set: &str,
    kind: &'static str,
    text: &str,
) -> Result<IpsetEntry, EntryError> {
    let t = set_type(set, kind)?;
    IpsetEntry::parse(t, text).map_err(|reason| EntryError {
        set: set.to_owned(),
        kind,
        entry: text.to_owned(),
        reason,
    })
}
