//! The proxy's control loop: waits for the cache to sync, programs the kernel fully once, then
//! follows cache changes incrementally, with periodic full resyncs, draining checks and live
//! configuration changes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::backend::BackendError;
use super::config::ProxyConfig;
use super::conntrack::{ConntrackBackend, StaleTracker};
use super::desired::{Delta, DesiredState, NodeInfo, build};
use super::reconcile::{Reconciler, SyncReport};
use super::view::ViewPublisher;
use crate::cache::CacheReader;

/// How often draining real servers are checked for remaining connections.
pub(crate) const DRAIN_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Errors that stop the proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The cache never reported synced.
    #[error("the cluster cache did not sync within {0:?}")]
    NotSynced(Duration),
    /// The kernel could not be read or programmed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The blocking worker panicked or was cancelled.
    #[error("proxy worker failed: {0}")]
    Worker(String),
}

/// Hooks run around syncs: kernel settings and packet filtering that follow the config and the
/// desired state (sysctls, IPVS timeouts, ipsets, iptables).
pub trait HostSetup: Send {
    /// Called with a new configuration before the full sync that applies it.
    fn apply_config(&mut self, config: &ProxyConfig) -> Result<(), BackendError>;
    /// Called with the desired state of every sync: before the IPVS writes of a full sync (so
    /// the filters are in force before the addresses and virtual servers they guard), after
    /// those of an incremental one (rate-limited, batching several).
    fn after_sync(
        &mut self,
        desired: &DesiredState,
        config: &ProxyConfig,
        node: &NodeInfo,
    ) -> Result<(), BackendError>;
    /// Whether an update was deferred (rate limit) and [`after_sync`](Self::after_sync) should
    /// be called again soon even without a new sync.
    fn has_pending(&self) -> bool {
        false
    }
    /// Called after every build or update of the desired state, before the sync, with what
    /// changed (`delta.full` after a build). The state's [`view`](DesiredState::view) holds the
    /// per-service inputs that are not in the IPVS table (health-check node ports,
    /// load-balancer source ranges, local endpoints); a change the table does not see makes
    /// [`has_pending`](Self::has_pending) true. The deltas let the host update its sets in
    /// proportion to the change.
    fn observe_update(&mut self, _desired: &DesiredState, _delta: &Delta) {}
    /// Where stale UDP/SCTP conntrack entries are deleted after each sync (see
    /// [`super::conntrack`]); `None` (the default): no cleanup.
    fn conntrack(&mut self) -> Option<&mut dyn ConntrackBackend> {
        None
    }
}

/// How long after a deferred host update the loop retries it.
pub(crate) const HOST_RETRY: Duration = Duration::from_millis(250);

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// This node's name, for `Local` traffic policies (overridden by `hostnameOverride`).
    pub node_name: Option<Arc<str>>,
    /// Node addresses to use instead of reading them from the kernel.
    pub node_addresses: Option<Vec<std::net::IpAddr>>,
    /// How long to wait for the cache to sync before giving up.
    pub sync_timeout: Duration,
    /// Program once and return (tests).
    pub once: bool,
    /// Where each step of the proxy's one per-Service view goes (the health-check task's
    /// feed, see [`view_feed`](super::view::view_feed)); `None`: nowhere.
    pub view_feed: Option<ViewPublisher>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            node_name: None,
            node_addresses: None,
            sync_timeout: Duration::from_secs(300),
            once: false,
            view_feed: None,
        }
    }
}

/// What the proxy reports about itself (health, metrics, `agentctl`).
#[derive(Debug, Clone, Default)]
pub struct ProxyStatus {
    /// When the last sync finished.
    pub last_sync: Option<Instant>,
    /// Wall-clock time of the last successful sync (seconds since the epoch).
    pub last_sync_unix: Option<f64>,
    /// The last sync's report.
    pub last_report: SyncReport,
    /// Duration of the last sync.
    pub last_duration: Duration,
    /// Virtual servers desired.
    pub services: usize,
    /// Real servers desired.
    pub dests: usize,
    /// Syncs done (full and incremental).
    pub syncs: u64,
    /// Full syncs done.
    pub full_syncs: u64,
    /// The last error, if the last sync failed.
    pub last_error: Option<String>,
    /// The configuration in force.
    pub scheduler: String,
}

/// A callback run after every sync (metrics).
pub(crate) type SyncObserver = Arc<dyn Fn(&SyncEvent) + Send + Sync>;

/// A shared [`ProxyStatus`], plus a sync observer for metrics.
#[derive(Clone, Default)]
pub struct StatusHandle {
    inner: Arc<Mutex<ProxyStatus>>,
    observer: Option<SyncObserver>,
}

impl std::fmt::Debug for StatusHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusHandle")
            .field("status", &self.get())
            .finish()
    }
}

/// One finished sync, as observers see it.
#[derive(Debug, Clone)]
pub struct SyncEvent {
    /// Wall time the sync took (desired-state update plus kernel programming).
    pub duration: Duration,
    /// Time from the cache publishing the change to the kernel having it (incremental syncs).
    pub programming_latency: Option<Duration>,
    /// The report.
    pub report: SyncReport,
    /// Whether it failed.
    pub failed: bool,
}

impl StatusHandle {
    /// A handle that also calls `observer` after every sync.
    pub(crate) fn with_observer(observer: SyncObserver) -> Self {
        Self {
            inner: Arc::default(),
            observer: Some(observer),
        }
    }

    /// A copy of the status.
    pub fn get(&self) -> ProxyStatus {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut ProxyStatus)) {
        if let Ok(mut s) = self.inner.lock() {
            f(&mut s);
        }
    }

    fn observe(&self, event: &SyncEvent) {
        if let Some(o) = &self.observer {
            o(event);
        }
    }

    /// Healthy when the last sync succeeded and happened within `2 × sync_period` (or no sync
    /// has been due yet).
    pub fn healthy(&self, sync_period: Duration) -> bool {
        let s = self.get();
        s.last_error.is_none()
            && s.last_sync
                .is_none_or(|t| t.elapsed() <= sync_period * 2 + Duration::from_secs(5))
    }
}

struct Worker {
    rec: Reconciler,
    host: Option<Box<dyn HostSetup>>,
    desired: DesiredState,
    config: ProxyConfig,
    node: NodeInfo,
    stale: StaleTracker,
    /// Stale conntrack filters waiting for the host setup (ipsets, iptables) to be in place.
    ct_pending: Vec<super::conntrack::ConntrackFilter>,
}

impl Worker {
    fn node_info(&mut self, options: &RunOptions) -> NodeInfo {
        let node_name = self
            .config
            .hostname_override
            .as_deref()
            .map(Arc::from)
            .or_else(|| options.node_name.clone());
        let local_addresses = match &options.node_addresses {
            Some(a) => a.clone(),
            None => self
                .rec
                .addresses_mut()
                .local_addresses()
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "reading node addresses failed");
                    self.node.local_addresses.clone()
                }),
        };
        NodeInfo {
            node_name,
            local_addresses,
        }
    }

    fn full(
        &mut self,
        snapshot: &crate::cache::Snapshot,
        options: &RunOptions,
    ) -> Result<SyncReport, BackendError> {
        let started = Instant::now();
        self.node = self.node_info(options);
        // Dropped before the rebuild, so the two never take memory at the same time.
        self.desired = DesiredState::default();
        self.desired = build(snapshot, &self.config, &self.node);
        if let Some(feed) = &options.view_feed {
            feed.publish(self.desired.view());
        }
        if let Some(h) = self.host.as_mut() {
            let everything = Delta {
                full: true,
                ..Delta::default()
            };
            h.observe_update(&self.desired, &everything);
        }
        let built = started.elapsed();
        // Host rules first: the kube-ipvs0 filter and the source-range firewall must be in
        // force before the addresses they guard are bound and the virtual servers they restrict
        // exist (ARCHITECTURE.md, "Write order of a full sync").
        self.host_setup();
        let hosted = started.elapsed();
        let report = self.rec.full_sync(&self.desired, &self.config)?;
        self.find_stale_conntrack(None);
        self.clean_conntrack_unless_host_pending();
        let usage = crate::telemetry::ProcessUsage::now();
        tracing::debug!(
            cpu_ms = usage.cpu_ms,
            page_faults = usage.minor_faults,
            desired_ms = built.as_secs_f64() * 1000.0,
            host_ms = (hosted - built).as_secs_f64() * 1000.0,
            kernel_ms = (started.elapsed() - hosted).as_secs_f64() * 1000.0,
            "full sync phases"
        );
        // The transient memory of the sync (the previous desired state, the host rules'
        // renderings, the kernel's listing) goes back to the system now, not whenever the
        // allocator next runs.
        crate::memtrim::burst_ended();
        Ok(report)
    }

    fn incremental(
        &mut self,
        snapshot: &crate::cache::Snapshot,
        options: &RunOptions,
    ) -> Result<SyncReport, BackendError> {
        if self.rec.needs_full() {
            return self.full(snapshot, options);
        }
        let delta = self.desired.update(snapshot, &self.config, &self.node);
        if let Some(feed) = &options.view_feed {
            feed.publish(self.desired.view());
        }
        if let Some(h) = self.host.as_mut() {
            h.observe_update(&self.desired, &delta);
        }
        if delta.is_empty() {
            return Ok(SyncReport::default());
        }
        let report = self.rec.sync_delta(&self.desired, &delta, &self.config)?;
        self.find_stale_conntrack((!delta.full).then_some(&delta.services));
        self.after_sync();
        Ok(report)
    }

    /// Records which conntrack entries the sync just applied made stale (UDP/SCTP only; nothing
    /// when no such virtual server lost a real server or got its first). `changed`: the virtual
    /// servers the sync touched (`None`: all). They are deleted by [`after_sync`](Self::after_sync)
    /// once the host setup is in place, as kube-proxy deletes them at the end of its sync: a packet
    /// that made a new entry before the ipsets and iptables rules were updated (a hairpin flow's
    /// masquerade, `KUBE-LOOP-BACK`) would leave a stale entry of its own.
    fn find_stale_conntrack(
        &mut self,
        changed: Option<&std::collections::BTreeSet<super::ServiceId>>,
    ) {
        if self.host.as_mut().and_then(|h| h.conntrack()).is_none() {
            return;
        }
        let filters = self.stale.observe(&self.desired, changed);
        if filters.is_empty() {
            return;
        }
        self.ct_pending.extend(filters);
        self.ct_pending.sort_unstable();
        self.ct_pending.dedup();
    }

    /// Deletes the pending stale conntrack entries (one call for all of them; the IPVS change and
    /// the host setup were applied before, so the deletion is off the IPVS critical path).
    fn clean_conntrack(&mut self) {
        if self.ct_pending.is_empty() {
            return;
        }
        let Some(ct) = self.host.as_mut().and_then(|h| h.conntrack()) else {
            return;
        };
        let filters = std::mem::take(&mut self.ct_pending);
        let started = Instant::now();
        match ct.delete_matching(&filters) {
            Ok(r) => tracing::info!(
                filters = filters.len(),
                scanned = r.scanned,
                deleted = r.deleted,
                round_trips = r.round_trips,
                ms = started.elapsed().as_secs_f64() * 1000.0,
                first = %filters[0],
                "deleted stale conntrack entries"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                filters = filters.len(),
                first = %filters[0],
                "deleting stale conntrack entries failed"
            ),
        }
    }

    /// The host setup (ipsets, iptables rules) for the current desired state; a failure is
    /// logged and retried by the host setup itself, and never stops the IPVS sync.
    fn host_setup(&mut self) {
        if let Some(h) = self.host.as_mut()
            && let Err(e) = h.after_sync(&self.desired, &self.config, &self.node)
        {
            tracing::warn!(error = %e, "host setup after sync failed");
        }
    }

    /// The host setup after a sync, then the conntrack cleanup once the host setup is not
    /// deferred (a deferred update comes back as [`Job::Host`], which calls this again).
    fn after_sync(&mut self) {
        self.host_setup();
        self.clean_conntrack_unless_host_pending();
    }

    /// The conntrack cleanup, unless the host update was deferred (it runs once that is done).
    fn clean_conntrack_unless_host_pending(&mut self) {
        if !self.host.as_ref().is_some_and(|h| h.has_pending()) {
            self.clean_conntrack();
        }
    }
}

enum Job {
    Full,
    Incremental,
    Reap,
    Host,
    Config(Box<ProxyConfig>),
}

async fn on_worker(
    worker: Worker,
    snapshot: Arc<crate::cache::Snapshot>,
    options: RunOptions,
    job: Job,
) -> Result<(Worker, Result<SyncReport, BackendError>), ProxyError> {
    tokio::task::spawn_blocking(move || {
        let mut w = worker;
        let r = match job {
            Job::Full => w.full(&snapshot, &options),
            Job::Incremental => w.incremental(&snapshot, &options),
            Job::Reap => w.rec.reap_terminating(),
            Job::Host => {
                w.after_sync();
                Ok(SyncReport::default())
            }
            Job::Config(c) => {
                w.config = *c;
                if let Some(h) = w.host.as_mut()
                    && let Err(e) = h.apply_config(&w.config)
                {
                    tracing::warn!(error = %e, "applying kernel settings failed");
                }
                w.full(&snapshot, &options)
            }
        };
        (w, r)
    })
    .await
    .map_err(|e| ProxyError::Worker(e.to_string()))
}

/// Runs the proxy until `shutdown` turns true (or once, with [`RunOptions::once`]).
///
/// `config` carries the configuration; a new value published on it takes effect live (every
/// field: the scheduler change updates every virtual server in place). `host` applies kernel
/// settings and packet filtering; `None` programs IPVS and addresses only.
pub async fn run(
    mut reader: CacheReader,
    reconciler: Reconciler,
    host: Option<Box<dyn HostSetup>>,
    mut config: watch::Receiver<ProxyConfig>,
    options: RunOptions,
    status: StatusHandle,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProxyError> {
    if !reader.wait_synced(options.sync_timeout).await {
        return Err(ProxyError::NotSynced(options.sync_timeout));
    }
    {
        let snapshot = reader.snapshot();
        let usage = crate::telemetry::ProcessUsage::now();
        tracing::info!(
            services = snapshot.service_count(),
            endpoint_slices = snapshot.endpoint_slice_count(),
            cpu_ms = usage.cpu_ms,
            page_faults = usage.minor_faults,
            "cluster state received"
        );
    }
    let initial = config.borrow_and_update().clone();
    let mut worker = Worker {
        rec: reconciler,
        host,
        desired: DesiredState::default(),
        config: initial.clone(),
        node: NodeInfo::default(),
        stale: StaleTracker::new(),
        ct_pending: Vec::new(),
    };
    let mut job = Job::Config(Box::new(initial));
    let mut pending_since: Option<Instant> = None;
    let mut last_sync = Instant::now() - Duration::from_secs(3600);
    let mut last_full = Instant::now();
    let mut config_open = true;
    let mut shutdown_open = true;
    loop {
        let snapshot = reader.snapshot();
        let full = !matches!(job, Job::Incremental | Job::Reap | Job::Host);
        let is_reap = matches!(job, Job::Reap | Job::Host);
        let started = Instant::now();
        let (w, result) = on_worker(worker, snapshot, options.clone(), job).await?;
        worker = w;
        let duration = started.elapsed();
        if !is_reap {
            last_sync = Instant::now();
            if full {
                last_full = last_sync;
            }
        }
        match &result {
            Ok(report) => {
                if report.operations() > 0 || report.full {
                    tracing::info!(
                        full = report.full,
                        added = report.services_added,
                        updated = report.services_updated,
                        deleted = report.services_deleted,
                        dests_added = report.dests_added,
                        dests_updated = report.dests_updated,
                        dests_deleted = report.dests_deleted,
                        bound = report.addresses_bound,
                        unbound = report.addresses_unbound,
                        failures = report.failures,
                        ms = duration.as_secs_f64() * 1000.0,
                        "synced"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "sync failed"),
        }
        if !is_reap {
            let latency = pending_since.take().map(|t| t.elapsed());
            let event = SyncEvent {
                duration,
                programming_latency: latency,
                report: result.as_ref().cloned().unwrap_or_default(),
                failed: result.is_err(),
            };
            status.observe(&event);
            let (services, dests) = (worker.desired.len(), worker.desired.dest_count());
            let scheduler = worker.config.scheduler.to_string();
            status.update(|s| {
                s.syncs += 1;
                if event.report.full {
                    s.full_syncs += 1;
                }
                s.last_duration = duration;
                s.services = services;
                s.dests = dests;
                s.scheduler = scheduler;
                match &result {
                    Ok(r) => {
                        s.last_sync = Some(Instant::now());
                        s.last_sync_unix = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_secs_f64());
                        s.last_report = r.clone();
                        s.last_error = None;
                    }
                    Err(e) => s.last_error = Some(e.to_string()),
                }
            });
        }
        if options.once {
            return result.map(|_| ()).map_err(ProxyError::from);
        }

        // Wait for the next thing to do.
        let sync_period = worker.config.sync_period.max(Duration::from_secs(1));
        let min_gap = worker.config.min_sync_period;
        let next_full = last_full + sync_period;
        let host_pending = worker.host.as_ref().is_some_and(|h| h.has_pending());
        let drain = if worker.rec.draining_count() > 0 {
            Some(DRAIN_CHECK_INTERVAL)
        } else {
            None
        };
        job = tokio::select! {
            biased;
            r = shutdown.changed(), if shutdown_open => {
                if r.is_err() {
                    shutdown_open = false;
                } else if *shutdown.borrow() {
                    return Ok(());
                }
                Job::Incremental
            }
            r = config.changed(), if config_open => {
                if r.is_err() {
                    config_open = false;
                    Job::Incremental
                } else {
                    Job::Config(Box::new(config.borrow_and_update().clone()))
                }
            }
            snap = reader.changed() => {
                if snap.is_none() {
                    // The source is gone: keep the kernel as it is until shutdown.
                    let _ = shutdown.wait_for(|s| *s).await;
                    return Ok(());
                }
                pending_since.get_or_insert_with(Instant::now);
                let since = last_sync.elapsed();
                if since < min_gap {
                    tokio::time::sleep(min_gap - since).await;
                }
                Job::Incremental
            }
            _ = tokio::time::sleep_until(next_full.into()) => Job::Full,
            _ = tokio::time::sleep(drain.unwrap_or(Duration::from_secs(3600))), if drain.is_some() => Job::Reap,
            _ = tokio::time::sleep(HOST_RETRY), if host_pending => Job::Host,
        };
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
