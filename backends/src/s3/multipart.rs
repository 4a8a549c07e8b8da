//! S3 multipart uploads: valet creates, lists, completes and aborts them with
//! requests it signs itself; devices send each part to a presigned `UploadPart`
//! that binds the part's exact length and SHA-256 (`x-amz-checksum-sha256`), so
//! S3 refuses any other bytes. Uploads are created with the SHA-256 checksum
//! algorithm and completed with every part's checksum, as S3 requires then.

use std::time::Duration;

use rusty_s3::actions::{CompleteMultipartUpload, CreateMultipartUpload, S3Action};
use serde::Deserialize;

use super::{presigned_put, S3Backend};
use async_trait::async_trait;

use crate::{
    BackendError, Multipart, ObjectKey, PartSpec, PartToAssemble, SignedRequest, StoredPart,
    UploadId,
};

/// Lifetime of the requests valet signs for itself.
const OWN_REQUEST_TTL: Duration = Duration::from_secs(60);

/// Parts S3 lists per page (its maximum).
const LIST_PAGE: u16 = 1000;

impl S3Backend {
    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, String), BackendError> {
        let response = request
            .send()
            .await
            .map_err(|e| BackendError::Unavailable(format!("{what}: {e}")))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| BackendError::Unavailable(format!("{what}: {e}")))?;
        Ok((status, body))
    }
}

#[async_trait]
impl Multipart for S3Backend {
    async fn start_multipart(
        &self,
        key: &ObjectKey,
        content_type: &str,
    ) -> Result<UploadId, BackendError> {
        let mut create = self
            .internal_bucket
            .create_multipart_upload(Some(&self.credentials), key.as_str());
        create
            .headers_mut()
            .insert("content-type", content_type.to_owned());
        if self.config.bind_checksum {
            create
                .headers_mut()
                .insert("x-amz-checksum-algorithm", "SHA256");
        }
        let url = create.sign(OWN_REQUEST_TTL);
        let mut request = self.http.post(url).header("content-type", content_type);
        if self.config.bind_checksum {
            request = request.header("x-amz-checksum-algorithm", "SHA256");
        }
        let (status, body) = self.send("create multipart upload", request).await?;
        if !status.is_success() {
            return Err(store_error("create multipart upload", status, &body));
        }
        let created = CreateMultipartUpload::parse_response(&body).map_err(|e| {
            BackendError::Unavailable(format!("create multipart upload: unreadable answer: {e}"))
        })?;
        Ok(UploadId::new(created.upload_id()))
    }

    fn sign_part(&self, spec: &PartSpec) -> Result<SignedRequest, BackendError> {
        let number = part_number(spec.number)?;
        let put = self.signer_bucket.upload_part(
            Some(&self.credentials),
            spec.key.as_str(),
            number,
            spec.upload.as_str(),
        );
        let length = spec.size.to_string();
        let checksum = spec.sha256.to_base64();
        let mut headers = vec![("content-length", length.as_str())];
        if self.config.bind_checksum {
            headers.push(("x-amz-checksum-sha256", checksum.as_str()));
        }
        presigned_put(put, &headers, spec.expires_at)
    }

    async fn list_parts(
        &self,
        key: &ObjectKey,
        upload: &UploadId,
    ) -> Result<Vec<StoredPart>, BackendError> {
        let mut parts = Vec::new();
        let mut marker: Option<u16> = None;
        loop {
            let mut list = self.internal_bucket.list_parts(
                Some(&self.credentials),
                key.as_str(),
                upload.as_str(),
            );
            list.set_max_parts(LIST_PAGE);
            if let Some(marker) = marker {
                list.set_part_number_marker(marker);
            }
            let url = list.sign(OWN_REQUEST_TTL);
            let (status, body) = self.send("list parts", self.http.get(url)).await?;
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err(BackendError::Refused(format!(
                    "multipart upload {} does not exist",
                    upload.as_str()
                )));
            }
            if !status.is_success() {
                return Err(store_error("list parts", status, &body));
            }
            let page: ListPartsResult = quick_xml::de::from_str(&body).map_err(|e| {
                BackendError::Unavailable(format!("list parts: unreadable answer: {e}"))
            })?;
            parts.extend(page.parts.into_iter().map(|p| StoredPart {
                number: p.number,
                size: p.size,
                etag: Some(p.etag),
            }));
            match page.next_part_number_marker {
                Some(next) if page.is_truncated => marker = Some(next),
                _ => break,
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload: &UploadId,
        parts: &[PartToAssemble],
    ) -> Result<(), BackendError> {
        let stored = self.list_parts(key, upload).await?;
        let mut body = String::from("<CompleteMultipartUpload>");
        for part in parts {
            let etag = stored
                .iter()
                .find(|s| s.number == part.number)
                .and_then(|s| s.etag.as_deref())
                .ok_or_else(|| BackendError::Refused(format!("part {} is missing", part.number)))?;
            let checksum = if self.config.bind_checksum {
                format!(
                    "<ChecksumSHA256>{}</ChecksumSHA256>",
                    part.sha256.to_base64()
                )
            } else {
                String::new()
            };
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>{checksum}</Part>",
                part.number,
                quick_xml::escape::escape(etag),
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let complete = CompleteMultipartUpload::new(
            &self.internal_bucket,
            Some(&self.credentials),
            key.as_str(),
            upload.as_str(),
            std::iter::empty::<&str>(),
        );
        let url = complete.sign(OWN_REQUEST_TTL);
        let request = self
            .http
            .post(url)
            .header("content-type", "application/xml")
            .body(body);
        let (status, answer) = self.send("complete multipart upload", request).await?;
        // S3 may answer 200 and still report an error in the body.
        if !status.is_success() || answer.contains("<Error>") {
            return Err(store_error("complete multipart upload", status, &answer));
        }
        Ok(())
    }

    async fn abort_multipart(
        &self,
        key: &ObjectKey,
        upload: &UploadId,
    ) -> Result<(), BackendError> {
        let url = self
            .internal_bucket
            .abort_multipart_upload(Some(&self.credentials), key.as_str(), upload.as_str())
            .sign(OWN_REQUEST_TTL);
        let (status, body) = self
            .send("abort multipart upload", self.http.delete(url))
            .await?;
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(store_error("abort multipart upload", status, &body))
        }
    }
}

/// The answer to `ListParts` (only what valet reads).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPartsResult {
    #[serde(default, rename = "Part")]
    parts: Vec<ListedPart>,
    #[serde(default)]
    is_truncated: bool,
    next_part_number_marker: Option<u16>,
}

/// One part in a `ListParts` answer.
#[derive(Deserialize)]
struct ListedPart {
    #[serde(rename = "PartNumber")]
    number: u32,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "ETag")]
    etag: String,
}

/// S3 numbers parts 1 to 10,000.
fn part_number(number: u32) -> Result<u16, BackendError> {
    u16::try_from(number)
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| BackendError::Refused(format!("part number {number} is not 1 to 10000")))
}

/// An S3 error answer: client errors (4xx) are refusals, the rest outages.
fn store_error(what: &str, status: reqwest::StatusCode, body: &str) -> BackendError {
    let code = body
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
        .unwrap_or("");
    let message = format!("{what}: {status} {code}");
    if status.is_client_error() || (status.is_success() && !code.is_empty()) {
        BackendError::Refused(message)
    } else {
        BackendError::Unavailable(message)
    }
}
