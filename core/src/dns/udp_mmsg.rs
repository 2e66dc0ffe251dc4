//! Batched UDP socket I/O: `recvmmsg(2)` and `sendmmsg(2)` on a non-blocking socket, so a
//! busy UDP worker takes up to [`BATCH`] queries and sends up to [`BATCH`] answers per system
//! call instead of one each (Knot DNS does the same).
//!
//! The calls never block (`MSG_DONTWAIT`); the caller waits for readiness with tokio and runs
//! them inside `UdpSocket::try_io`, which clears the readiness on `WouldBlock`. The message
//! headers and I/O vectors are built on the stack for each call: the buffers live in
//! [`RecvBatch`], which holds no raw pointer between calls (so it is `Send` and the loop can
//! live in a tokio task).

// `recvmmsg`/`sendmmsg` are foreign functions over raw message headers: calling them is
// `unsafe`. Every pointer handed to the kernel points into a buffer borrowed for the call.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::{SockAddr, SockAddrStorage};

/// Messages per system call.
pub(crate) const BATCH: usize = 32;

/// Receive buffer per message. A DNS query over UDP is a question and an OPT record: far below
/// this. A longer datagram is reported as truncated and dropped.
pub(crate) const SLOT: usize = 4096;

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Bytes in the slot.
    pub(crate) len: usize,
    /// The sender.
    pub(crate) peer: SocketAddr,
    /// The datagram was longer than [`SLOT`] (the rest is lost).
    pub(crate) truncated: bool,
}

/// Receive buffers for one worker: [`BATCH`] slots of [`SLOT`] bytes.
pub(crate) struct RecvBatch {
    bufs: Vec<u8>,
    received: Vec<Received>,
}

impl RecvBatch {
    /// Empty buffers.
    pub(crate) fn new() -> Self {
        Self {
            bufs: vec![0; BATCH * SLOT],
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Receives what is queued on `fd`, up to [`BATCH`] datagrams, without waiting.
    /// `WouldBlock` when nothing is queued.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received.clear();
        // SAFETY: all-zero is a valid `mmsghdr` and `iovec`.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut addrs: [SockAddrStorage; BATCH] =
            std::array::from_fn(|_| SockAddrStorage::zeroed());
        for (i, ((hdr, iov), addr)) in hdrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(addrs.iter_mut())
            .enumerate()
        {
            iov.iov_base = self.bufs[i * SLOT..].as_mut_ptr().cast();
            iov.iov_len = SLOT;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_namelen = addr.size_of();
            hdr.msg_hdr.msg_name = (addr as *mut SockAddrStorage).cast();
        }
        // SAFETY: every header points at a live iovec, slot and address buffer of the sizes
        // given; the kernel writes at most that much into each.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (hdr, addr) in hdrs.iter().zip(addrs.iter_mut()).take(n) {
            let storage = std::mem::replace(addr, SockAddrStorage::zeroed());
            // SAFETY: the kernel filled `msg_namelen` bytes of the address buffer.
            let peer = unsafe { SockAddr::new(storage, hdr.msg_hdr.msg_namelen) };
            let Some(peer) = peer.as_socket() else {
                // Not an IP sender (cannot happen on an IP socket); skip it.
                continue;
            };
            self.received.push(Received {
                len: (hdr.msg_len as usize).min(SLOT),
                peer,
                truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            });
        }
        Ok(self.received.len())
    }

    /// The datagrams of the last [`recv`](Self::recv).
    pub(crate) fn received(&self) -> &[Received] {
        &self.received
    }

    /// The bytes of datagram `i` of the last [`recv`](Self::recv).
    pub(crate) fn datagram(&self, i: usize) -> &[u8] {
        let r = &self.received[i];
        &self.bufs[i * SLOT..i * SLOT + r.len]
    }
}

/// Sends `messages` (bytes, destination) on `fd` with one `sendmmsg`, without waiting. Returns
/// how many were sent (from the front); `WouldBlock` when the socket buffer is full before the
/// first one. At most [`BATCH`] are sent per call.
pub(crate) fn send_batch(fd: RawFd, messages: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let count = messages.len().min(BATCH);
    if count == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid `mmsghdr` and `iovec`.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut names: [MaybeUninit<SockAddr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    for (i, (bytes, to)) in messages.iter().take(count).enumerate() {
        let name = names[i].write(SockAddr::from(*to));
        iovs[i].iov_base = bytes.as_ptr().cast_mut().cast();
        iovs[i].iov_len = bytes.len();
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        hdrs[i].msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
        hdrs[i].msg_hdr.msg_namelen = name.len();
    }
    // SAFETY: the first `count` headers point at live iovecs over the callers' byte slices
    // (only read by the kernel) and at initialised addresses of the lengths given.
    let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), count as _, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_is_received_and_answered_in_one_call_each() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let mut batch = RecvBatch::new();
        let err = batch.recv(server.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "nothing queued yet");

        for i in 0..40u8 {
            client.send_to(&[i; 3], to).unwrap();
        }
        let n = batch.recv(server.as_raw_fd()).unwrap();
        assert_eq!(n, BATCH, "a full batch in one call");
        for i in 0..n {
            assert_eq!(batch.datagram(i), &[i as u8; 3]);
            assert_eq!(batch.received()[i].peer, client.local_addr().unwrap());
            assert!(!batch.received()[i].truncated);
        }
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 8, "the rest");

        let answers: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i, i + 1]).collect();
        let peer = client.local_addr().unwrap();
        let msgs: Vec<(&[u8], SocketAddr)> = answers.iter().map(|a| (&a[..], peer)).collect();
        assert_eq!(send_batch(server.as_raw_fd(), &msgs).unwrap(), 8);
        let mut buf = [0u8; 16];
        for i in 0..8u8 {
            let (len, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(from, to);
            assert_eq!(&buf[..len], &[i, i + 1]);
        }
    }

    #[test]
    fn an_oversized_datagram_is_flagged_truncated() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(&vec![7u8; SLOT + 100], server.local_addr().unwrap())
            .unwrap();
        let mut batch = RecvBatch::new();
        // The datagram is queued by the time send_to returns on loopback.
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 1);
        assert!(batch.received()[0].truncated);
        assert_eq!(batch.datagram(0).len(), SLOT);
    }
}
