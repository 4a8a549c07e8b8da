//! A token's own checks against one request: one authorizer run per request, on
//! the caller's thread (about 20 µs), with the request's time, operation, resource
//! and file as facts. Attenuated tokens are enforced exactly: nothing about a
//! check's outcome is cached, only the verified token.

use std::sync::OnceLock;
use std::time::Duration;

use biscuit_auth::builder::{fact, string, Policy};
use biscuit_auth::error::{FailedCheck, Logic, RunLimit, Token as TokenError};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit};

use crate::domain::{FileId, Operation};

/// Why a token was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No valid, unexpired token from a trusted key: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token whose own checks refuse this request: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The token could not be evaluated in time on a busy machine: 503, retry.
    #[error("{0}")]
    Busy(String),
}

/// What the authorizer may spend on one token.
///
/// The bounds that decide are facts and iterations: they are the same on an idle
/// and a busy machine, so a token is accepted or refused for what it is. The time
/// bound is only a safety net, generous enough that a loaded machine does not reach
/// it for a valid token; reaching it answers 503 ([`AuthError::Busy`]), never 401.
pub fn limits() -> AuthorizerLimits {
    AuthorizerLimits {
        max_facts: 1000,
        max_iterations: 100,
        max_time: Duration::from_millis(250),
    }
}

/// The one policy: whatever the token's checks allow.
fn allow() -> Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY
        .get_or_init(|| biscuit_auth::macros::policy!("allow if true"))
        .clone()
}

/// What one request does, as the authorizer's facts.
pub struct Request<'a> {
    /// `operation(...)`.
    pub operation: Operation,
    /// `resource(...)`: `<tenant>/devices/<device>`, `<tenant>/shared` or `<tenant>`.
    pub resource: &'a str,
    /// `file(...)` when one file is addressed.
    pub file: Option<FileId>,
}

/// Runs `token`'s checks, at the current time, against `request`.
pub fn authorize(token: &Biscuit, request: &Request<'_>) -> Result<(), AuthError> {
    let mut builder = AuthorizerBuilder::new()
        .time()
        .set_limits(limits())
        .fact(fact("operation", &[string(request.operation.as_str())]))
        .and_then(|b| b.fact(fact("resource", &[string(request.resource)])))
        .map_err(|e| unevaluable(&e))?;
    if let Some(file) = request.file {
        builder = builder
            .fact(fact("file", &[string(&file.to_string())]))
            .map_err(|e| unevaluable(&e))?;
    }
    run(token, builder)
}

/// Whether `token` has expired now (or an attenuation of it has): its time checks
/// fail at the current time. For answers that do not reach [`authorize`] (an
/// unknown file, a refused root), so an expired token is a 401 on every path.
pub fn expired(token: &Biscuit) -> Option<AuthError> {
    match run(token, AuthorizerBuilder::new().time().set_limits(limits())) {
        Err(e @ (AuthError::Unauthenticated(_) | AuthError::Busy(_))) => Some(e),
        _ => None,
    }
}

fn run(token: &Biscuit, builder: AuthorizerBuilder) -> Result<(), AuthError> {
    let mut authorizer = builder
        .policy(allow())
        .and_then(|b| b.build(token))
        .map_err(|e| unevaluable(&e))?;
    match authorizer.authorize() {
        Ok(_) => Ok(()),
        Err(e) => Err(refusal(&e)),
    }
}

/// A token the authorizer could not run at all.
pub fn unevaluable(error: &TokenError) -> AuthError {
    match error {
        TokenError::RunLimit(RunLimit::Timeout) => busy(),
        TokenError::RunLimit(_) => {
            AuthError::Unauthenticated("the token is too expensive to evaluate".into())
        }
        _ => AuthError::Unauthenticated("the token cannot be evaluated".into()),
    }
}

fn busy() -> AuthError {
    AuthError::Busy("valet is too busy to evaluate the token; retry shortly".into())
}

/// Turns an authorization failure into 401 (a time check failed: the token, or an
/// attenuation of it, has expired) or 403 (only checks about the request failed).
fn refusal(error: &TokenError) -> AuthError {
    let checks = match error {
        TokenError::FailedLogic(Logic::Unauthorized { checks, .. })
        | TokenError::FailedLogic(Logic::NoMatchingPolicy { checks }) => checks,
        other => return unevaluable(other),
    };
    let time_only = |rule: &str| {
        rule.contains("time(")
            && !["operation(", "resource(", "file("]
                .iter()
                .any(|p| rule.contains(p))
    };
    let expired = checks.iter().any(|c| match c {
        FailedCheck::Block(b) => time_only(&b.rule),
        FailedCheck::Authorizer(a) => time_only(&a.rule),
    });
    if expired {
        AuthError::Unauthenticated("the token has expired".into())
    } else {
        AuthError::Forbidden("the token does not allow this operation".into())
    }
}
