//! `GET /healthz` (the process is up) and `GET /readyz` (it can run jobs).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthResponse {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "The process is up", body = HealthResponse),
))]
pub async fn get_health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok",
        reason: None,
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "The engine answers and every language image is present", body = HealthResponse),
    (status = 503, description = "Not ready, with the reason", body = HealthResponse),
))]
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
