//! Events reach RabbitMQ: real consumers on the broker at 127.0.0.1:5672, each test
//! with its own exchange and queues. Outages are made with a TCP proxy between
//! valet and the broker, so the shared broker stays up for the other tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use valet::configuration::Settings;

use crate::cuttable_proxy::CuttableProxy;
use crate::helpers::{body_of, spawn_app_on_postgres, spawn_app_with, TestApp};

pub const BROKER: &str = "127.0.0.1:5672";

fn broker_url(address: &str) -> String {
    format!("amqp://guest:guest@{address}/%2f")
}

/// A consumer's view of the broker: its own exchange, queues bound to it.
pub struct Broker {
    connection: Arc<Connection>,
    pub exchange: String,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub body: Value,
    pub message_id: String,
    pub kind: String,
    pub content_type: String,
    pub delivery_mode: u8,
    pub headers: BTreeMap<String, Option<String>>,
}

impl Broker {
    pub async fn new() -> Self {
        let connection = Connection::connect(&broker_url(BROKER), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need RabbitMQ on {BROKER} (guest/guest): start it with \
                     `rabbitmq-server -detached` (scripts/test.sh does): {e}"
                )
            });
        let exchange = format!("valet-test-{}", uuid::Uuid::new_v4().simple());
        let channel = connection.create_channel().await.expect("channel");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        Self {
            connection: Arc::new(connection),
            exchange,
        }
    }

    /// A queue bound with `pattern`; messages are collected as they arrive.
    pub async fn bind(&self, pattern: &str) -> Inbox {
        let channel = self.connection.create_channel().await.expect("channel");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare queue");
        channel
            .queue_bind(
                queue.name().as_str().into(),
                self.exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        let mut consumer = channel
            .basic_consume(
                queue.name().as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let task = tokio::spawn(async move {
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let props = &delivery.properties;
                let headers = props
                    .headers()
                    .as_ref()
                    .map(|h| {
                        h.inner()
                            .iter()
                            .map(|(k, v)| {
                                let value = match v {
                                    AMQPValue::LongString(s) => Some(s.to_string()),
                                    _ => None,
                                };
                                (k.to_string(), value)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let received = Received {
                    routing_key: delivery.routing_key.to_string(),
                    body: serde_json::from_slice(&delivery.data).expect("JSON body"),
                    message_id: props
                        .message_id()
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    kind: props
                        .kind()
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    content_type: props
                        .content_type()
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    delivery_mode: props.delivery_mode().unwrap_or(0),
                    headers,
                };
                sink.lock().expect("lock").push(received);
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
        });
        Inbox {
            messages,
            _task: AbortOnDrop(task),
        }
    }

    /// Settings for a valet publishing to this exchange through `address`.
    pub fn configure(&self, settings: &mut Settings, address: &str) {
        settings.amqp.url = Some(broker_url(address));
        settings.amqp.exchange = self.exchange.clone();
        settings.amqp.poll_interval_secs = 1;
        settings.amqp.max_backoff_secs = 1;
        settings.amqp.publish_timeout_secs = 5;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let connection = self.connection.clone();
        let exchange = self.exchange.clone();
        // Best effort: the exchange is durable and would outlive the test.
        tokio::spawn(async move {
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        });
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Messages received on one queue.
pub struct Inbox {
    messages: Arc<Mutex<Vec<Received>>>,
    _task: AbortOnDrop,
}

impl Inbox {
    /// Waits until `count` messages arrived (at most 20 s) and returns all so far.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..crate::helpers::attempts(200) {
            let messages = self.messages.lock().expect("lock").clone();
            if messages.len() >= count {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let messages = self.messages.lock().expect("lock").clone();
        panic!(
            "expected {count} messages, got {}: {messages:#?}",
            messages.len()
        );
    }

    pub fn received(&self) -> Vec<Received> {
        self.messages.lock().expect("lock").clone()
    }
}

async fn spawn_publishing(broker: &Broker) -> TestApp {
    spawn_app_with(|s| broker.configure(s, BROKER)).await
}

fn ids_of(messages: &[Received]) -> Vec<String> {
    messages.iter().map(|m| m.message_id.clone()).collect()
}

#[actix_web::test]
async fn upload_delete_and_reject_arrive_exactly_as_documented() {
    let broker = Broker::new().await;
    let all = broker.bind("#").await;
    let app = spawn_publishing(&broker).await;
    let token = app.device_token("acme", "dev-42");

    let file = app
        .upload(&token, &body_of(100), json!({"metadata": {"build": "7"}}))
        .await;
    let id = file["id"].as_str().expect("id");
    let deleted = app
        .client
        .delete(app.url(&format!("/v1/files/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 204);
    // A corrupted object (written straight into the store) is rejected at completion.
    let bytes = body_of(50);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let url = url::Url::parse(created["upload"]["url"].as_str().expect("url")).expect("url");
    let key = url.path().trim_start_matches("/v1/objects/local/");
    let path = app.data_dir.path().join("objects").join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
    std::fs::write(&path, vec![0u8; 50]).expect("write");
    let rejected_id = created["file"]["id"].as_str().expect("id");
    assert_eq!(
        app.complete(&token, rejected_id).await.status().as_u16(),
        422
    );

    let received = all.wait_for(3).await;
    // Order is kept per file, not across files: look each event up by its id.
    let outbox = app.outbox().await;
    assert_eq!(received.len(), outbox.len());
    let messages: Vec<Received> = outbox
        .iter()
        .map(|entry| {
            received
                .iter()
                .find(|m| m.message_id == entry.event_id)
                .cloned()
                .unwrap_or_else(|| panic!("{} was not received", entry.event_id))
        })
        .collect();
    let expected = [
        (
            "file.uploaded.acme.dev-42",
            "io.valet.file.uploaded",
            "uploaded",
            id,
        ),
        (
            "file.deleted.acme.dev-42",
            "io.valet.file.deleted",
            "deleted",
            id,
        ),
        (
            "file.rejected.acme.dev-42",
            "io.valet.file.rejected",
            "rejected",
            rejected_id,
        ),
    ];
    for (message, (routing_key, kind, event, file_id)) in messages.iter().zip(expected) {
        assert_eq!(message.routing_key, routing_key);
        assert_eq!(message.kind, kind);
        assert_eq!(message.content_type, "application/cloudevents+json");
        assert_eq!(message.delivery_mode, 2, "persistent");
        assert_eq!(message.body["id"], message.message_id.as_str());
        assert_eq!(message.body["type"], kind);
        assert_eq!(message.body["specversion"], "1.0");
        assert_eq!(message.body["data"]["id"], file_id);
        assert_eq!(message.body["data"]["backend"], "local");
        assert!(message.body["data"]["key"]
            .as_str()
            .is_some_and(|k| k.ends_with(file_id)));
        assert_eq!(message.headers["tenant"].as_deref(), Some("acme"));
        assert_eq!(message.headers["device"].as_deref(), Some("dev-42"));
        assert_eq!(message.headers["event"].as_deref(), Some(event));
    }
    assert_eq!(messages[0].body["data"]["metadata"]["build"], "7");
    // Every published event validates against the published schema.
    let schema: Value =
        serde_json::from_str(valet::events::FILE_EVENT_SCHEMA).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    for message in &messages {
        let errors: Vec<String> = validator
            .iter_errors(&message.body)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}\n{}", message.body);
    }
    // The outbox rows are marked published.
    assert!(app.outbox().await.iter().all(|e| e.published_at.is_some()));
    let served = app
        .client
        .get(app.url("/schemas/file-event.json"))
        .send()
        .await
        .expect("schema");
    assert_eq!(served.json::<Value>().await.expect("json"), schema);
}

#[actix_web::test]
async fn a_consumer_bound_to_one_tenant_sees_only_that_tenant_and_odd_ids_route_safely() {
    let broker = Broker::new().await;
    let acme = broker.bind("file.*.acme.#").await;
    let dotted = broker.bind("file.uploaded.a%2Eb.#").await;
    let app = spawn_publishing(&broker).await;
    app.upload(&app.device_token("acme", "dev-1"), &body_of(10), json!({}))
        .await;
    app.upload(
        &app.device_token("globex", "dev-1"),
        &body_of(11),
        json!({}),
    )
    .await;
    app.upload(&app.device_token("a.b", "*#é"), &body_of(12), json!({}))
        .await;
    let service = app.service_token("acme", "fleet");
    app.upload(&service, &body_of(13), json!({"shared": true}))
        .await;

    let messages = acme.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages_now = acme.received();
    assert_eq!(messages_now.len(), 2, "{messages:#?}");
    assert_eq!(messages_now[0].routing_key, "file.uploaded.acme.dev-1");
    assert_eq!(messages_now[1].routing_key, "file.uploaded.acme.shared");
    assert_eq!(messages_now[1].headers["device"], None);

    let odd = dotted.wait_for(1).await;
    assert_eq!(odd[0].routing_key, "file.uploaded.a%2Eb.%2A%23%C3%A9");
    assert_eq!(odd[0].headers["tenant"].as_deref(), Some("a.b"));
    assert_eq!(odd[0].headers["device"].as_deref(), Some("*#é"));
}

#[actix_web::test]
async fn while_the_broker_is_away_uploads_go_on_and_every_event_arrives_later_in_order() {
    let broker = Broker::new().await;
    let all = broker.bind("#").await;
    let proxy = CuttableProxy::start(BROKER).await;
    let app = spawn_app_with(|s| broker.configure(s, &proxy.address)).await;
    let token = app.device_token("acme", "dev-42");
    let first = app.upload(&token, &body_of(10), json!({})).await;
    all.wait_for(1).await;

    proxy.cut().await;
    let mut ids = vec![first["id"].as_str().expect("id").to_owned()];
    // 500 files complete while the broker is away (longer than several retries).
    for i in 0..500 {
        let file = app.upload(&token, &body_of(20 + i), json!({})).await;
        let id = file["id"].as_str().expect("id").to_owned();
        if i == 0 {
            let deleted = app
                .client
                .delete(app.url(&format!("/v1/files/{id}")))
                .bearer_auth(&token)
                .send()
                .await
                .expect("delete");
            assert_eq!(deleted.status().as_u16(), 204);
        }
        ids.push(id);
    }
    // Ready for uploads, with the broker reported down.
    let mut reported = false;
    for _ in 0..crate::helpers::attempts(50) {
        let ready = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status().as_u16(), 200);
        let body: Value = ready.json().await.expect("json");
        if body["checks"]["broker"] != "ok" {
            reported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reported, "readiness never reported the broker down");
    assert_eq!(
        all.received().len(),
        1,
        "nothing can arrive while the broker is away"
    );

    proxy.restore().await;
    let messages = all.wait_for(502).await;
    let outbox = app.outbox().await;
    let unique: std::collections::BTreeSet<String> = ids_of(&messages).into_iter().collect();
    assert_eq!(
        unique,
        outbox
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
    );
    // The deleted file's events are in order: uploaded, then deleted.
    let of_first: Vec<&str> = messages
        .iter()
        .filter(|m| m.body["data"]["id"] == ids[1].as_str())
        .map(|m| m.kind.as_str())
        .collect();
    assert_eq!(
        of_first,
        ["io.valet.file.uploaded", "io.valet.file.deleted"]
    );
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["checks"]["broker"], "ok");
}

#[actix_web::test]
async fn a_connection_lost_mid_stream_loses_nothing() {
    let broker = Broker::new().await;
    let all = broker.bind("#").await;
    let proxy = CuttableProxy::start(BROKER).await;
    let app = spawn_app_with(|s| broker.configure(s, &proxy.address)).await;
    let token = app.device_token("acme", "dev-42");
    let bodies: Vec<Vec<u8>> = (0..20).map(|i| body_of(30 + i)).collect();
    let mut uploads = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        uploads.push(app.upload(&token, body, json!({})));
        if i == 10 {
            proxy.drop_connections();
        }
    }
    for upload in uploads {
        upload.await;
    }
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 20);
    let expected: std::collections::BTreeSet<String> =
        outbox.iter().map(|e| e.event_id.clone()).collect();
    for _ in 0..crate::helpers::attempts(200) {
        let got: std::collections::BTreeSet<String> = ids_of(&all.received()).into_iter().collect();
        if got == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not every event arrived: {:?}", ids_of(&all.received()));
}

#[actix_web::test]
async fn two_instances_relaying_one_database_publish_each_event_once() {
    let broker = Broker::new().await;
    let all = broker.bind("#").await;
    let app = spawn_app_on_postgres(|s| broker.configure(s, BROKER)).await;
    let second = app.spawn_another_instance().await;
    let token = app.device_token("acme", "dev-42");
    // 1,000 completions, half through each instance, 20 at a time.
    let bodies: Vec<Vec<u8>> = (0..1000).map(|i| body_of(40 + i)).collect();
    for (chunk_index, chunk) in bodies.chunks(20).enumerate() {
        let uploads = chunk.iter().enumerate().map(|(i, body)| {
            let (app, second, token) = (&app, &second, &token);
            async move {
                let created = app.create_ok(token, body, json!({})).await;
                let put = app.send_signed(&created["upload"], body.clone()).await;
                assert!(put.status().is_success());
                let id = created["file"]["id"].as_str().expect("id");
                let base = if (chunk_index + i) % 2 == 0 {
                    &app.address
                } else {
                    second
                };
                let completed = app
                    .client
                    .post(format!("{base}/v1/files/{id}/complete"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("complete");
                assert_eq!(completed.status().as_u16(), 200);
            }
        });
        futures_util::future::join_all(uploads).await;
    }
    all.wait_for(1000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = all.received();
    let unique: std::collections::BTreeSet<String> = ids_of(&messages).into_iter().collect();
    assert_eq!(unique.len(), 1000);
    assert_eq!(messages.len(), 1000, "no event was published twice");
}

#[actix_web::test]
async fn unroutable_events_are_counted_and_still_drained() {
    let broker = Broker::new().await;
    let app = spawn_publishing(&broker).await;
    let token = app.device_token("acme", "dev-42");
    app.upload(&token, &body_of(10), json!({})).await;
    for _ in 0..crate::helpers::attempts(100) {
        if app.outbox().await.iter().all(|e| e.published_at.is_some()) {
            let metrics = app
                .client
                .get(app.url("/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            assert!(metrics.contains("valet_amqp_returned_total"), "{metrics}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the unroutable event was never drained: {:?}",
        app.outbox().await
    );
}

#[actix_web::test]
async fn published_rows_are_pruned_after_the_retention() {
    let broker = Broker::new().await;
    let all = broker.bind("#").await;
    let app = spawn_app_with(|s| {
        broker.configure(s, BROKER);
        s.amqp.retention_hours = 1;
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let old = app.upload(&token, &body_of(10), json!({})).await;
    all.wait_for(1).await;
    app.execute_sql(format!(
        "UPDATE outbox SET published_at = '2020-01-01 00:00:00' WHERE file_id = '{}'",
        old["id"].as_str().expect("id")
    ))
    .await;
    let recent = app.upload(&token, &body_of(11), json!({})).await;
    all.wait_for(2).await;
    for _ in 0..crate::helpers::attempts(50) {
        let outbox = app.outbox().await;
        if outbox.len() == 1 {
            assert_eq!(outbox[0].file_id, recent["id"].as_str().expect("id"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the old published row was never pruned: {:?}",
        app.outbox().await
    );
}
