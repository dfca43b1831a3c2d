//! Removing containers: the queue every dropped [`super::Sandbox`] feeds, and the periodic sweep
//! that removes runbox containers no live sandbox owns (left by a crash or a lost removal).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use futures_util::future::BoxFuture;

use super::policy::{LABEL_ID, LABEL_KIND, LABEL_NODE};
use super::{LiveSet, SandboxKind, Sandboxes};

/// Where the sweep asks whether another API node is still alive (several nodes on one
/// Redis: its heartbeat). The sandbox layer knows no Redis; the app wires this.
pub trait NodeRegistry: Send + Sync {
    /// `Some(true)`: `node`'s heartbeat has lapsed; `None`: cannot tell now (the store is
    /// down), which keeps its containers.
    fn is_gone<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Option<bool>>;
    /// How long a live node's heartbeat may be missing (a store restarted empty, before the
    /// node's next beat): a node is gone only when it is still missing after this.
    fn lease(&self) -> Duration;
}

/// This node's id and its registry of the others.
#[derive(Clone)]
pub(super) struct Nodes {
    pub(super) own: String,
    pub(super) registry: std::sync::Arc<dyn NodeRegistry>,
}

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
    // Job and pool containers of other nodes, younger than their bound: theirs while those
    // nodes live, nobody's once they are gone.
    let mut of_other_nodes: Vec<(String, String)> = Vec::new();
    let nodes = sandboxes.shared.nodes.get();
    for container in containers {
        let labels = container.labels.unwrap_or_default();
        let Some(kind) = labels.get(LABEL_KIND) else {
            continue;
        };
        let Some(bound) = lifetimes.bound(kind) else {
            continue;
        };
        let owned = labels.get(LABEL_ID).is_some_and(|id| sandboxes.is_live(id));
        let age = now.saturating_sub(container.created.unwrap_or(now));
        let Some(id) = container.id else {
            continue;
        };
        if owned {
            continue;
        }
        if age < bound.as_secs() as i64 {
            if let (Some(nodes), Some(node)) = (nodes, labels.get(LABEL_NODE))
                && *node != nodes.own
                && ends_with_its_node(kind)
            {
                of_other_nodes.push((node.clone(), id));
            }
            continue;
        }
        if remove_container(docker, &id).await {
            removed += 1;
        }
    }
    if let Some(nodes) = nodes
        && !of_other_nodes.is_empty()
    {
        let stop = &sandboxes.shared.stop;
        removed += remove_of_gone_nodes(docker, stop, nodes, of_other_nodes).await;
    }
    sandboxes.shared.live.reaped(removed);
    Ok(removed)
}

/// A job's or a pool's container lives only with the node that made it (a session's is taken
/// over by another node from the shared catalog, never swept for its node).
fn ends_with_its_node(kind: &str) -> bool {
    kind == SandboxKind::Job.label()
        || kind == SandboxKind::Probe.label()
        || kind == SandboxKind::Pool.label()
}

/// Removes the containers whose node is gone: missing from the registry now and still after
/// one lease (a live node beats again within it, e.g. after the store restarted empty).
async fn remove_of_gone_nodes(
    docker: &Docker,
    stop: &CancellationToken,
    nodes: &Nodes,
    containers: Vec<(String, String)>,
) -> usize {
    let mut names: Vec<&str> = containers.iter().map(|(node, _)| node.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut suspects = Vec::new();
    for node in names {
        if nodes.registry.is_gone(node).await == Some(true) {
            suspects.push(node);
        }
    }
    if suspects.is_empty() {
        return 0;
    }
    tokio::select! {
        () = tokio::time::sleep(nodes.registry.lease()) => {}
        () = stop.cancelled() => return 0,
    }
    let mut gone = Vec::new();
    for node in suspects {
        if nodes.registry.is_gone(node).await == Some(true) {
            gone.push(node);
        }
    }
    let mut removed = 0;
    for (node, id) in &containers {
        if gone.contains(&node.as_str()) && remove_container(docker, id).await {
            tracing::info!(node, container = %id, "removed a container of a node that is gone");
            removed += 1;
        }
    }
    removed
}
