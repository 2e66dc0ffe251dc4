//! `cache`: answers repeated questions from memory (CoreDNS's cache plugin).
//!
//! Entries are keyed by lower-case name, type, class and the DO/CD bits, and kept in two
//! sharded maps (success and denial) with their own capacity and TTL bounds. A hit is a hash
//! lookup plus a clone of a prepared response whose TTLs are rewritten at most once a second
//! (all records carry the remaining TTL, as in CoreDNS). Cluster-zone answers are cached too:
//! the plugin sits before `kubernetes` in the chain.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Record, RecordType};

use super::metrics::PluginMetrics;
use crate::dns::corefile::names::in_zone;
use crate::dns::corefile::{CacheConfig, CacheTier};
use crate::dns::handler::{Next, Plugin, Records, Reply, Request, Response};

const SHARDS: usize = 64;
/// TTL used for answers without any record (CoreDNS's fail-safe TTL).
const FAILSAFE_TTL: u32 = 5;

/// Which map an answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// NOERROR with answers.
    Success,
    /// NXDOMAIN, NODATA and (for a short time) SERVFAIL.
    Denial,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Success => "success",
            Kind::Denial => "denial",
        }
    }
}

/// The cache plugin.
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CacheConfig,
    success: Store,
    denial: Store,
    epoch: Instant,
    hasher: foldhash::fast::FixedState,
    metrics: Option<PluginMetrics>,
    /// Hit counters by kind, looked up once (a hit costs one atomic add).
    hit_counters: Option<[prometheus_client::metrics::counter::Counter; 2]>,
}

struct Store {
    shards: Vec<RwLock<HashMap<u64, Arc<Entry>>>>,
    per_shard: usize,
    len: AtomicU64,
}

/// One cached answer.
struct Entry {
    name: Box<str>,
    qtype: RecordType,
    class: u16,
    flags: u8,
    /// The answer as received (original TTLs).
    original: Response,
    /// Seconds since the cache epoch when stored.
    stored: u64,
    /// TTL it is kept with (clamped).
    ttl: u32,
    /// The answer with TTLs as of second `view.0` after `stored`.
    view: ArcSwap<(u64, Response)>,
    /// Prefetch accounting: hits in the current window and the window start (seconds).
    hits: AtomicU32,
    window_start: AtomicU64,
    refreshing: AtomicBool,
}

impl Store {
    fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            len: AtomicU64::new(0),
        }
    }

    fn get(&self, key: u64) -> Option<Arc<Entry>> {
        let shard = self.shards[(key as usize) % SHARDS]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        shard.get(&key).cloned()
    }

    /// Inserts; returns whether an entry was evicted to make room.
    fn insert(&self, key: u64, entry: Arc<Entry>) -> bool {
        let mut shard = self.shards[(key as usize) % SHARDS]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut evicted = false;
        if !shard.contains_key(&key) && shard.len() >= self.per_shard {
            // As CoreDNS: evict an arbitrary entry of the full shard.
            if let Some(victim) = shard.keys().next().copied() {
                shard.remove(&victim);
                self.len.fetch_sub(1, Ordering::Relaxed);
                evicted = true;
            }
        }
        if shard.insert(key, entry).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        evicted
    }

    fn remove(&self, key: u64) {
        let mut shard = self.shards[(key as usize) % SHARDS]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if shard.remove(&key).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn with_ttl(records: &Records, ttl: u32) -> Records {
    if records.is_empty() {
        return records.clone();
    }
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.ttl = ttl;
            r
        })
        .collect::<Vec<Record>>()
        .into()
}

fn response_with_ttl(resp: &Response, ttl: u32) -> Response {
    Response {
        answers: with_ttl(&resp.answers, ttl),
        authority: with_ttl(&resp.authority, ttl),
        additionals: with_ttl(&resp.additionals, ttl),
        ..resp.clone()
    }
}

/// Classifies an answer and finds its TTL before clamping (`None`: not cacheable).
fn classify(resp: &Response) -> Option<(Kind, u32)> {
    let kind = match resp.rcode {
        ResponseCode::NoError if !resp.answers.is_empty() => Kind::Success,
        ResponseCode::NoError | ResponseCode::NXDomain => Kind::Denial,
        ResponseCode::ServFail => return Some((Kind::Denial, 0)),
        _ => return None,
    };
    let mut min: Option<u32> = None;
    for r in resp
        .answers
        .iter()
        .chain(resp.authority.iter())
        .chain(resp.additionals.iter())
    {
        if r.record_type() == RecordType::OPT {
            continue;
        }
        let mut ttl = r.ttl;
        if let hickory_proto::rr::RData::SOA(soa) = &r.data
            && kind == Kind::Denial
        {
            ttl = ttl.min(soa.minimum);
        }
        min = Some(min.map_or(ttl, |m| m.min(ttl)));
    }
    Some((kind, min.unwrap_or(FAILSAFE_TTL)))
}

fn clamp(ttl: u32, tier: &CacheTier) -> u32 {
    let t = Duration::from_secs(u64::from(ttl)).clamp(tier.min_ttl, tier.max_ttl);
    t.as_secs() as u32
}

impl Cache {
    /// A cache with `cfg`.
    pub fn new(cfg: CacheConfig, metrics: Option<PluginMetrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                success: Store::new(cfg.success.capacity),
                denial: Store::new(cfg.denial.capacity),
                cfg,
                epoch: Instant::now(),
                hasher: foldhash::fast::FixedState::with_seed(fastrand::u64(..)),
                hit_counters: metrics.as_ref().map(|m| {
                    [Kind::Success, Kind::Denial].map(|k| {
                        m.cache_hits
                            .get_or_create(&vec![("type", k.label().to_string())])
                            .clone()
                    })
                }),
                metrics,
            }),
        }
    }

    /// Entries held (success, denial).
    pub fn len(&self) -> (u64, u64) {
        (
            self.inner.success.len.load(Ordering::Relaxed),
            self.inner.denial.len.load(Ordering::Relaxed),
        )
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

fn flags(req: &Request) -> u8 {
    u8::from(req.dnssec_ok()) | (u8::from(req.checking_disabled) << 1)
}

impl Inner {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn key(&self, req: &Request) -> u64 {
        let mut h = self.hasher.build_hasher();
        req.lower_name().hash(&mut h);
        u16::from(req.record_type()).hash(&mut h);
        u16::from(req.class()).hash(&mut h);
        flags(req).hash(&mut h);
        h.finish()
    }

    fn lookup(&self, key: u64, req: &Request) -> Option<(Kind, Arc<Entry>)> {
        for (kind, store) in [(Kind::Success, &self.success), (Kind::Denial, &self.denial)] {
            if let Some(e) = store.get(key)
                && &*e.name == req.lower_name()
                && e.qtype == req.record_type()
                && e.class == u16::from(req.class())
                && e.flags == flags(req)
            {
                return Some((kind, e));
            }
        }
        None
    }

    /// Caches `resp` if it is cacheable; returns the answer with the TTLs it was cached with.
    fn store_answer(
        self: &Arc<Self>,
        key: u64,
        req: &Request,
        resp: &Response,
    ) -> Option<Response> {
        let (kind, raw_ttl) = classify(resp)?;
        let name = req.lower_name();
        let (store, ttl) = match kind {
            Kind::Success => {
                if self.cfg.disable_success.iter().any(|z| in_zone(name, z)) {
                    return None;
                }
                (&self.success, clamp(raw_ttl, &self.cfg.success))
            }
            Kind::Denial if resp.rcode == ResponseCode::ServFail => {
                let t = self.cfg.servfail_ttl.as_secs() as u32;
                if t == 0 {
                    return None;
                }
                (&self.denial, t)
            }
            Kind::Denial => {
                if self.cfg.disable_denial.iter().any(|z| in_zone(name, z)) {
                    return None;
                }
                (&self.denial, clamp(raw_ttl, &self.cfg.denial))
            }
        };
        if ttl == 0 {
            return None;
        }
        let now = self.now();
        let view = if self.cfg.keepttl {
            resp.clone()
        } else {
            response_with_ttl(resp, ttl)
        };
        let entry = Arc::new(Entry {
            name: name.into(),
            qtype: req.record_type(),
            class: u16::from(req.class()),
            flags: flags(req),
            original: resp.clone(),
            stored: now,
            ttl,
            view: ArcSwap::from_pointee((0, view.clone())),
            hits: AtomicU32::new(0),
            window_start: AtomicU64::new(now),
            refreshing: AtomicBool::new(false),
        });
        // An answer of the other kind for the same question is now outdated.
        let other = if kind == Kind::Success {
            &self.denial
        } else {
            &self.success
        };
        other.remove(key);
        let evicted = store.insert(key, entry);
        if let Some(m) = &self.metrics {
            if evicted {
                m.cache_evictions
                    .get_or_create(&vec![("type", kind.label().to_string())])
                    .inc();
            }
            for (k, s) in [(Kind::Success, &self.success), (Kind::Denial, &self.denial)] {
                m.cache_entries
                    .get_or_create(&vec![("type", k.label().to_string())])
                    .set(s.len.load(Ordering::Relaxed) as i64);
            }
        }
        Some(view)
    }

    /// The entry's answer with TTLs as of `now`, reusing the view built this second.
    fn serve(&self, e: &Entry, now: u64) -> Response {
        let age = now.saturating_sub(e.stored);
        if self.cfg.keepttl {
            return e.view.load().1.clone();
        }
        let view = e.view.load();
        if view.0 == age {
            return view.1.clone();
        }
        let remaining = e.ttl.saturating_sub(age as u32);
        let resp = response_with_ttl(&e.original, remaining);
        e.view.store(Arc::new((age, resp.clone())));
        resp
    }

    /// Starts a background refresh of `req` through the rest of the chain.
    fn refresh(self: &Arc<Self>, e: &Arc<Entry>, key: u64, req: &Request, next: &Next) {
        if e.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            e.refreshing.store(false, Ordering::Release);
            return;
        };
        let inner = self.clone();
        let req = req.clone();
        let next = next.clone();
        let entry = e.clone();
        rt.spawn(async move {
            let resp = next.run(&req).resolve().await;
            if resp.rcode != ResponseCode::ServFail {
                let _ = inner.store_answer(key, &req, &resp);
            }
            entry.refreshing.store(false, Ordering::Release);
        });
    }
}

impl Plugin for Cache {
    fn name(&self) -> &'static str {
        "cache"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let inner = &self.inner;
        let name = req.lower_name();
        if !inner.cfg.zones.iter().any(|z| in_zone(name, z)) {
            return next.run(req);
        }
        let key = inner.key(req);
        let now = inner.now();
        if let Some((kind, e)) = inner.lookup(key, req) {
            let age = now.saturating_sub(e.stored);
            if age < u64::from(e.ttl) {
                if let Some(c) = &inner.hit_counters {
                    c[usize::from(kind == Kind::Denial)].inc();
                }
                if let Some(p) = inner.cfg.prefetch {
                    let window = p.window.as_secs().max(1);
                    if now.saturating_sub(e.window_start.load(Ordering::Relaxed)) >= window {
                        e.window_start.store(now, Ordering::Relaxed);
                        e.hits.store(0, Ordering::Relaxed);
                    }
                    let hits = e.hits.fetch_add(1, Ordering::Relaxed) + 1;
                    let remaining = u64::from(e.ttl) - age;
                    if hits >= p.amount
                        && remaining * 100 <= u64::from(e.ttl) * u64::from(p.percentage)
                    {
                        if let Some(m) = &inner.metrics {
                            m.cache_prefetch.inc();
                        }
                        inner.refresh(&e, key, req, &next);
                    }
                }
                let mut hit = inner.serve(&e, now);
                hit.plugin = Some("cache");
                return Reply::Ready(hit);
            }
            if let Some(stale) = inner.cfg.serve_stale
                && age < u64::from(e.ttl) + stale.duration.as_secs()
            {
                let mut stale_resp = response_with_ttl(&e.original, 0);
                stale_resp.plugin = Some("cache");
                if !stale.verify {
                    if let Some(m) = &inner.metrics {
                        m.cache_served_stale.inc();
                    }
                    inner.refresh(&e, key, req, &next);
                    return Reply::Ready(stale_resp);
                }
                // verify: ask upstream first, serve the stale answer only if that fails.
                let inner = inner.clone();
                let req = req.clone();
                return Reply::pending(async move {
                    let resp = next.run(&req).resolve().await;
                    if resp.rcode == ResponseCode::ServFail {
                        if let Some(m) = &inner.metrics {
                            m.cache_served_stale.inc();
                        }
                        return stale_resp;
                    }
                    inner.store_answer(key, &req, &resp).unwrap_or(resp)
                });
            }
        }
        if let Some(m) = &inner.metrics {
            m.cache_misses.inc();
        }
        let inner = inner.clone();
        let req2 = req.clone();
        next.run(req)
            .map(move |resp| inner.store_answer(key, &req2, &resp).unwrap_or(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::handler::{Chain, empty_records};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData};
    use std::sync::atomic::AtomicUsize;

    /// Counts queries and answers A 10.0.0.1 (ttl 60) for `a.example.`, NXDOMAIN with a SOA
    /// (ttl 600, minimum 30) otherwise.
    struct Origin(Arc<AtomicUsize>);
    impl Plugin for Origin {
        fn name(&self) -> &'static str {
            "origin"
        }
        fn handle(&self, req: &Request, _next: Next) -> Reply {
            self.0.fetch_add(1, Ordering::SeqCst);
            if req.lower_name() == "a.example." {
                let rec = Record::from_rdata(req.name().clone(), 60, RData::A(A::new(10, 0, 0, 1)));
                return Reply::Ready(Response::with_records(
                    ResponseCode::NoError,
                    vec![rec].into(),
                    empty_records(),
                    empty_records(),
                ));
            }
            let soa = SOA::new(
                Name::from_ascii("example.").unwrap(),
                Name::from_ascii("h.example.").unwrap(),
                1,
                2,
                3,
                4,
                30,
            );
            let rec =
                Record::from_rdata(Name::from_ascii("example.").unwrap(), 600, RData::SOA(soa));
            Reply::Ready(Response::with_records(
                ResponseCode::NXDomain,
                empty_records(),
                vec![rec].into(),
                empty_records(),
            ))
        }
    }

    fn chain(cfg: CacheConfig) -> (Chain, Arc<AtomicUsize>, Cache) {
        let count = Arc::new(AtomicUsize::new(0));
        let cache = Cache::new(cfg, None);
        let shared = Cache {
            inner: cache.inner.clone(),
        };
        let chain = Chain::new(vec![Arc::new(cache), Arc::new(Origin(count.clone()))]);
        (chain, count, shared)
    }

    fn ask(chain: &Chain, name: &str) -> Response {
        let req = Request::new(Name::from_ascii(name).unwrap(), RecordType::A);
        match chain.handle(&req) {
            Reply::Ready(r) => r,
            Reply::Pending(_) => panic!("sync plugins only"),
        }
    }

    #[test]
    fn hits_skip_the_rest_of_the_chain_and_ttls_are_capped() {
        let mut cfg = CacheConfig::new(vec![".".into()]);
        cfg.success.max_ttl = Duration::from_secs(30);
        let (chain, count, cache) = chain(cfg);
        let first = ask(&chain, "a.example.");
        assert_eq!(first.answers[0].ttl, 30);
        let second = ask(&chain, "A.EXAMPLE.");
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(second.answers.len(), 1);
        assert_eq!(second.answers[0].ttl, 30);
        assert_eq!(cache.len(), (1, 0));
        // Negative answers: TTL from the SOA minimum.
        let nx = ask(&chain, "b.example.");
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.authority[0].ttl, 30);
        ask(&chain, "b.example.");
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), (1, 1));
    }

    #[test]
    fn names_outside_the_zones_are_not_cached() {
        let (chain, count, _) = chain(CacheConfig::new(vec!["other.".into()]));
        ask(&chain, "a.example.");
        ask(&chain, "a.example.");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn capacity_evicts() {
        let mut cfg = CacheConfig::new(vec![".".into()]);
        cfg.denial.capacity = 1;
        let (chain, _, cache) = chain(cfg);
        for i in 0..200 {
            ask(&chain, &format!("n{i}.example."));
        }
        assert!(cache.len().1 <= SHARDS as u64, "{:?}", cache.len());
    }

    #[test]
    fn do_bit_is_part_of_the_key() {
        let (chain, count, _) = chain(CacheConfig::new(vec![".".into()]));
        ask(&chain, "a.example.");
        let mut req = Request::new(Name::from_ascii("a.example.").unwrap(), RecordType::A);
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_dnssec_ok(true);
        req.edns = Some(edns);
        let _ = chain.handle(&req);
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn classification() {
        let r = Response::new(ResponseCode::Refused);
        assert_eq!(classify(&r), None);
        let r = Response::new(ResponseCode::NoError);
        assert_eq!(classify(&r), Some((Kind::Denial, FAILSAFE_TTL)));
        let r = Response::new(ResponseCode::ServFail);
        assert_eq!(classify(&r), Some((Kind::Denial, 0)));
    }
}
