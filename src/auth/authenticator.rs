//! The `Authenticator`: every request's door to identity. A token seen before is
//! found in a bounded cache of verified tokens (keyed by the SHA-256 of its bytes)
//! on the caller's thread; a new one is verified once by the `TokenValidator`
//! actor. Concurrent first requests with the same token share one verification.

use std::time::Duration;

use actix::Addr;
use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::permissions::{self, AuthError, Request};
use super::validator::{Authenticate, Authenticated, TokenValidator, MAX_TOKEN_BYTES};

/// Verifies bearer tokens, each distinct one once.
#[derive(Clone)]
pub struct Authenticator {
    validator: Addr<TokenValidator>,
    verified: Option<Cache<[u8; 32], Authenticated>>,
}

impl Authenticator {
    /// Verification through `validator`, remembering up to `capacity` verified tokens
    /// for at most `ttl` each (`capacity` 0: verify every request).
    pub fn new(validator: Addr<TokenValidator>, capacity: u64, ttl: Duration) -> Self {
        let verified = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Self {
            validator,
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
        verified
            .try_get_with(key, self.verify(token))
            .await
            .map_err(|e| (*e).clone())
    }

    async fn verify(&self, token: &str) -> Result<Authenticated, AuthError> {
        self.validator
            .send(Authenticate {
                token: token.to_owned(),
            })
            .await
            .map_err(|e| AuthError::Busy(format!("token validation unavailable: {e}")))?
    }

    /// Runs the token's checks against one request (one authorizer run).
    pub fn authorize(&self, who: &Authenticated, request: &Request<'_>) -> Result<(), AuthError> {
        permissions::authorize(&who.token, who.plain, request)
    }

    /// `Some(401)` when the token has expired by now.
    pub fn expired(&self, who: &Authenticated) -> Option<AuthError> {
        permissions::expired(&who.token, who.plain)
    }
}
