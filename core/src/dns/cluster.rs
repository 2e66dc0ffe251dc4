//! The `kubernetes` plugin: answers from the live [`ClusterZone`], kept current by a task that
//! watches the cache.
//!
//! The zone sits behind an atomically swapped `Arc` ([`arc_swap`]): a query loads the current
//! zone without locking and never waits for an update; the updater derives the next zone aside
//! (on a blocking thread) and swaps it in whole, so every answer comes from one consistent
//! snapshot. The next zone is derived incrementally ([`ClusterZone::update`]) from the changes
//! the cache journal reports since the served zone's generation; only when the journal no
//! longer reaches back that far (or most services changed) is it built whole.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::task::JoinHandle;

use super::handler::{Next, Plugin, Reply, Request, Response, empty_records};
use super::metrics::DnsMetrics;
use super::wire::is_internet_class;
use super::zone::{Answer, ClusterZone, Lookup, ZoneOptions};
use crate::cache::{CacheReader, Change, Snapshot};

/// The cluster zone plugin (`kubernetes` in a Corefile).
pub struct ClusterPlugin {
    zone: ArcSwap<ClusterZone>,
    options: ZoneOptions,
    /// Lower-case fallthrough zones with trailing dots (`Some(empty)`: all).
    fallthrough: Option<Vec<String>>,
    synced: AtomicBool,
    /// The startup timeout has passed: answer from whatever is cached.
    serving: AtomicBool,
    rebuilds: AtomicU64,
    /// How many of the `rebuilds` were full builds (the rest were incremental updates).
    full_builds: AtomicU64,
    /// Duration of the last zone build in nanoseconds (0: none yet).
    last_build_nanos: AtomicU64,
    /// Serialises writers of `zone` (the updater, [`ClusterPlugin::install`]); queries never
    /// take it.
    writer: Mutex<()>,
    metrics: OnceLock<Arc<DnsMetrics>>,
}

/// How [`ClusterPlugin::refresh`] brought the zone up to a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneRefresh {
    /// Nothing the zone shows changed; the served zone was kept.
    Unchanged,
    /// The zone was derived from the served one by applying this many changes.
    Incremental(usize),
    /// The zone was built whole from the snapshot.
    Full,
}

impl ClusterPlugin {
    /// A plugin serving an empty zone, not yet synced (answers SERVFAIL in its zones until
    /// [`ClusterPlugin::spawn_updater`] has synced or timed out).
    pub fn new(options: ZoneOptions) -> Arc<Self> {
        let empty = ClusterZone::build(&Snapshot::default(), &options);
        let fallthrough = options.fallthrough.as_ref().map(|zones| {
            zones
                .iter()
                .map(|z| format!("{}.", z.trim_end_matches('.').to_ascii_lowercase()))
                .collect()
        });
        Arc::new(Self {
            zone: ArcSwap::from_pointee(empty),
            options,
            fallthrough,
            synced: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            rebuilds: AtomicU64::new(0),
            full_builds: AtomicU64::new(0),
            last_build_nanos: AtomicU64::new(0),
            writer: Mutex::new(()),
            metrics: OnceLock::new(),
        })
    }

    /// The zone currently served.
    pub fn zone(&self) -> Arc<ClusterZone> {
        self.zone.load_full()
    }

    /// Reports zone rebuilds to `metrics` (`svcnet_dns_zone_*`).
    pub(crate) fn set_metrics(&self, metrics: Arc<DnsMetrics>) {
        metrics.zone_state(self.rebuilds(), self.zone.load().service_count());
        let _ = self.metrics.set(metrics);
    }

    /// Whether the cache has synced (what `/ready` reports).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// How many zones were installed so far (full builds and incremental updates).
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    /// How many of the installed zones were built whole.
    pub(crate) fn full_builds(&self) -> u64 {
        self.full_builds.load(Ordering::Relaxed)
    }

    /// Builds and installs the zone of `snapshot` whole, now (startup, tests).
    pub fn install(&self, snapshot: &Snapshot) {
        self.refresh(snapshot, None);
    }

    /// Brings the served zone up to `snapshot`, which must come from the same cache as the
    /// zone's: with `since` (the generation the served zone reflects) only the changes since
    /// then are applied; without it, or when the journal no longer reaches back that far, or
    /// when most services changed, the zone is built whole. The new zone is swapped in at
    /// once; queries keep the old one until then. Runs on the caller's thread.
    pub fn refresh(&self, snapshot: &Snapshot, since: Option<u64>) -> ZoneRefresh {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        let current = self.zone.load_full();
        let changes: Option<BTreeSet<Change>> =
            since.and_then(|g| snapshot.changes_since(g)).map(|all| {
                all.into_iter()
                    .filter(|c| ClusterZone::is_affected_by(&self.options, c))
                    .collect()
            });
        let serial = next_serial(current.serial());
        let (zone, how) = match changes {
            Some(changes) if changes.is_empty() => {
                self.mark_synced(snapshot);
                return ZoneRefresh::Unchanged;
            }
            Some(changes) if changes.len() <= current.service_count() / 2 + 64 => (
                current.update(snapshot, &changes, serial),
                ZoneRefresh::Incremental(changes.len()),
            ),
            _ => {
                // Drop our hold on the served zone first: with only the swap's reference left,
                // memory peaks at the served zone plus the one being built.
                drop(current);
                (
                    ClusterZone::build_with_serial(snapshot, &self.options, serial),
                    ZoneRefresh::Full,
                )
            }
        };
        let services = zone.service_count();
        self.zone.store(Arc::new(zone));
        super::answer_cache::invalidate_all();
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        if how == ZoneRefresh::Full {
            self.full_builds.fetch_add(1, Ordering::Relaxed);
        }
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_build_nanos.store(took.max(1), Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.zone_built(services);
        }
        self.mark_synced(snapshot);
        how
    }

    fn mark_synced(&self, snapshot: &Snapshot) {
        if snapshot.is_synced() {
            let was_synced = self.synced.swap(true, Ordering::AcqRel);
            let was_serving = self.serving.swap(true, Ordering::AcqRel);
            if !(was_synced && was_serving) {
                super::answer_cache::invalidate_all();
            }
        }
    }

    /// How long the last zone build took (`None` before the first).
    pub fn last_build(&self) -> Option<std::time::Duration> {
        match self.last_build_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(std::time::Duration::from_nanos(n)),
        }
    }

    /// Marks the startup timeout as passed: answer from the cache even if it has not synced
    /// (names not found then still answer SERVFAIL, as CoreDNS does).
    pub(crate) fn start_serving(&self) {
        if !self.serving.swap(true, Ordering::AcqRel) {
            super::answer_cache::invalidate_all();
        }
    }

    /// Spawns the task that keeps the zone current with the cache. The first zone is built
    /// once the cache has synced (or after `startup_timeout` without a sync, from whatever is
    /// cached; until then the plugin answers SERVFAIL), or not at all when a zone of the
    /// current snapshot was already [installed](Self::install); after that every new snapshot
    /// is applied incrementally.
    pub fn spawn_updater(
        self: &Arc<Self>,
        mut reader: CacheReader,
        startup_timeout: Duration,
    ) -> JoinHandle<()> {
        let plugin = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + startup_timeout;
            // The generation the served zone reflects (a zone installed before the updater
            // started came from this cache's current snapshot).
            let mut covered: Option<u64> =
                (plugin.rebuilds() > 0).then(|| plugin.zone.load().generation());
            let mut snapshot = reader.snapshot();
            loop {
                let wanted = snapshot.is_synced() || plugin.serving.load(Ordering::Acquire);
                if wanted && covered != Some(snapshot.generation()) {
                    let p = plugin.clone();
                    let s = snapshot.clone();
                    let since = covered;
                    match tokio::task::spawn_blocking(move || p.refresh(&s, since)).await {
                        Ok(_) => covered = Some(snapshot.generation()),
                        Err(_) => {
                            tracing::error!(
                                "updating the cluster zone failed; keeping the last zone \
                                 (the next change rebuilds it whole)"
                            );
                            covered = None;
                        }
                    }
                } else if covered == Some(snapshot.generation()) {
                    plugin.mark_synced(&snapshot);
                }
                tokio::select! {
                    next = reader.changed() => match next {
                        Some(next) => snapshot = next,
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline),
                        if !plugin.serving.load(Ordering::Acquire) =>
                    {
                        tracing::warn!(
                            timeout = ?startup_timeout,
                            "cache not synced: serving the cluster zone with what is cached"
                        );
                        plugin.start_serving();
                    }
                }
            }
        })
    }

    fn falls_through(&self, lower_name: &str) -> bool {
        match &self.fallthrough {
            None => false,
            Some(zones) if zones.is_empty() => true,
            Some(zones) => zones.iter().any(|z| {
                z == "."
                    || lower_name == z
                    || (lower_name.ends_with(z.as_str())
                        && lower_name.as_bytes()[lower_name.len() - z.len() - 1] == b'.')
            }),
        }
    }

    fn respond(&self, zone: &ClusterZone, answer: Answer) -> Response {
        let negative = answer.answers.is_empty();
        let mut resp = Response::with_records(
            answer.rcode,
            answer.answers.into(),
            if negative {
                zone.origins()[answer.origin].soa.clone()
            } else {
                empty_records()
            },
            answer.additionals.into(),
        );
        resp.authoritative = true;
        resp.reusable = true;
        resp
    }
}

impl Plugin for ClusterPlugin {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        if !is_internet_class(req.class()) {
            return next.run(req);
        }
        let zone = self.zone.load();
        let answer = match zone.lookup(req.name(), req.lower_name(), req.record_type()) {
            Lookup::NotServed => return next.run(req),
            Lookup::Answer(a) => a,
        };
        if matches!(req.record_type(), RecordType::AXFR | RecordType::IXFR) {
            return Reply::Ready(Response::refused());
        }
        if !self.serving.load(Ordering::Acquire) {
            return Reply::Ready(Response::servfail());
        }
        if answer.rcode == ResponseCode::NXDomain {
            if self.falls_through(req.lower_name()) && !next.is_end() {
                return next.run(req);
            }
            if !self.synced.load(Ordering::Acquire) {
                return Reply::Ready(Response::servfail());
            }
        }
        Reply::Ready(self.respond(&zone, answer))
    }

    fn ready(&self) -> bool {
        self.is_synced()
    }

    fn cluster_zone(&self) -> Option<Arc<ClusterZone>> {
        self.serving
            .load(Ordering::Acquire)
            .then(|| self.zone.load_full())
    }

    /// Its answers come from the zone and the question alone; it passes the rest on as is.
    fn passes_answers_unchanged(&self) -> bool {
        true
    }
}

/// A serial that grows on every rebuild and tracks the clock (seconds since the epoch) so it
/// also grows across restarts.
fn next_serial(previous: u32) -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    now.max(previous.wrapping_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::new_cache;
    use crate::dns::handler::Chain;
    use crate::dns::zone::fixtures::{FIXTURE, snapshot};
    use crate::model::Kind;
    use hickory_proto::rr::Name;

    fn run(chain: &Chain, name: &str, t: RecordType) -> Response {
        match chain.handle(&Request::new(Name::from_ascii(name).unwrap(), t)) {
            Reply::Ready(r) => r,
            Reply::Pending(_) => panic!("cluster answers are synchronous"),
        }
    }

    #[test]
    fn servfail_until_synced_then_authoritative_answers() {
        let plugin = ClusterPlugin::new(ZoneOptions::default());
        let chain = Chain::new(vec![plugin.clone()]);
        let q = "demoapp-svc.default.svc.cluster.local.";
        assert_eq!(run(&chain, q, RecordType::A).rcode, ResponseCode::ServFail);
        assert!(!plugin.ready());
        plugin.install(&snapshot(FIXTURE));
        let r = run(&chain, q, RecordType::A);
        assert_eq!(
            (r.rcode, r.authoritative, r.answers.len()),
            (ResponseCode::NoError, true, 1)
        );
        assert!(plugin.ready());
        // Negative answers carry the SOA of the origin.
        let nx = run(&chain, "nope.default.svc.cluster.local.", RecordType::A);
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.authority[0].record_type(), RecordType::SOA);
        let nodata = run(&chain, "svc.cluster.local.", RecordType::A);
        assert_eq!(
            (nodata.rcode, nodata.answers.len()),
            (ResponseCode::NoError, 0)
        );
        assert_eq!(nodata.authority.len(), 1);
        // Outside the zone with nothing after: REFUSED. Zone transfers: REFUSED.
        assert_eq!(
            run(&chain, "example.com.", RecordType::A).rcode,
            ResponseCode::Refused
        );
        assert_eq!(
            run(&chain, "cluster.local.", RecordType::AXFR).rcode,
            ResponseCode::Refused
        );
    }

    #[test]
    fn serial_grows_with_every_rebuild() {
        let plugin = ClusterPlugin::new(ZoneOptions::default());
        plugin.install(&snapshot(FIXTURE));
        let first = plugin.zone().serial();
        plugin.install(&snapshot(FIXTURE));
        assert!(plugin.zone().serial() > first);
    }

    struct Marker;
    impl Plugin for Marker {
        fn name(&self) -> &'static str {
            "marker"
        }
        fn handle(&self, _req: &Request, _next: Next) -> Reply {
            Reply::Ready(Response::new(ResponseCode::NotAuth))
        }
    }

    #[test]
    fn fallthrough_passes_misses_in_listed_zones_on() {
        let plugin = ClusterPlugin::new(ZoneOptions {
            fallthrough: Some(vec!["in-addr.arpa".into(), "ip6.arpa".into()]),
            ..ZoneOptions::default()
        });
        plugin.install(&snapshot(FIXTURE));
        let chain = Chain::new(vec![plugin, Arc::new(Marker)]);
        assert_eq!(
            run(&chain, "9.9.9.9.in-addr.arpa.", RecordType::PTR).rcode,
            ResponseCode::NotAuth
        );
        assert_eq!(
            run(&chain, "11.10.96.10.in-addr.arpa.", RecordType::PTR).rcode,
            ResponseCode::NoError
        );
        assert_eq!(
            run(&chain, "nope.default.svc.cluster.local.", RecordType::A).rcode,
            ResponseCode::NXDomain
        );
        assert_eq!(
            run(&chain, "example.com.", RecordType::A).rcode,
            ResponseCode::NotAuth
        );
    }

    #[tokio::test]
    async fn pod_churn_does_not_rebuild_the_zone() {
        let snap = snapshot(FIXTURE);
        let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice, Kind::Pod]);
        for kind in [Kind::Service, Kind::EndpointSlice, Kind::Pod] {
            let objects: Vec<crate::model::ClusterObject> = match kind {
                Kind::Service => snap
                    .services()
                    .map(|s| crate::model::ClusterObject::Service(s.clone()))
                    .collect(),
                _ => Vec::new(),
            };
            writer.replace_kind(kind, objects);
        }
        let plugin = ClusterPlugin::new(ZoneOptions::default());
        let task = plugin.spawn_updater(reader.clone(), Duration::from_secs(5));
        let wait_gen = |g: u64| {
            let mut r = reader.clone();
            async move {
                while r.snapshot().generation() < g {
                    r.changed().await;
                }
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !plugin.is_synced() {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = plugin.rebuilds();
        let pod = snap.pods().next().map(|p| (**p).clone());
        if let Some(pod) = pod {
            let g = writer.apply(crate::model::ClusterObject::from(pod));
            wait_gen(g).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            plugin.rebuilds(),
            before,
            "a pod change leaves the zone alone"
        );
        // A service change does rebuild.
        let svc = snap.services().next().map(|s| (**s).clone()).unwrap();
        let mut changed = svc.clone();
        changed.publish_not_ready_addresses = !svc.publish_not_ready_addresses;
        writer.apply(crate::model::ClusterObject::from(changed));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while plugin.rebuilds() == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "service change not applied"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
    }

    fn fixture_cache() -> (crate::cache::CacheWriter, CacheReader) {
        let snap = snapshot(FIXTURE);
        let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
        let services: Vec<crate::model::ClusterObject> = snap
            .services()
            .map(|s| crate::model::ClusterObject::Service(s.clone()))
            .collect();
        let slices: Vec<crate::model::ClusterObject> = snap
            .endpoint_slices()
            .map(|s| crate::model::ClusterObject::EndpointSlice(s.clone()))
            .collect();
        writer.update(|tx| {
            tx.replace_kind(Kind::Service, services);
            tx.replace_kind(Kind::EndpointSlice, slices);
        });
        (writer, reader)
    }

    #[test]
    fn refresh_applies_only_the_changes_since_the_served_zone() {
        let (mut writer, reader) = fixture_cache();
        let plugin = ClusterPlugin::new(ZoneOptions::default());
        let chain = Chain::new(vec![plugin.clone()]);
        let first = reader.snapshot();
        plugin.install(&first);
        assert_eq!((plugin.rebuilds(), plugin.full_builds()), (1, 1));
        let serial = plugin.zone().serial();
        // A new service: one change, applied incrementally, visible with a new serial.
        let mut svc = (**first
            .service(&crate::model::ObjectKey::new("default", "lonely"))
            .unwrap())
        .clone();
        svc.key = crate::model::ObjectKey::new("default", "newcomer");
        svc.cluster_ips = vec!["10.96.99.1".parse().unwrap()];
        writer.apply(crate::model::ClusterObject::from(svc));
        let next = reader.snapshot();
        assert_eq!(
            plugin.refresh(&next, Some(first.generation())),
            ZoneRefresh::Incremental(1)
        );
        let r = run(&chain, "newcomer.default.svc.cluster.local.", RecordType::A);
        assert_eq!((r.rcode, r.answers.len()), (ResponseCode::NoError, 1));
        let r = run(&chain, "1.99.96.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(r.answers.len(), 1);
        assert!(plugin.zone().serial() > serial);
        assert_eq!((plugin.rebuilds(), plugin.full_builds()), (2, 1));
        // Nothing new: the zone is kept.
        assert_eq!(
            plugin.refresh(&next, Some(next.generation())),
            ZoneRefresh::Unchanged
        );
        assert_eq!(plugin.rebuilds(), 2);
        // Deleting it: NXDOMAIN again, and the old zone (still held) is untouched.
        let held = plugin.zone();
        writer.delete(
            Kind::Service,
            &crate::model::ObjectKey::new("default", "newcomer"),
        );
        let after = reader.snapshot();
        plugin.refresh(&after, Some(next.generation()));
        let r = run(&chain, "newcomer.default.svc.cluster.local.", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        let q = Name::from_ascii("newcomer.default.svc.cluster.local.").unwrap();
        assert!(matches!(
            held.lookup(&q, "newcomer.default.svc.cluster.local.", RecordType::A),
            Lookup::Answer(a) if a.answers.len() == 1
        ));
        // Without a base generation the zone is built whole.
        assert_eq!(plugin.refresh(&after, None), ZoneRefresh::Full);
    }

    async fn settle(plugin: &ClusterPlugin) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !plugin.is_synced() {
            assert!(tokio::time::Instant::now() < deadline, "never synced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn an_installed_zone_is_not_built_again_by_the_updater() {
        let (_writer, reader) = fixture_cache();
        let plugin = ClusterPlugin::new(ZoneOptions::default());
        plugin.install(&reader.snapshot());
        let task = plugin.spawn_updater(reader, Duration::from_secs(5));
        settle(&plugin).await;
        assert_eq!((plugin.rebuilds(), plugin.full_builds()), (1, 1));
        task.abort();
    }

    #[tokio::test]
    async fn the_first_zone_waits_for_the_sync_and_is_built_once() {
        let snap = snapshot(FIXTURE);
        let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
        let plugin = ClusterPlugin::new(ZoneOptions::default());
        let task = plugin.spawn_updater(reader, Duration::from_secs(5));
        // Services arrive first (not synced yet), the slices later.
        writer.replace_kind(
            Kind::Service,
            snap.services()
                .map(|s| crate::model::ClusterObject::Service(s.clone()))
                .collect(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(plugin.rebuilds(), 0, "no zone from a partial cache");
        writer.replace_kind(
            Kind::EndpointSlice,
            snap.endpoint_slices()
                .map(|s| crate::model::ClusterObject::EndpointSlice(s.clone()))
                .collect(),
        );
        settle(&plugin).await;
        assert_eq!((plugin.rebuilds(), plugin.full_builds()), (1, 1));
        // Later changes are incremental.
        let mut svc = (**snap.services().next().unwrap()).clone();
        svc.publish_not_ready_addresses = !svc.publish_not_ready_addresses;
        writer.apply(crate::model::ClusterObject::from(svc));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while plugin.rebuilds() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "change not applied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(plugin.full_builds(), 1);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_sync_the_zone_is_built_after_the_startup_timeout() {
        let snap = snapshot(FIXTURE);
        let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
        writer.replace_kind(
            Kind::Service,
            snap.services()
                .map(|s| crate::model::ClusterObject::Service(s.clone()))
                .collect(),
        );
        let plugin = ClusterPlugin::new(ZoneOptions::default());
        let chain = Chain::new(vec![plugin.clone()]);
        let task = plugin.spawn_updater(reader, Duration::from_secs(2));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let q = "demoapp-svc.default.svc.cluster.local.";
        assert_eq!(run(&chain, q, RecordType::A).rcode, ResponseCode::ServFail);
        tokio::time::sleep(Duration::from_secs(2)).await;
        for _ in 0..100 {
            if plugin.rebuilds() > 0 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = run(&chain, q, RecordType::A);
        assert_eq!((r.rcode, r.answers.len()), (ResponseCode::NoError, 1));
        assert!(!plugin.is_synced());
        task.abort();
    }

    #[tokio::test]
    async fn updater_follows_the_cache() {
        let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
        let plugin = ClusterPlugin::new(ZoneOptions::default());
        let task = plugin.spawn_updater(reader, Duration::from_secs(5));
        let chain = Chain::new(vec![plugin.clone()]);
        let snap = snapshot(FIXTURE);
        let services: Vec<_> = snap
            .services()
            .map(|s| crate::model::ClusterObject::Service(s.clone()))
            .collect();
        writer.replace_kind(Kind::Service, services);
        writer.replace_kind(
            Kind::EndpointSlice,
            Vec::<crate::model::ClusterObject>::new(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let r = run(
                &chain,
                "demoapp-svc.default.svc.cluster.local.",
                RecordType::A,
            );
            if r.rcode == ResponseCode::NoError && r.answers.len() == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "zone never updated: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(plugin.is_synced());
        task.abort();
    }
}
