//! Limits and isolation: what a hostile or broken program runs into.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{run_and_clean, shared, under_gvisor};

#[tokio::test]
async fn busy_loop_times_out_near_its_limit() {
    let started = Instant::now();
    let r = run_and_clean(
        json!({ "language": "python", "code": "while True: pass", "timeout_ms": 1000 }),
    )
    .await;
    assert_eq!(r["status"], "timeout", "{r}");
    assert_eq!(r["signal"], "SIGKILL");
    assert_eq!(r["exit_code"], json!(null));
    let duration = r["duration_ms"].as_u64().unwrap();
    assert!(
        (1000..1500).contains(&duration),
        "reported {duration} ms for a 1000 ms limit"
    );
    let elapsed = started.elapsed();
    // CPU time is measured when the limit hits; the loop cannot have used more CPU than the
    // wall time the request took on its one-CPU quota.
    let cpu = r["cpu_time_ms"].as_u64().unwrap();
    assert!(
        cpu >= 500 && cpu as u128 <= elapsed.as_millis(),
        "cpu {cpu} ms in {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "answered in {elapsed:?}");
}

#[tokio::test]
async fn a_cpu_time_limit_ends_busy_processes_together_and_spares_a_sleeper() {
    // Two processes spinning share one CPU-time budget: the limit is the sandbox's, not each
    // process's (a per-process RLIMIT_CPU would let each run its full limit).
    let started = Instant::now();
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import os\nos.fork()\nwhile True: pass",
        "timeout_ms": 10000,
        "cpu_time_ms": 700,
    }))
    .await;
    assert_eq!(r["status"], "timeout", "{r}");
    assert_eq!(r["signal"], "SIGKILL", "{r}");
    let cpu = r["cpu_time_ms"].as_u64().unwrap();
    assert!(
        (700..1500).contains(&cpu),
        "cpu {cpu} ms for a 700 ms limit: {r}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ended by the CPU limit, not the 10 s wall clock: {:?}",
        started.elapsed()
    );
    // Sleeping uses no CPU: a CPU limit far below the wall time it sleeps does not end it.
    // (Under gVisor the sandbox's own kernel is charged too: python's start alone costs about
    // 400 ms of CPU there, so the limit leaves room for it.)
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import time\ntime.sleep(2.5)\nprint('awake')",
        "timeout_ms": 6000,
        "cpu_time_ms": 1200,
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "awake\n");
    assert!(r["duration_ms"].as_u64().unwrap() >= 2500, "{r}");
}

#[tokio::test]
async fn output_before_a_timeout_is_kept() {
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import sys, time\nprint('before the hang')\nsys.stdout.flush()\nprint('to stderr', file=sys.stderr)\ntime.sleep(60)",
        "timeout_ms": 1000
    }))
    .await;
    assert_eq!(r["status"], "timeout", "{r}");
    assert_eq!(r["stdout"], "before the hang\n");
    assert_eq!(r["stderr"], "to stderr\n");
}

#[tokio::test]
async fn c_timeout_with_output() {
    let r = run_and_clean(json!({
        "language": "c",
        "code": "#include <stdio.h>\n#include <unistd.h>\nint main(void){ printf(\"partial\\n\"); fflush(stdout); for(;;) sleep(1); }",
        "timeout_ms": 1000
    }))
    .await;
    assert_eq!(r["status"], "timeout", "{r}");
    assert_eq!(r["stdout"], "partial\n");
    assert_eq!(r["compile"]["status"], "success");
}

#[tokio::test]
async fn one_gib_allocation_exceeds_memory() {
    let r = run_and_clean(json!({
        "language": "python",
        "code": "x = bytearray(1 << 30)\nprint('allocated', len(x))",
        "memory_mb": 128
    }))
    .await;
    assert_eq!(r["status"], "memory_limit_exceeded", "{r}");
    assert_eq!(r["stdout"], "", "the allocation never completed");
    assert_eq!(r["signal"], "SIGKILL");
}

#[tokio::test]
async fn c_memory_bomb_exceeds_memory() {
    let r = run_and_clean(json!({
        "language": "c",
        "code": "#include <stdlib.h>\n#include <string.h>\nint main(void){ for(;;){ char *p = malloc(1<<20); if(!p) return 2; memset(p, 1, 1<<20); } }",
        "memory_mb": 64
    }))
    .await;
    assert_eq!(r["status"], "memory_limit_exceeded", "{r}");
}

#[tokio::test]
async fn output_flood_is_cut_at_the_cap_quickly() {
    let started = Instant::now();
    let r = run_and_clean(
        json!({ "language": "python", "code": "while True:\n    print('y' * 1000)" }),
    )
    .await;
    assert_eq!(r["status"], "output_limit_exceeded", "{r}");
    assert_eq!(r["truncated"], true);
    let stdout = r["stdout"].as_str().unwrap();
    assert_eq!(stdout.len(), 64 * 1024, "exactly the first 64 KiB are kept");
    assert!(stdout.starts_with(&"y".repeat(1000)));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn stderr_flood_counts_toward_the_same_cap() {
    // C with blocking writes: its memory stays flat, so the output cap is the only limit it can
    // reach. (Node queues writes to a full pipe in memory; on a loaded machine it can fill its
    // memory cap before 64 KiB have reached runbox, and then memory_limit_exceeded is the limit
    // it really hit first.) One line on stdout first: both streams share the cap. The two
    // streams are separate pipes, so the cap may be reached on stderr before that line
    // arrives; whatever arrived counts.
    let r = run_and_clean(json!({
        "language": "c",
        "code": "#include <stdio.h>\n#include <string.h>\nint main(void){ char e[1000]; memset(e, 'e', sizeof e); puts(\"start\"); fflush(stdout); for(;;) fwrite(e, 1, sizeof e, stderr); }"
    }))
    .await;
    let stdout = r["stdout"].as_str().unwrap();
    let stderr = r["stderr"].as_str().unwrap();
    assert_eq!(
        r["status"],
        "output_limit_exceeded",
        "{}",
        &r.to_string()[..400]
    );
    assert!(stdout.is_empty() || stdout == "start\n", "{stdout:?}");
    assert!(stderr.bytes().all(|b| b == b'e'));
    assert_eq!(stdout.len() + stderr.len(), 64 * 1024);
}

#[tokio::test]
async fn fork_bomb_ends_and_the_host_stays_responsive() {
    let app = shared();
    let bomb = tokio::spawn(run_and_clean(json!({
        "language": "python",
        "code": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "timeout_ms": 3000
    })));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // While the bomb runs, the server (and the host under it) still answers at once.
    let started = Instant::now();
    let health = reqwest::get(app.url("/healthz")).await.unwrap();
    assert!(health.status().is_success());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "healthz took {:?}",
        started.elapsed()
    );
    let r = bomb.await.unwrap();
    assert!(
        matches!(
            r["status"].as_str(),
            Some("timeout") | Some("runtime_error")
        ) || (under_gvisor() && r["status"] == "memory_limit_exceeded"),
        "the bomb ended: {r}"
    );
    // And a normal job right after runs normally.
    let r = run_and_clean(json!({ "language": "python", "code": "print('still fine')" })).await;
    assert_eq!(r["stdout"], "still fine\n");
}

#[tokio::test]
async fn pids_are_capped() {
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import os, time\nn = 0\ntry:\n    for _ in range(1000):\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('fork failed after', n)\n",
        "timeout_ms": 5000
    }))
    .await;
    let stdout = r["stdout"].as_str().unwrap();
    let n: u32 = stdout
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or(9999);
    if under_gvisor() && r["status"] == "memory_limit_exceeded" {
        // Under gVisor the sandbox kernel's own memory counts toward the cap: the python
        // forks can use it up before they reach the task cap. Either bound ends them.
        return;
    }
    assert!(n < 64, "forked {n} processes: {r}");
}

#[tokio::test]
async fn network_is_unreachable() {
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('failed', e.errno)\ntry:\n    socket.getaddrinfo('deb.debian.org', 80)\n    print('resolved')\nexcept OSError:\n    print('no dns')\nimport os\nprint(sorted(os.listdir('/sys/class/net')))"
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    let out = r["stdout"].as_str().unwrap();
    assert!(out.starts_with("failed "), "{out}");
    assert!(out.contains("no dns"), "{out}");
    assert!(out.contains("['lo']"), "only loopback exists: {out}");
}

#[tokio::test]
async fn root_and_usr_are_read_only_and_the_work_dir_is_not() {
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import os\nfor p in ['/x', '/usr/x', '/tmp/x', '/etc/passwd']:\n    try:\n        open(p, 'a').write('x')\n        print(p, 'written')\n    except OSError as e:\n        print(p, 'refused', e.errno)\nopen('/box/mine', 'w').write('ok')\nprint(open('mine').read())"
    }))
    .await;
    let out = r["stdout"].as_str().unwrap();
    for path in ["/x", "/usr/x", "/tmp/x", "/etc/passwd"] {
        assert!(out.contains(&format!("{path} refused")), "{path}: {out}");
    }
    assert!(out.ends_with("ok\n"), "{out}");
}

#[tokio::test]
async fn runs_as_non_root_without_capabilities() {
    let r = run_and_clean(json!({
        "language": "c",
        "code": "#include <stdio.h>\n#include <unistd.h>\nint main(void){ printf(\"%d %d\\n\", getuid(), geteuid()); FILE *f = fopen(\"/proc/self/status\", \"r\"); char l[256]; while (fgets(l, sizeof l, f)) if (l[0]=='C' && l[1]=='a' && l[2]=='p') fputs(l, stdout); return 0; }"
    }))
    .await;
    let out = r["stdout"].as_str().unwrap();
    assert!(out.starts_with("65534 65534\n"), "{out}");
    for line in out.lines().skip(1).filter(|l| !l.starts_with("CapBnd")) {
        assert!(
            line.ends_with("0000000000000000"),
            "no capabilities: {line}"
        );
    }
    assert!(
        out.contains("CapBnd:\t0000000000000000"),
        "bounding set empty: {out}"
    );
}

#[tokio::test]
async fn work_dir_is_size_and_inode_capped() {
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import os\ntry:\n    with open('big', 'wb') as f:\n        for _ in range(200):\n            f.write(b'x' * (1 << 20))\n    print('wrote 200 MiB')\nexcept OSError as e:\n    print('size capped', e.errno)\nos.remove('big')\nn = 0\ntry:\n    while True:\n        open(f'f{n}', 'w').close()\n        n += 1\nexcept OSError as e:\n    print('inodes capped', n < 5000)",
        "memory_mb": 256,
        "timeout_ms": 15000
    }))
    .await;
    if under_gvisor() {
        // gVisor's tmpfs has no inode cap (the sandbox's memory bounds the files instead), and
        // writing 200 MiB on its ptrace platform can outlast the time limit.
        assert!(
            matches!(
                r["status"].as_str(),
                Some("memory_limit_exceeded" | "timeout")
            ),
            "{r}"
        );
        return;
    }
    let out = r["stdout"].as_str().unwrap();
    assert!(out.contains("size capped"), "{r}");
    assert!(out.contains("inodes capped True"), "{r}");
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_hold_the_result() {
    // The runner reports the program's end itself: a child that keeps the output open (and
    // would keep an exec's stream open until the time limit) does not delay the response.
    let started = Instant::now();
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import subprocess\nsubprocess.Popen(['sleep', '30'])\nprint('parent done')",
        "timeout_ms": 10000
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "parent done\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn output_that_looks_like_the_runners_trailer_is_just_output() {
    let forged = "\u{1e}00000000000000000000000000000000 0\n";
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import sys\nforged = '\\x1e' + '0' * 32 + ' 0\\n'\nsys.stdout.write(forged)\nsys.stderr.write(forged)\nsys.exit(4)",
    }))
    .await;
    assert_eq!(r["status"], "runtime_error", "{r}");
    assert_eq!(r["exit_code"], 4);
    assert_eq!(r["stdout"], forged);
    assert_eq!(r["stderr"], forged);
}
