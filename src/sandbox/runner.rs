//! The runner: a job sandbox's main process, which waits on its stdin for one job.
//!
//! Creating, attaching and starting a container happens before a job arrives (in the warm pool,
//! or just before the job on the cold path); the job itself then costs no Engine API call: its
//! files, argv and stdin go down the already attached stdin, its output comes back on the
//! already attached stdout/stderr. An exec would cost two API calls and ~50 ms per job, and
//! waiting for the container to exit another ~30 ms (the engine tears the container down before
//! it closes the streams). So the runner stays the program's parent and, when the program ends,
//! writes a trailer with its exit status on both streams; each stream is ordered, so once both
//! trailers are in, every byte the program wrote is in.
//!
//! The trailer starts with a fresh random nonce per job that the program never sees (it goes to
//! the runner's own memory before the program starts, and the runner is non-dumpable: see
//! [`SCRIPT`]), so neither ordinary output nor a program that goes looking can end a job early
//! or report an exit status, a duration or an end of output that did not happen.
//!
//! Wire format on stdin, in order:
//! `<nonce>\n<archive length>\n<argc>\n`, argc NUL-terminated arguments, the tar archive of the
//! job's files (unpacked into the work dir by the runner, as the sandbox user; one small file
//! goes as `=<length>` and its name, NUL, its content instead), then the program's own stdin.

use std::time::{Duration, Instant};

use bollard::query_parameters::InspectContainerOptions;
use bytes::{BufMut, Bytes, BytesMut};

use tokio_util::sync::CancellationToken;

use super::exec::{self, Flow, LiveInput, Pumped};
use super::{ExecEnd, ExecOutcome, OutputSink, Push, SandboxError, Shared, Stream, host_cgroup};

/// The runner, run by bash (present in every Debian image, minbase and slim included) as the
/// container's command under the engine's init. `read` reads a pipe byte by byte and `head -c`
/// never reads past its count, so the program's stdin starts exactly after the archive. After
/// the trailers it sleeps instead of exiting: the container (and its cgroup, which the usage is
/// read from) stays up until runbox removes it. Before the trailers it ends every other process
/// of the sandbox user (`kill -1` spares only init and itself), so nothing the program left
/// behind (`setsid`, `nohup`, a double fork) outlives the reported end of the job.
///
/// The runner's own stderr is `/dev/null`: bash reports a child killed by a signal
/// (`bash: line 17: 10 Segmentation fault "${argv[@]}"`), which is no output of the program's.
/// The program's stderr, the unpack's messages and the stderr trailer go to fd 3, the attached
/// stderr, which the program itself does not inherit.
///
/// Under runc the bash running this is [`RUNNER_BINARY`], a copy of bash the sandbox user may
/// execute but not read: the kernel makes a process that executes an unreadable file
/// non-dumpable, so the program (same uid) can neither read the runner's memory through
/// `/proc/$PPID/mem` nor open its descriptors, and cannot learn the nonce to forge a trailer.
/// (Before, a program read the nonce there and was reported `success`, exit 0, after 75 ms,
/// though it went on to exit 7 three seconds later.) gVisor's `/proc` refuses that read itself.
pub const SCRIPT: &str = r#"exec 3>&2 2>/dev/null
IFS= read -r nonce || exit 125
read -r archive_len || exit 125
read -r argc || exit 125
argv=()
for ((i = 0; i < argc; i++)); do
  IFS= read -r -d '' arg || exit 125
  argv+=("$arg")
done
# `=<length>`: one small file, its name, NUL, its content, written with builtins (a `head`
# and a `tar` cost ~3 ms here, ~47 ms under gVisor); `read -N` counts bytes in the C locale,
# which the program does not inherit (not exported).
unpacked=1
if [[ $archive_len == =* ]]; then
  LC_ALL=C
  archive_len=${archive_len#=}
  content=
  IFS= read -r -d '' name \
    && { ((archive_len == 0)) || IFS= read -r -N "$archive_len" content; } \
    && printf '%s' "$content" > "/box/$name" || unpacked=
  unset content LC_ALL
elif ((archive_len > 0)); then
  head -c "$archive_len" 2>&3 | tar -x -m -f - -C /box 2>&3 || unpacked=
fi
if [ -z "$unpacked" ]; then
  echo "runbox: the program's files could not be written to the work dir" >&3
  printf '\036%s 125\n' "$nonce"
  printf '\036%s 125\n' "$nonce" >&3
  exec sleep infinity
fi
"${argv[@]}" 2>&3 3>&-
status=$?
kill -KILL -1
printf '\036%s %d\n' "$nonce" "$status"
printf '\036%s %d\n' "$nonce" "$status" >&3
exec sleep infinity"#;

/// Where the images keep the runner's bash: mode 0111 (execute, no read), owned by root. Each
/// language image gets it in the build step that labels it (see `images`).
pub const RUNNER_BINARY: &str = "/usr/local/lib/runbox/runner";

/// Byte that opens a trailer (ASCII record separator).
const TRAILER_START: u8 = 0x1e;
/// How often to look at the container when the runner itself ended without a trailer.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// Which step of a job a reused runner takes (see `nested::SCRIPT`): a compile that succeeds
/// leaves its work dir for the run; a fresh runner's one job is always the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Compile,
    /// The work dir after a compile, as a tar on stdout (a reused runner only).
    Pack,
    Run,
    /// The run, whose work dir is kept after it for the files it wrote (a reused runner only,
    /// never with a live stdin): `tool` steps read them, `discard` ends it.
    RunKeep,
    /// runbox's own command (argv), run in the container as the sandbox user next to the
    /// kept work dir, not in a nested sandbox: listing and reading the files a run wrote.
    Tool,
    /// The kept work dir deleted, as after a run.
    Discard,
}

impl Step {
    fn word(self) -> &'static str {
        match self {
            Step::Compile => "compile",
            Step::Pack => "pack",
            Step::Run => "run",
            Step::RunKeep => "run-keep",
            Step::Tool => "tool",
            Step::Discard => "discard",
        }
    }
}

/// What a reused runner says of its sandbox after a step (see `nested::SCRIPT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Nothing of the job is left: the sandbox may take another.
    Clean,
    /// A process or a file of the job was left, or the work dir could not be made.
    Dirty,
    /// bubblewrap could not make the nested sandbox.
    LauncherFailed,
    /// The step's stdin was the rest of the stream (an interactive run): no more jobs.
    Spent,
    /// No word from the runner (a fresh runner, or a step that did not end by itself).
    Unknown,
}

impl Health {
    fn from_word(word: &str) -> Health {
        match word {
            "ok" => Health::Clean,
            word if word.starts_with("dirty") => Health::Dirty,
            "launcher" => Health::LauncherFailed,
            "spent" => Health::Spent,
            _ => Health::Unknown,
        }
    }
}

/// How a runner's job ended, and what the runner says of its sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerEnd {
    pub outcome: ExecOutcome,
    pub health: Health,
    /// The job's nonce, which a reused runner's `ready` line after it carries.
    pub nonce: String,
    /// What the runner wrote on stderr after the trailer, as far as it was read (the start
    /// of its `ready` line, or all of it).
    pub stderr_after: Vec<u8>,
}

/// The line a reused runner writes on stderr once it has cleaned up after a job (see
/// `nested::SCRIPT`), up to the health word.
pub fn ready_marker(nonce: &str) -> Vec<u8> {
    let mut marker = vec![TRAILER_START];
    marker.extend_from_slice(nonce.as_bytes());
    marker.extend_from_slice(b" ready ");
    marker
}

/// One job for the runner.
#[derive(Debug)]
pub struct RunnerJob {
    /// The step a reused runner takes; a fresh runner ignores it.
    pub step: Step,
    /// Tar archive unpacked into the work dir before the program starts (may be empty).
    pub archive: Bytes,
    /// The program and its arguments (no NUL bytes: validated upstream).
    pub argv: Vec<String>,
    pub stdin: Bytes,
    /// More stdin as it arrives, after `stdin` (an interactive run); `None`: stdin ends after
    /// `stdin`.
    pub live_stdin: Option<LiveInput>,
    /// Wall-clock limit from sending the job to the program's end.
    pub timeout: Duration,
    /// CPU time of the sandbox's processes together past which the program is ended as a
    /// timeout; `None`: the wall clock only.
    pub cpu_limit: Option<Duration>,
    /// Cancelled to end the run at once ([`ExecEnd::Killed`]).
    pub kill: CancellationToken,
}

/// Encodes `job` in the runner's wire format: the header, the job's NUL-terminated argv, its
/// files (see [`files_on_the_wire`]) and its stdin.
pub fn encode(nonce: &str, job: &RunnerJob) -> Bytes {
    let (archive_len, files) = files_on_the_wire(&job.archive);
    let header = format!("{nonce}\n{archive_len}\n{}\n", job.argv.len());
    assemble(&header, job, &files)
}

/// `header`, then the job's NUL-terminated argv, its files as [`files_on_the_wire`] made them,
/// and its stdin: both runners' order.
fn assemble(header: &str, job: &RunnerJob, files: &[u8]) -> Bytes {
    let argv_len: usize = job.argv.iter().map(|a| a.len() + 1).sum();
    let mut out = BytesMut::with_capacity(header.len() + argv_len + files.len() + job.stdin.len());
    out.put_slice(header.as_bytes());
    for arg in &job.argv {
        debug_assert!(!arg.contains('\0'), "argv is validated to hold no NUL");
        out.put_slice(arg.as_bytes());
        out.put_u8(0);
    }
    out.put_slice(files);
    out.put_slice(&job.stdin);
    out.freeze()
}

/// A job's files as both runners take them: one small file without NUL bytes at the top of
/// the work dir (every single-file program) as `=<length>` and `<name>\0<content>`, which the
/// runner writes with shell builtins; anything else as the tar archive and its length.
fn files_on_the_wire(archive: &Bytes) -> (String, Bytes) {
    match single_small_file(archive) {
        Some((name, content)) => {
            let mut files = BytesMut::with_capacity(name.len() + 1 + content.len());
            files.put_slice(name.as_bytes());
            files.put_u8(0);
            files.put_slice(content);
            (format!("={}", content.len()), files.freeze())
        }
        None => (archive.len().to_string(), archive.clone()),
    }
}

/// Most bytes a reused runner reads with its shell's own `read` (a source file, a stdin): one
/// read call per byte, ~0.05 ms per KiB here, against ~3.4 ms for a `tar` and ~1.7 ms for a
/// `head` process (measured in the python image, 100 starts each). Past this a process is
/// cheaper.
pub const INLINE_MAX: usize = 16 * 1024;

/// Encodes `job` in a reused runner's wire format (see `nested::SCRIPT`): the stdin has its
/// length up front, so that the next job's header follows it, unless live input follows (-1:
/// the rest of the stream). A job's files that are one small file without NUL bytes at the top
/// of the work dir (every single-file program) go as `=<length>` and `<name>\0<content>`
/// instead of a tar archive; a small stdin without NUL bytes as `=<length>`: the runner writes
/// them with shell builtins, without starting a process.
pub fn encode_nested(nonce: &str, job: &RunnerJob) -> Bytes {
    let stdin_inline = job.live_stdin.is_none() && inlinable(&job.stdin);
    let stdin_len = match job.live_stdin {
        Some(_) => "-1".to_owned(),
        None if stdin_inline => format!("={}", job.stdin.len()),
        None => job.stdin.len().to_string(),
    };
    let (archive_len, files) = files_on_the_wire(&job.archive);
    let header = format!(
        "{nonce}\n{}\n{archive_len}\n{stdin_len}\n{}\n",
        job.step.word(),
        job.argv.len()
    );
    assemble(&header, job, &files)
}

/// Whether the runner's shell may read `bytes` itself: small, and no NUL (which the shell's
/// variables cannot hold).
fn inlinable(bytes: &[u8]) -> bool {
    bytes.len() <= INLINE_MAX && !bytes.contains(&0)
}

/// The one regular file of `archive`, when that is all it holds, it sits at the top of the
/// work dir with the mode every source file gets (0644) and the runner's shell may read it.
fn single_small_file(archive: &[u8]) -> Option<(String, &[u8])> {
    let mut entries = tar::Archive::new(archive);
    let mut iter = entries.entries().ok()?;
    let entry = iter.next()?.ok()?;
    let header = entry.header();
    if header.entry_type() != tar::EntryType::Regular || header.mode().ok()? != 0o644 {
        return None;
    }
    let name = entry.path().ok()?.to_str()?.to_owned();
    let start = usize::try_from(entry.raw_file_position()).ok()?;
    let size = usize::try_from(entry.size()).ok()?;
    let names_ok =
        !name.is_empty() && !name.contains('/') && crate::names::validate_name(&name).is_ok();
    drop(entry);
    if !names_ok || iter.next().is_some() {
        return None;
    }
    let content = archive.get(start..start.checked_add(size)?)?;
    inlinable(content).then_some((name, content))
}

/// Finds the runner's trailer in one output stream, passing every byte before it on.
///
/// Bytes that could be the start of a trailer split across chunks are held back until the next
/// chunk decides (at most the trailer's length, and only after a 0x1e byte).
#[derive(Debug)]
pub struct TrailerScanner {
    /// `\x1e<nonce> `
    marker: Vec<u8>,
    held: Vec<u8>,
    state: ScanState,
    /// What followed the status and a space on the trailer's line (a reused runner's health).
    tail: String,
    /// Bytes after the trailer's line, up to [`AFTER_TRAILER_MAX`]: a reused runner's `ready`
    /// line can come in the same frame as its stderr trailer when the engine reads the pipe
    /// late (two writes, one frame), and must not be lost with the frame's rest.
    after: Vec<u8>,
}

/// Most bytes kept after a trailer (a `ready` line is under 64).
const AFTER_TRAILER_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum ScanState {
    Output,
    /// The marker was seen; the rest of the trailer's line so far.
    Status(Vec<u8>),
    Done(i64),
}

impl TrailerScanner {
    pub fn new(nonce: &str) -> Self {
        let mut marker = vec![TRAILER_START];
        marker.extend_from_slice(nonce.as_bytes());
        marker.push(b' ');
        TrailerScanner {
            marker,
            held: Vec::new(),
            state: ScanState::Output,
            tail: String::new(),
            after: Vec::new(),
        }
    }

    /// What came after the trailer's line (see the field).
    pub fn after_trailer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.after)
    }

    fn keep_after(&mut self, bytes: &[u8]) {
        let room = AFTER_TRAILER_MAX.saturating_sub(self.after.len());
        self.after
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// The word after the status, once the whole trailer has been seen (empty if none).
    pub fn tail(&self) -> &str {
        &self.tail
    }

    /// The exit status, once the whole trailer has been seen.
    pub fn status(&self) -> Option<i64> {
        match self.state {
            ScanState::Done(code) => Some(code),
            _ => None,
        }
    }

    /// Takes the next chunk; program output goes to `emit`.
    pub fn feed(&mut self, chunk: &[u8], emit: &mut dyn FnMut(&[u8])) {
        let joined;
        let data: &[u8] = if self.held.is_empty() {
            chunk
        } else {
            let mut buffer = std::mem::take(&mut self.held);
            buffer.extend_from_slice(chunk);
            joined = buffer;
            &joined
        };
        let mut rest = data;
        loop {
            match &mut self.state {
                ScanState::Done(_) => {
                    self.keep_after(rest);
                    return;
                }
                ScanState::Status(digits) => {
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(end) => {
                            digits.extend_from_slice(&rest[..end]);
                            let line = String::from_utf8_lossy(digits).into_owned();
                            let (status, tail) = line.split_once(' ').unwrap_or((&line, ""));
                            let code = status.parse().unwrap_or(-1);
                            self.tail = tail.to_owned();
                            self.state = ScanState::Done(code);
                            self.keep_after(&rest[end + 1..]);
                        }
                        None => digits.extend_from_slice(rest),
                    }
                    return;
                }
                ScanState::Output => match find_marker(rest, &self.marker) {
                    MarkerSearch::Found(at) => {
                        emit_nonempty(emit, &rest[..at]);
                        rest = &rest[at + self.marker.len()..];
                        self.state = ScanState::Status(Vec::new());
                    }
                    MarkerSearch::PartialAtEnd(at) => {
                        emit_nonempty(emit, &rest[..at]);
                        self.held = rest[at..].to_vec();
                        return;
                    }
                    MarkerSearch::Absent => {
                        emit_nonempty(emit, rest);
                        return;
                    }
                },
            }
        }
    }

    /// The stream ended without a trailer: whatever was held back was output after all.
    pub fn flush(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if self.state == ScanState::Output {
            emit_nonempty(emit, &std::mem::take(&mut self.held));
        }
    }
}

fn emit_nonempty(emit: &mut dyn FnMut(&[u8]), bytes: &[u8]) {
    if !bytes.is_empty() {
        emit(bytes);
    }
}

enum MarkerSearch {
    Found(usize),
    /// A prefix of the marker ends the data at this index.
    PartialAtEnd(usize),
    Absent,
}

fn find_marker(data: &[u8], marker: &[u8]) -> MarkerSearch {
    let mut from = 0;
    while let Some(offset) = data[from..].iter().position(|&b| b == marker[0]) {
        let at = from + offset;
        let candidate = &data[at..];
        if candidate.len() >= marker.len() {
            if candidate.starts_with(marker) {
                return MarkerSearch::Found(at);
            }
        } else if marker.starts_with(candidate) {
            return MarkerSearch::PartialAtEnd(at);
        }
        from = at + 1;
    }
    MarkerSearch::Absent
}

/// The attached stdin and output of a sandbox's runner.
pub struct RunnerIo {
    pub(super) output: exec::OutputFrames,
    pub(super) input: exec::InputPipe,
}

/// How the wait for a runner's program ended.
enum Waited {
    /// The output was pumped to its end (`None`: the wall clock ran out first).
    Pumped(Option<Result<Pumped, SandboxError>>),
    /// The caller's kill.
    Killed,
    /// The CPU-time limit was reached.
    CpuSpent,
}

/// Sends `job` to the runner and collects the program's output until both trailers are in
/// (or the limit passes, or the sink stops). A reused runner (`nested`) keeps its stdin open
/// for the next job and says what it left behind.
pub(super) async fn run(
    shared: &Shared,
    container: &str,
    io: &mut RunnerIo,
    job: RunnerJob,
    nested: bool,
    sink: &mut dyn OutputSink,
) -> Result<RunnerEnd, SandboxError> {
    let oom_mark = exec::OomMark::take(shared, container).await;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let payload = if nested {
        encode_nested(&nonce, &job)
    } else {
        encode(&nonce, &job)
    };
    let mut scanners = [TrailerScanner::new(&nonce), TrailerScanner::new(&nonce)];
    let RunnerIo { output, input } = io;
    let RunnerJob {
        live_stdin,
        timeout,
        cpu_limit,
        kill,
        ..
    } = job;
    let started = Instant::now();
    let pumped = {
        let on_frame = |stream: Stream, chunk: &[u8]| {
            let index = stream as usize;
            let mut stop = false;
            scanners[index].feed(chunk, &mut |bytes| {
                if !stop && sink.push(stream, bytes) == Push::Stop {
                    stop = true;
                }
            });
            if stop {
                return Flow::Stop;
            }
            match (scanners[0].status(), scanners[1].status()) {
                (Some(code), Some(_)) => Flow::Finished(code),
                _ => Flow::Continue,
            }
        };
        let pump = exec::pump(output, input, payload, live_stdin, nested, on_frame);
        tokio::select! {
            pumped = tokio::time::timeout(timeout, pump) => Waited::Pumped(pumped.ok()),
            () = kill.cancelled() => Waited::Killed,
            () = host_cgroup::cpu_spent(container, cpu_limit) => Waited::CpuSpent,
        }
    };
    let duration = started.elapsed();
    let end = match pumped {
        Waited::Killed => ExecEnd::Killed,
        Waited::CpuSpent | Waited::Pumped(None) => ExecEnd::TimedOut,
        Waited::Pumped(Some(Err(err))) => return Err(err),
        Waited::Pumped(Some(Ok(Pumped::Stopped))) => ExecEnd::Stopped,
        Waited::Pumped(Some(Ok(Pumped::Finished(code)))) => ExecEnd::Exited { code },
        Waited::Pumped(Some(Ok(Pumped::Eof))) => {
            // The runner itself ended without a trailer (killed, e.g. by the OOM killer):
            // what was held back is output, and the container's exit code is the answer.
            for (index, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
                scanners[index].flush(&mut |bytes| {
                    sink.push(stream, bytes);
                });
            }
            let remaining = timeout.saturating_sub(duration);
            match tokio::time::timeout(remaining, container_exit_code(shared, container)).await {
                Ok(code) => ExecEnd::Exited { code: code? },
                Err(_) => ExecEnd::TimedOut,
            }
        }
    };
    let health = match end {
        ExecEnd::Exited { .. } if nested && scanners[1].status().is_some() => {
            let word = scanners[1].tail();
            if word != "ok" {
                tracing::debug!(
                    container,
                    said = word,
                    "a reused runner's report after a job"
                );
            }
            Health::from_word(word)
        }
        _ => Health::Unknown,
    };
    Ok(RunnerEnd {
        outcome: ExecOutcome {
            end,
            duration,
            oom_killed: oom_mark.struck(shared, container, end).await,
        },
        health,
        nonce,
        stderr_after: scanners[1].after_trailer(),
    })
}

async fn container_exit_code(shared: &Shared, container: &str) -> Result<i64, SandboxError> {
    loop {
        let inspect = shared
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
            .map_err(SandboxError::from_engine)?;
        if let Some(state) = inspect.state
            && state.running != Some(true)
            && let Some(code) = state.exit_code
        {
            return Ok(code);
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0123456789abcdef0123456789abcdef";

    fn scan(chunks: &[&[u8]]) -> (Vec<u8>, Option<i64>) {
        let mut scanner = TrailerScanner::new(NONCE);
        let mut out = Vec::new();
        for chunk in chunks {
            scanner.feed(chunk, &mut |b| out.extend_from_slice(b));
        }
        if scanner.status().is_none() {
            scanner.flush(&mut |b| out.extend_from_slice(b));
        }
        (out, scanner.status())
    }

    fn trailer(code: i64) -> Vec<u8> {
        format!("\x1e{NONCE} {code}\n").into_bytes()
    }

    #[test]
    fn output_before_the_trailer_passes_and_the_status_is_read() {
        let mut stream = b"hello\nno newline at the end".to_vec();
        stream.extend(trailer(3));
        stream.extend_from_slice(b"late output from a background child");
        assert_eq!(
            scan(&[&stream]),
            (b"hello\nno newline at the end".to_vec(), Some(3))
        );
    }

    #[test]
    fn a_trailer_split_at_every_byte_is_still_found() {
        let mut stream = b"out\x1e".to_vec();
        stream.extend(trailer(137));
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan(&chunks), (b"out\x1e".to_vec(), Some(137)));
    }

    #[test]
    fn record_separators_and_other_nonces_are_output() {
        let forged = b"\x1eFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF 0\n\x1e\x1e";
        let (out, status) = scan(&[forged.as_slice()]);
        assert_eq!(out, forged.to_vec());
        assert_eq!(status, None);
        // A prefix of the marker at the very end of the stream is output too.
        let (out, status) = scan(&[b"x\x1e0123".as_slice()]);
        assert_eq!(out, b"x\x1e0123".to_vec());
        assert_eq!(status, None);
    }

    #[test]
    fn binary_output_passes_untouched() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let mut stream = bytes.clone();
        stream.extend(trailer(0));
        let chunks: Vec<&[u8]> = stream.chunks(7).collect();
        assert_eq!(scan(&chunks), (bytes, Some(0)));
    }

    #[test]
    fn wire_format_has_header_argv_archive_then_stdin() {
        let job = RunnerJob {
            step: Step::Run,
            archive: Bytes::from_static(b"TAR"),
            argv: vec!["python3".into(), "a b\nc".into()],
            stdin: Bytes::from_static(b"input"),
            live_stdin: None,
            timeout: Duration::from_secs(1),
            cpu_limit: None,
            kill: Default::default(),
        };
        let encoded = encode(NONCE, &job);
        let expected = format!("{NONCE}\n3\n2\npython3\0a b\nc\0TARinput");
        assert_eq!(&encoded[..], expected.as_bytes());
        // A reused runner gets the step and the stdin's length first; a small stdin without
        // NUL is marked for the shell to read itself, a larger one or one with NUL is not.
        let encoded = encode_nested(NONCE, &job);
        let expected = format!("{NONCE}\nrun\n3\n=5\n2\npython3\0a b\nc\0TARinput");
        assert_eq!(&encoded[..], expected.as_bytes());
        for stdin in [vec![b'x'; INLINE_MAX + 1], b"a\0b".to_vec()] {
            let big = RunnerJob {
                step: Step::Run,
                archive: Bytes::from_static(b"TAR"),
                argv: vec!["python3".into(), "a b\nc".into()],
                stdin: Bytes::from(stdin.clone()),
                live_stdin: None,
                timeout: Duration::from_secs(1),
                cpu_limit: None,
                kill: Default::default(),
            };
            let encoded = encode_nested(NONCE, &big);
            let header = format!("{NONCE}\nrun\n3\n{}\n2\n", stdin.len());
            assert!(encoded.starts_with(header.as_bytes()));
            assert!(encoded.ends_with(&stdin));
        }
        let live = RunnerJob {
            step: Step::Compile,
            live_stdin: Some(crate::sandbox::input_channel(16).1),
            ..job
        };
        let encoded = encode_nested(NONCE, &live);
        assert!(encoded.starts_with(format!("{NONCE}\ncompile\n3\n-1\n2\n").as_bytes()));
    }

    #[test]
    fn one_small_source_file_goes_by_name_and_content_not_as_a_tar() {
        // As the executor packs a job's files: ustar, 0644, directories first.
        let file = |name: &'static str, content: &[u8]| (name, content.to_vec());
        let pack = |files: &[(&str, Vec<u8>)]| {
            let mut builder = tar::Builder::new(Vec::new());
            for (name, content) in files {
                if let Some((dir, _)) = name.split_once('/') {
                    let mut header = tar::Header::new_ustar();
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{dir}/"), std::io::empty())
                        .unwrap();
                }
                let mut header = tar::Header::new_ustar();
                header.set_mode(0o644);
                header.set_size(content.len() as u64);
                builder
                    .append_data(&mut header, name, content.as_slice())
                    .unwrap();
            }
            builder.into_inner().unwrap()
        };
        let job = |files: &[(&str, Vec<u8>)]| RunnerJob {
            step: Step::Compile,
            archive: Bytes::from(pack(files)),
            argv: vec!["gcc".into()],
            stdin: Bytes::new(),
            live_stdin: None,
            timeout: Duration::from_secs(1),
            cpu_limit: None,
            kill: Default::default(),
        };
        let encoded = encode_nested(NONCE, &job(&[file("main.c", b"int main(){}\n")]));
        let expected = format!("{NONCE}\ncompile\n=13\n=0\n1\ngcc\0main.c\0int main(){{}}\n");
        assert_eq!(String::from_utf8_lossy(&encoded), expected);
        // A fresh runner takes one small file the same way.
        let encoded = encode(NONCE, &job(&[file("main.c", b"int main(){}\n")]));
        let expected = format!("{NONCE}\n=13\n1\ngcc\0main.c\0int main(){{}}\n");
        assert_eq!(String::from_utf8_lossy(&encoded), expected);
        let empty = encode_nested(NONCE, &job(&[file("empty.py", b"")]));
        assert!(empty.ends_with(b"\n=0\n=0\n1\ngcc\0empty.py\0"));
        // Two files, a file in a directory, NUL in the content or a large file: a tar.
        for files in [
            vec![file("a.py", b"1"), file("b.py", b"2")],
            vec![file("pkg/a.py", b"1")],
            vec![file("a.bin", b"\0")],
            vec![file("big.py", &vec![b'#'; INLINE_MAX + 1])],
        ] {
            let job = job(&files);
            let encoded = encode_nested(NONCE, &job);
            let header = format!("{NONCE}\ncompile\n{}\n=0\n1\ngcc\0", job.archive.len());
            assert!(encoded.starts_with(header.as_bytes()), "{files:?}");
            assert!(encoded.ends_with(&job.archive), "{files:?}");
        }
    }

    #[test]
    fn what_follows_the_trailer_in_its_frame_is_kept() {
        let mut scanner = TrailerScanner::new(NONCE);
        let frame = format!("err\x1e{NONCE} 0 ok\n\x1e{NONCE} rea");
        scanner.feed(frame.as_bytes(), &mut |_| {});
        scanner.feed(b"dy ok\n", &mut |_| {});
        assert_eq!(scanner.status(), Some(0));
        assert_eq!(
            scanner.after_trailer(),
            format!("\x1e{NONCE} ready ok\n").into_bytes()
        );
    }

    #[test]
    fn a_reused_runners_health_follows_its_status() {
        let mut scanner = TrailerScanner::new(NONCE);
        let mut out = Vec::new();
        let stream = format!("err\x1e{NONCE} 3 dirty\n");
        scanner.feed(stream.as_bytes(), &mut |b| out.extend_from_slice(b));
        assert_eq!(scanner.status(), Some(3));
        assert_eq!(scanner.tail(), "dirty");
        assert_eq!(Health::from_word(scanner.tail()), Health::Dirty);
        assert_eq!(Health::from_word("ok"), Health::Clean);
        assert_eq!(Health::from_word(""), Health::Unknown);
        assert_eq!(out, b"err");
    }
}
