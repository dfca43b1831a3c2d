//! `GET /metrics`: the Prometheus scrape endpoint.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus/OpenMetrics text", content_type = "application/openmetrics-text", body = String),
    (status = 401, description = "unauthorized (a metrics token or API keys are configured)"),
))]
pub async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_TEXT)],
        state.metrics.render(),
    )
}
