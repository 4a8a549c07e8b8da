//! The event relay: events kept by the embedded default are published once a
//! broker is configured.

use std::fs;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{mint_device_token, random_bytes, run_ok, upload, valet, Server};
use crate::topic_consumer;

#[test]
fn events_kept_by_the_embedded_default_are_published_once_a_broker_is_configured() {
    use futures_util::StreamExt;
    use lapin::options::ExchangeDeleteOptions;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let exchange = format!("valet-cli-test-{}", uuid::Uuid::new_v4().simple());
    let (connection, mut consumer) = runtime.block_on(topic_consumer::consume_all(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        &exchange,
    ));

    // The embedded default: no broker, events stay in the outbox.
    let dir = TempDir::new().expect("temp dir");
    let mut server = Server::start(dir.path(), &[]);
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    let mut ids = Vec::new();
    for i in 0..3 {
        let path = dir.path().join(format!("f{i}.bin"));
        fs::write(&path, random_bytes(1000 + i)).expect("write");
        let (file, _) = upload(dir.path(), &server, &token, path.to_str().expect("path"));
        ids.push(file["id"].as_str().expect("id").to_owned());
    }
    let listed = run_ok(valet(dir.path()).args(["events", "list"]));
    assert_eq!(listed.stdout.lines().count(), 3, "{}", listed.stdout);
    // The process dies without a chance to do anything more.
    server.send_signal("KILL");
    server.stop();

    // Restarted with a broker: the backlog is published.
    let _server = Server::start(
        dir.path(),
        &[
            ("VALET_AMQP__URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("VALET_AMQP__EXCHANGE", exchange.as_str()),
        ],
    );
    let received: Vec<String> = runtime.block_on(async {
        let mut received = Vec::new();
        while received.len() < 3 {
            let next = tokio::time::timeout(
                crate::patience::patience(Duration::from_secs(20)),
                consumer.next(),
            )
            .await;
            let Ok(Some(Ok(delivery))) = next else { break };
            let event: Value = serde_json::from_slice(&delivery.data).expect("event");
            received.push(event["data"]["id"].as_str().expect("id").to_owned());
        }
        let channel = connection.create_channel().await.expect("channel");
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
        received
    });
    assert_eq!(received, ids);
    let waiting = run_ok(valet(dir.path()).args(["events", "list"]));
    assert_eq!(waiting.stdout.lines().count(), 0, "{}", waiting.stdout);
}
