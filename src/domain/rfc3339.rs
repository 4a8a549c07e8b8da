//! Timestamps in JSON, written the way chrono's serde support writes them
//! (RFC 3339, UTC as `Z`, fractional seconds only as long as needed) but handed
//! to the encoder as one string: chrono's own `Serialize` feeds it character by
//! character, which showed in profiles of file pages.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// Serializes a timestamp (for `#[serde(serialize_with)]`).
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Serializes an optional timestamp (`null` when absent).
pub fn serialize_option<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[derive(serde::Serialize)]
    struct Ours {
        #[serde(serialize_with = "serialize")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "serialize_option")]
        maybe: Option<DateTime<Utc>>,
    }

    #[derive(serde::Serialize)]
    struct Chrono {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn writes_what_chrono_writes() {
        let base = Utc.with_ymd_and_hms(2026, 12, 7, 9, 5, 3).unwrap();
        for nanos in [0, 120_000_000, 123_456_000, 1_000, 123_456_789, 999_999_999] {
            let at = base + chrono::Duration::nanoseconds(nanos);
            for maybe in [None, Some(at)] {
                assert_eq!(
                    serde_json::to_string(&Ours { at, maybe }).unwrap(),
                    serde_json::to_string(&Chrono { at, maybe }).unwrap(),
                );
            }
        }
    }
}
