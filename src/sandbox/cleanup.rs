//! Removing containers: the queue every dropped [`super::Sandbox`] feeds, and the periodic sweep
//! that removes runbox containers no live sandbox owns (left by a crash or a lost removal).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::policy::{LABEL_ID, LABEL_KIND};
use super::{LiveSet, SandboxKind, Sandboxes};

/// Removals in flight at once; more wait in the queue rather than flood the engine.
const MAX_CONCURRENT_REMOVALS: usize = 16;
/// Attempts per container before leaving it to the sweep.
const REMOVE_ATTEMPTS: u32 = 5;
const REMOVE_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Sends containers to the removal task. Cheap to clone; never blocks (Drop cannot await).
#[derive(Clone)]
pub(super) struct Cleaner {
    queue: mpsc::UnboundedSender<Removal>,
    live: LiveSet,
}

struct Removal {
    container: String,
    id: String,
}

impl Cleaner {
    pub(super) fn start(
        docker: Docker,
        live: LiveSet,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Cleaner {
        let (queue, receiver) = mpsc::unbounded_channel();
        tasks.spawn(run_removals(docker, live.clone(), receiver, stop));
        Cleaner { queue, live }
    }

    /// Queues a container for forced removal. `id` leaves the live set once it is gone.
    pub(super) fn remove(&self, container: String, id: String) {
        self.live.mark_removing(&id);
        if let Err(mpsc::error::SendError(removal)) = self.queue.send(Removal { container, id }) {
            // The task has stopped (shutdown already ran): leave it to the next start's sweep.
            tracing::warn!(container = %removal.container, "cleanup task stopped; container left to the sweep");
        }
    }
}

async fn run_removals(
    docker: Docker,
    live: LiveSet,
    mut receiver: mpsc::UnboundedReceiver<Removal>,
    stop: CancellationToken,
) {
    let in_flight = TaskTracker::new();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REMOVALS));
    loop {
        let removal = tokio::select! {
            removal = receiver.recv() => removal,
            () = stop.cancelled() => None,
        };
        let Some(Removal { container, id }) = removal else {
            break;
        };
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let (docker, live) = (docker.clone(), live.clone());
        in_flight.spawn(async move {
            if remove_container(&docker, &container).await {
                live.removed(&id);
            }
            drop(permit);
        });
    }
    // Shutdown: whatever is still queued, then everything this process still owns.
    receiver.close();
    while let Ok(Removal { container, id }) = receiver.try_recv() {
        if remove_container(&docker, &container).await {
            live.removed(&id);
        }
    }
    in_flight.close();
    in_flight.wait().await;
    for (id, container) in live.snapshot() {
        if remove_container(&docker, &container).await {
            live.removed(&id);
        }
    }
}

/// Force-removes (kills first) a container; true once it is gone.
async fn remove_container(docker: &Docker, container: &str) -> bool {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    for attempt in 1..=REMOVE_ATTEMPTS {
        match docker
            .remove_container(container, Some(options.clone()))
            .await
        {
            Ok(()) => return true,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return true,
            // 409: removal already in progress (e.g. the sweep raced us): it will be gone.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => return true,
            Err(err) => {
                tracing::warn!(%container, attempt, error = %err, "removing a sandbox failed");
                tokio::time::sleep(REMOVE_RETRY_DELAY * attempt).await;
            }
        }
    }
    tracing::error!(%container, "sandbox not removed; the sweep will retry");
    false
}

/// How long a throwaway sandbox can exist while something still uses it: a container older than
/// that which no live sandbox of this process owns cannot belong to any runbox (this one or
/// another on the same engine), so the sweep removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// A `job` or `probe` sandbox: the longest compile plus run, with slack.
    pub job: Duration,
    /// A `pool` sandbox: the longest wait in the pool plus a job.
    pub pool: Duration,
    /// A `session` sandbox: a session's maximum age plus a job. Live sessions of a runbox that
    /// restarts are taken back before that.
    pub session: Duration,
}

impl Lifetimes {
    fn bound(&self, kind: &str) -> Option<Duration> {
        if kind == SandboxKind::Job.label() || kind == SandboxKind::Probe.label() {
            Some(self.job)
        } else if kind == SandboxKind::Pool.label() {
            Some(self.pool)
        } else if kind == SandboxKind::Session.label() {
            Some(self.session)
        } else {
            None
        }
    }
}

/// Starts the sweep: once now, then every `sweep_interval`; see [`Lifetimes`].
pub(super) fn start_sweeper(sandboxes: Sandboxes, lifetimes: Lifetimes) {
    let shared = sandboxes.shared.clone();
    let interval = shared.config.sweep_interval();
    let stop = shared.stop.clone();
    shared.tasks.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => break,
            }
            match sweep(&sandboxes, lifetimes).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "sweep removed orphaned sandboxes"),
                Err(err) => tracing::warn!(error = %err, "sweep failed"),
            }
        }
    });
}

/// One sweep; returns how many orphans were removed.
pub(super) async fn sweep(
    sandboxes: &Sandboxes,
    lifetimes: Lifetimes,
) -> Result<usize, super::SandboxError> {
    let docker = sandboxes.docker();
    let containers = sandboxes.list(None, &[], true).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MAX);
    let mut removed = 0;
    for container in containers {
        let labels = container.labels.unwrap_or_default();
        let Some(bound) = labels
            .get(LABEL_KIND)
            .and_then(|kind| lifetimes.bound(kind))
        else {
            continue;
        };
        let owned = labels.get(LABEL_ID).is_some_and(|id| sandboxes.is_live(id));
        let age = now.saturating_sub(container.created.unwrap_or(now));
        if owned || age < bound.as_secs() as i64 {
            continue;
        }
        if let Some(id) = container.id
            && remove_container(docker, &id).await
        {
            removed += 1;
        }
    }
    sandboxes.shared.live.reaped(removed);
    Ok(removed)
}
