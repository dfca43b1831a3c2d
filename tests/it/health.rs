//! /healthz, /readyz, /languages, CORS and request ids.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{repo_root, shared, start_on_own_runtime};

#[tokio::test]
async fn healthz_and_readyz_when_everything_is_there() {
    let app = shared();
    let r = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn readyz_names_a_missing_image() {
    let dir = std::env::temp_dir().join(format!("runbox-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let catalogue = std::fs::read_to_string(repo_root().join("config/languages.toml"))
        .unwrap()
        .replace(
            "image = \"runbox/python\"",
            "image = \"runbox/no-such-image\"",
        );
    let file = dir.join("languages.toml");
    std::fs::write(&file, catalogue).unwrap();
    let app = start_on_own_runtime(&[("RUNBOX_LANGUAGES__FILE", file.to_str().unwrap())]);
    let r = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("runbox/no-such-image"),
        "{body}"
    );
    // A run of that language is refused as unavailable, not as an internal error.
    let (status, body) = app
        .run(serde_json::json!({ "language": "python", "code": "print(1)" }))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "sandbox_unavailable");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn readyz_names_a_runtime_the_engine_does_not_have() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_SANDBOX__RUNTIME", "runbox-no-such-runtime"),
        ("RUNBOX_POOL__ENABLED", "false"),
    ]);
    let r = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("no runtime `runbox-no-such-runtime` registered")
            && reason.contains("runc"),
        "{body}"
    );
    // A run is refused as unavailable, without the engine's own words.
    let (status, body) = app
        .run(serde_json::json!({ "language": "python", "code": "print(1)" }))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.to_string().contains("runtime name"), "{body}");
}

#[tokio::test]
async fn readyz_reports_an_engine_that_is_down() {
    // A socket nobody listens on: what a stopped engine leaves behind.
    let dir = std::env::temp_dir().join(format!("runbox-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let host = format!("unix://{}", socket.display());
    let app = start_on_own_runtime(&[("RUNBOX_ENGINE__HOST", &host)]);
    let r = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the process is up");
    let r = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("engine"),
        "{body}"
    );
    assert!(
        !body.to_string().contains("docker.sock"),
        "no host paths: {body}"
    );
    let (status, body) = app
        .run(serde_json::json!({ "language": "python", "code": "print(1)" }))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "sandbox_unavailable");
    assert_eq!(app.server.executor.sandboxes().created_count(), 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn languages_report_versions_read_from_the_images() {
    let body: Value = reqwest::get(shared().url("/languages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let languages = body["languages"].as_array().unwrap();
    let ids: Vec<&str> = languages
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    for id in ["python", "javascript", "c", "cpp"] {
        assert!(ids.contains(&id), "{id}");
    }
    for l in languages {
        let version = l["version"].as_str().unwrap_or_default();
        assert!(version.split('.').count() >= 2, "{l}");
        assert!(l["timeout_ms"].as_u64().is_some() && l["memory_mb"].as_u64().is_some());
    }
    let python = languages.iter().find(|l| l["id"] == "python").unwrap();
    assert!(python["version"].as_str().unwrap().starts_with("3."));
    assert_eq!(python["compiled"], false);
}

#[tokio::test]
async fn request_ids_are_generated_or_echoed() {
    let app = shared();
    let r = reqwest::get(app.url("/healthz")).await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a uuid: {generated}");
    let r = reqwest::Client::new()
        .get(app.url("/healthz"))
        .header("x-request-id", "my-trace-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "my-trace-1");
}

#[tokio::test]
async fn cors_allows_any_origin_without_credentials() {
    let app = shared();
    let r = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, app.url("/run"))
        .header("origin", "https://frontend.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(!r.headers().contains_key("access-control-allow-credentials"));
}

#[tokio::test]
async fn cors_can_be_limited_to_configured_origins() {
    let app = start_on_own_runtime(&[(
        "RUNBOX_SERVER__CORS_ALLOWED_ORIGINS",
        r#"["https://good.example"]"#,
    )]);
    let preflight = |origin: &'static str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, app.url("/run"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let r = preflight("https://good.example").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://good.example"
    );
    let r = preflight("https://evil.example").await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}
