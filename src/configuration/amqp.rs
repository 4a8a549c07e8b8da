//! `[amqp]`: publishing file events to RabbitMQ (AMQP 0-9-1) from the outbox.

use std::time::Duration;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{at_least_one, url_with_scheme};

/// RabbitMQ (AMQP 0-9-1) publishing of file events.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp://` or `amqps://` URL of the broker; absent = events stay in the outbox.
    pub url: Option<String>,
    /// Topic exchange events are published to.
    pub exchange: String,
    /// Declare the exchange (durable topic) at connection; off for locked-down brokers.
    pub declare: bool,
    /// Connection name shown by the broker (default `valet@<hostname>`).
    pub connection_name: Option<String>,
    /// Heartbeat interval in seconds (0 = the broker's choice).
    pub heartbeat_secs: u16,
    /// Seconds to wait for the broker to confirm a message before reconnecting.
    pub publish_timeout_secs: u64,
    /// Outbox rows claimed per round.
    pub batch_size: i64,
    /// Seconds between outbox polls when nothing wakes the relay.
    pub poll_interval_secs: u64,
    /// Seconds a claim keeps other instances off rows being published.
    pub claim_lease_secs: u64,
    /// Longest wait between reconnection attempts, in seconds.
    pub max_backoff_secs: u64,
    /// Hours published rows are kept in the outbox (0 = keep).
    pub retention_hours: u64,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: None,
            exchange: "valet.events".into(),
            declare: true,
            connection_name: None,
            heartbeat_secs: 30,
            publish_timeout_secs: 10,
            batch_size: 500,
            poll_interval_secs: 5,
            claim_lease_secs: 60,
            max_backoff_secs: 30,
            retention_hours: 168,
        }
    }
}

impl AmqpSettings {
    /// Checks the section.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.url {
            if url_with_scheme(url, &["amqp", "amqps"]).is_none() {
                // Never echo the URL: it may hold a password.
                bail!("amqp.url must be an amqp:// or amqps:// URL");
            }
        }
        if self.exchange.is_empty() || self.exchange.len() > 255 {
            bail!("amqp.exchange must be 1 to 255 bytes");
        }
        at_least_one(&[
            ("amqp.publish_timeout_secs", self.publish_timeout_secs),
            (
                "amqp.batch_size",
                u64::try_from(self.batch_size).unwrap_or(0),
            ),
            ("amqp.poll_interval_secs", self.poll_interval_secs),
            ("amqp.claim_lease_secs", self.claim_lease_secs),
            ("amqp.max_backoff_secs", self.max_backoff_secs),
        ])
    }

    /// `publish_timeout_secs` as a duration.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_secs(self.publish_timeout_secs)
    }

    /// `poll_interval_secs` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs)
    }

    /// `max_backoff_secs` as a duration.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_secs(self.max_backoff_secs)
    }
}
