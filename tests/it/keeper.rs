//! The base of sessions: a long-lived sandbox whose keeper survives while every process a run
//! left behind is ended.

use std::time::Duration;

use bytes::Bytes;
use runbox::sandbox::policy::{MainProcess, SandboxKind, SandboxSpec};
use runbox::sandbox::terminal::TerminalOutput;
use runbox::sandbox::{ExecEnd, ExecSpec, OutputCollector, Sandbox};

use crate::common::{assert_removed, shared};

async fn sh(sandbox: &Sandbox, script: &str) -> String {
    let mut output = OutputCollector::new(64 * 1024);
    let outcome = sandbox
        .exec(
            ExecSpec {
                cmd: vec!["sh".into(), "-c".into(), script.into()],
                stdin: Bytes::new(),
                timeout: Duration::from_secs(10),
                cpu_limit: None,
            },
            &mut output,
        )
        .await
        .unwrap();
    assert_eq!(outcome.end, ExecEnd::Exited { code: 0 }, "{script}");
    output.finish().stdout_text()
}

/// A python sandbox whose main process is the keeper, and its id.
async fn keeper_sandbox() -> (String, Sandbox) {
    let id = uuid::Uuid::new_v4().to_string();
    let sandbox = shared()
        .server
        .executor
        .sandboxes()
        .create(&SandboxSpec {
            kind: SandboxKind::Probe,
            id: id.clone(),
            image: "runbox/python:latest".into(),
            language: "python".into(),
            memory_mb: 128,
            main: MainProcess::Keeper,
            work_dir_mb: None,
            labels: Vec::new(),
            warm_compiler: None,
        })
        .await
        .unwrap();
    (id, sandbox)
}

/// `uid comm` of every `sleep` in the sandbox.
async fn sleepers(sandbox: &Sandbox) -> Vec<String> {
    let listing = sh(
        sandbox,
        "for p in /proc/[0-9]*; do c=$(cat $p/comm 2>/dev/null); [ \"$c\" = sleep ] && echo \"$(stat -c %u $p) $c\"; done; true",
    )
    .await;
    listing.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn ending_the_programs_leaves_only_the_keeper() {
    let (id, sandbox) = keeper_sandbox().await;
    // Everything a program may do to outlive its run.
    sh(
        &sandbox,
        "setsid sleep 1001 </dev/null >/dev/null 2>&1 &
         nohup sleep 1002 </dev/null >/dev/null 2>&1 &
         ( ( sleep 1003 </dev/null >/dev/null 2>&1 & ) & )
         sh -c 'trap \"\" TERM HUP INT; while :; do sleep 1004; done' </dev/null >/dev/null 2>&1 &
         echo started",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sleepers(&sandbox).await;
    assert!(
        before.iter().filter(|l| l.starts_with("65534 ")).count() >= 4,
        "{before:?}"
    );
    assert!(before.contains(&"65533 sleep".to_owned()), "{before:?}");

    sandbox.end_programs().await.unwrap();

    let after = sleepers(&sandbox).await;
    assert_eq!(after, ["65533 sleep"], "only the keeper is left");
    // The sandbox lives on, and its files with it.
    sh(&sandbox, "echo kept > /box/f").await;
    sandbox.end_programs().await.unwrap();
    assert_eq!(sh(&sandbox, "cat /box/f").await, "kept\n");
    drop(sandbox);
    assert_removed(&id).await;
}

/// `uid comm` of every process of the program user but the listing's own shell.
async fn program_processes(sandbox: &Sandbox) -> Vec<String> {
    let listing = sh(
        sandbox,
        "for p in /proc/[0-9]*; do [ ${p#/proc/} = $$ ] && continue; \
         u=$(stat -c %u $p 2>/dev/null); [ \"$u\" = 65534 ] || continue; \
         read -r s < $p/stat 2>/dev/null && echo \"${s#* }\"; done; true",
    )
    .await;
    listing
        .lines()
        .filter(|l| !l.starts_with("(cat)") && !l.starts_with("(stat)") && !l.contains(" Z "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn ending_the_programs_never_claims_success_with_the_pids_cap_exhausted() {
    // A fork bomb left running holds every pid of the sandbox's cgroup. Ending the programs
    // either succeeds (its script needs no pid beyond the exec's own) and then nothing of the
    // bomb is left, or says it failed, so that the owner (a session) starts the sandbox afresh
    // instead of trusting it. Claiming success with the bomb alive is the defect.
    let (id, sandbox) = keeper_sandbox().await;
    sh(
        &sandbox,
        "setsid python3 -c 'import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)' </dev/null >/dev/null 2>&1 &
         echo started",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if sandbox.end_programs().await.is_ok() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(program_processes(&sandbox).await, Vec::<String>::new());
    }
    // Removal still works (with the bomb inside, if it is).
    drop(sandbox);
    assert_removed(&id).await;
}

/// Reads the terminal until `needle` shows up (10 s at most); returns all it read.
async fn read_until(output: &mut TerminalOutput, needle: &str) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = output.read().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "waited for {needle:?}, saw {seen:?}");
    seen
}

#[tokio::test]
async fn a_repl_on_a_terminal_answers_and_exits() {
    let (id, sandbox) = keeper_sandbox().await;
    let (mut input, mut output) = sandbox
        .open_terminal(vec!["python3".into()], 80, 24)
        .await
        .unwrap();
    input.write(b"1+1\n").await.unwrap();
    // The terminal echoes the input, then the REPL answers on its own line.
    read_until(&mut output, "\r\n2\r\n").await;
    input.resize(100, 30).await.unwrap();
    input
        .write(b"import shutil; shutil.get_terminal_size()\n")
        .await
        .unwrap();
    read_until(&mut output, "columns=100, lines=30").await;
    input.write(b"exit()\n").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while output.read().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the REPL's output ends when it exits");
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(code) = output.exit_code().await.unwrap() {
            break code;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, 0);
    drop(sandbox);
    assert_removed(&id).await;
}

#[tokio::test]
async fn a_run_ends_its_own_processes_but_not_the_terminal() {
    let (id, sandbox) = keeper_sandbox().await;
    let (mut input, mut output) = sandbox
        .open_terminal(vec!["python3".into()], 80, 24)
        .await
        .unwrap();
    input.write(b"x = 41\n").await.unwrap();
    // A child of the REPL is part of the terminal's session too.
    input
        .write(b"import subprocess; child = subprocess.Popen(['sleep', '1005'])\n")
        .await
        .unwrap();
    // What a run leaves behind, including a process in a session of its own.
    sh(
        &sandbox,
        "setsid sleep 1001 </dev/null >/dev/null 2>&1 &
         nohup sleep 1002 </dev/null >/dev/null 2>&1 &
         echo started",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sandbox.end_programs().await.unwrap();

    let left = program_processes(&sandbox).await;
    assert!(
        left.iter().any(|l| l.starts_with("(python3)")),
        "the REPL lives: {left:?}"
    );
    assert!(
        left.iter().any(|l| l.starts_with("(sleep)")),
        "the REPL's child lives: {left:?}"
    );
    assert_eq!(left.len(), 2, "the run's processes are gone: {left:?}");
    input.write(b"x + 1\n").await.unwrap();
    read_until(&mut output, "\r\n42\r\n").await;

    // Ending everything takes the terminal too: its output ends.
    sandbox.end_all_programs().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while output.read().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the REPL is gone");
    assert_eq!(program_processes(&sandbox).await, Vec::<String>::new());
    drop(sandbox);
    assert_removed(&id).await;
}
