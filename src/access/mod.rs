//! Who may call runbox, and how often: API keys, the client's identity and per-client rate
//! limits. Decided here; `api` only carries the answer to the client.

pub mod client;
pub mod keys;
pub mod rate;

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderMap;

pub use client::ClientId;
pub use keys::{ApiKeys, KeyCheck};
pub use rate::{RateLimited, RateLimiter};

use crate::config::{ApiKeyConfig, AuthConfig, RateLimitConfig};

/// The route a metrics token opens, and the client name it stands for.
const METRICS_PATH: &str = "/metrics";
const METRICS_CLIENT: &str = "metrics";

/// Why a request is refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// API keys are configured and the request has no valid one.
    Unauthorized,
    /// Over the quota of the rule named.
    RateLimited { rule: String, limited: RateLimited },
}

/// The edge's policy: keys, client identity, rate limits. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Access {
    keys: Arc<ApiKeys>,
    /// The metrics scraper's token, when one is configured.
    metrics_token: Option<Arc<ApiKeys>>,
    limiter: Arc<RateLimiter>,
    client_ip_header: Arc<str>,
}

impl Access {
    pub fn new(rate_limit: &RateLimitConfig, auth: &AuthConfig) -> Access {
        let metrics_token = (!auth.metrics_token_sha256.is_empty()).then(|| {
            Arc::new(ApiKeys::new(&[ApiKeyConfig {
                name: METRICS_CLIENT.to_owned(),
                sha256: auth.metrics_token_sha256.clone(),
                limits: Default::default(),
            }]))
        });
        Access {
            keys: Arc::new(ApiKeys::new(&auth.keys)),
            metrics_token,
            limiter: Arc::new(RateLimiter::new(rate_limit, &auth.keys)),
            client_ip_header: rate_limit.client_ip_header.to_ascii_lowercase().into(),
        }
    }

    /// Who sent a request to `path`: its key's name, or its address when no key is needed
    /// (or on an open route).
    pub fn identify(
        &self,
        path: &str,
        peer: std::net::SocketAddr,
        headers: &HeaderMap,
    ) -> Result<ClientId, Refusal> {
        let by_address =
            || client::address_identity(client::address(peer, headers, &self.client_ip_header));
        if path == METRICS_PATH
            && let Some(token) = &self.metrics_token
        {
            return match (token.check(headers), self.keys.check(headers)) {
                (KeyCheck::Valid(name), _) | (_, KeyCheck::Valid(name)) => Ok(ClientId::Key(name)),
                _ => Err(Refusal::Unauthorized),
            };
        }
        match self.keys.check(headers) {
            KeyCheck::Valid(name) => Ok(ClientId::Key(name)),
            KeyCheck::NotRequired => Ok(by_address()),
            KeyCheck::Invalid if OPEN_ROUTES.contains(&path) => Ok(by_address()),
            KeyCheck::Invalid => Err(Refusal::Unauthorized),
        }
    }

    /// Counts a request of `client` on `route` (`METHOD /path` as routed).
    pub fn admit(&self, route: &str, client: &ClientId) -> Result<(), Refusal> {
        self.limiter
            .check(route, client, Instant::now())
            .map_err(|(rule, limited)| Refusal::RateLimited {
                rule: rule.to_owned(),
                limited,
            })
    }
}

/// Routes that need no API key: the liveness probe, which orchestrators call without
/// credentials.
pub const OPEN_ROUTES: [&str; 1] = ["/healthz"];

/// Every route of the router as `METHOD /path` (the path as routed, with `{id}`): the names
/// rate-limit rules refer to.
pub const ROUTES: [&str; 12] = [
    "POST /run",
    "GET /run/ws",
    "POST /sessions",
    "GET /sessions/{id}",
    "DELETE /sessions/{id}",
    "POST /sessions/{id}/run",
    "GET /sessions/{id}/terminal",
    "GET /languages",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
];
