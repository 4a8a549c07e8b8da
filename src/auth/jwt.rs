//! JWTs from trusted issuers (`[auth.jwt.<name>]`): the issuer is chosen by `iss`,
//! the key by `kid`, the algorithm by the key and the issuer's allow-list; the
//! claims then name the tenant and the device or service, parsed with the same
//! domain types as a biscuit's facts. A JWT grants the full rights of its identity.

use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwks::{JwkKeys, JwtKey};
use super::key_source::KeySource;
use super::permissions::AuthError;
use crate::configuration::{ClaimNames, JwtIssuerSettings};
use crate::domain::{DeviceId, Identity, Principal, ServiceName, TenantId};

/// A trusted issuer: its rules and its keys.
pub struct JwtIssuer {
    /// Its name in the configuration (`[auth.jwt.<name>]`).
    pub name: String,
    issuer: String,
    audience: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway_secs: u64,
    required_scopes: Vec<String>,
    claims: ClaimNames,
    /// Keys from the configuration file, trusted for as long as valet runs.
    configured: JwkKeys,
    /// Keys fetched from `jwks_url`.
    pub fetched: Option<Arc<KeySource<JwkKeys>>>,
}

/// A JWT whose signature and claims were verified.
pub struct VerifiedJwt {
    /// The issuer's index.
    pub issuer: usize,
    /// Who the holder is.
    pub identity: Identity,
    /// Last second (Unix time) it is accepted, the leeway included.
    pub valid_until: u64,
    /// The fetched key that verified it (`None` for a configured key): the
    /// verification holds only while that key is still published.
    pub fetched_key: Option<(Option<String>, [u8; 32])>,
}

/// Why a JWT was not accepted.
pub enum JwtRejection {
    /// Its `kid` names no key of its issuer; fetching the issuer's JWKS again may
    /// find it (the issuer's index).
    UnknownKey(usize, AuthError),
    /// Anything else.
    Refused(AuthError),
}

fn refused(detail: impl Into<String>) -> JwtRejection {
    JwtRejection::Refused(AuthError::Unauthenticated(detail.into()))
}

/// The claim valet reads before verifying, only to choose the issuer (and so the
/// keys); it is verified with everything else.
#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
}

impl JwtIssuer {
    /// The issuer of `[auth.jwt.<name>]`, with its configured keys read.
    pub fn from_settings(
        name: &str,
        settings: &JwtIssuerSettings,
        fetched: Option<Arc<KeySource<JwkKeys>>>,
    ) -> anyhow::Result<Self> {
        let algorithms = settings
            .algorithms
            .iter()
            .map(|a| {
                Algorithm::from_str(a)
                    .map_err(|_| anyhow::anyhow!("auth.jwt.{name}.algorithms: unknown {a:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            name: name.to_owned(),
            issuer: settings.issuer.clone(),
            audience: settings.audience.values(),
            algorithms,
            leeway_secs: settings.leeway_secs,
            required_scopes: settings.required_scopes.clone(),
            claims: settings.claims.clone(),
            configured: JwkKeys::from_config(name, &settings.keys)?,
            fetched,
        })
    }

    /// The key a token names, and whether it was fetched (rather than configured).
    /// A token without `kid` is accepted only when the issuer has a single key.
    pub fn key(&self, kid: Option<&str>) -> Option<(Arc<JwtKey>, bool)> {
        let fetched = self.fetched.as_ref().map(|source| source.keys());
        let fetched = fetched.as_ref().map(|keys| keys.as_ref());
        match kid {
            Some(kid) => self
                .configured
                .find(kid)
                .map(|key| (key.clone(), false))
                .or_else(|| fetched?.find(kid).map(|key| (key.clone(), true))),
            None => {
                let configured = self.configured.all();
                let fetched_keys = fetched.map_or(&[][..], JwkKeys::all);
                match (configured, fetched_keys) {
                    ([only], []) => Some((only.clone(), false)),
                    ([], [only]) => Some((only.clone(), true)),
                    _ => None,
                }
            }
        }
    }

    /// Whether a verification by the fetched key `kid` with `fingerprint` still holds.
    pub fn still_publishes(&self, kid: Option<&str>, fingerprint: &[u8; 32]) -> bool {
        matches!(self.key(kid), Some((key, true)) if &key.fingerprint == fingerprint)
    }

    /// Verifies `token`, already known to be addressed to this issuer.
    fn verify(&self, index: usize, token: &str) -> Result<VerifiedJwt, JwtRejection> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refused("the token is not a valid JWT"))?;
        let kid = header.kid.as_deref();
        let Some((key, fetched)) = self.key(kid) else {
            return Err(JwtRejection::UnknownKey(
                index,
                AuthError::Unauthenticated(
                    "the token is signed by a key valet does not know".into(),
                ),
            ));
        };
        // The header's algorithm is only accepted when the key and the issuer's
        // allow-list both allow it: never `none`, never HMAC with a public key.
        if !key.algorithms.contains(&header.alg) || !self.algorithms.contains(&header.alg) {
            return Err(refused(format!(
                "the token's algorithm {:?} is not accepted for its key",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| JwtRejection::Refused(rejection(e.kind())))?
            .claims;
        let identity = self.identity(&claims).map_err(refused)?;
        self.check_scopes(&claims).map_err(refused)?;
        let expires = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or_else(|| refused("the token's `exp` claim is not a number"))?;
        Ok(VerifiedJwt {
            issuer: index,
            identity,
            valid_until: (expires.max(0.0) as u64).saturating_add(self.leeway_secs),
            fetched_key: fetched.then(|| (key.kid.clone(), key.fingerprint)),
        })
    }

    /// The tenant and the device or service the claims name.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, String> {
        let names = &self.claims;
        let text = |claim: &str| -> Result<&str, String> {
            match claims.get(claim) {
                Some(Value::String(value)) => Ok(value),
                Some(_) => Err(format!("the token's `{claim}` claim is not a string")),
                None => Err(format!("the token has no `{claim}` claim")),
            }
        };
        let tenant = TenantId::parse(text(&names.tenant)?)
            .map_err(|e| format!("the token's `{}` claim: {e}", names.tenant))?;
        let subject = text(&names.subject)?;
        let kind = text(&names.kind)?;
        let principal = if kind == names.device {
            DeviceId::parse(subject)
                .map(Principal::Device)
                .map_err(|e| format!("the token's `{}` claim: {e}", names.subject))?
        } else if kind == names.service {
            ServiceName::parse(subject)
                .map(Principal::Service)
                .map_err(|e| format!("the token's `{}` claim: {e}", names.subject))?
        } else {
            return Err(format!(
                "the token's `{}` claim must be {:?} or {:?}",
                names.kind, names.device, names.service
            ));
        };
        Ok(Identity { tenant, principal })
    }

    /// Every required scope is granted, in `scope` (space-separated) or `scp`
    /// (a list, or space-separated).
    fn check_scopes(&self, claims: &Map<String, Value>) -> Result<(), String> {
        if self.required_scopes.is_empty() {
            return Ok(());
        }
        let mut granted = Vec::new();
        for claim in ["scope", "scp"] {
            match claims.get(claim) {
                Some(Value::String(list)) => granted.extend(list.split_whitespace()),
                Some(Value::Array(items)) => granted.extend(items.iter().filter_map(Value::as_str)),
                _ => {}
            }
        }
        match self
            .required_scopes
            .iter()
            .find(|scope| !granted.contains(&scope.as_str()))
        {
            Some(missing) => Err(format!("the token lacks the required scope {missing:?}")),
            None => Ok(()),
        }
    }
}

/// Verifies a JWT against the issuer its `iss` names.
pub fn verify(token: &str, issuers: &[JwtIssuer]) -> Result<VerifiedJwt, JwtRejection> {
    let unverified = jsonwebtoken::dangerous::insecure_decode::<Unverified>(token)
        .map_err(|_| refused("the token is not a valid JWT"))?;
    let iss = unverified
        .claims
        .iss
        .ok_or_else(|| refused("the token has no `iss` claim"))?;
    let (index, issuer) = issuers
        .iter()
        .enumerate()
        .find(|(_, issuer)| issuer.issuer == iss)
        .ok_or_else(|| refused("the token's issuer is not trusted"))?;
    issuer.verify(index, token)
}

/// The 401 for a token the JWT library refused.
fn rejection(kind: &ErrorKind) -> AuthError {
    let detail = match kind {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (`nbf`)".to_owned(),
        ErrorKind::InvalidAudience => "the token is not addressed to valet (`aud`)".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer is not trusted".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature is invalid".to_owned(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's `{claim}` claim is malformed"),
        _ => "the token is not a valid JWT".to_owned(),
    };
    AuthError::Unauthenticated(detail)
}
