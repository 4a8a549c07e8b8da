//! Event relay throughput and latency, against the RabbitMQ on 127.0.0.1:5672:
//!
//! 1. backlog: 10,000 outbox rows are written while no valet runs, then valet
//!    starts and publishes them with confirms; reports events per second;
//! 2. end to end: 500 uploads one after another; for each, the time from
//!    `complete` returning to a consumer receiving the event; reports p50 and p99.
//!
//! Run: `cargo bench --bench event_relay` (release build; SQLite in a temp dir).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use futures_util::StreamExt;
use lapin::options::ExchangeDeleteOptions;
use serde_json::{json, Value};
use sha2::Digest;
use valet::auth::{token, RootKey};
use valet::configuration::{Settings, TrustedKey};
use valet::domain::{DeviceId, Principal, TenantId};
use valet::startup::Application;

#[path = "../tests/support/topic_consumer.rs"]
mod topic_consumer;

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const BACKLOG: usize = 10_000;
const LATENCY_SAMPLES: usize = 500;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn consume(exchange: &str) -> (lapin::Connection, Arrivals) {
    let (connection, mut consumer) = topic_consumer::consume_all(BROKER, exchange).await;
    let arrivals: Arrivals = Arc::default();
    let sink = arrivals.clone();
    actix_web::rt::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let now = Instant::now();
            let file_id = serde_json::from_slice::<Value>(&delivery.data)
                .ok()
                .and_then(|e| e["data"]["id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            sink.lock().expect("lock").insert(file_id, now);
        }
    });
    (connection, arrivals)
}

fn settings(dir: &std::path::Path, exchange: &str, key: &RootKey) -> Settings {
    let mut settings = Settings {
        data_dir: dir.to_path_buf(),
        ..Settings::default()
    };
    settings.server.bind = "127.0.0.1:0".into();
    settings.auth.dev_key = false;
    settings.auth.trusted_keys = vec![TrustedKey {
        id: key.id,
        public_key: key.public_key(),
    }];
    settings.amqp.url = Some(BROKER.into());
    settings.amqp.exchange = exchange.into();
    settings.amqp.batch_size = 500;
    settings.finish().expect("settings")
}

async fn wait_for(arrivals: &Arrivals, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while arrivals.lock().expect("lock").len() < count {
        assert!(Instant::now() < deadline, "events did not all arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        let dir = tempfile::tempdir().expect("dir");
        let key = RootKey::generate(Some(1));
        let exchange = format!("valet-bench-{}", uuid::Uuid::new_v4().simple());
        let settings = settings(dir.path(), &exchange, &key);
        let (connection, arrivals) = consume(&exchange).await;

        // 1. A backlog written while no valet runs.
        let url = settings.database_url();
        let schema_ready = valet::metadata::db::connect(&url, 1, Duration::from_secs(5)).expect("db");
        {
            let mut conn = schema_ready.get().expect("conn");
            valet::metadata::db::run_migrations(&mut conn).expect("migrate");
            let now = chrono::Utc::now().naive_utc().format("%Y-%m-%d %H:%M:%S%.6f");
            diesel::sql_query("BEGIN").execute(&mut **conn).expect("begin");
            for i in 0..BACKLOG {
                let file_id = uuid::Uuid::now_v7();
                let payload = json!({"specversion": "1.0", "id": uuid::Uuid::new_v4(), "type": "io.valet.file.uploaded",
                    "source": "valet://bench", "data": {"id": file_id, "size": i + 1}});
                diesel::sql_query(format!(
                    "INSERT INTO outbox (event_id, event_type, file_id, tenant_id, device_id, payload, created_at, attempts) \
                     VALUES ('{}', 'io.valet.file.uploaded', '{file_id}', 'acme', 'dev-{}', '{}', '{now}', 0)",
                    uuid::Uuid::new_v4(),
                    i % 100,
                    payload
                ))
                .execute(&mut **conn)
                .expect("insert");
            }
            diesel::sql_query("COMMIT").execute(&mut **conn).expect("commit");
        }
        let started = Instant::now();
        let app = Application::build(settings.clone()).await.expect("valet starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        actix_web::rt::spawn(app.run_until_stopped());
        wait_for(&arrivals, BACKLOG).await;
        let elapsed = started.elapsed();
        let (first, last) = {
            let arrivals = arrivals.lock().expect("lock");
            (arrivals.values().min().copied(), arrivals.values().max().copied())
        };
        let steady = match (first, last) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => elapsed,
        };
        println!(
            "backlog: {BACKLOG} events published with confirms in {:.2?} ({:.0} events/s, start-up included); \
             first to last event {:.2?} ({:.0} events/s)",
            elapsed,
            BACKLOG as f64 / elapsed.as_secs_f64(),
            steady,
            BACKLOG as f64 / steady.as_secs_f64().max(1e-9)
        );

        // 2. End-to-end latency, one upload at a time.
        let client = reqwest::Client::new();
        let token = token::mint(
            &key,
            &TenantId::parse("acme").expect("tenant"),
            &Principal::Device(DeviceId::parse("dev-1").expect("device")),
            Duration::from_secs(3600),
        )
        .expect("token");
        let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
        for i in 0..LATENCY_SAMPLES {
            let body = format!("sample {i}").into_bytes();
            let created: Value = client
                .post(format!("{base}/v1/files"))
                .bearer_auth(&token)
                .json(&json!({"name": "s", "size": body.len(), "sha256": hex::encode(sha2::Sha256::digest(&body))}))
                .send()
                .await
                .expect("create")
                .json()
                .await
                .expect("json");
            let mut put = client.put(created["upload"]["url"].as_str().expect("url"));
            for (k, v) in created["upload"]["headers"].as_object().expect("headers") {
                put = put.header(k, v.as_str().expect("header"));
            }
            put.body(body).send().await.expect("put");
            let id = created["file"]["id"].as_str().expect("id").to_owned();
            let response = client
                .post(format!("{base}/v1/files/{id}/complete"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("complete");
            let completed = Instant::now();
            assert!(response.status().is_success());
            loop {
                if let Some(arrived) = arrivals.lock().expect("lock").get(&id) {
                    latencies.push(arrived.saturating_duration_since(completed));
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "end to end (complete returned -> consumer received), {LATENCY_SAMPLES} uploads: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
            at(0.50),
            at(0.99),
            latencies[latencies.len() - 1]
        );
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
    });
}
