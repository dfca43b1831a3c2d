//! SIGTERM on the real binary during runs: a job that fits in the grace period is answered,
//! one that does not is ended with 503 shutting_down, the process exits 0, and the engine holds
//! none of its containers afterwards.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{RUNTIME_VARIABLE, containers_with_labels, repo_root};

const GRACE_SECS: u64 = 3;
/// A memory cap only this test's long job asks for, to find its container.
const LONG_JOB_MEMORY_MB: i64 = 211;

/// A free port on the loopback (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn post(url: String, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn sigterm_finishes_short_jobs_ends_long_ones_and_leaves_nothing() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let owner = format!("shutdown-{}", uuid::Uuid::new_v4().simple());
    let runtime = std::env::var(RUNTIME_VARIABLE).unwrap_or_else(|_| "runc".into());
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbox"))
        .arg("serve")
        .current_dir(repo_root())
        .env("RUNBOX_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUNBOX_SERVER__SHUTDOWN_GRACE_SECS", GRACE_SECS.to_string())
        .env("RUNBOX_POOL__ENABLED", "false")
        .env("RUNBOX_RATE_LIMIT__ENABLED", "false")
        .env("RUNBOX_SESSIONS__OWNER", &owner)
        .env("RUNBOX_SESSIONS__KEEP_ON_SHUTDOWN", "false")
        .env(RUNTIME_VARIABLE, runtime)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("runbox serve starts");
    let started = Instant::now();
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, session) = post(format!("{base}/sessions"), json!({ "language": "python" })).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let short = tokio::spawn(post(
        format!("{base}/run"),
        json!({ "language": "python", "code": "import time\ntime.sleep(1.5)\nprint('finished')", "timeout_ms": 10000 }),
    ));
    let long = tokio::spawn(post(
        format!("{base}/run"),
        json!({ "language": "python", "code": "import time\ntime.sleep(30)", "timeout_ms": 30000, "memory_mb": LONG_JOB_MEMORY_MB }),
    ));
    // Both are running when the signal comes.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let signalled = Instant::now();
    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &server.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(kill.success());

    let (status, result) = short.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["stdout"], "finished\n");
    let (status, refused) = long.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert_eq!(refused["error"]["code"], "shutting_down");
    let waited = signalled.elapsed();
    assert!(
        waited >= Duration::from_secs(GRACE_SECS - 1)
            && waited < Duration::from_secs(GRACE_SECS + 4),
        "the long job was ended after {waited:?}"
    );
    // No new connection is taken once shutdown began.
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
    let exit = tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("the process exits")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    // Every container it made is gone: both jobs' and the session's.
    for id in [&result["id"], &session["id"]] {
        let left = containers_with_labels(&[format!("runbox.id={}", id.as_str().unwrap())]).await;
        assert!(left.is_empty(), "{id}: {left:?}");
    }
    let sessions = containers_with_labels(&[format!("runbox.session.owner={owner}")]).await;
    assert!(sessions.is_empty(), "{sessions:?}");
    // The long job answered no id: its container is found by the memory cap only it asked for.
    let docker = crate::common::docker().await;
    for job in containers_with_labels(&["runbox.kind=job".to_owned()]).await {
        if let Ok(inspect) = docker
            .inspect_container(job.id.as_deref().unwrap(), None)
            .await
        {
            let memory = inspect.host_config.and_then(|h| h.memory);
            assert_ne!(
                memory,
                Some(LONG_JOB_MEMORY_MB << 20),
                "the long job's container is left"
            );
        }
    }
}
