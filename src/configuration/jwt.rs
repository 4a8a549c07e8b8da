//! `[auth.jwt.<issuer>]`: a trusted JWT issuer (a device or service token service),
//! its keys (a JWKS URL and/or inline JWKs) and how its claims map to an identity.

use std::time::Duration;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::url_with_scheme;

/// Signature algorithms an issuer may use unless configured otherwise.
pub const DEFAULT_JWT_ALGORITHMS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

/// Asymmetric algorithms valet can verify; HMAC and `none` are never accepted.
pub const SUPPORTED_JWT_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Upper bound of the refresh interval when none is configured.
const DEFAULT_MAX_REFRESH_SECS: u64 = 3600;

/// One trusted JWT issuer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerSettings {
    /// The exact `iss` claim of its tokens.
    pub issuer: String,
    /// Accepted `aud` values: a token must name at least one of them.
    pub audience: Audience,
    /// Where its JWK set is published (`https://`, or `http://` on trusted networks).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// JWKs given in this file (the `keys` array of a JWK set), trusted alongside
    /// those fetched from `jwks_url`.
    #[serde(default)]
    pub keys: Vec<serde_json::Value>,
    /// Signature algorithms accepted (asymmetric only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Shortest time between two fetches of `jwks_url`, in seconds (scheduled or
    /// prompted by an unknown `kid`).
    #[serde(default = "default_min_refresh_secs")]
    pub min_refresh_secs: u64,
    /// Longest time between two fetches of `jwks_url`, in seconds.
    #[serde(default = "default_max_refresh_secs")]
    pub max_refresh_secs: u64,
    /// Scopes every token must carry (in `scope` or `scp`).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Which claims hold the tenant, the subject and its kind.
    #[serde(default)]
    pub claims: ClaimNames,
}

/// One audience or several.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Audience {
    /// A single accepted audience.
    One(String),
    /// Any of these.
    Any(Vec<String>),
}

impl Audience {
    /// The accepted values.
    pub fn values(&self) -> Vec<String> {
        match self {
            Audience::One(one) => vec![one.clone()],
            Audience::Any(any) => any.clone(),
        }
    }
}

/// Where a token's identity is read from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimNames {
    /// Claim holding the tenant id.
    pub tenant: String,
    /// Claim holding the device id (devices) or the service name (services).
    pub subject: String,
    /// Claim saying which kind of principal the subject is.
    pub kind: String,
    /// Value of `kind` for devices.
    pub device: String,
    /// Value of `kind` for services.
    pub service: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            tenant: "tid".into(),
            subject: "sub".into(),
            kind: "typ".into(),
            device: "device".into(),
            service: "service".into(),
        }
    }
}

fn default_algorithms() -> Vec<String> {
    DEFAULT_JWT_ALGORITHMS.iter().map(|a| (*a).into()).collect()
}

fn default_leeway_secs() -> u64 {
    30
}

fn default_min_refresh_secs() -> u64 {
    60
}

fn default_max_refresh_secs() -> u64 {
    DEFAULT_MAX_REFRESH_SECS
}

impl JwtIssuerSettings {
    /// Checks one issuer's table.
    pub(super) fn validate(&self, name: &str) -> anyhow::Result<()> {
        let at = format!("auth.jwt.{name}");
        if self.issuer.is_empty() {
            bail!("{at}.issuer must not be empty");
        }
        let audience = self.audience.values();
        if audience.is_empty() || audience.iter().any(String::is_empty) {
            bail!("{at}.audience must name at least one non-empty audience");
        }
        if let Some(url) = &self.jwks_url {
            if url_with_scheme(url, &["https", "http"]).is_none() {
                bail!("{at}.jwks_url {url:?} is not an http(s) URL");
            }
        }
        if self.jwks_url.is_none() && self.keys.is_empty() {
            bail!("{at}: give jwks_url or keys (or both), or no token of it could be verified");
        }
        if self.algorithms.is_empty() {
            bail!("{at}.algorithms must name at least one algorithm");
        }
        for algorithm in &self.algorithms {
            if !SUPPORTED_JWT_ALGORITHMS.contains(&algorithm.as_str()) {
                bail!(
                    "{at}.algorithms: {algorithm:?} is not accepted (supported: {}; \
                     HMAC and \"none\" never are)",
                    SUPPORTED_JWT_ALGORITHMS.join(", ")
                );
            }
        }
        if self.min_refresh_secs == 0 {
            bail!("{at}.min_refresh_secs must be at least 1");
        }
        if self.max_refresh_secs < self.min_refresh_secs {
            bail!("{at}.max_refresh_secs must be at least min_refresh_secs");
        }
        let claims = &self.claims;
        for (field, value) in [
            ("tenant", &claims.tenant),
            ("subject", &claims.subject),
            ("kind", &claims.kind),
            ("device", &claims.device),
            ("service", &claims.service),
        ] {
            if value.is_empty() {
                bail!("{at}.claims.{field} must not be empty");
            }
        }
        if claims.device == claims.service {
            bail!("{at}.claims.device and claims.service must differ");
        }
        Ok(())
    }

    /// `min_refresh_secs` as a duration.
    pub fn min_refresh(&self) -> Duration {
        Duration::from_secs(self.min_refresh_secs)
    }

    /// `max_refresh_secs` as a duration.
    pub fn max_refresh(&self) -> Duration {
        Duration::from_secs(self.max_refresh_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> JwtIssuerSettings {
        toml::from_str(
            r#"
            issuer = "https://sts.example.com"
            audience = "valet"
            jwks_url = "https://sts.example.com/jwks.json"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn defaults_follow_the_device_token_service() {
        let issuer = issuer();
        issuer.validate("sts").unwrap();
        assert_eq!(issuer.algorithms, ["RS256", "ES256", "EdDSA"]);
        assert_eq!(issuer.leeway_secs, 30);
        assert_eq!(issuer.min_refresh_secs, 60);
        assert_eq!(issuer.claims.tenant, "tid");
        assert_eq!(issuer.claims.subject, "sub");
        assert_eq!(issuer.claims.kind, "typ");
        assert_eq!(issuer.audience.values(), ["valet"]);
    }

    #[test]
    fn hmac_none_and_keyless_issuers_are_refused() {
        for algorithm in ["HS256", "none", "rs256"] {
            let mut bad = issuer();
            bad.algorithms = vec![algorithm.into()];
            assert!(bad.validate("sts").is_err(), "{algorithm}");
        }
        let mut keyless = issuer();
        keyless.jwks_url = None;
        assert!(keyless.validate("sts").is_err());
        let mut ftp = issuer();
        ftp.jwks_url = Some("ftp://sts.example.com/jwks.json".into());
        assert!(ftp.validate("sts").is_err());
        let mut nobody = issuer();
        nobody.audience = Audience::Any(vec![]);
        assert!(nobody.validate("sts").is_err());
        let mut eager = issuer();
        eager.min_refresh_secs = 0;
        assert!(eager.validate("sts").is_err());
    }
}
