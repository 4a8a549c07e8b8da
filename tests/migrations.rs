//! Migrations apply, revert and re-apply cleanly on the embedded database.

use std::time::Duration;

use valet::metadata::db;

#[test]
fn migrations_go_up_down_and_up_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let pool = db::connect(&url, 1, Duration::from_secs(5)).expect("pool");
    let mut conn = pool.get().expect("connection");
    let applied = db::run_migrations(&mut conn).expect("up");
    assert!(!applied.is_empty());
    assert!(db::run_migrations(&mut conn)
        .expect("idempotent")
        .is_empty());
    for _ in &applied {
        db::revert_last_migration(&mut conn).expect("down");
    }
    assert_eq!(db::run_migrations(&mut conn).expect("up again"), applied);
}
