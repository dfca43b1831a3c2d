//! Several engines: jobs spread over them, each engine's containers are its own, and an
//! engine that does not answer gets no work while jobs go on elsewhere.
//!
//! The extra engines are real dockerd instances started by `scripts/engines.sh start` (one in
//! a network namespace of its own behind a unix socket, one on loopback with mutual TLS);
//! the setup script passes them in `RUNBOX_TEST_ENGINES`. The machine's own engine is the
//! third. The tests here run one at a time: they count what they made on the extra engines.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::common::{metric, start_on_own_runtime};

/// The variable the setup script sets to `scripts/engines.sh start`'s output.
const ENGINES_VARIABLE: &str = "RUNBOX_TEST_ENGINES";

/// The machine's own engine in these fleets: not `local`, the id every single-engine app of
/// the other suites labels its containers with, so that this suite judges only its own there.
const HERE: &str = "here";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The extra engines as a TOML array, or `None` outside CI when none were started (CI must
/// have them: there a missing variable fails the test).
fn extra_engines() -> Option<String> {
    match std::env::var(ENGINES_VARIABLE) {
        Ok(engines) => Some(engines),
        Err(_) if std::env::var("CI").is_ok() => {
            panic!("{ENGINES_VARIABLE} is not set: CI starts the engines with scripts/engines.sh")
        }
        Err(_) => {
            eprintln!("skipped: no {ENGINES_VARIABLE} (run `scripts/engines.sh start`)");
            None
        }
    }
}

/// One engine as the test reaches it with the docker command line.
struct Engine {
    id: String,
    cli: Vec<String>,
}

fn engines_of(toml_array: &str) -> Vec<Engine> {
    let table: toml::Table = format!("v = {toml_array}").parse().expect("a TOML array");
    let mut engines = vec![Engine {
        id: HERE.to_owned(),
        cli: Vec::new(),
    }];
    for entry in table["v"].as_array().expect("an array") {
        let field = |key: &str| entry.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let mut cli = vec!["-H".to_owned(), field("host").expect("a host")];
        if let Some(ca) = field("tls_ca") {
            cli.extend([
                "--tlsverify".to_owned(),
                format!("--tlscacert={ca}"),
                format!("--tlscert={}", field("tls_cert").unwrap()),
                format!("--tlskey={}", field("tls_key").unwrap()),
            ]);
        }
        engines.push(Engine {
            id: field("id").expect("an id"),
            cli,
        });
    }
    engines
}

/// The cluster setting: the machine's engine as `local`, then the extra ones.
fn cluster_setting(extra: &str) -> String {
    let inner = extra.trim().trim_start_matches('[').trim_end_matches(']');
    format!("[{{id=\"{HERE}\", host=\"unix:///var/run/docker.sock\"}}, {inner}]")
}

/// `runbox.id` and `runbox.engine` of every runbox container on `engine`.
async fn runbox_containers(engine: &Engine) -> Vec<(String, String)> {
    let output = tokio::process::Command::new("docker")
        .args(&engine.cli)
        .args([
            "ps",
            "-a",
            "--filter",
            "label=runbox.managed=true",
            "--format",
            "{{.Label \"runbox.id\"}} {{.Label \"runbox.engine\"}}",
        ])
        .output()
        .await
        .expect("docker runs");
    assert!(
        output.status.success(),
        "docker ps on {}: {}",
        engine.id,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(id, at)| (id.to_owned(), at.to_owned()))
        .collect()
}

/// Every engine's containers: each carries the label of the engine it is on, and no sandbox
/// id is on two engines or twice on one.
async fn audit(engines: &[Engine]) -> usize {
    let mut seen = HashSet::new();
    for engine in engines {
        for (id, labelled) in runbox_containers(engine).await {
            // The machine's engine is shared with other suites (no engine label before this
            // one, or another app's): only this fleet's are judged there.
            if engine.id == HERE && labelled != HERE {
                continue;
            }
            assert_eq!(
                labelled, engine.id,
                "sandbox {id} is labelled for another engine"
            );
            assert!(seen.insert(id.clone()), "sandbox {id} exists twice");
        }
    }
    seen.len()
}

#[tokio::test]
async fn jobs_spread_over_three_engines_and_each_engine_keeps_its_own_sandboxes() {
    let Some(extra) = extra_engines() else { return };
    let _alone = ONE_AT_A_TIME.lock().await;
    let engines = engines_of(&extra);
    assert_eq!(engines.len(), 3, "two extra engines and the machine's");
    let cluster = cluster_setting(&extra);
    let app = start_on_own_runtime(&[
        ("RUNBOX_CLUSTER__ENGINES", cluster.as_str()),
        ("RUNBOX_POOL__ENABLED", "true"),
        ("RUNBOX_POOL__SIZES", "{python=2}"),
    ]);
    const RUNS: usize = 300;
    let client = reqwest::Client::new();
    let url = app.url("/run");
    let started = Instant::now();
    let results: Vec<(usize, String)> = futures_util::stream::iter(0..RUNS)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let response = client
                    .post(url)
                    .json(&json!({"language": "python", "code": format!("print({i} * 2)")}))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["status"], "success", "{body}");
                (i, body["stdout"].as_str().unwrap().to_owned())
            }
        })
        .buffer_unordered(6)
        .collect()
        .await;
    let elapsed = started.elapsed();
    for (i, stdout) in &results {
        assert_eq!(stdout, &format!("{}\n", i * 2));
    }
    assert_eq!(results.len(), RUNS);
    let audited = audit(&engines).await;
    let mut per_engine = HashMap::new();
    for engine in &engines {
        let jobs = metric(
            &app.base,
            &format!("runbox_engine_jobs_total{{engine=\"{}\"}}", engine.id),
        )
        .await as usize;
        per_engine.insert(engine.id.clone(), jobs);
    }
    eprintln!(
        "{RUNS} runs in {elapsed:?}: jobs per engine {per_engine:?}; {audited} sandboxes audited"
    );
    assert_eq!(per_engine.values().sum::<usize>(), RUNS, "{per_engine:?}");
    for (id, jobs) in &per_engine {
        assert!(
            *jobs * 5 >= RUNS,
            "engine {id} served {jobs} of {RUNS} (under 20 %): {per_engine:?}"
        );
    }
    assert!(audited >= 3, "every engine holds its pool: {audited}");
    app.server.shutdown().await.unwrap();
    for engine in &engines[1..] {
        assert_eq!(
            runbox_containers(engine).await,
            Vec::new(),
            "containers left on engine {}",
            engine.id
        );
    }
    assert!(
        runbox_containers(&engines[0])
            .await
            .iter()
            .all(|(_, at)| at != HERE),
        "this fleet's containers left on the machine's engine"
    );
}

#[tokio::test]
async fn an_engine_that_does_not_answer_gets_no_work_and_jobs_go_on_elsewhere() {
    let Some(extra) = extra_engines() else { return };
    let _alone = ONE_AT_A_TIME.lock().await;
    let engines = engines_of(&extra);
    // e1 and an engine whose socket does not exist (a machine that is down).
    let gone = "/run/runbox-engines/gone.sock";
    let e1_host = &engines[1].cli[1];
    let cluster =
        format!("[{{id=\"gone\", host=\"unix://{gone}\"}}, {{id=\"e1\", host=\"{e1_host}\"}}]");
    let app = start_on_own_runtime(&[
        ("RUNBOX_CLUSTER__ENGINES", cluster.as_str()),
        ("RUNBOX_CLUSTER__HEALTH_INTERVAL_MS", "200"),
        ("RUNBOX_CLUSTER__UNHEALTHY_AFTER", "3"),
    ]);
    let started = Instant::now();
    for i in 0..20 {
        let body = app
            .run_ok(json!({"language": "python", "code": format!("print({i})")}))
            .await;
        assert_eq!(body["status"], "success", "{body}");
        assert_eq!(body["stdout"], format!("{i}\n"));
    }
    // Out within three failed pings (≈ 600 ms here), and it never served a job.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&app.base, "runbox_engine_healthy{engine=\"gone\"}").await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the engine that is gone is still in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&app.base, "runbox_engine_jobs_total{engine=\"gone\"}").await,
        0.0
    );
    assert_eq!(
        metric(&app.base, "runbox_engine_jobs_total{engine=\"e1\"}").await,
        20.0
    );
    eprintln!("20 runs with one engine gone: {:?}", started.elapsed());
    // With no engine left that answers, a run is refused as the engine's absence always was.
    let only_gone = format!(
        "[{{id=\"gone\", host=\"unix://{gone}\"}}, {{id=\"gone2\", host=\"unix://{gone}.2\"}}]"
    );
    let down = start_on_own_runtime(&[("RUNBOX_CLUSTER__ENGINES", only_gone.as_str())]);
    let (status, body) = down
        .run(json!({"language": "python", "code": "print(1)"}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "sandbox_unavailable", "{body}");
    let text = body.to_string();
    assert!(!text.contains(gone) && !text.contains("sock"), "{text}");
    down.server.shutdown().await.unwrap();
    app.server.shutdown().await.unwrap();
    assert_eq!(runbox_containers(&engines[1]).await, Vec::new());
}

/// Labels' values of `key` on the runbox containers of `engine` carrying `filter`.
async fn labelled(engine: &Engine, filter: &str, key: &str) -> Vec<String> {
    let output = tokio::process::Command::new("docker")
        .args(&engine.cli)
        .args([
            "ps",
            "--filter",
            &format!("label={filter}"),
            "--format",
            &format!("{{{{.Label \"{key}\"}}}}"),
        ])
        .output()
        .await
        .expect("docker runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn an_engine_whose_daemon_is_killed_gets_no_work_and_keeps_its_sessions() {
    let Some(extra) = extra_engines() else { return };
    let _alone = ONE_AT_A_TIME.lock().await;
    let engines = engines_of(&extra);
    let e1 = &engines[1];
    let e1_entry = extra
        .split("}, {")
        .next()
        .unwrap()
        .trim_start_matches('[')
        .trim_start_matches('{')
        .to_owned();
    let cluster =
        format!("[{{id=\"{HERE}\", host=\"unix:///var/run/docker.sock\"}}, {{{e1_entry}}}]");
    let app = start_on_own_runtime(&[
        ("RUNBOX_CLUSTER__ENGINES", cluster.as_str()),
        ("RUNBOX_CLUSTER__HEALTH_INTERVAL_MS", "500"),
        ("RUNBOX_CLUSTER__UNHEALTHY_AFTER", "3"),
    ]);
    // Sessions go to the freer engine: a few land on e1.
    let mut sessions = Vec::new();
    let mut on_e1 = None;
    for _ in 0..8 {
        let id = crate::common::session_id(&app, "python").await;
        sessions.push(id.clone());
        let here = labelled(e1, &format!("runbox.session.id={id}"), "runbox.session.id").await;
        if !here.is_empty() {
            on_e1 = Some(id);
            break;
        }
    }
    let on_e1 = on_e1.expect("a session on e1 among 8");
    let (status, body) = crate::common::run_in_session(
        &app,
        &on_e1,
        json!({"language": "python", "code": "open('kept.txt', 'w').write('kept')"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Kill e1's daemon (-9). live-restore keeps its containers running meanwhile.
    let pidfile = "/run/runbox-engines/e1/docker.pid";
    let pid = std::fs::read_to_string(pidfile).expect("e1's pid file");
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let outage = Instant::now();
    // One-shot runs go on (on the other engine) all through the outage.
    let mut out_after = None;
    let mut jobs_on_e1_when_out = 0.0;
    let mut runs = 0;
    while outage.elapsed() < Duration::from_secs(20) {
        let body = app
            .run_ok(json!({"language": "python", "code": format!("print({runs})")}))
            .await;
        assert_eq!(body["stdout"], format!("{runs}\n"), "{body}");
        runs += 1;
        if out_after.is_none()
            && metric(&app.base, "runbox_engine_healthy{engine=\"e1\"}").await == 0.0
        {
            out_after = Some(outage.elapsed());
            jobs_on_e1_when_out =
                metric(&app.base, "runbox_engine_jobs_total{engine=\"e1\"}").await;
        }
    }
    let out_after = out_after.expect("e1 marked out during the outage");
    assert!(
        out_after < Duration::from_secs(6),
        "out after {out_after:?}"
    );
    assert_eq!(
        metric(&app.base, "runbox_engine_jobs_total{engine=\"e1\"}").await,
        jobs_on_e1_when_out,
        "work went to e1 while it was out"
    );
    // Its session cannot run while its engine is down, and says so in the usual way.
    let (status, body) = crate::common::run_in_session(
        &app,
        &on_e1,
        json!({"language": "python", "code": "print(1)"}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "sandbox_unavailable", "{body}");

    // Back: the daemon restarted, the engine taken in again, the session with its file.
    let restarted =
        std::process::Command::new(crate::common::repo_root().join("scripts/engines.sh"))
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
    assert!(restarted.success());
    let back = Instant::now();
    while metric(&app.base, "runbox_engine_healthy{engine=\"e1\"}").await != 1.0 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "e1 not taken in again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = crate::common::run_in_session(
        &app,
        &on_e1,
        json!({"language": "python", "code": "print(open('kept.txt').read())"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stdout"], "kept\n", "{body}");
    eprintln!(
        "e1 killed: out after {out_after:?}, {runs} one-shot runs during 20 s, all answered; its session intact after the restart"
    );
    let client = reqwest::Client::new();
    for id in &sessions {
        client
            .delete(app.url(&format!("/sessions/{id}")))
            .send()
            .await
            .unwrap();
    }
    app.server.shutdown().await.unwrap();
    assert_eq!(runbox_containers(e1).await, Vec::new());
}
