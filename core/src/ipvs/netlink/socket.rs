//! A netlink socket that sends many requests per `sendmsg` and reads replies in bulk.
//!
//! Requests are encoded back to back into one buffer; only the last one asks for an ACK, so a
//! batch costs one `send` and (when nothing fails) one `recv`: the kernel still answers every
//! failing request with an error message carrying its sequence number, which is how failures
//! are attributed to operations.

use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::ipvs::backend::BackendError;

/// `NLMSG_ERROR`.
pub(crate) const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub(crate) const NLMSG_DONE: u16 = 3;
/// `NLMSG_OVERRUN`.
pub(crate) const NLMSG_OVERRUN: u16 = 4;
/// Size of `struct nlmsghdr`.
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// Receive buffer: large enough for any single netlink datagram the kernel builds for IPVS and
/// address dumps (it sizes dump datagrams to at most 32 KiB; a bigger one is reported as an
/// error, never truncated silently).
const RECV_BUF: usize = 64 * 1024;

/// One received netlink message (header fields plus body after the header).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags` (only the tests read it: the receive path needs kind, sequence and body).
    #[cfg(test)]
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub body: &'a [u8],
}

/// Splits a datagram into netlink messages.
pub(crate) fn messages(buf: &[u8]) -> Result<Vec<Message<'_>>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(format!(
                "message length {len} at offset {off} of {}",
                buf.len()
            ));
        }
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        #[cfg(test)]
        let flags = u16::from_ne_bytes([buf[off + 6], buf[off + 7]]);
        let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap_or_default());
        out.push(Message {
            kind,
            #[cfg(test)]
            flags,
            seq,
            body: &buf[off + NLMSG_HDRLEN..off + len],
        });
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// The errno of an `NLMSG_ERROR` body (0 for an ACK), as a positive number.
pub(crate) fn error_code(body: &[u8]) -> i32 {
    body.get(0..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .unwrap_or(0)
        .saturating_neg()
}

/// Counters of socket use, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// `send` calls.
    pub sends: u64,
    /// `recv` calls.
    pub recvs: u64,
}

/// A blocking netlink socket with sequence numbers and a reusable receive buffer.
pub(crate) struct Conn {
    sock: NlSocket,
    seq: u32,
    rbuf: Vec<u8>,
    stats: SocketStats,
    what: &'static str,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("what", &self.what)
            .field("seq", &self.seq)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Conn {
    /// Opens and binds a socket of `proto`; `what` names it in errors.
    pub(crate) fn open(proto: NlFamily, what: &'static str) -> Result<Self, BackendError> {
        let sock =
            NlSocket::connect(proto, None, Groups::empty()).map_err(|source| BackendError::Io {
                what: format!("opening {what} netlink socket"),
                source,
            })?;
        // Best effort: bigger buffers absorb error replies of large batches.
        let _ = sock.set_recv_buffer_size(4 * 1024 * 1024);
        Ok(Self {
            sock,
            seq: 0,
            // Two datagrams per `recvmmsg` (see `recv_two`).
            rbuf: vec![0; 2 * RECV_BUF],
            stats: SocketStats::default(),
            what,
        })
    }

    /// The next sequence number.
    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Socket call counters so far.
    pub(crate) fn stats(&self) -> SocketStats {
        self.stats
    }

    fn send(&mut self, buf: &[u8]) -> Result<(), BackendError> {
        self.stats.sends += 1;
        let n = self
            .sock
            .send(buf, Msg::empty())
            .map_err(|source| BackendError::Io {
                what: format!("sending to {} netlink", self.what),
                source,
            })?;
        if n != buf.len() {
            return Err(BackendError::Malformed {
                what: self.what.into(),
                reason: format!("short send: {n} of {} bytes", buf.len()),
            });
        }
        Ok(())
    }

    /// Receives one datagram into the internal buffer; returns its length.
    fn recv(&mut self) -> Result<usize, BackendError> {
        self.stats.recvs += 1;
        let (n, _) = self
            .sock
            .recv(&mut self.rbuf[..RECV_BUF], Msg::TRUNC)
            .map_err(|source| BackendError::Io {
                what: format!("receiving from {} netlink", self.what),
                source,
            })?;
        if n > RECV_BUF {
            return Err(BackendError::Malformed {
                what: self.what.into(),
                reason: format!("datagram of {n} bytes exceeds the {} byte buffer", RECV_BUF),
            });
        }
        Ok(n)
    }

    /// Receives one or two datagrams with one `recvmmsg` into the two halves of the internal
    /// buffer; returns their lengths (the second 0 when only one was waiting). A dump's last
    /// datagram of data and its `NLMSG_DONE` arrive together this way: the kernel queues
    /// `DONE` while the data is being read, so a one-datagram dump costs one call instead of
    /// two — 10,000 calls fewer when reading the real servers of 10,000 virtual servers.
    fn recv_two(&mut self) -> Result<[usize; 2], BackendError> {
        use nix::sys::socket::{MsgFlags, MultiHeaders, recvmmsg};
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;
        self.stats.recvs += 1;
        let fd = self.sock.as_raw_fd();
        let (first, second) = self.rbuf.split_at_mut(RECV_BUF);
        let mut slices = [[IoSliceMut::new(first)], [IoSliceMut::new(second)]];
        let mut headers = MultiHeaders::<()>::preallocate(2, None);
        let what = self.what;
        let received = recvmmsg(
            fd,
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE | MsgFlags::MSG_TRUNC,
            None,
        )
        .map_err(|errno| BackendError::Io {
            what: format!("receiving from {what} netlink"),
            source: std::io::Error::from(errno),
        })?;
        let mut lens = [0; 2];
        for (i, msg) in received.enumerate().take(2) {
            if msg.bytes > RECV_BUF || msg.flags.contains(MsgFlags::MSG_TRUNC) {
                return Err(BackendError::Malformed {
                    what: what.into(),
                    reason: format!(
                        "datagram of {} bytes exceeds the {RECV_BUF} byte buffer",
                        msg.bytes
                    ),
                });
            }
            lens[i] = msg.bytes;
        }
        Ok(lens)
    }

    /// Sends a batch of requests with sequence numbers `first..=last` (only `last` asks for an
    /// ACK) and returns the errors the kernel reported, as (sequence, positive errno).
    pub(crate) fn send_batch(
        &mut self,
        buf: &[u8],
        first: u32,
        last: u32,
    ) -> Result<Vec<(u32, i32)>, BackendError> {
        self.send(buf)?;
        let mut errors = Vec::new();
        loop {
            let n = self.recv()?;
            let msgs = messages(&self.rbuf[..n]).map_err(|reason| BackendError::Malformed {
                what: self.what.into(),
                reason,
            })?;
            let mut done = false;
            for m in msgs {
                if m.kind == NLMSG_OVERRUN {
                    return Err(BackendError::Malformed {
                        what: self.what.into(),
                        reason: "netlink overrun".into(),
                    });
                }
                if m.kind != NLMSG_ERROR || m.seq < first || m.seq > last {
                    continue;
                }
                let errno = error_code(m.body);
                if errno != 0 {
                    errors.push((m.seq, errno));
                }
                if m.seq == last {
                    done = true;
                }
            }
            if done {
                return Ok(errors);
            }
        }
    }

    /// Sends one request (a dump, or a request with `NLM_F_ACK`) with sequence number `seq` and
    /// calls `on_message` with every reply message until `NLMSG_DONE` or the ACK.
    pub(crate) fn request(
        &mut self,
        buf: &[u8],
        seq: u32,
        mut on_message: impl FnMut(Message<'_>) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        self.send(buf)?;
        loop {
            let lens = self.recv_two()?;
            let what = self.what;
            for (half, n) in lens.into_iter().enumerate() {
                let start = half * RECV_BUF;
                let msgs = messages(&self.rbuf[start..start + n]).map_err(|reason| {
                    BackendError::Malformed {
                        what: what.into(),
                        reason,
                    }
                })?;
                for m in msgs {
                    if m.seq != seq {
                        continue;
                    }
                    match m.kind {
                        NLMSG_DONE => return Ok(()),
                        NLMSG_ERROR => {
                            let errno = error_code(m.body);
                            if errno == 0 {
                                return Ok(());
                            }
                            return Err(BackendError::Kernel {
                                what: what.into(),
                                errno,
                            });
                        }
                        NLMSG_OVERRUN => {
                            return Err(BackendError::Malformed {
                                what: what.into(),
                                reason: "netlink overrun".into(),
                            });
                        }
                        _ => on_message(m)?,
                    }
                }
            }
        }
    }
}
