//! Reconciler throughput: a backlog of never-uploaded files (their upload URLs long
//! expired) is written while no valet runs; valet starts with the reconciler on
//! and every file must reach `expired` (one outbox event each). Reports files per
//! second, start-up included.
//!
//! Run: `cargo bench --bench reconciler` (SQLite in a temp dir), or with
//! `BENCH_POSTGRES_URL=postgres://…/scratch` on an empty PostgreSQL database of
//! your own (its tables are created; drop the database afterwards).

use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use valet::auth::RootKey;
use valet::configuration::{Settings, TrustedKey};
use valet::startup::Application;

const BACKLOG: usize = 20_000;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn settings(dir: &std::path::Path, database: Option<String>) -> Settings {
    let key = RootKey::generate(Some(1));
    let mut settings = Settings {
        data_dir: dir.to_path_buf(),
        ..Settings::default()
    };
    settings.server.bind = "127.0.0.1:0".into();
    settings.database.url = database;
    settings.auth.dev_key = false;
    settings.auth.trusted_keys = vec![TrustedKey {
        id: key.id,
        public_key: key.public_key(),
    }];
    settings.reconciler.interval_secs = 1;
    settings.reconciler.grace_secs = 0;
    settings.finish().expect("settings")
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        let dir = tempfile::tempdir().expect("dir");
        let settings = settings(dir.path(), std::env::var("BENCH_POSTGRES_URL").ok());
        let url = settings.database_url();
        let pool = valet::metadata::db::connect(&url, 1, Duration::from_secs(5)).expect("db");
        let mut conn = pool.get().expect("conn");
        valet::metadata::db::run_migrations(&mut conn).expect("migrate");
        let long_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.6f");
        diesel::sql_query("BEGIN").execute(&mut **conn).expect("begin");
        for chunk in 0..BACKLOG / 500 {
            let rows: Vec<String> = (0..500)
                .map(|i| {
                    let id = uuid::Uuid::now_v7();
                    format!(
                        "('{id}', 'acme', 'dev-{}', 'f-{chunk}-{i}', 1, '{}', 'application/octet-stream', '{{}}', \
                         'pending', 'local', 'acme/dev-{}/{id}', '{long_ago}', '{long_ago}', NULL, '{long_ago}', NULL)",
                        i % 100,
                        "0".repeat(64),
                        i % 100,
                    )
                })
                .collect();
            diesel::sql_query(format!(
                "INSERT INTO files (id, tenant_id, device_id, name, size, sha256, content_type, metadata, \
                 status, backend, object_key, created_at, updated_at, uploaded_at, upload_expires_at, \
                 reconcile_after) VALUES {}",
                rows.join(", ")
            ))
            .execute(&mut **conn)
            .expect("insert");
        }
        diesel::sql_query("COMMIT").execute(&mut **conn).expect("commit");

        let started = Instant::now();
        let app = Application::build(settings).await.expect("valet starts");
        actix_web::rt::spawn(app.run_until_stopped());
        let deadline = started + Duration::from_secs(600);
        loop {
            let pending: Vec<Count> =
                diesel::sql_query("SELECT count(*) AS n FROM files WHERE status = 'pending'")
                    .load(&mut **conn)
                    .expect("count");
            if pending.first().is_some_and(|c| c.n == 0) {
                break;
            }
            assert!(Instant::now() < deadline, "the backlog was not drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        let events: Vec<Count> = diesel::sql_query(
            "SELECT count(*) AS n FROM outbox WHERE event_type = 'io.valet.file.expired'",
        )
        .load(&mut **conn)
        .expect("count");
        println!(
            "reconciler: {BACKLOG} overdue files expired in {elapsed:.2?} ({:.0} files/s, start-up and \
             the first 1 s interval included); {} expiry events in the outbox",
            BACKLOG as f64 / elapsed.as_secs_f64(),
            events.first().map_or(0, |c| c.n)
        );
    });
}
