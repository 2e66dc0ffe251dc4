//! Log output of the three binaries: one `tracing` setup for `svcnet-proxy`, `svcnet-dns` and
//! `agentctl`.
//!
//! - [`LogFormat::Text`] (the default): human-readable lines, with ANSI colours only when
//!   stderr is a terminal, so log files and `kubectl logs` get no escape codes.
//! - [`LogFormat::Json`] (`--log-format json`): one JSON object per line for log shippers, with
//!   `timestamp`, `level`, `target`, the event's fields (`message` and the rest) at the top
//!   level, and the fields of the enclosing spans (`span`, `spans`).
//!
//! The filter comes from `RUST_LOG` when set, else the binary's default level.

use std::io::IsTerminal as _;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable text (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A `--log-format` value that is neither `text` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format `{0}`: expected `text` or `json`")]
#[non_exhaustive]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(UnknownLogFormat(s.to_string())),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A global subscriber is already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// The filter: `RUST_LOG` if set and valid, else `default_level` (`info`, `warn`) with
/// hickory-server at `warn` (it logs every DoT/DoH response at `info`).
fn filter(default_level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},hickory_server=warn")))
}

/// A subscriber writing `format` to `writer`; `ansi` colours text output.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

/// Installs the global subscriber: `format` on stderr, colours only if stderr is a terminal,
/// filtered by `RUST_LOG` or else `default_level`.
pub fn init(format: LogFormat, default_level: &str) -> Result<(), TelemetryError> {
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    tracing::subscriber::set_global_default(subscriber(
        format,
        filter(default_level),
        std::io::stderr,
        ansi,
    ))
    .map_err(|e| TelemetryError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_with(format: LogFormat, ansi: bool) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let sub = subscriber(format, EnvFilter::new("info"), move || writer.clone(), ansi);
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("sync", service = "default/web");
            let _in = span.enter();
            tracing::warn!(kind = "Service", "watch failed; retrying in 2.0 s");
            tracing::debug!("filtered out");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_is_one_object_per_line_with_the_message_fields_and_spans() {
        let text = log_with(LogFormat::Json, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "watch failed; retrying in 2.0 s");
        assert_eq!(v["kind"], "Service");
        assert_eq!(v["span"]["name"], "sync");
        assert_eq!(v["span"]["service"], "default/web");
        assert_eq!(v["spans"][0]["service"], "default/web");
        assert!(v["timestamp"].is_string());
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn text_has_colours_only_when_asked() {
        let plain = log_with(LogFormat::Text, false);
        assert!(plain.contains("watch failed; retrying in 2.0 s"), "{plain}");
        assert!(plain.contains("service=\"default/web\""), "{plain}");
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let coloured = log_with(LogFormat::Text, true);
        assert!(coloured.contains('\x1b'), "{coloured:?}");
        assert!(coloured.contains("watch failed; retrying in 2.0 s"));
    }

    #[test]
    fn formats_parse_and_unknown_ones_are_named() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("TEXT".parse::<LogFormat>(), Ok(LogFormat::Text));
        let e = "yaml".parse::<LogFormat>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown log format `yaml`: expected `text` or `json`"
        );
    }
}

/// CPU time and page faults of this process so far, for start-up log lines (where a start
/// spends its time: working, or waiting on the API server and the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessUsage {
    /// User plus system CPU time, in milliseconds.
    pub cpu_ms: u64,
    /// Minor page faults (first touches of memory) so far.
    pub minor_faults: u64,
}

impl ProcessUsage {
    /// The usage of the calling process (`getrusage(RUSAGE_SELF)`; zeros where that fails).
    pub fn now() -> Self {
        use nix::sys::resource::{UsageWho, getrusage};
        let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
            return Self::default();
        };
        let ms = |t: nix::sys::time::TimeVal| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
                + u64::try_from(t.tv_usec()).unwrap_or(0) / 1000
        };
        Self {
            cpu_ms: ms(usage.user_time()) + ms(usage.system_time()),
            minor_faults: u64::try_from(usage.minor_page_faults()).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod usage_tests {
    use super::ProcessUsage;

    #[test]
    fn process_usage_counts_the_pages_this_process_touches() {
        let before = ProcessUsage::now();
        // 64 MiB, every page written: above glibc's largest mmap threshold (32 MiB), so fresh
        // pages from the system whatever the other tests of this process freed before.
        let mut block = vec![0u8; 64 << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        std::hint::black_box(&block);
        let after = ProcessUsage::now();
        assert!(
            after.minor_faults > before.minor_faults,
            "{before:?} → {after:?}"
        );
        assert!(after.cpu_ms >= before.cpu_ms);
    }
}
