//! `/healthz` and `/livez` (default `:10256`) and `/metrics` (default `127.0.0.1:10249`) with
//! kube-proxy's metric names, from a prometheus-client [`Registry`] owned by the proxy.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hyper::StatusCode;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::config::ProxyConfig;
use super::run::{StatusHandle, SyncEvent};
use crate::runtime::http::{Endpoint, Reply, Routes};

/// The proxy's metrics, registered in their own [`Registry`].
pub struct ProxyMetrics {
    registry: Registry,
    sync_duration: Histogram,
    full_sync_duration: Histogram,
    programming: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    operations: Counter,
    failures: Counter,
}

impl std::fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyMetrics").finish_non_exhaustive()
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sync_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 20));
        let full_sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let programming = Histogram::new(exponential_buckets(0.0001, 2.0, 20));
        let last_sync = Gauge::<f64, AtomicU64>::default();
        let operations = Counter::default();
        let failures = Counter::default();
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            full_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            last_sync.clone(),
        );
        registry.register(
            "svcnet_ipvs_operations",
            "IPVS netlink operations applied",
            operations.clone(),
        );
        registry.register(
            "svcnet_ipvs_sync_failures",
            "Syncs or operations that failed",
            failures.clone(),
        );
        Self {
            registry,
            sync_duration,
            full_sync_duration,
            programming,
            last_sync,
            operations,
            failures,
        }
    }

    /// Records one sync.
    pub fn observe(&self, e: &SyncEvent) {
        self.sync_duration.observe(e.duration.as_secs_f64());
        if e.report.full {
            self.full_sync_duration.observe(e.duration.as_secs_f64());
        }
        if let Some(l) = e.programming_latency {
            self.programming.observe(l.as_secs_f64());
        }
        self.operations.inc_by(e.report.operations() as u64);
        if e.failed || e.report.failures > 0 {
            self.failures.inc();
        } else {
            self.last_sync.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or_default(),
            );
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// A [`StatusHandle`] whose syncs feed `metrics`.
pub fn status_with_metrics(metrics: Arc<ProxyMetrics>) -> StatusHandle {
    StatusHandle::with_observer(Arc::new(move |e| metrics.observe(e)))
}

/// An empty table answering unknown paths as kube-proxy's servers do (no content type).
fn kube_proxy_routes() -> Routes {
    Routes::new().not_found(|_| Reply::bare(StatusCode::NOT_FOUND, "not found\n"))
}

/// The endpoints of `config`: `/healthz` and `/livez` on `healthzBindAddress`, `/metrics` on
/// `metricsBindAddress`. A bind failure is logged, not fatal (the proxy's job is the kernel
/// table); the composition root binds and serves them.
pub fn endpoints(
    config: &ProxyConfig,
    status: StatusHandle,
    metrics: Arc<ProxyMetrics>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let period = config.sync_period;
    if let Some(addr) = config.healthz_bind_address {
        let healthz = move |_: &str| {
            let s = status.get();
            let body = format!(
                "{{\"lastUpdated\": {:?}, \"syncs\": {}, \"lastError\": {:?}}}",
                s.last_sync_unix.unwrap_or_default(),
                s.syncs,
                s.last_error.unwrap_or_default()
            );
            if status.healthy(period) {
                Reply::bare(StatusCode::OK, body)
            } else {
                Reply::bare(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        };
        let healthz = Arc::new(healthz);
        let livez = healthz.clone();
        out.push(Endpoint {
            what: "healthz",
            addr,
            routes: kube_proxy_routes()
                .route("/healthz", move |p| healthz(p))
                .route("/livez", move |p| livez(p)),
            required: false,
        });
    }
    if let Some(addr) = config.metrics_bind_address {
        out.push(Endpoint {
            what: "metrics",
            addr,
            routes: kube_proxy_routes().route("/metrics", move |_| {
                Reply::bare(StatusCode::OK, metrics.encode())
            }),
            required: false,
        });
    }
    out
}

/// Declares the [`endpoints`] of the configuration in `config` to `tx` and follows it live: a
/// changed `healthzBindAddress`, `metricsBindAddress` or `syncPeriod` sends a new set (the
/// composition root re-binds what moved). The task ends when the configuration's sender is
/// dropped.
pub fn declare_following(
    mut config: watch::Receiver<ProxyConfig>,
    status: StatusHandle,
    metrics: Arc<ProxyMetrics>,
    tx: watch::Sender<Vec<Endpoint>>,
) -> tokio::task::JoinHandle<()> {
    let mut current = config.borrow_and_update().clone();
    tx.send_replace(endpoints(&current, status.clone(), metrics.clone()));
    tokio::spawn(async move {
        while config.changed().await.is_ok() {
            let next = config.borrow_and_update().clone();
            if next.healthz_bind_address != current.healthz_bind_address
                || next.metrics_bind_address != current.metrics_bind_address
                || next.sync_period != current.sync_period
            {
                tracing::info!(healthz = ?next.healthz_bind_address, metrics = ?next.metrics_bind_address, "proxy health and metrics endpoints changed");
                tx.send_replace(endpoints(&next, status.clone(), metrics.clone()));
            }
            current = next;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::reconcile::SyncReport;
    use std::net::SocketAddr;
    use std::time::Duration;

    #[test]
    fn metrics_use_kube_proxy_names_and_record_syncs() {
        let m = ProxyMetrics::new();
        m.observe(&SyncEvent {
            duration: Duration::from_millis(3),
            programming_latency: Some(Duration::from_millis(5)),
            report: SyncReport {
                full: true,
                services_added: 2,
                ..SyncReport::default()
            },
            failed: false,
        });
        let text = m.encode();
        for name in [
            "kubeproxy_sync_proxy_rules_duration_seconds_count 1",
            "kubeproxy_network_programming_duration_seconds_count 1",
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count 1",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds ",
            "svcnet_ipvs_operations_total 2",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_health_and_metrics_on_configured_addresses() {
        let config = ProxyConfig {
            healthz_bind_address: Some("127.0.0.1:0".parse().unwrap()),
            metrics_bind_address: Some("127.0.0.1:0".parse().unwrap()),
            ..ProxyConfig::default()
        };
        let metrics = Arc::new(ProxyMetrics::new());
        let status = status_with_metrics(metrics.clone());
        let declared = endpoints(&config, status, metrics);
        assert!(
            declared.iter().all(|e| !e.required),
            "bind failures are not fatal"
        );
        let mut set = crate::runtime::http::EndpointSet::new();
        set.apply(&declared).await.unwrap();
        let bound = set.bound();
        let at = |what: &str| bound.iter().find(|(w, _)| *w == what).unwrap().1;
        let health = get(at("healthz"), "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let live = get(at("healthz"), "/livez").await;
        assert!(live.starts_with("HTTP/1.1 200"), "{live}");
        let m = get(at("metrics"), "/metrics").await;
        assert!(
            m.contains("kubeproxy_sync_proxy_rules_duration_seconds"),
            "{m}"
        );
        let missing = get(at("metrics"), "/nope").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }

    #[tokio::test]
    async fn a_changed_bind_address_declares_a_new_set() {
        let config = ProxyConfig {
            healthz_bind_address: Some("127.0.0.1:10256".parse().unwrap()),
            metrics_bind_address: None,
            ..ProxyConfig::default()
        };
        let metrics = Arc::new(ProxyMetrics::new());
        let status = status_with_metrics(metrics.clone());
        let (tx, rx) = watch::channel(config.clone());
        let (declare, mut declared) = watch::channel(Vec::new());
        let task = declare_following(rx, status, metrics, declare);
        let addrs = |d: &[Endpoint]| d.iter().map(|e| (e.what, e.addr)).collect::<Vec<_>>();
        assert_eq!(
            addrs(&declared.borrow_and_update()),
            vec![("healthz", "127.0.0.1:10256".parse().unwrap())]
        );
        tx.send_replace(ProxyConfig {
            metrics_bind_address: Some("127.0.0.1:10249".parse().unwrap()),
            ..config
        });
        tokio::time::timeout(Duration::from_secs(5), declared.changed())
            .await
            .expect("a new set")
            .unwrap();
        assert_eq!(addrs(&declared.borrow()).len(), 2);
        drop(tx);
        task.await.unwrap();
    }
}
