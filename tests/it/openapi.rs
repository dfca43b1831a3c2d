//! `GET /openapi.json` describes every route, and real responses conform to it: each body
//! below is validated against the schema the document gives for its route and status.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, run_in_session, shared, start_on_own_runtime};

async fn document(app: &TestApp) -> Value {
    let response = reqwest::get(app.url("/openapi.json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn assert_conforms(doc: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    let errors = violations(doc, method, path, status, body);
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {errors:?}\nbody: {body}"
    );
}

/// What in `body` breaks the document's schema for `method path` answering `status`.
fn violations(
    doc: &Value,
    method: &str,
    path: &str,
    status: StatusCode,
    body: &Value,
) -> Vec<String> {
    let schema = &doc["paths"][path][method]["responses"][status.as_str()]["content"]["application/json"]
        ["schema"];
    assert!(
        !schema.is_null(),
        "the document has no JSON schema for {method} {path} {status}"
    );
    // The schema's `$ref`s point into the document's components: validate against the whole
    // document with the schema at its root.
    let mut root = doc.clone();
    root.as_object_mut()
        .unwrap()
        .extend(schema.as_object().unwrap().clone());
    let validator = jsonschema::draft202012::new(&root).expect("a valid schema");
    validator.iter_errors(body).map(|e| e.to_string()).collect()
}

#[tokio::test]
async fn every_route_is_described() {
    let doc = document(shared()).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for route in runbox::api::route_names() {
        let (method, path) = route.split_once(' ').unwrap();
        let method = method.to_ascii_lowercase();
        assert!(
            doc["paths"][path][&method].is_object(),
            "{route} is missing from the document"
        );
    }
}

#[tokio::test]
async fn run_responses_conform() {
    let app = shared();
    let doc = document(app).await;
    let post = |body: Value| async move {
        let response = reqwest::Client::new()
            .post(app.url("/run"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    for body in [
        json!({ "language": "python", "code": "print(1)" }),
        json!({ "language": "python", "code": "raise SystemExit(3)" }),
        json!({ "language": "c", "code": "int main(void){ return 0; }" }),
        json!({ "language": "c", "code": "syntax error" }),
        json!({ "language": "python", "code": "print(input())", "tests": [{ "input": "a", "expected_output": "a" }, { "input": "b", "expected_output": "c" }] }),
    ] {
        let (status, result) = post(body).await;
        assert_eq!(status, StatusCode::OK, "{result}");
        assert_conforms(&doc, "post", "/run", status, &result);
    }
    // The check can fail: a result without its status or its (null) exit code, or with an
    // unknown status, does not pass.
    let (_, good) = post(json!({ "language": "python", "code": "print(1)" })).await;
    for broken in [
        {
            let mut b = good.clone();
            b.as_object_mut().unwrap().remove("status");
            b
        },
        {
            let mut b = good.clone();
            b["status"] = json!("exploded");
            b
        },
        {
            let mut b = good.clone();
            b.as_object_mut().unwrap().remove("memory_kb");
            b
        },
    ] {
        assert!(!violations(&doc, "post", "/run", StatusCode::OK, &broken).is_empty());
    }
    for body in [
        json!({ "language": "cobol", "code": "" }),
        json!({ "code": "print(1)" }),
        json!({ "language": "python", "code": "", "timeout_ms": 999_999_999 }),
    ] {
        let (status, error) = post(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert_conforms(&doc, "post", "/run", status, &error);
    }
    let languages: Value = reqwest::get(app.url("/languages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_conforms(&doc, "get", "/languages", StatusCode::OK, &languages);
    for (path, status) in [("/healthz", StatusCode::OK), ("/readyz", StatusCode::OK)] {
        let response = reqwest::get(app.url(path)).await.unwrap();
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert_conforms(&doc, "get", path, status, &body);
    }
}

#[tokio::test]
async fn session_responses_conform() {
    let app = start_on_own_runtime(&[]);
    let doc = document(&app).await;
    let created = reqwest::Client::new()
        .post(app.url("/sessions"))
        .json(&json!({ "language": "python" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let session: Value = created.json().await.unwrap();
    assert_conforms(&doc, "post", "/sessions", StatusCode::CREATED, &session);
    let id = session["id"].as_str().unwrap().to_owned();
    let fetched: Value = reqwest::get(app.url(&format!("/sessions/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_conforms(&doc, "get", "/sessions/{id}", StatusCode::OK, &fetched);
    let (status, run) = run_in_session(
        &app,
        &id,
        json!({ "language": "python", "code": "open('f', 'w').write('x'); print(2)" }),
    )
    .await;
    assert_conforms(&doc, "post", "/sessions/{id}/run", status, &run);
    let missing = reqwest::get(app.url("/sessions/not-a-session"))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let error: Value = missing.json().await.unwrap();
    assert_conforms(&doc, "get", "/sessions/{id}", StatusCode::NOT_FOUND, &error);
    // A created session with an unknown language is a 400 of the documented shape.
    let bad = reqwest::Client::new()
        .post(app.url("/sessions"))
        .json(&json!({ "language": "cobol" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let error: Value = bad.json().await.unwrap();
    assert_conforms(&doc, "post", "/sessions", StatusCode::BAD_REQUEST, &error);
    app.server.shutdown().await.unwrap();
    crate::common::wait_for_session_containers(&id, 0).await;
}
