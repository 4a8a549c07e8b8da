//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the recorder on first use and returns its handle (`None` if another
/// recorder was installed by the embedding program).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("valet_metadata_group_commit_rows".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// One group commit of `rows` new file records.
pub fn record_group_commit(rows: usize) {
    histogram!("valet_metadata_group_commit_rows").record(rows as f64);
}

/// One answered HTTP request.
pub fn record_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    counter!("valet_http_requests_total", &labels).increment(1);
    histogram!("valet_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}

/// One file operation (`create`, `complete`, `reject`, `download`, `delete`,
/// `expire`) of `tenant`, labelled with `device` only when given (per-device series
/// are opt-in: see `metrics.per_device`).
pub fn record_file_operation(operation: &'static str, tenant: &str, device: Option<&str>) {
    match device {
        Some(device) => counter!(
            "valet_file_operations_total",
            "operation" => operation,
            "tenant" => tenant.to_owned(),
            "device" => device.to_owned(),
        )
        .increment(1),
        None => counter!(
            "valet_file_operations_total",
            "operation" => operation,
            "tenant" => tenant.to_owned(),
        )
        .increment(1),
    }
}

/// One batch of `tenant` reaching `state` (`open`: created, `committed`,
/// `abandoned`): the batches by state per tenant.
pub fn record_batch(state: &'static str, tenant: &str) {
    counter!("valet_batches_total", "state" => state, "tenant" => tenant.to_owned()).increment(1);
}

/// One transfer of `tenant` reaching `state` (`offered`, `revoked`, `expired`;
/// `received`: one recipient accepting): the transfers by state per tenant.
pub fn record_transfer(state: &'static str, tenant: &str) {
    counter!("valet_transfers_total", "state" => state, "tenant" => tenant.to_owned()).increment(1);
}

/// A job of `kind` entering `state`: the transitions of jobs by state and kind.
pub fn record_job(kind: &'static str, state: &'static str) {
    counter!("valet_jobs_total", "kind" => kind, "state" => state).increment(1);
}

/// How many jobs are in each state, by kind (refreshed by the mover).
pub fn set_jobs(kind: &'static str, state: &'static str, count: i64) {
    gauge!("valet_jobs", "kind" => kind, "state" => state).set(count as f64);
}

/// A copy of `kind` wrote `bytes` to its target.
pub fn record_job_bytes(kind: &'static str, bytes: u64) {
    counter!("valet_job_bytes_copied_total", "kind" => kind).increment(bytes);
}

/// A copy finished (verified) after `seconds`, at `bytes_per_second`.
pub fn record_job_copy(seconds: f64, bytes_per_second: f64) {
    histogram!("valet_job_copy_duration_seconds").record(seconds);
    gauge!("valet_job_copy_throughput_bytes_per_second").set(bytes_per_second);
}

/// Database pool state after a checkout, and how long the checkout waited.
pub fn record_pool(state: r2d2::State, max_size: u32, waited: Duration) {
    let idle = f64::from(state.idle_connections);
    gauge!("valet_db_pool_connections", "state" => "idle").set(idle);
    gauge!("valet_db_pool_connections", "state" => "in_use")
        .set(f64::from(state.connections) - idle);
    gauge!("valet_db_pool_max_connections").set(f64::from(max_size));
    histogram!("valet_db_pool_wait_duration_seconds").record(waited.as_secs_f64());
}

/// A request refused because too many were in flight.
pub fn record_overload() {
    counter!("valet_http_overloaded_total").increment(1);
}

/// One file settled by the reconciler (`completed`, `rejected`, `expired`,
/// `skipped`, `failed`, `retention_deleted`).
pub fn record_reconciled(outcome: &'static str) {
    counter!("valet_reconciled_files_total", "outcome" => outcome).increment(1);
}

/// An object found under an ended file's key and removed.
pub fn record_orphan_removed(backend: &str) {
    counter!("valet_orphans_removed_total", "backend" => backend.to_owned()).increment(1);
}

/// Finished records purged.
pub fn record_purged(count: usize) {
    counter!("valet_purged_records_total").increment(count as u64);
}

/// Pending files and the age of the oldest, in seconds.
pub fn set_pending_backlog(count: i64, oldest_age_secs: f64) {
    gauge!("valet_pending_files").set(count as f64);
    gauge!("valet_oldest_pending_age_seconds").set(oldest_age_secs);
}

/// One entry of a storage event document, by outcome.
pub fn record_storage_event(backend: &str, outcome: &str) {
    counter!(
        "valet_storage_events_total",
        "backend" => backend.to_owned(),
        "outcome" => outcome.to_owned(),
    )
    .increment(1);
}

/// Outbox rows waiting, and the age of the oldest in seconds.
pub fn set_outbox_backlog(depth: i64, oldest_age_secs: f64) {
    gauge!("valet_outbox_depth").set(depth as f64);
    gauge!("valet_outbox_oldest_age_seconds").set(oldest_age_secs);
}

/// One event confirmed by the broker, and how long publish + confirm took.
pub fn record_publish(elapsed: Duration) {
    counter!("valet_amqp_confirms_total").increment(1);
    histogram!("valet_amqp_publish_duration_seconds").record(elapsed.as_secs_f64());
}

/// One publish that failed (`nack`, `timeout`, `broker`).
pub fn record_publish_failure(reason: &'static str) {
    counter!("valet_amqp_publish_failures_total", "reason" => reason).increment(1);
}

/// One event confirmed but returned unroutable.
pub fn record_unroutable() {
    counter!("valet_amqp_returned_total").increment(1);
}

/// One reconnection to the broker.
pub fn record_broker_reconnect() {
    counter!("valet_amqp_reconnects_total").increment(1);
}

/// Whether the relay is connected to the broker.
pub fn set_broker_connected(connected: bool) {
    gauge!("valet_amqp_connected").set(if connected { 1.0 } else { 0.0 });
}

/// One fetch of a key document (`key_set`, `jwks:<issuer>`): `ok` or `failed`,
/// and, after a successful one, how many keys it holds.
pub fn record_key_fetch(source: &str, outcome: &'static str, keys: Option<usize>) {
    counter!("valet_key_fetches_total", "source" => source.to_owned(), "outcome" => outcome)
        .increment(1);
    if let Some(keys) = keys {
        gauge!("valet_fetched_keys", "source" => source.to_owned()).set(keys as f64);
    }
}
