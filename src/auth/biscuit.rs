//! Reading a biscuit token: its signatures against the trusted root keys, and the
//! identity in its authority block.

use std::sync::Arc;

use biscuit_auth::error::{Format, Token as TokenError};
use biscuit_auth::{AuthorizerBuilder, Biscuit, RootKeyProvider};

use super::permissions::{self, AuthError, Credential, PlainToken};
use crate::domain::{DeviceId, Identity, Principal, ServiceName, TenantId};

/// Why a biscuit was not accepted.
pub enum BiscuitRejection {
    /// Its root key id names no key valet holds (a key set fetched again may).
    UnknownKey(AuthError),
    /// Anything else: 401 (or 503 when evaluation ran out of time).
    Refused(AuthError),
}

/// A biscuit whose signatures were verified.
pub struct VerifiedBiscuit {
    /// Who the holder is.
    pub identity: Identity,
    /// The token, for the per-request checks.
    pub credential: Credential,
    /// The id of the root key it was signed with, if it names one.
    pub root_key_id: Option<u32>,
}

fn invalid(detail: &str) -> AuthError {
    AuthError::Unauthenticated(detail.to_owned())
}

/// Parses `token`, checks its signatures against `keys` and reads its identity.
pub fn verify(
    token: &str,
    keys: impl RootKeyProvider,
) -> Result<VerifiedBiscuit, BiscuitRejection> {
    let token = Biscuit::from_base64(token.trim(), keys).map_err(|e| match e {
        TokenError::Format(Format::UnknownPublicKey) => BiscuitRejection::UnknownKey(invalid(
            "the token is signed by a key valet does not trust",
        )),
        _ => BiscuitRejection::Refused(invalid("the token is not a valid valet token")),
    })?;
    let identity = identity(&token).map_err(BiscuitRejection::Refused)?;
    let plain = PlainToken::recognise(&token, &identity);
    Ok(VerifiedBiscuit {
        identity,
        root_key_id: token.root_key_id(),
        credential: Credential::Biscuit {
            token: Arc::new(token),
            plain,
        },
    })
}

/// The tenant and the device or service named by the authority block.
fn identity(token: &Biscuit) -> Result<Identity, AuthError> {
    let mut authorizer = AuthorizerBuilder::new()
        .set_limits(permissions::limits())
        .build(token)
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
    Ok(Identity { tenant, principal })
}
