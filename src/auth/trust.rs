//! Everything a token may be verified with: the configured biscuit root keys, the
//! published root key set, and the trusted JWT issuers with their keys. A token is
//! read as a JWT or a biscuit by its shape (a JWT has dots; a biscuit's base64 has
//! none), and a verification records which fetched key it relied on, so it is
//! believed only while that key is still published.

use std::sync::Arc;

use super::biscuit::{self, BiscuitRejection};
use super::jwks::JwkKeys;
use super::jwt::{self, JwtIssuer, JwtRejection};
use super::key_set::{RootKeySet, RootKeys};
use super::key_source::KeySource;
use super::permissions::AuthError;
use super::validator::Authenticated;
use super::TrustedKeys;
use crate::configuration::AuthSettings;

/// The trusted keys and issuers.
pub struct TrustStore {
    configured: TrustedKeys,
    key_set: Option<Arc<KeySource<RootKeySet>>>,
    issuers: Vec<JwtIssuer>,
}

/// A fetched key set that can be asked for fresh keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchedSource {
    /// `auth.key_set_url`.
    KeySet,
    /// `auth.jwt.<name>.jwks_url`, by the issuer's index.
    Jwks(usize),
}

/// The fetched key a verification relied on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStamp {
    /// A root key of the published key set.
    RootKey {
        /// The id the token names (none: the only key there was).
        id: Option<u32>,
        /// The key itself.
        key: biscuit_auth::PublicKey,
    },
    /// A key of an issuer's JWKS.
    Jwk {
        /// The issuer's index.
        issuer: usize,
        /// The key's `kid`.
        kid: Option<String>,
        /// SHA-256 of the JWK as published.
        fingerprint: [u8; 32],
    },
}

/// Why a token was not verified.
pub enum Rejection {
    /// It names a key none of the held ones is; `source` may publish it by now.
    UnknownKey {
        /// Where to look again.
        source: FetchedSource,
        /// The answer if it is still unknown.
        error: AuthError,
    },
    /// Anything else.
    Refused(AuthError),
}

impl TrustStore {
    /// Trusts `configured` root keys, the key set at `auth.key_set_url` and the
    /// `auth.jwt` issuers (their keys are fetched by [`Self::start`]).
    pub fn new(configured: TrustedKeys, auth: &AuthSettings) -> anyhow::Result<Self> {
        let key_set = match &auth.key_set_url {
            Some(url) => Some(Arc::new(KeySource::new(
                "key_set".into(),
                url::Url::parse(url)?,
                auth.key_set_min_refresh(),
                auth.key_set_max_refresh(),
            ))),
            None => None,
        };
        let issuers = auth
            .jwt
            .iter()
            .map(|(name, settings)| {
                let fetched = match &settings.jwks_url {
                    Some(url) => Some(Arc::new(KeySource::<JwkKeys>::new(
                        format!("jwks:{name}"),
                        url::Url::parse(url)?,
                        settings.min_refresh(),
                        settings.max_refresh(),
                    ))),
                    None => None,
                };
                JwtIssuer::from_settings(name, settings, fetched)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            configured,
            key_set,
            issuers,
        })
    }

    /// Fetches every published key set at once (valet starts whatever the
    /// outcome: readiness reports the failures), then keeps each fresh.
    pub async fn start(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .connect_timeout(super::key_source::FETCH_TIMEOUT)
            .user_agent(concat!("valet/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut starts: Vec<futures_util::future::LocalBoxFuture<'_, ()>> = Vec::new();
        if let Some(key_set) = &self.key_set {
            starts.push(Box::pin(key_set.clone().start(client.clone())));
        }
        for source in self.issuers.iter().filter_map(|i| i.fetched.clone()) {
            starts.push(Box::pin(source.start(client.clone())));
        }
        futures_util::future::join_all(starts).await;
        Ok(())
    }

    /// Verifies a token's signature and reads its identity: CPU work, for the
    /// validator's threads.
    pub fn verify(&self, token: &str) -> Result<Authenticated, Rejection> {
        let token = token.trim();
        if token.contains('.') {
            self.verify_jwt(token)
        } else {
            self.verify_biscuit(token)
        }
    }

    fn verify_biscuit(&self, token: &str) -> Result<Authenticated, Rejection> {
        let published = self.key_set.as_ref().map(|source| source.keys());
        let keys = RootKeys {
            configured: &self.configured,
            published: published.as_ref().map(|keys| keys.as_ref()),
        };
        match biscuit::verify(token, &keys) {
            Ok(verified) => {
                let key = match keys.choose_with_origin(verified.root_key_id) {
                    Some((key, true)) => Some(KeyStamp::RootKey {
                        id: verified.root_key_id,
                        key,
                    }),
                    _ => None,
                };
                Ok(Authenticated {
                    identity: verified.identity,
                    credential: verified.credential,
                    key,
                })
            }
            Err(BiscuitRejection::UnknownKey(error)) if self.key_set.is_some() => {
                Err(Rejection::UnknownKey {
                    source: FetchedSource::KeySet,
                    error,
                })
            }
            Err(BiscuitRejection::UnknownKey(error) | BiscuitRejection::Refused(error)) => {
                Err(Rejection::Refused(error))
            }
        }
    }

    fn verify_jwt(&self, token: &str) -> Result<Authenticated, Rejection> {
        match jwt::verify(token, &self.issuers) {
            Ok(verified) => Ok(Authenticated {
                identity: verified.identity,
                credential: super::permissions::Credential::Jwt {
                    valid_until: verified.valid_until,
                },
                key: verified
                    .fetched_key
                    .map(|(kid, fingerprint)| KeyStamp::Jwk {
                        issuer: verified.issuer,
                        kid,
                        fingerprint,
                    }),
            }),
            Err(JwtRejection::UnknownKey(issuer, error))
                if self
                    .issuers
                    .get(issuer)
                    .is_some_and(|issuer| issuer.fetched.is_some()) =>
            {
                Err(Rejection::UnknownKey {
                    source: FetchedSource::Jwks(issuer),
                    error,
                })
            }
            Err(JwtRejection::UnknownKey(_, error) | JwtRejection::Refused(error)) => {
                Err(Rejection::Refused(error))
            }
        }
    }

    /// Whether the fetched key a verification relied on is still published.
    pub fn still_trusted(&self, stamp: &KeyStamp) -> bool {
        match stamp {
            KeyStamp::RootKey { id, key } => {
                let Some(key_set) = &self.key_set else {
                    return false;
                };
                let published = key_set.keys();
                let keys = RootKeys {
                    configured: &self.configured,
                    published: Some(published.as_ref()),
                };
                keys.choose_with_origin(*id) == Some((*key, true))
            }
            KeyStamp::Jwk {
                issuer,
                kid,
                fingerprint,
            } => self
                .issuers
                .get(*issuer)
                .is_some_and(|issuer| issuer.still_publishes(kid.as_deref(), fingerprint)),
        }
    }

    /// Fetches `source` again for a token naming an unknown key, unless it was
    /// fetched too recently; `true` when a fetch finished (look again).
    pub async fn refresh(&self, source: FetchedSource) -> bool {
        match source {
            FetchedSource::KeySet => match &self.key_set {
                Some(key_set) => key_set.refresh_for_unknown_key().await,
                None => false,
            },
            FetchedSource::Jwks(issuer) => {
                match self.issuers.get(issuer).and_then(|i| i.fetched.as_ref()) {
                    Some(jwks) => jwks.refresh_for_unknown_key().await,
                    None => false,
                }
            }
        }
    }

    /// Each fetched key set by name (`key_set`, `jwks:<issuer>`) and whether its
    /// last fetch worked.
    pub fn fetch_status(&self) -> Vec<(String, Result<(), String>)> {
        let mut status = Vec::new();
        if let Some(key_set) = &self.key_set {
            status.push((key_set.name().to_owned(), key_set.status()));
        }
        for source in self.issuers.iter().filter_map(|i| i.fetched.as_ref()) {
            status.push((source.name().to_owned(), source.status()));
        }
        status
    }
}
