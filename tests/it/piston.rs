//! Piston v2, drop-in: npm `piston-client` as published, and raw HTTP against every route,
//! field check and error of `../shared/spec/compat.md` §1 that runbox serves.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{TestApp, published_client, shared, start_on_own_runtime};

async fn execute_at(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(app.url(path))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    (status, response.json().await.unwrap())
}

async fn execute(body: Value) -> (StatusCode, Value) {
    execute_at(shared(), "/api/v2/execute", body).await
}

fn py(code: &str) -> Value {
    json!({ "language": "python", "version": "*", "files": [{ "content": code }] })
}

#[tokio::test]
async fn the_published_npm_client_works_unchanged() {
    let node = std::path::Path::new("node");
    let all = published_client(node, "piston.mjs", &[&shared().base]).await;
    let runtimes = all["runtimes"].as_array().unwrap();
    assert!(runtimes.iter().any(|r| r["language"] == "c++"));
    assert_eq!(all["hello"]["run"]["stdout"], "Hello, World!\n");
    assert_eq!(all["hello"]["run"]["code"], 0);
    assert_eq!(all["stdin"]["run"]["stdout"], "hello\n");
    // The compiler's message reaches the client, in `run` as Piston puts it.
    let compile = &all["compile_error"];
    assert_eq!(compile["compile"]["status"], "RE");
    assert!(
        compile["run"]["stderr"]
            .as_str()
            .unwrap()
            .contains("undefined_name"),
        "{compile}"
    );
    assert_eq!(compile["run"], compile["compile"]);
    let timeout = &all["timeout"]["run"];
    assert_eq!(
        (&timeout["status"], &timeout["signal"]),
        (&json!("TO"), &json!("SIGKILL"))
    );
    let failed = &all["runtime_error"]["run"];
    assert_eq!(failed["status"], "RE");
    assert_eq!(failed["code"], 1);
    assert!(failed["stderr"].as_str().unwrap().contains("boom"));
    // The client's default arguments.
    assert_eq!(all["args"]["run"]["stdout"], "1 2 3\n");
}

#[tokio::test]
async fn runtimes_use_pistons_names_and_semver() {
    for path in [
        "/api/v2/runtimes",
        "/api/v2/runtimes/",
        "/api/v2/piston/runtimes",
    ] {
        let runtimes: Vec<Value> = reqwest::get(shared().url(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(runtimes.len(), 14, "{path}");
        for runtime in &runtimes {
            let version = runtime["version"].as_str().unwrap();
            assert!(semver::Version::parse(version).is_ok(), "{runtime}");
        }
        let find = |name: &str| runtimes.iter().find(|r| r["language"] == name).unwrap();
        assert_eq!(find("c++")["runtime"], "gcc");
        assert!(
            find("c++")["aliases"]
                .as_array()
                .unwrap()
                .contains(&json!("cpp"))
        );
        assert_eq!(find("csharp")["runtime"], "mono");
        assert_eq!(find("javascript")["runtime"], "node");
        assert!(find("python").get("runtime").is_none());
    }
}

#[tokio::test]
async fn execute_answers_as_piston_does() {
    // Any content type (here none), an alias, a range, stdin that gains its newline.
    let (status, body) = execute(json!({
        "language": "py3", "version": "3.x", "stdin": "abc",
        "files": [{ "content": "import sys; print(repr(sys.stdin.read()))" }]
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["language"], "python");
    assert!(body.get("compile").is_none());
    let run = &body["run"];
    assert_eq!(run["stdout"], "'abc\\n'\n");
    assert_eq!(
        (
            &run["code"],
            &run["signal"],
            &run["status"],
            &run["message"]
        ),
        (&json!(0), &Value::Null, &Value::Null, &Value::Null)
    );
    assert!(run["wall_time"].as_u64().is_some() && run["memory"].as_u64().is_some());

    // stdout and stderr interleaved as they arrived (two pipes: the pauses give the
    // arrival an order, as they would for Piston's own two pipes).
    let (_, body) = execute(py(
        "import sys, time\nprint('a', flush=True)\ntime.sleep(0.2)\n\
         print('b', file=sys.stderr, flush=True)\ntime.sleep(0.2)\nprint('c', flush=True)",
    ))
    .await;
    assert_eq!(body["run"]["output"], "a\nb\nc\n");
    assert_eq!(body["run"]["stdout"], "a\nc\n");

    // Data files in every encoding; the first utf8 file is the main one, whatever its name.
    let (_, body) = execute(json!({
        "language": "python", "version": "*", "args": ["x"],
        "files": [
            { "name": "b.bin", "content": "aGk=", "encoding": "base64" },
            { "content": "import sys; print(open('b.bin').read(), open('h.txt').read(), sys.argv[1:])" },
            { "name": "h.txt", "content": "6f6b", "encoding": "hex" },
        ]
    }))
    .await;
    assert_eq!(body["run"]["stdout"], "hi ok ['x']\n", "{body}");

    // A signal, and a compile failure (the run stage is the compile stage).
    let (_, body) = execute(py("import os; os.kill(os.getpid(), 11)")).await;
    assert_eq!(
        (&body["run"]["status"], &body["run"]["signal"]),
        (&json!("SG"), &json!("SIGSEGV"))
    );
    assert_eq!(body["run"]["message"], "Caught fatal signal 11");
    let (_, body) = execute_at(
        shared(),
        "/api/v2/piston/execute/",
        json!({ "language": "c", "version": "12", "files": [{ "content": "int main( {" }] }),
    )
    .await;
    assert_eq!(body["compile"]["status"], "RE", "{body}");
    assert_eq!(body["run"], body["compile"]);
}

#[tokio::test]
async fn bad_requests_get_pistons_messages_and_create_nothing() {
    let app = start_on_own_runtime(&[]);
    let cases = [
        (json!({}), "language is required as a string"),
        (
            json!({ "language": "python" }),
            "version is required as a string",
        ),
        (
            json!({ "language": "python", "version": "*" }),
            "files is required as an array",
        ),
        (
            json!({ "language": "python", "version": "*", "files": [{}] }),
            "files[0].content is required as a string",
        ),
        (
            json!({ "language": "python", "version": "*",
                "files": [{ "content": "aGk=", "encoding": "base64" }] }),
            "files must include at least one utf8 encoded file",
        ),
        (
            json!({ "language": "html", "version": "5.0.0", "files": [{ "content": "" }] }),
            "html-5.0.0 runtime is unknown",
        ),
        (
            json!({ "language": "python", "version": "2", "files": [{ "content": "" }] }),
            "python-2 runtime is unknown",
        ),
        (
            json!({ "language": "python", "version": "*", "files": [{ "content": "" }],
                "run_timeout": "3000" }),
            "If specified, run_timeout must be a number",
        ),
        (
            json!({ "language": "python", "version": "*", "files": [{ "content": "" }],
                "run_memory_limit": 1_000_000_000_000u64 }),
            "run_memory_limit cannot exceed the configured limit of",
        ),
        (
            json!({ "language": "python", "version": "*",
                "files": [{ "content": "" }, { "name": "../x", "content": "" }] }),
            "",
        ),
    ];
    for (body, message) in cases {
        let (status, answer) = execute_at(&app, "/api/v2/execute", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        let text = answer["message"].as_str().unwrap();
        assert!(text.starts_with(message), "{body} → {text}");
        assert_eq!(answer.as_object().unwrap().len(), 1, "{answer}");
    }
    let response = reqwest::Client::new()
        .post(app.url("/api/v2/execute"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.json::<Value>().await.unwrap()["message"].is_string());
    // Unknown routes and methods: Piston's 404.
    for response in [
        reqwest::get(app.url("/api/v2/nothing")).await.unwrap(),
        reqwest::get(app.url("/api/v2/execute")).await.unwrap(),
    ] {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({ "message": "Not Found" })
        );
    }
    assert_eq!(app.server.executor.sandboxes().created_count(), 0);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn packages_are_listed_and_never_installed() {
    let listed: Vec<Value> = reqwest::get(shared().url("/api/v2/packages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 14);
    assert!(listed.iter().all(|p| p["installed"] == true));
    for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let response = reqwest::Client::new()
            .request(method, shared().url("/api/v2/packages"))
            .json(&json!({ "language": "python", "version": "3.12.0" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({ "message": "Requested package python-3.12.0 does not exist" })
        );
    }
}

#[tokio::test]
async fn the_edge_answers_in_pistons_shape_and_counts_every_alias_as_one_route() {
    let key = "piston-key-0123456789";
    let keys = format!(
        r#"[{{ name = "bot", sha256 = "{:x}" }}]"#,
        Sha256::digest(key.as_bytes())
    );
    let app = start_on_own_runtime(&[
        ("RUNBOX_AUTH__KEYS", keys.as_str()),
        ("RUNBOX_RATE_LIMIT__ENABLED", "true"),
        (
            "RUNBOX_RATE_LIMIT__RULES",
            r#"{ runs = { routes = ["POST /api/v2/execute"], requests = 2, window_secs = 600 } }"#,
        ),
    ]);
    let post = |path: &'static str, auth: Option<&'static str>| {
        let mut request = reqwest::Client::new()
            .post(app.url(path))
            .body(py("print(1)").to_string());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post("/api/v2/execute", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["message"].is_string(), "{body}");
    // The raw key, as Piston's clients send it; then two aliases of the one route.
    let raw = Some(key);
    assert_eq!(post("/api/v2/execute", raw).await.0, StatusCode::OK);
    assert_eq!(post("/api/v2/piston/execute/", raw).await.0, StatusCode::OK);
    let (status, body) = post("/api/v2/execute/", raw).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["message"].as_str().unwrap().contains("rate"), "{body}");
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn limits_hold_through_piston_as_through_run() {
    // Memory: the cgroup's kill, a fatal SIGKILL in Piston's words.
    let (_, body) = execute(json!({
        "language": "python", "version": "*", "run_memory_limit": 64_000_000,
        "files": [{ "content": "x = bytearray(400 * 1024 * 1024); print(len(x))" }]
    }))
    .await;
    assert_eq!(
        (&body["run"]["status"], &body["run"]["signal"]),
        (&json!("SG"), &json!("SIGKILL")),
        "{body}"
    );
    // Output: runbox's cap, the run ended (OL).
    let (_, body) = execute(py("while True: print('x' * 1000)")).await;
    assert_eq!(body["run"]["status"], "OL", "{body}");
    assert!(body["run"]["stdout"].as_str().unwrap().len() <= 1024 * 1024);
    // A fork bomb ends in time through Piston as through /run. How it ends is not the same
    // from one run to the next (the shell may exit before the pids cap bites, or be killed),
    // so each answer is checked for being a consistent end, not the two for equality.
    let bomb = ":(){ :|:& };:";
    let started = std::time::Instant::now();
    let (_, body) = execute(json!({
        "language": "bash", "version": "*", "run_timeout": 2000,
        "files": [{ "content": bomb }]
    }))
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let run = &body["run"];
    match run["status"].as_str() {
        None => assert_eq!(
            (&run["code"], &run["signal"]),
            (&json!(0), &Value::Null),
            "{body}"
        ),
        Some("RE") => assert!(run["code"].as_i64().unwrap() != 0, "{body}"),
        Some("SG" | "TO") => assert!(run["signal"].is_string(), "{body}"),
        Some(other) => panic!("{other}: {body}"),
    }
    let started = std::time::Instant::now();
    let through_run: Value = reqwest::Client::new()
        .post(shared().url("/run"))
        .json(&json!({ "language": "bash", "code": bomb, "timeout_ms": 2000 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert!(
        [
            "success",
            "runtime_error",
            "timeout",
            "memory_limit_exceeded"
        ]
        .contains(&through_run["status"].as_str().unwrap()),
        "{through_run}"
    );
}

#[tokio::test]
async fn cpu_time_and_compile_limits_are_enforced_as_pistons() {
    // The CPU-time limit, all processes together, apart from the wall clock.
    let started = std::time::Instant::now();
    let (_, body) = execute(json!({
        "language": "python", "version": "*", "run_timeout": 8000, "run_cpu_time": 600,
        "files": [{ "content": "import os\nos.fork()\nwhile True: pass" }]
    }))
    .await;
    let run = &body["run"];
    assert_eq!(
        (&run["status"], &run["signal"], &run["message"]),
        (
            &json!("TO"),
            &json!("SIGKILL"),
            &json!("Time limit exceeded")
        ),
        "{body}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{body}"
    );
    // The wall clock, with CPU time to spare.
    let (_, body) = execute(json!({
        "language": "python", "version": "*", "run_timeout": 1000, "run_cpu_time": 3000,
        "files": [{ "content": "import time\ntime.sleep(5)" }]
    }))
    .await;
    assert_eq!(
        body["run"]["message"], "Time limit exceeded (wall clock)",
        "{body}"
    );
    // The compile's own wall clock, as asked: no compiler finishes in a millisecond.
    let (_, body) = execute(json!({
        "language": "c", "version": "*", "compile_timeout": 1,
        "files": [{ "content": "int main(void) { return 0; }" }]
    }))
    .await;
    assert_eq!(body["compile"]["status"], "TO", "{body}");
    assert_eq!(body["run"], body["compile"], "{body}");
}

/// A client of `GET /api/v2/connect`: sends `frames` (after the server's first answer when
/// asked), then reads until the close; returns the frames and the close code and reason.
struct Connect {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Connect {
    async fn open(path: &str) -> Connect {
        let url = format!("ws://{}{path}", shared().base.trim_start_matches("http://"));
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Connect { ws }
    }

    async fn send(&mut self, frame: Value) {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                frame.to_string().into(),
            ))
            .await
            .unwrap();
    }

    /// The next JSON frame, or the close (code, reason) as `Err`.
    async fn next(&mut self) -> Result<Value, (u16, String)> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let message = tokio::time::timeout(std::time::Duration::from_secs(30), self.ws.next())
                .await
                .expect("the server answers in time");
            match message {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Err((u16::from(frame.code), frame.reason.to_string()));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Every frame up to the close, and the close.
    async fn rest(&mut self) -> (Vec<Value>, (u16, String)) {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Ok(frame) => frames.push(frame),
                Err(close) => return (frames, close),
            }
        }
    }
}

fn kinds(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f["type"].as_str().unwrap() {
            "stage" | "exit" => format!(
                "{}:{}",
                f["type"].as_str().unwrap(),
                f["stage"].as_str().unwrap()
            ),
            other => other.to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn connect_runs_interactively_with_pistons_messages() {
    let mut client = Connect::open("/api/v2/connect").await;
    client
        .send(
            json!({ "type": "init", "language": "python", "version": "*",
            "files": [{ "content": "print(input()[::-1])" }] }),
        )
        .await;
    let runtime = client.next().await.unwrap();
    assert_eq!(
        (&runtime["type"], &runtime["language"]),
        (&json!("runtime"), &json!("python"))
    );
    client
        .send(json!({ "type": "data", "stream": "stdin", "data": "olleh\n" }))
        .await;
    let (frames, close) = client.rest().await;
    assert_eq!(close, (4999, "Job Completed".to_owned()));
    assert_eq!(
        kinds(&frames),
        ["stage:run", "data", "exit:run"],
        "{frames:?}"
    );
    assert_eq!(
        (&frames[1]["stream"], &frames[1]["data"]),
        (&json!("stdout"), &json!("hello\n"))
    );
    assert_eq!(frames[2]["code"], 0);

    // A compiled language: both stages, in order.
    let mut client = Connect::open("/api/v2/piston/connect").await;
    client
        .send(json!({ "type": "init", "language": "c", "version": "*",
            "files": [{ "content": "#include <stdio.h>\nint main(){puts(\"hi\");return 3;}" }] }))
        .await;
    let (frames, close) = client.rest().await;
    assert_eq!(close.0, 4999);
    assert_eq!(
        kinds(&frames),
        [
            "runtime",
            "stage:compile",
            "exit:compile",
            "stage:run",
            "data",
            "exit:run"
        ],
        "{frames:?}"
    );
    assert_eq!(frames[5]["code"], 3);
    assert_eq!(frames[5]["error"], "Exited with error status 3");
}

#[tokio::test]
async fn connect_closes_with_pistons_codes() {
    // Nothing sent: the init deadline.
    let mut client = Connect::open("/api/v2/connect").await;
    let started = std::time::Instant::now();
    assert_eq!(
        client.rest().await.1,
        (4001, "Initialization Timeout".to_owned())
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Data before the init.
    let mut client = Connect::open("/api/v2/connect").await;
    client
        .send(json!({ "type": "data", "stream": "stdin", "data": "x" }))
        .await;
    assert_eq!(client.rest().await.1.0, 4003);
    // A bad init: the error, then 4002.
    let mut client = Connect::open("/api/v2/connect").await;
    client
        .send(json!({ "type": "init", "language": "html", "version": "5", "files": [] }))
        .await;
    let (frames, close) = client.rest().await;
    assert_eq!(close.0, 4002);
    assert_eq!(frames[0]["type"], "error");
    assert!(frames[0]["message"].is_string());
    // A second init, another stream, a bad signal.
    let init = json!({ "type": "init", "language": "python", "version": "*",
        "files": [{ "content": "import time; time.sleep(30)" }] });
    for (second, code) in [
        (init.clone(), 4000),
        (
            json!({ "type": "data", "stream": "stdout", "data": "x" }),
            4004,
        ),
        (json!({ "type": "signal", "signal": "SIGNOPE" }), 4005),
    ] {
        let mut client = Connect::open("/api/v2/connect").await;
        client.send(init.clone()).await;
        assert_eq!(client.next().await.unwrap()["type"], "runtime");
        client.send(second).await;
        assert_eq!(client.rest().await.1.0, code);
    }
    // A valid signal ends the run.
    let mut client = Connect::open("/api/v2/connect").await;
    client.send(init).await;
    assert_eq!(client.next().await.unwrap()["type"], "runtime");
    client
        .send(json!({ "type": "signal", "signal": "SIGKILL" }))
        .await;
    let (frames, close) = client.rest().await;
    assert_eq!(close.0, 4999);
    let exit = frames.last().unwrap();
    assert_eq!(
        (&exit["type"], &exit["signal"]),
        (&json!("exit"), &json!("SIGKILL"))
    );
}

#[tokio::test]
async fn connect_keeps_the_output_cap() {
    let mut client = Connect::open("/api/v2/connect").await;
    client
        .send(
            json!({ "type": "init", "language": "python", "version": "*",
            "files": [{ "content": "while True: print('x' * 1000)" }] }),
        )
        .await;
    let (frames, close) = client.rest().await;
    assert_eq!(close.0, 4999);
    let sent: usize = frames
        .iter()
        .filter(|f| f["type"] == "data")
        .map(|f| f["data"].as_str().unwrap().len())
        .sum();
    // runbox's cap (sandbox.output_limit_bytes, 64 KiB shipped), not unbounded.
    assert!(sent <= 64 * 1024, "{sent} bytes sent");
    let exit = frames.last().unwrap();
    assert_eq!(exit["error"], "stdout length exceeded", "{exit}");
}
