//! The `Authenticator`: every request's door to identity. A token seen before is
//! found in a bounded cache of verified tokens (keyed by the SHA-256 of its bytes)
//! on the caller's thread, and believed while the fetched key that verified it (if
//! any) is still published; a new one is verified once by the `TokenValidator`
//! actor. Concurrent first requests with the same token share one verification. A
//! token naming a key valet does not hold prompts one fetch of the key set it
//! would be in (at most one per the set's minimum refresh interval), then one more
//! look.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::permissions::{self, AuthError, Request};
use super::trust::{Rejection, TrustStore};
use super::validator::{Authenticate, Authenticated, TokenValidator, MAX_TOKEN_BYTES};

/// Verifies bearer tokens, each distinct one once.
#[derive(Clone)]
pub struct Authenticator {
    validator: Addr<TokenValidator>,
    trust: Arc<TrustStore>,
    verified: Option<Cache<[u8; 32], Authenticated>>,
}

impl Authenticator {
    /// Verification through `validator` (which trusts `trust`), remembering up to
    /// `capacity` verified tokens for at most `ttl` each (`capacity` 0: verify
    /// every request).
    pub fn new(
        validator: Addr<TokenValidator>,
        trust: Arc<TrustStore>,
        capacity: u64,
        ttl: Duration,
    ) -> Self {
        let verified = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Self {
            validator,
            trust,
            verified,
        }
    }

    /// The verified token and its identity. Its checks are run per request by
    /// [`Self::authorize`].
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Unauthenticated("the token is too long".into()));
        }
        let Some(verified) = &self.verified else {
            return self.verify(token).await;
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let found = verified
            .try_get_with(key, self.verify(token))
            .await
            .map_err(|e| (*e).clone())?;
        if self.still_trusted(&found) {
            return Ok(found);
        }
        // Its key was retired (or replaced) since: verify again, as a new token.
        verified.invalidate(&key).await;
        let fresh = self.verify(token).await?;
        verified.insert(key, fresh.clone()).await;
        Ok(fresh)
    }

    fn still_trusted(&self, who: &Authenticated) -> bool {
        who.key
            .as_ref()
            .is_none_or(|stamp| self.trust.still_trusted(stamp))
    }

    async fn verify(&self, token: &str) -> Result<Authenticated, AuthError> {
        match self.ask(token).await? {
            Ok(who) => Ok(who),
            Err(Rejection::Refused(error)) => Err(error),
            Err(Rejection::UnknownKey { source, error }) => {
                if !self.trust.refresh(source).await {
                    return Err(error);
                }
                match self.ask(token).await? {
                    Ok(who) => Ok(who),
                    Err(Rejection::Refused(error) | Rejection::UnknownKey { error, .. }) => {
                        Err(error)
                    }
                }
            }
        }
    }

    async fn ask(&self, token: &str) -> Result<Result<Authenticated, Rejection>, AuthError> {
        self.validator
            .send(Authenticate {
                token: token.to_owned(),
            })
            .await
            .map_err(|e| AuthError::Busy(format!("token validation unavailable: {e}")))
    }

    /// Runs the token's checks against one request (one authorizer run for a
    /// biscuit; the expiry for a JWT).
    pub fn authorize(&self, who: &Authenticated, request: &Request<'_>) -> Result<(), AuthError> {
        permissions::authorize(&who.credential, request)
    }

    /// `Some(401)` when the token has expired by now.
    pub fn expired(&self, who: &Authenticated) -> Option<AuthError> {
        permissions::expired(&who.credential)
    }

    /// Each fetched key set (`key_set`, `jwks:<issuer>`) and whether its last
    /// fetch worked, for readiness.
    pub fn key_fetch_status(&self) -> Vec<(String, Result<(), String>)> {
        self.trust.fetch_status()
    }
}
