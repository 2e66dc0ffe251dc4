//! CPU cost of the proxy's pure parts at 10,000 Services × 10 endpoints: desired-state build,
//! one incremental endpoint change (target: under 1 ms of CPU), a full reconcile against the
//! in-memory backend, and netlink encoding of the whole table. Prints figures, asserts only
//! correctness (timings are not checked by tests; see BENCHMARKS.md for kernel figures).
//!
//! `cargo test --release -p svcnet-tests --test proxy_desired_bench -- --ignored --nocapture`

// The counting allocator needs `unsafe impl GlobalAlloc`; nothing else here is unsafe.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use svcnet_core::cache::new_cache;
use svcnet_core::ipvs::backend::IpvsOp;
use svcnet_core::ipvs::desired::{NodeInfo, build};
use svcnet_core::ipvs::fixtures::{endpoint, slice, synthetic_cluster};
use svcnet_core::ipvs::memory::{MemoryAddresses, MemoryIpvs};
use svcnet_core::ipvs::netlink::ipvs::encode_op;
use svcnet_core::ipvs::reconcile::Reconciler;
use svcnet_core::ipvs::{ProxyConfig, render};
use svcnet_core::model::{ClusterObject, Kind, Protocol};

/// Counts live heap bytes, their peak and allocation calls (this test binary only).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; the counters have no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        PEAK.fetch_max(live, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap use of one step: bytes still live afterwards, peak above the start, allocation calls,
/// minor page faults.
struct Heap {
    live: usize,
    calls: usize,
    faults: u64,
}

fn minor_faults() -> u64 {
    // Field 10 of /proc/self/stat (after the parenthesised command name).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

impl Heap {
    fn start() -> Self {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        Self {
            live: LIVE.load(Ordering::Relaxed),
            calls: CALLS.load(Ordering::Relaxed),
            faults: minor_faults(),
        }
    }

    fn report(&self) -> String {
        let mb = |b: usize| b as f64 / (1 << 20) as f64;
        let live = LIVE.load(Ordering::Relaxed);
        format!(
            "kept {:+.1} MB, peak +{:.1} MB, {} allocations, {} page faults",
            mb(live) - mb(self.live),
            mb(PEAK.load(Ordering::Relaxed).saturating_sub(self.live)),
            CALLS.load(Ordering::Relaxed) - self.calls,
            minor_faults() - self.faults
        )
    }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture (release build for real figures)"]
fn desired_state_at_ten_thousand_services() {
    const SERVICES: u32 = 10_000;
    const ENDPOINTS: u32 = 10;
    let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.update(|tx| {
        for o in synthetic_cluster(SERVICES, ENDPOINTS) {
            tx.apply(o);
        }
    });
    let config = ProxyConfig::default();
    let node = NodeInfo::default();

    let snap = w.snapshot();
    let heap = Heap::start();
    let t = Instant::now();
    let mut desired = build(&snap, &config, &node);
    let build_time = t.elapsed();
    let build_heap = heap.report();
    assert_eq!(desired.len(), SERVICES as usize);
    assert_eq!(desired.dest_count(), (SERVICES * ENDPOINTS) as usize);

    let ipvs = MemoryIpvs::new();
    let addresses = MemoryAddresses::new(vec![]);
    let mut rec = Reconciler::new(Box::new(ipvs.clone()), Box::new(addresses.clone()));
    let heap = Heap::start();
    let t = Instant::now();
    let report = rec.full_sync(&desired, &config).unwrap();
    let full_sync = t.elapsed();
    let full_heap = heap.report();
    assert_eq!(report.operations(), 110_000);

    // A restart: a second reconciler reads the programmed table and finds nothing to do.
    let heap = Heap::start();
    let t = Instant::now();
    let mut restarted = Reconciler::new(Box::new(ipvs.clone()), Box::new(addresses.clone()));
    let again = restarted.full_sync(&desired, &config).unwrap();
    let restart_time = t.elapsed();
    let restart_heap = heap.report();
    assert_eq!(again.operations(), 0);
    drop(restarted);

    // One endpoint of one service changes.
    let eps: Vec<_> = (0..ENDPOINTS)
        .map(|e| endpoint(&format!("10.128.{}.{}", 200, e + 1), true, None))
        .collect();
    w.apply(ClusterObject::from(slice(
        "bench",
        "svc-4242-abcde",
        "svc-4242",
        &[("http", Protocol::Tcp, 8080)],
        eps,
    )));
    let snap = w.snapshot();
    let t = Instant::now();
    let delta = desired.update(&snap, &config, &node);
    let update_time = t.elapsed();
    let t = Instant::now();
    let r = rec.sync_delta(&desired, &delta, &config).unwrap();
    let delta_sync = t.elapsed();
    assert_eq!(delta.rebuilt, 1);
    assert!(!r.full);
    assert_eq!(r.dests_added, 10);

    // Encoding the whole table as netlink requests (the CPU part of programming).
    let ops: Vec<IpvsOp> = desired
        .servers()
        .flat_map(|(id, vs)| {
            std::iter::once(IpvsOp::AddService(*id, vs.params)).chain(
                vs.dests
                    .iter()
                    .map(move |(d, p)| IpvsOp::AddDest(*id, *d, *p)),
            )
        })
        .collect();
    let mut buf = Vec::with_capacity(16 << 20);
    let t = Instant::now();
    for (i, op) in ops.iter().enumerate() {
        if i % 100 == 0 {
            buf.clear();
        }
        encode_op(&mut buf, 0x24, i as u32, op, i % 100 == 99).unwrap();
    }
    let encode_time = t.elapsed();

    let t = Instant::now();
    let text = render::desired(&desired);
    let render_time = t.elapsed();
    assert!(text.lines().count() > 110_000);

    println!("10,000 services x 10 endpoints (110,000 IPVS objects):");
    println!("  desired state, full build:        {build_time:>10.2?}   {build_heap}");
    println!(
        "  full reconcile (in-memory kernel): {full_sync:>10.2?}   {full_heap} (kernel copy included)"
    );
    println!("  restart dump-and-diff (in-memory): {restart_time:>10.2?}   {restart_heap}");
    println!(
        "  one endpoint change: desired update {update_time:.2?} + reconcile {delta_sync:.2?}"
    );
    println!(
        "  netlink encoding of 110,000 ops:   {encode_time:>10.2?} ({:.2} us/op)",
        encode_time.as_secs_f64() * 1e6 / ops.len() as f64
    );
    println!("  ipvsadm-format render:             {render_time:>10.2?}");
}
