//! The `TokenValidator` actor: the first sight of a token. Parsing and the Ed25519
//! signature check cost about 100 µs, CPU work that must not run on the HTTP
//! workers; each distinct token comes here once, then lives in the
//! [`Authenticator`](super::Authenticator)'s cache.

use std::sync::Arc;

use actix::{Actor, Handler, Message, SyncContext};
use biscuit_auth::error::Token as TokenError;
use biscuit_auth::{AuthorizerBuilder, Biscuit};

use super::permissions::{self, AuthError, PlainToken};
use super::TrustedKeys;
use crate::domain::{DeviceId, Identity, Principal, ServiceName, TenantId};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies tokens against the trusted root keys.
pub struct TokenValidator {
    keys: Arc<TrustedKeys>,
}

impl TokenValidator {
    /// A validator trusting `keys`.
    pub fn new(keys: Arc<TrustedKeys>) -> Self {
        Self { keys }
    }
}

impl Actor for TokenValidator {
    type Context = SyncContext<Self>;
}

/// Verify a bearer token's signature and read who it belongs to.
#[derive(Message)]
#[rtype(result = "Result<Authenticated, AuthError>")]
pub struct Authenticate {
    /// The base64 token from the Authorization header.
    pub token: String,
}

/// A token whose signature was verified, and the identity in its authority block.
///
/// Its checks (expiry, attenuation) are not settled here: they depend on the
/// request, and are run once per request by [`Authenticator::authorize`](super::Authenticator::authorize).
#[derive(Clone)]
pub struct Authenticated {
    /// Who the caller is.
    pub identity: Identity,
    /// The verified token.
    pub token: Arc<Biscuit>,
    /// Set when the token is exactly as minted: its checks reduce to its expiry.
    pub plain: Option<PlainToken>,
}

fn invalid(detail: &str) -> AuthError {
    AuthError::Unauthenticated(detail.to_owned())
}

impl Handler<Authenticate> for TokenValidator {
    type Result = Result<Authenticated, AuthError>;

    fn handle(&mut self, msg: Authenticate, _: &mut Self::Context) -> Self::Result {
        verify(&msg.token, &self.keys)
    }
}

/// Parses `token`, checks its signatures against `keys` and reads its identity.
pub fn verify(token: &str, keys: &TrustedKeys) -> Result<Authenticated, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("the token is too long"));
    }
    let token = Biscuit::from_base64(token.trim(), keys).map_err(|e| match e {
        TokenError::Format(biscuit_auth::error::Format::UnknownPublicKey) => {
            invalid("the token is signed by a key valet does not trust")
        }
        _ => invalid("the token is not a valid valet token"),
    })?;
    let mut authorizer = AuthorizerBuilder::new()
        .set_limits(permissions::limits())
        .build(&token)
        .map_err(|e| permissions::unevaluable(&e))?;
    // Authorizer queries trust only the authority block: facts added by
    // attenuation blocks can never change who the caller is.
    let mut query = |rule: &str| -> Result<Vec<(String,)>, AuthError> {
        authorizer
            .query(rule)
            .map_err(|e| permissions::unevaluable(&e))
    };
    let tenants = query("data($t) <- tenant($t)")?;
    let devices = query("data($d) <- device($d)")?;
    let services = query("data($s) <- service($s)")?;
    let tenant = match tenants.as_slice() {
        [(t,)] => TenantId::parse(t).ok(),
        _ => None,
    }
    .ok_or_else(|| invalid("the token must name exactly one valid tenant"))?;
    let principal = match (devices.as_slice(), services.as_slice()) {
        ([(d,)], []) => DeviceId::parse(d)
            .map(Principal::Device)
            .map_err(|_| invalid("the token's device id is invalid"))?,
        ([], [(s,)]) => ServiceName::parse(s)
            .map(Principal::Service)
            .map_err(|_| invalid("the token's service name is invalid"))?,
        _ => {
            return Err(invalid(
                "the token must name exactly one device or one service",
            ))
        }
    };
    let identity = Identity { tenant, principal };
    let plain = PlainToken::recognise(&token, &identity);
    Ok(Authenticated {
        identity,
        token: Arc::new(token),
        plain,
    })
}
