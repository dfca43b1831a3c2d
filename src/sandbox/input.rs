//! Input a client sends while its program runs (an interactive run's stdin, a room's
//! keystrokes), bounded in bytes until the program has taken it: a program that never reads
//! must not let a client park memory in runbox (64 stdin frames of 8 MiB each once pinned
//! 530 MB per socket).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most chunks waiting at once, whatever their size (each costs a channel slot).
const BACKLOG_CHUNKS: usize = 64;

/// A chunk of input on its way to the program; its bytes count against the backlog until it
/// is dropped (after it was written to the program).
#[derive(Debug)]
pub struct InputChunk {
    pub data: Bytes,
    _held: OwnedSemaphorePermit,
}

/// Why a chunk was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFull {
    /// The backlog holds its bytes (or chunks) already: the program is not reading.
    Backlogged,
    /// The chunk alone is larger than the whole backlog.
    TooLarge,
    /// The program closed its input or ended.
    Closed,
}

/// The client's side: takes chunks while the backlog has room.
#[derive(Debug, Clone)]
pub struct InputSender {
    chunks: mpsc::Sender<InputChunk>,
    budget: Arc<Semaphore>,
    backlog_bytes: usize,
}

/// The program's side: chunks in the order they were sent.
pub type InputReceiver = mpsc::Receiver<InputChunk>;

/// An input channel holding at most `backlog_bytes` bytes (and [`BACKLOG_CHUNKS`] chunks)
/// not yet taken by the program.
pub fn input_channel(backlog_bytes: usize) -> (InputSender, InputReceiver) {
    let backlog_bytes = backlog_bytes.min(Semaphore::MAX_PERMITS);
    let (chunks, receiver) = mpsc::channel(BACKLOG_CHUNKS);
    let sender = InputSender {
        chunks,
        budget: Arc::new(Semaphore::new(backlog_bytes)),
        backlog_bytes,
    };
    (sender, receiver)
}

impl InputSender {
    /// Queues `data` for the program, or says why not (nothing is queued then).
    pub fn try_send(&self, data: Bytes) -> Result<(), InputFull> {
        if self.chunks.is_closed() {
            return Err(InputFull::Closed);
        }
        if data.len() > self.backlog_bytes {
            return Err(InputFull::TooLarge);
        }
        let bytes = u32::try_from(data.len()).map_err(|_| InputFull::TooLarge)?;
        let held = self
            .budget
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| InputFull::Backlogged)?;
        self.chunks
            .try_send(InputChunk { data, _held: held })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => InputFull::Backlogged,
                mpsc::error::TrySendError::Closed(_) => InputFull::Closed,
            })
    }

    /// Bytes queued and not yet taken by the program.
    pub fn backlog(&self) -> usize {
        self.backlog_bytes - self.budget.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_bounded_in_bytes_until_the_program_takes_them() {
        let (sender, mut receiver) = input_channel(10);
        sender.try_send(Bytes::from_static(b"123456")).unwrap();
        assert_eq!(
            sender.try_send(Bytes::from_static(b"12345")),
            Err(InputFull::Backlogged)
        );
        sender.try_send(Bytes::from_static(b"1234")).unwrap();
        assert_eq!(sender.backlog(), 10);
        assert_eq!(
            sender.try_send(Bytes::from_static(b"12345678901")),
            Err(InputFull::TooLarge)
        );
        let first = receiver.try_recv().unwrap();
        assert_eq!(first.data, Bytes::from_static(b"123456"));
        // Still held while the chunk is being written; free once it is dropped.
        assert_eq!(sender.backlog(), 10);
        drop(first);
        assert_eq!(sender.backlog(), 4);
        sender.try_send(Bytes::from_static(b"12345")).unwrap();
        drop(receiver);
        assert_eq!(sender.try_send(Bytes::new()), Err(InputFull::Closed));
    }

    #[test]
    fn the_backlog_is_bounded_in_chunks_too() {
        let (sender, _receiver) = input_channel(1 << 20);
        for _ in 0..BACKLOG_CHUNKS {
            sender.try_send(Bytes::from_static(b"x")).unwrap();
        }
        assert_eq!(
            sender.try_send(Bytes::from_static(b"x")),
            Err(InputFull::Backlogged)
        );
    }
}
