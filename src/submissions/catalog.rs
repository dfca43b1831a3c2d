//! The submissions several nodes share (`cluster.redis`): each submission's record, written
//! by the node that runs it when it is queued, when it starts and when it ends, so that a
//! client polling any node sees it (Judge0's clients poll whichever node the load balancer
//! picks). The node that runs a submission reads its own from memory; the others read here.
//!
//! Keys (under `cluster.key_prefix`): `submission:<token>` (the record as JSON: the node
//! running it and the submission, kept `keep_secs`) and `submissions` (finished tokens scored
//! by when they finished, trimmed to `max_kept` over all nodes, the trimmed records deleted).
//! A record a node wrote while pending and never finished (the node was killed) is ended as
//! abandoned by the first node that reads it once that node's heartbeat has lapsed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::shared::{Shared, SharedError};

use super::Submission;

/// One record as kept in Redis.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    /// The node that runs (or ran) it.
    node: String,
    submission: Submission,
}

/// What another node's record says.
#[derive(Debug)]
pub struct Found {
    pub submission: Submission,
    /// The node that runs it (or ran it).
    pub node: String,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    shared: Shared,
    keep: Duration,
    max_kept: usize,
}

impl Catalog {
    pub fn new(shared: Shared, keep: Duration, max_kept: usize) -> Catalog {
        Catalog {
            shared,
            keep,
            max_kept,
        }
    }

    pub fn node_id(&self) -> &str {
        self.shared.node_id()
    }

    fn record_key(&self, token: &str) -> String {
        self.shared.key(&format!("submission:{token}"))
    }

    /// Writes `submission` as `node`'s (this node's, or an abandoned one's) in one round trip;
    /// a finished one joins the finished set, which is trimmed to `max_kept`.
    pub async fn put(&self, node: &str, submission: &Submission) -> Result<(), SharedError> {
        let record = Record {
            node: node.to_owned(),
            submission: submission.clone(),
        };
        let json = serde_json::to_string(&record)
            .map_err(|err| SharedError::Unexpected(err.to_string()))?;
        let record_key = self.record_key(&submission.token);
        let finished_key = self.shared.key("submissions");
        let record_prefix = self.shared.key("submission:");
        let finished_ms = submission.finished_at.map(millis);
        let keep_ms = self.keep.as_millis().max(1) as u64;
        let max_kept = self.max_kept;
        let token = submission.token.clone();
        let script = &*PUT;
        self.shared
            .call(|mut redis| async move {
                script
                    .key(&record_key)
                    .key(&finished_key)
                    .arg(&json)
                    .arg(keep_ms)
                    .arg(finished_ms.map_or(-1, |ms| ms as i64))
                    .arg(&token)
                    .arg(max_kept)
                    .arg(&record_prefix)
                    .invoke_async::<()>(&mut redis)
                    .await
            })
            .await
    }

    pub async fn get(&self, token: &str) -> Result<Option<Found>, SharedError> {
        let key = self.record_key(token);
        let json = self
            .shared
            .call(|mut redis| async move {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<String>>(&mut redis)
                    .await
            })
            .await?;
        let Some(json) = json else {
            return Ok(None);
        };
        let record: Record = serde_json::from_str(&json)
            .map_err(|err| SharedError::Unexpected(format!("a submission record: {err}")))?;
        Ok(Some(Found {
            submission: record.submission,
            node: record.node,
        }))
    }

    pub async fn remove(&self, token: &str) -> Result<(), SharedError> {
        let key = self.record_key(token);
        let finished_key = self.shared.key("submissions");
        let token = token.to_owned();
        self.shared
            .call(|mut redis| async move {
                redis::pipe()
                    .del(&key)
                    .zrem(&finished_key, &token)
                    .query_async::<()>(&mut redis)
                    .await
            })
            .await
    }

    /// Whether `node`'s heartbeat is live (a pending record of a node that is gone will
    /// never be finished by it).
    pub async fn node_is_live(&self, node: &str) -> Result<bool, SharedError> {
        if node == self.shared.node_id() {
            return Ok(true);
        }
        Ok(self.shared.node_address(node).await?.is_some())
    }
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A record written, and for a finished one its place in the finished set, in one round trip:
/// the set is trimmed to its cap (oldest first, their records deleted) and lives as long as
/// its newest record.
static PUT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local finished = tonumber(ARGV[3])
if finished >= 0 then
  redis.call('ZADD', KEYS[2], finished, ARGV[4])
  local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
  if over > 0 then
    for _, token in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
      redis.call('DEL', ARGV[6] .. token)
    end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
",
    )
});
