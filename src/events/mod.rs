//! File events: CloudEvents 1.0 in structured JSON, recorded in the outbox in the
//! same transaction as the status change they report.

use chrono::{DateTime, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};
use uuid::Uuid;

use crate::domain::File;

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

/// Builds the event reporting `kind` for `file` at `time`.
pub fn file_event(
    kind: EventKind,
    file: &File,
    source: &str,
    time: DateTime<Utc>,
) -> anyhow::Result<OutboxEvent> {
    let id = Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("{}/{}", file.id, kind.name()).as_bytes(),
    )
    .to_string();
    let subject = format!(
        "{}/{}/{}",
        file.tenant_id,
        file.device_id.as_ref().map_or("shared", |d| d.as_str()),
        file.id
    );
    let event = EventBuilderV10::new()
        .id(id.clone())
        .source(source.to_owned())
        .ty(kind.cloudevent_type())
        .subject(subject)
        .time(time)
        .data("application/json", serde_json::to_value(file)?)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build event: {e}"))?;
    Ok(OutboxEvent {
        id,
        event_type: kind.cloudevent_type(),
        payload: serde_json::to_string(&event)?,
    })
}
