use std::fmt;

/// The location of an object inside a store: `/`-separated segments of
/// `[A-Za-z0-9._-]`, never `.` or `..`, so it cannot escape a root directory.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

/// A string that is not a valid object key.
#[derive(Debug, thiserror::Error)]
#[error("invalid object key")]
pub struct ObjectKeyError;

const MAX_KEY_LEN: usize = 1024;

impl ObjectKey {
    /// Validates and wraps a key.
    pub fn parse(s: &str) -> Result<Self, ObjectKeyError> {
        if s.is_empty() || s.len() > MAX_KEY_LEN {
            return Err(ObjectKeyError);
        }
        for segment in s.split('/') {
            let valid_chars = segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if segment.is_empty() || segment == "." || segment == ".." || !valid_chars {
                return Err(ObjectKeyError);
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_segments() {
        assert!(ObjectKey::parse("a1b2/c3d4/0192-abc").is_ok());
    }

    #[test]
    fn rejects_traversal_and_odd_characters() {
        for bad in [
            "", "..", "a/../b", "a//b", "/a", "a/", "a/./b", "a\\b", "a b", "é",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
