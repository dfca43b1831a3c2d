//! Compile once, run many inputs (`tests`): the files are unpacked and compiled in one exec,
//! then each input runs in an exec of its own with the job's limits, and every process a run
//! started is ended before the next. The sandbox is a job sandbox whose main process is the
//! keeper (a runner serves one job only), removed when the batch ends.

use bytes::Bytes;

use super::files;
use super::outputs::{FilePlan, FilesOutcome};
use super::{Executor, Job, PhaseOutcome, RunError, RunOutcome, RunStatus, exec_phase};
use crate::sandbox::{
    ExecEnd, ExecSpec, FilesNotRead, FilesRead, MainProcess, OutputCollector, Sandbox, unpack_then,
};

/// One input's result.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub run: PhaseOutcome,
    /// The trimmed stdout equals the trimmed `expected_output`; `None` when none was given.
    pub passed: Option<bool>,
    /// The files the job asked for (`outputs`), as the work dir held them after this input.
    pub files: Option<FilesOutcome>,
}

impl Executor {
    pub(super) async fn run_tests_admitted(&self, job: Job) -> Result<RunOutcome, RunError> {
        let (mut sandbox, compile) = self.prepare_batch(&job, &job.id).await?;
        if let Some(phase) = &compile
            && phase.status != RunStatus::Success
        {
            let mut outcome = self.outcome(&job, RunStatus::CompileError, None, compile.clone());
            outcome.tests = Some(Vec::new());
            outcome.files = None;
            return Ok(outcome);
        }
        let run_spec =
            |id: String| super::job_sandbox_spec(&job, id, job.memory_mb, MainProcess::Keeper);
        sandbox = sandbox
            .with_memory_limit(&run_spec(format!("{}.run", job.id)))
            .await?;
        let output_limit = self.fleet.config().output_limit_bytes;
        let argv = job.argv();
        let mut results = Vec::with_capacity(job.tests.len());
        for (index, test) in job.tests.iter().enumerate() {
            let spec = ExecSpec {
                cmd: argv.clone(),
                stdin: test.input.clone(),
                timeout: job.timeout,
                cpu_limit: job.cpu_limit,
            };
            let run = exec_phase(&sandbox, spec, output_limit, None, job.merge_stderr).await?;
            let passed = test
                .expected_output
                .as_ref()
                .map(|expected| run.output.stdout_text().trim() == expected.trim());
            let more = index + 1 < job.tests.len();
            let ended = if more || job.outputs.is_some() {
                sandbox.end_programs().await.is_ok()
            } else {
                true
            };
            let files = match &job.outputs {
                None => None,
                Some(patterns) => {
                    let mut plan = FilePlan::new(patterns.clone(), self.file_caps);
                    let read = if run.cut_short {
                        FilesRead::NotRead(FilesNotRead::CutShort)
                    } else if !ended {
                        FilesRead::NotRead(FilesNotRead::SandboxNotClean)
                    } else {
                        sandbox.read_out_files(&mut plan).await.unwrap_or_else(|err| {
                            tracing::debug!(%err, "the files of an input's run could not be read out");
                            FilesRead::NotRead(FilesNotRead::Failed)
                        })
                    };
                    Some(plan.finish(read))
                }
            };
            results.push(TestOutcome { run, passed, files });
            if more && !ended {
                // A run left what cannot be ended (a fork bomb at the pids cap): the next
                // inputs get a fresh sandbox, compiled again.
                let (fresh, _) = self
                    .prepare_batch(&job, &format!("{}.{}", job.id, index + 1))
                    .await?;
                sandbox = fresh
                    .with_memory_limit(&run_spec(format!("{}.{}.run", job.id, index + 1)))
                    .await?;
            }
        }
        drop(sandbox);
        // The job's headline is the first input that failed (or did not pass), else the last.
        let headline = results
            .iter()
            .find(|t| t.run.status != RunStatus::Success || t.passed == Some(false))
            .or(results.last())
            .map(|t| t.run.clone());
        let status = headline.as_ref().map_or(RunStatus::Success, |r| r.status);
        let mut outcome = self.outcome(&job, status, headline, compile);
        outcome.tests = Some(results);
        // Each input has its own files.
        outcome.files = None;
        Ok(outcome)
    }

    /// A keeper sandbox with the job's files in its work dir, compiled when the language is.
    async fn prepare_batch(
        &self,
        job: &Job,
        sandbox_id: &str,
    ) -> Result<(Sandbox, Option<PhaseOutcome>), RunError> {
        let sandbox = self
            .fleet
            .create(&super::job_sandbox_spec(
                job,
                sandbox_id.to_owned(),
                super::sandbox_memory_mb(job),
                MainProcess::Keeper,
            ))
            .await?;
        let archive = Bytes::from(files::pack(&job.files));
        let compile = match &job.language.compile {
            Some(compile_cmd) => Some(
                self.compile_phase(&sandbox, job, compile_cmd, archive, None)
                    .await?,
            ),
            None => {
                let mut messages = OutputCollector::new(4096);
                let unpacked = sandbox
                    .exec(
                        ExecSpec {
                            cmd: unpack_then(archive.len(), &["true".to_owned()]),
                            stdin: archive,
                            timeout: job.compile_timeout,
                            cpu_limit: None,
                        },
                        &mut messages,
                    )
                    .await?;
                if unpacked.end != (ExecEnd::Exited { code: 0 }) {
                    return Err(RunError::FilesNotUnpacked(format!(
                        "unpacking the files failed ({:?}): {}",
                        unpacked.end,
                        messages.finish().stderr_text()
                    )));
                }
                None
            }
        };
        Ok((sandbox, compile))
    }
}
