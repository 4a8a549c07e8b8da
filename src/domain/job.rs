//! Jobs: server-side copies and moves of a file's object from one backend to
//! another, worked in the background by the `Mover` of some instance.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{File, FileId, ObjectKey, TenantId};

super::ids::time_ordered_id!(
    /// A job's id: a UUIDv7, so ids sort by creation time.
    JobId,
    "a job"
);

super::ids::time_ordered_id!(
    /// The id of the jobs created together by one selector.
    JobGroupId,
    "a group of jobs"
);

/// What a job does with the file's object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Put a verified copy on the target and record it as a replica.
    Copy,
    /// Copy, then make the target the file's backend; the source goes after a grace period.
    Move,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker (again, after a failed attempt, once its backoff is over).
    Created,
    /// Claimed by a worker.
    Scheduled,
    /// Bytes are streaming from the source to the target.
    Copying,
    /// Every byte is on the target; valet is checking the copy.
    Verifying,
    /// Done: the copy is verified and recorded.
    Succeeded,
    /// Given up after its last attempt.
    Failed,
    /// Cancelled; whatever reached the target was removed.
    Cancelled,
}

super::stored_names::stored_names!(JobKind, "job kind" { Copy => "copy", Move => "move" });
super::stored_names::stored_names!(JobState, "job state" {
    Created => "created",
    Scheduled => "scheduled",
    Copying => "copying",
    Verifying => "verifying",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
});

impl JobState {
    /// A state the job never leaves.
    pub const fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// A state in which a worker holds the job.
    pub const fn is_running(&self) -> bool {
        matches!(
            self,
            JobState::Scheduled | JobState::Copying | JobState::Verifying
        )
    }

    /// Every state, for metrics.
    pub const ALL: [JobState; 7] = [
        JobState::Created,
        JobState::Scheduled,
        JobState::Copying,
        JobState::Verifying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];
}

/// A job as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Job {
    /// UUIDv7 assigned at creation.
    #[schema(value_type = String, format = Uuid)]
    pub id: JobId,
    /// The selector request that created it with others; `null` for a single job.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub group_id: Option<JobGroupId>,
    /// Tenant of the file.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// Copy or move.
    pub kind: JobKind,
    /// The file whose object is copied.
    #[schema(value_type = String, format = Uuid)]
    pub file_id: FileId,
    /// Backend the object is copied from.
    pub source_backend: String,
    /// Backend the object is copied to.
    pub target_backend: String,
    /// Where the job is.
    pub state: JobState,
    /// Size of the object.
    pub bytes_total: u64,
    /// Bytes written to the target by the current (or last) attempt.
    pub bytes_done: u64,
    /// Attempts started so far.
    pub attempts: u32,
    /// A cancel was asked for and the worker has not stopped yet.
    pub cancel_requested: bool,
    /// When the job was created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Why the last attempt failed; absent while none has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The object's key (the same on source and target).
    #[serde(skip)]
    pub object_key: ObjectKey,
}

impl Job {
    /// Changes `file` as this job's success does: a replica on the target (copy),
    /// or the target as its backend (move; a replica there is no longer one).
    pub fn apply_success(&self, file: &mut File) {
        file.replicas.retain(|r| r.backend != self.target_backend);
        match self.kind {
            JobKind::Copy => file.replicas.push(Replica {
                backend: self.target_backend.clone(),
                key: self.object_key.to_string(),
            }),
            JobKind::Move => file.backend = self.target_backend.clone(),
        }
    }
}

/// A copy of a file's object on another backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Replica {
    /// Backend holding the copy.
    pub backend: String,
    /// The object's key there.
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_classify() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
            assert!(!(state.is_final() && state.is_running()));
        }
        assert!(JobState::Cancelled.is_final());
        assert!(JobState::Copying.is_running());
        assert!(!JobState::Created.is_running());
        assert_eq!("move".parse::<JobKind>(), Ok(JobKind::Move));
        assert!("rename".parse::<JobKind>().is_err());
    }
}
