//! `valet jobs …`: an operator's commands for the jobs that copy and move files
//! between storage backends (service tokens only).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::ApiClient;

/// The states a job ends in; it never leaves them.
pub const FINISHED_STATES: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// Every state of a job, in the order a job goes through them.
pub const JOB_STATES: [&str; 7] = [
    "created",
    "scheduled",
    "copying",
    "verifying",
    "succeeded",
    "failed",
    "cancelled",
];

/// Jobs asked per page when listing (every server accepts at least this many).
const PAGE_SIZE: u32 = 100;

/// Which files a group of jobs covers: the uploaded files of the token's tenant
/// that match every given field.
#[derive(Debug, Clone, Default)]
pub struct JobSelector {
    /// Only files on this backend.
    pub backend: Option<String>,
    /// Only files of this device's root.
    pub device_id: Option<String>,
    /// Only files created before this instant (RFC 3339).
    pub created_before: Option<String>,
}

/// What `POST /v1/jobs` created.
#[derive(Debug, Clone)]
pub enum CreatedJobs {
    /// One job, for one file.
    One(Value),
    /// A group of jobs (possibly empty), for the files a selector matched.
    Group {
        /// The group's id.
        group_id: String,
        /// Its jobs.
        jobs: Vec<Value>,
    },
}

impl CreatedJobs {
    /// The jobs created.
    pub fn jobs(&self) -> Vec<&Value> {
        match self {
            Self::One(job) => vec![job],
            Self::Group { jobs, .. } => jobs.iter().collect(),
        }
    }
}

/// Whether `job` is in a state it never leaves.
pub fn is_finished(job: &Value) -> bool {
    job["state"]
        .as_str()
        .is_some_and(|state| FINISHED_STATES.contains(&state))
}

/// How many of `jobs` are in each state, in the order jobs go through them, e.g.
/// `2 copying, 1 succeeded`.
pub fn count_by_state(jobs: &[Value]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for job in jobs {
        *counts
            .entry(job["state"].as_str().unwrap_or("unknown"))
            .or_default() += 1;
    }
    let mut parts: Vec<String> = JOB_STATES
        .iter()
        .filter_map(|state| counts.remove(state).map(|n| format!("{n} {state}")))
        .collect();
    // A state this client does not know of is still counted, after the known ones.
    parts.extend(counts.into_iter().map(|(state, n)| format!("{n} {state}")));
    if parts.is_empty() {
        "no jobs".to_owned()
    } else {
        parts.join(", ")
    }
}

/// One line describing `job`: id, kind, file, source → target, state, bytes done of
/// the total, attempts, and the last error if any.
pub fn job_line(job: &Value) -> String {
    let text = |field: &str| match &job[field] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let mut line = format!(
        "{} {} {} {} → {} {} {}/{} attempts={}",
        text("id"),
        text("kind"),
        text("file_id"),
        text("source_backend"),
        text("target_backend"),
        text("state"),
        text("bytes_done"),
        text("bytes_total"),
        text("attempts"),
    );
    if job["cancel_requested"] == Value::Bool(true) && !is_finished(job) {
        line.push_str(" cancel_requested");
    }
    if let Some(error) = job["error"].as_str() {
        line.push_str(&format!(" error={error:?}"));
    }
    line
}

impl ApiClient {
    /// `POST /v1/jobs` for one file: a `kind` ("copy" or "move") job to `target`.
    pub async fn create_file_job(
        &self,
        kind: &str,
        file_id: &str,
        target: &str,
    ) -> anyhow::Result<CreatedJobs> {
        let body = json!({ "kind": kind, "file_id": file_id, "target_backend": target });
        let created = self
            .api(
                self.http.post(self.url("/v1/jobs")?).json(&body),
                "create job",
            )
            .await?;
        let job = created
            .get("job")
            .cloned()
            .context("no job in the answer")?;
        Ok(CreatedJobs::One(job))
    }

    /// `POST /v1/jobs` with a selector: one `kind` job to `target` per uploaded
    /// file of the tenant that `selector` matches and is not on `target` yet.
    pub async fn create_group_jobs(
        &self,
        kind: &str,
        selector: &JobSelector,
        target: &str,
    ) -> anyhow::Result<CreatedJobs> {
        let mut fields = serde_json::Map::new();
        if let Some(backend) = &selector.backend {
            fields.insert("backend".into(), json!(backend));
        }
        if let Some(device_id) = &selector.device_id {
            fields.insert("device_id".into(), json!(device_id));
        }
        if let Some(created_before) = &selector.created_before {
            fields.insert("created_before".into(), json!(created_before));
        }
        let body = json!({ "kind": kind, "selector": fields, "target_backend": target });
        let created = self
            .api(
                self.http.post(self.url("/v1/jobs")?).json(&body),
                "create jobs",
            )
            .await?;
        let group_id = created["group_id"]
            .as_str()
            .context("no group_id in the answer")?
            .to_owned();
        let jobs = created["jobs"]
            .as_array()
            .context("no jobs in the answer")?
            .clone();
        Ok(CreatedJobs::Group { group_id, jobs })
    }

    /// The tenant the token belongs to, as the API shows it on the token's files:
    /// `None` when that cannot be told (the tenant has no file, or listing is
    /// refused).
    pub async fn token_tenant(&self, file_id: Option<&str>) -> Option<String> {
        let file = match file_id {
            Some(id) => self.get_file(id).await.ok()?,
            None => {
                let mut url = self.url("/v1/files").ok()?;
                url.query_pairs_mut().append_pair("limit", "1");
                let page = self.api(self.http.get(url), "list files").await.ok()?;
                page["files"].as_array()?.first()?.clone()
            }
        };
        file["tenant_id"].as_str().map(str::to_owned)
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        let answer = self
            .api(
                self.http.get(self.url(&format!("/v1/jobs/{id}"))?),
                "get job",
            )
            .await?;
        answer.get("job").cloned().context("no job in the answer")
    }

    /// Every job of the tenant, newest first (all pages), optionally only those in
    /// `state` and of group `group_id`.
    pub async fn jobs(
        &self,
        state: Option<&str>,
        group_id: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let limit = PAGE_SIZE.to_string();
        let mut filters = vec![("limit", limit.as_str())];
        filters.extend(state.map(|state| ("state", state)));
        filters.extend(group_id.map(|group_id| ("group_id", group_id)));
        self.all_pages("/v1/jobs", &filters, "jobs", "list jobs")
            .await
    }

    /// `GET /v1/jobs/{id}/log`: the job's log, one line per step.
    pub async fn job_log(&self, id: &str) -> anyhow::Result<String> {
        let what = "get job log";
        let response = self
            .send(
                self.http.get(self.url(&format!("/v1/jobs/{id}/log"))?),
                what,
            )
            .await?;
        if !response.status().is_success() {
            return Err(super::failure(what, response).await);
        }
        response
            .text()
            .await
            .with_context(|| format!("{what}: the answer could not be read"))
    }

    /// `POST /v1/jobs/{id}/cancel`: the job as the answer shows it.
    pub async fn cancel_job(&self, id: &str) -> anyhow::Result<Value> {
        let answer = self
            .api(
                self.http.post(self.url(&format!("/v1/jobs/{id}/cancel"))?),
                "cancel job",
            )
            .await?;
        answer.get("job").cloned().context("no job in the answer")
    }

    /// Polls the jobs `created` until every one is finished, reporting the counts by
    /// state on stderr whenever they change; returns the jobs as they ended.
    pub async fn wait_for_jobs(
        &self,
        created: &CreatedJobs,
        interval: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let mut last_report = String::new();
        loop {
            let jobs = match created {
                CreatedJobs::One(job) => {
                    let id = job["id"].as_str().context("the job has no id")?;
                    vec![self.job(id).await?]
                }
                // An empty group has nothing to wait for.
                CreatedJobs::Group { jobs, .. } if jobs.is_empty() => Vec::new(),
                CreatedJobs::Group { group_id, .. } => self.jobs(None, Some(group_id)).await?,
            };
            let report = progress_report(&jobs);
            if report != last_report {
                eprintln!("{report}");
                last_report = report;
            }
            if jobs.iter().all(is_finished) {
                let expected = created.jobs().len();
                if jobs.len() != expected {
                    bail!(
                        "the group lists {} jobs, {expected} were created",
                        jobs.len()
                    );
                }
                return Ok(jobs);
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// The counts by state and the bytes copied so far, e.g.
/// `2 copying, 1 succeeded; 3145728/6291456 bytes`.
fn progress_report(jobs: &[Value]) -> String {
    let done: u64 = jobs.iter().filter_map(|j| j["bytes_done"].as_u64()).sum();
    let total: u64 = jobs.iter().filter_map(|j| j["bytes_total"].as_u64()).sum();
    format!("{}; {done}/{total} bytes", count_by_state(jobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_order_of_the_states() {
        let jobs = [
            json!({"state": "succeeded"}),
            json!({"state": "copying"}),
            json!({"state": "succeeded"}),
            json!({"state": "paused"}),
        ];
        assert_eq!(count_by_state(&jobs), "1 copying, 2 succeeded, 1 paused");
        assert_eq!(count_by_state(&[]), "no jobs");
    }

    #[test]
    fn a_line_shows_a_waiting_retry_and_its_error() {
        let job = json!({
            "id": "j1", "kind": "move", "file_id": "f1", "source_backend": "local",
            "target_backend": "local2", "state": "created", "bytes_done": 0,
            "bytes_total": 10, "attempts": 1, "cancel_requested": false,
            "error": "store unavailable"
        });
        assert_eq!(
            job_line(&job),
            "j1 move f1 local → local2 created 0/10 attempts=1 error=\"store unavailable\""
        );
        assert!(!is_finished(&job));
        assert!(is_finished(&json!({"state": "cancelled"})));
    }
}
