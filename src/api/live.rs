//! Live runs over HTTP: `POST /run` answered as an NDJSON stream (`Accept:
//! application/x-ndjson` or `?stream=true`), and `GET /run/ws`, the interactive run over a
//! WebSocket. Both send the same events (docs/API.md, "Live runs"); this layer only
//! translates them. A client that goes away ends the run and its sandbox.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::AppState;
use super::error::{ApiError, REQUEST_ID, current_request_id};
use super::json::BodyLimit;
use super::run::{FileResponse, RunRequest, RunResponse};
use crate::connections::ConnectionHold;
use crate::executor::{
    Executor, InputFull, InputSender, Job, LiveRun, Phase, RunError, RunEvent, RunOutcome, Stream,
};
use crate::rooms::InputRefused;

/// Media type of the streamed answer.
pub const NDJSON: &str = "application/x-ndjson";
/// Lines waiting for a slow HTTP client; past it the run waits for the client (its output is
/// capped anyway).
const LINE_BACKLOG: usize = 64;
/// How long an interactive client has to send its run request.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of stdin waiting for a program that is not reading; past it frames are refused
/// (`input_backlogged`) until it reads. Four full frames: a paste keeps flowing.
pub(super) const STDIN_BACKLOG_BYTES: usize = 4 * MAX_STDIN_FRAME;
/// Largest `data` of one stdin frame (a keystroke, a line, a pasted block).
const MAX_STDIN_FRAME: usize = 64 * 1024;
/// JSON escaping makes a control character six bytes: a stdin frame's message may be this
/// much larger than its data.
const JSON_ESCAPE_FACTOR: usize = 6;

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event<'a> {
    Started {
        id: &'a str,
    },
    Compile {
        stream: &'static str,
        data: &'a str,
    },
    Stdout {
        data: &'a str,
    },
    Stderr {
        data: &'a str,
    },
    /// A file the run asked for, with its content, before the result (whose `files` then
    /// lists it without the content: the bytes are sent once).
    File(Box<FileResponse>),
    Result {
        result: Box<RunResponse>,
    },
    Error {
        code: &'static str,
        message: String,
    },
}

/// What an interactive client sends after its run request.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Stdin { data: String },
    StdinClose,
    Kill,
}

fn event_json(event: &RunEvent) -> String {
    let frame = match event {
        RunEvent::Started { id } => Event::Started { id },
        RunEvent::Output {
            phase: Phase::Compile,
            stream,
            data,
        } => Event::Compile {
            stream: stream_name(*stream),
            data,
        },
        RunEvent::Output {
            phase: Phase::Run,
            stream: Stream::Stdout,
            data,
        } => Event::Stdout { data },
        RunEvent::Output {
            phase: Phase::Run,
            stream: Stream::Stderr,
            data,
        } => Event::Stderr { data },
        RunEvent::File(file) => Event::File(Box::new(file.clone().into())),
    };
    to_json(&frame)
}

/// A live run's result: its files were sent as `file` events, so they are listed here
/// without their content.
fn live_result(outcome: RunOutcome) -> Box<RunResponse> {
    let mut result = Box::new(RunResponse::from(outcome));
    if let Some(files) = &mut result.files.files {
        for file in files {
            file.content = None;
            file.encoding = None;
        }
    }
    result
}

fn stream_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

/// Once the run has ended: the events it sent last, then the result (or why there is none).
fn last_events(
    received: &mut mpsc::UnboundedReceiver<RunEvent>,
    ended: Result<RunOutcome, RunError>,
) -> Vec<String> {
    let mut last = Vec::new();
    while let Ok(event) = received.try_recv() {
        last.push(event_json(&event));
    }
    last.push(match ended {
        Ok(outcome) => to_json(&Event::Result {
            result: live_result(outcome),
        }),
        Err(err) => error_json(&err.into()),
    });
    last
}

fn error_json(err: &ApiError) -> String {
    let (_, code, message) = err.detail();
    to_json(&Event::Error { code, message })
}

fn to_json(event: &Event<'_>) -> String {
    // Plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_string(event).unwrap_or_default()
}

/// Answers at once with a stream of NDJSON lines; the job runs as the client reads.
pub fn ndjson_response(executor: Executor, job: Job) -> Response {
    let (lines, body) = mpsc::channel::<Bytes>(LINE_BACKLOG);
    let request_id = current_request_id();
    let pump = REQUEST_ID.scope(request_id, stream_run(executor.clone(), job, lines));
    executor.spawn_tracked(pump);
    let body = futures_util::stream::unfold(body, |mut body| async move {
        body.recv()
            .await
            .map(|line| (Ok::<Bytes, Infallible>(line), body))
    });
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(NDJSON)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Proxies that buffer responses (nginx) would hold the lines back.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

async fn stream_run(executor: Executor, job: Job, lines: mpsc::Sender<Bytes>) {
    let line = |text: String| Bytes::from(text + "\n");
    let (events, mut received) = mpsc::unbounded_channel();
    let live = LiveRun {
        events,
        stdin: None,
        kill: Default::default(),
    };
    let run = executor.run_live(job, live);
    tokio::pin!(run);
    loop {
        tokio::select! {
            // Output first: every event reaches the client before the result.
            biased;
            Some(event) = received.recv() => {
                if lines.send(line(event_json(&event))).await.is_err() {
                    return; // the client is gone: dropping the run removes its sandbox
                }
            }
            ended = &mut run => {
                for last in last_events(&mut received, ended) {
                    if lines.send(line(last)).await.is_err() {
                        return;
                    }
                }
                return;
            }
            () = lines.closed() => return,
        }
    }
}

/// `GET /run/ws`.
#[utoipa::path(get, path = "/run/ws", tag = "runs", responses(
    (status = 101, description = "WebSocket: the first frame is a run request (as POST /run); then `stdin`, `stdin_close`, `kill` frames in, run events out (docs/API.md, \"Live runs\")"),
    (status = 400, description = "invalid_request: not a WebSocket upgrade", body = super::error::ErrorBody),
))]
pub async fn run_socket(
    State(state): State<AppState>,
    body_limit: Option<axum::Extension<BodyLimit>>,
    hold: Option<axum::Extension<ConnectionHold>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade?;
    let executor = state.executor.clone();
    Ok(upgrade_live(
        upgrade,
        body_limit,
        hold,
        move |socket, body_limit| interact(socket, executor, body_limit),
    ))
}

/// Upgrades to a live-run socket (`/run/ws`, Piston's `/api/v2/connect`) and serves it with
/// `serve`, which gets the socket and the body cap.
pub(super) fn upgrade_live<F, Fut>(
    upgrade: WebSocketUpgrade,
    body_limit: Option<axum::Extension<BodyLimit>>,
    hold: Option<axum::Extension<ConnectionHold>>,
    serve: F,
) -> Response
where
    F: FnOnce(WebSocket, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let request_id = current_request_id();
    // The run request is the largest frame, and is held to POST /run's body cap; a stdin
    // frame's message is far smaller (checked per frame once the run is going).
    let body_limit = body_limit.map_or(usize::MAX, |limit| limit.0.0);
    let max_message = body_limit.max(MAX_STDIN_FRAME * JSON_ESCAPE_FACTOR + 1024);
    upgrade
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| async move {
            // The connection counts against the caps until the socket ends.
            let _hold = hold;
            REQUEST_ID
                .scope(request_id, serve(socket, body_limit))
                .await
        })
}

async fn interact(mut socket: WebSocket, executor: Executor, body_limit: usize) {
    let job = match first_frame_job(&mut socket, &executor, body_limit).await {
        Ok(job) => job,
        Err(err) => {
            let _ = socket.send(text(error_json(&err))).await;
            let _ = socket.send(close(close_code::POLICY, err.code())).await;
            return;
        }
    };
    let (events, mut received) = mpsc::unbounded_channel();
    let (live, sender) = LiveRun::interactive(events, STDIN_BACKLOG_BYTES);
    let kill = live.kill.clone();
    let mut stdin = LiveStdin::new(sender, job.input.len(), body_limit);
    let run = executor.run_live(job, live);
    tokio::pin!(run);
    loop {
        tokio::select! {
            biased;
            Some(event) = received.recv() => {
                if socket.send(text(event_json(&event))).await.is_err() {
                    return; // gone: dropping the run removes its sandbox
                }
            }
            ended = &mut run => {
                for last in last_events(&mut received, ended) {
                    if socket.send(text(last)).await.is_err() {
                        return;
                    }
                }
                let _ = socket.send(close(close_code::NORMAL, "done")).await;
                return;
            }
            message = socket.recv() => {
                let frame = match message {
                    // Closing the socket kills the run (dropping it removes the sandbox).
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(frame))) => frame,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        let refused = ApiError::InvalidFrame("frames are JSON text".to_owned());
                        let _ = socket.send(text(error_json(&refused))).await;
                        continue;
                    }
                };
                if let Err(err) = control(frame.as_str(), &mut stdin, &kill) {
                    let _ = socket.send(text(error_json(&err))).await;
                }
            }
        }
    }
}

/// The stdin side of an interactive run: everything it may still take, counted against the
/// same cap as POST /run's body (the job's `input` included).
pub(super) struct LiveStdin {
    /// `None` once the client sent `stdin_close`.
    sender: Option<InputSender>,
    /// Bytes the client may still send.
    allowed: usize,
    cap: usize,
}

impl LiveStdin {
    /// Stdin for a job whose `input` holds `already` bytes, under the body cap `cap`.
    pub(super) fn new(sender: InputSender, already: usize, cap: usize) -> LiveStdin {
        LiveStdin {
            sender: Some(sender),
            allowed: cap.saturating_sub(already),
            cap,
        }
    }

    pub(super) fn send(&mut self, data: String) -> Result<(), ApiError> {
        let refused = |why| Err(ApiError::InputRefused(why));
        let Some(sender) = &self.sender else {
            return Err(ApiError::InvalidFrame(
                "stdin is closed (`stdin_close` was sent)".to_owned(),
            ));
        };
        if data.len() > MAX_STDIN_FRAME {
            return refused(InputRefused::TooLarge(MAX_STDIN_FRAME));
        }
        if data.len() > self.allowed {
            return refused(InputRefused::TooMuch(self.cap));
        }
        let len = data.len();
        match sender.try_send(Bytes::from(data)) {
            Ok(()) => {
                self.allowed -= len;
                Ok(())
            }
            Err(InputFull::Backlogged) => refused(InputRefused::Backlogged),
            Err(InputFull::TooLarge) => refused(InputRefused::TooLarge(MAX_STDIN_FRAME)),
            // The program closed its stdin or ended: what it did not read is lost.
            Err(InputFull::Closed) => refused(InputRefused::NotRunning),
        }
    }
}

/// Applies one client frame to the running program.
fn control(
    frame: &str,
    stdin: &mut LiveStdin,
    kill: &tokio_util::sync::CancellationToken,
) -> Result<(), ApiError> {
    let frame: ClientFrame = serde_json::from_str(frame).map_err(|e| {
        ApiError::InvalidFrame(format!(
            "{e}; expected {{\"type\":\"stdin\"|\"stdin_close\"|\"kill\", …}}"
        ))
    })?;
    match frame {
        ClientFrame::Stdin { data } => stdin.send(data),
        ClientFrame::StdinClose => {
            stdin.sender = None;
            Ok(())
        }
        ClientFrame::Kill => {
            kill.cancel();
            Ok(())
        }
    }
}

/// Reads and validates the run request (the first frame); nothing runs before it is valid.
async fn first_frame_job(
    socket: &mut WebSocket,
    executor: &Executor,
    body_limit: usize,
) -> Result<Job, ApiError> {
    let received = tokio::time::timeout(FIRST_FRAME_TIMEOUT, socket.recv()).await;
    let received = match received {
        Ok(Some(Err(ref err))) if is_too_big(err) => {
            return Err(ApiError::PayloadTooLarge { limit: body_limit });
        }
        other => other,
    };
    let frame = match received {
        Err(_) => {
            return Err(ApiError::InvalidRequest(format!(
                "send the run request as the first frame within {} s",
                FIRST_FRAME_TIMEOUT.as_secs()
            )));
        }
        Ok(Some(Ok(Message::Text(frame)))) => frame,
        Ok(_) => {
            return Err(ApiError::InvalidFrame(
                "the first frame must be the run request, as JSON text".to_owned(),
            ));
        }
    };
    let request: RunRequest =
        serde_json::from_str(frame.as_str()).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let job = executor.validate(request.into())?;
    job.check_live()?;
    Ok(job)
}

/// Whether reading a frame failed because it was over the socket's message cap.
pub(super) fn is_too_big(err: &axum::Error) -> bool {
    use tungstenite::Error;
    matches!(
        std::error::Error::source(err).and_then(|e| e.downcast_ref::<Error>()),
        Some(Error::Capacity(_))
    )
}

fn text(json: String) -> Message {
    Message::Text(json.into())
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_is_bounded_per_frame_and_in_all() {
        let (sender, mut receiver) = crate::executor::input_channel(STDIN_BACKLOG_BYTES);
        let mut stdin = LiveStdin {
            sender: Some(sender),
            allowed: MAX_STDIN_FRAME + 10,
            cap: 1000,
        };
        let big = "x".repeat(MAX_STDIN_FRAME + 1);
        assert_eq!(stdin.send(big).unwrap_err().code(), "input_too_large");
        stdin.send("x".repeat(MAX_STDIN_FRAME)).unwrap();
        stdin.send("x".repeat(10)).unwrap();
        // The run's total is spent, however much the program has read.
        drop(receiver.try_recv());
        let over = stdin.send("x".to_owned()).unwrap_err();
        assert_eq!(over.code(), "input_too_large");
        assert!(over.to_string().contains("1000"), "{over}");
    }

    #[test]
    fn events_follow_the_contract() {
        let output = |phase, stream, data: &str| RunEvent::Output {
            phase,
            stream,
            data: data.to_owned(),
        };
        assert_eq!(
            event_json(&RunEvent::Started {
                id: "j1".to_owned()
            }),
            r#"{"event":"started","id":"j1"}"#
        );
        assert_eq!(
            event_json(&output(Phase::Compile, Stream::Stderr, "warning")),
            r#"{"event":"compile","stream":"stderr","data":"warning"}"#
        );
        assert_eq!(
            event_json(&output(Phase::Run, Stream::Stdout, "hi\n")),
            r#"{"event":"stdout","data":"hi\n"}"#
        );
        assert_eq!(
            event_json(&output(Phase::Run, Stream::Stderr, "oops")),
            r#"{"event":"stderr","data":"oops"}"#
        );
        let error = error_json(&ApiError::InvalidFrame("x".to_owned()));
        assert_eq!(
            error,
            r#"{"event":"error","code":"invalid_frame","message":"x"}"#
        );
    }

    #[test]
    fn client_frames_follow_the_contract() {
        let (sender, mut receiver) = crate::executor::input_channel(2);
        let mut stdin = LiveStdin {
            sender: None,
            allowed: 100,
            cap: 100,
        };
        let kill = tokio_util::sync::CancellationToken::new();
        assert!(control(r#"{"type":"stdin","data":"1\n"}"#, &mut stdin, &kill).is_err());
        stdin.sender = Some(sender);
        control(r#"{"type":"stdin","data":"1\n"}"#, &mut stdin, &kill).unwrap();
        assert_eq!(
            receiver.try_recv().unwrap().data,
            Bytes::from_static(b"1\n")
        );
        control(r#"{"type":"stdin","data":"2\n"}"#, &mut stdin, &kill).unwrap();
        let full = control(r#"{"type":"stdin","data":"3\n"}"#, &mut stdin, &kill);
        assert_eq!(full.unwrap_err().code(), "input_backlogged");
        control(r#"{"type":"stdin_close"}"#, &mut stdin, &kill).unwrap();
        assert!(stdin.sender.is_none());
        assert!(!kill.is_cancelled());
        control(r#"{"type":"kill"}"#, &mut stdin, &kill).unwrap();
        assert!(kill.is_cancelled());
        let unknown = control(r#"{"type":"exec"}"#, &mut stdin, &kill);
        assert_eq!(unknown.unwrap_err().code(), "invalid_frame");
    }
}
