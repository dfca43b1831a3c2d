//! Every error code of the contract's /run table that this issue covers, each with its shape,
//! and the promise that a rejected request creates no container.

use std::sync::OnceLock;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, start_on_own_runtime};

/// A separate app that only ever receives bad requests, so its container count must stay 0.
fn rejecting_app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| start_on_own_runtime(&[("RUNBOX_SERVER__BODY_LIMIT_BYTES", "65536")]))
}

async fn post_raw(
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let app = rejecting_app();
    let mut request = reqwest::Client::new().post(app.url("/run")).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("errors are JSON");
    (status, body, headers)
}

async fn expect_error(
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
    status: StatusCode,
    code: &str,
) -> String {
    let (got, body, headers) = post_raw(content_type, body).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(headers.contains_key("x-request-id"));
    let message = body["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned();
    assert!(!message.is_empty());
    for internal in ["docker", "container", "/var/", "bollard"] {
        assert!(
            !message.to_lowercase().contains(internal),
            "{internal} leaked: {message}"
        );
    }
    message
}

async fn expect_json_error(body: Value, code: &str) -> String {
    expect_error(
        Some("application/json"),
        body.to_string(),
        StatusCode::BAD_REQUEST,
        code,
    )
    .await
}

#[tokio::test]
async fn bad_json() {
    expect_error(
        Some("application/json"),
        "{\"language\": \"python\",",
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    expect_error(
        Some("application/json"),
        "",
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    // A field of the wrong type is invalid JSON for this route.
    let m = expect_json_error(json!({ "language": "python", "code": 5 }), "invalid_json").await;
    assert!(m.contains("invalid type"), "{m}");
    expect_json_error(
        json!({ "language": "python", "code": "", "timeout_ms": -5 }),
        "invalid_json",
    )
    .await;
    assert_no_container_created();
}

#[tokio::test]
async fn missing_fields() {
    let m = expect_json_error(json!({ "code": "print(1)" }), "invalid_request").await;
    assert!(m.contains("language"), "{m}");
    let m = expect_json_error(json!({ "language": "python" }), "invalid_request").await;
    assert!(m.contains("code"), "{m}");
    assert_no_container_created();
}

#[tokio::test]
async fn unknown_language() {
    let m = expect_json_error(
        json!({ "language": "cobol", "code": "x" }),
        "unknown_language",
    )
    .await;
    assert!(m.contains("cobol") && m.contains("/languages"), "{m}");
    assert_no_container_created();
}

#[tokio::test]
async fn values_out_of_range() {
    let m = expect_json_error(
        json!({ "language": "python", "code": "", "timeout_ms": 999_999_999 }),
        "invalid_request",
    )
    .await;
    assert!(m.contains("timeout_ms"), "{m}");
    let m = expect_json_error(
        json!({ "language": "python", "code": "", "memory_mb": 100_000 }),
        "invalid_request",
    )
    .await;
    assert!(m.contains("memory_mb"), "{m}");
    assert_no_container_created();
}

#[tokio::test]
async fn oversized_body() {
    let big = json!({ "language": "python", "code": "#".repeat(70_000) }).to_string();
    let m = expect_error(
        Some("application/json"),
        big,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert!(m.contains("65536"), "{m}");
    assert_no_container_created();
}

/// Python's urllib, as published: it writes the whole body before it reads the answer.
const URLLIB_POST: &str = r#"
import json, sys, urllib.request, urllib.error
body = b"{" + b" " * (20 * 1024 * 1024) + b"}"
request = urllib.request.Request(sys.argv[1], data=body, headers={"content-type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=60)
    print("no error")
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["error"]["code"])
"#;

#[tokio::test]
async fn a_client_that_writes_a_whole_oversized_body_first_reads_its_413() {
    let app = rejecting_app();
    let url = app.url("/run");
    let output = tokio::process::Command::new("python3")
        .args(["-c", URLLIB_POST, &url])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stdout.trim(), "413 payload_too_large", "stderr: {stderr}");

    // The same without a length (chunked), from a raw socket that writes everything first.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = "POST /run HTTP/1.1\r\nhost: runbox\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\n\r\n";
    socket.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, " ".repeat(1 << 20));
    for _ in 0..8 {
        socket
            .write_all(chunk.as_bytes())
            .await
            .expect("the server reads the body");
    }
    socket.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    assert_no_container_created();
}

#[tokio::test]
async fn a_client_waiting_for_100_continue_gets_its_413_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = rejecting_app();
    let mut socket = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = "POST /run HTTP/1.1\r\nhost: runbox\r\ncontent-type: application/json\r\n\
                content-length: 20971520\r\nexpect: 100-continue\r\n\r\n";
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("an answer without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn bad_file_names() {
    for name in [
        "../escape.py",
        "/etc/passwd",
        "a\u{0}b",
        "",
        "dir//x",
        "with space.py",
    ] {
        let m = expect_json_error(
            json!({ "language": "python", "code": "", "files": [{ "name": name, "content": "" }] }),
            "invalid_request",
        )
        .await;
        assert!(m.contains("file name"), "{name:?}: {m}");
    }
    let m = expect_json_error(
        json!({ "language": "python", "files": [{ "name": "a.py", "content": "" }, { "name": "a.py", "content": "" }] }),
        "invalid_request",
    )
    .await;
    assert!(m.contains("twice"), "{m}");
    let too_many: Vec<Value> = (0..100)
        .map(|i| json!({ "name": format!("f{i}.py"), "content": "" }))
        .collect();
    expect_json_error(
        json!({ "language": "python", "files": too_many }),
        "invalid_request",
    )
    .await;
    assert_no_container_created();
}

#[tokio::test]
async fn wrong_content_type() {
    let body = json!({ "language": "python", "code": "print(1)" }).to_string();
    expect_error(
        Some("text/plain"),
        body.clone(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        None,
        body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_no_container_created();
}

#[tokio::test]
async fn nul_byte_in_an_argument() {
    let m = expect_json_error(
        json!({ "language": "python", "code": "", "args": ["ok", "bad\u{0}arg"] }),
        "invalid_request",
    )
    .await;
    assert!(m.contains("NUL"), "{m}");
    assert_no_container_created();
}

#[tokio::test]
async fn unknown_route_and_method() {
    let app = rejecting_app();
    let r = reqwest::get(app.url("/nope")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let r = reqwest::get(app.url("/run")).await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "method_not_allowed"
    );
}

fn assert_no_container_created() {
    assert_eq!(
        rejecting_app().server.executor.sandboxes().created_count(),
        0
    );
}

#[tokio::test]
async fn post_sessions_answers_bad_bodies_as_post_run_does() {
    let app = rejecting_app();
    let post = |content_type: Option<&'static str>, body: String| async move {
        let mut request = reqwest::Client::new().post(app.url("/sessions")).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.expect("errors are JSON");
        (status, body["error"]["code"].clone())
    };
    let big = json!({ "language": "#".repeat(70_000) }).to_string();
    assert_eq!(
        post(Some("application/json"), big).await,
        (StatusCode::PAYLOAD_TOO_LARGE, json!("payload_too_large"))
    );
    assert_eq!(
        post(Some("text/plain"), r#"{"language":"python"}"#.to_owned()).await,
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!("unsupported_media_type")
        )
    );
    assert_eq!(
        post(Some("application/json"), "{not json".to_owned()).await,
        (StatusCode::BAD_REQUEST, json!("invalid_json"))
    );
    assert_no_container_created();
}
