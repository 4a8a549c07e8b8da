//! The `TokenValidator` actor: verifies biscuit tokens on its own threads (signature
//! checks and Datalog are CPU work that must not run on the HTTP workers).

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Handler, Message, SyncContext};
use biscuit_auth::builder::{fact, string};
use biscuit_auth::error::{FailedCheck, Logic, Token as TokenError};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit};

use super::TrustedKeys;
use crate::domain::{DeviceId, FileId, Identity, Operation, Principal, ServiceName, TenantId};

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies tokens against the trusted root keys.
pub struct TokenValidator {
    keys: Arc<TrustedKeys>,
    limits: AuthorizerLimits,
}

impl TokenValidator {
    /// A validator trusting `keys`.
    pub fn new(keys: Arc<TrustedKeys>) -> Self {
        Self {
            keys,
            // The default 1 ms budget is too tight for a loaded machine; 20 ms still
            // bounds what a hostile token can make us compute.
            limits: AuthorizerLimits {
                max_facts: 1000,
                max_iterations: 100,
                max_time: Duration::from_millis(20),
            },
        }
    }
}

impl Actor for TokenValidator {
    type Context = SyncContext<Self>;
}

/// Why a token was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No valid, unexpired token from a trusted key: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token whose own checks refuse this request: 403.
    #[error("{0}")]
    Forbidden(String),
}

/// Verify a bearer token and say who it belongs to.
#[derive(Message)]
#[rtype(result = "Result<Authenticated, AuthError>")]
pub struct Authenticate {
    /// The base64 token from the Authorization header.
    pub token: String,
}

/// A verified token and the identity in its authority block.
#[derive(Clone)]
pub struct Authenticated {
    /// Who the caller is.
    pub identity: Identity,
    /// The verified token, kept to authorize individual operations.
    pub token: Arc<Biscuit>,
}

/// Run the token's checks against one concrete operation.
#[derive(Message)]
#[rtype(result = "Result<(), AuthError>")]
pub struct Authorize {
    /// The token from [`Authenticated`].
    pub token: Arc<Biscuit>,
    /// What is being done.
    pub operation: Operation,
    /// `resource(...)`: `<tenant>/devices/<device>` or `<tenant>/shared`.
    pub resource: String,
    /// `file(...)` when one file is addressed.
    pub file: Option<FileId>,
}

fn invalid(detail: &str) -> AuthError {
    AuthError::Unauthenticated(detail.to_owned())
}

impl Handler<Authenticate> for TokenValidator {
    type Result = Result<Authenticated, AuthError>;

    fn handle(&mut self, msg: Authenticate, _: &mut Self::Context) -> Self::Result {
        if msg.token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("the token is too long"));
        }
        let token = Biscuit::from_base64(msg.token.trim(), &*self.keys).map_err(|e| match e {
            TokenError::Format(biscuit_auth::error::Format::UnknownPublicKey) => {
                invalid("the token is signed by a key valet does not trust")
            }
            _ => invalid("the token is not a valid valet token"),
        })?;
        let mut authorizer = AuthorizerBuilder::new()
            .time()
            .set_limits(self.limits.clone())
            .build(&token)
            .map_err(|_| invalid("the token cannot be evaluated"))?;
        // Authorizer queries trust only the authority block: facts added by
        // attenuation blocks can never change who the caller is.
        let mut query = |rule: &str| -> Result<Vec<(String,)>, AuthError> {
            authorizer
                .query(rule)
                .map_err(|_| invalid("the token cannot be evaluated"))
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
        // Expiry is checked here, before anything else is looked at, so an expired
        // token is always a 401. Checks about the operation fail at this stage
        // because no operation is known yet; those are run by `Authorize`.
        let mut expiry = AuthorizerBuilder::new()
            .time()
            .set_limits(self.limits.clone())
            .policy("allow if true")
            .and_then(|b| b.build(&token))
            .map_err(|_| invalid("the token cannot be evaluated"))?;
        if let Err(e) = expiry.authorize() {
            if let Some(err @ AuthError::Unauthenticated(_)) = classify(&e) {
                return Err(err);
            }
        }
        Ok(Authenticated {
            identity: Identity { tenant, principal },
            token: Arc::new(token),
        })
    }
}

impl Handler<Authorize> for TokenValidator {
    type Result = Result<(), AuthError>;

    fn handle(&mut self, msg: Authorize, _: &mut Self::Context) -> Self::Result {
        let mut builder = AuthorizerBuilder::new()
            .time()
            .set_limits(self.limits.clone())
            .fact(fact("operation", &[string(msg.operation.as_str())]))
            .and_then(|b| b.fact(fact("resource", &[string(&msg.resource)])))
            .map_err(|_| invalid("the token cannot be evaluated"))?;
        if let Some(file) = msg.file {
            builder = builder
                .fact(fact("file", &[string(&file.to_string())]))
                .map_err(|_| invalid("the token cannot be evaluated"))?;
        }
        let mut authorizer = builder
            .policy("allow if true")
            .and_then(|b| b.build(&msg.token))
            .map_err(|_| invalid("the token cannot be evaluated"))?;
        match authorizer.authorize() {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e).unwrap_or_else(|| {
                AuthError::Forbidden("the token does not allow this operation".into())
            })),
        }
    }
}

/// Turns an authorization failure into 401 (only time checks failed: the token, or
/// an attenuation of it, has expired) or 403 (a check about the operation failed).
fn classify(error: &TokenError) -> Option<AuthError> {
    let checks = match error {
        TokenError::FailedLogic(Logic::Unauthorized { checks, .. })
        | TokenError::FailedLogic(Logic::NoMatchingPolicy { checks }) => checks,
        TokenError::RunLimit(_) => {
            return Some(invalid("the token is too expensive to evaluate"));
        }
        _ => return None,
    };
    let rules: Vec<&str> = checks
        .iter()
        .map(|c| match c {
            FailedCheck::Block(b) => b.rule.as_str(),
            FailedCheck::Authorizer(a) => a.rule.as_str(),
        })
        .collect();
    let time_only = |rule: &&str| {
        rule.contains("time(")
            && !["operation(", "resource(", "file("]
                .iter()
                .any(|p| rule.contains(p))
    };
    if !rules.is_empty() && rules.iter().any(time_only) {
        Some(invalid("the token has expired"))
    } else {
        Some(AuthError::Forbidden(
            "the token does not allow this operation".into(),
        ))
    }
}
