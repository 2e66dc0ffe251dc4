//! Reading the files of a manifest directory that the set has not seen yet, with few system
//! calls: on Linux through one `io_uring` whose submissions `statx`, open, read and close a
//! batch of [`BATCH`] files at a time (four `io_uring_enter` calls per batch instead of four
//! system calls per file), else, or where the kernel refuses the ring (seccomp profiles of
//! container runtimes often do), one file at a time with `open`, `fstat`, `read` and `close`.
//!
//! Why: a cold start reads every file of the directory. On a normal kernel a system call costs
//! well under a microsecond and either way takes ~50 ms for 10,000 files; where system calls
//! trap to a hypervisor or sandbox (the user-mode-linux guest the benchmarks run in: ~42 µs
//! each), the four calls per file were 1.9 s of a 10,000-file start, and the ring takes 0.5 s
//! (BENCHMARKS.md, "Manifest directory of 10,000 files").
//!
//! Both paths hand each file to the caller in the order given, with the same [`FileStamp`] a
//! later `stat` of the unchanged file gives, so the rescans that follow compare like with like.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::FileStamp;

/// Files per batch of the ring (one operation each in flight per submission).
const BATCH: usize = 128;
/// Bytes read into a file's slot with the first read; a longer file is read on to its end.
const SLOT: usize = 16 << 10;

/// What was found at one path.
#[derive(Debug)]
pub(super) enum Outcome<'a> {
    /// A regular file: its stamp and its whole content.
    Read(FileStamp, &'a [u8]),
    /// A regular file over the caller's size limit: not read.
    Oversized(FileStamp),
    /// Not a regular file (a directory, a FIFO, a device): not a manifest.
    NotRegular,
    /// Could not be opened or read (`NotFound` when it went away since the listing).
    Failed(std::io::Error),
}

/// Which way the files were read, for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReadStats {
    /// Files read through the ring.
    pub ring: usize,
    /// Files read one at a time (no ring, or a file the ring could not read).
    pub direct: usize,
}

/// Reads each of `paths` and hands it to `visit`, in order; files over `max_len` bytes are
/// stat'ed, not read. `use_ring` false reads one file at a time (tests compare the two).
pub(super) fn read_files(
    paths: &[PathBuf],
    max_len: u64,
    use_ring: bool,
    mut visit: impl FnMut(&Path, Outcome<'_>),
) -> ReadStats {
    let mut stats = ReadStats::default();
    let mut rest = paths;
    #[cfg(target_os = "linux")]
    if use_ring && paths.len() > 1 {
        match ring::Ring::new() {
            Ok(mut ring) => {
                while !rest.is_empty() {
                    let n = rest.len().min(BATCH);
                    let (batch, after) = rest.split_at(n);
                    match ring.read_batch(batch, max_len, &mut stats, &mut visit) {
                        Ok(()) => rest = after,
                        Err(e) => {
                            // The ring itself failed (not one file): the batch and the rest
                            // are read one at a time.
                            tracing::debug!(error = %e, "io_uring batch failed; reading files one at a time");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "no io_uring; reading files one at a time"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = use_ring;
    for path in rest {
        read_direct(path, max_len, &mut stats, &mut visit);
    }
    stats
}

/// One file with `open`, `fstat`, one `read` when the size is right, `close`.
fn read_direct(
    path: &Path,
    max_len: u64,
    stats: &mut ReadStats,
    visit: &mut impl FnMut(&Path, Outcome<'_>),
) {
    stats.direct += 1;
    let opened = open_nonblocking(path).and_then(|f| Ok((f.metadata()?, f)));
    let (meta, mut file) = match opened {
        Ok(opened) => opened,
        Err(e) => return visit(path, Outcome::Failed(e)),
    };
    if !meta.is_file() {
        return visit(path, Outcome::NotRegular);
    }
    let stamp = FileStamp::of(&meta);
    if stamp.len > max_len {
        return visit(path, Outcome::Oversized(stamp));
    }
    match read_whole(&mut file, stamp.len) {
        Ok(bytes) => visit(path, Outcome::Read(stamp, &bytes)),
        Err(e) => visit(path, Outcome::Failed(e)),
    }
}

/// Opens for reading without blocking on a FIFO that has no writer (a manifest name can point
/// at anything); for a regular file the flag changes nothing.
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// The whole content of `file`, which `stat` says is `len` bytes long: one `read` when it is
/// (a read asking for one byte more that returns `len` has met the end), else on to the end.
pub(super) fn read_whole(file: &mut std::fs::File, len: u64) -> std::io::Result<Vec<u8>> {
    let len = usize::try_from(len).unwrap_or(usize::MAX - 1);
    let mut buf = vec![0u8; len + 1];
    let n = loop {
        match file.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    buf.truncate(n);
    if n != len {
        // A short read, or the file changed size since the stat: read on to the end.
        file.read_to_end(&mut buf)?;
    }
    Ok(buf)
}

#[cfg(target_os = "linux")]
mod ring {
    //! The `io_uring` path. Every buffer an operation points at (path strings, `statx`
    //! results, read slots) lives in the [`Ring`] or the batch's own vectors and is not touched
    //! or freed until the kernel has completed every operation of the batch; a batch whose
    //! completions cannot all be collected leaks its buffers rather than free them under the
    //! kernel.
    // io_uring operations take raw pointers the kernel writes through after the call returns:
    // pushing them is `unsafe`, and the rule above is what makes it sound.
    #![allow(unsafe_code)]

    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::FromRawFd;
    use std::path::{Path, PathBuf};

    use io_uring::{IoUring, opcode, squeue, types};

    use super::{BATCH, FileStamp, Outcome, ReadStats, SLOT, read_direct};

    /// One ring and the per-file buffers its batches reuse (allocated once: fresh pages cost
    /// a fault each, which is dear where system calls are), with the current batch's paths.
    pub(super) struct Ring {
        ring: IoUring,
        slots: Vec<u8>,
        statx: Vec<libc::statx>,
        /// The paths of the batch in flight, as C strings (`None`: a path with a NUL byte).
        names: Vec<Option<CString>>,
    }

    /// What the kernel answered for one file of a batch.
    #[derive(Clone, Copy)]
    struct FileOps {
        statx: i32,
        fd: i32,
        read: i32,
    }

    impl Ring {
        pub(super) fn new() -> std::io::Result<Self> {
            // One entry per file in flight, completions twice that.
            let ring = IoUring::new(BATCH as u32)?;
            // SAFETY: `libc::statx` is plain old data; all zeroes is a valid value.
            let zeroed: libc::statx = unsafe { std::mem::zeroed() };
            Ok(Ring {
                ring,
                slots: vec![0u8; BATCH * SLOT],
                statx: vec![zeroed; BATCH],
                names: Vec::with_capacity(BATCH),
            })
        }

        /// Submits `entries` and collects every completion ([`crate::uring::run_batch`]). An
        /// error means the ring is unusable; any operation still in flight then owns its
        /// buffers for good ([`Self::abandon`]).
        fn run(
            &mut self,
            entries: &[squeue::Entry],
            on_complete: impl FnMut(u64, i32),
        ) -> std::io::Result<()> {
            // SAFETY: every pointer in the entries stays valid until the completions are in:
            // the path strings, slots and statx buffers belong to `self`, are not touched
            // until the next batch, and are leaked by `abandon` if this fails.
            unsafe { crate::uring::run_batch(&mut self.ring, entries, on_complete) }
        }

        /// Reads one batch of files (at most [`BATCH`]) and visits each, in four submissions:
        /// `statx` every path (following symlinks, as ConfigMap volumes use them), open the
        /// regular files within the size limit, read each into its slot, close them.
        ///
        /// Only what `statx` called a regular file is opened, so a FIFO named `*.yaml` cannot
        /// block the open, and without `O_NONBLOCK`, which would make the ring answer a read
        /// that misses the page cache with `EAGAIN` instead of waiting for the disk. The stamp
        /// is taken before the open: a file replaced in between is newer than its stamp, so the
        /// next rescan reads it again. A file the ring could not stat, open or read for any
        /// reason but its absence is read again the direct way, which names the error as the
        /// direct path does.
        pub(super) fn read_batch(
            &mut self,
            paths: &[PathBuf],
            max_len: u64,
            stats: &mut ReadStats,
            visit: &mut impl FnMut(&Path, Outcome<'_>),
        ) -> std::io::Result<()> {
            debug_assert!(paths.len() <= BATCH);
            self.names.clear();
            self.names.extend(
                paths
                    .iter()
                    .map(|p| CString::new(p.as_os_str().as_bytes()).ok()),
            );
            let unset = -libc::ECANCELED;
            let mut ops = vec![
                FileOps {
                    statx: unset,
                    fd: unset,
                    read: unset,
                };
                paths.len()
            ];

            // 1. Stat every path.
            let statx = self.statx.as_mut_ptr();
            let stats_ops: Vec<squeue::Entry> = self
                .names
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    let name = name.as_ref()?;
                    // SAFETY (pointer arithmetic): i < BATCH, the length of the buffer.
                    let stx = unsafe { statx.add(i) };
                    Some(
                        opcode::Statx::new(
                            types::Fd(libc::AT_FDCWD),
                            name.as_ptr(),
                            stx.cast::<types::statx>(),
                        )
                        .mask(libc::STATX_BASIC_STATS)
                        .build()
                        .user_data(i as u64),
                    )
                })
                .collect();
            if let Err(e) = self.run(&stats_ops, |i, res| ops[i as usize].statx = res) {
                return Err(self.abandon(e));
            }
            let wanted = |stx: &libc::statx| {
                u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFREG && stx.stx_size <= max_len
            };

            // 2. Open the regular files within the limit.
            let opens: Vec<squeue::Entry> = self
                .names
                .iter()
                .enumerate()
                .filter(|(i, _)| ops[*i].statx >= 0 && wanted(&self.statx[*i]))
                .filter_map(|(i, name)| {
                    Some(
                        opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), name.as_ref()?.as_ptr())
                            .flags(libc::O_RDONLY | libc::O_CLOEXEC)
                            .build()
                            .user_data(i as u64),
                    )
                })
                .collect();
            if let Err(e) = self.run(&opens, |i, res| ops[i as usize].fd = res) {
                return Err(self.abandon(e));
            }

            // 3. Read each opened file into its slot.
            let slots = self.slots.as_mut_ptr();
            let reads: Vec<squeue::Entry> = ops
                .iter()
                .enumerate()
                .filter(|(_, op)| op.fd >= 0)
                .map(|(i, op)| {
                    // SAFETY (pointer arithmetic): i < BATCH, the number of slots.
                    let slot = unsafe { slots.add(i * SLOT) };
                    opcode::Read::new(types::Fd(op.fd), slot, SLOT as u32)
                        .offset(0)
                        .build()
                        .user_data(i as u64)
                })
                .collect();
            if let Err(e) = self.run(&reads, |i, res| ops[i as usize].read = res) {
                return Err(self.abandon(e));
            }

            // 4. Hand each file over (while it is still open, for the rare one longer than
            // its slot), then close them all in one submission.
            for (i, (path, op)) in paths.iter().zip(&ops).enumerate() {
                let gone = op.statx == -libc::ENOENT || op.fd == -libc::ENOENT;
                if gone {
                    stats.ring += 1;
                    visit(path, Outcome::Failed(std::io::ErrorKind::NotFound.into()));
                    continue;
                }
                if op.statx < 0 {
                    read_direct(path, max_len, stats, visit);
                    continue;
                }
                let stx = &self.statx[i];
                if u32::from(stx.stx_mode) & libc::S_IFMT != libc::S_IFREG {
                    stats.ring += 1;
                    visit(path, Outcome::NotRegular);
                    continue;
                }
                let stamp = stamp_of(stx);
                if stamp.len > max_len {
                    stats.ring += 1;
                    visit(path, Outcome::Oversized(stamp));
                    continue;
                }
                if op.fd < 0 || op.read < 0 {
                    read_direct(path, max_len, stats, visit);
                    continue;
                }
                stats.ring += 1;
                let n = op.read as usize;
                let slot = &self.slots[i * SLOT..i * SLOT + n];
                if n < SLOT && n as u64 == stamp.len {
                    visit(path, Outcome::Read(stamp, slot));
                    continue;
                }
                // Longer than the slot, or changed since the stat: read on from where the ring
                // stopped, through the still open descriptor.
                match read_on(op.fd, slot) {
                    Ok(bytes) => visit(path, Outcome::Read(stamp, &bytes)),
                    Err(e) => visit(path, Outcome::Failed(e)),
                }
            }
            let closes: Vec<squeue::Entry> = ops
                .iter()
                .enumerate()
                .filter(|(_, op)| op.fd >= 0)
                .map(|(i, op)| {
                    opcode::Close::new(types::Fd(op.fd))
                        .build()
                        .user_data(i as u64)
                })
                .collect();
            self.run(&closes, |_, _| {}).map_err(|e| self.abandon(e))
        }

        /// The ring failed with operations possibly in flight: its buffers and the batch's
        /// path strings are left to the kernel for the rest of the process (a few megabytes,
        /// once) and `e` is returned.
        fn abandon(&mut self, e: std::io::Error) -> std::io::Error {
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(std::mem::take(&mut self.statx));
            std::mem::forget(std::mem::take(&mut self.names));
            e
        }
    }

    /// `prefix` and the rest of the open file `fd` from offset `prefix.len()` on.
    fn read_on(fd: i32, prefix: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        // SAFETY: `fd` is open (closed only after this batch is visited); ManuallyDrop keeps
        // the File from closing it.
        let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let mut bytes = prefix.to_vec();
        file.seek(SeekFrom::Start(prefix.len() as u64))?;
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// The stamp `stat` gives for the same file (as [`FileStamp::of`] on its `Metadata`).
    fn stamp_of(stx: &libc::statx) -> FileStamp {
        use std::time::{Duration, UNIX_EPOCH};
        let nanos = Duration::from_nanos(u64::from(stx.stx_mtime.tv_nsec));
        let modified = if stx.stx_mtime.tv_sec >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(stx.stx_mtime.tv_sec as u64) + nanos)
        } else {
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(stx.stx_mtime.tv_sec.unsigned_abs()))
                .and_then(|t| t.checked_add(nanos))
        };
        FileStamp {
            len: stx.stx_size,
            modified,
            inode: stx.stx_ino,
            device: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each path gave, owned, for comparing the two paths.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Read(FileStamp, Vec<u8>),
        Oversized(FileStamp),
        NotRegular,
        Failed(std::io::ErrorKind),
    }

    fn read_all(paths: &[PathBuf], max_len: u64, use_ring: bool) -> (Vec<Seen>, ReadStats) {
        let mut seen = Vec::new();
        let stats = read_files(paths, max_len, use_ring, |_, outcome| {
            seen.push(match outcome {
                Outcome::Read(stamp, bytes) => Seen::Read(stamp, bytes.to_vec()),
                Outcome::Oversized(stamp) => Seen::Oversized(stamp),
                Outcome::NotRegular => Seen::NotRegular,
                Outcome::Failed(e) => Seen::Failed(e.kind()),
            })
        });
        (seen, stats)
    }

    #[test]
    fn ring_and_direct_reads_agree_on_every_kind_of_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        // More files than one batch, of sizes around the slot and the size limit.
        for (i, len) in [0, 1, 100, SLOT - 1, SLOT, SLOT + 1, 3 * SLOT + 7]
            .into_iter()
            .cycle()
            .take(BATCH + 20)
            .enumerate()
        {
            let p = dir.path().join(format!("f{i}.yaml"));
            let content: Vec<u8> = (0..len).map(|b| (b % 251) as u8).collect();
            std::fs::write(&p, content).unwrap();
            paths.push(p);
        }
        // A ConfigMap volume's files are symlinks: followed, as `stat` does.
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&paths[2], &link).unwrap();
        paths.push(link);
        let sub = dir.path().join("sub.yaml");
        std::fs::create_dir(&sub).unwrap();
        paths.push(sub);
        let fifo = dir.path().join("fifo.yaml");
        nix_mkfifo(&fifo);
        paths.push(fifo);
        paths.push(dir.path().join("missing.yaml"));

        let max_len = (2 * SLOT) as u64;
        let (ring, ring_stats) = read_all(&paths, max_len, true);
        let (direct, direct_stats) = read_all(&paths, max_len, false);
        assert_eq!(ring.len(), paths.len());
        assert_eq!(ring, direct);
        assert_eq!(direct_stats.ring, 0);
        assert_eq!(direct_stats.direct, paths.len());
        assert_eq!(ring_stats.ring + ring_stats.direct, paths.len());
        #[cfg(target_os = "linux")]
        if ring::Ring::new().is_ok() {
            // Every kind of entry, missing and special files included, is handled by the ring.
            assert_eq!(
                ring_stats,
                ReadStats {
                    ring: paths.len(),
                    direct: 0
                }
            );
        }
        // Spot checks of what both saw.
        assert!(matches!(&ring[2], Seen::Read(s, b) if s.len == 100 && b.len() == 100));
        assert!(matches!(&ring[6], Seen::Oversized(s) if s.len == 3 * SLOT as u64 + 7));
        assert!(matches!(&ring[5], Seen::Read(_, b) if b.len() == SLOT + 1));
        let n = paths.len();
        assert_eq!(ring[n - 4], ring[2], "the symlink reads as its target");
        assert_eq!(ring[n - 3], Seen::NotRegular);
        assert_eq!(ring[n - 2], Seen::NotRegular);
        assert_eq!(ring[n - 1], Seen::Failed(std::io::ErrorKind::NotFound));
        // The stamp is the one a later stat of the unchanged file gives.
        let meta = std::fs::metadata(&paths[2]).unwrap();
        assert!(matches!(&ring[2], Seen::Read(s, _) if *s == FileStamp::of(&meta)));
    }

    fn nix_mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
        assert_eq!(rc, 0, "mkfifo {}", path.display());
    }
}
