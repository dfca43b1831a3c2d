//! `TestApp`: a runbox server started in-process on port 0 against the real Docker engine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use reqwest::StatusCode;
use runbox::app::Server;
use runbox::config::Config;
use serde_json::Value;

/// How long a removed job's container may take to disappear (removal runs after the response).
const REMOVAL_DEADLINE: Duration = Duration::from_secs(15);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The config override naming the container runtime; taken from the test process's environment.
pub const RUNTIME_VARIABLE: &str = "RUNBOX_SANDBOX__RUNTIME";

/// True when the suite runs under gVisor, where a few measurements differ (each use says why).
pub fn under_gvisor() -> bool {
    std::env::var(RUNTIME_VARIABLE).is_ok_and(|r| r == "runsc")
}

/// The config override choosing how job sandboxes are used (`nested` reuse, the shipped
/// default, or `fresh`); like the runtime, the environment may choose it for a whole suite.
pub const REUSE_VARIABLE: &str = "RUNBOX_SANDBOX__REUSE";

/// True when job sandboxes are reused with a nested sandbox per job (never under gVisor).
pub fn nested_sandboxes() -> bool {
    !under_gvisor() && std::env::var(REUSE_VARIABLE).map_or(true, |r| r != "fresh")
}

pub struct TestApp {
    pub base: String,
    pub server: Server,
    /// Keeps the server's runtime alive for as long as the app lives.
    _runtime: Option<std::thread::JoinHandle<()>>,
}

/// The shared app most tests use: the shipped config, started once on its own runtime thread
/// (each `#[tokio::test]` has its own runtime, which ends with the test).
pub fn shared() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| start_on_own_runtime(&[]))
}

/// A separate app with config overrides (`RUNBOX_<SECTION>__<KEY>` names), on its own runtime.
///
/// The warm pool is off unless the overrides turn it on: the test process never shuts its
/// shared apps down, and their pooled sandboxes would outlive it (tests of the pool start their
/// own app and shut it down). Likewise for sessions, below.
pub fn start_on_own_runtime(overrides: &[(&str, &str)]) -> TestApp {
    // Sessions: each app has its own owner name (apps must not take back each other's
    // sessions) and removes its sessions at shutdown, unless a test says otherwise.
    let owner = format!("test-{}", uuid::Uuid::new_v4().simple());
    // The container runtime is the one thing the environment chooses, so that CI runs the
    // same suites under runc and under runsc (gVisor).
    let runtime = std::env::var(RUNTIME_VARIABLE).unwrap_or_else(|_| "runc".into());
    let reuse = std::env::var(REUSE_VARIABLE).unwrap_or_else(|_| "nested".into());
    let with_defaults: Vec<(&str, &str)> = [
        ("RUNBOX_POOL__ENABLED", "false"),
        ("RUNBOX_SESSIONS__OWNER", owner.as_str()),
        ("RUNBOX_SESSIONS__KEEP_ON_SHUTDOWN", "false"),
        (RUNTIME_VARIABLE, runtime.as_str()),
        (REUSE_VARIABLE, reuse.as_str()),
        // The suite sends far more runs from one address than a client may; the edge tests
        // turn the limits back on. Likewise for REPL starts on one terminal (the room tests
        // start every language's REPL in one session; `rooms::starts_are_rate_limited…` keeps
        // the shipped rate).
        ("RUNBOX_RATE_LIMIT__ENABLED", "false"),
        ("RUNBOX_TERMINAL__STARTS_PER_MINUTE", "100000"),
    ]
    .into_iter()
    .chain(overrides.iter().copied())
    .collect();
    let config =
        Config::load_with_overrides(&repo_root().join("config/runbox.toml"), &with_defaults)
            .expect("test config is valid");
    let (sender, receiver) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = Server::start(config, listener)
                .await
                .expect("server starts");
            sender.send(server).unwrap();
            // Serve until the process exits.
            std::future::pending::<()>().await;
        });
    });
    let server = receiver.recv().expect("server started");
    TestApp {
        base: format!("http://{}", server.addr),
        server,
        _runtime: Some(thread),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs a JSON body to /run; returns status and body (which is always JSON).
    pub async fn run(&self, body: Value) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(self.url("/run"))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    /// Runs a job that must be accepted (200) and returns its result.
    pub async fn run_ok(&self, body: Value) -> Value {
        let (status, result) = self.run(body).await;
        assert_eq!(status, StatusCode::OK, "{result}");
        result
    }
}

pub async fn docker() -> Docker {
    Docker::connect_with_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// Containers carrying every given label (`key=value`).
pub async fn containers_with_labels(labels: &[String]) -> Vec<bollard::models::ContainerSummary> {
    let filters = HashMap::from([("label".to_owned(), labels.to_vec())]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker().await.list_containers(Some(options)).await.unwrap()
}

/// Asserts that the container of job `id` is gone (or goes within the removal deadline).
pub async fn assert_removed(id: &str) {
    let labels = [format!("runbox.id={id}")];
    let started = Instant::now();
    loop {
        let left = containers_with_labels(&labels).await;
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < REMOVAL_DEADLINE,
            "container of job {id} still exists after {REMOVAL_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a job, checks it was accepted, and that its container is removed afterwards.
pub async fn run_and_clean(body: Value) -> Value {
    let result = shared().run_ok(body).await;
    assert_removed(result["id"].as_str().expect("job id")).await;
    result
}

/// POSTs /sessions for `language`; returns status and body.
pub async fn create_session(app: &TestApp, language: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(app.url("/sessions"))
        .json(&serde_json::json!({ "language": language }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Creates a session that must be accepted; returns its id.
pub async fn session_id(app: &TestApp, language: &str) -> String {
    let (status, body) = create_session(app, language).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// As [`session_id`], on the server at `base` (e.g. a [`ServerProcess`]).
pub async fn session_id_at(base: &str, language: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/sessions"))
        .json(&serde_json::json!({ "language": language }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// GET /sessions/{id}: status and body (`null` when not JSON).
pub async fn get_session(app: &TestApp, id: &str) -> (StatusCode, Value) {
    let response = reqwest::get(app.url(&format!("/sessions/{id}")))
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Containers of session `id` (each sandbox it has had and not yet removed).
pub async fn session_containers(id: &str) -> usize {
    containers_with_labels(&[format!("runbox.session.id={id}")])
        .await
        .len()
}

/// Waits (within the removal deadline) until session `id` has at most `most` containers.
pub async fn wait_for_session_containers(id: &str, most: usize) {
    let started = Instant::now();
    while session_containers(id).await > most {
        assert!(
            started.elapsed() < REMOVAL_DEADLINE,
            "session {id} still has more than {most} containers after {REMOVAL_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs a run to session `id`; returns status and body.
pub async fn run_in_session(app: &TestApp, id: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(app.url(&format!("/sessions/{id}/run")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// A free port on the loopback (bound, then released for a server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `runbox serve` as its own process (for what an in-process app cannot show: its open-file
/// limit, its log lines). Killed when dropped.
pub struct ServerProcess {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub child: tokio::process::Child,
}

impl ServerProcess {
    /// Starts the binary with `env` on top of the test defaults (pool off, rate limits off,
    /// an owner of its own, the suite's runtime), logging to `log` when given, and waits
    /// until it answers; `open_files` sets its open-file limit (soft and hard).
    pub async fn start(
        env: &[(&str, &str)],
        open_files: Option<u64>,
        log: Option<&std::path::Path>,
    ) -> ServerProcess {
        let port = free_port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let owner = format!("process-{}", uuid::Uuid::new_v4().simple());
        let runtime = std::env::var(RUNTIME_VARIABLE).unwrap_or_else(|_| "runc".into());
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbox"));
        command
            .arg("serve")
            .current_dir(repo_root())
            .env("RUNBOX_LISTEN", addr.to_string())
            .env("RUNBOX_POOL__ENABLED", "false")
            .env("RUNBOX_RATE_LIMIT__ENABLED", "false")
            .env("RUNBOX_SESSIONS__OWNER", &owner)
            .env("RUNBOX_SESSIONS__KEEP_ON_SHUTDOWN", "false")
            .env(RUNTIME_VARIABLE, runtime)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        match log {
            Some(path) => {
                let file = std::fs::File::create(path).unwrap();
                command.stdout(file.try_clone().unwrap()).stderr(file);
            }
            None => {
                command
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
            }
        }
        if let Some(limit) = open_files {
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            #[expect(unsafe_code, reason = "pre_exec and setrlimit are unsafe by nature")]
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("runbox serve starts");
        let base = format!("http://{addr}");
        let started = Instant::now();
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server never came up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ServerProcess { base, addr, child }
    }

    /// SIGTERM, then waits for the exit (which removes the server's containers).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child.
            #[expect(unsafe_code, reason = "kill(2) has no safe wrapper here")]
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM)
            };
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}

impl TestApp {
    /// A counter or gauge of this app's `/metrics` as a whole number, 0 when absent.
    pub async fn metric(&self, sample: &str) -> u64 {
        metric(&self.base, sample).await as u64
    }
}

/// Waits until `language`'s pool holds a ready sandbox (after a job: until the one that served
/// it has cleaned up and come back), at most 30 s.
pub async fn wait_for_pool_ready(app: &TestApp, language: &str) {
    let sample = format!("runbox_pool_sandboxes{{language=\"{language}\",state=\"ready\"}}");
    let started = Instant::now();
    while app.metric(&sample).await < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no ready {language} sandbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no container carries every label of `labels` (an app's pool after its
/// shutdown), at most 15 s.
pub async fn wait_until_no_containers(labels: &[String]) {
    let started = Instant::now();
    loop {
        let left: Vec<_> = containers_with_labels(labels)
            .await
            .into_iter()
            .filter(|c| c.state != Some(bollard::models::ContainerSummaryStateEnum::EXITED))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "containers {labels:?} left: {}",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one sample of `/metrics` (`name{labels}` as exposed), 0 when absent.
pub async fn metric(base: &str, sample: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Runs a published client's script (`program script args…`, from `tests/clients`, which the
/// test setup installs) and returns the one JSON object it prints.
pub async fn published_client(program: &std::path::Path, script: &str, args: &[&str]) -> Value {
    let output = tokio::process::Command::new(program)
        .arg(repo_root().join("tests/clients").join(script))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{} runs (the test setup installs tests/clients): {e}",
                program.display()
            )
        });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
