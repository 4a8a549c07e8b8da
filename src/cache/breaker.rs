//! Failing fast while Redis is away: after an outage the cache is skipped (each
//! request costs what the database costs, not a Redis timeout), and a background
//! probe, not a request, finds out when Redis answers again.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

/// How often the probe asks Redis while the breaker is open.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How often it asks while the probe is urgent (a lost write waits for its
/// generation bump): other instances may read a stale entry until the bump lands.
pub(super) const URGENT_PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Probes in flight at most: a probe to a host that drops packets waits for its
/// timeout, and the next one must not wait for it.
const MAX_PROBES_IN_FLIGHT: usize = 8;

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
    /// and runs `recovered`. A probe starts every [`PROBE_INTERVAL`], or every
    /// [`URGENT_PROBE_INTERVAL`] while `urgent` says so (asked that often, so a
    /// probe turning urgent need not wait out the longer interval), without waiting
    /// for the previous one to give up.
    pub(super) fn trip<P, Fut>(
        self: &Arc<Self>,
        probe: P,
        urgent: impl Fn() -> bool + Send + 'static,
        recovered: impl FnOnce() + Send + 'static,
    ) where
        P: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
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
            let mut probes = JoinSet::new();
            let mut last_probe = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(URGENT_PROBE_INTERVAL), if probes.len() < MAX_PROBES_IN_FLIGHT => {
                        if urgent() || last_probe.elapsed() >= PROBE_INTERVAL {
                            last_probe = Instant::now();
                            probes.spawn(probe());
                        }
                    }
                    Some(answered) = probes.join_next() => {
                        if matches!(answered, Ok(true)) {
                            break;
                        }
                    }
                }
            }
            // Probes still waiting are dropped with the set.
            drop(probes);
            breaker.open.store(false, Ordering::Release);
            recovered();
        });
    }
}
