//! runbox's own failures in the sandbox layer, and the one conversion every failed Engine API
//! call passes through (which counts it).

use std::sync::atomic::{AtomicU64, Ordering};

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
    WorkDirNotCopied(super::work_dir::CopyFailed),
    /// Every sandbox this process may own (`limits.max_sandboxes`) exists already.
    #[error("every sandbox this server may keep is in use; retry later")]
    AtCapacity,
}

impl SandboxError {
    pub(super) fn from_engine(err: bollard::errors::Error) -> Self {
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
    pub(super) fn from_create(err: bollard::errors::Error, image: &str) -> Self {
        match err {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => SandboxError::ImageMissing(image.to_owned()),
            other => Self::from_engine(other),
        }
    }
}

/// Engine calls that failed, process-wide (every failure passes through
/// [`SandboxError::from_engine`]).
pub(super) static ENGINE_ERRORS: AtomicU64 = AtomicU64::new(0);
