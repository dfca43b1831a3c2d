//! `GET /api/v2/connect`: Piston's interactive run over a WebSocket (`init`, then `data` and
//! `signal` in; `runtime`, `stage`, `data`, `exit` out; close codes 4000–4999), on the live-run
//! machinery of `/run/ws`: the same stdin bounds, and the output cap holds here too (Piston's
//! own WebSocket path did not enforce it).

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::super::AppState;
use super::super::error::ApiError;
use super::super::json::BodyLimit;
use super::super::live::{LiveStdin, STDIN_BACKLOG_BYTES, is_too_big, upgrade_live};
use super::dialect;
use crate::connections::ConnectionHold;
use crate::executor::{LiveRun, Phase, RunEvent, RunOutcome, Stream, signal_number};

/// Piston's deadline for the `init` message.
const INIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Piston's close codes and reasons.
mod closing {
    pub const ALREADY_INITIALIZED: (u16, &str) = (4000, "Already Initialized");
    pub const INIT_TIMEOUT: (u16, &str) = (4001, "Initialization Timeout");
    pub const NOTIFIED_ERROR: (u16, &str) = (4002, "Notified Error");
    pub const NOT_INITIALIZED: (u16, &str) = (4003, "Not yet initialized");
    pub const STDIN_ONLY: (u16, &str) = (4004, "Can only write to stdin");
    pub const INVALID_SIGNAL: (u16, &str) = (4005, "Invalid signal");
    pub const COMPLETED: (u16, &str) = (4999, "Job Completed");
}

#[utoipa::path(get, path = "/api/v2/connect", tag = "piston", responses(
    (status = 101, description = "Piston v2's interactive WebSocket: `init` (the execute fields), then `data` (stdin) and `signal` frames in; `runtime`, `stage`, `data`, `exit` out; closed with 4999 when done (docs/API.md, \"Piston v2\")"),
))]
pub async fn connect(
    State(state): State<AppState>,
    body_limit: Option<axum::Extension<BodyLimit>>,
    hold: Option<axum::Extension<ConnectionHold>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade?;
    Ok(upgrade_live(
        upgrade,
        body_limit,
        hold,
        move |socket, body_limit| serve(socket, state, body_limit),
    ))
}

/// A client frame, read loosely as Piston reads it (its `type` decides).
fn frame_type(frame: &Value) -> &str {
    frame.get("type").and_then(Value::as_str).unwrap_or("")
}

async fn serve(mut socket: WebSocket, state: AppState, body_limit: usize) {
    let init = match tokio::time::timeout(INIT_TIMEOUT, next_frame(&mut socket)).await {
        Err(_) => return close(&mut socket, closing::INIT_TIMEOUT).await,
        Ok(Err(Gone)) => return,
        Ok(Ok(frame)) => frame,
    };
    let init = match init {
        Ok(frame) if frame_type(&frame) == "init" => frame,
        Ok(_) => return close(&mut socket, closing::NOT_INITIALIZED).await,
        Err(err) => return notify_error(&mut socket, &err).await,
    };
    let (runtime, mut job) = match super::prepare(&state, &init) {
        Ok(prepared) => prepared,
        Err(err) => return notify_error(&mut socket, &err).await,
    };
    // Piston ignores `stdin` here: it comes in `data` frames.
    job.input = bytes::Bytes::new();
    let compiled = job.language.compile.is_some();
    let mut stages = Stages::default();
    let greeting = json!({
        "type": "runtime", "language": runtime.language, "version": runtime.version
    });
    if send(&mut socket, &greeting).await.is_err() {
        return;
    }
    if compiled && stages.enter(&mut socket, "compile").await.is_err() {
        return;
    }
    let (events, mut received) = mpsc::unbounded_channel();
    let (live, sender) = LiveRun::interactive(events, STDIN_BACKLOG_BYTES);
    let kill = live.kill.clone();
    let mut stdin = LiveStdin::new(sender, 0, body_limit);
    let run = state.executor.run_live(job, live);
    tokio::pin!(run);
    loop {
        tokio::select! {
            biased;
            Some(event) = received.recv() => {
                if stages.output(&mut socket, &event).await.is_err() {
                    return; // gone: dropping the run removes its sandbox
                }
            }
            ended = &mut run => {
                while let Ok(event) = received.try_recv() {
                    if stages.output(&mut socket, &event).await.is_err() {
                        return;
                    }
                }
                match ended {
                    Ok(outcome) => {
                        if stages.finish(&mut socket, &outcome).await.is_ok() {
                            close(&mut socket, closing::COMPLETED).await;
                        }
                    }
                    Err(err) => notify_error(&mut socket, &err.into()).await,
                }
                return;
            }
            frame = next_frame(&mut socket) => {
                let frame = match frame {
                    Err(Gone) => return,
                    Ok(Err(err)) => return notify_error(&mut socket, &err).await,
                    Ok(Ok(frame)) => frame,
                };
                match frame_type(&frame) {
                    "init" => return close(&mut socket, closing::ALREADY_INITIALIZED).await,
                    "data" if frame.get("stream").and_then(Value::as_str) == Some("stdin") => {
                        let data = frame.get("data").and_then(Value::as_str).unwrap_or("");
                        if let Err(err) = stdin.send(data.to_owned()) {
                            return notify_error(&mut socket, &err).await;
                        }
                    }
                    "data" => return close(&mut socket, closing::STDIN_ONLY).await,
                    "signal" => {
                        let name = frame.get("signal").and_then(Value::as_str).unwrap_or("");
                        if signal_number(name).is_none() {
                            return close(&mut socket, closing::INVALID_SIGNAL).await;
                        }
                        // Any signal ends the run (Piston accepts it and, at 0a844d0, does
                        // nothing: a client that asks for an end gets one here).
                        kill.cancel();
                    }
                    _ => {
                        let err = ApiError::InvalidFrame(
                            "expected {\"type\":\"data\"|\"signal\", …}".to_owned(),
                        );
                        return notify_error(&mut socket, &err).await;
                    }
                }
            }
        }
    }
}

/// The client went away.
struct Gone;

/// The next text frame as JSON (`Err` inside when it is not JSON text or too large).
async fn next_frame(socket: &mut WebSocket) -> Result<Result<Value, ApiError>, Gone> {
    loop {
        return match socket.recv().await {
            None | Some(Ok(Message::Close(_))) => Err(Gone),
            Some(Err(err)) if is_too_big(&err) => Ok(Err(ApiError::InvalidFrame(
                "the message is larger than the server takes".to_owned(),
            ))),
            Some(Err(_)) => Err(Gone),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => Ok(Err(ApiError::InvalidFrame(
                "messages are JSON text".to_owned(),
            ))),
            Some(Ok(Message::Text(text))) => Ok(serde_json::from_str(text.as_str())
                .map_err(|e| ApiError::InvalidFrame(format!("not JSON: {e}")))),
        };
    }
}

/// Which stages were announced and ended, so each gets its `stage` and `exit` once, in
/// order, whether or not it printed anything.
#[derive(Default)]
struct Stages {
    current: Option<&'static str>,
    compile_ended: bool,
}

impl Stages {
    async fn enter(&mut self, socket: &mut WebSocket, stage: &'static str) -> Result<(), Gone> {
        self.current = Some(stage);
        send(socket, &json!({ "type": "stage", "stage": stage })).await
    }

    /// Output of a phase; the run's first output means the compile ended well.
    async fn output(&mut self, socket: &mut WebSocket, event: &RunEvent) -> Result<(), Gone> {
        let RunEvent::Output {
            phase,
            stream,
            data,
        } = event
        else {
            return Ok(());
        };
        if *phase == Phase::Run && self.current != Some("run") {
            self.end_compile_well(socket).await?;
            self.enter(socket, "run").await?;
        }
        let stream = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        send(
            socket,
            &json!({ "type": "data", "stream": stream, "data": data }),
        )
        .await
    }

    async fn end_compile_well(&mut self, socket: &mut WebSocket) -> Result<(), Gone> {
        if self.current == Some("compile") && !self.compile_ended {
            self.compile_ended = true;
            let exit = json!({ "type": "exit", "stage": "compile", "code": 0, "signal": null });
            send(socket, &exit).await?;
        }
        Ok(())
    }

    /// The stages' ends, as the outcome tells them.
    async fn finish(&mut self, socket: &mut WebSocket, outcome: &RunOutcome) -> Result<(), Gone> {
        if let Some(compile) = &outcome.compile
            && !self.compile_ended
        {
            self.compile_ended = true;
            let stage = dialect::stage(compile, String::new(), None, None);
            send(socket, &exit_frame("compile", &stage)).await?;
        }
        if let Some(run) = &outcome.run {
            if self.current != Some("run") {
                self.enter(socket, "run").await?;
            }
            let stage = dialect::stage(run, String::new(), outcome.cpu_time, outcome.memory_kb);
            send(socket, &exit_frame("run", &stage)).await?;
        }
        Ok(())
    }
}

fn exit_frame(stage: &str, result: &dialect::Stage) -> Value {
    let mut frame = json!({
        "type": "exit", "stage": stage, "code": result.code, "signal": result.signal
    });
    if let Some(message) = &result.message {
        frame["error"] = json!(message);
    }
    frame
}

async fn send(socket: &mut WebSocket, frame: &Value) -> Result<(), Gone> {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .map_err(|_| Gone)
}

/// Piston's error report: the message, then the close with 4002.
async fn notify_error(socket: &mut WebSocket, err: &ApiError) {
    let (_, _, message) = err.detail();
    if send(socket, &json!({ "type": "error", "message": message }))
        .await
        .is_ok()
    {
        close(socket, closing::NOTIFIED_ERROR).await;
    }
}

async fn close(socket: &mut WebSocket, (code, reason): (u16, &'static str)) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_carries_the_stages_error_when_it_has_one() {
        let stage = |message: Option<&str>| dialect::Stage {
            stdout: String::new(),
            stderr: String::new(),
            output: String::new(),
            code: Some(1),
            signal: None,
            message: message.map(str::to_owned),
            status: None,
            cpu_time: None,
            wall_time: 0,
            memory: None,
        };
        let failed = exit_frame("run", &stage(Some("Exited with error status 1")));
        assert_eq!(failed["error"], "Exited with error status 1");
        assert_eq!(failed["code"], 1);
        assert!(exit_frame("run", &stage(None)).get("error").is_none());
    }
}
