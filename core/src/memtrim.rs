//! Giving freed memory back to the system after bursts (issue 19 item 4), shared by the
//! binaries that serve DNS (`svcnet-dns`, `agentctl run`): they call [`start`] before their
//! runtime starts.
//!
//! Measured with the glibc build: nine bursts of 1,024 TCP connections took `svcnet-dns` from
//! 26 to 98 MB RSS, and the RSS stayed there. Each connection's 64 KiB receive buffer is below
//! glibc's mmap threshold, so it comes from a malloc arena; freed, it stays in the arena (glibc
//! only gives back the top of a heap, and long-lived allocations sit above the freed ones), and
//! the next burst on other worker threads spreads over more arenas. Two measures:
//!
//! - `Glibc::tune` fixes the mmap threshold at 32 KiB, so such buffers are mapped and
//!   unmapped on their own (and the threshold no longer grows after a large free);
//! - `spawn` starts a thread that checks every few seconds how much the allocator holds free
//!   and calls `malloc_trim` once that passes [`TrimPolicy::min_free`], which returns free pages
//!   inside every arena (not only at the top), e.g. after a large manifest was replaced.
//!
//! The static musl build of the image has neither call: its allocator (mallocng) unmaps freed
//! groups itself, and there the thread is not started.
//!
//! A binary with its own global allocator registers how to collect it with [`on_burst_end`]
//! (`svcnet-proxy`: mimalloc), and the library calls it after a full IPVS sync.

// `mallopt`, `mallinfo2` and `malloc_trim` are foreign functions: calling them is `unsafe`,
// although none of them takes a pointer or has a precondition.
#![allow(unsafe_code)]

use std::time::Duration;

/// What gives freed memory back to the system after a burst of work, registered by the binary
/// ([`on_burst_end`]).
static BURST_END: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers `collect` to run after each burst of work the library knows of (a full IPVS sync):
/// for a global allocator that gives freed memory back only while it allocates. mimalloc purges
/// freed pages on its allocation paths, so an idle `svcnet-proxy` kept the transient memory of
/// its start (RSS 67–69 MB against 60 MB once purged, BENCHMARKS.md). Returns false when one is
/// registered already (the first stays).
pub fn on_burst_end(collect: fn()) -> bool {
    BURST_END.set(collect).is_ok()
}

/// Runs what [`on_burst_end`] registered, if anything.
pub(crate) fn burst_ended() {
    if let Some(collect) = BURST_END.get() {
        collect();
    }
}

/// Whether [`start`] set anything up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trimming {
    /// The mmap threshold is fixed and the trimming thread runs.
    Started,
    /// Turned off (a zero interval).
    Off,
    /// This build's allocator is not glibc's malloc: nothing to do (musl's mallocng unmaps
    /// freed groups by itself; a binary with its own global allocator manages its memory).
    Unsupported,
}

/// Sets the allocator up to give memory back after bursts, checking every `interval` (zero
/// turns it off). Call it once, before any other thread starts (the tokio runtime): the mmap
/// threshold is a process-wide setting. A thread that cannot start is logged, not fatal.
pub fn start(interval: Duration) -> Trimming {
    if interval.is_zero() {
        return Trimming::Off;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        Glibc::tune();
        if let Err(e) = spawn(Glibc, TrimPolicy::every(interval)) {
            tracing::warn!(error = %e, "cannot start the memory trimming thread");
        }
        Trimming::Started
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    Trimming::Unsupported
}

/// What the trimming thread needs of the allocator: a small seam so the policy is tested
/// without glibc.
pub(crate) trait Allocator: Send + 'static {
    /// Bytes the allocator holds free (allocated from the system, not in use), if it can tell.
    fn free_bytes(&self) -> Option<usize>;
    /// Returns free memory to the system.
    fn trim(&self);
}

/// When to trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrimPolicy {
    /// How often the allocator is asked.
    pub interval: Duration,
    /// Free bytes that make a trim worth its cost (it walks every arena under its lock).
    pub min_free: usize,
}

impl TrimPolicy {
    /// Every `interval`, trimming once 4 MiB are free.
    #[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
    pub(crate) fn every(interval: Duration) -> Self {
        TrimPolicy {
            interval,
            min_free: 4 << 20,
        }
    }
}

/// One check: trims when the allocator holds at least `policy.min_free` bytes free. Returns
/// the free bytes before and after when it trimmed.
pub(crate) fn check(alloc: &impl Allocator, policy: &TrimPolicy) -> Option<(usize, usize)> {
    let before = alloc.free_bytes()?;
    if before < policy.min_free {
        return None;
    }
    alloc.trim();
    Some((before, alloc.free_bytes().unwrap_or(0)))
}

/// Starts the trimming thread (it runs until the process exits).
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
pub(crate) fn spawn(alloc: impl Allocator, policy: TrimPolicy) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("svcnet-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(policy.interval);
                if let Some((before, after)) = check(&alloc, &policy) {
                    tracing::debug!(free_before = before, free_after = after, "malloc_trim");
                }
            }
        })
        .map(|_| ())
}

/// glibc's malloc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Glibc;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl Glibc {
    /// Allocations from this size on are mapped on their own and unmapped when freed.
    pub(crate) const MMAP_THRESHOLD: i32 = 32 * 1024;

    /// Sets the fixed mmap threshold; call before the runtime starts.
    pub(crate) fn tune() {
        // SAFETY: plain integer parameters; glibc takes its own lock.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, Self::MMAP_THRESHOLD) };
        if ok != 1 {
            tracing::warn!("mallopt(M_MMAP_THRESHOLD) failed; large buffers stay in arenas");
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl Allocator for Glibc {
    fn free_bytes(&self) -> Option<usize> {
        // SAFETY: no arguments; returns a struct by value (glibc >= 2.33).
        let info = unsafe { libc::mallinfo2() };
        // Free chunks in the arenas plus free fastbin blocks.
        Some(info.fordblks.saturating_add(info.fsmblks))
    }

    fn trim(&self) {
        // SAFETY: an integer argument (bytes to keep at the top of the main heap).
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An allocator holding `free` bytes that a trim gives back down to `floor`.
    #[derive(Clone)]
    struct Fake(Arc<Mutex<(usize, usize, u32)>>);

    impl Allocator for Fake {
        fn free_bytes(&self) -> Option<usize> {
            Some(self.0.lock().unwrap().0)
        }
        fn trim(&self) {
            let mut s = self.0.lock().unwrap();
            s.0 = s.1;
            s.2 += 1;
        }
    }

    static COLLECTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn count_collect() {
        COLLECTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn other_collect() {}

    #[test]
    fn the_registered_collector_runs_at_each_burst_end_and_the_first_registration_stays() {
        // The only test that registers one: the registration is process-wide.
        assert!(on_burst_end(count_collect));
        assert!(
            !on_burst_end(other_collect),
            "a second registration is refused"
        );
        let before = COLLECTED.load(std::sync::atomic::Ordering::SeqCst);
        burst_ended();
        burst_ended();
        // Other tests' full syncs may run it too, never fewer times.
        assert!(COLLECTED.load(std::sync::atomic::Ordering::SeqCst) >= before + 2);
    }

    #[test]
    fn trims_only_past_the_threshold() {
        let policy = TrimPolicy::every(Duration::from_secs(5));
        let fake = Fake(Arc::new(Mutex::new((1 << 20, 1000, 0))));
        assert_eq!(check(&fake, &policy), None, "1 MiB free: not worth a trim");
        fake.0.lock().unwrap().0 = 80 << 20;
        assert_eq!(check(&fake, &policy), Some((80 << 20, 1000)));
        assert_eq!(fake.0.lock().unwrap().2, 1);
        assert_eq!(check(&fake, &policy), None, "nothing left to give back");
        assert_eq!(fake.0.lock().unwrap().2, 1);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_trim_gives_freed_arena_memory_back() {
        // The heap layout this needs is only predictable in a process of its own: other tests
        // allocating and freeing in the same arenas at the same time move the heap top. So the
        // test runs itself again, alone, in a child process.
        const CHILD: &str = "SVCNET_MEMTRIM_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "memtrim::tests::glibc_trim_gives_freed_arena_memory_back",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CHILD, "1")
                .output()
                .unwrap();
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
                "child run failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        // 64 MiB in blocks below any mmap threshold, freed except one late block that pins
        // the top of the heap: only malloc_trim returns the memory underneath it.
        let blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![1u8; 16 * 1024]).collect();
        let pin = vec![1u8; 1024];
        let resident = rss_bytes();
        drop(blocks);
        let free = Glibc.free_bytes().unwrap();
        assert!(free >= 60 << 20, "freed blocks are held free: {free}");
        let (before, _) = check(&Glibc, &TrimPolicy::every(Duration::ZERO)).unwrap();
        assert!(before >= 60 << 20);
        // mallinfo2 still counts the trimmed chunks as free; the resident set shows the pages
        // went back.
        let after = rss_bytes();
        assert!(
            after + (48 << 20) <= resident,
            "RSS {resident} -> {after} bytes after the trim"
        );
        drop(pin);
    }
}
