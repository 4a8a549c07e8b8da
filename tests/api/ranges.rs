//! Range requests, HEAD and validators on the local store's signed download URLs.

use reqwest::header::HeaderMap;
use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, body_of, sha256_hex, spawn_app, TestApp};

const SIZE: usize = 10_000;
const CONTENT_TYPE: &str = "application/x-firmware";

/// An uploaded object of `bytes` and a signed download URL for it.
async fn signed_download(app: &TestApp, bytes: &[u8]) -> String {
    let token = app.device_token("acme", "dev-42");
    let file = app
        .upload(
            &token,
            bytes,
            json!({"name": "fw image.bin", "content_type": CONTENT_TYPE}),
        )
        .await;
    let signed: Value = app
        .download(&token, file["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(signed["method"], "GET");
    signed["url"].as_str().unwrap().to_owned()
}

async fn get(app: &TestApp, url: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = app.client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

/// Asserts a 206 carrying exactly `bytes[first..=last]`.
async fn assert_part(response: Response, bytes: &[u8], first: usize, last: usize) {
    assert_eq!(response.status().as_u16(), 206);
    let headers = response.headers().clone();
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes {first}-{last}/{}", bytes.len())
    );
    assert_eq!(
        header(&headers, "content-length"),
        (last - first + 1).to_string()
    );
    assert_eq!(header(&headers, "content-type"), CONTENT_TYPE);
    assert_eq!(header(&headers, "accept-ranges"), "bytes");
    assert!(headers.contains_key("etag") && headers.contains_key("last-modified"));
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), last - first + 1);
    assert!(
        body[..] == bytes[first..=last],
        "wrong bytes for {first}-{last}"
    );
}

async fn assert_whole(response: Response, bytes: &[u8]) {
    assert_eq!(response.status().as_u16(), 200);
    assert!(!response.headers().contains_key("content-range"));
    assert_eq!(
        header(response.headers(), "content-length"),
        bytes.len().to_string()
    );
    assert!(response.bytes().await.unwrap()[..] == bytes[..]);
}

#[actix_web::test]
async fn head_answers_the_download_headers_without_a_body() {
    let app = spawn_app().await;
    let bytes = body_of(SIZE);
    let url = signed_download(&app, &bytes).await;

    let head = app.client.head(&url).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    let headers = head.headers().clone();
    assert_eq!(header(&headers, "content-length"), SIZE.to_string());
    assert_eq!(header(&headers, "content-type"), CONTENT_TYPE);
    assert_eq!(
        header(&headers, "content-disposition"),
        "attachment; filename=\"fw image.bin\"; filename*=UTF-8''fw%20image.bin"
    );
    assert_eq!(header(&headers, "accept-ranges"), "bytes");
    assert_eq!(
        header(&headers, "etag"),
        format!("\"{}\"", sha256_hex(&bytes))
    );
    let last_modified = header(&headers, "last-modified");
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");
    assert!(head.bytes().await.unwrap().is_empty());

    // Range is ignored on HEAD.
    let ranged_head = app
        .client
        .head(&url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged_head.status().as_u16(), 200);
    assert_eq!(
        header(ranged_head.headers(), "content-length"),
        SIZE.to_string()
    );
    assert!(!ranged_head.headers().contains_key("content-range"));

    // A GET answers with the same headers, and the bytes.
    let got = get(&app, &url, &[]).await;
    for name in [
        "content-length",
        "content-type",
        "content-disposition",
        "accept-ranges",
        "etag",
        "last-modified",
    ] {
        assert_eq!(
            header(got.headers(), name),
            header(&headers, name),
            "{name}"
        );
    }
    assert_whole(got, &bytes).await;
}

#[actix_web::test]
async fn each_range_form_answers_206_with_exactly_those_bytes() {
    let app = spawn_app().await;
    let bytes = body_of(SIZE);
    let url = signed_download(&app, &bytes).await;

    let cases = [
        ("bytes=0-0", 0, 0),
        ("bytes=100-4099", 100, 4099),
        ("bytes=9000-", 9000, SIZE - 1),
        ("bytes=-10", SIZE - 10, SIZE - 1),
        ("bytes=9999-9999", SIZE - 1, SIZE - 1),
        // An end past the object is cut to it; a suffix longer than it is all of it.
        ("bytes=5000-99999", 5000, SIZE - 1),
        ("bytes=-20000", 0, SIZE - 1),
    ];
    for (range, first, last) in cases {
        assert_part(
            get(&app, &url, &[("range", range)]).await,
            &bytes,
            first,
            last,
        )
        .await;
    }
}

#[actix_web::test]
async fn ranges_outside_the_object_answer_416_with_its_length() {
    let app = spawn_app().await;
    let bytes = body_of(SIZE);
    let url = signed_download(&app, &bytes).await;

    for range in [
        "bytes=10000-",
        "bytes=10000-10005",
        "bytes=20000-30000",
        "bytes=-0",
    ] {
        let response = get(&app, &url, &[("range", range)]).await;
        assert_eq!(response.status().as_u16(), 416, "{range}");
        assert_eq!(
            header(response.headers(), "content-range"),
            format!("bytes */{SIZE}"),
            "{range}"
        );
        assert_problem(response, 416, "range_not_satisfiable").await;
    }
}

#[actix_web::test]
async fn invalid_ranges_are_ignored_and_multiple_ranges_refused() {
    let app = spawn_app().await;
    let bytes = body_of(SIZE);
    let url = signed_download(&app, &bytes).await;

    for range in [
        "bytes=20-10",
        "bytes=abc",
        "bytes=",
        "lines=0-9",
        "0-9",
        "bytes=0-1,x",
    ] {
        let response = get(&app, &url, &[("range", range)]).await;
        assert_eq!(response.status().as_u16(), 200, "{range}");
        assert_whole(response, &bytes).await;
    }
    // More than one range: the documented choice is 416, one range per request.
    for range in ["bytes=0-1,5-6", "bytes=0-1,20000-"] {
        let response = get(&app, &url, &[("range", range)]).await;
        let content_range = response.headers()["content-range"].clone();
        assert_eq!(content_range, format!("bytes */{SIZE}").as_str(), "{range}");
        assert_problem(response, 416, "range_not_satisfiable").await;
    }
}

#[actix_web::test]
async fn if_range_serves_the_range_only_for_the_current_object() {
    let app = spawn_app().await;
    let bytes = body_of(SIZE);
    let url = signed_download(&app, &bytes).await;
    let head = app.client.head(&url).send().await.unwrap();
    let etag = header(head.headers(), "etag").to_owned();
    let last_modified = header(head.headers(), "last-modified").to_owned();

    let range = ("range", "bytes=10-19");
    assert_part(
        get(&app, &url, &[range, ("if-range", &etag)]).await,
        &bytes,
        10,
        19,
    )
    .await;
    assert_part(
        get(&app, &url, &[range, ("if-range", &last_modified)]).await,
        &bytes,
        10,
        19,
    )
    .await;

    let other_object = format!("\"{}\"", sha256_hex(b"another object"));
    let weak = format!("W/{etag}");
    for stale in [
        other_object.as_str(),
        weak.as_str(),
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "garbage",
    ] {
        let response = get(&app, &url, &[range, ("if-range", stale)]).await;
        assert_whole(response, &bytes).await;
    }
}

#[actix_web::test]
async fn head_checks_the_signature_like_get() {
    let app = spawn_app().await;
    let bytes = body_of(100);
    let url = signed_download(&app, &bytes).await;

    for tampered in [
        url.replace("filename=", "filename=x"),
        url.replace("content_type=", "content_type=text%2Fhtml"),
        url.replace("signature=", "signature=00"),
        url.split('?').next().unwrap().to_owned(),
    ] {
        let response = app.client.head(&tampered).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403, "{tampered}");
        assert!(header(response.headers(), "content-type").starts_with("application/problem+json"));
        assert!(response.bytes().await.unwrap().is_empty());
        // The same URL is refused for GET, with the problem document.
        assert_problem(get(&app, &tampered, &[]).await, 403, "forbidden").await;
    }
}

#[actix_web::test]
async fn an_interrupted_download_resumes_to_identical_bytes() {
    let app = spawn_app().await;
    let bytes = body_of(1_000_000);
    let url = signed_download(&app, &bytes).await;

    // The first attempt stops after part of the body has arrived.
    let mut first = get(&app, &url, &[]).await;
    assert_eq!(first.status().as_u16(), 200);
    let etag = header(first.headers(), "etag").to_owned();
    let mut received = Vec::new();
    while received.len() < 300_000 {
        let chunk = first.chunk().await.unwrap().expect("more of the body");
        received.extend_from_slice(&chunk);
    }
    drop(first);
    assert!(received.len() < bytes.len());

    // The resumed attempt asks for the rest of the same object.
    let from = format!("bytes={}-", received.len());
    let rest = get(&app, &url, &[("range", &from), ("if-range", &etag)]).await;
    assert_eq!(rest.status().as_u16(), 206);
    assert_eq!(
        header(rest.headers(), "content-range"),
        format!(
            "bytes {}-{}/{}",
            received.len(),
            bytes.len() - 1,
            bytes.len()
        )
    );
    received.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(received.len(), bytes.len());
    assert_eq!(sha256_hex(&received), sha256_hex(&bytes));
    assert!(received == bytes);
}
