//! The opaque page cursor of listings: the last file id of a page, versioned and
//! base64url-encoded so clients treat it as a token, not an id to edit.

use base64::Engine;

use super::{BatchId, FileId, JobId, TransferId};

/// A position in a listing (the files after it, newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub FileId);

impl Cursor {
    /// The text a client sends back for the next page.
    pub fn encode(&self) -> String {
        encode("v1:", &self.0)
    }

    /// Reads a cursor this API returned; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        decode("v1:", text).map(Cursor)
    }
}

/// A position in a listing of transfers (the transfers after it, newest first).
/// Its own prefix keeps a file cursor from being taken for a transfer cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferCursor(pub TransferId);

impl TransferCursor {
    /// The text a client sends back for the next page.
    pub fn encode(&self) -> String {
        encode("t1:", &self.0)
    }

    /// Reads a cursor this API returned; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        decode("t1:", text).map(TransferCursor)
    }
}

/// A position in a listing of batches (the batches after it, newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCursor(pub BatchId);

impl BatchCursor {
    /// The text a client sends back for the next page.
    pub fn encode(&self) -> String {
        encode("b1:", &self.0)
    }

    /// Reads a cursor this API returned; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        decode("b1:", text).map(BatchCursor)
    }
}

/// A position in a listing of jobs (the jobs after it, newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor(pub JobId);

impl JobCursor {
    /// The text a client sends back for the next page.
    pub fn encode(&self) -> String {
        encode("j1:", &self.0)
    }

    /// Reads a cursor this API returned; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        decode("j1:", text).map(JobCursor)
    }
}

fn encode(prefix: &str, id: &impl std::fmt::Display) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{prefix}{id}"))
}

fn decode<T: std::str::FromStr>(prefix: &str, text: &str) -> Option<T> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(prefix)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = FileId::new();
        assert_eq!(Cursor::decode(&Cursor(id).encode()), Some(Cursor(id)));
        assert_eq!(Cursor::decode("nope"), None);
        let other_version = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v2:x");
        assert_eq!(Cursor::decode(&other_version), None);
    }
}
