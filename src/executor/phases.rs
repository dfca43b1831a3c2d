//! The phases of a job (unpack, compile, run), each one call into the sandbox; the executor
//! keeps their meaning (statuses, the compile-error mapping, the usage reported).

use bytes::Bytes;

use crate::languages::Language;

use crate::sandbox::{
    ExecSpec, MainProcess, RunnerJob, Sandbox, SandboxKind, SandboxSpec, unpack_then,
};

use super::live::StreamingCollector;
use super::outcome::{memory_kb_at_oom, phase_outcome};
use super::{
    Executor, InSandboxRun, Job, LiveRun, Phase, PhaseOutcome, RunEvent, RunOutcome, RunStatus,
    SandboxError, files,
};

impl Executor {
    pub(super) async fn run_admitted(
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

    pub(super) async fn run_in_admitted(
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
    pub(super) async fn compile_phase(
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
    }
}

/// The memory a job's sandbox starts with: the compiler's when it needs more than the program
/// (the cap is lowered to the program's before it starts).
pub(super) fn sandbox_memory_mb(language: &Language, run_memory_mb: u64) -> u64 {
    match &language.compile {
        Some(_) => language.compile_memory_mb().max(run_memory_mb),
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
) -> Result<PhaseOutcome, SandboxError> {
    let mut output = StreamingCollector::new(output_limit, streamed);
    let outcome = sandbox.exec(spec, &mut output).await?;
    Ok(phase_outcome(&outcome, output.finish()))
}
