//! Real-server dumps of many virtual servers at once, through one `io_uring` and [`SOCKETS`]
//! netlink sockets.
//!
//! Netlink lists real servers one virtual server per dump request, and a socket runs one dump
//! at a time, so reading the table of 10,000 virtual servers one dump after the other costs
//! 20,000 system calls (a `sendmsg` and a `recvmmsg` each; 0.8 s where a call costs ~42 µs, as
//! in the user-mode-linux guest of the benchmarks). Here each of [`SOCKETS`] sockets runs one
//! dump: the requests and the first receive of every socket go in one submission, the second
//! receive of the sockets whose dump was not complete yet (its `NLMSG_DONE`, queued by the
//! kernel when the first datagram was read) in a second, and a dump still longer than that
//! (hundreds of real servers) is read on the plain way on its socket. Two `io_uring_enter` per
//! 32 virtual servers, and the replies are decoded exactly as
//! [`NetlinkIpvs`](super::ipvs::NetlinkIpvs)'s one-at-a-time dumps decode them.
// io_uring operations carry raw pointers the kernel writes through after the call returns:
// pushing them is `unsafe`. Every buffer an operation points at belongs to the
// [`DestDumpRing`] and is leaked, not freed, if a batch cannot be collected.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

use io_uring::{IoUring, opcode, squeue, types};
use neli::consts::socket::NlFamily;
use neli::socket::NlSocket;
use neli::utils::Groups;

use super::ipvs::{decode_dest, encode_get_dests};
use super::socket::{NLMSG_DONE, NLMSG_ERROR, NLMSG_OVERRUN, error_code, messages};
use crate::ipvs::backend::BackendError;
use crate::ipvs::table::{DestEntry, ServiceEntry};

/// Dumps in flight at once, one socket each.
pub(crate) const SOCKETS: usize = 32;
/// Receive buffer per socket: the largest datagram the kernel builds for a dump.
const DUMP_BUF: usize = 32 * 1024;

/// The sockets, ring and buffers of batched real-server dumps. Opened in the network namespace
/// of the thread that creates it, like the backend's own socket.
pub(crate) struct DestDumpRing {
    ring: IoUring,
    socks: Vec<NlSocket>,
    seq: u32,
    /// `SOCKETS` receive buffers of `DUMP_BUF` bytes, back to back.
    bufs: Vec<u8>,
    /// One encoded request per socket.
    reqs: Vec<Vec<u8>>,
}

impl std::fmt::Debug for DestDumpRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestDumpRing")
            .field("sockets", &self.socks.len())
            .finish()
    }
}

/// Why batched dumps stopped before reporting every virtual server.
#[derive(Debug)]
pub(crate) enum DumpStop {
    /// The ring or a socket failed: the virtual servers from index `done` on were not
    /// reported, and this ring is not to be used again.
    Ring { done: usize, error: std::io::Error },
    /// The kernel refused a dump for another reason than the virtual server being gone:
    /// the same error the one-at-a-time dump gives.
    Backend(BackendError),
}

/// Where one socket's dump stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// More datagrams to come.
    More,
    /// `NLMSG_DONE` seen: every real server is in.
    Done,
    /// The virtual server went away between the service dump and this one.
    Gone,
}

enum ChunkStop {
    Ring(std::io::Error),
    Backend(BackendError),
}

impl DestDumpRing {
    /// A ring and [`SOCKETS`] generic netlink sockets.
    pub(crate) fn new() -> std::io::Result<Self> {
        let ring = IoUring::new((2 * SOCKETS) as u32)?;
        let socks = (0..SOCKETS)
            .map(|_| NlSocket::connect(NlFamily::Generic, None, Groups::empty()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DestDumpRing {
            ring,
            socks,
            seq: 0,
            bufs: vec![0; SOCKETS * DUMP_BUF],
            reqs: (0..SOCKETS).map(|_| Vec::with_capacity(128)).collect(),
        })
    }

    /// Dumps the real servers of every one of `services` (IPVS generic netlink family
    /// `family`) and calls `each` with them, in order; a virtual server deleted meanwhile is
    /// skipped, as the one-at-a-time dumps skip it.
    pub(crate) fn dump_all(
        &mut self,
        family: u16,
        services: &[ServiceEntry],
        each: &mut dyn FnMut(ServiceEntry, &[DestEntry]),
    ) -> Result<(), DumpStop> {
        for (i, chunk) in services.chunks(SOCKETS).enumerate() {
            self.dump_chunk(family, chunk, each)
                .map_err(|stop| match stop {
                    ChunkStop::Ring(error) => DumpStop::Ring {
                        done: i * SOCKETS,
                        error,
                    },
                    ChunkStop::Backend(e) => DumpStop::Backend(e),
                })?;
        }
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Submits `entries`, collecting every completion; on failure the buffers are leaked
    /// (operations may still be in flight) and the ring must not be used again.
    fn run(
        &mut self,
        entries: &[squeue::Entry],
        on_complete: impl FnMut(u64, i32),
    ) -> Result<(), ChunkStop> {
        // SAFETY: the entries point into `self.bufs` and `self.reqs`, which stay untouched
        // until the completions are in, and are leaked below if they cannot all be collected.
        let run = unsafe { crate::uring::run_batch(&mut self.ring, entries, on_complete) };
        run.map_err(|e| {
            std::mem::forget(std::mem::take(&mut self.bufs));
            std::mem::forget(std::mem::take(&mut self.reqs));
            ChunkStop::Ring(e)
        })
    }

    fn dump_chunk(
        &mut self,
        family: u16,
        chunk: &[ServiceEntry],
        each: &mut dyn FnMut(ServiceEntry, &[DestEntry]),
    ) -> Result<(), ChunkStop> {
        let n = chunk.len();
        debug_assert!(n <= SOCKETS);
        if self.bufs.is_empty() {
            return Err(ChunkStop::Ring(std::io::Error::other(
                "the dump ring failed before",
            )));
        }
        let mut seqs = [0u32; SOCKETS];
        let mut sent = [0i32; SOCKETS];
        let mut received = [0i32; SOCKETS];
        let mut progress = [Progress::More; SOCKETS];
        let mut dests: Vec<Vec<DestEntry>> = vec![Vec::new(); n];

        // 1. Every request, each linked to the first receive on its socket.
        let bufs = self.bufs.as_mut_ptr();
        let mut entries = Vec::with_capacity(2 * n);
        for (k, svc) in chunk.iter().enumerate() {
            let seq = self.next_seq();
            seqs[k] = seq;
            let req = &mut self.reqs[k];
            req.clear();
            encode_get_dests(req, family, seq, &svc.id);
            let fd = types::Fd(self.socks[k].as_raw_fd());
            entries.push(
                opcode::Send::new(fd, req.as_ptr(), req.len() as u32)
                    .build()
                    .flags(squeue::Flags::IO_LINK)
                    .user_data((2 * k) as u64),
            );
            // SAFETY (pointer arithmetic): k < SOCKETS, the number of buffers.
            let buf = unsafe { bufs.add(k * DUMP_BUF) };
            entries.push(
                opcode::Recv::new(fd, buf, DUMP_BUF as u32)
                    .flags(libc::MSG_TRUNC)
                    .build()
                    .user_data((2 * k + 1) as u64),
            );
        }
        self.run(&entries, |data, res| {
            let k = (data / 2) as usize;
            if data % 2 == 0 {
                sent[k] = res;
            } else {
                received[k] = res;
            }
        })?;
        for k in 0..n {
            if sent[k] < 0 {
                return Err(ChunkStop::Ring(std::io::Error::from_raw_os_error(-sent[k])));
            }
            if sent[k] as usize != self.reqs[k].len() {
                return Err(ChunkStop::Ring(std::io::Error::other("short netlink send")));
            }
            let af = chunk[k].id.family().af();
            progress[k] = self.absorb(k, received[k], seqs[k], af, &mut dests[k])?;
        }

        // 2. A second receive where the dump is not complete: its `NLMSG_DONE`, usually.
        let entries: Vec<squeue::Entry> = (0..n)
            .filter(|&k| progress[k] == Progress::More)
            .map(|k| {
                let fd = types::Fd(self.socks[k].as_raw_fd());
                // SAFETY (pointer arithmetic): k < SOCKETS, the number of buffers.
                let buf = unsafe { bufs.add(k * DUMP_BUF) };
                opcode::Recv::new(fd, buf, DUMP_BUF as u32)
                    .flags(libc::MSG_TRUNC)
                    .build()
                    .user_data(k as u64)
            })
            .collect();
        self.run(&entries, |k, res| received[k as usize] = res)?;
        let pending: Vec<usize> = (0..n).filter(|&k| progress[k] == Progress::More).collect();
        for k in pending {
            let af = chunk[k].id.family().af();
            progress[k] = self.absorb(k, received[k], seqs[k], af, &mut dests[k])?;
            // 3. A long dump: read on, one datagram per call.
            while progress[k] == Progress::More {
                let got = self.socks[k]
                    .recv(
                        &mut self.bufs[k * DUMP_BUF..(k + 1) * DUMP_BUF],
                        neli::consts::socket::Msg::TRUNC,
                    )
                    .map(|(len, _)| i32::try_from(len).unwrap_or(i32::MAX))
                    .map_err(ChunkStop::Ring)?;
                progress[k] = self.absorb(k, got, seqs[k], af, &mut dests[k])?;
            }
        }

        for (k, svc) in chunk.iter().enumerate() {
            if progress[k] == Progress::Done {
                each(*svc, &dests[k]);
            }
        }
        Ok(())
    }

    /// Decodes the datagram of `len` bytes (a receive's result) in socket `k`'s buffer: the
    /// real servers of the dump with sequence number `seq` go to `out`.
    fn absorb(
        &self,
        k: usize,
        len: i32,
        seq: u32,
        af: u16,
        out: &mut Vec<DestEntry>,
    ) -> Result<Progress, ChunkStop> {
        if len < 0 {
            return Err(ChunkStop::Ring(std::io::Error::from_raw_os_error(-len)));
        }
        let len = len as usize;
        if len > DUMP_BUF {
            return Err(ChunkStop::Ring(std::io::Error::other(format!(
                "netlink datagram of {len} bytes exceeds the {DUMP_BUF} byte buffer"
            ))));
        }
        let buf = &self.bufs[k * DUMP_BUF..k * DUMP_BUF + len];
        let malformed = |reason: String| {
            ChunkStop::Backend(BackendError::Malformed {
                what: "IPVS".into(),
                reason,
            })
        };
        for m in messages(buf).map_err(malformed)? {
            if m.seq != seq {
                continue;
            }
            match m.kind {
                NLMSG_DONE => return Ok(Progress::Done),
                NLMSG_ERROR => {
                    return match error_code(m.body) {
                        0 => Ok(Progress::Done),
                        // Deleted between the service dump and this one.
                        2 | 3 => Ok(Progress::Gone),
                        errno => Err(ChunkStop::Backend(BackendError::Kernel {
                            what: "IPVS".into(),
                            errno,
                        })),
                    };
                }
                NLMSG_OVERRUN => return Err(malformed("netlink overrun".into())),
                _ => out.push(decode_dest(m.body, af).map_err(ChunkStop::Backend)?),
            }
        }
        Ok(Progress::More)
    }
}
