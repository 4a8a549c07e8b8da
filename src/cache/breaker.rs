//! Failing fast while Redis is away: after an outage the cache is skipped (each
//! request costs what the database costs, not a Redis timeout), and a background
//! probe, not a request, finds out when Redis answers again.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the probe asks Redis while the breaker is open.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Open while Redis is considered down.
#[derive(Default)]
pub(super) struct Breaker {
    open: AtomicBool,
}

impl Breaker {
    /// Whether calls should skip Redis now.
    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Opens the breaker after an outage and, if it was closed, starts probing
    /// with `probe` (true when Redis answered) until it answers; then closes it
    /// and runs `recovered`.
    pub(super) fn trip<P, Fut>(
        self: &Arc<Self>,
        probe: P,
        recovered: impl FnOnce() + Send + 'static,
    ) where
        P: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        if self.open.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to probe from: stay closed, calls try Redis themselves.
            self.open.store(false, Ordering::Release);
            return;
        };
        let breaker = Arc::clone(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                if probe().await {
                    break;
                }
            }
            breaker.open.store(false, Ordering::Release);
            recovered();
        });
    }
}
