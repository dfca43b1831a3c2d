//! The internal hop: a request for a session that another live node hosts is sent on to that
//! node (its HTTP request, or its WebSocket frame by frame), authenticated by the nodes'
//! shared secret and carrying the client's identity. Where a session is served is the
//! session layer's answer ([`Sessions::locate`](crate::sessions::Sessions::locate)); this only
//! carries the request there and the answer back. The hop's headers are never a client's:
//! a request that brings them without the secret is judged as any client's.

use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame as AxumClose, Message as AxumMessage, WebSocket};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as HopMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as HopClose;

use super::access::Forwarded;
use super::json::BodyLimit;
use super::{ApiError, AppState};
use crate::access::ClientId;
use crate::connections::ConnectionHold;
use crate::sessions::Location;
use crate::shared::{HOP_CLIENT_HEADER, HOP_TOKEN_HEADER, Shared};

/// Reaching a live node on the nodes' own network takes well under this; past it the node is
/// taken for gone (the client is told to retry, and its lease lapses soon).
const HOP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a request for a session whose host cannot be reached asks again where it is.
const UNREACHED_RETRY: Duration = Duration::from_millis(100);
/// The body bound when the request carries none (the router always sets one).
const DEFAULT_HOP_BODY_LIMIT: usize = 1 << 20;

/// One pooled HTTP/1.1 client for every hop: kept-alive connections with `TCP_NODELAY`
/// (measured for the engine's TLS: Nagle plus a connection per call cost +44 ms a call).
static HOP_CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .connect_timeout(HOP_CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
});

/// Headers a hop does not carry: the connection's own, and any hop header a client sent.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | "content-length"
            | "sec-websocket-key"
            | "sec-websocket-version"
            | "sec-websocket-extensions"
            | "sec-websocket-accept"
    ) || name.as_str() == HOP_TOKEN_HEADER
        || name.as_str() == HOP_CLIENT_HEADER
}

/// Serves a request for a session here, or sends it on to the node that hosts it (routed, so
/// the path's pattern says whether it is a session's).
pub async fn to_host(
    State(state): State<AppState>,
    matched: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let Some(shared) = state.shared.clone() else {
        return next.run(request).await;
    };
    if !matched.as_str().starts_with("/sessions/{id}") {
        return next.run(request).await;
    }
    let Some(id) = request
        .uri()
        .path()
        .strip_prefix("/sessions/")
        .and_then(|rest| rest.split('/').next())
        .map(str::to_owned)
    else {
        return next.run(request).await;
    };
    let forwarded = request.extensions().get::<Forwarded>().is_some();
    let url = match state.sessions.locate(&id, forwarded).await {
        Ok(Location::Here) => return next.run(request).await,
        Ok(Location::At(url)) => url,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let client = request.extensions().get::<ClientId>().cloned();
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if is_upgrade {
        return hop_socket(&state, &shared, &url, client, request)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    // The body is kept until the host has it: a host that cannot be reached (stopping, or
    // killed) has not seen the request, which then goes to the session's next host.
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(DEFAULT_HOP_BODY_LIMIT, |limit| limit.0);
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => return ApiError::PayloadTooLarge { limit }.into_response(),
    };
    let deadline = tokio::time::Instant::now() + shared.lease_ttl() + HOP_CONNECT_TIMEOUT;
    let mut url = url;
    loop {
        match hop_request(&shared, &url, client.as_ref(), &parts, body.clone()).await {
            Ok(response) => return response,
            Err(Unreached) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(UNREACHED_RETRY).await;
            }
            Err(Unreached) => return ApiError::SessionMoving.into_response(),
        }
        // Its lease lapses (killed) or is handed over (stopped) soon: then it is here, or
        // with whichever node took it.
        match state.sessions.locate(&id, false).await {
            Ok(Location::Here) => {
                return next.run(Request::from_parts(parts, Body::from(body))).await;
            }
            Ok(Location::At(next_url)) => url = next_url,
            Err(err) => return ApiError::from(err).into_response(),
        }
    }
}

/// The host could not be reached, so it never saw the request.
struct Unreached;

fn hop_headers(shared: &Shared, client: Option<&ClientId>, from: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in from {
        if !is_hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(token) = HeaderValue::from_str(shared.hop_token()) {
        headers.insert(HOP_TOKEN_HEADER, token);
    }
    if let Some(client) = client
        && let Ok(value) = HeaderValue::from_str(&client.to_string())
    {
        headers.insert(HOP_CLIENT_HEADER, value);
    }
    headers
}

fn path_and_query(request: &Request) -> String {
    request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    )
}

/// A plain request: its body as it came (bounded by the body limit before it got here), the
/// answer streamed back as the host sends it (an NDJSON run's events arrive as they happen).
async fn hop_request(
    shared: &Shared,
    url: &str,
    client: Option<&ClientId>,
    parts: &axum::http::request::Parts,
    body: bytes::Bytes,
) -> Result<Response, Unreached> {
    let target = format!(
        "{url}{}",
        parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |pq| pq.as_str())
    );
    let headers = hop_headers(shared, client, &parts.headers);
    let sent = HOP_CLIENT
        .request(parts.method.clone(), &target)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(upstream) => upstream,
        Err(err) if err.is_connect() => {
            tracing::debug!(error = %err, "the node hosting a session cannot be reached");
            return Err(Unreached);
        }
        Err(err) => {
            // It had the request (it may have run it): not sent again.
            tracing::warn!(error = %err, "the node hosting a session broke off its answer");
            return Ok(ApiError::SessionMoving.into_response());
        }
    };
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if !is_hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    Ok(response
        .body(Body::from_stream(upstream.bytes_stream()))
        .unwrap_or_else(|err| ApiError::Internal(Box::new(err)).into_response()))
}

/// A WebSocket: the host's socket is opened first (its refusal, e.g. `session_not_found`,
/// reaches the client as the host gave it), then the client's is accepted and every frame
/// is carried across until either side closes.
async fn hop_socket(
    state: &AppState,
    shared: &Shared,
    url: &str,
    client: Option<ClientId>,
    request: Request,
) -> Result<Response, ApiError> {
    let ws_url = format!(
        "ws{}{}",
        url.strip_prefix("http").unwrap_or(url),
        path_and_query(&request)
    );
    let (mut parts, _body) = request.into_parts();
    let hold = parts.extensions.get::<ConnectionHold>().cloned();
    let upgrade = axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, state)
        .await
        .map_err(ApiError::from)?;
    let mut hop = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        ws_url.as_str(),
    )
    .map_err(|err| ApiError::Internal(Box::new(err)))?;
    for (name, value) in hop_headers(shared, client.as_ref(), &parts.headers) {
        if let Some(name) = name {
            hop.headers_mut().insert(name, value);
        }
    }
    let connected =
        tokio::time::timeout(HOP_CONNECT_TIMEOUT, tokio_tungstenite::connect_async(hop)).await;
    let upstream = match connected {
        Ok(Ok((upstream, _))) => upstream,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(refused))) => {
            // The host's own answer (404, 503, …), as it gave it.
            let (parts, body) = refused.into_parts();
            return Ok(Response::from_parts(
                parts,
                Body::from(body.unwrap_or_default()),
            ));
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "the node hosting a session refused its terminal");
            return Err(ApiError::SessionMoving);
        }
        Err(_) => return Err(ApiError::SessionMoving),
    };
    Ok(upgrade.on_upgrade(move |socket| async move {
        let _hold = hold;
        carry(socket, upstream).await;
    }))
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Frames both ways until one side closes (its close frame goes across) or breaks.
async fn carry(client: WebSocket, upstream: Upstream) {
    let (mut to_client, mut from_client) = client.split();
    let (mut to_host, mut from_host) = upstream.split();
    let up = async {
        while let Some(Ok(message)) = from_client.next().await {
            let closing = matches!(message, AxumMessage::Close(_));
            if to_host.send(to_hop(message)).await.is_err() || closing {
                break;
            }
        }
        let _ = to_host.close().await;
    };
    let down = async {
        while let Some(Ok(message)) = from_host.next().await {
            let Some(message) = from_hop(message) else {
                continue;
            };
            let closing = matches!(message, AxumMessage::Close(_));
            if to_client.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = to_client.close().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

fn to_hop(message: AxumMessage) -> HopMessage {
    match message {
        AxumMessage::Text(text) => HopMessage::Text(text.as_str().into()),
        AxumMessage::Binary(bytes) => HopMessage::Binary(bytes),
        AxumMessage::Ping(bytes) => HopMessage::Ping(bytes),
        AxumMessage::Pong(bytes) => HopMessage::Pong(bytes),
        AxumMessage::Close(frame) => HopMessage::Close(frame.map(|f| HopClose {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
    }
}

fn from_hop(message: HopMessage) -> Option<AxumMessage> {
    Some(match message {
        HopMessage::Text(text) => AxumMessage::Text(text.as_str().into()),
        HopMessage::Binary(bytes) => AxumMessage::Binary(bytes),
        HopMessage::Ping(bytes) => AxumMessage::Ping(bytes),
        HopMessage::Pong(bytes) => AxumMessage::Pong(bytes),
        HopMessage::Close(frame) => AxumMessage::Close(frame.map(|f| AxumClose {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        HopMessage::Frame(_) => return None,
    })
}
