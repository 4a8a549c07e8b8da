//! JWK sets: the public keys of a JWT issuer, each with the algorithms its key type
//! allows. A token's algorithm is taken from this list (and the issuer's allow-list),
//! never from its header alone: an RSA, EC or Ed25519 key is never used as an HMAC
//! secret, and symmetric keys are never accepted.

use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::key_source::KeyDocument;

/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// One verification key of an issuer.
pub struct JwtKey {
    /// Its `kid`, if the set gives one.
    pub kid: Option<String>,
    /// The key material.
    pub key: DecodingKey,
    /// The algorithms this key verifies: its `alg`, or every asymmetric algorithm
    /// of its key type and curve.
    pub algorithms: Vec<Algorithm>,
    /// SHA-256 of the JWK as published: a cached verification stays valid only
    /// while the same key is still published under the same `kid`.
    pub fingerprint: [u8; 32],
}

/// The usable keys of a JWK set.
#[derive(Default)]
pub struct JwkKeys(Vec<Arc<JwtKey>>);

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

impl JwkKeys {
    /// Keys given in the configuration: every one must be usable.
    pub fn from_config(issuer: &str, keys: &[serde_json::Value]) -> anyhow::Result<Self> {
        let mut parsed = Vec::with_capacity(keys.len());
        for (index, value) in keys.iter().enumerate() {
            let key = JwtKey::from_json(value)
                .with_context(|| format!("auth.jwt.{issuer}.keys[{index}]"))?;
            parsed.push(Arc::new(key));
        }
        Ok(Self(parsed))
    }

    /// The key with this `kid`.
    pub fn find(&self, kid: &str) -> Option<&Arc<JwtKey>> {
        self.0.iter().find(|key| key.kid.as_deref() == Some(kid))
    }

    /// Every key.
    pub fn all(&self) -> &[Arc<JwtKey>] {
        &self.0
    }
}

impl KeyDocument for JwkKeys {
    fn parse(source: &str, body: &[u8]) -> anyhow::Result<Self> {
        let document: Document =
            serde_json::from_slice(body).context("not a JWK set (a JSON object with `keys`)")?;
        let mut keys = Vec::with_capacity(document.keys.len());
        for value in &document.keys {
            match JwtKey::from_json(value) {
                Ok(key) => keys.push(Arc::new(key)),
                Err(e) => {
                    let kid = value.get("kid").and_then(serde_json::Value::as_str);
                    tracing::warn!(source, kid, error = %format!("{e:#}"), "skipping a JWK valet cannot use");
                }
            }
        }
        Ok(Self(keys))
    }

    fn key_count(&self) -> usize {
        self.0.len()
    }
}

impl JwtKey {
    /// Reads one JWK, refusing what cannot verify a signature safely.
    pub fn from_json(value: &serde_json::Value) -> anyhow::Result<Self> {
        let jwk: Jwk = serde_json::from_value(value.clone()).context("not a JWK")?;
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            bail!("an encryption key (`use`: `enc`)");
        }
        if let Some(operations) = &jwk.common.key_operations {
            if !operations.contains(&KeyOperations::Verify) {
                bail!("`key_ops` does not include `verify`");
            }
        }
        let possible = algorithms_of(&jwk.algorithm)?;
        let algorithms = match jwk.common.key_algorithm {
            None => possible,
            Some(declared) => {
                let declared = declared_algorithm(declared)?;
                if !possible.contains(&declared) {
                    bail!("`alg` {declared:?} does not fit the key type");
                }
                vec![declared]
            }
        };
        check_material(&jwk.algorithm)?;
        let key = DecodingKey::from_jwk(&jwk).context("unreadable key material")?;
        for algorithm in &algorithms {
            (DEFAULT_PROVIDER.verifier_factory)(algorithm, &key)
                .map_err(|e| anyhow::anyhow!("not a valid {algorithm:?} key: {e}"))?;
        }
        let fingerprint = Sha256::digest(serde_json::to_vec(&jwk)?).into();
        Ok(Self {
            kid: jwk.common.key_id.clone(),
            key,
            algorithms,
            fingerprint,
        })
    }
}

/// The asymmetric algorithms a key type (and curve) can verify.
fn algorithms_of(parameters: &AlgorithmParameters) -> anyhow::Result<Vec<Algorithm>> {
    Ok(match parameters {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms().to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            ref other => bail!("unsupported curve {other:?}"),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            ref other => bail!("unsupported curve {other:?}"),
        },
        AlgorithmParameters::OctetKey(_) => bail!("symmetric (HMAC) keys are never trusted"),
    })
}

/// A JWK's `alg` as a signature algorithm.
fn declared_algorithm(declared: KeyAlgorithm) -> anyhow::Result<Algorithm> {
    Algorithm::from_str(&declared.to_string())
        .map_err(|_| anyhow::anyhow!("`alg` {declared} is not a signature algorithm"))
}

/// Checks what the verifiers take on trust: an Ed25519 key is 32 bytes, an RSA
/// modulus at least [`MIN_RSA_BITS`].
fn check_material(parameters: &AlgorithmParameters) -> anyhow::Result<()> {
    match parameters {
        AlgorithmParameters::OctetKeyPair(okp) => {
            let x = URL_SAFE_NO_PAD
                .decode(okp.x.trim_end_matches('='))
                .context("`x` is not base64url")?;
            if x.len() != 32 {
                bail!("an Ed25519 key is 32 bytes, not {}", x.len());
            }
        }
        AlgorithmParameters::RSA(rsa) => {
            let n = URL_SAFE_NO_PAD
                .decode(rsa.n.trim_end_matches('='))
                .context("`n` is not base64url")?;
            let bits = modulus_bits(&n);
            if bits < MIN_RSA_BITS {
                bail!("an RSA key of {bits} bits is too short (at least {MIN_RSA_BITS})");
            }
        }
        _ => {}
    }
    Ok(())
}

/// The bit length of a big-endian unsigned integer.
fn modulus_bits(n: &[u8]) -> usize {
    let significant: &[u8] = match n.iter().position(|b| *b != 0) {
        Some(first) => &n[first..],
        None => return 0,
    };
    significant.len() * 8 - significant[0].leading_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ed25519(kid: &str) -> serde_json::Value {
        use crate::auth::jwt_signing::{JwtSigningKey, SigningAlgorithm};
        let key = JwtSigningKey::generate(SigningAlgorithm::Eddsa, Some(kid.into())).unwrap();
        let mut jwk = key.public_jwk().unwrap();
        let object = jwk.as_object_mut().unwrap();
        object.remove("alg");
        object.remove("use");
        jwk
    }

    #[test]
    fn keys_carry_the_algorithms_of_their_type() {
        let key = JwtKey::from_json(&ed25519("a")).unwrap();
        assert_eq!(key.algorithms, [Algorithm::EdDSA]);
        assert_eq!(key.kid.as_deref(), Some("a"));
        let mut declared = ed25519("b");
        declared["alg"] = json!("RS256");
        assert!(
            JwtKey::from_json(&declared).is_err(),
            "alg must fit the key"
        );
    }

    #[test]
    fn symmetric_short_and_encryption_keys_are_refused() {
        let hmac = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"});
        assert!(JwtKey::from_json(&hmac).is_err());
        let short = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1u8; 8])});
        assert!(JwtKey::from_json(&short).is_err());
        let small_rsa =
            json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"});
        assert!(JwtKey::from_json(&small_rsa).is_err());
        let mut encryption = ed25519("e");
        encryption["use"] = json!("enc");
        assert!(JwtKey::from_json(&encryption).is_err());
    }

    #[test]
    fn a_set_keeps_what_it_can_use() {
        let body =
            json!({"keys": [ed25519("a"), {"kty": "oct", "k": "c2VjcmV0"}, {"nonsense": 1}]});
        let keys = JwkKeys::parse("jwks:test", &serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(keys.key_count(), 1);
        assert!(keys.find("a").is_some());
        assert!(JwkKeys::parse("jwks:test", b"{}").is_err());
        assert!(JwkKeys::from_config("test", &[ed25519("a"), json!({"kty": "oct"})]).is_err());
    }

    #[test]
    fn modulus_length_ignores_leading_zeros() {
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x01]), 1);
        assert_eq!(modulus_bits(&[0, 0]), 0);
    }
}
