//! Shared helpers: running the `valet` binary, reading key files, and spawning
//! `valet serve` on a free port.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long a spawned server may take to answer `/healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables that would change what the binary does; removed so the
/// tests do not depend on the environment they run in.
fn valet_env_vars() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.to_string_lossy().starts_with("VALET_") || k == "RUST_LOG")
        .collect()
}

/// `valet` with `dir` as working directory and a clean `VALET_*` environment.
pub fn valet(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("valet").expect("the valet binary is built");
    cmd.current_dir(dir).timeout(Duration::from_secs(120));
    for key in valet_env_vars() {
        cmd.env_remove(key);
    }
    cmd
}

/// What a finished command wrote.
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn output_of(assert: assert_cmd::assert::Assert) -> Output {
    let out = assert.get_output();
    Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `cmd`, asserting it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    output_of(cmd.assert().success())
}

/// Runs `cmd`, asserting it fails (non-zero exit, not a crash by signal).
pub fn run_err(cmd: &mut Command) -> Output {
    let assert = cmd.assert().failure();
    assert!(
        assert.get_output().status.code().is_some(),
        "valet was killed by a signal: {:?}",
        assert.get_output()
    );
    output_of(assert)
}

/// A key file written by `valet keys generate` (or the server's dev key).
pub struct KeyFile {
    pub id: u64,
    /// The private key without its `ed25519-private/` prefix.
    pub private_hex: String,
    /// `ed25519/<hex>`.
    pub public_key: String,
}

pub fn read_key_file(path: &Path) -> KeyFile {
    let text = fs::read_to_string(path).expect("key file is readable");
    let table: toml::Table = toml::from_str(&text).expect("key file is TOML");
    let private = table["private_key"]
        .as_str()
        .expect("private_key is a string");
    let private_hex = private
        .strip_prefix("ed25519-private/")
        .expect("private key has the ed25519-private/ prefix")
        .to_owned();
    assert_eq!(private_hex.len(), 64, "private key is 32 bytes of hex");
    assert!(private_hex.bytes().all(|b| b.is_ascii_hexdigit()));
    let public_key = table["public_key"]
        .as_str()
        .expect("public_key is a string")
        .to_owned();
    assert!(public_key.starts_with("ed25519/"), "{public_key}");
    let id = u64::try_from(table["id"].as_integer().expect("id is an integer"))
        .expect("id is not negative");
    KeyFile {
        id,
        private_hex,
        public_key,
    }
}

/// `n` bytes that do not compress and differ on each run.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let seed = format!(
        "{:?}-{}-{:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    let mut out = Vec::with_capacity(n + 32);
    let mut counter = 0u64;
    while out.len() < n {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(n);
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// The status code of `GET path` on 127.0.0.1:`port`, if anything answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A running `valet serve`, killed when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
}

impl Server {
    /// Starts `valet serve` in `dir` (its own `./valet-data`) with `extra_env`, and
    /// waits until it answers `/healthz`.
    pub fn start(dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        // The free port may be taken between probing and binding (other tests run in
        // parallel): a server that cannot listen is retried on another port.
        let mut last_failure = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self::spawn(dir, port, extra_env);
            match server.wait_until_ready() {
                Ok(()) => return server,
                Err(logs) if logs.contains("cannot listen on") => {
                    last_failure = logs;
                    // Start the next attempt from a clean first start.
                    match fs::remove_dir_all(dir.join("valet-data")) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => panic!("cannot clean valet-data: {e}"),
                    }
                }
                Err(logs) => panic!("valet serve did not start:\n{logs}"),
            }
        }
        panic!("valet serve could not get a port:\n{last_failure}");
    }

    fn spawn(dir: &Path, port: u16, extra_env: &[(&str, &str)]) -> Self {
        let stdout_log = dir.join("serve.stdout.log");
        let stderr_log = dir.join("serve.stderr.log");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valet"));
        cmd.arg("serve")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_log).expect("create stdout log"))
            .stderr(fs::File::create(&stderr_log).expect("create stderr log"));
        for key in valet_env_vars() {
            cmd.env_remove(key);
        }
        cmd.env("VALET_SERVER__BIND", format!("127.0.0.1:{port}"));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn valet serve");
        Self {
            child: Some(child),
            port,
            stdout_log,
            stderr_log,
        }
    }

    /// Ready means: `/healthz` answers 200 *and* this process logged that it is
    /// listening (so the 200 did not come from another test's server on a port
    /// that was taken in between). On early exit, the logs are returned.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let startup_timeout = crate::patience::patience(STARTUP_TIMEOUT);
        let deadline = Instant::now() + startup_timeout;
        loop {
            let child = self.child.as_mut().expect("server is running");
            if let Some(status) = child.try_wait().expect("poll valet serve") {
                self.child = None;
                return Err(format!("exited with {status}\n{}", self.logs()));
            }
            if http_status(self.port, "/healthz") == Some(200)
                && self.logs().contains("valet is listening")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "no 200 from /healthz within {startup_timeout:?}\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let read = |p: &Path| fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
        format!(
            "{}{}",
            read(&self.stdout_log).unwrap_or_default(),
            read(&self.stderr_log).unwrap_or_default()
        )
    }

    /// Sends `signal` (a name such as `TERM` or `KILL`) to the running server.
    pub fn send_signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let killed = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
    }

    /// Kills the server and waits for it to exit (idempotent).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn mint_device_token(dir: &Path, tenant: &str, device: &str) -> String {
    let out = run_ok(valet(dir).args([
        "token", "mint", "--tenant", tenant, "--device", device, "--ttl", "1h",
    ]));
    let token = out.stdout.trim().to_owned();
    assert!(!token.is_empty(), "no token printed: {}", out.all());
    assert_eq!(out.stdout.lines().count(), 1, "one line: {}", out.stdout);
    token
}

/// `valet upload` as a device would; returns the File JSON.
pub fn upload(dir: &Path, server: &Server, token: &str, file: &str) -> (Value, Output) {
    let out = run_ok(valet(dir).args(["upload", file, "--url", &server.url(), "--token", token]));
    let json: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("upload printed no JSON ({e}):\n{}", out.all()));
    (json, out)
}
