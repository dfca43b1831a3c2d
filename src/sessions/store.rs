//! Where session records live. In memory by default; the trait is the seam for a shared store
//! (e.g. Redis) when several runbox processes serve one set of sessions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// Everything known of one session that is not tied to this process: what a shared store
/// would hold. The live part (the sandbox handle, the run lock, the terminal and its clients)
/// hangs off it in the process that holds the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub language: String,
    /// Who created it (its client identity); `None` for a session taken back after a restart.
    pub client: Option<String>,
    /// The runbox instance (`sessions.owner`) holding its sandbox, on that instance's engine.
    pub holder: String,
    /// runbox's id of its current sandbox (the container is `runbox-session-<sandbox>`);
    /// `None` while the first one is being made.
    pub sandbox: Option<String>,
    pub created_at: SystemTime,
    pub last_used_at: SystemTime,
}

pub trait SessionStore: Send + Sync + 'static {
    fn insert(&self, record: SessionRecord);
    fn get(&self, id: &str) -> Option<SessionRecord>;
    /// Moves `last_used_at`; false when there is no such session.
    fn touch(&self, id: &str, at: SystemTime) -> bool;
    /// The session has a new sandbox (a replacement, or another language's image); false
    /// when there is no such session.
    fn set_sandbox(&self, id: &str, sandbox: &str, language: &str) -> bool;
    fn remove(&self, id: &str) -> Option<SessionRecord>;
    fn all(&self) -> Vec<SessionRecord>;
    /// How many sessions `client` holds.
    fn held_by(&self, client: &str) -> usize {
        self.all()
            .iter()
            .filter(|r| r.client.as_deref() == Some(client))
            .count()
    }
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, SessionRecord>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionRecord>> {
        // Single map operations only: a panic cannot leave the map inconsistent.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SessionStore for MemoryStore {
    fn insert(&self, record: SessionRecord) {
        self.lock().insert(record.id.clone(), record);
    }

    fn get(&self, id: &str) -> Option<SessionRecord> {
        self.lock().get(id).cloned()
    }

    fn touch(&self, id: &str, at: SystemTime) -> bool {
        match self.lock().get_mut(id) {
            Some(record) => {
                record.last_used_at = at;
                true
            }
            None => false,
        }
    }

    fn set_sandbox(&self, id: &str, sandbox: &str, language: &str) -> bool {
        match self.lock().get_mut(id) {
            Some(record) => {
                record.sandbox = Some(sandbox.to_owned());
                language.clone_into(&mut record.language);
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: &str) -> Option<SessionRecord> {
        self.lock().remove(id)
    }

    fn all(&self) -> Vec<SessionRecord> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn records_are_kept_touched_and_removed() {
        let store = MemoryStore::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        store.insert(SessionRecord {
            id: "a".into(),
            language: "python".into(),
            client: Some("10.0.0.1".into()),
            holder: "runbox".into(),
            sandbox: None,
            created_at: t0,
            last_used_at: t0,
        });
        assert_eq!(store.held_by("10.0.0.1"), 1);
        assert_eq!(store.held_by("10.0.0.2"), 0);
        assert!(store.set_sandbox("a", "a.1", "ruby"));
        let record = store.get("a").unwrap();
        assert_eq!(
            (record.sandbox.as_deref(), record.language.as_str()),
            (Some("a.1"), "ruby")
        );
        assert!(store.touch("a", t0 + Duration::from_secs(5)));
        assert!(!store.touch("b", t0));
        assert_eq!(
            store.get("a").unwrap().last_used_at,
            t0 + Duration::from_secs(5)
        );
        assert_eq!(store.all().len(), 1);
        assert!(store.remove("a").is_some());
        assert!(store.get("a").is_none());
        assert!(store.all().is_empty());
    }
}
