//! Carrying a sandbox's files into another one (a session that moves to another language's
//! image keeps its work dir). A tar made by an exec in the source and unpacked by an exec in
//! the target: `put_archive` is refused on a read-only rootfs, and the work dir is a tmpfs.

use std::time::Duration;

use super::exec::{ExecEnd, ExecSpec};
use super::output::OutputCollector;
use super::policy::WORK_DIR;
use super::{Sandbox, SandboxError};

/// Packing or unpacking a full work dir (a few hundred MB at most) takes well under this.
const COPY_TIMEOUT: Duration = Duration::from_secs(60);

impl Sandbox {
    /// Copies every file of this sandbox's work dir into `target`'s (owners and modes as the
    /// program user made them). `max_bytes` bounds the archive held in memory on the way;
    /// the source's work dir size plus tar headers fits in it.
    pub async fn copy_work_dir_into(
        &self,
        target: &Sandbox,
        max_bytes: usize,
    ) -> Result<(), SandboxError> {
        let mut archive = OutputCollector::new(max_bytes);
        let packed = self
            .exec(
                ExecSpec {
                    cmd: ["tar", "-c", "-f", "-", "-C", WORK_DIR, "."]
                        .map(String::from)
                        .to_vec(),
                    stdin: bytes::Bytes::new(),
                    timeout: COPY_TIMEOUT,
                },
                &mut archive,
            )
            .await?;
        let archive = archive.finish();
        if packed.end != (ExecEnd::Exited { code: 0 }) || archive.truncated {
            return Err(SandboxError::Engine(format!(
                "packing the work dir failed ({:?}, truncated: {}): {}",
                packed.end,
                archive.truncated,
                String::from_utf8_lossy(&archive.stderr)
            )));
        }
        let mut messages = OutputCollector::new(4096);
        let unpacked = target
            .exec(
                ExecSpec {
                    cmd: ["tar", "-x", "-m", "-f", "-", "-C", WORK_DIR]
                        .map(String::from)
                        .to_vec(),
                    stdin: archive.stdout.into(),
                    timeout: COPY_TIMEOUT,
                },
                &mut messages,
            )
            .await?;
        if unpacked.end != (ExecEnd::Exited { code: 0 }) {
            return Err(SandboxError::Engine(format!(
                "unpacking the work dir failed ({:?}): {}",
                unpacked.end,
                messages.finish().stderr_text()
            )));
        }
        Ok(())
    }
}
