//! How the process treats what it writes: the server keeps its data owner-only, and
//! a command whose output is closed ends quietly.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use tempfile::TempDir;

use crate::helpers::{mint_device_token, random_bytes, upload, Server};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn the_server_keeps_its_data_owner_only() {
    let dir = TempDir::new().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    fs::write(dir.path().join("f.bin"), random_bytes(1000)).expect("write");
    upload(dir.path(), &server, &token, "f.bin");

    let data = dir.path().join("valet-data");
    assert_eq!(mode(&data), 0o700, "data directory");
    let files = files_under(&data);
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "db")),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.components().any(|c| c.as_os_str() == "objects")),
        "{files:?}"
    );
    for file in files {
        assert_eq!(
            mode(&file) & 0o077,
            0,
            "{} is readable by others",
            file.display()
        );
    }
}

#[test]
fn a_closed_output_ends_a_command_quietly() {
    let dir = TempDir::new().expect("temp dir");
    for _ in 0..5 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
            .args(["config", "schema"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // The reader goes away before the schema is written, as `| head -1` can.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_ne!(output.status.code(), Some(101), "{stderr}");
    }
}
