//! SIGTERM on the real binary during runs: a job that fits in the grace period is answered,
//! one that does not is ended with 503 shutting_down, the process exits 0, and the engine holds
//! none of its containers afterwards.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{ServerProcess, containers_with_labels};

const GRACE_SECS: u64 = 3;
/// A memory cap only this test's long job asks for, to find its container.
const LONG_JOB_MEMORY_MB: i64 = 211;

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
    let owner = format!("shutdown-{}", uuid::Uuid::new_v4().simple());
    let grace = GRACE_SECS.to_string();
    let process = ServerProcess::start(
        &[
            ("RUNBOX_SERVER__SHUTDOWN_GRACE_SECS", grace.as_str()),
            ("RUNBOX_SESSIONS__OWNER", owner.as_str()),
        ],
        None,
        None,
    )
    .await;
    let base = process.base.clone();
    let mut server = process.child;
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
