//! Minting tokens: what `valet token mint` and a device token service produce.

use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{fact, string};
use biscuit_auth::macros::check;
use biscuit_auth::Biscuit;

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
    let principal_fact = match principal {
        Principal::Device(d) => fact("device", &[string(d.as_str())]),
        Principal::Service(s) => fact("service", &[string(s.as_str())]),
    };
    let token = Biscuit::builder()
        .fact(fact("tenant", &[string(tenant.as_str())]))?
        .fact(principal_fact)?
        .check(check!(
            "check if time($time), $time <= {expires}",
            expires = expires
        ))?
        .root_key_id(key.id)
        .build(&key.keypair)?;
    Ok(token.to_base64()?)
}
