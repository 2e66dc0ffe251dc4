//! Re-reading a plugin's file when it changes, polled every `reload` period as CoreDNS's
//! `hosts` and `file` plugins do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What tells a changed file apart: modification time and size.
fn modified(path: &Path) -> Option<(SystemTime, u64)> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

/// Checks `path` every `period` and calls `reload` on `owner` when its modification time or
/// size changed. Nothing is started for a zero period or outside a tokio runtime; the task ends
/// when `owner` is dropped.
pub(crate) fn spawn_reload<T, F>(owner: &Arc<T>, period: Duration, path: PathBuf, reload: F)
where
    T: Send + Sync + 'static,
    F: Fn(&T) + Send + 'static,
{
    if period.is_zero() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let owner = Arc::downgrade(owner);
    rt.spawn(async move {
        let mut last = modified(&path);
        loop {
            tokio::time::sleep(period).await;
            let Some(owner) = owner.upgrade() else {
                return;
            };
            let now = modified(&path);
            if now != last {
                last = now;
                reload(&owner);
            }
        }
    });
}
