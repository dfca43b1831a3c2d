//! A started sandbox: its one runner job, execs, usage, ending its programs, its memory cap,
//! and the removal when it is dropped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl Sandbox {
    /// runbox's id of this sandbox.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current memory cap.
    pub fn memory_mb(&self) -> u64 {
        self.memory_mb
    }

    /// Sends the runner its one job and collects the program's output; see [`runner`].
    pub async fn run_main(
        &mut self,
        job: RunnerJob,
        sink: &mut dyn OutputSink,
    ) -> Result<ExecOutcome, SandboxError> {
        let io = self
            .runner
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .ok_or(SandboxError::RunnerSpent)?;
        runner::run(&self.sandboxes.shared, &self.container_id, io, job, sink).await
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
    /// keeps covering everything so far). Returns whether it did.
    /// With `reclaim`, the page cache charged to the sandbox so far (a compiler's binaries and
    /// libraries) is dropped first, so it does not count toward the new peak.
    pub async fn reset_memory_peak(&self, reclaim: bool) -> bool {
        host_cgroup::reset_peak(&self.container_id, reclaim).await
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

    /// Changes the memory cap (and the equal memory+swap cap) of the running sandbox.
    pub(super) async fn set_memory_limit(&mut self, memory_mb: u64) -> Result<(), SandboxError> {
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
