//! Declaring a file: the caller's root, the record (group-committed) and its
//! signed upload.

use chrono::{DateTime, Utc};

use super::*;
use crate::domain::{choose_part_size, BatchId, PartPlan};
use crate::metadata::InsertError;

/// Body of `POST /v1/files`, parsed into domain types as it is deserialized; the
/// size limit (configuration), the part size (the backend's limits) and the target
/// root (caller) are checked by [`FileService::create`].
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateFileBody)]
pub struct CreateUpload {
    /// The file's name (metadata only).
    pub name: FileName,
    /// Exact length in bytes, 1 to `uploads.max_upload_bytes` (over it: 413).
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "crate::domain::whole_number")]
    pub size: u64,
    /// SHA-256 of the content, 64 hex characters.
    #[schema(schema_with = crate::domain::declared_sha256_schema)]
    pub sha256: Sha256,
    /// Media type (default `application/octet-stream`).
    pub content_type: Option<ContentType>,
    /// String metadata.
    pub metadata: Option<FileMetadata>,
    /// Upload into this device's root (service tokens only; not with `shared`).
    pub device_id: Option<DeviceId>,
    /// Upload into the tenant's shared root (service tokens only; not with `device_id`).
    pub shared: Option<bool>,
    /// Upload in parts of this many bytes (every part but the last); any file with
    /// it, and every file over `uploads.multipart_threshold_bytes`, is multipart.
    /// It must lie within the storage backend's part sizes (S3 and the local store:
    /// 5 MiB to 5 GiB, Azure: 1 MiB to 4000 MiB; smaller is accepted when it covers
    /// the whole file) and need no more parts than the backend allows (S3 and the
    /// local store: 10,000, Azure: 50,000).
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "crate::domain::optional_whole_number")]
    pub part_size: Option<u64>,
    /// Create the file in this open batch (its root must be the batch's): it is
    /// announced, and listed to others, only when the batch is committed.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub batch_id: Option<BatchId>,
}

/// The root an upload body names, read on its own so that the caller is authorized
/// before the rest of the body is judged.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct NamedRoot {
    /// `device_id`.
    pub device_id: Option<DeviceId>,
    /// `shared`.
    pub shared: Option<bool>,
}

/// How the device sends the bytes of a new file.
#[derive(Debug, Clone)]
pub enum Upload {
    /// One signed PUT of the whole file.
    Single(SignedRequest),
    /// Parts, whose URLs the device asks for with `POST /v1/files/{id}/parts`.
    Multipart {
        /// Length of every part but the last.
        part_size: u64,
        /// Number of parts.
        part_count: u64,
        /// The upload's deadline: after it the reconciler aborts it.
        expires_at: DateTime<Utc>,
    },
}

impl FileService {
    /// Records a pending file and signs its upload (or starts its upload in parts).
    pub async fn create(
        &self,
        who: &Authenticated,
        request: CreateUpload,
    ) -> Result<(File, Upload), ApiError> {
        let result = self.create_upload(who, request).await;
        self.settle(who, result)
    }

    /// Authorizes an upload before its body is validated: the role rules and the
    /// token's checks for a write in the root the body names (`named`) or, when the
    /// body cannot say, in the caller's own scope (a device's root, a service's
    /// tenant). A read-only token is refused whatever the body holds.
    pub fn authorize_upload(
        &self,
        who: &Authenticated,
        named: Option<NamedRoot>,
    ) -> Result<(), ApiError> {
        let identity = &who.identity;
        let root = named.map(|named| target_root(identity, named.device_id, named.shared));
        let scope = match &root {
            Some(Ok(root)) => Some(root.clone()),
            _ => identity.own_root(),
        };
        let (resource, decision) = match &scope {
            Some(root) => (
                root.resource(&identity.tenant),
                identity.may(Operation::Write, &identity.tenant, root),
            ),
            None => (identity.tenant.to_string(), Decision::Allow),
        };
        let result = self
            .authorize(who, Operation::Write, &resource, decision, None, || {
                ApiError::new(ErrorCode::NotFound, "no such device root")
            })
            .and(root.map_or(Ok(()), |root| root.map(|_| ())));
        self.settle(who, result)
    }

    /// The root a new record goes to (a device's own, or the one a service names),
    /// once the caller is authorized to write there; another device's is "not found".
    pub(super) fn writable_root(
        &self,
        who: &Authenticated,
        device_id: Option<DeviceId>,
        shared: Option<bool>,
    ) -> Result<Root, ApiError> {
        let identity = &who.identity;
        let root = target_root(identity, device_id, shared)?;
        let decision = identity.may(Operation::Write, &identity.tenant, &root);
        self.authorize(
            who,
            Operation::Write,
            &root.resource(&identity.tenant),
            decision,
            None,
            || ApiError::new(ErrorCode::NotFound, "no such device root"),
        )?;
        Ok(root)
    }

    async fn create_upload(
        &self,
        who: &Authenticated,
        request: CreateUpload,
    ) -> Result<(File, Upload), ApiError> {
        let identity = &who.identity;
        let root = self.writable_root(who, request.device_id, request.shared)?;
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

        let policy = self.policies.for_tenant(&identity.tenant);
        TenantPolicies::check_file(
            &policy,
            &identity.tenant,
            request.size,
            content_type.as_str(),
        )?;

        // Only a file joining a batch pays for reading it.
        if let Some(batch) = request.batch_id {
            self.joinable_batch(who, batch, &root).await?;
        }

        let id = FileId::new();
        let now = now_micros();
        let uploads = &self.settings.uploads;
        let backend = self
            .settings
            .backend_for_tenant(identity.tenant.as_str())
            .to_owned();
        let multipart =
            request.part_size.is_some() || request.size > uploads.multipart_threshold_bytes;
        let part_size = if multipart {
            Some(self.part_size_for(&backend, request.size, request.part_size)?)
        } else {
            None
        };
        let ttl = if multipart {
            uploads.multipart_ttl_secs
        } else {
            uploads.upload_url_ttl_secs
        };
        let mut file = File {
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
            replicas: Vec::new(),
            batch_id: request.batch_id,
            upload_expires_at: now + Duration::seconds(ttl as i64),
            parts: None,
        };
        // Sign (or start the upload in parts) before recording, so a storage
        // failure leaves no record behind.
        let upload = match part_size {
            None => Upload::Single(self.storage.sign_upload(
                &backend,
                &UploadSpec {
                    key: file.object_key.clone(),
                    size: file.size,
                    sha256: file.sha256,
                    content_type: file.content_type.clone(),
                    expires_at: file.upload_expires_at,
                },
            )?),
            Some(part_size) => {
                let upload_id = self
                    .storage
                    .start_multipart(&backend, &file.object_key, &file.content_type)
                    .await?;
                let plan = PartPlan {
                    part_size,
                    upload_id,
                };
                let upload = Upload::Multipart {
                    part_size,
                    part_count: plan.part_count(file.size),
                    expires_at: file.upload_expires_at,
                };
                file.parts = Some(plan);
                upload
            }
        };
        let quotas = TenantPolicies::quotas(&policy);
        let file = match self.writes.insert(file.clone(), quotas).await {
            Ok(file) => file,
            Err(InsertError::BatchClosed) => {
                self.abort_parts(&file).await;
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "the batch is no longer open",
                ));
            }
            Err(InsertError::Store(e)) => {
                if let StoreError::QuotaExceeded(limit) = &e {
                    crate::policy::record_quota_rejection(&identity.tenant, limit.as_str());
                }
                self.abort_parts(&file).await;
                return Err(e.into());
            }
        };
        self.cache.put(&file).await;
        self.record_operation("create", &file);
        Ok((file, upload))
    }

    /// The part size of a new multipart file on `backend`.
    fn part_size_for(
        &self,
        backend: &str,
        size: u64,
        requested: Option<u64>,
    ) -> Result<u64, ApiError> {
        let limits = self
            .storage
            .capabilities(backend)?
            .multipart
            .ok_or_else(|| {
                ApiError::invalid("this file's storage backend cannot take uploads in parts")
            })?;
        choose_part_size(
            size,
            requested,
            self.settings.uploads.default_part_size_bytes,
            &limits,
        )
        .map_err(|e| ApiError::invalid(e.to_string()))
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
