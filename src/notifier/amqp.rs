//! The RabbitMQ sink (lapin): one connection and one confirm-mode channel;
//! every event is published persistent and `mandatory`, and counts as delivered
//! only once the broker confirms it.

use std::sync::OnceLock;
use std::time::Duration;

use async_rs::TokioRuntime;
use async_trait::async_trait;
use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::routing::routing_key_for;
use super::sink::{Delivered, EventSink, PublishError, SinkError, SinkLink};
use crate::configuration::AmqpSettings;
use crate::metadata::OutboxEntry;

impl From<lapin::Error> for PublishError {
    fn from(e: lapin::Error) -> Self {
        Self::Broker(Box::new(e))
    }
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

/// The broker `amqp.*` configures, reached at `url` (secret: never logged).
pub struct AmqpSink {
    settings: AmqpSettings,
    url: String,
    connection_name: String,
}

impl AmqpSink {
    /// A sink that connects to `url` under the connection name `connection_name`.
    pub fn new(settings: AmqpSettings, url: String, connection_name: String) -> Self {
        Self {
            settings,
            url,
            connection_name,
        }
    }
}

#[async_trait]
impl EventSink for AmqpSink {
    type Link = AmqpLink;

    /// Connects, enables publisher confirms and (if configured) declares the exchange.
    async fn connect(&self) -> Result<AmqpLink, SinkError> {
        // lapin's errors name host and port, never the URL's password.
        Ok(AmqpLink::open(&self.settings, &self.url, &self.connection_name).await?)
    }
}

/// An open connection with a channel in confirm mode.
pub struct AmqpLink {
    connection: Connection,
    channel: Channel,
    exchange: String,
    publish_timeout: Duration,
}

impl AmqpLink {
    async fn open(settings: &AmqpSettings, url: &str, name: &str) -> Result<Self, lapin::Error> {
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

    /// Publishes one outbox entry and waits for the broker's confirmation.
    async fn publish(&self, entry: &OutboxEntry) -> Result<Delivered, PublishError> {
        let event = entry
            .event_type
            .rsplit('.')
            .next()
            .unwrap_or(entry.event_type.as_str());
        let key = routing_key_for(
            &entry.event_type,
            &entry.tenant_id,
            entry.device_id.as_deref(),
        );
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
}

#[async_trait]
impl SinkLink for AmqpLink {
    async fn publish_batch(&self, batch: &[OutboxEntry]) -> Vec<Result<Delivered, PublishError>> {
        // join_all starts every publish, in order, before awaiting any confirm:
        // the whole batch is on its way while the confirms come back.
        join_all(batch.iter().map(|entry| self.publish(entry))).await
    }

    /// Whether the connection and channel are still usable.
    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    async fn close(self) {
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
