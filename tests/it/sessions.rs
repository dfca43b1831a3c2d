//! Sessions: one sandbox across runs. Every test starts its own app and shuts it down, which
//! removes its sessions (the shared app would leave them behind at exit).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    TestApp, create_session as create, get_session as get, run_in_session as run,
    session_containers as containers_of, session_id, session_id_at, start_on_own_runtime,
    wait_for_session_containers,
};

async fn run_ok(app: &TestApp, id: &str, code: &str) -> Value {
    let (status, body) = run(app, id, json!({ "language": "python", "code": code })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn files_persist_across_runs_and_nothing_else_does() {
    let app = start_on_own_runtime(&[]);
    let a = session_id(&app, "python").await;
    let b = session_id(&app, "python").await;
    assert_ne!(a, b);
    assert!(a.len() >= 32, "unguessable id: {a}");

    let r = run_ok(
        &app,
        &a,
        "import subprocess\nopen('data.txt', 'w').write('kept')\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)\nprint('written')",
    )
    .await;
    assert_eq!(r["stdout"], "written\n", "{r}");
    assert_eq!(r["session_restarted"], false);

    // The file is there for the next run; the process the first run left is not.
    let listing = "import os\nprint(open('data.txt').read())\nsleepers = [p for p in os.listdir('/proc') if p.isdigit() and open(f'/proc/{p}/comm').read().strip() == 'sleep' and os.stat(f'/proc/{p}').st_uid == os.getuid()]\nprint(len(sleepers))";
    let r = run_ok(&app, &a, listing).await;
    assert_eq!(r["stdout"], "kept\n0\n", "{r}");

    // Session B sees nothing of A: not its files, not the program A is running right now.
    let (in_a, in_b) = tokio::join!(
        run_ok(&app, &a, "import time\ntime.sleep(1.5)\nprint('a done')"),
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            run_ok(
                &app,
                &b,
                "import os\nprint(os.path.exists('data.txt'))\nprint(sorted(open(f'/proc/{p}/comm').read().strip() for p in os.listdir('/proc') if p.isdigit()))",
            )
            .await
        }
    );
    assert_eq!(in_a["stdout"], "a done\n", "{in_a}");
    let seen = in_b["stdout"].as_str().unwrap();
    assert!(seen.starts_with("False\n"), "{in_b}");
    // Its own init, keeper, unpacking shell and program only: one python, A's is not there.
    assert_eq!(seen.matches("'python3'").count(), 1, "{seen}");

    // A run's limit ends that run, not the session.
    let (status, r) = run(
        &app,
        &a,
        json!({ "language": "python", "code": "while True:\n    pass", "timeout_ms": 500 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["status"], "timeout", "{r}");
    let r = run_ok(&app, &a, "print(open('data.txt').read())").await;
    assert_eq!(r["stdout"], "kept\n", "{r}");

    // The session's language is fixed; memory_mb too.
    let (status, r) = run(&app, &a, json!({ "language": "c", "code": "int main(){}" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    let (status, _) = run(
        &app,
        &a,
        json!({ "language": "python", "code": "1", "memory_mb": 64 }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // GET, DELETE, and 404 afterwards.
    let (status, view) = get(&app, &a).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["url"], format!("/sessions/{a}"));
    for field in ["created_at", "last_used_at", "expires_at"] {
        assert!(view[field].as_str().unwrap().ends_with('Z'), "{view}");
    }
    let deleted = reqwest::Client::new()
        .delete(app.url(&format!("/sessions/{a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    wait_for_session_containers(&a, 0).await;
    let (status, body) = get(&app, &a).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "session_not_found");
    let (status, _) = run(&app, &a, json!({ "language": "python", "code": "1" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&app, "0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&b, 0).await;
}

#[tokio::test]
async fn past_the_session_cap_nothing_is_created() {
    let app = start_on_own_runtime(&[("RUNBOX_SESSIONS__MAX_SESSIONS", "1")]);
    let first = session_id(&app, "bash").await;
    let created = app.server.executor.sandboxes().created_count();
    let (status, body) = create(&app, "bash").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(app.server.executor.sandboxes().created_count(), created);
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&first, 0).await;
}

#[tokio::test]
async fn idle_and_old_sessions_expire_and_are_reaped() {
    // The maximum age leaves room for the runs below to be slow (a loaded machine): the check
    // that `busy` is still there is made well before it, whatever the runs took.
    let app = start_on_own_runtime(&[
        ("RUNBOX_SESSIONS__IDLE_TIMEOUT_SECS", "2"),
        ("RUNBOX_SESSIONS__MAX_AGE_SECS", "8"),
        ("RUNBOX_SESSIONS__REAPER_INTERVAL_SECS", "1"),
    ]);
    let idle = session_id(&app, "python").await;
    let busy = session_id(&app, "python").await;
    let born = Instant::now();
    // Runs keep `busy` from idling out, but not past its maximum age.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        run_ok(&app, &busy, "print(1)").await;
    }
    let (status, _) = get(&app, &idle).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "idle for over 2 s");
    let age = born.elapsed();
    assert!(age < Duration::from_secs(7), "the runs took {age:?}");
    let (status, _) = get(&app, &busy).await;
    assert_eq!(status, StatusCode::OK, "used a moment ago, {age:?} old");
    wait_for_session_containers(&idle, 0).await;
    tokio::time::sleep(
        (born + Duration::from_millis(9500)).saturating_duration_since(Instant::now()),
    )
    .await;
    let (status, _) = get(&app, &busy).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "over its 8 s maximum age");
    wait_for_session_containers(&busy, 0).await;
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_session_whose_memory_ran_out_restarts_clean_and_says_so() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "python").await;
    run_ok(&app, &id, "open('data.txt', 'w').write('x')").await;
    let r = run_ok(&app, &id, "b = bytearray(2 << 30)").await;
    assert_eq!(r["status"], "memory_limit_exceeded", "{r}");
    assert_eq!(r["session_restarted"], true, "{r}");
    let r = run_ok(&app, &id, "import os\nprint(os.path.exists('data.txt'))").await;
    assert_eq!(r["stdout"], "False\n", "a fresh work dir: {r}");
    assert_eq!(r["session_restarted"], false);
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn a_restart_keeps_live_sessions_and_drops_expired_ones() {
    let owner = format!("restart-{}", uuid::Uuid::new_v4().simple());
    let settings = |keep: &'static str| {
        [
            ("RUNBOX_SESSIONS__OWNER", owner.clone()),
            ("RUNBOX_SESSIONS__KEEP_ON_SHUTDOWN", keep.to_owned()),
            ("RUNBOX_SESSIONS__MAX_AGE_SECS", "4".to_owned()),
        ]
    };
    let first = settings("true");
    let first: Vec<(&str, &str)> = first.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = start_on_own_runtime(&first);
    let old = session_id(&app, "python").await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let young = session_id(&app, "python").await;
    run_ok(&app, &young, "open('data.txt', 'w').write('kept')").await;
    app.server.shutdown().await.unwrap();
    assert_eq!(
        containers_of(&young).await,
        1,
        "kept running across the restart"
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = settings("false");
    let second: Vec<(&str, &str)> = second.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = start_on_own_runtime(&second);
    let (status, _) = get(&app, &young).await;
    assert_eq!(status, StatusCode::OK);
    let r = run_ok(&app, &young, "print(open('data.txt').read())").await;
    assert_eq!(r["stdout"], "kept\n", "{r}");
    // Older than its 4 s maximum age by the time runbox came back: not taken back, removed.
    let (status, _) = get(&app, &old).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    wait_for_session_containers(&old, 0).await;
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&young, 0).await;
}

#[tokio::test]
async fn one_client_cannot_hold_more_than_its_share() {
    let app = start_on_own_runtime(&[("RUNBOX_SESSIONS__MAX_PER_CLIENT", "2")]);
    let a = session_id(&app, "bash").await;
    let b = session_id(&app, "bash").await;
    let created = app.server.executor.sandboxes().created_count();
    let response = reqwest::Client::new()
        .post(app.url("/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(app.server.executor.sandboxes().created_count(), created);
    // Deleting one frees a place.
    reqwest::Client::new()
        .delete(app.url(&format!("/sessions/{a}")))
        .send()
        .await
        .unwrap();
    let c = session_id(&app, "bash").await;
    app.server.shutdown().await.unwrap();
    for id in [a, b, c] {
        wait_for_session_containers(&id, 0).await;
    }
}

#[tokio::test]
async fn concurrent_runs_in_one_session_take_turns() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "python").await;
    // Each run appends its start and end mark; interleaved runs would mix them.
    let code = |n: u32| {
        format!(
            "import time\nwith open('log.txt', 'a') as f:\n    f.write('start {n}\\n'); f.flush(); time.sleep(0.5); f.write('end {n}\\n')"
        )
    };
    let (one, two) = tokio::join!(
        run(&app, &id, json!({ "language": "python", "code": code(1) })),
        run(&app, &id, json!({ "language": "python", "code": code(2) }))
    );
    assert_eq!(one.0, StatusCode::OK, "{}", one.1);
    assert_eq!(two.0, StatusCode::OK, "{}", two.1);
    let r = run_ok(&app, &id, "print(open('log.txt').read(), end='')").await;
    let log = r["stdout"].as_str().unwrap();
    assert!(
        log == "start 1\nend 1\nstart 2\nend 2\n" || log == "start 2\nend 2\nstart 1\nend 1\n",
        "{log}"
    );
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn a_killed_server_loses_no_session() {
    // A real `runbox serve` process, killed with SIGKILL mid-life: nothing of it runs a
    // shutdown. A new server with the same owner name takes the session back from its labels.
    let owner = format!("killed-{}", uuid::Uuid::new_v4().simple());
    let process = crate::common::ServerProcess::start(
        &[
            ("RUNBOX_SESSIONS__OWNER", owner.as_str()),
            ("RUNBOX_SESSIONS__KEEP_ON_SHUTDOWN", "true"),
            ("RUNBOX_LOG", "warn"),
        ],
        None,
        None,
    )
    .await;
    let base = process.base.clone();
    let mut child = process.child;
    let started = Instant::now();
    while reqwest::get(format!("{base}/readyz")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = reqwest::Client::new();
    let id = session_id_at(&base, "python").await;
    let written: Value = client
        .post(format!("{base}/sessions/{id}/run"))
        .json(&json!({ "language": "python", "code": "open('data.txt', 'w').write('survived')" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(written["status"], "success", "{written}");
    child.kill().await.unwrap();
    child.wait().await.unwrap();

    let app = start_on_own_runtime(&[("RUNBOX_SESSIONS__OWNER", owner.as_str())]);
    let r = run_ok(&app, &id, "print(open('data.txt').read())").await;
    assert_eq!(r["stdout"], "survived\n", "{r}");
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&id, 0).await;
}

#[tokio::test]
async fn sessions_count_against_the_one_sandbox_budget_and_leave_room_for_jobs() {
    // One running job: sessions may take all but two of the four sandboxes.
    let app = start_on_own_runtime(&[
        ("RUNBOX_LIMITS__MAX_RUNNING_JOBS", "1"),
        ("RUNBOX_LIMITS__MAX_SANDBOXES", "4"),
    ]);
    let first = session_id(&app, "python").await;
    let second = session_id(&app, "python").await;
    let (status, body) = create(&app, "python").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    let (status, run) = app
        .run(json!({ "language": "python", "code": "print('room for jobs')" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["stdout"], "room for jobs\n", "{run}");
    app.server.shutdown().await.unwrap();
    wait_for_session_containers(&first, 0).await;
    wait_for_session_containers(&second, 0).await;
}

#[tokio::test]
async fn a_session_whose_sandbox_its_engine_lost_is_gone_and_says_so() {
    // What a daemon restarted without live-restore does to a session: its container stops.
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "python").await;
    run_ok(&app, &id, "print(1)").await;
    let docker = crate::common::docker().await;
    for container in
        crate::common::containers_with_labels(&[format!("runbox.session.id={id}")]).await
    {
        docker
            .kill_container(
                container.id.as_deref().unwrap(),
                None::<bollard::query_parameters::KillContainerOptions>,
            )
            .await
            .unwrap();
    }
    let (status, body) = run(&app, &id, json!({"language": "python", "code": "print(2)"})).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["error"]["code"], "session_lost");
    assert!(!body.to_string().contains("container"), "{body}");
    let (status, _) = get(&app, &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the session is removed");
    wait_for_session_containers(&id, 0).await;
}
