//! The warm pool and admission control, each test on its own app (the shared one has no pool).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{
    TestApp, containers_with_labels, start_on_own_runtime, wait_until_no_containers,
};

/// How long a pool may take to fill (each sandbox is created and started, ~100-300 ms).
const FILL_DEADLINE: Duration = Duration::from_secs(30);

/// Names of the pool containers of `language` on the engine right now.
async fn pool_containers(language: &str) -> BTreeSet<String> {
    containers_with_labels(&[
        "runbox.kind=pool".to_owned(),
        format!("runbox.language={language}"),
    ])
    .await
    .into_iter()
    .filter(|c| c.state != Some(bollard::models::ContainerSummaryStateEnum::EXITED))
    .flat_map(|c| c.names.unwrap_or_default())
    .collect()
}

async fn metrics(app: &TestApp) -> String {
    reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn wait_for_ready(app: &TestApp, language: &str, want: u64) {
    let sample = format!("runbox_pool_sandboxes{{language=\"{language}\",state=\"ready\"}}");
    let started = Instant::now();
    while app.metric(&sample).await < want {
        assert!(
            started.elapsed() < FILL_DEADLINE,
            "{language} pool not filled to {want}:\n{}",
            metrics(app).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until_gone(language: &str) {
    wait_until_no_containers(&[
        "runbox.kind=pool".to_owned(),
        format!("runbox.language={language}"),
    ])
    .await;
}

#[tokio::test]
async fn a_pooled_sandbox_serves_one_job_and_is_replaced() {
    // Lua: no other test app has a Lua pool, so every Lua pool container is this app's.
    // One job per sandbox is the `fresh` mode; `reuse` tests the nested one.
    let app = start_on_own_runtime(&[
        ("RUNBOX_POOL__ENABLED", "true"),
        ("RUNBOX_POOL__SIZES", "{ lua = 2 }"),
        ("RUNBOX_SANDBOX__REUSE", "fresh"),
    ]);
    wait_for_ready(&app, "lua", 2).await;
    let before = pool_containers("lua").await;
    assert_eq!(before.len(), 2, "{before:?}");

    let created_before = app.server.executor.sandboxes().created_count();
    let r = app
        .run_ok(json!({ "language": "lua", "code": "print(io.read('a'))", "input": "warm" }))
        .await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "warm\n");
    assert_eq!(
        app.metric("runbox_pool_hits_total{language=\"lua\"}").await,
        1
    );
    assert_eq!(
        app.metric("runbox_pool_misses_total{language=\"lua\"}")
            .await,
        0
    );

    // The sandbox that served the job is removed and a new one takes its place.
    wait_for_ready(&app, "lua", 2).await;
    let started = Instant::now();
    let after = loop {
        let now = pool_containers("lua").await;
        if now.len() == 2 && now != before {
            break now;
        }
        assert!(started.elapsed() < FILL_DEADLINE, "{now:?} vs {before:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        before.intersection(&after).count(),
        1,
        "{before:?} {after:?}"
    );
    // The job created nothing itself; the refill created exactly one.
    assert_eq!(
        app.server.executor.sandboxes().created_count(),
        created_before + 1
    );

    // Three jobs at once with two ready: two are served at once; the third waits for a
    // sandbox the pool is creating, or creates its own: slower, never an error.
    let jobs =
        (0..3).map(|i| app.run_ok(json!({ "language": "lua", "code": format!("print({i})") })));
    let results = futures_util::future::join_all(jobs).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["stdout"], format!("{i}\n"), "{r}");
    }
    let hits = app.metric("runbox_pool_hits_total{language=\"lua\"}").await;
    let misses = app
        .metric("runbox_pool_misses_total{language=\"lua\"}")
        .await;
    assert_eq!(hits + misses, 4);
    assert!(hits >= 3, "hits {hits}, misses {misses}");

    app.server.shutdown().await.unwrap();
    wait_until_gone("lua").await;
}

#[tokio::test]
async fn pooled_sandboxes_that_wait_too_long_are_recycled() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_POOL__ENABLED", "true"),
        ("RUNBOX_POOL__SIZES", "{ perl = 1 }"),
        ("RUNBOX_POOL__MAX_IDLE_SECS", "1"),
    ]);
    wait_for_ready(&app, "perl", 1).await;
    let first = pool_containers("perl").await;
    let started = Instant::now();
    while app
        .metric("runbox_pool_recycled_total{language=\"perl\"}")
        .await
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never recycled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_ready(&app, "perl", 1).await;
    let started = Instant::now();
    while pool_containers("perl").await == first {
        assert!(started.elapsed() < Duration::from_secs(10), "not replaced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A recycled pool still serves.
    let r = app
        .run_ok(json!({ "language": "perl", "code": "print 6 * 7, \"\\n\";" }))
        .await;
    assert_eq!(r["stdout"], "42\n", "{r}");
    app.server.shutdown().await.unwrap();
    wait_until_gone("perl").await;
}

#[tokio::test]
async fn past_the_running_slots_and_the_queue_runs_are_refused_at_once() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_LIMITS__MAX_RUNNING_JOBS", "1"),
        ("RUNBOX_LIMITS__MAX_QUEUED_JOBS", "1"),
    ]);
    let slow = json!({ "language": "python", "code": "import time\ntime.sleep(2)\nprint('done')" });
    let running = tokio::spawn({
        let url = app.url("/run");
        let body = slow.clone();
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    wait_for_metric(&app, "runbox_jobs_running", 1).await;
    let queued = tokio::spawn({
        let url = app.url("/run");
        let body = slow.clone();
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    wait_for_metric(&app, "runbox_jobs_queued", 1).await;

    let started = Instant::now();
    let refused = reqwest::Client::new()
        .post(app.url("/run"))
        .json(&slow)
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once"
    );
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert_eq!(app.metric("runbox_overloaded_rejections_total").await, 1);

    // Both admitted jobs finish normally, one after the other.
    for handle in [running, queued] {
        let response = handle.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let r: serde_json::Value = response.json().await.unwrap();
        assert_eq!(r["stdout"], "done\n", "{r}");
    }
    assert_eq!(
        app.server.executor.sandboxes().created_count(),
        2,
        "the refused run created no container"
    );
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_the_queue_frees_its_place_and_creates_nothing() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_LIMITS__MAX_RUNNING_JOBS", "1"),
        ("RUNBOX_LIMITS__MAX_QUEUED_JOBS", "1"),
    ]);
    let slow = json!({ "language": "python", "code": "import time\ntime.sleep(2)" });
    let running = tokio::spawn({
        let url = app.url("/run");
        let body = slow.clone();
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    wait_for_metric(&app, "runbox_jobs_running", 1).await;

    // Queued, then the client gives up.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient.post(app.url("/run")).json(&slow).send().await;
    assert!(gave_up.is_err(), "the client timed out while queued");
    wait_for_metric(&app, "runbox_jobs_queued", 0).await;

    // Its place is free again: the next run queues instead of being refused.
    let next = reqwest::Client::new()
        .post(app.url("/run"))
        .json(&json!({ "language": "python", "code": "print('next')" }))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), StatusCode::OK);
    assert!(running.await.unwrap().unwrap().status().is_success());
    assert_eq!(
        app.server.executor.sandboxes().created_count(),
        2,
        "the run that left the queue created no container"
    );
    app.server.shutdown().await.unwrap();
}

async fn wait_for_metric(app: &TestApp, sample: &str, want: u64) {
    let started = Instant::now();
    loop {
        let value = app.metric(sample).await;
        if value == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{sample} stayed {value}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
