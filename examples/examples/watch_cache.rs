//! Subscribe to the shared cache and print every change.
//!
//! ```text
//! cargo run -p svcnet-examples --example watch_cache -- examples/cluster
//! ```
//! Then edit, add or delete a manifest in that directory: each published generation is printed
//! with the services it touched (`changes_since`), coalesced when updates come in bursts.
//! Stops after `SVCNET_EXAMPLE_MAX_CHANGES` generations when that variable is set, else on
//! Ctrl-C.

use std::sync::Arc;

use anyhow::Result;
use svcnet_core::model::Kind;
use svcnet_core::{Change, Snapshot};

fn describe(snapshot: &Snapshot, change: &Change) -> String {
    match change {
        Change::Service(key) => match snapshot.service(key) {
            None => format!("service {key} removed"),
            Some(svc) => {
                let (mut ready, mut total) = (0, 0);
                for slice in snapshot.endpoint_slices_for(key) {
                    for ep in &slice.endpoints {
                        total += 1;
                        ready += usize::from(ep.ready);
                    }
                }
                let ips: Vec<String> = svc.cluster_ips.iter().map(|i| i.to_string()).collect();
                format!(
                    "service {key} ({}, {}) endpoints {ready}/{total} ready",
                    svc.service_type.as_str(),
                    if ips.is_empty() {
                        "no cluster IP".into()
                    } else {
                        ips.join(",")
                    }
                )
            }
        },
        Change::Pod(key) => match snapshot.pod(key) {
            Some(_) => format!("pod {key} changed"),
            None => format!("pod {key} removed"),
        },
        Change::Node(name) => format!("node {name} changed"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = svcnet_examples::manifest_dir_from_args();
    let limit: Option<u64> = std::env::var("SVCNET_EXAMPLE_MAX_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok());
    let (source, first) =
        svcnet_examples::start_synced(dir.clone(), &[Kind::Service, Kind::EndpointSlice]).await?;
    let c = first.counts();
    println!(
        "synced {}: generation {}, {} services, {} endpoint slices, {} endpoints",
        dir.display(),
        c.generation,
        c.services,
        c.endpoint_slices,
        c.endpoints
    );
    let mut reader = source.reader();
    let mut last: Arc<Snapshot> = first;
    let mut seen = 0u64;
    loop {
        let next = tokio::select! {
            s = reader.changed() => s,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(snapshot) = next else { break };
        if snapshot.generation() == last.generation() {
            continue;
        }
        println!(
            "generation {} -> {}",
            last.generation(),
            snapshot.generation()
        );
        match snapshot.changes_since(last.generation()) {
            Some(changes) => {
                for change in &changes {
                    println!("  {}", describe(&snapshot, change));
                }
            }
            None => println!("  (too many changes to list: rebuild from the full snapshot)"),
        }
        for p in source.status().problems {
            println!("  problem: {}: {}", p.location, p.reason);
        }
        last = snapshot;
        seen += 1;
        if limit.is_some_and(|l| seen >= l) {
            break;
        }
    }
    Ok(())
}
