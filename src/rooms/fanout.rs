//! A room's fan-out: one terminal's output to every client of a session, with bounded
//! scrollback for newcomers, presence counts, and a bounded queue per client. A client whose
//! queue is full is dropped, so a slow reader never stalls the room or makes it buffer without
//! bound. Pure bookkeeping: the terminal and the sockets are wired to it elsewhere.
//!
//! Output is UTF-8 text (the terminal's bytes are decoded before they get here), and the
//! scrollback is trimmed at a character boundary, so every event is valid text.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

/// Most output bytes in one event. Output already waiting is gathered into one event up to
/// this size (never waiting for more): a flood of one-line writes would otherwise be one tiny
/// event per line, and a client's queue of `terminal.client_queue_frames` events would hold
/// milliseconds of output instead of seconds. With it the queue holds up to 256 × 16 KiB =
/// 4 MiB per room (events are shared by the room's clients), 2 s of a 2 MiB/s flood.
pub const MAX_OUTPUT_EVENT_BYTES: usize = 16 * 1024;

/// What a client is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// Terminal output: valid UTF-8.
    Output(Bytes),
    /// How many clients are in the room now.
    Presence(usize),
    /// The terminal's program ended with this code.
    Exit(i64),
}

/// A client's place in the room.
pub type ClientId = u64;

/// A client's end of its queue. Output events queued behind each other come out as one, up
/// to [`MAX_OUTPUT_EVENT_BYTES`]: a socket that was slow for a moment catches up in a few
/// large frames instead of a frame (and a write) per event.
#[derive(Debug)]
pub struct ClientEvents {
    receiver: mpsc::Receiver<RoomEvent>,
    /// An event taken from the queue while merging output, to come out next.
    held: Option<RoomEvent>,
}

impl ClientEvents {
    /// The next event; `None` once the client has left the room and taken everything.
    pub async fn next(&mut self) -> Option<RoomEvent> {
        let first = match self.held.take() {
            Some(event) => event,
            None => self.receiver.recv().await?,
        };
        let RoomEvent::Output(first) = first else {
            return Some(first);
        };
        let mut merged: Option<BytesMut> = None;
        while merged.as_ref().map_or(first.len(), BytesMut::len) < MAX_OUTPUT_EVENT_BYTES {
            match self.receiver.try_recv() {
                Ok(RoomEvent::Output(more)) => merged
                    .get_or_insert_with(|| BytesMut::from(&first[..]))
                    .extend_from_slice(&more),
                Ok(other) => {
                    self.held = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        Some(RoomEvent::Output(merged.map_or(first, BytesMut::freeze)))
    }
}

#[derive(Debug)]
pub struct Room {
    clients: HashMap<ClientId, mpsc::Sender<RoomEvent>>,
    next_client: ClientId,
    scrollback: VecDeque<u8>,
    scrollback_limit: usize,
    queue_limit: usize,
    /// The terminal's program ended with this code and none was started since.
    ended: Option<i64>,
}

impl Room {
    /// `scrollback_limit`: most recent output bytes kept for newcomers; `queue_limit`: events
    /// a client may have pending before it is dropped.
    pub fn new(scrollback_limit: usize, queue_limit: usize) -> Room {
        Room {
            clients: HashMap::new(),
            next_client: 0,
            scrollback: VecDeque::new(),
            scrollback_limit,
            queue_limit: queue_limit.max(2),
            ended: None,
        }
    }

    /// Adds a client: it first receives the scrollback (and the exit, when the program has
    /// ended), then everyone gets the new count.
    pub fn join(&mut self) -> (ClientId, ClientEvents) {
        let (sender, receiver) = mpsc::channel(self.queue_limit);
        let id = self.next_client;
        self.next_client += 1;
        // A fresh queue (at least 2 places) has room for these.
        if !self.scrollback.is_empty() {
            let past: Vec<u8> = self.scrollback.iter().copied().collect();
            let _ = sender.try_send(RoomEvent::Output(Bytes::from(past)));
        }
        if let Some(code) = self.ended {
            let _ = sender.try_send(RoomEvent::Exit(code));
        }
        self.clients.insert(id, sender);
        self.announce_presence();
        let events = ClientEvents {
            receiver,
            held: None,
        };
        (id, events)
    }

    pub fn leave(&mut self, id: ClientId) {
        if self.clients.remove(&id).is_some() {
            self.announce_presence();
        }
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Terminal output (valid UTF-8): kept in the scrollback and sent to every client.
    /// Returns the clients dropped because their queue was full (their receivers then end).
    pub fn output(&mut self, text: Bytes) -> Vec<ClientId> {
        self.scrollback.extend(text.iter().copied());
        let mut excess = self.scrollback.len().saturating_sub(self.scrollback_limit);
        if excess > 0 {
            // Start at a line (not inside a character or an escape sequence) when there is one.
            match self.scrollback.range(excess..).position(|&b| b == b'\n') {
                Some(newline) => excess += newline + 1,
                None => {
                    while self
                        .scrollback
                        .get(excess)
                        .is_some_and(|&b| b & 0b1100_0000 == 0b1000_0000)
                    {
                        excess += 1;
                    }
                }
            }
        }
        self.scrollback.drain(..excess);
        self.send_to_all(RoomEvent::Output(text))
    }

    /// The terminal's program ended.
    pub fn exit(&mut self, code: i64) -> Vec<ClientId> {
        self.ended = Some(code);
        self.send_to_all(RoomEvent::Exit(code))
    }

    /// A new program runs on the terminal.
    pub fn restarted(&mut self) {
        self.ended = None;
    }

    /// The room ends (its session is gone): every client's receiver ends.
    pub fn close(&mut self) {
        self.clients.clear();
    }

    /// Broadcasts; a client dropped on the way has left, and the rest are told so.
    fn send_to_all(&mut self, event: RoomEvent) -> Vec<ClientId> {
        let dropped = self.broadcast(event);
        if !dropped.is_empty() {
            self.announce_presence();
        }
        dropped
    }

    fn announce_presence(&mut self) {
        let count = self.clients.len();
        let dropped = self.broadcast(RoomEvent::Presence(count));
        if !dropped.is_empty() {
            // Those left too: tell the rest the true count.
            self.announce_presence();
        }
    }

    fn broadcast(&mut self, event: RoomEvent) -> Vec<ClientId> {
        let mut dropped = Vec::new();
        for (id, sender) in &self.clients {
            if sender.try_send(event.clone()).is_err() {
                dropped.push(*id);
            }
        }
        for id in &dropped {
            self.clients.remove(id);
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is queued, event by event as the room sent it (no merging).
    fn drain(client: &mut ClientEvents) -> Vec<RoomEvent> {
        let mut events = Vec::new();
        while let Ok(event) = client.receiver.try_recv() {
            events.push(event);
        }
        events
    }

    #[test]
    fn every_client_gets_the_output_and_presence() {
        let mut room = Room::new(1024, 16);
        let (_, mut a) = room.join();
        let (_, mut b) = room.join();
        room.output(Bytes::from_static(b"2\r\n"));
        assert_eq!(
            drain(&mut a),
            [
                RoomEvent::Presence(1),
                RoomEvent::Presence(2),
                RoomEvent::Output(Bytes::from_static(b"2\r\n"))
            ]
        );
        assert_eq!(
            drain(&mut b),
            [
                RoomEvent::Presence(2),
                RoomEvent::Output(Bytes::from_static(b"2\r\n"))
            ]
        );
    }

    #[test]
    fn a_newcomer_gets_the_recent_scrollback_only() {
        let mut room = Room::new(8, 16);
        room.output(Bytes::from_static(b"0123456789"));
        room.output(Bytes::from_static(b"ab"));
        let (_, mut late) = room.join();
        assert_eq!(
            drain(&mut late),
            [
                RoomEvent::Output(Bytes::from_static(b"456789ab")),
                RoomEvent::Presence(1)
            ]
        );
    }

    #[test]
    fn a_client_that_stops_reading_is_dropped_and_the_others_go_on() {
        let mut room = Room::new(1024, 4);
        let (slow_id, slow) = room.join();
        let (_, mut reader) = room.join();
        let (mut dropped, mut seen) = (Vec::new(), Vec::new());
        for i in 0..10 {
            seen.extend(drain(&mut reader));
            dropped.extend(room.output(Bytes::from(format!("line {i}\n"))));
        }
        seen.extend(drain(&mut reader));
        assert_eq!(dropped, [slow_id]);
        assert_eq!(room.clients(), 1);
        assert_eq!(
            seen.last(),
            Some(&RoomEvent::Output(Bytes::from_static(b"line 9\n")))
        );
        assert!(
            seen.contains(&RoomEvent::Presence(1)),
            "told of the drop: {seen:?}"
        );
        drop(slow);
        room.output(Bytes::from_static(b"still here\n"));
        assert!(
            drain(&mut reader).contains(&RoomEvent::Output(Bytes::from_static(b"still here\n")))
        );
    }

    #[test]
    fn the_scrollback_starts_at_a_line_when_it_can() {
        let mut room = Room::new(8, 16);
        room.output(Bytes::from_static(b"\x1b[1mbold\r\nab"));
        let (_, mut late) = room.join();
        assert_eq!(
            drain(&mut late)[0],
            RoomEvent::Output(Bytes::from_static(b"ab"))
        );
    }

    #[test]
    fn the_scrollback_never_starts_inside_a_character() {
        let mut room = Room::new(4, 16);
        room.output(Bytes::from("aé€".to_owned())); // 1 + 2 + 3 bytes
        let (_, mut late) = room.join();
        assert_eq!(
            drain(&mut late)[0],
            RoomEvent::Output(Bytes::from("€".to_owned()))
        );
    }

    #[test]
    fn a_newcomer_after_the_exit_is_told_of_it_until_a_restart() {
        let mut room = Room::new(1024, 16);
        room.output(Bytes::from_static(b">>> exit()\r\n"));
        room.exit(0);
        let (_, mut late) = room.join();
        assert_eq!(
            drain(&mut late),
            [
                RoomEvent::Output(Bytes::from_static(b">>> exit()\r\n")),
                RoomEvent::Exit(0),
                RoomEvent::Presence(1)
            ]
        );
        room.restarted();
        let (_, mut later) = room.join();
        assert!(!drain(&mut later).contains(&RoomEvent::Exit(0)));
    }

    #[test]
    fn closing_ends_every_receiver() {
        let mut room = Room::new(1024, 16);
        let (_, mut a) = room.join();
        room.close();
        drain(&mut a);
        assert!(a.receiver.try_recv().is_err());
        assert!(a.receiver.is_closed());
    }

    #[tokio::test]
    async fn queued_output_comes_out_merged_in_order_and_bounded() {
        let mut room = Room::new(1024, 16);
        let (_, mut client) = room.join();
        assert_eq!(client.next().await, Some(RoomEvent::Presence(1)));
        room.output(Bytes::from_static(b"a"));
        room.output(Bytes::from_static(b"b"));
        room.exit(3);
        room.output(Bytes::from_static(b"c"));
        let big = Bytes::from(vec![b'x'; MAX_OUTPUT_EVENT_BYTES - 1]);
        room.output(big.clone());
        room.output(big.clone());
        room.close();
        assert_eq!(
            client.next().await,
            Some(RoomEvent::Output(Bytes::from_static(b"ab")))
        );
        assert_eq!(client.next().await, Some(RoomEvent::Exit(3)));
        // "c" and the first big one reach the bound together; the second comes on its own.
        let Some(RoomEvent::Output(merged)) = client.next().await else {
            panic!("expected output")
        };
        assert_eq!(merged.len(), 1 + big.len());
        assert!(merged.starts_with(b"cx"));
        assert_eq!(client.next().await, Some(RoomEvent::Output(big)));
        // The room closed: everything sent before is still taken, then the end.
        assert_eq!(client.next().await, None);
    }

    #[test]
    fn leaving_updates_presence_and_exit_reaches_everyone() {
        let mut room = Room::new(1024, 16);
        let (a_id, _a) = room.join();
        let (_, mut b) = room.join();
        drain(&mut b);
        room.leave(a_id);
        room.exit(0);
        assert_eq!(drain(&mut b), [RoomEvent::Presence(1), RoomEvent::Exit(0)]);
    }
}
