//! A started sandbox: its one runner job, execs, usage, ending its programs, its memory cap,
//! and the removal when it is dropped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::ContainerUpdateBody;

use super::{
    ExecEnd, ExecOutcome, ExecSpec, OutputCollector, OutputSink, RunnerJob, SandboxError,
    SandboxSpec, Sandboxes, exec, host_cgroup, runner,
};
/// See [`Sandbox::end_programs`]. `$1` is a process session to spare (a terminal's), or empty.
/// Every other process of this uid is first stopped, so that none can fork while the rest are
/// found, then killed once all are stopped. Shell builtins only, so the script needs no pid of
/// its own beyond the exec's (a fork bomb may hold every other one). The loop ends when no
/// process of this uid but the script, init and the spared session is left; killed processes stay
/// listed as zombies until the engine's init reaps them, a moment later.
const END_PROGRAMS_SCRIPT: &str = r#"me=$$
spare=$1
uid=
while read -r key value rest; do
  if [ "$key" = Uid: ]; then uid=$value; break; fi
done < /proc/self/status
sig=STOP
while :; do
  found=0
  running=0
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$me" ] || [ "$pid" = 1 ] && continue
    owner=
    while read -r key value rest; do
      if [ "$key" = Uid: ]; then owner=$value; break; fi
    done 2>/dev/null < "$p/status"
    [ "$owner" = "$uid" ] || continue
    read -r stat 2>/dev/null < "$p/stat" || continue
    # After the command name: state, parent, group, session (numbers: no glob to expand).
    set -- ${stat##*) }
    [ -n "$spare" ] && [ "$4" = "$spare" ] && continue
    found=1
    case $1 in T|t|Z|X) ;; *) running=1 ;; esac
    kill -$sig "$pid" 2>/dev/null
  done
  [ "$found" = 0 ] && exit 0
  [ "$running" = 0 ] && sig=KILL
done"#;
/// A fork bomb at the pids cap is ended within a few rounds; this only bounds a broken engine.
const END_PROGRAMS_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints CPU nanoseconds and peak memory bytes of the sandbox's cgroup, one per line
/// (cgroup v1 layout first, v2 as the fallback; 0 where a value is not available).
const CGROUP_USAGE_SCRIPT: &str = "if [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then \
    cat /sys/fs/cgroup/cpuacct/cpuacct.usage /sys/fs/cgroup/memory/memory.max_usage_in_bytes; \
    else awk '/^usage_usec/ { printf \"%d000\\n\", $2 }' /sys/fs/cgroup/cpu.stat; \
    cat /sys/fs/cgroup/memory.peak 2>/dev/null || echo 0; fi";

pub(crate) fn parse_cgroup_usage(text: &str) -> Usage {
    let mut values = text
        .lines()
        .map(|l| l.trim().parse::<u64>().ok().filter(|&v| v > 0));
    Usage {
        cpu_ns: values.next().flatten(),
        memory_peak_bytes: values.next().flatten(),
    }
}

/// Resource use of a sandbox as the engine's cgroup accounting reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time (user + system) of everything that ran in the sandbox so far.
    pub cpu_ns: Option<u64>,
    /// Peak memory of the sandbox so far (cgroup v1 only; v2 engines do not report it).
    pub memory_peak_bytes: Option<u64>,
}

/// A started sandbox container. Dropping it removes the container (in the background).
pub struct Sandbox {
    pub(super) sandboxes: Sandboxes,
    pub(super) container_id: String,
    pub(super) id: String,
    /// The current memory cap.
    pub(super) memory_mb: u64,
    /// The runner's attached streams, until its one job is sent. In a mutex only so that
    /// `&Sandbox` is `Send` (the streams are not `Sync`); it is only reached through `&mut`.
    pub(super) runner: Mutex<Option<runner::RunnerIo>>,
    /// The process session of the terminal opened in this sandbox while its program runs
    /// (0: none), which [`Sandbox::end_programs`] spares.
    pub(super) terminal_session: Arc<AtomicU32>,
    /// Left running on purpose (see [`Sandbox::detach`]): dropping does not remove it.
    pub(super) detached: bool,
    /// How this sandbox may be reused (see [`super::nested`]); `None`: it serves one job.
    pub(super) reuse: Option<Reuse>,
}

/// A reused sandbox's record: what it served, since when, and what it holds at rest.
#[derive(Debug)]
pub(super) struct Reuse {
    pub(super) language: String,
    pub(super) started: Instant,
    pub(super) jobs: u32,
    /// The share of `sandbox.reuse_jobs` and `reuse_max_age_secs` this sandbox serves, drawn
    /// once in [`RETIRE_SHARE_MIN`, 1]: sandboxes made together (a pool filled at once) and
    /// served in turn would otherwise all retire at once, and their replacements' engine work
    /// (~230 ms of CPU each here) land on the same few jobs (measured: 4 python sandboxes
    /// retiring within 3 jobs of each other, one run 153 ms instead of ~20).
    pub(super) retire_share: f64,
    /// Resident memory (see `host_cgroup::resident`) at rest, first seen before a job: with
    /// the shim waiting for the next job, and with a warm compiler waiting (a JVM, ~75 MB).
    pub(super) resident_at_rest: Option<u64>,
    pub(super) resident_at_rest_warm: Option<u64>,
    /// Whether a warm compiler waits for the next job (the runner's last `ready` said so).
    pub(super) warm_waits: bool,
    /// The memory cap it was made with, which it goes back to after each program: the next
    /// job's warm compiler (a JVM holds ~75 MB) is made while it waits, under that cap.
    pub(super) rest_memory_mb: u64,
    /// Cleared by anything that makes it untrustworthy: it is then removed after its job.
    pub(super) trusted: bool,
    /// The nonce of the last job, whose `ready` line the runner has yet to write.
    pub(super) ready_after: Option<String>,
    /// Stderr the runner wrote after the last trailer, read already with it.
    pub(super) stderr_after: Vec<u8>,
    /// The runner kept the last run's work dir (a `run-keep` step): a `discard` step must
    /// follow before the next job.
    pub(super) work_dir_kept: bool,
    /// The runner said the last step left nothing running (its health `ok`, or `spent` after
    /// a live stdin) and its memory did not run out.
    pub(super) job_ended_clean: bool,
}

/// The smallest share of its job count and age a reused sandbox serves (see
/// [`Reuse::retire_share`]): every sandbox retires at or before the configured limits.
const RETIRE_SHARE_MIN: f64 = 0.75;

/// A share in [`RETIRE_SHARE_MIN`, 1] from random bits.
fn retire_share(random: u64) -> f64 {
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    1.0 - (1.0 - RETIRE_SHARE_MIN) * unit
}

/// 64 random bits: each `RandomState` is keyed afresh (std's own random keys).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// `share` of `limit` jobs, rounded up, at least 1 and at most `limit`.
fn share_of(limit: u32, share: f64) -> u32 {
    ((f64::from(limit) * share).ceil() as u32).clamp(1, limit.max(1))
}

impl Reuse {
    /// The memory at rest to compare with now: with the compiler waiting, or the shim.
    fn at_rest(&mut self) -> &mut Option<u64> {
        if self.warm_waits {
            &mut self.resident_at_rest_warm
        } else {
            &mut self.resident_at_rest
        }
    }

    /// A reused sandbox's record; with a warm compiler, its runner is first to say it is
    /// ready (at rest) once that compiler is warm (see `nested::SCRIPT`).
    pub(super) fn new(language: &str, memory_mb: u64, warm_compiler: bool) -> Reuse {
        Reuse {
            language: language.to_owned(),
            started: Instant::now(),
            jobs: 0,
            retire_share: retire_share(random_u64()),
            resident_at_rest: None,
            resident_at_rest_warm: None,
            warm_waits: false,
            rest_memory_mb: memory_mb,
            trusted: true,
            ready_after: warm_compiler.then(|| START_NONCE.to_owned()),
            stderr_after: Vec::new(),
            work_dir_kept: false,
            job_ended_clean: false,
        }
    }
}

/// How long archiving a compiled work dir may take (a few MB of files in memory).
const PACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a reused runner may take to clean up after a job (deleting a full work dir of
/// 4096 files takes well under a second) and to warm the next job's compiler (~0.4-0.9 s of
/// CPU for javac; the runner waits at most 3 s for it).
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a runner with a warm compiler says `ready` after when it has started.
const START_NONCE: &str = "start";

/// Most bytes read while waiting for the `ready` line: nothing else writes then.
const READY_LINE_MAX: usize = 1024;

/// Reads a reused runner's stderr up to its `ready` line for `nonce`: the health word. `seen`
/// is what was read of it already, with the job's trailer.
async fn read_ready(io: &mut runner::RunnerIo, nonce: &str, mut seen: Vec<u8>) -> Option<String> {
    use futures_util::StreamExt as _;
    let marker = runner::ready_marker(nonce);
    loop {
        if let Some(at) = seen.windows(marker.len()).position(|w| w == marker) {
            let rest = &seen[at + marker.len()..];
            if let Some(end) = rest.iter().position(|&b| b == b'\n') {
                return Some(String::from_utf8_lossy(&rest[..end]).into_owned());
            }
        }
        if seen.len() > READY_LINE_MAX {
            return None;
        }
        match io.output.next().await? {
            Ok(bollard::container::LogOutput::StdErr { message }) => {
                seen.extend_from_slice(&message)
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// How much more than at rest a reused sandbox may hold after a job: the runner's bash grows a
/// little with the argument arrays it reads. A job's own files and processes are far larger.
const RESIDENT_SLACK_BYTES: u64 = 4 * 1024 * 1024;

impl Sandbox {
    /// runbox's id of this sandbox.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current memory cap.
    pub fn memory_mb(&self) -> u64 {
        self.memory_mb
    }

    /// The engine this sandbox lives on.
    pub fn engine_id(&self) -> &str {
        self.sandboxes.engine_id()
    }

    /// Sends the runner a job (a fresh runner's one job, or a reused runner's next step) and
    /// collects the program's output; see [`runner`].
    pub async fn run_main(
        &mut self,
        job: RunnerJob,
        sink: &mut dyn OutputSink,
    ) -> Result<ExecOutcome, SandboxError> {
        let mut io = self
            .runner
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .ok_or(SandboxError::RunnerSpent)?;
        let nested = self.reuse.is_some();
        let step = job.step;
        self.note_rest().await;
        let end = runner::run(
            &self.sandboxes.shared,
            &self.container_id,
            &mut io,
            job,
            nested,
            sink,
        )
        .await?;
        if let Some(reuse) = &mut self.reuse {
            reuse.job_ended_clean =
                matches!(end.health, runner::Health::Clean | runner::Health::Spent)
                    && !end.outcome.oom_killed;
            if end.health == runner::Health::Clean && !end.outcome.oom_killed {
                *self.runner.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(io);
                // A compile that succeeded and a clean `run-keep` are checked before their
                // trailers, and a pack or a tool leaves the work dir as it was (see `nested`):
                // none is followed by `ready`.
                let keeps_work_dir = match step {
                    runner::Step::Pack | runner::Step::Tool | runner::Step::RunKeep => true,
                    runner::Step::Compile => end.outcome.end == (ExecEnd::Exited { code: 0 }),
                    runner::Step::Run | runner::Step::Discard => false,
                };
                if step == runner::Step::RunKeep {
                    reuse.work_dir_kept = true;
                }
                reuse.ready_after = (!keeps_work_dir).then(|| end.nonce.clone());
                reuse.stderr_after = end.stderr_after;
            } else {
                reuse.trusted = false;
                tracing::debug!(sandbox = %self.id, health = ?end.health, "a reused sandbox is retired after its job");
            }
            if end.health == runner::Health::LauncherFailed {
                return Err(SandboxError::NestedLauncher);
            }
        }
        Ok(end.outcome)
    }

    /// The work dir after a compile, as a tar written by the sandbox user inside the sandbox
    /// (a reused runner's `pack` step, else an exec of `tar`), at most `limit` bytes: `None`
    /// when it is larger or could not be read. The host never reads a work dir.
    pub async fn pack_work_dir(&mut self, limit: usize) -> Result<Option<Vec<u8>>, SandboxError> {
        let mut output = OutputCollector::new(limit);
        let outcome = if self.reuse.is_some() {
            let job = RunnerJob {
                step: runner::Step::Pack,
                archive: bytes::Bytes::new(),
                argv: Vec::new(),
                stdin: bytes::Bytes::new(),
                live_stdin: None,
                timeout: PACK_TIMEOUT,
                cpu_limit: None,
                kill: Default::default(),
            };
            self.run_main(job, &mut output).await?
        } else {
            let cmd = [
                "tar",
                "-c",
                "-b",
                "1",
                "-f",
                "-",
                "-C",
                super::policy::WORK_DIR,
                ".",
            ];
            self.exec(
                ExecSpec {
                    cmd: cmd.map(String::from).to_vec(),
                    stdin: bytes::Bytes::new(),
                    timeout: PACK_TIMEOUT,
                    cpu_limit: None,
                },
                &mut output,
            )
            .await?
        };
        let collected = output.finish();
        if outcome.end != (ExecEnd::Exited { code: 0 }) || collected.truncated {
            return Ok(None);
        }
        Ok(Some(collected.stdout))
    }

    /// Whether this sandbox takes jobs in steps, each in a nested sandbox (a compile through
    /// its runner, then the run), rather than one job.
    pub fn is_reused(&self) -> bool {
        self.reuse.is_some()
    }

    /// Counts the job just served and says whether the sandbox may take another so far: the
    /// runner reported nothing wrong and it is below its job count and age. Anything else
    /// retires it. [`Sandbox::until_ready`] has the last word.
    pub fn may_serve_again(&mut self) -> bool {
        let config = &self.sandboxes.shared.config;
        let (max_jobs, max_age) = (config.reuse_jobs, config.reuse_max_age());
        let Some(reuse) = &mut self.reuse else {
            return false;
        };
        reuse.jobs += 1;
        reuse.trusted
            && reuse.jobs < share_of(max_jobs, reuse.retire_share)
            && reuse.started.elapsed() < max_age.mul_f64(reuse.retire_share)
    }

    /// Waits for a reused runner to say it has cleaned up after the last job (the work dir
    /// deleted, no process left), then checks that the sandbox's memory is back to where it
    /// was at rest. `false`: the sandbox is not to be used again.
    pub async fn until_ready(&mut self) -> bool {
        if !self.reuse.as_ref().is_some_and(|r| r.trusted) {
            return false;
        }
        // At once, while the runner cleans up: the next job's warm compiler is made under it.
        if !self.back_to_rest_cap().await {
            tracing::debug!(sandbox = %self.id, "a reused sandbox could not go back to its cap at rest; retired");
            return false;
        }
        let Some(reuse) = &mut self.reuse else {
            return false;
        };
        if let Some(nonce) = reuse.ready_after.take() {
            let seen = std::mem::take(&mut reuse.stderr_after);
            let io = self.runner.get_mut().unwrap_or_else(|p| p.into_inner());
            let said = match io.as_mut() {
                Some(io) => tokio::time::timeout(READY_TIMEOUT, read_ready(io, &nonce, seen))
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            reuse.warm_waits = match said.as_deref() {
                Some("ok") => false,
                Some("ok warm") => true,
                _ => {
                    tracing::debug!(sandbox = %self.id, said, "a reused sandbox did not come back clean; retired");
                    reuse.trusted = false;
                    return false;
                }
            };
        }
        let Some(now) = host_cgroup::resident(&self.container_id).await else {
            // Where the cgroup is out of sight, the runner's word stands.
            return true;
        };
        let at_rest = reuse.at_rest();
        match *at_rest {
            Some(at_rest) if now > at_rest + RESIDENT_SLACK_BYTES => {
                tracing::warn!(sandbox = %self.id, at_rest, now, "a reused sandbox holds more memory than before its job; retired");
                reuse.trusted = false;
                false
            }
            Some(_) => true,
            // The first time it rests with a warm compiler waiting (one made for a job warms
            // one after that job's compile): what it holds so is at rest from now on.
            None => {
                *at_rest = Some(now);
                true
            }
        }
    }

    /// Notes the resident memory at rest before a reused sandbox's first job.
    async fn note_rest(&mut self) {
        if let Some(reuse) = &mut self.reuse {
            let at_rest = reuse.at_rest();
            if at_rest.is_none() {
                *at_rest = host_cgroup::resident(&self.container_id).await;
            }
        }
    }

    /// The language a reused sandbox serves.
    pub fn reused_for(&self) -> Option<&str> {
        self.reuse.as_ref().map(|r| r.language.as_str())
    }

    /// Runs one command inside the sandbox; see [`ExecSpec`].
    pub async fn exec(
        &self,
        spec: ExecSpec,
        sink: &mut dyn OutputSink,
    ) -> Result<ExecOutcome, SandboxError> {
        exec::run(&self.sandboxes.shared, &self.container_id, spec, sink).await
    }

    /// CPU time and peak memory of the sandbox so far, read from its cgroup on the host when
    /// runbox can see it (microseconds), else from inside the sandbox (one exec).
    ///
    /// Not the engine's stats endpoint: it answers on the engine's one-second collection tick,
    /// which costs up to a second per call (measured: a python hello world took 1004 ms with
    /// it and about 160 ms without).
    pub async fn usage(&self) -> Result<Usage, SandboxError> {
        if let Some(usage) = host_cgroup::read(&self.container_id).await {
            return Ok(usage);
        }
        self.usage_from_inside().await
    }

    /// Like [`Sandbox::usage`], from the host's cgroup files only: `None` where runbox cannot
    /// see them.
    pub async fn usage_on_host(&self) -> Option<Usage> {
        host_cgroup::read(&self.container_id).await
    }

    /// Starts a new peak-memory measurement (cgroup v1 on the host only; elsewhere the peak
    /// keeps covering everything so far). Returns the bytes the new peak is to leave out, or
    /// `None` where it could not reset. With `discount_cache`, that is the file cache charged
    /// to the sandbox so far (a compiler's binaries and libraries), which is not the program's.
    pub async fn reset_memory_peak(&self, discount_cache: bool) -> Option<u64> {
        host_cgroup::reset_peak(&self.container_id, discount_cache).await
    }

    /// CPU time and peak memory read from the sandbox's own cgroup files, through an exec (the
    /// cgroup is mounted read-only in the container).
    async fn usage_from_inside(&self) -> Result<Usage, SandboxError> {
        let mut output = OutputCollector::new(256);
        let outcome = self
            .exec(
                ExecSpec {
                    cmd: ["sh", "-c", CGROUP_USAGE_SCRIPT].map(String::from).to_vec(),
                    stdin: bytes::Bytes::new(),
                    timeout: Duration::from_secs(5),
                    cpu_limit: None,
                },
                &mut output,
            )
            .await?;
        if outcome.end != (ExecEnd::Exited { code: 0 }) {
            return Ok(Usage::default());
        }
        Ok(parse_cgroup_usage(&output.finish().stdout_text()))
    }

    /// Ends every process running as the program user (whatever it did to outlive its run:
    /// `setsid`, `nohup`, a double fork, a SIGTERM trap), leaving the keeper of a
    /// [`MainProcess::Keeper`] sandbox alive, and the terminal's program (see
    /// [`Sandbox::open_terminal`]) with every process of its session. One exec.
    pub async fn end_programs(&self) -> Result<(), SandboxError> {
        let spared = self.terminal_session.load(Ordering::Acquire);
        self.end_processes((spared != 0).then_some(spared)).await
    }

    /// Kills every process in the sandbox at once (the container stops; dropping the sandbox
    /// still removes it). For a throwaway sandbox whose program did not end by itself: what it
    /// started must be gone before its result is reported, not a removal later.
    pub async fn kill(&self) -> Result<(), SandboxError> {
        let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self
            .sandboxes
            .shared
            .docker
            .kill_container(&self.container_id, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            // 409: not running any more, which is what was asked for.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(SandboxError::from_engine(e)),
        }
    }

    /// As [`Sandbox::end_programs`], the terminal's program included.
    pub async fn end_all_programs(&self) -> Result<(), SandboxError> {
        self.terminal_session.store(0, Ordering::Release);
        self.end_processes(None).await
    }

    async fn end_processes(&self, spared_session: Option<u32>) -> Result<(), SandboxError> {
        let mut output = OutputCollector::new(256);
        let spared = spared_session.map_or_else(String::new, |s| s.to_string());
        let outcome = self
            .exec(
                ExecSpec {
                    cmd: vec![
                        "sh".to_owned(),
                        "-c".to_owned(),
                        END_PROGRAMS_SCRIPT.to_owned(),
                        "end-programs".to_owned(),
                        spared,
                    ],
                    stdin: bytes::Bytes::new(),
                    timeout: END_PROGRAMS_TIMEOUT,
                    cpu_limit: None,
                },
                &mut output,
            )
            .await?;
        match outcome.end {
            ExecEnd::Exited { code: 0 } => Ok(()),
            other => Err(SandboxError::ProgramsNotEnded(format!("{other:?}"))),
        }
    }

    /// This sandbox with the memory cap of `replacement`. The engine changes the cap in place
    /// under runc; gVisor cannot change a running sandbox's limits, so there a new sandbox is
    /// made from `replacement`, this one's work dir is copied into it, and this one is removed.
    pub async fn with_memory_limit(
        mut self,
        replacement: &SandboxSpec,
    ) -> Result<Sandbox, SandboxError> {
        if self.memory_mb == replacement.memory_mb {
            return Ok(self);
        }
        let config = &self.sandboxes.shared.config;
        if !config.is_gvisor() {
            self.set_memory_limit(replacement.memory_mb).await?;
            return Ok(self);
        }
        let fresh = self.sandboxes.create(replacement).await?;
        self.copy_work_dir_into(&fresh).await?;
        Ok(fresh)
    }

    /// A reused sandbox whose job has ended goes back to the cap it was made with (see
    /// [`Reuse::rest_memory_mb`]); `false` when the cap could not be changed.
    pub(super) async fn back_to_rest_cap(&mut self) -> bool {
        let Some(rest) = self.reuse.as_ref().map(|r| r.rest_memory_mb) else {
            return true;
        };
        rest == self.memory_mb || self.set_memory_limit(rest).await.is_ok()
    }

    /// Changes the memory cap (and the equal memory+swap cap) of the running sandbox.
    pub(super) async fn set_memory_limit(&mut self, memory_mb: u64) -> Result<(), SandboxError> {
        if host_cgroup::set_memory_limit(&self.container_id, memory_mb * 1024 * 1024).await {
            self.memory_mb = memory_mb;
            return Ok(());
        }
        let bytes = memory_mb as i64 * 1024 * 1024;
        let update = ContainerUpdateBody {
            memory: Some(bytes),
            memory_swap: Some(bytes),
            ..Default::default()
        };
        self.sandboxes
            .shared
            .docker
            .update_container(&self.container_id, update)
            .await
            .map_err(SandboxError::from_engine)?;
        self.memory_mb = memory_mb;
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.sandboxes
            .shared
            .cleaner
            .remove(self.container_id.clone(), self.id.clone());
    }
}

impl Sandbox {
    /// Lets the container outlive this process (a session kept across a restart): it leaves
    /// the live set and is not removed. The next start takes it back ([`Sandboxes::adopt`]),
    /// or the sweep removes it once it is older than any session can be.
    pub fn detach(mut self) {
        self.detached = true;
        self.sandboxes.shared.live.release(&self.id);
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("id", &self.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_sandbox_retires_within_its_limits_and_not_all_at_one_count() {
        for random in [0, 1, u64::MAX / 3, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            let share = retire_share(random);
            assert!((RETIRE_SHARE_MIN..=1.0).contains(&share), "{share}");
            let jobs = share_of(100, share);
            assert!((75..=100).contains(&jobs), "{jobs}");
        }
        assert_eq!(share_of(100, 1.0), 100);
        assert_eq!(share_of(100, RETIRE_SHARE_MIN), 75);
        // A limit of one job stays one job.
        assert_eq!(share_of(1, RETIRE_SHARE_MIN), 1);
        // Sandboxes drawn one after another spread over the range.
        let counts: std::collections::BTreeSet<u32> = (0..64)
            .map(|_| share_of(100, retire_share(random_u64())))
            .collect();
        assert!(counts.len() > 8, "{counts:?}");
    }

    #[test]
    fn cgroup_usage_lines() {
        assert_eq!(
            parse_cgroup_usage("24093943\n3821568\n"),
            Usage {
                cpu_ns: Some(24_093_943),
                memory_peak_bytes: Some(3_821_568)
            }
        );
        assert_eq!(
            parse_cgroup_usage("5000\n0\n"),
            Usage {
                cpu_ns: Some(5000),
                memory_peak_bytes: None
            }
        );
        assert_eq!(parse_cgroup_usage(""), Usage::default());
    }
}
