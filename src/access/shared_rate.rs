//! Rate limits shared by every node (`cluster.redis`): the same GCRA buckets as
//! [`RateLimiter`], one Redis key per (rule, client), checked and updated by one script in one
//! round trip on Redis's clock (the nodes' clocks never enter). While Redis is unavailable
//! each node falls back to its own buckets with the rule's quota divided by the nodes it last
//! saw alive: a client spread over every node then gets about its quota, not N times it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::ClientId;
use super::rate::{Limiter, Quota, RateLimited, RateLimiter};
use crate::config::{ApiKeyConfig, RateLimitConfig};
use crate::shared::Shared;

#[derive(Debug)]
pub struct SharedRateLimiter {
    shared: Shared,
    /// The rules (and every key's own quota) as configured: what the script is asked with.
    rules: RateLimiter,
    config: RateLimitConfig,
    keys: Vec<ApiKeyConfig>,
    /// This node's share while Redis is down: (nodes it was divided by, the buckets).
    fallback: Mutex<Option<(usize, Arc<RateLimiter>)>>,
}

impl SharedRateLimiter {
    pub fn new(config: &RateLimitConfig, keys: &[ApiKeyConfig], shared: Shared) -> Self {
        SharedRateLimiter {
            shared,
            rules: RateLimiter::new(config, keys),
            config: config.clone(),
            keys: keys.to_vec(),
            fallback: Mutex::new(None),
        }
    }

    /// This node's own buckets with each quota divided by the nodes last seen alive (built
    /// when Redis first fails, again when that count changes).
    fn fallback(&self) -> Arc<RateLimiter> {
        let nodes = self.shared.nodes_seen();
        let mut slot = self
            .fallback
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((divided_by, limiter)) = slot.as_ref()
            && *divided_by == nodes
        {
            return limiter.clone();
        }
        let limiter = Arc::new(per_node_share(&self.config, &self.keys, nodes));
        *slot = Some((nodes, limiter.clone()));
        limiter
    }

    async fn check_shared(
        &self,
        rule: &str,
        requests: u32,
        window: Duration,
        client: &ClientId,
    ) -> Result<Result<Quota, RateLimited>, crate::shared::SharedError> {
        let interval_us = (window.as_micros() / u128::from(requests.max(1))).max(1) as u64;
        let key = self.shared.key(&format!("rate:{rule}:{client}"));
        let script = &*GCRA;
        let (allowed, remaining, wait_us): (u8, u32, u64) = self
            .shared
            .call(|mut redis| async move {
                script
                    .key(&key)
                    .arg(interval_us)
                    .arg(requests)
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        let interval = Duration::from_micros(interval_us);
        let wait = Duration::from_micros(wait_us);
        Ok(if allowed == 1 {
            Ok(Quota {
                limit: requests,
                remaining: remaining.min(requests),
                reset: wait,
            })
        } else {
            Err(RateLimited {
                retry_after: wait,
                quota: Quota {
                    limit: requests,
                    remaining: 0,
                    reset: wait + interval * (requests.saturating_sub(1)),
                },
            })
        })
    }
}

impl Limiter for SharedRateLimiter {
    fn check<'a>(
        &'a self,
        route: &'a str,
        client: &'a ClientId,
    ) -> BoxFuture<'a, Result<Option<Quota>, (&'a str, RateLimited)>> {
        Box::pin(async move {
            let Some((rule, requests, window)) = self.rules.rule_for(route, client) else {
                return Ok(None);
            };
            match self.check_shared(rule, requests, window, client).await {
                Ok(Ok(quota)) => Ok(Some(quota)),
                Ok(Err(limited)) => Err((rule, limited)),
                Err(err) => {
                    tracing::debug!(error = %err, "rate limit from this node's share");
                    self.fallback()
                        .check_now(route, client)
                        .map_err(|(_, limited)| (rule, limited))
                }
            }
        })
    }
}

/// The rules with every quota divided by `nodes` (rounded up: a client never gets less than
/// one request per window from a node).
fn per_node_share(config: &RateLimitConfig, keys: &[ApiKeyConfig], nodes: usize) -> RateLimiter {
    let nodes = u32::try_from(nodes.max(1)).unwrap_or(u32::MAX);
    let mut config = config.clone();
    for rule in config.rules.values_mut() {
        rule.requests = rule.requests.div_ceil(nodes);
    }
    let keys: Vec<ApiKeyConfig> = keys
        .iter()
        .cloned()
        .map(|mut key| {
            for requests in key.limits.values_mut() {
                *requests = requests.div_ceil(nodes);
            }
            key
        })
        .collect();
    RateLimiter::new(&config, &keys)
}

/// GCRA on Redis's clock. KEYS[1]: the bucket (its theoretical arrival time, µs); ARGV[1]:
/// the interval between requests (window / requests, µs); ARGV[2]: the burst (requests).
/// Returns {allowed, remaining, µs until full (allowed) or until the next is allowed}.
static GCRA: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > interval * burst then
  return {0, 0, ahead - interval * burst}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ahead / 1000))
return {1, math.floor((interval * burst - ahead) / interval), ahead}
",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_alone_gets_its_share_of_each_quota_rounded_up() {
        let config = super::super::rate::runs_rule(&["POST /run"], 100, 900);
        let client = ClientId::Address("10.0.0.1".parse().unwrap());
        let share = per_node_share(&config, &[], 3);
        assert_eq!(share.rule_for("POST /run", &client).unwrap().1, 34);
        let allowed = (0..100)
            .filter(|_| share.check_now("POST /run", &client).is_ok())
            .count();
        assert_eq!(allowed, 34);
        assert_eq!(
            per_node_share(&config, &[], 0)
                .rule_for("POST /run", &client)
                .unwrap()
                .1,
            100
        );
    }
}
