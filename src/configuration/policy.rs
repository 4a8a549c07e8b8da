//! `[policy.default]` and `[policy.tenants.<tenant>]`: what a tenant and each of its
//! devices may store and how fast they may call. A tenant's entry overrides the
//! default option by option; an option set nowhere is unlimited. Reloaded on SIGHUP.

use std::collections::BTreeMap;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tenant policy: a default for every tenant and overrides per tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// Applies to every tenant, except where the tenant's own entry says otherwise.
    pub default: TenantPolicy,
    /// Per-tenant overrides, by tenant id.
    pub tenants: BTreeMap<String, TenantPolicy>,
}

/// The limits of one tenant (every option optional: unset is unlimited, or the
/// default's value in a tenant entry).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TenantPolicy {
    /// Largest file, in bytes (at most `uploads.max_upload_bytes`, which always applies).
    pub max_upload_bytes: Option<u64>,
    /// Content types a file may declare: exact (`image/png`), a type's every subtype
    /// (`image/*`) or anything (`*/*`). Unset: any.
    pub allowed_content_types: Option<Vec<String>>,
    /// Bytes the tenant may hold: uploaded plus pending files.
    pub max_bytes: Option<u64>,
    /// Files the tenant may hold: uploaded plus pending.
    pub max_files: Option<u64>,
    /// Bytes each device's root may hold: uploaded plus pending files.
    pub device_max_bytes: Option<u64>,
    /// Files each device's root may hold: uploaded plus pending.
    pub device_max_files: Option<u64>,
    /// Sustained API requests per second of the whole tenant (token bucket, per instance).
    pub requests_per_second: Option<u32>,
    /// Requests the tenant may make at once above its rate (default: one second's worth).
    pub burst: Option<u32>,
    /// Sustained API requests per second of each device (per instance).
    pub device_requests_per_second: Option<u32>,
    /// Requests a device may make at once above its rate (default: one second's worth).
    pub device_burst: Option<u32>,
}

impl TenantPolicy {
    /// `self` with every unset option taken from `fallback`.
    fn or(&self, fallback: &TenantPolicy) -> TenantPolicy {
        TenantPolicy {
            max_upload_bytes: self.max_upload_bytes.or(fallback.max_upload_bytes),
            allowed_content_types: self
                .allowed_content_types
                .clone()
                .or_else(|| fallback.allowed_content_types.clone()),
            max_bytes: self.max_bytes.or(fallback.max_bytes),
            max_files: self.max_files.or(fallback.max_files),
            device_max_bytes: self.device_max_bytes.or(fallback.device_max_bytes),
            device_max_files: self.device_max_files.or(fallback.device_max_files),
            requests_per_second: self.requests_per_second.or(fallback.requests_per_second),
            burst: self.burst.or(fallback.burst),
            device_requests_per_second: self
                .device_requests_per_second
                .or(fallback.device_requests_per_second),
            device_burst: self.device_burst.or(fallback.device_burst),
        }
    }

    /// Whether `content_type` (a parsed media type, lower case) is allowed.
    pub fn allows_content_type(&self, content_type: &str) -> bool {
        let Some(patterns) = &self.allowed_content_types else {
            return true;
        };
        // Parameters (`; charset=…`) do not change what a file is.
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let kind = essence.split('/').next().unwrap_or_default();
        patterns.iter().any(|pattern| {
            let pattern = pattern.trim().to_ascii_lowercase();
            pattern == "*/*"
                || pattern == essence
                || pattern
                    .strip_suffix("/*")
                    .is_some_and(|prefix| prefix == kind)
        })
    }

    fn validate(&self, at: &str) -> anyhow::Result<()> {
        for (name, value) in [
            ("max_upload_bytes", self.max_upload_bytes),
            ("device_max_bytes", self.device_max_bytes),
            (
                "requests_per_second",
                self.requests_per_second.map(u64::from),
            ),
            ("burst", self.burst.map(u64::from)),
            (
                "device_requests_per_second",
                self.device_requests_per_second.map(u64::from),
            ),
            ("device_burst", self.device_burst.map(u64::from)),
        ] {
            if value == Some(0) {
                bail!("{at}.{name} must be at least 1 (leave it out for no limit)");
            }
        }
        if let Some(max) = self.max_upload_bytes {
            if max > i64::MAX as u64 {
                bail!("{at}.max_upload_bytes must be at most {}", i64::MAX);
            }
        }
        for pattern in self.allowed_content_types.iter().flatten() {
            let valid = pattern.split_once('/').is_some_and(|(kind, subtype)| {
                let token = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                };
                (kind == "*" && subtype == "*")
                    || (token(kind) && (subtype == "*" || token(subtype)))
            });
            if !valid {
                bail!("{at}.allowed_content_types: {pattern:?} is not type/subtype, type/* or */*");
            }
        }
        Ok(())
    }
}

impl PolicySettings {
    /// The policy of `tenant`: its entry over the default.
    pub fn for_tenant(&self, tenant: &str) -> TenantPolicy {
        match self.tenants.get(tenant) {
            Some(own) => own.or(&self.default),
            None => self.default.clone(),
        }
    }

    /// Checks every entry.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        self.default.validate("policy.default")?;
        for (tenant, policy) in &self.tenants {
            policy.validate(&format!("policy.tenants.{tenant}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_entry_overrides_the_default_option_by_option() {
        let settings = PolicySettings {
            default: TenantPolicy {
                max_files: Some(10),
                max_bytes: Some(1000),
                ..TenantPolicy::default()
            },
            tenants: BTreeMap::from([(
                "acme".to_owned(),
                TenantPolicy {
                    max_files: Some(3),
                    ..TenantPolicy::default()
                },
            )]),
        };
        let acme = settings.for_tenant("acme");
        assert_eq!((acme.max_files, acme.max_bytes), (Some(3), Some(1000)));
        let other = settings.for_tenant("globex");
        assert_eq!((other.max_files, other.max_bytes), (Some(10), Some(1000)));
    }

    #[test]
    fn content_types_match_exactly_by_type_or_anything() {
        let policy = TenantPolicy {
            allowed_content_types: Some(vec!["image/*".into(), "application/json".into()]),
            ..TenantPolicy::default()
        };
        assert!(policy.allows_content_type("image/png"));
        assert!(policy.allows_content_type("IMAGE/JPEG"));
        assert!(policy.allows_content_type("application/json; charset=utf-8"));
        assert!(!policy.allows_content_type("application/octet-stream"));
        assert!(!policy.allows_content_type("imagefoo/png"));
        assert!(TenantPolicy::default().allows_content_type("anything/at-all"));
    }

    #[test]
    fn invalid_entries_are_refused() {
        for bad in [
            TenantPolicy {
                allowed_content_types: Some(vec!["image".into()]),
                ..TenantPolicy::default()
            },
            TenantPolicy {
                allowed_content_types: Some(vec!["*/png".into()]),
                ..TenantPolicy::default()
            },
            TenantPolicy {
                requests_per_second: Some(0),
                ..TenantPolicy::default()
            },
        ] {
            assert!(bad.validate("policy.default").is_err(), "{bad:?}");
        }
    }
}
