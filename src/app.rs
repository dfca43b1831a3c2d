//! Application state, the router with its middleware, and the server lifecycle.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::access::Access;
use crate::api::error::REQUEST_ID;
use crate::api::json::BodyLimit;
use crate::api::{self, ApiError, access};
use crate::config::{Config, ServerConfig};
use crate::connections::{self, Activity, ConnectionLimits};
use crate::executor::Executor;
use crate::sandbox::{Lifetimes, SandboxBudget, SandboxError, Sandboxes};
use crate::sessions::Sessions;

const REQUEST_ID_HEADER: &str = "x-request-id";
/// How long browsers may cache a CORS preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Slack on top of the longest compile + run a job may take: a `job` container older than
/// that cannot belong to a running job, so the sweep may remove it.
const JOB_LIFETIME_SLACK: Duration = Duration::from_secs(60);
/// After the grace period, how long the ended jobs' answers may take to go out.
const STOPPED_JOBS_ANSWER: Duration = Duration::from_secs(2);
/// HTTP/2 (when on): a ping this often, and a peer that does not answer within the timeout
/// is gone.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection's orderly close may take before it is simply dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Failed accepts are logged at most this often.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

pub use crate::api::AppState;

/// The router with every route and middleware; tests call this without a socket.
pub fn router(state: AppState, server: &ServerConfig) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let mut routes = Router::new();
    for route in api::routes() {
        // Methods of one path are merged into one method router.
        routes = routes.route(route.path, route.handler);
    }
    routes
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

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("the listener has no address: {0}")]
    Listener(#[from] std::io::Error),
}

/// A running server: its address, and a way to stop it.
pub struct Server {
    pub addr: SocketAddr,
    pub executor: Executor,
    pub sessions: Sessions,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// How long running jobs may go on after shutdown begins.
    grace: Duration,
}

impl Server {
    /// Connects to the engine, starts the background tasks and serves on `listener`.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Server, StartError> {
        // The settings the domain checks itself, before anything starts.
        crate::sandbox::policy::validate(&config.sandbox)?;
        let access = Access::new(&config.rate_limit, &config.auth, &api::route_names())?;
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
        // A running job may own two sandboxes for a moment: its own, and the one that takes
        // over with the run's memory cap under gVisor while the first is being removed.
        let budget = SandboxBudget {
            max: config.limits.max_sandboxes,
            reserved_for_jobs: 2 * config.limits.running_jobs(),
        };
        let sandboxes = Sandboxes::connect(&config.engine, config.sandbox.clone(), budget).await?;
        sandboxes.start_sweep(lifetimes);
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
        executor
            .metrics()
            .watch_sessions(std::sync::Arc::new(sessions.clone()));
        let app = router(
            AppState {
                executor: executor.clone(),
                sessions: sessions.clone(),
                access,
            },
            &config.server,
        );
        let addr = listener.local_addr()?;
        let stop = tokio_util::sync::CancellationToken::new();
        let shutdown = stop.clone();
        let limits = connection_limits(&config, executor.metrics().connections_open());
        let task = tokio::spawn(serve(
            listener,
            app,
            config.server.clone(),
            limits,
            executor.metrics_handle(),
            shutdown,
        ));
        tracing::info!(%addr, "runbox listening");
        Ok(Server {
            addr,
            executor,
            sessions,
            stop,
            task,
            grace: Duration::from_secs(config.server.shutdown_grace_secs),
        })
    }

    /// Stops accepting, lets in-flight requests finish for up to the grace period, ends the
    /// jobs still running (503 shutting_down), closes every room, then removes every sandbox
    /// this process owns (sessions by `sessions.keep_on_shutdown`).
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.stop.cancel();
        let served = match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(served) => served,
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "grace period over: ending the jobs still running");
                self.executor.stop_jobs();
                // Their handlers answer at once now; a response still being written to a
                // stalled client is not waited for past this.
                tokio::time::timeout(STOPPED_JOBS_ANSWER, &mut self.task)
                    .await
                    .unwrap_or(Ok(Ok(())))
            }
        };
        self.sessions.shutdown().await;
        self.executor.shutdown().await;
        served.unwrap_or(Ok(()))
    }

    /// Serves until SIGINT or SIGTERM, then shuts down as [`Server::shutdown`] does.
    pub async fn wait_for_signal(self) -> std::io::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Accepts connections until `stop`, then lets every open request finish. Each connection gets
/// the bounds of `server`: it is refused at once past the per-address or total cap; it is closed
/// when no complete request head arrives within `header_timeout_secs` of the accept (whatever
/// the protocol) or when it holds no open request for `idle_timeout_secs`; a request head has at
/// most `max_headers` fields and `max_header_bytes` bytes. Upgraded connections (WebSockets)
/// are their handlers' to end.
async fn serve(
    listener: TcpListener,
    app: Router,
    server: ServerConfig,
    limits: ConnectionLimits,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::Service;

    // HTTP/1 only (the default) has no protocol detection: hyper-util's auto builder reads
    // the first bytes to choose a protocol even when told HTTP/1 only (0.1.21, upgrades).
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(server.header_timeout_secs))
        .max_headers(server.max_headers)
        .max_buf_size(server.max_header_bytes);
    let mut auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(server.header_timeout_secs))
        .max_headers(server.max_headers)
        .max_buf_size(server.max_header_bytes);
    auto.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
        // A peer that stops answering pings is gone: its streams and the connection end.
        .keep_alive_interval(Some(HTTP2_PING_INTERVAL))
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    let first_request = Duration::from_secs(server.header_timeout_secs);
    let idle = Duration::from_secs(server.idle_timeout_secs);
    let connections = tokio_util::task::TaskTracker::new();
    let mut accept_errors = AcceptErrors::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, mostly: wait instead of spinning.
                    accept_errors.failed(&err);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let permit = match limits.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refused) => {
                // Closed before a byte is read: the cheapest answer to a flood.
                metrics.connection_refused(refused.reason());
                drop(stream);
                continue;
            }
        };
        let permit = std::sync::Arc::new(permit);
        let hold = connections::ConnectionHold(permit.clone());
        // Keystrokes on a terminal are tiny writes: never hold them back.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let activity = std::sync::Arc::new(Activity::default());
        let requests = activity.clone();
        // The peer address identifies the client where no key or trusted header does.
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                let busy = requests.begin();
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request.extensions_mut().insert(hold.clone());
                let answer = app.clone().call(request);
                async move {
                    let answer = answer.await;
                    drop(busy);
                    answer
                }
            });
        let watch = ConnectionWatch {
            activity,
            first_request,
            idle,
            stop: stop.clone(),
            metrics: metrics.clone(),
            permit,
            peer,
        };
        let io = TokioIo::new(stream);
        if server.http2 {
            let connection = auto
                .serve_connection_with_upgrades(io, service)
                .into_owned();
            connections.spawn(watch.drive(connection, |c| c.graceful_shutdown()));
        } else {
            let connection = http1.serve_connection(io, service).with_upgrades();
            connections.spawn(watch.drive(connection, |c| c.graceful_shutdown()));
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// What one connection's task watches besides the connection itself.
struct ConnectionWatch {
    activity: std::sync::Arc<Activity>,
    first_request: Duration,
    idle: Duration,
    stop: tokio_util::sync::CancellationToken,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    permit: std::sync::Arc<connections::ConnectionPermit>,
    peer: SocketAddr,
}

impl ConnectionWatch {
    /// Serves `connection` until it ends, it sits idle past its deadline, or the server stops;
    /// `graceful` asks it to finish its open requests and close.
    async fn drive<C, E>(self, connection: C, graceful: fn(std::pin::Pin<&mut C>))
    where
        C: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let _permit = self.permit;
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            why = self.activity.idle_past(self.first_request, self.idle) => {
                self.metrics.connection_closed_idle(why.reason());
                // No request is open: HTTP/1 closes at once; HTTP/2 sends GOAWAY and waits
                // for the peer's ping answer, which a silent peer never sends.
                graceful(connection.as_mut());
                tokio::time::timeout(IDLE_CLOSE_GRACE, connection)
                    .await
                    .unwrap_or(Ok(()))
            }
            () = self.stop.cancelled() => {
                graceful(connection.as_mut());
                connection.await
            }
        };
        if let Err(err) = ended {
            tracing::debug!(peer = %self.peer, %err, "connection ended with an error");
        }
    }
}

/// Logs failed accepts once per [`ACCEPT_ERROR_LOG_INTERVAL`] with how many there were, not
/// once each (over a thousand lines a second when the descriptors run out).
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn failed(&mut self, err: &std::io::Error) {
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL);
        if due {
            tracing::warn!(%err, failures = self.unlogged, "accepting connections failed");
            self.last_logged = Some(std::time::Instant::now());
            self.unlogged = 0;
        }
    }
}

/// The connection caps, the total lowered to what the open-file limit allows (raised to its
/// hard limit first).
fn connection_limits(
    config: &Config,
    gauge: prometheus_client::metrics::gauge::Gauge,
) -> ConnectionLimits {
    let server = &config.server;
    let max_total = match connections::raise_open_file_limit() {
        Ok(open_files) => {
            let cap = connections::total_cap(
                server.max_connections,
                open_files,
                config.limits.max_sandboxes,
            );
            tracing::info!(
                open_files,
                max_connections = cap,
                max_connections_per_client = server.max_connections_per_client,
                "connection caps"
            );
            if cap < server.max_connections {
                tracing::warn!(
                    configured = server.max_connections,
                    cap,
                    "server.max_connections lowered to fit the open-file limit"
                );
            }
            cap
        }
        Err(err) => {
            tracing::warn!(%err, "the open-file limit could not be read");
            server.max_connections
        }
    };
    ConnectionLimits::new(max_total, server.max_connections_per_client, gauge)
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
