//! Storage event notifications: the documents S3, MinIO and Azure Event Grid post
//! when an object is created, reduced to what valet needs (bucket, key, size).
//!
//! Accepted envelopes:
//! - S3 event notifications (`{"Records": [...]}`) as MinIO's webhook target and S3
//!   (through SNS or an HTTP forwarder) post them; `eventName` `ObjectCreated:*`
//!   with or without MinIO's `s3:` prefix; keys URL-encoded as S3 encodes them.
//! - SNS HTTP(S) deliveries (`{"Type": "Notification", "Message": "<S3 event JSON>"}`).
//! - EventBridge events (`{"detail-type": "Object Created", "detail": {...}}`), e.g.
//!   through an API destination.
//! - Azure Event Grid events, Event Grid schema (`eventType`) or CloudEvents schema
//!   (`type`), single or batched; `Microsoft.Storage.BlobCreated` is acted on, and
//!   the subscription validation event is answered.

use serde_json::Value;

/// An object the store reports as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedObject {
    /// Bucket or container the object is in.
    pub bucket: String,
    /// The object key, decoded.
    pub key: String,
    /// Size the store reports, when it does.
    pub size: Option<u64>,
}

/// One entry of an event document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageEvent {
    /// An object was created.
    Created(CreatedObject),
    /// An event valet does not act on (deletions, other services), by its type.
    Other(String),
    /// An entry that cannot be understood.
    Malformed(String),
}

/// What a posted document contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// Azure Event Grid asks the endpoint to prove it wants the events.
    ValidationHandshake(String),
    /// Events, in the order given.
    Events(Vec<StorageEvent>),
}

/// Why a document was refused as a whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// Not a storage event document valet knows.
    #[error("not a storage event document: {0}")]
    Unrecognised(String),
    /// An SNS subscription confirmation: an operator confirms it.
    #[error(
        "SNS subscription confirmation: confirm the subscription by visiting its SubscribeURL"
    )]
    SnsSubscriptionConfirmation,
}

/// Parses a posted document.
pub fn parse(document: &Value) -> Result<Document, DocumentError> {
    match document {
        Value::Array(events) => event_grid(events),
        Value::Object(fields) => {
            if let Some(records) = fields.get("Records") {
                let records = records.as_array().ok_or_else(|| {
                    DocumentError::Unrecognised("\"Records\" is not an array".into())
                })?;
                return Ok(Document::Events(records.iter().map(s3_record).collect()));
            }
            match fields.get("Type").and_then(Value::as_str) {
                Some("Notification") => {
                    let message =
                        fields
                            .get("Message")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                DocumentError::Unrecognised("SNS message without a Message".into())
                            })?;
                    let inner: Value = serde_json::from_str(message).map_err(|e| {
                        DocumentError::Unrecognised(format!("SNS Message is not JSON: {e}"))
                    })?;
                    return parse(&inner);
                }
                Some("SubscriptionConfirmation") => {
                    return Err(DocumentError::SnsSubscriptionConfirmation)
                }
                _ => {}
            }
            if fields.contains_key("detail-type") {
                return Ok(Document::Events(vec![event_bridge(document)]));
            }
            if fields.contains_key("eventType") || fields.contains_key("specversion") {
                return event_grid(std::slice::from_ref(document));
            }
            Err(DocumentError::Unrecognised(
                "expected S3 \"Records\", an SNS notification, an EventBridge event or Event Grid events"
                    .into(),
            ))
        }
        _ => Err(DocumentError::Unrecognised(
            "the document is not a JSON object or array".into(),
        )),
    }
}

fn s3_record(record: &Value) -> StorageEvent {
    let Some(name) = record.get("eventName").and_then(Value::as_str) else {
        return StorageEvent::Malformed("record without eventName".into());
    };
    let name = name.strip_prefix("s3:").unwrap_or(name);
    if !name.starts_with("ObjectCreated:") {
        return StorageEvent::Other(name.to_owned());
    }
    let s3 = &record["s3"];
    let (Some(bucket), Some(key)) = (s3["bucket"]["name"].as_str(), s3["object"]["key"].as_str())
    else {
        return StorageEvent::Malformed("record without s3.bucket.name or s3.object.key".into());
    };
    match decode_s3_key(key) {
        Some(key) => StorageEvent::Created(CreatedObject {
            bucket: bucket.to_owned(),
            key,
            size: s3["object"]["size"].as_u64(),
        }),
        None => StorageEvent::Malformed("s3.object.key is not valid URL encoding".into()),
    }
}

/// S3 event keys are form-encoded: `+` is a space, `%XX` a byte.
fn decode_s3_key(key: &str) -> Option<String> {
    let spaced = key.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
}

fn event_bridge(event: &Value) -> StorageEvent {
    let kind = event["detail-type"].as_str().unwrap_or_default();
    if kind != "Object Created" {
        return StorageEvent::Other(kind.to_owned());
    }
    let detail = &event["detail"];
    match (
        detail["bucket"]["name"].as_str(),
        detail["object"]["key"].as_str(),
    ) {
        (Some(bucket), Some(key)) => StorageEvent::Created(CreatedObject {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: detail["object"]["size"].as_u64(),
        }),
        _ => StorageEvent::Malformed(
            "EventBridge event without detail.bucket.name or detail.object.key".into(),
        ),
    }
}

const VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
const BLOB_CREATED: &str = "Microsoft.Storage.BlobCreated";

fn event_grid(events: &[Value]) -> Result<Document, DocumentError> {
    let kind = |e: &Value| {
        e.get("eventType")
            .or_else(|| e.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if let Some(validation) = events.iter().find(|e| kind(e) == VALIDATION) {
        let code = validation["data"]["validationCode"]
            .as_str()
            .ok_or_else(|| {
                DocumentError::Unrecognised("validation event without data.validationCode".into())
            })?;
        return Ok(Document::ValidationHandshake(code.to_owned()));
    }
    Ok(Document::Events(
        events
            .iter()
            .map(|event| {
                let kind = kind(event);
                if kind.is_empty() {
                    return StorageEvent::Malformed("event without eventType or type".into());
                }
                if kind != BLOB_CREATED {
                    return StorageEvent::Other(kind);
                }
                blob_created(event)
            })
            .collect(),
    ))
}

/// `subject` is `/blobServices/default/containers/<container>/blobs/<blob path>`.
fn blob_created(event: &Value) -> StorageEvent {
    let Some(subject) = event["subject"].as_str() else {
        return StorageEvent::Malformed("BlobCreated event without subject".into());
    };
    let Some(rest) = subject.strip_prefix("/blobServices/default/containers/") else {
        return StorageEvent::Malformed(format!("unexpected BlobCreated subject {subject:?}"));
    };
    let Some((container, blob)) = rest.split_once("/blobs/") else {
        return StorageEvent::Malformed(format!("unexpected BlobCreated subject {subject:?}"));
    };
    StorageEvent::Created(CreatedObject {
        bucket: container.to_owned(),
        key: blob.to_owned(),
        size: event["data"]["contentLength"].as_u64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minio_records_are_decoded() {
        let doc = json!({"EventName": "s3:ObjectCreated:Put", "Key": "b/a%2Fb", "Records": [
            {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "b"},
              "object": {"key": "a%2Fb+c", "size": 5}}},
            {"eventName": "s3:ObjectRemoved:Delete", "s3": {}},
            {"s3": {}}
        ]});
        let Ok(Document::Events(events)) = parse(&doc) else {
            panic!("events expected")
        };
        assert_eq!(
            events[0],
            StorageEvent::Created(CreatedObject {
                bucket: "b".into(),
                key: "a/b c".into(),
                size: Some(5)
            })
        );
        assert_eq!(
            events[1],
            StorageEvent::Other("ObjectRemoved:Delete".into())
        );
        assert!(matches!(events[2], StorageEvent::Malformed(_)));
    }

    #[test]
    fn sns_wraps_s3_and_confirmations_are_refused() {
        let inner = json!({"Records": [{"eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "size": 1}}}]});
        let doc = json!({"Type": "Notification", "Message": inner.to_string()});
        assert!(matches!(parse(&doc), Ok(Document::Events(e)) if e.len() == 1));
        let confirm = json!({"Type": "SubscriptionConfirmation", "SubscribeURL": "https://x"});
        assert_eq!(
            parse(&confirm),
            Err(DocumentError::SnsSubscriptionConfirmation)
        );
    }

    #[test]
    fn event_grid_handshake_and_blob_created() {
        let handshake = json!([{"id": "1", "eventType": VALIDATION, "subject": "",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}}]);
        assert_eq!(
            parse(&handshake),
            Ok(Document::ValidationHandshake(
                "512d38b6-c7b8-40c8-89fe-f46f9e9622b6".into()
            ))
        );
        let created = json!({"specversion": "1.0", "type": BLOB_CREATED,
            "subject": "/blobServices/default/containers/c/blobs/x/y/z",
            "data": {"contentLength": 7}});
        assert_eq!(
            parse(&created),
            Ok(Document::Events(vec![StorageEvent::Created(
                CreatedObject {
                    bucket: "c".into(),
                    key: "x/y/z".into(),
                    size: Some(7)
                }
            )]))
        );
    }

    #[test]
    fn unknown_documents_are_refused() {
        assert!(parse(&json!({"hello": 1})).is_err());
        assert!(parse(&json!(3)).is_err());
        assert!(parse(&json!({"Records": 3})).is_err());
    }
}
