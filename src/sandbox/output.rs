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

/// What a phase printed, as bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectedOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

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
