//! The one place where failures become HTTP responses.
//!
//! Policy: every error is `{"error":{"code","message"}}` with a stable code from the table in
//! [`ApiError::status_and_code`]. Client mistakes carry a message that says what to fix. Our own
//! failures (5xx other than 503) are logged once here, with the request id, and the client
//! gets a generic message that carries the request id and nothing internal.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::executor::{JobError, Overloaded, RunError, SandboxError};
use crate::rooms::{BadSize, InputRefused};
use crate::sessions::SessionError;

/// Seconds a client should wait before retrying when the engine is unavailable.
const RETRY_AFTER_SECS: u64 = 5;
/// Seconds a client should wait before retrying when every slot and the queue are busy: jobs
/// last about a second or less, so a slot is likely free by then.
const RETRY_AFTER_OVERLOADED_SECS: u64 = 1;

tokio::task_local! {
    /// The request id of the request being served (set by the request-id middleware), so an
    /// error response and its log line can name it without every handler passing it along.
    pub static REQUEST_ID: String;
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    UnknownLanguage(String),
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body must be JSON with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("no such route; see docs/API.md")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("the sandbox service is unavailable right now; retry shortly")]
    SandboxUnavailable(#[source] SandboxError),
    #[error("{0}")]
    Overloaded(Overloaded),
    #[error("the maximum number of live sessions is reached; retry later")]
    SessionsFull,
    #[error("every sandbox this server may keep is in use; retry later")]
    SandboxesFull,
    #[error(
        "the session's files could not be moved to the new language's sandbox (they do not fit its limits); nothing changed"
    )]
    WorkDirNotMoved,
    #[error("no such session (it may have expired or been deleted)")]
    SessionNotFound,
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("this server needs an API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// A terminal frame that is not one of the contract's.
    #[error("{0}")]
    InvalidFrame(String),
    #[error("{0}")]
    InputRefused(InputRefused),
    #[error("this client fell too far behind the terminal's output and was dropped; reconnect")]
    TooSlow,
    #[error("runbox is restarting; reconnect shortly")]
    ShuttingDown,
    #[error("this session's sandbox was lost with its engine; create a new session")]
    SessionLost,
    #[error(
        "what another node holds (a session, a submission) cannot be reached right now: the nodes' shared state is unavailable; retry shortly"
    )]
    StateUnavailable,
    #[error("this session is moving to another node; retry in a moment")]
    SessionMoving,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Every error: a stable machine-readable code and a human message.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail<'a> {
    /// e.g. `invalid_request`, `unknown_language`, `rate_limited` (see docs/API.md).
    code: &'a str,
    message: String,
}

impl ApiError {
    /// The table: each error's HTTP status and stable machine-readable code.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::UnknownLanguage(_) => (StatusCode::BAD_REQUEST, "unknown_language"),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::SandboxUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "sandbox_unavailable")
            }
            ApiError::Overloaded(_) | ApiError::SessionsFull | ApiError::SandboxesFull => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            }
            ApiError::SessionNotFound => (StatusCode::NOT_FOUND, "session_not_found"),
            ApiError::WorkDirNotMoved => (StatusCode::CONFLICT, "work_dir_not_moved"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::InvalidFrame(_) => (StatusCode::BAD_REQUEST, "invalid_frame"),
            ApiError::InputRefused(refused) => match refused {
                InputRefused::TooLarge(_) | InputRefused::TooMuch(_) => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "input_too_large")
                }
                InputRefused::TooFast(_) | InputRefused::StartsTooFast(_) => {
                    (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
                }
                InputRefused::NotRunning => (StatusCode::CONFLICT, "not_running"),
                InputRefused::Backlogged => (StatusCode::SERVICE_UNAVAILABLE, "input_backlogged"),
            },
            ApiError::TooSlow => (StatusCode::TOO_MANY_REQUESTS, "too_slow"),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::SessionLost => (StatusCode::GONE, "session_lost"),
            ApiError::StateUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "state_unavailable"),
            ApiError::SessionMoving => (StatusCode::SERVICE_UNAVAILABLE, "session_moving"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<axum::extract::ws::rejection::WebSocketUpgradeRejection> for ApiError {
    fn from(_: axum::extract::ws::rejection::WebSocketUpgradeRejection) -> Self {
        ApiError::InvalidRequest(
            "this route is a WebSocket: connect with `Upgrade: websocket`".to_owned(),
        )
    }
}

impl From<crate::access::Refusal> for ApiError {
    fn from(refusal: crate::access::Refusal) -> Self {
        match refusal {
            crate::access::Refusal::Unauthorized => ApiError::Unauthorized,
            crate::access::Refusal::RateLimited { rule, limited } => {
                // Whole seconds, rounded up: retrying at the advertised time succeeds.
                let secs = limited.retry_after.as_secs()
                    + u64::from(limited.retry_after.subsec_nanos() > 0);
                ApiError::RateLimited {
                    message: format!(
                        "rate limit `{rule}` reached for this client; retry in {secs} s"
                    ),
                    retry_after_secs: secs,
                }
            }
        }
    }
}

impl From<JobError> for ApiError {
    fn from(err: JobError) -> Self {
        match err {
            JobError::Invalid(message) => ApiError::InvalidRequest(message),
            err @ JobError::UnknownLanguage(_) => ApiError::UnknownLanguage(err.to_string()),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(err: RunError) -> Self {
        match err {
            RunError::Overloaded(overloaded) => ApiError::Overloaded(overloaded),
            RunError::Sandbox(err) => err.into(),
            RunError::ShuttingDown => ApiError::ShuttingDown,
            RunError::FilesNotUnpacked(_) => ApiError::Internal(Box::new(err)),
        }
    }
}

impl From<BadSize> for ApiError {
    fn from(err: BadSize) -> Self {
        ApiError::InvalidRequest(err.to_string())
    }
}

impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::NotFound => ApiError::SessionNotFound,
            SessionError::AtCapacity => ApiError::SessionsFull,
            // A session is freed by its holder or by expiry: retry in a minute, not at once.
            err @ SessionError::ClientAtCapacity(_) => ApiError::RateLimited {
                message: err.to_string(),
                retry_after_secs: 60,
            },
            SessionError::Invalid(message) => ApiError::InvalidRequest(message),
            SessionError::Job(err) => err.into(),
            SessionError::Run(err) => err.into(),
            SessionError::Sandbox(err) => err.into(),
            SessionError::Refused(refused) => ApiError::InputRefused(refused),
            SessionError::Lost => ApiError::SessionLost,
            SessionError::Moving => ApiError::SessionMoving,
            SessionError::Shared(err) => err.into(),
        }
    }
}

impl From<crate::shared::SharedError> for ApiError {
    fn from(err: crate::shared::SharedError) -> Self {
        match err {
            crate::shared::SharedError::Unavailable => ApiError::StateUnavailable,
            err @ crate::shared::SharedError::Unexpected(_) => ApiError::Internal(Box::new(err)),
        }
    }
}

impl From<SandboxError> for ApiError {
    fn from(err: SandboxError) -> Self {
        match err {
            SandboxError::EngineUnavailable(_)
            | SandboxError::ImageMissing(_)
            | SandboxError::RuntimeMissing(_) => ApiError::SandboxUnavailable(err),
            SandboxError::AtCapacity => ApiError::SandboxesFull,
            SandboxError::WorkDirNotCopied(_) => ApiError::WorkDirNotMoved,
            SandboxError::EngineRefused { .. }
            | SandboxError::EngineAnswer(_)
            | SandboxError::ExecDetached
            | SandboxError::RunnerSpent
            | SandboxError::RunnerNotReady
            | SandboxError::NestedLauncher
            | SandboxError::ProgramsNotEnded(_)
            | SandboxError::TerminalNotStarted(_)
            | SandboxError::TerminalInput(_)
            | SandboxError::CreationTask(_) => ApiError::Internal(Box::new(err)),
        }
    }
}

pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "unknown".to_owned())
}

impl ApiError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    /// The status, code and client-facing message; our own failures are logged here, once.
    /// A terminal's `error` frame carries the same code and message as a response would.
    pub fn detail(&self) -> (StatusCode, &'static str, String) {
        let (status, code) = self.status_and_code();
        let request_id = current_request_id();
        let message = match self {
            ApiError::Internal(source) => {
                tracing::error!(%request_id, error = %source, "internal error");
                format!("internal error; request id {request_id}")
            }
            ApiError::SandboxUnavailable(source) => {
                tracing::warn!(%request_id, error = %source, "sandbox unavailable");
                self.to_string()
            }
            other => other.to_string(),
        };
        (status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.detail();
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail { code, message },
            }),
        )
            .into_response();
        let retry_after = match &self {
            ApiError::Overloaded(_) => Some(RETRY_AFTER_OVERLOADED_SECS),
            ApiError::SessionsFull | ApiError::SandboxesFull => Some(RETRY_AFTER_SECS),
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::SandboxUnavailable(_) => Some(RETRY_AFTER_SECS),
            ApiError::StateUnavailable | ApiError::SessionMoving => {
                Some(RETRY_AFTER_OVERLOADED_SECS)
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let ApiError::Unauthorized = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_hide_their_cause_and_name_the_request() {
        let err = ApiError::Internal("docker said: /var/lib/docker/overlay2 oops".into());
        let response = REQUEST_ID
            .scope("req-42".to_owned(), async { err.into_response() })
            .await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("internal_error") && text.contains("req-42"),
            "{text}"
        );
        assert!(
            !text.contains("docker") && !text.contains("/var/lib"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn overloaded_is_a_503_with_retry_after() {
        let response = ApiError::from(RunError::Overloaded(Overloaded)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("\"overloaded\""));
    }

    #[tokio::test]
    async fn unavailable_sets_retry_after_and_hides_engine_text() {
        let err = ApiError::from(SandboxError::EngineUnavailable(
            "/var/run/docker.sock: refused".into(),
        ));
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let body = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("docker.sock"));
    }
}
