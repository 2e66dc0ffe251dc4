//! The one stop-signal and lameduck helper of every program.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                return;
            }
            _ => tracing::warn!("cannot install SIGTERM/SIGINT handlers; only Ctrl-C stops"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// "Shutting down" for readiness endpoints: set once a stop was requested, so `/ready`
/// answers 503 while the server keeps answering through its lameduck period.
#[derive(Debug, Clone, Default)]
pub struct Stopping(Arc<AtomicBool>);

impl Stopping {
    /// Not stopping.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a stop was requested.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Records the stop request.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Waits for `stop`, then marks `stopping` and keeps going for `lameduck` (logging `message`
/// with the period when it is not zero). The caller stops serving when this returns.
pub async fn stop_after_lameduck(
    stop: impl Future<Output = ()>,
    stopping: &Stopping,
    lameduck: Duration,
    message: &'static str,
) {
    stop.await;
    lameduck_now(stopping, lameduck, message).await;
}

/// Marks `stopping` and waits `lameduck` (logging `message` when it is not zero).
pub async fn lameduck_now(stopping: &Stopping, lameduck: Duration, message: &'static str) {
    stopping.set();
    if !lameduck.is_zero() {
        tracing::info!(lameduck = ?lameduck, "{message}");
        tokio::time::sleep(lameduck).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lameduck_marks_stopping_first_and_waits_the_period() {
        let stopping = Stopping::new();
        let s = stopping.clone();
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            stop_after_lameduck(async {}, &s, Duration::from_secs(5), "lameduck").await;
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(stopping.is_set(), "not ready as soon as the stop arrives");
        assert!(!task.is_finished(), "still serving during the lameduck");
        task.await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(5));
    }
}
