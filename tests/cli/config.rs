//! `valet config check`: defaults, environment overrides, redaction of secrets, and
//! the refusal of invalid configurations.

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use crate::helpers::{run_err, run_ok, valet};

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
        // Derived values are written out: what valet will actually use.
        "public_url = \"http://127.0.0.1:8080/\"",
        "root = \"./valet-data/objects\"",
        "source = \"valet://",
        "workers = ",
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

    // Sizes are stored as signed 64-bit integers.
    let out = run_err(
        valet(dir.path())
            .args(["config", "check"])
            .env("VALET_UPLOADS__MAX_UPLOAD_BYTES", "18446744073709551615"),
    );
    assert!(
        out.stderr.contains("uploads.max_upload_bytes"),
        "{}",
        out.stderr
    );

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
