//! Watching the configuration file live. The file's directory is watched (not the file), so
//! ConfigMap updates — an atomic swap of the `..data` symlink — are seen like plain writes.
//! A valid change is published; an invalid file is logged and the running config kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::{mpsc, watch};

use super::ProxyConfig;
use super::file::{ConfigError, load};

/// Settle time after a burst of file events before re-reading.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Re-read period when no event arrives (file systems without inotify).
const POLL: Duration = Duration::from_secs(10);

/// A running watcher; dropping it stops watching.
pub struct ConfigWatcher {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher").finish_non_exhaustive()
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The outcome of one re-read, for logs and tests.
#[derive(Debug)]
pub enum Reload {
    /// The file changed and the new config was published.
    Applied,
    /// The file's config equals the running one.
    Unchanged,
    /// The file is invalid; the running config stays.
    Rejected(ConfigError),
}

/// Re-reads `path` and publishes a valid, different config on `tx`.
pub fn reload(path: &Path, tx: &watch::Sender<ProxyConfig>) -> Reload {
    match load(path) {
        Ok(loaded) => {
            let changed = tx.send_if_modified(|cur| {
                if *cur == loaded.config {
                    false
                } else {
                    *cur = loaded.config.clone();
                    true
                }
            });
            if changed {
                tracing::info!(path = %path.display(), scheduler = %loaded.config.scheduler, "configuration reloaded");
                Reload::Applied
            } else {
                Reload::Unchanged
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration rejected; keeping the running configuration");
            Reload::Rejected(e)
        }
    }
}

/// Starts watching `path`, publishing changes on `tx`. Must run inside a tokio runtime.
pub fn watch_config(path: PathBuf, tx: watch::Sender<ProxyConfig>) -> ConfigWatcher {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = ev_tx.send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)
            .map(|_| w)
    });
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch config directory; polling");
            None
        }
    };
    let task = tokio::spawn(async move {
        loop {
            let event = tokio::time::timeout(POLL, ev_rx.recv()).await;
            if let Ok(None) = event {
                // The watcher is gone: keep polling.
                tokio::time::sleep(POLL).await;
            }
            // Debounce: drain the burst.
            tokio::time::sleep(DEBOUNCE).await;
            while ev_rx.try_recv().is_ok() {}
            let p = path.clone();
            let tx2 = tx.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&p, &tx2)).await;
        }
    });
    ConfigWatcher {
        _watcher: watcher,
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::table::Scheduler;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn valid_changes_apply_live_invalid_ones_keep_the_running_config() {
        let dir = std::env::temp_dir().join(format!("svcnet-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.conf");
        std::fs::write(
            &path,
            "kind: KubeProxyConfiguration\nipvs:\n  scheduler: \"\"\n",
        )
        .unwrap();
        let (tx, mut rx) = watch::channel(load(&path).unwrap().config);
        let _w = watch_config(path.clone(), tx.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;

        std::fs::write(
            &path,
            "kind: KubeProxyConfiguration\nipvs:\n  scheduler: wrr\n",
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("reload within 5 s")
            .unwrap();
        assert_eq!(rx.borrow_and_update().scheduler, Scheduler::Wrr);

        // Invalid: rejected, running config kept.
        std::fs::write(&path, "ipvs:\n  scheduler: fastest\n").unwrap();
        assert!(matches!(reload(&path, &tx), Reload::Rejected(_)));
        assert_eq!(rx.borrow().scheduler, Scheduler::Wrr);

        // A ConfigMap-style symlink swap is seen too.
        let data1 = dir.join("..2026_v2");
        std::fs::create_dir_all(&data1).unwrap();
        std::fs::write(data1.join("config.conf"), "ipvs:\n  scheduler: lc\n").unwrap();
        std::fs::remove_file(&path).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(data1.join("config.conf"), &path).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("symlink swap seen")
            .unwrap();
        assert_eq!(rx.borrow().scheduler, Scheduler::Lc);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
