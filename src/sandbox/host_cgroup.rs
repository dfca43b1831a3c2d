//! Reading a sandbox's cgroup straight from the host's cgroup file system, where runbox runs
//! on the engine's host and can see it. Covers the engine's usual layouts (cgroup v1 and v2,
//! cgroupfs and systemd drivers, default parent); anything else returns `None` and the caller
//! falls back to reading from inside the sandbox.

use std::path::PathBuf;
use std::time::Duration;

use super::Usage;

const ROOT: &str = "/sys/fs/cgroup";

/// Cgroup parents of engines on this machine started with `--cgroup-parent` (config
/// `cluster.engines[].cgroup_parent`), next to the default `docker`.
static PARENTS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Looks for sandboxes under `parent` too (an engine of this machine with its own
/// `--cgroup-parent`).
pub(super) fn add_parent(parent: &str) {
    let parent = parent.trim_matches('/').to_owned();
    let mut parents = PARENTS.write().unwrap_or_else(|p| p.into_inner());
    if !parent.is_empty() && !parents.contains(&parent) {
        parents.push(parent);
    }
}

/// The directories `container` may have under a controller (`""` for the v2 unified
/// hierarchy): the default parent, systemd's scope, then each engine's own parent.
fn candidates(controller: &str, container: &str) -> Vec<PathBuf> {
    let base = PathBuf::from(ROOT).join(controller);
    let mut dirs = vec![
        base.join("docker").join(container),
        base.join("system.slice")
            .join(format!("docker-{container}.scope")),
    ];
    let parents = PARENTS.read().unwrap_or_else(|p| p.into_inner());
    dirs.extend(
        parents
            .iter()
            .map(|parent| base.join(parent).join(container)),
    );
    dirs
}

async fn read_number(path: PathBuf) -> Option<u64> {
    tokio::fs::read_to_string(path)
        .await
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub(super) async fn read(container: &str) -> Option<Usage> {
    // cgroup v1: cpuacct and memory controllers.
    for (cpu_dir, memory_dir) in candidates("cpuacct", container)
        .into_iter()
        .zip(candidates("memory", container))
    {
        if let Some(cpu_ns) = read_number(cpu_dir.join("cpuacct.usage")).await {
            let peak = read_number(memory_dir.join("memory.max_usage_in_bytes")).await;
            return Some(Usage {
                cpu_ns: Some(cpu_ns).filter(|&n| n > 0),
                memory_peak_bytes: peak.filter(|&b| b > 0),
            });
        }
    }
    // cgroup v2: one directory, cpu.stat in microseconds, memory.peak where the kernel has it.
    for dir in candidates("", container) {
        if let Ok(stat) = tokio::fs::read_to_string(dir.join("cpu.stat")).await {
            let cpu_ns = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|us| us * 1000);
            let peak = read_number(dir.join("memory.peak")).await;
            return Some(Usage {
                cpu_ns: cpu_ns.filter(|&n| n > 0),
                memory_peak_bytes: peak.filter(|&b| b > 0),
            });
        }
    }
    None
}

/// CPU time the sandbox's processes have used so far, in nanoseconds.
async fn cpu_ns(container: &str) -> Option<u64> {
    for dir in candidates("cpuacct", container) {
        if let Some(ns) = read_number(dir.join("cpuacct.usage")).await {
            return Some(ns);
        }
    }
    for dir in candidates("", container) {
        if let Ok(stat) = tokio::fs::read_to_string(dir.join("cpu.stat")).await {
            return stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|us| us * 1000);
        }
    }
    None
}

/// How often a CPU-time limit is checked: a program overshoots its limit by at most this
/// (reading the one cgroup file costs a few microseconds).
const CPU_POLL: Duration = Duration::from_millis(10);

/// Completes once the sandbox's processes have used `limit` of CPU time from now, all of them
/// together (a per-process `RLIMIT_CPU` would let each child have its own). gVisor's sandbox
/// is charged to the same host cgroup. Never completes without a limit, or where the host's
/// cgroup files are out of sight (runbox on another machine than the engine): there the wall
/// clock alone ends the program.
pub(super) async fn cpu_spent(container: &str, limit: Option<Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    let Some(start) = cpu_ns(container).await else {
        tracing::debug!(
            "the sandbox's CPU time cannot be read here: only the wall clock limits it"
        );
        return std::future::pending().await;
    };
    let limit_ns = limit.as_nanos() as u64;
    let mut tick = tokio::time::interval(CPU_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match cpu_ns(container).await {
            Some(now) if now.saturating_sub(start) >= limit_ns => return,
            Some(_) => {}
            // The cgroup is gone with the sandbox: the program's end is being reported.
            None => return std::future::pending().await,
        }
    }
}

/// Memory the sandbox's cgroup is charged right now (v1 `memory.usage_in_bytes`, v2
/// `memory.current`).
#[cfg(feature = "bench")]
pub(super) async fn memory_usage(container: &str) -> Option<u64> {
    for dir in candidates("memory", container) {
        if let Some(bytes) = read_number(dir.join("memory.usage_in_bytes")).await {
            return Some(bytes);
        }
    }
    for dir in candidates("", container) {
        if let Some(bytes) = read_number(dir.join("memory.current")).await {
            return Some(bytes);
        }
    }
    None
}

/// Memory the sandbox's processes hold themselves, page cache aside: anonymous memory plus
/// tmpfs and shared memory (v1 `rss` + `shmem`, v2 `anon` + `shmem` of `memory.stat`). A reused
/// sandbox must come back to where it started after each job; the cache of files read meanwhile
/// (the interpreter, its libraries) is not the job's and comes and goes.
pub(super) async fn resident(container: &str) -> Option<u64> {
    let files = candidates("memory", container)
        .into_iter()
        .chain(candidates("", container))
        .map(|dir| dir.join("memory.stat"));
    for file in files {
        if let Ok(text) = tokio::fs::read_to_string(file).await {
            return Some(parse_resident(&text));
        }
    }
    None
}

fn parse_resident(text: &str) -> u64 {
    ["rss", "anon", "shmem"]
        .iter()
        .filter_map(|name| stat_field(text, name))
        .sum()
}

/// One `name value` line of `memory.stat`.
fn stat_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// cgroup v1 resets `memory.max_usage_in_bytes` to the current usage when 0 is written to it.
/// Returns the bytes the new peak is to leave out (`None`: no reset here). The page cache a
/// compiler filled (its own binaries and libraries, ~35 MB for rustc) is charged to the sandbox
/// too and would count toward the program's peak: with `discount_cache`, that file cache (v1
/// `cache` less `shmem`: the work dir's tmpfs files stay counted) is what to leave out.
///
/// Why not drop it instead (`memory.force_empty`, as before): that evicts those pages from
/// the host's page cache, the compiler's binaries and `<bits/stdc++.h>`'s 124 MB precompiled
/// header among them, so the next compile in any sandbox read them from disk again (measured:
/// C hello world's compile 45–60 ms with the cache warm, 90–110 ms through runbox).
pub(super) async fn reset_peak(container: &str, discount_cache: bool) -> Option<u64> {
    for dir in candidates("memory", container) {
        let discount = if discount_cache {
            match tokio::fs::read_to_string(dir.join("memory.stat")).await {
                Ok(text) => file_cache(&text),
                Err(_) => continue,
            }
        } else {
            0
        };
        if tokio::fs::write(dir.join("memory.max_usage_in_bytes"), "0")
            .await
            .is_ok()
        {
            return Some(discount);
        }
    }
    None
}

/// v1 `memory.stat`: page cache of files (`cache` counts tmpfs and shared memory too).
fn file_cache(text: &str) -> u64 {
    let field = |name| stat_field(text, name).unwrap_or(0);
    field("cache").saturating_sub(field("shmem"))
}

/// Sets the sandbox's memory cap (and its equal memory+swap cap) by writing its cgroup, as the
/// engine itself would. Why not the Engine API: `POST /containers/{id}/update` takes 23–28 ms
/// here (dockerd starts `runc update`), and a compiled language's job changed the cap twice (up
/// for the compile, down for the program), which was a third of a C hello world's cache miss.
/// The engine's record of the container keeps the cap it was created with; runbox reads the
/// cap from its own `Sandbox`, never from the engine. `false` where the files are out of sight
/// or refuse (a cap below what is in use): the caller asks the engine instead.
pub(super) async fn set_memory_limit(container: &str, bytes: u64) -> bool {
    let value = bytes.to_string();
    for dir in candidates("memory", container) {
        let memory = dir.join("memory.limit_in_bytes");
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if tokio::fs::metadata(&memory).await.is_err() {
            continue;
        }
        // memory+swap may never be below memory: raise it first, lower it last. Without swap
        // accounting the kernel has no memsw file.
        let current = read_number(memory.clone()).await.unwrap_or(0);
        let mut files = vec![memory];
        if tokio::fs::metadata(&memsw).await.is_ok() {
            if bytes >= current {
                files.insert(0, memsw);
            } else {
                files.push(memsw);
            }
        }
        for file in files {
            if tokio::fs::write(&file, &value).await.is_err() {
                return false;
            }
        }
        return true;
    }
    for dir in candidates("", container) {
        // v2: `memory.swap.max` counts swap alone and stays 0, as the engine set it.
        let memory = dir.join("memory.max");
        if tokio::fs::metadata(&memory).await.is_ok() {
            return tokio::fs::write(&memory, &value).await.is_ok();
        }
    }
    false
}

/// OOM kills in the sandbox's cgroup so far (v1 `memory.oom_control`, v2 `memory.events`,
/// the `oom_kill` line of either). Read right after a program's end it cannot trail the exit
/// the way the engine's `oom` event can: a parent that outlives an OOM-killed child and exits
/// 0 a moment later was reported `success` when only the event was asked.
pub(super) async fn oom_kills(container: &str) -> Option<u64> {
    let dirs = candidates("memory", container)
        .into_iter()
        .map(|dir| dir.join("memory.oom_control"))
        .chain(
            candidates("", container)
                .into_iter()
                .map(|dir| dir.join("memory.events")),
        );
    for file in dirs {
        if let Ok(text) = tokio::fs::read_to_string(file).await {
            return parse_oom_kills(&text);
        }
    }
    None
}

fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|count| count.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_anonymous_plus_shared_of_v1_and_v2() {
        let v1 = "cache 900\nrss 100\nrss_huge 0\nshmem 20\nmapped_file 5\ntotal_rss 100\n";
        assert_eq!(parse_resident(v1), 120);
        let v2 = "anon 300\nfile 5000\nkernel 80\nshmem 7\n";
        assert_eq!(parse_resident(v2), 307);
    }

    #[test]
    fn file_cache_leaves_tmpfs_counted() {
        let v1 = "cache 900\nrss 100\nshmem 200\nmapped_file 5\ntotal_cache 900\n";
        assert_eq!(file_cache(v1), 700);
        assert_eq!(file_cache("rss 100\n"), 0);
    }

    #[test]
    fn oom_kill_lines_of_v1_and_v2() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_oom_kills(v1), Some(2));
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v2), Some(1));
        assert_eq!(parse_oom_kills("under_oom 0\n"), None);
    }
}
