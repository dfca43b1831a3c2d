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
mod exec;
mod host_cgroup;
pub mod images;
pub mod input;
pub mod measure;
mod oom;
pub mod output;
pub mod phase;
pub mod policy;
pub mod pool;
pub mod runner;
pub mod seccomp;
pub mod terminal;
mod work_dir;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerUpdateBody;
use bollard::query_parameters::{AttachContainerOptionsBuilder, CreateContainerOptionsBuilder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cleanup::Lifetimes;
pub use exec::{
    ExecEnd, ExecOutcome, ExecSpec, LiveInput, OutputSink, Push, SIGKILL_EXIT_CODE, Stream,
    unpack_then,
};
pub use input::{InputFull, InputSender, input_channel};
pub use output::{CollectedOutput, OutputCollector, Utf8Decoder};
pub use phase::{LastingPhaseReport, PhaseReport, PhaseUsage};
pub use policy::{MainProcess, SandboxKind, SandboxSpec};
pub use runner::RunnerJob;

use crate::config::{EngineConfig, SandboxConfig};
use cleanup::Cleaner;
use oom::OomWatch;

/// Failures of runbox's own machinery (never of the user's program).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the container engine cannot be reached: {0}")]
    EngineUnavailable(String),
    #[error("image {0} is missing; run `runbox images build`")]
    ImageMissing(String),
    #[error("container engine error: {0}")]
    Engine(String),
    /// A work dir could not be carried into another sandbox (e.g. its files do not fit the
    /// new one's limits); the source sandbox is as it was.
    #[error("the work dir could not be copied: {0}")]
    WorkDirNotCopied(work_dir::CopyFailed),
    /// Every sandbox this process may own (`limits.max_sandboxes`) exists already.
    #[error("every sandbox this server may keep is in use; retry later")]
    AtCapacity,
}

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

impl SandboxError {
    fn from_engine(err: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        ENGINE_ERRORS.fetch_add(1, Ordering::Relaxed);
        match err {
            E::DockerResponseServerError {
                status_code,
                message,
            } => SandboxError::Engine(format!("{status_code}: {message}")),
            E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::RequestTimeoutError
            | E::SocketNotFoundError(_) => SandboxError::EngineUnavailable(err.to_string()),
            other => SandboxError::Engine(other.to_string()),
        }
    }

    /// Create answers 404 when the image is not there.
    fn from_create(err: bollard::errors::Error, image: &str) -> Self {
        match err {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => SandboxError::ImageMissing(image.to_owned()),
            other => Self::from_engine(other),
        }
    }
}

/// See [`Sandbox::end_programs`]. `$1` is a process session to spare (a terminal's), or empty.
/// Every other process of this uid is first stopped, so that none can fork while the rest are
/// found, then killed once all are stopped. Shell builtins only, so the script needs no pid of
/// its own beyond the exec's (a fork bomb may hold every other one). The loop ends when no
/// process of this uid but the script, init and the spared session is left; killed processes stay
/// listed as zombies until the engine's init reaps them, a moment later.
const END_PROGRAMS_SCRIPT: &str = r#"me=$$
spare=$1
uid=
while read -r key value rest; do
  if [ "$key" = Uid: ]; then uid=$value; break; fi
done < /proc/self/status
sig=STOP
while :; do
  found=0
  running=0
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$me" ] || [ "$pid" = 1 ] && continue
    owner=
    while read -r key value rest; do
      if [ "$key" = Uid: ]; then owner=$value; break; fi
    done 2>/dev/null < "$p/status"
    [ "$owner" = "$uid" ] || continue
    read -r stat 2>/dev/null < "$p/stat" || continue
    # After the command name: state, parent, group, session (numbers: no glob to expand).
    set -- ${stat##*) }
    [ -n "$spare" ] && [ "$4" = "$spare" ] && continue
    found=1
    case $1 in T|t|Z|X) ;; *) running=1 ;; esac
    kill -$sig "$pid" 2>/dev/null
  done
  [ "$found" = 0 ] && exit 0
  [ "$running" = 0 ] && sig=KILL
done"#;
/// Work-dir copies (a session moving to another image, a gVisor sandbox changing its memory
/// cap) running at once; more wait their turn. Each keeps two tar processes busy.
pub const MAX_CONCURRENT_COPIES: usize = 2;
/// A fork bomb at the pids cap is ended within a few rounds; this only bounds a broken engine.
const END_PROGRAMS_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints CPU nanoseconds and peak memory bytes of the sandbox's cgroup, one per line
/// (cgroup v1 layout first, v2 as the fallback; 0 where a value is not available).
const CGROUP_USAGE_SCRIPT: &str = "if [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then \
    cat /sys/fs/cgroup/cpuacct/cpuacct.usage /sys/fs/cgroup/memory/memory.max_usage_in_bytes; \
    else awk '/^usage_usec/ { printf \"%d000\\n\", $2 }' /sys/fs/cgroup/cpu.stat; \
    cat /sys/fs/cgroup/memory.peak 2>/dev/null || echo 0; fi";

pub(crate) fn parse_cgroup_usage(text: &str) -> Usage {
    let mut values = text
        .lines()
        .map(|l| l.trim().parse::<u64>().ok().filter(|&v| v > 0));
    Usage {
        cpu_ns: values.next().flatten(),
        memory_peak_bytes: values.next().flatten(),
    }
}

/// Resource use of a sandbox as the engine's cgroup accounting reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time (user + system) of everything that ran in the sandbox so far.
    pub cpu_ns: Option<u64>,
    /// Peak memory of the sandbox so far (cgroup v1 only; v2 engines do not report it).
    pub memory_peak_bytes: Option<u64>,
}

/// A cheap, clonable handle to the engine and the sandbox machinery.
#[derive(Clone)]
pub struct Sandboxes {
    shared: Arc<Shared>,
}

struct Shared {
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
}

impl Sandboxes {
    /// Connects to the engine (negotiating the API version) and starts the background tasks:
    /// the cleanup queue and the OOM event watch. The orphan sweep is the server's to start
    /// ([`Sandboxes::start_sweep`]): a tool sharing the engine must not judge others' sandboxes.
    pub async fn connect(
        engine: &EngineConfig,
        config: SandboxConfig,
        budget: SandboxBudget,
    ) -> Result<Sandboxes, SandboxError> {
        let docker = connect_docker(engine)?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let live = LiveSet::default();
        let cleaner = Cleaner::start(docker.clone(), live.clone(), &tasks, stop.clone());
        let oom = OomWatch::start(docker.clone(), &tasks, stop.clone());
        let sandboxes = Sandboxes {
            shared: Arc::new(Shared {
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
            }),
        };
        if let Err(err) = sandboxes.negotiate().await {
            tracing::warn!(error = %err, "the container engine does not answer yet");
        }
        Ok(sandboxes)
    }

    /// Starts the periodic removal of runbox containers no live sandbox owns and that are
    /// older than any of their kind can be (see [`Lifetimes`]); it stops with the sandboxes.
    pub fn start_sweep(&self, lifetimes: Lifetimes) {
        cleanup::start_sweeper(self.clone(), lifetimes);
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
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
            .map_err(|e| SandboxError::Engine(format!("sandbox creation task failed: {e}")))?
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
        let body = policy::container_body(&shared.config, spec);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = shared
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|err| SandboxError::from_create(err, &spec.image))?;
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

/// Builds the client. The engine may be down right now: that is not fatal (readiness says
/// so); the API version is negotiated as soon as the engine answers.
fn connect_docker(engine: &EngineConfig) -> Result<Docker, SandboxError> {
    if engine.host.is_empty() {
        Docker::connect_with_defaults()
    } else {
        Docker::connect_with_host(&engine.host)
    }
    .map_err(SandboxError::from_engine)
}

/// Sandboxes this process owns: runbox id -> container name (and whether its removal has
/// begun), with the counts of removals for the metrics.
#[derive(Clone, Default)]
struct LiveSet(Arc<LiveInner>);

#[derive(Default)]
struct LiveInner {
    owned: Mutex<HashMap<String, Owned>>,
    /// Containers removed after their owner let go (or at shutdown).
    removed: AtomicU64,
    /// Orphans removed by the sweep.
    reaped: AtomicU64,
}

struct Owned {
    container_name: String,
    removing: bool,
}

impl LiveSet {
    /// Inserts unless `limit` sandboxes are owned already; says whether it did.
    fn insert_within(&self, id: &str, container_name: &str, limit: usize) -> bool {
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

    fn insert(&self, id: &str, container_name: &str) {
        self.lock().insert(
            id.to_owned(),
            Owned {
                container_name: container_name.to_owned(),
                removing: false,
            },
        );
    }

    /// No longer this process's (kept for the next start), not removed.
    fn release(&self, id: &str) {
        self.lock().remove(id);
    }

    fn mark_removing(&self, id: &str) {
        if let Some(owned) = self.lock().get_mut(id) {
            owned.removing = true;
        }
    }

    /// Its container is gone.
    fn removed(&self, id: &str) {
        self.lock().remove(id);
        self.0.removed.fetch_add(1, Ordering::Relaxed);
    }

    fn reaped(&self, count: usize) {
        self.0.reaped.fetch_add(count as u64, Ordering::Relaxed);
    }

    fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Every (id, container name) still owned.
    fn snapshot(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(id, owned)| (id.clone(), owned.container_name.clone()))
            .collect()
    }

    /// Owned sandboxes by kind (from the container name) and state.
    fn by_kind(&self) -> BTreeMap<(String, &'static str), usize> {
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

/// Engine calls that failed, process-wide (every failure passes through
/// [`SandboxError::from_engine`]).
static ENGINE_ERRORS: AtomicU64 = AtomicU64::new(0);

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

/// A started sandbox container. Dropping it removes the container (in the background).
pub struct Sandbox {
    sandboxes: Sandboxes,
    container_id: String,
    id: String,
    /// The current memory cap.
    memory_mb: u64,
    /// The runner's attached streams, until its one job is sent. In a mutex only so that
    /// `&Sandbox` is `Send` (the streams are not `Sync`); it is only reached through `&mut`.
    runner: Mutex<Option<runner::RunnerIo>>,
    /// The process session of the terminal opened in this sandbox while its program runs
    /// (0: none), which [`Sandbox::end_programs`] spares.
    terminal_session: Arc<AtomicU32>,
    /// Left running on purpose (see [`Sandbox::detach`]): dropping does not remove it.
    detached: bool,
}

impl Sandbox {
    /// runbox's id of this sandbox.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current memory cap.
    pub fn memory_mb(&self) -> u64 {
        self.memory_mb
    }

    /// Sends the runner its one job and collects the program's output; see [`runner`].
    pub async fn run_main(
        &mut self,
        job: RunnerJob,
        sink: &mut dyn OutputSink,
    ) -> Result<ExecOutcome, SandboxError> {
        let io = self
            .runner
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .ok_or_else(|| {
                SandboxError::Engine("the sandbox's runner has already run a job".to_owned())
            })?;
        runner::run(&self.sandboxes.shared, &self.container_id, io, job, sink).await
    }

    /// Runs one command inside the sandbox; see [`ExecSpec`].
    pub async fn exec(
        &self,
        spec: ExecSpec,
        sink: &mut dyn OutputSink,
    ) -> Result<ExecOutcome, SandboxError> {
        exec::run(&self.sandboxes.shared, &self.container_id, spec, sink).await
    }

    /// CPU time and peak memory of the sandbox so far, read from its cgroup on the host when
    /// runbox can see it (microseconds), else from inside the sandbox (one exec).
    ///
    /// Not the engine's stats endpoint: it answers on the engine's one-second collection tick,
    /// which costs up to a second per call (measured: a python hello world took 1004 ms with
    /// it and about 160 ms without).
    pub async fn usage(&self) -> Result<Usage, SandboxError> {
        if let Some(usage) = host_cgroup::read(&self.container_id).await {
            return Ok(usage);
        }
        self.usage_from_inside().await
    }

    /// Like [`Sandbox::usage`], from the host's cgroup files only: `None` where runbox cannot
    /// see them.
    pub async fn usage_on_host(&self) -> Option<Usage> {
        host_cgroup::read(&self.container_id).await
    }

    /// Starts a new peak-memory measurement (cgroup v1 on the host only; elsewhere the peak
    /// keeps covering everything so far). Returns whether it did.
    /// With `reclaim`, the page cache charged to the sandbox so far (a compiler's binaries and
    /// libraries) is dropped first, so it does not count toward the new peak.
    pub async fn reset_memory_peak(&self, reclaim: bool) -> bool {
        host_cgroup::reset_peak(&self.container_id, reclaim).await
    }

    /// CPU time and peak memory read from the sandbox's own cgroup files, through an exec (the
    /// cgroup is mounted read-only in the container).
    async fn usage_from_inside(&self) -> Result<Usage, SandboxError> {
        let mut output = OutputCollector::new(256);
        let outcome = self
            .exec(
                ExecSpec {
                    cmd: ["sh", "-c", CGROUP_USAGE_SCRIPT].map(String::from).to_vec(),
                    stdin: bytes::Bytes::new(),
                    timeout: Duration::from_secs(5),
                },
                &mut output,
            )
            .await?;
        if outcome.end != (ExecEnd::Exited { code: 0 }) {
            return Ok(Usage::default());
        }
        Ok(parse_cgroup_usage(&output.finish().stdout_text()))
    }

    /// Ends every process running as the program user (whatever it did to outlive its run:
    /// `setsid`, `nohup`, a double fork, a SIGTERM trap), leaving the keeper of a
    /// [`MainProcess::Keeper`] sandbox alive, and the terminal's program (see
    /// [`Sandbox::open_terminal`]) with every process of its session. One exec.
    pub async fn end_programs(&self) -> Result<(), SandboxError> {
        let spared = self.terminal_session.load(Ordering::Acquire);
        self.end_processes((spared != 0).then_some(spared)).await
    }

    /// Kills every process in the sandbox at once (the container stops; dropping the sandbox
    /// still removes it). For a throwaway sandbox whose program did not end by itself: what it
    /// started must be gone before its result is reported, not a removal later.
    pub async fn kill(&self) -> Result<(), SandboxError> {
        let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self
            .sandboxes
            .shared
            .docker
            .kill_container(&self.container_id, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            // 409: not running any more, which is what was asked for.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(SandboxError::from_engine(e)),
        }
    }

    /// As [`Sandbox::end_programs`], the terminal's program included.
    pub async fn end_all_programs(&self) -> Result<(), SandboxError> {
        self.terminal_session.store(0, Ordering::Release);
        self.end_processes(None).await
    }

    async fn end_processes(&self, spared_session: Option<u32>) -> Result<(), SandboxError> {
        let mut output = OutputCollector::new(256);
        let spared = spared_session.map_or_else(String::new, |s| s.to_string());
        let outcome = self
            .exec(
                ExecSpec {
                    cmd: vec![
                        "sh".to_owned(),
                        "-c".to_owned(),
                        END_PROGRAMS_SCRIPT.to_owned(),
                        "end-programs".to_owned(),
                        spared,
                    ],
                    stdin: bytes::Bytes::new(),
                    timeout: END_PROGRAMS_TIMEOUT,
                },
                &mut output,
            )
            .await?;
        match outcome.end {
            ExecEnd::Exited { code: 0 } => Ok(()),
            other => Err(SandboxError::Engine(format!(
                "ending the programs of a sandbox did not finish: {other:?}"
            ))),
        }
    }

    /// This sandbox with the memory cap of `replacement`. The engine changes the cap in place
    /// under runc; gVisor cannot change a running sandbox's limits, so there a new sandbox is
    /// made from `replacement`, this one's work dir is copied into it, and this one is removed.
    pub async fn with_memory_limit(
        mut self,
        replacement: &SandboxSpec,
    ) -> Result<Sandbox, SandboxError> {
        if self.memory_mb == replacement.memory_mb {
            return Ok(self);
        }
        let config = &self.sandboxes.shared.config;
        if !config.is_gvisor() {
            self.set_memory_limit(replacement.memory_mb).await?;
            return Ok(self);
        }
        let fresh = self.sandboxes.create(replacement).await?;
        self.copy_work_dir_into(&fresh).await?;
        Ok(fresh)
    }

    /// Changes the memory cap (and the equal memory+swap cap) of the running sandbox.
    async fn set_memory_limit(&mut self, memory_mb: u64) -> Result<(), SandboxError> {
        let bytes = memory_mb as i64 * 1024 * 1024;
        let update = ContainerUpdateBody {
            memory: Some(bytes),
            memory_swap: Some(bytes),
            ..Default::default()
        };
        self.sandboxes
            .shared
            .docker
            .update_container(&self.container_id, update)
            .await
            .map_err(SandboxError::from_engine)?;
        self.memory_mb = memory_mb;
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.sandboxes
            .shared
            .cleaner
            .remove(self.container_id.clone(), self.id.clone());
    }
}

impl Sandbox {
    /// Lets the container outlive this process (a session kept across a restart): it leaves
    /// the live set and is not removed. The next start takes it back ([`Sandboxes::adopt`]),
    /// or the sweep removes it once it is older than any session can be.
    pub fn detach(mut self) {
        self.detached = true;
        self.sandboxes.shared.live.release(&self.id);
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
            };
            if container.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING) {
                adopted.push(Adopted { sandbox, labels });
            }
            // Not running: dropping it removes it.
        }
        Ok(adopted)
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("id", &self.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_usage_lines() {
        assert_eq!(
            parse_cgroup_usage("24093943\n3821568\n"),
            Usage {
                cpu_ns: Some(24_093_943),
                memory_peak_bytes: Some(3_821_568)
            }
        );
        assert_eq!(
            parse_cgroup_usage("5000\n0\n"),
            Usage {
                cpu_ns: Some(5000),
                memory_peak_bytes: None
            }
        );
        assert_eq!(parse_cgroup_usage(""), Usage::default());
    }
}
