//! One client in a room: the events it is sent, what it types and how it resizes, and why its
//! events ended. Leaving is dropping it. What a `start` does (a sandbox, maybe another image) is
//! the session's business, not the room's.

use std::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::fanout::{ClientEvents, ClientId, RoomEvent};
use super::gate::{InputGate, InputRefused};
use super::terminal::SharedTerminal;

/// Largest terminal a client may ask for.
pub const MAX_TERMINAL_SIDE: u16 = 1000;

/// Why a client's events ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The session was deleted or expired.
    SessionEnded,
    /// runbox is shutting down (a kept session may be joined again after the restart).
    ShuttingDown,
    /// The client fell too far behind the room's output and was dropped.
    TooSlow,
}

/// A resize out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cols and rows must be between 1 and {MAX_TERMINAL_SIDE}")]
pub struct BadSize;

/// One client in a room. Dropping it leaves the room.
pub struct TerminalClient {
    terminal: SharedTerminal,
    client: ClientId,
    events: ClientEvents,
    gate: InputGate,
    /// Cancelled when the room's session ends.
    ended: CancellationToken,
    /// Cancelled when runbox shuts down.
    stopping: CancellationToken,
    /// Run when this client leaves, told whether it was the last one.
    on_leave: Option<Box<dyn FnOnce(bool) + Send + Sync>>,
}

impl TerminalClient {
    /// Joins `terminal`'s room. `ended` and `stopping` say why the events end, when they do;
    /// `on_leave` runs as the client leaves.
    pub fn join(
        terminal: &SharedTerminal,
        ended: CancellationToken,
        stopping: CancellationToken,
        on_leave: impl FnOnce(bool) + Send + Sync + 'static,
    ) -> TerminalClient {
        let (client, events) = terminal.join();
        TerminalClient {
            gate: InputGate::new(terminal.config(), Instant::now()),
            terminal: terminal.clone(),
            client,
            events,
            ended,
            stopping,
            on_leave: Some(Box::new(on_leave)),
        }
    }

    /// The next event for this client; `None` once it has left the room (see
    /// [`TerminalClient::departure`]).
    pub async fn next_event(&mut self) -> Option<RoomEvent> {
        self.events.next().await
    }

    /// Why the events ended.
    pub fn departure(&self) -> Departure {
        if self.stopping.is_cancelled() {
            Departure::ShuttingDown
        } else if self.ended.is_cancelled() {
            Departure::SessionEnded
        } else {
            Departure::TooSlow
        }
    }

    /// Types `data` into the terminal (bounded in size and rate per client).
    pub fn input(&mut self, data: String) -> Result<(), InputRefused> {
        self.gate.admit(data.len(), Instant::now())?;
        self.terminal.input(Bytes::from(data))
    }

    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), BadSize> {
        let valid = 1..=MAX_TERMINAL_SIDE;
        if !valid.contains(&cols) || !valid.contains(&rows) {
            return Err(BadSize);
        }
        self.terminal.resize(cols, rows);
        Ok(())
    }
}

impl Drop for TerminalClient {
    fn drop(&mut self) {
        self.terminal.leave(self.client);
        if let Some(on_leave) = self.on_leave.take() {
            on_leave(self.terminal.clients() == 0);
        }
    }
}
