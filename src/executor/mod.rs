//! Jobs: a validated [`Job`] in, a [`RunOutcome`] out. Owns the meaning of what happened in
//! the sandbox (success, timeout, OOM, ...) and the phases of a run (unpack, compile, run).

pub mod admission;
mod batch;
pub mod files;
pub mod job;
pub mod live;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;

pub use admission::Overloaded;
pub use batch::TestOutcome;
pub use job::{Job, JobError, JobRequest, TestCase};
pub use live::{LiveRun, Phase, RunEvent};
// What the layers above see of the sandbox: the executor is their one door to it.
pub use crate::sandbox::{InputFull, InputSender, SandboxError, Stream, input_channel};

use crate::config::{LimitsConfig, PoolConfig};
use crate::languages::{Catalogue, Language};
use tokio_util::sync::CancellationToken;

use crate::metrics::{LiveSnapshot, LiveState, Metrics};
use crate::sandbox::pool::{PoolSlot, WarmPool};
use crate::sandbox::{
    CollectedOutput, ExecEnd, ExecOutcome, ExecSpec, MainProcess, OutputCollector, RunnerJob,
    SIGKILL_EXIT_CODE, Sandbox, SandboxKind, SandboxSpec, Sandboxes, unpack_then,
};
use admission::Admission;
use live::StreamingCollector;

/// How one phase (compile or run) of a job ended, as the contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Success,
    RuntimeError,
    CompileError,
    Timeout,
    MemoryLimitExceeded,
    OutputLimitExceeded,
}

impl RunStatus {
    /// The contract's name of the status (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::RuntimeError => "runtime_error",
            RunStatus::CompileError => "compile_error",
            RunStatus::Timeout => "timeout",
            RunStatus::MemoryLimitExceeded => "memory_limit_exceeded",
            RunStatus::OutputLimitExceeded => "output_limit_exceeded",
        }
    }
}

/// One phase's result.
#[derive(Debug, Clone)]
pub struct PhaseOutcome {
    pub status: RunStatus,
    pub exit_code: Option<i64>,
    pub signal: Option<&'static str>,
    pub output: CollectedOutput,
    pub duration: Duration,
    /// The program did not end by itself: a limit or a kill stopped it, and processes may
    /// still be running in its sandbox.
    pub cut_short: bool,
}

/// A whole job's result.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub id: String,
    pub language: String,
    pub version: String,
    pub status: RunStatus,
    /// The run phase; `None` when the compile failed and the program never ran.
    pub run: Option<PhaseOutcome>,
    pub compile: Option<PhaseOutcome>,
    pub cpu_time: Option<Duration>,
    pub memory_kb: Option<u64>,
    /// One result per input of a `tests` job (then `run` is the first that did not succeed
    /// or pass, else the last); `None` for a job with one `input`.
    pub tests: Option<Vec<TestOutcome>>,
}

/// A language as `GET /languages` shows it.
#[derive(Debug, Clone)]
pub struct LanguageInfo {
    pub language: Arc<Language>,
    /// `None` while the image is missing.
    pub version: Option<String>,
}

/// Why a job could not be run (a program's own failure is a [`RunOutcome`], not this).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// runbox is shutting down and its grace period for running jobs is over.
    #[error("runbox is shutting down")]
    ShuttingDown,
}

/// A run inside a long-lived sandbox.
#[derive(Debug, Clone)]
pub struct InSandboxRun {
    pub outcome: RunOutcome,
    /// The sandbox's memory ran out or its programs could not all be ended: replace it.
    pub sandbox_unusable: bool,
}

/// Why the service cannot take jobs right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

/// Runs jobs. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    sandboxes: Sandboxes,
    catalogue: Arc<Catalogue>,
    /// language id -> version label of its image; filled at start and by readiness checks,
    /// so the hot path never inspects an image.
    versions: Arc<RwLock<HashMap<String, String>>>,
    admission: Arc<Admission>,
    pool: WarmPool,
    metrics: Arc<Metrics>,
    /// Cancelled when shutdown's grace period ends: every job still waiting or running is
    /// dropped (its sandbox removed by its owner) and answered [`RunError::ShuttingDown`].
    stop_jobs: CancellationToken,
    /// Tasks that carry a job outside its request (a streamed run's pump); shutdown waits for
    /// them before it removes the sandboxes.
    tasks: tokio_util::task::TaskTracker,
}

/// What the metrics read at scrape time.
#[derive(Debug)]
struct LiveParts {
    admission: Arc<Admission>,
    pool: WarmPool,
    sandboxes: Sandboxes,
}

impl LiveState for LiveParts {
    fn snapshot(&self) -> LiveSnapshot {
        LiveSnapshot {
            jobs_running: self.admission.running(),
            jobs_queued: self.admission.queued(),
            sandboxes_owned: self.sandboxes.owned_count(),
            pools: self.pool.stats(),
            sandboxes: self.sandboxes.tally(),
        }
    }
}

impl Executor {
    /// Starts the warm pool (each language's sandboxes get the memory its jobs start with: the
    /// compiler's when it needs more than the program).
    pub fn new(
        sandboxes: Sandboxes,
        catalogue: Catalogue,
        limits: &LimitsConfig,
        pool: &PoolConfig,
    ) -> Executor {
        let slots = catalogue
            .iter()
            .map(|language| PoolSlot {
                language: language.id.clone(),
                image: language.image_ref(),
                memory_mb: sandbox_memory_mb(language, language.memory_mb),
                size: pool.size(&language.id),
            })
            .collect();
        let warm = WarmPool::start(&sandboxes, slots, pool.max_idle(), limits.max_sandboxes);
        let admission = Arc::new(Admission::new(
            limits.running_jobs(),
            limits.max_queued_jobs,
        ));
        let metrics = Arc::new(Metrics::new(Arc::new(LiveParts {
            admission: admission.clone(),
            pool: warm.clone(),
            sandboxes: sandboxes.clone(),
        })));
        Executor {
            sandboxes,
            catalogue: Arc::new(catalogue),
            versions: Arc::default(),
            admission,
            pool: warm,
            metrics,
            stop_jobs: CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Runs `work` (a streamed run's pump) as a task shutdown waits for.
    pub fn spawn_tracked<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(work);
    }

    /// Ends every job still queued or running: shutdown's grace period is over.
    pub fn stop_jobs(&self) {
        self.stop_jobs.cancel();
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Waits for the tracked tasks (their jobs end by now: see [`Executor::stop_jobs`]), stops
    /// the pool, then removes every sandbox this process still owns.
    pub async fn shutdown(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.pool.shutdown().await;
        self.sandboxes.shutdown().await;
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub fn sandboxes(&self) -> &Sandboxes {
        &self.sandboxes
    }

    /// Checks the engine and every language image, refreshing the cached versions.
    pub async fn check_ready(&self) -> Result<(), NotReady> {
        self.sandboxes.ping().await.map_err(|_| {
            NotReady("the container engine does not answer; start it (see README)".to_owned())
        })?;
        let mut missing = Vec::new();
        for language in self.catalogue.iter() {
            match self.sandboxes.image_info(language).await {
                Ok(Some(info)) => {
                    self.versions
                        .write()
                        .expect("versions lock")
                        .insert(language.id.clone(), info.version);
                }
                Ok(None) => missing.push(language.image_ref()),
                Err(_) => {
                    return Err(NotReady(
                        "the container engine does not answer; start it (see README)".to_owned(),
                    ));
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(NotReady(format!(
                "missing image(s) {}; run `runbox images build`",
                missing.join(", ")
            )))
        }
    }

    /// Every language with its version (read from its image).
    pub fn languages(&self) -> Vec<LanguageInfo> {
        let versions = self.versions.read().expect("versions lock");
        self.catalogue
            .iter()
            .map(|language| LanguageInfo {
                language: language.clone(),
                version: versions.get(&language.id).cloned(),
            })
            .collect()
    }

    pub fn validate(&self, request: JobRequest) -> Result<Job, JobError> {
        Job::validate(&self.catalogue, request)
    }

    /// Runs a job in a fresh sandbox (from the warm pool when it has one), which is removed
    /// when this returns or is dropped. Waits for a running slot first.
    /// A job with `tests` is compiled once and run against each input, in a sandbox of its own.
    pub async fn run(&self, job: Job) -> Result<RunOutcome, RunError> {
        let language = job.language.id.clone();
        if !job.tests.is_empty() {
            return self
                .admitted(&language, self.run_tests_admitted(job), |outcome| {
                    outcome.status
                })
                .await;
        }
        self.admitted(&language, self.run_admitted(job, None), |outcome| {
            outcome.status
        })
        .await
    }

    /// As [`Executor::run`], reporting the output as it comes and taking stdin and a kill
    /// while it runs (see [`LiveRun`]).
    pub async fn run_live(&self, job: Job, live: LiveRun) -> Result<RunOutcome, RunError> {
        let language = job.language.id.clone();
        self.admitted(&language, self.run_admitted(job, Some(live)), |outcome| {
            outcome.status
        })
        .await
    }

    /// Runs `work` in a running slot (waiting in the queue, or refused when it is full),
    /// counting it in the metrics.
    async fn admitted<T>(
        &self,
        language: &str,
        work: impl std::future::Future<Output = Result<T, SandboxError>>,
        status: impl Fn(&T) -> RunStatus,
    ) -> Result<T, RunError> {
        tokio::select! {
            done = self.admitted_until_stopped(language, work, status) => done,
            () = self.stop_jobs.cancelled() => Err(RunError::ShuttingDown),
        }
    }

    async fn admitted_until_stopped<T>(
        &self,
        language: &str,
        work: impl std::future::Future<Output = Result<T, SandboxError>>,
        status: impl Fn(&T) -> RunStatus,
    ) -> Result<T, RunError> {
        let arrived = std::time::Instant::now();
        let _slot = match self.admission.enter().await {
            Ok(slot) => slot,
            Err(overloaded) => {
                self.metrics.overloaded();
                return Err(overloaded.into());
            }
        };
        self.metrics.admitted_after(arrived.elapsed());
        let started = std::time::Instant::now();
        // The request's log line names the job's language and outcome (a no-op outside one).
        let span = tracing::Span::current();
        span.record("language", language);
        let done = work.await?;
        let outcome = status(&done).as_str();
        span.record("outcome", outcome);
        self.metrics
            .job_finished(language, outcome, started.elapsed());
        Ok(done)
    }

    async fn run_admitted(
        &self,
        job: Job,
        live: Option<LiveRun>,
    ) -> Result<RunOutcome, SandboxError> {
        let language = job.language.clone();
        let spec = job_sandbox_spec(
            &job,
            job.id.clone(),
            sandbox_memory_mb(&language, job.memory_mb),
            MainProcess::Runner,
        );
        let (sandbox, _lease) = self.pool.lease(&self.sandboxes, &spec).await?;
        let (events, live_stdin, kill) = match live {
            Some(live) => (Some(live.events), live.stdin, live.kill),
            None => (None, None, tokio_util::sync::CancellationToken::new()),
        };
        if let Some(events) = &events {
            let _ = events.send(RunEvent::Started { id: job.id.clone() });
        }
        let streamed = |phase| events.as_ref().map(|e| (e, phase));
        let output_limit = self.sandboxes.config().output_limit_bytes;
        let archive = Bytes::from(files::pack(&job.files));
        let mut argv = job.command(&language.run);
        argv.extend(job.args.iter().cloned());

        let (compile, archive) = match &language.compile {
            Some(compile_cmd) => {
                let compiling = self.compile_phase(
                    &sandbox,
                    &job,
                    compile_cmd,
                    archive,
                    streamed(Phase::Compile),
                );
                let phase = tokio::select! {
                    phase = compiling => phase?,
                    // Killed while compiling: the program never ran.
                    () = kill.cancelled() => {
                        return Ok(self.outcome(&job, RunStatus::RuntimeError, None, None));
                    }
                };
                if phase.status != RunStatus::Success {
                    return Ok(self.outcome(&job, RunStatus::CompileError, None, Some(phase)));
                }
                // The files are in place already.
                (Some(phase), Bytes::new())
            }
            None => (None, archive),
        };
        // The program runs with its own memory cap (the compiler's may have been larger).
        let run_cap = job_sandbox_spec(
            &job,
            format!("{}.run", job.id),
            job.memory_mb,
            MainProcess::Runner,
        );
        let runner_job = RunnerJob {
            archive,
            argv,
            stdin: job.input.clone(),
            live_stdin,
            timeout: job.timeout,
            kill,
        };
        let mut output = StreamingCollector::new(output_limit, streamed(Phase::Run));
        // One call: the sandbox is removed as it returns, nothing the program started left.
        let report = sandbox
            .run_program(&run_cap, runner_job, &mut output, compile.is_some())
            .await?;
        let phase = phase_outcome(&report.outcome, output.finish());
        let mut outcome = self.outcome(&job, phase.status, Some(phase), compile);
        outcome.cpu_time = report.usage.cpu_time;
        outcome.memory_kb =
            memory_kb_at_oom(outcome.status, report.usage.memory_peak_kb, job.memory_mb);
        Ok(outcome)
    }

    /// Runs a job inside a long-lived sandbox (a session's), through execs: the files are
    /// unpacked into its work dir next to what earlier runs left there, each phase has its own
    /// limits, and afterwards every process the run started is ended (the sandbox lives on).
    /// Waits for a running slot first, like [`Executor::run`].
    pub async fn run_in(&self, sandbox: &Sandbox, job: Job) -> Result<InSandboxRun, RunError> {
        let language = job.language.id.clone();
        self.admitted(&language, self.run_in_admitted(sandbox, job), |run| {
            run.outcome.status
        })
        .await
    }

    async fn run_in_admitted(
        &self,
        sandbox: &Sandbox,
        job: Job,
    ) -> Result<InSandboxRun, SandboxError> {
        let language = job.language.clone();
        let output_limit = self.sandboxes.config().output_limit_bytes;
        let archive = Bytes::from(files::pack(&job.files));
        let mut argv = job.command(&language.run);
        argv.extend(job.args.iter().cloned());
        let (compile, run_spec) = match &language.compile {
            Some(compile_cmd) => {
                let phase = self
                    .compile_phase(sandbox, &job, compile_cmd, archive, None)
                    .await?;
                if phase.status != RunStatus::Success {
                    let unusable = phase.status == RunStatus::MemoryLimitExceeded
                        || sandbox.end_programs().await.is_err();
                    return Ok(InSandboxRun {
                        outcome: self.outcome(&job, RunStatus::CompileError, None, Some(phase)),
                        sandbox_unusable: unusable,
                    });
                }
                let spec = ExecSpec {
                    cmd: argv,
                    stdin: job.input.clone(),
                    timeout: job.timeout,
                };
                (Some(phase), spec)
            }
            None => {
                let mut stdin = bytes::BytesMut::with_capacity(archive.len() + job.input.len());
                stdin.extend_from_slice(&archive);
                stdin.extend_from_slice(&job.input);
                let spec = ExecSpec {
                    cmd: unpack_then(archive.len(), &argv),
                    stdin: stdin.freeze(),
                    timeout: job.timeout,
                };
                (None, spec)
            }
        };
        let mut output = StreamingCollector::new(output_limit, None);
        // One call: the phase, its usage, and every process it started ended (a sandbox whose
        // memory ran out, or whose programs could not be ended, is not trusted again).
        let lasting = sandbox
            .run_lasting_phase(run_spec, &mut output, compile.is_some())
            .await?;
        let phase = phase_outcome(&lasting.report.outcome, output.finish());
        let unusable = phase.status == RunStatus::MemoryLimitExceeded || !lasting.programs_ended;
        let mut outcome = self.outcome(&job, phase.status, Some(phase), compile);
        outcome.cpu_time = lasting.report.usage.cpu_time;
        outcome.memory_kb = memory_kb_at_oom(
            outcome.status,
            lasting.report.usage.memory_peak_kb,
            job.memory_mb,
        );
        Ok(InSandboxRun {
            outcome,
            sandbox_unusable: unusable,
        })
    }

    /// Unpacks the job's files and compiles them (one exec), counted in the metrics.
    async fn compile_phase(
        &self,
        sandbox: &Sandbox,
        job: &Job,
        compile_cmd: &[String],
        archive: Bytes,
        streamed: Streamed<'_>,
    ) -> Result<PhaseOutcome, SandboxError> {
        let spec = ExecSpec {
            cmd: unpack_then(archive.len(), &job.command(compile_cmd)),
            stdin: archive,
            timeout: job.language.compile_timeout(),
        };
        self.metrics.compiled(&job.language.id);
        let output_limit = self.sandboxes.config().output_limit_bytes;
        let mut phase = exec_phase(sandbox, spec, output_limit, streamed).await?;
        if phase.status == RunStatus::RuntimeError {
            // The compiler itself failed: that is what a compile error is.
            phase.status = RunStatus::CompileError;
        }
        Ok(phase)
    }

    fn outcome(
        &self,
        job: &Job,
        status: RunStatus,
        run: Option<PhaseOutcome>,
        compile: Option<PhaseOutcome>,
    ) -> RunOutcome {
        let version = self
            .versions
            .read()
            .expect("versions lock")
            .get(&job.language.id)
            .cloned()
            .unwrap_or_else(|| "unknown".to_owned());
        RunOutcome {
            id: job.id.clone(),
            language: job.language.id.clone(),
            version,
            status,
            run,
            compile,
            cpu_time: None,
            memory_kb: None,
            tests: None,
        }
    }
}

/// The sandbox `id` of `job`, of `memory_mb`, whose main process is `main`.
fn job_sandbox_spec(job: &Job, id: String, memory_mb: u64, main: MainProcess) -> SandboxSpec {
    SandboxSpec {
        kind: SandboxKind::Job,
        id,
        image: job.language.image_ref(),
        language: job.language.id.clone(),
        memory_mb,
        main,
        work_dir_mb: None,
        labels: Vec::new(),
    }
}

/// The memory a job's sandbox starts with: the compiler's when it needs more than the program
/// (the cap is lowered to the program's before it starts).
fn sandbox_memory_mb(language: &Language, run_memory_mb: u64) -> u64 {
    match &language.compile {
        Some(_) => language.compile_memory_mb().max(run_memory_mb),
        None => run_memory_mb,
    }
}

/// Where a phase's output is streamed to, if anywhere.
type Streamed<'a> = Option<(&'a tokio::sync::mpsc::UnboundedSender<RunEvent>, Phase)>;

/// Runs one phase through an exec (the compile) and says what its end means.
async fn exec_phase(
    sandbox: &Sandbox,
    spec: ExecSpec,
    output_limit: usize,
    streamed: Streamed<'_>,
) -> Result<PhaseOutcome, SandboxError> {
    let mut output = StreamingCollector::new(output_limit, streamed);
    let outcome = sandbox.exec(spec, &mut output).await?;
    Ok(phase_outcome(&outcome, output.finish()))
}

fn phase_outcome(outcome: &ExecOutcome, output: OutputCollector) -> PhaseOutcome {
    let (status, exit_code, signal) = classify(outcome);
    PhaseOutcome {
        status,
        exit_code,
        signal,
        output: output.finish(),
        duration: outcome.duration,
        cut_short: !matches!(outcome.end, ExecEnd::Exited { .. }),
    }
}

/// The contract's meaning of how an exec ended: status, exit code, signal name.
pub fn classify(outcome: &ExecOutcome) -> (RunStatus, Option<i64>, Option<&'static str>) {
    match outcome.end {
        // The sandbox is killed (removed) right after: the program dies by SIGKILL.
        ExecEnd::TimedOut => (RunStatus::Timeout, None, Some("SIGKILL")),
        ExecEnd::Stopped => (RunStatus::OutputLimitExceeded, None, Some("SIGKILL")),
        // The client's `kill`: a signal other than the limits, as the contract counts it.
        ExecEnd::Killed => (RunStatus::RuntimeError, None, Some("SIGKILL")),
        ExecEnd::Exited { code: 0 } if !outcome.oom_killed => (RunStatus::Success, Some(0), None),
        // The OOM killer ended a process of the program (a child, when the program itself
        // exited 0): memory_limit_exceeded under every runtime. gVisor's whole sandbox is one
        // host process, so there any OOM kill ends the program itself.
        ExecEnd::Exited { code } => {
            let signal = signal_name(code);
            let status = if outcome.oom_killed {
                RunStatus::MemoryLimitExceeded
            } else {
                RunStatus::RuntimeError
            };
            match signal {
                Some(name) => (status, None, Some(name)),
                None => (status, Some(code), None),
            }
        }
    }
}

/// The peak of a run the OOM killer struck is its cap, whether or not the cgroup could still be
/// read (under gVisor the OOM kill ends the whole sandbox, and its cgroup with it).
fn memory_kb_at_oom(status: RunStatus, measured: Option<u64>, memory_mb: u64) -> Option<u64> {
    match (status, measured) {
        (RunStatus::MemoryLimitExceeded, None) => Some(memory_mb * 1024),
        _ => measured,
    }
}

/// The engine reports a process killed by signal N as exit code 128 + N.
fn signal_name(code: i64) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    debug_assert_eq!(NAMES[(SIGKILL_EXIT_CODE - 129) as usize], "SIGKILL");
    let index = usize::try_from(code.checked_sub(129)?).ok()?;
    NAMES.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i64, oom_killed: bool) -> ExecOutcome {
        ExecOutcome {
            end: ExecEnd::Exited { code },
            duration: Duration::ZERO,
            oom_killed,
        }
    }

    #[test]
    fn exit_codes_and_signals() {
        assert_eq!(
            classify(&exited(0, false)),
            (RunStatus::Success, Some(0), None)
        );
        assert_eq!(
            classify(&exited(3, false)),
            (RunStatus::RuntimeError, Some(3), None)
        );
        assert_eq!(
            classify(&exited(139, false)),
            (RunStatus::RuntimeError, None, Some("SIGSEGV"))
        );
        assert_eq!(
            classify(&exited(137, false)),
            (RunStatus::RuntimeError, None, Some("SIGKILL"))
        );
        assert_eq!(
            classify(&exited(137, true)),
            (RunStatus::MemoryLimitExceeded, None, Some("SIGKILL"))
        );
        // A child was OOM-killed and the program went on to exit 0.
        assert_eq!(
            classify(&exited(0, true)),
            (RunStatus::MemoryLimitExceeded, Some(0), None)
        );
        // A child was OOM-killed and the program failed because of it.
        assert_eq!(
            classify(&exited(1, true)),
            (RunStatus::MemoryLimitExceeded, Some(1), None)
        );
        // Exit codes above the signal range are plain exit codes.
        assert_eq!(
            classify(&exited(255, false)),
            (RunStatus::RuntimeError, Some(255), None)
        );
    }

    #[test]
    fn status_names_match_the_serialized_ones() {
        for status in [
            RunStatus::Success,
            RunStatus::RuntimeError,
            RunStatus::CompileError,
            RunStatus::Timeout,
            RunStatus::MemoryLimitExceeded,
            RunStatus::OutputLimitExceeded,
        ] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
        }
    }

    #[test]
    fn limits_end_with_sigkill() {
        let timed_out = ExecOutcome {
            end: ExecEnd::TimedOut,
            duration: Duration::ZERO,
            oom_killed: false,
        };
        assert_eq!(
            classify(&timed_out),
            (RunStatus::Timeout, None, Some("SIGKILL"))
        );
        let stopped = ExecOutcome {
            end: ExecEnd::Stopped,
            ..timed_out
        };
        assert_eq!(
            classify(&stopped),
            (RunStatus::OutputLimitExceeded, None, Some("SIGKILL"))
        );
    }
}
