//! A run whose output is seen as it happens (streamed `POST /run`, `GET /run/ws`) and, when
//! interactive, whose stdin arrives while it runs and which the client may kill. The limits are
//! those of every run: what is streamed is exactly what the output cap keeps.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sandbox::{
    InputSender, LiveInput, OutputCollector, OutputSink, Push, Stream, Utf8Decoder, input_channel,
};

/// Which phase a chunk of output belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Compile,
    Run,
}

/// What a live run reports before its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// The job has its sandbox and begins (after any wait for a running slot); the id is the
    /// result's.
    Started { id: String },
    /// Output as the program wrote it (UTF-8; a character split between writes is held until
    /// it is whole).
    Output {
        phase: Phase,
        stream: Stream,
        data: String,
    },
    /// A file the job asked for (`outputs`), once the program has ended, before the result.
    File(super::OutputFile),
}

/// The client's side of a live run.
pub struct LiveRun {
    /// Unbounded, yet bounded in total: at most the output cap is ever sent.
    pub events: mpsc::UnboundedSender<RunEvent>,
    /// Stdin as the client types it, after the job's `input`; `None`: the job's `input` only.
    pub stdin: Option<LiveInput>,
    /// Ends the run at once; the result says `runtime_error`, signal `SIGKILL`.
    pub kill: CancellationToken,
}

impl LiveRun {
    /// A live run with stdin typed by the client: returns the run and the stdin sender
    /// (dropping it closes the program's stdin), which holds at most `backlog_bytes` the
    /// program has not read yet.
    pub fn interactive(
        events: mpsc::UnboundedSender<RunEvent>,
        backlog_bytes: usize,
    ) -> (LiveRun, InputSender) {
        let (stdin, receiver) = input_channel(backlog_bytes);
        let run = LiveRun {
            events,
            stdin: Some(receiver),
            kill: CancellationToken::new(),
        };
        (run, stdin)
    }
}

/// Collects a phase's output under the cap and sends on what it keeps, as text.
pub(super) struct StreamingCollector<'a> {
    collector: OutputCollector,
    events: Option<(&'a mpsc::UnboundedSender<RunEvent>, Phase)>,
    text: [Utf8Decoder; 2],
    /// stderr is kept (and streamed) as stdout, in the order written.
    merged: bool,
}

impl<'a> StreamingCollector<'a> {
    pub(super) fn new(
        limit: usize,
        events: Option<(&'a mpsc::UnboundedSender<RunEvent>, Phase)>,
    ) -> Self {
        StreamingCollector {
            collector: OutputCollector::new(limit),
            events,
            text: Default::default(),
            merged: false,
        }
    }

    /// The same collector, keeping stderr as stdout when `merged`.
    pub(super) fn merging_stderr(mut self, merged: bool) -> Self {
        self.merged = merged;
        self
    }

    /// The collected output; a character left unfinished at the end is sent as U+FFFD.
    pub(super) fn finish(mut self) -> OutputCollector {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let tail = self.text[stream as usize].finish();
            self.send(stream, tail);
        }
        self.collector
    }

    fn send(&self, stream: Stream, data: String) {
        if let Some((events, phase)) = self.events
            && !data.is_empty()
        {
            // A client gone is noticed by whoever serves it; the run goes on to its end.
            let _ = events.send(RunEvent::Output {
                phase,
                stream,
                data,
            });
        }
    }
}

impl OutputSink for StreamingCollector<'_> {
    fn push(&mut self, stream: Stream, chunk: &[u8]) -> Push {
        let stream = if self.merged { Stream::Stdout } else { stream };
        let before = self.collector.kept(stream).len();
        let push = self.collector.push(stream, chunk);
        if self.events.is_some() {
            let text = self.text[stream as usize].push(&self.collector.kept(stream)[before..]);
            self.send(stream, text);
        }
        push
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_cap_keeps_is_streamed() {
        let (events, mut received) = mpsc::unbounded_channel();
        let mut sink = StreamingCollector::new(8, Some((&events, Phase::Run)));
        assert_eq!(sink.push(Stream::Stdout, b"hello"), Push::Continue);
        assert_eq!(sink.push(Stream::Stderr, b"world!"), Push::Stop);
        let collected = sink.finish().finish();
        assert!(collected.truncated);
        let mut streamed = Vec::new();
        while let Ok(event) = received.try_recv() {
            streamed.push(event);
        }
        let output = |stream, data: &str| RunEvent::Output {
            phase: Phase::Run,
            stream,
            data: data.to_owned(),
        };
        assert_eq!(
            streamed,
            [
                output(Stream::Stdout, "hello"),
                output(Stream::Stderr, "wor")
            ]
        );
    }

    #[test]
    fn merged_stderr_is_stdout_in_the_order_written() {
        let mut sink = StreamingCollector::new(64, None).merging_stderr(true);
        sink.push(Stream::Stdout, b"a");
        sink.push(Stream::Stderr, b"b");
        sink.push(Stream::Stdout, b"c");
        let collected = sink.finish().finish();
        assert_eq!(collected.stdout, b"abc");
        assert!(collected.stderr.is_empty());
    }

    #[test]
    fn a_character_split_between_writes_is_streamed_whole() {
        let (events, mut received) = mpsc::unbounded_channel();
        let mut sink = StreamingCollector::new(64, Some((&events, Phase::Compile)));
        let euro = "€".as_bytes();
        sink.push(Stream::Stdout, &euro[..1]);
        sink.push(Stream::Stdout, &euro[1..]);
        sink.finish();
        assert_eq!(
            received.try_recv(),
            Ok(RunEvent::Output {
                phase: Phase::Compile,
                stream: Stream::Stdout,
                data: "€".to_owned()
            })
        );
        assert!(received.try_recv().is_err());
    }
}
