//! Declaring a file: the caller's root, the record (group-committed) and its
//! signed upload.

use super::*;

/// Body of `POST /v1/files`, parsed into domain types as it is deserialized; the
/// size limit (configuration) and the target root (caller) are checked by
/// [`FileService::create`].
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateFileBody)]
pub struct CreateUpload {
    /// 1–1024 bytes of UTF-8 without control characters (metadata only).
    #[schema(value_type = String)]
    pub name: FileName,
    /// Exact length in bytes, 1 to `uploads.max_upload_bytes`.
    pub size: u64,
    /// SHA-256 of the content, 64 hex characters.
    #[schema(value_type = String)]
    pub sha256: Sha256,
    /// Media type (default `application/octet-stream`).
    #[schema(value_type = Option<String>)]
    pub content_type: Option<ContentType>,
    /// String metadata, at most 8 KiB in all.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<FileMetadata>,
    /// Upload into this device's root (service tokens only).
    #[schema(value_type = Option<String>)]
    pub device_id: Option<DeviceId>,
    /// Upload into the tenant's shared root (service tokens only).
    pub shared: Option<bool>,
}

impl FileService {
    /// Records a pending file and signs its upload.
    pub async fn create(
        &self,
        who: &Authenticated,
        request: CreateUpload,
    ) -> Result<(File, SignedRequest), ApiError> {
        let result = self.create_upload(who, request).await;
        self.settle(who, result)
    }

    async fn create_upload(
        &self,
        who: &Authenticated,
        request: CreateUpload,
    ) -> Result<(File, SignedRequest), ApiError> {
        let identity = &who.identity;
        let root = target_root(identity, request.device_id, request.shared)?;
        if request.size == 0 {
            return Err(ApiError::invalid("size must be at least 1 byte"));
        }
        let max = self.settings.uploads.max_upload_bytes;
        if request.size > max {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("size {} exceeds the limit of {max} bytes", request.size),
            ));
        }
        let content_type = request.content_type.unwrap_or_default();
        let metadata = request.metadata.unwrap_or_default();

        let decision = identity.may(Operation::Write, &identity.tenant, &root);
        self.authorize(
            who,
            Operation::Write,
            &root.resource(&identity.tenant),
            decision,
            None,
            || ApiError::new(ErrorCode::NotFound, "no such device root"),
        )?;

        let id = FileId::new();
        let now = now_micros();
        let ttl = Duration::seconds(self.settings.uploads.upload_url_ttl_secs as i64);
        let backend = self
            .settings
            .backend_for_tenant(identity.tenant.as_str())
            .to_owned();
        let file = File {
            id,
            object_key: object_key(&identity.tenant, &root, &id),
            tenant_id: identity.tenant.clone(),
            device_id: root.device().cloned(),
            name: request.name.as_str().to_owned(),
            size: request.size,
            sha256: request.sha256,
            content_type: content_type.as_str().to_owned(),
            status: FileStatus::Pending,
            backend: backend.clone(),
            metadata: metadata.into_inner(),
            created_at: now,
            uploaded_at: None,
            upload_expires_at: now + ttl,
        };
        // Sign before recording, so a signing failure leaves no record behind.
        let upload = self
            .storage
            .sign_upload(
                &backend,
                &UploadSpec {
                    key: file.object_key.clone(),
                    size: file.size,
                    sha256: file.sha256,
                    content_type: file.content_type.clone(),
                    expires_at: file.upload_expires_at,
                },
            )
            .map_err(ApiError::from)?;
        let file = self.writes.insert(file).await.map_err(ApiError::from)?;
        self.cache.put(&file).await;
        metrics::record_file_operation("create", file.tenant_id.as_str(), device(&file));
        Ok((file, upload))
    }
}

/// The root an upload goes to: a device's own, or (services only) the one named.
fn target_root(
    identity: &Identity,
    device_id: Option<DeviceId>,
    shared: Option<bool>,
) -> Result<Root, ApiError> {
    let shared = shared.unwrap_or(false);
    if device_id.is_some() && shared {
        return Err(ApiError::invalid(
            "give either device_id or shared=true, not both",
        ));
    }
    match &identity.principal {
        Principal::Device(me) => match device_id {
            None if !shared => Ok(Root::Device(me.clone())),
            Some(d) if &d == me => Ok(Root::Device(d)),
            _ => Err(ApiError::new(
                ErrorCode::Forbidden,
                "device_id and shared are for service tokens only",
            )),
        },
        Principal::Service(_) => match device_id {
            Some(d) => Ok(Root::Device(d)),
            None if shared => Ok(Root::Shared),
            None => Err(ApiError::invalid(
                "a service token must name the target root: device_id or shared=true",
            )),
        },
    }
}
