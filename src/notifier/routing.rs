//! Routing keys: `file.<event>.<tenant>.<device or "shared">` for file events,
//! `transfer.<event>.<tenant>.<recipient>` for transfer events,
//! `batch.<event>.<tenant>.<device or "shared">` for batch events,
//! `job.<state>.<tenant>` for job events, with ids encoded so
//! that no id can add words or wildcards to the key.
//!
//! Encoding of a tenant or device id: ASCII letters, digits, `-` and `_` stay as
//! they are; every other byte of the UTF-8 id (`.`, `*`, `#`, `%`, spaces,
//! non-ASCII…) becomes `%XX` (upper-case hex). An encoded id longer than
//! [`MAX_SEGMENT`] bytes is replaced by `~` and the first 32 hex digits of the
//! SHA-256 of the id, keeping the key within AMQP's 255 bytes. A device whose id is
//! literally `shared` is written `%73hared`, so it is not taken for the shared root.

use sha2::{Digest, Sha256};

/// The last word for files in the tenant's shared root.
const SHARED: &str = "shared";

/// Longest encoded id kept as is.
pub const MAX_SEGMENT: usize = 100;

/// One routing key word for `id`.
pub fn encode_segment(id: &str) -> String {
    let mut encoded = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    if encoded.len() > MAX_SEGMENT {
        let digest = Sha256::digest(id.as_bytes());
        return format!("~{}", &hex::encode(digest)[..32]);
    }
    encoded
}

/// The routing key of an outbox event of CloudEvents type `event_type`
/// (`io.valet.<subject>.<event>`): `transfer.<event>.<tenant>.<recipient>` for
/// transfer events, `batch.<event>.<tenant>.<device or "shared">` for batch events,
/// `job.<state>.<tenant>` for job events, else [`routing_key`].
pub fn routing_key_for(event_type: &str, tenant: &str, device: Option<&str>) -> String {
    let event = event_type.rsplit('.').next().unwrap_or(event_type);
    if event_type.starts_with("io.valet.transfer.") {
        subject_key("transfer", event, tenant, device)
    } else if event_type.starts_with("io.valet.batch.") {
        subject_key("batch", event, tenant, device)
    } else if event_type.starts_with("io.valet.job.") {
        format!("job.{event}.{}", encode_segment(tenant))
    } else {
        routing_key(event, tenant, device)
    }
}

/// The routing key of an event about a file of `tenant` in `device`'s root
/// (`None`: the tenant's shared root).
pub fn routing_key(event: &str, tenant: &str, device: Option<&str>) -> String {
    subject_key("file", event, tenant, device)
}

fn subject_key(subject: &str, event: &str, tenant: &str, device: Option<&str>) -> String {
    format!(
        "{}.{}.{}.{}",
        subject,
        event,
        encode_segment(tenant),
        device.map_or_else(
            || SHARED.to_owned(),
            |d| if d == SHARED {
                "%73hared".to_owned()
            } else {
                encode_segment(d)
            }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_kept() {
        assert_eq!(
            routing_key("uploaded", "acme", Some("dev-42")),
            "file.uploaded.acme.dev-42"
        );
        assert_eq!(
            routing_key("deleted", "acme", None),
            "file.deleted.acme.shared"
        );
    }

    #[test]
    fn dots_wildcards_and_unicode_cannot_change_the_routing() {
        let key = routing_key("uploaded", "a.b", Some("*#%é"));
        assert_eq!(key, "file.uploaded.a%2Eb.%2A%23%25%C3%A9");
        assert_eq!(key.split('.').count(), 4);
        // "shared" as a device id cannot pose as the shared root.
        assert_eq!(
            routing_key("uploaded", "t", Some("shared")),
            "file.uploaded.t.%73hared"
        );
    }

    #[test]
    fn transfer_events_have_their_own_first_word() {
        assert_eq!(
            routing_key_for("io.valet.transfer.offered", "acme", Some("dev-9")),
            "transfer.offered.acme.dev-9"
        );
        assert_eq!(
            routing_key_for("io.valet.file.uploaded", "acme", Some("dev-9")),
            "file.uploaded.acme.dev-9"
        );
        assert_eq!(
            routing_key_for("io.valet.job.succeeded", "a.b", None),
            "job.succeeded.a%2Eb"
        );
        assert_eq!(
            routing_key_for("io.valet.transfer.revoked", "a.b", Some("*")),
            "transfer.revoked.a%2Eb.%2A"
        );
    }

    #[test]
    fn batch_events_have_their_own_first_word() {
        assert_eq!(
            routing_key_for("io.valet.batch.committed", "acme", Some("dev-9")),
            "batch.committed.acme.dev-9"
        );
        assert_eq!(
            routing_key_for("io.valet.batch.expired", "acme", None),
            "batch.expired.acme.shared"
        );
    }

    #[test]
    fn long_ids_are_hashed_within_the_key_limit() {
        let long = "é".repeat(64);
        let key = routing_key("uploaded", &long, Some(&long));
        assert!(key.len() <= 255, "{}", key.len());
        assert!(key.contains(".~"));
        assert_ne!(encode_segment(&long), encode_segment(&"è".repeat(64)));
    }
}
