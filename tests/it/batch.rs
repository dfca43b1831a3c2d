//! Compile once, run many inputs (`tests` in `POST /run`). Real server, engine and images.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    assert_removed, metric, session_id, shared, start_on_own_runtime, wait_for_session_containers,
};

/// `runbox_compiles_total` for `language` as /metrics shows it (0 before the first).
async fn compiles(base: &str, language: &str) -> u64 {
    let sample = format!("runbox_compiles_total{{language=\"{language}\"}}");
    metric(base, &sample).await as u64
}

#[tokio::test]
async fn a_c_program_compiled_once_is_judged_against_five_inputs() {
    // An app of its own: no other test's compiles in its metrics.
    let app = start_on_own_runtime(&[]);
    assert_eq!(compiles(&app.base, "c").await, 0);
    let square = "#include <stdio.h>\nint main(void){ long n; if (scanf(\"%ld\", &n) != 1) return 2; printf(\"%ld\\n\", n * n); return 0; }";
    let tests = json!([
        { "input": "1\n", "expected_output": "1" },
        { "input": "2\n", "expected_output": "5" },
        { "input": "3\n", "expected_output": "9\n" },
        { "input": "4\n", "expected_output": "  16  " },
        { "input": "5\n", "expected_output": "24" },
    ]);
    let result = app
        .run_ok(json!({ "language": "c", "code": square, "tests": tests }))
        .await;
    assert_eq!(result["compile"]["status"], "success", "{result}");
    let tests = result["tests"].as_array().unwrap();
    let passed: Vec<&Value> = tests.iter().map(|t| &t["passed"]).collect();
    assert_eq!(passed, [true, false, true, true, false], "{result}");
    let stdout: Vec<&str> = tests
        .iter()
        .map(|t| t["stdout"].as_str().unwrap())
        .collect();
    assert_eq!(stdout, ["1\n", "4\n", "9\n", "16\n", "25\n"]);
    for test in tests {
        assert_eq!(test["status"], "success");
        assert_eq!(test["exit_code"], 0);
        assert!(test["duration_ms"].is_u64());
    }
    // The headline is the first input that did not pass.
    assert_eq!(result["stdout"], "4\n");
    // The compiler ran once for the five runs.
    assert_eq!(compiles(&app.base, "c").await, 1);
    assert_removed(result["id"].as_str().unwrap()).await;
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_input_runs_with_its_own_limits() {
    let program = "import sys, time\nline = sys.stdin.readline().strip()\nif line == 'slow':\n    time.sleep(10)\nif line == 'crash':\n    sys.exit(3)\nprint(line.upper())";
    let result = shared()
        .run_ok(json!({
            "language": "python",
            "code": program,
            "timeout_ms": 1000,
            "tests": [
                { "input": "a\n", "expected_output": "A" },
                { "input": "slow\n" },
                { "input": "crash\n" },
                { "input": "b\n", "expected_output": "B" },
            ],
        }))
        .await;
    let tests = result["tests"].as_array().unwrap();
    let statuses: Vec<&Value> = tests.iter().map(|t| &t["status"]).collect();
    assert_eq!(
        statuses,
        ["success", "timeout", "runtime_error", "success"],
        "{result}"
    );
    assert_eq!(tests[2]["exit_code"], 3);
    assert!(
        tests[1].get("passed").is_none(),
        "no expectation, no verdict"
    );
    assert_eq!(tests[3]["passed"], true);
    assert_eq!(result["status"], "timeout", "the first input that failed");
    assert!(result["compile"].is_null());
    assert_removed(result["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn a_compile_error_runs_no_input() {
    let result = shared()
        .run_ok(json!({
            "language": "c",
            "code": "int main(void) { return nope; }",
            "tests": [{ "input": "1" }, { "input": "2" }],
        }))
        .await;
    assert_eq!(result["status"], "compile_error");
    assert_eq!(result["tests"], json!([]));
}

#[tokio::test]
async fn tests_are_refused_where_they_cannot_run() {
    let app = shared();
    let post = |path: &'static str, body: Value| async move {
        let response = reqwest::Client::new()
            .post(app.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        (status, body["error"]["code"].clone())
    };
    let tests = json!([{ "input": "1" }]);
    let refused = [
        post(
            "/run",
            json!({ "language": "python", "code": "", "tests": [] }),
        )
        .await,
        post(
            "/run",
            json!({ "language": "python", "code": "", "tests": vec![json!({}); 33] }),
        )
        .await,
        post(
            "/run",
            json!({ "language": "python", "code": "", "input": "x", "tests": tests }),
        )
        .await,
        post(
            "/run?stream=true",
            json!({ "language": "python", "code": "", "tests": tests }),
        )
        .await,
        post(
            "/run",
            json!({ "language": "python", "code": "", "tests": [{ "input": "1", "expect": "2" }] }),
        )
        .await,
    ];
    for (status, code) in refused {
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            code == "invalid_request" || code == "invalid_json",
            "{code}"
        );
    }
}

#[tokio::test]
async fn a_session_run_refuses_tests() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "python").await;
    let response = reqwest::Client::new()
        .post(app.url(&format!("/sessions/{id}/run")))
        .json(&json!({ "language": "python", "code": "print(1)", "tests": [{ "input": "" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST /run"),
        "{body}"
    );
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}
