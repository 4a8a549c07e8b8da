//! The Redis write-through cache seen through the API: never stale, never needed.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cuttable_proxy::CuttableProxy;
use crate::helpers::{
    assert_problem, body_of, redis_admin, spawn_app_on_postgres, spawn_app_with, with_redis_cache,
    TestApp, REDIS_URL,
};

async fn get_at(app: &TestApp, address: &str, token: &str, id: &str) -> Value {
    let response = app
        .client
        .get(format!("{address}/v1/files/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

#[actix_web::test]
async fn another_instance_never_reads_a_stale_status() {
    redis_admin().await;
    let app = spawn_app_on_postgres(with_redis_cache).await;
    let other = app.spawn_another_instance().await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(500);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().unwrap().to_owned();
    // The other instance reads (and caches) the pending file…
    assert_eq!(get_at(&app, &other, &token, &id).await["status"], "pending");
    assert_eq!(
        app.send_signed(&created["upload"], bytes).await.status(),
        200
    );
    // …this one completes it, and the other sees the change at once.
    assert_eq!(app.complete(&token, &id).await.status(), 200);
    assert_eq!(
        get_at(&app, &other, &token, &id).await["status"],
        "uploaded"
    );
    // Completing again on the other instance is idempotent: one event.
    let again = app
        .client
        .post(format!("{other}/v1/files/{id}/complete"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(app.events_for(&id).await.len(), 1);
    // A delete on one is seen by the other too.
    assert_eq!(app.delete(&token, &id).await.status().as_u16(), 204);
    assert_eq!(get_at(&app, &other, &token, &id).await["status"], "deleted");
    let download = app
        .client
        .get(format!("{other}/v1/files/{id}/download"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(download, 409, "not_uploaded").await;
}

/// The cache check in the readiness report of the valet at `address`.
async fn cache_check(app: &TestApp, address: &str) -> Value {
    let ready: Value = app
        .client
        .get(format!("{address}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["checks"]["cache:redis"].clone()
}

/// The cached entry of file `id`, as stored in Redis.
async fn cached_entry(
    admin: &mut redis::aio::MultiplexedConnection,
    app: &TestApp,
    id: &str,
) -> Option<Value> {
    let key = format!("{}file:{id}", app.settings.cache.key_prefix);
    let cached: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(admin)
        .await
        .unwrap();
    cached.map(|c| serde_json::from_str(&c).unwrap())
}

#[actix_web::test]
async fn a_change_made_while_one_instance_cannot_reach_redis_is_never_read_stale_by_another() {
    let mut admin = redis_admin().await;
    // This instance reaches Redis through a proxy the test cuts; the other directly.
    let proxy = CuttableProxy::start(REDIS_URL.trim_start_matches("redis://")).await;
    let app = spawn_app_on_postgres(|s| {
        with_redis_cache(s);
        s.cache.url = Some(format!("redis://{}", proxy.address));
    })
    .await;
    let other = app
        .spawn_another_instance_with(|s| s.cache.url = Some(REDIS_URL.into()))
        .await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(700);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.send_signed(&created["upload"], bytes).await.status(),
        200
    );
    // Both instances read the pending file, which is cached.
    assert_eq!(
        get_at(&app, &app.address, &token, &id).await["status"],
        "pending"
    );
    assert_eq!(get_at(&app, &other, &token, &id).await["status"], "pending");
    let cached = cached_entry(&mut admin, &app, &id).await.expect("cached");
    assert_eq!(cached["status"], "pending");

    // Redis is unreachable for this instance only: its write-through is lost.
    proxy.cut().await;
    assert_eq!(app.complete(&token, &id).await.status(), 200);
    assert_eq!(
        get_at(&app, &app.address, &token, &id).await["status"],
        "uploaded"
    );
    assert_ne!(cache_check(&app, &app.address).await, "ok");

    // The lost write is reported through the database: the other instance stops
    // reading the old record although this one still cannot reach Redis.
    let mut fresh = false;
    for _ in 0..100 {
        if get_at(&app, &other, &token, &id).await["status"] == "uploaded" {
            fresh = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fresh, "the other instance kept reading the old record");

    // Back: not one stale read, from the first on.
    proxy.restore().await;
    for read in 0..20 {
        assert_eq!(
            get_at(&app, &other, &token, &id).await["status"],
            "uploaded",
            "read {read} through the other instance"
        );
    }
    // This instance reports its cache ready once it raised the generation too.
    let mut ready = false;
    for _ in 0..200 {
        if cache_check(&app, &app.address).await == "ok" {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "the cache never became ready again after the outage");
    // Cached again, under the raised generation.
    let cached = cached_entry(&mut admin, &app, &id).await.expect("cached");
    assert_eq!(cached["status"], "uploaded");
    assert!(cached["generation"].as_u64() >= Some(1), "{cached}");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("valet_cache_generation_bumps_total"),
        "{metrics}"
    );
}

#[actix_web::test]
async fn files_are_written_through_to_redis() {
    let mut admin = redis_admin().await;
    let app = spawn_app_with(with_redis_cache).await;
    let token = app.device_token("acme", "dev-42");
    let file = app.upload(&token, &body_of(10), json!({})).await;
    let key = format!(
        "{}file:{}",
        app.settings.cache.key_prefix,
        file["id"].as_str().unwrap()
    );
    let cached: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    let cached: Value = serde_json::from_str(&cached.expect("cached")).unwrap();
    assert_eq!(cached["status"], "uploaded");
    // Stamped with the cache generation: 0 while no write-through was ever lost.
    assert_eq!(cached["generation"], 0);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 300, "{ttl}");

    // Flushed (here: this test's keys) → served from the database, then cached again.
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    let fetched: Value = app
        .get_file(&token, file["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, file);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(exists, 1);
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("valet_cache_hits_total"), "{metrics}");
    assert!(metrics.contains("valet_cache_misses_total"), "{metrics}");
}

#[actix_web::test]
async fn valet_serves_from_the_database_when_redis_is_unreachable() {
    let app = spawn_app_with(|s| {
        s.cache.url = Some("redis://127.0.0.1:1".into());
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(300);
    let file = app.upload(&token, &bytes, json!({})).await;
    let id = file["id"].as_str().unwrap();
    assert_eq!(app.get_file(&token, id).await.status().as_u16(), 200);
    assert_eq!(app.fetch(&token, id).await, bytes);
    // Ready, with the cache reported as degraded.
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_ne!(body["checks"]["cache:redis"], "ok");
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("valet_cache_errors_total"), "{metrics}");
}

#[actix_web::test]
async fn valet_keeps_serving_while_redis_connections_are_killed() {
    let mut admin = redis_admin().await;
    // Its own Redis user, so killing its connections leaves parallel tests alone.
    let user = format!("valet-test-{}", uuid::Uuid::new_v4().simple());
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">test-password")
        .arg("~*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://{user}:test-password@127.0.0.1:6379");
    let app = spawn_app_with(|s| {
        with_redis_cache(s);
        s.cache.url = Some(url);
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let file = app.upload(&token, &body_of(40), json!({})).await;
    let id = file["id"].as_str().unwrap();
    let mut killed = 0;
    for _ in 0..3 {
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("USER")
            .arg(&user)
            .query_async(&mut admin)
            .await
            .unwrap();
        killed += n;
        let fetched: Value = app.get_file(&token, id).await.json().await.unwrap();
        assert_eq!(fetched["status"], "uploaded");
    }
    assert!(killed > 0, "valet had Redis connections to kill");
    let again = app.upload(&token, &body_of(41), json!({})).await;
    assert_eq!(again["status"], "uploaded");
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .unwrap();
}
