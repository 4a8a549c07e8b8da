//! Transfers between devices: inbox allow lists, offering a file, what recipients,
//! senders, bystanders and other tenants see, revocation, expiry by the
//! reconciler, revocation by deleting the file, and the events on RabbitMQ.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::amqp::{Broker, BROKER};
use crate::helpers::{assert_problem, body_of, patience, spawn_app, spawn_app_with, TestApp};

impl TestApp {
    async fn put_inbox(&self, token: &str, device: &str, body: Value) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v1/devices/{device}/inbox")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("put inbox")
    }

    async fn get_inbox(&self, token: &str, device: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/devices/{device}/inbox")))
            .bearer_auth(token)
            .send()
            .await
            .expect("get inbox")
    }

    /// Sets `device`'s allow list with its own token; asserts 200.
    async fn accept_from(&self, tenant: &str, device: &str, accept_from: Value) {
        let token = self.device_token(tenant, device);
        let response = self
            .put_inbox(&token, device, json!({ "accept_from": accept_from }))
            .await;
        assert_eq!(response.status().as_u16(), 200);
        let inbox: Value = response.json().await.expect("inbox");
        assert_eq!(inbox["device_id"], device);
    }

    async fn send(&self, token: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/transfers"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("send")
    }

    /// Offers `file` to `to`; asserts 201 and returns the transfer.
    async fn send_ok(&self, token: &str, file: &str, to: &[&str]) -> Value {
        let response = self.send(token, json!({"file_id": file, "to": to})).await;
        assert_eq!(
            response.status().as_u16(),
            201,
            "{:?}",
            response.text().await
        );
        let id_header = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("Location");
        let body: Value = response.json().await.expect("created transfer");
        let transfer = body["transfer"].clone();
        assert_eq!(
            id_header,
            format!("/v1/transfers/{}", transfer["id"].as_str().expect("id"))
        );
        transfer
    }

    async fn get_transfer(&self, token: &str, id: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/transfers/{id}"),
            token,
            None,
        )
        .await
    }

    async fn download_transfer(&self, token: &str, id: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/transfers/{id}/download"),
            token,
            None,
        )
        .await
    }

    async fn accept_transfer(&self, token: &str, id: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/transfers/{id}/accept"),
            token,
            None,
        )
        .await
    }

    async fn revoke_transfer(&self, token: &str, id: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/transfers/{id}"),
            token,
            None,
        )
        .await
    }

    async fn list_transfers(&self, token: &str, query: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/transfers?{query}"),
            token,
            None,
        )
        .await
    }

    /// The ids of one page of `GET /v1/transfers?{query}`; asserts 200.
    async fn transfer_ids(&self, token: &str, query: &str) -> Vec<String> {
        let response = self.list_transfers(token, query).await;
        assert_eq!(response.status().as_u16(), 200);
        let page: Value = response.json().await.expect("page");
        page["transfers"]
            .as_array()
            .expect("transfers")
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// Polls the transfer (as `token`) until `done` holds (at most 20 s).
    async fn wait_for_transfer(
        &self,
        token: &str,
        id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + patience(Duration::from_secs(20));
        let mut last = Value::Null;
        while std::time::Instant::now() < deadline {
            last = self
                .get_transfer(token, id)
                .await
                .json()
                .await
                .expect("transfer");
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the transfer never reached the expected state: {last}");
    }

    /// Outbox event types recorded for the transfer `id`, in order.
    async fn transfer_events(&self, id: &str) -> Vec<(String, Option<String>)> {
        self.outbox()
            .await
            .into_iter()
            .filter(|e| e.event_type.starts_with("io.valet.transfer."))
            .filter(|e| {
                serde_json::from_str::<Value>(&e.payload).expect("payload")["transferid"] == id
            })
            .map(|e| (e.event_type, e.device_id))
            .collect()
    }
}

fn state_of<'a>(transfer: &'a Value, device: &str) -> &'a Value {
    &transfer["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .find(|r| r["device_id"] == device)
        .unwrap_or_else(|| panic!("{device} is no recipient: {transfer}"))["state"]
}

fn uuid_version(id: &str) -> usize {
    uuid::Uuid::parse_str(id).expect("uuid").get_version_num()
}

#[actix_web::test]
async fn allow_lists_decide_which_devices_may_send() {
    let app = spawn_app().await;
    let sender = app.device_token("acme", "dev-7");
    let file = app.upload(&sender, &body_of(64), json!({})).await;
    let file_id = file["id"].as_str().expect("id");
    let recipient = app.device_token("acme", "dev-9");

    // Default: nobody.
    let inbox: Value = app
        .get_inbox(&recipient, "dev-9")
        .await
        .json()
        .await
        .expect("inbox");
    assert_eq!(inbox, json!({"device_id": "dev-9", "accept_from": []}));
    let refused = assert_problem(
        app.send(&sender, json!({"file_id": file_id, "to": ["dev-9"]}))
            .await,
        403,
        "transfer_refused",
    )
    .await;
    assert_eq!(refused["refused"], json!(["dev-9"]));

    // A list naming the sender.
    app.accept_from("acme", "dev-9", json!(["dev-7", "dev-3"]))
        .await;
    let inbox: Value = app
        .get_inbox(&recipient, "dev-9")
        .await
        .json()
        .await
        .expect("inbox");
    assert_eq!(inbox["accept_from"], json!(["dev-3", "dev-7"]));
    app.send_ok(&sender, file_id, &["dev-9"]).await;

    // A list not naming it.
    app.accept_from("acme", "dev-9", json!(["dev-3"])).await;
    assert_problem(
        app.send(&sender, json!({"file_id": file_id, "to": ["dev-9"]}))
            .await,
        403,
        "transfer_refused",
    )
    .await;

    // Anyone of the tenant.
    app.accept_from("acme", "dev-9", json!("*")).await;
    app.send_ok(&sender, file_id, &["dev-9"]).await;

    // Empty again: nobody, but services may always send.
    app.accept_from("acme", "dev-9", json!([])).await;
    assert_problem(
        app.send(&sender, json!({"file_id": file_id, "to": ["dev-9"]}))
            .await,
        403,
        "transfer_refused",
    )
    .await;
    let service = app.service_token("acme", "fleet");
    let by_service = app.send_ok(&service, file_id, &["dev-9"]).await;
    assert_eq!(by_service["from"], Value::Null);
    assert_eq!(by_service["from_service"], "fleet");

    // A service may read and set any device's inbox of its tenant.
    let set = app
        .put_inbox(&service, "dev-9", json!({"accept_from": "*"}))
        .await;
    assert_eq!(set.status().as_u16(), 200);
    let read: Value = app
        .get_inbox(&service, "dev-9")
        .await
        .json()
        .await
        .expect("inbox");
    assert_eq!(read["accept_from"], "*");

    // Another device: no such inbox, whatever it asks.
    assert_problem(app.get_inbox(&sender, "dev-9").await, 404, "not_found").await;
    assert_problem(
        app.put_inbox(&sender, "dev-9", json!({"accept_from": "*"}))
            .await,
        404,
        "not_found",
    )
    .await;
    // Bodies that are no allow list.
    for bad in [
        json!({"accept_from": "all"}),
        json!({"accept_from": ["a/b"]}),
        json!({"accept_from": 3}),
        json!({}),
        json!({"accept_from": "*", "extra": 1}),
        json!(["*"]),
    ] {
        assert_problem(
            app.put_inbox(&recipient, "dev-9", bad).await,
            400,
            "invalid_request",
        )
        .await;
    }
    let unauthenticated = app
        .client
        .get(app.url("/v1/devices/dev-9/inbox"))
        .send()
        .await
        .expect("request");
    assert_problem(unauthenticated, 401, "unauthenticated").await;
}

#[actix_web::test]
async fn one_refusing_recipient_refuses_the_whole_transfer() {
    let app = spawn_app().await;
    let sender = app.device_token("acme", "dev-7");
    let file = app.upload(&sender, &body_of(64), json!({})).await;
    let file_id = file["id"].as_str().expect("id");
    app.accept_from("acme", "dev-8", json!(["dev-7"])).await;
    app.accept_from("acme", "dev-9", json!(["dev-1"])).await;

    let refused = assert_problem(
        app.send(
            &sender,
            json!({"file_id": file_id, "to": ["dev-8", "dev-9"]}),
        )
        .await,
        403,
        "transfer_refused",
    )
    .await;
    assert_eq!(refused["refused"], json!(["dev-9"]));

    // Nothing was created: no transfer on either side, no event.
    let accepting = app.device_token("acme", "dev-8");
    assert!(app
        .transfer_ids(&accepting, "direction=in")
        .await
        .is_empty());
    assert!(app.transfer_ids(&sender, "direction=out").await.is_empty());
    let service = app.service_token("acme", "fleet");
    assert!(app.transfer_ids(&service, "").await.is_empty());
    assert!(app
        .outbox()
        .await
        .iter()
        .all(|e| !e.event_type.starts_with("io.valet.transfer.")));
}

#[actix_web::test]
async fn a_recipient_downloads_the_bytes_and_sees_nothing_else_of_the_sender() {
    let app = spawn_app().await;
    let sender = app.device_token("acme", "dev-7");
    let bytes = body_of(3000);
    let sent = app
        .upload(&sender, &bytes, json!({"metadata": {"k": "v"}}))
        .await;
    let kept = app.upload(&sender, &body_of(10), json!({})).await;
    let sent_id = sent["id"].as_str().expect("id");
    let kept_id = kept["id"].as_str().expect("id");
    app.accept_from("acme", "dev-9", json!(["dev-7"])).await;
    let transfer = app.send_ok(&sender, sent_id, &["dev-9"]).await;
    let id = transfer["id"].as_str().expect("id");
    assert_eq!(uuid_version(id), 7);
    assert_eq!(transfer["file_id"], sent_id);
    assert_eq!(transfer["from"], "dev-7");
    assert_eq!(transfer["state"], "offered");
    assert_eq!(
        transfer["recipients"],
        json!([{"device_id": "dev-9", "state": "offered"}])
    );
    assert_eq!(transfer["file"]["sha256"], sent["sha256"]);
    assert!(transfer["created_at"].is_string() && transfer["expires_at"].is_string());

    let recipient = app.device_token("acme", "dev-9");
    let seen: Value = app
        .get_transfer(&recipient, id)
        .await
        .json()
        .await
        .expect("transfer");
    assert_eq!(seen, transfer);
    assert_eq!(app.transfer_ids(&recipient, "direction=in").await, [id]);
    assert_eq!(app.transfer_ids(&recipient, "").await, [id]);
    assert_eq!(app.transfer_ids(&sender, "direction=out").await, [id]);
    assert!(app.transfer_ids(&sender, "direction=in").await.is_empty());

    // The signed download is the same request a file download is, and serves the bytes.
    let response = app.download_transfer(&recipient, id).await;
    assert_eq!(response.status().as_u16(), 200);
    let signed: Value = response.json().await.expect("signed");
    assert_eq!(signed["method"], "GET");
    let own: Value = app
        .download(&sender, sent_id)
        .await
        .json()
        .await
        .expect("signed");
    assert_eq!(
        url::Url::parse(signed["url"].as_str().expect("url"))
            .expect("url")
            .path(),
        url::Url::parse(own["url"].as_str().expect("url"))
            .expect("url")
            .path()
    );
    let fetched = app.send_signed(&signed, Vec::new()).await;
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.bytes().await.expect("bytes").to_vec(), bytes);
    let redirect = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/transfers/{id}/download?redirect=true"),
            &recipient,
            None,
        )
        .await;
    assert_eq!(redirect.status().as_u16(), 307);

    // Nothing of the sender's files is visible outside the transfer.
    app.assert_not_found_for(&recipient, sent_id).await;
    app.assert_not_found_for(&recipient, kept_id).await;
    let listing = app.list(&recipient, "device_id=dev-7").await;
    assert_problem(listing, 404, "not_found").await;

    // Accepting: per recipient, idempotent, then filters by the recipient's state.
    let accepted = app.accept_transfer(&recipient, id).await;
    assert_eq!(accepted.status().as_u16(), 200);
    let accepted: Value = accepted.json().await.expect("transfer");
    assert_eq!(state_of(&accepted, "dev-9"), "received");
    assert_eq!(accepted["state"], "received");
    let again: Value = app
        .accept_transfer(&recipient, id)
        .await
        .json()
        .await
        .expect("transfer");
    assert_eq!(again, accepted);
    assert_eq!(
        app.transfer_ids(&recipient, "direction=in&state=received")
            .await,
        [id]
    );
    assert!(app
        .transfer_ids(&recipient, "direction=in&state=offered")
        .await
        .is_empty());
    assert_eq!(
        app.transfer_ids(&sender, "direction=out&state=received")
            .await,
        [id]
    );
    // Downloads go on after accepting, until the transfer ends.
    assert_eq!(app.download_transfer(&recipient, id).await.status(), 200);

    // Only a recipient accepts; only the sender (or a service) revokes.
    assert_problem(app.accept_transfer(&sender, id).await, 403, "forbidden").await;
    let service = app.service_token("acme", "fleet");
    assert_problem(app.accept_transfer(&service, id).await, 403, "forbidden").await;
    assert_problem(app.revoke_transfer(&recipient, id).await, 403, "forbidden").await;
    assert_eq!(app.get_transfer(&service, id).await.status(), 200);
    assert_eq!(app.download_transfer(&sender, id).await.status(), 200);
}

#[actix_web::test]
async fn bystanders_and_other_tenants_never_see_a_transfer() {
    let app = spawn_app().await;
    let sender = app.device_token("acme", "dev-7");
    let file = app.upload(&sender, &body_of(64), json!({})).await;
    app.accept_from("acme", "dev-9", json!("*")).await;
    let transfer = app
        .send_ok(&sender, file["id"].as_str().expect("id"), &["dev-9"])
        .await;
    let id = transfer["id"].as_str().expect("id");
    for token in [
        app.device_token("acme", "dev-5"),
        app.device_token("globex", "dev-9"),
        app.device_token("globex", "dev-7"),
        app.service_token("globex", "fleet"),
    ] {
        assert_problem(app.get_transfer(&token, id).await, 404, "not_found").await;
        assert_problem(app.download_transfer(&token, id).await, 404, "not_found").await;
        assert_problem(app.accept_transfer(&token, id).await, 404, "not_found").await;
        assert_problem(app.revoke_transfer(&token, id).await, 404, "not_found").await;
        assert!(app.transfer_ids(&token, "").await.is_empty());
    }
    // Another tenant's device cannot send the file either.
    let stranger = app.device_token("globex", "dev-7");
    assert_problem(
        app.send(&stranger, json!({"file_id": file["id"], "to": ["dev-9"]}))
            .await,
        404,
        "not_found",
    )
    .await;
    // Ids that are no UUID are no transfer.
    let recipient = app.device_token("acme", "dev-9");
    assert_problem(app.get_transfer(&recipient, "nope").await, 404, "not_found").await;
    assert_problem(
        app.get_transfer(&recipient, &uuid::Uuid::now_v7().to_string())
            .await,
        404,
        "not_found",
    )
    .await;
}

#[actix_web::test]
async fn every_refused_request_says_why() {
    let app = spawn_app().await;
    let sender = app.device_token("acme", "dev-7");
    let bytes = body_of(64);
    let file = app.upload(&sender, &bytes, json!({})).await;
    let file_id = file["id"].as_str().expect("id");
    app.accept_from("acme", "dev-9", json!("*")).await;

    for body in [
        json!({"file_id": file_id, "to": []}),
        json!({"file_id": file_id, "to": ["dev-7"]}),
        json!({"file_id": file_id, "to": ["a/b"]}),
        json!({"file_id": file_id, "to": ["dev-9"], "expires_in_secs": 0}),
        json!({"file_id": file_id, "to": ["dev-9"], "expires_in_secs": 2_592_001}),
        json!({"file_id": file_id, "to": ["dev-9"], "color": "red"}),
        json!({"file_id": file_id}),
        json!({"file_id": "not-a-uuid", "to": ["dev-9"]}),
        json!([file_id, ["dev-9"]]),
    ] {
        assert_problem(app.send(&sender, body).await, 400, "invalid_request").await;
    }
    let too_many: Vec<String> = (0..101).map(|i| format!("dev-r{i}")).collect();
    assert_problem(
        app.send(&sender, json!({"file_id": file_id, "to": too_many}))
            .await,
        400,
        "invalid_request",
    )
    .await;

    // A file still pending cannot be sent.
    let pending = app.create_ok(&sender, &bytes, json!({})).await;
    assert_problem(
        app.send(
            &sender,
            json!({"file_id": pending["file"]["id"], "to": ["dev-9"]}),
        )
        .await,
        409,
        "not_uploaded",
    )
    .await;
    // Another device's file does not exist for the caller; a shared file may be
    // read by a device, not sent.
    let other = app.device_token("acme", "dev-5");
    assert_problem(
        app.send(&other, json!({"file_id": file_id, "to": ["dev-9"]}))
            .await,
        404,
        "not_found",
    )
    .await;
    let service = app.service_token("acme", "fleet");
    let shared = app.upload(&service, &bytes, json!({"shared": true})).await;
    assert_problem(
        app.send(&sender, json!({"file_id": shared["id"], "to": ["dev-9"]}))
            .await,
        403,
        "forbidden",
    )
    .await;
    let unauthenticated = app
        .client
        .post(app.url("/v1/transfers"))
        .json(&json!({"file_id": file_id, "to": ["dev-9"]}))
        .send()
        .await
        .expect("request");
    assert_problem(unauthenticated, 401, "unauthenticated").await;

    // Listing: a cursor this API did not return, a service's inbox, bad filters.
    for query in [
        "cursor=abc",
        "direction=sideways",
        "state=lost",
        "limit=0",
        "limit=1001",
    ] {
        assert_problem(
            app.list_transfers(&sender, query).await,
            400,
            "invalid_request",
        )
        .await;
    }
    assert_problem(
        app.list_transfers(&service, "direction=in").await,
        400,
        "invalid_request",
    )
    .await;
    // A file cursor is no transfer cursor.
    let files: Value = app
        .list(&sender, "limit=1")
        .await
        .json()
        .await
        .expect("page");
    if let Some(cursor) = files["next_cursor"].as_str() {
        assert_problem(
            app.list_transfers(&sender, &format!("cursor={cursor}"))
                .await,
            400,
            "invalid_request",
        )
        .await;
    }
}

#[actix_web::test]
async fn transfers_are_listed_newest_first_a_page_at_a_time() {
    let app = spawn_app().await;
    let sender = app.device_token("acme", "dev-7");
    app.accept_from("acme", "dev-9", json!("*")).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let file = app.upload(&sender, &body_of(10 + i), json!({})).await;
        let transfer = app
            .send_ok(&sender, file["id"].as_str().expect("id"), &["dev-9"])
            .await;
        ids.push(transfer["id"].as_str().expect("id").to_owned());
    }
    ids.reverse();
    let recipient = app.device_token("acme", "dev-9");
    let mut seen = Vec::new();
    let mut query = "direction=in&limit=2".to_owned();
    loop {
        let page: Value = app
            .list_transfers(&recipient, &query)
            .await
            .json()
            .await
            .expect("page");
        let transfers = page["transfers"].as_array().expect("transfers");
        assert!(transfers.len() <= 2);
        seen.extend(
            transfers
                .iter()
                .map(|t| t["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("direction=in&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let service = app.service_token("acme", "fleet");
    assert_eq!(app.transfer_ids(&service, "limit=1000").await, ids);
}

#[actix_web::test]
async fn a_revoked_transfer_serves_no_more_downloads() {
    let app = spawn_app().await;
    let sender = app.device_token("acme", "dev-7");
    let file = app.upload(&sender, &body_of(64), json!({})).await;
    let file_id = file["id"].as_str().expect("id");
    app.accept_from("acme", "dev-8", json!("*")).await;
    app.accept_from("acme", "dev-9", json!("*")).await;
    let transfer = app.send_ok(&sender, file_id, &["dev-8", "dev-9"]).await;
    let id = transfer["id"].as_str().expect("id");
    let recipient = app.device_token("acme", "dev-9");
    assert_eq!(app.accept_transfer(&recipient, id).await.status(), 200);
    // A URL handed out before the revocation.
    let early: Value = app
        .download_transfer(&recipient, id)
        .await
        .json()
        .await
        .expect("signed");

    assert_eq!(app.revoke_transfer(&sender, id).await.status(), 204);
    assert_problem(
        app.download_transfer(&recipient, id).await,
        404,
        "not_found",
    )
    .await;
    let other = app.device_token("acme", "dev-8");
    assert_problem(app.download_transfer(&other, id).await, 404, "not_found").await;
    let revoked: Value = app
        .get_transfer(&recipient, id)
        .await
        .json()
        .await
        .expect("transfer");
    assert_eq!(revoked["state"], "revoked");
    // Who had accepted keeps `received`; who had not is `revoked`.
    assert_eq!(state_of(&revoked, "dev-9"), "received");
    assert_eq!(state_of(&revoked, "dev-8"), "revoked");
    assert_problem(app.accept_transfer(&other, id).await, 409, "conflict").await;
    // Idempotent, and a service may revoke too.
    assert_eq!(app.revoke_transfer(&sender, id).await.status(), 204);
    let service = app.service_token("acme", "fleet");
    assert_eq!(app.revoke_transfer(&service, id).await.status(), 204);
    // The URL already handed out lives until its own expiry (documented).
    assert_eq!(app.send_signed(&early, Vec::new()).await.status(), 200);
    // The file itself is untouched.
    assert_eq!(app.fetch(&sender, file_id).await, body_of(64));
    assert_eq!(
        app.transfer_events(id).await,
        [
            (
                "io.valet.transfer.offered".to_owned(),
                Some("dev-8".to_owned())
            ),
            (
                "io.valet.transfer.offered".to_owned(),
                Some("dev-9".to_owned())
            ),
            (
                "io.valet.transfer.received".to_owned(),
                Some("dev-9".to_owned())
            ),
            (
                "io.valet.transfer.revoked".to_owned(),
                Some("dev-8".to_owned())
            ),
            (
                "io.valet.transfer.revoked".to_owned(),
                Some("dev-9".to_owned())
            ),
        ]
    );
}

#[actix_web::test]
async fn deleting_the_file_revokes_its_transfers() {
    let app = spawn_app().await;
    let sender = app.device_token("acme", "dev-7");
    let file = app.upload(&sender, &body_of(64), json!({})).await;
    let file_id = file["id"].as_str().expect("id");
    app.accept_from("acme", "dev-9", json!("*")).await;
    let first = app.send_ok(&sender, file_id, &["dev-9"]).await;
    let second = app.send_ok(&sender, file_id, &["dev-9"]).await;
    let recipient = app.device_token("acme", "dev-9");
    assert_eq!(
        app.download_transfer(&recipient, first["id"].as_str().expect("id"))
            .await
            .status(),
        200
    );

    assert_eq!(app.delete(&sender, file_id).await.status().as_u16(), 204);
    for transfer in [&first, &second] {
        let id = transfer["id"].as_str().expect("id");
        assert_problem(
            app.download_transfer(&recipient, id).await,
            404,
            "not_found",
        )
        .await;
        let ended: Value = app
            .get_transfer(&recipient, id)
            .await
            .json()
            .await
            .expect("transfer");
        assert_eq!(ended["state"], "revoked");
        assert_eq!(state_of(&ended, "dev-9"), "revoked");
        assert_eq!(
            app.transfer_events(id).await,
            [
                (
                    "io.valet.transfer.offered".to_owned(),
                    Some("dev-9".to_owned())
                ),
                (
                    "io.valet.transfer.revoked".to_owned(),
                    Some("dev-9".to_owned())
                ),
            ]
        );
    }
    // A deleted file cannot be sent again.
    assert_problem(
        app.send(&sender, json!({"file_id": file_id, "to": ["dev-9"]}))
            .await,
        409,
        "not_uploaded",
    )
    .await;
}

#[actix_web::test]
async fn the_reconciler_expires_transfers() {
    let broker = Broker::new().await;
    let expirations = broker.bind("transfer.expired.#").await;
    let app = spawn_app_with(|s| {
        broker.configure(s, BROKER);
        s.reconciler.interval_secs = 1;
        s.reconciler.grace_secs = 0;
    })
    .await;
    let sender = app.device_token("acme", "dev-7");
    let file = app.upload(&sender, &body_of(64), json!({})).await;
    app.accept_from("acme", "dev-9", json!("*")).await;
    let response = app
        .send(
            &sender,
            json!({"file_id": file["id"], "to": ["dev-9"], "expires_in_secs": 1}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);
    let transfer: Value = response.json().await.expect("created");
    let id = transfer["transfer"]["id"].as_str().expect("id");
    let long_lived = app
        .send_ok(&sender, file["id"].as_str().expect("id"), &["dev-9"])
        .await;

    let recipient = app.device_token("acme", "dev-9");
    let expired = app
        .wait_for_transfer(&recipient, id, |t| t["state"] == "expired")
        .await;
    assert_eq!(state_of(&expired, "dev-9"), "expired");
    assert_problem(
        app.download_transfer(&recipient, id).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(app.accept_transfer(&recipient, id).await, 409, "conflict").await;
    assert_problem(app.revoke_transfer(&sender, id).await, 409, "conflict").await;
    assert_eq!(app.transfer_ids(&recipient, "state=expired").await, [id]);
    assert_eq!(
        app.transfer_events(id).await,
        [
            (
                "io.valet.transfer.offered".to_owned(),
                Some("dev-9".to_owned())
            ),
            (
                "io.valet.transfer.expired".to_owned(),
                Some("dev-9".to_owned())
            ),
        ]
    );
    let published = expirations.wait_for(1).await;
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].routing_key, "transfer.expired.acme.dev-9");
    assert_eq!(published[0].body["transferid"], id);
    // The other transfer of the same file lives on.
    let other = long_lived["id"].as_str().expect("id");
    assert_eq!(app.download_transfer(&recipient, other).await.status(), 200);
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("valet_transfers_total")
                && l.contains("state=\"expired\"")
                && l.contains("tenant=\"acme\"")),
        "{metrics}"
    );
}

#[actix_web::test]
async fn every_transfer_event_reaches_rabbitmq_with_its_transfer_id() {
    let broker = Broker::new().await;
    let transfers = broker.bind("transfer.#").await;
    let files = broker.bind("file.#").await;
    let app = spawn_app_with(|s| broker.configure(s, BROKER)).await;
    let sender = app.device_token("acme", "dev-7");
    let file = app.upload(&sender, &body_of(64), json!({})).await;
    let file_id = file["id"].as_str().expect("id");
    app.accept_from("acme", "dev-8", json!("*")).await;
    app.accept_from("acme", "dev-9", json!("*")).await;
    let transfer = app.send_ok(&sender, file_id, &["dev-8", "dev-9"]).await;
    let id = transfer["id"].as_str().expect("id");
    let recipient = app.device_token("acme", "dev-9");
    assert_eq!(app.accept_transfer(&recipient, id).await.status(), 200);
    assert_eq!(app.revoke_transfer(&sender, id).await.status(), 204);

    let messages = transfers.wait_for(5).await;
    let keys: BTreeSet<String> = messages.iter().map(|m| m.routing_key.clone()).collect();
    assert_eq!(
        keys,
        [
            "transfer.offered.acme.dev-8",
            "transfer.offered.acme.dev-9",
            "transfer.received.acme.dev-9",
            "transfer.revoked.acme.dev-8",
            "transfer.revoked.acme.dev-9",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    for message in &messages {
        let event = &message.body;
        assert_eq!(event["transferid"], id, "{event}");
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"], message.message_id.as_str());
        assert_eq!(event["type"], message.kind.as_str());
        assert_eq!(uuid_version(event["id"].as_str().expect("id")), 5);
        let recipient = message.routing_key.rsplit('.').next().expect("recipient");
        assert_eq!(event["data"]["recipient"], recipient);
        assert_eq!(event["subject"], format!("acme/{recipient}/{id}"));
        assert_eq!(event["data"]["id"], id);
        assert_eq!(event["data"]["file_id"], file_id);
        assert_eq!(
            format!("transfer.{}", &event["type"].as_str().expect("type")[18..]),
            message.routing_key.rsplitn(3, '.').nth(2).expect("prefix")
        );
    }
    // Delivered as file events are, and valid against the published schema.
    let schema: Value =
        serde_json::from_str(valet::events::TRANSFER_EVENT_SCHEMA).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    for message in &messages {
        assert_eq!(message.content_type, "application/cloudevents+json");
        assert_eq!(message.delivery_mode, 2, "persistent");
        assert_eq!(message.headers["tenant"].as_deref(), Some("acme"));
        assert_eq!(
            message.headers["device"].as_deref(),
            message.routing_key.rsplit('.').next()
        );
        let errors: Vec<String> = validator
            .iter_errors(&message.body)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}\n{}", message.body);
    }
    let served = app
        .client
        .get(app.url("/schemas/transfer-event.json"))
        .send()
        .await
        .expect("schema");
    assert_eq!(served.json::<Value>().await.expect("json"), schema);
    let ids: BTreeSet<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), 5, "one id per recipient and event");
    // The order of each recipient's events holds.
    let nine: Vec<&str> = messages
        .iter()
        .filter(|m| m.routing_key.ends_with(".dev-9"))
        .map(|m| m.kind.as_str())
        .collect();
    assert_eq!(
        nine,
        [
            "io.valet.transfer.offered",
            "io.valet.transfer.received",
            "io.valet.transfer.revoked"
        ]
    );
    // The file's own events keep their keys.
    let file_events = files.wait_for(1).await;
    assert_eq!(file_events[0].routing_key, "file.uploaded.acme.dev-7");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(transfers.received().len(), 5, "nothing more");
}

#[actix_web::test]
async fn the_api_description_covers_every_transfer_operation() {
    let app = spawn_app().await;
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let paths = &spec["paths"];
    for (path, method, statuses) in [
        (
            "/v1/transfers",
            "post",
            &["201", "400", "401", "403", "404", "409"][..],
        ),
        ("/v1/transfers", "get", &["200", "400", "401"][..]),
        ("/v1/transfers/{id}", "get", &["200", "401", "404"][..]),
        (
            "/v1/transfers/{id}",
            "delete",
            &["204", "401", "403", "404", "409"][..],
        ),
        (
            "/v1/transfers/{id}/download",
            "get",
            &["200", "307", "401", "404"][..],
        ),
        (
            "/v1/transfers/{id}/accept",
            "post",
            &["200", "401", "403", "404", "409"][..],
        ),
        (
            "/v1/devices/{device}/inbox",
            "get",
            &["200", "401", "404"][..],
        ),
        (
            "/v1/devices/{device}/inbox",
            "put",
            &["200", "400", "401", "404"][..],
        ),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} missing");
        for status in statuses {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path}: {status} missing"
            );
        }
    }
    let refused = paths["/v1/transfers"]["post"]["responses"]["403"]["description"]
        .as_str()
        .expect("403 description");
    assert!(refused.contains("transfer_refused"), "{refused}");
    let schemas = &spec["components"]["schemas"];
    let send = &schemas["SendRequest"]["properties"];
    assert_eq!(
        (&send["to"]["minItems"], &send["to"]["maxItems"]),
        (&json!(1), &json!(100))
    );
    assert_eq!(send["expires_in_secs"]["maximum"], 2_592_000);
    assert!(schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("codes")
        .contains(&json!("transfer_refused")));
    for schema in [
        "Transfer",
        "TransferState",
        "Inbox",
        "AcceptFrom",
        "TransferList",
    ] {
        assert!(schemas[schema].is_object(), "{schema} missing");
    }
}

#[actix_web::test]
async fn concurrent_accepts_revokes_and_a_delete_change_each_transfer_once() {
    let app = spawn_app().await;
    let sender = app.device_token("acme", "dev-7");
    let file = app.upload(&sender, &body_of(64), json!({})).await;
    let file_id = file["id"].as_str().expect("id").to_owned();
    app.accept_from("acme", "dev-8", json!("*")).await;
    app.accept_from("acme", "dev-9", json!("*")).await;
    let transfer = app.send_ok(&sender, &file_id, &["dev-8", "dev-9"]).await;
    let id = transfer["id"].as_str().expect("id").to_owned();
    let eight = app.device_token("acme", "dev-8");
    let nine = app.device_token("acme", "dev-9");

    let accepts = (0..8).map(|i| {
        let token = if i % 2 == 0 { &eight } else { &nine };
        app.accept_transfer(token, &id)
    });
    let revokes = (0..4).map(|_| app.revoke_transfer(&sender, &id));
    let (accepted, revoked, deleted) = futures_util::join!(
        futures_util::future::join_all(accepts),
        futures_util::future::join_all(revokes),
        app.delete(&sender, &file_id)
    );
    for response in accepted {
        let status = response.status().as_u16();
        assert!(status == 200 || status == 409, "accept answered {status}");
    }
    for response in revoked {
        assert_eq!(response.status().as_u16(), 204);
    }
    assert_eq!(deleted.status().as_u16(), 204);

    let ended: Value = app
        .get_transfer(&nine, &id)
        .await
        .json()
        .await
        .expect("transfer");
    assert_eq!(ended["state"], "revoked");
    let events = app.transfer_events(&id).await;
    for device in ["dev-8", "dev-9"] {
        let mine: Vec<&str> = events
            .iter()
            .filter(|(_, d)| d.as_deref() == Some(device))
            .map(|(kind, _)| kind.as_str())
            .collect();
        assert_eq!(mine.first(), Some(&"io.valet.transfer.offered"), "{mine:?}");
        assert_eq!(mine.last(), Some(&"io.valet.transfer.revoked"), "{mine:?}");
        assert!(
            mine == ["io.valet.transfer.offered", "io.valet.transfer.revoked"]
                || mine
                    == [
                        "io.valet.transfer.offered",
                        "io.valet.transfer.received",
                        "io.valet.transfer.revoked"
                    ],
            "{device}: {mine:?}"
        );
        // The recipient's state agrees with its events.
        let accepted = mine.contains(&"io.valet.transfer.received");
        assert_eq!(
            state_of(&ended, device),
            if accepted { "received" } else { "revoked" }
        );
    }
}
