//! The hardening policy: the one place that decides how a sandbox container is configured.
//! Everything else asks for a [`SandboxSpec`] and gets these settings, no exceptions.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};

use crate::config::SandboxConfig;

/// The sandbox's only writable place: a tmpfs, also its working and home directory.
pub const WORK_DIR: &str = "/box";
/// Every sandbox has the same hostname, so nothing about the host leaks through it.
pub const HOSTNAME: &str = "runbox";
/// Size of the private `/dev/shm`; charged to the memory cap like the work dir.
pub const SHM_BYTES: i64 = 16 * 1024 * 1024;
/// The process that keeps a started sandbox alive between execs. PID 1 is the engine's init
/// (tini), which reaps every orphan the program leaves.
const IDLE_COMMAND: [&str; 2] = ["sleep", "infinity"];
/// The uid:gid of a long-lived sandbox's keeper (its idle main process). Programs run as
/// `sandbox.user`, a different uid, so a program can signal every process of its own but never
/// the keeper: ending a run is `kill -9 -1` as the program's user (see
/// [`super::Sandbox::end_programs`]), and the sandbox lives on.
pub const KEEPER_USER: &str = "65533:65533";
/// Runs the runner script (see `runner.rs`) as the sandbox's main process: by the runner's
/// unreadable copy of bash, which makes it non-dumpable. gVisor (20221219) refuses to execute
/// a file its user may not read ("Permission denied"); its `/proc` already refuses another
/// process's memory, so there plain bash runs it.
fn runner_shell(config: &SandboxConfig) -> [&'static str; 2] {
    if config.is_gvisor() {
        ["bash", "-c"]
    } else {
        [super::runner::RUNNER_BINARY, "-c"]
    }
}
/// Files the sandbox sees empty (the engine binds /dev/null over them). Naming any replaces
/// the engine's own list, so its defaults come first; then what tells a program about the
/// host rather than its sandbox: the kernel's boot arguments, its modules and symbols, the
/// host's disks and swap, the kernel build string. `/proc/self/mountinfo` (the engine's
/// overlay paths, the container id) is per process and cannot be masked: the README's threat
/// model lists it. gVisor shows none of these from the host.
pub const MASKED_PATHS: [&str; 17] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/proc/cmdline",
    "/proc/modules",
    "/proc/kallsyms",
    "/proc/partitions",
    "/proc/diskstats",
    "/proc/swaps",
    "/proc/version",
];
/// The only environment a program sees (the base image sets none of its own).
pub const ENVIRONMENT: [&str; 4] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/box",
    "TMPDIR=/box",
    "LANG=C.UTF-8",
];
/// Options of the empty, read-only tmpfs over `/tmp`.
const READ_ONLY_TMP: &str = "ro,nosuid,nodev,noexec,size=4k";
/// Sandboxes are the first thing the host's OOM killer should pick, never runbox or the engine.
const OOM_SCORE_ADJ: i64 = 1000;

pub const LABEL_MANAGED: &str = "runbox.managed";
pub const LABEL_KIND: &str = "runbox.kind";
pub const LABEL_ID: &str = "runbox.id";
pub const LABEL_LANGUAGE: &str = "runbox.language";
/// The engine's id in the cluster: an audit of every engine's containers names where each was.
pub const LABEL_ENGINE: &str = "runbox.engine";
/// The API node that made a container (several nodes on one Redis): the sweep of any node
/// removes the job and pool containers of a node whose heartbeat has lapsed.
pub const LABEL_NODE: &str = "runbox.node";

const MIB: i64 = 1024 * 1024;
/// Under gVisor the host's pids cgroup counts the sandbox kernel's own threads and, on the
/// ptrace platform, several host threads per sandboxed task (measured: 64 sleeping tasks hold
/// 542 host pids), and hitting it crashes the whole sandbox rather than failing a `fork`. The
/// host cap is therefore this many times the program's cap plus [`GVISOR_HOST_PIDS_BASE`],
/// and the program's own cap is `RLIMIT_NPROC`, which gVisor enforces per sandbox.
const GVISOR_HOST_PIDS_PER_TASK: i64 = 16;
const GVISOR_HOST_PIDS_BASE: i64 = 128;

/// What a sandbox is for; stored as a label so sweeps know who owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxKind {
    /// A throwaway sandbox created for the job that arrived (the pool had none ready).
    Job,
    /// A throwaway sandbox started ahead of time by the warm pool; it serves one job too.
    Pool,
    /// Built only to read an image's language version (or to measure the engine).
    Probe,
    /// A session's sandbox: lives across runs until deleted or expired.
    Session,
}

impl SandboxKind {
    pub fn label(self) -> &'static str {
        match self {
            SandboxKind::Job => "job",
            SandboxKind::Pool => "pool",
            SandboxKind::Probe => "probe",
            SandboxKind::Session => "session",
        }
    }
}

/// What a sandbox's main process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MainProcess {
    /// Sleeps; work arrives through execs.
    Idle,
    /// Sleeps as [`KEEPER_USER`], out of the programs' reach; work arrives through execs, and
    /// every program process can be ended between runs without ending the sandbox.
    Keeper,
    /// The runner, attached before start, which takes exactly one job on its stdin.
    Runner,
}

/// What one sandbox needs; the policy fills in everything else.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub kind: SandboxKind,
    /// runbox's id for the sandbox (job id): the container name and `runbox.id` label.
    pub id: String,
    pub image: String,
    pub language: String,
    pub memory_mb: u64,
    pub main: MainProcess,
    /// Size of the work dir when not `sandbox.work_dir_mb` (a session's is bigger).
    pub work_dir_mb: Option<u64>,
    /// More labels (`runbox.session.*`: what a restarted runbox needs to take a session back).
    pub labels: Vec<(String, String)>,
    /// A reused sandbox's compiler made ahead of each job in its nested sandbox (the
    /// language's `warm_compile` and the compile's memory cap in MiB; see `nested::SCRIPT`),
    /// for the job sandboxes of languages that have one; see [`SandboxSpec::warms_first`].
    pub warm_compiler: Option<Vec<String>>,
}

impl SandboxSpec {
    pub fn container_name(&self) -> String {
        format!("runbox-{}-{}", self.kind.label(), self.id)
    }

    /// Whether a reused sandbox's first job already finds a warm compiler: a pooled one is
    /// made ahead of its jobs, one made for a job is not waited on for that (it warms the
    /// compiler for the job after, if this one compiled).
    pub(super) fn warms_first(&self) -> bool {
        self.warm_compiler.is_some() && self.kind == SandboxKind::Pool
    }
}

/// Checks the sandbox settings against the policy: the program user must not be the keeper,
/// or a program could end the process that keeps its session alive.
pub fn validate(config: &SandboxConfig) -> Result<(), crate::config::ConfigError> {
    if config.user == KEEPER_USER {
        return Err(crate::config::ConfigError::Key {
            key: "sandbox.user".to_owned(),
            reason: format!("must differ from the keeper of long-lived sandboxes ({KEEPER_USER})"),
        });
    }
    Ok(())
}

/// The hardened container definition for `spec`.
pub fn container_body(config: &SandboxConfig, spec: &SandboxSpec) -> ContainerCreateBody {
    let memory = spec.memory_mb as i64 * MIB;
    let work_dir_bytes = spec.work_dir_mb.unwrap_or(config.work_dir_mb) as i64 * MIB;
    let (uid, gid) = config
        .user
        .split_once(':')
        .expect("config validation guarantees uid:gid");
    let tmpfs_options = format!(
        "rw,exec,nosuid,nodev,size={work_dir_bytes},nr_inodes={},uid={uid},gid={gid},mode=0700",
        config.work_dir_inodes
    );
    let ulimit = |name: &str, value: i64| ResourcesUlimits {
        name: Some(name.to_owned()),
        soft: Some(value),
        hard: Some(value),
    };
    let mut ulimits = vec![
        ulimit("nofile", config.nofile_limit),
        ulimit("fsize", work_dir_bytes),
        ulimit("core", 0),
    ];
    // Under runc all sandboxes share one uid, and RLIMIT_NPROC counts per uid across the host:
    // there the pids cgroup is the cap. gVisor has its own kernel per sandbox (see above).
    let host_pids_limit = if config.is_gvisor() {
        ulimits.push(ulimit("nproc", config.pids_limit));
        config.pids_limit * GVISOR_HOST_PIDS_PER_TASK + GVISOR_HOST_PIDS_BASE
    } else {
        config.pids_limit
    };
    let mut labels = HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_KIND.to_owned(), spec.kind.label().to_owned()),
        (LABEL_ID.to_owned(), spec.id.clone()),
        (LABEL_LANGUAGE.to_owned(), spec.language.clone()),
    ]);
    labels.extend(spec.labels.iter().cloned());
    let runner = spec.main == MainProcess::Runner;
    // A reused sandbox: its runner starts each job in a nested sandbox (see `nested`).
    let nested = runner && config.nested();
    let cmd: Vec<String> = match spec.main {
        MainProcess::Idle | MainProcess::Keeper => {
            IDLE_COMMAND.iter().map(|s| s.to_string()).collect()
        }
        MainProcess::Runner if nested => runner_shell(config)
            .iter()
            .map(|s| s.to_string())
            .chain([
                super::nested::SCRIPT.to_owned(),
                "runner".to_owned(),
                super::nested::job_filter().to_owned(),
                super::nested::masked_paths(),
                super::nested::SHIM.to_owned(),
                super::nested::warm_words(spec.warm_compiler.as_deref()),
                if spec.warms_first() { "1" } else { "" }.to_owned(),
            ])
            .chain(super::nested::launcher_args(config))
            .collect(),
        MainProcess::Runner => runner_shell(config)
            .iter()
            .map(|s| s.to_string())
            .chain(std::iter::once(super::runner::SCRIPT.to_owned()))
            .collect(),
    };
    let role = if nested {
        super::seccomp::Role::Launcher
    } else {
        super::seccomp::Role::Program
    };
    // The kernel refuses the nested sandbox a fresh /proc while parts of this one are covered:
    // a reused sandbox's runner sees them (`systempaths=unconfined`), each job has them masked
    // again by bubblewrap.
    let (masked_paths, readonly_paths) = if nested {
        (Vec::new(), Some(Vec::new()))
    } else {
        (MASKED_PATHS.iter().map(|p| p.to_string()).collect(), None)
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: Some(HOSTNAME.to_owned()),
        user: Some(match spec.main {
            MainProcess::Keeper => KEEPER_USER.to_owned(),
            MainProcess::Idle | MainProcess::Runner => config.user.clone(),
        }),
        env: Some(ENVIRONMENT.iter().map(|s| s.to_string()).collect()),
        cmd: Some(cmd),
        // The runner reads its job from the attached stdin, closed after the job's input.
        open_stdin: Some(runner),
        stdin_once: Some(runner),
        attach_stdin: Some(runner),
        attach_stdout: Some(runner),
        attach_stderr: Some(runner),
        // An image's own entrypoint never wraps our commands.
        entrypoint: Some(Vec::new()),
        working_dir: Some(WORK_DIR.to_owned()),
        network_disabled: Some(true),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec![
                "no-new-privileges".to_owned(),
                format!(
                    "seccomp={}",
                    super::seccomp::profile(seccomp_kernel(config), role)
                ),
            ]),
            readonly_rootfs: Some(true),
            masked_paths: Some(masked_paths),
            readonly_paths,
            tmpfs: Some(HashMap::from([
                (WORK_DIR.to_owned(), tmpfs_options),
                // gVisor mounts a writable, memory-backed /tmp of its own unless the container
                // names one; a read-only one keeps /tmp refused under every runtime.
                ("/tmp".to_owned(), READ_ONLY_TMP.to_owned()),
            ])),
            ipc_mode: Some("private".to_owned()),
            shm_size: Some(SHM_BYTES),
            memory: Some(memory),
            // Equal to the memory cap: no swap, so the cap is a real cap.
            memory_swap: Some(memory),
            nano_cpus: Some((config.cpus * 1e9) as i64),
            pids_limit: Some(host_pids_limit),
            ulimits: Some(ulimits),
            oom_score_adj: Some(OOM_SCORE_ADJ),
            init: Some(true),
            // The default json-file driver writes everything a program prints to the host disk.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".to_owned()),
                config: Some(HashMap::new()),
            }),
            runtime: Some(config.runtime.clone()),
            auto_remove: Some(false),
            privileged: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The same sandbox as `docker run` arguments (without `run` itself, the image and command), so
/// the benchmark compares against the docker CLI with exactly the flags the service uses.
/// Which kernel the sandbox's seccomp filter guards.
pub fn seccomp_kernel(config: &SandboxConfig) -> super::seccomp::Kernel {
    if config.is_gvisor() {
        super::seccomp::Kernel::Gvisor
    } else {
        super::seccomp::Kernel::Host
    }
}

/// The CLI reads a seccomp profile from a file: `seccomp_file` holds [`super::seccomp::profile`].
pub fn docker_run_flags(body: &ContainerCreateBody, seccomp_file: &std::path::Path) -> Vec<String> {
    let mut flags = vec!["--rm".to_owned()];
    let mut push = |flag: &str, value: String| flags.push(format!("{flag}={value}"));
    if let Some(h) = &body.hostname {
        push("--hostname", h.clone());
    }
    if let Some(u) = &body.user {
        push("--user", u.clone());
    }
    for e in body.env.iter().flatten() {
        push("--env", e.clone());
    }
    if let Some(w) = &body.working_dir {
        push("--workdir", w.clone());
    }
    for (k, v) in body.labels.iter().flatten() {
        push("--label", format!("{k}={v}"));
    }
    if let Some(hc) = &body.host_config {
        if let Some(n) = &hc.network_mode {
            push("--network", n.clone());
        }
        for c in hc.cap_drop.iter().flatten() {
            push("--cap-drop", c.clone());
        }
        for s in hc.security_opt.iter().flatten() {
            if s.starts_with("seccomp=") {
                push(
                    "--security-opt",
                    format!("seccomp={}", seccomp_file.display()),
                );
            } else {
                push("--security-opt", s.clone());
            }
        }
        if hc.readonly_rootfs == Some(true) {
            flags.push("--read-only".to_owned());
        }
        let mut push = |flag: &str, value: String| flags.push(format!("{flag}={value}"));
        for (path, options) in hc.tmpfs.iter().flatten() {
            push("--tmpfs", format!("{path}:{options}"));
        }
        if let Some(i) = &hc.ipc_mode {
            push("--ipc", i.clone());
        }
        if let Some(s) = hc.shm_size {
            push("--shm-size", s.to_string());
        }
        if let Some(m) = hc.memory {
            push("--memory", m.to_string());
        }
        if let Some(m) = hc.memory_swap {
            push("--memory-swap", m.to_string());
        }
        if let Some(c) = hc.nano_cpus {
            push("--cpus", format!("{}", c as f64 / 1e9));
        }
        if let Some(p) = hc.pids_limit {
            push("--pids-limit", p.to_string());
        }
        for u in hc.ulimits.iter().flatten() {
            if let (Some(n), Some(s), Some(h)) = (&u.name, u.soft, u.hard) {
                push("--ulimit", format!("{n}={s}:{h}"));
            }
        }
        if let Some(o) = hc.oom_score_adj {
            push("--oom-score-adj", o.to_string());
        }
        if hc.init == Some(true) {
            flags.push("--init".to_owned());
        }
        if let Some(l) = hc.log_config.as_ref().and_then(|l| l.typ.clone()) {
            flags.push(format!("--log-driver={l}"));
        }
        if let Some(r) = &hc.runtime {
            flags.push(format!("--runtime={r}"));
        }
    }
    flags
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_program_user_is_never_the_keeper() {
        assert!(validate(&config()).is_ok());
        let keeper = SandboxConfig {
            user: KEEPER_USER.to_owned(),
            ..config()
        };
        let err = validate(&keeper).unwrap_err().to_string();
        assert!(err.contains("sandbox.user"), "{err}");
    }

    fn config() -> SandboxConfig {
        test_config()
    }

    /// The shipped sandbox settings, for the unit tests of the sandbox layer.
    pub(crate) fn test_config() -> SandboxConfig {
        SandboxConfig {
            runtime: "runc".into(),
            output_limit_bytes: 65536,
            work_dir_mb: 64,
            work_dir_inodes: 4096,
            cpus: 1.0,
            pids_limit: 64,
            nofile_limit: 512,
            user: "65534:65534".into(),
            sweep_interval_secs: 60,
            reuse: crate::config::Reuse::Fresh,
            reuse_jobs: 100,
            reuse_max_age_secs: 300,
        }
    }

    fn spec() -> SandboxSpec {
        SandboxSpec {
            kind: SandboxKind::Job,
            id: "abc".into(),
            image: "runbox/python:latest".into(),
            language: "python".into(),
            memory_mb: 128,
            main: MainProcess::Runner,
            work_dir_mb: None,
            labels: Vec::new(),
            warm_compiler: None,
        }
    }

    #[test]
    fn every_hardening_setting_is_present() {
        let body = container_body(&config(), &spec());
        let hc = body.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        let security = hc.security_opt.as_ref().unwrap();
        assert_eq!(security[0], "no-new-privileges");
        assert_eq!(
            security[1],
            format!(
                "seccomp={}",
                crate::sandbox::seccomp::profile(
                    crate::sandbox::seccomp::Kernel::Host,
                    crate::sandbox::seccomp::Role::Program
                )
            )
        );
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.memory, Some(128 * MIB));
        assert_eq!(hc.memory_swap, hc.memory);
        assert_eq!(hc.pids_limit, Some(64));
        assert_eq!(hc.init, Some(true));
        assert_eq!(hc.log_config.as_ref().unwrap().typ.as_deref(), Some("none"));
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(body.hostname.as_deref(), Some(HOSTNAME));
        let tmpfs = &hc.tmpfs.as_ref().unwrap()[WORK_DIR];
        assert!(tmpfs.contains("nr_inodes=4096"), "{tmpfs}");
        assert!(tmpfs.contains(&format!("size={}", 64 * MIB)), "{tmpfs}");
        assert!(tmpfs.split(',').any(|o| o == "exec"), "{tmpfs}");
        let labels = body.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_KIND], "job");
        assert_eq!(labels[LABEL_ID], "abc");
        let ulimits: Vec<_> = hc
            .ulimits
            .iter()
            .flatten()
            .map(|u| u.name.clone())
            .collect();
        assert!(!ulimits.contains(&Some("nproc".into())), "{ulimits:?}");
    }

    #[test]
    fn under_gvisor_the_program_cap_is_nproc_and_the_host_cap_has_room() {
        let config = SandboxConfig {
            runtime: "runsc".into(),
            ..config()
        };
        let body = container_body(&config, &spec());
        let hc = body.host_config.as_ref().unwrap();
        let nproc = hc
            .ulimits
            .iter()
            .flatten()
            .find(|u| u.name.as_deref() == Some("nproc"))
            .expect("nproc ulimit under gVisor");
        assert_eq!((nproc.soft, nproc.hard), (Some(64), Some(64)));
        assert_eq!(hc.pids_limit, Some(64 * 16 + 128));
    }

    #[test]
    fn work_dir_fits_below_the_memory_cap_of_the_shipped_defaults() {
        // tmpfs pages are charged to the memory cgroup: a full work dir must not by itself
        // exhaust the smallest default memory cap.
        let c = config();
        assert!((c.work_dir_mb as i64 * MIB + SHM_BYTES) < 128 * MIB);
    }

    #[test]
    fn docker_run_flags_mirror_the_body() {
        let flags = docker_run_flags(
            &container_body(&config(), &spec()),
            std::path::Path::new("/tmp/profile.json"),
        );
        for expected in [
            "--network=none",
            "--cap-drop=ALL",
            "--read-only",
            "--security-opt=no-new-privileges",
            "--security-opt=seccomp=/tmp/profile.json",
            "--pids-limit=64",
            "--init",
            "--log-driver=none",
            "--user=65534:65534",
            "--cpus=1",
        ] {
            assert!(
                flags.iter().any(|f| f == expected),
                "{expected} in {flags:?}"
            );
        }
        assert!(flags.iter().any(|f| f.starts_with("--tmpfs=/box:")));
    }
}
