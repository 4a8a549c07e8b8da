//! Minting tokens: what `valet token mint` and a device token service produce.

use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{fact, string};
use biscuit_auth::macros::check;
use biscuit_auth::{Biscuit, KeyPair};

use super::RootKey;
use crate::domain::{Principal, TenantId};

/// Mints a token for `principal` in `tenant`, valid for `ttl`.
///
/// Authority block: `tenant("…")`, `device("…")` or `service("…")`, and
/// `check if time($t), $t <= <expiry>`.
pub fn mint(
    key: &RootKey,
    tenant: &TenantId,
    principal: &Principal,
    ttl: Duration,
) -> anyhow::Result<String> {
    let expires = SystemTime::now() + ttl;
    let token = build(&key.keypair, Some(key.id), tenant, principal, Some(expires))?;
    Ok(token.to_base64()?)
}

/// The token `mint` issues: tenant and principal facts, and the expiry check.
pub(crate) fn build(
    keypair: &KeyPair,
    key_id: Option<u32>,
    tenant: &TenantId,
    principal: &Principal,
    expires: Option<SystemTime>,
) -> Result<Biscuit, biscuit_auth::error::Token> {
    let principal_fact = match principal {
        Principal::Device(d) => fact("device", &[string(d.as_str())]),
        Principal::Service(s) => fact("service", &[string(s.as_str())]),
    };
    let mut builder = Biscuit::builder()
        .fact(fact("tenant", &[string(tenant.as_str())]))?
        .fact(principal_fact)?;
    if let Some(expires) = expires {
        builder = builder.check(check!(
            "check if time($time), $time <= {expires}",
            expires = expires
        ))?;
    }
    if let Some(id) = key_id {
        builder = builder.root_key_id(id);
    }
    builder.build(keypair)
}
