//! The connection loop: accepting within the caps, serving HTTP/1 (and HTTP/2 when on), and
//! closing connections that sit without a request past their deadlines.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use tokio::net::TcpListener;

use crate::config::{Config, ServerConfig};
use crate::connections::{self, Activity, ConnectionLimits};

/// HTTP/2 (when on): a ping this often, and a peer that does not answer within the timeout
/// is gone.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection's orderly close may take before it is simply dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Failed accepts are logged at most this often.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Accepts connections until `stop`, then lets every open request finish. Each connection gets
/// the bounds of `server`: it is refused at once past the per-address or total cap; it is closed
/// when no complete request head arrives within `header_timeout_secs` of the accept (whatever
/// the protocol) or when it holds no open request for `idle_timeout_secs`; a request head has at
/// most `max_headers` fields and `max_header_bytes` bytes. Upgraded connections (WebSockets)
/// are their handlers' to end.
pub(super) async fn serve(
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
pub(super) fn connection_limits(
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
