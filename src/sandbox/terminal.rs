//! A program on a pseudo-terminal inside a sandbox (a room's REPL): an exec with a TTY, its
//! input and output streams, resize, and its exit code. Who reads and writes (the room, its
//! clients) is not this module's business.

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecResults};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::exec::{InputPipe, OutputFrames};
use super::policy::{ENVIRONMENT, WORK_DIR};
use super::{Sandbox, SandboxError};

/// The terminal type programs are told they run on.
const TERM: &str = "TERM=xterm-256color";

/// A program running on a TTY in a sandbox. Dropping it does not stop the program: ending a
/// sandbox's programs is [`Sandbox::end_programs`].
pub struct Terminal {
    exec_id: String,
    input: InputPipe,
    output: OutputFrames,
    docker: bollard::Docker,
}

impl Sandbox {
    /// Starts `cmd` on a new pseudo-terminal of `cols` x `rows`, as the program user, in the
    /// work dir.
    pub async fn open_terminal(
        &self,
        cmd: Vec<String>,
        cols: u16,
        rows: u16,
    ) -> Result<Terminal, SandboxError> {
        let docker = self.sandboxes.docker().clone();
        let mut env: Vec<String> = ENVIRONMENT.iter().map(|s| s.to_string()).collect();
        env.push(TERM.to_owned());
        let options = CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(true),
            cmd: Some(cmd),
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
            return Err(SandboxError::Engine("exec started detached".to_owned()));
        };
        let terminal = Terminal {
            exec_id: exec.id,
            input,
            output,
            docker,
        };
        terminal.resize(cols, rows).await?;
        Ok(terminal)
    }
}

impl Terminal {
    /// Types `bytes` into the terminal (data for the program, never interpreted here).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SandboxError> {
        self.input
            .write_all(bytes)
            .await
            .map_err(|e| SandboxError::Engine(format!("terminal input: {e}")))?;
        self.input
            .flush()
            .await
            .map_err(|e| SandboxError::Engine(format!("terminal input: {e}")))
    }

    /// The next output bytes; `None` once the program has ended and its output is drained.
    pub async fn read(&mut self) -> Option<Result<bytes::Bytes, SandboxError>> {
        loop {
            return match self.output.next().await? {
                Ok(LogOutput::Console { message })
                | Ok(LogOutput::StdOut { message })
                | Ok(LogOutput::StdErr { message }) => Some(Ok(message)),
                Ok(LogOutput::StdIn { .. }) => continue,
                Err(err) => Some(Err(SandboxError::from_engine(err))),
            };
        }
    }

    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), SandboxError> {
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

    /// The program's exit code, once it has ended (`None` while it runs).
    pub async fn exit_code(&self) -> Result<Option<i64>, SandboxError> {
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
