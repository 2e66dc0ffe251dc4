//! The one configuration-file watcher: the KubeProxyConfiguration of the proxy and the
//! Corefile (with its imports) of DNS are both followed by a [`FileWatch`].
//!
//! The *directories* of the files are watched with `notify` (not the files), so a ConfigMap
//! update — an atomic swap of the `..data` symlink — is seen like a plain write. Events are
//! debounced, and a change is reported only when the files' contents differ from the last
//! report. An optional poll period re-reads the files too, for file systems without inotify.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;

/// Settle time after a burst of file events before re-reading (a ConfigMap swap writes
/// several).
const DEBOUNCE: Duration = Duration::from_millis(100);

/// A fingerprint of the contents of `files` (a missing file counts as empty and different).
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(7).build_hasher();
    for f in files {
        h.write(f.as_os_str().as_encoded_bytes());
        match std::fs::read(f) {
            Ok(bytes) => h.write(&bytes),
            Err(_) => h.write_u8(0),
        }
    }
    h.finish()
}

/// Follows a set of files; [`FileWatch::changed`] completes when their contents change.
pub struct FileWatch {
    files: Vec<PathBuf>,
    poll: Option<Duration>,
    seen: u64,
    events: mpsc::Receiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("files", &self.files)
            .field("poll", &self.poll)
            .field("notify", &self._watcher.is_some())
            .finish_non_exhaustive()
    }
}

impl FileWatch {
    /// Watches `files` (their current contents are the baseline), re-reading them every `poll`
    /// as well when given. `what` names the files in log lines (`configuration`,
    /// `plugin/reload`). A directory that cannot be watched is logged; polling still works.
    pub fn new(files: Vec<PathBuf>, poll: Option<Duration>, what: &'static str) -> Self {
        let (tx, events) = mpsc::channel(1);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = tx.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(mut w) => {
                for d in directories(&files) {
                    if let Err(e) = w.watch(&d, notify::RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %d.display(), error = %e, "{what}: cannot watch the directory; checking periodically only");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what}: cannot watch files; checking periodically only");
                None
            }
        };
        Self {
            seen: fingerprint(&files),
            files,
            poll,
            events,
            _watcher: watcher,
        }
    }

    /// The files followed.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Completes once the contents differ from the last report (or from the start).
    pub async fn changed(&mut self) {
        loop {
            let poll = async {
                match self.poll {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = self.events.recv() => {
                    if got.is_none() {
                        // The watcher is gone: only polling can see changes now.
                        self._watcher = None;
                        match self.poll {
                            Some(d) => tokio::time::sleep(d).await,
                            None => std::future::pending::<()>().await,
                        }
                    } else {
                        tokio::time::sleep(DEBOUNCE).await;
                        while self.events.try_recv().is_ok() {}
                    }
                }
                () = poll => {}
            }
            let files = self.files.clone();
            let now = tokio::task::spawn_blocking(move || fingerprint(&files))
                .await
                .unwrap_or(self.seen);
            if now != self.seen {
                self.seen = now;
                return;
            }
        }
    }
}

/// The distinct parent directories of `files` (`.` for bare names).
fn directories(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_distinct_parents() {
        let files = vec![
            PathBuf::from("/etc/coredns/Corefile"),
            PathBuf::from("/etc/coredns/extra.conf"),
            PathBuf::from("Corefile"),
        ];
        assert_eq!(
            directories(&files),
            vec![PathBuf::from("/etc/coredns"), PathBuf::from(".")]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_content_changes_by_notification_and_by_poll() {
        let dir = std::env::temp_dir().join(format!("svcnet-filewatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.conf");
        std::fs::write(&path, "a").unwrap();
        let mut w = FileWatch::new(vec![path.clone()], None, "test");
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&path, "b").unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("notified within 5 s");
        // Same contents rewritten: no report.
        std::fs::write(&path, "b").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(500), w.changed())
                .await
                .is_err(),
            "unchanged contents are not a change"
        );
        // Polling alone (no notifications) sees changes too.
        let mut polled = FileWatch::new(vec![path.clone()], Some(Duration::from_millis(50)), "t");
        polled._watcher = None;
        std::fs::write(&path, "c").unwrap();
        tokio::time::timeout(Duration::from_secs(5), polled.changed())
            .await
            .expect("seen by polling");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
