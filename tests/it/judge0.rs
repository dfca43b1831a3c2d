//! Judge0 CE 1.13.1, drop-in, at `/judge0`: the official Python SDK as published, and raw HTTP
//! against the submission routes, fields, encodings, statuses and errors of
//! `../shared/spec/compat.md` §2 that runbox serves.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, published_client, repo_root, shared, start_on_own_runtime};

/// Judge0's default fields (`submission_serializer.rb`), in name order.
const DEFAULT_FIELDS: [&str; 8] = [
    "compile_output",
    "memory",
    "message",
    "status",
    "stderr",
    "stdout",
    "time",
    "token",
];

/// Sends `request`: the status, and the JSON body (`null` when there is none).
async fn sent(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestApp, path_and_query: &str, body: Value) -> (StatusCode, Value) {
    sent(
        reqwest::Client::new()
            .post(app.url(path_and_query))
            .json(&body),
    )
    .await
}

async fn get(app: &TestApp, path_and_query: &str) -> (StatusCode, Value) {
    sent(reqwest::Client::new().get(app.url(path_and_query))).await
}

#[tokio::test]
async fn the_official_python_sdk_works_unchanged() {
    let python = repo_root().join("tests/clients/venv/bin/python");
    let all = published_client(&python, "judge0_sdk.py", &[&shared().url("/judge0")]).await;
    assert_eq!(all["about"]["version"], "1.13.1");
    assert_eq!(
        (&all["hello"]["status"], &all["hello"]["stdout"]),
        (&json!(3), &json!("Hello, World!\n"))
    );
    assert_eq!(all["stdin"]["stdout"], "hello\n");
    let compile = &all["compile_error"];
    assert_eq!(compile["status"], 6);
    assert!(
        compile["compile_output"]
            .as_str()
            .unwrap()
            .contains("undefined_name"),
        "{compile}"
    );
    assert_eq!(all["timeout"]["status"], 5);
    assert_eq!(
        (
            &all["runtime_error"]["status"],
            &all["runtime_error"]["exit_code"]
        ),
        (&json!(11), &json!(3))
    );
    assert_eq!(all["expected"]["status"], 4);
    assert_eq!(
        (&all["async"]["status"], &all["async"]["stdout"]),
        (&json!(3), &json!("later\n"))
    );
    let batch: Vec<&Value> = all["batch"].as_array().unwrap().iter().collect();
    let outputs: Vec<&Value> = batch.iter().map(|s| &s["stdout"]).collect();
    assert_eq!(outputs, [&json!("0\n"), &json!("1\n"), &json!("4\n")]);
}

#[tokio::test]
async fn submissions_answer_in_judge0s_shapes() {
    let app = shared();
    // wait=true with the default fields: null for empty streams, time as a string.
    let (status, body) = post(
        app,
        "/judge0/submissions?wait=true",
        json!({ "source_code": "print(input())", "language_id": "71", "stdin": "hi" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = DEFAULT_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(
        body["status"],
        json!({ "id": 3, "description": "Accepted" })
    );
    assert_eq!(body["stdout"], "hi\n");
    assert_eq!(body["stderr"], Value::Null);
    assert!(body["time"].as_str().unwrap().parse::<f64>().is_ok());

    // base64 both ways (Ruby's wrapped form out), a signal, and chosen fields.
    let (_, body) = post(
        app,
        "/judge0/submissions?wait=true&base64_encoded=true&fields=stdout,exit_signal,status_id,message",
        json!({ "source_code": "aW1wb3J0IG9zOyBwcmludCgnaGknLCBmbHVzaD1UcnVlKTsgb3Mua2lsbChvcy5nZXRwaWQoKSwgMTEp",
                "language_id": 71 }),
    )
    .await;
    assert_eq!(
        body,
        json!({ "stdout": "aGkK\n", "exit_signal": 11, "status_id": 7,
                "message": "Q2F1Z2h0IGZhdGFsIHNpZ25hbCAxMQ==\n" })
    );

    // Asynchronous: a token at once, then the states until the end.
    let (status, created) = post(
        app,
        "/judge0/submissions",
        json!({ "source_code": "import time; time.sleep(1); print('done')", "language_id": 71 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created.as_object().unwrap().len(), 1);
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&token).is_ok());
    let mut seen = Vec::new();
    let body = loop {
        let (_, body) = get(app, &format!("/judge0/submissions/{token}?fields=*")).await;
        let id = body["status"]["id"].as_u64().unwrap();
        if seen.last() != Some(&id) {
            seen.push(id);
        }
        if id > 2 {
            break body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(seen.last(), Some(&3), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(body.as_object().unwrap().len(), 35, "{body}");
    assert!(body["finished_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["cpu_time_limit"], "5.0");
    assert_eq!(body["language"]["id"], 71);

    // Batches: one answer per item, and null for an unknown token.
    let (status, tokens) = post(
        app,
        "/judge0/submissions/batch",
        json!({ "submissions": [
            { "source_code": "print(1)", "language_id": 71 },
            { "source_code": "", "language_id": 71 },
        ] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(tokens[0]["token"].is_string());
    assert_eq!(tokens[1], json!({ "source_code": ["can't be blank"] }));
    let known = tokens[0]["token"].as_str().unwrap();
    let unknown = uuid::Uuid::new_v4();
    let (_, shown) = get(
        app,
        &format!("/judge0/submissions/batch?tokens={known},{unknown}&fields=token"),
    )
    .await;
    assert_eq!(shown["submissions"][0]["token"], known);
    assert_eq!(shown["submissions"][1], Value::Null);
}

/// A zip archive holding `entries` (name, content), deflated.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn zip_link(name: &str, target: &str) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .add_symlink(name, target, zip::write::SimpleFileOptions::default())
        .unwrap();
    writer.finish().unwrap().into_inner()
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn judge0s_run_attributes_do_what_judge0_does() {
    let app = shared();
    let run = |body: Value| async move {
        let (status, answer) = post(app, "/judge0/submissions?wait=true&fields=*", body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer
    };
    // additional_files: unpacked next to the source before it runs; the source is not replaced.
    let archive = zip_of(&[
        ("data/in.txt", b"from the zip\n".as_slice()),
        ("helper.py", b"def shout(s): return s.upper()".as_slice()),
        (
            "script.py",
            b"print('the zip must not replace the source')".as_slice(),
        ),
    ]);
    let answer = run(json!({
        "language_id": 71,
        "source_code": "from helper import shout\nprint(shout(open('data/in.txt').read().strip()))",
        "additional_files": base64_of(&archive),
    }))
    .await;
    assert_eq!(answer["stdout"], "FROM THE ZIP\n", "{answer}");
    assert_eq!(answer["additional_files"], base64_of(&archive));
    // compiler_options reach the compiler, split as Judge0's shell splits them.
    let answer = run(json!({
        "language_id": 50,
        "source_code": "#include <stdio.h>\nint main(void) { printf(\"%d %s\\n\", VALUE, WORDS); return 0; }",
        "compiler_options": "-DVALUE=42 '-DWORDS=\"two words\"'",
    }))
    .await;
    assert_eq!(answer["stdout"], "42 two words\n", "{answer}");
    assert_eq!(
        answer["compiler_options"],
        "-DVALUE=42 '-DWORDS=\"two words\"'"
    );
    // command_line_arguments, quoted words kept whole, nothing expanded.
    let answer = run(json!({
        "language_id": 71,
        "source_code": "import sys\nprint(sys.argv[1:])",
        "command_line_arguments": "'a b' c $HOME",
    }))
    .await;
    assert_eq!(answer["stdout"], "['a b', 'c', 'HOME']\n", "{answer}");
    // base64_encoded covers source_code, stdin and expected_output only, as in Judge0: the
    // arguments stay plain.
    let (status, answer) = post(
        app,
        "/judge0/submissions?wait=true&base64_encoded=true&fields=stdout",
        json!({ "language_id": 71, "command_line_arguments": "a b",
                "source_code": base64_of(b"import sys\nprint(sys.argv[1:])") }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        answer["stdout"],
        format!("{}\n", base64_of(b"['a', 'b']\n")),
        "{answer}"
    );
    // redirect_stderr_to_stdout: one stream, in the order written.
    let answer = run(json!({
        "language_id": 71,
        "source_code": "import sys\nprint('out 1', flush=True)\nprint('err', file=sys.stderr, flush=True)\nprint('out 2')",
        "redirect_stderr_to_stdout": true,
    }))
    .await;
    assert_eq!(answer["stdout"], "out 1\nerr\nout 2\n", "{answer}");
    assert_eq!(answer["stderr"], Value::Null, "{answer}");
    assert_eq!(answer["redirect_stderr_to_stdout"], true);
    // number_of_runs: the runs one after another, the time an average of theirs.
    let started = std::time::Instant::now();
    let answer = run(json!({
        "language_id": 71, "number_of_runs": 3,
        "source_code": "import time\ntime.sleep(0.4)\nprint('again')",
    }))
    .await;
    let elapsed = started.elapsed();
    assert_eq!(
        (&answer["status"]["id"], &answer["stdout"]),
        (&json!(3), &json!("again\n")),
        "{answer}"
    );
    assert_eq!(answer["number_of_runs"], 3);
    let wall: f64 = answer["wall_time"].as_str().unwrap().parse().unwrap();
    assert!(
        elapsed.as_secs_f64() >= 1.2 && (0.4..1.0).contains(&wall),
        "{elapsed:?}: {answer}"
    );
    // The CPU-time limit ends a busy program long before the wall clock; a sleeper is left be.
    let started = std::time::Instant::now();
    let answer = run(json!({
        "language_id": 71, "source_code": "while True: pass",
        "cpu_time_limit": 0.5, "cpu_extra_time": 0.2, "wall_time_limit": 15,
    }))
    .await;
    assert_eq!(answer["status"]["id"], 5, "{answer}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{answer}"
    );
    let answer = run(json!({
        "language_id": 71, "source_code": "import time\ntime.sleep(2)\nprint('rested')",
        "cpu_time_limit": 1, "wall_time_limit": 5,
    }))
    .await;
    assert_eq!(
        (&answer["status"]["id"], &answer["stdout"]),
        (&json!(3), &json!("rested\n")),
        "{answer}"
    );
    let wall: f64 = answer["wall_time"].as_str().unwrap().parse().unwrap();
    assert!(wall >= 2.0, "{answer}");
}

#[tokio::test]
async fn bad_submissions_get_judge0s_errors_and_create_nothing() {
    let app = start_on_own_runtime(&[]);
    let (status, body) = post(&app, "/judge0/submissions", json!({ "language_id": 9999 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({ "source_code": ["can't be blank"],
                "language_id": ["language with id 9999 doesn't exist"] })
    );
    let (status, body) = post(
        &app,
        "/judge0/submissions",
        json!({ "source_code": "x", "language_id": 71, "cpu_time_limit": 20,
                "memory_limit": 100, "enable_network": true,
                "callback_url": "http://169.254.169.254/", "wall_time_limit": "x",
                "additional_files": "UEsDBAoAAAAAAA==" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["cpu_time_limit"],
        json!(["must be less than or equal to 15.0"])
    );
    assert_eq!(
        body["memory_limit"],
        json!(["must be greater than or equal to 2048"])
    );
    assert_eq!(
        body["enable_network"],
        json!(["enabling network is not allowed"])
    );
    assert_eq!(
        body["callback_url"],
        json!(["setting callback is not allowed"])
    );
    assert_eq!(body["wall_time_limit"], json!(["is not a number"]));
    assert_eq!(
        body["additional_files"],
        json!(["is not a valid zip archive"])
    );
    // Archives that escape the work dir, link out of it or unpack past the cap, and compiler
    // options that would run another program: Judge0's 422, before any sandbox exists.
    let bombs = [
        (
            zip_of(&[("../../etc/cron.d/x", b"x".as_slice())]),
            "outside the work dir",
        ),
        (
            zip_of(&[("/etc/passwd", b"x".as_slice())]),
            "outside the work dir",
        ),
        (
            zip_of(&[("zeros", &vec![0u8; 64 << 20])]),
            "unpacks to more than",
        ),
        (zip_link("passwd", "/etc/passwd"), "links are not allowed"),
    ];
    for (archive, why) in bombs {
        let (status, body) = post(
            &app,
            "/judge0/submissions?wait=true",
            json!({ "source_code": "print(1)", "language_id": 71,
                    "additional_files": base64_of(&archive) }),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {body}");
        let message = body["additional_files"][0].as_str().unwrap_or_default();
        assert!(message.contains(why), "{why}: {body}");
    }
    for (language_id, options, why) in [
        (50, "-O2 -wrapper /bin/sh,-c,id", "-wrapper is not allowed"),
        (50, "-fplugin=./evil.so", "is not allowed"),
        (73, "-C linker=/bin/sh", "-C is not allowed"),
        (71, "-O2", "only allowed for compiled languages"),
        (62, "-Xlint", "not supported for Java"),
    ] {
        let (status, body) = post(
            &app,
            "/judge0/submissions",
            json!({ "source_code": "x", "language_id": language_id,
                    "compiler_options": options }),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{options}: {body}"
        );
        let message = body["compiler_options"][0].as_str().unwrap_or_default();
        assert!(message.contains(why), "{options}: {body}");
    }
    let (status, body) = get(&app, "/judge0/submissions/nope").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({ "status": 404, "error": "Not Found" })
        )
    );
    let (status, body) = get(&app, "/judge0/submissions/x?fields=stdout,bogus").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({ "error": "invalid fields: [bogus]" })
        )
    );
    let many: Vec<Value> = (0..21)
        .map(|_| json!({ "source_code": "x", "language_id": 71 }))
        .collect();
    let (status, body) = post(
        &app,
        "/judge0/submissions/batch",
        json!({ "submissions": many }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"],
        "number of submissions in a batch should be less than or equal to 20"
    );
    // Deleting is off by default: Judge0's 400.
    let deleting = reqwest::Client::new().delete(app.url("/judge0/submissions/whatever"));
    assert_eq!(
        sent(deleting).await,
        (
            StatusCode::BAD_REQUEST,
            json!({ "error": "delete not allowed" })
        )
    );
    assert_eq!(app.server.executor.sandboxes().created_count(), 0);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_is_judge0s_503_and_every_submission_ends() {
    let app = start_on_own_runtime(&[("RUNBOX_SUBMISSIONS__MAX_PENDING", "1")]);
    let slow = json!({ "source_code": "import time; time.sleep(2)", "language_id": 71 });
    let (status, first) = post(&app, "/judge0/submissions", slow.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = post(&app, "/judge0/submissions", slow).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": "queue is full" })
        )
    );
    // Shutting down ends what is pending: nothing stays "In Queue" or "Processing".
    let token = first["token"].as_str().unwrap().to_owned();
    let submissions = app.server.submissions.clone();
    app.server.shutdown().await.unwrap();
    let ended = submissions.get(&token).await.unwrap().unwrap();
    assert!(
        matches!(ended.state, runbox::submissions::State::Finished(_)),
        "{:?}",
        ended.state
    );
}

#[tokio::test]
async fn info_routes_answer_what_clients_read() {
    let app = shared();
    let (_, languages) = get(app, "/judge0/languages").await;
    let ids: Vec<u64> = languages
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    for id in [46, 50, 51, 52, 54, 62, 63, 71, 72, 74, 105, 113] {
        assert!(ids.contains(&id), "{id} missing");
    }
    assert!(!ids.contains(&70), "Python 2 is not served");
    let (_, cpp) = get(app, "/judge0/languages/54").await;
    assert!(
        cpp["name"].as_str().unwrap().starts_with("C++ (GCC "),
        "{cpp}"
    );
    assert_eq!(cpp["source_file"], "main.cpp");
    assert_eq!(
        get(app, "/judge0/languages/70").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, statuses) = get(app, "/judge0/statuses").await;
    assert_eq!(statuses.as_array().unwrap().len(), 14);
    assert_eq!(
        statuses[10],
        json!({ "id": 11, "description": "Runtime Error (NZEC)" })
    );
    let (_, config) = get(app, "/judge0/config_info").await;
    assert_eq!(config.as_object().unwrap().len(), 39);
    assert_eq!(config["allow_enable_network"], false);
    let version = reqwest::get(app.url("/judge0/version"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(version, "1.13.1");
    let authorize = reqwest::Client::new()
        .post(app.url("/judge0/authorize"))
        .send()
        .await
        .unwrap();
    assert_eq!(authorize.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn limits_hold_through_judge0_as_through_run() {
    let app = shared();
    let hog = "x = bytearray(400 * 1024 * 1024); print(len(x))";
    let (_, through_run) = sent(
        reqwest::Client::new()
            .post(app.url("/run"))
            .json(&json!({ "language": "python", "code": hog, "memory_mb": 64 })),
    )
    .await;
    let (_, judged) = post(
        app,
        "/judge0/submissions?wait=true&fields=status_id,exit_signal",
        json!({ "source_code": hog, "language_id": 71, "memory_limit": 65536 }),
    )
    .await;
    match through_run["status"].as_str().unwrap() {
        "memory_limit_exceeded" => {
            assert_eq!(judged, json!({ "status_id": 12, "exit_signal": 9 }))
        }
        // Python may raise MemoryError first: a non-zero exit either way.
        "runtime_error" => assert_eq!(judged["status_id"], 11, "{judged}"),
        other => panic!("{other}: {through_run}"),
    }
    // Output past runbox's cap ends the run (Judge0's SIGXFSZ status).
    let (_, flood) = post(
        app,
        "/judge0/submissions?wait=true&fields=status_id",
        json!({ "source_code": "while True: print('x' * 1000)", "language_id": 71 }),
    )
    .await;
    assert_eq!(flood["status_id"], 8, "{flood}");
}

/// A callback receiver on loopback: each request is answered (`Some(status)`) or its
/// connection dropped unanswered (`None`) in the order of `answers`; every request received
/// (method line and body) goes to the channel.
async fn callback_receiver(
    answers: Vec<Option<u16>>,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook?id=7", listener.local_addr().unwrap());
    let (received, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for answer in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            let (head, body) = loop {
                let n = socket.read(&mut buffer).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break (head.to_owned(), body.to_owned());
                    }
                }
            };
            let line = head.lines().next().unwrap_or_default().to_owned();
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/json"),
                "{head}"
            );
            received
                .send((line, serde_json::from_str(&body).unwrap()))
                .unwrap();
            if let Some(status) = answer {
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                socket.write_all(reply.as_bytes()).await.unwrap();
            }
        }
    });
    (url, receiver)
}

#[tokio::test]
async fn callbacks_go_only_where_allowed_and_are_retried_as_judge0_retries_them() {
    // On, with the defaults: loopback, link-local (cloud metadata) and private addresses are
    // refused when the URL is given, whatever names them, and nothing runs.
    let guarded = start_on_own_runtime(&[("RUNBOX_JUDGE0__CALLBACKS", "true")]);
    for url in [
        "http://127.0.0.1:2358/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/",
        "http://[::ffff:10.0.0.1]/",
        "http://2130706433/",
    ] {
        let (status, body) = post(
            &guarded,
            "/judge0/submissions",
            json!({ "source_code": "print(1)", "language_id": 71, "callback_url": url }),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        let why = body["callback_url"][0].as_str().unwrap_or_default();
        assert!(why.contains("non-public address"), "{url}: {body}");
    }
    let (_, body) = post(
        &guarded,
        "/judge0/submissions",
        json!({ "source_code": "print(1)", "language_id": 71, "callback_url": "file:///etc/passwd" }),
    )
    .await;
    assert_eq!(
        body["callback_url"],
        json!(["must be an http or https URL without credentials"])
    );
    assert_eq!(guarded.server.executor.sandboxes().created_count(), 0);
    guarded.server.shutdown().await.unwrap();

    // Loopback explicitly allowed (the receiver is this test): the default fields, base64,
    // PUT; a try that gets no answer is repeated, up to 3 tries.
    let app = start_on_own_runtime(&[
        ("RUNBOX_JUDGE0__CALLBACKS", "true"),
        ("RUNBOX_JUDGE0__CALLBACK_HOSTS", "[\"127.0.0.1\"]"),
        ("RUNBOX_JUDGE0__CALLBACK_PRIVATE_ADDRESSES", "true"),
    ]);
    let (url, mut received) = callback_receiver(vec![None, None, Some(200)]).await;
    let (status, body) = post(
        &app,
        "/judge0/submissions",
        json!({ "source_code": "print('called back')", "language_id": 71, "callback_url": url }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let mut tries = Vec::new();
    for _ in 0..3 {
        let got = tokio::time::timeout(std::time::Duration::from_secs(30), received.recv()).await;
        tries.push(got.expect("a try within 30 s").unwrap());
    }
    for (line, answer) in &tries {
        assert_eq!(line, "PUT /hook?id=7 HTTP/1.1");
        let keys: std::collections::BTreeSet<&str> = answer
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, DEFAULT_FIELDS.into());
        assert_eq!(answer["token"], token.as_str());
        assert_eq!(answer["stdout"], "Y2FsbGVkIGJhY2sK\n", "base64: {answer}");
        assert_eq!(answer["status"]["id"], 3);
    }
    // Any HTTP answer, an error too, ends it: one try.
    let (url, mut received) = callback_receiver(vec![Some(500), Some(500)]).await;
    let (status, _) = post(
        &app,
        "/judge0/submissions?wait=true",
        json!({ "source_code": "print(2)", "language_id": 71, "callback_url": url }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), received.recv()).await;
    assert!(first.unwrap().is_some());
    let again = tokio::time::timeout(std::time::Duration::from_secs(2), received.recv()).await;
    assert!(again.is_err(), "a second try after an HTTP answer");
    // Not an allowed host, though loopback is allowed.
    let (status, body) = post(
        &app,
        "/judge0/submissions",
        json!({ "source_code": "print(1)", "language_id": 71, "callback_url": "http://127.0.0.2/" }),
    )
    .await;
    assert_eq!(
        (status, &body["callback_url"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!(["host is not allowed for callbacks"])
        )
    );
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn judge0_is_served_where_configured_with_its_keys_and_deletes() {
    use sha2::Digest;
    let key = "judge0-key-0123456789";
    let keys = format!(
        r#"[{{ name = "judge", sha256 = "{:x}" }}, {{ name = "other", sha256 = "{:x}" }}]"#,
        sha2::Sha256::digest(key.as_bytes()),
        sha2::Sha256::digest(b"other-key-0123456789"),
    );
    let app = start_on_own_runtime(&[
        ("RUNBOX_AUTH__KEYS", keys.as_str()),
        ("RUNBOX_JUDGE0__PREFIX", "/api/judge"),
        ("RUNBOX_JUDGE0__LISTEN", "127.0.0.1:0"),
        ("RUNBOX_JUDGE0__SUBMISSION_DELETE", "true"),
    ]);
    let root = format!(
        "http://{}",
        app.server.judge0_addr.expect("the second listener")
    );
    let client = reqwest::Client::new();
    // Judge0's key: the header, or the query parameter of the same name; without it, 401
    // with an empty body.
    let (status, body) = get(&app, "/api/judge/about").await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, Value::Null));
    let about = |url: String| sent(client.get(url));
    let (status, body) = about(app.url(&format!("/api/judge/about?X-Auth-Token={key}"))).await;
    assert_eq!(
        (status, &body["version"]),
        (StatusCode::OK, &json!("1.13.1"))
    );
    // The default prefix is not Judge0's here.
    let (status, _) = about(app.url(&format!("/judge0/about?X-Auth-Token={key}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The second listener: Judge0 alone, at the root, as Judge0 serves.
    let (status, body) = about(format!("{root}/about?X-Auth-Token={key}")).await;
    assert_eq!(
        (status, &body["version"]),
        (StatusCode::OK, &json!("1.13.1"))
    );
    let (status, _) = about(format!("{root}/run?X-Auth-Token={key}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "runbox's own routes are not served there"
    );
    let with_key =
        |request: reqwest::RequestBuilder, key: &str| request.header("x-auth-token", key);
    let (_, created) = sent(
        with_key(client.post(format!("{root}/submissions/?wait=true")), key)
            .json(&json!({ "source_code": "print('deleted soon')", "language_id": 71 })),
    )
    .await;
    let token = created["token"].as_str().unwrap().to_owned();
    // Listing needs Judge0's authorization, which runbox does not have; info routes answer.
    let (status, _) = sent(with_key(client.get(format!("{root}/submissions")), key)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (path, expected) in [("/isolate", "no isolate"), ("/license", "MIT"), ("/", "")] {
        let response = with_key(client.get(format!("{root}{path}")), key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.text().await.unwrap().contains(expected), "{path}");
    }
    let (_, info) = sent(with_key(client.get(format!("{root}/system_info")), key)).await;
    assert!(
        info["CPU(s)"].as_str().unwrap().parse::<u32>().unwrap() >= 1,
        "{info}"
    );
    // Delete: only the client that made it; then it is gone.
    let delete = |path: String, key: &'static str| sent(with_key(client.delete(path), key));
    let (status, _) = delete(
        format!("{root}/submissions/{token}"),
        "other-key-0123456789",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let fields = "fields=stdout,status_id";
    let (status, deleted) = delete(
        app.url(&format!("/api/judge/submissions/{token}?{fields}")),
        key,
    )
    .await;
    assert_eq!(
        (status, deleted),
        (
            StatusCode::OK,
            json!({ "stdout": "deleted soon\n", "status_id": 3 })
        )
    );
    let (status, _) = sent(with_key(
        client.get(format!("{root}/submissions/{token}")),
        key,
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A pending one is kept, with Judge0's words.
    let (_, pending) = sent(
        with_key(client.post(format!("{root}/submissions")), key)
            .json(&json!({ "source_code": "import time; time.sleep(3)", "language_id": 71 })),
    )
    .await;
    let pending = pending["token"].as_str().unwrap().to_owned();
    let (status, why) = delete(format!("{root}/submissions/{pending}"), key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        why["error"]
            .as_str()
            .unwrap()
            .starts_with("submission cannot be deleted because its status is"),
        "{why}"
    );
    app.server.shutdown().await.unwrap();
}
