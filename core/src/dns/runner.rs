//! The flag mode of `svcnet-dns` (no `--corefile`): its options ([`DnsOptions`]) and the
//! Corefile they mean ([`DnsOptions::corefile`]), which is served through the one Corefile path
//! ([`super::plugins::serve`]); and the CoreDNS-compatible health, ready and metrics routes
//! that path serves. The composition root ([`crate::agent`]) binds and serves the HTTP
//! endpoints and runs the lameduck period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;

use super::error::DnsError;
use super::metrics::DnsMetrics;
use super::server::ServerConfig;
use super::zone::ZoneOptions;
use crate::model::Kind;
use crate::runtime::http::{Reply, Routes};
use crate::runtime::signal::Stopping;

/// Everything `svcnet-dns` (and the DNS part of `agentctl run`) can be told.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// The DNS listener.
    pub server: ServerConfig,
    /// The cluster zone (the `kubernetes` plugin's options).
    pub zone: ZoneOptions,
    /// `/health` listener (CoreDNS `health`, default `:8080`); `None` disables it.
    pub health: Option<SocketAddr>,
    /// `/ready` listener (CoreDNS `ready`, default `:8181`); `None` disables it.
    pub ready: Option<SocketAddr>,
    /// `/metrics` listener (CoreDNS `prometheus`, default `:9153`); `None` disables it.
    pub metrics: Option<SocketAddr>,
    /// How long to wait for the cache to sync before answering from what it has (default 5 s;
    /// until then, names in the cluster zone answer SERVFAIL).
    pub startup_timeout: Duration,
    /// After SIGTERM, keep answering this long while `/ready` reports 503 (default 5 s).
    pub lameduck: Duration,
}

impl Default for DnsOptions {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            zone: ZoneOptions::default(),
            health: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            ready: Some(SocketAddr::from(([0, 0, 0, 0], 8181))),
            metrics: Some(SocketAddr::from(([0, 0, 0, 0], 9153))),
            startup_timeout: Duration::from_secs(5),
            lameduck: Duration::from_secs(5),
        }
    }
}

impl DnsOptions {
    /// Checks values that cannot work (TTL range, zones).
    pub fn validate(&self) -> Result<(), DnsError> {
        if self.zone.ttl > 3600 {
            return Err(DnsError::InvalidOption {
                option: "ttl",
                reason: format!("{} is outside 0..=3600", self.zone.ttl),
            });
        }
        if self.zone.zones.is_empty() {
            return Err(DnsError::InvalidOption {
                option: "zones",
                reason: "at least one zone is needed".into(),
            });
        }
        for z in &self.zone.zones {
            if hickory_proto::rr::Name::from_ascii(z).is_err() {
                return Err(DnsError::InvalidOption {
                    option: "zones",
                    reason: format!("`{z}` is not a domain name"),
                });
            }
        }
        Ok(())
    }

    /// The Corefile these options mean: one server block for the zones (on `server.listen`'s
    /// port), with `health`, `ready` and `prometheus` on their addresses and a `kubernetes`
    /// plugin with the zone options. `svcnet-dns` without `--corefile` serves this text through
    /// the Corefile path, with the listener, lameduck and startup settings that have no
    /// Corefile spelling passed beside it
    /// ([`CorefileOptions::for_flags`](super::plugins::serve::CorefileOptions::for_flags)).
    pub fn corefile(&self) -> String {
        use std::fmt::Write as _;
        let z = &self.zone;
        let port = match self.server.listen.port() {
            0 => 53,
            p => p,
        };
        let keys: Vec<String> = z
            .zones
            .iter()
            .map(|zone| format!("{zone}:{port}"))
            .collect();
        let mut out = format!("{} {{\n", keys.join(" "));
        for (plugin, addr) in [
            ("health", self.health),
            ("ready", self.ready),
            ("prometheus", self.metrics),
        ] {
            if let Some(addr) = addr {
                let _ = writeln!(out, "    {plugin} {addr}");
            }
        }
        let _ = writeln!(out, "    kubernetes {} {{", z.zones.join(" "));
        let _ = writeln!(out, "        ttl {}", z.ttl);
        match z.pods {
            super::zone::PodMode::Disabled => {}
            super::zone::PodMode::Insecure => out.push_str("        pods insecure\n"),
            super::zone::PodMode::Verified => out.push_str("        pods verified\n"),
        }
        if z.endpoint_pod_names {
            out.push_str("        endpoint_pod_names\n");
        }
        if z.noendpoints {
            out.push_str("        noendpoints\n");
        }
        if z.ignore_empty_service {
            out.push_str("        ignore empty_service\n");
        }
        if !z.namespaces.is_empty() {
            let names: Vec<&str> = z.namespaces.iter().map(String::as_str).collect();
            let _ = writeln!(out, "        namespaces {}", names.join(" "));
        }
        if let Some(labels) = &z.labels {
            let _ = writeln!(out, "        labels \"{labels}\"");
        }
        if let Some(zones) = &z.fallthrough {
            let line = format!("fallthrough {}", zones.join(" "));
            let _ = writeln!(out, "        {}", line.trim_end());
        }
        out.push_str("    }\n}\n");
        out
    }
}

/// The cache kinds the DNS zone needs with these options.
pub fn needed_kinds(zone: &ZoneOptions) -> Vec<Kind> {
    let mut kinds = vec![Kind::Service, Kind::EndpointSlice];
    if zone.needs_pod_kind() {
        kinds.push(Kind::Pod);
    }
    kinds
}

/// CoreDNS's `health` endpoint: `/health` answers `OK`, timed in the metrics.
pub(crate) fn health_routes(metrics: &Arc<DnsMetrics>) -> Routes {
    let m = metrics.clone();
    Routes::new().route("/health", move |_| {
        let started = Instant::now();
        let reply = Reply::text(StatusCode::OK, "OK");
        m.health_checked(started.elapsed(), true);
        reply
    })
}

/// CoreDNS's `ready` endpoint: `/ready` answers 503 while stopping or while `not_ready`
/// names what is not ready yet, else `OK`.
pub(crate) fn ready_routes(
    stopping: Stopping,
    not_ready: impl Fn() -> Option<String> + Send + Sync + 'static,
) -> Routes {
    Routes::new().route("/ready", move |_| {
        if stopping.is_set() {
            return Reply::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        }
        match not_ready() {
            None => Reply::text(StatusCode::OK, "OK"),
            Some(why) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, why),
        }
    })
}

/// CoreDNS's `prometheus` endpoint: `/metrics` with the DNS metrics, and those of `extra`
/// (the plugins' registry) appended.
pub(crate) fn metrics_routes(
    metrics: &Arc<DnsMetrics>,
    extra: Option<Arc<prometheus_client::registry::Registry>>,
) -> Routes {
    let m = metrics.clone();
    Routes::new().route("/metrics", move |_| {
        let mut text = m.encode();
        if let Some(registry) = &extra {
            if let Some(stripped) = text.strip_suffix("# EOF\n") {
                text.truncate(stripped.len());
            }
            let _ = prometheus_client::encoding::text::encode(&mut text, registry);
        }
        Reply::openmetrics(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::{LoadOptions, parse_str};
    use crate::dns::plugins::build::zone_options;
    use crate::dns::zone::PodMode;

    fn served(o: &DnsOptions) -> crate::dns::corefile::Corefile {
        let text = o.corefile();
        parse_str("(flags)", &text, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_flags_corefile_means_the_same_zone_with_every_option() {
        let mut o = DnsOptions::default();
        o.server.listen = "127.0.0.1:5353".parse().unwrap();
        o.zone.zones = vec!["example.local".into(), "in-addr.arpa".into()];
        o.zone.ttl = 30;
        o.zone.pods = PodMode::Verified;
        o.zone.endpoint_pod_names = true;
        o.zone.noendpoints = true;
        o.zone.ignore_empty_service = true;
        o.zone.namespaces = ["a".to_string(), "b".to_string()].into();
        o.zone.labels = Some("app=web,tier in (a,b),!canary".parse().unwrap());
        o.zone.fallthrough = Some(vec!["in-addr.arpa".into()]);
        o.health = None;
        o.metrics = Some("[::1]:9153".parse().unwrap());
        let cf = served(&o);
        assert_eq!(cf.servers.len(), 1);
        let block = &cf.servers[0];
        let keys: Vec<(&str, u16)> = block
            .keys
            .iter()
            .map(|k| (k.zone.as_str(), k.port))
            .collect();
        assert_eq!(keys, [("example.local.", 5353), ("in-addr.arpa.", 5353)]);
        // The Corefile qualifies fallthrough zones (`in-addr.arpa.`); the plugin compares
        // them qualified either way.
        let mut parsed = zone_options(block.plugins.kubernetes.as_ref().unwrap());
        assert_eq!(
            parsed.fallthrough.take(),
            Some(vec!["in-addr.arpa.".to_string()])
        );
        assert_eq!(
            parsed,
            ZoneOptions {
                fallthrough: None,
                ..o.zone.clone()
            }
        );
        assert!(block.plugins.health.is_none());
        assert!(block.plugins.ready.is_some());
        assert!(block.plugins.prometheus.is_some());
        assert!(cf.warnings.is_empty(), "{:?}", cf.warnings);
    }

    #[test]
    fn the_default_flags_corefile_is_the_cluster_zone_alone() {
        let mut o = DnsOptions::default();
        o.server.listen = "127.0.0.1:0".parse().unwrap();
        let cf = served(&o);
        let block = &cf.servers[0];
        assert_eq!(block.keys[0].port, 53, "port 0 is resolved by the listener");
        assert_eq!(
            zone_options(block.plugins.kubernetes.as_ref().unwrap()),
            o.zone
        );
        assert!(block.plugins.forward.is_none() && block.plugins.cache.is_none());
        assert!(block.plugins.reload.is_none(), "nothing to reload");
        let served = crate::dns::plugins::serve::CorefileOptions::for_flags(&o);
        assert_eq!(served.listen_override, Some(o.server.listen));
        assert_eq!(served.lameduck, Some(o.lameduck));
    }
}
