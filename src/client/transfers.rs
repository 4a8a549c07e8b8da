//! `valet send`, `valet inbox` and `valet receive`: transfers between devices.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use super::ApiClient;

impl ApiClient {
    /// Offers uploaded file `file_id` to the devices `to`; returns the transfer.
    pub async fn send_file(
        &self,
        file_id: &str,
        to: &[String],
        expires_in_secs: Option<u64>,
    ) -> anyhow::Result<Value> {
        let mut body = json!({ "file_id": file_id, "to": to });
        if let Some(secs) = expires_in_secs {
            body["expires_in_secs"] = json!(secs);
        }
        let created = self
            .api(
                self.http.post(self.url("/v1/transfers")?).json(&body),
                "send",
            )
            .await?;
        created
            .get("transfer")
            .cloned()
            .context("no transfer in the answer")
    }

    /// Every transfer offered to the calling device, newest first (all pages),
    /// optionally only those in which its state is `state`.
    pub async fn inbox(&self, state: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let mut filters = vec![("direction", "in"), ("limit", "1000")];
        filters.extend(state.map(|state| ("state", state)));
        self.all_pages("/v1/transfers", &filters, "transfers", "list transfers")
            .await
    }

    /// Downloads the file of transfer `id` to `output` (checking its length and
    /// SHA-256, resuming what an interrupted run left), then accepts the transfer;
    /// returns the transfer as accepted.
    pub async fn receive(&self, id: &str, output: &Path) -> anyhow::Result<Value> {
        let transfer = self
            .api(
                self.http.get(self.url(&format!("/v1/transfers/{id}"))?),
                "get transfer",
            )
            .await?;
        let file = transfer.get("file").context("no file in the answer")?;
        self.download_signed(file, id, &format!("/v1/transfers/{id}/download"), output)
            .await?;
        self.api(
            self.http
                .post(self.url(&format!("/v1/transfers/{id}/accept"))?),
            "accept",
        )
        .await
    }
}
