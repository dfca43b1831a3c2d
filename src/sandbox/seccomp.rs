//! runbox's own seccomp profile, applied to every sandbox.
//!
//! The engine's default profile (Docker 20.10) still allows `io_uring_setup` and
//! `socket(AF_VSOCK)` under runc: io_uring has been a steady source of kernel escapes and runs
//! its work outside the syscall path that seccomp sees, and vsock reaches the hypervisor side of
//! a VM host. This profile is an allowlist of the native architecture's system calls that an
//! unprivileged program may need; everything else fails with `EPERM`. With every capability
//! dropped, the calls that only root may make (mount, module loading, clock setting, ...) would
//! fail anyway: they are denied here as well, so that a kernel bug in their permission checks is
//! out of reach too.
//!
//! Only the native architecture is listed: a 32-bit (`int 0x80`) or x32 system call does not
//! match the filter's architecture and is refused, closing the compat-syscall attack surface.

use std::sync::OnceLock;

use serde_json::{Value, json};

/// `EPERM`: what a denied call returns, as the engine's default profile does.
const EPERM: u32 = 1;
/// `ENOSYS` for `clone3`: its flags live in memory where seccomp cannot inspect them, so it is
/// answered "not implemented" and the C library falls back to `clone`, whose flags are checked.
const ENOSYS: u32 = 38;
/// `EAFNOSUPPORT` for `socket(AF_VSOCK, ...)`: what a kernel without vsock answers.
const EAFNOSUPPORT: u32 = 97;
/// Address family number of vsock.
const AF_VSOCK: u64 = 40;
/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
/// | CLONE_NEWNET`: `clone` may create threads and processes, never namespaces (the same reason
/// `unshare` and `setns` are denied: user namespaces hand an unprivileged user capabilities).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// `personality` values a program may set: Linux (0), 32-bit addresses (`PER_LINUX32`), the
/// 2.6 uname (`UNAME26`), both, and the query (`0xffffffff`). Not `ADDR_NO_RANDOMIZE` and kin,
/// which would switch off address-space randomisation.
const PERSONALITY_VALUES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Denied, each for a reason (a name unknown to the architecture is skipped by the runtime):
/// - io_uring: a kernel attack surface that bypasses seccomp for the work it queues;
/// - namespaces, mounts, root changes: `unshare`, `setns`, `mount`, `umount2`, `pivot_root`,
///   `chroot`, and the new mount API (`fsopen` .. `mount_setattr`, `open_tree`);
/// - other processes' memory and state: `ptrace`, `process_vm_readv`/`writev`, `kcmp`,
///   `pidfd_getfd`, `process_madvise`;
/// - the kernel keyring (`add_key`, `keyctl`, `request_key`): not namespaced;
/// - kernel modules, kexec, `bpf`, `perf_event_open`, `userfaultfd` (a staple of exploit
///   races), `syslog`, `lookup_dcookie`, `fanotify_init`;
/// - file handles (`open_by_handle_at`: the classic container escape, `name_to_handle_at`);
/// - clocks, host name, swap, reboot, accounting, quotas, NUMA policy, I/O ports, LDT;
/// - `memfd_secret`, `landlock_*`, and calls that no longer exist (`uselib`, `ustat`, ...).
#[rustfmt::skip]
pub const DENIED: &[&str] = &[
    "acct", "add_key", "afs_syscall", "bpf", "chroot", "clock_adjtime", "clock_settime",
    "create_module", "delete_module", "fanotify_init", "finit_module", "fsconfig", "fsmount",
    "fsopen", "fspick", "get_kernel_syms", "get_mempolicy", "getpmsg", "init_module",
    "io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lookup_dcookie", "mbind", "memfd_secret", "modify_ldt", "mount",
    "mount_setattr", "move_mount", "move_pages", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pidfd_getfd", "pivot_root",
    "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace", "putpmsg",
    "query_module", "quotactl", "quotactl_fd", "reboot", "request_key", "security",
    "set_mempolicy", "set_mempolicy_home_node", "setdomainname", "sethostname", "setns",
    "settimeofday", "swapoff", "swapon", "sysfs", "_sysctl", "syslog", "tuxcall", "umount2",
    "unshare", "uselib", "userfaultfd", "ustat", "vhangup", "vserver",
];

/// Allowed without conditions (x86_64 and aarch64 names; `clone`, `socket` and `personality`
/// are allowed with conditions, `clone3` is answered `ENOSYS`, see [`profile`]).
#[rustfmt::skip]
pub const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "arch_prctl", "bind", "brk", "capget",
    "capset", "chdir", "chmod", "chown", "clock_getres", "clock_gettime", "clock_nanosleep",
    "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit",
    "exit_group", "faccessat", "faccessat2", "fadvise64", "fallocate", "fanotify_mark", "fchdir",
    "fchmod", "fchmodat", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr",
    "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate",
    "futex", "futex_waitv", "futimesat", "get_robust_list", "get_thread_area", "getcpu", "getcwd",
    "getdents", "getdents64", "getegid", "geteuid", "getgid", "getgroups", "getitimer",
    "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
    "getresgid", "getresuid", "getrlimit", "getrusage", "getsid", "getsockname", "getsockopt",
    "gettid", "gettimeofday", "getuid", "getxattr", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents",
    "io_pgetevents", "io_setup", "io_submit", "ioctl", "ioprio_get", "ioprio_set", "kill",
    "lchown", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "lremovexattr",
    "lseek", "lsetxattr", "lstat", "madvise", "membarrier", "memfd_create", "migrate_pages",
    "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
    "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend",
    "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "nanosleep", "newfstatat", "open", "openat", "openat2", "pause",
    "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "poll", "ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease",
    "pselect6", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat",
    "readv", "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages", "removexattr", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_tgsigqueueinfo", "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    "seccomp", "select", "semctl", "semget", "semop", "semtimedop", "sendfile", "sendmmsg",
    "sendmsg", "sendto", "set_robust_list", "set_thread_area", "set_tid_address", "setfsgid",
    "setfsuid", "setgid", "setgroups", "setitimer", "setpgid", "setpriority", "setregid",
    "setresgid", "setresuid", "setreuid", "setrlimit", "setsid", "setsockopt", "setuid",
    "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "socketpair", "splice", "stat", "statfs", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create",
    "timerfd_gettime", "timerfd_settime", "times", "tkill", "truncate", "umask", "uname", "unlink",
    "unlinkat", "utime", "utimensat", "utimes", "vfork", "vmsplice", "wait4", "waitid", "write",
    "writev",
];

/// The seccomp architecture name of the machine runbox runs on.
fn native_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "SCMP_ARCH_AARCH64",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "s390x" => "SCMP_ARCH_S390X",
        "powerpc64" => "SCMP_ARCH_PPC64LE",
        _ => "SCMP_ARCH_X86_64",
    }
}

/// Which kernel the filter stands in front of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The host's (runc).
    Host,
    /// gVisor's (runsc `--oci-seccomp`), which applies the filter inside its own kernel. It
    /// ignores `errnoRet` (every denied call gets `EPERM`), so `clone3` cannot be answered
    /// `ENOSYS` there and is allowed: the C library would not fall back to `clone` on `EPERM`,
    /// and namespaces made inside gVisor are gVisor's own, out of the host kernel's reach.
    Gvisor,
}

/// What bubblewrap needs to make a job's nested sandbox (see `nested`), allowed in a reused
/// sandbox only: namespaces (`unshare`, and `clone` with any flags), and the mounts and root
/// change of the new mount namespace. The job's own filter refuses all of them again.
pub const LAUNCHER_ALLOWED: &[&str] = &["unshare", "mount", "umount2", "pivot_root", "chroot"];

/// Who runs under the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The program itself (a fresh sandbox, a session).
    Program,
    /// The runner of a reused sandbox, which starts each program in a nested sandbox.
    Launcher,
}

/// The profile in the engine's JSON format, built once per kernel and role.
pub fn profile(kernel: Kernel, role: Role) -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    static GVISOR: OnceLock<String> = OnceLock::new();
    static HOST_LAUNCHER: OnceLock<String> = OnceLock::new();
    static GVISOR_LAUNCHER: OnceLock<String> = OnceLock::new();
    let cell = match (kernel, role) {
        (Kernel::Host, Role::Program) => &HOST,
        (Kernel::Gvisor, Role::Program) => &GVISOR,
        (Kernel::Host, Role::Launcher) => &HOST_LAUNCHER,
        (Kernel::Gvisor, Role::Launcher) => &GVISOR_LAUNCHER,
    };
    cell.get_or_init(|| build(native_architecture(), kernel, role).to_string())
}

fn build(architecture: &str, kernel: Kernel, role: Role) -> Value {
    let argument = |value: u64, op: &str| json!({"index": 0, "value": value, "op": op});
    let clone = match role {
        Role::Program => json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                      "op": "SCMP_CMP_MASKED_EQ"}],
        }),
        Role::Launcher => json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW"}),
    };
    let mut rules = vec![
        json!({"names": ALLOWED, "action": "SCMP_ACT_ALLOW"}),
        clone,
        match kernel {
            Kernel::Host => {
                json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
            }
            Kernel::Gvisor => json!({"names": ["clone3"], "action": "SCMP_ACT_ALLOW"}),
        },
        json!({
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [argument(AF_VSOCK, "SCMP_CMP_NE")],
        }),
        json!({
            "names": ["socket"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EAFNOSUPPORT,
            "args": [argument(AF_VSOCK, "SCMP_CMP_EQ")],
        }),
    ];
    if role == Role::Launcher {
        rules.push(json!({"names": LAUNCHER_ALLOWED, "action": "SCMP_ACT_ALLOW"}));
    }
    // Conditions within one rule must all hold, so each allowed value is a rule of its own.
    rules.extend(PERSONALITY_VALUES.iter().map(|&value| {
        json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [argument(value, "SCMP_CMP_EQ")],
        })
    }));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": [architecture],
        "syscalls": rules,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn no_call_is_both_allowed_and_denied() {
        let denied: HashSet<_> = DENIED.iter().collect();
        let both: Vec<_> = ALLOWED.iter().filter(|n| denied.contains(n)).collect();
        assert!(both.is_empty(), "{both:?}");
        for conditional in ["clone", "clone3", "socket", "personality"] {
            assert!(!ALLOWED.contains(&conditional) && !DENIED.contains(&conditional));
        }
    }

    #[test]
    fn io_uring_and_namespaces_are_denied() {
        for name in [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "unshare",
            "setns",
            "mount",
            "ptrace",
            "keyctl",
            "bpf",
            "userfaultfd",
            "open_by_handle_at",
        ] {
            assert!(DENIED.contains(&name), "{name}");
        }
    }

    #[test]
    fn vsock_sockets_fail_and_other_sockets_are_allowed() {
        let profile = build("SCMP_ARCH_X86_64", Kernel::Host, Role::Program);
        let socket_rules: Vec<&Value> = profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"] == json!(["socket"]))
            .collect();
        assert_eq!(socket_rules.len(), 2);
        assert_eq!(socket_rules[0]["action"], "SCMP_ACT_ALLOW");
        assert_eq!(socket_rules[0]["args"][0]["op"], "SCMP_CMP_NE");
        assert_eq!(socket_rules[1]["errnoRet"], EAFNOSUPPORT);
        assert_eq!(socket_rules[1]["args"][0]["value"], AF_VSOCK);
    }

    #[test]
    fn only_the_native_architecture_and_a_denying_default() {
        for kernel in [Kernel::Host, Kernel::Gvisor] {
            let profile: Value = serde_json::from_str(profile(kernel, Role::Program)).unwrap();
            assert_eq!(profile["architectures"].as_array().unwrap().len(), 1);
            assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
            assert_eq!(profile["defaultErrnoRet"], EPERM);
        }
    }

    #[test]
    fn only_a_launcher_may_make_namespaces_and_mounts() {
        let allowed = |role| {
            let profile = build("SCMP_ARCH_X86_64", Kernel::Host, role);
            let mut names = Vec::new();
            for rule in profile["syscalls"].as_array().unwrap() {
                if rule["action"] == "SCMP_ACT_ALLOW" && rule.get("args").is_none() {
                    for name in rule["names"].as_array().unwrap() {
                        names.push(name.as_str().unwrap().to_owned());
                    }
                }
            }
            names
        };
        let program = allowed(Role::Program);
        let launcher = allowed(Role::Launcher);
        for name in LAUNCHER_ALLOWED.iter().chain(&["clone"]) {
            assert!(!program.iter().any(|n| n == name), "{name}");
            assert!(launcher.iter().any(|n| n == name), "{name}");
        }
        // Nothing else is added: io_uring, ptrace, keyctl, bpf stay refused.
        for name in [
            "io_uring_setup",
            "ptrace",
            "keyctl",
            "bpf",
            "setns",
            "sethostname",
        ] {
            assert!(!launcher.iter().any(|n| n == name), "{name}");
        }
    }

    #[test]
    fn clone3_falls_back_to_clone_on_the_host_and_is_gvisors_own_under_gvisor() {
        let clone3 = |kernel| {
            build("SCMP_ARCH_X86_64", kernel, Role::Program)["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["names"] == json!(["clone3"]))
                .cloned()
                .unwrap()
        };
        assert_eq!(clone3(Kernel::Host)["errnoRet"], ENOSYS);
        assert_eq!(clone3(Kernel::Gvisor)["action"], "SCMP_ACT_ALLOW");
    }
}
