//! `runbox bench --terminal`: how long one keystroke takes to come back as its echo, typed
//! into a python REPL through a room (WebSocket → server → PTY in the sandbox → server →
//! WebSocket), next to the same keystroke on the sandbox's PTY straight through the engine.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{BenchOptions, ServerUnderTest, print_row, section};
use crate::sandbox::measure::spec_for;
use crate::sandbox::{MainProcess, Sandboxes};

/// Keystrokes measured per path (the median of these is the figure).
const KEYSTROKES: usize = 100;
/// Keystrokes before measuring (connections and the REPL warm up).
const WARMUP_KEYSTROKES: usize = 5;
/// Longest wait for one echo before the bench gives up.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);
/// The key typed: it never shows in the REPL's prompt or redraws otherwise.
const KEY: &str = "x";

pub(super) async fn keystroke_echo(
    options: &BenchOptions,
    sandboxes: &Sandboxes,
) -> anyhow::Result<()> {
    section(&format!(
        "terminal: one keystroke to its echo, python REPL ({KEYSTROKES} keystrokes)"
    ));
    println!("{:<44} {:>9} {:>9} {:>9}", "path", "p50", "p95", "p99");
    let server = match &options.url {
        Some(url) => ServerUnderTest::given(url),
        None => {
            ServerUnderTest::spawn_with(
                &options.config_path,
                &[
                    ("RUNBOX_POOL__ENABLED", "false".to_owned()),
                    ("RUNBOX_SESSIONS__KEEP_ON_SHUTDOWN", "false".to_owned()),
                ],
            )
            .await?
        }
    };
    let through_server = through_room(&server).await;
    server.stop().await;
    print_row("through a room (WebSocket, runbox, PTY)", &through_server?);
    let direct = through_engine(sandboxes).await?;
    print_row("the sandbox's PTY through the engine only", &direct);
    Ok(())
}

async fn through_room(server: &ServerUnderTest) -> anyhow::Result<Vec<Duration>> {
    let client = reqwest::Client::new();
    let session: Value = client
        .post(server.url("/sessions"))
        .json(&json!({ "language": "python" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = session["id"].as_str().context("no session id")?.to_owned();
    let url = server
        .url(&format!("/sessions/{id}/terminal"))
        .replacen("http", "ws", 1);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let mut seen = String::new();
    while !seen.contains(">>> ") {
        seen.push_str(&next_output(&mut socket).await?);
    }
    let mut samples = Vec::with_capacity(KEYSTROKES);
    for i in 0..WARMUP_KEYSTROKES + KEYSTROKES {
        let frame = json!({ "type": "input", "data": KEY }).to_string();
        let started = Instant::now();
        socket.send(Message::Text(frame.into())).await?;
        while !next_output(&mut socket).await?.contains(KEY) {}
        if i >= WARMUP_KEYSTROKES {
            samples.push(started.elapsed());
        }
    }
    client
        .delete(server.url(&format!("/sessions/{id}")))
        .send()
        .await?;
    samples.sort();
    Ok(samples)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The `data` of the next output frame.
async fn next_output(socket: &mut Socket) -> anyhow::Result<String> {
    loop {
        let message = tokio::time::timeout(ECHO_TIMEOUT, socket.next())
            .await
            .context("no output in time")?
            .context("the socket closed")??;
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text)?;
            if frame["type"] == "output" {
                return Ok(frame["data"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
}

async fn through_engine(sandboxes: &Sandboxes) -> anyhow::Result<Vec<Duration>> {
    let sandbox = sandboxes
        .create(&spec_for(
            "runbox/python:latest",
            "python",
            128,
            MainProcess::Keeper,
        ))
        .await?;
    let (mut input, mut output) = sandbox
        .open_terminal(vec!["python3".to_owned()], 80, 24)
        .await?;
    let mut seen = String::new();
    while !seen.contains(">>> ") {
        match tokio::time::timeout(ECHO_TIMEOUT, output.read()).await {
            Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk?)),
            _ => bail!("the REPL did not start"),
        }
    }
    let mut samples = Vec::with_capacity(KEYSTROKES);
    for i in 0..WARMUP_KEYSTROKES + KEYSTROKES {
        let started = Instant::now();
        input.write(KEY.as_bytes()).await?;
        loop {
            let chunk = match tokio::time::timeout(ECHO_TIMEOUT, output.read()).await {
                Ok(Some(chunk)) => chunk?,
                _ => bail!("no echo in time"),
            };
            if String::from_utf8_lossy(&chunk).contains(KEY) {
                break;
            }
        }
        if i >= WARMUP_KEYSTROKES {
            samples.push(started.elapsed());
        }
    }
    drop(sandbox);
    samples.sort();
    Ok(samples)
}
