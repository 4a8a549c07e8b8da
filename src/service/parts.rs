//! Uploads in parts: signing part URLs (recording each part's declared SHA-256),
//! reporting what the store holds so a device can resume, accepting a completed
//! upload for verification, assembling it (the verifier's work) and aborting it.

use std::collections::BTreeMap;

use valet_backends::{BackendError, PartSpec, PartToAssemble};

use super::*;
use crate::domain::{Completion, PartPlan};
use crate::metadata::{GetPartHashes, RecordPartHashes};
use crate::storage::StorageError;

/// Most part URLs one request may ask for.
pub const MAX_PARTS_PER_REQUEST: usize = 100;

/// A part a device asks a URL for.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartRequest {
    /// Part number, 1 to the upload's `part_count`.
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "crate::domain::whole_number")]
    pub number: u64,
    /// SHA-256 of the part's bytes, 64 hex characters.
    #[schema(schema_with = crate::domain::declared_sha256_schema)]
    pub sha256: Sha256,
}

/// A signed URL for one part.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SignedPart {
    /// Part number.
    pub number: u64,
    /// HTTP method.
    pub method: String,
    /// Absolute URL, signature included.
    pub url: String,
    /// Headers to send verbatim.
    pub headers: BTreeMap<String, String>,
    /// When the URL stops working (RFC 3339, UTC).
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A part the store holds.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HeldPart {
    /// Part number.
    pub number: u64,
    /// Length as the store reports it.
    pub size: u64,
    /// SHA-256 declared when the part's URL was signed (lowercase hex), if valet
    /// signed it.
    #[schema(value_type = Option<String>, pattern = "^[0-9a-f]{64}$")]
    pub sha256: Option<Sha256>,
}

/// What the store holds of an upload in parts.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PartsReport {
    /// Parts stored so far, by number.
    pub parts: Vec<HeldPart>,
    /// Length of every part but the last.
    pub part_size: u64,
    /// Number of parts.
    pub part_count: u64,
}

impl FileService {
    /// Signs PUT URLs for parts of a pending multipart file, recording each part's
    /// declared SHA-256 (bound into the URL where the store can enforce it). `parts`
    /// is what the request body held: its error is answered only once the caller is
    /// known to be allowed to write to the file.
    pub async fn sign_parts(
        &self,
        who: &Authenticated,
        id: FileId,
        parts: Result<Vec<PartRequest>, ApiError>,
    ) -> Result<Vec<SignedPart>, ApiError> {
        let result = self.sign_parts_of(who, id, parts).await;
        self.settle(who, result)
    }

    async fn sign_parts_of(
        &self,
        who: &Authenticated,
        id: FileId,
        parts: Result<Vec<PartRequest>, ApiError>,
    ) -> Result<Vec<SignedPart>, ApiError> {
        let file = self.visible_file(who, id, Operation::Write).await?;
        let parts = parts?;
        if parts.is_empty() || parts.len() > MAX_PARTS_PER_REQUEST {
            return Err(ApiError::invalid(format!(
                "ask for 1 to {MAX_PARTS_PER_REQUEST} parts at a time"
            )));
        }
        let plan = pending_plan(&file)?;
        let count = plan.part_count(file.size);
        let mut seen = std::collections::BTreeSet::new();
        for part in &parts {
            if part.number == 0 || part.number > count {
                return Err(ApiError::new(
                    ErrorCode::InvalidPart,
                    format!("part {} is not between 1 and {count}", part.number),
                ));
            }
            if !seen.insert(part.number) {
                return Err(ApiError::invalid(format!(
                    "part {} is asked for twice",
                    part.number
                )));
            }
        }
        let now = now_micros();
        if now >= file.upload_expires_at {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the upload's deadline has passed; it is being aborted",
            ));
        }
        let ttl = Duration::seconds(self.settings.uploads.upload_url_ttl_secs as i64);
        let expires_at = (now + ttl).min(file.upload_expires_at);
        let signed = parts
            .iter()
            .map(|part| {
                let spec = PartSpec {
                    key: file.object_key.clone(),
                    upload: plan.upload_id.clone(),
                    number: part.number as u32,
                    size: plan.part_len(part.number, file.size),
                    sha256: part.sha256,
                    expires_at,
                };
                let request = self.storage.sign_part(&file.backend, &spec)?;
                Ok(SignedPart {
                    number: part.number,
                    method: request.method,
                    url: request.url,
                    headers: request.headers,
                    expires_at: request.expires_at,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let declared = parts.iter().map(|p| (p.number as u32, p.sha256)).collect();
        self.ask(RecordPartHashes {
            file: file.id,
            parts: declared,
        })
        .await?;
        Ok(signed)
    }

    /// What the store holds of a pending multipart file, so a device that lost
    /// its state continues from the first missing part.
    pub async fn stored_parts(
        &self,
        who: &Authenticated,
        id: FileId,
    ) -> Result<PartsReport, ApiError> {
        let result = self.stored_parts_of(who, id).await;
        self.settle(who, result)
    }

    async fn stored_parts_of(
        &self,
        who: &Authenticated,
        id: FileId,
    ) -> Result<PartsReport, ApiError> {
        let file = self.visible_file(who, id, Operation::Read).await?;
        let plan = pending_plan(&file)?;
        let stored = self
            .storage
            .list_parts(&file.backend, &file.object_key, &plan.upload_id)
            .await?;
        let declared = self.ask(GetPartHashes(file.id)).await?;
        Ok(PartsReport {
            parts: stored
                .into_iter()
                .map(|p| HeldPart {
                    number: u64::from(p.number),
                    size: p.size,
                    sha256: declared.get(&p.number).copied(),
                })
                .collect(),
            part_size: plan.part_size,
            part_count: plan.part_count(file.size),
        })
    }

    /// Completion of a pending multipart file: every part stored with the length
    /// its position requires, then `verifying` (assembly and hashing happen off
    /// the request path).
    pub(super) async fn accept_parts(&self, file: File) -> Result<Completion, ApiError> {
        let plan = pending_plan(&file)?;
        let stored = self
            .storage
            .list_parts(&file.backend, &file.object_key, &plan.upload_id)
            .await?;
        let count = plan.part_count(file.size);
        let sizes: BTreeMap<u64, u64> = stored
            .iter()
            .map(|p| (u64::from(p.number), p.size))
            .collect();
        let missing: Vec<u64> = (1..=count).filter(|n| !sizes.contains_key(n)).collect();
        if !missing.is_empty() {
            return Ok(Completion::PartsMissing(missing));
        }
        for number in 1..=count {
            let expected = plan.part_len(number, file.size);
            let stored = sizes.get(&number).copied().unwrap_or(0);
            if stored != expected {
                self.reject(&file).await?;
                return Ok(Completion::PartMismatch(format!(
                    "part {number} is {stored} bytes; it must be {expected}"
                )));
            }
        }
        self.start_verifying(file).await
    }

    /// Assembles a verifying file's parts; `Some` when the store refused them (the
    /// file is then rejected).
    pub(super) async fn assemble_parts(&self, file: &File) -> Result<Option<Completion>, ApiError> {
        let Some(plan) = &file.parts else {
            return Ok(None);
        };
        let declared = self.ask(GetPartHashes(file.id)).await?;
        let parts: Option<Vec<PartToAssemble>> = (1..=plan.part_count(file.size))
            .map(|number| {
                let number = number as u32;
                declared.get(&number).map(|sha256| PartToAssemble {
                    number,
                    sha256: *sha256,
                })
            })
            .collect();
        let refusal = match parts {
            None => "a part was stored without a declared SHA-256".to_owned(),
            Some(parts) => match self
                .storage
                .complete_multipart(&file.backend, &file.object_key, &plan.upload_id, &parts)
                .await
            {
                Ok(()) => return Ok(None),
                Err(StorageError::Backend {
                    error: BackendError::Refused(why),
                    ..
                }) => why,
                Err(e) => return Err(e.into()),
            },
        };
        self.reject(file).await?;
        Ok(Some(Completion::PartMismatch(format!(
            "the parts could not be assembled: {refusal}"
        ))))
    }

    /// Abandons a multipart file's upload in its store (logged when it fails: the
    /// store discards abandoned uploads itself in time).
    pub(super) async fn abort_parts(&self, file: &File) {
        let Some(plan) = &file.parts else {
            return;
        };
        if let Err(e) = self
            .storage
            .abort_multipart(&file.backend, &file.object_key, &plan.upload_id)
            .await
        {
            tracing::warn!(file_id = %file.id, error = %e, "could not abort an upload in parts");
        }
    }
}

/// The parts of a file still being uploaded: 409 for a file that is not pending
/// or was not declared in parts.
fn pending_plan(file: &File) -> Result<&PartPlan, ApiError> {
    let Some(plan) = &file.parts else {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "the file is uploaded with one PUT, not in parts",
        ));
    };
    if file.status != FileStatus::Pending {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "the file is {}; its parts can no longer change",
                file.status
            ),
        ));
    }
    Ok(plan)
}
