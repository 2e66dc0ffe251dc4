//! Prometheus metrics of the plugins, with CoreDNS's names (so dashboards keep working).
//! Created once per process and shared by every configuration a reload builds.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label pairs of a metric.
pub type Labels = Vec<(&'static str, String)>;

fn new_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// Counters and gauges of forward, cache, hosts and reload (cheap to clone: shared handles).
#[derive(Clone)]
pub struct PluginMetrics {
    /// `coredns_forward_requests_total{to}`.
    pub forward_requests: Family<Labels, Counter>,
    /// `coredns_forward_responses_total{to,rcode}`.
    pub forward_responses: Family<Labels, Counter>,
    /// `coredns_forward_request_duration_seconds{to,rcode}`.
    pub forward_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// `coredns_forward_healthcheck_failures_total{to}` (failed exchanges and probes).
    pub forward_healthcheck_failures: Family<Labels, Counter>,
    /// `coredns_forward_max_concurrent_rejects_total`.
    pub forward_max_concurrent_rejects: Counter,
    /// `coredns_forward_mismatched_replies_total{to,reason}`: upstream messages ignored because
    /// their id or question did not match the query (`reason` id, question or malformed).
    pub forward_mismatches: Family<Labels, Counter>,
    /// `coredns_cache_hits_total{type}` (`success`/`denial`).
    pub cache_hits: Family<Labels, Counter>,
    /// `coredns_cache_misses_total`.
    pub cache_misses: Counter,
    /// `coredns_cache_entries{type}`.
    pub cache_entries: Family<Labels, Gauge>,
    /// `coredns_cache_evictions_total{type}`.
    pub cache_evictions: Family<Labels, Counter>,
    /// `coredns_cache_prefetch_total`.
    pub cache_prefetch: Counter,
    /// `coredns_cache_served_stale_total`.
    pub cache_served_stale: Counter,
    /// `coredns_hosts_entries`.
    pub hosts_entries: Gauge,
    /// `coredns_autopath_success_total`: queries answered from another name of the search path.
    pub autopath_success: Counter,
    /// `coredns_reload_failed_total`.
    pub reload_failed: Counter,
    /// `coredns_acl_blocked_requests_total{zone}`.
    pub acl_blocked: Family<Labels, Counter>,
    /// `coredns_acl_filtered_requests_total{zone}`.
    pub acl_filtered: Family<Labels, Counter>,
    /// `coredns_acl_dropped_requests_total{zone}`.
    pub acl_dropped: Family<Labels, Counter>,
    /// `coredns_acl_allowed_requests_total`.
    pub acl_allowed: Counter,
    /// `coredns_template_matches_total{zone,class,type}`.
    pub template_matches: Family<Labels, Counter>,
    /// `coredns_template_template_failures_total{zone,class,type,section,template}`.
    pub template_failures: Family<Labels, Counter>,
    /// `coredns_template_rr_failures_total{zone,class,type,section,template}`.
    pub template_rr_failures: Family<Labels, Counter>,
    /// `coredns_local_localhost_requests_total`.
    pub local_localhost_requests: Counter,
    /// `coredns_file_entries{dns_name}`: records of each zone served by `file`.
    pub file_entries: Family<Labels, Gauge>,
}

impl Default for PluginMetrics {
    fn default() -> Self {
        Self {
            forward_requests: Family::default(),
            forward_responses: Family::default(),
            forward_duration: Family::new_with_constructor(new_duration_histogram),
            forward_healthcheck_failures: Family::default(),
            forward_max_concurrent_rejects: Counter::default(),
            forward_mismatches: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Counter::default(),
            cache_entries: Family::default(),
            cache_evictions: Family::default(),
            cache_prefetch: Counter::default(),
            cache_served_stale: Counter::default(),
            hosts_entries: Gauge::default(),
            autopath_success: Counter::default(),
            reload_failed: Counter::default(),
            acl_blocked: Family::default(),
            acl_filtered: Family::default(),
            acl_dropped: Family::default(),
            acl_allowed: Counter::default(),
            template_matches: Family::default(),
            template_failures: Family::default(),
            template_rr_failures: Family::default(),
            local_localhost_requests: Counter::default(),
            file_entries: Family::default(),
        }
    }
}

impl PluginMetrics {
    /// New metrics, registered in `registry` (names as CoreDNS's).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "coredns_forward_requests",
            "Requests sent to each upstream.",
            m.forward_requests.clone(),
        );
        registry.register(
            "coredns_forward_responses",
            "Responses from each upstream by rcode.",
            m.forward_responses.clone(),
        );
        registry.register(
            "coredns_forward_request_duration_seconds",
            "Round trip time to each upstream.",
            m.forward_duration.clone(),
        );
        registry.register(
            "coredns_forward_healthcheck_failures",
            "Failed exchanges and health probes per upstream.",
            m.forward_healthcheck_failures.clone(),
        );
        registry.register(
            "coredns_forward_max_concurrent_rejects",
            "Queries refused because max_concurrent was reached.",
            m.forward_max_concurrent_rejects.clone(),
        );
        registry.register(
            "coredns_forward_mismatched_replies",
            "Upstream messages ignored because their id or question did not match the query.",
            m.forward_mismatches.clone(),
        );
        registry.register(
            "coredns_cache_hits",
            "Cache hits by type.",
            m.cache_hits.clone(),
        );
        registry.register(
            "coredns_cache_misses",
            "Cache misses.",
            m.cache_misses.clone(),
        );
        registry.register(
            "coredns_cache_entries",
            "Entries in the cache by type.",
            m.cache_entries.clone(),
        );
        registry.register(
            "coredns_cache_evictions",
            "Entries evicted by type.",
            m.cache_evictions.clone(),
        );
        registry.register(
            "coredns_cache_prefetch",
            "Prefetches done.",
            m.cache_prefetch.clone(),
        );
        registry.register(
            "coredns_cache_served_stale",
            "Answers served from expired entries.",
            m.cache_served_stale.clone(),
        );
        registry.register(
            "coredns_hosts_entries",
            "Entries of the hosts plugin.",
            m.hosts_entries.clone(),
        );
        registry.register(
            "coredns_autopath_success",
            "Queries answered from another element of the client's search path.",
            m.autopath_success.clone(),
        );
        registry.register(
            "coredns_reload_failed",
            "Corefile reloads that failed (the previous configuration kept serving).",
            m.reload_failed.clone(),
        );
        for (name, help, family) in [
            (
                "coredns_acl_blocked_requests",
                "Counter of DNS requests being blocked.",
                &m.acl_blocked,
            ),
            (
                "coredns_acl_filtered_requests",
                "Counter of DNS requests being filtered.",
                &m.acl_filtered,
            ),
            (
                "coredns_acl_dropped_requests",
                "Counter of DNS requests being dropped.",
                &m.acl_dropped,
            ),
            (
                "coredns_template_matches",
                "Counter of template regex matches.",
                &m.template_matches,
            ),
            (
                "coredns_template_template_failures",
                "Counter of go template failures.",
                &m.template_failures,
            ),
            (
                "coredns_template_rr_failures",
                "Counter of mis-templated RRs.",
                &m.template_rr_failures,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "coredns_acl_allowed_requests",
            "Counter of DNS requests being allowed.",
            m.acl_allowed.clone(),
        );
        registry.register(
            "coredns_local_localhost_requests",
            "Counter of localhost.<domain> requests.",
            m.local_localhost_requests.clone(),
        );
        registry.register(
            "coredns_file_entries",
            "The number of records in each zone served by the file plugin.",
            m.file_entries.clone(),
        );
        m
    }

    /// Records an upstream answer.
    pub(crate) fn observe_forward(&self, to: SocketAddr, rcode: ResponseCode, rtt: Duration) {
        let to = to.to_string();
        self.forward_requests
            .get_or_create(&vec![("to", to.clone())])
            .inc();
        let labels = vec![
            ("to", to),
            ("rcode", crate::dns::metrics::rcode_label(rcode).to_string()),
        ];
        self.forward_responses.get_or_create(&labels).inc();
        self.forward_duration
            .get_or_create(&labels)
            .observe(rtt.as_secs_f64());
    }

    /// Records an upstream message that did not answer its query (`reason`: id, question,
    /// malformed).
    pub(crate) fn forward_mismatch(&self, to: SocketAddr, reason: &'static str) {
        self.forward_mismatches
            .get_or_create(&vec![
                ("to", to.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    /// Records a failed exchange with an upstream.
    pub(crate) fn forward_errors(&self, to: SocketAddr) {
        let labels = vec![("to", to.to_string())];
        self.forward_requests.get_or_create(&labels).inc();
        self.forward_healthcheck_failures
            .get_or_create(&labels)
            .inc();
    }
}
