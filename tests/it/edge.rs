//! The HTTP edge: rate limits, API keys, slow and oversized requests. Each app here has its
//! own config; none of these requests may create a container.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestApp, start_on_own_runtime};

/// A request the rate limit counts and the handler refuses (400): no container either way.
fn cheap_run() -> Value {
    json!({ "language": "cobol", "code": "" })
}

async fn post_run(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(app.url("/run"))
        .json(&cheap_run());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

const TWO_RUNS_A_MINUTE: &str =
    r#"{ runs = { routes = ["POST /run", "GET /run/ws"], requests = 2, window_secs = 60 } }"#;

#[tokio::test]
async fn over_the_rate_limit_is_429_with_retry_after() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_RATE_LIMIT__ENABLED", "true"),
        ("RUNBOX_RATE_LIMIT__RULES", TWO_RUNS_A_MINUTE),
    ]);
    let header = |response: &reqwest::Response, name: &str| -> u64 {
        response.headers()[name].to_str().unwrap().parse().unwrap()
    };
    for remaining in [1, 0] {
        let response = post_run(&app, &[]).await;
        // The quota is announced on every limited answer (IETF RateLimit-* headers).
        assert_eq!(header(&response, "ratelimit-limit"), 2);
        assert_eq!(header(&response, "ratelimit-remaining"), remaining);
        assert!(header(&response, "ratelimit-reset") <= 60);
        let (status, code) = error_code(response).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "unknown_language")
        );
    }
    let refused = post_run(&app, &[]).await;
    assert_eq!(header(&refused, "ratelimit-remaining"), 0);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One request comes back every 60 / 2 = 30 s.
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    let (status, code) = error_code(refused).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    // The WebSocket route shares the rule: refused before any upgrade.
    let ws = reqwest::get(app.url("/run/ws")).await.unwrap();
    assert_eq!(ws.status(), StatusCode::TOO_MANY_REQUESTS);
    // A forwarded-for header is not believed when no proxy header is configured.
    let spoofed = post_run(&app, &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
    // Routes outside the rule are not limited by it.
    let languages = reqwest::get(app.url("/languages")).await.unwrap();
    assert_eq!(languages.status(), StatusCode::OK);
    assert!(!languages.headers().contains_key("ratelimit-limit"));
    // The rejections are counted by rule.
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"runbox_edge_rejections_total{reason="runs"} 3"#),
        "{metrics}"
    );
    assert_eq!(app.server.executor.sandboxes().created_count(), 0);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_quota() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_RATE_LIMIT__ENABLED", "true"),
        ("RUNBOX_RATE_LIMIT__RULES", TWO_RUNS_A_MINUTE),
        ("RUNBOX_RATE_LIMIT__CLIENT_IP_HEADER", "x-forwarded-for"),
    ]);
    let alice = [("x-forwarded-for", "198.51.100.1")];
    // The client wrote the left entry; the proxy appended the right one, which counts.
    let bob = [("x-forwarded-for", "198.51.100.1, 198.51.100.2")];
    for _ in 0..2 {
        assert_eq!(
            post_run(&app, &alice).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        post_run(&app, &alice).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(post_run(&app, &bob).await.status(), StatusCode::BAD_REQUEST);
    app.server.shutdown().await.unwrap();
}

fn sha256_hex(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

#[tokio::test]
async fn api_keys_guard_every_route_but_healthz_and_carry_their_own_limit() {
    let keys = format!(
        r#"[{{ name = "ci", sha256 = "{}", limits = {{ runs = 4 }} }}, {{ name = "web", sha256 = "{}" }}]"#,
        sha256_hex("ci-key-0123456789"),
        sha256_hex("web-key-0123456789")
    );
    let app = start_on_own_runtime(&[
        ("RUNBOX_AUTH__KEYS", keys.as_str()),
        ("RUNBOX_RATE_LIMIT__ENABLED", "true"),
        ("RUNBOX_RATE_LIMIT__RULES", TWO_RUNS_A_MINUTE),
    ]);
    let client = reqwest::Client::new();
    // Without a key, or with a wrong one: 401 with a Bearer challenge, on every route.
    for (method, path) in [
        ("POST", "/run"),
        ("GET", "/languages"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("POST", "/sessions"),
        ("GET", "/run/ws"),
    ] {
        for auth in [None, Some("Bearer wrong-key"), Some("Basic Y2k6a2V5")] {
            let mut request = client.request(method.parse().unwrap(), app.url(path));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer",
                "{method} {path}"
            );
            let (status, code) = error_code(response).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::UNAUTHORIZED, "unauthorized"),
                "{method} {path} {auth:?}"
            );
        }
    }
    // The liveness probe needs none.
    let health = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // A valid key passes; `ci` has 4 runs a window instead of the rule's 2.
    let ci = [("authorization", "Bearer ci-key-0123456789")];
    let languages = client
        .get(app.url("/languages"))
        .header("authorization", "Bearer web-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(languages.status(), StatusCode::OK);
    for _ in 0..4 {
        assert_eq!(post_run(&app, &ci).await.status(), StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        post_run(&app, &ci).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Each key is its own client, whatever address it comes from.
    let web = [("authorization", "Bearer web-key-0123456789")];
    for _ in 0..2 {
        assert_eq!(post_run(&app, &web).await.status(), StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        post_run(&app, &web).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(app.server.executor.sandboxes().created_count(), 0);
    app.server.shutdown().await.unwrap();
}

/// Reads what the server sends until it closes the connection (or `wait` passes).
async fn read_until_closed(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(wait, stream.read_to_end(&mut received)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_hold_no_sandbox() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_SERVER__HEADER_TIMEOUT_SECS", "1"),
        ("RUNBOX_SERVER__BODY_TIMEOUT_SECS", "1"),
    ]);
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Headers that never end: the connection is closed after the header timeout.
    let mut slow_headers = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_headers
        .write_all(b"POST /run HTTP/1.1\r\nHost: runbox\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut slow_headers, Duration::from_secs(5)).await;
    assert!(answer.is_some(), "the connection stayed open");
    // A body that never completes: 408 request_timeout, and no job was admitted.
    let body = json!({ "language": "python", "code": "print(1)" }).to_string();
    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /run HTTP/1.1\r\nHost: runbox\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    slow_body.write_all(&body.as_bytes()[..10]).await.unwrap();
    let answer = read_until_closed(&mut slow_body, Duration::from_secs(5))
        .await
        .expect("an answer within the body timeout");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_eq!(app.server.executor.sandboxes().created_count(), 0);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn too_many_headers_are_refused() {
    let app = start_on_own_runtime(&[]);
    let mut request = reqwest::Client::new().get(app.url("/languages"));
    for i in 0..100 {
        request = request.header(format!("x-filler-{i}"), "x");
    }
    let response = request.send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let huge = "x".repeat(32 << 10);
    let response = reqwest::Client::new()
        .get(app.url("/languages"))
        .header("x-huge", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let fine = reqwest::get(app.url("/languages")).await.unwrap();
    assert_eq!(fine.status(), StatusCode::OK);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_metrics_token_guards_the_scrape_which_shows_sandboxes_and_sessions() {
    let token = "scrape-token-0123456789";
    let app = start_on_own_runtime(&[("RUNBOX_AUTH__METRICS_TOKEN_SHA256", &sha256_hex(token))]);
    let unauthorized = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    // Only /metrics is guarded by the token: no API keys are configured.
    assert_eq!(
        reqwest::get(app.url("/languages")).await.unwrap().status(),
        StatusCode::OK
    );
    let id = crate::common::session_id(&app, "python").await;
    let text = reqwest::Client::new()
        .get(app.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "runbox_sessions 1",
        "runbox_terminal_clients 0",
        "runbox_sandboxes{kind=\"session\",state=\"active\"} 1",
        "runbox_containers_created_total ",
        "runbox_containers_removed_total ",
        "runbox_containers_reaped_total ",
        "runbox_engine_errors_total ",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    app.server.shutdown().await.unwrap();
    crate::common::wait_for_session_containers(&id, 0).await;
}
