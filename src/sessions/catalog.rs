//! The session catalog several nodes share (`cluster.redis`): every session's record, the
//! caps counted over all nodes, and which node hosts each session's live part (its sandbox
//! handle, run lock and terminal) as a lease that node renews every third of its TTL.
//!
//! Keys (under `cluster.key_prefix`): `session:<id>` (a hash: language, client, sandbox,
//! created, last_used, epoch), `lease:<id>` (the hosting node's id, with the lease TTL),
//! `sessions` (every id) and `client:<client>:sessions` (a client's ids). Each change is one
//! script (one round trip, atomic); `epoch` counts the session's hosts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::shared::{Shared, SharedError};

use super::store::SessionRecord;

/// Where a session's live part is, as the catalog says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// No record: no such session, or Redis lost it (then its sandbox's labels tell).
    Unknown,
    /// Hosted by a node whose heartbeat is live.
    By { node: String, url: String },
    /// Its host's lease lapsed (or its host is gone): whoever asks next takes it over.
    Free {
        holder: Option<String>,
        record: SessionRecord,
    },
}

/// The answer to a new session's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Taken,
    AtCapacity,
    ClientAtCapacity,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    shared: Shared,
}

fn secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The record's hash fields, flattened as HSET takes them.
fn fields(record: &SessionRecord) -> Vec<String> {
    vec![
        "language".into(),
        record.language.clone(),
        "client".into(),
        record.client.clone().unwrap_or_default(),
        "sandbox".into(),
        record.sandbox.clone().unwrap_or_default(),
        "created".into(),
        secs(record.created_at).to_string(),
        "last_used".into(),
        secs(record.last_used_at).to_string(),
    ]
}

/// A record from HGETALL's flat field/value list; `None` when it lacks what a record needs.
fn record_from(id: &str, holder: &str, flat: &[String]) -> Option<SessionRecord> {
    let field = |name: &str| {
        flat.chunks_exact(2)
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].clone())
    };
    let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
    Some(SessionRecord {
        id: id.to_owned(),
        language: non_empty(field("language"))?,
        client: non_empty(field("client")),
        holder: holder.to_owned(),
        sandbox: non_empty(field("sandbox")),
        created_at: at(field("created")?.parse().ok()?),
        last_used_at: at(field("last_used")?.parse().ok()?),
    })
}

impl Catalog {
    pub fn new(shared: Shared) -> Catalog {
        Catalog { shared }
    }

    pub fn node_id(&self) -> &str {
        self.shared.node_id()
    }

    pub fn lease_ttl(&self) -> Duration {
        self.shared.lease_ttl()
    }

    fn keys(&self, id: &str) -> (String, String) {
        (
            self.shared.key(&format!("session:{id}")),
            self.shared.key(&format!("lease:{id}")),
        )
    }

    /// Set for one lease TTL when a session is removed: a renewal that took its list of
    /// hosted sessions just before the removal must not put the record back (it did: a
    /// deleted session's record and set entries were left in Redis for good, counting against
    /// the session caps; seen once in the nodes suite).
    fn removed_key(&self, id: &str) -> String {
        self.shared.key(&format!("removed:{id}"))
    }

    fn client_key(&self, client: &str) -> String {
        self.shared.key(&format!("client:{client}:sessions"))
    }

    fn ttl_ms(&self) -> u64 {
        self.shared.lease_ttl().as_millis() as u64
    }

    /// Enters a new session hosted here, unless the cluster holds `max_sessions` or its client
    /// `max_per_client` already.
    pub async fn claim(
        &self,
        record: &SessionRecord,
        max_sessions: usize,
        max_per_client: usize,
    ) -> Result<Claim, SharedError> {
        let (record_key, lease_key) = self.keys(&record.id);
        let all_key = self.shared.key("sessions");
        let client_key = self.client_key(record.client.as_deref().unwrap_or_default());
        let script = &*CLAIM;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&all_key)
            .key(&client_key)
            .key(&record_key)
            .key(&lease_key)
            .arg(max_sessions)
            .arg(max_per_client)
            .arg(&record.id)
            .arg(self.node_id())
            .arg(self.ttl_ms())
            .arg(fields(record));
        let answer: i64 = self
            .shared
            .call(|mut redis| async move { invocation.invoke_async(&mut redis).await })
            .await?;
        Ok(match answer {
            -1 => Claim::AtCapacity,
            -2 => Claim::ClientAtCapacity,
            _ => Claim::Taken,
        })
    }

    /// Where the session's live part is.
    pub async fn locate(&self, id: &str) -> Result<Held, SharedError> {
        let (record_key, lease_key) = self.keys(id);
        let node_prefix = self.shared.key("node:");
        let script = &*LOCATE;
        let (exists, holder, url, flat): (u8, String, String, Vec<String>) = self
            .shared
            .call(|mut redis| async move {
                script
                    .key(&record_key)
                    .key(&lease_key)
                    .arg(&node_prefix)
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        if exists == 0 {
            return Ok(Held::Unknown);
        }
        if !holder.is_empty() && !url.is_empty() {
            return Ok(Held::By { node: holder, url });
        }
        let record = record_from(id, self.node_id(), &flat)
            .ok_or_else(|| SharedError::Unexpected("a session record lacks a field".to_owned()))?;
        Ok(Held::Free {
            holder: (!holder.is_empty()).then_some(holder),
            record,
        })
    }

    /// Takes the session's lease for this node if it is still as seen (`holder`: the lapsed
    /// or gone host, `None`: none) and no live node took it meanwhile; the session's new
    /// epoch, or `None` when another node was quicker.
    pub async fn take(&self, id: &str, holder: Option<&str>) -> Result<Option<u64>, SharedError> {
        let (record_key, lease_key) = self.keys(id);
        let node_prefix = self.shared.key("node:");
        let me = self.node_id().to_owned();
        let seen = holder.unwrap_or_default().to_owned();
        let ttl = self.ttl_ms();
        let script = &*TAKE;
        let epoch: i64 = self
            .shared
            .call(|mut redis| async move {
                script
                    .key(&record_key)
                    .key(&lease_key)
                    .arg(&me)
                    .arg(ttl)
                    .arg(&seen)
                    .arg(&node_prefix)
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        Ok(u64::try_from(epoch).ok())
    }

    /// Renews this node's lease on each session (putting its record back when Redis lost it);
    /// returns the ids another node holds now (this node must let go of them).
    pub async fn renew(&self, records: &[SessionRecord]) -> Result<Vec<String>, SharedError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let script = &*RENEW;
        let all_key = self.shared.key("sessions");
        let mut pipe = redis::pipe();
        for record in records {
            let (record_key, lease_key) = self.keys(&record.id);
            let client_key = self.client_key(record.client.as_deref().unwrap_or_default());
            pipe.cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(5)
                .arg(&lease_key)
                .arg(&record_key)
                .arg(&all_key)
                .arg(&client_key)
                .arg(self.removed_key(&record.id))
                .arg(self.node_id())
                .arg(self.ttl_ms())
                .arg(&record.id)
                .arg(fields(record));
        }
        // EVALSHA in a pipeline: the script is loaded first so that none meets NOSCRIPT (a
        // Redis restarted empty has no scripts either).
        self.shared
            .call(|mut redis| async move { script.load_async(&mut redis).await.map(|_| ()) })
            .await?;
        let kept: Vec<u8> = self
            .shared
            .call(|mut redis| async move { pipe.query_async(&mut redis).await })
            .await?;
        Ok(records
            .iter()
            .zip(kept)
            .filter(|(_, kept)| *kept == 0)
            .map(|(record, _)| record.id.clone())
            .collect())
    }

    /// The session's sandbox changed (a replacement, or another language's image).
    pub async fn set_sandbox(
        &self,
        id: &str,
        sandbox: &str,
        language: &str,
    ) -> Result<(), SharedError> {
        let (record_key, _) = self.keys(id);
        let (sandbox, language) = (sandbox.to_owned(), language.to_owned());
        self.shared
            .call(|mut redis| async move {
                redis::cmd("HSET")
                    .arg(&record_key)
                    .arg("sandbox")
                    .arg(&sandbox)
                    .arg("language")
                    .arg(&language)
                    .query_async::<()>(&mut redis)
                    .await
            })
            .await
    }

    pub async fn touch(&self, id: &str, used: SystemTime) -> Result<(), SharedError> {
        let (record_key, _) = self.keys(id);
        let used = secs(used);
        self.shared
            .call(|mut redis| async move {
                redis::cmd("HSET")
                    .arg(&record_key)
                    .arg("last_used")
                    .arg(used)
                    .query_async::<()>(&mut redis)
                    .await
            })
            .await
    }

    /// This node lets go of the session's lease (it stops; the next node asked takes over at
    /// once instead of after the TTL).
    pub async fn release(&self, id: &str) -> Result<(), SharedError> {
        let (_, lease_key) = self.keys(id);
        let me = self.node_id().to_owned();
        let script = &*RELEASE;
        self.shared
            .call(|mut redis| async move {
                script
                    .key(&lease_key)
                    .arg(&me)
                    .invoke_async::<()>(&mut redis)
                    .await
            })
            .await
    }

    /// The session is gone: its record, its lease, its place in the counts.
    pub async fn remove(&self, id: &str, client: Option<&str>) -> Result<(), SharedError> {
        let (record_key, lease_key) = self.keys(id);
        let all_key = self.shared.key("sessions");
        let client_key = self.client_key(client.unwrap_or_default());
        let removed_key = self.removed_key(id);
        let ttl = self.ttl_ms();
        let id = id.to_owned();
        self.shared
            .call(|mut redis| async move {
                redis::pipe()
                    .atomic()
                    .del(&record_key)
                    .del(&lease_key)
                    .srem(&all_key, &id)
                    .srem(&client_key, &id)
                    .cmd("SET")
                    .arg(&removed_key)
                    .arg(1)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<()>(&mut redis)
                    .await
            })
            .await
    }

    /// Every session no live node hosts, with its record (ids left without a record are
    /// dropped from the set on the way).
    pub async fn unhosted(&self) -> Result<Vec<(Option<String>, SessionRecord)>, SharedError> {
        let all_key = self.shared.key("sessions");
        let ids: Vec<String> = self
            .shared
            .call(|mut redis| {
                let all_key = all_key.clone();
                async move {
                    redis::cmd("SMEMBERS")
                        .arg(&all_key)
                        .query_async(&mut redis)
                        .await
                }
            })
            .await?;
        let mut unhosted = Vec::new();
        for id in ids {
            match self.locate(&id).await? {
                Held::Free { holder, record } => unhosted.push((holder, record)),
                Held::By { .. } => {}
                Held::Unknown => {
                    let (all_key, id) = (all_key.clone(), id.clone());
                    self.shared
                        .call(|mut redis| async move {
                            redis::cmd("SREM")
                                .arg(&all_key)
                                .arg(&id)
                                .query_async::<()>(&mut redis)
                                .await
                        })
                        .await?;
                }
            }
        }
        Ok(unhosted)
    }
}

/// KEYS: all, client's, record, lease. ARGV: max, per client, id, node, ttl ms, fields….
static CLAIM: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return -1 end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then return -2 end
redis.call('SADD', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], 'epoch', 1, unpack(ARGV, 6))
redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
return 1
",
    )
});

/// KEYS: record, lease. ARGV: the node keys' prefix. {exists, holder, holder's url, fields}.
static LOCATE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '', '', {}} end
local holder = redis.call('GET', KEYS[2])
local url = false
if holder then url = redis.call('GET', ARGV[1] .. holder) end
return {1, holder or '', url or '', redis.call('HGETALL', KEYS[1])}
",
    )
});

/// KEYS: record, lease. ARGV: me, ttl ms, the holder seen ('' none), node keys' prefix.
/// The new epoch; -1 when someone else holds it now (or its holder is alive again).
static TAKE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[3] then return -1 end
if holder and holder ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. holder) == 1 then return -1 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HINCRBY', KEYS[1], 'epoch', 1) end
return 0
",
    )
});

/// KEYS: lease, record, all, client's, removed. ARGV: me, ttl ms, id, fields…. 0: another
/// node holds it; 1: renewed (and the record put back if Redis had lost it); 2: it was just
/// removed (nothing written).
static RENEW: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[5]) == 1 then return 2 end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'epoch', 1, unpack(ARGV, 4))
  redis.call('SADD', KEYS[3], ARGV[3])
  redis.call('SADD', KEYS[4], ARGV[3])
end
return 1
",
    )
});

/// KEYS: lease. ARGV: me. Deleted only when this node holds it.
static RELEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_its_trip_through_a_hash() {
        let record = SessionRecord {
            id: "abc".into(),
            language: "python".into(),
            client: Some("10.0.0.1".into()),
            holder: "node-a".into(),
            sandbox: Some("abc.1".into()),
            created_at: at(1_700_000_000),
            last_used_at: at(1_700_000_100),
        };
        let mut flat = fields(&record);
        flat.extend(["epoch".to_owned(), "3".to_owned()]);
        assert_eq!(record_from("abc", "node-a", &flat), Some(record));
        let no_client: Vec<String> = fields(&SessionRecord {
            client: None,
            sandbox: None,
            ..record_from("abc", "n", &flat).unwrap()
        });
        let back = record_from("abc", "n", &no_client).unwrap();
        assert_eq!((back.client, back.sandbox), (None, None));
        assert_eq!(record_from("abc", "n", &["language".into()]), None);
    }
}
