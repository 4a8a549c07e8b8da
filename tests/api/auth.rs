//! Tokens, roles and attenuation: nothing crosses a device or a tenant.

use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{fact, string};
use biscuit_auth::macros::{block, check};
use biscuit_auth::{Biscuit, KeyPair};
use serde_json::json;
use valet::auth::{token, RootKey};
use valet::domain::{DeviceId, Principal, TenantId};

use crate::helpers::{assert_problem, body_of, sha256_hex, spawn_app, spawn_app_with};

fn attenuate(app: &crate::helpers::TestApp, token: &str, code: &str) -> String {
    let biscuit = Biscuit::from_base64(token, app.root_key.keypair.public()).unwrap();
    let block = biscuit_auth::builder::BlockBuilder::new()
        .code(code)
        .unwrap();
    biscuit.append(block).unwrap().to_base64().unwrap()
}

#[actix_web::test]
async fn other_devices_and_tenants_see_not_found() {
    let app = spawn_app().await;
    let owner = app.device_token("acme", "dev-1");
    let file = app.upload(&owner, &body_of(50), json!({})).await;
    let id = file["id"].as_str().unwrap();

    let neighbour = app.device_token("acme", "dev-2");
    let stranger = app.service_token("globex", "fleet");
    let stranger_device = app.device_token("globex", "dev-1");
    for token in [&neighbour, &stranger, &stranger_device] {
        app.assert_not_found_for(token, id).await;
    }
    assert_problem(
        app.list(&neighbour, "device_id=dev-1").await,
        404,
        "not_found",
    )
    .await;
    let theirs: serde_json::Value = app.list(&stranger, "").await.json().await.unwrap();
    assert_eq!(theirs["files"], json!([]));
    // Still there for its owner.
    assert_eq!(app.get_file(&owner, id).await.status().as_u16(), 200);
}

#[actix_web::test]
async fn a_read_only_attenuation_is_enforced() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let file = app.upload(&token, &body_of(20), json!({})).await;
    let id = file["id"].as_str().unwrap();
    let read_only = attenuate(&app, &token, r#"check if operation("read");"#);

    assert_eq!(app.get_file(&read_only, id).await.status().as_u16(), 200);
    assert_eq!(app.download(&read_only, id).await.status().as_u16(), 200);
    assert_problem(app.delete(&read_only, id).await, 403, "forbidden").await;
    let create = app
        .create(
            &read_only,
            json!({"name": "x", "size": 1, "sha256": sha256_hex(b"x")}),
        )
        .await;
    assert_problem(create, 403, "forbidden").await;
    assert_problem(app.list(&read_only, "").await, 403, "forbidden").await;
}

#[actix_web::test]
async fn a_read_only_token_is_refused_whatever_the_body_holds() {
    // Authorization comes before the body is judged: invalid fields, a body that is
    // not JSON at all, and a size over the limit are all 403 for a read-only token.
    let app = spawn_app_with(|s| s.uploads.max_upload_bytes = 1024).await;
    let token = app.device_token("acme", "dev-42");
    let read_only = attenuate(&app, &token, r#"check if operation("read");"#);
    let post = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/v1/files"))
            .bearer_auth(&read_only)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (body, content_type) in [
        (
            r#"{"name": "", "size": 0, "sha256": "abc"}"#,
            "application/json",
        ),
        (
            r#"{"name": "a", "size": 1, "sha256": "abc", "colour": "red"}"#,
            "application/json",
        ),
        (
            r#"{"name": "a", "size": 4096, "sha256": "abc"}"#,
            "application/json",
        ),
        (
            r#"{"device_id": "dev-42", "size": "x"}"#,
            "application/json",
        ),
        (r#"["a", 1]"#, "application/json"),
        ("{not json", "application/json"),
        (r#"{"name": "a"}"#, "text/plain"),
    ] {
        let response = post(body, content_type).await.unwrap();
        assert_eq!(response.status().as_u16(), 403, "{body} as {content_type}");
        assert_problem(response, 403, "forbidden").await;
    }
    // The full token gets the body's own answers.
    let response = app
        .client
        .post(app.url("/v1/files"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_request").await;

    // Parts of a file uploaded in parts: the same order.
    let bytes = body_of(10);
    let created = app
        .create_ok(&token, &bytes, json!({"part_size": 10}))
        .await;
    let parts_url = app.url(&format!(
        "/v1/files/{}/parts",
        created["file"]["id"].as_str().unwrap()
    ));
    for (who, status, code) in [
        (&read_only, 403, "forbidden"),
        (&token, 400, "invalid_request"),
    ] {
        for body in [
            r#"{"parts": []}"#,
            r#"{"parts": [{"number": 1}]}"#,
            "{not json",
        ] {
            let response = app
                .client
                .post(&parts_url)
                .bearer_auth(who)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), status, "{body}");
            assert_problem(response, status, code).await;
        }
    }
}

#[actix_web::test]
async fn an_expired_token_is_unauthenticated_whatever_else_is_wrong() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let expired = attenuate(
        &app,
        &token,
        r#"check if time($t), $t <= 2020-01-01T00:00:00Z;"#,
    );
    for path in [
        "/v1/files/not-a-uuid",
        "/v1/files?limit=0",
        "/v1/files?cursor=x",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(&expired)
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "unauthenticated").await;
    }
}

#[actix_web::test]
async fn a_token_narrowed_to_one_file_reaches_only_that_file() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let a = app.upload(&token, &body_of(20), json!({})).await;
    let b = app.upload(&token, &body_of(21), json!({})).await;
    let a_id = a["id"].as_str().unwrap();
    let narrowed = attenuate(&app, &token, &format!(r#"check if file("{a_id}");"#));
    assert_eq!(app.get_file(&narrowed, a_id).await.status().as_u16(), 200);
    assert_problem(
        app.get_file(&narrowed, b["id"].as_str().unwrap()).await,
        403,
        "forbidden",
    )
    .await;
}

#[actix_web::test]
async fn expired_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    let past = SystemTime::now() - Duration::from_secs(60);
    let expired = Biscuit::builder()
        .fact(fact("tenant", &[string("acme")]))
        .unwrap()
        .fact(fact("device", &[string("dev-42")]))
        .unwrap()
        .check(check!("check if time($t), $t <= {past}", past = past))
        .unwrap()
        .root_key_id(app.root_key.id)
        .build(&app.root_key.keypair)
        .unwrap()
        .to_base64()
        .unwrap();
    let problem = assert_problem(app.list(&expired, "").await, 401, "unauthenticated").await;
    assert!(problem["detail"].as_str().unwrap().contains("expired"));

    // A holder shortening a valid token's life is honoured too.
    let token = app.device_token("acme", "dev-42");
    let shortened = {
        let biscuit = Biscuit::from_base64(&token, app.root_key.keypair.public()).unwrap();
        biscuit
            .append(block!("check if time($t), $t <= {past}", past = past))
            .unwrap()
            .to_base64()
            .unwrap()
    };
    assert_problem(app.list(&shortened, "").await, 401, "unauthenticated").await;
}

#[actix_web::test]
async fn a_verified_token_still_expires_on_every_path() {
    // The first requests verify the token and keep it in the token cache; once its
    // time check fails, every path refuses it with 401 — none answers from the
    // cached verification, and none answers 404 for a file that exists.
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let soon = SystemTime::now() + Duration::from_secs(2);
    let short_lived = attenuate(
        &app,
        &token,
        &format!("check if time($t), $t <= {}", biscuit_time(soon)),
    );
    let created = app.create_ok(&short_lived, b"short lived", json!({})).await;
    let id = created["file"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.get_file(&short_lived, &id).await.status(), 200);
    // Dates in Datalog are whole seconds: the token is valid for at least 2 s and
    // at most 3 s from `soon`'s computation.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_problem(
        app.get_file(&short_lived, &id).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_problem(
        app.download(&short_lived, &id).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_problem(app.delete(&short_lived, &id).await, 401, "unauthenticated").await;
    assert_problem(app.list(&short_lived, "").await, 401, "unauthenticated").await;
    let body = json!({"name": "late", "size": 1, "sha256": sha256_hex(b"x")});
    assert_problem(app.create(&short_lived, body).await, 401, "unauthenticated").await;
    // The unattenuated token is untouched by its shortened sibling.
    assert_eq!(app.get_file(&token, &id).await.status(), 200);
}

/// An instant in Datalog's RFC 3339 form.
fn biscuit_time(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[actix_web::test]
async fn tokens_from_untrusted_or_unknown_keys_are_unauthenticated() {
    let app = spawn_app().await;
    let tenant = TenantId::parse("acme").unwrap();
    let device = Principal::Device(DeviceId::parse("dev-42").unwrap());
    // Right id, wrong key.
    let impostor = RootKey {
        id: app.root_key.id,
        keypair: KeyPair::new(),
    };
    let forged = token::mint(&impostor, &tenant, &device, Duration::from_secs(60)).unwrap();
    assert_problem(app.list(&forged, "").await, 401, "unauthenticated").await;
    // Unknown key id.
    let unknown = RootKey::generate(Some(999));
    let token = token::mint(&unknown, &tenant, &device, Duration::from_secs(60)).unwrap();
    let problem = assert_problem(app.list(&token, "").await, 401, "unauthenticated").await;
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("does not trust"));
}

#[actix_web::test]
async fn attenuation_blocks_cannot_change_the_identity() {
    let app = spawn_app().await;
    let owner = app.device_token("acme", "dev-1");
    let file = app.upload(&owner, &body_of(20), json!({})).await;
    // dev-2 appends a block claiming to be dev-1: facts of later blocks are not trusted.
    let token = app.device_token("acme", "dev-2");
    let claimed = attenuate(&app, &token, r#"device("dev-1");"#);
    assert_problem(
        app.get_file(&claimed, file["id"].as_str().unwrap()).await,
        404,
        "not_found",
    )
    .await;

    // An authority block naming both a device and a service is refused.
    let both = Biscuit::builder()
        .fact(fact("tenant", &[string("acme")]))
        .unwrap()
        .fact(fact("device", &[string("dev-1")]))
        .unwrap()
        .fact(fact("service", &[string("fleet")]))
        .unwrap()
        .root_key_id(app.root_key.id)
        .build(&app.root_key.keypair)
        .unwrap()
        .to_base64()
        .unwrap();
    assert_problem(app.list(&both, "").await, 401, "unauthenticated").await;
}
