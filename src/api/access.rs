//! The edge middleware: every request is tied to a client (its API key, or its address) before
//! routing, and counted against its route's rate limit after. The decisions are
//! [`crate::access`]'s; this only carries them in and out of HTTP.

use std::net::{Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::AppState;
use crate::access::{ClientId, Quota, Refusal};

/// Marks a request another node forwarded: it is not counted again, and it is served here
/// (never forwarded a second time).
#[derive(Debug, Clone, Copy)]
pub struct Forwarded;

/// Identifies the client; refuses a request without a valid key where one is needed.
pub async fn identify_client(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    // Served without a socket (the router called directly) there is no peer.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.0);
    if let Some(client) = state.access.forwarded_client(request.headers()) {
        // Identified and counted by the node it came through.
        tracing::Span::current().record("client", tracing::field::display(&client));
        request.extensions_mut().insert(client);
        request.extensions_mut().insert(Forwarded);
        return next.run(request).await;
    }
    match state
        .access
        .identify(request.uri().path(), peer, request.headers())
    {
        Ok(client) => {
            tracing::Span::current().record("client", tracing::field::display(&client));
            request.extensions_mut().insert(client);
            next.run(request).await
        }
        Err(refusal) => refuse(&state, refusal),
    }
}

/// Counts the request against the rule of its route (routed, so `{id}` is the pattern).
pub async fn rate_limit(
    State(state): State<AppState>,
    matched: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let route = super::rule_name(request.method().as_str(), matched.as_str());
    tracing::Span::current().record("route", &route);
    let Some(client) = request.extensions().get::<ClientId>() else {
        return next.run(request).await;
    };
    if request.extensions().get::<Forwarded>().is_some() {
        return next.run(request).await;
    }
    match state.access.admit(&route, client).await {
        Ok(None) => next.run(request).await,
        Ok(Some(quota)) => {
            let mut response = next.run(request).await;
            quota_headers(&mut response, quota);
            response
        }
        Err(refusal) => {
            let quota = match &refusal {
                Refusal::RateLimited { limited, .. } => Some(limited.quota),
                Refusal::Unauthorized => None,
            };
            let mut response = refuse(&state, refusal);
            if let Some(quota) = quota {
                quota_headers(&mut response, quota);
            }
            response
        }
    }
}

/// The `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers (IETF draft,
/// `draft-ietf-httpapi-ratelimit-headers`): the quota, what is left of it, and the seconds
/// (rounded up) until all of it is back.
fn quota_headers(response: &mut Response, quota: Quota) {
    let reset = quota.reset.as_secs() + u64::from(quota.reset.subsec_nanos() > 0);
    let headers = response.headers_mut();
    for (name, value) in [
        (RATELIMIT_LIMIT, u64::from(quota.limit)),
        (RATELIMIT_REMAINING, u64::from(quota.remaining)),
        (RATELIMIT_RESET, reset),
    ] {
        headers.insert(
            axum::http::HeaderName::from_static(name),
            axum::http::HeaderValue::from(value),
        );
    }
}

pub const RATELIMIT_LIMIT: &str = "ratelimit-limit";
pub const RATELIMIT_REMAINING: &str = "ratelimit-remaining";
pub const RATELIMIT_RESET: &str = "ratelimit-reset";

fn refuse(state: &AppState, refusal: Refusal) -> Response {
    let reason = match &refusal {
        Refusal::Unauthorized => "unauthorized",
        Refusal::RateLimited { rule, .. } => rule.as_str(),
    };
    state.metrics.rejected(reason);
    ApiError::from(refusal).into_response()
}
