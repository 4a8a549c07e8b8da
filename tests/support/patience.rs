//! How long a test may wait for something to happen: a base duration stretched by
//! `VALET_TEST_TIME_FACTOR` (default 1; e.g. 3 on a slow or very busy machine).
//! Waits poll for the awaited state and end as soon as it holds, so the factor
//! only moves when a test gives up, never how long a passing test takes.

use std::time::Duration;

/// `base` times `VALET_TEST_TIME_FACTOR` (a positive number; anything else counts as 1).
pub fn patience(base: Duration) -> Duration {
    let factor = std::env::var("VALET_TEST_TIME_FACTOR")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0);
    base.mul_f64(factor)
}

/// `n` polls stretched the same way: for loops that poll a fixed number of times
/// with a fixed pause between polls.
pub fn attempts(n: u32) -> u32 {
    let stretched = patience(Duration::from_secs(u64::from(n)))
        .as_secs_f64()
        .ceil();
    stretched.max(f64::from(n)) as u32
}
