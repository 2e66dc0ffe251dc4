//! The kernel's text listing of the IPVS table, `/proc/net/ip_vs`: every virtual server with
//! its real servers in one file of the calling thread's network namespace.
//!
//! Netlink can list real servers only one virtual server per dump request (a `sendmsg` and a
//! `recvmmsg` each), which for 10,000 virtual servers is 20,000 system calls, or 626
//! `io_uring_enter` calls where the batched dumps of [`super::dump_ring`] run. The text listing
//! carries real servers, forwarding methods, weights and connection counts for the whole table
//! in a few thousand `read`s of a page each — but the kernel finds its place again by walking
//! the table from the start at every read, so its cost grows with the square of the table; at
//! 10,000 virtual servers it is no faster than netlink one dump at a time, and slower than the
//! batched dumps, so netlink stays the default
//! ([`super::ipvs::NetlinkIpvs::set_text_listing`]). It lacks service flags other than
//! persistence, so service parameters come from the netlink dump either way.
//!
//! Format (`ip_vs_info_seq_show` in `net/netfilter/ipvs/ip_vs_ctl.c`, unchanged since 2.6):
//!
//! ```text
//! IP Virtual Server version 1.2.1 (size=4096)
//! Prot LocalAddress:Port Scheduler Flags
//!   -> RemoteAddress:Port Forward Weight ActiveConn InActConn
//! TCP  0A600001:0050 rr
//!   -> 0AF40002:1F90      Masq    1      0          0
//! UDP  [fd00:0010:0096:0000:0000:0000:0000:000a]:0035 rr
//!   -> [fd00:0010:0244:0000:0000:0000:0000:0005]:0035      Masq    1      0          0
//! FWM  00000001 rr
//! ```

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ipvs::table::{DestConns, DestEntry, DestId, DestParams, Forward, ServiceId, Stats};
use crate::model::Protocol;

/// Where the listing of the calling thread's network namespace is.
pub(crate) const IP_VS_LISTING: &str = "/proc/thread-self/net/ip_vs";

/// A line of the listing that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("/proc/net/ip_vs line {line}: {reason}: {text:?}")]
pub(crate) struct ListingError {
    /// 1-based line number.
    pub line: usize,
    /// The line.
    pub text: String,
    /// What was wrong.
    pub reason: &'static str,
}

/// `HEX:PORT` (IPv4, 8 hex digits) or `[IPv6]:PORT`; the port is 4 hex digits.
fn socket(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.rsplit_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let addr = if let Some(v6) = addr.strip_prefix('[') {
        IpAddr::V6(v6.strip_suffix(']')?.parse::<Ipv6Addr>().ok()?)
    } else {
        if addr.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(addr, 16).ok()?))
    };
    Some((addr, port))
}

fn forward(name: &str) -> Option<Forward> {
    Some(match name {
        "Masq" => Forward::Masq,
        "Local" => Forward::Local,
        "Tunnel" => Forward::Tunnel,
        "Route" => Forward::Route,
        "Bypass" => Forward::Bypass,
        _ => return None,
    })
}

/// What one line of the listing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// A virtual server we represent.
    Service(ServiceId),
    /// A virtual server we do not represent (fwmark, another protocol): its real servers are
    /// skipped.
    Foreign,
    /// A real server of the virtual server above.
    Dest(DestEntry),
    /// A header line.
    Header,
}

fn parse_line(line: &str) -> Result<Line, &'static str> {
    if let Some(rest) = line.strip_prefix("  -> ") {
        if rest.starts_with("RemoteAddress") {
            return Ok(Line::Header);
        }
        let mut f = rest.split_ascii_whitespace();
        let (addr, port) = f.next().and_then(socket).ok_or("bad real server address")?;
        let fwd = f.next().and_then(forward).ok_or("bad forwarding method")?;
        let mut num = || f.next().and_then(|n| n.parse::<i64>().ok());
        let weight = num().ok_or("bad weight")?;
        let active = num().ok_or("bad active connection count")?;
        let inactive = num().ok_or("bad inactive connection count")?;
        let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        return Ok(Line::Dest(DestEntry {
            id: DestId::new(addr, port),
            params: DestParams {
                weight: clamp(weight),
                forward: fwd,
            },
            conns: DestConns {
                active: clamp(active),
                inactive: clamp(inactive),
                persistent: 0,
            },
            stats: Stats::default(),
        }));
    }
    if line.starts_with("IP Virtual Server") || line.starts_with("Prot ") {
        return Ok(Line::Header);
    }
    let mut f = line.split_ascii_whitespace();
    let protocol = match f.next() {
        Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        Some(_) => return Ok(Line::Foreign),
        None => return Err("empty line"),
    };
    let (addr, port) = f
        .next()
        .and_then(socket)
        .ok_or("bad virtual server address")?;
    Ok(Line::Service(ServiceId::new(protocol, addr, port)))
}

/// Reads a listing and calls `each` with every virtual server of ours (TCP/UDP/SCTP, not
/// fwmark) and its real servers, in the kernel's order. The header lines are recognised by
/// their text, so a listing without them parses too.
pub(crate) fn read_listing(
    source: impl Read,
    mut each: impl FnMut(ServiceId, &[DestEntry]),
) -> Result<(), ListingError> {
    let mut reader = BufReader::with_capacity(64 * 1024, source);
    let mut raw = Vec::with_capacity(256);
    let mut current: Option<ServiceId> = None;
    let mut foreign = false;
    let mut dests: Vec<DestEntry> = Vec::new();
    let mut number = 0;
    loop {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|_| ListingError {
                line: number + 1,
                text: String::new(),
                reason: "read failed",
            })?;
        if n == 0 {
            break;
        }
        number += 1;
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let fail = |reason| ListingError {
            line: number,
            text: text.to_owned(),
            reason,
        };
        match parse_line(text).map_err(fail)? {
            Line::Header => {}
            Line::Foreign => {
                if let Some(id) = current.take() {
                    each(id, &dests);
                }
                dests.clear();
                foreign = true;
            }
            Line::Service(id) => {
                if let Some(prev) = current.replace(id) {
                    each(prev, &dests);
                }
                dests.clear();
                foreign = false;
            }
            Line::Dest(d) => {
                if current.is_some() {
                    dests.push(d);
                } else if !foreign {
                    return Err(fail("real server before any virtual server"));
                }
            }
        }
    }
    if let Some(id) = current {
        each(id, &dests);
    }
    Ok(())
}

/// Opens the listing of the calling thread's network namespace ([`IP_VS_LISTING`]).
pub(crate) fn open_listing() -> std::io::Result<std::fs::File> {
    std::fs::File::open(IP_VS_LISTING)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A600001:0050 rr 
  -> 0AF40002:1F90      Masq    1      0          0         
  -> 0AF40003:1F90      Masq    0      3          12        
FWM  00000001 rr 
  -> 0AF40009:0050      Route   1      0          0         
UDP  [fd00:0010:0096:0000:0000:0000:0000:000a]:0035 sh persistent 180 FFFFFFFF
  -> [fd00:0010:0244:0000:0000:0000:0000:0005]:0035      Masq    1      0          0         
TCP  0A600002:01BB mh 
";

    fn collect(text: &str) -> Result<Vec<(ServiceId, Vec<DestEntry>)>, ListingError> {
        let mut out = Vec::new();
        read_listing(text.as_bytes(), |id, d| out.push((id, d.to_vec())))?;
        Ok(out)
    }

    #[test]
    fn reads_services_and_real_servers_skipping_fwmark_ones() {
        let got = collect(LISTING).unwrap();
        let ids: Vec<String> = got.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "TCP 10.96.0.1:80",
                "UDP [fd00:10:96::a]:53",
                "TCP 10.96.0.2:443"
            ]
        );
        let first: Vec<(String, u32, u32, u32)> = got[0]
            .1
            .iter()
            .map(|d| {
                (
                    d.id.to_string(),
                    d.params.weight,
                    d.conns.active,
                    d.conns.inactive,
                )
            })
            .collect();
        assert_eq!(
            first,
            [
                ("10.244.0.2:8080".to_string(), 1, 0, 0),
                ("10.244.0.3:8080".to_string(), 0, 3, 12)
            ]
        );
        assert!(got[0].1.iter().all(|d| d.params.forward == Forward::Masq));
        assert_eq!(got[1].1.len(), 1);
        assert_eq!(got[1].1[0].id.to_string(), "[fd00:10:244::5]:53");
        assert!(got[2].1.is_empty());
    }

    #[test]
    fn a_listing_split_across_reads_parses_the_same() {
        // One byte per read, as a worst case of the kernel's page-sized reads.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let mut out = Vec::new();
        read_listing(Trickle(LISTING.as_bytes()), |id, d| {
            out.push((id, d.to_vec()))
        })
        .unwrap();
        assert_eq!(out, collect(LISTING).unwrap());
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let err = collect("TCP  0A600001:0050 rr\n  -> 0AF40002:1F90 Masq x 0 0\n").unwrap_err();
        assert_eq!((err.line, err.reason), (2, "bad weight"));
        let err = collect("TCP  nonsense rr\n").unwrap_err();
        assert_eq!((err.line, err.reason), (1, "bad virtual server address"));
        let err = collect("  -> 0AF40002:1F90 Masq 1 0 0\n").unwrap_err();
        assert_eq!(err.reason, "real server before any virtual server");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
