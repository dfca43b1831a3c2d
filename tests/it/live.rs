//! Live runs: `POST /run` streamed as NDJSON, and the interactive `GET /run/ws`. Real server,
//! engine and images.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{TestApp, assert_removed, shared, start_on_own_runtime};

/// Longest wait for an event.
const EVENT_DEADLINE: Duration = Duration::from_secs(30);

/// Every event of a streamed run with the time it arrived (from the request).
async fn stream(
    app: &TestApp,
    path: &str,
    accept: Option<&str>,
    body: Value,
) -> Vec<(Duration, Value)> {
    let started = Instant::now();
    let mut request = reqwest::Client::new().post(app.url(path)).json(&body);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut events = Vec::new();
    let mut pending = Vec::new();
    while let Some(chunk) = tokio::time::timeout(EVENT_DEADLINE, response.chunk())
        .await
        .expect("an event in time")
        .unwrap()
    {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            events.push((started.elapsed(), serde_json::from_slice(&line).unwrap()));
        }
    }
    assert!(pending.is_empty(), "a partial last line");
    events
}

fn of_kind<'a>(events: &'a [(Duration, Value)], kind: &str) -> Vec<&'a (Duration, Value)> {
    events.iter().filter(|(_, e)| e["event"] == kind).collect()
}

fn stdout_of(events: &[(Duration, Value)]) -> String {
    of_kind(events, "stdout")
        .iter()
        .map(|(_, e)| e["data"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_streamed_run_shows_output_long_before_it_ends() {
    let program = "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('last')";
    let events = stream(
        shared(),
        "/run",
        Some("application/x-ndjson"),
        json!({ "language": "python", "code": program }),
    )
    .await;
    assert_eq!(events[0].1["event"], "started", "{events:?}");
    let first = of_kind(&events, "stdout")[0];
    assert_eq!(first.1["data"], "first\n");
    let (result_at, result) = events.last().unwrap();
    assert_eq!(result["event"], "result");
    assert!(
        *result_at >= first.0 + Duration::from_millis(2500),
        "first line at {:?}, result at {result_at:?}",
        first.0
    );
    // The result is the object POST /run returns.
    let result = &result["result"];
    assert_eq!(result["status"], "success");
    assert_eq!(result["stdout"], "first\nlast\n");
    assert_eq!(result["id"], events[0].1["id"]);
    assert_removed(result["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn stream_true_streams_a_compile_then_the_run() {
    let program = "#include <stdio.h>\nint main(void){ int unused; puts(\"hi\"); return 3; }";
    let events = stream(
        shared(),
        "/run?stream=true",
        None,
        json!({ "language": "c", "code": program }),
    )
    .await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"result"));
    let warning = of_kind(&events, "compile");
    assert!(
        warning.iter().any(|(_, e)| e["stream"] == "stderr"
            && e["data"].as_str().unwrap().contains("unused")),
        "{events:?}"
    );
    assert_eq!(stdout_of(&events), "hi\n");
    let result = &events.last().unwrap().1["result"];
    assert_eq!(result["status"], "runtime_error");
    assert_eq!(result["exit_code"], 3);
}

#[tokio::test]
async fn a_bad_streamed_request_is_a_plain_error_and_runs_nothing() {
    let response = reqwest::Client::new()
        .post(shared().url("/run?stream=true"))
        .json(&json!({ "language": "cobol", "code": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_language");
}

#[tokio::test]
async fn the_output_cap_and_the_time_limit_hold_when_streamed() {
    let flood = "import sys\nsys.stdout.write('y' * 200000)";
    let events = stream(
        shared(),
        "/run",
        Some("application/x-ndjson"),
        json!({ "language": "python", "code": flood }),
    )
    .await;
    let result = &events.last().unwrap().1["result"];
    assert_eq!(result["status"], "output_limit_exceeded", "{result}");
    assert_eq!(result["truncated"], true);
    let streamed = stdout_of(&events);
    assert_eq!(streamed.len(), 65536, "the cap, streamed exactly");
    assert_eq!(streamed, result["stdout"].as_str().unwrap());

    let started = Instant::now();
    let events = stream(
        shared(),
        "/run",
        Some("application/x-ndjson"),
        json!({ "language": "python", "code": "import time\ntime.sleep(20)", "timeout_ms": 1000 }),
    )
    .await;
    let result = &events.last().unwrap().1["result"];
    assert_eq!(result["status"], "timeout", "{result}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_removed(result["id"].as_str().unwrap()).await;
}

/// An interactive client: the socket and the events received so far.
struct Interactive {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    events: Vec<Value>,
    closed: bool,
}

impl Interactive {
    async fn start(app: &TestApp, request: Value) -> Interactive {
        let url = format!("ws://{}/run/ws", app.base.trim_start_matches("http://"));
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
        Interactive {
            ws,
            events: Vec::new(),
            closed: false,
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    /// Reads until `done` holds for the events so far (or fails after the deadline).
    async fn wait_for(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) {
        let started = Instant::now();
        while !done(&self.events) {
            let left = EVENT_DEADLINE.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    self.events.push(serde_json::from_str(&text).unwrap());
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                    self.closed = true;
                    assert!(
                        done(&self.events),
                        "closed while waiting for {what}: {:?}",
                        self.events
                    );
                    return;
                }
                Ok(Some(Ok(_))) => {}
                Err(_) => panic!("waiting for {what}: {:?}", self.events),
            }
        }
    }

    /// Reads until the result event.
    async fn wait_for_result(&mut self) {
        self.wait_for("the result", |events| {
            events.last().is_some_and(|e| e["event"] == "result")
        })
        .await;
    }

    fn stdout(&self) -> String {
        stdout_in(&self.events)
    }

    fn result(&self) -> &Value {
        let last = self.events.last().expect("events");
        assert_eq!(last["event"], "result", "{:?}", self.events);
        &last["result"]
    }
}

fn stdout_in(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["event"] == "stdout")
        .map(|e| e["data"].as_str().unwrap())
        .collect()
}

async fn ping_pong(language: &str, code: &str) {
    let mut run = Interactive::start(shared(), json!({ "language": language, "code": code })).await;
    // Each answer arrives before the next question is sent.
    for (question, answer) in [("1", "2"), ("20", "40"), ("300", "600")] {
        run.send(json!({ "type": "stdin", "data": format!("{question}\n") }))
            .await;
        let expected = format!("{answer}\n");
        run.wait_for(&format!("the answer {expected:?}"), |events| {
            stdout_in(events).ends_with(&expected)
        })
        .await;
    }
    run.send(json!({ "type": "stdin_close" })).await;
    run.wait_for_result().await;
    let result = run.result();
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(result["stdout"], "2\n40\n600\nbye\n");
    assert_removed(result["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn an_interactive_python_program_answers_turn_by_turn() {
    ping_pong(
        "python",
        "for _ in range(3):\n    print(int(input()) * 2, flush=True)\ntry:\n    input()\nexcept EOFError:\n    print('bye')",
    )
    .await;
}

#[tokio::test]
async fn an_interactive_c_program_answers_turn_by_turn() {
    ping_pong(
        "c",
        "#include <stdio.h>\nint main(void){ int x; for (int i = 0; i < 3; i++) { if (scanf(\"%d\", &x) != 1) return 1; printf(\"%d\\n\", 2 * x); fflush(stdout); } if (scanf(\"%d\", &x) == EOF) puts(\"bye\"); return 0; }",
    )
    .await;
}

#[tokio::test]
async fn a_kill_frame_ends_the_run() {
    let started = Instant::now();
    let mut run = Interactive::start(
        shared(),
        json!({ "language": "python", "code": "import time\nprint('up', flush=True)\ntime.sleep(30)" }),
    )
    .await;
    run.wait_for("the program", |events| {
        events.iter().any(|e| e["event"] == "stdout")
    })
    .await;
    run.send(json!({ "type": "kill" })).await;
    run.wait_for_result().await;
    let result = run.result();
    assert_eq!(result["status"], "runtime_error", "{result}");
    assert_eq!(result["signal"], "SIGKILL");
    assert_eq!(result["stdout"], "up\n");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_removed(result["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn dropping_the_socket_kills_the_run_and_removes_its_container() {
    let mut run = Interactive::start(
        shared(),
        json!({ "language": "python", "code": "import time\ntime.sleep(30)" }),
    )
    .await;
    run.wait_for("started", |events| {
        events.iter().any(|e| e["event"] == "started")
    })
    .await;
    let id = run.events[0]["id"].as_str().unwrap().to_owned();
    drop(run);
    assert_removed(&id).await;
}

#[tokio::test]
async fn the_output_cap_and_the_time_limit_hold_interactively() {
    let mut run = Interactive::start(
        shared(),
        json!({ "language": "python", "code": "import sys\nsys.stdout.write('y' * 200000)" }),
    )
    .await;
    run.wait_for_result().await;
    assert_eq!(run.result()["status"], "output_limit_exceeded");
    assert_eq!(run.stdout().len(), 65536);

    let started = Instant::now();
    let mut run = Interactive::start(
        shared(),
        json!({ "language": "python", "code": "input()", "timeout_ms": 1000 }),
    )
    .await;
    run.wait_for_result().await;
    assert_eq!(run.result()["status"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_bad_first_frame_is_an_error_and_runs_nothing() {
    let app = start_on_own_runtime(&[]);
    let created = app.server.executor.sandboxes().created_count();
    let mut run = Interactive::start(&app, json!({ "language": "cobol", "code": "x" })).await;
    run.wait_for("the error", |events| !events.is_empty()).await;
    assert_eq!(run.events[0]["event"], "error");
    assert_eq!(run.events[0]["code"], "unknown_language");
    assert_eq!(app.server.executor.sandboxes().created_count(), created);
    app.server.shutdown().await.unwrap();
}

/// Codes of the error events so far.
fn error_codes(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "error")
        .map(|e| e["code"].as_str().unwrap().to_owned())
        .collect()
}

const STDIN_FRAME: usize = 64 * 1024;

#[tokio::test]
async fn stdin_a_program_does_not_read_is_bounded_in_bytes() {
    let mut run = Interactive::start(
        shared(),
        json!({ "language": "python", "code": "import time\ntime.sleep(30)", "timeout_ms": 20000 }),
    )
    .await;
    run.wait_for("the start", |events| {
        events.iter().any(|e| e["event"] == "started")
    })
    .await;
    // One frame past the per-frame bound is refused whole.
    run.send(json!({ "type": "stdin", "data": "x".repeat(STDIN_FRAME + 1) }))
        .await;
    run.wait_for("the refusal", |events| !error_codes(events).is_empty())
        .await;
    assert_eq!(error_codes(&run.events), ["input_too_large"]);
    // 24 frames of 64 KiB (1.5 MiB) to a program that never reads: runbox takes at most what
    // POST /run's body could carry (1 MiB), and less while the backlog is full.
    const FRAMES: usize = 24;
    for _ in 0..FRAMES {
        run.send(json!({ "type": "stdin", "data": "y".repeat(STDIN_FRAME) }))
            .await;
    }
    let at_least_refused = FRAMES - (1 << 20) / STDIN_FRAME;
    run.wait_for("the refusals", |events| {
        error_codes(events).len() > at_least_refused
    })
    .await;
    let refusals = error_codes(&run.events);
    assert!(
        refusals[1..]
            .iter()
            .all(|code| code == "input_backlogged" || code == "input_too_large"),
        "{refusals:?}"
    );
    run.send(json!({ "type": "kill" })).await;
    run.wait_for_result().await;
    assert_removed(run.result()["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn a_program_that_reads_gets_all_its_stdin_up_to_the_body_cap() {
    let mut run = Interactive::start(
        shared(),
        json!({ "language": "python", "code": "import sys\nprint(len(sys.stdin.buffer.read()))", "input": "abc" }),
    )
    .await;
    run.wait_for("the start", |events| {
        events.iter().any(|e| e["event"] == "started")
    })
    .await;
    // Fifteen full frames: 960 KiB, with the 3 bytes of `input` under the 1 MiB cap. A frame
    // refused while the backlog is full is sent again.
    let mut sent = 0;
    while sent < 15 {
        let refused_before = error_codes(&run.events).len();
        run.send(json!({ "type": "stdin", "data": "z".repeat(STDIN_FRAME) }))
            .await;
        // Whatever answers in 50 ms (only refusals answer).
        let _ = tokio::time::timeout(Duration::from_millis(50), run.wait_for("", |_| false)).await;
        let codes = error_codes(&run.events);
        match codes.get(refused_before) {
            None => sent += 1,
            Some(code) => {
                assert_eq!(code, "input_backlogged", "{codes:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Past the cap in all: refused, and the program still gets everything before it.
    run.send(json!({ "type": "stdin", "data": "z".repeat(STDIN_FRAME) }))
        .await;
    run.wait_for("the refusal", |events| {
        error_codes(events)
            .iter()
            .any(|code| code == "input_too_large")
    })
    .await;
    run.send(json!({ "type": "stdin_close" })).await;
    run.wait_for_result().await;
    let result = run.result();
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(result["stdout"], format!("{}\n", 3 + 15 * STDIN_FRAME));
}

#[tokio::test]
async fn a_first_frame_over_the_body_cap_closes_the_socket_and_runs_nothing() {
    let app = start_on_own_runtime(&[]);
    let created = app.server.executor.sandboxes().created_count();
    let code = format!("print('{}')", "x".repeat(1100 * 1024));
    let mut run = Interactive::start(&app, json!({ "language": "python", "code": code })).await;
    run.wait_for("the error", |events| !events.is_empty()).await;
    let next = tokio::time::timeout(EVENT_DEADLINE, run.ws.next())
        .await
        .unwrap();
    assert!(
        matches!(next, Some(Ok(Message::Close(_))) | None | Some(Err(_))),
        "{next:?}"
    );
    assert_eq!(run.events.len(), 1, "{:?}", run.events);
    assert_eq!(run.events[0]["code"], "payload_too_large");
    assert_eq!(app.server.executor.sandboxes().created_count(), created);
    app.server.shutdown().await.unwrap();
}

/// The program of the files-out checks: reads a line, writes it to a file, prints it.
const WRITES_ITS_INPUT: &str =
    "line = input()\nopen('echo.txt', 'w').write(line * 2)\nprint('wrote', line)";

#[tokio::test]
async fn a_streamed_run_sends_each_file_before_the_result() {
    let events = stream(
        shared(),
        "/run?stream=true",
        None,
        json!({
            "language": "python",
            "code": WRITES_ITS_INPUT,
            "input": "ab\n",
            "outputs": ["*.txt"],
        }),
    )
    .await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
    let file_at = kinds
        .iter()
        .position(|k| *k == "file")
        .expect("a file event");
    assert_eq!(kinds.last(), Some(&"result"), "{kinds:?}");
    assert!(file_at < kinds.len() - 1 && kinds[..file_at].contains(&"stdout"));
    let file = &events[file_at].1;
    assert_eq!(file["name"], "echo.txt");
    assert_eq!(file["encoding"], "base64");
    assert_eq!(file["content"], "YWJhYg=="); // "abab"
    // The result lists the file once more, without the bytes sent already.
    let result = &events.last().unwrap().1["result"];
    assert_eq!(result["files"][0]["name"], "echo.txt", "{result}");
    assert_eq!(result["files"][0]["size"], 4);
    assert!(result["files"][0].get("content").is_none(), "{result}");
    assert_eq!(result["files_truncated"], false);
}

#[tokio::test]
async fn an_interactive_run_sends_its_files_on_the_socket() {
    let mut run = Interactive::start(
        shared(),
        json!({ "language": "python", "code": WRITES_ITS_INPUT, "outputs": ["echo.txt"] }),
    )
    .await;
    run.send(json!({ "type": "stdin", "data": "xyz\n" })).await;
    run.wait_for_result().await;
    let file = run
        .events
        .iter()
        .find(|e| e["event"] == "file")
        .unwrap_or_else(|| panic!("no file event: {:?}", run.events));
    assert_eq!(file["name"], "echo.txt");
    assert_eq!(file["content"], "eHl6eHl6"); // "xyzxyz"
    let result = run.result();
    assert_eq!(result["stdout"], "wrote xyz\n", "{result}");
    assert_eq!(result["files"][0]["size"], 6);
    assert_removed(result["id"].as_str().unwrap()).await;
}
