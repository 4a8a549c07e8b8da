//! Multipart uploads on Azure: parts are blocks of a block blob. A device stages
//! each block with `Put Block` under a SAS that may only write that blob (a SAS
//! cannot bind a length or hash: a device that sends `Content-MD5` gets wrong bytes
//! refused by Azure, and completion verifies the whole file in every case); valet
//! lists the uncommitted blocks (`Get Block List`) to resume, and commits them in
//! order with `Put Block List`.

use async_trait::async_trait;
use base64::Engine;
use chrono::{Duration, Utc};

use super::sas::BlobSas;
use super::{AzblobBackend, CLOCK_SKEW_MINUTES};
use crate::{
    BackendError, Multipart, ObjectKey, PartSpec, PartToAssemble, SignedRequest, StoredPart,
    UploadId,
};

/// Lifetime of the SAS valet signs for its own requests.
const OWN_REQUEST_MINUTES: i64 = 5;

/// The block id of part `number` of `upload`: the same length for every part of a
/// blob, as Azure requires.
fn block_id(upload: &UploadId, number: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{}-{number:05}", upload.as_str()))
}

/// The part number a block id of `upload` stands for.
fn part_of(upload: &UploadId, block: &str) -> Option<u32> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(block)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let number = text.strip_prefix(upload.as_str())?.strip_prefix('-')?;
    number.parse().ok()
}

impl AzblobBackend {
    fn sas<'a>(
        &'a self,
        key: &'a ObjectKey,
        permissions: &'a str,
        expiry: chrono::DateTime<Utc>,
    ) -> BlobSas<'a> {
        BlobSas {
            account: &self.config.account,
            container: &self.config.container,
            blob: key.as_str(),
            permissions,
            start: Utc::now() - Duration::minutes(CLOCK_SKEW_MINUTES),
            expiry,
            protocol: self.protocol(),
            content_disposition: None,
            content_type: None,
        }
    }

    /// A URL of valet's own to `key` with `operation` query pairs, under a short SAS.
    fn own_url(
        &self,
        key: &ObjectKey,
        permissions: &str,
        operation: &[(&str, &str)],
    ) -> Result<url::Url, BackendError> {
        let expiry = Utc::now() + Duration::minutes(OWN_REQUEST_MINUTES);
        let sas = self.sas(key, permissions, expiry);
        let mut url = self.blob_url_at(&self.internal_endpoint, key, &sas)?;
        url.query_pairs_mut().extend_pairs(operation);
        Ok(url)
    }
}

#[async_trait]
impl Multipart for AzblobBackend {
    async fn start_multipart(
        &self,
        _key: &ObjectKey,
        _content_type: &str,
    ) -> Result<UploadId, BackendError> {
        // Azure has no upload to create: blocks are staged on the blob itself, and
        // the id only names this upload's blocks.
        Ok(UploadId::random())
    }

    fn sign_part(&self, spec: &PartSpec) -> Result<SignedRequest, BackendError> {
        let sas = self.sas(&spec.key, "w", spec.expires_at);
        let mut url = self.blob_url(&spec.key, &sas)?;
        url.query_pairs_mut()
            .append_pair("comp", "block")
            .append_pair("blockid", &block_id(&spec.upload, spec.number));
        Ok(SignedRequest {
            method: "PUT".into(),
            url: url.to_string(),
            headers: [("content-length".to_owned(), spec.size.to_string())].into(),
            expires_at: spec.expires_at,
        })
    }

    async fn list_parts(
        &self,
        key: &ObjectKey,
        upload: &UploadId,
    ) -> Result<Vec<StoredPart>, BackendError> {
        let url = self.own_url(
            key,
            "r",
            &[("comp", "blocklist"), ("blocklisttype", "uncommitted")],
        )?;
        let response = self
            .http
            .get(url)
            .header("x-ms-version", super::sas::VERSION)
            .send()
            .await
            .map_err(|e| BackendError::Unavailable(format!("get block list: {e}")))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| BackendError::Unavailable(format!("get block list: {e}")))?;
        // No block staged yet: the blob does not exist.
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(BackendError::Unavailable(format!(
                "get block list: {status}"
            )));
        }
        let mut parts: Vec<StoredPart> = element_texts(&body, "Block")
            .into_iter()
            .filter_map(|block| {
                let name = element_texts(block, "Name").into_iter().next()?;
                let size = element_texts(block, "Size")
                    .into_iter()
                    .next()?
                    .parse()
                    .ok()?;
                Some(StoredPart {
                    number: part_of(upload, name)?,
                    size,
                    etag: None,
                })
            })
            .collect();
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload: &UploadId,
        parts: &[PartToAssemble],
    ) -> Result<(), BackendError> {
        let mut body = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for part in parts {
            body.push_str(&format!(
                "<Uncommitted>{}</Uncommitted>",
                block_id(upload, part.number)
            ));
        }
        body.push_str("</BlockList>");
        let url = self.own_url(key, "w", &[("comp", "blocklist")])?;
        let response = self
            .http
            .put(url)
            .header("x-ms-version", super::sas::VERSION)
            .header("content-type", "application/xml")
            // Never replace an object that already exists, as single uploads.
            .header("if-none-match", "*")
            .body(body)
            .send()
            .await
            .map_err(|e| BackendError::Unavailable(format!("put block list: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let detail = response.text().await.unwrap_or_default();
        let code = element_texts(&detail, "Code")
            .into_iter()
            .next()
            .unwrap_or("");
        let message = format!("put block list: {status} {code}");
        Err(if status.is_client_error() {
            BackendError::Refused(message)
        } else {
            BackendError::Unavailable(message)
        })
    }

    async fn abort_multipart(
        &self,
        _key: &ObjectKey,
        _upload: &UploadId,
    ) -> Result<(), BackendError> {
        // Uncommitted blocks cannot be deleted one by one; Azure discards them a
        // week after the last block was staged if no block list commits them.
        Ok(())
    }
}

/// The contents of every `<name>…</name>` element in `xml` (Azure's block list
/// answers carry no attributes, namespaces or entities in these elements).
fn element_texts<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_have_one_length_and_map_back_to_their_part() {
        let upload = UploadId::new("0123456789abcdef0123456789abcdef");
        let ids: Vec<String> = [1, 42, 50_000]
            .iter()
            .map(|n| block_id(&upload, *n))
            .collect();
        assert!(ids.iter().all(|id| id.len() == ids[0].len()));
        assert_eq!(part_of(&upload, &ids[1]), Some(42));
        assert_eq!(part_of(&UploadId::new("other"), &ids[1]), None);
    }

    #[test]
    fn block_list_answers_are_read() {
        let xml = "<BlockList><UncommittedBlocks><Block><Name>QQ==</Name><Size>5</Size></Block>\
                   <Block><Name>Qg==</Name><Size>7</Size></Block></UncommittedBlocks></BlockList>";
        let blocks = element_texts(xml, "Block");
        assert_eq!(blocks.len(), 2);
        assert_eq!(element_texts(blocks[1], "Size"), vec!["7"]);
    }
}
