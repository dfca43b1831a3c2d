//! Running one command inside a started sandbox: stdin in, stdout and stderr out (kept apart),
//! a wall-clock limit, and the facts of how it ended. Deciding what those facts mean for the
//! user (timeout, OOM, runtime error) is the executor's business.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bytes::Bytes;
use futures_util::{Stream as FuturesStream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::policy::{ENVIRONMENT, WORK_DIR};
use super::{SandboxError, Shared, host_cgroup};

/// The engine can report an OOM kill a little after the killed process's exit.
const OOM_EVENT_GRACE: Duration = Duration::from_millis(500);
/// Exit code the engine reports for a process ended by SIGKILL (128 + 9).
pub const SIGKILL_EXIT_CODE: i64 = 137;
/// First pause between exit-code polls once the output has ended; doubles up to the cap.
const EXIT_POLL_FIRST: Duration = Duration::from_millis(2);
const EXIT_POLL_MAX: Duration = Duration::from_millis(100);

/// Which of the program's streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A sink's answer to a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Continue,
    /// Stop now (e.g. the output cap was passed); the exec ends as [`ExecEnd::Stopped`].
    Stop,
}

/// Where an exec's output goes, chunk by chunk, as it arrives.
pub trait OutputSink: Send {
    fn push(&mut self, stream: Stream, chunk: &[u8]) -> Push;
}

/// One command to run in the sandbox's work dir, as the sandbox user.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// Everything the command reads on stdin; closed after it.
    pub stdin: Bytes,
    /// Wall-clock limit from start to exit.
    pub timeout: Duration,
    /// CPU time of the sandbox's processes together, from the start, past which the command
    /// is ended as [`ExecEnd::TimedOut`]; `None`: the wall clock only.
    pub cpu_limit: Option<Duration>,
}

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecEnd {
    /// The process exited; codes above 128 mean it was killed by signal `code - 128`.
    Exited { code: i64 },
    /// The wall-clock limit passed; the process may still be running.
    TimedOut,
    /// The sink asked to stop; the process may still be running.
    Stopped,
    /// The caller asked to end it (an interactive client's `kill`); it may still be running.
    Killed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOutcome {
    pub end: ExecEnd,
    /// Wall time from start until the output ended (or the limit/stop).
    pub duration: Duration,
    /// The kernel's OOM killer struck inside the sandbox while this exec ran.
    pub oom_killed: bool,
}

/// The demultiplexed output of an attached process (exec or container), as bollard gives it.
pub(super) type OutputFrames =
    Pin<Box<dyn FuturesStream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
/// The attached process's stdin.
pub(super) type InputPipe = Pin<Box<dyn AsyncWrite + Send>>;

/// What a frame handler wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    /// Stop reading: the sink wants no more.
    Stop,
    /// The process is known to have ended with this exit code (the runner's trailers).
    Finished(i64),
}

/// Why pumping ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pumped {
    Eof,
    Stopped,
    Finished(i64),
}

/// Input that arrives while the program runs (an interactive client typing): each chunk is
/// written as it comes; the end of the channel closes the program's stdin.
pub type LiveInput = super::input::InputReceiver;

/// Feeds `stdin`, then everything `live` brings, to the process (then closes its stdin) while
/// handing every output frame to `on_frame`, until the output ends or `on_frame` says
/// otherwise. Feeding runs concurrently with reading: a program may print before it reads, and
/// a program that never reads must not block us while its output piles up.
/// With `keep_open`, stdin stays open after `stdin` (a reused runner's stream, which carries
/// the next job); live input always ends with the stream closed.
pub(super) async fn pump(
    output: &mut OutputFrames,
    input: &mut InputPipe,
    stdin: Bytes,
    live: Option<LiveInput>,
    keep_open: bool,
    mut on_frame: impl FnMut(Stream, &[u8]) -> Flow,
) -> Result<Pumped, SandboxError> {
    let feed = async move {
        // A program that exits without reading all its input closes the pipe: not an error.
        if !stdin.is_empty() && input.write_all(&stdin).await.is_err() {
            return;
        }
        if let Some(mut live) = live {
            let _ = input.flush().await;
            // A chunk counts against the client's backlog until it is written (then dropped).
            while let Some(chunk) = live.recv().await {
                if input.write_all(&chunk.data).await.is_err() || input.flush().await.is_err() {
                    return;
                }
            }
        } else if keep_open {
            let _ = input.flush().await;
            return;
        }
        let _ = input.shutdown().await;
    };
    tokio::pin!(feed);
    let mut fed = false;
    loop {
        tokio::select! {
            () = &mut feed, if !fed => fed = true,
            frame = output.next() => {
                let (stream, message) = match frame {
                    None => return Ok(Pumped::Eof),
                    Some(Ok(LogOutput::StdOut { message }))
                    | Some(Ok(LogOutput::Console { message })) => (Stream::Stdout, message),
                    Some(Ok(LogOutput::StdErr { message })) => (Stream::Stderr, message),
                    Some(Ok(LogOutput::StdIn { .. })) => continue,
                    Some(Err(err)) => return Err(SandboxError::from_engine(err)),
                };
                match on_frame(stream, &message) {
                    Flow::Continue => {}
                    Flow::Stop => return Ok(Pumped::Stopped),
                    Flow::Finished(code) => return Ok(Pumped::Finished(code)),
                }
            }
        }
    }
}

/// An exec started with its streams attached.
pub(super) struct Started {
    pub(super) exec_id: String,
    pub(super) output: OutputFrames,
    pub(super) input: InputPipe,
}

/// Starts `cmd` in the sandbox's work dir as the sandbox user, attached.
pub(super) async fn start(
    shared: &Shared,
    container: &str,
    cmd: Vec<String>,
) -> Result<Started, SandboxError> {
    let docker = &shared.docker;
    let options = CreateExecOptions {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(cmd),
        user: Some(shared.config.user.clone()),
        working_dir: Some(WORK_DIR.to_owned()),
        env: Some(ENVIRONMENT.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let exec = docker
        .create_exec(container, options)
        .await
        .map_err(SandboxError::from_engine)?;
    let StartExecResults::Attached { output, input } = docker
        .start_exec(&exec.id, None)
        .await
        .map_err(SandboxError::from_engine)?
    else {
        return Err(SandboxError::ExecDetached);
    };
    Ok(Started {
        exec_id: exec.id,
        output,
        input,
    })
}

pub(super) async fn run(
    shared: &Shared,
    container: &str,
    spec: ExecSpec,
    sink: &mut dyn OutputSink,
) -> Result<ExecOutcome, SandboxError> {
    let oom_mark = OomMark::take(shared, container).await;
    let Started {
        exec_id,
        mut output,
        mut input,
    } = start(shared, container, spec.cmd).await?;
    let started = Instant::now();

    let on_frame = |stream: Stream, chunk: &[u8]| match sink.push(stream, chunk) {
        Push::Continue => Flow::Continue,
        Push::Stop => Flow::Stop,
    };
    let timed = async {
        match pump(&mut output, &mut input, spec.stdin, None, false, on_frame).await? {
            Pumped::Stopped => Ok((ExecEnd::Stopped, started.elapsed())),
            // Only the runner's trailers finish a stream early; an exec ends at EOF.
            Pumped::Eof | Pumped::Finished(_) => {
                let duration = started.elapsed();
                let code = wait_for_exit_code(shared, &exec_id).await?;
                Ok((ExecEnd::Exited { code }, duration))
            }
        }
    };
    let (end, duration) = tokio::select! {
        timed = tokio::time::timeout(spec.timeout, timed) => match timed {
            Ok(result) => result?,
            Err(_) => (ExecEnd::TimedOut, started.elapsed()),
        },
        () = host_cgroup::cpu_spent(container, spec.cpu_limit) => {
            (ExecEnd::TimedOut, started.elapsed())
        }
    };
    Ok(ExecOutcome {
        end,
        duration,
        oom_killed: oom_mark.struck(shared, container, end).await,
    })
}

/// The OOM kills of a sandbox before a command, to tell afterwards whether the OOM killer
/// struck while it ran: from the engine's events, and from the cgroup's own counter where the
/// host's cgroup files are in sight (it cannot trail the exit as the event can).
pub(super) struct OomMark {
    events: u64,
    cgroup: Option<u64>,
}

impl OomMark {
    pub(super) async fn take(shared: &Shared, container: &str) -> OomMark {
        OomMark {
            events: shared.oom.count(container),
            cgroup: super::host_cgroup::oom_kills(container).await,
        }
    }

    /// Whether the OOM killer struck in `container` since the mark. A SIGKILL exit waits
    /// briefly for the engine's event, which can trail the exit.
    pub(super) async fn struck(&self, shared: &Shared, container: &str, end: ExecEnd) -> bool {
        if let Some(before) = self.cgroup
            && let Some(after) = super::host_cgroup::oom_kills(container).await
            && after > before
        {
            return true;
        }
        match end {
            ExecEnd::Exited {
                code: SIGKILL_EXIT_CODE,
            } => {
                shared
                    .oom
                    .wait_above(container, self.events, OOM_EVENT_GRACE)
                    .await
            }
            _ => shared.oom.count(container) > self.events,
        }
    }
}

/// The output can end a moment before the engine has recorded the exit: poll briefly.
pub(super) async fn wait_for_exit_code(
    shared: &Shared,
    exec_id: &str,
) -> Result<i64, SandboxError> {
    let mut pause = EXIT_POLL_FIRST;
    loop {
        let inspect = shared
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(SandboxError::from_engine)?;
        if inspect.running != Some(true)
            && let Some(code) = inspect.exit_code
        {
            return Ok(code);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(EXIT_POLL_MAX);
    }
}

/// Wraps `cmd` so that it first unpacks a tar of `archive_len` bytes from stdin into the work
/// dir, then runs with the rest of stdin as its own. `head -c` reads exactly that many bytes
/// (never more), so the program's input is untouched. Done in the same exec as the first
/// command to save an exec round trip per job.
pub fn unpack_then(archive_len: usize, cmd: &[String]) -> Vec<String> {
    let script = format!("head -c \"$0\" | tar -x -m -f - -C {WORK_DIR} && exec \"$@\"");
    ["sh".to_owned(), "-c".to_owned(), script]
        .into_iter()
        .chain(std::iter::once(archive_len.to_string()))
        .chain(cmd.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_wrapper_passes_length_and_command_as_arguments() {
        let cmd = unpack_then(1024, &["python3".into(), "main.py".into(), "a b".into()]);
        assert_eq!(&cmd[..2], ["sh", "-c"]);
        assert_eq!(cmd[3], "1024");
        // User arguments stay separate argv entries: never spliced into the script.
        assert_eq!(&cmd[4..], ["python3", "main.py", "a b"]);
        assert!(!cmd[2].contains("python3"));
    }
}
