//! runbox's own failures in the sandbox layer, and the one conversion every failed Engine API
//! call passes through (which counts it).

use std::sync::atomic::{AtomicU64, Ordering};

/// Failures of runbox's own machinery (never of the user's program). The texts are for the
/// log: the HTTP layer maps each variant to a client-facing error and never sends them.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The engine cannot be reached (no socket, a broken connection, a timeout).
    #[error("the container engine cannot be reached: {0}")]
    EngineUnavailable(String),
    #[error("image {0} is missing; run `runbox images build`")]
    ImageMissing(String),
    /// The engine has no runtime of the configured name registered (`sandbox.runtime`, or an
    /// engine's own `runtime`).
    #[error("the container engine has no runtime {0} registered")]
    RuntimeMissing(String),
    /// The engine refused a call.
    #[error("the container engine refused a call ({status}): {message}")]
    EngineRefused { status: u16, message: String },
    /// The engine's answer is not what the Engine API describes (it could not be decoded).
    #[error("unexpected answer from the container engine: {0}")]
    EngineAnswer(String),
    /// An exec started attached came back detached.
    #[error("the container engine started an exec detached")]
    ExecDetached,
    /// A sandbox's runner was asked for a second job (a sandbox made for one job runs one).
    #[error("the sandbox's runner has already run a job")]
    RunnerSpent,
    /// A new reused sandbox's runner did not say it was ready (at rest) in time.
    #[error("a reused sandbox's runner did not say it was ready")]
    RunnerNotReady,
    /// bubblewrap could not make a reused sandbox's nested sandbox for a job (the sandbox is
    /// retired).
    #[error("the nested sandbox for a job could not be made")]
    NestedLauncher,
    /// The script ending a sandbox's programs did not finish: how it ended instead.
    #[error("ending the programs of a sandbox did not finish: {0}")]
    ProgramsNotEnded(String),
    /// The terminal's wrapper did not report its session: what it printed, or why not.
    #[error("the terminal did not start: {0}")]
    TerminalNotStarted(String),
    /// The terminal's program could not be written to.
    #[error("writing to the terminal failed: {0}")]
    TerminalInput(#[source] std::io::Error),
    /// A work dir could not be carried into another sandbox (e.g. its files do not fit the
    /// new one's limits); the source sandbox is as it was.
    #[error("the work dir could not be copied: {0}")]
    WorkDirNotCopied(super::work_dir::CopyFailed),
    /// Every sandbox this process may own (`limits.max_sandboxes`) exists already.
    #[error("every sandbox this server may keep is in use; retry later")]
    AtCapacity,
    /// The task creating a sandbox panicked or was cancelled (what it made is removed).
    #[error("the sandbox creation task failed: {0}")]
    CreationTask(#[source] tokio::task::JoinError),
}

impl SandboxError {
    /// The container this call was about is gone or no longer runs (its engine lost it, e.g.
    /// a daemon restarted without live-restore): a lasting sandbox cannot come back from this.
    pub fn is_gone(&self) -> bool {
        match self {
            SandboxError::EngineRefused { status: 404, .. } => true,
            SandboxError::EngineRefused {
                status: 409,
                message,
            } => message.contains("not running") || message.contains("is paused"),
            _ => false,
        }
    }

    pub(super) fn from_engine(err: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        ENGINE_ERRORS.fetch_add(1, Ordering::Relaxed);
        match err {
            E::DockerResponseServerError {
                status_code,
                message,
            } => SandboxError::EngineRefused {
                status: status_code,
                message,
            },
            E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::RequestTimeoutError
            | E::SocketNotFoundError(_) => SandboxError::EngineUnavailable(err.to_string()),
            other => SandboxError::EngineAnswer(other.to_string()),
        }
    }

    /// Create answers 404 when the image is not there, and 400 naming the runtime when the
    /// engine has no runtime of that name ("unknown or invalid runtime name: …").
    pub(super) fn from_create(err: bollard::errors::Error, image: &str, runtime: &str) -> Self {
        match err {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => SandboxError::ImageMissing(image.to_owned()),
            bollard::errors::Error::DockerResponseServerError {
                status_code: 400,
                ref message,
            } if message.contains("runtime") => SandboxError::RuntimeMissing(runtime.to_owned()),
            other => Self::from_engine(other),
        }
    }
}

/// Engine calls that failed, process-wide (every failure passes through
/// [`SandboxError::from_engine`]).
pub(super) static ENGINE_ERRORS: AtomicU64 = AtomicU64::new(0);
