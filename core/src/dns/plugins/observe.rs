//! `errors` and `log`: report answers (CoreDNS's formats).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;

use crate::dns::corefile::names::in_zone;
use crate::dns::corefile::{Consolidate, ConsolidateLevel, ErrorsConfig, LogConfig};
use crate::dns::handler::{Next, Plugin, Reply, Request, Response, Transport};

/// The errors plugin: logs SERVFAIL answers produced further down the chain; lines matching a
/// `consolidate` rule are counted and summed up once per period instead.
#[derive(Debug, Clone)]
pub struct Errors {
    consolidator: Arc<Consolidator>,
}

impl Errors {
    /// A new errors plugin.
    pub fn new(cfg: ErrorsConfig) -> Self {
        Self {
            consolidator: Arc::new(Consolidator::new(cfg.consolidate)),
        }
    }
}

/// What to do with one error line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    /// No rule matches: log it now.
    Log,
    /// The first line of rule `n` in this period: count it and flush the rule after its period.
    First(usize),
    /// Counted into rule `n`'s running period.
    Counted(usize),
}

/// The `consolidate` rules and their counts (pure: the caller logs and schedules).
#[derive(Debug)]
pub(crate) struct Consolidator {
    rules: Vec<(Consolidate, AtomicU64)>,
}

impl Consolidator {
    pub(crate) fn new(rules: Vec<Consolidate>) -> Self {
        Self {
            rules: rules.into_iter().map(|r| (r, AtomicU64::new(0))).collect(),
        }
    }

    /// Files one error line under the first rule whose expression matches it.
    pub(crate) fn observe(&self, line: &str) -> Observed {
        match self
            .rules
            .iter()
            .position(|(r, _)| r.pattern.0.is_match(line))
        {
            None => Observed::Log,
            Some(i) => {
                if self.rules[i].1.fetch_add(1, Ordering::AcqRel) == 0 {
                    Observed::First(i)
                } else {
                    Observed::Counted(i)
                }
            }
        }
    }

    /// Ends rule `i`'s period: its summary line, CoreDNS's words, when anything was counted.
    pub(crate) fn flush(&self, i: usize) -> Option<(ConsolidateLevel, String)> {
        let (rule, count) = &self.rules[i];
        let n = count.swap(0, Ordering::AcqRel);
        (n > 0).then(|| {
            (
                rule.level,
                format!(
                    "{n} errors like '{}' occurred in last {}",
                    rule.pattern.as_str(),
                    go_duration(rule.period)
                ),
            )
        })
    }

    fn period(&self, i: usize) -> Duration {
        self.rules[i].0.period
    }
}

/// A duration as Go prints it (`30s`, `5m0s`, `1h0m0s`, `1.5s`, `250ms`), as in CoreDNS's lines.
pub(crate) fn go_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let frac = d.subsec_millis();
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

fn log_summary(level: ConsolidateLevel, line: &str) {
    match level {
        ConsolidateLevel::Warning => tracing::warn!(target: "plugin/errors", "{line}"),
        ConsolidateLevel::Info => tracing::info!(target: "plugin/errors", "{line}"),
        ConsolidateLevel::Debug => tracing::debug!(target: "plugin/errors", "{line}"),
        _ => tracing::error!(target: "plugin/errors", "{line}"),
    }
}

/// Records one error line: logs it, or counts it (scheduling the summary for a first one).
fn report_error(c: &Arc<Consolidator>, line: String) {
    match c.observe(&line) {
        Observed::Log => tracing::error!(target: "plugin/errors", "{line}"),
        Observed::Counted(_) => {}
        Observed::First(i) => {
            let c = c.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        tokio::time::sleep(c.period(i)).await;
                        if let Some((level, summary)) = c.flush(i) {
                            log_summary(level, &summary);
                        }
                    });
                }
                // No runtime to wait on (a caller outside the server): report at once.
                Err(_) => {
                    if let Some((level, summary)) = c.flush(i) {
                        log_summary(level, &summary);
                    }
                }
            }
        }
    }
}

impl Plugin for Errors {
    fn name(&self) -> &'static str {
        "errors"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let name = req.lower_name().to_string();
        let qtype = req.record_type();
        // Only a block with `consolidate` rules pays for sharing them with the answer's closure.
        let c = (!self.consolidator.rules.is_empty()).then(|| self.consolidator.clone());
        next.run(req).map(move |resp| {
            if resp.rcode == ResponseCode::ServFail {
                let line = format!("2 {name} {qtype}: no answer (SERVFAIL)");
                match &c {
                    Some(c) => report_error(c, line),
                    None => tracing::error!(target: "plugin/errors", "{line}"),
                }
            }
            resp
        })
    }
}

/// The log plugin: one line per query in the configured format.
#[derive(Debug, Clone)]
pub struct Log {
    cfg: LogConfig,
}

impl Log {
    /// A new log plugin.
    pub fn new(cfg: LogConfig) -> Self {
        Self { cfg }
    }
}

fn class_of(resp: &Response) -> u8 {
    match resp.rcode {
        ResponseCode::NoError if !resp.answers.is_empty() => 0,
        ResponseCode::NoError | ResponseCode::NXDomain => 1,
        _ => 2,
    }
}

/// Fills CoreDNS log placeholders for one exchange.
pub(crate) fn format_line(format: &str, req: &Request, resp: &Response, took_secs: f64) -> String {
    let mut out = String::with_capacity(format.len() + 64);
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let key = &rest[open + 1..open + close];
        let value = match key {
            "remote" => req.client.ip().to_string(),
            "port" => req.client.port().to_string(),
            "type" => req.record_type().to_string(),
            "class" => req.class().to_string(),
            "name" => req.lower_name().to_string(),
            "proto" => match req.transport {
                Transport::Udp => "udp".into(),
                Transport::Tcp => "tcp".into(),
            },
            "size" => "-".into(),
            ">do" => req.dnssec_ok().to_string(),
            ">bufsize" => req.client_payload().to_string(),
            ">id" => req.id.to_string(),
            ">opcode" => "QUERY".into(),
            "rcode" => crate::dns::metrics::rcode_label(resp.rcode).to_string(),
            "rsize" => "-".into(),
            ">rflags" => {
                let mut f = vec!["qr"];
                if resp.authoritative {
                    f.push("aa");
                }
                if req.recursion_desired {
                    f.push("rd");
                }
                if resp.recursion_available {
                    f.push("ra");
                }
                f.join(",")
            }
            "duration" => format!("{took_secs:.9}s"),
            other => format!("{{{other}}}"),
        };
        out.push_str(&value);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

impl Plugin for Log {
    fn name(&self) -> &'static str {
        "log"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        if !self.cfg.names.iter().any(|z| in_zone(req.lower_name(), z)) {
            return next.run(req);
        }
        let started = Instant::now();
        let cfg = self.cfg.clone();
        let req2 = req.clone();
        next.run(req).map(move |resp| {
            let wanted = match class_of(&resp) {
                0 => cfg.classes.success,
                1 => cfg.classes.denial,
                _ => cfg.classes.error,
            };
            if wanted {
                let line = format_line(&cfg.format, &req2, &resp, started.elapsed().as_secs_f64());
                tracing::info!(target: "plugin/log", "{line}");
            }
            resp
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::directives::observe::COMMON_LOG_FORMAT;
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn common_format() {
        let req = Request::new(Name::from_ascii("A.example.").unwrap(), RecordType::A);
        let resp = Response::new(ResponseCode::NXDomain);
        let line = format_line(COMMON_LOG_FORMAT, &req, &resp, 0.000_1);
        assert!(
            line.starts_with(
                "127.0.0.1:0 - 0 \"A IN a.example. udp - false 512\" NXDOMAIN qr,rd - 0.000100000s"
            ),
            "{line}"
        );
    }

    fn rule(period: u64, re: &str, level: ConsolidateLevel) -> Consolidate {
        Consolidate {
            period: Duration::from_secs(period),
            pattern: crate::dns::corefile::Pattern(regex::Regex::new(re).unwrap()),
            level,
        }
    }

    #[test]
    fn consolidation_counts_per_first_matching_rule() {
        // CoreDNS's errors README: a line goes to the first rule that matches; unmatched ones
        // are logged one by one.
        let c = Consolidator::new(vec![
            rule(300, r"\(SERVFAIL\)$", ConsolidateLevel::Warning),
            rule(30, "^2 ", ConsolidateLevel::Error),
        ]);
        let servfail = "2 a.example. A: no answer (SERVFAIL)";
        assert_eq!(c.observe(servfail), Observed::First(0));
        assert_eq!(c.observe(servfail), Observed::Counted(0));
        assert_eq!(c.observe("2 b.example. A: other"), Observed::First(1));
        assert_eq!(c.observe("unrelated"), Observed::Log);
        assert_eq!(
            c.flush(0),
            Some((
                ConsolidateLevel::Warning,
                r"2 errors like '\(SERVFAIL\)$' occurred in last 5m0s".to_string()
            ))
        );
        assert_eq!(c.flush(0), None, "nothing counted since");
        // A new period starts with the next line.
        assert_eq!(c.observe(servfail), Observed::First(0));
        assert_eq!(
            c.flush(1).unwrap().1,
            "1 errors like '^2 ' occurred in last 30s"
        );
    }

    #[test]
    fn go_durations() {
        for (d, s) in [
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3725), "1h2m5s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(250), "250ms"),
        ] {
            assert_eq!(go_duration(d), s);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_errors_plugin_sums_up_after_the_period() {
        let c = Arc::new(Consolidator::new(vec![rule(
            2,
            "SERVFAIL",
            ConsolidateLevel::Warning,
        )]));
        for _ in 0..3 {
            report_error(&c, "2 x. A: no answer (SERVFAIL)".to_string());
        }
        // The scheduled summary takes the count at the end of the period.
        tokio::time::sleep(Duration::from_secs(3)).await;
        tokio::task::yield_now().await;
        assert_eq!(c.flush(0), None, "the summary task flushed the three lines");
        report_error(&c, "2 x. A: no answer (SERVFAIL)".to_string());
        assert_eq!(
            c.flush(0).unwrap().1,
            "1 errors like 'SERVFAIL' occurred in last 2s"
        );
    }
}
