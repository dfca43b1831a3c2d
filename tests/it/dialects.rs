//! The same hostile programs through `POST /run`, Piston's `execute` and Judge0's
//! submissions: each ends the same way in all three, in each dialect's words, within the same
//! limits, and leaves nothing behind. No dialect is a path around a limit.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{TestApp, start_on_own_runtime};

/// A hostile program and how it must end: `POST /run`'s status, Piston's run `status` and
/// `signal`, Judge0's status id.
struct Case {
    name: &'static str,
    language: &'static str,
    judge0_id: u32,
    code: &'static str,
    run: &'static str,
    piston: (Option<&'static str>, Option<&'static str>),
    judge0: u64,
}

const CASES: &[Case] = &[
    Case {
        name: "a CPU spin",
        language: "python",
        judge0_id: 71,
        code: "while True: pass",
        run: "timeout",
        piston: (Some("TO"), Some("SIGKILL")),
        judge0: 5,
    },
    Case {
        name: "a sleeper that ignores SIGTERM",
        language: "bash",
        judge0_id: 46,
        code: "trap '' TERM\nsleep 60",
        run: "timeout",
        piston: (Some("TO"), Some("SIGKILL")),
        judge0: 5,
    },
    Case {
        name: "a memory bomb",
        language: "python",
        judge0_id: 71,
        code: "x = bytearray(1 << 30)\nprint(len(x))",
        run: "memory_limit_exceeded",
        piston: (Some("SG"), Some("SIGKILL")),
        judge0: 12,
    },
    Case {
        name: "an output flood",
        language: "python",
        judge0_id: 71,
        code: "while True: print('x' * 1000)",
        run: "output_limit_exceeded",
        piston: (Some("OL"), Some("SIGKILL")),
        judge0: 8,
    },
    Case {
        name: "a segfault",
        language: "c",
        judge0_id: 50,
        code: "int main(void) { *(volatile int *)0 = 1; return 0; }",
        run: "runtime_error",
        piston: (Some("SG"), Some("SIGSEGV")),
        judge0: 7,
    },
    Case {
        name: "an abort",
        language: "c",
        judge0_id: 50,
        code: "#include <stdlib.h>\nint main(void) { abort(); }",
        run: "runtime_error",
        piston: (Some("SG"), Some("SIGABRT")),
        judge0: 10,
    },
    Case {
        name: "a connection out",
        language: "python",
        judge0_id: 71,
        code: "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\nexcept OSError:\n    raise SystemExit(3)\nprint('connected')",
        run: "runtime_error",
        piston: (Some("RE"), None),
        judge0: 11,
    },
    Case {
        name: "daemons left behind",
        language: "bash",
        judge0_id: 46,
        code: "setsid sleep 300 &\nnohup sleep 301 >/dev/null 2>&1 &\n( sleep 302 & )\necho bye",
        run: "success",
        piston: (None, None),
        judge0: 3,
    },
    Case {
        name: "a full work dir",
        language: "bash",
        judge0_id: 46,
        code: "dd if=/dev/zero of=big bs=1M count=3072 2>/dev/null || exit 4",
        run: "runtime_error",
        piston: (Some("RE"), None),
        judge0: 11,
    },
    Case {
        name: "a write outside the work dir",
        language: "bash",
        judge0_id: 46,
        code: "echo x > /usr/planted || exit 5",
        run: "runtime_error",
        piston: (Some("RE"), None),
        judge0: 11,
    },
];

/// The limits of every case, in each dialect's units.
const TIMEOUT_MS: u64 = 2000;
const MEMORY_MB: u64 = 128;

async fn post(app: &TestApp, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Waits until the app owns no sandbox (their removal runs in the background).
async fn nothing_left(app: &TestApp, case: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.server.executor.sandboxes().owned_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "{case}: a sandbox was left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn hostile_programs_end_alike_through_run_piston_and_judge0() {
    let app = start_on_own_runtime(&[]);
    for case in CASES {
        let through_run = post(
            &app,
            "/run",
            json!({ "language": case.language, "code": case.code,
                    "timeout_ms": TIMEOUT_MS, "memory_mb": MEMORY_MB }),
        );
        let through_piston = post(
            &app,
            "/api/v2/execute",
            json!({ "language": case.language, "version": "*",
                    "files": [{ "content": case.code }],
                    "run_timeout": TIMEOUT_MS, "run_cpu_time": TIMEOUT_MS,
                    "run_memory_limit": MEMORY_MB * 1024 * 1024 }),
        );
        let through_judge0 = post(
            &app,
            "/judge0/submissions?wait=true&fields=*",
            json!({ "language_id": case.judge0_id, "source_code": case.code,
                    "cpu_time_limit": TIMEOUT_MS as f64 / 1000.0, "cpu_extra_time": 0,
                    "wall_time_limit": TIMEOUT_MS as f64 / 1000.0,
                    "memory_limit": MEMORY_MB * 1024 }),
        );
        let started = Instant::now();
        let (run, piston, judge0) = tokio::join!(through_run, through_piston, through_judge0);
        let name = case.name;
        // Each within its limits: nothing waits for more than the wall clock and cleanup.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name}: {:?}",
            started.elapsed()
        );
        assert_eq!(run["status"], case.run, "{name} through /run: {run}");
        let stage = &piston["run"];
        assert_eq!(
            (stage["status"].as_str(), stage["signal"].as_str()),
            case.piston,
            "{name} through Piston: {piston}"
        );
        assert_eq!(
            judge0["status"]["id"], case.judge0,
            "{name} through Judge0: {judge0}"
        );
        // The same output cap everywhere (stdout and stderr together).
        let kept = |answer: &Value| {
            ["stdout", "stderr"]
                .iter()
                .map(|s| answer[s].as_str().map_or(0, str::len))
                .sum::<usize>()
        };
        let cap = app.server.executor.sandboxes().config().output_limit_bytes;
        for (dialect, answer) in [("/run", &run), ("Piston", stage), ("Judge0", &judge0)] {
            assert!(
                kept(answer) <= cap,
                "{name} through {dialect}: {} bytes",
                kept(answer)
            );
        }
        nothing_left(&app, name).await;
    }
    app.server.shutdown().await.unwrap();
}
