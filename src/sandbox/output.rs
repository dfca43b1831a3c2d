//! Collecting a phase's stdout and stderr under one combined byte cap.

use super::exec::{OutputSink, Push, Stream};

/// stdout and stderr kept apart, capped together: once their sum would pass `limit`, what fits
/// is kept, `truncated` is set and every later byte is dropped.
#[derive(Debug, Clone)]
pub struct OutputCollector {
    limit: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
}

/// What a phase printed, as bytes (serialized with the bytes in base64, for a record kept in
/// the shared state).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CollectedOutput {
    #[serde(with = "base64_bytes")]
    pub stdout: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

/// Bytes as one base64 string: a third more than the bytes, where a JSON array of numbers is
/// up to four times more.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

impl CollectedOutput {
    /// The bytes as text: invalid UTF-8 becomes U+FFFD, NUL stays NUL.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl OutputCollector {
    pub fn new(limit: usize) -> Self {
        OutputCollector {
            limit,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
        }
    }

    pub fn push(&mut self, stream: Stream, chunk: &[u8]) -> Push {
        if self.truncated {
            return Push::Stop;
        }
        let room = self.limit - (self.stdout.len() + self.stderr.len());
        let target = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        if chunk.len() <= room {
            target.extend_from_slice(chunk);
            return Push::Continue;
        }
        target.extend_from_slice(&chunk[..room]);
        self.truncated = true;
        Push::Stop
    }

    /// What was kept of one stream so far.
    pub fn kept(&self, stream: Stream) -> &[u8] {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    pub fn finish(self) -> CollectedOutput {
        CollectedOutput {
            stdout: self.stdout,
            stderr: self.stderr,
            truncated: self.truncated,
        }
    }
}

impl OutputSink for OutputCollector {
    /// Past the cap, the chunk is cut and the exec is told to stop: the sandbox is then
    /// killed at once by its owner.
    fn push(&mut self, stream: Stream, chunk: &[u8]) -> Push {
        OutputCollector::push(self, stream, chunk)
    }
}

/// Turns a byte stream into text chunk by chunk: a character split across chunks is held
/// until its end arrives; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    held: Vec<u8>,
}

impl Utf8Decoder {
    pub fn push(&mut self, chunk: &[u8]) -> String {
        self.held.extend_from_slice(chunk);
        let mut text = String::new();
        let mut rest: &[u8] = &self.held;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(err) => {
                    let (valid, after) = rest.split_at(err.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match err.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // An incomplete character at the end: wait for the rest.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.held = rest.to_vec();
        text
    }

    /// What is held when the stream ends: an unfinished character.
    pub fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        String::from_utf8_lossy(&held).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_chunks_arrives_whole() {
        let mut decoder = Utf8Decoder::default();
        let euro = "€".as_bytes();
        assert_eq!(decoder.push(&[b'a', euro[0]]), "a");
        assert_eq!(decoder.push(&euro[1..2]), "");
        assert_eq!(decoder.push(&[euro[2], b'b']), "€b");
        assert_eq!(decoder.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut decoder = Utf8Decoder::default();
        assert_eq!(decoder.push(b"a\xffb\xc3"), "a\u{fffd}b");
        assert_eq!(decoder.finish(), "\u{fffd}");
    }

    #[test]
    fn keeps_streams_apart() {
        let mut c = OutputCollector::new(100);
        assert_eq!(c.push(Stream::Stdout, b"out1 "), Push::Continue);
        assert_eq!(c.push(Stream::Stderr, b"err"), Push::Continue);
        assert_eq!(c.push(Stream::Stdout, b"out2"), Push::Continue);
        let out = c.finish();
        assert_eq!(out.stdout, b"out1 out2");
        assert_eq!(out.stderr, b"err");
        assert!(!out.truncated);
    }

    #[test]
    fn cap_counts_both_streams_and_keeps_the_prefix() {
        let mut c = OutputCollector::new(10);
        assert_eq!(c.push(Stream::Stdout, b"123456"), Push::Continue);
        assert_eq!(c.push(Stream::Stderr, b"abcdef"), Push::Stop);
        assert_eq!(c.push(Stream::Stdout, b"more"), Push::Stop);
        let out = c.finish();
        assert_eq!(out.stdout, b"123456");
        assert_eq!(out.stderr, b"abcd");
        assert!(out.truncated);
    }

    #[test]
    fn exactly_at_the_cap_is_not_truncated() {
        let mut c = OutputCollector::new(4);
        assert_eq!(c.push(Stream::Stdout, b"1234"), Push::Continue);
        assert!(!c.finish().truncated);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_nul_survives() {
        let out = CollectedOutput {
            stdout: b"ok\xff\x00end".to_vec(),
            stderr: Vec::new(),
            truncated: false,
        };
        assert_eq!(out.stdout_text(), "ok\u{FFFD}\u{0}end");
    }
}
