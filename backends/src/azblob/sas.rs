//! Azure service SAS for one blob, per the Azure Storage REST reference "Create a
//! service SAS" (signed version 2022-11-02; the string-to-sign layout of versions
//! 2020-12-06 and later).

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};

/// The signed storage service version.
pub const VERSION: &str = "2022-11-02";

/// The storage account key (decoded from base64) that signs a service SAS.
#[derive(Clone)]
pub struct SasKey(pub Vec<u8>);

impl std::fmt::Debug for SasKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SasKey(..)")
    }
}

/// One blob-scoped SAS.
#[derive(Debug, Clone)]
pub struct BlobSas<'a> {
    /// Storage account name.
    pub account: &'a str,
    /// Container.
    pub container: &'a str,
    /// Blob name.
    pub blob: &'a str,
    /// `sp`, in the canonical order (`racwd…`).
    pub permissions: &'a str,
    /// `st`.
    pub start: DateTime<Utc>,
    /// `se`.
    pub expiry: DateTime<Utc>,
    /// `spr`: `https` or `https,http`.
    pub protocol: &'a str,
    /// `rscd`: Content-Disposition the response carries.
    pub content_disposition: Option<&'a str>,
    /// `rsct`: Content-Type the response carries.
    pub content_type: Option<&'a str>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl BlobSas<'_> {
    /// The string-to-sign, field by field as the reference lists them.
    pub fn string_to_sign(&self) -> String {
        [
            self.permissions.to_owned(),
            time(self.start),
            time(self.expiry),
            format!("/blob/{}/{}/{}", self.account, self.container, self.blob),
            String::new(), // signedIdentifier (no stored access policy)
            String::new(), // signedIP
            self.protocol.to_owned(),
            VERSION.to_owned(),
            "b".to_owned(), // signedResource: blob
            String::new(),  // signedSnapshotTime
            String::new(),  // signedEncryptionScope
            String::new(),  // rscc
            self.content_disposition.unwrap_or_default().to_owned(),
            String::new(), // rsce
            String::new(), // rscl
            self.content_type.unwrap_or_default().to_owned(),
        ]
        .join("\n")
    }

    /// The SAS query parameters, signature included.
    pub fn query(&self, key: &SasKey) -> Vec<(&'static str, String)> {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(self.string_to_sign().as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut query = vec![
            ("sv", VERSION.to_owned()),
            ("sr", "b".to_owned()),
            ("sp", self.permissions.to_owned()),
            ("st", time(self.start)),
            ("se", time(self.expiry)),
            ("spr", self.protocol.to_owned()),
        ];
        if let Some(rscd) = self.content_disposition {
            query.push(("rscd", rscd.to_owned()));
        }
        if let Some(rsct) = self.content_type {
            query.push(("rsct", rsct.to_owned()));
        }
        query.push(("sig", signature));
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn the_string_to_sign_has_the_documented_sixteen_fields() {
        let sas = BlobSas {
            account: "acct",
            container: "files",
            blob: "a/b/c",
            permissions: "cw",
            start: at("2026-11-23T06:00:00Z"),
            expiry: at("2026-11-23T06:15:00Z"),
            protocol: "https",
            content_disposition: Some("attachment"),
            content_type: None,
        };
        assert_eq!(
            sas.string_to_sign(),
            "cw\n2026-11-23T06:00:00Z\n2026-11-23T06:15:00Z\n/blob/acct/files/a/b/c\n\n\nhttps\n\
             2022-11-02\nb\n\n\n\nattachment\n\n\n"
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_string_to_sign() {
        let sas = BlobSas {
            account: "acct",
            container: "files",
            blob: "x",
            permissions: "r",
            start: at("2026-11-23T06:00:00Z"),
            expiry: at("2026-11-23T06:15:00Z"),
            protocol: "https,http",
            content_disposition: None,
            content_type: None,
        };
        let key = SasKey(b"secret".to_vec());
        let query = sas.query(&key);
        let sig = &query.iter().find(|(k, _)| *k == "sig").expect("sig").1;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"secret").expect("key");
        mac.update(sas.string_to_sign().as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sig, &expected);
    }
}
