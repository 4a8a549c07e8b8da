//! `[jobs]`: the background copies and moves of objects between backends.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::at_least_one;

/// Background job settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JobsSettings {
    /// Work jobs in this instance (any number of instances may).
    pub enabled: bool,
    /// Jobs one instance works at the same time.
    pub concurrency: u32,
    /// Seconds a claim keeps other instances off a job; renewed while it runs.
    pub lease_secs: u64,
    /// Seconds before the first retry of a failed attempt; doubles for each further one.
    pub retry_backoff_secs: u64,
    /// Attempts before a job fails for good.
    pub max_attempts: u32,
    /// Seconds a moved file's source object is kept (unset: the download URL lifetime,
    /// so URLs handed out before the move keep working until they expire).
    pub source_grace_secs: Option<u64>,
    /// Milliseconds between looks for claimable jobs.
    pub poll_interval_ms: u64,
    /// Most files one selector may turn into jobs.
    pub max_group_files: u32,
    /// Bytes per part of a copy written to S3 or Azure (bounds the memory a copy holds).
    pub chunk_size_bytes: u64,
    /// Days a finished job (and its log) is kept (0 = keep).
    pub keep_finished_days: u32,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 2,
            lease_secs: 60,
            retry_backoff_secs: 5,
            max_attempts: 5,
            source_grace_secs: None,
            poll_interval_ms: 1000,
            max_group_files: 10_000,
            chunk_size_bytes: 8 * 1024 * 1024,
            keep_finished_days: 30,
        }
    }
}

/// Smallest part S3 accepts in a multipart upload (all but the last).
const MIN_CHUNK_BYTES: u64 = 5 * 1024 * 1024;
/// Largest chunk a copy holds in memory.
const MAX_CHUNK_BYTES: u64 = 256 * 1024 * 1024;

impl JobsSettings {
    /// Checks the section.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        at_least_one(&[
            ("jobs.concurrency", u64::from(self.concurrency)),
            ("jobs.lease_secs", self.lease_secs),
            ("jobs.max_attempts", u64::from(self.max_attempts)),
            ("jobs.poll_interval_ms", self.poll_interval_ms),
            ("jobs.max_group_files", u64::from(self.max_group_files)),
        ])?;
        if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&self.chunk_size_bytes) {
            anyhow::bail!(
                "jobs.chunk_size_bytes must be between {MIN_CHUNK_BYTES} (5 MiB, the smallest \
                 S3 part) and {MAX_CHUNK_BYTES}"
            );
        }
        Ok(())
    }

    /// `poll_interval_ms` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// How long a claim lasts.
    pub fn lease(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.lease_secs).unwrap_or(i64::MAX / 1000))
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failed ones: the
    /// backoff doubled for each failure after the first, capped at an hour.
    pub fn retry_delay(&self, attempts: u32) -> chrono::Duration {
        let doublings = attempts.saturating_sub(1).min(20);
        let secs = self
            .retry_backoff_secs
            .saturating_mul(1u64 << doublings)
            .min(3600);
        chrono::Duration::seconds(secs as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let jobs = JobsSettings::default();
        let secs: Vec<i64> = (1..=5).map(|a| jobs.retry_delay(a).num_seconds()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80]);
        assert_eq!(jobs.retry_delay(40).num_seconds(), 3600);
    }

    #[test]
    fn chunk_size_is_bounded() {
        let mut jobs = JobsSettings::default();
        assert!(jobs.validate().is_ok());
        jobs.chunk_size_bytes = 1024;
        assert!(jobs.validate().is_err());
    }
}
