//! Root keys and tokens: `valet keys generate`, `valet token mint`, the server's dev
//! key, and configured trusted keys authenticating the client.

use std::fs;

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{read_key_file, run_err, run_ok, sha256_hex, upload, valet, Server};

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
        out.stderr.contains("must be 1 to 128 characters"),
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

#[test]
fn keys_generate_jwt_writes_a_private_key_file_and_its_jwks() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_ok(valet(dir.path()).args(["keys", "generate", "--jwt", "keys/sts.toml"]));
    let path = dir.path().join("keys/sts.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode is {:o}", mode & 0o777);
    }
    let jwks: Value = serde_json::from_slice(
        &fs::read(dir.path().join("keys/sts.jwks.json")).expect("JWK set written"),
    )
    .expect("JSON");
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["alg"], "EdDSA", "Ed25519 by default: {jwks}");
    assert_eq!(jwk["kty"], "OKP");
    assert!(jwk.get("d").is_none(), "no private part published: {jwks}");
    assert!(out.stdout.contains("[auth.jwt.dev]"), "{}", out.stdout);
    let private = fs::read_to_string(&path).expect("key file");
    let private_pem: String = private
        .lines()
        .filter(|l| !l.contains('=') && !l.starts_with("-----"))
        .collect();
    assert!(!private_pem.is_empty(), "{private}");
    assert!(!out.all().contains(&private_pem), "private key printed");

    let again = run_err(valet(dir.path()).args(["keys", "generate", "--jwt", "keys/sts.toml"]));
    assert!(again.stderr.contains("sts"), "{}", again.stderr);
    assert_eq!(fs::read_to_string(&path).expect("key file"), private);
    let out = run_err(valet(dir.path()).args(["keys", "generate", "--algorithm", "rs256"]));
    assert!(out.stderr.contains("--jwt"), "{}", out.stderr);
}

#[test]
fn a_generated_jwt_key_trusted_by_config_authenticates_the_cli() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_ok(valet(dir.path()).args([
        "keys",
        "generate",
        "--jwt",
        "sts.toml",
        "--algorithm",
        "rs256",
        "--kid",
        "sts-2026",
    ]));
    let snippet: String = out
        .stdout
        .lines()
        .skip_while(|l| *l != "[auth.jwt.dev]")
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(snippet.contains("kid = \"sts-2026\""), "{}", out.stdout);
    assert!(snippet.contains("alg = \"RS256\""), "{}", out.stdout);
    fs::write(
        dir.path().join("valet.toml"),
        format!("[auth]\ndev_key = false\n\n{snippet}"),
    )
    .expect("write config");
    let mut server = Server::start(dir.path(), &[("VALET_CONFIG", "valet.toml")]);
    fs::write(dir.path().join("report.txt"), b"from a device\n").expect("write");

    let mint = |audience: &str| {
        run_ok(valet(dir.path()).args([
            "token",
            "mint",
            "--jwt",
            "sts.toml",
            "--issuer",
            "https://sts.example.com",
            "--audience",
            audience,
            "--tenant",
            "acme",
            "--device",
            "dev-42",
            "--ttl",
            "15m",
        ]))
        .stdout
        .trim()
        .to_owned()
    };
    let token = mint("valet");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let (file, _) = upload(dir.path(), &server, &token, "report.txt");
    assert_eq!(file["status"], "uploaded", "{file:#}");
    assert_eq!(file["device_id"], "dev-42", "{file:#}");
    assert_eq!(file["sha256"], sha256_hex(b"from a device\n").as_str());

    let elsewhere = mint("another-service");
    let out = run_err(valet(dir.path()).args([
        "upload",
        "report.txt",
        "--url",
        &server.url(),
        "--token",
        &elsewhere,
    ]));
    assert!(out.stderr.contains("401"), "{}", out.stderr);

    let out = run_err(valet(dir.path()).args([
        "token", "mint", "--jwt", "sts.toml", "--tenant", "acme", "--device", "dev-42",
    ]));
    assert!(out.stderr.contains("--issuer"), "{}", out.stderr);

    server.stop();
    let logs = server.logs();
    assert!(
        !logs.contains(&token) && !logs.contains(&elsewhere),
        "token logged"
    );
}
