//! What a job's phases mean: the statuses of the contract, how an end maps to one, and the
//! outcome the layers above turn into a response.

use std::time::Duration;

use crate::sandbox::{CollectedOutput, ExecEnd, ExecOutcome, OutputCollector, SIGKILL_EXIT_CODE};

use super::batch::TestOutcome;

/// How one phase (compile or run) of a job ended, as the contract names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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

/// A signal's name, one of [`SIGNAL_NAMES`]. An alias, not the type written out, for the
/// derived `Deserialize`: it takes an `Option<&str>` field as borrowed from the input, which
/// would tie every read of a [`PhaseOutcome`] to `'static` input ([`known_signal`] reads it
/// into the table's own name instead).
pub type SignalName = Option<&'static str>;

/// One phase's result. Serialized for a record kept in the shared state (a submission's).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PhaseOutcome {
    pub status: RunStatus,
    pub exit_code: Option<i64>,
    #[serde(deserialize_with = "known_signal")]
    pub signal: SignalName,
    pub output: CollectedOutput,
    pub duration: Duration,
    /// The program did not end by itself: a limit or a kill stopped it, and processes may
    /// still be running in its sandbox.
    pub cut_short: bool,
    /// A compile phase answered from the compile cache (reported as it first ran).
    pub from_cache: bool,
}

/// A whole job's result. Serialized for a record kept in the shared state (a submission's).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    /// or pass, else the last); `None` for a job with one `input`. Not in the serialized
    /// record: the only one kept (a Judge0 submission's) has no `tests`.
    #[serde(skip)]
    pub tests: Option<Vec<TestOutcome>>,
    /// The files the job asked for (`outputs`), read after its run; `None`: none asked for.
    /// A `tests` job has them per input instead. Not in the serialized record: a Judge0
    /// submission asks for none.
    #[serde(skip)]
    pub files: Option<super::FilesOutcome>,
}

/// The contract's meaning of a phase's end, with its output.
pub(super) fn phase_outcome(outcome: &ExecOutcome, output: OutputCollector) -> PhaseOutcome {
    let (status, exit_code, signal) = classify(outcome);
    PhaseOutcome {
        status,
        exit_code,
        signal,
        output: output.finish(),
        duration: outcome.duration,
        cut_short: !matches!(outcome.end, ExecEnd::Exited { .. }),
        from_cache: false,
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
pub(super) fn memory_kb_at_oom(
    status: RunStatus,
    measured: Option<u64>,
    memory_mb: u64,
) -> Option<u64> {
    match (status, measured) {
        (RunStatus::MemoryLimitExceeded, None) => Some(memory_mb * 1024),
        _ => measured,
    }
}

/// Signal names by number, from 1.
const SIGNAL_NAMES: [&str; 31] = [
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

/// The engine reports a process killed by signal N as exit code 128 + N.
fn signal_name(code: i64) -> Option<&'static str> {
    debug_assert_eq!(SIGNAL_NAMES[(SIGKILL_EXIT_CODE - 129) as usize], "SIGKILL");
    let index = usize::try_from(code.checked_sub(129)?).ok()?;
    SIGNAL_NAMES.get(index).copied()
}

/// A signal's name read back as the one in [`SIGNAL_NAMES`]; a name not there is `None`.
fn known_signal<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'static str>, D::Error> {
    let name: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    Ok(name.and_then(|name| SIGNAL_NAMES.iter().copied().find(|n| *n == name)))
}

/// The number of signal `name` (`SIGSEGV` → 11).
pub fn signal_number(name: &str) -> Option<i64> {
    let index = SIGNAL_NAMES.iter().position(|n| *n == name)?;
    i64::try_from(index + 1).ok()
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
