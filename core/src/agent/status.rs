//! What a running agent reports on `/status`, and its text form for `agentctl status`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The whole `/status` document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// svcnet version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_seconds: f64,
    /// Whether `/ready` currently answers 200.
    pub ready: bool,
    /// Whether the agent is shutting down (DNS lameduck).
    pub stopping: bool,
    /// The source feeding the cache.
    pub source: SourceReport,
    /// The shared cache.
    pub cache: crate::cache::CacheCounts,
    /// One entry per running subsystem (`dns`, `proxy`), by name.
    pub subsystems: BTreeMap<String, SubsystemStatus>,
}

/// The source part of [`AgentStatus`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    /// `manifests:/dir` or `kubernetes:...`.
    pub description: String,
    /// Every watched kind has delivered its initial list.
    pub synced: bool,
    /// Seconds from start until the first sync (absent until synced).
    pub initial_sync_seconds: Option<f64>,
    /// Full re-reads (rescans, relists).
    pub resyncs: u64,
    /// Events applied.
    pub events: u64,
    /// Current problems (`location: reason`); the last good state stays in effect.
    pub problems: Vec<String>,
}

/// What one subsystem reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubsystemStatus {
    /// Ready to serve (DNS: zone built and listening; proxy: first sync done).
    pub ready: bool,
    /// One line on what it does (`dns on 127.0.0.1:53`, `proxy (dry run)`).
    pub summary: String,
    /// Cache generation the subsystem has applied, when it tracks one.
    pub applied_generation: Option<u64>,
    /// Syncs / zone rebuilds done.
    pub syncs: u64,
    /// Duration of the last sync or rebuild, in seconds.
    pub last_sync_seconds: Option<f64>,
    /// DNS queries per second over the last few seconds.
    pub query_rate_per_second: Option<f64>,
    /// Configuration files in force.
    pub config_files: Vec<String>,
    /// The last configuration reload error, if the last reload failed (the previous config stays).
    pub last_reload_error: Option<String>,
    /// The last sync error, if the last sync failed.
    pub last_error: Option<String>,
    /// Subsystem-specific figures.
    pub details: BTreeMap<String, serde_json::Value>,
}

fn opt_secs(v: Option<f64>) -> String {
    match v {
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1000.0),
        Some(s) => format!("{s:.2} s"),
        None => "-".into(),
    }
}

impl AgentStatus {
    /// Readable text for `agentctl status`.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let state = if self.stopping {
            "stopping"
        } else if self.ready {
            "ready"
        } else {
            "not ready"
        };
        let _ = writeln!(
            o,
            "svcnet agent {} — {state}, up {:.0} s",
            self.version, self.uptime_seconds
        );
        let s = &self.source;
        let _ = writeln!(o, "\nSource:   {}", s.description);
        let _ = writeln!(
            o,
            "  synced: {}   initial sync: {}   resyncs: {}   events: {}",
            if s.synced { "yes" } else { "no" },
            opt_secs(s.initial_sync_seconds),
            s.resyncs,
            s.events
        );
        if s.problems.is_empty() {
            let _ = writeln!(o, "  problems: none");
        } else {
            let _ = writeln!(o, "  problems:");
            for p in &s.problems {
                let _ = writeln!(o, "    - {p}");
            }
        }
        let c = &self.cache;
        let _ = writeln!(o, "\nCache:    generation {}", c.generation);
        let _ = writeln!(
            o,
            "  services: {}   endpoint slices: {}   endpoints: {}   pods: {}   nodes: {}",
            c.services, c.endpoint_slices, c.endpoints, c.pods, c.nodes
        );
        for (name, sub) in &self.subsystems {
            let _ = writeln!(
                o,
                "\n{:<10}{} ({})",
                format!("{}:", capitalise(name)),
                sub.summary,
                if sub.ready { "ready" } else { "not ready" }
            );
            let _ = writeln!(
                o,
                "  applied generation: {}   syncs: {}   last sync: {}",
                sub.applied_generation
                    .map_or_else(|| "-".to_string(), |g| g.to_string()),
                sub.syncs,
                opt_secs(sub.last_sync_seconds)
            );
            if let Some(q) = sub.query_rate_per_second {
                let _ = writeln!(o, "  query rate: {q:.1}/s");
            }
            if !sub.config_files.is_empty() {
                let _ = writeln!(o, "  config: {}", sub.config_files.join(", "));
            }
            let _ = writeln!(
                o,
                "  last reload error: {}",
                sub.last_reload_error.as_deref().unwrap_or("none")
            );
            if let Some(e) = &sub.last_error {
                let _ = writeln!(o, "  last error: {e}");
            }
            for (k, v) in &sub.details {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let _ = writeln!(o, "  {k}: {v}");
            }
        }
        o
    }
}

/// `dns` → `DNS`, `proxy` → `Proxy`.
fn capitalise(s: &str) -> String {
    if s.len() <= 3 {
        return s.to_uppercase();
    }
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_mentions_every_part() {
        let mut st = AgentStatus {
            version: "0.1.0".into(),
            ready: true,
            ..Default::default()
        };
        st.source.description = "manifests:/x".into();
        st.source.problems = vec!["/x/a.yaml#0: bad".into()];
        st.cache.generation = 7;
        st.subsystems.insert(
            "dns".into(),
            SubsystemStatus {
                ready: true,
                summary: "serving on 127.0.0.1:5353".into(),
                query_rate_per_second: Some(12.5),
                last_reload_error: Some("Corefile:3: unknown directive".into()),
                ..Default::default()
            },
        );
        let text = st.to_text();
        for needle in [
            "ready",
            "manifests:/x",
            "/x/a.yaml#0: bad",
            "generation 7",
            "DNS:",
            "query rate: 12.5/s",
            "Corefile:3: unknown directive",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        let json = serde_json::to_string(&st).unwrap();
        let back: AgentStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
    }
}
