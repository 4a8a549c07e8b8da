//! JWTs from a device token service (`[auth.jwt.<name>]`), verified against its
//! JWKS, and biscuit root keys published by URL (`auth.key_set_url`): the same
//! identities and rules as minted biscuits, every refusal a 401, keys rotated and
//! retired without a restart, fetches bounded however many unknown key ids arrive,
//! and a publisher down at start reported by readiness without making valet unready.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use valet::auth::jwt_signing::SigningAlgorithm;
use valet::auth::{token, JwtSigningKey, RootKey};
use valet::configuration::{Audience, ClaimNames, JwtIssuerSettings, Settings};
use valet::domain::{DeviceId, Principal, TenantId};

use crate::helpers::key_server::KeyServer;
use crate::helpers::{assert_problem, body_of, spawn_app_with, TestApp};

const ISSUER: &str = "https://sts.fleet.test";
const AUDIENCE: &str = "valet";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `[auth.jwt.sts]` trusting `jwks_url` and/or inline `keys`, refreshing at most
/// once a second.
fn issuer(jwks_url: Option<&str>, keys: Vec<Value>) -> JwtIssuerSettings {
    JwtIssuerSettings {
        issuer: ISSUER.into(),
        audience: Audience::Any(vec!["other".into(), AUDIENCE.into()]),
        jwks_url: jwks_url.map(str::to_owned),
        keys,
        algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
        leeway_secs: 30,
        min_refresh_secs: 1,
        max_refresh_secs: 3600,
        required_scopes: Vec::new(),
        claims: ClaimNames::default(),
    }
}

fn key(algorithm: SigningAlgorithm) -> JwtSigningKey {
    JwtSigningKey::generate(algorithm, None).expect("key")
}

fn jwks(keys: &[&JwtSigningKey]) -> Value {
    let keys: Vec<Value> = keys.iter().map(|k| k.public_jwk().expect("jwk")).collect();
    json!({ "keys": keys })
}

/// The claims a device token service issues, valid for an hour.
fn claims(tenant: &str, subject: &str, kind: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "tid": tenant, "sub": subject, "typ": kind,
        "iat": now(), "exp": now() + 3600,
    })
}

fn device_jwt(key: &JwtSigningKey, tenant: &str, device: &str) -> String {
    key.sign(&claims(tenant, device, "device")).expect("sign")
}

/// A valet trusting the issuer `sts` whose JWKS `server` publishes.
async fn spawn_with_sts(server: &KeyServer, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let url = server.url.clone();
    spawn_app_with(move |s| {
        s.auth
            .jwt
            .insert("sts".into(), issuer(Some(&url), Vec::new()));
        configure(s);
    })
    .await
}

async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readiness");
    let status = response.status().as_u16();
    (status, response.json().await.expect("readiness body"))
}

/// Repeats `attempt` (every 50 ms, for at most 10 s) until it holds.
async fn eventually<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if attempt().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never happened");
}

async fn accepted(app: &TestApp, token: &str) -> bool {
    app.list(token, "").await.status().as_u16() == 200
}

#[actix_web::test]
async fn device_and_service_jwts_do_the_whole_flow_for_each_algorithm() {
    let rsa = key(SigningAlgorithm::Rs256);
    let ec = key(SigningAlgorithm::Es256);
    let ed = key(SigningAlgorithm::Eddsa);
    let sts = KeyServer::start(jwks(&[&rsa, &ec, &ed])).await;
    // A second issuer whose key is written in the configuration.
    let inline = key(SigningAlgorithm::Eddsa);
    let inline_jwk = inline.public_jwk().expect("jwk");
    let app = spawn_with_sts(&sts, |s| {
        let mut other = issuer(None, vec![inline_jwk]);
        other.issuer = "https://other-sts.test".into();
        s.auth.jwt.insert("other".into(), other);
    })
    .await;

    for (n, key) in [&rsa, &ec, &ed].into_iter().enumerate() {
        let device = format!("dev-{n}");
        let token = device_jwt(key, "acme", &device);
        let bytes = body_of(100 + n);
        let file = app.upload(&token, &bytes, json!({})).await;
        assert_eq!(file["device_id"], device.as_str(), "{:?}", key.algorithm());
        let id = file["id"].as_str().expect("id");
        assert_eq!(app.get_file(&token, id).await.status().as_u16(), 200);
        assert_eq!(app.fetch(&token, id).await, bytes);

        let service = key.sign(&claims("acme", "fleet", "service")).expect("sign");
        let shared = app.upload(&service, &bytes, json!({"shared": true})).await;
        let shared_id = shared["id"].as_str().expect("id");
        assert!(shared["device_id"].is_null());
        assert_eq!(app.fetch(&service, shared_id).await, bytes);
        // The role rules apply as to biscuits: the device reads the shared root,
        // and another device does not see this one's file.
        assert_eq!(app.fetch(&token, shared_id).await, bytes);
        app.assert_not_found_for(&device_jwt(key, "acme", "dev-other"), id)
            .await;
    }

    let mut other = claims("acme", "dev-9", "device");
    other["iss"] = json!("https://other-sts.test");
    let token = inline.sign(&other).expect("sign");
    app.upload(&token, &body_of(10), json!({})).await;

    // Biscuits still work beside JWTs.
    let biscuit = app.device_token("acme", "dev-0");
    assert_eq!(app.list(&biscuit, "").await.status().as_u16(), 200);
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 200);
    assert_eq!(ready["checks"]["jwks:sts"], "ok", "{ready}");
    assert!(ready["checks"].get("jwks:other").is_none(), "{ready}");
}

fn remove(claims: &mut Value, claim: &str) {
    if let Some(object) = claims.as_object_mut() {
        object.remove(claim);
    }
}

/// `alg: none`, unsigned.
fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[actix_web::test]
async fn jwts_breaking_a_rule_are_unauthenticated() {
    let key = key(SigningAlgorithm::Eddsa);
    let rsa = self::key(SigningAlgorithm::Rs256);
    let sts = KeyServer::start(jwks(&[&key, &rsa])).await;
    let app = spawn_with_sts(&sts, |_| {}).await;
    assert!(accepted(&app, &device_jwt(&key, "acme", "dev-1")).await);

    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims("acme", "dev-1", "device");
        change(&mut claims);
        key.sign(&claims).expect("sign")
    };
    let jwk = key.public_jwk().expect("jwk");
    let public_bytes = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().expect("x"))
        .expect("x");
    let hmac_header = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        header
    };
    let hmac = |secret: &[u8]| {
        jsonwebtoken::encode(
            &hmac_header,
            &claims("acme", "dev-1", "device"),
            &EncodingKey::from_secret(secret),
        )
        .expect("sign")
    };
    let unknown_kid = {
        let stranger =
            JwtSigningKey::generate(SigningAlgorithm::Eddsa, Some("nobody".into())).expect("key");
        device_jwt(&stranger, "acme", "dev-1")
    };
    // Right kid, wrong key.
    let forged = {
        let impostor = JwtSigningKey::generate(SigningAlgorithm::Eddsa, Some(key.kid().to_owned()))
            .expect("key");
        device_jwt(&impostor, "acme", "dev-1")
    };
    // Each case, and what the refusal says.
    let cases: Vec<(String, &str)> = vec![
        (
            with(&|c| c["iss"] = json!("https://evil.test")),
            "issuer is not trusted",
        ),
        (with(&|c| remove(c, "iss")), "no `iss` claim"),
        (with(&|c| c["aud"] = json!("someone-else")), "`aud`"),
        (with(&|c| remove(c, "aud")), "no `aud` claim"),
        (with(&|c| c["exp"] = json!(now() - 120)), "expired"),
        (with(&|c| remove(c, "exp")), "no `exp` claim"),
        (with(&|c| c["nbf"] = json!(now() + 600)), "not valid yet"),
        (
            unsigned(key.kid(), &claims("acme", "dev-1", "device")),
            "not a valid JWT",
        ),
        (hmac(&public_bytes), "algorithm HS256 is not accepted"),
        (
            hmac(jwk.to_string().as_bytes()),
            "algorithm HS256 is not accepted",
        ),
        (unknown_kid, "a key valet does not know"),
        (forged, "signature is invalid"),
        (with(&|c| remove(c, "tid")), "no `tid` claim"),
        (
            with(&|c| c["tid"] = json!("acme/other")),
            "tenant id must be",
        ),
        (
            with(&|c| c["tid"] = json!(42)),
            "`tid` claim is not a string",
        ),
        (with(&|c| remove(c, "sub")), "no `sub` claim"),
        (with(&|c| c["sub"] = json!("")), "device id must be"),
        (with(&|c| c["typ"] = json!("admin")), "`typ` claim must be"),
        (with(&|c| remove(c, "typ")), "no `typ` claim"),
        ("a.b.c".into(), "not a valid JWT"),
    ];
    for (token, says) in cases {
        let problem = assert_problem(app.list(&token, "").await, 401, "unauthenticated").await;
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.contains(says)),
            "expected {says:?}: {problem}"
        );
    }
    // A key published for RS256 does not verify RS384, whatever the header says.
    let mut header = Header::new(Algorithm::RS384);
    header.kid = Some(rsa.kid().to_owned());
    let allow_listed_out = jsonwebtoken::encode(
        &header,
        &claims("acme", "dev-1", "device"),
        &rsa.encoding_key().expect("key"),
    )
    .expect("sign");
    let problem = assert_problem(
        app.list(&allow_listed_out, "").await,
        401,
        "unauthenticated",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("algorithm")),
        "{problem}"
    );
}

#[actix_web::test]
async fn required_scopes_must_be_granted() {
    let key = key(SigningAlgorithm::Es256);
    let sts = KeyServer::start(jwks(&[&key])).await;
    let app = spawn_with_sts(&sts, |s| {
        if let Some(sts) = s.auth.jwt.get_mut("sts") {
            sts.required_scopes = vec!["files".into(), "upload".into()];
        }
    })
    .await;
    let with_scopes = |claim: &str, value: Value| {
        let mut claims = claims("acme", "dev-1", "device");
        claims[claim] = value;
        key.sign(&claims).expect("sign")
    };
    assert!(accepted(&app, &with_scopes("scope", json!("openid files upload"))).await);
    assert!(accepted(&app, &with_scopes("scp", json!(["upload", "files"]))).await);
    for token in [
        device_jwt(&key, "acme", "dev-1"),
        with_scopes("scope", json!("files")),
        with_scopes("scp", json!(["files", 7])),
    ] {
        let problem = assert_problem(app.list(&token, "").await, 401, "unauthenticated").await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("scope")),
            "{problem}"
        );
    }
}

#[actix_web::test]
async fn a_rotated_jwks_is_followed_without_a_restart() {
    let old = key(SigningAlgorithm::Rs256);
    let sts = KeyServer::start(jwks(&[&old])).await;
    let app = spawn_with_sts(&sts, |_| {}).await;
    let old_token = device_jwt(&old, "acme", "dev-1");
    let file = app.upload(&old_token, &body_of(30), json!({})).await;
    let id = file["id"].as_str().expect("id");

    // The service publishes its new key and retires the old one.
    let new = key(SigningAlgorithm::Eddsa);
    sts.publish(jwks(&[&new]));
    let new_token = device_jwt(&new, "acme", "dev-1");
    // Its unknown kid makes valet fetch the JWKS again (once the minimum interval
    // since the last fetch has passed).
    eventually("the new key is trusted", || accepted(&app, &new_token)).await;
    assert_eq!(app.get_file(&new_token, id).await.status().as_u16(), 200);
    // The old token was verified and remembered; its key is gone, so it is refused.
    assert_problem(app.get_file(&old_token, id).await, 401, "unauthenticated").await;
    let fresh_old = device_jwt(&old, "acme", "dev-1");
    assert_problem(app.list(&fresh_old, "").await, 401, "unauthenticated").await;
}

#[actix_web::test]
async fn a_jwks_is_refreshed_when_its_max_age_says() {
    let first = key(SigningAlgorithm::Eddsa);
    let sts = KeyServer::start(jwks(&[&first])).await;
    sts.set_max_age(Some(1));
    let app = spawn_with_sts(&sts, |_| {}).await;
    let token = device_jwt(&first, "acme", "dev-1");
    assert!(accepted(&app, &token).await);
    // Retired by the publisher: no token asks for a fetch, the schedule does.
    sts.publish(jwks(&[]));
    let fetched = sts.fetches();
    eventually("a scheduled fetch", || async { sts.fetches() > fetched }).await;
    eventually("the retired key is refused", || async {
        app.list(&token, "").await.status().as_u16() == 401
    })
    .await;
}

#[actix_web::test]
async fn unknown_kids_cannot_make_valet_hammer_the_sts() {
    let key = key(SigningAlgorithm::Eddsa);
    let sts = KeyServer::start(jwks(&[&key])).await;
    let app = spawn_with_sts(&sts, |_| {}).await;
    let before = sts.fetches();
    let started = Instant::now();
    let forged: Vec<String> = (0..1000)
        .map(|_| {
            let stranger = JwtSigningKey::generate(
                SigningAlgorithm::Eddsa,
                Some(uuid::Uuid::new_v4().to_string()),
            )
            .expect("key");
            device_jwt(&stranger, "acme", "dev-1")
        })
        .collect();
    for batch in forged.chunks(50) {
        let answers =
            futures_util::future::join_all(batch.iter().map(|token| app.list(token, ""))).await;
        for answer in answers {
            assert_eq!(answer.status().as_u16(), 401);
        }
    }
    let elapsed = started.elapsed();
    let fetches = sts.fetches() - before;
    // One fetch at most per `min_refresh_secs` (1 s): the flood costs the service
    // no more than an idle schedule would.
    let allowed = elapsed.as_secs() as usize + 1;
    assert!(
        fetches <= allowed,
        "{fetches} fetches in {elapsed:?} (at most {allowed})"
    );
    // The real key still verifies.
    assert!(accepted(&app, &device_jwt(&key, "acme", "dev-1")).await);
}

#[actix_web::test]
async fn an_sts_down_at_start_is_reported_and_its_tokens_verify_once_it_is_back() {
    let key = key(SigningAlgorithm::Es256);
    let sts = KeyServer::start(jwks(&[&key])).await;
    sts.set_up(false);
    let app = spawn_with_sts(&sts, |_| {}).await;

    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    let jwks_check = ready["checks"]["jwks:sts"].as_str().expect("jwks check");
    assert_ne!(jwks_check, "ok", "{ready}");
    assert!(jwks_check.contains("503"), "{ready}");
    let token = device_jwt(&key, "acme", "dev-1");
    assert_problem(app.list(&token, "").await, 401, "unauthenticated").await;
    // Biscuits do not depend on the service.
    assert!(accepted(&app, &app.device_token("acme", "dev-1")).await);

    sts.set_up(true);
    eventually("the STS's tokens verify", || accepted(&app, &token)).await;
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 200);
    assert_eq!(ready["checks"]["jwks:sts"], "ok", "{ready}");
}

/// A biscuit root key set document.
fn key_set(keys: &[&RootKey]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|key| {
            json!({
                "key_id": key.id,
                "algorithm": "ed25519",
                "public_key": key.keypair.public().to_bytes_hex(),
            })
        })
        .collect();
    json!({ "keys": keys })
}

fn biscuit(key: &RootKey) -> String {
    token::mint(
        key,
        &TenantId::parse("acme").expect("tenant"),
        &Principal::Device(DeviceId::parse("dev-1").expect("device")),
        Duration::from_secs(3600),
    )
    .expect("mint")
}

#[actix_web::test]
async fn a_published_root_key_set_rotates_without_a_restart() {
    let old = RootKey::generate(Some(7));
    let publisher = KeyServer::start(key_set(&[&old])).await;
    let url = publisher.url.clone();
    let app = spawn_app_with(move |s| {
        s.auth.key_set_url = Some(url);
        s.auth.key_set_min_refresh_secs = 1;
    })
    .await;
    let old_token = biscuit(&old);
    let file = app.upload(&old_token, &body_of(40), json!({})).await;
    let id = file["id"].as_str().expect("id");
    let (_, ready) = readiness(&app).await;
    assert_eq!(ready["checks"]["key_set"], "ok", "{ready}");

    // Publish the new key, start issuing with it, retire the old one.
    let new = RootKey::generate(Some(8));
    publisher.publish(key_set(&[&old, &new]));
    let new_token = biscuit(&new);
    eventually("the new root key is trusted", || accepted(&app, &new_token)).await;
    assert_eq!(app.get_file(&old_token, id).await.status().as_u16(), 200);
    publisher.publish(key_set(&[&new]));
    // The next fetch (prompted by a key id valet does not hold) drops the old key.
    let prompt = biscuit(&RootKey::generate(Some(9)));
    eventually("the old root key is retired", || async {
        app.list(&prompt, "").await;
        app.get_file(&old_token, id).await.status().as_u16() == 401
    })
    .await;
    assert_problem(app.get_file(&old_token, id).await, 401, "unauthenticated").await;
    assert_eq!(app.get_file(&new_token, id).await.status().as_u16(), 200);
    // A configured key is never retired by the set.
    assert!(accepted(&app, &app.device_token("acme", "dev-1")).await);
}

#[actix_web::test]
async fn a_key_set_that_cannot_be_fetched_leaves_valet_ready() {
    let publisher = KeyServer::start(json!({"not": "a key set"})).await;
    let url = publisher.url.clone();
    let app = spawn_app_with(move |s| {
        s.auth.key_set_url = Some(url);
    })
    .await;
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 200, "{ready}");
    assert_ne!(ready["checks"]["key_set"], "ok", "{ready}");
    assert!(accepted(&app, &app.device_token("acme", "dev-1")).await);
    let unknown = biscuit(&RootKey::generate(Some(77)));
    assert_problem(app.list(&unknown, "").await, 401, "unauthenticated").await;
}
