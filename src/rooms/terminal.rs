//! A session's shared terminal: the REPL running on a PTY in the session's sandbox, wired to
//! the session's [`Room`](super::fanout::Room). One task drains the program's output into the room (throttled, so a
//! flood slows the program down instead of piling up), another writes the clients' input to it
//! (so a program that does not read never stalls the output). Starting a REPL is the session's
//! business (it needs the sandbox); this module runs one once it is open.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fanout::{ClientEvents, ClientId, MAX_OUTPUT_EVENT_BYTES, Room};
use super::gate::{InputRefused, TokenBucket};
use crate::config::TerminalConfig;
use crate::executor::{TerminalInput, TerminalOutput, Utf8Decoder};

/// Size of a terminal before any client says otherwise.
pub const DEFAULT_SIZE: (u16, u16) = (80, 24);
/// Messages (input or resize) waiting for a program that is not reading; past it they are
/// refused.
const INPUT_BACKLOG: usize = 64;
/// Bytes of input waiting for a program that is not reading, at least: four of the largest
/// frames (64 frames of 16 KiB could otherwise park 1 MiB per session).
const INPUT_BACKLOG_BYTES: usize = 64 * 1024;
/// Program starts on one terminal in a burst; then `terminal.starts_per_minute`.
const START_BURST: f64 = 3.0;
/// The `exit` code of a terminal program lost with its sandbox (replaced after a run whose
/// memory ran out or whose processes could not be ended); also when the engine cannot say.
pub const LOST_WITH_SANDBOX: i64 = -1;
/// After its output ends, how long the program's exit code is polled for.
const EXIT_CODE_WAIT: Duration = Duration::from_secs(2);

enum ToProgram {
    /// Its bytes count against the backlog until written (the permit is dropped then).
    Input(Bytes, OwnedSemaphorePermit),
    Resize(u16, u16),
}

/// The running program's input side and the stop signal of its two tasks.
struct Running {
    generation: u64,
    input: mpsc::Sender<ToProgram>,
    /// Bytes of input the program has not taken yet may not pass this.
    input_bytes: Arc<Semaphore>,
    stop: CancellationToken,
}

struct State {
    room: Room,
    running: Option<Running>,
    size: (u16, u16),
    generation: u64,
    /// A program was started at least once (a room starts its REPL on the first join only).
    started: bool,
    /// `start` frames: each one may create a sandbox (another language's image).
    starts: TokenBucket,
}

/// The room and the program on its terminal. Cheap to clone.
#[derive(Clone)]
pub struct SharedTerminal {
    config: Arc<TerminalConfig>,
    state: Arc<Mutex<State>>,
}

impl SharedTerminal {
    pub fn new(config: Arc<TerminalConfig>) -> SharedTerminal {
        let room = Room::new(config.scrollback_bytes, config.client_queue_frames);
        SharedTerminal {
            config: config.clone(),
            state: Arc::new(Mutex::new(State {
                room,
                running: None,
                size: DEFAULT_SIZE,
                generation: 0,
                started: false,
                starts: TokenBucket::new(
                    f64::from(config.starts_per_minute) / 60.0,
                    START_BURST,
                    Instant::now(),
                ),
            })),
        }
    }

    /// The bounds this terminal and its clients keep.
    pub fn config(&self) -> &TerminalConfig {
        &self.config
    }

    pub(super) fn join(&self) -> (ClientId, ClientEvents) {
        self.lock().room.join()
    }

    pub(super) fn leave(&self, client: ClientId) {
        self.lock().room.leave(client);
    }

    pub fn clients(&self) -> usize {
        self.lock().room.clients()
    }

    /// True for the one caller that should start the first program (a room starts its REPL
    /// on the first join only); [`SharedTerminal::release_first_start`] if that failed.
    pub fn claim_first_start(&self) -> bool {
        !std::mem::replace(&mut self.lock().started, true)
    }

    pub fn release_first_start(&self) {
        let mut state = self.lock();
        if state.running.is_none() {
            state.started = false;
        }
    }

    pub fn size(&self) -> (u16, u16) {
        self.lock().size
    }

    /// Counts a client's `start` against the terminal's start rate.
    pub fn admit_start(&self) -> Result<(), InputRefused> {
        let per_minute = self.config.starts_per_minute;
        if self.lock().starts.try_take(1.0, Instant::now()) {
            Ok(())
        } else {
            Err(InputRefused::StartsTooFast(per_minute))
        }
    }

    /// Hands `data` to the program (bounds already checked by the client's [`InputGate`]).
    pub fn input(&self, data: Bytes) -> Result<(), InputRefused> {
        let state = self.lock();
        let running = state.running.as_ref().ok_or(InputRefused::NotRunning)?;
        let bytes = u32::try_from(data.len()).map_err(|_| InputRefused::Backlogged)?;
        let held = running
            .input_bytes
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| InputRefused::Backlogged)?;
        running
            .input
            .try_send(ToProgram::Input(data, held))
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => InputRefused::Backlogged,
                mpsc::error::TrySendError::Closed(_) => InputRefused::NotRunning,
            })
    }

    /// The room's terminal size (one PTY: the last resize wins).
    pub fn resize(&self, cols: u16, rows: u16) {
        let mut state = self.lock();
        state.size = (cols, rows);
        if let Some(running) = &state.running {
            // A full backlog: the size still applies to the next program.
            let _ = running.input.try_send(ToProgram::Resize(cols, rows));
        }
    }

    /// Stops the tasks of the running program, without an `exit` to the clients (it is being
    /// replaced, or the session ends). The program itself is ended by the session.
    pub fn stop_program(&self) {
        if let Some(running) = self.lock().running.take() {
            running.stop.cancel();
        }
    }

    /// The program was lost with its sandbox (replaced after a run): the clients get an
    /// `exit` with `code`, and may start a new one.
    pub fn program_lost(&self, code: i64) {
        let mut state = self.lock();
        if let Some(running) = state.running.take() {
            running.stop.cancel();
            state.room.exit(code);
        }
    }

    /// The session is gone: its program's tasks stop and every client's events end.
    pub fn close(&self) {
        self.stop_program();
        self.lock().room.close();
    }

    /// Wires a freshly opened program to the room. `stop` ends its tasks (a child of the
    /// sessions' stop signal); they run on `tasks`.
    pub fn attach_program(
        &self,
        input: TerminalInput,
        output: TerminalOutput,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let (sender, receiver) = mpsc::channel(INPUT_BACKLOG);
        let generation = {
            let mut state = self.lock();
            if let Some(old) = state.running.take() {
                old.stop.cancel();
            }
            state.generation += 1;
            state.started = true;
            state.room.restarted();
            state.running = Some(Running {
                generation: state.generation,
                input: sender,
                input_bytes: Arc::new(Semaphore::new(
                    INPUT_BACKLOG_BYTES.max(4 * self.config.max_input_bytes),
                )),
                stop: stop.clone(),
            });
            state.generation
        };
        tasks.spawn(write_input(input, receiver, stop.clone()));
        tasks.spawn(self.clone().pump_output(output, generation, stop));
    }

    /// Drains the program's output into the room at most at the configured rate; when it
    /// ends, tells the room the exit code.
    async fn pump_output(
        self,
        mut output: TerminalOutput,
        generation: u64,
        stop: CancellationToken,
    ) {
        let rate = self.config.output_bytes_per_sec as f64;
        let mut budget = TokenBucket::new(rate, 2.0 * rate, Instant::now());
        let mut text = Utf8Decoder::default();
        loop {
            let chunk = tokio::select! {
                () = stop.cancelled() => return,
                chunk = output.read() => chunk,
            };
            let Some(Ok(chunk)) = chunk else { break };
            let (chunk, ended) = gather_ready(&mut output, chunk);
            // Not reading while over the budget is what slows the program down: its writes
            // block on the full PTY.
            let wait = budget.take(chunk.len() as f64, Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            let decoded = text.push(&chunk);
            if !decoded.is_empty() {
                self.lock().room.output(Bytes::from(decoded));
            }
            if ended {
                break;
            }
        }
        let tail = text.finish();
        let code = exit_code(&mut output).await;
        let mut state = self.lock();
        if state.running.as_ref().map(|r| r.generation) != Some(generation) {
            return; // replaced meanwhile: the old program's end is not news
        }
        state.running = None;
        if !tail.is_empty() {
            state.room.output(Bytes::from(tail));
        }
        state.room.exit(code);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No operation leaves the state half-changed: a panic cannot make it inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `first` and the output already waiting behind it, up to [`MAX_OUTPUT_EVENT_BYTES`]
/// (taken only when ready: nothing waits for more). True when the output ended on the way.
fn gather_ready(output: &mut TerminalOutput, first: Bytes) -> (Bytes, bool) {
    if first.len() >= MAX_OUTPUT_EVENT_BYTES {
        return (first, false);
    }
    let mut gathered = BytesMut::from(first);
    while gathered.len() < MAX_OUTPUT_EVENT_BYTES {
        match output.read().now_or_never() {
            None => break,
            Some(Some(Ok(more))) => gathered.extend_from_slice(&more),
            // An error ends the output as the end does: what came before is still sent.
            Some(Some(Err(_)) | None) => return (gathered.freeze(), true),
        }
    }
    (gathered.freeze(), false)
}

async fn write_input(
    mut input: TerminalInput,
    mut receiver: mpsc::Receiver<ToProgram>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = receiver.recv() => message,
        };
        let write = async {
            match message {
                None => None,
                Some(ToProgram::Input(data, _held)) => Some(input.write(&data).await),
                Some(ToProgram::Resize(cols, rows)) => Some(input.resize(cols, rows).await),
            }
        };
        // A write blocks while the program does not read: the stop signal must still end it.
        let written = tokio::select! {
            () = stop.cancelled() => return,
            written = write => match written {
                None => return,
                Some(written) => written,
            },
        };
        if written.is_err() {
            return; // the program is gone; the output side reports its end
        }
    }
}

/// The program's exit code; [`LOST_WITH_SANDBOX`] when the engine cannot say.
async fn exit_code(output: &mut TerminalOutput) -> i64 {
    let deadline = Instant::now() + EXIT_CODE_WAIT;
    let mut pause = Duration::from_millis(5);
    while Instant::now() < deadline {
        match output.exit_code().await {
            Ok(Some(code)) => return code,
            Ok(None) => {}
            Err(_) => break,
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    LOST_WITH_SANDBOX
}

#[cfg(test)]
pub(in crate::rooms) mod tests {
    use super::*;

    pub(in crate::rooms) fn small_config() -> TerminalConfig {
        TerminalConfig {
            scrollback_bytes: 1024,
            client_queue_frames: 16,
            max_input_bytes: 8,
            input_frames_per_sec: 10,
            starts_per_minute: 6,
            output_bytes_per_sec: 1024,
        }
    }

    #[test]
    fn starts_pass_in_a_burst_of_three_then_at_the_configured_rate() {
        let terminal = SharedTerminal::new(Arc::new(small_config()));
        for _ in 0..3 {
            terminal.admit_start().unwrap();
        }
        assert_eq!(terminal.admit_start(), Err(InputRefused::StartsTooFast(6)));
    }
}
