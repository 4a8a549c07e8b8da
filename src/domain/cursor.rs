//! The opaque page cursor of listings: the last file id of a page, versioned and
//! base64url-encoded so clients treat it as a token, not an id to edit.

use base64::Engine;

use super::FileId;

/// A position in a listing (the files after it, newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub FileId);

impl Cursor {
    /// The text a client sends back for the next page.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{}", self.0))
    }

    /// Reads a cursor this API returned; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        text.strip_prefix("v1:")?.parse().ok().map(Cursor)
    }
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
