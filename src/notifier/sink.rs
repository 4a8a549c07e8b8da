//! Where outbox events go: an [`EventSink`] opens a [`SinkLink`], and the relay
//! publishes claimed batches over it. The relay owns the outbox bookkeeping,
//! retries and backoff; a sink only delivers, and says per event whether the
//! receiving end took it.

use std::time::Duration;

use async_trait::async_trait;

use crate::metadata::OutboxEntry;

/// Any error a sink reports besides a refusal or a timeout.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Why an event was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker refused the message.
    #[error("the broker nacked the message")]
    Nacked,
    /// No confirmation within the publish timeout.
    #[error("no confirmation within {0:?}")]
    Timeout(Duration),
    /// The link (channel, connection) failed.
    #[error("{0}")]
    Broker(SinkError),
}

impl PublishError {
    /// The `reason` label of `valet_amqp_publish_failures_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Nacked => "nack",
            Self::Timeout(_) => "timeout",
            Self::Broker(_) => "broker",
        }
    }
}

/// What the receiving end did with a confirmed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Routed to at least one consumer.
    Routed,
    /// Confirmed, but nobody receives it (AMQP: returned, no queue bound).
    Unroutable,
}

/// Opens links to where events go.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// A live link, as [`connect`](Self::connect) returns it.
    type Link: SinkLink;

    /// Opens a link. The error is logged and shown by readiness: it must not
    /// contain secrets (such as a URL's password).
    async fn connect(&self) -> Result<Self::Link, SinkError>;
}

/// A live link to where events go.
#[async_trait]
pub trait SinkLink: Send + Sync + 'static {
    /// Publishes `batch` and awaits each event's confirmation; one result per
    /// entry, in order. Every entry is sent before any confirmation is awaited:
    /// the relay claims at most one entry per file, so this keeps each file's order.
    async fn publish_batch(&self, batch: &[OutboxEntry]) -> Vec<Result<Delivered, PublishError>>;

    /// Whether the link is still usable; a closed link is dropped and reopened.
    fn is_open(&self) -> bool;

    /// Closes the link politely.
    async fn close(self);
}
