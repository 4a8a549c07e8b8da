//! Cache generations: how a write-through that never reached Redis cannot leave a
//! stale entry for the other instances to read.
//!
//! Redis holds a counter, `{prefix}generation` (missing = 0). Every entry is stored
//! with the generation current when it was written, read by the storing script in
//! the same step ([`Scripts`]); a read fetches the counter and the entry together
//! and takes an entry of another generation for a miss. An instance whose put or
//! remove did not land (timeout, refused, unreachable, skipped by the open breaker)
//! counts it as a [`LostWrites`]; before it uses Redis again it increments the
//! counter (a *bump*), which turns every entry written before into a miss for every
//! instance, and it keeps skipping Redis until a bump has succeeded. It also reports
//! the lost write through the database, and every instance that sees such a report
//! bumps too (see `super::invalidations`): the stale entries are ignored while the
//! instance that lost the write is still cut off from Redis.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use ::redis::{Cmd, Script};

use super::record;

/// Stores a record's fields (`ARGV[1]`, see `codec`) as an entry of the current
/// generation (`KEYS[1]` the generation key, `KEYS[2]` the entry) for `ARGV[2]`
/// seconds.
const PUT: &str = r#"
local generation = redis.call('GET', KEYS[1]) or '0'
redis.call('SET', KEYS[2], '{"generation":' .. generation .. ',' .. ARGV[1], 'EX', ARGV[2])
return 1
"#;

/// Like [`PUT`], unless the entry already is of the current generation: a miss is
/// filled, and so is an entry of an older generation, but a put of this generation
/// (newer than the database read filling the miss) is never replaced. Answers 1
/// when it wrote.
const FILL: &str = r#"
local generation = redis.call('GET', KEYS[1]) or '0'
local cached = redis.call('GET', KEYS[2])
if cached and string.match(cached, '^{"generation":(%d+),') == generation then
  return 0
end
redis.call('SET', KEYS[2], '{"generation":' .. generation .. ',' .. ARGV[1], 'EX', ARGV[2])
return 1
"#;

/// The generation key under `prefix`.
pub(super) fn key(prefix: &str) -> String {
    format!("{prefix}generation")
}

/// `INCR` of the generation key: the bump, answering the new generation.
pub(super) fn bump(key: &str) -> Cmd {
    let mut cmd = ::redis::cmd("INCR");
    cmd.arg(key);
    cmd
}

/// The storing scripts (sent as `EVALSHA`, loaded again when Redis lost them).
pub(super) struct Scripts {
    pub(super) put: Script,
    pub(super) fill: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            put: Script::new(PUT),
            fill: Script::new(FILL),
        }
    }
}

/// Writes through that did not land (here or, as reported, elsewhere), and how
/// many of them a bump has covered.
///
/// A bump covers the writes lost before it was sent: it reaches Redis after their
/// database changes were committed, so every entry they left behind is older than
/// it. A write lost while a bump is under way waits for the next one. One bump at
/// a time: the others wait for it, and find nothing left to cover.
#[derive(Default)]
pub(super) struct LostWrites {
    /// Lost here.
    own: AtomicU64,
    /// Lost here or reported by other instances: what bumps cover.
    lost: AtomicU64,
    covered: AtomicU64,
    bumping: tokio::sync::Mutex<()>,
}

impl LostWrites {
    /// A put or remove did not land: Redis may hold an older record.
    pub(super) fn record(&self) {
        self.own.fetch_add(1, Ordering::SeqCst);
        self.lost.fetch_add(1, Ordering::SeqCst);
    }

    /// Another instance reported a lost write: Redis may hold an older record.
    pub(super) fn record_reported(&self) {
        self.lost.fetch_add(1, Ordering::SeqCst);
    }

    /// Writes lost here so far.
    pub(super) fn own(&self) -> u64 {
        self.own.load(Ordering::SeqCst)
    }

    /// When some lost write is not covered yet, the count a bump sent now covers.
    pub(super) fn uncovered(&self) -> Option<u64> {
        let lost = self.lost.load(Ordering::SeqCst);
        (lost > self.covered.load(Ordering::SeqCst)).then_some(lost)
    }

    /// Covers the lost writes with `bump` (answering the raised generation), unless
    /// there are none (any more); `Ok` when nothing is left uncovered by this call.
    pub(super) async fn cover<F, Fut, E>(&self, bump: F) -> Result<(), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<u64, E>>,
    {
        if self.uncovered().is_none() {
            return Ok(());
        }
        let _one_at_a_time = self.bumping.lock().await;
        let Some(lost) = self.uncovered() else {
            return Ok(());
        };
        let generation = bump().await?;
        self.covered(lost, generation);
        Ok(())
    }

    /// A bump sent when `lost` writes were lost has raised the generation to
    /// `generation`.
    fn covered(&self, lost: u64, generation: u64) {
        self.covered.fetch_max(lost, Ordering::SeqCst);
        record::generation_bump();
        tracing::info!(
            generation,
            "cache generation raised: entries written before a lost write-through are ignored"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_bumps_make_one() {
        let writes = LostWrites::default();
        writes.record();
        let bumps = AtomicU64::new(0);
        let bump = || async {
            tokio::task::yield_now().await;
            Ok::<_, ()>(bumps.fetch_add(1, Ordering::SeqCst) + 1)
        };
        let (a, b) = tokio::join!(writes.cover(bump), writes.cover(bump));
        assert_eq!((a, b), (Ok(()), Ok(())));
        assert_eq!(bumps.load(Ordering::SeqCst), 1);
        assert_eq!(writes.uncovered(), None);
        // Nothing lost: no bump at all.
        assert_eq!(writes.cover(bump).await, Ok(()));
        assert_eq!(bumps.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_bump_leaves_the_writes_uncovered() {
        let writes = LostWrites::default();
        writes.record();
        assert_eq!(
            writes.cover(|| async { Err::<u64, _>("refused") }).await,
            Err("refused")
        );
        assert_eq!(writes.uncovered(), Some(1));
    }

    #[test]
    fn a_bump_covers_the_writes_lost_before_it_was_sent() {
        let writes = LostWrites::default();
        assert_eq!(writes.uncovered(), None);
        writes.record();
        let first = writes.uncovered();
        assert_eq!(first, Some(1));
        // Lost while the bump is under way: not covered by it.
        writes.record();
        writes.covered(1, 1);
        assert_eq!(writes.uncovered(), Some(2));
        writes.covered(2, 2);
        assert_eq!(writes.uncovered(), None);
        // A slow bump answering last does not uncover anything.
        writes.covered(1, 3);
        assert_eq!(writes.uncovered(), None);
    }

    #[test]
    fn reported_writes_need_a_bump_but_are_not_reported_again() {
        let writes = LostWrites::default();
        writes.record_reported();
        assert_eq!(writes.uncovered(), Some(1));
        assert_eq!(writes.own(), 0);
        writes.record();
        assert_eq!(writes.own(), 1);
        assert_eq!(writes.uncovered(), Some(2));
    }
}
