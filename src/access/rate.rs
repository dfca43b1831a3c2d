//! Per-client rate limits, one rule per group of routes (`runs`: 100 per 15 minutes by
//! default), kept by `governor` (the crate `tower_governor` is built on): each (rule, client)
//! pair is a GCRA bucket, so a rule of N requests per window lets a client spend N at once
//! and gives one back every window/N. A key with its own quota on a rule has a bucket of its
//! own quota (governor's keyed limiters share one quota per limiter, so each such key gets a
//! limiter of its own: the keys are configured, so these are few). Pairs whose bucket is full
//! again are dropped, so memory follows the clients of the last window.
//!
//! [`Limiter`] is what the access layer asks; [`RateLimiter`] answers it in this process. A
//! limiter shared by several runbox processes (Redis) answers the same question.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota as GovernorQuota};

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

/// What the access layer asks of a rate limiter, here or shared by several processes.
pub trait Limiter: Send + Sync + std::fmt::Debug + 'static {
    /// Counts a request of `client` on `route` (`METHOD /path`): the client's quota after it
    /// (`None` for a route no rule limits), or the name of the rule that refused it and when
    /// to retry.
    fn check<'a>(
        &'a self,
        route: &'a str,
        client: &'a ClientId,
    ) -> BoxFuture<'a, Result<Option<Quota>, (&'a str, RateLimited)>>;
}

type Keyed<C> =
    governor::RateLimiter<ClientId, DashMapStateStore<ClientId>, C, StateInformationMiddleware>;
type Direct<C> = governor::RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

struct Rule<C: Clock> {
    name: String,
    /// Requests per window, by default.
    requests: u32,
    window: Duration,
    /// Every client on the rule's default quota.
    clients: Keyed<C>,
    /// API keys with a quota of their own on this rule: (requests, their bucket).
    own_quota: HashMap<String, (u32, Direct<C>)>,
    /// Size of `clients` at which full buckets are next dropped.
    prune_at: AtomicUsize,
}

impl<C: Clock> std::fmt::Debug for Rule<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("requests", &self.requests)
            .field("window", &self.window)
            .field("tracked", &self.clients.len())
            .finish_non_exhaustive()
    }
}

/// The rules and every client's buckets, in this process.
#[derive(Debug)]
pub struct RateLimiter<C: Clock = DefaultClock> {
    rules: Vec<Rule<C>>,
    /// `METHOD /path` -> index into `rules`.
    route_rule: HashMap<String, usize>,
    clock: C,
}

/// Below this many tracked clients of a rule, none is dropped.
const PRUNE_FLOOR: usize = 1024;

/// `requests` per `window`: a burst of `requests`, one back every `window / requests`.
fn governor_quota(requests: u32, window: Duration) -> GovernorQuota {
    let requests = NonZeroU32::new(requests).unwrap_or(NonZeroU32::MIN);
    let period = (window / requests.get()).max(Duration::from_nanos(1));
    GovernorQuota::with_period(period)
        .unwrap_or_else(|| GovernorQuota::per_second(NonZeroU32::MIN))
        .allow_burst(requests)
}

impl RateLimiter {
    /// `config` is validated (every route known and in at most one rule, quotas positive);
    /// `keys` may carry their own quota per rule.
    pub fn new(config: &RateLimitConfig, keys: &[ApiKeyConfig]) -> RateLimiter {
        RateLimiter::with_clock(config, keys, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    pub fn with_clock(config: &RateLimitConfig, keys: &[ApiKeyConfig], clock: C) -> Self {
        let mut rules = Vec::new();
        let mut route_rule = HashMap::new();
        if config.enabled {
            for (name, rule) in &config.rules {
                for route in &rule.routes {
                    route_rule.insert(route.clone(), rules.len());
                }
                let window = Duration::from_secs(rule.window_secs);
                let own_quota = keys
                    .iter()
                    .filter_map(|key| {
                        let requests = *key.limits.get(name)?;
                        let bucket = governor::RateLimiter::direct_with_clock(
                            governor_quota(requests, window),
                            clock.clone(),
                        )
                        .with_middleware::<StateInformationMiddleware>();
                        Some((key.name.clone(), (requests, bucket)))
                    })
                    .collect();
                let clients: Keyed<C> = governor::RateLimiter::new(
                    governor_quota(rule.requests, window),
                    DashMapStateStore::default(),
                    clock.clone(),
                );
                rules.push(Rule {
                    name: name.clone(),
                    requests: rule.requests,
                    window,
                    clients,
                    own_quota,
                    prune_at: AtomicUsize::new(PRUNE_FLOOR),
                });
            }
        }
        RateLimiter {
            rules,
            route_rule,
            clock,
        }
    }

    /// [`Limiter::check`], answered at once.
    pub fn check_now(
        &self,
        route: &str,
        client: &ClientId,
    ) -> Result<Option<Quota>, (&str, RateLimited)> {
        let Some(&index) = self.route_rule.get(route) else {
            return Ok(None);
        };
        let rule = &self.rules[index];
        let own = match client {
            ClientId::Key(name) => rule.own_quota.get(name),
            ClientId::Address(_) => None,
        };
        let (requests, checked) = match own {
            Some((requests, bucket)) => (*requests, bucket.check()),
            None => {
                let checked = rule.clients.check_key(client);
                rule.prune();
                (rule.requests, checked)
            }
        };
        let interval = rule.window / requests.max(1);
        match checked {
            Ok(snapshot) => Ok(Some(quota_after(&snapshot, requests, interval))),
            Err(not_until) => Err((
                &rule.name,
                refusal(&not_until, &self.clock, requests, interval),
            )),
        }
    }

    /// The rule that limits `route` for `client`: its name, the client's requests per window
    /// (its key's own quota, or the rule's), and the window.
    pub fn rule_for(&self, route: &str, client: &ClientId) -> Option<(&str, u32, Duration)> {
        let rule = &self.rules[*self.route_rule.get(route)?];
        let own = match client {
            ClientId::Key(name) => rule.own_quota.get(name).map(|(requests, _)| *requests),
            ClientId::Address(_) => None,
        };
        Some((&rule.name, own.unwrap_or(rule.requests), rule.window))
    }

    /// How many (rule, client) buckets are tracked.
    pub fn tracked(&self) -> usize {
        self.rules.iter().map(|rule| rule.clients.len()).sum()
    }
}

impl<C: Clock> Rule<C> {
    /// Drops the buckets that are full again, once there are enough of them to matter.
    fn prune(&self) {
        if self.clients.len() >= self.prune_at.load(Ordering::Relaxed) {
            self.clients.retain_recent();
            let kept = self.clients.len();
            self.prune_at
                .store((2 * kept).max(PRUNE_FLOOR), Ordering::Relaxed);
        }
    }
}

/// The quota left after a request was let through: what the bucket can still take at once,
/// and how long until it is full again (one interval per request it holds).
fn quota_after(snapshot: &StateSnapshot, requests: u32, interval: Duration) -> Quota {
    let remaining = snapshot.remaining_burst_capacity().min(requests);
    Quota {
        limit: requests,
        remaining,
        reset: interval * (requests - remaining),
    }
}

fn refusal<C: Clock>(
    not_until: &NotUntil<C::Instant>,
    clock: &C,
    requests: u32,
    interval: Duration,
) -> RateLimited {
    let retry_after = not_until.wait_time_from(clock.now());
    RateLimited {
        retry_after,
        quota: Quota {
            limit: requests,
            remaining: 0,
            // Empty: the next request comes back after `retry_after`, the rest one interval
            // each after it.
            reset: retry_after + interval * (requests - 1),
        },
    }
}

impl<C: Clock + Clone + Send + Sync + std::fmt::Debug + 'static> Limiter for RateLimiter<C>
where
    C::Instant: Send + Sync,
{
    fn check<'a>(
        &'a self,
        route: &'a str,
        client: &'a ClientId,
    ) -> BoxFuture<'a, Result<Option<Quota>, (&'a str, RateLimited)>> {
        Box::pin(std::future::ready(self.check_now(route, client)))
    }
}

/// One rule, `runs`, over `routes`: the settings the limiters' tests start from.
#[cfg(test)]
pub(super) fn runs_rule(routes: &[&str], requests: u32, window_secs: u64) -> RateLimitConfig {
    RateLimitConfig {
        enabled: true,
        client_ip_header: String::new(),
        rules: std::collections::BTreeMap::from([(
            "runs".to_owned(),
            crate::config::RateRule {
                routes: routes.iter().map(|r| (*r).to_owned()).collect(),
                requests,
                window_secs,
            },
        )]),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::config::RateRule;

    type TestLimiter = RateLimiter<FakeRelativeClock>;

    fn limiter(requests: u32, window_secs: u64) -> (TestLimiter, FakeRelativeClock) {
        let config = runs_rule(&["POST /run", "GET /run/ws"], requests, window_secs);
        let ci = ApiKeyConfig {
            name: "ci".into(),
            sha256: "00".repeat(32),
            limits: BTreeMap::from([("runs".to_owned(), 1000)]),
        };
        let clock = FakeRelativeClock::default();
        (
            RateLimiter::with_clock(&config, &[ci], clock.clone()),
            clock,
        )
    }

    fn ip(last: u8) -> ClientId {
        ClientId::Address(std::net::IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn the_quota_counts_down_and_comes_back() {
        let (limiter, clock) = limiter(3, 30);
        let client = ip(1);
        let quota = || limiter.check_now("POST /run", &client).unwrap().unwrap();
        assert_eq!(
            quota(),
            Quota {
                limit: 3,
                remaining: 2,
                reset: Duration::from_secs(10)
            }
        );
        assert_eq!(quota().remaining, 1);
        assert_eq!(quota().remaining, 0);
        let (_, refused) = limiter.check_now("POST /run", &client).unwrap_err();
        assert_eq!(refused.quota.remaining, 0);
        assert_eq!(refused.quota.reset, Duration::from_secs(30));
        // One comes back every 10 s.
        clock.advance(Duration::from_secs(10));
        assert_eq!(quota().remaining, 0);
        clock.advance(Duration::from_secs(50));
        assert_eq!(quota().remaining, 2);
    }

    #[test]
    fn a_burst_of_the_quota_then_refusal_until_one_comes_back() {
        let (limiter, clock) = limiter(100, 900);
        for _ in 0..100 {
            limiter.check_now("POST /run", &ip(1)).unwrap();
        }
        let (rule, refused) = limiter.check_now("POST /run", &ip(1)).unwrap_err();
        assert_eq!(rule, "runs");
        // One request comes back every 900/100 = 9 s.
        assert_eq!(refused.retry_after, Duration::from_secs(9));
        // Routes of one rule share its bucket; other clients have their own.
        assert!(limiter.check_now("GET /run/ws", &ip(1)).is_err());
        assert!(limiter.check_now("POST /run", &ip(2)).is_ok());
        // Routes without a rule are not limited.
        assert_eq!(limiter.check_now("GET /languages", &ip(1)), Ok(None));
        // After 9 s exactly one more.
        clock.advance(Duration::from_secs(9));
        assert!(limiter.check_now("POST /run", &ip(1)).is_ok());
        assert!(limiter.check_now("POST /run", &ip(1)).is_err());
    }

    #[test]
    fn a_key_with_its_own_quota_gets_it() {
        let (limiter, _clock) = limiter(2, 60);
        let ci = ClientId::Key("ci".into());
        for _ in 0..1000 {
            limiter.check_now("POST /run", &ci).unwrap();
        }
        assert!(limiter.check_now("POST /run", &ci).is_err());
        let other = ClientId::Key("other".into());
        for _ in 0..2 {
            limiter.check_now("POST /run", &other).unwrap();
        }
        assert!(limiter.check_now("POST /run", &other).is_err());
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let (limiter, clock) = limiter(10, 10);
        let client =
            |n: u16| ClientId::Address(std::net::IpAddr::from([10, 1, (n >> 8) as u8, n as u8]));
        for n in 0..(PRUNE_FLOOR as u16 - 1) {
            limiter.check_now("POST /run", &client(n)).unwrap();
        }
        assert_eq!(limiter.tracked(), PRUNE_FLOOR - 1);
        // A minute later every one of those buckets is full again: the check that reaches
        // the floor drops them all.
        clock.advance(Duration::from_secs(60));
        limiter.check_now("POST /run", &ip(1)).unwrap();
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
        for _ in 0..10 {
            assert!(limiter.check_now("POST /run", &ip(1)).is_ok());
        }
    }
}
