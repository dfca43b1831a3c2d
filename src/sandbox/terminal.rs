//! A program on a pseudo-terminal inside a sandbox (a room's REPL): an exec with a TTY, its
//! input and output streams, resize, and its exit code. Who reads and writes (the room, its
//! clients) is not this module's business.
//!
//! The two directions are separate values, so that one task may block writing input to a
//! program that does not read while another keeps draining its output.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecResults};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::exec::{InputPipe, OutputFrames};
use super::policy::{ENVIRONMENT, WORK_DIR};
use super::{Sandbox, SandboxError};

/// The terminal type programs are told they run on.
const TERM: &str = "TERM=xterm-256color";
/// Prints the process session of the exec (a TTY exec leads its own session) on the first line,
/// then becomes the program. [`Sandbox::end_programs`] spares that session: a run in the same
/// sandbox ends its own processes, not the terminal's. Only the part after the last `)` of
/// `stat` is split, as the command name may hold spaces.
const REPORT_SESSION_THEN_EXEC: &str =
    r#"read -r stat < /proc/$$/stat; session() { echo "$4"; }; session ${stat##*) }; exec "$@""#;
/// The wrapper's first line arrives at once unless the sandbox cannot start a process.
const SESSION_LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Typing into the terminal, and its size.
pub struct TerminalInput {
    exec_id: String,
    pipe: InputPipe,
    docker: bollard::Docker,
}

/// What the terminal shows, and how its program ended.
pub struct TerminalOutput {
    exec_id: String,
    frames: OutputFrames,
    docker: bollard::Docker,
    /// Output that came with the session line.
    pending: Option<Bytes>,
    session: u32,
    /// The sandbox's record of the live terminal session, cleared when this one ends.
    registered: Arc<AtomicU32>,
}

impl Sandbox {
    /// Starts `cmd` on a new pseudo-terminal of `cols` x `rows`, as the program user, in the
    /// work dir. Its processes outlive [`Sandbox::end_programs`]; dropping the halves does not
    /// stop them ([`Sandbox::end_all_programs`] does).
    pub async fn open_terminal(
        &self,
        cmd: Vec<String>,
        cols: u16,
        rows: u16,
    ) -> Result<(TerminalInput, TerminalOutput), SandboxError> {
        let docker = self.sandboxes.docker().clone();
        let mut env: Vec<String> = ENVIRONMENT.iter().map(|s| s.to_string()).collect();
        env.push(TERM.to_owned());
        let wrapped = ["sh", "-c", REPORT_SESSION_THEN_EXEC, "terminal"]
            .map(String::from)
            .into_iter()
            .chain(cmd)
            .collect();
        let options = CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(true),
            cmd: Some(wrapped),
            user: Some(self.sandboxes.config().user.clone()),
            working_dir: Some(WORK_DIR.to_owned()),
            env: Some(env),
            ..Default::default()
        };
        let exec = docker
            .create_exec(&self.container_id, options)
            .await
            .map_err(SandboxError::from_engine)?;
        let StartExecResults::Attached { output, input } = docker
            .start_exec(&exec.id, None)
            .await
            .map_err(SandboxError::from_engine)?
        else {
            return Err(SandboxError::ExecDetached);
        };
        let mut terminal_output = TerminalOutput {
            exec_id: exec.id.clone(),
            frames: output,
            docker: docker.clone(),
            pending: None,
            session: 0,
            registered: self.terminal_session.clone(),
        };
        let (session, rest) = tokio::time::timeout(
            SESSION_LINE_TIMEOUT,
            read_session_line(&mut terminal_output),
        )
        .await
        .map_err(|_| SandboxError::TerminalNotStarted("no session line in time".to_owned()))??;
        terminal_output.session = session;
        terminal_output.pending = (!rest.is_empty()).then(|| Bytes::from(rest));
        self.terminal_session.store(session, Ordering::Release);
        let mut terminal_input = TerminalInput {
            exec_id: exec.id,
            pipe: input,
            docker,
        };
        terminal_input.resize(cols, rows).await?;
        Ok((terminal_input, terminal_output))
    }
}

/// Reads up to the wrapper's first line; returns the session it names and what followed.
async fn read_session_line(output: &mut TerminalOutput) -> Result<(u32, Vec<u8>), SandboxError> {
    let mut seen = Vec::new();
    loop {
        match output.read_frame().await {
            Some(Ok(chunk)) => seen.extend_from_slice(&chunk),
            Some(Err(err)) => return Err(err),
            None => {
                return Err(SandboxError::TerminalNotStarted(format!(
                    "it ended at once: {}",
                    String::from_utf8_lossy(&seen)
                )));
            }
        }
        if let Some((session, rest)) = parse_session_line(&seen) {
            return Ok((session, rest.to_vec()));
        }
        if seen.len() > 64 {
            return Err(SandboxError::TerminalNotStarted(
                "it reported no session".to_owned(),
            ));
        }
    }
}

/// `"<session>\r\n<rest>"` (a TTY turns the newline into CRLF) → the session and the rest.
fn parse_session_line(seen: &[u8]) -> Option<(u32, &[u8])> {
    let end = seen.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&seen[..end])
        .ok()?
        .trim_end_matches('\r');
    let session = line.trim().parse().ok().filter(|&s: &u32| s > 0)?;
    Some((session, &seen[end + 1..]))
}

impl TerminalInput {
    /// Types `bytes` into the terminal (data for the program, never interpreted here).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SandboxError> {
        self.pipe
            .write_all(bytes)
            .await
            .map_err(SandboxError::TerminalInput)?;
        self.pipe.flush().await.map_err(SandboxError::TerminalInput)
    }

    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<(), SandboxError> {
        self.docker
            .resize_exec(
                &self.exec_id,
                ResizeExecOptions {
                    width: cols,
                    height: rows,
                },
            )
            .await
            .map_err(SandboxError::from_engine)
    }
}

impl TerminalOutput {
    /// The next output bytes; `None` once the program has ended and its output is drained.
    pub async fn read(&mut self) -> Option<Result<Bytes, SandboxError>> {
        if let Some(pending) = self.pending.take() {
            return Some(Ok(pending));
        }
        let next = self.read_frame().await;
        if next.is_none() {
            // The terminal's session is over: a later process with that number is not spared.
            let _ = self.registered.compare_exchange(
                self.session,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        next
    }

    async fn read_frame(&mut self) -> Option<Result<Bytes, SandboxError>> {
        loop {
            return match self.frames.next().await? {
                Ok(LogOutput::Console { message })
                | Ok(LogOutput::StdOut { message })
                | Ok(LogOutput::StdErr { message }) => Some(Ok(message)),
                Ok(LogOutput::StdIn { .. }) => continue,
                Err(err) => Some(Err(SandboxError::from_engine(err))),
            };
        }
    }

    /// The program's exit code, once it has ended (`None` while it runs).
    pub async fn exit_code(&mut self) -> Result<Option<i64>, SandboxError> {
        let inspect = self
            .docker
            .inspect_exec(&self.exec_id)
            .await
            .map_err(SandboxError::from_engine)?;
        Ok(match inspect.running {
            Some(false) => inspect.exit_code,
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_line_is_split_from_what_follows() {
        assert_eq!(
            parse_session_line(b"42\r\n>>> "),
            Some((42, b">>> ".as_slice()))
        );
        assert_eq!(parse_session_line(b"42\n"), Some((42, b"".as_slice())));
        assert_eq!(parse_session_line(b"42"), None, "the line is not complete");
        assert_eq!(parse_session_line(b"sh: oops\r\n"), None);
        assert_eq!(parse_session_line(b"0\r\n"), None);
    }
}
