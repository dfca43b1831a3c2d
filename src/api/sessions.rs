//! `/sessions`: create, inspect, run in, delete.

use std::time::SystemTime;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::json::{ApiJson, OptionalApiJson};
use super::run::{RunRequest, RunResponse};
use crate::sessions::SessionView;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct CreateSessionRequest {
    pub language: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionResponse {
    pub id: String,
    pub language: String,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: String,
    /// The session's own URL (relative to the server), also its invite link.
    pub url: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionRunResponse {
    #[serde(flatten)]
    pub run: RunResponse,
    /// The session's sandbox was replaced after this run (its memory ran out, or a process
    /// could not be ended): the session goes on with an empty work dir.
    pub session_restarted: bool,
}

/// The body is optional (`{}` or nothing at all: a shell session).
#[utoipa::path(
    post,
    path = "/sessions",
    tag = "sessions",
    request_body(content = CreateSessionRequest, description = "Optional: `{}` or no body is a shell session"),
    responses(
        (status = 201, description = "The session", body = SessionResponse),
        (status = 400, description = "invalid_json, unknown_language", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 408, description = "request_timeout", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type: a body that is not application/json", body = ErrorBody),
        (status = 429, description = "rate_limited (too many sessions for this client, or the rate limit)", body = ErrorBody),
        (status = 503, description = "overloaded, sandbox_unavailable", body = ErrorBody),
    )
)]
pub async fn create_session(
    State(state): State<AppState>,
    Extension(client): Extension<crate::access::ClientId>,
    OptionalApiJson(request): OptionalApiJson<CreateSessionRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), ApiError> {
    let client = client.to_string();
    let view = state
        .sessions
        .create(request.language.as_deref(), &client)
        .await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

#[utoipa::path(
    get,
    path = "/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        (status = 404, description = "session_not_found", body = ErrorBody),
    )
)]
pub async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionResponse>, ApiError> {
    Ok(Json(state.sessions.get(&id)?.into()))
}

#[utoipa::path(
    delete,
    path = "/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 204, description = "Deleted: its sandbox is removed, its room closed"),
        (status = 404, description = "session_not_found", body = ErrorBody),
    )
)]
pub async fn delete_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.sessions.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/run",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id")),
    request_body = RunRequest,
    responses(
        (status = 200, description = "The run's outcome, in the session's sandbox", body = SessionRunResponse),
        (status = 400, description = "invalid_json, invalid_request, unknown_language", body = ErrorBody),
        (status = 404, description = "session_not_found", body = ErrorBody),
        (status = 503, description = "overloaded, sandbox_unavailable, shutting_down", body = ErrorBody),
    )
)]
pub async fn run_in_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<RunRequest>,
) -> Result<Json<SessionRunResponse>, ApiError> {
    let run = state.sessions.run(&id, request.into()).await?;
    Ok(Json(SessionRunResponse {
        run: run.run.outcome.into(),
        session_restarted: run.restarted,
    }))
}

impl From<SessionView> for SessionResponse {
    fn from(v: SessionView) -> Self {
        SessionResponse {
            url: format!("/sessions/{}", v.id),
            id: v.id,
            language: v.language,
            created_at: timestamp(v.created_at),
            last_used_at: timestamp(v.last_used_at),
            expires_at: timestamp(v.expires_at),
        }
    }
}

fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
