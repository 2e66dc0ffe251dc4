//! Sources of cluster state that drive the [`CacheWriter`](crate::CacheWriter).
//!
//! - [`manifests`]: a directory of YAML/JSON manifests watched live (the embedded default).
//! - [`kube`]: the Kubernetes API through kube-runtime watchers.
//!
//! [`start`] spawns the chosen source on the current tokio runtime and returns a [`Source`]
//! handle; dropping the handle stops it.

pub(crate) mod derive;
pub mod kube;
pub mod manifests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::cache::{CacheReader, new_cache};
use crate::model::Kind;

/// Which source feeds the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// A directory of manifests (`--manifests DIR`).
    Manifests(PathBuf),
    /// The Kubernetes API: in-cluster config, or `kubeconfig` when given (`--kubeconfig FILE`).
    Kubernetes {
        /// Path of a kubeconfig file; `None` means in-cluster or the default kubeconfig.
        kubeconfig: Option<PathBuf>,
    },
}

impl SourceConfig {
    /// A short human description (`manifests:/path`, `kubernetes:in-cluster`).
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Manifests(dir) => format!("manifests:{}", dir.display()),
            SourceConfig::Kubernetes {
                kubeconfig: Some(p),
            } => {
                format!("kubernetes:{}", p.display())
            }
            SourceConfig::Kubernetes { kubeconfig: None } => "kubernetes:in-cluster".into(),
        }
    }
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The manifest directory cannot be read.
    #[error("manifest directory {path}: {source}")]
    ManifestDir {
        /// The directory.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The directory watcher could not be set up.
    #[error("watching {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The notify error.
        source: notify::Error,
    },
    /// The Kubernetes client could not be configured.
    #[error("kubernetes client configuration: {0}")]
    KubeConfig(String),
    /// A manifest limit variable (`SVCNET_MANIFEST_MAX_*`) has a bad value.
    #[error("{variable}={value:?}: {reason}")]
    ManifestLimit {
        /// The environment variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One problem a source is currently reporting (a bad file, a failing watch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceProblem {
    /// Where: a file (with document index) or an API resource.
    pub location: String,
    /// What is wrong.
    pub reason: String,
}

/// What a running source reports about itself, for status endpoints and `agentctl status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// `manifests:/dir` or `kubernetes:...`.
    pub description: String,
    /// Current problems (empty when healthy). A problem never removes the last good state.
    pub problems: Vec<SourceProblem>,
    /// Times the source re-read everything (manifest rescans, API relists).
    pub resyncs: u64,
    /// Events applied to the cache.
    pub events: u64,
}

/// A shared, updatable [`SourceStatus`].
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<SourceStatus>>);

impl StatusHandle {
    /// A copy of the current status.
    pub fn get(&self) -> SourceStatus {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Changes the status in place.
    pub fn update(&self, f: impl FnOnce(&mut SourceStatus)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }
}

/// A running source. Dropping it stops the source task; readers keep the last snapshot.
pub struct Source {
    reader: CacheReader,
    status: StatusHandle,
    task: JoinHandle<()>,
}

impl Source {
    /// A reader of the cache this source feeds.
    pub fn reader(&self) -> CacheReader {
        self.reader.clone()
    }

    /// The source's current status.
    pub fn status(&self) -> SourceStatus {
        self.status.get()
    }

    /// The shared status handle (for serving it).
    pub(crate) fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts `config` feeding a new cache that waits for the initial lists of `kinds`.
/// Must be called inside a tokio runtime.
pub async fn start(config: &SourceConfig, kinds: &[Kind]) -> Result<Source, SourceError> {
    start_for_node(config, kinds, kube::WatchScope::default()).await
}

/// Like [`start`]; with `scope.node` set, the Kubernetes API source watches only that Node
/// (field selector `metadata.name`), and with `scope.pods_on_node` only its Pods (field
/// selector `spec.nodeName`). A manifest directory keeps every Node and Pod it holds (the
/// DNS zone picks this node's pods by `spec.nodeName` itself).
pub(crate) async fn start_for_node(
    config: &SourceConfig,
    kinds: &[Kind],
    scope: kube::WatchScope,
) -> Result<Source, SourceError> {
    let (writer, reader) = new_cache(kinds.iter().copied());
    let status = StatusHandle::default();
    status.update(|s| s.description = config.describe());
    let task = match config {
        SourceConfig::Manifests(dir) => {
            manifests::spawn(dir.clone(), kinds.to_vec(), writer, status.clone())?
        }
        SourceConfig::Kubernetes { kubeconfig } => {
            let client = kube::client(kubeconfig.as_deref()).await?;
            tokio::spawn(kube::run_scoped(
                client,
                kinds.to_vec(),
                writer,
                status.clone(),
                scope,
            ))
        }
    };
    Ok(Source {
        reader,
        status,
        task,
    })
}
