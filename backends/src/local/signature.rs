//! The local store's URL signatures: HMAC-SHA256 over a canonical string of
//! everything the holder is allowed to do, compared in constant time.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<sha2::Sha256>;

const SCHEME: &str = "VALET-HMAC-SHA256";

/// The fields an upload URL binds; a part's URL also binds its upload and number.
pub(crate) struct UploadClaims<'a> {
    pub backend: &'a str,
    pub key: &'a str,
    pub expires: i64,
    pub size: u64,
    pub sha256_hex: &'a str,
    pub part: Option<(&'a str, u32)>,
}

/// The fields a download URL binds.
pub(crate) struct DownloadClaims<'a> {
    pub backend: &'a str,
    pub key: &'a str,
    pub expires: i64,
    pub content_type: &'a str,
    pub filename: &'a str,
}

// Every field is free of line breaks (keys are validated, names and types carry no
// control characters), so joining with '\n' cannot make two claim sets collide.
impl UploadClaims<'_> {
    fn canonical(&self) -> String {
        let whole = format!(
            "{SCHEME}\nPUT\n{}\n{}\n{}\n{}\n{}",
            self.backend, self.key, self.expires, self.size, self.sha256_hex
        );
        // A part's claims have two more lines, so they never equal a whole upload's.
        match self.part {
            None => whole,
            Some((upload, number)) => format!("{whole}\n{upload}\n{number}"),
        }
    }
}

impl DownloadClaims<'_> {
    fn canonical(&self) -> String {
        format!(
            "{SCHEME}\nGET\n{}\n{}\n{}\n{}\n{}",
            self.backend, self.key, self.expires, self.content_type, self.filename
        )
    }
}

/// Signs and verifies claims with one secret.
#[derive(Clone)]
pub(crate) struct UrlSigner {
    secret: Vec<u8>,
}

impl UrlSigner {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret }
    }

    fn mac(&self, canonical: &str) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        };
        mac.update(canonical.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn sign_upload(&self, claims: &UploadClaims<'_>) -> String {
        hex::encode(self.mac(&claims.canonical()))
    }

    pub fn sign_download(&self, claims: &DownloadClaims<'_>) -> String {
        hex::encode(self.mac(&claims.canonical()))
    }

    pub fn verify_upload(&self, claims: &UploadClaims<'_>, signature_hex: &str) -> bool {
        self.verify(&claims.canonical(), signature_hex)
    }

    pub fn verify_download(&self, claims: &DownloadClaims<'_>, signature_hex: &str) -> bool {
        self.verify(&claims.canonical(), signature_hex)
    }

    fn verify(&self, canonical: &str, signature_hex: &str) -> bool {
        let mut given = [0u8; 32];
        if hex::decode_to_slice(signature_hex, &mut given).is_err() {
            return false;
        }
        self.mac(canonical).ct_eq(&given).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(size: u64) -> UploadClaims<'static> {
        UploadClaims {
            backend: "local",
            key: "a/b/c",
            expires: 1_700_000_000,
            size,
            sha256_hex: "00",
            part: None,
        }
    }

    #[test]
    fn verifies_its_own_signature_only() {
        let signer = UrlSigner::new(b"secret".to_vec());
        let sig = signer.sign_upload(&claims(10));
        assert!(signer.verify_upload(&claims(10), &sig));
        assert!(!signer.verify_upload(&claims(11), &sig));
        assert!(!UrlSigner::new(b"other".to_vec()).verify_upload(&claims(10), &sig));
        assert!(!signer.verify_upload(&claims(10), "zz"));
        let part = UploadClaims {
            part: Some(("u", 1)),
            ..claims(10)
        };
        assert!(!signer.verify_upload(&part, &sig));
        let other_part = UploadClaims {
            part: Some(("u", 2)),
            ..claims(10)
        };
        assert!(!signer.verify_upload(&other_part, &signer.sign_upload(&part)));
    }

    #[test]
    fn upload_and_download_signatures_differ() {
        let signer = UrlSigner::new(b"secret".to_vec());
        let down = DownloadClaims {
            backend: "local",
            key: "a/b/c",
            expires: 1_700_000_000,
            content_type: "10",
            filename: "00",
        };
        assert_ne!(signer.sign_download(&down), signer.sign_upload(&claims(10)));
    }
}
