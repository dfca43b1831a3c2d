//! The phases of a job (unpack, compile, run), each one call into the sandbox; the executor
//! keeps their meaning (statuses, the compile-error mapping, the usage reported).

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::languages::Language;
use crate::sandbox::{
    ExecSpec, FilePicker, FilesNotRead, FilesRead, LiveInput, MainProcess, OutputSink, PhaseReport,
    RunnerJob, Sandbox, SandboxKind, SandboxSpec, Step, Stream, unpack_then,
};

use super::compile_cache::{self, CachedCompile};
use super::live::StreamingCollector;
use super::outcome::{memory_kb_at_oom, phase_outcome};
use super::outputs::FilePlan;
use super::{
    Executor, InSandboxRun, Job, LiveRun, Phase, PhaseOutcome, RunEvent, RunOutcome, RunStatus,
    SandboxError, files,
};

/// Where a job's phases run: the one thing the sequence does differently for the two kinds of
/// sandbox.
#[expect(
    clippy::large_enum_variant,
    reason = "one per job, built once and moved into the sequence: a box would buy nothing"
)]
pub(super) enum Place<'a> {
    /// A fresh job sandbox: the runner takes the program as its one job, with its own memory
    /// cap (`cap`), and the sandbox is removed as the program's phase returns.
    Fresh {
        sandbox: Sandbox,
        cap: SandboxSpec,
        live_stdin: Option<LiveInput>,
        kill: CancellationToken,
        /// The compile cache's answer for this job, found before the sandbox was taken.
        cached: Option<CachedCompile>,
        /// Where this job's compile is kept when it was not (`None`: it is not kept).
        cache_key: Option<[u8; 32]>,
    },
    /// A lasting sandbox (a session's): every phase is an exec, next to what earlier runs
    /// left in the work dir, and every process a phase started is ended after it.
    Lasting(&'a Sandbox),
}

impl Place<'_> {
    fn sandbox(&self) -> &Sandbox {
        match self {
            Place::Fresh { sandbox, .. } => sandbox,
            Place::Lasting(sandbox) => sandbox,
        }
    }
}

/// How the phases ended.
pub(super) struct Sequenced {
    pub outcome: RunOutcome,
    /// Whatever the job started has ended and the sandbox can be trusted again (a fresh
    /// sandbox is gone, so this says nothing of it).
    pub sandbox_usable: bool,
    /// A reused job sandbox that may serve another job, for the pool.
    pub serves_again: Option<Sandbox>,
}

impl Executor {
    pub(super) async fn run_admitted(
        &self,
        job: Job,
        live: Option<LiveRun>,
    ) -> Result<RunOutcome, SandboxError> {
        let cache_key = self.compile_cache_key(&job);
        let cached = cache_key.and_then(|key| self.compile_cache.as_ref()?.get(&key));
        let (events, live_stdin, kill) = match live {
            Some(live) => (Some(live.events), live.stdin, live.kill),
            None => (None, None, CancellationToken::new()),
        };
        if let Some(hit) = &cached
            && hit.work_dir.is_none()
        {
            // The same compile error again: no sandbox at all.
            if let Some(events) = &events {
                let _ = events.send(RunEvent::Started { id: job.id.clone() });
            }
            let streamed = events.as_ref().map(|e| (e, Phase::Compile));
            let phase = self.replayed(&hit.phase, streamed);
            return Ok(self.outcome(&job, RunStatus::CompileError, None, Some(phase)));
        }
        // With the compile kept, the sandbox needs only the program's memory.
        let memory_mb = match cached {
            Some(_) => job.memory_mb,
            None => sandbox_memory_mb(&job),
        };
        let spec = job_sandbox_spec(&job, job.id.clone(), memory_mb, MainProcess::Runner);
        let (sandbox, _lease) = self.fleet.lease(&spec).await?;
        if let Some(events) = &events {
            let _ = events.send(RunEvent::Started { id: job.id.clone() });
        }
        // The program runs with its own memory cap (the compiler's may have been larger).
        let cap = job_sandbox_spec(
            &job,
            format!("{}.run", job.id),
            job.memory_mb,
            MainProcess::Runner,
        );
        let place = Place::Fresh {
            sandbox,
            cap,
            live_stdin,
            kill,
            cached,
            cache_key,
        };
        let done = self.run_phases(place, &job, events.as_ref()).await?;
        if let Some(sandbox) = done.serves_again {
            self.fleet.give_back(sandbox);
        }
        Ok(done.outcome)
    }

    pub(super) async fn run_in_admitted(
        &self,
        sandbox: &Sandbox,
        job: Job,
    ) -> Result<InSandboxRun, SandboxError> {
        let done = self.run_phases(Place::Lasting(sandbox), &job, None).await?;
        Ok(InSandboxRun {
            outcome: done.outcome,
            sandbox_unusable: !done.sandbox_usable,
        })
    }

    /// The one sequence of a job's phases, in either place: unpack (with the compile, or with
    /// the program), compile when the language does, run the program, and what it all means.
    /// A failed compile ends it; so does a kill while compiling (the program never runs).
    async fn run_phases(
        &self,
        mut place: Place<'_>,
        job: &Job,
        events: Option<&mpsc::UnboundedSender<RunEvent>>,
    ) -> Result<Sequenced, SandboxError> {
        let streamed = |phase| events.map(|e| (e, phase));
        let archive = Bytes::from(files::pack(&job.files));
        let argv = job.argv();
        let killed = match &place {
            Place::Fresh { kill, .. } => kill.clone(),
            Place::Lasting(_) => CancellationToken::new(),
        };
        let hit = match &mut place {
            Place::Fresh { cached, .. } => cached.take(),
            Place::Lasting(_) => None,
        };
        let (compile, archive) = match (&job.language.compile, hit) {
            (
                Some(_),
                Some(CachedCompile {
                    phase,
                    work_dir: Some(work_dir),
                }),
            ) => {
                // The kept work dir (sources and what the compiler made) is the run's files.
                let phase = self.replayed(&phase, streamed(Phase::Compile));
                (Some(phase), work_dir)
            }
            (Some(compile_cmd), _) => {
                let compiling = async {
                    match &mut place {
                        Place::Fresh { sandbox, .. } if sandbox.is_reused() => {
                            let streamed = streamed(Phase::Compile);
                            self.compile_step(sandbox, job, compile_cmd, archive, &killed, streamed)
                                .await
                        }
                        _ => {
                            self.compile_phase(
                                place.sandbox(),
                                job,
                                compile_cmd,
                                archive,
                                streamed(Phase::Compile),
                            )
                            .await
                        }
                    }
                };
                let phase = tokio::select! {
                    phase = compiling => phase?,
                    () = killed.cancelled() => {
                        let outcome = self.outcome(job, RunStatus::RuntimeError, None, None);
                        return Ok(Sequenced { outcome, sandbox_usable: false, serves_again: None });
                    }
                };
                if let Place::Fresh {
                    sandbox,
                    cache_key: Some(key),
                    ..
                } = &mut place
                {
                    self.keep_compile(sandbox, *key, &phase).await;
                }
                if phase.status != RunStatus::Success {
                    let sandbox_usable = match &place {
                        Place::Fresh { .. } => false,
                        Place::Lasting(sandbox) => {
                            phase.status != RunStatus::MemoryLimitExceeded
                                && sandbox.end_programs().await.is_ok()
                        }
                    };
                    // A reused sandbox whose compile failed by itself has deleted the work dir.
                    let serves_again = match place {
                        Place::Fresh { mut sandbox, .. }
                            if phase.status == RunStatus::CompileError && sandbox.is_reused() =>
                        {
                            sandbox.may_serve_again().then_some(sandbox)
                        }
                        _ => None,
                    };
                    let outcome = self.outcome(job, RunStatus::CompileError, None, Some(phase));
                    return Ok(Sequenced {
                        outcome,
                        sandbox_usable,
                        serves_again,
                    });
                }
                // The files are in place already.
                (Some(phase), Bytes::new())
            }
            (None, _) => (None, archive),
        };
        let output_limit = self.fleet.config().output_limit_bytes;
        let mut output = StreamingCollector::new(output_limit, streamed(Phase::Run))
            .merging_stderr(job.merge_stderr);
        let after_compile = compile.is_some();
        let mut plan = job
            .outputs
            .clone()
            .map(|patterns| FilePlan::new(patterns, self.file_caps));
        let picker = plan.as_mut().map(|plan| plan as &mut dyn FilePicker);
        let ran = run_program_in(
            place,
            job,
            archive,
            argv,
            &mut output,
            after_compile,
            picker,
        )
        .await?;
        let ProgramRan {
            report,
            programs_ended,
            serves_again,
            files,
        } = ran;
        let files = plan.map(|plan| {
            let files = files.unwrap_or(FilesRead::NotRead(FilesNotRead::Failed));
            plan.finish(files)
        });
        if let (Some(files), Some(events)) = (&files, events) {
            for file in &files.files {
                let _ = events.send(RunEvent::File(file.clone()));
            }
        }
        let phase = phase_outcome(&report.outcome, output.finish());
        // A sandbox whose memory ran out, or whose programs could not be ended, is not
        // trusted again.
        let sandbox_usable = programs_ended && phase.status != RunStatus::MemoryLimitExceeded;
        let mut outcome = self.outcome(job, phase.status, Some(phase), compile);
        outcome.files = files;
        outcome.cpu_time = report.usage.cpu_time;
        outcome.memory_kb =
            memory_kb_at_oom(outcome.status, report.usage.memory_peak_kb, job.memory_mb);
        // A reused sandbox whose program ran out of memory is not given back either.
        let serves_again =
            serves_again.filter(|_| outcome.status != RunStatus::MemoryLimitExceeded);
        Ok(Sequenced {
            outcome,
            sandbox_usable,
            serves_again,
        })
    }

    /// The key of `job`'s compile in the compile cache: `None` when compiles are not kept, the
    /// language compiles nothing, or its image's id is not known yet.
    fn compile_cache_key(&self, job: &Job) -> Option<[u8; 32]> {
        self.compile_cache.as_ref()?;
        let compile_cmd = job.language.compile.as_ref()?;
        let image_id = self
            .image_ids
            .read()
            .expect("image ids lock")
            .get(&job.language.id)
            .cloned()?;
        Some(compile_cache::key(&image_id, job, compile_cmd))
    }

    /// Keeps a compile that ended by itself: a compile error as it was reported, a success with
    /// its work dir, read out through the sandbox and repacked with files and directories
    /// only (a work dir too large or unreadable is not kept).
    async fn keep_compile(&self, sandbox: &mut Sandbox, key: [u8; 32], phase: &PhaseOutcome) {
        let Some(cache) = &self.compile_cache else {
            return;
        };
        if phase.cut_short {
            return;
        }
        match phase.status {
            // The same error again costs no sandbox (`run_admitted`).
            RunStatus::CompileError => {
                let kept = CachedCompile {
                    phase: phase.clone(),
                    work_dir: None,
                };
                return cache.insert(key, kept);
            }
            RunStatus::Success => {}
            // A limit's end says nothing of the next compile.
            _ => return,
        }
        let packed = match sandbox.pack_work_dir(cache.max_entry_bytes()).await {
            Ok(Some(packed)) => packed,
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(error = %err, "a compiled work dir could not be read out; not kept");
                return;
            }
        };
        if let Some(work_dir) = compile_cache::repack(&packed) {
            cache.insert(
                key,
                CachedCompile {
                    phase: phase.clone(),
                    work_dir: Some(Bytes::from(work_dir)),
                },
            );
        }
    }

    /// A kept compile phase as this job's: the same status, output and duration, streamed
    /// when the run is, marked as from the cache.
    fn replayed(&self, phase: &PhaseOutcome, streamed: Streamed<'_>) -> PhaseOutcome {
        let output_limit = self.fleet.config().output_limit_bytes;
        let mut output = StreamingCollector::new(output_limit, streamed);
        output.push(Stream::Stdout, &phase.output.stdout);
        output.push(Stream::Stderr, &phase.output.stderr);
        PhaseOutcome {
            output: output.finish().finish(),
            from_cache: true,
            ..phase.clone()
        }
    }

    /// Compiles the job's files in a reused sandbox: a step of its runner (no exec), in a fresh
    /// nested sandbox whose work dir the run step then gets. Counted in the metrics.
    async fn compile_step(
        &self,
        sandbox: &mut Sandbox,
        job: &Job,
        compile_cmd: &[String],
        archive: Bytes,
        killed: &CancellationToken,
        streamed: Streamed<'_>,
    ) -> Result<PhaseOutcome, SandboxError> {
        let mut argv = job.command(compile_cmd);
        argv.extend(job.compile_args.iter().cloned());
        self.metrics.compiled(&job.language.id);
        let output_limit = self.fleet.config().output_limit_bytes;
        let mut output = StreamingCollector::new(output_limit, streamed);
        let step = RunnerJob {
            step: Step::Compile,
            archive,
            argv,
            stdin: Bytes::new(),
            live_stdin: None,
            timeout: job.compile_timeout,
            cpu_limit: None,
            kill: killed.clone(),
        };
        let outcome = sandbox.run_main(step, &mut output).await?;
        let mut phase = phase_outcome(&outcome, output.finish());
        if phase.status == RunStatus::RuntimeError {
            phase.status = RunStatus::CompileError;
        }
        Ok(phase)
    }

    /// Unpacks the job's files and compiles them (one exec), counted in the metrics.
    pub(super) async fn compile_phase(
        &self,
        sandbox: &Sandbox,
        job: &Job,
        compile_cmd: &[String],
        archive: Bytes,
        streamed: Streamed<'_>,
    ) -> Result<PhaseOutcome, SandboxError> {
        let mut cmd = job.command(compile_cmd);
        cmd.extend(job.compile_args.iter().cloned());
        let spec = ExecSpec {
            cmd: unpack_then(archive.len(), &cmd),
            stdin: archive,
            timeout: job.compile_timeout,
            cpu_limit: None,
        };
        self.metrics.compiled(&job.language.id);
        let output_limit = self.fleet.config().output_limit_bytes;
        let mut phase = exec_phase(sandbox, spec, output_limit, streamed, false).await?;
        if phase.status == RunStatus::RuntimeError {
            // The compiler itself failed: that is what a compile error is.
            phase.status = RunStatus::CompileError;
        }
        Ok(phase)
    }

    pub(super) fn outcome(
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
            // Set by the run; a job that asked for files and never ran says so.
            files: job
                .outputs
                .as_ref()
                .map(|_| super::FilesOutcome::never_ran()),
        }
    }
}

/// What the program's phase did.
struct ProgramRan {
    report: PhaseReport,
    /// Every process it started has ended (a fresh sandbox is removed as the call returns).
    programs_ended: bool,
    serves_again: Option<Sandbox>,
    files: Option<FilesRead>,
}

/// The program's phase in `place`, one call down: what it did and used, and (with `files`)
/// the files it wrote. `archive` is empty when a compile put the files in place.
async fn run_program_in(
    place: Place<'_>,
    job: &Job,
    archive: Bytes,
    argv: Vec<String>,
    output: &mut StreamingCollector<'_>,
    after_compile: bool,
    files: Option<&mut dyn FilePicker>,
) -> Result<ProgramRan, SandboxError> {
    match place {
        Place::Fresh {
            sandbox,
            cap,
            live_stdin,
            kill,
            ..
        } => {
            let runner_job = RunnerJob {
                step: Step::Run,
                archive,
                argv,
                stdin: job.input.clone(),
                live_stdin,
                timeout: job.timeout,
                cpu_limit: job.cpu_limit,
                kill,
            };
            let end = sandbox
                .run_program(&cap, runner_job, output, after_compile, files)
                .await?;
            Ok(ProgramRan {
                report: end.report,
                programs_ended: false,
                serves_again: end.again,
                files: end.files,
            })
        }
        Place::Lasting(sandbox) => {
            let spec = if archive.is_empty() {
                ExecSpec {
                    cmd: argv,
                    stdin: job.input.clone(),
                    timeout: job.timeout,
                    cpu_limit: job.cpu_limit,
                }
            } else {
                let mut stdin = BytesMut::with_capacity(archive.len() + job.input.len());
                stdin.extend_from_slice(&archive);
                stdin.extend_from_slice(&job.input);
                ExecSpec {
                    cmd: unpack_then(archive.len(), &argv),
                    stdin: stdin.freeze(),
                    timeout: job.timeout,
                    cpu_limit: job.cpu_limit,
                }
            };
            let lasting = sandbox
                .run_lasting_phase(spec, output, after_compile, files)
                .await?;
            Ok(ProgramRan {
                report: lasting.report,
                programs_ended: lasting.programs_ended,
                serves_again: None,
                files: lasting.files,
            })
        }
    }
}

/// The sandbox `id` of `job`, of `memory_mb`, whose main process is `main`.
pub(super) fn job_sandbox_spec(
    job: &Job,
    id: String,
    memory_mb: u64,
    main: MainProcess,
) -> SandboxSpec {
    SandboxSpec {
        kind: SandboxKind::Job,
        id,
        image: job.language.image_ref(),
        language: job.language.id.clone(),
        memory_mb,
        main,
        work_dir_mb: None,
        labels: Vec::new(),
        warm_compiler: job.language.warm_compiler(),
    }
}

/// The memory a job's sandbox starts with: the compiler's when it needs more than the program
/// (the cap is lowered to the program's before it starts).
pub(super) fn sandbox_memory_mb(job: &Job) -> u64 {
    starting_memory_mb(&job.language, job.compile_memory_mb, job.memory_mb)
}

/// [`sandbox_memory_mb`] of a job of `language` whose compile may use `compile_memory_mb`
/// and whose program `run_memory_mb`.
pub(super) fn starting_memory_mb(
    language: &Language,
    compile_memory_mb: u64,
    run_memory_mb: u64,
) -> u64 {
    match &language.compile {
        Some(_) => compile_memory_mb.max(run_memory_mb),
        None => run_memory_mb,
    }
}

/// Where a phase's output is streamed to, if anywhere.
type Streamed<'a> = Option<(&'a tokio::sync::mpsc::UnboundedSender<RunEvent>, Phase)>;

/// Runs one phase through an exec (the compile) and says what its end means.
pub(super) async fn exec_phase(
    sandbox: &Sandbox,
    spec: ExecSpec,
    output_limit: usize,
    streamed: Streamed<'_>,
    merge_stderr: bool,
) -> Result<PhaseOutcome, SandboxError> {
    let mut output = StreamingCollector::new(output_limit, streamed).merging_stderr(merge_stderr);
    let outcome = sandbox.exec(spec, &mut output).await?;
    Ok(phase_outcome(&outcome, output.finish()))
}
