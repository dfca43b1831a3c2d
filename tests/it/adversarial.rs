//! The adversarial suite: what a hostile program does on day one, each case with the exact
//! status runbox must answer and a check that the host (the server, the engine) is fine after.
//!
//! Cases kept elsewhere because they measure a limit precisely: the memory bombs
//! (`limits::one_gib_allocation_exceeds_memory`, `limits::c_memory_bomb_exceeds_memory`), the
//! CPU spin (`limits::busy_loop_times_out_near_its_limit`), the output floods
//! (`limits::output_flood_is_cut_at_the_cap_quickly`, `limits::stderr_flood_counts_toward_the_same_cap`),
//! the python fork bomb (`limits::fork_bomb_ends_and_the_host_stays_responsive`), writes
//! outside the work dir (`limits::root_and_usr_are_read_only_and_the_work_dir_is_not`), the
//! capability sets (`limits::runs_as_non_root_without_capabilities`), unsafe file names
//! (`errors::bad_file_names`) and the seccomp profile on the container
//! (`hardening::live_container_has_every_hardening_setting`).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    TestApp, containers_with_labels, docker, nested_sandboxes, run_and_clean, run_in_session,
    session_id, shared, start_on_own_runtime, under_gvisor, wait_for_session_containers,
};

/// Runs a hostile job on the shared app, checks its container is removed, then that the
/// server still answers at once.
async fn hostile(body: Value) -> Value {
    let result = run_and_clean(body).await;
    assert_server_answers(shared()).await;
    result
}

async fn assert_server_answers(app: &TestApp) {
    let started = Instant::now();
    let health = reqwest::get(app.url("/healthz")).await.unwrap();
    assert!(health.status().is_success());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "healthz took {:?}",
        started.elapsed()
    );
}

fn stdout(result: &Value) -> &str {
    result["stdout"].as_str().unwrap()
}

/// The `errno E after N [unit]` line of a program that did something until it failed.
fn errno_after(result: &Value) -> (u32, u32) {
    let words: Vec<&str> = stdout(result).split_whitespace().collect();
    match words[..] {
        ["errno", errno, "after", n, ..] => (errno.parse().unwrap(), n.parse().unwrap()),
        _ => panic!("no `errno E after N` line: {result}"),
    }
}

#[tokio::test]
async fn fork_bomb_in_c_is_capped_and_times_out() {
    let r = hostile(json!({
        "language": "c",
        "code": "#include <unistd.h>\nint main(void){ for(;;) fork(); }",
        "timeout_ms": 2000
    }))
    .await;
    if under_gvisor() {
        // gVisor on its ptrace platform spends several host threads per task; the bomb can
        // exhaust the host-side pids cap, which ends the whole sandbox (runtime_error) before
        // the time limit. Either way it ends, and the host is fine (checked above).
        assert!(
            matches!(r["status"].as_str(), Some("timeout" | "runtime_error")),
            "{r}"
        );
    } else {
        assert_eq!(r["status"], "timeout", "{r}");
        assert_eq!(r["signal"], "SIGKILL");
    }
}

#[tokio::test]
async fn thread_bomb_stops_at_the_task_cap() {
    let r = hostile(json!({
        "language": "python",
        "code": "import threading, time\nn = 0\ntry:\n    while True:\n        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n        n += 1\nexcept RuntimeError:\n    print('threads', n)\n",
        "timeout_ms": 10000
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    let n: u32 = stdout(&r)
        .trim()
        .strip_prefix("threads ")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..64).contains(&n), "started {n} threads: {r}");
}

#[tokio::test]
async fn sleeping_past_the_wall_limit_times_out() {
    let started = Instant::now();
    let r = hostile(json!({
        "language": "python",
        "code": "import time\ntime.sleep(60)",
        "timeout_ms": 1000
    }))
    .await;
    assert_eq!(r["status"], "timeout", "{r}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_program_ignoring_sigterm_is_killed_at_the_limit() {
    let started = Instant::now();
    let r = hostile(json!({
        "language": "python",
        "code": "import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\nprint('trapped', flush=True)\nwhile True:\n    time.sleep(0.1)",
        "timeout_ms": 1000
    }))
    .await;
    assert_eq!(r["status"], "timeout", "{r}");
    assert_eq!(r["signal"], "SIGKILL");
    assert_eq!(r["stdout"], "trapped\n");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// `setsid`, `nohup` and a double fork, each leaving a `sleep` behind.
const DAEMONS: &str = "setsid sleep 301 &\nnohup sleep 302 >/dev/null 2>&1 &\n( sleep 303 & )\npython3 -c 'import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execvp(\"sleep\", [\"sleep\", \"304\"])'\nsleep 0.3\necho left four behind";

/// Processes of the container of job `id` (command lines), or `None` when it is stopped or
/// gone already.
async fn processes_of_job(id: &str) -> Option<Vec<String>> {
    let containers = containers_with_labels(&[format!("runbox.id={id}")]).await;
    let container = containers.first()?.id.clone()?;
    let top = docker()
        .await
        .top_processes(&container, None::<bollard::query_parameters::TopOptions>)
        .await
        .ok()?;
    let titles = top.titles.unwrap_or_default();
    let cmd = titles.iter().position(|t| t == "CMD" || t == "COMMAND")?;
    Some(
        top.processes
            .unwrap_or_default()
            .into_iter()
            .map(|p| p[cmd].clone())
            .collect(),
    )
}

#[tokio::test]
async fn daemons_are_gone_when_the_result_is_sent() {
    let r = shared()
        .run_ok(json!({ "language": "bash", "code": DAEMONS, "timeout_ms": 5000 }))
        .await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "left four behind\n");
    // Right after the answer, before the background removal: nothing but the container's
    // init and its idle runner may be running.
    if let Some(processes) = processes_of_job(r["id"].as_str().unwrap()).await {
        assert!(
            processes.iter().all(|p| !p.contains("sleep 30")),
            "{processes:?}"
        );
    }
    crate::common::assert_removed(r["id"].as_str().unwrap()).await;
    assert_server_answers(shared()).await;
}

#[tokio::test]
async fn daemons_of_a_timed_out_job_are_gone_when_the_result_is_sent() {
    let code = format!("{DAEMONS}\nsleep 60");
    let r = shared()
        .run_ok(json!({ "language": "bash", "code": code, "timeout_ms": 1500 }))
        .await;
    assert_eq!(r["status"], "timeout", "{r}");
    if let Some(processes) = processes_of_job(r["id"].as_str().unwrap()).await {
        assert!(processes.is_empty(), "{processes:?}");
    }
    crate::common::assert_removed(r["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn daemons_left_in_a_session_are_gone_before_the_next_run() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "bash").await;
    let (status, first) = run_in_session(
        &app,
        &id,
        json!({ "language": "bash", "code": DAEMONS, "timeout_ms": 5000 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["status"], "success", "{first}");
    // The next run sees every process in the sandbox: none of the four sleeps is left.
    let (_, second) = run_in_session(
        &app,
        &id,
        json!({ "language": "bash", "code": "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo" }),
    )
    .await;
    assert_eq!(second["status"], "success", "{second}");
    assert!(!stdout(&second).contains("sleep 30"), "{second}");
    assert_server_answers(&app).await;
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn one_enormous_line_is_cut_at_the_cap() {
    let r = hostile(json!({
        "language": "python",
        "code": "import sys\nsys.stdout.write('x' * 50_000_000)",
        "timeout_ms": 10000
    }))
    .await;
    assert_eq!(r["status"], "output_limit_exceeded", "{}", &r["status"]);
    assert_eq!(r["truncated"], true);
    assert_eq!(stdout(&r).len(), 65536);
    assert!(stdout(&r).bytes().all(|b| b == b'x'));
}

#[tokio::test]
async fn binary_and_invalid_utf8_output_arrives_as_valid_text() {
    let r = hostile(json!({
        "language": "python",
        "code": "import sys\nsys.stdout.buffer.write(bytes(range(256)) + b'\\xe2\\x82')\nsys.stderr.buffer.write(b'\\x00\\xc3(\\xff')",
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    let mut bytes: Vec<u8> = (0..=255).collect();
    bytes.extend_from_slice(b"\xe2\x82");
    assert_eq!(stdout(&r), String::from_utf8_lossy(&bytes));
    assert_eq!(
        r["stderr"].as_str().unwrap(),
        String::from_utf8_lossy(b"\x00\xc3(\xff")
    );
}

#[tokio::test]
async fn filling_the_work_dir_fails_with_enospc() {
    let r = hostile(json!({
        "language": "python",
        "code": "n = 0\ntry:\n    while True:\n        with open(f'f{n}', 'wb') as f:\n            f.write(b'x' * (1 << 20))\n        n += 1\nexcept OSError as e:\n    print('errno', e.errno, 'after', n, 'MiB')",
        "memory_mb": 256,
        "timeout_ms": 15000
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    let (errno, mib) = errno_after(&r);
    assert_eq!(errno, 28, "{r}");
    assert!(mib <= 64, "{r}");
}

#[tokio::test]
async fn filling_the_inodes_fails_with_enospc() {
    let r = hostile(json!({
        "language": "python",
        "code": "import os\nn = 0\ntry:\n    while True:\n        os.mkdir(f'd{n}')\n        n += 1\nexcept OSError as e:\n    print('errno', e.errno, 'after', n)",
        "timeout_ms": 15000
    }))
    .await;
    if under_gvisor() {
        // gVisor's tmpfs has no inode cap: the directories fill the sandbox's memory, which
        // is the bound there (see docs/API.md, "Runtimes").
        assert_eq!(r["status"], "memory_limit_exceeded", "{r}");
        return;
    }
    assert_eq!(r["status"], "success", "{r}");
    let (errno, n) = errno_after(&r);
    assert_eq!(errno, 28, "{r}");
    assert!(n <= 4096, "{r}");
}

#[tokio::test]
async fn dev_shm_is_private_and_capped() {
    let r = hostile(json!({
        "language": "python",
        "code": "n = 0\ntry:\n    with open('/dev/shm/fill', 'wb') as f:\n        while True:\n            f.write(b'x' * (1 << 20))\n            f.flush()\n            n += 1\nexcept OSError as e:\n    print('errno', e.errno, 'after', n, 'MiB')",
        "timeout_ms": 10000
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    let (errno, mib) = errno_after(&r);
    assert_eq!(errno, 28, "{r}");
    assert!(mib <= 16, "{r}");
}

#[tokio::test]
async fn opening_files_without_end_stops_at_the_file_cap() {
    let r = hostile(json!({
        "language": "python",
        "code": "files = []\ntry:\n    while True:\n        files.append(open('/dev/null'))\nexcept OSError as e:\n    print('errno', e.errno, 'after', len(files))",
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    let (errno, n) = errno_after(&r);
    assert_eq!(errno, 24, "{r}");
    assert!(n < 512, "{r}");
}

/// The host's address on its default route (where a program would reach the host from a
/// bridged container).
fn host_address() -> String {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("192.0.2.1:9").unwrap();
    socket.local_addr().unwrap().ip().to_string()
}

#[tokio::test]
async fn no_network_egress_of_any_kind() {
    let port = shared().base.rsplit(':').next().unwrap().to_owned();
    let targets = [
        ("172.17.0.1".to_owned(), "2375".to_owned()),
        (host_address(), port.clone()),
        ("1.1.1.1".to_owned(), "443".to_owned()),
    ];
    let code = format!(
        "import socket, errno\n\
         for host, port in {targets:?}:\n\
         \x20   try:\n\
         \x20       socket.create_connection((host, int(port)), timeout=2)\n\
         \x20       print(host, 'connected')\n\
         \x20   except OSError as e:\n\
         \x20       print(host, errno.errorcode.get(e.errno, e.errno))\n\
         try:\n\
         \x20   socket.create_connection(('127.0.0.1', {port}), timeout=2)\n\
         \x20   print('own loopback connected')\n\
         except OSError as e:\n\
         \x20   print('own loopback', errno.errorcode.get(e.errno, e.errno))\n\
         try:\n\
         \x20   socket.getaddrinfo('deb.debian.org', 80)\n\
         \x20   print('dns resolved')\n\
         except OSError:\n\
         \x20   print('dns failed')\n\
         for name, family, kind, proto in [('raw', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), ('packet', socket.AF_PACKET, socket.SOCK_RAW, 0)]:\n\
         \x20   try:\n\
         \x20       socket.socket(family, kind, proto)\n\
         \x20       print(name, 'opened')\n\
         \x20   except OSError as e:\n\
         \x20       print(name, errno.errorcode.get(e.errno, e.errno))\n"
    );
    let r = hostile(json!({ "language": "python", "code": code, "timeout_ms": 15000 })).await;
    assert_eq!(r["status"], "success", "{r}");
    let out = stdout(&r);
    // With no route at all the host kernel says "network unreachable"; gVisor's network
    // stack says "host unreachable".
    let unreachable = if under_gvisor() {
        "EHOSTUNREACH"
    } else {
        "ENETUNREACH"
    };
    for (host, _) in &targets {
        assert!(
            out.contains(&format!("{host} {unreachable}")),
            "{host}: {out}"
        );
    }
    // 127.0.0.1 is the sandbox's own loopback, where nothing listens: not runbox's port.
    assert!(out.contains("own loopback ECONNREFUSED"), "{out}");
    assert!(out.contains("dns failed"), "{out}");
    assert!(out.contains("raw EPERM"), "{out}");
    assert!(out.contains("packet EPERM"), "{out}");
}

#[tokio::test]
async fn no_engine_socket_no_host_paths() {
    let r = hostile(json!({
        "language": "python",
        "code": "import os, errno\nfor p in ['/var/run/docker.sock', '/run/docker.sock', '/var/lib/docker', '/host', '/run/containerd']:\n    try:\n        os.stat(p)\n        print(p, 'exists')\n    except OSError as e:\n        print(p, errno.errorcode[e.errno])\nprint(open('/etc/hostname').read().strip())\nprint(sorted(os.listdir('/box')))",
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    let out = stdout(&r);
    for path in [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/lib/docker",
        "/host",
        "/run/containerd",
    ] {
        assert!(out.contains(&format!("{path} ENOENT")), "{path}: {out}");
    }
    assert!(out.contains("\nrunbox\n"), "{out}");
}

#[tokio::test]
async fn other_sandboxes_are_out_of_sight() {
    // Sandbox A leaves a marker in its work dir, in /dev/shm and in its command line, and
    // stays up; sandbox B looks for it everywhere it could.
    let marker = format!("marker{}", uuid::Uuid::new_v4().simple());
    let a = tokio::spawn(shared().run_ok(json!({
        "language": "bash",
        "code": format!("echo {marker} > /box/{marker}; echo {marker} > /dev/shm/{marker}; exec -a {marker} sleep 6"),
        "timeout_ms": 10000
    })));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = hostile(json!({
        "language": "python",
        "code": format!("import os\nmarker = '{marker}'\nfound = []\nfor d in ['/box', '/dev/shm', '/tmp']:\n    try:\n        found += [f'{{d}}/{{f}}' for f in os.listdir(d) if marker in f]\n    except OSError:\n        pass\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n        try:\n            if marker in open(f'/proc/{{p}}/cmdline').read():\n                found.append(p)\n        except OSError:\n            pass\nprint('found', found)"),
    }))
    .await;
    assert_eq!(stdout(&b), "found []\n", "{b}");
    let a = a.await.unwrap();
    assert_eq!(a["status"], "success", "{a}");
}

#[tokio::test]
async fn privilege_escalation_fails() {
    let code = r#"
import ctypes, errno, os, socket, stat, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    r = libc.syscall(*args)
    print(name, 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()])
call('unshare', 272, 0x10000000)            # CLONE_NEWUSER
call('mount', 165, b'none', b'/box', b'tmpfs', 0, None)
call('ptrace', 101, 0, 0, 0, 0)              # PTRACE_TRACEME
call('keyctl', 250, 0, -3, 0)                # KEYCTL_GET_KEYRING_ID, session keyring
call('io_uring_setup', 425, 1, ctypes.create_string_buffer(120))
call('bpf', 321, 0, None, 0)
try:
    socket.socket(40, socket.SOCK_STREAM)   # AF_VSOCK
    print('vsock ok')
except OSError as e:
    print('vsock', errno.errorcode[e.errno])
status = open('/proc/self/status').read()
print('nonewprivs', [l.split()[1] for l in status.splitlines() if l.startswith('NoNewPrivs')])
open('suid', 'w').close()
os.chmod('suid', 0o4755)
print('chmod u+s', bool(os.stat('suid').st_mode & stat.S_ISUID), 'uid', os.getuid())
su = subprocess.run(['su', '-c', 'id -u', 'root'], stdin=subprocess.DEVNULL, capture_output=True, text=True)
print('su', su.returncode != 0, su.stdout.strip() != '0')
"#;
    let r = hostile(json!({ "language": "python", "code": code })).await;
    assert_eq!(r["status"], "success", "{r}");
    let out = stdout(&r);
    for call in [
        "unshare",
        "mount",
        "ptrace",
        "keyctl",
        "io_uring_setup",
        "bpf",
    ] {
        assert!(out.contains(&format!("{call} EPERM")), "{call}: {out}");
    }
    // gVisor ignores a seccomp rule's own errno (see the seccomp profile): EPERM there.
    let vsock = if under_gvisor() {
        "EPERM"
    } else {
        "EAFNOSUPPORT"
    };
    assert!(out.contains(&format!("vsock {vsock}")), "{out}");
    // gVisor's /proc/self/status has no NoNewPrivs line (the flag is still set by runsc).
    let nonewprivs = if under_gvisor() { "[]" } else { "['1']" };
    assert!(out.contains(&format!("nonewprivs {nonewprivs}")), "{out}");
    // Setting the bit on one's own file works and means nothing: the work dir is nosuid and
    // the file belongs to the sandbox user.
    assert!(out.contains("chmod u+s True uid 65534"), "{out}");
    assert!(out.contains("su True True"), "{out}");
}

#[tokio::test]
async fn planted_symlinks_do_not_redirect_the_next_runs_files() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "bash").await;
    let (_, first) = run_in_session(
        &app,
        &id,
        json!({ "language": "bash", "code": "ln -s /etc/passwd notes.txt; ln -s /etc conf; ln -s /etc/passwd main.sh; echo planted" }),
    )
    .await;
    assert_eq!(first["stdout"], "planted\n", "{first}");
    let (status, second) = run_in_session(
        &app,
        &id,
        json!({
            "language": "bash",
            "files": [
                { "name": "main.sh", "content": "cat notes.txt; cat conf/x.txt; test -L notes.txt && echo still-a-link; grep -c runbox /etc/passwd" },
                { "name": "notes.txt", "content": "mine\n" },
                { "name": "conf/x.txt", "content": "also mine\n" }
            ]
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The links were replaced by the submitted files, inside the work dir.
    assert_eq!(second["stdout"], "mine\nalso mine\n0\n", "{second}");
    assert_server_answers(&app).await;
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn nul_bytes_in_code_are_the_programs_problem() {
    // The file reaches the sandbox byte for byte; what a NUL means is the language's business
    // (Python 3.11 reads a source file up to its first NUL).
    let r = hostile(json!({ "language": "python", "code": "print('a')\n\u{0}print('b')" })).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "a\n");
    let r = hostile(json!({ "language": "bash", "code": "printf 'x\\0y' | wc -c" })).await;
    assert_eq!(r["stdout"], "3\n", "{r}");
}

#[tokio::test]
async fn stdin_over_the_cap_is_refused_and_below_it_is_delivered() {
    // On an app of its own, so that its count of created sandboxes is this test's alone.
    let app = start_on_own_runtime(&[]);
    let too_big = "x".repeat(2 << 20);
    let (status, body) = app
        .run(json!({ "language": "python", "code": "print(1)", "input": too_big }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(app.server.executor.sandboxes().created_count(), 0);
    assert_server_answers(&app).await;
    app.server.shutdown().await.unwrap();
    let big = "y".repeat(900 << 10);
    let read = hostile(json!({
        "language": "python",
        "code": "import sys\nprint(len(sys.stdin.read()))",
        "input": big
    }))
    .await;
    assert_eq!(
        read["stdout"],
        format!("{}\n", 900 << 10),
        "{}",
        read["status"]
    );
    // A program that never reads its stdin is not held up by it.
    let unread =
        hostile(json!({ "language": "python", "code": "print('ignored')", "input": big })).await;
    assert_eq!(unread["status"], "success", "{}", unread["status"]);
    assert_eq!(unread["stdout"], "ignored\n");
}

/// A program that reads its parent's (the runner's) memory for the trailer's nonce and
/// writes every candidate as a trailer with status 0, then goes on for 3 s and exits 7.
const TRAILER_FORGER: &str = r#"
import os, re, sys, time
ppid = os.getppid()
found = set()
try:
    with open(f'/proc/{ppid}/maps') as maps, open(f'/proc/{ppid}/mem', 'rb', 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if 'r' not in perms or 'w' not in perms:
                continue
            start, end = (int(x, 16) for x in span.split('-'))
            try:
                mem.seek(start)
                found.update(re.findall(rb'[0-9a-f]{32}', mem.read(end - start)))
            except OSError:
                pass
    print('read the runner', flush=True)
except OSError as err:
    print('refused', err.errno, flush=True)
for nonce in found:
    for stream in (sys.stdout.buffer, sys.stderr.buffer):
        stream.write(b'\x1e' + nonce + b' 0\n')
        stream.flush()
time.sleep(3)
print('late', flush=True)
sys.exit(7)
"#;

#[tokio::test]
async fn a_program_cannot_forge_the_runners_trailer() {
    let r =
        hostile(json!({ "language": "python", "code": TRAILER_FORGER, "timeout_ms": 10000 })).await;
    assert_eq!(r["status"], "runtime_error", "{r}");
    assert_eq!(r["exit_code"], 7, "{r}");
    if nested_sandboxes() {
        // The program's parent is bubblewrap's init in the job's own pid namespace: the
        // runner, which holds the nonce, is not even visible there.
        assert!(stdout(&r).starts_with("read the runner"), "{r}");
    } else {
        assert!(stdout(&r).starts_with("refused"), "{r}");
    }
    assert!(stdout(&r).ends_with("late\n"), "{r}");
    assert!(r["duration_ms"].as_u64().unwrap() >= 3000, "{r}");
}

#[tokio::test]
async fn stderr_holds_only_what_the_program_wrote_when_a_signal_ends_it() {
    for (signal, name) in [
        ("SIGSEGV", "SIGSEGV"),
        ("SIGKILL", "SIGKILL"),
        ("SIGABRT", "SIGABRT"),
    ] {
        let code = format!(
            "import os, signal, sys\nsys.stderr.write('mine\\n')\nsys.stderr.flush()\nos.kill(os.getpid(), signal.{signal})"
        );
        let r = hostile(json!({ "language": "python", "code": code })).await;
        assert_eq!(r["status"], "runtime_error", "{r}");
        assert_eq!(r["signal"], name, "{r}");
        assert_eq!(r["stderr"], "mine\n", "{r}");
    }
    // A command that does not exist is reported by the program's own shell, as locally.
    let r = hostile(json!({ "language": "bash", "code": "no-such-command-here" })).await;
    assert_eq!(r["exit_code"], 127, "{r}");
    assert!(
        r["stderr"]
            .as_str()
            .unwrap()
            .contains("no-such-command-here: command not found"),
        "{r}"
    );
}

#[tokio::test]
async fn a_child_killed_for_memory_is_reported_under_every_runtime() {
    // The parent outlives the child the OOM killer ends and exits 0.
    let code = "import subprocess, sys\nprint('before', flush=True)\nchild = subprocess.run([sys.executable, '-c', 'b = bytearray(1 << 30)'])\nprint('child', child.returncode, flush=True)";
    let r = hostile(json!({ "language": "python", "code": code, "memory_mb": 128 })).await;
    assert_eq!(r["status"], "memory_limit_exceeded", "{r}");
    assert!(stdout(&r).starts_with("before\n"), "{r}");
    assert!(r["memory_kb"].as_u64().is_some(), "{r}");
    if !under_gvisor() {
        // runc: the parent lived on to say so and to exit 0.
        assert_eq!(stdout(&r), "before\nchild -9\n", "{r}");
        assert_eq!(r["exit_code"], 0, "{r}");
    }
}

#[tokio::test]
async fn host_boot_arguments_and_disks_are_masked() {
    let host_cmdline = std::fs::read_to_string("/proc/cmdline").unwrap();
    let host_version = std::fs::read_to_string("/proc/version").unwrap();
    let r = hostile(json!({
        "language": "bash",
        "code": "for f in cmdline version modules partitions diskstats swaps; do printf '%s=' $f; cat /proc/$f 2>/dev/null | wc -c; done; cat /proc/cmdline /proc/version 2>/dev/null",
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    let out = stdout(&r);
    if !host_cmdline.trim().is_empty() {
        assert!(!out.contains(host_cmdline.trim()), "{out}");
    }
    assert!(!out.contains(host_version.trim()), "{out}");
    if !under_gvisor() {
        // runc binds /dev/null over each.
        for file in [
            "cmdline",
            "version",
            "modules",
            "partitions",
            "diskstats",
            "swaps",
        ] {
            assert!(out.contains(&format!("{file}=0\n")), "{out}");
        }
    }
}
