//! Ed25519 root keys with key ids: generated, stored in key files, trusted by id.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context};

use crate::private_file::create_private_file;
use biscuit_auth::{error, KeyPair, PrivateKey, PublicKey, RootKeyProvider};
use serde::{Deserialize, Serialize};

/// A root key pair with the id tokens name it by.
pub struct RootKey {
    /// Key id (`root_key_id` in tokens).
    pub id: u32,
    /// The key pair.
    pub keypair: KeyPair,
}

/// On-disk form of a root key pair (TOML, readable by its owner only).
#[derive(Serialize, Deserialize)]
struct KeyFile {
    id: u32,
    /// `ed25519-private/<hex>`.
    private_key: String,
    /// `ed25519/<hex>`, for `auth.trusted_keys`.
    public_key: String,
}

impl RootKey {
    /// A fresh Ed25519 key pair; a random id unless one is given.
    pub fn generate(id: Option<u32>) -> Self {
        let id = id.unwrap_or_else(rand::random);
        Self {
            id,
            keypair: KeyPair::new(),
        }
    }

    /// The public key as `ed25519/<hex>`.
    pub fn public_key(&self) -> String {
        self.keypair.public().to_string()
    }

    /// Reads a key file written by [`RootKey::write`].
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?;
        let file: KeyFile = toml::from_str(&text)
            .with_context(|| format!("{} is not a valet key file", path.display()))?;
        let private = PrivateKey::from_str(&file.private_key)
            .map_err(|e| anyhow::anyhow!("{}: bad private key: {e}", path.display()))?;
        Ok(Self {
            id: file.id,
            keypair: KeyPair::from(&private),
        })
    }

    /// Writes the key pair to a new file only its owner can read.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let file = KeyFile {
            id: self.id,
            private_key: self.keypair.private().to_prefixed_string(),
            public_key: self.public_key(),
        };
        let text = toml::to_string(&file)?;
        create_private_file(path, text.as_bytes())
            .with_context(|| format!("cannot create key file {}", path.display()))
    }

    /// Loads the key at `path`, generating it first if it does not exist.
    /// Returns whether it was created.
    pub fn load_or_create(path: &Path) -> anyhow::Result<(Self, bool)> {
        if path.exists() {
            return Ok((Self::read(path)?, false));
        }
        let key = Self::generate(None);
        key.write(path)?;
        Ok((key, true))
    }
}

/// The root public keys tokens may be signed with, by key id.
#[derive(Clone, Default)]
pub struct TrustedKeys(HashMap<u32, PublicKey>);

impl TrustedKeys {
    /// Adds a key; an id may appear once.
    pub fn insert(&mut self, id: u32, public_key: &str) -> anyhow::Result<()> {
        let key = PublicKey::from_str(public_key)
            .map_err(|e| anyhow::anyhow!("trusted key {id}: {e}"))?;
        if self.0.insert(id, key).is_some() {
            bail!("trusted key id {id} appears twice");
        }
        Ok(())
    }
}

impl TrustedKeys {
    /// The key with this id.
    pub fn get(&self, id: u32) -> Option<PublicKey> {
        self.0.get(&id).copied()
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key, when exactly one is trusted.
    pub fn only(&self) -> Option<PublicKey> {
        match self.0.len() {
            1 => self.0.values().next().copied(),
            _ => None,
        }
    }
}

impl RootKeyProvider for TrustedKeys {
    fn choose(&self, key_id: Option<u32>) -> Result<PublicKey, error::Format> {
        match key_id {
            Some(id) => self
                .0
                .get(&id)
                .copied()
                .ok_or(error::Format::UnknownPublicKey),
            // A token without a key id is accepted only when there is no choice to make.
            None => self.only().ok_or(error::Format::UnknownPublicKey),
        }
    }
}

impl RootKeyProvider for &TrustedKeys {
    fn choose(&self, key_id: Option<u32>) -> Result<PublicKey, error::Format> {
        (*self).choose(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        let key = RootKey::generate(Some(7));
        key.write(&path).unwrap();
        let back = RootKey::read(&path).unwrap();
        assert_eq!(back.id, 7);
        assert_eq!(back.public_key(), key.public_key());
        assert!(key.write(&path).is_err(), "never overwrites a key");
    }

    #[test]
    fn keys_are_chosen_by_id() {
        let a = RootKey::generate(Some(1));
        let b = RootKey::generate(Some(2));
        let mut trusted = TrustedKeys::default();
        trusted.insert(1, &a.public_key()).unwrap();
        assert_eq!(trusted.choose(None).unwrap(), a.keypair.public());
        trusted.insert(2, &b.public_key()).unwrap();
        assert_eq!(trusted.choose(Some(2)).unwrap(), b.keypair.public());
        assert!(trusted.choose(Some(3)).is_err());
        assert!(trusted.choose(None).is_err());
        assert!(trusted.insert(1, &b.public_key()).is_err());
    }
}
