//! The resume state of an upload in parts: a small JSON file beside the input,
//! `<FILE>.valet-upload`, written (atomically) as soon as the file is created and
//! removed when the upload ends, so running the same command again continues the
//! same upload.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// Suffix of the state file's name.
pub(super) const SUFFIX: &str = ".valet-upload";
/// Version of the state file's format.
const VERSION: u32 = 1;

/// What identifies an interrupted upload in parts and the input it was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ResumeState {
    /// Format version.
    pub version: u32,
    /// valet's base URL the file was created at.
    pub server: String,
    /// The file being uploaded.
    pub file_id: String,
    /// The input's length.
    pub size: u64,
    /// The input's SHA-256 (hex), as declared at creation.
    pub sha256: String,
    /// Length of every part but the last.
    pub part_size: u64,
    /// The input's modification time when it was hashed.
    pub mtime: DateTime<Utc>,
}

/// The input file as found now: what a state must match to be resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Input {
    /// Length in bytes.
    pub size: u64,
    /// Modification time, when the platform reports one.
    pub mtime: Option<DateTime<Utc>>,
}

impl Input {
    /// Length and modification time of `path`.
    pub(super) async fn of(path: &Path) -> anyhow::Result<Self> {
        let meta = tokio::fs::metadata(path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        if !meta.is_file() {
            anyhow::bail!("{} is not a file", path.display());
        }
        Ok(Self {
            size: meta.len(),
            mtime: meta.modified().ok().map(DateTime::<Utc>::from),
        })
    }
}

/// Why a state file is not resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mismatch {
    /// It was written for another valet.
    OtherServer,
    /// The input's length or modification time changed.
    InputChanged,
}

impl ResumeState {
    /// The state for `file_id`, created at `server` from `input`; `None` when the
    /// platform reports no modification time (a change could not be noticed).
    pub(super) fn new(
        server: &url::Url,
        file_id: &str,
        input: &Input,
        sha256: &str,
        part_size: u64,
    ) -> Option<Self> {
        Some(Self {
            version: VERSION,
            server: server.as_str().to_owned(),
            file_id: file_id.to_owned(),
            size: input.size,
            sha256: sha256.to_owned(),
            part_size,
            mtime: input.mtime?,
        })
    }

    /// Whether this state continues an upload of `input` to `server`.
    pub(super) fn check(&self, server: &url::Url, input: &Input) -> Result<(), Mismatch> {
        if self.server != server.as_str() {
            return Err(Mismatch::OtherServer);
        }
        if self.version != VERSION || self.size != input.size || Some(self.mtime) != input.mtime {
            return Err(Mismatch::InputChanged);
        }
        Ok(())
    }
}

/// Where the state of an upload of `input` is kept.
pub(super) fn state_path(input: &Path) -> anyhow::Result<PathBuf> {
    let name = input
        .file_name()
        .with_context(|| format!("{} has no file name", input.display()))?;
    let mut name = name.to_os_string();
    name.push(SUFFIX);
    Ok(input.with_file_name(name))
}

/// The state at `path`: `None` when there is none, or it cannot be read (it is
/// then reported and ignored: the upload starts over).
pub(super) async fn load(path: &Path) -> Option<ResumeState> {
    let text = match tokio::fs::read(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            eprintln!(
                "cannot read {} ({e}); starting a new upload",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_slice(&text) {
        Ok(state) => Some(state),
        Err(e) => {
            eprintln!(
                "{} is not an upload state ({e}); starting a new upload",
                path.display()
            );
            None
        }
    }
}

/// Writes `state` to `path` atomically: a temporary file beside it, synced, then
/// renamed over it.
pub(super) async fn save(path: &Path, state: &ResumeState) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(state)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    tmp_name.push(format!(".{}-{nonce}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(&json).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Removes the state at `path` (the upload ended); a state already gone is fine.
pub(super) async fn remove(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("cannot remove {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Input {
        Input {
            size: 42,
            mtime: Some(DateTime::<Utc>::from(SystemTime::UNIX_EPOCH)),
        }
    }

    #[test]
    fn a_state_matches_only_the_same_server_and_unchanged_input() {
        let server = url::Url::parse("http://127.0.0.1:8080").expect("url");
        let state = ResumeState::new(&server, "id", &input(), "ab", 5).expect("mtime");
        assert_eq!(state.check(&server, &input()), Ok(()));
        let other = url::Url::parse("http://127.0.0.1:8081").expect("url");
        assert_eq!(state.check(&other, &input()), Err(Mismatch::OtherServer));
        let grown = Input {
            size: 43,
            ..input()
        };
        assert_eq!(state.check(&server, &grown), Err(Mismatch::InputChanged));
        let touched = Input {
            mtime: Some(DateTime::<Utc>::from(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(1),
            )),
            ..input()
        };
        assert_eq!(state.check(&server, &touched), Err(Mismatch::InputChanged));
    }

    #[test]
    fn the_state_file_sits_beside_the_input() {
        assert_eq!(
            state_path(Path::new("dir/dump.bin")).expect("path"),
            Path::new("dir/dump.bin.valet-upload")
        );
    }

    #[test]
    fn saved_states_load_back() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("f.valet-upload");
        let server = url::Url::parse("http://127.0.0.1:8080").expect("url");
        let state = ResumeState::new(&server, "id", &input(), "ab", 5).expect("mtime");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            save(&path, &state).await.expect("saved");
            assert_eq!(load(&path).await, Some(state));
            remove(&path).await;
            assert_eq!(load(&path).await, None);
        });
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "no temporary file is left behind"
        );
    }
}
