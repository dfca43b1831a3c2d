//! The browser playground at `/`: served with the right headers, a message without its
//! bundle, off when configured, open when API keys are on; and used in a real browser
//! (Debian's chromium, driven by playwright-core from npm: `tests/clients/playground.mjs`)
//! against the real server, engine and images.

use reqwest::StatusCode;
use reqwest::header;

use crate::common::{published_client, repo_root, shared, start_on_own_runtime};

/// Where a failing browser check leaves its screenshot.
fn screenshots() -> String {
    let dir = repo_root().join("target/playground-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_their_headers() {
    let app = shared();
    let client = reqwest::Client::new();
    let page = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(part), "{policy}");
    }
    assert!(!policy.contains("script-src 'self' 'unsafe"), "{policy}");
    let html = page.text().await.unwrap();
    let script = html
        .split('"')
        .find(|part| part.starts_with("/assets/") && part.ends_with(".js"))
        .expect("the bundle's script")
        .to_owned();
    let plain = client.get(app.url(&script)).send().await.unwrap();
    assert_eq!(
        plain.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        plain.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    let plain_bytes = plain.bytes().await.unwrap().len();
    let packed = client
        .get(app.url(&script))
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .send()
        .await
        .unwrap();
    assert_eq!(packed.headers()[header::CONTENT_ENCODING], "gzip");
    let packed_bytes = packed.bytes().await.unwrap().len();
    assert!(
        packed_bytes * 2 < plain_bytes,
        "{packed_bytes} of {plain_bytes}"
    );
    println!("bundle script: {plain_bytes} bytes, {packed_bytes} gzip");
    let missing = client.get(app.url("/assets/none.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_its_bundle_the_page_says_how_to_build_it_and_off_is_off() {
    let app = start_on_own_runtime(&[("RUNBOX_SERVER__PLAYGROUND_DIR", "/nonexistent/dist")]);
    let page = reqwest::get(app.url("/")).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let text = page.text().await.unwrap();
    assert!(text.contains("npm ci &amp;&amp; npm run build"), "{text}");
    let languages = reqwest::get(app.url("/languages")).await.unwrap();
    assert_eq!(
        languages.status(),
        StatusCode::OK,
        "the API runs without the page"
    );
    app.server.shutdown().await.unwrap();
    let off = start_on_own_runtime(&[("RUNBOX_SERVER__PLAYGROUND", "false")]);
    for path in ["/", "/assets/anything.js"] {
        let response = reqwest::get(off.url(path)).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    off.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_api_keys_on_the_page_loads_asks_for_a_key_and_runs_with_it() {
    use sha2::Digest;
    let key = "web-key-0123456789";
    let keys = format!(
        r#"[{{ name = "web", sha256 = "{:x}" }}]"#,
        sha2::Sha256::digest(key.as_bytes())
    );
    let app = start_on_own_runtime(&[("RUNBOX_AUTH__KEYS", keys.as_str())]);
    assert_eq!(
        reqwest::get(app.url("/")).await.unwrap().status(),
        StatusCode::OK
    );
    let languages = reqwest::get(app.url("/languages")).await.unwrap();
    assert_eq!(languages.status(), StatusCode::UNAUTHORIZED);
    // The key goes to the browser script through its environment, not its arguments.
    let output = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/clients/playground.mjs"))
        .args([app.base.as_str(), "api_key", &screenshots()])
        .env("RUNBOX_TEST_KEY", key)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["passed"],
        serde_json::json!(["with API keys on, the page asks for a key and then runs"])
    );
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_playground_works_in_a_real_browser() {
    let node = std::path::Path::new("node");
    let shots = screenshots();
    let report = published_client(node, "playground.mjs", &[&shared().base, "page", &shots]).await;
    let passed: Vec<&str> = report["passed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    // Every check by name: a check the script skipped, or one added there and not here, fails.
    let expected = [
        "the page loads with its controls named",
        "keyboard only: Tab reaches the picker and Run, Ctrl+Enter runs",
        "python runs and its output shows",
        "C runs",
        "Java runs (Ctrl+Enter)",
        "the first line of a slow program shows before it ends",
        "a compile error shows in the compile pane with its badge",
        "stdin reaches the program, stderr is told apart",
        "a runaway loop is stopped",
        "an interactive run takes typed input",
        "a matplotlib plot shows inline and a CSV is offered for download",
        "a share link restores the same files in a fresh page",
        "phone width and the dark theme: no sideways scroll, readable contrast",
        "a room is shared by two browsers: keystrokes, scrollback, presence",
    ];
    assert_eq!(passed, expected, "{report}");
    println!("playground timings: {}", report["timings"]);
}

#[tokio::test]
async fn a_rate_limited_run_tells_the_visitor_when_to_try_again() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_RATE_LIMIT__ENABLED", "true"),
        (
            "RUNBOX_RATE_LIMIT__RULES",
            r#"{ runs = { routes = ["POST /run"], requests = 1, window_secs = 600 } }"#,
        ),
    ]);
    let node = std::path::Path::new("node");
    let shots = screenshots();
    let report =
        published_client(node, "playground.mjs", &[&app.base, "rate_limited", &shots]).await;
    assert_eq!(
        report["passed"],
        serde_json::json!(["a rate-limited run says so, with when to try again"])
    );
    app.server.shutdown().await.unwrap();
}
