//! Prometheus metrics of the DNS server, under CoreDNS's names and labels so existing
//! dashboards and alerts keep working (`coredns_dns_requests_total`,
//! `coredns_dns_responses_total`, `coredns_dns_request_duration_seconds`, sizes, panics,
//! build info, enabled plugins, health check durations).
//!
//! Each worker records through its own [`Recorder`], which caches the metric handles of the
//! label sets it has seen, so a query costs a few atomic adds and no label-map lookups under a
//! shared lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::handler::Transport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: Arc<str>,
    zone: Arc<str>,
    view: &'static str,
    proto: &'static str,
    family: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    server: Arc<str>,
    zone: Arc<str>,
    view: &'static str,
    rcode: &'static str,
    plugin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    server: Arc<str>,
    zone: Arc<str>,
    view: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtoLabels {
    server: Arc<str>,
    zone: Arc<str>,
    view: &'static str,
    proto: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    server: Arc<str>,
    zone: Arc<str>,
    view: &'static str,
    name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
    goversion: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // CoreDNS: ExponentialBuckets(0.00025, 2, 16).
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

fn size_histogram() -> Histogram {
    Histogram::new([
        0.0, 100.0, 200.0, 300.0, 400.0, 511.0, 1023.0, 2047.0, 4095.0, 8291.0, 16e3, 32e3, 48e3,
        64e3,
    ])
}

fn health_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 10.0, 5))
}

/// The DNS server's metrics and their registry.
pub struct DnsMetrics {
    registry: Registry,
    server: Arc<str>,
    zone: Arc<str>,
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    duration: HistogramFamily<TypeLabels>,
    request_size: HistogramFamily<ProtoLabels>,
    response_size: HistogramFamily<ProtoLabels>,
    panics: Counter,
    plugins: Family<PluginLabels, Gauge>,
    health_duration: Histogram,
    health_failures: Counter,
    zone_rebuilds: Counter,
    zone_services: Gauge,
    large_answers_limited: Counter,
    tcp_evicted: Counter,
    tcp_refused: Counter,
    /// Exchanges recorded, all labels together (for the agent's status and query rate).
    exchanges: AtomicU64,
}

impl std::fmt::Debug for DnsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsMetrics")
            .field("server", &self.server)
            .finish()
    }
}

impl DnsMetrics {
    /// Metrics for the server listening as `server` (CoreDNS writes `dns://:53`) serving `zone`
    /// (the server block's zone, `.` for the default one).
    pub fn new(server: &str, zone: &str) -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let responses = Family::<ResponseLabels, Counter>::default();
        let duration: HistogramFamily<TypeLabels> =
            Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let request_size: HistogramFamily<ProtoLabels> =
            Family::new_with_constructor(size_histogram as fn() -> Histogram);
        let response_size: HistogramFamily<ProtoLabels> =
            Family::new_with_constructor(size_histogram as fn() -> Histogram);
        let panics = Counter::default();
        let plugins = Family::<PluginLabels, Gauge>::default();
        let health_duration = health_histogram();
        let health_failures = Counter::default();
        let zone_rebuilds = Counter::default();
        let zone_services = Gauge::default();
        let large_answers_limited = Counter::default();
        let tcp_evicted = Counter::default();
        let tcp_refused = Counter::default();
        registry.register(
            "svcnet_dns_large_answers_limited",
            "Large UDP answers replaced by a truncated one (TC=1) by the response-rate limit.",
            large_answers_limited.clone(),
        );
        registry.register(
            "svcnet_dns_tcp_connections_evicted",
            "Idle TCP connections closed to make room for new ones (longest idle first).",
            tcp_evicted.clone(),
        );
        registry.register(
            "svcnet_dns_tcp_connections_refused",
            "TCP connections closed at once: the server or the client's address was at its limit with no idle connection to close.",
            tcp_refused.clone(),
        );
        registry.register(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            requests.clone(),
        );
        registry.register(
            "coredns_dns_responses",
            "Counter of response status codes.",
            responses.clone(),
        );
        registry.register_with_unit(
            "coredns_dns_request_duration",
            "Histogram of the time (in seconds) each request took per zone.",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        registry.register_with_unit(
            "coredns_dns_request_size",
            "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
            prometheus_client::registry::Unit::Bytes,
            request_size.clone(),
        );
        registry.register_with_unit(
            "coredns_dns_response_size",
            "Size of the returned response in bytes.",
            prometheus_client::registry::Unit::Bytes,
            response_size.clone(),
        );
        registry.register(
            "coredns_panics",
            "A metrics that counts the number of panics.",
            panics.clone(),
        );
        registry.register(
            "coredns_plugin_enabled",
            "A metric that indicates whether a plugin is enabled on per server and zone basis.",
            plugins.clone(),
        );
        registry.register_with_unit(
            "coredns_health_request_duration",
            "Histogram of the time (in seconds) each request took.",
            prometheus_client::registry::Unit::Seconds,
            health_duration.clone(),
        );
        registry.register(
            "coredns_health_request_failures",
            "The number of times the health check failed.",
            health_failures.clone(),
        );
        registry.register(
            "coredns_build",
            "A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built.",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: "svcnet",
                goversion: "rust",
            }),
        );
        registry.register(
            "svcnet_dns_zone_rebuilds",
            "Cluster zones built from cache snapshots.",
            zone_rebuilds.clone(),
        );
        registry.register(
            "svcnet_dns_zone_services",
            "Services in the cluster zone currently served.",
            zone_services.clone(),
        );
        Arc::new(Self {
            registry,
            server: Arc::from(server),
            zone: Arc::from(zone),
            requests,
            responses,
            duration,
            request_size,
            response_size,
            panics,
            plugins,
            health_duration,
            health_failures,
            zone_rebuilds,
            zone_services,
            large_answers_limited,
            tcp_evicted,
            tcp_refused,
            exchanges: AtomicU64::new(0),
        })
    }

    /// Marks the plugins of the chain as enabled (`coredns_plugin_enabled`).
    pub(crate) fn set_plugins(&self, names: &[&'static str]) {
        for name in names {
            self.plugins
                .get_or_create(&PluginLabels {
                    server: self.server.clone(),
                    zone: self.zone.clone(),
                    view: "",
                    name,
                })
                .set(1);
        }
    }

    /// Counts a panic caught in the request path.
    pub fn panicked(&self) {
        self.panics.inc();
    }

    /// Records one health check.
    pub(crate) fn health_checked(&self, took: Duration, ok: bool) {
        self.health_duration.observe(took.as_secs_f64());
        if !ok {
            self.health_failures.inc();
        }
    }

    /// Records a zone rebuild with `services` services.
    pub(crate) fn zone_built(&self, services: usize) {
        self.zone_rebuilds.inc();
        self.zone_services.set(services as i64);
    }

    /// Records `rebuilds` earlier zone builds and the current zone size (when the metrics are
    /// attached after the first builds).
    pub(crate) fn zone_state(&self, rebuilds: u64, services: usize) {
        self.zone_rebuilds.inc_by(rebuilds);
        self.zone_services.set(services as i64);
    }

    /// Counts a large UDP answer replaced by a truncated one (rate limit).
    pub(crate) fn large_answer_limited(&self) {
        self.large_answers_limited.inc();
    }

    /// Counts an idle TCP connection closed to make room.
    pub(crate) fn tcp_evicted(&self) {
        self.tcp_evicted.inc();
    }

    /// Counts a TCP connection refused at its limit.
    pub(crate) fn tcp_refused(&self) {
        self.tcp_refused.inc();
    }

    /// How many exchanges were recorded (every request received, answered or not).
    pub fn exchanges_total(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }

    /// A per-worker recorder.
    pub fn recorder(self: &Arc<Self>) -> Recorder {
        Recorder {
            metrics: self.clone(),
            requests: FastMap::default(),
            responses: FastMap::default(),
            durations: FastMap::default(),
            sizes: FastMap::default(),
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// One worker's handle on the metrics (not shared between threads).
pub struct Recorder {
    metrics: Arc<DnsMetrics>,
    requests: FastMap<(Transport, bool, &'static str), Counter>,
    responses: FastMap<(u16, &'static str), Counter>,
    durations: FastMap<&'static str, Histogram>,
    sizes: FastMap<Transport, (Histogram, Histogram)>,
}

/// The recorder's maps: a few keys of our own making, looked up on every query.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// What the server observed about one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// UDP or TCP.
    pub transport: Transport,
    /// Client over IPv6.
    pub ipv6: bool,
    /// Question type, if a question was decoded.
    pub record_type: Option<RecordType>,
    /// Response code sent (`None`: nothing sent).
    pub rcode: Option<ResponseCode>,
    /// The plugin that wrote the response (`""`: none, e.g. REFUSED outside every zone).
    pub plugin: &'static str,
    /// Time from receipt to the answer being handed to the socket.
    pub duration: Duration,
    /// Request size in bytes.
    pub request_size: usize,
    /// Response size in bytes.
    pub response_size: usize,
}

impl Recorder {
    /// Records one exchange.
    pub fn record(&mut self, ex: &Exchange) {
        let m = &self.metrics;
        m.exchanges.fetch_add(1, Ordering::Relaxed);
        let qtype = ex.record_type.map_or("other", type_label);
        self.requests
            .entry((ex.transport, ex.ipv6, qtype))
            .or_insert_with(|| {
                m.requests
                    .get_or_create(&RequestLabels {
                        server: m.server.clone(),
                        zone: m.zone.clone(),
                        view: "",
                        proto: ex.transport.as_str(),
                        family: if ex.ipv6 { "2" } else { "1" },
                        r#type: qtype,
                    })
                    .clone()
            })
            .inc();
        self.durations
            .entry(qtype)
            .or_insert_with(|| {
                m.duration
                    .get_or_create(&TypeLabels {
                        server: m.server.clone(),
                        zone: m.zone.clone(),
                        view: "",
                        r#type: qtype,
                    })
                    .clone()
            })
            .observe(ex.duration.as_secs_f64());
        let (req_size, resp_size) = self.sizes.entry(ex.transport).or_insert_with(|| {
            let labels = ProtoLabels {
                server: m.server.clone(),
                zone: m.zone.clone(),
                view: "",
                proto: ex.transport.as_str(),
            };
            (
                m.request_size.get_or_create(&labels).clone(),
                m.response_size.get_or_create(&labels).clone(),
            )
        });
        req_size.observe(ex.request_size as f64);
        if let Some(rcode) = ex.rcode {
            resp_size.observe(ex.response_size as f64);
            self.responses
                .entry((u16::from(rcode), ex.plugin))
                .or_insert_with(|| {
                    m.responses
                        .get_or_create(&ResponseLabels {
                            server: m.server.clone(),
                            zone: m.zone.clone(),
                            view: "",
                            rcode: rcode_label(rcode),
                            plugin: ex.plugin,
                        })
                        .clone()
                })
                .inc();
        }
    }
}

/// The `type` label value: the common types by name, everything else `other` (as CoreDNS).
fn type_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::NS => "NS",
        RecordType::PTR => "PTR",
        RecordType::SOA => "SOA",
        RecordType::CNAME => "CNAME",
        RecordType::MX => "MX",
        RecordType::TXT => "TXT",
        RecordType::SRV => "SRV",
        RecordType::NAPTR => "NAPTR",
        RecordType::HINFO => "HINFO",
        RecordType::AXFR => "AXFR",
        RecordType::IXFR => "IXFR",
        RecordType::ANY => "ANY",
        RecordType::HTTPS => "HTTPS",
        RecordType::SVCB => "SVCB",
        RecordType::CAA => "CAA",
        _ => "other",
    }
}

/// The `rcode` label value as CoreDNS spells it (`NOERROR`, `NXDOMAIN`, ...).
pub(crate) fn rcode_label(rcode: ResponseCode) -> &'static str {
    match u16::from(rcode) {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_coredns_names() {
        let m = DnsMetrics::new("dns://:53", ".");
        m.set_plugins(&["kubernetes"]);
        let mut r = m.recorder();
        for rcode in [
            ResponseCode::NoError,
            ResponseCode::NoError,
            ResponseCode::NXDomain,
        ] {
            r.record(&Exchange {
                transport: Transport::Udp,
                ipv6: false,
                record_type: Some(RecordType::A),
                rcode: Some(rcode),
                plugin: if rcode == ResponseCode::NoError {
                    "kubernetes"
                } else {
                    ""
                },
                duration: Duration::from_micros(30),
                request_size: 40,
                response_size: 80,
            });
        }
        let text = m.encode();
        for needle in [
            r#"coredns_dns_requests_total{server="dns://:53",zone=".",view="",proto="udp",family="1",type="A"} 3"#,
            r#"coredns_dns_responses_total{server="dns://:53",zone=".",view="",rcode="NOERROR",plugin="kubernetes"} 2"#,
            r#"coredns_dns_responses_total{server="dns://:53",zone=".",view="",rcode="NXDOMAIN",plugin=""} 1"#,
            "coredns_dns_request_duration_seconds_bucket{",
            "coredns_dns_request_size_bytes_bucket{",
            "coredns_dns_response_size_bytes_count{",
            r#"coredns_plugin_enabled{server="dns://:53",zone=".",view="",name="kubernetes"} 1"#,
            "coredns_panics_total 0",
            "coredns_build_info{",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
