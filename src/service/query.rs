//! Reading: one file, its signed download, and pages of files.

use super::*;
use crate::domain::{Cursor, ListedFile};

/// Filters of `GET /v1/files`, parsed from the query string.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRequest {
    /// Only this device's root (a device may name only itself; not with `shared=true`).
    pub device_id: Option<DeviceId>,
    /// Only the tenant's shared root.
    pub shared: Option<bool>,
    /// Only files with this status (default: all but deleted).
    pub status: Option<FileStatus>,
    /// Page size, 1–1000 (default 100).
    #[param(schema_with = page_size_schema)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, as returned (any other text: 400).
    pub cursor: Option<String>,
}

/// The schema of `limit`: what [`FileService::list`] accepts.
pub(super) fn page_size_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_LIST_LIMIT))
        .default(Some(DEFAULT_LIST_LIMIT.into()))
        .build()
}

/// One page of files.
#[derive(Debug, Clone)]
pub struct Page {
    /// Files, newest first.
    pub files: Vec<ListedFile>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

impl FileService {
    /// The root a listing names (`device_id` or `shared=true`; by default a
    /// device's own root, a service's whole tenant: `None`), once the caller is
    /// authorized to list there; another device's root is "not found".
    pub(super) fn listing_root(
        &self,
        who: &Authenticated,
        device_id: Option<DeviceId>,
        shared: Option<bool>,
    ) -> Result<Option<Root>, ApiError> {
        let identity = &who.identity;
        let root = match (device_id, shared.unwrap_or(false)) {
            (Some(_), true) => {
                return Err(ApiError::invalid(
                    "give either device_id or shared=true, not both",
                ))
            }
            (Some(device), false) => Some(Root::Device(device)),
            (None, true) => Some(Root::Shared),
            (None, false) => identity.own_root(),
        };
        let (resource, decision) = match &root {
            Some(root) => (
                root.resource(&identity.tenant),
                identity.may(Operation::List, &identity.tenant, root),
            ),
            // Only services list a whole tenant (devices always have a root here).
            None => (identity.tenant.to_string(), Decision::Allow),
        };
        self.authorize(who, Operation::List, &resource, decision, None, || {
            ApiError::new(ErrorCode::NotFound, "no such device root")
        })?;
        Ok(root)
    }

    /// A file's metadata.
    pub async fn get(&self, who: &Authenticated, id: FileId) -> Result<File, ApiError> {
        let result = self.visible_file(who, id, Operation::Read).await;
        self.settle(who, result)
    }

    /// Signs a download of an uploaded file.
    pub async fn download(
        &self,
        who: &Authenticated,
        id: FileId,
    ) -> Result<SignedRequest, ApiError> {
        let result = self.sign_download(who, id).await;
        self.settle(who, result)
    }

    async fn sign_download(
        &self,
        who: &Authenticated,
        id: FileId,
    ) -> Result<SignedRequest, ApiError> {
        let file = self.visible_file(who, id, Operation::Read).await?;
        self.sign_file_download(&file)
    }

    /// Signs a download of `file`, which the caller was found to be allowed to
    /// read (its own file, or one transferred to it): the one place download URLs
    /// are made.
    pub(super) fn sign_file_download(&self, file: &File) -> Result<SignedRequest, ApiError> {
        if file.status != FileStatus::Uploaded {
            return Err(not_uploaded(file));
        }
        let ttl = Duration::seconds(self.settings.uploads.download_url_ttl_secs as i64);
        let request = self
            .storage
            .sign_download(
                &file.backend,
                &DownloadSpec {
                    key: file.object_key.clone(),
                    file_name: file.name.clone(),
                    content_type: file.content_type.clone(),
                    expires_at: now_micros() + ttl,
                },
            )
            .map_err(ApiError::from)?;
        self.record_operation("download", file);
        Ok(request)
    }

    /// One page of the files the caller may list.
    pub async fn list(&self, who: &Authenticated, request: ListRequest) -> Result<Page, ApiError> {
        let result = self.list_page(who, request).await;
        self.settle(who, result)
    }

    async fn list_page(&self, who: &Authenticated, request: ListRequest) -> Result<Page, ApiError> {
        let identity = &who.identity;
        let limit = page_limit(request.limit)?;
        let before = page_cursor(request.cursor.as_deref(), |text| {
            Cursor::decode(text).map(|c| c.0)
        })?;
        let root = self.listing_root(who, request.device_id, request.shared)?;
        let mut files = self
            .ask(ListFiles {
                tenant: identity.tenant.clone(),
                root,
                status: request.status,
                before,
                limit: limit + 1,
                viewer: crate::domain::principal_key(&identity.principal),
            })
            .await?;
        let next_cursor = cut_page(&mut files, limit, |f| Cursor(f.id).encode());
        Ok(Page { files, next_cursor })
    }
}
