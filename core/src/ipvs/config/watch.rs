//! Watching the configuration file live. The file's directory is watched (not the file), so
//! ConfigMap updates — an atomic swap of the `..data` symlink — are seen like plain writes.
//! A valid change is published; an invalid file is logged and the running config kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::ProxyConfig;
use super::file::{ConfigError, load};
use crate::runtime::watch::FileWatch;

/// Re-read period besides file notifications (file systems without inotify).
const POLL: Duration = Duration::from_secs(1);

/// A running watcher; dropping it stops watching.
pub(crate) struct ConfigWatcher {
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

/// Starts watching `path` (with the process's one [`FileWatch`]), publishing changes on `tx`
/// and the outcome of every re-read on `outcome` (`None`: in force, or the rejection).
/// Must run inside a tokio runtime.
pub(crate) fn watch_config(
    path: PathBuf,
    tx: watch::Sender<ProxyConfig>,
    outcome: Option<watch::Sender<Option<String>>>,
) -> ConfigWatcher {
    let mut files = FileWatch::new(vec![path.clone()], Some(POLL), "configuration");
    let task = tokio::spawn(async move {
        loop {
            files.changed().await;
            let (p, t) = (path.clone(), tx.clone());
            let result = tokio::task::spawn_blocking(move || reload(&p, &t)).await;
            let error = match result {
                Ok(Reload::Rejected(e)) => Some(e.to_string()),
                Ok(Reload::Applied | Reload::Unchanged) => None,
                Err(e) => Some(format!("reload task failed: {e}")),
            };
            if let Some(o) = &outcome {
                o.send_replace(error);
            }
        }
    });
    ConfigWatcher { task }
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
        let (outcome_tx, outcome) = watch::channel(None);
        let _w = watch_config(path.clone(), tx.clone(), Some(outcome_tx));
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

        // Invalid: rejected, running config kept, the rejection reported.
        let mut outcome = outcome;
        std::fs::write(&path, "ipvs:\n  scheduler: fastest\n").unwrap();
        let reported =
            tokio::time::timeout(Duration::from_secs(5), outcome.wait_for(|o| o.is_some()))
                .await
                .expect("rejection reported within 5 s")
                .unwrap()
                .clone();
        assert!(
            reported.as_deref().is_some_and(|e| e.contains("scheduler")),
            "{reported:?}"
        );
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
