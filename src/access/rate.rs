//! Per-client rate limits, one rule per group of routes (`runs`: 100 per 15 minutes by
//! default). Each (rule, client) pair is a GCRA bucket: a rule of N requests per window lets a
//! client spend N at once, and gives one back every window/N. The state is one instant per
//! pair, and pairs whose bucket is full again are dropped, so memory follows the clients of the
//! last window, not every client ever seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ClientId;
use crate::config::{ApiKeyConfig, RateLimitConfig};

/// Refused: the client may try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after: Duration,
    /// The quota as it stands after the refusal (none left).
    pub quota: Quota,
}

/// A client's quota on a rule after a request, as the `RateLimit-*` headers (IETF draft)
/// announce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per window.
    pub limit: u32,
    /// Requests the client may still make at once.
    pub remaining: u32,
    /// Until the whole quota is back.
    pub reset: Duration,
}

#[derive(Debug)]
struct Rule {
    name: String,
    /// Requests per window, by default and for the API keys that have their own.
    requests: u32,
    per_key: HashMap<String, u32>,
    window: Duration,
}

/// The rules and every client's buckets.
#[derive(Debug)]
pub struct RateLimiter {
    rules: Vec<Rule>,
    /// `METHOD /path` -> index into `rules`.
    route_rule: HashMap<String, usize>,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    /// (rule index, client) -> the theoretical arrival time of the next request (GCRA).
    next_free: HashMap<(usize, ClientId), Instant>,
    /// Size at which full buckets are next dropped.
    prune_at: usize,
}

/// Below this many tracked pairs, none is dropped.
const PRUNE_FLOOR: usize = 1024;

impl RateLimiter {
    /// `config` is validated (every route known and in at most one rule, quotas positive);
    /// `keys` may carry their own quota per rule.
    pub fn new(config: &RateLimitConfig, keys: &[ApiKeyConfig]) -> RateLimiter {
        let mut rules = Vec::new();
        let mut route_rule = HashMap::new();
        if config.enabled {
            for (name, rule) in &config.rules {
                for route in &rule.routes {
                    route_rule.insert(route.clone(), rules.len());
                }
                rules.push(Rule {
                    name: name.clone(),
                    requests: rule.requests,
                    per_key: keys
                        .iter()
                        .filter_map(|key| Some((key.name.clone(), *key.limits.get(name)?)))
                        .collect(),
                    window: Duration::from_secs(rule.window_secs),
                });
            }
        }
        RateLimiter {
            rules,
            route_rule,
            buckets: Mutex::new(Buckets {
                next_free: HashMap::new(),
                prune_at: PRUNE_FLOOR,
            }),
        }
    }

    /// Counts a request of `client` on `route` (`METHOD /path`): the client's quota after it
    /// (`None` for a route no rule limits), or the name of the rule that refused it and when
    /// to retry.
    pub fn check(
        &self,
        route: &str,
        client: &ClientId,
        now: Instant,
    ) -> Result<Option<Quota>, (&str, RateLimited)> {
        let Some(&index) = self.route_rule.get(route) else {
            return Ok(None);
        };
        let rule = &self.rules[index];
        let requests = match client {
            ClientId::Key(name) => rule.per_key.get(name).copied().unwrap_or(rule.requests),
            ClientId::Address(_) => rule.requests,
        };
        let interval = rule.window / requests.max(1);
        // A full bucket: the next free slot may lie this far ahead of now.
        let tolerance = rule.window - interval;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let key = (index, client.clone());
        let next_free = buckets.next_free.get(&key).copied().unwrap_or(now).max(now);
        let ahead = next_free - now;
        if ahead > tolerance {
            return Err((
                &rule.name,
                RateLimited {
                    retry_after: ahead - tolerance,
                    quota: Quota {
                        limit: requests,
                        remaining: 0,
                        reset: ahead,
                    },
                },
            ));
        }
        let taken_until = next_free + interval;
        buckets.next_free.insert(key, taken_until);
        if buckets.next_free.len() >= buckets.prune_at {
            buckets.next_free.retain(|_, next| *next > now);
            buckets.prune_at = (2 * buckets.next_free.len()).max(PRUNE_FLOOR);
        }
        // Each request taken holds one interval of the bucket until `taken_until`.
        let held = (taken_until - now)
            .as_nanos()
            .div_ceil(interval.as_nanos().max(1));
        Ok(Some(Quota {
            limit: requests,
            remaining: requests.saturating_sub(u32::try_from(held).unwrap_or(u32::MAX)),
            reset: taken_until - now,
        }))
    }

    /// How many (rule, client) buckets are tracked.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_free
            .len()
    }
}

#[cfg(test)]
mod quota_tests {
    use super::tests_support::limiter_of;
    use super::*;

    #[test]
    fn the_quota_counts_down_and_comes_back() {
        let limiter = limiter_of(3, 30);
        let client = ClientId::Address("10.0.0.1".parse().unwrap());
        let start = Instant::now();
        let quota = |at| limiter.check("POST /run", &client, at).unwrap().unwrap();
        assert_eq!(
            quota(start),
            Quota {
                limit: 3,
                remaining: 2,
                reset: Duration::from_secs(10)
            }
        );
        assert_eq!(quota(start).remaining, 1);
        assert_eq!(quota(start).remaining, 0);
        let (_, refused) = limiter.check("POST /run", &client, start).unwrap_err();
        assert_eq!(refused.quota.remaining, 0);
        assert_eq!(refused.quota.reset, Duration::from_secs(30));
        // One comes back every 10 s.
        assert_eq!(quota(start + Duration::from_secs(10)).remaining, 0);
        assert_eq!(quota(start + Duration::from_secs(60)).remaining, 2);
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::config::RateRule;

    pub fn limiter_of(requests: u32, window_secs: u64) -> RateLimiter {
        let rule = RateRule {
            routes: vec!["POST /run".to_owned()],
            requests,
            window_secs,
        };
        let config = RateLimitConfig {
            enabled: true,
            client_ip_header: String::new(),
            rules: [("runs".to_owned(), rule)].into_iter().collect(),
        };
        RateLimiter::new(&config, &[])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::RateRule;

    fn limiter(requests: u32, window_secs: u64) -> RateLimiter {
        let config = RateLimitConfig {
            enabled: true,
            client_ip_header: String::new(),
            rules: BTreeMap::from([(
                "runs".to_owned(),
                RateRule {
                    routes: vec!["POST /run".into(), "GET /run/ws".into()],
                    requests,
                    window_secs,
                },
            )]),
        };
        let ci = ApiKeyConfig {
            name: "ci".into(),
            sha256: "00".repeat(32),
            limits: BTreeMap::from([("runs".to_owned(), 1000)]),
        };
        RateLimiter::new(&config, &[ci])
    }

    fn ip(last: u8) -> ClientId {
        ClientId::Address(std::net::IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_burst_of_the_quota_then_refusal_until_one_comes_back() {
        let limiter = limiter(100, 900);
        let start = Instant::now();
        for _ in 0..100 {
            limiter.check("POST /run", &ip(1), start).unwrap();
        }
        let (rule, refused) = limiter.check("POST /run", &ip(1), start).unwrap_err();
        assert_eq!(rule, "runs");
        // One request comes back every 900/100 = 9 s.
        assert_eq!(refused.retry_after, Duration::from_secs(9));
        // Routes of one rule share its bucket; other clients have their own.
        assert!(limiter.check("GET /run/ws", &ip(1), start).is_err());
        assert!(limiter.check("POST /run", &ip(2), start).is_ok());
        // Routes without a rule are not limited.
        assert!(limiter.check("GET /languages", &ip(1), start).is_ok());
        // After 9 s exactly one more.
        let later = start + Duration::from_secs(9);
        assert!(limiter.check("POST /run", &ip(1), later).is_ok());
        assert!(limiter.check("POST /run", &ip(1), later).is_err());
    }

    #[test]
    fn a_key_with_its_own_quota_gets_it() {
        let limiter = limiter(2, 60);
        let start = Instant::now();
        let ci = ClientId::Key("ci".into());
        for _ in 0..1000 {
            limiter.check("POST /run", &ci, start).unwrap();
        }
        assert!(limiter.check("POST /run", &ci, start).is_err());
        let other = ClientId::Key("other".into());
        for _ in 0..2 {
            limiter.check("POST /run", &other, start).unwrap();
        }
        assert!(limiter.check("POST /run", &other, start).is_err());
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let limiter = limiter(10, 10);
        let start = Instant::now();
        let client =
            |n: u16| ClientId::Address(std::net::IpAddr::from([10, 1, (n >> 8) as u8, n as u8]));
        for n in 0..(PRUNE_FLOOR as u16 - 1) {
            limiter.check("POST /run", &client(n), start).unwrap();
        }
        assert_eq!(limiter.tracked(), PRUNE_FLOOR - 1);
        // A minute later every one of those buckets is full again: the insertion that reaches
        // the floor drops them all.
        let later = start + Duration::from_secs(60);
        limiter.check("POST /run", &ip(1), later).unwrap();
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn disabled_limits_nothing() {
        let mut config = RateLimitConfig {
            enabled: false,
            client_ip_header: String::new(),
            rules: BTreeMap::new(),
        };
        config.rules.insert(
            "runs".into(),
            RateRule {
                routes: vec!["POST /run".into()],
                requests: 1,
                window_secs: 60,
            },
        );
        let limiter = RateLimiter::new(&config, &[]);
        let now = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check("POST /run", &ip(1), now).is_ok());
        }
    }
}
