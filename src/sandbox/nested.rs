//! Reused sandboxes: a warm container serves jobs one at a time, each inside a fresh nested
//! sandbox made by bubblewrap (`bwrap`, Debian's package, in every language image).
//!
//! Why: the engine creates about 6–15 containers a second on a 2-core machine (≈150 ms of
//! engine CPU each), so one container per job caps throughput there and makes every job wait
//! for a refill under load. A bubblewrap sandbox costs ~4 ms (measured: python hello world 17
//! ms in bwrap vs 13 ms without, in a warm container).
//!
//! What a job gets, fresh each time (see [`launcher_args`]): new user, pid, mount, IPC, UTS,
//! network and cgroup namespaces; its own `/proc` (with the engine's masked paths masked again
//! and `/proc/sys` read-only), `/dev` and `/dev/shm`; the work dir a new, empty directory of
//! the container's tmpfs (its size and inode caps stay the container's) bound at `/box`; no
//! capabilities; no further user namespaces (`--disable-userns`); and a seccomp filter of its
//! own ([`job_filter`]) on top of the container's, refusing every call the launcher needed that
//! the container's filter refuses for a fresh container. When the job's first process ends,
//! its pid namespace ends with it (whatever it forked), the work dir is deleted, and the runner
//! looks for anything left (see [`SCRIPT`]).
//!
//! What the container must allow for that ([`super::seccomp::profile`] with `launcher`):
//! `unshare`/`clone` with namespace flags, `mount`, `umount2`, `pivot_root` and `chroot`, and
//! the engine's masked `/proc` paths unmasked (`systempaths=unconfined`): the kernel refuses a
//! fresh `/proc` in a new user + pid namespace while parts of the outer one are covered
//! ("mount too revealing", bubblewrap #284, #505, #738). Only the runner and bwrap ever run
//! with that view; the job's view is masked again, no wider than a fresh container's.

use std::sync::OnceLock;

use base64::Engine as _;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

use super::policy::{ENVIRONMENT, MASKED_PATHS, SHM_BYTES, WORK_DIR};
use crate::config::SandboxConfig;

/// `EPERM`, what a refused call returns (as in the container's own filter).
const EPERM: u32 = 1;
/// Every `CLONE_NEW*` flag: a job's `clone` may make threads and processes, not namespaces.
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// The runner of a reused sandbox: its main process, which takes jobs on its attached stdin
/// one after another, each run by bwrap in a fresh nested sandbox. The fresh runner's rules
/// hold (see `runner::SCRIPT`): bash builtins read the header byte by byte, the runner's copy
/// of bash is unreadable (non-dumpable), the program's stderr is fd 3, and the trailer opens
/// with a per-job nonce the program never sees: the program is in its own pid namespace and
/// cannot see the runner at all.
///
/// Arguments: `$1` the job filter (base64 of the BPF program), `$2` the paths to mask again
/// (those that exist here are masked: a file by `/dev/null`, a directory by an empty read-only
/// tmpfs), `$3` the [`SHIM`], `$4` the warm compiler's argv as words ([`warm_words`]; empty:
/// none), `$5` `1` when the first job's sandbox is to have it (a pooled sandbox), then bwrap's
/// own arguments. A file is masked as the engine masks it, by binding
/// `/dev/null` over it; bwrap's `--ro-bind` would add `nodev`, and the file could not even be
/// read (a program reading `/proc/cmdline` would fail where it reads nothing in a container).
///
/// The work dir of a job's nested sandbox, as the container sees it (the job sees it at
/// `/box`).
pub const JOB_DIR: &str = "/box/job";

/// One job on stdin: `<nonce>\n<step>\n<archive length>\n<stdin length>\n<argc>\n`, argc
/// NUL-terminated arguments, the tar archive (unpacked into a new work dir: a job's first
/// step has one), then the step's stdin. A length written `=<length>` is read by the runner's
/// builtins: for the files, one small file's name, NUL and content instead of an archive; for
/// the stdin, a small one without NUL (see `runner::encode_nested`). A stdin length of -1 means the rest of the stream is
/// the program's stdin (an interactive run), after which the runner takes nothing more. A
/// `compile` step that succeeds keeps its work dir for the steps that follow: `pack` (the work
/// dir as a tar on stdout, for the compile cache; no program, no nested sandbox) and `run`; a
/// `run` step, or a failed one, ends with the work dir deleted. A `run-keep` step is a run
/// whose work dir is kept when it ends clean (whatever its exit status), for `tool` steps
/// (runbox's argv run here, as the sandbox user, next to it: listing and reading the files
/// the program wrote) and then a `discard` step, which deletes it as a run would have.
///
/// Trailers, on stdout `\x1e<nonce> <status>` and on stderr `\x1e<nonce> <status> <health>`,
/// where health is `ok`, `dirty:<what>` (a process or the work dir of the job was left, or the
/// work dir could not be made or filled) or `launcher` (bwrap could not make the sandbox: it
/// reported no exit code).
/// After anything but `ok` the runner takes no more jobs. After every step but a compile that
/// succeeded (whose work dir the run step needs), the trailers go out first, then the runner
/// deletes the work dir, looks for anything left, and says `\x1e<nonce> ready <health>` on
/// stderr: the answer to the client does not wait for the cleanup (~3 ms: every program start
/// costs ~1.5 ms on this 2-core VM), and the sandbox takes no job before it is ready.
///
/// Right after it says ready (and once at its start) the runner makes the next job's nested
/// sandbox, whose first process, the [`SHIM`], waits for the argv: bwrap's 6–9 ms are spent
/// while the sandbox waits, not while the next job does. Every such sandbox is made exactly
/// like one made for the job, before anything of the job is known. A step that cannot use it
/// (a live stdin, the run step after a compile) gets a sandbox made then, as before.
pub const SCRIPT: &str = r#"exec 3>&2 2>/dev/null
# `read -N` counts bytes, not characters (the shell's own locale; nothing it starts sees it).
LC_ALL=C
printf '%s' "$1" | base64 -d > /box/.filter || exit 125
# Pipes nobody writes: `read -t` on .idle is a sleep without a process; .argv carries the next
# job's argv to the sandbox made for it ahead of time; a warm compiler says on .warmed that it
# is warm.
mkfifo /box/.idle /box/.argv /box/.warmed \
  && exec 9<> /box/.idle 8<> /box/.argv 10<> /box/.warmed || exit 125
masks=()
for p in $2; do
  if [ -d "$p" ]; then masks+=(--tmpfs "$p" --remount-ro "$p")
  elif [ -e "$p" ]; then masks+=(--dev-bind /dev/null "$p"); fi
done
shim=$3
# The warm compiler's argv, in words (none: every sandbox made ahead runs the shim).
read -r -a warm <<< "$4"
# Whether the next sandbox made ahead runs the warm compiler: at first when `$5` says so (a
# pooled sandbox: made ahead of its jobs), then while jobs begin with a compile (compile cache
# misses). After one that did not (a hit) the shim: a compiler warmed for nobody costs ~0.65 s
# of CPU.
warm_next=$5 warms_first=$5
shift 5
launch=("$@" "${masks[@]}")
work=/box/job
waiting= waiting_warm=
# Whether anything of the job is left but the runner and init: bwrap returns once the job's
# first process has ended, while the kernel is still ending the rest of its pid namespace,
# so up to 200 ms are given.
tidy() {
  local round p pid left
  for ((round = 0; round < 100; round++)); do
    left=
    for p in /proc/[0-9]*; do
      pid=${p#/proc/}
      [ "$pid" = 1 ] || [ "$pid" = "$$" ] || left=$pid
    done
    [ -z "$left" ] && return
    read -r -t 0.002 -u 9
  done
  health=dirty:process-left
}
# The argv as one line of single-quoted words for the shim's `eval` (a quote as '\'', a
# newline as '"$N"'), in $line.
shim_line() {
  local arg
  line=
  for arg in "$@"; do
    arg=${arg//"'"/"'\\''"}
    line+=" '${arg//$'\n'/"'\"\$N\"'"}'"
  done
}
# The job's files into a new work dir: one small file by builtins (`=<length>`: its name,
# NUL, its content), else a tar archive (512-byte records: tar reads exactly up to the
# archive's end, the two zero blocks runbox's archives end with, so the stdin that follows is
# untouched). Each program start costs ~1.5 ms here, so no separate `head` and `mkdir`.
unpack() {
  local name content=
  if [ -n "$archive_file" ]; then
    IFS= read -r -d '' name || return 1
    ((archive_len == 0)) || IFS= read -r -N "$archive_len" content || return 1
    { [ -d "$work" ] || mkdir "$work"; } && printf '%s' "$content" > "$work/$name"
  elif ((archive_len > 0)); then
    tar -x -m -b 1 -f - -C /box --transform 's,^,job/,' 2>&3
  fi
}
# The next job's nested sandbox, made now: bwrap's 6-9 ms leave the job's path. Its first
# process is the shim, which waits on .argv for the job's argv and then execs it; its stdin
# is .stdin, which the job's stdin is written into (the same file) before the argv is sent.
# Returns once bwrap has started the shim (at most ~200 ms; a bwrap that fails shows at the
# job, as a launcher failure).
# With a warm compiler (and warm_next), its first process is that compiler instead, which
# takes only its own compile (argc on a line, then NUL-terminated arguments); returns once it
# says it is warm (at most 3 s). One that died on the way is not waited on again: the shim
# from then on.
launch_next() {
  local round line
  mkdir "$work" 2>/dev/null || return
  : > /box/.stdin
  : > /box/.status
  if [ -n "$warm_next" ] && ((${#warm[@]})); then
    # A word left by a compiler that outlived an earlier wait is not this one's.
    while read -r -t 0 -u 10; do IFS= read -r -t 0.01 -u 10 line; done
    bwrap "${launch[@]}" --bind "$work" /box -- "${warm[@]}" \
      < /box/.stdin 4> /box/.warmed 7< /box/.argv 5< /box/.filter 6> /box/.status \
      2>&3 3>&- 8>&- 9>&- 10>&- &
    waiting=$! waiting_warm=1
    IFS= read -r -t 3 -u 10 line
    kill -0 "$waiting" 2>/dev/null && return
    wait "$waiting"
    warm=() waiting= waiting_warm=
  fi
  bwrap "${launch[@]}" --bind "$work" /box -- /bin/dash -c "$shim" shim \
    < /box/.stdin 7< /box/.argv 5< /box/.filter 6> /box/.status 2>&3 3>&- 8>&- 9>&- 10>&- &
  waiting=$! waiting_warm=
  for ((round = 0; round < 200; round++)); do
    IFS= read -r line < /box/.status
    case $line in *'"child-pid"'*) return ;; esac
    read -r -t 0.001 -u 9
  done
}
# Whether the sandbox made ahead can take this step: the shim any argv, a warm compiler only
# the compile it is for, while it lives.
takes_ready_made() {
  [ -z "$waiting_warm" ] \
    || { [ "$step" = compile ] && [ "${argv[0]}" = "${warm[0]}" ] && kill -0 "$waiting" 2>/dev/null; }
}
# After the sandbox made ahead has ended: whatever it did not read of .argv (it died first) is
# no later one's.
drain_argv() {
  local rest
  while read -r -t 0 -u 8; do IFS= read -r -d '' -t 0.01 -u 8 rest; done
}
launch_next
# A pooled sandbox with a warm compiler is at rest once the first one is warm: runbox waits for
# this before it measures the memory the sandbox holds at rest (without `warm`: the compiler
# died on the way, and the shim waits instead).
[ -n "$warms_first" ] && printf '\036start ready ok%s\n' "${waiting_warm:+ warm}" >&3
while :; do
  IFS= read -r nonce || exit 0
  read -r step || exit 125
  read -r archive_len || exit 125
  read -r stdin_len || exit 125
  # `=<length>`: written with builtins (one small file named first, a small stdin).
  archive_file=; [[ $archive_len == =* ]] && archive_file=1 archive_len=${archive_len#=}
  stdin_inline=; [[ $stdin_len == =* ]] && stdin_inline=1 stdin_len=${stdin_len#=}
  read -r argc || exit 125
  argv=()
  for ((i = 0; i < argc; i++)); do
    IFS= read -r -d '' arg || exit 125
    argv+=("$arg")
  done
  if [ "$step" = pack ] || [ "$step" = tool ]; then
    if [ "$step" = pack ]; then
      # The work dir a compile left, out on stdout for the compile cache: read here by tar
      # as the sandbox user (links are archived as links, never followed).
      tar -c -b 1 -f - -C "$work" . 2>/dev/null
    else
      "${argv[@]}" < /dev/null 2>/dev/null 3>&- 8>&- 9>&- 10>&-
    fi
    status=$?
    printf '\036%s %d\n' "$nonce" "$status"
    printf '\036%s %d ok\n' "$nonce" "$status" >&3
    continue
  fi
  health=ok
  status=125
  if [ "$step" = discard ]; then
    status=0
  elif ! unpack; then
    # What is left of the files and the stdin is unread: this runner is out of step.
    echo "runbox: the program's files could not be written to the work dir" >&3
    health=dirty:files-not-unpacked
  elif [ ! -d "$work" ] && ! mkdir "$work" 2>/dev/null; then
    health=dirty:work-dir-not-made
  else
    if [ -n "$stdin_inline" ]; then
      input=
      ((stdin_len == 0)) || IFS= read -r -N "$stdin_len" input
      printf '%s' "$input" > /box/.stdin
      input=
    elif ((stdin_len > 0)); then
      head -c "$stdin_len" > /box/.stdin
    fi
    # A job's first step meets the sandbox made ahead: the next one gets a warm compiler
    # when this step is a compile.
    if [ -n "$waiting" ]; then
      if [ "$step" = compile ]; then warm_next=1; else warm_next=; fi
    fi
    if [ -n "$waiting" ] && ((stdin_len >= 0)) && takes_ready_made; then
      # The sandbox made after the last job takes this step.
      if [ -n "$waiting_warm" ]; then
        printf '%d\n' "${#argv[@]}" >&8
        printf '%s\0' "${argv[@]}" >&8
      else
        shim_line "${argv[@]}"
        printf '%s\n' "$line" >&8
      fi
      wait "$waiting"
      status=$?
      drain_argv
    else
      # A live stdin (the runner's own), a step after the first, or one the warm compiler is
      # not for: a sandbox made now. One made ahead is told to end (an empty line).
      if [ -n "$waiting" ]; then
        printf '\n' >&8
        wait "$waiting"
        drain_argv
      fi
      if ((stdin_len >= 0)); then exec 4< /box/.stdin; else exec 4<&0; fi
      : > /box/.status
      bwrap "${launch[@]}" --bind "$work" /box -- "${argv[@]}" <&4 4<&- 5< /box/.filter 6> /box/.status 2>&3 3>&- 8>&- 9>&- 10>&-
      status=$?
      exec 4<&-
    fi
    waiting= waiting_warm=
    : > /box/.stdin
    health=launcher
    while IFS= read -r line; do
      case $line in *'"exit-code"'*) health=ok ;; esac
    done < /box/.status
  fi
  if [ "$health" = ok ] && ((stdin_len >= 0)) \
    && { [ "$step" = run-keep ] || { [ "$step" = compile ] && ((status == 0)); }; }; then
    # The run step (or the tool steps) follow at once in this work dir: look for what was
    # left first.
    tidy
    printf '\036%s %d\n' "$nonce" "$status"
    printf '\036%s %d %s\n' "$nonce" "$status" "$health" >&3
  else
    # The result goes out first; the work dir is deleted while runbox answers, and the
    # sandbox takes no job before it says ready.
    ((stdin_len < 0)) && [ "$health" = ok ] && health=spent
    printf '\036%s %d\n' "$nonce" "$status"
    printf '\036%s %d %s\n' "$nonce" "$status" "$health" >&3
    [ "$health" = ok ] || exec sleep infinity
    rm -rf "$work" 2> /dev/null || { chmod -R u+rwX "$work"; rm -rf "$work"; } 2> /dev/null
    [ -e "$work" ] && health=dirty:work-dir-left
    tidy
    # A warm compiler before ready: the sandbox is at rest (and its memory measured) once it
    # is warm.
    [ "$health" = ok ] && [ -n "$warm_next" ] && ((${#warm[@]})) && launch_next
    printf '\036%s ready %s%s\n' "$nonce" "$health" "${waiting_warm:+ warm}" >&3
    # After ready, not before: the sandbox is back in the pool at once, and a job that comes
    # while the next sandbox is being made waits for it here, no longer than it would have.
    # Made before ready, it kept every sandbox out of the pool ~8 ms longer.
    [ "$health" = ok ] && [ -z "$waiting" ] && launch_next
  fi
  [ "$health" = ok ] || exec sleep infinity
done"#;

/// The first process of a job's nested sandbox made ahead of the job (see [`SCRIPT`]), a
/// `dash` script: reads the job's argv on fd 7 as one line of single-quoted words (a newline
/// in an argument as `'"$N"'`) and execs it by `eval`; an empty line ends it. The program gets
/// exactly the sandbox's environment, which bwrap set (`--clearenv`, `--setenv`): dash adds
/// only `PWD`, unset here (bash would add `SHLVL` to whatever it execs, and `env` to clear it
/// cost one more program start, ~1.2 ms). It runs under the job's seccomp filter, as the job's
/// user, like the program.
pub const SHIM: &str = "N='\n'\n\
IFS= read -r line <&7 || exit 125\n\
exec 7<&-\n\
[ -n \"$line\" ] || exit 0\n\
unset PWD OLDPWD\n\
eval \"exec$line\"";

/// A warm compiler's argv as the runner takes it (`$4`): words joined by spaces (the catalogue
/// allows no space or quote in them), empty for none.
pub fn warm_words(argv: Option<&[String]>) -> String {
    argv.map(|words| words.join(" ")).unwrap_or_default()
}

/// The paths masked again inside a job's sandbox: the container's own list.
pub fn masked_paths() -> String {
    MASKED_PATHS.join(" ")
}

/// bwrap's arguments for every job (the work dir's bind, the masks and the program follow).
/// fd 5 is the job filter and fd 6 bwrap's status (see [`SCRIPT`]).
pub fn launcher_args(config: &SandboxConfig) -> Vec<String> {
    let (uid, gid) = config
        .user
        .split_once(':')
        .expect("config validation guarantees uid:gid");
    let mut args: Vec<String> = [
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        // Writable in a fresh /proc only to the host's root, but read-only as in a container.
        "--ro-bind",
        "/proc/sys",
        "/proc/sys",
        "--dev",
        "/dev",
        "--size",
        &SHM_BYTES.to_string(),
        "--tmpfs",
        "/dev/shm",
        "--unshare-user",
        "--uid",
        uid,
        "--gid",
        gid,
        "--disable-userns",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--chdir",
        WORK_DIR,
        "--seccomp",
        "5",
        "--json-status-fd",
        "6",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for variable in ENVIRONMENT {
        let (name, value) = variable.split_once('=').expect("NAME=value");
        args.extend(["--setenv".to_owned(), name.to_owned(), value.to_owned()]);
    }
    args
}

/// The job's own seccomp filter, as the BPF program bwrap loads (`struct sock_filter` array in
/// native byte order), base64: refuses making namespaces, joining them, and every mount call.
/// Everything else passes on to the container's filter, which still applies (filters stack, the
/// strictest answer wins).
pub fn job_filter() -> &'static str {
    static FILTER: OnceLock<String> = OnceLock::new();
    FILTER.get_or_init(|| base64::engine::general_purpose::STANDARD.encode(job_filter_bpf()))
}

fn job_filter_bpf() -> Vec<u8> {
    let refused = [
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
    ];
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        refused.iter().map(|&nr| (nr, Vec::new())).collect();
    // One rule per flag: the rules of a call are alternatives, and any one flag refuses it.
    let clone_rules = CLONE_NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let condition = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .expect("a valid condition");
            SeccompRule::new(vec![condition]).expect("a valid rule")
        })
        .collect();
    rules.insert(libc::SYS_clone, clone_rules);
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .expect("an architecture seccompiler knows");
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(EPERM),
        arch,
    )
    .expect("a valid filter");
    let program: seccompiler::BpfProgram = filter.try_into().expect("a filter that compiles");
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_keeps_jobs_where_the_file_tools_look() {
        assert!(SCRIPT.contains(&format!("\nwork={JOB_DIR}\n")));
    }

    #[test]
    fn the_job_filter_is_a_whole_bpf_program() {
        let bpf = job_filter_bpf();
        assert_eq!(bpf.len() % 8, 0);
        // Far below the kernel's 4096 instructions.
        assert!(bpf.len() / 8 < 200, "{} instructions", bpf.len() / 8);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(job_filter())
            .unwrap();
        assert_eq!(decoded, bpf);
    }

    #[test]
    fn the_shim_runs_exactly_the_argv_the_runner_sends_with_exactly_its_environment() {
        // The runner's own quoting, taken from the script, and the shim, run by the shells
        // the images have (bash and dash are in every Debian).
        let start = SCRIPT.find("shim_line() {").unwrap();
        let end = start + SCRIPT[start..].find("\n}\n").unwrap() + 3;
        let quoting = &SCRIPT[start..end];
        let argv = [
            "/bin/sh",
            "-c",
            "printf '%s\\0' \"$@\"; tr '\\0' '\\n' < /proc/$$/environ",
            "prog",
            "it's",
            "a\nb\n",
            "$HOME `id` $(id)",
            "\"q\" \\ '' \\'",
            "",
            " spaced ",
        ];
        let runner = format!(
            "{quoting}\nshim_line \"$@\"\nprintf '%s\\n' \"$line\" | env -i A=1 /bin/dash -c \"$SHIM\" shim 7<&0"
        );
        let out = std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg(&runner)
            .arg("runner")
            .args(argv)
            .env("SHIM", SHIM)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut expected: Vec<u8> = Vec::new();
        for arg in &argv[4..] {
            expected.extend_from_slice(arg.as_bytes());
            expected.push(0);
        }
        // The environment the program started with is the shim's: nothing added (no PWD,
        // no SHLVL).
        expected.extend_from_slice(b"A=1\n");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&expected)
        );
        // An empty line ends the shim without running anything.
        let out = std::process::Command::new("/bin/dash")
            .arg("-c")
            .arg(SHIM)
            .arg("shim")
            .stdin(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "no line at all: {out:?}");
        let ended = std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg("echo | /bin/dash -c \"$SHIM\" shim 7<&0; echo \"ended $?\"")
            .env("SHIM", SHIM)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&ended.stdout), "ended 0\n");
    }

    #[test]
    fn a_job_gets_every_namespace_new_and_no_capability() {
        let config = SandboxConfig {
            reuse: crate::config::Reuse::Nested,
            ..crate::sandbox::policy::tests::test_config()
        };
        let args = launcher_args(&config);
        for flag in [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag}");
        }
        let after = |flag: &str| {
            let at = args.iter().position(|a| a == flag).unwrap();
            args[at + 1].clone()
        };
        assert_eq!(after("--cap-drop"), "ALL");
        assert_eq!(after("--uid"), "65534");
        assert_eq!(after("--chdir"), WORK_DIR);
        assert_eq!(after("--seccomp"), "5");
        // The fresh /proc comes before the read-only /proc/sys bound over it.
        let proc_at = args.iter().position(|a| a == "--proc").unwrap();
        let sys_at = args.iter().position(|a| a == "/proc/sys").unwrap();
        assert!(proc_at < sys_at);
        assert!(masked_paths().contains("/proc/kcore"));
    }
}
