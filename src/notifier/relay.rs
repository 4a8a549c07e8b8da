//! The outbox relay, a small state machine over an [`EventSink`]: `Down`, it
//! connects with exponential backoff and jitter; `Up`, it claims outbox rows,
//! publishes a whole claimed batch before awaiting its confirms (pipelined), and
//! marks each row published only after the sink confirmed it. Any failure (nack,
//! timeout, lost channel or connection) keeps the row, drops the link and goes
//! `Down`; nothing is ever dropped.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use chrono::Utc;
use tokio::sync::{watch, Notify};

use super::sink::{Delivered, EventSink, PublishError, SinkLink};
use crate::configuration::AmqpSettings;
use crate::metadata::{
    ClaimOutbox, MarkPublished, MetadataStore, OutboxEntry, PrunePublished, PublishFailed,
};
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

/// Where the relay stands with its sink.
enum Link<L> {
    /// Not connected; the backoff paces the attempts.
    Down(Backoff),
    /// Connected.
    Up(L),
}

/// Exponential backoff with jitter between `BASE` and `max`.
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
        let random = rand::random_range(0..1000u32);
        capped / 2 + (capped / 2) * random / 1000
    }
}

/// Relays the outbox of a metadata store to an [`EventSink`].
pub struct Relay<S: EventSink> {
    sink: S,
    store: Addr<MetadataStore>,
    settings: AmqpSettings,
    wake: Arc<Notify>,
    stopping: watch::Receiver<bool>,
    health: Arc<BrokerHealth>,
    poll: Duration,
    lease: chrono::Duration,
    /// Whether the current outage was logged (it is logged once).
    outage_logged: bool,
    last_prune: Option<Instant>,
    last_unroutable_log: Option<Instant>,
}

impl<S: EventSink> Relay<S> {
    /// A relay of `store`'s outbox to `sink`, tuned by `settings`; `wake` is rung
    /// when a request appended to the outbox, `stopping` becomes `true` when valet
    /// stops, and `health` tells readiness whether the sink is reachable.
    pub fn new(
        sink: S,
        store: Addr<MetadataStore>,
        settings: AmqpSettings,
        wake: Arc<Notify>,
        stopping: watch::Receiver<bool>,
        health: Arc<BrokerHealth>,
    ) -> Self {
        Self {
            sink,
            store,
            poll: Duration::from_secs(settings.poll_interval_secs),
            lease: chrono::Duration::seconds(settings.claim_lease_secs as i64),
            settings,
            wake,
            stopping,
            health,
            outage_logged: false,
            last_prune: None,
            last_unroutable_log: None,
        }
    }

    /// Runs until valet stops; a batch in flight at that moment is awaited and
    /// recorded before returning.
    pub async fn run(mut self) {
        let mut link = Link::Down(self.backoff());
        while !*self.stopping.borrow() {
            link = match link {
                Link::Down(backoff) => self.connect(backoff).await,
                Link::Up(open) => match self.relay_batch(open).await {
                    ControlFlow::Continue(next) => next,
                    ControlFlow::Break(open) => {
                        open.close().await;
                        return;
                    }
                },
            };
        }
        if let Link::Up(open) = link {
            open.close().await;
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            attempt: 0,
            max: Duration::from_secs(self.settings.max_backoff_secs),
        }
    }

    /// `Down`: one connection attempt; after a failure, waits out the backoff.
    async fn connect(&mut self, mut backoff: Backoff) -> Link<S::Link> {
        match self.sink.connect().await {
            Ok(open) => {
                if self.outage_logged {
                    tracing::info!("message broker reachable again; publishing the outbox");
                } else {
                    tracing::info!(exchange = %self.settings.exchange, "connected to the message broker");
                }
                self.outage_logged = false;
                self.health.up();
                Link::Up(open)
            }
            Err(e) => {
                if !self.outage_logged {
                    tracing::warn!(error = %e, "message broker unreachable; events wait in the outbox");
                    self.outage_logged = true;
                }
                self.health.down(e.to_string());
                self.pause(backoff.next()).await;
                Link::Down(backoff)
            }
        }
    }

    /// `Up`: claims a batch and publishes it, or waits for events. Breaks (with
    /// the link, to close) when the metadata store is gone.
    async fn relay_batch(&mut self, open: S::Link) -> ControlFlow<S::Link, Link<S::Link>> {
        if !open.is_open() {
            metrics::record_broker_reconnect();
            return ControlFlow::Continue(Link::Down(self.backoff()));
        }
        // Pruning is an indexed delete: once per poll interval is cheap.
        if self.last_prune.is_none_or(|t| t.elapsed() >= self.poll) {
            self.last_prune = Some(Instant::now());
            self.prune().await;
        }
        let claim = ClaimOutbox {
            limit: self.settings.batch_size,
            lease: self.lease,
        };
        let batch = match self.store.send(claim).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                self.pause(self.poll).await;
                return ControlFlow::Continue(Link::Up(open));
            }
            Err(_) => return ControlFlow::Break(open),
        };
        if batch.is_empty() {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
                _ = self.stopping.changed() => {}
            }
            return ControlFlow::Continue(Link::Up(open));
        }
        if *self.stopping.borrow() {
            // The loop stops next; whichever instance runs then takes these rows.
            self.release(&batch).await;
            return ControlFlow::Continue(Link::Up(open));
        }
        // The whole batch is published before any confirm is awaited: a batch
        // holds at most one row per file (the claim takes only each file's
        // oldest unpublished row), so pipelining keeps every file's order.
        let started = Instant::now();
        let outcomes = open.publish_batch(&batch).await;
        ControlFlow::Continue(match self.settle(&batch, outcomes, started).await {
            None => Link::Up(open),
            Some(error) => self.drop_link(open, error).await,
        })
    }

    /// After a failed publish: closes the link and waits before reconnecting.
    async fn drop_link(&mut self, open: S::Link, error: String) -> Link<S::Link> {
        tracing::warn!(error = %error, "publishing an event failed; reconnecting, the event stays in the outbox");
        self.health.down(error);
        open.close().await;
        metrics::record_broker_reconnect();
        let mut backoff = self.backoff();
        self.pause(backoff.next()).await;
        Link::Down(backoff)
    }

    /// Gives claimed rows back unattempted.
    async fn release(&self, batch: &[OutboxEntry]) {
        let release = batch.iter().map(|e| e.seq).collect();
        let _ = self
            .store
            .send(PublishFailed {
                failed: None,
                error: String::new(),
                release,
            })
            .await;
    }

    /// Records a published batch: confirmed rows are marked published, the first
    /// failure is recorded on its row and later failures are released. Returns
    /// that first failure.
    async fn settle(
        &mut self,
        batch: &[OutboxEntry],
        outcomes: Vec<Result<Delivered, PublishError>>,
        started: Instant,
    ) -> Option<String> {
        debug_assert_eq!(batch.len(), outcomes.len(), "one outcome per entry");
        let mut published = Vec::with_capacity(batch.len());
        let mut failure = None;
        let mut release = Vec::new();
        for (entry, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Ok(delivered) => {
                    metrics::record_publish(started.elapsed());
                    if delivered == Delivered::Unroutable {
                        self.unroutable(entry);
                    }
                    published.push(entry.seq);
                }
                Err(e) if failure.is_none() => {
                    metrics::record_publish_failure(e.label());
                    failure = Some((entry.seq, e.to_string()));
                }
                // Later failures share the first one's cause: released untouched.
                Err(_) => release.push(entry.seq),
            }
        }
        self.record(published).await;
        let (failed, error) = failure?;
        let _ = self
            .store
            .send(PublishFailed {
                failed: Some(failed),
                error: error.clone(),
                release,
            })
            .await;
        Some(error)
    }

    /// Counts an event nobody receives; warns at most every [`UNROUTABLE_LOG_EVERY`].
    fn unroutable(&mut self, entry: &OutboxEntry) {
        metrics::record_unroutable();
        if self
            .last_unroutable_log
            .is_none_or(|t| t.elapsed() >= UNROUTABLE_LOG_EVERY)
        {
            self.last_unroutable_log = Some(Instant::now());
            tracing::warn!(
                exchange = %self.settings.exchange,
                event_type = %entry.event_type,
                "an event was confirmed but no queue is bound for it; \
                 bind a queue to the exchange (see valet_amqp_returned_total)"
            );
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
