//! A program's phase as one call: the sandbox sets the run's memory cap, starts a fresh
//! measurement, runs the program, reads what it used, and ends whatever the program left,
//! then says what happened. The executor decides what that means (the status); the mechanics
//! (peaks, usage, memory resizing, the end of a cut-short run) are the sandbox's. Before, the
//! executor drove each step itself: six calls into the sandbox per interpreted run, eight to
//! ten per compiled one; now one per phase.

use std::time::Duration;

use super::outputs::{FilePicker, FilesNotRead, FilesRead};
use super::{ExecEnd, ExecOutcome, ExecSpec, OutputSink, RunnerJob, Sandbox, SandboxError};
use super::{SandboxSpec, Step, Usage};

/// What a phase used: CPU time and peak memory of the phase alone where the cgroup tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseUsage {
    pub cpu_time: Option<Duration>,
    /// Peak memory in KiB; `None` when only an earlier phase's peak is known.
    pub memory_peak_kb: Option<u64>,
}

/// How a phase ended and what it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseReport {
    pub outcome: ExecOutcome,
    pub usage: PhaseUsage,
}

/// A phase in a sandbox that lives on (a session's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastingPhaseReport {
    pub report: PhaseReport,
    /// Every process the phase started was ended; when not, the sandbox is not to be trusted
    /// with another run.
    pub programs_ended: bool,
    /// The files read out after it, when a picker was given.
    pub files: Option<FilesRead>,
}

/// A job sandbox's program phase.
#[derive(Debug)]
pub struct ProgramEnd {
    pub report: PhaseReport,
    /// The files read out after it, when a picker was given.
    pub files: Option<FilesRead>,
    /// The sandbox, when it may serve another job.
    pub again: Option<Sandbox>,
}

impl Sandbox {
    /// Runs a job sandbox's program through its runner, with the memory cap of `cap`, after an
    /// earlier compile in this sandbox when `after_compile`. Nothing the program started
    /// outlives this call: a fresh runner ends the user's processes when the program exits, a
    /// reused runner's nested sandbox ends with its first process, and a program cut short
    /// (limit, kill) has its sandbox killed. The sandbox comes back when it may serve another
    /// job (a reused one whose job ended by itself and left nothing behind); otherwise it is
    /// removed (in the background) as this returns.
    ///
    /// With `files`, the files the program wrote are read out once it has ended by itself
    /// (see [`super::outputs`]), before the sandbox serves anyone else.
    pub async fn run_program(
        self,
        cap: &SandboxSpec,
        mut job: RunnerJob,
        sink: &mut dyn OutputSink,
        after_compile: bool,
        files: Option<&mut dyn FilePicker>,
    ) -> Result<ProgramEnd, SandboxError> {
        let mut sandbox = self.with_memory_limit(cap).await?;
        if files.is_some() && sandbox.is_reused() && job.live_stdin.is_none() {
            job.step = Step::RunKeep;
        }
        let before = sandbox.usage_before_phase(after_compile).await;
        let outcome = sandbox.run_main(job, sink).await?;
        let after = sandbox.usage().await.ok();
        let ended_by_itself = matches!(outcome.end, ExecEnd::Exited { .. });
        let files = match files {
            None => None,
            Some(_) if !ended_by_itself => Some(FilesRead::NotRead(FilesNotRead::CutShort)),
            Some(picker) => Some(sandbox.files_after_program(picker).await),
        };
        if !ended_by_itself && let Err(err) = sandbox.kill().await {
            tracing::warn!(%err, "could not kill a stopped job's sandbox; its removal will");
        }
        let again = ended_by_itself && sandbox.may_serve_again();
        let report = PhaseReport {
            outcome,
            usage: phase_usage(before.usage, after, before.peak_discount),
        };
        Ok(ProgramEnd {
            report,
            files,
            again: again.then_some(sandbox),
        })
    }

    /// The files of a job sandbox whose program ended by itself; a failure to read them is
    /// the files' outcome, not the run's (the run's result stands).
    async fn files_after_program(&mut self, picker: &mut dyn FilePicker) -> FilesRead {
        if self.reuse.as_ref().is_some_and(|r| !r.job_ended_clean) {
            // The runner found something of the job left (or its memory ran out): whatever
            // it is may still be writing.
            return FilesRead::NotRead(FilesNotRead::SandboxNotClean);
        }
        match self.read_out_job_files(picker).await {
            Ok(read) => read,
            Err(err) => {
                tracing::debug!(%err, "the files of a job could not be read out");
                self.discard_work_dir().await;
                FilesRead::NotRead(FilesNotRead::Failed)
            }
        }
    }

    /// Runs one phase through an exec in a sandbox that lives on, then ends every process it
    /// started (a terminal's program spared), before the result goes out; with `files`, the
    /// files it wrote are read out after that.
    pub async fn run_lasting_phase(
        &self,
        spec: ExecSpec,
        sink: &mut dyn OutputSink,
        after_compile: bool,
        files: Option<&mut dyn FilePicker>,
    ) -> Result<LastingPhaseReport, SandboxError> {
        let before = self.usage_before_phase(after_compile).await;
        let outcome = self.exec(spec, sink).await?;
        let after = self.usage().await.ok();
        let programs_ended = self.end_programs().await.is_ok();
        let files = match files {
            None => None,
            Some(_) if !matches!(outcome.end, ExecEnd::Exited { .. }) => {
                Some(FilesRead::NotRead(FilesNotRead::CutShort))
            }
            Some(_) if !programs_ended => Some(FilesRead::NotRead(FilesNotRead::SandboxNotClean)),
            Some(picker) => Some(match self.read_out_files(picker).await {
                Ok(read) => read,
                Err(err) => {
                    tracing::debug!(%err, "the files of a run could not be read out");
                    FilesRead::NotRead(FilesNotRead::Failed)
                }
            }),
        };
        Ok(LastingPhaseReport {
            report: PhaseReport {
                outcome,
                usage: phase_usage(before.usage, after, before.peak_discount),
            },
            programs_ended,
            files,
        })
    }

    /// The usage right before a phase, with a fresh peak where the cgroup allows resetting it
    /// (then the phase's peak is exact; otherwise it is known only when the phase sets a new
    /// one). After a compile the file cache the compiler left is noted, to be left out of the
    /// phase's peak, and the usage may be read through an exec where the host's cgroup files
    /// are out of sight; before an interpreted program only the host's files are read (no
    /// Engine API call on the hot path).
    async fn usage_before_phase(&self, after_compile: bool) -> Before {
        let peak_reset = self.reset_memory_peak(after_compile).await;
        let usage = if after_compile {
            self.usage().await.ok()
        } else {
            self.usage_on_host().await
        };
        Before {
            usage: usage.map(|mut usage| {
                if peak_reset.is_some() {
                    usage.memory_peak_bytes = Some(0);
                }
                usage
            }),
            peak_discount: peak_reset.unwrap_or(0),
        }
    }
}

/// What is known of a sandbox right before a phase.
#[derive(Debug, Clone, Copy, Default)]
struct Before {
    usage: Option<Usage>,
    /// Bytes of the phase's peak that are not the phase's (the compiler's file cache).
    peak_discount: u64,
}

/// CPU time and peak memory of a phase from cgroup snapshots taken before (where an earlier
/// phase shares the sandbox) and after it. The cgroup's peak cannot always be reset between
/// phases, so after a compile the run's peak is known only when the run set a new one;
/// otherwise it is reported as unknown rather than as the compiler's peak.
/// `peak_discount` bytes of the peak are left out (see [`Sandbox::reset_memory_peak`]).
fn phase_usage(before: Option<Usage>, after: Option<Usage>, peak_discount: u64) -> PhaseUsage {
    let Some(after) = after else {
        return PhaseUsage::default();
    };
    let cpu_ns = match before {
        None => after.cpu_ns,
        Some(before) => after
            .cpu_ns
            .zip(before.cpu_ns)
            .map(|(a, b)| a.saturating_sub(b)),
    };
    let peak = match before {
        None => after.memory_peak_bytes,
        Some(before) => after
            .memory_peak_bytes
            .filter(|&a| before.memory_peak_bytes.is_none_or(|b| a > b)),
    };
    PhaseUsage {
        cpu_time: cpu_ns.map(Duration::from_nanos),
        memory_peak_kb: peak.map(|bytes| bytes.saturating_sub(peak_discount).div_ceil(1024)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_a_phase() {
        let u = |cpu, peak| {
            Some(Usage {
                cpu_ns: Some(cpu),
                memory_peak_bytes: Some(peak),
            })
        };
        let usage = |cpu_ms, kb| PhaseUsage {
            cpu_time: Some(Duration::from_millis(cpu_ms)),
            memory_peak_kb: kb,
        };
        // Interpreted: everything the sandbox used.
        assert_eq!(
            phase_usage(None, u(5_000_000, 10 * 1024), 0),
            usage(5, Some(10))
        );
        // Compiled, the run set a new peak: exact.
        assert_eq!(
            phase_usage(u(100_000_000, 50 << 20), u(103_000_000, 60 << 20), 0),
            usage(3, Some(60 << 10))
        );
        // Compiled, the compiler's peak stands: the run's own peak is unknown.
        assert_eq!(
            phase_usage(u(100_000_000, 50 << 20), u(101_000_000, 50 << 20), 0),
            usage(1, None)
        );
        assert_eq!(phase_usage(u(1, 1), None, 0), PhaseUsage::default());
        // After a compile: the compiler's file cache, charged at the reset, is left out.
        assert_eq!(
            phase_usage(u(100_000_000, 0), u(101_000_000, 40 << 20), 36 << 20),
            usage(1, Some(4 * 1024))
        );
    }
}
