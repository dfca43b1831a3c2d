//! State shared by several runbox nodes, in one Redis (`cluster.redis`): the door every other
//! module goes through to reach it, this node's name and heartbeat, and the other nodes'
//! addresses. Without `cluster.redis` nothing here exists and every state stays in memory.
//!
//! Redis is a dependency that may fail: every call is bounded in time, and after a failure
//! the door stays shut for [`BREAKER_OPEN`] (callers fall back at once instead of each
//! waiting out a timeout) until the heartbeat reaches Redis again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ClusterConfig;

/// One Redis call's bound. Measured on loopback: 0.1–0.3 ms a call; a call past this means
/// Redis (or the way to it) is in trouble, and a request should not wait on it longer.
const CALL_TIMEOUT: Duration = Duration::from_millis(300);
/// After a failed call, how long calls fail at once before Redis is tried again.
const BREAKER_OPEN: Duration = Duration::from_secs(1);
/// The header a forwarded request carries the nodes' shared secret in.
pub const HOP_TOKEN_HEADER: &str = "x-runbox-hop";
/// The header a forwarded request carries its client's identity in (trusted only with the
/// secret).
pub const HOP_CLIENT_HEADER: &str = "x-runbox-hop-client";

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// Redis did not answer in time, refused, or the door is shut after a recent failure.
    #[error("the shared state (Redis) is unavailable")]
    Unavailable,
    #[error("the shared state (Redis) answered something unexpected: {0}")]
    Unexpected(String),
}

impl From<redis::RedisError> for SharedError {
    fn from(err: redis::RedisError) -> Self {
        if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
            SharedError::Unavailable
        } else {
            SharedError::Unexpected(err.to_string())
        }
    }
}

/// This node's handle on the shared state. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    redis: ConnectionManager,
    prefix: String,
    node_id: String,
    node_url: String,
    token: String,
    lease_ttl: Duration,
    /// Set after a failed call until `shut_until` passes or the heartbeat gets through.
    shut: AtomicBool,
    shut_until: std::sync::Mutex<Instant>,
    /// Nodes whose heartbeat was live at the last beat (at least 1: this one).
    nodes_seen: AtomicUsize,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Shared {
    /// The handle, when `cluster.redis` is set. Redis is reached lazily: a node starts (and
    /// serves one-shot runs) while Redis is down.
    pub fn connect(config: &ClusterConfig, listening: SocketAddr) -> Result<Shared, SharedError> {
        let client = redis::Client::open(config.redis.as_str())
            .map_err(|err| SharedError::Unexpected(err.to_string()))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let redis = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        let node_id = if config.node_id.is_empty() {
            format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
        } else {
            config.node_id.clone()
        };
        let node_url = if config.node_url.is_empty() {
            format!("http://{listening}")
        } else {
            config.node_url.trim_end_matches('/').to_owned()
        };
        Ok(Shared {
            inner: Arc::new(Inner {
                redis,
                prefix: config.key_prefix.clone(),
                node_id,
                node_url,
                token: config.internal_token.clone(),
                lease_ttl: config.lease_ttl(),
                shut: AtomicBool::new(false),
                shut_until: std::sync::Mutex::new(Instant::now()),
                nodes_seen: AtomicUsize::new(1),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn node_url(&self) -> &str {
        &self.inner.node_url
    }

    pub fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    /// The nodes whose heartbeat was live at this node's last beat (1 when alone or when
    /// Redis was never reached).
    pub fn nodes_seen(&self) -> usize {
        self.inner.nodes_seen.load(Ordering::Relaxed).max(1)
    }

    /// A key under `cluster.key_prefix`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.inner.prefix)
    }

    /// The nodes' shared secret, for a request forwarded to another node.
    pub fn hop_token(&self) -> &str {
        &self.inner.token
    }

    /// Whether `presented` is the nodes' shared secret (compared in constant time).
    pub fn is_hop_token(&self, presented: &[u8]) -> bool {
        let expected = self.inner.token.as_bytes();
        presented.len() == expected.len()
            && presented
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// One bounded call to Redis; fails at once while the door is shut after a failure.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, SharedError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.is_shut() {
            return Err(SharedError::Unavailable);
        }
        self.call_through(call).await
    }

    /// A call that ignores the shut door (the heartbeat: the probe that opens it again).
    async fn call_through<T, F, Fut>(&self, call: F) -> Result<T, SharedError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let answer = match tokio::time::timeout(CALL_TIMEOUT, call(self.inner.redis.clone())).await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(SharedError::from(err)),
            Err(_) => Err(SharedError::Unavailable),
        };
        match &answer {
            Err(SharedError::Unavailable) => self.shut_for_a_while(),
            _ => self.inner.shut.store(false, Ordering::Relaxed),
        }
        answer
    }

    fn is_shut(&self) -> bool {
        if !self.inner.shut.load(Ordering::Relaxed) {
            return false;
        }
        let until = *self
            .inner
            .shut_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Instant::now() < until
    }

    fn shut_for_a_while(&self) {
        let was_open = !self.inner.shut.swap(true, Ordering::Relaxed);
        *self
            .inner
            .shut_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now() + BREAKER_OPEN;
        if was_open {
            tracing::warn!(
                "the shared state (Redis) is unavailable; falling back until it answers"
            );
        }
    }

    /// Redis answers now (the door is open).
    pub fn is_available(&self) -> bool {
        !self.is_shut()
    }

    /// The address of a node whose heartbeat is live, `None` for a node that is gone.
    pub async fn node_address(&self, node: &str) -> Result<Option<String>, SharedError> {
        let key = self.key(&format!("node:{node}"));
        self.call(|mut redis| async move {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut redis)
                .await
        })
        .await
    }

    /// Starts the heartbeat: this node's address under `node:<id>` for one lease TTL, renewed
    /// every third of it, and the count of live nodes (the per-node share of a rate limit
    /// while Redis is down).
    pub fn start_heartbeat(&self) {
        let shared = self.clone();
        let stop = self.inner.stop.clone();
        self.inner.tasks.spawn(async move {
            let mut ticker = tokio::time::interval(shared.lease_ttl() / 3);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = stop.cancelled() => return,
                }
                match shared.beat().await {
                    Ok(nodes) => shared.inner.nodes_seen.store(nodes, Ordering::Relaxed),
                    Err(err) => tracing::debug!(error = %err, "heartbeat failed"),
                }
            }
        });
    }

    async fn beat(&self) -> Result<usize, SharedError> {
        let node_key = self.key(&format!("node:{}", self.node_id()));
        let nodes_key = self.key("nodes");
        let url = self.node_url().to_owned();
        let ttl_ms = self.lease_ttl().as_millis() as u64;
        let id = self.node_id().to_owned();
        let script = &*HEARTBEAT;
        self.call_through(|mut redis| async move {
            script
                .key(&node_key)
                .key(&nodes_key)
                .arg(&url)
                .arg(ttl_ms)
                .arg(&id)
                .invoke_async::<usize>(&mut redis)
                .await
        })
        .await
    }

    /// Stops the heartbeat and takes this node's name out (the others stop forwarding to it
    /// at once instead of after a TTL).
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let node_key = self.key(&format!("node:{}", self.node_id()));
        let nodes_key = self.key("nodes");
        let id = self.node_id().to_owned();
        let _ = self
            .call(|mut redis| async move {
                redis::pipe()
                    .del(&node_key)
                    .zrem(&nodes_key, &id)
                    .query_async::<()>(&mut redis)
                    .await
            })
            .await;
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node_id", &self.inner.node_id)
            .field("node_url", &self.inner.node_url)
            .field("available", &self.is_available())
            .finish_non_exhaustive()
    }
}

/// The heartbeat in one round trip, on Redis's clock: this node's address for one TTL, its
/// entry in the `nodes` set scored by when it lapses, lapsed entries dropped, the live count.
static HEARTBEAT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('ZCARD', KEYS[2])
",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(token: &str) -> Shared {
        let config = ClusterConfig {
            redis: "redis://127.0.0.1:1/".into(),
            internal_token: token.into(),
            ..ClusterConfig::default()
        };
        Shared::connect(&config, "127.0.0.1:9000".parse().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn the_hop_secret_must_match_exactly() {
        let shared = shared("0123456789abcdef");
        assert!(shared.is_hop_token(b"0123456789abcdef"));
        assert!(!shared.is_hop_token(b"0123456789abcdeX"));
        assert!(!shared.is_hop_token(b"0123456789abcde"));
        assert!(!shared.is_hop_token(b""));
        assert_eq!(shared.node_url(), "http://127.0.0.1:9000");
        assert!(shared.node_id().starts_with("node-"));
    }

    #[tokio::test]
    async fn a_redis_that_does_not_answer_shuts_the_door_for_a_while() {
        // Port 1 on loopback: refused at once.
        let shared = shared("0123456789abcdef");
        let first = shared.node_address("x").await;
        assert!(matches!(first, Err(SharedError::Unavailable)), "{first:?}");
        assert!(!shared.is_available());
        let started = Instant::now();
        let second = shared.node_address("x").await;
        assert!(matches!(second, Err(SharedError::Unavailable)));
        assert!(
            started.elapsed() < Duration::from_millis(5),
            "the shut door answers at once"
        );
    }
}
