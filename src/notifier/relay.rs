//! The outbox relay: claims outbox rows, publishes a whole claimed batch before
//! awaiting its confirms (publisher confirms, pipelined), and marks each row
//! published only after the broker confirmed it. Any failure (nack,
//! timeout, lost channel or connection) keeps the row, drops the connection and
//! reconnects with exponential backoff and jitter; nothing is ever dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use chrono::Utc;
use futures_util::future::join_all;
use tokio::sync::{watch, Notify};

use super::amqp::{BrokerLink, Delivered, PublishError};
use crate::configuration::AmqpSettings;
use crate::metadata::{ClaimOutbox, MarkPublished, MetadataStore, PrunePublished, PublishFailed};
use crate::telemetry::metrics;

/// How often an unroutable deployment is logged (every event is counted).
const UNROUTABLE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Whether the broker is reachable, for readiness reports.
#[derive(Debug, Default)]
pub struct BrokerHealth {
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl BrokerHealth {
    fn up(&self) {
        self.connected.store(true, Ordering::Release);
        metrics::set_broker_connected(true);
    }

    fn down(&self, error: String) {
        self.connected.store(false, Ordering::Release);
        metrics::set_broker_connected(false);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// `Ok` while connected, else the last error.
    pub fn status(&self) -> Result<(), String> {
        if self.connected.load(Ordering::Acquire) {
            return Ok(());
        }
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Err(error.unwrap_or_else(|| "not connected yet".into()))
    }
}

/// Everything the relay needs.
pub struct Relay {
    /// The outbox.
    pub store: Addr<MetadataStore>,
    /// Broker settings.
    pub settings: AmqpSettings,
    /// Broker URL (secret: never logged).
    pub url: String,
    /// Connection name.
    pub connection_name: String,
    /// Rung when a request appended to the outbox.
    pub wake: Arc<Notify>,
    /// Becomes `true` when valet stops.
    pub stopping: watch::Receiver<bool>,
    /// Broker reachability.
    pub health: Arc<BrokerHealth>,
}

/// Exponential backoff with jitter between `base` and `max`.
struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(100);

    fn next(&mut self) -> Duration {
        let exp = Self::BASE.saturating_mul(2u32.saturating_pow(self.attempt.min(16)));
        self.attempt = self.attempt.saturating_add(1);
        let capped = exp.min(self.max);
        // "Equal jitter": half fixed, half random, so instances spread out.
        let random = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        capped / 2 + (capped / 2) * random / 1000
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Relay {
    /// Runs until valet stops; a confirm in flight at that moment is awaited and
    /// recorded before returning.
    pub async fn run(mut self) {
        let mut link: Option<BrokerLink> = None;
        let mut backoff = Backoff {
            attempt: 0,
            max: self.settings.max_backoff(),
        };
        let mut outage_logged = false;
        let mut last_prune: Option<Instant> = None;
        let mut last_unroutable_log: Option<Instant> = None;
        let poll = self.settings.poll_interval();
        let lease = chrono::Duration::seconds(self.settings.claim_lease_secs as i64);

        while !*self.stopping.borrow() {
            if link.as_ref().is_none_or(|l| !l.is_open()) {
                if link.take().is_some() {
                    metrics::record_broker_reconnect();
                }
                match BrokerLink::open(&self.settings, &self.url, &self.connection_name).await {
                    Ok(opened) => {
                        if outage_logged {
                            tracing::info!("message broker reachable again; publishing the outbox");
                        } else {
                            tracing::info!(exchange = %self.settings.exchange, "connected to the message broker");
                        }
                        outage_logged = false;
                        self.health.up();
                        backoff.reset();
                        link = Some(opened);
                    }
                    Err(e) => {
                        // The error names host and port, never the URL's password.
                        if !outage_logged {
                            tracing::warn!(error = %e, "message broker unreachable; events wait in the outbox");
                            outage_logged = true;
                        }
                        self.health.down(e.to_string());
                        self.pause(backoff.next()).await;
                        continue;
                    }
                }
            }
            // Pruning is an indexed delete: once per poll interval is cheap.
            if last_prune.is_none_or(|t| t.elapsed() >= poll) {
                last_prune = Some(Instant::now());
                self.prune().await;
            }
            let claim = ClaimOutbox {
                limit: self.settings.batch_size,
                lease,
            };
            let batch = match self.store.send(claim).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the outbox");
                    self.pause(poll).await;
                    continue;
                }
                Err(_) => break,
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = self.stopping.changed() => {}
                }
                continue;
            }
            let Some(current) = link.as_ref() else {
                continue;
            };
            if *self.stopping.borrow() {
                let release = batch.iter().map(|e| e.seq).collect();
                let _ = self
                    .store
                    .send(PublishFailed {
                        failed: None,
                        error: String::new(),
                        release,
                    })
                    .await;
                break;
            }
            // The whole batch is published before any confirm is awaited: a batch
            // holds at most one row per file (the claim takes only each file's
            // oldest unpublished row), so pipelining keeps every file's order.
            let started = Instant::now();
            let outcomes = join_all(batch.iter().map(|entry| current.publish(entry))).await;
            let mut published = Vec::with_capacity(batch.len());
            let mut failure = None;
            let mut release = Vec::new();
            for (entry, outcome) in batch.iter().zip(outcomes) {
                match outcome {
                    Ok(delivered) => {
                        metrics::record_publish(started.elapsed());
                        if delivered == Delivered::Unroutable {
                            metrics::record_unroutable();
                            if last_unroutable_log
                                .is_none_or(|t| t.elapsed() >= UNROUTABLE_LOG_EVERY)
                            {
                                last_unroutable_log = Some(Instant::now());
                                tracing::warn!(
                                    exchange = %self.settings.exchange,
                                    event_type = %entry.event_type,
                                    "an event was confirmed but no queue is bound for it; \
                                     bind a queue to the exchange (see valet_amqp_returned_total)"
                                );
                            }
                        }
                        published.push(entry.seq);
                    }
                    Err(e) if failure.is_none() => {
                        metrics::record_publish_failure(match e {
                            PublishError::Nacked => "nack",
                            PublishError::Timeout(_) => "timeout",
                            PublishError::Broker(_) => "broker",
                        });
                        failure = Some((entry.seq, e.to_string()));
                    }
                    // Later failures share the first one's cause: released untouched.
                    Err(_) => release.push(entry.seq),
                }
            }
            self.record(published).await;
            if let Some((failed, error)) = failure {
                let _ = self
                    .store
                    .send(PublishFailed {
                        failed: Some(failed),
                        error: error.clone(),
                        release,
                    })
                    .await;
                tracing::warn!(error = %error, "publishing an event failed; reconnecting, the event stays in the outbox");
                self.health.down(error);
                if let Some(broken) = link.take() {
                    broken.close().await;
                }
                metrics::record_broker_reconnect();
                self.pause(backoff.next()).await;
            }
        }
        if let Some(open) = link {
            open.close().await;
        }
    }

    async fn record(&self, published: Vec<i64>) {
        if published.is_empty() {
            return;
        }
        // If this fails the rows are published again after their lease: consumers
        // dedupe on the message id.
        match self.store.send(MarkPublished(published)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot mark events published; they will be sent again")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot mark events published; they will be sent again")
            }
        }
    }

    async fn prune(&self) {
        if self.settings.retention_hours == 0 {
            return;
        }
        let cutoff = Utc::now() - chrono::Duration::hours(self.settings.retention_hours as i64);
        if let Ok(Ok(pruned)) = self
            .store
            .send(PrunePublished {
                cutoff,
                limit: 10_000,
            })
            .await
        {
            if pruned > 0 {
                tracing::debug!(pruned, "pruned published outbox rows");
            }
        }
    }

    /// Sleeps, waking early when valet stops.
    async fn pause(&mut self, duration: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.stopping.changed() => {}
        }
    }
}
