//! Carrying a sandbox's files into another one (a session that moves to another language's
//! image keeps its work dir). A tar made by an exec in the source streams into a tar unpacking
//! in the target, one engine frame at a time: `put_archive` is refused on a read-only rootfs,
//! and the work dir is a tmpfs.
//!
//! Nothing of the archive is held in runbox beyond the frame in flight. Collecting it whole
//! first held up to `work_dir_mb + 16 MiB` per move: three sessions switching at once took the
//! server from 190 to 584 MB, and sparse files (8 × 100 MB, 4 KB of data each) filled that
//! cap every time. `--sparse` carries the holes as holes.

use std::time::Duration;

use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::exec::{self, Started};
use super::policy::WORK_DIR;
use super::{Sandbox, SandboxError};

/// Packing and unpacking a full work dir (a few hundred MB at most) takes well under this.
const COPY_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of tar's own messages kept for the log.
const MESSAGES_KEPT: usize = 4096;

/// Why a work dir could not be moved; the source sandbox is untouched either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CopyFailed(pub String);

impl Sandbox {
    /// Copies every file of this sandbox's work dir into `target`'s (owners, modes and holes
    /// as the program user made them). At most [`super::MAX_CONCURRENT_COPIES`] copies run at
    /// once, process-wide; each holds one engine frame in memory at a time.
    pub async fn copy_work_dir_into(&self, target: &Sandbox) -> Result<(), SandboxError> {
        let shared = &self.sandboxes.shared;
        let _turn = shared.copies.acquire().await.map_err(|_| {
            SandboxError::WorkDirNotCopied(CopyFailed("the copy queue is closed".to_owned()))
        })?;
        match tokio::time::timeout(COPY_TIMEOUT, self.stream_work_dir(target)).await {
            Ok(copied) => copied,
            Err(_) => Err(SandboxError::WorkDirNotCopied(CopyFailed(format!(
                "the copy took longer than {} s",
                COPY_TIMEOUT.as_secs()
            )))),
        }
    }

    async fn stream_work_dir(&self, target: &Sandbox) -> Result<(), SandboxError> {
        let shared = &self.sandboxes.shared;
        let unpack = exec::start(
            shared,
            &target.container_id,
            ["tar", "-x", "-m", "-f", "-", "-C", WORK_DIR]
                .map(String::from)
                .to_vec(),
        )
        .await?;
        let pack = exec::start(
            shared,
            &self.container_id,
            ["tar", "-c", "--sparse", "-f", "-", "-C", WORK_DIR, "."]
                .map(String::from)
                .to_vec(),
        )
        .await?;
        let Started {
            exec_id: unpack_id,
            output: mut unpack_output,
            input: mut into_target,
        } = unpack;
        let Started {
            exec_id: pack_id,
            output: mut archive,
            input: pack_input,
        } = pack;
        drop(pack_input);
        let mut messages = Vec::new();
        let mut keep = |bytes: &[u8]| {
            let room = MESSAGES_KEPT.saturating_sub(messages.len());
            messages.extend_from_slice(&bytes[..bytes.len().min(room)]);
        };
        let mut target_closed = false;
        // The target's output is read alongside, so that its messages never fill a pipe
        // while it is being written to.
        let mut unpack_done = false;
        let mut pack_done = false;
        while !pack_done {
            tokio::select! {
                frame = archive.next() => match frame {
                    None => pack_done = true,
                    Some(Ok(LogOutput::StdOut { message })) => {
                        // Awaited: a slow target slows the source down; nothing piles up.
                        if !target_closed && into_target.write_all(&message).await.is_err() {
                            target_closed = true;
                        }
                    }
                    Some(Ok(LogOutput::StdErr { message })) => keep(&message),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(SandboxError::from_engine(err)),
                },
                frame = unpack_output.next(), if !unpack_done => {
                    unpack_done = !messages_of(frame, &mut keep)?;
                }
            }
        }
        let _ = into_target.shutdown().await;
        drop(into_target);
        // A stream that has ended is not polled again.
        while !unpack_done {
            unpack_done = !messages_of(unpack_output.next().await, &mut keep)?;
        }
        let packed = exec::wait_for_exit_code(shared, &pack_id).await?;
        let unpacked = exec::wait_for_exit_code(shared, &unpack_id).await?;
        if packed != 0 || unpacked != 0 {
            return Err(SandboxError::WorkDirNotCopied(CopyFailed(format!(
                "tar exited {packed} (pack) and {unpacked} (unpack): {}",
                String::from_utf8_lossy(&messages).trim()
            ))));
        }
        Ok(())
    }
}

/// Keeps the text of one frame of the unpacking tar's output; false once the output ended.
fn messages_of(
    frame: Option<Result<LogOutput, bollard::errors::Error>>,
    keep: &mut impl FnMut(&[u8]),
) -> Result<bool, SandboxError> {
    match frame {
        None => Ok(false),
        Some(Ok(LogOutput::StdErr { message } | LogOutput::StdOut { message })) => {
            keep(&message);
            Ok(true)
        }
        Some(Ok(_)) => Ok(true),
        Some(Err(err)) => Err(SandboxError::from_engine(err)),
    }
}
