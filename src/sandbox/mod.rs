//! The only code that talks to the container engine.
//!
//! A [`Sandbox`] is a started, hardened container (see [`policy`]). A job sandbox's main
//! process is the [`runner`], attached before start, which takes the job's files, argv and
//! stdin in one write ([`Sandbox::run_main`]); other work (a compile phase, a session's runs)
//! goes through [`Sandbox::exec`]. The [`pool`] keeps job sandboxes started ahead of time.
//! Every `Sandbox` owns its container: dropping it hands the container to the [`cleanup`] task,
//! which removes it, whatever path dropped it (success, error, timeout, client gone, panic).
//! A periodic label sweep is the backstop.

pub mod cleanup;
mod container;
mod error;
mod exec;
pub mod fleet;
mod host_cgroup;
pub mod images;
pub mod input;
mod live_set;
#[cfg(feature = "bench")]
pub mod measure;
pub mod nested;
mod oom;
pub mod output;
pub mod outputs;
pub mod phase;
pub mod policy;
pub mod pool;
pub mod runner;
pub mod seccomp;
pub mod terminal;
pub mod transport;
mod work_dir;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::query_parameters::{AttachContainerOptionsBuilder, CreateContainerOptionsBuilder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cleanup::{Lifetimes, NodeRegistry};
pub use container::{Sandbox, Usage};
use error::ENGINE_ERRORS;
pub use error::SandboxError;
pub use exec::{
    ExecEnd, ExecOutcome, ExecSpec, LiveInput, OutputSink, Push, SIGKILL_EXIT_CODE, Stream,
    unpack_then,
};
pub use input::{InputFull, InputSender, input_channel};
use live_set::LiveSet;
pub use live_set::SandboxTally;
pub use output::{CollectedOutput, OutputCollector, Utf8Decoder};
pub use outputs::{EntryKind, FilePicker, FilesNotRead, FilesRead, ListedEntry, WorkDirListing};
pub use phase::{LastingPhaseReport, PhaseReport, PhaseUsage};
pub use policy::{MainProcess, SandboxKind, SandboxSpec};
pub use runner::{RunnerJob, Step};

use crate::config::SandboxConfig;
use cleanup::Cleaner;
pub use fleet::{EngineHealth, Fleet};
use oom::OomWatch;
pub use transport::EngineAddress;

/// How many sandboxes this process may own at once, of every kind (jobs, pool, sessions,
/// probes): one budget, checked as each is created.
#[derive(Debug, Clone, Copy)]
pub struct SandboxBudget {
    pub max: usize,
    /// Kept free of sessions (which live for up to an hour) so that running jobs always find
    /// room: a session may be created only while fewer than `max - reserved_for_jobs` exist.
    pub reserved_for_jobs: usize,
}

impl SandboxBudget {
    /// No bound (the image builder and the bench's own handle).
    pub fn unbounded() -> SandboxBudget {
        SandboxBudget {
            max: usize::MAX,
            reserved_for_jobs: 0,
        }
    }

    fn limit_for(&self, kind: SandboxKind) -> usize {
        match kind {
            SandboxKind::Session => self.max.saturating_sub(self.reserved_for_jobs),
            SandboxKind::Job | SandboxKind::Pool | SandboxKind::Probe => self.max,
        }
    }
}

/// Work-dir copies (a session moving to another image, a gVisor sandbox changing its memory
/// cap) running at once; more wait their turn. Each keeps two tar processes busy.
pub const MAX_CONCURRENT_COPIES: usize = 2;

/// A cheap, clonable handle to the engine and the sandbox machinery.
#[derive(Clone)]
pub struct Sandboxes {
    shared: Arc<Shared>,
}

struct Shared {
    /// The engine's id in the cluster (`local` on a single machine).
    engine_id: String,
    docker: Docker,
    config: SandboxConfig,
    budget: SandboxBudget,
    /// Work-dir copies running at once (each holds two execs and a frame in flight).
    copies: tokio::sync::Semaphore,
    cleaner: Cleaner,
    oom: OomWatch,
    /// Sandboxes this process owns and has not finished removing (runbox id -> container
    /// name). The sweep never touches these; an entry is made before the container is created.
    live: LiveSet,
    /// Containers this process has created since it started.
    created: AtomicU64,
    /// Whether the API version has been agreed with the engine. bollard keeps the version in
    /// state shared by every clone of the client, so one negotiation serves all tasks.
    negotiated: AtomicBool,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Sandbox creations in flight; shutdown lets them finish before the cleaner's last pass.
    creations: TaskTracker,
    /// This node among several (its containers carry its id; the sweep asks after others).
    nodes: std::sync::OnceLock<cleanup::Nodes>,
}

impl Sandboxes {
    /// Connects to the engine (negotiating the API version) and starts the background tasks:
    /// the cleanup queue and the OOM event watch. The orphan sweep is the server's to start
    /// ([`Sandboxes::start_sweep`]): a tool sharing the engine must not judge others' sandboxes.
    pub async fn connect(
        engine_id: &str,
        address: &EngineAddress<'_>,
        config: SandboxConfig,
        budget: SandboxBudget,
    ) -> Result<Sandboxes, SandboxError> {
        let docker = transport::connect(address)?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let live = LiveSet::default();
        let cleaner = Cleaner::start(docker.clone(), live.clone(), &tasks, stop.clone());
        let oom = OomWatch::start(docker.clone(), &tasks, stop.clone());
        let sandboxes = Sandboxes {
            shared: Arc::new(Shared {
                engine_id: engine_id.to_owned(),
                docker,
                config,
                budget,
                copies: tokio::sync::Semaphore::new(MAX_CONCURRENT_COPIES),
                cleaner,
                oom,
                live,
                created: AtomicU64::new(0),
                negotiated: AtomicBool::new(false),
                stop,
                tasks,
                creations: TaskTracker::new(),
                nodes: std::sync::OnceLock::new(),
            }),
        };
        if let Err(err) = sandboxes.negotiate().await {
            tracing::warn!(error = %err, "the container engine does not answer yet");
        }
        Ok(sandboxes)
    }

    /// Makes this handle one node's among several: every container it makes from now on
    /// carries `node`'s id, and its sweep removes at once the job and pool containers of a
    /// node that `registry` says is gone. Set once, before the pool starts.
    pub fn as_node(&self, node: &str, registry: std::sync::Arc<dyn NodeRegistry>) {
        let _ = self.shared.nodes.set(cleanup::Nodes {
            own: node.to_owned(),
            registry,
        });
    }

    /// Starts the periodic removal of runbox containers no live sandbox owns and that are
    /// older than any of their kind can be (see [`Lifetimes`]); it stops with the sandboxes.
    pub fn start_sweep(&self, lifetimes: Lifetimes) {
        cleanup::start_sweeper(self.clone(), lifetimes);
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    /// This engine runs on this machine with its sandboxes' cgroups under `parent` (its
    /// `--cgroup-parent`): they are read and set there directly.
    pub fn cgroups_under(&self, parent: &str) {
        host_cgroup::add_parent(parent);
    }

    /// The engine these sandboxes live on.
    pub fn engine_id(&self) -> &str {
        &self.shared.engine_id
    }

    /// Sandboxes this process may own on this engine at once.
    pub fn capacity(&self) -> usize {
        self.shared.budget.max
    }

    pub(crate) fn docker(&self) -> &Docker {
        &self.shared.docker
    }

    /// Agrees on the API version with the engine, once.
    async fn negotiate(&self) -> Result<(), SandboxError> {
        if self.shared.negotiated.load(Ordering::Acquire) {
            return Ok(());
        }
        self.shared
            .docker
            .clone()
            .negotiate_version()
            .await
            .map_err(SandboxError::from_engine)?;
        self.shared.negotiated.store(true, Ordering::Release);
        Ok(())
    }

    /// Answers whether the engine responds.
    pub async fn ping(&self) -> Result<(), SandboxError> {
        self.negotiate().await?;
        self.shared
            .docker
            .ping()
            .await
            .map(|_| ())
            .map_err(SandboxError::from_engine)
    }

    /// The runtimes the engine has registered, when its configured one is not among them
    /// (sorted); `None` when it is there.
    pub async fn runtime_missing(&self) -> Result<Option<Vec<String>>, SandboxError> {
        self.negotiate().await?;
        let info = self
            .shared
            .docker
            .info()
            .await
            .map_err(SandboxError::from_engine)?;
        let mut registered: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        if registered.iter().any(|r| *r == self.shared.config.runtime) {
            return Ok(None);
        }
        registered.sort();
        Ok(Some(registered))
    }

    /// Creates and starts a hardened sandbox; a runner sandbox is attached before it starts.
    /// The returned value owns the container.
    ///
    /// The work runs as its own task: dropping this future (a client that went away) must not
    /// abandon a create request the engine is still carrying out, which would leave a container
    /// nobody owns. The task finishes, and what it made is removed when nobody takes it.
    pub async fn create(&self, spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        let (sandboxes, spec) = (self.clone(), spec.clone());
        self.shared
            .creations
            .spawn(async move { sandboxes.create_now(&spec).await })
            .await
            .map_err(SandboxError::CreationTask)?
    }

    async fn create_now(&self, spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        self.negotiate().await?;
        let shared = &self.shared;
        let name = spec.container_name();
        if !shared
            .live
            .insert_within(&spec.id, &name, shared.budget.limit_for(spec.kind))
        {
            return Err(SandboxError::AtCapacity);
        }
        // If this future is dropped (client gone) or fails before the `Sandbox` exists, the
        // container may or may not have been made: remove it by name either way.
        let mut unfinished = UnfinishedCreate {
            cleaner: &shared.cleaner,
            name: Some(name.clone()),
            id: &spec.id,
        };
        let mut body = policy::container_body(&shared.config, spec);
        if let Some(labels) = body.labels.as_mut() {
            labels.insert(policy::LABEL_ENGINE.to_owned(), shared.engine_id.clone());
            if let Some(nodes) = shared.nodes.get() {
                labels.insert(policy::LABEL_NODE.to_owned(), nodes.own.clone());
            }
        }
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = shared
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|err| SandboxError::from_create(err, &spec.image, &shared.config.runtime))?;
        unfinished.name = None;
        shared.created.fetch_add(1, Ordering::Relaxed);
        let mut sandbox = Sandbox {
            sandboxes: self.clone(),
            container_id: created.id,
            id: spec.id.clone(),
            memory_mb: spec.memory_mb,
            runner: Mutex::new(None),
            terminal_session: Arc::default(),
            detached: false,
            reuse: (spec.main == MainProcess::Runner && shared.config.nested())
                .then(|| container::Reuse::new(&spec.language, spec.memory_mb, spec.warms_first())),
        };
        if spec.main == MainProcess::Runner {
            let options = AttachContainerOptionsBuilder::default()
                .stdin(true)
                .stdout(true)
                .stderr(true)
                .stream(true)
                .build();
            let attached = shared
                .docker
                .attach_container(&sandbox.container_id, Some(options))
                .await
                .map_err(SandboxError::from_engine)?;
            *sandbox.runner.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(runner::RunnerIo {
                output: attached.output,
                input: attached.input,
            });
        }
        shared
            .docker
            .start_container(&sandbox.container_id, None)
            .await
            .map_err(SandboxError::from_engine)?;
        Ok(sandbox)
    }

    /// Stops the background tasks and removes every container this process still owns.
    pub async fn shutdown(&self) {
        // Creations still running end in a sandbox that is dropped, i.e. queued for removal:
        // they must finish while the cleaner still takes removals.
        self.shared.creations.close();
        self.shared.creations.wait().await;
        self.shared.stop.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// How many containers this process has created since it started.
    pub fn created_count(&self) -> u64 {
        self.shared.created.load(Ordering::Relaxed)
    }

    /// The sandboxes this process owns by kind and state, and the container counters.
    pub fn tally(&self) -> SandboxTally {
        let live = &self.shared.live;
        SandboxTally {
            by_kind: live.by_kind(),
            created: self.created_count(),
            removed: live.0.removed.load(Ordering::Relaxed),
            reaped: live.0.reaped.load(Ordering::Relaxed),
            engine_errors: ENGINE_ERRORS.load(Ordering::Relaxed),
        }
    }

    /// How many sandboxes this process owns right now (created and not yet removed).
    pub fn owned_count(&self) -> usize {
        self.shared.live.len()
    }

    fn is_live(&self, id: &str) -> bool {
        self.shared.live.contains(id)
    }

    /// runbox's containers (of `kind`, if given) carrying every label of `labels`
    /// (`key=value`); stopped ones too when `all`.
    pub(crate) async fn list(
        &self,
        kind: Option<SandboxKind>,
        labels: &[String],
        all: bool,
    ) -> Result<Vec<bollard::models::ContainerSummary>, SandboxError> {
        self.negotiate().await?;
        let mut filter = vec![format!("{}=true", policy::LABEL_MANAGED)];
        if let Some(kind) = kind {
            filter.push(format!("{}={}", policy::LABEL_KIND, kind.label()));
        }
        filter.extend(labels.iter().cloned());
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(all)
            .filters(&HashMap::from([("label".to_owned(), filter)]))
            .build();
        self.docker()
            .list_containers(Some(options))
            .await
            .map_err(SandboxError::from_engine)
    }
}

/// Removes a container whose creation did not finish, when dropped armed (`name` is `Some`).
struct UnfinishedCreate<'a> {
    cleaner: &'a Cleaner,
    name: Option<String>,
    id: &'a str,
}

impl Drop for UnfinishedCreate<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            self.cleaner.remove(name, self.id.to_owned());
        }
    }
}

impl std::fmt::Debug for Sandboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandboxes")
            .field("owned", &self.owned_count())
            .finish_non_exhaustive()
    }
}

/// A running sandbox of an earlier runbox process, taken back with its labels.
#[derive(Debug)]
pub struct Adopted {
    pub sandbox: Sandbox,
    pub labels: HashMap<String, String>,
}

impl Sandboxes {
    /// Takes back the running sandboxes of `kind` carrying every label of `labels`
    /// (`key=value`), as an earlier runbox process left them; ones that are not running are
    /// removed.
    pub async fn adopt(
        &self,
        kind: SandboxKind,
        labels: &[String],
        memory_mb: u64,
    ) -> Result<Vec<Adopted>, SandboxError> {
        let containers = self.list(Some(kind), labels, true).await?;
        let mut adopted = Vec::new();
        for container in containers {
            let (Some(container_id), Some(labels)) = (container.id, container.labels) else {
                continue;
            };
            let Some(id) = labels.get(policy::LABEL_ID).cloned() else {
                continue;
            };
            let name = container
                .names
                .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_owned()))
                .unwrap_or_else(|| container_id.clone());
            self.shared.live.insert(&id, &name);
            let sandbox = Sandbox {
                sandboxes: self.clone(),
                container_id,
                id,
                memory_mb,
                runner: Mutex::new(None),
                terminal_session: Arc::default(),
                detached: false,
                reuse: None,
            };
            if container.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING) {
                adopted.push(Adopted { sandbox, labels });
            }
            // Not running: dropping it removes it.
        }
        Ok(adopted)
    }
}
