//! The `conntrack` section of a `KubeProxyConfiguration` as kernel settings, following
//! kube-proxy's `pkg/proxy/conntrack/sysctls.go` (called from `cmd/kube-proxy/app/conntrack.go`):
//! `nf_conntrack_max` from `maxPerCore` × CPUs (at least `min`, at most 1,048,576), the hash
//! table grown to a quarter of it, and the TCP/UDP timeouts. Values are written only when the
//! kernel's differ, and zero leaves a setting alone, as in kube-proxy.
//!
//! [`plan`] is pure; [`apply`] does the file IO through [`SysctlIo`].

use std::time::Duration;

use crate::ipvs::config::ConntrackConfig;

/// `/proc/sys` path of `nf_conntrack_max`.
pub(crate) const MAX_PATH: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
/// The conntrack hash table size (a module parameter).
pub(crate) const HASHSIZE_PATH: &str = "/sys/module/nf_conntrack/parameters/hashsize";
/// kube-proxy caps the scaled maximum at 1M entries.
pub(crate) const MAX_LIMIT: u64 = 1_048_576;

/// `nf_conntrack_max` for `cpus` CPUs, or `None` to leave it (kube-proxy's `getConntrackMax`).
pub(crate) fn conntrack_max(config: &ConntrackConfig, cpus: usize) -> Option<u64> {
    if config.max_per_core == 0 {
        return None;
    }
    let scaled = u64::from(config.max_per_core) * cpus.max(1) as u64;
    if scaled > MAX_LIMIT {
        return Some(MAX_LIMIT);
    }
    Some(scaled.max(u64::from(config.min)))
}

/// The hash table size to write for `max` when the current one is `current`: a quarter of
/// `max` when the table is smaller than that, else `None`.
pub(crate) fn hashsize_for(max: u64, current: u64) -> Option<u64> {
    (current < max / 4).then_some(max / 4)
}

/// The settings to write, as (path, value), in order: `nf_conntrack_max` first (the hash table
/// size follows it in [`apply`]), then the timeouts (whole seconds) and `tcp_be_liberal`.
pub(crate) fn plan(config: &ConntrackConfig, cpus: usize) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    if let Some(max) = conntrack_max(config, cpus) {
        out.push((MAX_PATH, max));
    }
    let secs = |d: Duration| d.as_secs();
    for (path, d) in [
        (
            "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
            config.tcp_established_timeout,
        ),
        (
            "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait",
            config.tcp_close_wait_timeout,
        ),
        (
            "/proc/sys/net/netfilter/nf_conntrack_udp_timeout",
            config.udp_timeout,
        ),
        (
            "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
            config.udp_stream_timeout,
        ),
    ] {
        if secs(d) > 0 {
            out.push((path, secs(d)));
        }
    }
    if config.tcp_be_liberal {
        out.push(("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal", 1));
    }
    out
}

/// Reading and writing the settings' files (the real files, or a map in tests).
pub trait SysctlIo {
    /// The file's content.
    fn read(&mut self, path: &str) -> std::io::Result<String>;
    /// Replaces the file's content.
    fn write(&mut self, path: &str, value: &str) -> std::io::Result<()>;
}

/// The real `/proc/sys` and `/sys` files.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileIo;

impl SysctlIo for FileIo {
    fn read(&mut self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn write(&mut self, path: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(path, value)
    }
}

/// One setting that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlFailure {
    /// The file.
    pub path: &'static str,
    /// The value that was to be written.
    pub value: u64,
    /// Why it failed.
    pub reason: String,
}

/// Writes the settings of `config` for `cpus` CPUs that differ from the kernel's; returns what
/// was written and what failed (a failed setting does not stop the others; the hash table is
/// only grown after `nf_conntrack_max` was set).
pub fn apply(
    io: &mut dyn SysctlIo,
    config: &ConntrackConfig,
    cpus: usize,
) -> (Vec<(&'static str, u64)>, Vec<SysctlFailure>) {
    let mut written = Vec::new();
    let mut failed = Vec::new();
    fn set(
        io: &mut dyn SysctlIo,
        path: &'static str,
        value: u64,
        written: &mut Vec<(&'static str, u64)>,
        failed: &mut Vec<SysctlFailure>,
    ) -> bool {
        let current = io
            .read(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if current == Some(value) {
            return true;
        }
        match io.write(path, &value.to_string()) {
            Ok(()) => {
                written.push((path, value));
                true
            }
            Err(e) => {
                failed.push(SysctlFailure {
                    path,
                    value,
                    reason: e.to_string(),
                });
                false
            }
        }
    }
    for (path, value) in plan(config, cpus) {
        let ok = set(io, path, value, &mut written, &mut failed);
        if path == MAX_PATH && ok {
            let current = io
                .read(HASHSIZE_PATH)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            match current {
                Some(current) => {
                    if let Some(size) = hashsize_for(value, current) {
                        set(io, HASHSIZE_PATH, size, &mut written, &mut failed);
                    }
                }
                None => failed.push(SysctlFailure {
                    path: HASHSIZE_PATH,
                    value: value / 4,
                    reason: "cannot read the current hash table size".into(),
                }),
            }
        }
    }
    (written, failed)
}

/// [`apply`] to the real files with this machine's CPU count, logging what was written (info)
/// and what failed (warning: e.g. `nf_conntrack_max` is read-only outside the initial network
/// namespace). Never fails: the proxy works without these settings.
pub(crate) fn apply_logged(config: &ConntrackConfig) {
    let cpus = cpu_count();
    let (written, failed) = apply(&mut FileIo, config, cpus);
    for (path, value) in written {
        tracing::info!(path, value, "conntrack setting applied");
    }
    for f in failed {
        tracing::warn!(path = f.path, value = f.value, reason = %f.reason, "conntrack setting not applied");
    }
}

/// Parses a CPU list as in `/sys/devices/system/cpu/online` (`0-3,6,8-9`) into a count.
pub(crate) fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a {
                    return None;
                }
                n += b - a + 1;
            }
            None => {
                part.trim().parse::<usize>().ok()?;
                n += 1;
            }
        }
    }
    (n > 0).then_some(n)
}

/// The machine's online CPUs (kube-proxy counts the machine's CPUs, not the process's share):
/// `/sys/devices/system/cpu/online`, else the parallelism the process sees.
pub fn cpu_count() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| parse_cpu_list(&t))
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}
