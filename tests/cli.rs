//! Black-box tests of the `valet` command line: every test runs the real binary in
//! its own temporary working directory (so the default `./valet-data` is private to
//! the test) and, where a server is needed, spawns `valet serve` on a free port.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// How long a spawned server may take to answer `/healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Environment variables that would change what the binary does; removed so the
/// tests do not depend on the environment they run in.
fn valet_env_vars() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.to_string_lossy().starts_with("VALET_") || k == "RUST_LOG")
        .collect()
}

/// `valet` with `dir` as working directory and a clean `VALET_*` environment.
fn valet(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("valet").expect("the valet binary is built");
    cmd.current_dir(dir).timeout(Duration::from_secs(120));
    for key in valet_env_vars() {
        cmd.env_remove(key);
    }
    cmd
}

/// What a finished command wrote.
struct Output {
    stdout: String,
    stderr: String,
}

impl Output {
    fn all(&self) -> String {
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
fn run_ok(cmd: &mut Command) -> Output {
    output_of(cmd.assert().success())
}

/// Runs `cmd`, asserting it fails (non-zero exit, not a crash by signal).
fn run_err(cmd: &mut Command) -> Output {
    let assert = cmd.assert().failure();
    assert!(
        assert.get_output().status.code().is_some(),
        "valet was killed by a signal: {:?}",
        assert.get_output()
    );
    output_of(assert)
}

/// A key file written by `valet keys generate` (or the server's dev key).
struct KeyFile {
    id: u64,
    /// The private key without its `ed25519-private/` prefix.
    private_hex: String,
    /// `ed25519/<hex>`.
    public_key: String,
}

fn read_key_file(path: &Path) -> KeyFile {
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
fn random_bytes(n: usize) -> Vec<u8> {
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

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
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
struct Server {
    child: Option<Child>,
    port: u16,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
}

impl Server {
    /// Starts `valet serve` in `dir` (its own `./valet-data`) with `extra_env`, and
    /// waits until it answers `/healthz`.
    fn start(dir: &Path, extra_env: &[(&str, &str)]) -> Self {
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
        let deadline = Instant::now() + STARTUP_TIMEOUT;
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
                    "no 200 from /healthz within {STARTUP_TIMEOUT:?}\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the server wrote to stdout and stderr so far.
    fn logs(&self) -> String {
        let read = |p: &Path| fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
        format!(
            "{}{}",
            read(&self.stdout_log).unwrap_or_default(),
            read(&self.stderr_log).unwrap_or_default()
        )
    }

    /// Kills the server and waits for it to exit (idempotent).
    fn stop(&mut self) {
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

fn mint_device_token(dir: &Path, tenant: &str, device: &str) -> String {
    let out = run_ok(valet(dir).args([
        "token", "mint", "--tenant", tenant, "--device", device, "--ttl", "1h",
    ]));
    let token = out.stdout.trim().to_owned();
    assert!(!token.is_empty(), "no token printed: {}", out.all());
    assert_eq!(out.stdout.lines().count(), 1, "one line: {}", out.stdout);
    token
}

/// `valet upload` as a device would; returns the File JSON.
fn upload(dir: &Path, server: &Server, token: &str, file: &str) -> (Value, Output) {
    let out = run_ok(valet(dir).args(["upload", file, "--url", &server.url(), "--token", token]));
    let json: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("upload printed no JSON ({e}):\n{}", out.all()));
    (json, out)
}

// ---------------------------------------------------------------------------
// keys generate
// ---------------------------------------------------------------------------

#[test]
fn keys_generate_writes_private_file_and_prints_only_public_parts() {
    let dir = TempDir::new().expect("temp dir");
    let out =
        run_ok(valet(dir.path()).args(["keys", "generate", "--out", "keys/k.toml", "--id", "7"]));

    let path = dir.path().join("keys/k.toml");
    assert!(path.is_file(), "key file written (parent created)");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path)
            .expect("stat key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode is {:o}", mode & 0o777);
    }
    let key = read_key_file(&path);
    assert_eq!(key.id, 7);

    assert!(out.stdout.contains("key id:     7"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("public key: {}", key.public_key)),
        "{}",
        out.stdout
    );
    let snippet = format!(
        "[[auth.trusted_keys]]\nid = 7\npublic_key = \"{}\"\n",
        key.public_key
    );
    assert!(out.stdout.contains(&snippet), "{}", out.stdout);
    let all = out.all();
    assert!(!all.to_lowercase().contains("private"), "{all}");
    assert!(
        !all.contains(&key.private_hex),
        "private key printed: {all}"
    );
}

#[test]
fn keys_generate_never_overwrites_a_key_file() {
    let dir = TempDir::new().expect("temp dir");
    run_ok(valet(dir.path()).args(["keys", "generate", "--out", "k.toml"]));
    let before = fs::read(dir.path().join("k.toml")).expect("read key");

    let out = run_err(valet(dir.path()).args(["keys", "generate", "--out", "k.toml"]));
    assert!(out.stderr.contains("k.toml"), "{}", out.stderr);
    assert_eq!(
        fs::read(dir.path().join("k.toml")).expect("read key"),
        before,
        "the existing key is untouched"
    );
}

#[test]
fn keys_generate_defaults_to_a_file_named_after_the_id() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_ok(valet(dir.path()).args(["keys", "generate", "--id", "9"]));
    let key = read_key_file(&dir.path().join("valet-root-key-9.toml"));
    assert_eq!(key.id, 9);
    assert!(
        out.stdout.contains("valet-root-key-9.toml"),
        "{}",
        out.stdout
    );
}

#[test]
fn generated_trusted_keys_snippet_is_accepted_by_config_check() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_ok(valet(dir.path()).args(["keys", "generate", "--out", "k.toml", "--id", "11"]));
    let snippet: String = out
        .stdout
        .lines()
        .skip_while(|l| *l != "[[auth.trusted_keys]]")
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!snippet.is_empty(), "no snippet in {}", out.stdout);
    fs::write(
        dir.path().join("valet.toml"),
        format!("[auth]\ndev_key = false\n\n{snippet}"),
    )
    .expect("write config");

    let key = read_key_file(&dir.path().join("k.toml"));
    let check = run_ok(valet(dir.path()).args(["config", "check", "--config", "valet.toml"]));
    assert!(check.stdout.contains(&key.public_key), "{}", check.stdout);
    assert!(check.stdout.contains("dev_key = false"), "{}", check.stdout);
}

// ---------------------------------------------------------------------------
// config check
// ---------------------------------------------------------------------------

#[test]
fn config_check_without_a_file_prints_the_defaults() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_ok(valet(dir.path()).args(["config", "check"]));
    for expected in [
        "bind = \"127.0.0.1:8080\"",
        "data_dir = \"./valet-data\"",
        "default_backend = \"local\"",
        "url = \"sqlite://./valet-data/valet.db\"",
        "dev_key = true",
    ] {
        assert!(
            out.stdout.contains(expected),
            "no {expected:?} in:\n{}",
            out.stdout
        );
    }
    let parsed: toml::Table = toml::from_str(&out.stdout).expect("the output is TOML");
    assert!(parsed.contains_key("server"));
    assert!(
        out.stderr.contains("configuration is valid"),
        "{}",
        out.stderr
    );
    assert!(
        !dir.path().join("valet-data").exists(),
        "config check creates nothing"
    );
}

#[test]
fn config_check_applies_environment_overrides() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_ok(
        valet(dir.path())
            .args(["config", "check"])
            .env("VALET_SERVER__BIND", "127.0.0.1:9999")
            .env("VALET_DATA_DIR", "/srv/valet")
            // Client variables share the prefix but are not configuration.
            .env("VALET_TOKEN", "not-a-config-key")
            .env("VALET_API_URL", "http://127.0.0.1:1"),
    );
    assert!(
        out.stdout.contains("bind = \"127.0.0.1:9999\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("data_dir = \"/srv/valet\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("url = \"sqlite:///srv/valet/valet.db\""),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("not-a-config-key"), "{}", out.stdout);
}

#[test]
fn config_check_redacts_backend_secrets() {
    let dir = TempDir::new().expect("temp dir");
    let secret = "s3cr3t-0123456789-abcdefghij-0123456789x"; // 40 chars
    assert_eq!(secret.len(), 40);
    fs::write(
        dir.path().join("valet.toml"),
        format!("[backends.local]\nkind = \"local\"\nsecret = \"{secret}\"\n"),
    )
    .expect("write config");

    // Both ways of naming the file.
    let by_flag = run_ok(valet(dir.path()).args(["config", "check", "--config", "valet.toml"]));
    let by_env = run_ok(
        valet(dir.path())
            .args(["config", "check"])
            .env("VALET_CONFIG", "valet.toml"),
    );
    for out in [by_flag, by_env] {
        let all = out.all();
        assert!(!all.contains(secret), "secret printed:\n{all}");
        assert!(
            !all.contains("s3cr3t"),
            "part of the secret printed:\n{all}"
        );
        assert!(
            out.stdout.contains("secret = \"[redacted]\""),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("kind = \"local\""), "{}", out.stdout);
    }
}

#[test]
fn config_check_redacts_the_database_password() {
    let dir = TempDir::new().expect("temp dir");
    fs::write(
        dir.path().join("valet.toml"),
        "[database]\nurl = \"postgres://valet:hunter2hunter2@db.example:5432/valet\"\n",
    )
    .expect("write config");
    let from_file = run_ok(valet(dir.path()).args(["config", "check", "--config", "valet.toml"]));
    let from_env = run_ok(valet(dir.path()).args(["config", "check"]).env(
        "VALET_DATABASE__URL",
        "postgres://valet:hunter2hunter2@db.example:5432/valet",
    ));
    for out in [from_file, from_env] {
        let all = out.all();
        assert!(!all.contains("hunter2"), "password printed:\n{all}");
        assert!(out.stdout.contains("valet:REDACTED@"), "{}", out.stdout);
        // The rest of the URL is still there to check.
        assert!(out.stdout.contains("postgres://valet:"), "{}", out.stdout);
        assert!(
            out.stdout.contains("@db.example:5432/valet"),
            "{}",
            out.stdout
        );
    }
    // The broker URL and the cloud secrets too.
    fs::write(
        dir.path().join("cloud.toml"),
        "default_backend = \"s3\"\n[amqp]\nurl = \"amqps://valet:brokerpass123@mq.example:5671/%2f\"\n\
         [backends.s3]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"AKIA\"\n\
         secret_access_key = \"s3secretvalue\"\n\
         [backends.az]\nkind = \"azblob\"\naccount = \"a\"\ncontainer = \"c\"\n\
         account_key = \"YXp1cmVzZWNyZXRrZXk=\"\n\
         [storage_events.s3]\nsecret = \"webhooksecret123456\"\n",
    )
    .expect("write config");
    let out = run_ok(valet(dir.path()).args(["config", "check", "--config", "cloud.toml"]));
    for secret in [
        "brokerpass123",
        "s3secretvalue",
        "YXp1cmVzZWNyZXRrZXk=",
        "webhooksecret123456",
    ] {
        assert!(
            !out.all().contains(secret),
            "{secret} printed:\n{}",
            out.all()
        );
    }
    assert!(
        out.stdout.contains("amqps://valet:REDACTED@mq.example"),
        "{}",
        out.stdout
    );
}

/// A URL that does not parse is refused without echoing it (its password included).
#[test]
fn config_check_refuses_an_unparsable_database_url_without_printing_it() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_err(valet(dir.path()).args(["config", "check"]).env(
        "VALET_DATABASE__URL",
        "postgres://valet:hunter2hunter2@db.example:54x2/valet",
    ));
    assert!(
        !out.all().contains("hunter2"),
        "password printed:\n{}",
        out.all()
    );
}

/// libpq also takes the password as a `password=` query parameter.
#[test]
fn config_check_redacts_a_password_query_parameter() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_ok(valet(dir.path()).args(["config", "check"]).env(
        "VALET_DATABASE__URL",
        "postgres://valet@db.example/valet?password=hunter2hunter2",
    ));
    assert!(
        !out.all().contains("hunter2"),
        "password printed:\n{}",
        out.all()
    );
}

#[test]
fn config_check_rejects_an_unknown_default_backend() {
    let dir = TempDir::new().expect("temp dir");
    fs::write(
        dir.path().join("valet.toml"),
        "default_backend = \"nope\"\n",
    )
    .expect("write");
    let out = run_err(valet(dir.path()).args(["config", "check", "--config", "valet.toml"]));
    assert!(
        out.stdout.is_empty(),
        "nothing printed on stdout: {}",
        out.stdout
    );
    assert!(out.stderr.contains("default_backend"), "{}", out.stderr);
    assert!(out.stderr.contains("\"nope\""), "{}", out.stderr);
    assert!(
        !out.stderr.contains("configuration is valid"),
        "{}",
        out.stderr
    );
}

#[test]
fn config_check_rejects_unknown_keys() {
    let dir = TempDir::new().expect("temp dir");
    fs::write(
        dir.path().join("nested.toml"),
        "[server]\nbindd = \"127.0.0.1:1\"\n",
    )
    .expect("write");
    let out = run_err(valet(dir.path()).args(["config", "check", "--config", "nested.toml"]));
    assert!(out.stderr.contains("bindd"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);

    fs::write(dir.path().join("top.toml"), "colour = \"blue\"\n").expect("write");
    let out = run_err(valet(dir.path()).args(["config", "check", "--config", "top.toml"]));
    assert!(out.stderr.contains("colour"), "{}", out.stderr);

    // Misspelt environment overrides are refused too, not ignored.
    let out = run_err(
        valet(dir.path())
            .args(["config", "check"])
            .env("VALET_SERVER__BINDD", "127.0.0.1:1"),
    );
    assert!(out.stderr.contains("bindd"), "{}", out.stderr);
}

#[test]
fn config_check_rejects_invalid_values_with_a_clear_message() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_err(
        valet(dir.path())
            .args(["config", "check"])
            .env("VALET_SERVER__BIND", "not-an-address"),
    );
    assert!(out.stderr.contains("server.bind"), "{}", out.stderr);

    fs::write(
        dir.path().join("short.toml"),
        "[backends.local]\nkind = \"local\"\nsecret = \"too-short\"\n",
    )
    .expect("write");
    let out = run_err(valet(dir.path()).args(["config", "check", "--config", "short.toml"]));
    assert!(
        out.stderr.contains("backends.local.secret"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("too-short"), "{}", out.stderr);

    fs::write(dir.path().join("nokeys.toml"), "[auth]\ndev_key = false\n").expect("write");
    let out = run_err(valet(dir.path()).args(["config", "check", "--config", "nokeys.toml"]));
    assert!(out.stderr.contains("auth.trusted_keys"), "{}", out.stderr);

    let out = run_err(
        valet(dir.path())
            .args(["config", "check"])
            .env("VALET_SERVER__WORKERS", "0"),
    );
    assert!(out.stderr.contains("server.workers"), "{}", out.stderr);

    // Signed URLs must point somewhere a device can reach.
    let out = run_err(
        valet(dir.path())
            .args(["config", "check"])
            .env("VALET_SERVER__BIND", "0.0.0.0:8080"),
    );
    assert!(out.stderr.contains("server.public_url"), "{}", out.stderr);
    run_ok(
        valet(dir.path())
            .args(["config", "check"])
            .env("VALET_SERVER__BIND", "0.0.0.0:8080")
            .env("VALET_SERVER__PUBLIC_URL", "https://files.example.com"),
    );

    let out = run_err(valet(dir.path()).args(["config", "check", "--config", "missing.toml"]));
    assert!(out.stderr.contains("missing.toml"), "{}", out.stderr);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// token mint
// ---------------------------------------------------------------------------

#[test]
fn token_mint_without_a_dev_key_says_what_to_do() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_err(valet(dir.path()).args([
        "token", "mint", "--tenant", "acme", "--device", "dev-42", "--ttl", "1h",
    ]));
    assert!(out.stdout.is_empty(), "no token printed: {}", out.stdout);
    assert!(out.stderr.contains("valet serve"), "{}", out.stderr);
    assert!(out.stderr.contains("--key"), "{}", out.stderr);
    assert!(out.stderr.contains("dev-root-key.toml"), "{}", out.stderr);
    assert!(
        !dir.path().join("valet-data/dev-root-key.toml").exists(),
        "mint never creates a key"
    );
}

#[test]
fn token_mint_with_a_key_file_prints_a_token() {
    let dir = TempDir::new().expect("temp dir");
    run_ok(valet(dir.path()).args(["keys", "generate", "--out", "k.toml", "--id", "3"]));
    let key = read_key_file(&dir.path().join("k.toml"));

    for principal in [["--device", "dev-42"], ["--service", "ingest"]] {
        let out = run_ok(
            valet(dir.path())
                .args([
                    "token", "mint", "--tenant", "acme", "--key", "k.toml", "--ttl", "15m",
                ])
                .args(principal),
        );
        let token = out.stdout.trim();
        assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
        assert!(token.len() > 64, "too short for a signed token: {token:?}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
            "not base64url: {token:?}"
        );
        assert!(!out.all().contains(&key.private_hex), "{}", out.all());
    }
}

#[test]
fn token_mint_rejects_bad_principals() {
    let dir = TempDir::new().expect("temp dir");
    run_ok(valet(dir.path()).args(["keys", "generate", "--out", "k.toml"]));
    let base = ["token", "mint", "--tenant", "acme", "--key", "k.toml"];

    let out =
        run_err(
            valet(dir.path())
                .args(base)
                .args(["--device", "dev-42", "--service", "ingest"]),
        );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("--device"), "{}", out.stderr);
    assert!(out.stderr.contains("--service"), "{}", out.stderr);

    let out = run_err(valet(dir.path()).args(base));
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("--device"), "{}", out.stderr);

    let out = run_err(valet(dir.path()).args(base).args(["--device", "a/b"]));
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains("must be 1 to 128 bytes"),
        "{}",
        out.stderr
    );

    let out = run_err(
        valet(dir.path())
            .args(base)
            .args(["--device", "dev-42", "--ttl", "soon"]),
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("--ttl"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// Client commands without a server
// ---------------------------------------------------------------------------

#[test]
fn client_help_never_shows_the_token_from_the_environment() {
    let dir = TempDir::new().expect("temp dir");
    for command in ["upload", "download"] {
        let out = run_ok(
            valet(dir.path())
                .args([command, "--help"])
                .env("VALET_TOKEN", "tok-very-secret-value"),
        );
        assert!(out.stdout.contains("--token"), "{}", out.stdout);
        assert!(
            !out.all().contains("tok-very-secret-value"),
            "{}",
            out.all()
        );
    }
}

#[test]
fn upload_reports_an_unreachable_server() {
    let dir = TempDir::new().expect("temp dir");
    fs::write(dir.path().join("f.bin"), b"hello").expect("write");
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = run_err(valet(dir.path()).args(["upload", "f.bin", "--url", &url, "--token", "t"]));
    assert!(out.stderr.contains("cannot reach valet"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// With a server
// ---------------------------------------------------------------------------

#[test]
fn upload_download_and_events_end_to_end_without_leaking_secrets() {
    let dir = TempDir::new().expect("temp dir");
    // Every level of every crate: no log line at any level may carry a secret.
    let mut server = Server::start(dir.path(), &[("RUST_LOG", "trace")]);
    let dev_key = read_key_file(&dir.path().join("valet-data/dev-root-key.toml"));

    let token = mint_device_token(dir.path(), "acme", "dev-42");

    let content = random_bytes(5 * 1024 * 1024);
    let sha256 = sha256_hex(&content);
    fs::write(dir.path().join("payload.bin"), &content).expect("write payload");

    let (file, upload_out) = upload(dir.path(), &server, &token, "payload.bin");
    assert_eq!(file["status"], "uploaded", "{file:#}");
    assert_eq!(file["sha256"], sha256.as_str(), "{file:#}");
    assert_eq!(file["size"], content.len(), "{file:#}");
    assert_eq!(file["name"], "payload.bin", "{file:#}");
    assert_eq!(file["tenant_id"], "acme", "{file:#}");
    assert_eq!(file["device_id"], "dev-42", "{file:#}");
    assert!(
        !upload_out.all().contains(&token),
        "upload printed the token"
    );
    let id = file["id"].as_str().expect("file id").to_owned();

    // Download with the client settings taken from the environment this time.
    let download_out = run_ok(
        valet(dir.path())
            .args(["download", &id, "-o", "out.bin"])
            .env("VALET_API_URL", server.url())
            .env("VALET_TOKEN", &token),
    );
    let downloaded = fs::read(dir.path().join("out.bin")).expect("downloaded file");
    assert!(
        downloaded == content,
        "downloaded bytes differ from the upload"
    );
    assert!(
        download_out.stderr.contains(&sha256),
        "{}",
        download_out.stderr
    );
    assert!(
        !download_out.all().contains(&token),
        "download printed the token"
    );
    assert!(
        !dir.path().join("out.part").exists(),
        "the partial file is renamed away"
    );

    // An unknown id: an error, and no output file.
    let out = run_err(
        valet(dir.path())
            .args([
                "download",
                "01890a5d-ac96-774b-bcce-b302099a8057",
                "-o",
                "none.bin",
            ])
            .env("VALET_API_URL", server.url())
            .env("VALET_TOKEN", &token),
    );
    assert!(out.stderr.contains("404"), "{}", out.stderr);
    assert!(!dir.path().join("none.bin").exists());

    // The outbox holds the upload event (no broker: it stays unpublished), read
    // while the server is still running.
    let events = run_ok(valet(dir.path()).args(["events", "list"]));
    let entries: Vec<Value> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    let uploaded: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event_type"] == "io.valet.file.uploaded" && e["file_id"] == id.as_str())
        .collect();
    assert_eq!(uploaded.len(), 1, "events:\n{}", events.stdout);
    let entry = uploaded[0];
    assert_eq!(entry["tenant_id"], "acme");
    assert_eq!(entry["device_id"], "dev-42");
    assert!(entry["published_at"].is_null(), "{entry}");
    // The CloudEvent, shown either embedded or as a JSON string.
    let payload: Value = match &entry["payload"] {
        Value::String(s) => serde_json::from_str(s).expect("payload is JSON"),
        other => other.clone(),
    };
    assert_eq!(payload["type"], "io.valet.file.uploaded");
    assert_eq!(payload["data"]["id"], id.as_str());
    assert_eq!(payload["data"]["sha256"], sha256.as_str());

    let all = run_ok(valet(dir.path()).args(["events", "list", "--all", "--limit", "1"]));
    assert_eq!(all.stdout.lines().count(), 1, "{}", all.stdout);

    // Nothing secret in the server's output.
    server.stop();
    let logs = server.logs();
    assert!(
        logs.contains("request completed") && logs.contains("/v1/files"),
        "the requests were logged (otherwise the checks below prove nothing):\n{logs}"
    );
    assert!(logs.contains("TRACE"), "trace logging was on");
    assert!(!logs.contains(&token), "the server logged the token");
    assert!(
        !logs.contains(&dev_key.private_hex),
        "the server logged the private key"
    );
    assert!(
        !logs.contains("ed25519-private"),
        "the server logged the private key"
    );
}

#[test]
fn first_start_logs_the_dev_public_key_and_how_to_mint_a_token() {
    let dir = TempDir::new().expect("temp dir");
    let mut server = Server::start(dir.path(), &[]);
    let key_path = dir.path().join("valet-data/dev-root-key.toml");
    let key = read_key_file(&key_path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key_path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "dev key mode is {:o}", mode & 0o777);
    }
    server.stop();
    let logs = server.logs();
    assert!(logs.contains(&key.public_key), "no public key in:\n{logs}");
    assert!(
        logs.contains("valet token mint"),
        "no mint hint in:\n{logs}"
    );
    assert!(
        !logs.contains(&key.private_hex),
        "private key logged:\n{logs}"
    );

    // A second start reuses the key.
    let mut again = Server::start(dir.path(), &[]);
    again.stop();
    assert_eq!(read_key_file(&key_path).public_key, key.public_key);
    assert!(again.logs().contains(&key.public_key), "{}", again.logs());
}

#[test]
fn a_generated_key_trusted_by_config_authenticates_the_cli() {
    let dir = TempDir::new().expect("temp dir");
    run_ok(valet(dir.path()).args(["keys", "generate", "--out", "trusted.toml", "--id", "21"]));
    run_ok(valet(dir.path()).args(["keys", "generate", "--out", "stranger.toml", "--id", "22"]));
    let trusted = read_key_file(&dir.path().join("trusted.toml"));
    fs::write(
        dir.path().join("valet.toml"),
        format!(
            "[auth]\ndev_key = false\n\n[[auth.trusted_keys]]\nid = {}\npublic_key = \"{}\"\n",
            trusted.id, trusted.public_key
        ),
    )
    .expect("write config");

    let mut server = Server::start(dir.path(), &[("VALET_CONFIG", "valet.toml")]);
    assert!(
        !dir.path().join("valet-data/dev-root-key.toml").exists(),
        "no dev key when auth.dev_key is off"
    );
    fs::write(dir.path().join("shared.txt"), b"for every device\n").expect("write");

    let mint = |key: &str| {
        run_ok(valet(dir.path()).args([
            "token",
            "mint",
            "--tenant",
            "acme",
            "--service",
            "ingest",
            "--key",
            key,
        ]))
        .stdout
        .trim()
        .to_owned()
    };

    let token = mint("trusted.toml");
    let out = run_ok(valet(dir.path()).args([
        "upload",
        "shared.txt",
        "--shared",
        "--content-type",
        "text/plain",
        "--metadata",
        "origin=cli-test",
        "--url",
        &server.url(),
        "--token",
        &token,
    ]));
    let file: Value = serde_json::from_str(&out.stdout).expect("File JSON");
    assert_eq!(file["status"], "uploaded", "{file:#}");
    assert!(file["device_id"].is_null(), "{file:#}");
    assert_eq!(file["content_type"], "text/plain", "{file:#}");
    assert_eq!(file["metadata"]["origin"], "cli-test", "{file:#}");
    assert_eq!(file["sha256"], sha256_hex(b"for every device\n").as_str());

    let stranger = mint("stranger.toml");
    let out = run_err(valet(dir.path()).args([
        "upload",
        "shared.txt",
        "--shared",
        "--url",
        &server.url(),
        "--token",
        &stranger,
    ]));
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    assert!(!out.stderr.contains(&stranger), "{}", out.stderr);

    server.stop();
    let logs = server.logs();
    assert!(logs.contains("/v1/files"), "{logs}");
    assert!(
        !logs.contains(&token) && !logs.contains(&stranger),
        "token logged"
    );
    assert!(!logs.contains(&trusted.private_hex), "private key logged");
}

/// Staging a download never touches a sibling file such as `report.part`.
#[test]
fn download_leaves_unrelated_files_alone() {
    let dir = TempDir::new().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    fs::write(dir.path().join("report.pdf"), b"new report").expect("write");
    let (file, _) = upload(dir.path(), &server, &token, "report.pdf");
    let id = file["id"].as_str().expect("id").to_owned();

    fs::create_dir(dir.path().join("out")).expect("mkdir");
    fs::write(dir.path().join("out/report.part"), b"part one of my novel").expect("write");
    run_ok(valet(dir.path()).args([
        "download",
        &id,
        "-o",
        "out/report.pdf",
        "--url",
        &server.url(),
        "--token",
        &token,
    ]));
    assert_eq!(
        fs::read(dir.path().join("out/report.part")).ok(),
        Some(b"part one of my novel".to_vec())
    );
}

/// Every example configuration shipped in compose/ is valid.
#[test]
fn the_example_configurations_are_valid() {
    let examples: Vec<_> = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("compose"))
        .expect("compose/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(!examples.is_empty(), "no example configuration in compose/");
    for example in examples {
        let dir = TempDir::new().expect("temp dir");
        let out = run_ok(
            valet(dir.path())
                .arg("--config")
                .arg(&example)
                .args(["config", "check"]),
        );
        assert!(out.stderr.contains("configuration is valid"), "{example:?}");
    }
}

// ---------------------------------------------------------------------------
// health (the container image's health check)
// ---------------------------------------------------------------------------

#[test]
fn health_reports_a_live_server_and_fails_for_a_dead_one() {
    let dir = TempDir::new().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let out = run_ok(valet(dir.path()).args(["health", "--url", &server.url()]));
    assert!(out.stdout.contains("ok"), "{}", out.all());
    run_ok(valet(dir.path()).args(["health", "--ready", "--url", &server.url()]));

    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = run_err(valet(dir.path()).args(["health", "--url", &closed]));
    assert!(out.stderr.contains("cannot reach"), "{}", out.all());
}

// ---------------------------------------------------------------------------
// graceful shutdown
// ---------------------------------------------------------------------------

/// Sends one HTTP/1.1 request and returns the status and body.
fn http_call(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn sigterm_finishes_the_requests_in_flight_then_exits() {
    stops_gracefully_on("TERM");
}

#[test]
fn sigint_finishes_the_requests_in_flight_then_exits() {
    stops_gracefully_on("INT");
}

fn stops_gracefully_on(signal: &str) {
    let dir = TempDir::new().expect("temp dir");
    let mut server = Server::start(dir.path(), &[("VALET_SERVER__SHUTDOWN_TIMEOUT_SECS", "20")]);
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    let bytes = random_bytes(64 * 1024);
    let sha = sha256_hex(&bytes);

    // Eight uploads are in flight: headers and half the body sent.
    let mut in_flight = Vec::new();
    for i in 0..8 {
        let request = format!(
            r#"{{"name":"part-{i}.bin","size":{},"sha256":"{sha}"}}"#,
            bytes.len()
        );
        let (status, created) = http_call(server.port, "POST", "/v1/files", &token, &request);
        assert_eq!(status, 201, "{created}");
        let created: Value = serde_json::from_str(&created).expect("created JSON");
        let url = url::Url::parse(created["upload"]["url"].as_str().expect("url")).expect("url");
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            stream,
            "PUT {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\
             Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            &url[url::Position::BeforePath..],
            bytes.len()
        )
        .expect("write head");
        stream
            .write_all(&bytes[..bytes.len() / 2])
            .expect("write half");
        in_flight.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));

    let pid = server.child.as_ref().expect("running").id();
    let killed = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(500));

    // Every accepted request still completes.
    for mut stream in in_flight {
        stream
            .write_all(&bytes[bytes.len() / 2..])
            .expect("write rest");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("read");
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "an accepted upload failed during shutdown: {response}\n{}",
            server.logs()
        );
    }

    // Then the process exits on its own, cleanly.
    let child = server.child.as_mut().expect("running");
    let deadline = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "valet did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    server.child = None;
    assert!(status.success(), "exit status {status}\n{}", server.logs());
    assert!(
        fs::read_dir(dir.path().join("valet-data/objects"))
            .map(|d| d.count() > 0)
            .unwrap_or(false),
        "the uploads were stored"
    );
}

// ---------------------------------------------------------------------------
// events: the embedded default keeps them; a broker configured later gets them
// ---------------------------------------------------------------------------

#[test]
fn events_kept_by_the_embedded_default_are_published_once_a_broker_is_configured() {
    use futures_util::StreamExt;
    use lapin::options::{
        BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
        QueueDeclareOptions,
    };
    use lapin::types::FieldTable;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let exchange = format!("valet-cli-test-{}", uuid::Uuid::new_v4().simple());
    let (connection, mut consumer) = runtime.block_on(async {
        let connection = lapin::Connection::connect(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            lapin::ConnectionProperties::default(),
        )
        .await
        .unwrap_or_else(|e| {
            panic!("this test needs RabbitMQ on 127.0.0.1:5672: rabbitmq-server -detached ({e})")
        });
        let channel = connection.create_channel().await.expect("channel");
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .expect("exchange");
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        let queue = channel
            .queue_declare("".into(), exclusive, FieldTable::default())
            .await
            .expect("queue");
        channel
            .queue_bind(
                queue.name().as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        let options = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let consumer = channel
            .basic_consume(
                queue.name().as_str().into(),
                "".into(),
                options,
                FieldTable::default(),
            )
            .await
            .expect("consume");
        (connection, consumer)
    });

    // The embedded default: no broker, events stay in the outbox.
    let dir = TempDir::new().expect("temp dir");
    let mut server = Server::start(dir.path(), &[]);
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    let mut ids = Vec::new();
    for i in 0..3 {
        let path = dir.path().join(format!("f{i}.bin"));
        fs::write(&path, random_bytes(1000 + i)).expect("write");
        let (file, _) = upload(dir.path(), &server, &token, path.to_str().expect("path"));
        ids.push(file["id"].as_str().expect("id").to_owned());
    }
    let listed = run_ok(valet(dir.path()).args(["events", "list"]));
    assert_eq!(listed.stdout.lines().count(), 3, "{}", listed.stdout);
    // The process dies without a chance to do anything more.
    let pid = server.child.as_ref().expect("running").id();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    server.stop();

    // Restarted with a broker: the backlog is published.
    let _server = Server::start(
        dir.path(),
        &[
            ("VALET_AMQP__URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("VALET_AMQP__EXCHANGE", exchange.as_str()),
        ],
    );
    let received: Vec<String> = runtime.block_on(async {
        let mut received = Vec::new();
        while received.len() < 3 {
            let next = tokio::time::timeout(Duration::from_secs(20), consumer.next()).await;
            let Ok(Some(Ok(delivery))) = next else { break };
            let event: Value = serde_json::from_slice(&delivery.data).expect("event");
            received.push(event["data"]["id"].as_str().expect("id").to_owned());
        }
        let channel = connection.create_channel().await.expect("channel");
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
        received
    });
    assert_eq!(received, ids);
    let waiting = run_ok(valet(dir.path()).args(["events", "list"]));
    assert_eq!(waiting.stdout.lines().count(), 0, "{}", waiting.stdout);
}
