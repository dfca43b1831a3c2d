//! Which sandboxes the kernel's OOM killer struck.
//!
//! A process started by exec and OOM-killed leaves the container's `State.OOMKilled` false
//! (PID 1 lives on), so inspecting the container cannot tell. The engine does emit an `oom`
//! event for the container: one long-lived event subscription counts them per container.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::policy::LABEL_MANAGED;

/// Counts are kept this long; far longer than any exec waits for its event.
const RETENTION: Duration = Duration::from_secs(600);
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(super) struct OomWatch {
    inner: Arc<Inner>,
}

struct Inner {
    /// container id -> (OOM kills seen, last seen).
    kills: Mutex<HashMap<String, (u64, Instant)>>,
    changed: Notify,
}

impl OomWatch {
    pub(super) fn start(docker: Docker, tasks: &TaskTracker, stop: CancellationToken) -> OomWatch {
        let watch = OomWatch {
            inner: Arc::new(Inner {
                kills: Mutex::new(HashMap::new()),
                changed: Notify::new(),
            }),
        };
        tasks.spawn(watch.clone().follow_events(docker, stop));
        watch
    }

    /// OOM kills seen so far in `container`.
    pub(super) fn count(&self, container: &str) -> u64 {
        self.lock().get(container).map_or(0, |(n, _)| *n)
    }

    /// Waits up to `grace` for the count of `container` to pass `before`; true if it did.
    /// The event can arrive a little after the killed process's exit is observed.
    pub(super) async fn wait_above(&self, container: &str, before: u64, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let changed = self.inner.changed.notified();
            if self.count(container) > before {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.count(container) > before;
            }
        }
    }

    fn record(&self, container: String) {
        let now = Instant::now();
        let mut kills = self.lock();
        kills.retain(|_, (_, at)| now.duration_since(*at) < RETENTION);
        let entry = kills.entry(container).or_insert((0, now));
        entry.0 += 1;
        entry.1 = now;
        drop(kills);
        self.inner.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        self.inner
            .kills
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn follow_events(self, docker: Docker, stop: CancellationToken) {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("event".to_owned(), vec!["oom".to_owned()]),
            ("label".to_owned(), vec![format!("{LABEL_MANAGED}=true")]),
        ]);
        loop {
            let options = EventsOptionsBuilder::default().filters(&filters).build();
            let mut events = docker.events(Some(options));
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    () = stop.cancelled() => return,
                };
                match event {
                    Some(Ok(event)) => {
                        if let Some(id) = event.actor.and_then(|a| a.id) {
                            tracing::debug!(container = %id, "oom event");
                            self.record(id);
                        }
                    }
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "engine event stream failed; reconnecting");
                        break;
                    }
                    None => break,
                }
            }
            tokio::select! {
                () = tokio::time::sleep(RECONNECT_DELAY) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}
