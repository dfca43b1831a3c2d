//! A room's fan-out: one terminal's output to every client of a session, with bounded
//! scrollback for newcomers, presence counts, and a bounded queue per client. A client whose
//! queue is full is dropped, so a slow reader never stalls the room or makes it buffer without
//! bound. Pure bookkeeping: the terminal and the sockets are wired to it elsewhere.
//!
//! Output is UTF-8 text (the terminal's bytes are decoded before they get here), and the
//! scrollback is trimmed at a character boundary, so every event is valid text.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tokio::sync::mpsc;

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
    pub fn join(&mut self) -> (ClientId, mpsc::Receiver<RoomEvent>) {
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
        (id, receiver)
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

    fn drain(receiver: &mut mpsc::Receiver<RoomEvent>) -> Vec<RoomEvent> {
        let mut events = Vec::new();
        while let Ok(event) = receiver.try_recv() {
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
        assert!(a.try_recv().is_err());
        assert!(a.is_closed());
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
