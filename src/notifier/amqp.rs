//! The RabbitMQ side of the relay (lapin): one connection and one confirm-mode
//! channel; every event is published persistent and `mandatory`, and counts as
//! delivered only once the broker confirms it.

use std::sync::OnceLock;
use std::time::Duration;

use async_rs::TokioRuntime;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::routing::routing_key;
use crate::configuration::AmqpSettings;
use crate::metadata::OutboxEntry;

/// Why a publish did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker refused the message.
    #[error("the broker nacked the message")]
    Nacked,
    /// No confirmation within the publish timeout.
    #[error("no confirmation within {0:?}")]
    Timeout(Duration),
    /// The channel or connection failed.
    #[error("{0}")]
    Broker(#[from] lapin::Error),
}

/// What the broker did with a confirmed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Routed to at least one queue.
    Routed,
    /// Confirmed but returned: no queue is bound for its routing key.
    Unroutable,
}

/// lapin's I/O runs on a runtime of its own, created once and kept for the life of
/// the process (a tokio runtime must never be dropped from async code).
fn lapin_runtime() -> Result<TokioRuntime, lapin::Error> {
    static RUNTIME: OnceLock<TokioRuntime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime.clone());
    }
    let runtime = TokioRuntime::tokio().map_err(lapin::Error::from)?;
    Ok(RUNTIME.get_or_init(|| runtime).clone())
}

/// An open connection with a channel in confirm mode.
pub struct BrokerLink {
    connection: Connection,
    channel: Channel,
    exchange: String,
    publish_timeout: Duration,
}

impl BrokerLink {
    /// Connects, enables publisher confirms and (if configured) declares the exchange.
    pub async fn open(
        settings: &AmqpSettings,
        url: &str,
        name: &str,
    ) -> Result<Self, lapin::Error> {
        let url = with_heartbeat(url, settings.heartbeat_secs);
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection =
            Connection::connect_with_runtime(&url, properties, lapin_runtime()?).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        if settings.declare {
            channel
                .exchange_declare(
                    settings.exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(Self {
            connection,
            channel,
            exchange: settings.exchange.clone(),
            publish_timeout: settings.publish_timeout(),
        })
    }

    /// Whether the connection and channel are still usable.
    pub fn is_open(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Publishes one outbox entry and waits for the broker's confirmation.
    pub async fn publish(&self, entry: &OutboxEntry) -> Result<Delivered, PublishError> {
        let event = entry
            .event_type
            .rsplit('.')
            .next()
            .unwrap_or(entry.event_type.as_str());
        let key = routing_key(event, &entry.tenant_id, entry.device_id.as_deref());
        let mut headers = FieldTable::default();
        headers.insert(
            "tenant".into(),
            AMQPValue::LongString(entry.tenant_id.as_str().into()),
        );
        headers.insert(
            "device".into(),
            match &entry.device_id {
                Some(device) => AMQPValue::LongString(device.as_str().into()),
                None => AMQPValue::Void,
            },
        );
        headers.insert("event".into(), AMQPValue::LongString(event.into()));
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/cloudevents+json".into())
            .with_message_id(ShortString::from(entry.event_id.as_str()))
            .with_type(ShortString::from(entry.event_type.as_str()))
            .with_timestamp(entry.created_at.and_utc().timestamp().max(0) as u64)
            .with_app_id("valet".into())
            .with_headers(headers);
        let publish = async {
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    entry.payload.as_bytes(),
                    properties,
                )
                .await?;
            confirm.await
        };
        match tokio::time::timeout(self.publish_timeout, publish).await {
            Err(_) => Err(PublishError::Timeout(self.publish_timeout)),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(Confirmation::Ack(None))) | Ok(Ok(Confirmation::NotRequested)) => {
                Ok(Delivered::Routed)
            }
            Ok(Ok(Confirmation::Ack(Some(_)))) => Ok(Delivered::Unroutable),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
        }
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self.connection.close(200, "valet stopping".into()).await;
    }
}

/// Adds `heartbeat=N` to the URL's query unless it sets one.
fn with_heartbeat(url: &str, heartbeat: u16) -> String {
    if heartbeat == 0 || url.contains("heartbeat=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat={heartbeat}")
}
