//! The `TokenValidator` actor: the first sight of a token. Parsing and the signature
//! check (Ed25519 for a biscuit; RS256, ES256 or EdDSA for a JWT) cost from about
//! 50 µs to a millisecond, CPU work that must not run on the HTTP workers; each
//! distinct token comes here once, then lives in the
//! [`Authenticator`](super::Authenticator)'s cache.

use std::sync::Arc;

use actix::{Actor, Handler, Message, SyncContext};

use super::permissions::{AuthError, Credential};
use super::trust::{KeyStamp, Rejection, TrustStore};
use crate::domain::Identity;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies tokens against the trusted keys and issuers.
pub struct TokenValidator {
    trust: Arc<TrustStore>,
}

impl TokenValidator {
    /// A validator trusting `trust`.
    pub fn new(trust: Arc<TrustStore>) -> Self {
        Self { trust }
    }
}

impl Actor for TokenValidator {
    type Context = SyncContext<Self>;
}

/// Verify a bearer token's signature and read who it belongs to.
#[derive(Message)]
#[rtype(result = "Result<Authenticated, Rejection>")]
pub struct Authenticate {
    /// The token from the Authorization header.
    pub token: String,
}

/// A token whose signature was verified, and the identity it names.
///
/// Its checks (expiry, attenuation) are not settled here: they depend on the
/// request, and are run once per request by [`Authenticator::authorize`](super::Authenticator::authorize).
#[derive(Clone)]
pub struct Authenticated {
    /// Who the caller is.
    pub identity: Identity,
    /// What the per-request checks run against.
    pub credential: Credential,
    /// The fetched key the signature was checked with, if any: the verification
    /// holds only while that key is still published.
    pub key: Option<KeyStamp>,
}

impl Handler<Authenticate> for TokenValidator {
    type Result = Result<Authenticated, Rejection>;

    fn handle(&mut self, msg: Authenticate, _: &mut Self::Context) -> Self::Result {
        if msg.token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Refused(AuthError::Unauthenticated(
                "the token is too long".into(),
            )));
        }
        self.trust.verify(&msg.token)
    }
}
