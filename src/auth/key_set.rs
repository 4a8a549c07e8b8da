//! The biscuit root key set published by URL (`auth.key_set_url`):
//! `{"keys": [{"key_id": 7, "algorithm": "ed25519", "public_key": "<hex>"}]}`,
//! and the view of every root key — configured and published — tokens are checked
//! against.

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::Context;
use biscuit_auth::{error, PublicKey, RootKeyProvider};
use serde::Deserialize;

use super::key_source::KeyDocument;
use super::TrustedKeys;

/// Root public keys from a key set document, by key id.
#[derive(Default)]
pub struct RootKeySet(HashMap<u32, PublicKey>);

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// One entry of the document.
#[derive(Deserialize)]
struct Entry {
    key_id: u32,
    /// `ed25519` or `secp256r1`.
    algorithm: String,
    /// The public key's bytes in hex.
    public_key: String,
}

impl RootKeySet {
    /// The key with this id.
    pub fn get(&self, id: u32) -> Option<PublicKey> {
        self.0.get(&id).copied()
    }
}

impl KeyDocument for RootKeySet {
    fn parse(source: &str, body: &[u8]) -> anyhow::Result<Self> {
        let document: Document =
            serde_json::from_slice(body).context("not a JSON object with a `keys` array")?;
        let mut keys = HashMap::new();
        for value in document.keys {
            let entry = match serde_json::from_value::<Entry>(value) {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!(source, error = %e, "skipping a malformed key set entry");
                    continue;
                }
            };
            let text = format!("{}/{}", entry.algorithm, entry.public_key);
            match PublicKey::from_str(&text) {
                Ok(key) => {
                    if keys.insert(entry.key_id, key).is_some() {
                        anyhow::bail!("key id {} appears twice", entry.key_id);
                    }
                }
                Err(e) => tracing::warn!(
                    source,
                    key_id = entry.key_id,
                    error = %e,
                    "skipping a key set entry valet cannot use"
                ),
            }
        }
        Ok(Self(keys))
    }

    fn key_count(&self) -> usize {
        self.0.len()
    }
}

/// Every root key a biscuit may be signed with: the configured ones (the file's
/// and the development key), then the published ones. A configured id wins.
pub struct RootKeys<'a> {
    /// `auth.trusted_keys` and the development key.
    pub configured: &'a TrustedKeys,
    /// The key set fetched from `auth.key_set_url`.
    pub published: Option<&'a RootKeySet>,
}

impl RootKeys<'_> {
    /// The key a token with this root key id is checked against, and whether it
    /// comes from the published set (and may be retired by a later fetch).
    pub fn choose_with_origin(&self, key_id: Option<u32>) -> Option<(PublicKey, bool)> {
        let published = self.published.map(|set| &set.0);
        match key_id {
            Some(id) => self
                .configured
                .get(id)
                .map(|key| (key, false))
                .or_else(|| published?.get(&id).map(|key| (*key, true))),
            // A token without a key id is accepted only when there is no choice to make.
            None => {
                let published_count = published.map_or(0, HashMap::len);
                match (self.configured.len(), published_count) {
                    (1, 0) => self.configured.only().map(|key| (key, false)),
                    (0, 1) => published?.values().next().map(|key| (*key, true)),
                    _ => None,
                }
            }
        }
    }
}

impl RootKeyProvider for RootKeys<'_> {
    fn choose(&self, key_id: Option<u32>) -> Result<PublicKey, error::Format> {
        self.choose_with_origin(key_id)
            .map(|(key, _)| key)
            .ok_or(error::Format::UnknownPublicKey)
    }
}

impl RootKeyProvider for &RootKeys<'_> {
    fn choose(&self, key_id: Option<u32>) -> Result<PublicKey, error::Format> {
        (*self).choose(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::RootKey;

    fn document(entries: &[(u32, &RootKey)]) -> Vec<u8> {
        let keys: Vec<serde_json::Value> = entries
            .iter()
            .map(|(id, key)| {
                serde_json::json!({
                    "key_id": id,
                    "algorithm": "ed25519",
                    "public_key": key.keypair.public().to_bytes_hex(),
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn a_key_set_is_read_and_bad_entries_are_skipped() {
        let a = RootKey::generate(Some(7));
        let mut body: serde_json::Value = serde_json::from_slice(&document(&[(7, &a)])).unwrap();
        body["keys"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"key_id": 8, "algorithm": "rot13", "public_key": "00"}));
        body["keys"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"id": 9}));
        let set = RootKeySet::parse("key_set", &serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(set.key_count(), 1);
        assert_eq!(set.get(7), Some(a.keypair.public()));
        assert!(RootKeySet::parse("key_set", b"[]").is_err());
        assert!(RootKeySet::parse("key_set", &document(&[(1, &a), (1, &a)])).is_err());
    }

    #[test]
    fn configured_keys_win_and_an_id_less_token_needs_a_single_key() {
        let configured_key = RootKey::generate(Some(1));
        let published_key = RootKey::generate(Some(1));
        let mut configured = TrustedKeys::default();
        configured.insert(1, &configured_key.public_key()).unwrap();
        let published = RootKeySet::parse(
            "key_set",
            &document(&[(1, &published_key), (2, &published_key)]),
        )
        .unwrap();
        let keys = RootKeys {
            configured: &configured,
            published: Some(&published),
        };
        assert_eq!(
            keys.choose_with_origin(Some(1)),
            Some((configured_key.keypair.public(), false))
        );
        assert_eq!(
            keys.choose_with_origin(Some(2)),
            Some((published_key.keypair.public(), true))
        );
        assert_eq!(keys.choose_with_origin(Some(3)), None);
        assert_eq!(keys.choose_with_origin(None), None);
        let empty = TrustedKeys::default();
        let only = RootKeySet::parse("key_set", &document(&[(5, &published_key)])).unwrap();
        let keys = RootKeys {
            configured: &empty,
            published: Some(&only),
        };
        assert_eq!(
            keys.choose_with_origin(None),
            Some((published_key.keypair.public(), true))
        );
    }
}
