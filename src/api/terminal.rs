//! `GET /sessions/{id}/terminal`: the session's shared terminal over a WebSocket. JSON text
//! frames in both directions (docs/API.md); this layer only translates them to and from the
//! session's [`TerminalClient`].

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, REQUEST_ID, current_request_id};
use crate::connections::ConnectionHold;
use crate::rooms::{Departure, RoomEvent, TerminalClient};
use crate::sessions::Sessions;

/// A client that takes longer than this to accept one frame is let go (its room has dropped
/// it long before: see `terminal.client_queue_frames`).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// JSON escaping makes a control character six bytes: room for the largest input frame.
const FRAME_OVERHEAD_FACTOR: usize = 6;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Input { data: String },
    Resize { cols: u16, rows: u16 },
    Start { language: Option<String> },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Output { data: &'a str },
    Exit { code: i64 },
    Presence { clients: usize },
    Error { code: &'a str, message: String },
}

/// Joins the room before upgrading, so an unknown session is a plain 404 (and the first
/// client's REPL is running when the socket opens).
#[utoipa::path(get, path = "/sessions/{id}/terminal", tag = "sessions",
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 101, description = "WebSocket onto the session's shared terminal (docs/API.md, \"Rooms\")"),
        (status = 400, description = "invalid_request: not a WebSocket upgrade", body = super::error::ErrorBody),
        (status = 404, description = "session_not_found", body = super::error::ErrorBody),
))]
pub async fn open_terminal(
    State(state): State<AppState>,
    Path(id): Path<String>,
    hold: Option<axum::Extension<ConnectionHold>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade?;
    let client = state.sessions.attach(&id).await?;
    let sessions = state.sessions.clone();
    let max_frame = state.sessions.terminal_config().max_input_bytes * FRAME_OVERHEAD_FACTOR + 1024;
    let request_id = current_request_id();
    Ok(upgrade
        .max_message_size(max_frame)
        .on_upgrade(move |socket| async move {
            // The connection counts against the caps until the socket ends.
            let _hold = hold;
            REQUEST_ID
                .scope(request_id, serve(socket, client, &sessions, &id))
                .await
        }))
}

async fn serve(mut socket: WebSocket, mut client: TerminalClient, sessions: &Sessions, id: &str) {
    loop {
        tokio::select! {
            event = client.next_event() => {
                let Some(event) = event else {
                    let (reason, close) = match client.departure() {
                        Departure::SessionEnded => (ApiError::SessionNotFound, close_code::NORMAL),
                        Departure::ShuttingDown => (ApiError::ShuttingDown, close_code::RESTART),
                        Departure::TooSlow => (ApiError::TooSlow, close_code::POLICY),
                    };
                    let _ = send(&mut socket, error_frame(&reason)).await;
                    let _ = send(&mut socket, Message::Close(Some(CloseFrame {
                        code: close,
                        reason: reason.code().into(),
                    }))).await;
                    return;
                };
                if send(&mut socket, event_frame(&event)).await.is_err() {
                    return;
                }
            }
            message = socket.recv() => {
                let text = match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let refused = ApiError::InvalidFrame("frames are JSON text".to_owned());
                        if send(&mut socket, error_frame(&refused)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    // The socket answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                if let Err(err) = handle(&mut client, sessions, id, text.as_str()).await
                    && send(&mut socket, error_frame(&err)).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// One client frame: typing and resizing go to the room, a `start` to the session (it may
/// need another sandbox).
async fn handle(
    client: &mut TerminalClient,
    sessions: &Sessions,
    id: &str,
    text: &str,
) -> Result<(), ApiError> {
    let frame: ClientFrame = serde_json::from_str(text).map_err(|e| {
        ApiError::InvalidFrame(format!(
            "{e}; expected {{\"type\":\"input\"|\"resize\"|\"start\", …}}"
        ))
    })?;
    match frame {
        ClientFrame::Input { data } => client.input(data).map_err(ApiError::InputRefused),
        ClientFrame::Resize { cols, rows } => Ok(client.resize(cols, rows)?),
        ClientFrame::Start { language } => {
            Ok(sessions.start_terminal(id, language.as_deref()).await?)
        }
    }
}

async fn send(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

fn event_frame(event: &RoomEvent) -> Message {
    let text;
    let frame = match event {
        RoomEvent::Output(bytes) => {
            // The room holds valid UTF-8 only; lossy decoding changes nothing.
            text = String::from_utf8_lossy(bytes);
            ServerFrame::Output { data: &text }
        }
        RoomEvent::Presence(clients) => ServerFrame::Presence { clients: *clients },
        RoomEvent::Exit(code) => ServerFrame::Exit { code: *code },
    };
    to_message(&frame)
}

fn error_frame(err: &ApiError) -> Message {
    let (_, code, message) = err.detail();
    to_message(&ServerFrame::Error { code, message })
}

fn to_message(frame: &ServerFrame<'_>) -> Message {
    // Serialising these plain structs cannot fail.
    Message::Text(serde_json::to_string(frame).unwrap_or_default().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_follow_the_contract() {
        let input: ClientFrame =
            serde_json::from_str(r#"{"type":"input","data":"1+1\n"}"#).unwrap();
        assert!(matches!(input, ClientFrame::Input { data } if data == "1+1\n"));
        let resize: ClientFrame =
            serde_json::from_str(r#"{"type":"resize","cols":100,"rows":30}"#).unwrap();
        assert!(matches!(
            resize,
            ClientFrame::Resize {
                cols: 100,
                rows: 30
            }
        ));
        let start: ClientFrame =
            serde_json::from_str(r#"{"type":"start","language":"ruby"}"#).unwrap();
        assert!(matches!(start, ClientFrame::Start { language: Some(l) } if l == "ruby"));
        let restart: ClientFrame = serde_json::from_str(r#"{"type":"start"}"#).unwrap();
        assert!(matches!(restart, ClientFrame::Start { language: None }));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"exec","cmd":"ls"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientFrame>(r#"{"type":"resize","cols":-1,"rows":3}"#).is_err()
        );
    }

    #[test]
    fn server_frames_follow_the_contract() {
        let text = |m: Message| match m {
            Message::Text(t) => t.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            text(event_frame(&RoomEvent::Output(bytes::Bytes::from_static(
                b"2\r\n"
            )))),
            r#"{"type":"output","data":"2\r\n"}"#
        );
        assert_eq!(
            text(event_frame(&RoomEvent::Exit(0))),
            r#"{"type":"exit","code":0}"#
        );
        assert_eq!(
            text(event_frame(&RoomEvent::Presence(2))),
            r#"{"type":"presence","clients":2}"#
        );
        let error = text(error_frame(&ApiError::TooSlow));
        assert!(
            error.starts_with(r#"{"type":"error","code":"too_slow","message":"#),
            "{error}"
        );
    }
}
