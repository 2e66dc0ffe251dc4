//! Runnable examples of embedding svcnet-core in another Rust agent (see `examples/*.rs`):
//!
//! - `watch_cache`: start a source, subscribe to the shared cache and print what changes.
//! - `dns_in_process`: answer cluster DNS questions in-process from a manifest directory.
//! - `ipvs_plan`: compute the IPVS table the proxy would program for a snapshot.
//!
//! Run one with `cargo run -p svcnet-examples --example watch_cache -- examples/cluster`.
//! This library holds the small helpers they share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use svcnet_core::Snapshot;
use svcnet_core::model::Kind;
use svcnet_core::source::{self, Source, SourceConfig};

/// The manifest directory named by the first command-line argument (default
/// `examples/cluster`, relative to the workspace root when run from there).
pub fn manifest_dir_from_args() -> PathBuf {
    std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/cluster")))
}

/// Starts the manifest source for `dir` watching `kinds`, and waits up to 10 s for its sync.
pub async fn start_synced(dir: PathBuf, kinds: &[Kind]) -> Result<(Source, Arc<Snapshot>)> {
    let config = SourceConfig::Manifests(dir);
    let src = source::start(&config, kinds)
        .await
        .with_context(|| format!("starting {}", config.describe()))?;
    let mut reader = src.reader();
    if !reader.wait_synced(Duration::from_secs(10)).await {
        bail!("{} did not sync within 10 s", config.describe());
    }
    for p in src.status().problems {
        eprintln!("warning: {}: {}", p.location, p.reason);
    }
    let snapshot = reader.snapshot();
    Ok((src, snapshot))
}
