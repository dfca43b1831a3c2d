//! Several runbox nodes on one Redis: any node serves any session (the hop to its host), a
//! node killed or stopped loses nothing but its in-flight requests, Redis restarted empty is
//! rebuilt from what the nodes hold and the sandboxes' labels, and a rate limit holds over
//! all nodes.
//!
//! Each test starts its own `redis-server` on a free loopback port and its nodes as separate
//! `runbox serve` processes (a node must be killable with SIGKILL), all on the machine's
//! engine. The tests run one at a time: each drives several servers against one engine.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{ServerProcess, containers_with_labels, free_port, wait_until_no_containers};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TOKEN: &str = "nodes-suite-shared-secret";
/// Short leases, so a killed node's sessions move within the test's patience.
const LEASE_TTL_MS: u64 = 2000;

/// A `redis-server` of the test's own (no persistence: a restart is a restart empty).
struct Redis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl Redis {
    async fn start() -> Option<Redis> {
        if std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("CI").is_err(),
                "redis-server is not installed: the setup script installs it"
            );
            eprintln!("skipped: no redis-server (apt-get install redis-server)");
            return None;
        }
        let mut redis = Redis {
            port: free_port(),
            child: None,
        };
        redis.spawn().await;
        Some(redis)
    }

    async fn spawn(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let started = Instant::now();
        while self.connection().await.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis never came up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url()).ok()?;
        client.get_multiplexed_async_connection().await.ok()
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Every key under the suite's prefix.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut redis = self.connection().await.expect("redis answers");
        redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut redis)
            .await
            .unwrap()
    }
}

/// A cluster of nodes on one Redis, each a `runbox serve` of its own.
struct Cluster {
    redis: Redis,
    prefix: String,
    owner: String,
    nodes: Vec<Option<ServerProcess>>,
    /// Each node's `cluster.node_id` (the `runbox.node` label of what it makes).
    node_ids: Vec<String>,
}

impl Cluster {
    async fn start(nodes: usize, extra: &[(&str, &str)]) -> Option<Cluster> {
        let redis = Redis::start().await?;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let mut cluster = Cluster {
            redis,
            prefix: format!("t{}:", &tag[..8]),
            owner: format!("nodes-{}", &tag[..8]),
            nodes: Vec::new(),
            node_ids: Vec::new(),
        };
        for n in 0..nodes {
            let id = format!("n{n}-{}", uuid::Uuid::new_v4().simple());
            let node = cluster.spawn(&id, extra).await;
            cluster.nodes.push(Some(node));
            cluster.node_ids.push(id);
        }
        Some(cluster)
    }

    async fn spawn(&self, id: &str, extra: &[(&str, &str)]) -> ServerProcess {
        let redis = format!("\"{}\"", self.redis.url());
        let token = format!("\"{TOKEN}\"");
        let node_id = format!("\"{id}\"");
        let prefix = format!("\"{}\"", self.prefix);
        let ttl = LEASE_TTL_MS.to_string();
        let mut env = vec![
            ("RUNBOX_CLUSTER__REDIS", redis.as_str()),
            ("RUNBOX_CLUSTER__INTERNAL_TOKEN", token.as_str()),
            ("RUNBOX_CLUSTER__NODE_ID", node_id.as_str()),
            ("RUNBOX_CLUSTER__KEY_PREFIX", prefix.as_str()),
            ("RUNBOX_CLUSTER__LEASE_TTL_MS", ttl.as_str()),
            ("RUNBOX_SESSIONS__OWNER", self.owner.as_str()),
            // A node that stops hands its sessions over (the shipped default).
            ("RUNBOX_SESSIONS__KEEP_ON_SHUTDOWN", "true"),
        ];
        env.extend_from_slice(extra);
        ServerProcess::start(&env, None, None).await
    }

    fn base(&self, n: usize) -> String {
        self.nodes[n].as_ref().expect("a live node").base.clone()
    }

    /// SIGKILL: nothing of the node runs its shutdown.
    async fn kill(&mut self, n: usize) {
        if let Some(mut node) = self.nodes[n].take() {
            node.child.kill().await.unwrap();
        }
    }

    async fn stop(&mut self, n: usize) {
        if let Some(node) = self.nodes[n].take() {
            node.stop().await;
        }
    }

    /// Stops every node; then the suite's keys in Redis may only be rate buckets, and no
    /// container of the cluster's sessions is left. A killed node's heartbeat keys lapse by
    /// themselves within a lease TTL: that long is waited for.
    async fn finish(mut self) {
        for n in 0..self.nodes.len() {
            self.stop(n).await;
        }
        let stopped = Instant::now();
        loop {
            let left: Vec<String> = self
                .redis
                .keys(&self.prefix)
                .await
                .into_iter()
                .filter(|key| !key.starts_with(&format!("{}rate:", self.prefix)))
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_millis(LEASE_TTL_MS + 500),
                "keys left in Redis: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_until_no_containers(&[format!("runbox.session.owner={}", self.owner)]).await;
        self.redis.kill().await;
    }
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the node answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn new_session(base: &str) -> String {
    let (status, body) = post(&format!("{base}/sessions"), json!({"language": "python"})).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn run_in(base: &str, id: &str, code: &str) -> (u16, Value) {
    post(
        &format!("{base}/sessions/{id}/run"),
        json!({"language": "python", "code": code}),
    )
    .await
}

async fn delete(base: &str, id: &str) -> u16 {
    reqwest::Client::new()
        .delete(format!("{base}/sessions/{id}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn every_session_answers_through_every_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    // One client holds all 30 (the cap counts over every node).
    let Some(cluster) = Cluster::start(3, &[("RUNBOX_SESSIONS__MAX_PER_CLIENT", "30")]).await
    else {
        return;
    };
    // 30 sessions, created round the nodes; each run goes to a node that does not host it.
    let mut sessions = Vec::new();
    for i in 0..30 {
        let host = i % 3;
        sessions.push((host, new_session(&cluster.base(host)).await));
    }
    let (mut direct, mut hopped) = (Vec::new(), Vec::new());
    for (i, (host, id)) in sessions.iter().enumerate() {
        let write = format!("open('mine', 'w').write('{i}'); print('ok')");
        let other = (host + 1 + i % 2) % 3;
        let (status, body) = run_in(&cluster.base(other), id, &write).await;
        assert_eq!(
            (status, body["stdout"].as_str()),
            (200, Some("ok\n")),
            "{body}"
        );
        // Warm both ways, then time each (the same program, the same sandbox).
        for _ in 0..3 {
            let started = Instant::now();
            let (status, body) =
                run_in(&cluster.base(*host), id, "print(open('mine').read())").await;
            direct.push(started.elapsed());
            assert_eq!(
                (status, body["stdout"].as_str()),
                (200, Some(format!("{i}\n").as_str()))
            );
            let started = Instant::now();
            let (status, body) =
                run_in(&cluster.base(other), id, "print(open('mine').read())").await;
            hopped.push(started.elapsed());
            assert_eq!(
                (status, body["stdout"].as_str()),
                (200, Some(format!("{i}\n").as_str()))
            );
        }
    }
    let (direct, hopped) = (p50(direct), p50(hopped));
    eprintln!(
        "a session's run, p50 of 90: at its host {direct:?}, through another node {hopped:?}"
    );

    // A room through the hop: a keystroke typed on a node that does not host the session
    // echoes back; p50 of 50.
    let (host, id) = &sessions[0];
    let other = (host + 1) % 3;
    let ws = format!(
        "{}/sessions/{id}/terminal",
        cluster.base(other).replacen("http", "ws", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws)
        .await
        .expect("the hop upgrades");
    socket
        .send(Message::text(json!({"type": "start"}).to_string()))
        .await
        .unwrap();
    let mut echoes = Vec::new();
    for i in 0..50 {
        let mark = format!("k{i}z");
        let started = Instant::now();
        socket
            .send(Message::text(
                json!({"type": "input", "data": mark}).to_string(),
            ))
            .await
            .unwrap();
        let mut seen = String::new();
        while !seen.contains(&mark) {
            let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("the echo comes back")
                .expect("the socket stays open")
                .unwrap();
            if let Message::Text(text) = frame {
                let event: Value = serde_json::from_str(&text).unwrap();
                if event["type"] == "output" {
                    seen.push_str(event["data"].as_str().unwrap_or_default());
                }
            }
        }
        echoes.push(started.elapsed());
    }
    let _ = socket.close(None).await;
    eprintln!(
        "a keystroke's echo through another node, p50 of 50: {:?}",
        p50(echoes)
    );

    for (host, id) in &sessions {
        assert_eq!(delete(&cluster.base((host + 2) % 3), id).await, 204);
    }
    cluster.finish().await;
}

#[tokio::test]
async fn a_killed_node_loses_only_its_requests_in_flight() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let mut sessions = Vec::new();
    for i in 0..5 {
        let id = new_session(&cluster.base(0)).await;
        let (status, _) = run_in(
            &cluster.base(0),
            &id,
            &format!("open('f', 'w').write('{i}')"),
        )
        .await;
        assert_eq!(status, 200);
        sessions.push(id);
    }
    // A run in flight on the node about to die.
    let doomed = {
        let url = format!("{}/sessions/{}/run", cluster.base(0), sessions[0]);
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({"language": "python", "code": "import time; time.sleep(5)"}))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.kill(0).await;
    let killed = Instant::now();
    assert!(
        doomed.await.unwrap().is_err(),
        "the killed node's in-flight run fails"
    );
    // Every one of its sessions answers through the other node within the lease's TTL + 1 s
    // (the hop waits while the dead host's lease runs out), its file intact.
    for (i, id) in sessions.iter().enumerate() {
        let (status, body) = run_in(&cluster.base(1), id, "print(open('f').read())").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["stdout"], format!("{i}\n"));
    }
    let moved = killed.elapsed();
    eprintln!("5 sessions of a node killed -9 answered through another after {moved:?}");
    assert!(
        moved
            < Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(1) + Duration::from_secs(1),
        "taken over in {moved:?}"
    );
    for id in &sessions {
        assert_eq!(delete(&cluster.base(1), id).await, 204);
    }
    cluster.finish().await;
}

#[tokio::test]
async fn a_killed_nodes_pool_and_jobs_are_swept_by_another_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut cluster) = Cluster::start(
        2,
        &[
            ("RUNBOX_POOL__ENABLED", "true"),
            ("RUNBOX_POOL__SIZES", "{ python = 2 }"),
            ("RUNBOX_SANDBOX__SWEEP_INTERVAL_SECS", "1"),
        ],
    )
    .await
    else {
        return;
    };
    let of_node_0 = [format!("runbox.node={}", cluster.node_ids[0])];
    let started = Instant::now();
    while containers_with_labels(&of_node_0).await.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node 0's pool never filled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A job in flight on node 0 when it dies: its own container, besides the pool's.
    let base = cluster.base(0);
    let in_flight = tokio::spawn(async move {
        let body = json!({"language": "python", "code": "import time; time.sleep(30)"});
        let _ = reqwest::Client::new()
            .post(format!("{base}/run"))
            .json(&body)
            .send()
            .await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(0).await;
    in_flight.await.unwrap();
    let killed = Instant::now();
    // Node 1's sweep (each second): node 0's heartbeat lapses within a lease TTL, it is still
    // missing one lease later, and its containers go, far sooner than their lifetime bound.
    wait_until_no_containers(&of_node_0).await;
    let swept = killed.elapsed();
    assert!(
        swept < Duration::from_millis(3 * LEASE_TTL_MS + 5000),
        "swept after {swept:?}"
    );
    // Node 1's own pool was not touched.
    let of_node_1 = [format!("runbox.node={}", cluster.node_ids[1])];
    assert!(containers_with_labels(&of_node_1).await.len() >= 2);
    cluster.finish().await;
}

#[tokio::test]
async fn a_stopped_node_hands_its_sessions_over_without_a_failure() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(new_session(&cluster.base(0)).await);
    }
    // Runs go on through node 1 while node 0, their host, gets SIGTERM.
    let base = cluster.base(1);
    let runner = {
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let until = Instant::now() + Duration::from_secs(6);
            while Instant::now() < until {
                for id in &sessions {
                    answers.push(run_in(&base, id, "print(6 * 7)").await);
                }
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.stop(0).await;
    let answers = runner.await.unwrap();
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    eprintln!(
        "{} runs while the host stopped, {} failed",
        answers.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(answers.len() > 8);
    for id in &sessions {
        assert_eq!(delete(&cluster.base(1), id).await, 204);
    }
    cluster.finish().await;
}

#[tokio::test]
async fn one_rule_holds_over_every_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rules = r#"{runs = {routes = ["POST /run"], requests = 100, window_secs = 3600}}"#;
    let Some(cluster) = Cluster::start(
        3,
        &[
            ("RUNBOX_RATE_LIMIT__ENABLED", "true"),
            ("RUNBOX_RATE_LIMIT__RULES", rules),
        ],
    )
    .await
    else {
        return;
    };
    let bases: Vec<String> = (0..3).map(|n| cluster.base(n)).collect();
    // 150 runs from one client, spread over the three nodes, 6 at a time.
    let answers = futures_util::stream::iter(0..150)
        .map(|i| {
            let url = format!("{}/run", bases[i % 3]);
            async move {
                post(&url, json!({"language": "python", "code": "print(1)"}))
                    .await
                    .0
            }
        })
        .buffer_unordered(6)
        .collect::<Vec<u16>>()
        .await;
    let allowed = answers.iter().filter(|s| **s == 200).count();
    let limited = answers.iter().filter(|s| **s == 429).count();
    assert_eq!((allowed, limited), (100, 50), "{answers:?}");
    cluster.finish().await;
}

#[tokio::test]
async fn redis_restarted_empty_is_rebuilt() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let mut sessions = Vec::new();
    for i in 0..4 {
        let host = i % 2;
        let id = new_session(&cluster.base(host)).await;
        let (status, _) = run_in(
            &cluster.base(host),
            &id,
            &format!("open('f', 'w').write('{i}')"),
        )
        .await;
        assert_eq!(status, 200);
        sessions.push((host, id));
    }
    // One-shot runs on both nodes all along.
    let bases = [cluster.base(0), cluster.base(1)];
    let runs = {
        let bases = bases.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let until = Instant::now() + Duration::from_secs(8);
            let mut i = 0;
            while Instant::now() < until {
                let url = format!("{}/run", bases[i % 2]);
                statuses.push(
                    post(&url, json!({"language": "python", "code": "print(1)"}))
                        .await
                        .0,
                );
                i += 1;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.redis.kill().await;
    // Meanwhile a session's host goes on serving it; another node cannot find it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (host, id) = &sessions[0];
    let (status, body) = run_in(&bases[*host], id, "print(open('f').read())").await;
    assert_eq!(
        (status, body["stdout"].as_str()),
        (200, Some("0\n")),
        "{body}"
    );
    let (status, body) = run_in(&bases[(host + 1) % 2], id, "print(1)").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("state_unavailable")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.redis.spawn().await;
    let restarted = Instant::now();
    // Each session answers again, at its host and through the other node.
    let mut rebuilt = Duration::ZERO;
    for (i, (host, id)) in sessions.iter().enumerate() {
        let other = (host + 1) % 2;
        let started = Instant::now();
        loop {
            let (status, body) = run_in(&bases[other], id, "print(open('f').read())").await;
            if status == 200 {
                assert_eq!(body["stdout"], format!("{i}\n"));
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "session {i} not reachable again: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rebuilt = rebuilt.max(restarted.elapsed());
    }
    eprintln!("every session reachable again {rebuilt:?} after Redis came back empty");
    let statuses = runs.await.unwrap();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    eprintln!(
        "one-shot runs while Redis was down and back: {ok} of {} succeeded",
        statuses.len()
    );
    assert!(ok * 100 >= statuses.len() * 95, "{statuses:?}");
    for (host, id) in &sessions {
        assert_eq!(delete(&bases[*host], id).await, 204);
    }
    cluster.finish().await;
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the node answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A python submission to Judge0's asynchronous API; its token.
async fn submit(base: &str, code: &str) -> String {
    let (status, created) = post(
        &format!("{base}/judge0/submissions"),
        json!({"source_code": code, "language_id": 71}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["token"].as_str().unwrap().to_owned()
}

/// Deletes a finished submission; the answer (the submission as it was).
async fn delete_submission(base: &str, token: &str) -> Value {
    let deleted = reqwest::Client::new()
        .delete(format!("{base}/judge0/submissions/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    deleted.json().await.unwrap()
}

/// Polls a Judge0 submission until its status is past "In Queue" (1) and "Processing" (2),
/// or until it shows `status`; bounded in time.
async fn poll_submission(base: &str, token: &str, until_status: Option<u64>) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = get_json(&format!("{base}/judge0/submissions/{token}")).await;
        assert_eq!(status, 200, "{body}");
        let id = body["status"]["id"].as_u64().unwrap_or(0);
        if until_status.map_or(id > 2, |wanted| id == wanted) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "submission {token} still at {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Judge0's asynchronous API behind a load balancer: a client posts to one node and polls
/// another; a delete through either removes it everywhere; a submission whose node is killed
/// while it runs ends as Judge0's Internal Error once that node's heartbeat lapses, never
/// "Processing" forever.
#[tokio::test]
async fn a_submission_is_seen_from_every_node_and_ends_when_its_node_dies() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut cluster) =
        Cluster::start(2, &[("RUNBOX_JUDGE0__SUBMISSION_DELETE", "true")]).await
    else {
        return;
    };
    let bases = [cluster.base(0), cluster.base(1)];
    let token = submit(&bases[0], "print('hi')").await;
    let finished = poll_submission(&bases[1], &token, None).await;
    assert_eq!(
        (
            finished["status"]["id"].as_u64(),
            finished["stdout"].as_str()
        ),
        (Some(3), Some("hi\n")),
        "{finished}"
    );
    // Every field the same at either node.
    let all = format!("judge0/submissions/{token}?fields=*");
    let (_, at_its_node) = get_json(&format!("{}/{all}", bases[0])).await;
    let (_, elsewhere) = get_json(&format!("{}/{all}", bases[1])).await;
    assert_eq!(at_its_node, elsewhere);
    assert_eq!(elsewhere["source_code"], "print('hi')");
    let unknown = uuid::Uuid::new_v4();
    let (status, batch) = get_json(&format!(
        "{}/judge0/submissions/batch?tokens={token},{unknown}",
        bases[1]
    ))
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["submissions"][0]["token"], token.as_str(), "{batch}");
    assert_eq!(batch["submissions"][1], Value::Null, "{batch}");
    // Deleted through the other node: gone from both.
    let gone = delete_submission(&bases[1], &token).await;
    assert_eq!(
        gone["stdout"], "hi\n",
        "the answer is the submission as it was"
    );
    for base in &bases {
        let (status, body) = get_json(&format!("{base}/judge0/submissions/{token}")).await;
        assert_eq!(status, 404, "{body}");
    }

    // A node killed while its submission runs.
    let token = submit(&bases[0], "import time; time.sleep(3)").await;
    poll_submission(&bases[1], &token, Some(2)).await;
    cluster.kill(0).await;
    let killed = Instant::now();
    let ended = poll_submission(&bases[1], &token, None).await;
    let after = killed.elapsed();
    eprintln!("a killed node's submission ended as abandoned {after:?} after the kill");
    assert_eq!(
        ended["status"],
        json!({"id": 13, "description": "Internal Error"}),
        "{ended}"
    );
    assert!(
        after < Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(2),
        "ended after {after:?}"
    );
    delete_submission(&bases[1], &token).await;
    cluster.finish().await;
}
