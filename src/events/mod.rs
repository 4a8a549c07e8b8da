//! File events: CloudEvents 1.0 in structured JSON, recorded in the outbox in the
//! same transaction as the status change they report.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};
use uuid::Uuid;

use crate::domain::{Batch, DeviceId, File, Job, JobId, JobState, TenantId, Transfer};

/// JSON Schema of the events valet publishes (served at `/schemas/file-event.json`).
pub const FILE_EVENT_SCHEMA: &str = include_str!("file-event.schema.json");

/// JSON Schema of transfer events (served at `/schemas/transfer-event.json`).
pub const TRANSFER_EVENT_SCHEMA: &str = include_str!("transfer-event.schema.json");

/// JSON Schema of batch events (served at `/schemas/batch-event.json`).
pub const BATCH_EVENT_SCHEMA: &str = include_str!("batch-event.schema.json");

/// JSON Schema of job events (served at `/schemas/job-event.json`).
pub const JOB_EVENT_SCHEMA: &str = include_str!("job-event.schema.json");

/// Namespace for event ids: `uuid5(NAMESPACE, "<file id>/<event>")`, so an event's
/// id is the same however often it is produced, and consumers can dedupe on it.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_3a57_2b4e_4d0a_9c1e_8a8f_5d3e_7b21);

/// The kinds of file event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A file was stored and verified.
    Uploaded,
    /// Stored bytes did not match the declaration and were deleted.
    Rejected,
    /// An uploaded file was deleted.
    Deleted,
    /// A file was never uploaded before its upload URL expired.
    Expired,
}

impl EventKind {
    /// Short name, used in ids and routing keys.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Uploaded => "uploaded",
            EventKind::Rejected => "rejected",
            EventKind::Deleted => "deleted",
            EventKind::Expired => "expired",
        }
    }

    /// CloudEvents `type`.
    pub fn cloudevent_type(&self) -> String {
        format!("io.valet.file.{}", self.name())
    }
}

/// An event ready to be stored in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `type`.
    pub event_type: String,
    /// The whole CloudEvent as JSON.
    pub payload: String,
}

/// The bucket or container a backend keeps objects in, as events report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageLocation {
    /// The event field naming it: `bucket` (S3) or `container` (Azure).
    pub field: &'static str,
    /// Its name.
    pub name: String,
}

/// What every event carries besides the file: its source and where backends store.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    /// CloudEvents `source`.
    pub source: String,
    /// Bucket or container by backend name (the local store has none).
    pub locations: BTreeMap<String, StorageLocation>,
}

/// Builds the event reporting `kind` for `file` at `time`. `data` is the File as
/// the API returns it, plus the object's `key` and its `bucket` (S3) or
/// `container` (Azure).
pub fn file_event(
    kind: EventKind,
    file: &File,
    context: &EventContext,
    time: DateTime<Utc>,
) -> anyhow::Result<OutboxEvent> {
    outbox_event(
        &format!("{}/{}", file.id, kind.name()),
        kind.cloudevent_type(),
        root_subject(&file.tenant_id, file.device_id.as_ref(), file.id),
        time,
        context,
        file_data(file, context)?,
        None,
    )
}

/// Builds `io.valet.file.moved`: `file` (already on its new backend) was moved
/// from `from` by job `job`. `data` is the file as [`file_event`] gives it, plus
/// `from_backend` and `to_backend`; its id is `uuid5(NAMESPACE, "<file id>/moved/<job id>")`.
pub fn file_moved_event(
    file: &File,
    from: &str,
    job: JobId,
    context: &EventContext,
    time: DateTime<Utc>,
) -> anyhow::Result<OutboxEvent> {
    let mut data = file_data(file, context)?;
    if let Some(fields) = data.as_object_mut() {
        fields.insert("from_backend".into(), from.into());
        fields.insert("to_backend".into(), file.backend.as_str().into());
    }
    outbox_event(
        &format!("{}/moved/{job}", file.id),
        "io.valet.file.moved".to_owned(),
        root_subject(&file.tenant_id, file.device_id.as_ref(), file.id),
        time,
        context,
        data,
        Some(("jobid", job.to_string())),
    )
}

/// The File as the API returns it, plus the object's `key` and its `bucket` (S3)
/// or `container` (Azure).
fn file_data(file: &File, context: &EventContext) -> anyhow::Result<serde_json::Value> {
    let mut data = serde_json::to_value(file)?;
    if let Some(fields) = data.as_object_mut() {
        fields.insert("key".into(), file.object_key.as_str().into());
        if let Some(location) = context.locations.get(&file.backend) {
            fields.insert(location.field.into(), location.name.clone().into());
        }
    }
    Ok(data)
}

/// Builds the event reporting that `job` ended in its (final) state at `time`:
/// `io.valet.job.<state>`, with the `jobid` extension attribute. Its id is
/// `uuid5(NAMESPACE, "job/<job id>/<state>")`; `data` is the job as the API returns it.
pub fn job_event(
    job: &Job,
    context: &EventContext,
    time: DateTime<Utc>,
) -> anyhow::Result<OutboxEvent> {
    debug_assert!(job.state.is_final());
    let state: JobState = job.state;
    outbox_event(
        &format!("job/{}/{state}", job.id),
        format!("io.valet.job.{state}"),
        format!("{}/jobs/{}", job.tenant_id, job.id),
        time,
        context,
        serde_json::to_value(job)?,
        Some(("jobid", job.id.to_string())),
    )
}

/// `<tenant>/<device or "shared">/<id>`: the subject of an event about something
/// kept in a root.
fn root_subject(tenant: &TenantId, device: Option<&DeviceId>, id: impl fmt::Display) -> String {
    format!("{tenant}/{}/{id}", device.map_or("shared", |d| d.as_str()))
}

/// The CloudEvent as the outbox stores it, with one extension attribute (name,
/// value) when given (`transferid`, `batchid`). Its id is
/// `uuid5(NAMESPACE, id_name)`: the same however often the event is produced.
fn outbox_event(
    id_name: &str,
    event_type: String,
    subject: String,
    time: DateTime<Utc>,
    context: &EventContext,
    data: serde_json::Value,
    extension: Option<(&'static str, String)>,
) -> anyhow::Result<OutboxEvent> {
    let id = Uuid::new_v5(&EVENT_ID_NAMESPACE, id_name.as_bytes()).to_string();
    let mut builder = EventBuilderV10::new()
        .id(id.clone())
        .source(context.source.clone())
        .ty(event_type.clone())
        .subject(subject)
        .time(time)
        .data("application/json", data);
    if let Some((name, value)) = extension {
        builder = builder.extension(name, value);
    }
    let event = builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build event: {e}"))?;
    Ok(OutboxEvent {
        id,
        event_type,
        payload: serde_json::to_string(&event)?,
    })
}

/// The kinds of transfer event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEventKind {
    /// A file was offered to the recipient.
    Offered,
    /// The recipient accepted it.
    Received,
    /// The sender or a service revoked it, or its file was deleted.
    Revoked,
    /// It expired.
    Expired,
}

impl TransferEventKind {
    /// Short name, used in ids and routing keys.
    pub fn name(&self) -> &'static str {
        match self {
            TransferEventKind::Offered => "offered",
            TransferEventKind::Received => "received",
            TransferEventKind::Revoked => "revoked",
            TransferEventKind::Expired => "expired",
        }
    }

    /// CloudEvents `type`.
    pub fn cloudevent_type(&self) -> String {
        format!("io.valet.transfer.{}", self.name())
    }
}

/// Builds the event telling `recipient` that `transfer` was `kind` at `time`: one
/// per recipient, each with the `transferid` extension attribute. Its id is
/// `uuid5(NAMESPACE, "transfer/<transfer id>/<recipient>/<event>")`: stable, so
/// redeliveries can be deduplicated. `data` is the transfer as the API returns it
/// plus the `recipient` the event is for.
pub fn transfer_event(
    kind: TransferEventKind,
    transfer: &Transfer,
    recipient: &DeviceId,
    context: &EventContext,
    time: DateTime<Utc>,
) -> anyhow::Result<OutboxEvent> {
    let subject = root_subject(&transfer.tenant_id, Some(recipient), transfer.id);
    let mut data = serde_json::to_value(transfer)?;
    if let Some(fields) = data.as_object_mut() {
        fields.insert("tenant_id".into(), transfer.tenant_id.as_str().into());
        fields.insert("recipient".into(), recipient.as_str().into());
    }
    outbox_event(
        &format!("transfer/{}/{}/{}", transfer.id, recipient, kind.name()),
        kind.cloudevent_type(),
        subject,
        time,
        context,
        data,
        Some(("transferid", transfer.id.to_string())),
    )
}

/// The kinds of batch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEventKind {
    /// A batch was committed; its files' `uploaded` events follow it.
    Committed,
    /// An open batch passed its `expires_at`; its files were deleted.
    Expired,
}

impl BatchEventKind {
    /// Short name, used in ids and routing keys.
    pub fn name(&self) -> &'static str {
        match self {
            BatchEventKind::Committed => "committed",
            BatchEventKind::Expired => "expired",
        }
    }

    /// CloudEvents `type`.
    pub fn cloudevent_type(&self) -> String {
        format!("io.valet.batch.{}", self.name())
    }
}

/// Builds the event reporting `kind` for `batch` at `time`, with the `batchid`
/// extension attribute. Its id is `uuid5(NAMESPACE, "batch/<batch id>/<event>")`:
/// stable, so redeliveries can be deduplicated. `data` is the batch as the API
/// returns it, with its files.
pub fn batch_event(
    kind: BatchEventKind,
    batch: &Batch,
    context: &EventContext,
    time: DateTime<Utc>,
) -> anyhow::Result<OutboxEvent> {
    let subject = root_subject(&batch.tenant_id, batch.device_id.as_ref(), batch.id);
    let data = serde_json::to_value(batch)?;
    outbox_event(
        &format!("batch/{}/{}", batch.id, kind.name()),
        kind.cloudevent_type(),
        subject,
        time,
        context,
        data,
        Some(("batchid", batch.id.to_string())),
    )
}
