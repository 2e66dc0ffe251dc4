//! Cache benchmark: 10,000 Services and 100,000 endpoints.
//!
//! Measures (1) projecting the API objects and building the snapshot from scratch, (2) applying
//! and publishing one endpoint change with the cluster present, including a subscriber asking
//! what changed, and (3) the heap memory the cache holds (counted by a global allocator). As a
//! reference measured in the same run it applies the same change to a copy-on-write
//! `std::collections::HashMap` snapshot (what a non-persistent immutable snapshot would cost).
//! (4) A relist of both kinds through the API source's event applier, as after a watch outage:
//! every object projected and buffered between `Init` and `InitDone`, 1 % of the slices
//! invalid (their last good version is kept), then the kind replaced; with the heap the relist
//! buffers hold just before `InitDone`.
//!
//! Run: `cargo bench -p svcnet-core --bench cache`. Targets: one change < 1 ms, cache < 40 MB.

// The counting allocator needs `unsafe impl GlobalAlloc`; nothing else here is unsafe.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1 as core_v1;
use k8s_openapi::api::discovery::v1 as discovery_v1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;
use serde_json::json;
use svcnet_core::model::{ClusterObject, EndpointSlice, Kind, ObjectKey, project};
use svcnet_core::new_cache;
use svcnet_core::source::kube::{ApiEventApplier, InvalidObject, Projected};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SERVICES: usize = 10_000;
const ENDPOINTS_PER_SERVICE: usize = 10;
const NAMESPACES: usize = 100;

fn api_service(i: usize) -> core_v1::Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % NAMESPACES),
                     "resourceVersion": format!("{}", 1000 + i)},
        "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
                 "selector": {"app": format!("app-{i}")},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                           {"name": "metrics", "port": 9090, "targetPort": 9090}]}
    }))
    .unwrap()
}

fn api_slice(i: usize, ready_flip: bool) -> discovery_v1::EndpointSlice {
    let endpoints: Vec<_> = (0..ENDPOINTS_PER_SERVICE)
        .map(|j| {
            let n = i * ENDPOINTS_PER_SERVICE + j;
            json!({"addresses": [format!("10.{}.{}.{}", 128 + n / 65536, (n / 256) % 256, n % 256)],
                   "conditions": {"ready": !(ready_flip && j == 0), "serving": true, "terminating": false},
                   "nodeName": format!("node-{}", n % 50), "zone": format!("zone-{}", n % 3),
                   "targetRef": {"kind": "Pod", "namespace": format!("ns-{}", i % NAMESPACES), "name": format!("app-{i}-{j}")}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": format!("ns-{}", i % NAMESPACES),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn per_op(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1e6 / n as f64
}

/// Projects a Service as the API source does.
fn project_service(s: &core_v1::Service) -> Projected {
    project::service(s)
        .map(ClusterObject::from)
        .map_err(|error| invalid(Kind::Service, &s.metadata, error))
}

/// Projects an EndpointSlice as the API source does.
fn project_slice(s: &discovery_v1::EndpointSlice) -> Projected {
    project::endpoint_slice(s)
        .map(ClusterObject::from)
        .map_err(|error| invalid(Kind::EndpointSlice, &s.metadata, error))
}

fn invalid(kind: Kind, meta: &ObjectMeta, error: project::ProjectionError) -> InvalidObject {
    InvalidObject {
        kind,
        key: ObjectKey::new(
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
        ),
        error,
    }
}

fn main() {
    let api_services: Vec<_> = (0..SERVICES).map(api_service).collect();
    let api_slices: Vec<_> = (0..SERVICES).map(|i| api_slice(i, false)).collect();
    let flipped: Vec<_> = (0..1000).map(|i| api_slice(i * 7, true)).collect();
    let unflipped: Vec<_> = (0..1000).map(|i| api_slice(i * 7, false)).collect();

    // 1. Projection + build from scratch.
    let live_before = LIVE.load(Ordering::Relaxed);
    let rss_before = rss_kib();
    let t = Instant::now();
    let services: Vec<ClusterObject> = api_services
        .iter()
        .map(|s| ClusterObject::from(project::service(s).unwrap()))
        .collect();
    let services_bytes = LIVE.load(Ordering::Relaxed) - live_before;
    let slices: Vec<ClusterObject> = api_slices
        .iter()
        .map(|s| ClusterObject::from(project::endpoint_slice(s).unwrap()))
        .collect();
    let projected = t.elapsed();
    let objects_bytes = LIVE.load(Ordering::Relaxed) - live_before;
    let t = Instant::now();
    let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
    writer.update(|tx| {
        tx.replace_kind(Kind::Service, services);
        tx.replace_kind(Kind::EndpointSlice, slices);
    });
    let built = t.elapsed();
    let snap = reader.snapshot();
    assert_eq!(snap.counts().endpoints, SERVICES * ENDPOINTS_PER_SERVICE);
    drop(snap);
    let cache_bytes = LIVE.load(Ordering::Relaxed) - live_before;
    let rss_after = rss_kib();

    // 2. One endpoint change: project, apply, publish, and a subscriber asks what changed.
    let changes: Vec<ClusterObject> = flipped
        .iter()
        .chain(unflipped.iter())
        .map(|s| ClusterObject::from(project::endpoint_slice(s).unwrap()))
        .collect();
    let mut seen = reader.snapshot().generation();
    let t = Instant::now();
    for c in &changes {
        writer.apply(c.clone());
        let snap = reader.snapshot();
        let changed = snap.changes_since(seen).unwrap();
        assert_eq!(changed.len(), 1);
        seen = snap.generation();
        black_box(changed);
    }
    let one_change = per_op(t.elapsed(), changes.len());

    // Reference: the same change on a copy-on-write std HashMap snapshot.
    let mut reference: Arc<HashMap<ObjectKey, Arc<EndpointSlice>>> = Arc::new(
        api_slices
            .iter()
            .map(|s| {
                let p = project::endpoint_slice(s).unwrap();
                (p.key.clone(), Arc::new(p))
            })
            .collect(),
    );
    let t = Instant::now();
    let reps = 200;
    for c in changes.iter().take(reps) {
        let ClusterObject::EndpointSlice(s) = c else {
            unreachable!()
        };
        let mut next = (*reference).clone();
        next.insert(s.key.clone(), Arc::new((**s).clone()));
        reference = Arc::new(next);
        black_box(&reference);
    }
    let reference_change = per_op(t.elapsed(), reps);

    // 4. A relist of both kinds through the API event applier (1 % of the slices invalid).
    let invalid_every = 100;
    let relist_slices: Vec<discovery_v1::EndpointSlice> = (0..SERVICES)
        .map(|i| {
            let mut s = api_slice(i, false);
            if i % invalid_every == 0 {
                s.endpoints[0].addresses[0] = "not-an-ip".into();
            }
            s
        })
        .collect();
    let mut applier = ApiEventApplier::new();
    let (mut buffered_bytes, mut relist_buffer, mut relist_done) =
        (0isize, Duration::ZERO, Duration::ZERO);
    let relist_reps = 5;
    for _ in 0..relist_reps {
        let before = LIVE.load(Ordering::Relaxed);
        let t = Instant::now();
        applier.apply(Kind::Service, Event::Init, &mut writer);
        for s in &api_services {
            let projected: Projected = project_service(s);
            applier.apply(Kind::Service, Event::InitApply(projected), &mut writer);
        }
        applier.apply(Kind::EndpointSlice, Event::Init, &mut writer);
        for s in &relist_slices {
            let projected: Projected = project_slice(s);
            applier.apply(
                Kind::EndpointSlice,
                Event::InitApply(projected),
                &mut writer,
            );
        }
        relist_buffer += t.elapsed();
        buffered_bytes = LIVE.load(Ordering::Relaxed) - before;
        let t = Instant::now();
        applier.apply(Kind::Service, Event::InitDone, &mut writer);
        applier.apply(Kind::EndpointSlice, Event::InitDone, &mut writer);
        relist_done += t.elapsed();
    }
    assert_eq!(applier.problems().len(), SERVICES / invalid_every);
    assert_eq!(
        reader.snapshot().counts().endpoints,
        SERVICES * ENDPOINTS_PER_SERVICE,
        "invalid slices keep their last good version"
    );
    let relist_buffer_ms = relist_buffer.as_secs_f64() * 1e3 / relist_reps as f64;
    let relist_done_ms = relist_done.as_secs_f64() * 1e3 / relist_reps as f64;

    println!(
        "svcnet cache benchmark: {SERVICES} services, {} endpoints",
        SERVICES * ENDPOINTS_PER_SERVICE
    );
    println!(
        "  project 20,000 API objects        {:>10.1} ms",
        projected.as_secs_f64() * 1e3
    );
    println!(
        "  build snapshot from scratch       {:>10.1} ms",
        built.as_secs_f64() * 1e3
    );
    println!(
        "  one endpoint change (apply+publish+changes_since) {:>8.1} us   target < 1000 us   ({:.1}% of target)",
        one_change,
        one_change / 10.0
    );
    println!(
        "  reference: copy-on-write HashMap snapshot         {:>8.1} us   (svcnet is {:.0}x faster)",
        reference_change,
        reference_change / one_change
    );
    println!(
        "  cache heap memory                 {:>10.1} MB   target < 40 MB   ({:.0}% of target)",
        cache_bytes as f64 / 1e6,
        cache_bytes as f64 / 40e6 * 100.0
    );
    println!(
        "    of which projected objects {:.1} MB (services {:.1} MB, slices {:.1} MB), maps and index {:.1} MB",
        objects_bytes as f64 / 1e6,
        services_bytes as f64 / 1e6,
        (objects_bytes - services_bytes) as f64 / 1e6,
        (cache_bytes - objects_bytes) as f64 / 1e6
    );
    println!(
        "  relist 20,000 objects (1% invalid): project+buffer {:.1} ms, InitDone {:.1} ms, total {:.1} ms",
        relist_buffer_ms,
        relist_done_ms,
        relist_buffer_ms + relist_done_ms
    );
    println!(
        "    heap held by the relist buffers before InitDone {:.2} MB",
        buffered_bytes as f64 / 1e6
    );
    println!(
        "  process RSS growth while building {:>10.1} MB",
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0
    );
}
