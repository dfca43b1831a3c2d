//! Who may call runbox, and how often: API keys, the client's identity and per-client rate
//! limits. Decided here; `api` only carries the answer to the client.

pub mod client;
pub mod keys;
pub mod rate;
pub mod shared_rate;

use std::sync::Arc;

use axum::http::HeaderMap;

use crate::shared::Shared;
pub use client::ClientId;
pub use keys::{ApiKeys, KeyCheck};
pub use rate::{Limiter, Quota, RateLimited, RateLimiter};
use shared_rate::SharedRateLimiter;

use crate::config::{ApiKeyConfig, AuthConfig, ConfigError, RateLimitConfig};

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
    limiter: Arc<dyn Limiter>,
    /// With several nodes: what tells a request another node forwarded.
    shared: Option<Shared>,
    client_ip_header: Arc<str>,
}

impl Access {
    /// The edge's policy, once its settings check out against `routes` (see [`validate`]).
    pub fn new(
        rate_limit: &RateLimitConfig,
        auth: &AuthConfig,
        routes: &[String],
        shared: Option<&Shared>,
    ) -> Result<Access, ConfigError> {
        validate(rate_limit, auth, routes)?;
        let limiter: Arc<dyn Limiter> = match shared {
            Some(shared) => Arc::new(SharedRateLimiter::new(
                rate_limit,
                &auth.keys,
                shared.clone(),
            )),
            None => Arc::new(RateLimiter::new(rate_limit, &auth.keys)),
        };
        let metrics_token = (!auth.metrics_token_sha256.is_empty()).then(|| {
            Arc::new(ApiKeys::new(&[ApiKeyConfig {
                name: METRICS_CLIENT.to_owned(),
                sha256: auth.metrics_token_sha256.clone(),
                limits: Default::default(),
            }]))
        });
        Ok(Access {
            keys: Arc::new(ApiKeys::new(&auth.keys)),
            metrics_token,
            limiter,
            shared: shared.cloned(),
            client_ip_header: rate_limit.client_ip_header.to_ascii_lowercase().into(),
        })
    }

    /// The client of a request another node forwarded (it carries the nodes' secret): that
    /// node checked its key and counted it against its rate limit already. `None` for any
    /// other request (a wrong secret included: it is then judged as a client's).
    pub fn forwarded_client(&self, headers: &HeaderMap) -> Option<ClientId> {
        let shared = self.shared.as_ref()?;
        let token = headers.get(crate::shared::HOP_TOKEN_HEADER)?;
        if !shared.is_hop_token(token.as_bytes()) {
            return None;
        }
        let client = headers
            .get(crate::shared::HOP_CLIENT_HEADER)?
            .to_str()
            .ok()?;
        Some(match client.strip_prefix("key:") {
            Some(name) => ClientId::Key(name.to_owned()),
            None => ClientId::Address(client.parse().ok()?),
        })
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
            KeyCheck::Invalid if is_open(path) => Ok(by_address()),
            KeyCheck::Invalid => Err(Refusal::Unauthorized),
        }
    }

    /// Counts a request of `client` on `route` (`METHOD /path` as routed): its quota after
    /// it, when a rule limits the route.
    pub async fn admit(&self, route: &str, client: &ClientId) -> Result<Option<Quota>, Refusal> {
        self.limiter
            .check(route, client)
            .await
            .map_err(|(rule, limited)| Refusal::RateLimited {
                rule: rule.to_owned(),
                limited,
            })
    }
}

/// Routes that need no API key: the liveness probe, which orchestrators call without
/// credentials, and the playground's page and files (public; the page asks for a key).
pub fn is_open(path: &str) -> bool {
    path == "/healthz" || path == "/" || path.starts_with("/assets/")
}

/// Checks the edge's settings against what runbox serves: every rule names routes of `routes`
/// (`METHOD /path`, from the router's one table), each route in one rule at most, digests are
/// SHA-256 in hex, key names are unique and their own quotas name rules.
pub fn validate(
    rate_limit: &RateLimitConfig,
    auth: &AuthConfig,
    routes: &[String],
) -> Result<(), ConfigError> {
    let key = |key: String, reason: String| Err(ConfigError::Key { key, reason });
    let header = &rate_limit.client_ip_header;
    if !header.is_empty() && http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return key(
            "rate_limit.client_ip_header".into(),
            "is not a header name".into(),
        );
    }
    let mut seen = std::collections::BTreeMap::new();
    for (name, rule) in &rate_limit.rules {
        if rule.requests == 0 || rule.window_secs == 0 {
            return key(
                format!("rate_limit.rules.{name}"),
                "requests and window_secs must be at least 1".into(),
            );
        }
        for route in &rule.routes {
            if !routes.contains(route) {
                return key(
                    format!("rate_limit.rules.{name}.routes"),
                    format!("`{route}` is not a route; routes are {routes:?}"),
                );
            }
            if let Some(other) = seen.insert(route.clone(), name.clone()) {
                return key(
                    format!("rate_limit.rules.{name}.routes"),
                    format!("`{route}` is already limited by rule `{other}`"),
                );
            }
        }
    }
    if !auth.metrics_token_sha256.is_empty()
        && keys::parse_digest(&auth.metrics_token_sha256).is_none()
    {
        return key(
            "auth.metrics_token_sha256".into(),
            "must be the token's SHA-256 as 64 hex digits".into(),
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for (index, api_key) in auth.keys.iter().enumerate() {
        let at = format!("auth.keys[{index}]");
        if api_key.name.is_empty() || !names.insert(api_key.name.clone()) {
            return key(format!("{at}.name"), "must be non-empty and unique".into());
        }
        if keys::parse_digest(&api_key.sha256).is_none() {
            return key(
                format!("{at}.sha256"),
                "must be the key's SHA-256 as 64 hex digits".into(),
            );
        }
        for (rule, requests) in &api_key.limits {
            if !rate_limit.rules.contains_key(rule) || *requests == 0 {
                return key(
                    format!("{at}.limits.{rule}"),
                    "must name a rate_limit rule and allow at least 1 request".into(),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateRule;

    fn settings(routes: &[&str], digest: &str) -> (RateLimitConfig, AuthConfig) {
        let rule = RateRule {
            routes: routes.iter().map(|r| r.to_string()).collect(),
            requests: 2,
            window_secs: 60,
        };
        let rate_limit = RateLimitConfig {
            enabled: true,
            client_ip_header: String::new(),
            rules: [("runs".to_owned(), rule)].into_iter().collect(),
        };
        let auth = AuthConfig {
            keys: vec![ApiKeyConfig {
                name: "ci".to_owned(),
                sha256: digest.to_owned(),
                limits: Default::default(),
            }],
            metrics_token_sha256: String::new(),
        };
        (rate_limit, auth)
    }

    fn refused_key(routes: &[&str], digest: &str) -> String {
        let served = ["POST /run".to_owned(), "GET /healthz".to_owned()];
        let (rate_limit, auth) = settings(routes, digest);
        match Access::new(&rate_limit, &auth, &served, None) {
            Err(ConfigError::Key { key, .. }) => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_edge_settings_are_checked_against_the_served_routes() {
        let digest = "ab".repeat(32);
        let served = ["POST /run".to_owned()];
        let (rate_limit, auth) = settings(&["POST /run"], &digest);
        assert!(Access::new(&rate_limit, &auth, &served, None).is_ok());
        assert_eq!(
            refused_key(&["POST /nowhere"], &digest),
            "rate_limit.rules.runs.routes"
        );
        assert_eq!(
            refused_key(&["POST /run", "POST /run"], &digest),
            "rate_limit.rules.runs.routes"
        );
        assert_eq!(
            refused_key(&["POST /run"], "not-hex"),
            "auth.keys[0].sha256"
        );
    }
}
