//! Application state, the router with its middleware, and the server lifecycle.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::error::REQUEST_ID;
use crate::api::json::BodyLimit;
use crate::api::{ApiError, health, languages, live, metrics, run, sessions, terminal};
use crate::config::{Config, ServerConfig};
use crate::executor::Executor;
use crate::sandbox::{Lifetimes, SandboxError, Sandboxes};
use crate::sessions::Sessions;

const REQUEST_ID_HEADER: &str = "x-request-id";
/// How long browsers may cache a CORS preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Slack on top of the longest compile + run a job may take: a `job` container older than
/// that cannot belong to a running job, so the sweep may remove it.
const JOB_LIFETIME_SLACK: Duration = Duration::from_secs(60);

/// Cheap, clonable handles shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub executor: Executor,
    pub sessions: Sessions,
}

/// The router with every route and middleware; tests call this without a socket.
pub fn router(state: AppState, server: &ServerConfig) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    Router::new()
        .route("/run", post(run::run_code))
        .route("/run/ws", get(live::run_socket))
        .route("/sessions", post(sessions::create_session))
        .route(
            "/sessions/{id}",
            get(sessions::get_session).delete(sessions::delete_session),
        )
        .route("/sessions/{id}/run", post(sessions::run_in_session))
        .route("/sessions/{id}/terminal", get(terminal::open_terminal))
        .route("/languages", get(languages::list_languages))
        .route("/healthz", get(health::get_health))
        .route("/readyz", get(health::get_ready))
        .route("/metrics", get(metrics::get_metrics))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        // Layers wrap what is above them: the last added runs first.
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .layer(middleware::from_fn_with_state(
            server.body_limit_bytes,
            request_context,
        ))
        .layer(cors(server))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
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
        ])
        .max_age(CORS_MAX_AGE)
}

/// A running server: its address, and a way to stop it.
pub struct Server {
    pub addr: SocketAddr,
    pub executor: Executor,
    pub sessions: Sessions,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Connects to the engine, starts the background tasks and serves on `listener`.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Server, SandboxError> {
        let job_lifetime_bound = config
            .languages
            .iter()
            .map(|l| {
                Duration::from_millis(l.max_timeout_ms)
                    + l.compile
                        .as_ref()
                        .map_or(Duration::ZERO, |_| l.compile_timeout())
            })
            .max()
            .unwrap_or_default()
            + JOB_LIFETIME_SLACK;
        let lifetimes = Lifetimes {
            job: job_lifetime_bound,
            pool: config.pool.max_idle() + job_lifetime_bound,
            session: config.sessions.max_age() + job_lifetime_bound,
        };
        let sandboxes =
            Sandboxes::connect(&config.engine, config.sandbox.clone(), lifetimes).await?;
        let executor = Executor::new(
            sandboxes,
            config.languages.clone(),
            &config.limits,
            &config.pool,
        );
        match executor.check_ready().await {
            Ok(()) => tracing::info!("engine and every language image present"),
            Err(not_ready) => tracing::warn!(reason = %not_ready, "not ready yet"),
        }
        let sessions = Sessions::start(
            config.sessions.clone(),
            config.terminal.clone(),
            executor.sandboxes().clone(),
            executor.clone(),
        )
        .await;
        let app = router(
            AppState {
                executor: executor.clone(),
                sessions: sessions.clone(),
            },
            &config.server,
        );
        let addr = listener
            .local_addr()
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        let stop = tokio_util::sync::CancellationToken::new();
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            // The peer address is the client's identity for per-client limits.
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        });
        tracing::info!(%addr, "runbox listening");
        Ok(Server {
            addr,
            executor,
            sessions,
            stop,
            task,
        })
    }

    /// Stops accepting, lets in-flight requests finish, then removes every sandbox this
    /// process still owns.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.stop.cancel();
        let served = self.task.await.unwrap_or(Ok(()));
        self.sessions.shutdown().await;
        self.executor.shutdown().await;
        served
    }

    /// Serves until SIGINT or SIGTERM, then shuts down as [`Server::shutdown`] does.
    pub async fn wait_for_signal(self) -> std::io::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
