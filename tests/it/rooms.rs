//! Rooms: a session's terminal shared over WebSockets by every holder of its URL. Real
//! WebSocket clients against the real server, engine and images. Every test starts its own
//! app and shuts it down (which removes its sessions).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{
    TestApp, get_session as session_status, run_in_session, session_containers as containers_of,
    session_id, start_on_own_runtime, wait_for_session_containers,
};

/// Longest wait for something a terminal should show.
const SHOW_DEADLINE: Duration = Duration::from_secs(20);

/// One WebSocket client of a room, and everything it has been sent so far.
struct Term {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    output: String,
    presence: Vec<u64>,
    exits: Vec<i64>,
    errors: Vec<Value>,
    /// The first frame received, and the last few (for failure messages).
    first: Option<Value>,
    recent: std::collections::VecDeque<Value>,
    closed: bool,
    /// How the socket ended, when it has.
    close_reason: Option<String>,
}

impl Term {
    async fn connect(app: &TestApp, session: &str) -> Term {
        let url = format!(
            "ws://{}/sessions/{session}/terminal",
            app.base.trim_start_matches("http://")
        );
        let (ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        Term::new(ws)
    }

    fn new(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Term {
        Term {
            ws,
            output: String::new(),
            presence: Vec::new(),
            exits: Vec::new(),
            errors: Vec::new(),
            first: None,
            recent: std::collections::VecDeque::new(),
            closed: false,
            close_reason: None,
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    async fn input(&mut self, data: &str) {
        self.send(json!({ "type": "input", "data": data })).await;
    }

    /// Takes one frame (or the close) into the record; false once the socket is closed.
    async fn receive(&mut self) -> bool {
        match self.ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                match frame["type"].as_str().unwrap() {
                    "output" => self.output.push_str(frame["data"].as_str().unwrap()),
                    "presence" => self.presence.push(frame["clients"].as_u64().unwrap()),
                    "exit" => self.exits.push(frame["code"].as_i64().unwrap()),
                    "error" => self.errors.push(frame.clone()),
                    other => panic!("unknown frame type {other}: {text}"),
                }
                if self.first.is_none() {
                    self.first = Some(frame.clone());
                }
                if self.recent.len() == 5 {
                    self.recent.pop_front();
                }
                self.recent.push_back(frame);
                true
            }
            Some(Ok(Message::Close(frame))) => {
                self.closed = true;
                self.close_reason = Some(format!("close {frame:?}"));
                false
            }
            None => {
                self.closed = true;
                self.close_reason = Some("end of stream".to_owned());
                false
            }
            Some(Err(err)) => {
                self.closed = true;
                self.close_reason = Some(format!("error {err}"));
                false
            }
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
        }
    }

    /// Reads until `done` holds; fails with what was seen after the deadline.
    async fn wait_for(&mut self, what: &str, done: impl Fn(&Term) -> bool) {
        let started = Instant::now();
        while !done(self) {
            let left = SHOW_DEADLINE.saturating_sub(started.elapsed());
            let received = tokio::time::timeout(left, self.receive()).await;
            assert!(
                matches!(received, Ok(true)) || done(self),
                "waiting for {what}: closed={:?} output={:?} frames={:?}",
                self.close_reason,
                self.output,
                self.recent
            );
        }
    }

    /// Reads until `needle` shows up in output that arrives from now on (it may begin in
    /// output already received). Only the new part is searched: floods stay linear.
    async fn wait_for_output(&mut self, needle: &str) {
        let mut from = self.output.len().saturating_sub(needle.len() - 1);
        let started = Instant::now();
        loop {
            while !self.output.is_char_boundary(from) {
                from -= 1;
            }
            if self.output[from..].contains(needle) {
                return;
            }
            from = self.output.len().saturating_sub(needle.len());
            let left = SHOW_DEADLINE.saturating_sub(started.elapsed());
            let received = tokio::time::timeout(left, self.receive()).await;
            assert!(
                matches!(received, Ok(true)),
                "waiting for output {needle:?}: closed={:?} output tail={:?} frames={:?}",
                self.close_reason,
                &self.output[self.output.len().saturating_sub(300)..],
                self.recent
            );
        }
    }

    /// Reads whatever arrives within `period`.
    async fn drain_for(&mut self, period: Duration) {
        let _ = tokio::time::timeout(period, async { while self.receive().await {} }).await;
    }
}

#[tokio::test]
async fn two_clients_share_one_room_and_another_room_sees_none_of_it() {
    let app = start_on_own_runtime(&[]);
    let room_a = session_id(&app, "python").await;
    let room_b = session_id(&app, "python").await;
    let mut alice = Term::connect(&app, &room_a).await;
    alice.wait_for_output(">>> ").await;
    let mut bob = Term::connect(&app, &room_a).await;
    let mut carol = Term::connect(&app, &room_b).await;
    carol.wait_for_output(">>> ").await;
    alice
        .wait_for("two clients", |t| t.presence.last() == Some(&2))
        .await;
    bob.wait_for("two clients", |t| t.presence.last() == Some(&2))
        .await;

    alice.input("1+1\n").await;
    // The PTY echoes the input, then the REPL answers on its own line: both see both.
    alice.wait_for_output("1+1\r\n2\r\n").await;
    bob.wait_for_output("1+1\r\n2\r\n").await;
    // Bob types into the same REPL: its state is shared.
    bob.input("x = 20 * 2\n").await;
    bob.input("x + 2\n").await;
    alice.wait_for_output("\r\n42\r\n").await;

    carol.drain_for(Duration::from_millis(500)).await;
    assert!(!carol.output.contains("1+1"), "{:?}", carol.output);
    assert!(!carol.output.contains("42"), "{:?}", carol.output);
    assert_eq!(carol.presence, [1], "alone in room B");
    carol.input("x\n").await;
    carol.wait_for_output("NameError").await;

    // One PTY per room: a resize from any client is the size the REPL sees (and everyone's
    // view of it). Bob asks right after resizing: frames of two sockets have no order between
    // them, one socket's frames do.
    bob.send(json!({ "type": "resize", "cols": 100, "rows": 30 }))
        .await;
    bob.input("import shutil; shutil.get_terminal_size()\n")
        .await;
    alice.wait_for_output("columns=100, lines=30").await;
    bob.send(json!({ "type": "resize", "cols": 0, "rows": 30 }))
        .await;
    bob.wait_for("an error", |t| !t.errors.is_empty()).await;
    assert_eq!(bob.errors[0]["code"], "invalid_request");

    // Leaving is announced.
    drop(bob);
    alice
        .wait_for("one client", |t| t.presence.last() == Some(&1))
        .await;
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&room_a, 0).await;
    wait_for_session_containers(&room_b, 0).await;
}

#[tokio::test]
async fn a_late_joiner_first_gets_the_recent_scrollback() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "python").await;
    let mut first = Term::connect(&app, &id).await;
    first.input("print('mark' + 'er-' + str(6 * 7))\n").await;
    first.wait_for_output("marker-42").await;

    let mut late = Term::connect(&app, &id).await;
    late.receive().await;
    let first_frame = late.first.as_ref().unwrap();
    assert_eq!(first_frame["type"], "output", "{first_frame}");
    assert!(
        first_frame["data"].as_str().unwrap().contains("marker-42"),
        "{first_frame}"
    );
    // Shutting down closes every socket, saying why.
    app.server.shutdown().await.unwrap();
    for term in [&mut first, &mut late] {
        term.wait_for("the close", |t| t.closed).await;
        assert_eq!(term.errors.last().unwrap()["code"], "shutting_down");
    }
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn start_switches_the_repl_and_an_ended_repl_can_be_started_again() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "python").await;
    let mut term = Term::connect(&app, &id).await;
    term.input("open('kept.txt', 'w').write('from python')\n")
        .await;
    // A child of the REPL outlives it...
    term.input("import subprocess; subprocess.Popen(['sleep', '1000'])\n")
        .await;
    term.input("exit()\n").await;
    term.wait_for("the exit frame", |t| !t.exits.is_empty())
        .await;
    assert_eq!(term.exits, [0]);

    // Nothing runs now: input is refused with a reason, and `start` brings the REPL back.
    term.input("1+1\n").await;
    term.wait_for("an error", |t| !t.errors.is_empty()).await;
    assert_eq!(term.errors[0]["code"], "not_running", "{:?}", term.errors);
    // A newcomer learns that the program has ended.
    let mut late = Term::connect(&app, &id).await;
    late.wait_for("the exit", |t| t.exits == [0]).await;
    term.send(json!({ "type": "start" })).await;
    // A REPL starting up discards what was typed before its prompt, as on any terminal.
    term.wait_for_output(">>> ").await;
    term.input("6*7\n").await;
    term.wait_for_output("\r\n42\r\n").await;
    // ...until the next start, which ends every process the old one left.
    term.input("import os; print(sum(open(f'/proc/{p}/cmdline').read() == 'sleep\\x001000\\x00' for p in os.listdir('/proc') if p.isdigit()), 'sleeping')\n").await;
    term.wait_for_output("\r\n0 sleeping").await;

    // Another language: the session moves to Ruby's image, its files with it.
    term.send(json!({ "type": "start", "language": "ruby" }))
        .await;
    term.wait_for_output("irb(main):001:0> ").await;
    term.input("puts File.read('kept.txt').upcase\n").await;
    term.wait_for_output("FROM PYTHON").await;
    let (status, body) = session_status(&app, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["language"], "ruby", "{body}");
    assert_eq!(containers_of(&id).await, 1, "the python sandbox is gone");
    // Runs follow the session's language.
    let (_, run) = run_in_session(
        &app,
        &id,
        json!({ "language": "ruby", "code": "print File.read('kept.txt')" }),
    )
    .await;
    assert_eq!(run["stdout"], "from python", "{run}");

    // An unknown language is refused; the REPL that runs goes on.
    term.send(json!({ "type": "start", "language": "cobol" }))
        .await;
    term.wait_for("an error", |t| t.errors.len() == 2).await;
    assert_eq!(term.errors[1]["code"], "unknown_language");
    term.input("puts 6*7\n").await;
    term.wait_for("ruby's answer", |t| t.output.matches("42").count() >= 2)
        .await;
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn a_run_in_the_session_does_not_end_the_terminal() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "python").await;
    let mut term = Term::connect(&app, &id).await;
    term.input("x = 41\n").await;
    term.wait_for_output("x = 41\r\n>>> ").await;
    let (_, run) = run_in_session(&app, &id, json!({ "language": "python", "code": "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)\nprint('ran')" })).await;
    assert_eq!(run["stdout"], "ran\n", "{run}");
    // The run's own leftovers are gone, the REPL and its state are not.
    // (The sandbox's keeper is a `sleep infinity`: only the run's `sleep 1000` counts.)
    term.input("import os; print(len([p for p in os.listdir('/proc') if p.isdigit() and open(f'/proc/{p}/cmdline').read() == 'sleep\\x001000\\x00']))\n").await;
    term.wait_for_output("\r\n0\r\n").await;
    term.input("x + 1\n").await;
    term.wait_for_output("\r\n42\r\n").await;
    assert!(term.exits.is_empty());

    // A run that makes the session's sandbox unusable takes the REPL with it: the room hears
    // of it, and a new REPL starts in the fresh sandbox.
    let (_, run) = run_in_session(
        &app,
        &id,
        json!({ "language": "python", "code": "b = bytearray(2 << 30)" }),
    )
    .await;
    assert_eq!(run["session_restarted"], true, "{run}");
    term.wait_for("the exit", |t| !t.exits.is_empty()).await;
    assert_eq!(term.exits, [-1]);
    term.send(json!({ "type": "start" })).await;
    term.wait_for_output(">>> ").await;
    term.input("6*7\n").await;
    term.wait_for_output("\r\n42\r\n").await;
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_the_others_go_on() {
    // 1 MiB/s and the default queue (256 frames of up to 16 KiB: 4 s of this flood): the
    // 12 MB flood outruns the stalled client's socket buffers (a few MB) and its queue, and a
    // reader starved of CPU for a few seconds on a busy machine still keeps up (at 2 MiB/s
    // the queue held 2 s, and a full CI run's reader fell behind twice).
    let app = start_on_own_runtime(&[("RUNBOX_TERMINAL__OUTPUT_BYTES_PER_SEC", "1048576")]);
    let id = session_id(&app, "python").await;
    let mut reader = Term::connect(&app, &id).await;
    reader.wait_for_output(">>> ").await;
    // The stalled client: a small receive buffer, and it never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.server.addr).await.unwrap();
    let url = format!("ws://{}/sessions/{id}/terminal", app.server.addr);
    let (stalled, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    reader
        .wait_for("two clients", |t| t.presence.last() == Some(&2))
        .await;

    // About 12 MB; the line typed after it runs when the loop is over (its echo shows the
    // quotes, its output does not).
    reader
        .input("for i in range(120000): print('x' * 99)\n\nprint('flood' + 'over')\n")
        .await;
    reader
        .wait_for("the stalled client to be dropped", |t| {
            t.presence.last() == Some(&1)
        })
        .await;
    // The stalled client, reading again, finds what was sent before, then why it was dropped,
    // and the end. It missed the rest of the flood. The reader goes on reading meanwhile, as
    // a real client on its own socket does: a reader this test stopped reading for the time
    // the stalled backlog takes to parse would fall behind itself (it did, on a busy CI run).
    let mut stalled = Term::new(stalled);
    let reader_to_the_end = async {
        // (The drop may come late in the flood, after everything has arrived.)
        if !reader.output.contains("\r\nfloodover\r\n") {
            reader.wait_for_output("\r\nfloodover\r\n").await;
        }
    };
    tokio::join!(
        stalled.wait_for("the close", |t| t.closed),
        reader_to_the_end
    );
    let last_error = stalled
        .errors
        .last()
        .expect("an error frame before the close");
    assert_eq!(last_error["code"], "too_slow", "{last_error}");
    assert!(!stalled.output.contains("floodover"));
    assert!(reader.output.len() > 12_000_000, "{}", reader.output.len());
    reader.input("print('still', 'here')\n").await;
    reader.wait_for_output("still here").await;
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn deleting_the_session_closes_every_socket_and_removes_the_container() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "bash").await;
    let mut first = Term::connect(&app, &id).await;
    let mut second = Term::connect(&app, &id).await;
    second
        .wait_for("two clients", |t| t.presence.last() == Some(&2))
        .await;
    assert_eq!(containers_of(&id).await, 1);

    let response = reqwest::Client::new()
        .delete(app.url(&format!("/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for term in [&mut first, &mut second] {
        term.wait_for("the close", |t| t.closed).await;
        assert_eq!(term.errors.last().unwrap()["code"], "session_not_found");
    }
    wait_for_session_containers(&id, 0).await;
    // The invite link is dead: a plain 404, no upgrade.
    let url = format!("ws://{}/sessions/{id}/terminal", app.server.addr);
    let refused = tokio_tungstenite::connect_async(url).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "session_not_found");
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_attended_room_does_not_idle_out_and_an_empty_one_does() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_SESSIONS__IDLE_TIMEOUT_SECS", "2"),
        ("RUNBOX_SESSIONS__REAPER_INTERVAL_SECS", "1"),
    ]);
    let id = session_id(&app, "bash").await;
    let mut term = Term::connect(&app, &id).await;
    // Twice the idle timeout with a client attached and no run.
    term.drain_for(Duration::from_secs(4)).await;
    assert!(!term.closed);
    assert_eq!(session_status(&app, &id).await.0, StatusCode::OK);
    drop(term);
    // Closing every socket does not end the session at once...
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(session_status(&app, &id).await.0, StatusCode::OK);
    // ...the idle timeout does.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(session_status(&app, &id).await.0, StatusCode::NOT_FOUND);
    wait_for_session_containers(&id, 0).await;
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn input_is_bounded_in_size_and_rate_and_output_floods_are_slowed() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_TERMINAL__MAX_INPUT_BYTES", "1024"),
        ("RUNBOX_TERMINAL__INPUT_FRAMES_PER_SEC", "20"),
        ("RUNBOX_TERMINAL__OUTPUT_BYTES_PER_SEC", "16384"),
    ]);
    let id = session_id(&app, "python").await;
    let mut term = Term::connect(&app, &id).await;
    term.wait_for_output(">>> ").await;

    term.input(&"#".repeat(1025)).await;
    term.wait_for("an error", |t| t.errors.len() == 1).await;
    assert_eq!(term.errors[0]["code"], "input_too_large");
    // A burst of twice the rate passes; the rest is refused, not queued.
    for _ in 0..60 {
        term.input("\u{7}").await;
    }
    term.wait_for("rate errors", |t| t.errors.len() > 1).await;
    term.drain_for(Duration::from_millis(300)).await;
    assert_eq!(term.errors[1]["code"], "rate_limited", "{:?}", term.errors);
    let refused = term.errors.len() - 1;
    assert!((10..=40).contains(&refused), "{refused} of 60 refused");
    // Not JSON, or not a frame of the contract: an error frame, and the socket stays open.
    term.ws.send(Message::Text("ls -la".into())).await.unwrap();
    term.ws
        .send(Message::Binary(vec![1, 2].into()))
        .await
        .unwrap();
    term.wait_for("two more errors", |t| t.errors.len() == refused + 3)
        .await;
    assert!(
        term.errors[refused + 1..]
            .iter()
            .all(|e| e["code"] == "invalid_frame")
    );

    // 96 KiB at 16 KiB/s (32 KiB burst): at least four seconds, however fast the REPL is.
    tokio::time::sleep(Duration::from_secs(2)).await; // the input bucket refills
    let started = Instant::now();
    term.input("print('y' * 98304, 'done', sep='')\n").await;
    term.wait_for_output("yydone").await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(3), "{took:?}");
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn a_plain_request_to_the_terminal_route_is_a_clear_error() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "bash").await;
    let response = reqwest::get(app.url(&format!("/sessions/{id}/terminal")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WebSocket")
    );
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

/// A language REPL's prompt, and what to type into it to have it print `n` (computed, so
/// that the echo of the input does not contain the answer).
fn repl_case(language: &str, n: u32) -> Option<(&'static str, String)> {
    let (a, b) = (n - 7, 7);
    Some(match language {
        "python" => (">>> ", format!("{a}+{b}\n")),
        "javascript" => ("> ", format!("{a}+{b}\n")),
        "ruby" => ("> ", format!("puts {a}+{b}\n")),
        "php" => ("php > ", format!("echo {a}+{b}, PHP_EOL;\n")),
        "lua" => ("> ", format!("print({a}+{b})\n")),
        "bash" => ("$ ", format!("echo $(({a}+{b}))\n")),
        _ => return None,
    })
}

#[tokio::test]
async fn every_language_gets_its_repl_or_a_shell_in_the_work_dir() {
    let app = start_on_own_runtime(&[]);
    let languages: Value = reqwest::get(app.url("/languages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session_id(&app, "bash").await;
    let mut term = Term::connect(&app, &id).await;
    for (i, language) in languages["languages"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let name = language["id"].as_str().unwrap();
        let n = 1000 + i as u32;
        term.send(json!({ "type": "start", "language": name }))
            .await;
        // A REPL starting up discards what was typed before its prompt.
        if language["repl"] == true {
            let (prompt, typed) = repl_case(name, n)
                .unwrap_or_else(|| panic!("add a REPL case for {name} to this test"));
            term.wait_for_output(prompt).await;
            term.input(&typed).await;
            term.wait_for_output(&n.to_string()).await;
        } else {
            // A shell, in the work dir, where the session's files are.
            term.wait_for_output("$ ").await;
            term.input(&format!("echo $(({n}-1+1)) $PWD\n")).await;
            term.wait_for_output(&format!("{n} /box")).await;
        }
        assert!(term.errors.is_empty(), "{name}: {:?}", term.errors);
    }
    // Each move removed the sandbox it left (removal runs in the background).
    let started = Instant::now();
    while containers_of(&id).await > 1 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "old sandboxes left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn start_recovers_a_room_from_a_fork_bomb_in_its_repl() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "python").await;
    let mut term = Term::connect(&app, &id).await;
    term.wait_for_output(">>> ").await;
    term.input("import os, time\n").await;
    term.input("while True:\n    try: os.fork()\n    except OSError: time.sleep(0.01)\n\n")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Every pid of the sandbox is taken; `start` still brings back a working REPL.
    term.send(json!({ "type": "start" })).await;
    term.wait_for_output(">>> ").await;
    term.input("6*7\n").await;
    term.wait_for_output("\r\n42\r\n").await;
    assert!(term.errors.is_empty(), "{:?}", term.errors);
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn input_a_program_does_not_read_is_bounded_in_bytes() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "bash").await;
    let mut term = Term::connect(&app, &id).await;
    term.wait_for_output("$ ").await;
    // The shell waits on `sleep` with the terminal raw (a canonical terminal would drop a
    // line past 4 KiB): what is typed meanwhile fills the terminal, then waits in runbox.
    term.input("stty raw -echo; sleep 60\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    const FRAME: usize = 16 * 1024;
    const FRAMES: usize = 40;
    for _ in 0..FRAMES {
        term.input(&"#".repeat(FRAME)).await;
        // Below the input rate (100 frames a second).
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    term.drain_for(Duration::from_secs(1)).await;
    let refused = term
        .errors
        .iter()
        .filter(|e| e["code"] == "input_backlogged")
        .count();
    assert_eq!(refused, term.errors.len(), "{:?}", term.errors);
    // runbox holds 64 KiB at most; the rest of what was taken is in the engine's and the
    // terminal's buffers. 64 frames (1 MiB) were taken before.
    let taken = (FRAMES - refused) * FRAME;
    assert!(
        taken <= 512 * 1024,
        "{taken} bytes taken, {refused} frames refused"
    );
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn starts_are_rate_limited_per_terminal() {
    // The shipped rate (the suite's other apps lift it).
    let app = start_on_own_runtime(&[("RUNBOX_TERMINAL__STARTS_PER_MINUTE", "6")]);
    let id = session_id(&app, "python").await;
    let mut term = Term::connect(&app, &id).await;
    term.wait_for_output(">>> ").await;
    for _ in 0..4 {
        term.send(json!({ "type": "start" })).await;
    }
    term.wait_for("the refusal", |t| !t.errors.is_empty()).await;
    term.drain_for(Duration::from_secs(1)).await;
    assert_eq!(term.errors.len(), 1, "{:?}", term.errors);
    assert_eq!(term.errors[0]["code"], "rate_limited");
    // The REPL the third start left goes on.
    term.input("6*7\n").await;
    term.wait_for_output("\r\n42\r\n").await;
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn a_language_switch_streams_the_work_dir_and_keeps_sparse_files_sparse() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "bash").await;
    // 480 MB of holes: past what any buffer of the whole archive would hold.
    let (status, made) = run_in_session(
        &app,
        &id,
        json!({ "language": "bash", "code": "for i in 1 2 3 4 5 6 7 8; do truncate -s 60M sparse$i; done; echo kept > note.txt; du -sk ." }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(made["status"], "success", "{made}");
    let mut term = Term::connect(&app, &id).await;
    term.wait_for_output("$ ").await;
    term.send(json!({ "type": "start", "language": "python" }))
        .await;
    term.wait_for_output(">>> ").await;
    assert!(term.errors.is_empty(), "{:?}", term.errors);
    let (_, moved) = run_in_session(
        &app,
        &id,
        json!({ "language": "python", "code": "import os\nsizes = {os.stat(f'sparse{i}').st_size for i in range(1, 9)}\nblocks = sum(os.stat(f'sparse{i}').st_blocks for i in range(1, 9))\nprint(sizes, blocks < 1024, open('note.txt').read().strip())" }),
    )
    .await;
    assert_eq!(moved["stdout"], "{62914560} True kept\n", "{moved}");
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn a_work_dir_that_cannot_move_leaves_the_repl_and_the_language_as_they_were() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "bash").await;
    // A file its own user cannot read (no capability overrides the mode): tar cannot pack it.
    let (_, made) = run_in_session(
        &app,
        &id,
        json!({ "language": "bash", "code": "echo secret > locked; chmod 000 locked; echo other > note.txt" }),
    )
    .await;
    assert_eq!(made["status"], "success", "{made}");
    let mut term = Term::connect(&app, &id).await;
    term.wait_for_output("$ ").await;
    term.send(json!({ "type": "start", "language": "python" }))
        .await;
    term.wait_for("the refusal", |t| !t.errors.is_empty()).await;
    assert_eq!(
        term.errors[0]["code"], "work_dir_not_moved",
        "{:?}",
        term.errors
    );
    let message = term.errors[0]["message"].as_str().unwrap();
    assert!(!message.contains("tar"), "{message}");
    // The shell is back, in the same sandbox with the same files.
    term.wait_for_output("$ ").await;
    term.input("echo $((6*7)) $(cat note.txt)\n").await;
    term.wait_for_output("42 other").await;
    let (_, session) = session_status(&app, &id).await;
    assert_eq!(session["language"], "bash", "{session}");
    wait_for_session_containers(&id, 1).await;
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}
