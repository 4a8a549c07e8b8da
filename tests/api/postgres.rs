//! Postgres-specific behaviour: concurrency in the database, outages and recovery.

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, body_of, postgres_admin_url, spawn_app_on_postgres, spawn_app_with,
};

#[actix_web::test]
async fn fifty_concurrent_completes_make_one_transition_and_one_event() {
    let app = spawn_app_on_postgres(|s| s.database.pool_size = 8).await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(4096);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.send_signed(&created["upload"], bytes).await.status(),
        200
    );

    let answers = futures_util::future::join_all((0..50).map(|_| app.complete(&token, &id))).await;
    let mut uploaded_at = Vec::new();
    for answer in answers {
        assert_eq!(answer.status().as_u16(), 200);
        let file: Value = answer.json().await.unwrap();
        uploaded_at.push(file["uploaded_at"].clone());
    }
    uploaded_at.dedup();
    assert_eq!(uploaded_at.len(), 1, "exactly one transition");
    assert_eq!(app.events_for(&id).await.len(), 1, "exactly one outbox row");
}

/// Terminates every connection valet holds to its database, as a failover would.
fn terminate_backends(database: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Terminated {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut admin = PgConnection::establish(&postgres_admin_url()).expect("admin connection");
    diesel::sql_query(format!(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    ))
    .get_result::<Terminated>(&mut admin)
    .expect("terminate")
    .n
}

#[actix_web::test]
async fn valet_recovers_when_its_connections_are_terminated() {
    let app = spawn_app_on_postgres(|_| {}).await;
    let token = app.device_token("acme", "dev-42");
    app.upload(&token, &body_of(10), json!({})).await;
    let database = app.database_name.clone().unwrap();
    let killed = actix_web::web::block(move || terminate_backends(&database))
        .await
        .unwrap();
    assert!(killed > 0, "valet had open connections");
    // No restart: the next requests get fresh connections.
    for _ in 0..5 {
        let listed = app.list(&token, "").await;
        assert_eq!(listed.status().as_u16(), 200);
    }
    let file = app.upload(&token, &body_of(11), json!({})).await;
    assert_eq!(file["status"], "uploaded");
}

#[actix_web::test]
async fn the_first_upload_after_a_failover_succeeds() {
    // Connections used within the last second are handed out without a probe;
    // the statement that finds one gone is run again on a probed connection.
    let app = spawn_app_on_postgres(|_| {}).await;
    let token = app.device_token("acme", "dev-42");
    let first = app.upload(&token, &body_of(10), json!({})).await;
    let database = app.database_name.clone().unwrap();
    let killed = actix_web::web::block(move || terminate_backends(&database))
        .await
        .unwrap();
    assert!(killed > 0, "valet had open connections");
    let file = app.upload(&token, &body_of(11), json!({})).await;
    assert_eq!(file["status"], "uploaded");
    let id = first["id"].as_str().unwrap();
    let read = app.get_file(&token, id).await;
    assert_eq!(read.status().as_u16(), 200);
}

#[actix_web::test]
async fn an_unreachable_database_answers_503_and_readyz_names_it() {
    let app = spawn_app_with(|s| {
        s.database.url = Some("postgres://postgres@127.0.0.1:1/nowhere".into());
        s.database.connect_timeout_secs = 1;
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let problem = assert_problem(app.list(&token, "").await, 503, "unavailable").await;
    assert!(problem["detail"].as_str().unwrap().contains("database"));
    let response = app
        .create(
            &token,
            json!({"name": "a", "size": 1, "sha256": crate::helpers::sha256_hex(b"a")}),
        )
        .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503, "unavailable").await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_ne!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["storage:local"], "ok");
    // Liveness is not readiness.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[actix_web::test]
async fn migrations_go_up_down_and_up_on_postgres() {
    let app = spawn_app_on_postgres(|s| s.database.run_migrations = false).await;
    let url = app.settings.database_url();
    actix_web::web::block(move || {
        let pool =
            valet::metadata::db::connect(&url, 1, std::time::Duration::from_secs(5)).expect("pool");
        let mut conn = pool.get().expect("connection");
        let applied = valet::metadata::db::run_migrations(&mut conn).expect("up");
        assert!(!applied.is_empty());
        for _ in &applied {
            valet::metadata::db::revert_last_migration(&mut conn).expect("down");
        }
        assert_eq!(
            valet::metadata::db::run_migrations(&mut conn).expect("up again"),
            applied
        );
    })
    .await
    .unwrap();
}
