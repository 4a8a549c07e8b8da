use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;

use super::text::{char_len, find_in, string_schema, CharRanges, CONTROL, SLASH};

/// Why a tenant, device or service id was refused.
#[derive(Debug, thiserror::Error)]
#[error("{what} must be 1 to 128 characters without '/' or control characters")]
pub struct IdError {
    what: &'static str,
}

/// Longest id, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// What an id may not contain.
const REFUSED_IN_IDS: [CharRanges; 2] = [CONTROL, SLASH];

fn check_id(what: &'static str, s: &str) -> Result<(), IdError> {
    let ok = (1..=MAX_ID_CHARS).contains(&char_len(s)) && find_in(s, &REFUSED_IN_IDS).is_none();
    if ok {
        Ok(())
    } else {
        Err(IdError { what })
    }
}

/// The schema of an id: what [`check_id`] accepts.
fn id_schema(what: &str) -> RefOr<Schema> {
    string_schema(
        1,
        MAX_ID_CHARS,
        &REFUSED_IN_IDS,
        &format!("A {what}: 1 to 128 characters without '/' or control characters."),
    )
    .into()
}

macro_rules! principal_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id (an owned `String` is kept, not copied).
            pub fn parse(s: impl AsRef<str> + Into<String>) -> Result<Self, IdError> {
                check_id($what, s.as_ref())?;
                Ok(Self(s.into()))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                id_schema($what)
            }
        }

        impl utoipa::ToSchema for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

principal_id!(
    /// A tenant: the outermost isolation boundary.
    TenantId,
    "tenant id"
);
principal_id!(
    /// A device inside a tenant.
    DeviceId,
    "device id"
);
principal_id!(
    /// A service acting for a whole tenant.
    ServiceName,
    "service name"
);

/// Declares a UUIDv7 id type: fresh ids sort by creation time, and the stored
/// (hyphenated lowercase) form sorts the same way, so an id is its own keyset cursor.
macro_rules! time_ordered_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            #[doc = concat!("A fresh id for ", $what, " created now.")]
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0.hyphenated())
            }
        }
    };
}
pub(crate) use time_ordered_id;

time_ordered_id!(
    /// A file's id: a UUIDv7, so ids sort by creation time.
    FileId,
    "a file"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_slashes_controls_and_extremes() {
        assert!(TenantId::parse("acme").is_ok());
        assert!(DeviceId::parse("dev.42#*é").is_ok());
        for bad in ["", "a/b", "a\nb", "a\u{7f}"] {
            assert!(DeviceId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TenantId::parse("x".repeat(129)).is_err());
        // Lengths count characters, as the OpenAPI description's maxLength does.
        assert!(DeviceId::parse("é".repeat(128)).is_ok());
    }

    #[test]
    fn file_ids_sort_by_creation() {
        let a = FileId::new();
        let b = FileId::new();
        assert!(a.to_string() < b.to_string());
    }
}
