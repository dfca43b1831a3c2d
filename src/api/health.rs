//! `GET /healthz` (the process is up) and `GET /readyz` (it can run jobs).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::app::AppState;

#[derive(Debug, Serialize)]
pub struct HealthResponse {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub async fn get_health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok",
        reason: None,
    })
}

pub async fn get_ready(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    match state.executor.check_ready().await {
        Ok(()) => (
            StatusCode::OK,
            Json(HealthResponse {
                status: "ready",
                reason: None,
            }),
        ),
        Err(not_ready) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthResponse {
                status: "unavailable",
                reason: Some(not_ready.0),
            }),
        ),
    }
}
