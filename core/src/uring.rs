//! The one `io_uring` helper the batched readers share (manifest files, IPVS real-server
//! dumps): submit a batch of operations and collect every completion.
//!
//! Both users exist for kernels where a system call is dear (a hypervisor or sandbox that traps
//! each one; ~42 µs in the user-mode-linux guest of the benchmarks): a batch costs one
//! `io_uring_enter` instead of one call per operation. Both fall back to plain system calls
//! where the ring is refused (no `io_uring`, or a seccomp profile without it).
// io_uring operations carry raw pointers the kernel writes through after the call returns:
// pushing them is `unsafe`. The contract of [`run_batch`] is what makes its callers sound.
#![allow(unsafe_code)]

use io_uring::{IoUring, squeue};

/// Pushes `entries` (at most the ring's size), submits them and calls
/// `on_complete(user_data, result)` for every completion, returning once all of them are in.
///
/// # Safety
///
/// Every pointer in `entries` must stay valid, and the memory it names unused by anything else,
/// until this returns `Ok`. If it returns `Err`, operations may still be in flight: their
/// buffers must then never be freed or reused (leak them), and the ring must not be used again.
pub(crate) unsafe fn run_batch(
    ring: &mut IoUring,
    entries: &[squeue::Entry],
    mut on_complete: impl FnMut(u64, i32),
) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    {
        let mut sq = ring.submission();
        for entry in entries {
            // SAFETY: the caller keeps every pointer valid until the completions are in.
            if unsafe { sq.push(entry) }.is_err() {
                return Err(std::io::Error::other("io_uring submission queue full"));
            }
        }
    }
    let mut done = 0;
    while done < entries.len() {
        match ring.submit_and_wait(entries.len() - done) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        for cqe in ring.completion() {
            on_complete(cqe.user_data(), cqe.result());
            done += 1;
        }
    }
    Ok(())
}
