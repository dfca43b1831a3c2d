//! Jobs: a validated [`Job`] in, a [`RunOutcome`] out. Owns the meaning of what happened in
//! the sandbox (success, timeout, OOM, ...) and the phases of a run (unpack, compile, run).

pub mod admission;
mod batch;
pub mod compile_cache;
pub mod files;
pub mod job;
pub mod lasting;
pub mod live;
mod outcome;
pub mod outputs;
mod phases;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use admission::Overloaded;
pub use batch::TestOutcome;
pub use job::{Job, JobError, JobRequest, TestCase};
pub use lasting::{Adopted, LABEL_LANGUAGE, LastingSpec, Sandbox};
pub use live::{LiveRun, Phase, RunEvent};
pub use outcome::{PhaseOutcome, RunOutcome, RunStatus, classify, signal_number};
pub use outputs::{FilesOutcome, OutputFile};
use phases::{exec_phase, job_sandbox_spec, sandbox_memory_mb, starting_memory_mb};
// What the layers above see of the sandbox: the executor is their one door to it.
pub use crate::sandbox::terminal::{TerminalInput, TerminalOutput};
pub use crate::sandbox::{
    CollectedOutput, InputFull, InputSender, SandboxError, Stream, Utf8Decoder, input_channel,
};

use crate::config::{CompileCacheConfig, LimitsConfig, OutputsConfig, PoolConfig};
use crate::languages::{Catalogue, Language};
use tokio_util::sync::CancellationToken;

use crate::metrics::{LiveSnapshot, LiveState, Metrics};
pub use crate::sandbox::fleet::HealthPolicy;
use crate::sandbox::pool::PoolSlot;
use crate::sandbox::{Fleet, Sandboxes};
use admission::Admission;

/// An image's libraries: (name, version), by name.
pub type LibraryVersions = Vec<(String, String)>;

/// The parts of the config the executor runs by.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub limits: &'a LimitsConfig,
    pub pool: &'a PoolConfig,
    pub compile_cache: &'a CompileCacheConfig,
    pub outputs: &'a OutputsConfig,
}

/// A language as `GET /languages` shows it.
#[derive(Debug, Clone)]
pub struct LanguageInfo {
    pub language: Arc<Language>,
    /// `None` while the image is missing.
    pub version: Option<String>,
    /// The catalogue's libraries with the versions read from the image (name, version);
    /// empty while the image is missing.
    pub libraries: LibraryVersions,
}

/// Why a job could not be run (a program's own failure is a [`RunOutcome`], not this).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The job's files could not be unpacked into its work dir: tar's messages (for the log).
    #[error("unpacking the files failed: {0}")]
    FilesNotUnpacked(String),
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
    /// The engines, each with its warm pool.
    fleet: Fleet,
    catalogue: Arc<Catalogue>,
    /// language id -> version label of its image; filled at start and by readiness checks,
    /// so the hot path never inspects an image.
    versions: Arc<RwLock<HashMap<String, String>>>,
    /// language id -> id of its image, read with the versions: part of a compile's cache key.
    image_ids: Arc<RwLock<HashMap<String, String>>>,
    /// language id -> its image's libraries (name, version), read with the versions.
    libraries: Arc<RwLock<HashMap<String, LibraryVersions>>>,
    /// `None`: compiles are not kept.
    compile_cache: Option<Arc<compile_cache::CompileCache>>,
    /// The caps on the files a run returns.
    file_caps: outputs::FileCaps,
    admission: Arc<Admission>,
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
    fleet: Fleet,
    compile_cache: Option<Arc<compile_cache::CompileCache>>,
}

impl LiveState for LiveParts {
    fn snapshot(&self) -> LiveSnapshot {
        LiveSnapshot {
            jobs_running: self.admission.running(),
            jobs_queued: self.admission.queued(),
            sandboxes_owned: self.fleet.owned_count(),
            pools: self.fleet.pool_stats(),
            sandboxes: self.fleet.tally(),
            engines: self.fleet.engine_health(),
            compile_cache: self.compile_cache.as_ref().map(|cache| {
                let stats = cache.stats();
                crate::metrics::CompileCacheCounts {
                    hits: stats.hits,
                    misses: stats.misses,
                    evictions: stats.evictions,
                    entries: stats.entries,
                    bytes: stats.bytes,
                }
            }),
        }
    }
}

impl Executor {
    /// Starts each engine's warm pool (each language's sandboxes get the memory its jobs start
    /// with: the compiler's when it needs more than the program) and their health checks.
    pub fn new(
        engines: Vec<Sandboxes>,
        health: HealthPolicy,
        catalogue: Catalogue,
        settings: Settings<'_>,
        metrics: Arc<Metrics>,
    ) -> Executor {
        let Settings {
            limits,
            pool,
            compile_cache: cache,
            outputs,
        } = settings;
        const MIB: usize = 1024 * 1024;
        let compile_cache = cache.enabled.then(|| {
            Arc::new(compile_cache::CompileCache::new(
                compile_cache::CacheBounds {
                    max_entries: cache.max_entries,
                    max_bytes: cache.max_mb * MIB,
                    max_entry_bytes: cache.max_entry_mb * MIB,
                },
            ))
        });
        let slots = catalogue
            .iter()
            .map(|language| PoolSlot {
                language: language.id.clone(),
                image: language.image_ref(),
                memory_mb: starting_memory_mb(
                    language,
                    language.compile_memory_mb(),
                    language.memory_mb,
                ),
                size: pool.size(&language.id),
                warm_compiler: language.warm_compiler(),
            })
            .collect::<Vec<_>>();
        let fleet = Fleet::start(engines, &slots, pool.max_idle(), health);
        let admission = Arc::new(Admission::new(
            limits.running_jobs(),
            limits.max_queued_jobs,
        ));
        metrics.watch_live(Arc::new(LiveParts {
            admission: admission.clone(),
            fleet: fleet.clone(),
            compile_cache: compile_cache.clone(),
        }));
        Executor {
            fleet,
            catalogue: Arc::new(catalogue),
            versions: Arc::default(),
            image_ids: Arc::default(),
            libraries: Arc::default(),
            compile_cache,
            file_caps: outputs.into(),
            admission,
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

    /// Waits for the tracked tasks (their jobs end by now: see [`Executor::stop_jobs`]), stops
    /// the pools, then removes every sandbox this process still owns.
    pub async fn shutdown(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.fleet.shutdown().await;
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The engines and their pools.
    pub fn sandboxes(&self) -> &Fleet {
        &self.fleet
    }

    /// Checks the engines and every language image on each engine that takes work, refreshing
    /// the cached versions. Every engine must hold the same image (by id) of a language: a
    /// kept compile may run on any of them.
    pub async fn check_ready(&self) -> Result<(), NotReady> {
        self.fleet.ping().await.map_err(|_| {
            NotReady("the container engine does not answer; start it (see README)".to_owned())
        })?;
        let several = self.fleet.engines().count() > 1;
        for engine in self.fleet.taking_work() {
            if let Ok(Some(registered)) = engine.runtime_missing().await {
                let on = match several {
                    true => format!("engine {}", engine.engine_id()),
                    false => "the container engine".to_owned(),
                };
                return Err(NotReady(format!(
                    "{on} has no runtime `{}` registered (it has: {}); see README, Runtimes",
                    engine.config().runtime,
                    registered.join(", ")
                )));
            }
        }
        let mut missing = Vec::new();
        let mut differing = Vec::new();
        for language in self.catalogue.iter() {
            let mut seen: Option<crate::sandbox::images::ImageInfo> = None;
            for engine in self.fleet.taking_work() {
                let at = |image: String| match several {
                    true => format!("{image} on engine {}", engine.engine_id()),
                    false => image,
                };
                match engine.image_info(language).await {
                    Ok(Some(info)) => match &seen {
                        Some(first) if first.id != info.id => {
                            differing.push(at(language.image_ref()));
                        }
                        Some(_) => {}
                        None => seen = Some(info),
                    },
                    Ok(None) => missing.push(at(language.image_ref())),
                    // Between its last ping and now: the next check sees it out.
                    Err(_) if several => {}
                    Err(_) => {
                        return Err(NotReady(
                            "the container engine does not answer; start it (see README)"
                                .to_owned(),
                        ));
                    }
                }
            }
            if let Some(info) = seen {
                self.libraries
                    .write()
                    .expect("libraries lock")
                    .insert(language.id.clone(), info.libraries);
                self.versions
                    .write()
                    .expect("versions lock")
                    .insert(language.id.clone(), info.version);
                self.image_ids
                    .write()
                    .expect("image ids lock")
                    .insert(language.id.clone(), info.id);
            }
        }
        if !missing.is_empty() {
            return Err(NotReady(format!(
                "missing image(s) {}; run `runbox images build`",
                missing.join(", ")
            )));
        }
        if !differing.is_empty() {
            return Err(NotReady(format!(
                "image(s) {} differ from the first engine's; copy them with `runbox images copy`",
                differing.join(", ")
            )));
        }
        Ok(())
    }

    /// Every language with its version (read from its image).
    pub fn languages(&self) -> Vec<LanguageInfo> {
        let versions = self.versions.read().expect("versions lock");
        let libraries = self.libraries.read().expect("libraries lock");
        self.catalogue
            .iter()
            .map(|language| LanguageInfo {
                language: language.clone(),
                version: versions.get(&language.id).cloned(),
                libraries: libraries.get(&language.id).cloned().unwrap_or_default(),
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
    async fn admitted<T, E: Into<RunError>>(
        &self,
        language: &str,
        work: impl std::future::Future<Output = Result<T, E>>,
        status: impl Fn(&T) -> RunStatus,
    ) -> Result<T, RunError> {
        tokio::select! {
            done = self.admitted_until_stopped(language, work, status) => done,
            () = self.stop_jobs.cancelled() => Err(RunError::ShuttingDown),
        }
    }

    async fn admitted_until_stopped<T, E: Into<RunError>>(
        &self,
        language: &str,
        work: impl std::future::Future<Output = Result<T, E>>,
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
        let done = work.await.map_err(Into::into)?;
        let outcome = status(&done).as_str();
        span.record("outcome", outcome);
        self.metrics
            .job_finished(language, outcome, started.elapsed());
        Ok(done)
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
}
