//! The router: the one route table with its middleware (access, body bounds, request ids,
//! CORS, the request's log line).

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::api::error::REQUEST_ID;
use crate::api::json::BodyLimit;
use crate::api::{self, ApiError, access};
use crate::config::ServerConfig;

use super::AppState;

const REQUEST_ID_HEADER: &str = "x-request-id";
/// How long browsers may cache a CORS preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(3600);

/// The router with every route and middleware; tests call this without a socket.
pub fn router(state: AppState, server: &ServerConfig) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let mut routes = Router::new();
    for route in api::routes() {
        // Methods of one path are merged into one method router.
        routes = routes.route(route.path, route.handler);
    }
    routes
        // A session's request goes to the node hosting it, after it is counted here.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            api::forward::to_host,
        ))
        // Runs after routing, so the rule is found by the route's pattern.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::rate_limit,
        ))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state.clone())
        // Layers wrap what is above them: the last added runs first.
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            server.body_timeout_secs,
        )))
        .layer(middleware::from_fn_with_state(
            state,
            access::identify_client,
        ))
        // Piston's clients read `{"message"}`: every error under its prefix, the edge's too.
        .layer(middleware::from_fn(api::piston::reshape_errors))
        // Judge0's clients read `{"error"}` (and Rails' 404): likewise under its prefix.
        .layer(middleware::from_fn(api::judge0::reshape_errors))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                ApiError::Internal("a handler panicked".into()).into_response()
            },
        ))
        .layer(middleware::from_fn_with_state(
            server.body_limit_bytes,
            request_context,
        ))
        .layer(cors(server))
        // One log line per request ("finished processing request") with its span: request id,
        // route, client, and for a job its language and outcome (recorded further in). Bodies,
        // code and stdin are never logged. Errors are logged once, by the error table.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get(REQUEST_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    // Never a session id (a capability): its route and a tag instead.
                    let (path, session) = crate::sessions::loggable_path(request.uri().path());
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %path,
                        session = session.as_deref(),
                        request_id = %id,
                        route = tracing::field::Empty,
                        client = tracing::field::Empty,
                        language = tracing::field::Empty,
                        outcome = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(LatencyUnit::Millis),
                )
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Makes the request id (and the body cap) available to error responses deeper in.
async fn request_context(
    State(body_limit): State<usize>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned();
    request.extensions_mut().insert(BodyLimit(body_limit));
    REQUEST_ID.scope(id, next.run(request)).await
}

fn cors(server: &ServerConfig) -> CorsLayer {
    let origins = if server.cors_allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            server
                .cors_allowed_origins
                .iter()
                .map(|o| HeaderValue::from_str(o).expect("validated in config")),
        )
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static(REQUEST_ID_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static(REQUEST_ID_HEADER),
            header::RETRY_AFTER,
            HeaderName::from_static(access::RATELIMIT_LIMIT),
            HeaderName::from_static(access::RATELIMIT_REMAINING),
            HeaderName::from_static(access::RATELIMIT_RESET),
        ])
        .max_age(CORS_MAX_AGE)
}
