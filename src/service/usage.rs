//! What a tenant and its devices hold against their quotas.

use super::*;
use crate::metadata::{GetUsage, Usage};

/// Filters of `GET /v1/usage`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageRequest {
    /// Devices per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

/// Usage and limits of a tenant or a device root.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// Bytes of uploaded files.
    pub bytes_used: i64,
    /// Uploaded files.
    pub files_used: i64,
    /// Bytes of pending files (counted against the quota until they end).
    pub bytes_reserved: i64,
    /// Pending files.
    pub files_reserved: i64,
    /// The bytes quota; `null` when unlimited.
    pub max_bytes: Option<u64>,
    /// The files quota; `null` when unlimited.
    pub max_files: Option<u64>,
}

/// One device root's usage.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeviceUsage {
    /// The device.
    #[schema(value_type = String)]
    pub device_id: DeviceId,
    /// Its usage and limits.
    #[serde(flatten)]
    pub usage: UsageReport,
}

/// Answer to `GET /v1/usage`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UsagePage {
    /// The whole tenant (every root, the shared one included).
    pub tenant: UsageReport,
    /// Device roots by id: every device for a service (one page), only itself for
    /// a device.
    pub devices: Vec<DeviceUsage>,
    /// Pass as `cursor` for the next page of devices; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn report(usage: Usage, max_bytes: Option<u64>, max_files: Option<u64>) -> UsageReport {
    UsageReport {
        bytes_used: usage.bytes_used,
        files_used: usage.files_used,
        bytes_reserved: usage.bytes_reserved,
        files_reserved: usage.files_reserved,
        max_bytes,
        max_files,
    }
}

impl FileService {
    /// The caller's tenant usage and its devices' (a device sees only itself).
    pub async fn usage(
        &self,
        who: &Authenticated,
        request: UsageRequest,
    ) -> Result<UsagePage, ApiError> {
        let result = self.usage_page(who, request).await;
        self.settle(who, result)
    }

    async fn usage_page(
        &self,
        who: &Authenticated,
        request: UsageRequest,
    ) -> Result<UsagePage, ApiError> {
        let identity = &who.identity;
        let limit = page_limit(request.limit)?;
        let after = page_cursor(request.cursor.as_deref(), |text| DeviceId::parse(text).ok())?;
        let device = match &identity.principal {
            Principal::Device(me) => Some(me.clone()),
            Principal::Service(_) => None,
        };
        let resource = match identity.own_root() {
            Some(root) => root.resource(&identity.tenant),
            None => identity.tenant.to_string(),
        };
        self.authorize(
            who,
            Operation::Read,
            &resource,
            Decision::Allow,
            None,
            || ApiError::new(ErrorCode::NotFound, "no such device root"),
        )?;
        let (tenant, mut devices) = self
            .ask(GetUsage {
                tenant: identity.tenant.clone(),
                device,
                after,
                limit: limit + 1,
            })
            .await?;
        let next_cursor = cut_page(&mut devices, limit, |(id, _)| id.as_str().to_owned());
        let policy = self.policies.for_tenant(&identity.tenant);
        Ok(UsagePage {
            tenant: report(tenant, policy.max_bytes, policy.max_files),
            devices: devices
                .into_iter()
                .map(|(device_id, usage)| DeviceUsage {
                    device_id,
                    usage: report(usage, policy.device_max_bytes, policy.device_max_files),
                })
                .collect(),
            next_cursor,
        })
    }
}
