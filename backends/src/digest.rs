use std::fmt;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A SHA-256 digest; shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256([u8; 32]);

/// A string that is not 64 hex characters.
#[derive(Debug, thiserror::Error)]
#[error("sha256 must be 64 hexadecimal characters")]
pub struct Sha256ParseError;

impl Sha256 {
    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex characters (either case).
    pub fn parse_hex(s: &str) -> Result<Self, Sha256ParseError> {
        if s.len() != 64 {
            return Err(Sha256ParseError);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| Sha256ParseError)?;
        Ok(Self(out))
    }

    /// Digest of a byte slice.
    pub fn digest(data: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(data).into())
    }

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        self.hex_buffer().as_str().to_owned()
    }

    /// The lowercase hex form on the stack (no allocation: a listing serializes
    /// a hundred of these per page).
    fn hex_buffer(&self) -> HexDigest {
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(self.0, &mut hex);
        HexDigest(hex)
    }

    /// Standard base64 form (what S3 `x-amz-checksum-sha256` carries).
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

/// 64 lowercase hex digits.
struct HexDigest([u8; 64]);

impl HexDigest {
    fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex_buffer().as_str())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.hex_buffer().as_str())
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.hex_buffer().as_str())
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sha256::parse_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_known_digest() {
        let d = Sha256::digest(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256::parse_hex(&d.to_hex().to_uppercase()).unwrap(), d);
        assert_eq!(
            d.to_base64(),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        assert!(Sha256::parse_hex("abc").is_err());
        assert!(Sha256::parse_hex(&"g".repeat(64)).is_err());
    }
}
