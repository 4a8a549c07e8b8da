//! A token's own checks against one request: one authorizer run per request, on
//! the caller's thread (about 30 µs), with the request's time, operation, resource
//! and file as facts. Attenuated tokens are enforced exactly: nothing about a
//! check's outcome is cached, only the verified token. A token exactly as minted
//! ([`PlainToken`]) has no check but its expiry, so its verdict is one comparison;
//! so is a JWT's, which grants the full rights of its identity until it expires.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use biscuit_auth::builder::{fact, string, Check, Policy};
use biscuit_auth::error::{FailedCheck, Logic, RunLimit, Token as TokenError};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit, KeyPair};

use crate::domain::{FileId, Identity, Operation};

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

/// A verified token, as far as the per-request checks need it.
#[derive(Clone)]
pub enum Credential {
    /// A biscuit: its checks run per request.
    Biscuit {
        /// The verified token.
        token: Arc<Biscuit>,
        /// Set when the token is exactly as minted: its checks reduce to its expiry.
        plain: Option<PlainToken>,
    },
    /// A JWT: valid, with every right of its identity, until it expires.
    Jwt {
        /// Last second (Unix time) it is accepted, the clock leeway included.
        valid_until: u64,
    },
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

/// A token exactly as `valet token mint` makes it: one authority block with the
/// identity facts and at most the expiry check, nothing else. Its checks depend on
/// time alone, so the authorizer's verdict is the comparison with its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainToken {
    /// Last second (Unix time) at which the token is valid; `None`: never expires.
    expires: Option<u64>,
}

impl PlainToken {
    /// Recognises a plain token by rebuilding it: the same identity and expiry
    /// through the same builder must print exactly the same Datalog, so anything
    /// else (an attenuation block, another check, a rule) takes the full path.
    /// Costs a signature, once per distinct token (on the validator's thread).
    pub fn recognise(token: &Biscuit, identity: &Identity) -> Option<Self> {
        if token.block_count() != 1 {
            return None;
        }
        let source = token.print_block_source(0).ok()?;
        let expires = match source.split_once("$time <= ") {
            None => None,
            Some((_, rest)) => {
                let stamp = rest.split(|c: char| c == ';' || c.is_whitespace()).next()?;
                let at = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
                Some(u64::try_from(at.timestamp()).ok()?)
            }
        };
        let rebuilt = super::token::build(
            &KeyPair::new(),
            None,
            &identity.tenant,
            &identity.principal,
            expires.map(|secs| UNIX_EPOCH + Duration::from_secs(secs)),
        )
        .ok()?;
        (rebuilt.print_block_source(0).ok()? == source).then_some(Self { expires })
    }

    /// The verdict the authorizer would reach now.
    fn check(&self) -> Result<(), AuthError> {
        match self.expires {
            Some(last) => valid_until(last),
            None => Ok(()),
        }
    }
}

/// `Ok` while the current second is at most `last`.
fn valid_until(last: u64) -> Result<(), AuthError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now > last {
        Err(expired_token())
    } else {
        Ok(())
    }
}

fn expired_token() -> AuthError {
    AuthError::Unauthenticated("the token has expired".into())
}

/// Runs the credential's checks, at the current time, against `request`; a plain
/// biscuit's or a JWT's verdict is its expiry.
pub fn authorize(credential: &Credential, request: &Request<'_>) -> Result<(), AuthError> {
    match credential {
        Credential::Jwt { valid_until: last } => valid_until(*last),
        Credential::Biscuit {
            plain: Some(plain), ..
        } => plain.check(),
        Credential::Biscuit { token, plain: None } => authorize_biscuit(token, request),
    }
}

/// Whether the credential has expired now (or an attenuation of it has): its time
/// checks fail at the current time. For answers that do not reach [`authorize`] (an
/// unknown file, a refused root), so an expired token is a 401 on every path.
pub fn expired(credential: &Credential) -> Option<AuthError> {
    match credential {
        Credential::Jwt { valid_until: last } => valid_until(*last).err(),
        Credential::Biscuit { token, plain } => biscuit_expired(token, *plain),
    }
}

/// Runs a biscuit's checks, at the current time, against `request`.
fn authorize_biscuit(token: &Biscuit, request: &Request<'_>) -> Result<(), AuthError> {
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

/// Whether a biscuit has expired now (see [`expired`]).
fn biscuit_expired(token: &Biscuit, plain: Option<PlainToken>) -> Option<AuthError> {
    if let Some(plain) = plain {
        return plain.check().err();
    }
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
    let expired = checks.iter().any(|c| match c {
        FailedCheck::Block(b) => reads_time_only(&b.rule),
        FailedCheck::Authorizer(a) => reads_time_only(&a.rule),
    });
    if expired {
        expired_token()
    } else {
        AuthError::Forbidden("the token does not allow this operation".into())
    }
}

/// The facts valet adds for the request itself; the time is the other one.
const REQUEST_FACTS: [&str; 3] = ["operation", "resource", "file"];

/// Whether the check printed as `rule` reads the time and none of the request's
/// facts, so its failure means "expired" rather than "not allowed for this request".
fn reads_time_only(rule: &str) -> bool {
    // The authorizer printed the check itself, so it parses; should it ever not, the
    // answer is 403: claiming expiry would send the client to fetch a new token that
    // the same check may refuse again.
    let Ok(check) = rule.parse::<Check>() else {
        return false;
    };
    let predicates = || {
        check
            .queries
            .iter()
            .flat_map(|query| &query.body)
            .map(|predicate| predicate.name.as_str())
    };
    predicates().any(|name| name == "time")
        && !predicates().any(|name| REQUEST_FACTS.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token;
    use crate::domain::{DeviceId, Principal, TenantId};
    use biscuit_auth::macros::block;

    fn identity() -> Identity {
        Identity {
            tenant: TenantId::parse("acme").unwrap(),
            principal: Principal::Device(DeviceId::parse("dev-1").unwrap()),
        }
    }

    fn minted(expires: Option<SystemTime>) -> Biscuit {
        let id = identity();
        token::build(&KeyPair::new(), Some(1), &id.tenant, &id.principal, expires).unwrap()
    }

    #[test]
    fn a_minted_token_is_plain_and_its_verdict_is_its_expiry() {
        let later = SystemTime::now() + Duration::from_secs(3600);
        let plain = PlainToken::recognise(&minted(Some(later)), &identity()).unwrap();
        assert!(plain.check().is_ok());
        let earlier = SystemTime::now() - Duration::from_secs(5);
        let plain = PlainToken::recognise(&minted(Some(earlier)), &identity()).unwrap();
        assert!(matches!(plain.check(), Err(AuthError::Unauthenticated(_))));
        let forever = PlainToken::recognise(&minted(None), &identity()).unwrap();
        assert!(forever.check().is_ok());
    }

    #[test]
    fn a_jwt_is_valid_until_its_last_second() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let live = Credential::Jwt {
            valid_until: now + 60,
        };
        assert!(authorize(&live, &read_request()).is_ok());
        assert!(expired(&live).is_none());
        let gone = Credential::Jwt {
            valid_until: now - 1,
        };
        assert!(matches!(
            authorize(&gone, &read_request()),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(expired(&gone).is_some());
    }

    #[test]
    fn anything_beyond_the_minted_form_takes_the_full_path() {
        let later = SystemTime::now() + Duration::from_secs(3600);
        let attenuated = minted(Some(later))
            .append(block!("check if operation(\"read\")"))
            .unwrap();
        assert_eq!(PlainToken::recognise(&attenuated, &identity()), None);
        let other = Identity {
            tenant: TenantId::parse("other").unwrap(),
            principal: identity().principal,
        };
        assert_eq!(PlainToken::recognise(&minted(Some(later)), &other), None);
        let extra = Biscuit::builder()
            .fact(fact("tenant", &[string("acme")]))
            .unwrap()
            .fact(fact("device", &[string("dev-1")]))
            .unwrap()
            .check(biscuit_auth::macros::check!("check if operation(\"read\")"))
            .unwrap()
            .build(&KeyPair::new())
            .unwrap();
        assert_eq!(PlainToken::recognise(&extra, &identity()), None);
    }

    /// A token minted to last an hour, then attenuated with `check`.
    fn attenuated(check: &str) -> Biscuit {
        let later = SystemTime::now() + Duration::from_secs(3600);
        let block = biscuit_auth::builder::BlockBuilder::new()
            .check(check)
            .unwrap();
        minted(Some(later)).append(block).unwrap()
    }

    fn read_request() -> Request<'static> {
        Request {
            operation: Operation::Read,
            resource: "acme/devices/dev-1",
            file: None,
        }
    }

    #[test]
    fn an_expired_attenuation_is_unauthenticated() {
        let token = attenuated("check if time($t), $t < 2020-01-01T00:00:00Z");
        let verdict = authorize_biscuit(&token, &read_request());
        assert!(
            matches!(verdict, Err(AuthError::Unauthenticated(_))),
            "{verdict:?}"
        );
        assert!(matches!(
            biscuit_expired(&token, None),
            Some(AuthError::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_check_about_the_request_is_forbidden() {
        let token = attenuated("check if operation(\"write\")");
        let verdict = authorize_biscuit(&token, &read_request());
        assert!(
            matches!(verdict, Err(AuthError::Forbidden(_))),
            "{verdict:?}"
        );
        assert!(biscuit_expired(&token, None).is_none());
    }

    #[test]
    fn a_failed_check_reading_the_time_and_the_request_is_forbidden() {
        let token = attenuated("check if time($t), $t < 2020-01-01T00:00:00Z, operation(\"read\")");
        let verdict = authorize_biscuit(&token, &read_request());
        assert!(
            matches!(verdict, Err(AuthError::Forbidden(_))),
            "{verdict:?}"
        );
    }

    #[test]
    fn time_only_is_decided_by_predicate_names_not_by_text() {
        assert!(reads_time_only(
            "check if time($t), $t <= 2020-01-01T00:00:00Z"
        ));
        // A string that merely looks like a request fact does not read one.
        assert!(reads_time_only(
            "check if time($t), $t <= 2020-01-01T00:00:00Z, \"operation(\" != \"x\""
        ));
        // Nor does a predicate whose name merely ends in `time`.
        assert!(!reads_time_only("check if uptime($t), $t > 3"));
        assert!(!reads_time_only("check if operation(\"read\")"));
        assert!(!reads_time_only(
            "check if time($t), $t <= 2020-01-01T00:00:00Z or resource(\"acme/shared\")"
        ));
        assert!(!reads_time_only(
            "check if time($t), $t <= 2020-01-01T00:00:00Z, file($f)"
        ));
    }

    #[test]
    fn an_unparsable_check_is_forbidden_rather_than_expired() {
        assert!(!reads_time_only("time( is not datalog"));
    }
}
