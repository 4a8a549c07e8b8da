//! Tenant policy at run time: the configured limits (swapped whole on SIGHUP), the
//! token buckets that rate-limit each tenant and device, and the checks a new file
//! goes through before its quota is reserved in the database.
//!
//! Rate limits are per instance (in-process token buckets): N instances behind a
//! load balancer each allow the configured rate, so configure each one's share.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics::counter;

use crate::configuration::{PolicySettings, Settings, TenantPolicy};
use crate::domain::{Identity, Principal, TenantId};
use crate::metadata::QuotaLimits;
use crate::problem::{ApiError, ErrorCode};

/// Checks after which idle devices' buckets are dropped (they are full again anyway).
const SHRINK_EVERY: u64 = 4096;

/// The buckets of one tenant under the policy in force.
struct TenantBuckets {
    tenant: Option<DefaultDirectRateLimiter>,
    devices: Option<DefaultKeyedRateLimiter<String>>,
}

/// Which bucket ran dry.
#[derive(Debug, Clone, Copy)]
enum Bucket {
    Tenant,
    Device,
}

fn quota(per_second: Option<u32>, burst: Option<u32>) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second?)?;
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl TenantBuckets {
    fn new(policy: &TenantPolicy) -> Self {
        Self {
            tenant: quota(policy.requests_per_second, policy.burst).map(RateLimiter::direct),
            devices: quota(policy.device_requests_per_second, policy.device_burst)
                .map(RateLimiter::keyed),
        }
    }
}

/// The policy in force and its rate limiters; shared by every worker.
pub struct TenantPolicies {
    settings: ArcSwap<PolicySettings>,
    buckets: RwLock<HashMap<String, Arc<TenantBuckets>>>,
    checks: AtomicU64,
}

impl TenantPolicies {
    /// Enforces `settings`.
    pub fn new(settings: PolicySettings) -> Self {
        Self {
            settings: ArcSwap::from_pointee(settings),
            buckets: RwLock::new(HashMap::new()),
            checks: AtomicU64::new(0),
        }
    }

    /// Enforces `settings` from now on (a SIGHUP reload); buckets start full.
    pub fn replace(&self, settings: PolicySettings) {
        self.settings.store(Arc::new(settings));
        self.buckets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The policy of `tenant` in force now.
    pub fn for_tenant(&self, tenant: &TenantId) -> TenantPolicy {
        self.settings.load().for_tenant(tenant.as_str())
    }

    /// The quotas a new file of `tenant` is reserved against.
    pub fn quotas(policy: &TenantPolicy) -> QuotaLimits {
        QuotaLimits {
            max_bytes: policy.max_bytes,
            max_files: policy.max_files,
            device_max_bytes: policy.device_max_bytes,
            device_max_files: policy.device_max_files,
        }
    }

    fn buckets_of(&self, tenant: &TenantId) -> Arc<TenantBuckets> {
        if let Some(buckets) = self
            .buckets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant.as_str())
        {
            return Arc::clone(buckets);
        }
        let fresh = Arc::new(TenantBuckets::new(&self.for_tenant(tenant)));
        Arc::clone(
            self.buckets
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(tenant.as_str().to_owned())
                .or_insert(fresh),
        )
    }

    /// Takes one request from the caller's buckets (its device's, then its
    /// tenant's); 429 `rate_limited` with `Retry-After` when one is empty.
    pub fn admit(&self, identity: &Identity) -> Result<(), ApiError> {
        let buckets = self.buckets_of(&identity.tenant);
        if buckets.tenant.is_none() && buckets.devices.is_none() {
            return Ok(());
        }
        let clock = DefaultClock::default();
        let refused = match (&identity.principal, &buckets.devices) {
            (Principal::Device(device), Some(devices)) => {
                if self
                    .checks
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(SHRINK_EVERY)
                {
                    devices.retain_recent();
                }
                devices
                    .check_key(&device.as_str().to_owned())
                    .err()
                    .map(|not_until| (Bucket::Device, not_until.wait_time_from(clock.now())))
            }
            _ => None,
        };
        let refused = refused.or_else(|| {
            let tenant = buckets.tenant.as_ref()?;
            tenant
                .check()
                .err()
                .map(|not_until| (Bucket::Tenant, not_until.wait_time_from(clock.now())))
        });
        let Some((bucket, wait)) = refused else {
            return Ok(());
        };
        counter!("valet_rate_limited_total", "tenant" => identity.tenant.as_str().to_owned())
            .increment(1);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let whose = match bucket {
            Bucket::Tenant => "this tenant",
            Bucket::Device => "this device",
        };
        Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("{whose} made too many requests; retry in {} s", secs.max(1)),
        )
        .with_retry_after(secs.max(1)))
    }

    /// Checks a new file's size and content type against `policy`: 413 / 415.
    pub fn check_file(
        policy: &TenantPolicy,
        tenant: &TenantId,
        size: u64,
        content_type: &str,
    ) -> Result<(), ApiError> {
        if let Some(max) = policy.max_upload_bytes {
            if size > max {
                record_quota_rejection(tenant, "max_upload_bytes");
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("size {size} exceeds this tenant's limit of {max} bytes"),
                ));
            }
        }
        if !policy.allows_content_type(content_type) {
            record_quota_rejection(tenant, "allowed_content_types");
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("content type {content_type:?} is not allowed for this tenant"),
            ));
        }
        Ok(())
    }
}

/// One create refused by a limit of `tenant`'s policy.
pub fn record_quota_rejection(tenant: &TenantId, limit: &'static str) {
    counter!("valet_quota_rejections_total", "tenant" => tenant.as_str().to_owned(), "limit" => limit)
        .increment(1);
}

/// Reloads the policy from the configuration (file and `VALET_*` environment, as at
/// start) on every SIGHUP; a configuration that does not load leaves the policy in
/// force (logged). Other sections need a restart.
pub fn reload_on_sighup(policies: Arc<TenantPolicies>, config_file: Option<PathBuf>) {
    actix_web::rt::spawn(async move {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; the policy is not reloaded");
                    return;
                }
            };
        while hangups.recv().await.is_some() {
            let file = config_file.clone();
            let loaded = actix_web::rt::task::spawn_blocking(move || {
                Settings::load(file.as_deref()).map(|s| s.policy)
            })
            .await;
            match loaded {
                Ok(Ok(policy)) => {
                    policies.replace(policy);
                    tracing::info!("tenant policy reloaded");
                }
                Ok(Err(e)) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "policy reload failed; the previous policy stays in force"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "policy reload did not finish; the previous policy stays in force");
                }
            }
        }
    });
}
