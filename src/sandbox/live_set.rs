//! The sandboxes this process owns, and what the metrics show of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Sandboxes this process owns: runbox id -> container name (and whether its removal has
/// begun), with the counts of removals for the metrics.
#[derive(Clone, Default)]
pub(super) struct LiveSet(pub(super) Arc<LiveInner>);

#[derive(Default)]
pub(super) struct LiveInner {
    owned: Mutex<HashMap<String, Owned>>,
    /// Containers removed after their owner let go (or at shutdown).
    pub(super) removed: AtomicU64,
    /// Orphans removed by the sweep.
    pub(super) reaped: AtomicU64,
}

struct Owned {
    container_name: String,
    removing: bool,
}

impl LiveSet {
    /// Inserts unless `limit` sandboxes are owned already; says whether it did.
    pub(super) fn insert_within(&self, id: &str, container_name: &str, limit: usize) -> bool {
        let mut owned = self.lock();
        if owned.len() >= limit {
            return false;
        }
        owned.insert(
            id.to_owned(),
            Owned {
                container_name: container_name.to_owned(),
                removing: false,
            },
        );
        true
    }

    pub(super) fn insert(&self, id: &str, container_name: &str) {
        self.lock().insert(
            id.to_owned(),
            Owned {
                container_name: container_name.to_owned(),
                removing: false,
            },
        );
    }

    /// No longer this process's (kept for the next start), not removed.
    pub(super) fn release(&self, id: &str) {
        self.lock().remove(id);
    }

    pub(super) fn mark_removing(&self, id: &str) {
        if let Some(owned) = self.lock().get_mut(id) {
            owned.removing = true;
        }
    }

    /// Its container is gone.
    pub(super) fn removed(&self, id: &str) {
        self.lock().remove(id);
        self.0.removed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn reaped(&self, count: usize) {
        self.0.reaped.fetch_add(count as u64, Ordering::Relaxed);
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Every (id, container name) still owned.
    pub(super) fn snapshot(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(id, owned)| (id.clone(), owned.container_name.clone()))
            .collect()
    }

    /// Owned sandboxes by kind (from the container name) and state.
    pub(super) fn by_kind(&self) -> BTreeMap<(String, &'static str), usize> {
        let mut counts = BTreeMap::new();
        for owned in self.lock().values() {
            let kind = owned
                .container_name
                .strip_prefix("runbox-")
                .and_then(|rest| rest.split('-').next())
                .unwrap_or("unknown")
                .to_owned();
            let state = if owned.removing { "removing" } else { "active" };
            *counts.entry((kind, state)).or_default() += 1;
        }
        counts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owned>> {
        // A panic while holding this lock cannot leave the map inconsistent (single calls).
        self.0
            .owned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the metrics show of the sandboxes at one scrape.
#[derive(Debug, Clone, Default)]
pub struct SandboxTally {
    /// (kind, state: `active` or `removing`) -> sandboxes this process owns.
    pub by_kind: BTreeMap<(String, &'static str), usize>,
    pub created: u64,
    pub removed: u64,
    pub reaped: u64,
    pub engine_errors: u64,
}
