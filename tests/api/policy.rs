//! Tenant policy: per-tenant file limits, quotas per tenant and device (exact under
//! concurrency across instances), rate limits and `GET /v1/usage`.

use serde_json::{json, Value};
use valet::configuration::{Settings, TenantPolicy};

use crate::helpers::{
    assert_problem, body_of, sha256_hex, spawn_app_on_postgres, spawn_app_with, with_redis_cache,
    TestApp,
};

fn policy_for(tenant: &str, policy: TenantPolicy) -> impl FnOnce(&mut Settings) {
    let tenant = tenant.to_owned();
    move |s: &mut Settings| {
        s.policy.tenants.insert(tenant, policy);
    }
}

fn declared(bytes: &[u8], extra: Value) -> Value {
    let mut body = json!({"name": "f.bin", "size": bytes.len(), "sha256": sha256_hex(bytes)});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

async fn usage(app: &TestApp, token: &str, query: &str) -> Value {
    let response = app
        .client
        .get(app.url(&format!("/v1/usage{query}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("usage");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("usage JSON")
}

async fn assert_quota(response: reqwest::Response, limit: &str) {
    let problem = assert_problem(response, 403, "quota_exceeded").await;
    assert_eq!(problem["limit"], limit, "{problem}");
}

#[actix_web::test]
async fn a_tenant_limits_file_size_and_content_type() {
    let app = spawn_app_with(policy_for(
        "acme",
        TenantPolicy {
            max_upload_bytes: Some(100),
            allowed_content_types: Some(vec!["image/*".into(), "application/json".into()]),
            ..TenantPolicy::default()
        },
    ))
    .await;
    let token = app.device_token("acme", "dev-1");
    let at_limit = body_of(100);
    let ok = app
        .create(
            &token,
            declared(&at_limit, json!({"content_type": "image/png"})),
        )
        .await;
    assert_eq!(ok.status().as_u16(), 201);
    let over = body_of(101);
    let too_large = app
        .create(
            &token,
            declared(&over, json!({"content_type": "image/png"})),
        )
        .await;
    assert_problem(too_large, 413, "payload_too_large").await;
    let json_ok = app
        .create(
            &token,
            declared(&at_limit, json!({"content_type": "application/json"})),
        )
        .await;
    assert_eq!(json_ok.status().as_u16(), 201);
    let refused = app
        .create(
            &token,
            declared(&at_limit, json!({"content_type": "text/plain"})),
        )
        .await;
    assert_problem(refused, 415, "unsupported_media_type").await;
    // No content type is application/octet-stream: not allowed either.
    let default_type = app.create(&token, declared(&at_limit, json!({}))).await;
    assert_problem(default_type, 415, "unsupported_media_type").await;
    // Another tenant has no such policy.
    let other = app.device_token("globex", "dev-1");
    assert_eq!(
        app.create(
            &other,
            declared(&over, json!({"content_type": "text/plain"}))
        )
        .await
        .status()
        .as_u16(),
        201
    );
}

#[actix_web::test]
async fn file_quotas_count_pending_files_and_release_them_when_they_end() {
    let app = spawn_app_with(policy_for(
        "acme",
        TenantPolicy {
            max_files: Some(3),
            ..TenantPolicy::default()
        },
    ))
    .await;
    let token = app.device_token("acme", "dev-1");
    let mut ids = Vec::new();
    for n in 0..3 {
        let created = app.create_ok(&token, &body_of(10 + n), json!({})).await;
        ids.push(created["file"]["id"].as_str().expect("id").to_owned());
    }
    assert_quota(
        app.create(&token, declared(&body_of(5), json!({}))).await,
        "max_files",
    )
    .await;

    // Deleting a pending file releases its reservation.
    assert_eq!(app.delete(&token, &ids[0]).await.status().as_u16(), 204);
    let replacement = body_of(7);
    app.create_ok(&token, &replacement, json!({})).await;
    assert_quota(
        app.create(&token, declared(&body_of(5), json!({}))).await,
        "max_files",
    )
    .await;
    // Uploaded files count as much as pending ones.
    assert_eq!(app.delete(&token, &ids[1]).await.status().as_u16(), 204);
    let uploaded = app
        .upload(&app.device_token("acme", "dev-2"), &body_of(3), json!({}))
        .await;
    assert_eq!(uploaded["status"], "uploaded");
    assert_quota(
        app.create(&token, declared(&body_of(5), json!({}))).await,
        "max_files",
    )
    .await;
}

#[actix_web::test]
async fn byte_quotas_hold_at_the_boundary_per_tenant_and_per_device() {
    let app = spawn_app_with(policy_for(
        "acme",
        TenantPolicy {
            max_bytes: Some(1000),
            device_max_bytes: Some(600),
            device_max_files: Some(10),
            ..TenantPolicy::default()
        },
    ))
    .await;
    let one = app.device_token("acme", "dev-1");
    let two = app.device_token("acme", "dev-2");
    // dev-1 fills its own 600 bytes exactly, then one byte more is refused.
    app.upload(&one, &body_of(600), json!({})).await;
    assert_quota(
        app.create(&one, declared(&body_of(1), json!({}))).await,
        "device_max_bytes",
    )
    .await;
    // dev-2 is not affected by dev-1's quota, only by the tenant's 400 bytes left.
    app.create_ok(&two, &body_of(400), json!({})).await;
    assert_quota(
        app.create(&two, declared(&body_of(1), json!({}))).await,
        "max_bytes",
    )
    .await;

    let seen = usage(&app, &one, "").await;
    assert_eq!(
        seen["tenant"],
        json!({"bytes_used": 600, "files_used": 1, "bytes_reserved": 400, "files_reserved": 1,
               "max_bytes": 1000, "max_files": null})
    );
    assert_eq!(
        seen["devices"],
        json!([{"device_id": "dev-1", "bytes_used": 600, "files_used": 1, "bytes_reserved": 0,
                "files_reserved": 0, "max_bytes": 600, "max_files": 10}]),
        "a device sees only itself"
    );
    let service = app.service_token("acme", "ops");
    let first = usage(&app, &service, "?limit=1").await;
    assert_eq!(first["devices"][0]["device_id"], "dev-1");
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = usage(&app, &service, &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(second["devices"][0]["device_id"], "dev-2");
    assert_eq!(second["devices"][0]["bytes_reserved"], 400);
    assert!(second["next_cursor"].is_null());
    let bad = app
        .client
        .get(app.url("/v1/usage?limit=0"))
        .bearer_auth(&service)
        .send()
        .await
        .expect("usage");
    assert_problem(bad, 400, "invalid_request").await;
}

#[actix_web::test]
async fn an_expired_or_rejected_file_releases_its_reservation() {
    let app = spawn_app_with(|s| {
        s.uploads.upload_url_ttl_secs = 1;
        s.reconciler.interval_secs = 1;
        s.reconciler.grace_secs = 0;
        s.policy.default.max_files = Some(1);
    })
    .await;
    let token = app.device_token("acme", "dev-1");
    let created = app.create_ok(&token, &body_of(10), json!({})).await;
    let id = created["file"]["id"].as_str().expect("id");
    app.wait_for_file(&token, id, |f| f["status"] == "expired")
        .await;
    let seen = usage(&app, &token, "").await;
    assert_eq!(seen["tenant"]["files_reserved"], 0, "{seen}");

    // Stored bytes that do not match: rejected at completion, released.
    let declared_bytes = body_of(10);
    let created = app.create_ok(&token, &declared_bytes, json!({})).await;
    let id = created["file"]["id"].as_str().expect("id");
    let url = url::Url::parse(created["upload"]["url"].as_str().expect("url")).expect("url");
    let key = url.path().trim_start_matches("/v1/objects/local/");
    let path = app.data_dir.path().join("objects").join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, body_of(11)).expect("plant other bytes");
    assert_problem(app.complete(&token, id).await, 422, "size_mismatch").await;
    let seen = usage(&app, &token, "").await;
    assert_eq!(seen["tenant"]["files_reserved"], 0, "{seen}");
    app.create_ok(&token, &body_of(3), json!({})).await;
}

#[actix_web::test]
async fn creates_racing_for_the_last_quota_on_two_instances_never_overcommit() {
    let app = spawn_app_on_postgres(|s| {
        with_redis_cache(s);
        s.policy.default.max_files = Some(10);
        s.policy.default.max_bytes = Some(1_000_000);
    })
    .await;
    let second = app.spawn_another_instance().await;
    let token = app.device_token("acme", "dev-1");
    let attempts = (0..64).map(|n| {
        let base = if n % 2 == 0 {
            app.address.clone()
        } else {
            second.clone()
        };
        let body = declared(&body_of(100 + n), json!({}));
        let client = app.client.clone();
        let token = token.clone();
        async move {
            client
                .post(format!("{base}/v1/files"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("create")
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let mut created = Vec::new();
    let mut refused = 0;
    for answer in answers {
        match answer.status().as_u16() {
            201 => created.push(answer.json::<Value>().await.expect("created")),
            _ => {
                assert_quota(answer, "max_files").await;
                refused += 1;
            }
        }
    }
    assert_eq!(created.len(), 10, "exactly the quota was granted");
    assert_eq!(refused, 54);
    let seen = usage(&app, &token, "").await;
    assert_eq!(seen["tenant"]["files_reserved"], 10, "{seen}");
    // Every reservation goes with its file.
    for file in &created {
        let id = file["file"]["id"].as_str().expect("id");
        assert_eq!(app.delete(&token, id).await.status().as_u16(), 204);
    }
    let seen = usage(&app, &token, "").await;
    assert_eq!(
        (
            seen["tenant"]["files_reserved"].as_i64(),
            seen["tenant"]["bytes_reserved"].as_i64()
        ),
        (Some(0), Some(0)),
        "{seen}"
    );
}

#[actix_web::test]
async fn a_device_over_its_rate_gets_429_and_others_are_unaffected() {
    let app = spawn_app_with(policy_for(
        "acme",
        TenantPolicy {
            device_requests_per_second: Some(1),
            device_burst: Some(3),
            ..TenantPolicy::default()
        },
    ))
    .await;
    let noisy = app.device_token("acme", "dev-noisy");
    let quiet = app.device_token("acme", "dev-quiet");
    let mut limited = None;
    for _ in 0..10 {
        let response = app.list(&noisy, "").await;
        if response.status().as_u16() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status().as_u16(), 200);
    }
    let limited = limited.expect("the device was rate limited");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    assert_problem(limited, 429, "rate_limited").await;
    assert_eq!(app.list(&quiet, "").await.status().as_u16(), 200);
}

#[actix_web::test]
async fn a_tenant_over_its_rate_gets_429_and_other_tenants_are_unaffected() {
    let app = spawn_app_with(policy_for(
        "acme",
        TenantPolicy {
            requests_per_second: Some(1),
            burst: Some(2),
            ..TenantPolicy::default()
        },
    ))
    .await;
    let tokens: Vec<String> = (0..5)
        .map(|n| app.device_token("acme", &format!("dev-{n}")))
        .collect();
    let mut statuses = Vec::new();
    for token in &tokens {
        statuses.push(app.list(token, "").await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let other = app.device_token("globex", "dev-0");
    assert_eq!(app.list(&other, "").await.status().as_u16(), 200);
}

#[actix_web::test]
async fn a_device_file_quota_holds_at_the_boundary_and_spares_other_devices() {
    let app = spawn_app_with(policy_for(
        "acme",
        TenantPolicy {
            device_max_files: Some(2),
            ..TenantPolicy::default()
        },
    ))
    .await;
    let one = app.device_token("acme", "dev-1");
    app.create_ok(&one, &body_of(10), json!({})).await;
    app.upload(&one, &body_of(11), json!({})).await;
    assert_quota(
        app.create(&one, declared(&body_of(12), json!({}))).await,
        "device_max_files",
    )
    .await;
    // Another device, and the tenant's shared root, are not bound by dev-1's quota.
    let two = app.device_token("acme", "dev-2");
    app.create_ok(&two, &body_of(13), json!({})).await;
    let service = app.service_token("acme", "ops");
    app.create_ok(&service, &body_of(14), json!({"shared": true}))
        .await;
}

#[actix_web::test]
async fn usage_is_exact_when_many_writers_commit_new_files_at_once() {
    // Two instances with two writers each: each writer counts in its own shard of
    // the counters, and usage sums them.
    let app = spawn_app_on_postgres(with_redis_cache).await;
    let second = app.spawn_another_instance().await;
    let devices = [
        app.device_token("acme", "dev-1"),
        app.device_token("acme", "dev-2"),
    ];
    let creates = (0..64).map(|n| {
        let base = if n % 2 == 0 {
            app.address.clone()
        } else {
            second.clone()
        };
        let body = declared(&body_of(10), json!({}));
        let (client, token) = (app.client.clone(), devices[n / 32].clone());
        async move {
            client
                .post(format!("{base}/v1/files"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("create")
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(creates).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let service = app.service_token("acme", "ops");
    let seen = usage(&app, &service, "?limit=1").await;
    assert_eq!(seen["tenant"]["files_reserved"], 64, "{seen}");
    assert_eq!(seen["tenant"]["bytes_reserved"], 640, "{seen}");
    assert_eq!(
        seen["devices"],
        json!([{"device_id": "dev-1", "bytes_used": 0, "files_used": 0, "bytes_reserved": 320,
                "files_reserved": 32, "max_bytes": null, "max_files": null}]),
        "one entry per device, whatever the shards"
    );
    let cursor = seen["next_cursor"].as_str().expect("a second page");
    let rest = usage(&app, &service, &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(rest["devices"][0]["device_id"], "dev-2", "{rest}");
    assert_eq!(rest["devices"][0]["files_reserved"], 32, "{rest}");
    assert!(rest["next_cursor"].is_null(), "{rest}");

    // A status change (counted in another shard) moves the count.
    let bytes = body_of(10);
    let file = app.upload(&devices[0], &bytes, json!({})).await;
    assert_eq!(file["status"], "uploaded", "{file}");
    let seen = usage(&app, &service, "").await;
    assert_eq!(
        (
            seen["tenant"]["files_used"].as_i64(),
            seen["tenant"]["files_reserved"].as_i64()
        ),
        (Some(1), Some(64)),
        "{seen}"
    );
}
