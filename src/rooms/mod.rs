//! Rooms: a session's terminal shared by every client that holds its URL. The shared terminal
//! runs the program on a PTY and pumps its output into the room's fan-out (bounded scrollback,
//! presence, a bounded queue per client); each client has its own input gate. Starting the
//! program is the session's business (it needs the sandbox); a room runs one once it is open.
//! Keystrokes go one way down (client → gate → terminal input task → PTY) and output one way
//! up (PTY → pump → fan-out → each client's queue → its socket), through channels.

pub mod client;
pub mod fanout;
pub mod gate;
pub mod terminal;

pub use client::{BadSize, Departure, TerminalClient};
pub use fanout::RoomEvent;
pub use gate::InputRefused;
pub use terminal::{LOST_WITH_SANDBOX, SharedTerminal};
