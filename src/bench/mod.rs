//! `runbox bench`: latency and throughput of python and C hello world through the server, with
//! the warm pool on and off, next to the same program as a bare process, as a hardened
//! `docker run --rm`, as a bare Engine API run, and next to the engine's own
//! create+start+remove ceiling, all measured in one run on this machine. It also shows where a
//! sandbox's time goes and what each hardening setting costs.
//!
//! Without `--url` it starts `runbox serve` twice as a child process (pool on, then pool off),
//! so the server's own CPU time can be read from /proc and compared with the machine's.
//!
//! `--sessions` and `--terminal` measure instead what idle sessions cost and how fast a
//! keystroke comes back through a room ([`terminal`]).

mod files;
mod languages;
mod terminal;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::config::{Config, Reuse};
use crate::sandbox::measure::{self, StepTimes, Variant};
use crate::sandbox::{MainProcess, Sandboxes};

const WARMUP_RUNS: usize = 3;
/// Rounds per policy variant in the flag-cost table.
const VARIANT_ROUNDS: usize = 20;
/// Rounds of the step-by-step timing.
const STEP_ROUNDS: usize = 10;
/// Runs of each language's hello world in the per-language table (the catalogue issue's
/// table was a median of 5).
const LANGUAGE_RUNS: usize = 5;
/// Concurrency of the engine ceiling (the reference point).
const CEILING_CONCURRENCY: usize = 8;
/// How long a pool may take to fill before a warm measurement.
const POOL_FILL_TIMEOUT: Duration = Duration::from_secs(60);

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A running server to measure instead of starting two.
    pub url: Option<String>,
    pub config_path: PathBuf,
    /// Sequential runs per language and server.
    pub runs: usize,
    /// How long the back-to-back series of each language and server lasts (at least `runs`
    /// runs): the retired sandboxes a long series sees replaced are part of what it measures.
    pub back_to_back: Duration,
    /// Length of each throughput phase.
    pub duration: Duration,
    pub concurrency: Vec<usize>,
    /// Skip the step timings and the flag-cost table.
    pub skip_engine: bool,
    /// Instead of everything else: open this many idle sessions each and report their cost.
    pub sessions: Vec<usize>,
    /// Instead of everything else: the keystroke echo round trip through a room.
    pub terminal: bool,
    /// Instead of everything else: mixed and hostile programs at concurrency 16 for this long.
    pub soak: Option<Duration>,
    /// Instead of everything else: a warm python run on each engine of the cluster alone.
    pub engines: bool,
    /// Instead of everything else: the ceiling of one engine, then of two at once.
    pub ceiling_scaling: bool,
    /// Instead of everything else: hello world and the scientific imports in python, a plot
    /// and a 1 MiB file returned (see [`files`]).
    pub files: bool,
}

/// A hello world per language.
struct Program {
    language: &'static str,
    code: &'static str,
    /// argv of the same program in the language's image (baselines that bypass runbox).
    container_argv: &'static [&'static str],
}

const PROGRAMS: [Program; 2] = [
    Program {
        language: "python",
        code: "print(\"hello\")",
        container_argv: &["python3", "-c", "print(\"hello\")"],
    },
    Program {
        language: "c",
        code: "#include <stdio.h>\nint main(void){ puts(\"hello\"); return 0; }",
        container_argv: &[
            "sh",
            "-c",
            "printf '#include <stdio.h>\\nint main(void){ puts(\"hello\"); return 0; }' > /box/m.c && gcc -O2 -o /box/m /box/m.c && /box/m",
        ],
    },
];

pub async fn run(config: Config, options: BenchOptions) -> anyhow::Result<()> {
    let bench = run_selected(config, options);
    let signal = tokio::select! {
        result = bench => return result,
        signal = interrupted() => signal,
    };
    // The bench is dropped: every server it started has been sent SIGTERM (see
    // `ServerUnderTest`'s drop) and every sandbox of its own queued for removal.
    let engines: Vec<Sandboxes> = std::mem::take(&mut *lock(&OWN_ENGINES));
    for sandboxes in engines {
        sandboxes.shutdown().await;
    }
    let servers: Vec<u32> = std::mem::take(&mut *lock(&SPAWNED_SERVERS));
    let started = Instant::now();
    while servers.iter().any(|&pid| process_lives(pid)) && started.elapsed() < SERVER_STOP_WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "stopped by {signal}: its servers were stopped (their sandboxes removed) and its own sandboxes removed"
    )
}

/// How long an interrupted bench waits for the servers it started to end.
const SERVER_STOP_WAIT: Duration = Duration::from_secs(30);

/// The servers the bench started (pids), stopped when it is interrupted; and its own engine
/// handles, shut down then. Without this a SIGTERM ended the bench and left its server
/// running, with that server's pool.
static SPAWNED_SERVERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static OWN_ENGINES: Mutex<Vec<Sandboxes>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGINT or SIGTERM, by name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Whether `pid` is still a running process (a zombie has ended: its exit is only unread).
fn process_lives(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn run_selected(config: Config, options: BenchOptions) -> anyhow::Result<()> {
    if !options.sessions.is_empty() {
        return sessions_bench(&config, &options).await;
    }
    if let Some(length) = options.soak {
        return soak(&config, &options, length).await;
    }
    if options.engines {
        return engines_bench(&config, &options).await;
    }
    if options.ceiling_scaling {
        return ceiling_scaling(&config, &options).await;
    }
    if options.files {
        let server = match &options.url {
            Some(url) => ServerUnderTest::given(url),
            None => {
                ServerUnderTest::spawn(&options.config_path, true, config.sandbox.reuse).await?
            }
        };
        let result = files::measure(&server, options.runs).await;
        server.stop().await;
        return result;
    }
    if options.terminal {
        let sandboxes = connect(&config).await?;
        let result = terminal::keystroke_echo(&options, &sandboxes).await;
        sandboxes.shutdown().await;
        return result;
    }
    let sandboxes = connect(&config).await?;
    let result = run_all(&config, &options, &sandboxes).await;
    sandboxes.shutdown().await;
    result
}

/// The bench's own handle to the engine (it starts no sweep: the measured servers' sandboxes
/// are theirs).
async fn connect(config: &Config) -> anyhow::Result<Sandboxes> {
    let sandboxes = crate::sandbox::Sandboxes::connect(
        crate::config::LOCAL_ENGINE_ID,
        &local_address(config),
        config.sandbox.clone(),
        crate::sandbox::SandboxBudget::unbounded(),
    )
    .await?;
    lock(&OWN_ENGINES).push(sandboxes.clone());
    Ok(sandboxes)
}

fn local_address(config: &Config) -> crate::sandbox::EngineAddress<'_> {
    match config.engine.host.as_str() {
        "" => crate::sandbox::EngineAddress::Default,
        host => crate::sandbox::EngineAddress::Host(host),
    }
}

/// The one scaling point a 2-core machine can show: the engine ceiling (hardened idle
/// sandboxes created, started and removed at concurrency `CEILING_CONCURRENCY` each) of the
/// first two engines of `cluster.engines`, the first alone, then both at once. Pinned each to
/// a CPU of its own (`scripts/engines.sh pin`), two engines are two machines' worth of engine.
async fn ceiling_scaling(config: &Config, options: &BenchOptions) -> anyhow::Result<()> {
    let entries = &config.cluster.engines;
    if entries.len() < 2 {
        bail!("--ceiling-scaling needs two engines in cluster.engines");
    }
    let python = config
        .languages
        .resolve("python")
        .context("no python in the catalogue")?
        .clone();
    let mut engines = Vec::new();
    for entry in entries.iter().take(2) {
        let sandboxes = crate::sandbox::Sandboxes::connect(
            &entry.id,
            &crate::sandbox::EngineAddress::of(entry),
            config.sandbox.clone(),
            crate::sandbox::SandboxBudget::unbounded(),
        )
        .await?;
        lock(&OWN_ENGINES).push(sandboxes.clone());
        if let Some(parent) = &entry.cgroup_parent {
            sandboxes.cgroups_under(parent);
        }
        engines.push((entry.id.clone(), sandboxes));
    }
    let ceiling_of = |sandboxes: Sandboxes| {
        let (image, memory) = (python.image_ref(), python.memory_mb);
        let duration = options.duration;
        async move {
            sandboxes
                .engine_ceiling(
                    move || measure::spec_for(&image, "python", memory, MainProcess::Idle),
                    CEILING_CONCURRENCY,
                    duration,
                )
                .await
        }
    };
    let seconds = options.duration.as_secs_f64();
    section(&format!(
        "Engine ceiling scaling: create+start+remove at concurrency {CEILING_CONCURRENCY} per engine, {} s each",
        options.duration.as_secs()
    ));
    let (first_id, first) = &engines[0];
    let alone = ceiling_of(first.clone()).await? as f64 / seconds;
    println!("{first_id} alone: {alone:.2} containers/s");
    let (second_id, second) = &engines[1];
    let (a, b) = tokio::join!(ceiling_of(first.clone()), ceiling_of(second.clone()));
    let (a, b) = (a? as f64 / seconds, b? as f64 / seconds);
    println!(
        "{first_id} and {second_id} at once: {a:.2} + {b:.2} = {:.2} containers/s, {:.2}x the one engine",
        a + b,
        (a + b) / alone.max(f64::MIN_POSITIVE)
    );
    for (_, sandboxes) in engines {
        sandboxes.shutdown().await;
    }
    Ok(())
}

/// What each engine adds to a warm run: a server per engine of `cluster.engines`, that engine
/// alone with a warm python pool, one client back to back (python only: the other images need
/// not be on every engine, so these servers are taken as up once a run succeeds).
async fn engines_bench(config: &Config, options: &BenchOptions) -> anyhow::Result<()> {
    if config.cluster.engines.is_empty() {
        bail!("--engines measures the engines of cluster.engines; the config lists none");
    }
    section(&format!(
        "engines: python hello world, one client, {} runs back to back, on each engine alone",
        options.runs
    ));
    println!("{:<44} {:>9} {:>9} {:>9}", "engine", "p50", "p95", "p99");
    let body = json!({"language": "python", "code": "print(\"hello\")"});
    let client = reqwest::Client::new();
    for engine in &config.cluster.engines {
        let mut entry = format!("{{id={:?}, host={:?}", engine.id, engine.host);
        for (key, path) in [
            ("tls_ca", &engine.tls_ca),
            ("tls_cert", &engine.tls_cert),
            ("tls_key", &engine.tls_key),
        ] {
            if let Some(path) = path {
                entry.push_str(&format!(", {key}={:?}", path.display().to_string()));
            }
        }
        if let Some(parent) = &engine.cgroup_parent {
            entry.push_str(&format!(", cgroup_parent={parent:?}"));
        }
        entry.push('}');
        let server = ServerUnderTest::spawn_until_python_runs(
            &options.config_path,
            &[
                ("RUNBOX_CLUSTER__ENGINES", format!("[{entry}]")),
                ("RUNBOX_POOL__ENABLED", "true".to_owned()),
                ("RUNBOX_POOL__SIZES", "{python=2}".to_owned()),
            ],
        )
        .await?;
        let url = server.url("/run");
        let samples = measure_sequential(options.runs, || post_run(&client, &url, &body)).await?;
        let scheme = engine.host.split("://").next().unwrap_or("");
        print_row(&format!("{} ({scheme})", engine.id), &samples);
        server.stop().await;
    }
    Ok(())
}

async fn run_all(
    config: &Config,
    options: &BenchOptions,
    sandboxes: &Sandboxes,
) -> anyhow::Result<()> {
    println!(
        "runbox bench: {} sequential runs per path, throughput phases of {} s, {} cores",
        options.runs,
        options.duration.as_secs(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let python = config
        .languages
        .resolve("python")
        .context("the catalogue has no python")?
        .clone();
    let python_spec =
        |main| measure::spec_for(&python.image_ref(), "python", python.memory_mb, main);

    if !options.skip_engine {
        section("Where a sandbox's time goes (python hello world through the runner)");
        let mut steps = Vec::new();
        for _ in 0..STEP_ROUNDS {
            let argv = PROGRAMS[0]
                .container_argv
                .iter()
                .map(|s| s.to_string())
                .collect();
            steps.push(
                sandboxes
                    .step_times(&python_spec(MainProcess::Runner), argv)
                    .await?,
            );
        }
        print_steps(&steps);

        section("What each hardening setting costs (create+start+remove of an idle sandbox)");
        let mut full = Duration::ZERO;
        println!("{:<36} {:>10} {:>10}", "policy", "median", "vs full");
        for variant in Variant::ALL {
            let mut samples = Vec::new();
            for _ in 0..VARIANT_ROUNDS {
                let started = Instant::now();
                sandboxes
                    .create_start_remove(&python_spec(MainProcess::Idle), variant)
                    .await?;
                samples.push(started.elapsed());
            }
            samples.sort();
            let median = percentile(&samples, 0.5);
            if variant == Variant::Full {
                full = median;
            }
            println!(
                "{:<36} {:>8.1}ms {:>+8.1}ms",
                variant.describe(),
                ms(median),
                ms(median) - ms(full)
            );
        }
    }

    section("Baselines (sequential)");
    println!("{:<44} {:>9} {:>9} {:>9}", "path", "p50", "p95", "p99");
    let mut baselines = Vec::new();
    for program in &PROGRAMS {
        let language = config
            .languages
            .resolve(program.language)
            .with_context(|| format!("the catalogue has no {}", program.language))?
            .clone();
        let spec = || {
            measure::spec_for(
                &language.image_ref(),
                &language.id,
                language.memory_mb.max(language.compile_memory_mb()),
                MainProcess::Idle,
            )
        };
        let argv: Vec<String> = program
            .container_argv
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(bare) = bare_process(program.language, options.runs).await? {
            print_row(
                &format!("{}: bare process on the host", program.language),
                &bare,
            );
            baselines.push((program.language, "bare", percentile(&bare, 0.5)));
        }
        let docker_run = measure_sequential(options.runs, || async {
            let out = sandboxes.docker_cli_run(&spec(), &argv).await?;
            anyhow::ensure!(out == b"hello\n", "docker run printed {out:?}");
            Ok(())
        })
        .await?;
        print_row(
            &format!("{}: docker run --rm (same flags)", program.language),
            &docker_run,
        );
        baselines.push((program.language, "docker_run", percentile(&docker_run, 0.5)));
        let api = measure_sequential(options.runs, || async {
            sandboxes.bare_run(&spec(), argv.clone()).await
        })
        .await?;
        print_row(
            &format!("{}: Engine API create+start+wait+remove", program.language),
            &api,
        );
        baselines.push((program.language, "api", percentile(&api, 0.5)));
    }

    section(&format!(
        "Engine ceiling: create+start+remove at concurrency {CEILING_CONCURRENCY} for {} s",
        options.duration.as_secs()
    ));
    let image = python.image_ref();
    let memory = python.memory_mb;
    let machine_before = machine_busy_seconds();
    let done = sandboxes
        .engine_ceiling(
            move || measure::spec_for(&image, "python", memory, MainProcess::Idle),
            CEILING_CONCURRENCY,
            options.duration,
        )
        .await?;
    let ceiling = done as f64 / options.duration.as_secs_f64();
    let machine = machine_busy_seconds()
        .zip(machine_before)
        .map(|(after, before)| after - before);
    println!(
        "{done} containers, {ceiling:.2} containers/s, {} of machine CPU per container",
        machine.map_or("n/a".to_owned(), |m| format!(
            "{:.0} ms",
            1000.0 * m / done.max(1) as f64
        ))
    );

    // Reuse first (the default), then a fresh container per job from the same pool (before
    // issue 20), then no pool at all (the cold path).
    let servers: Vec<(&str, Option<(bool, Reuse)>)> = match &options.url {
        Some(_) => vec![("given server", None)],
        None => vec![
            ("pool on, nested reuse", Some((true, Reuse::Nested))),
            (
                "pool on, fresh container per job",
                Some((true, Reuse::Fresh)),
            ),
            ("pool off", Some((false, Reuse::Fresh))),
        ],
    };
    let mut summary = Vec::new();
    for (name, setting) in servers {
        let pool = setting.map(|(pool, _)| pool);
        let server = match (&options.url, setting) {
            (Some(url), _) => ServerUnderTest::given(url),
            (None, Some((pool, reuse))) => {
                ServerUnderTest::spawn(&options.config_path, pool, reuse).await?
            }
            (None, None) => unreachable!("a spawned server always has a pool setting"),
        };
        let mut result = measure_server(&server, name, options).await;
        // The table once, on the first server (the default setup, or the given one).
        if result.is_ok() && summary.is_empty() {
            if let Err(err) = languages::table(&server, LANGUAGE_RUNS).await {
                result = Err(err);
            }
        }
        if result.is_ok() && pool != Some(false) {
            if let Err(err) = measure_compile_cache(&server, options.runs).await {
                result = Err(err);
            }
        }
        if result.is_ok() && pool != Some(false) {
            if let Err(err) = measure_dialects(&server, &config.languages, options.runs).await {
                result = Err(err);
            }
        }
        server.stop().await;
        summary.push((name, result?));
    }

    section("Summary");
    for (name, results) in &summary {
        for r in results {
            let bare = baselines
                .iter()
                .find(|(l, k, _)| *l == r.language && *k == "bare")
                .map(|b| b.2);
            let docker_run = baselines
                .iter()
                .find(|(l, k, _)| *l == r.language && *k == "docker_run")
                .map(|b| b.2);
            let api = baselines
                .iter()
                .find(|(l, k, _)| *l == r.language && *k == "api")
                .map(|b| b.2);
            // The baselines run back to back, so the comparison is with the back-to-back
            // figure; the paced one (the pool refilled before each run) is said as such.
            print!(
                "{name}, {}: p50 back to back {:.1} ms",
                r.language,
                ms(r.back_to_back_p50)
            );
            if let Some(bare) = bare {
                print!(" = {:.2}x bare process", ratio(r.back_to_back_p50, bare));
            }
            if let Some(d) = docker_run {
                print!(", {:.2}x docker run", ratio(r.back_to_back_p50, d));
            }
            if let Some(api) = api {
                print!(
                    ", {:+.1} ms vs Engine API run",
                    ms(r.back_to_back_p50) - ms(api)
                );
            }
            println!();
            println!(
                "    paced (the pool refilled before each run): p50 {:.1} ms",
                ms(r.paced_p50)
            );
            if let Some((runs_per_s, _)) = r.throughput_at(CEILING_CONCURRENCY) {
                println!(
                    "    throughput at concurrency {CEILING_CONCURRENCY}: {runs_per_s:.2} runs/s = {:.0}% of the engine ceiling ({ceiling:.2}/s)",
                    100.0 * runs_per_s / ceiling
                );
            }
            if let Some(share) = r.cpu_share {
                println!(
                    "    runbox's own CPU: {:.1}% of all CPU time used during its throughput phases",
                    100.0 * share
                );
            }
        }
    }
    Ok(())
}

/// Opens N idle sessions (for each N asked) on a spawned server and reports how long that took
/// and the memory they add: charged to their cgroups, and taken from the host as a whole
/// (`MemAvailable`, which also covers the engine's per-container shim).
async fn sessions_bench(config: &Config, options: &BenchOptions) -> anyhow::Result<()> {
    let sandboxes = connect(config).await?;
    let most = options.sessions.iter().copied().max().unwrap_or(0);
    println!("idle sessions (bash), created 8 at a time through POST /sessions");
    println!(
        "{:>6} {:>12} {:>14} {:>16} {:>18} {:>8}",
        "N", "create (s)", "per session", "cgroups / sess.", "host memory / sess.", "alive"
    );
    for &count in &options.sessions {
        let server = ServerUnderTest::spawn_with(
            &options.config_path,
            &[
                ("RUNBOX_POOL__ENABLED", "false".to_owned()),
                ("RUNBOX_SESSIONS__MAX_SESSIONS", most.to_string()),
                ("RUNBOX_SESSIONS__MAX_PER_CLIENT", most.to_string()),
                ("RUNBOX_SESSIONS__KEEP_ON_SHUTDOWN", "false".to_owned()),
                ("RUNBOX_LIMITS__MAX_SANDBOXES", (most + 16).to_string()),
            ],
        )
        .await?;
        let client = reqwest::Client::new();
        let available_before = mem_available_bytes();
        let started = Instant::now();
        let mut ids = Vec::with_capacity(count);
        for chunk in (0..count).collect::<Vec<_>>().chunks(8) {
            let created = futures_util::future::join_all(chunk.iter().map(|_| async {
                let response: Value = client
                    .post(server.url("/sessions"))
                    .json(&json!({ "language": "bash" }))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                response["id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("no session id")
            }))
            .await;
            for id in created {
                ids.push(id?);
            }
        }
        let took = started.elapsed();
        // Let the engine settle before reading memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (running, cgroup_bytes) = sandboxes
            .memory_of_kind(crate::sandbox::SandboxKind::Session)
            .await?;
        let host_bytes = available_before
            .zip(mem_available_bytes())
            .map(|(before, after)| before.saturating_sub(after));
        let mut alive = 0;
        for id in &ids {
            if client
                .get(server.url(&format!("/sessions/{id}")))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                alive += 1;
            }
        }
        let per = |bytes: Option<u64>| {
            bytes.map_or("n/a".to_owned(), |b| {
                format!("{:.2} MB", b as f64 / count.max(1) as f64 / 1e6)
            })
        };
        println!(
            "{:>6} {:>12.1} {:>12.0}ms {:>16} {:>18} {:>8}",
            count,
            took.as_secs_f64(),
            ms(took) / count.max(1) as f64,
            per(cgroup_bytes),
            per(host_bytes),
            format!("{alive}/{running}")
        );
        server.stop().await;
    }
    sandboxes.shutdown().await;
    Ok(())
}

/// `MemAvailable` of the host, in bytes.
fn mem_available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One language's results against one server.
struct ServerResults {
    language: &'static str,
    /// One run at a time, each after the pool has refilled (a user pressing Run now and then).
    paced_p50: Duration,
    /// One run at a time, each as soon as the last one answered: what a client that loops sees.
    back_to_back_p50: Duration,
    /// (concurrency, runs/s, p50, p99)
    throughput: Vec<(usize, f64, Duration, Duration)>,
    /// runbox's CPU over all CPU used, across the throughput phases (spawned servers only).
    cpu_share: Option<f64>,
}

impl ServerResults {
    fn throughput_at(&self, concurrency: usize) -> Option<(f64, Duration)> {
        self.throughput
            .iter()
            .find(|t| t.0 == concurrency)
            .map(|t| (t.1, t.2))
    }
}

async fn measure_server(
    server: &ServerUnderTest,
    name: &str,
    options: &BenchOptions,
) -> anyhow::Result<Vec<ServerResults>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let mut results = Vec::new();
    for program in &PROGRAMS {
        let body = json!({ "language": program.language, "code": program.code });
        let run_once = || {
            let (client, body, url) = (client.clone(), body.clone(), server.url("/run"));
            async move { post_run(&client, &url, &body).await }
        };
        section(&format!("{name}: {} hello world", program.language));
        let pool_target = server.pool_target(&client, program.language).await;
        // Paced: each run after the pool has refilled (a user pressing Run now and then), so a
        // pooled server is measured warm and an unpooled one cold. Back to back follows.
        let mut warm = 0;
        for _ in 0..WARMUP_RUNS {
            server
                .wait_pool_full(&client, program.language, pool_target)
                .await;
            run_once().await?;
        }
        let mut samples = Vec::new();
        for _ in 0..options.runs {
            if server
                .wait_pool_full(&client, program.language, pool_target)
                .await
            {
                warm += 1;
            }
            let started = Instant::now();
            run_once().await?;
            samples.push(started.elapsed());
        }
        samples.sort();
        println!("{:<44} {:>9} {:>9} {:>9}", "", "p50", "p95", "p99");
        print_row(
            &format!("paced ({warm} of {} after a pool refill)", options.runs),
            &samples,
        );
        // Back to back: the next run as soon as the last one answered, no waiting for the
        // pool (it refills while it can).
        server
            .wait_pool_full(&client, program.language, pool_target)
            .await;
        let made_before = sample(&server.metrics(&client).await, CONTAINERS_MADE);
        let mut back_to_back = Vec::new();
        let series = Instant::now();
        while back_to_back.len() < options.runs || series.elapsed() < options.back_to_back {
            let started = Instant::now();
            run_once().await?;
            back_to_back.push(started.elapsed());
        }
        let series = series.elapsed();
        let made_after = sample(&server.metrics(&client).await, CONTAINERS_MADE);
        back_to_back.sort();
        print_row(
            &format!(
                "back to back ({} runs in {:.0} s)",
                back_to_back.len(),
                series.as_secs_f64()
            ),
            &back_to_back,
        );
        if let (Some(before), Some(after)) = (made_before, made_after) {
            println!(
                "    {}",
                containers_made_line(after - before, back_to_back.len())
            );
        }
        if pool_target > 0 {
            server
                .wait_pool_full(&client, program.language, pool_target)
                .await;
            let burst = futures_util::future::join_all((0..pool_target).map(|_| async {
                let started = Instant::now();
                run_once().await.map(|()| started.elapsed())
            }))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
            let mut burst = burst;
            burst.sort();
            print_row(
                &format!("burst of {pool_target} at once (pool size)"),
                &burst,
            );
        }

        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>8} {:>12} {:>22}",
            "concurrency", "runs/s", "p50", "p99", "errors", "CPU/run", "runbox CPU"
        );
        let mut throughput = Vec::new();
        let (mut runbox_cpu, mut all_cpu) = (0.0, 0.0);
        for &concurrency in &options.concurrency {
            server
                .wait_pool_full(&client, program.language, pool_target)
                .await;
            let cpu_before = server.cpu_seconds();
            let machine_before = machine_busy_seconds();
            let phase = load_phase(&run_once, concurrency, options.duration).await;
            let cpu = server
                .cpu_seconds()
                .zip(cpu_before)
                .map(|(after, before)| after - before);
            let machine = machine_busy_seconds()
                .zip(machine_before)
                .map(|(after, before)| after - before);
            let share = cpu.zip(machine).map(|(c, m)| c / m.max(f64::EPSILON));
            if let (Some(c), Some(m)) = (cpu, machine) {
                runbox_cpu += c;
                all_cpu += m;
            }
            let runs_per_s = phase.ok as f64 / options.duration.as_secs_f64();
            println!(
                "{:<12} {:>9.2} {:>7.1}ms {:>7.1}ms {:>8} {:>12} {:>22}",
                concurrency,
                runs_per_s,
                ms(percentile(&phase.latencies, 0.5)),
                ms(percentile(&phase.latencies, 0.99)),
                phase.errors,
                machine.map_or("n/a".to_owned(), |m| format!(
                    "{:.0} ms",
                    1000.0 * m / phase.ok.max(1) as f64
                )),
                share.map_or("n/a".to_owned(), |s| format!(
                    "{:.1}% ({:.1} ms/run)",
                    100.0 * s,
                    1000.0 * cpu.unwrap_or(0.0) / phase.ok.max(1) as f64
                ))
            );
            throughput.push((
                concurrency,
                runs_per_s,
                percentile(&phase.latencies, 0.5),
                percentile(&phase.latencies, 0.99),
            ));
        }
        results.push(ServerResults {
            language: program.language,
            paced_p50: percentile(&samples, 0.5),
            back_to_back_p50: percentile(&back_to_back, 0.5),
            throughput,
            cpu_share: (all_cpu > 0.0).then(|| runbox_cpu / all_cpu),
        });
    }
    Ok(results)
}

struct Phase {
    ok: u64,
    errors: u64,
    latencies: Vec<Duration>,
}

/// `concurrency` clients sending runs back to back for `duration`; a run still in flight at
/// the end is waited for but not counted.
async fn load_phase<F, Fut>(run_once: &F, concurrency: usize, duration: Duration) -> Phase
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let phase = Arc::new(Mutex::new(Phase {
        ok: 0,
        errors: 0,
        latencies: Vec::new(),
    }));
    let deadline = Instant::now() + duration;
    let clients = (0..concurrency).map(|_| {
        let phase = phase.clone();
        async move {
            while Instant::now() < deadline {
                let started = Instant::now();
                let result = run_once().await;
                if Instant::now() > deadline {
                    break;
                }
                let mut phase = phase.lock().expect("phase lock");
                match result {
                    Ok(()) => {
                        phase.ok += 1;
                        phase.latencies.push(started.elapsed());
                    }
                    Err(_) => phase.errors += 1,
                }
            }
        }
    });
    futures_util::future::join_all(clients).await;
    let mut phase = Arc::try_unwrap(phase)
        .ok()
        .expect("every client is done")
        .into_inner()
        .expect("phase lock");
    phase.latencies.sort();
    phase
}

async fn post_run(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<()> {
    let (_, response) = timed_post(client, url, body).await?;
    if response["status"] != "success" || response["stdout"] != "hello\n" {
        bail!("unexpected run result: {response}");
    }
    Ok(())
}

/// The compile cache seen from a client: C and Java hello world back to back, each run with a
/// source of its own (a miss: a comment that changes every run) and then the same source again
/// and again (hits), with the compile's own duration beside.
async fn measure_compile_cache(server: &ServerUnderTest, runs: usize) -> anyhow::Result<()> {
    section(
        "compile cache: hello world back to back, a new source each run (miss) vs the same (hit)",
    );
    let client = reqwest::Client::new();
    let programs = [
        (
            "c",
            "#include <stdio.h>\nint main(void){ puts(\"hello\"); return 0; }",
        ),
        (
            "java",
            "public class Main { public static void main(String[] a) { System.out.println(\"hello\"); } }",
        ),
    ];
    println!("{:<44} {:>9} {:>9} {:>9}", "", "p50", "p95", "p99");
    for (language, code) in programs {
        let url = server.url("/run");
        let mut compile_ms = Vec::new();
        let run_once = |code: String, cached: bool| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let body = json!({ "language": language, "code": code });
                let (took, answer) = timed_post(&client, &url, &body).await?;
                if answer["status"] != "success"
                    || answer["stdout"] != "hello\n"
                    || answer["compile"]["cached"] != cached
                {
                    bail!("unexpected {language} answer (cached {cached} expected): {answer}");
                }
                anyhow::Ok((took, answer["compile"]["duration_ms"].as_u64().unwrap_or(0)))
            }
        };
        let mut misses = Vec::new();
        for run in 0..runs {
            let unique = format!("{code}\n// run {run} {}", uuid::Uuid::new_v4());
            let (took, compile) = run_once(unique, false).await?;
            misses.push(took);
            compile_ms.push(compile);
        }
        let same = format!("{code}\n// {}", uuid::Uuid::new_v4());
        run_once(same.clone(), false).await?;
        let mut hits = Vec::new();
        for _ in 0..runs {
            hits.push(run_once(same.clone(), true).await?.0);
        }
        misses.sort();
        hits.sort();
        compile_ms.sort();
        print_row(&format!("{language}: cache miss (compile + run)"), &misses);
        print_row(&format!("{language}: cache hit (run only)"), &hits);
        println!(
            "{:<44} {:>7}ms",
            format!("{language}: the compile alone, p50 of the misses"),
            compile_ms[compile_ms.len() / 2]
        );
    }
    Ok(())
}

/// Clients of the soak.
const SOAK_CONCURRENCY: usize = 16;

/// One kind of run the soak sends: the request, and the status it must end with.
struct SoakRun {
    name: &'static str,
    body: Value,
    status: &'static str,
}

fn soak_mix(run: u64) -> Vec<SoakRun> {
    let java = "public class Main { public static void main(String[] a) { System.out.println(\"hello\"); } }";
    vec![
        SoakRun {
            name: "python",
            body: json!({ "language": "python", "code": "print('hello')" }),
            status: "success",
        },
        SoakRun {
            name: "javascript",
            body: json!({ "language": "javascript", "code": "console.log('hello')" }),
            status: "success",
        },
        // A new C source every tenth run: compile cache misses among the hits.
        SoakRun {
            name: "c",
            body: json!({ "language": "c", "code": format!(
                "#include <stdio.h>\nint main(void){{ puts(\"hello\"); return 0; }}\n// {}",
                run / 10
            ) }),
            status: "success",
        },
        SoakRun {
            name: "java",
            body: json!({ "language": "java", "code": java }),
            status: "success",
        },
        SoakRun {
            name: "spin",
            body: json!({ "language": "python", "code": "while True: pass", "timeout_ms": 500 }),
            status: "timeout",
        },
        SoakRun {
            name: "fork bomb",
            body: json!({ "language": "bash", "code": "f() { f | f & }; f; sleep 2", "timeout_ms": 1000 }),
            status: "timeout",
        },
        SoakRun {
            name: "daemon",
            body: json!({ "language": "python", "code": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\nprint('left')" }),
            status: "success",
        },
        SoakRun {
            name: "memory",
            body: json!({ "language": "python", "code": "b = bytearray(1 << 30)" }),
            status: "memory_limit_exceeded",
        },
        SoakRun {
            name: "flood",
            body: json!({ "language": "python", "code": "while True: print('x' * 1000)" }),
            status: "output_limit_exceeded",
        },
    ]
}

/// Resident memory of a process in KiB (`VmRSS`).
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Processes on the host running as the sandbox user (what a sandbox left would be).
fn sandbox_user_processes(uid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
                    == Some(uid)
            })
        })
        .count()
}

/// The soak: a spawned server (pool on, the shipped reuse mode) under `SOAK_CONCURRENCY`
/// clients sending a mix of languages and hostile programs for `length`; every answer is
/// checked. Reports the errors (anything but the expected status, `503 overloaded` and `429`
/// counted apart), the server's RSS after the warm-up and at the end, and what is left once
/// it has stopped: runbox containers and processes of the sandbox user.
async fn soak(config: &Config, options: &BenchOptions, length: Duration) -> anyhow::Result<()> {
    let server = ServerUnderTest::spawn(&options.config_path, true, Reuse::Nested).await?;
    let pid = server
        .child
        .as_ref()
        .and_then(|c| c.id())
        .context("no server pid")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let url = server.url("/run");
    // Warm-up: one of each, so every image, the pools and the cache have been used once.
    for run in soak_mix(0) {
        timed_post(&client, &url, &run.body).await?;
    }
    let rss_start = rss_kb(pid);
    section(&format!(
        "soak: {SOAK_CONCURRENCY} clients for {} s, python/javascript/c/java and hostile programs",
        length.as_secs()
    ));
    #[derive(Default)]
    struct Tally {
        ok: u64,
        overloaded: u64,
        errors: Vec<String>,
        by_kind: std::collections::BTreeMap<&'static str, u64>,
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + length;
    let clients = (0..SOAK_CONCURRENCY).map(|_| {
        let (client, url, tally, counter) =
            (client.clone(), url.clone(), tally.clone(), counter.clone());
        async move {
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mix = soak_mix(n);
                let run = &mix[(n as usize) % mix.len()];
                let answer = client.post(&url).json(&run.body).send().await;
                // What the answer means, worked out before the tally is locked.
                let verdict: Result<bool, String> = match answer {
                    Ok(r) if r.status() == 503 || r.status() == 429 => Ok(false),
                    Ok(r) => {
                        let status = r.status();
                        match r.json::<Value>().await {
                            Ok(body) if status.is_success() && body["status"] == run.status => {
                                Ok(true)
                            }
                            Ok(body) => Err(format!("{}: {status}: {body}", run.name)),
                            Err(err) => Err(format!("{}: {status}: {err}", run.name)),
                        }
                    }
                    Err(err) => Err(format!("{}: {err}", run.name)),
                };
                let mut tally = tally.lock().expect("tally lock");
                match verdict {
                    Ok(true) => {
                        tally.ok += 1;
                        *tally.by_kind.entry(run.name).or_default() += 1;
                    }
                    Ok(false) => tally.overloaded += 1,
                    Err(error) => tally.errors.push(error),
                }
            }
        }
    });
    futures_util::future::join_all(clients).await;
    let rss_end = rss_kb(pid);
    let metrics = server.metrics(&client).await;
    server.stop().await;
    let tally = Arc::try_unwrap(tally)
        .ok()
        .expect("every client is done")
        .into_inner()
        .expect("tally lock");
    println!(
        "{} runs as expected, {} answered 503/429, {} errors",
        tally.ok,
        tally.overloaded,
        tally.errors.len()
    );
    for (kind, count) in &tally.by_kind {
        println!("  {kind:<12} {count}");
    }
    for error in tally.errors.iter().take(10) {
        println!("  error: {error}");
    }
    let kb = |v: Option<u64>| {
        v.map_or("n/a".to_owned(), |v| {
            format!("{:.1} MiB", v as f64 / 1024.0)
        })
    };
    println!(
        "runbox RSS after the warm-up {}, at the end {}",
        kb(rss_start),
        kb(rss_end)
    );
    for name in [
        CONTAINERS_MADE,
        "runbox_pool_returned_total{language=\"python\"}",
        "runbox_compile_cache_hits_total",
        "runbox_compile_cache_misses_total",
        "runbox_compile_cache_bytes",
    ] {
        println!("  {name} {}", sample(&metrics, name).unwrap_or(0.0));
    }
    // The stopped server removed its sandboxes; give the engine a moment, then look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sandboxes = connect(config).await?;
    let left = sandboxes.list(None, &[], true).await?.len();
    sandboxes.shutdown().await;
    println!(
        "left after the server stopped: {left} runbox containers, {} processes of uid 65534",
        sandbox_user_processes(65534)
    );
    Ok(())
}

/// What the dialects add to a run: python hello world through `POST /run`, Piston's
/// `POST /api/v2/execute` and Judge0's `POST /judge0/submissions?wait=true`, in turn, each
/// from a full pool (paced: every side waits the same), and Piston's translation alone
/// (request in, stage out) timed in-process.
async fn measure_dialects(
    server: &ServerUnderTest,
    catalogue: &crate::languages::Catalogue,
    runs: usize,
) -> anyhow::Result<()> {
    section("dialects: python hello world, paced from a full pool, in turn");
    let client = reqwest::Client::new();
    let pool_target = server.pool_target(&client, "python").await;
    let native = json!({ "language": "python", "code": "print('hello')" });
    let piston = json!({ "language": "python", "version": "*",
        "files": [{ "content": "print('hello')" }] });
    let judge0 = json!({ "source_code": "print('hello')", "language_id": 71 });
    let (mut through_run, mut through_piston, mut through_judge0) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        server.wait_pool_full(&client, "python", pool_target).await;
        let started = Instant::now();
        post_run(&client, &server.url("/run"), &native).await?;
        through_run.push(started.elapsed());
        server.wait_pool_full(&client, "python", pool_target).await;
        let (took, answer) = timed_post(&client, &server.url("/api/v2/execute"), &piston).await?;
        through_piston.push(took);
        if answer["run"]["stdout"] != "hello\n" {
            bail!("unexpected Piston answer: {answer}");
        }
        server.wait_pool_full(&client, "python", pool_target).await;
        let url = server.url("/judge0/submissions?wait=true");
        let (took, answer) = timed_post(&client, &url, &judge0).await?;
        through_judge0.push(took);
        if answer["stdout"] != "hello\n" {
            bail!("unexpected Judge0 answer: {answer}");
        }
    }
    through_run.sort();
    through_piston.sort();
    through_judge0.sort();
    println!("{:<44} {:>9} {:>9} {:>9}", "", "p50", "p95", "p99");
    print_row("POST /run", &through_run);
    print_row("POST /api/v2/execute (Piston v2)", &through_piston);
    print_row(
        "POST /judge0/submissions?wait=true (Judge0)",
        &through_judge0,
    );
    let translation = crate::api::piston::translation_cost(10_000);
    println!(
        "Piston translation alone (request checks, runtime match, stage and JSON out): {:.1} µs per run",
        translation.as_secs_f64() * 1e6
    );
    let translation = crate::api::judge0::translation_cost(catalogue, 10_000);
    println!(
        "Judge0 translation alone (attribute checks, job request, all 35 fields and JSON out): {:.1} µs per run",
        translation.as_secs_f64() * 1e6
    );
    Ok(())
}

/// POSTs `body` as JSON and reads the answer: how long that took, and the answer.
async fn timed_post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> anyhow::Result<(std::time::Duration, Value)> {
    let started = Instant::now();
    let answer: Value = client
        .post(url)
        .json(body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok((started.elapsed(), answer))
}

/// The server being measured: spawned by the bench (its pid known) or given by URL.
struct ServerUnderTest {
    base: String,
    child: Option<tokio::process::Child>,
}

impl ServerUnderTest {
    fn given(url: &str) -> ServerUnderTest {
        ServerUnderTest {
            base: url.trim_end_matches('/').to_owned(),
            child: None,
        }
    }

    /// Starts `runbox serve` on a free port with the pool on or off and waits until it is
    /// ready.
    async fn spawn(
        config_path: &Path,
        pool: bool,
        reuse: Reuse,
    ) -> anyhow::Result<ServerUnderTest> {
        let reuse = match reuse {
            Reuse::Nested => "nested",
            Reuse::Fresh => "fresh",
        };
        Self::spawn_with(
            config_path,
            &[
                ("RUNBOX_POOL__ENABLED", pool.to_string()),
                ("RUNBOX_SANDBOX__REUSE", reuse.to_owned()),
            ],
        )
        .await
    }

    /// As [`ServerUnderTest::spawn_with`], taken as up once a python run succeeds rather
    /// than at readiness (which wants every image on every engine).
    async fn spawn_until_python_runs(
        config_path: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<ServerUnderTest> {
        Self::spawn_waiting(config_path, env, true).await
    }

    /// Starts `runbox serve` on a free port with `env` overrides and waits until it is ready.
    async fn spawn_with(
        config_path: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<ServerUnderTest> {
        Self::spawn_waiting(config_path, env, false).await
    }

    async fn spawn_waiting(
        config_path: &Path,
        env: &[(&str, String)],
        until_python_runs: bool,
    ) -> anyhow::Result<ServerUnderTest> {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(config_path)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            // The bench is one client sending thousands of runs: per-client limits would
            // measure the 429 path.
            .env("RUNBOX_RATE_LIMIT__ENABLED", "false")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUNBOX_LOG", "warn")
            .spawn()
            .context("starting runbox serve")?;
        if let Some(pid) = child.id() {
            lock(&SPAWNED_SERVERS).push(pid);
        }
        let server = ServerUnderTest {
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        };
        let started = Instant::now();
        let client = reqwest::Client::new();
        let hello = json!({"language": "python", "code": "print(\"hello\")"});
        loop {
            let up = if until_python_runs {
                post_run(&client, &server.url("/run"), &hello).await.is_ok()
            } else {
                matches!(reqwest::get(server.url("/readyz")).await, Ok(r) if r.status().is_success())
            };
            if up {
                return Ok(server);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the spawned server did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// CPU seconds (user + system) the spawned server has used so far.
    fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / CLOCK_TICKS_PER_SECOND)
    }

    async fn metrics(&self, client: &reqwest::Client) -> String {
        match client.get(self.url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn pool_target(&self, client: &reqwest::Client, language: &str) -> usize {
        sample(
            &self.metrics(client).await,
            &format!("runbox_pool_target{{language=\"{language}\"}}"),
        )
        .unwrap_or(0.0) as usize
    }

    /// Waits until the language's pool is full again; false when it has no pool or it did not
    /// fill in time.
    async fn wait_pool_full(
        &self,
        client: &reqwest::Client,
        language: &str,
        target: usize,
    ) -> bool {
        if target == 0 {
            return false;
        }
        let ready = format!("runbox_pool_sandboxes{{language=\"{language}\",state=\"ready\"}}");
        let started = Instant::now();
        while started.elapsed() < POOL_FILL_TIMEOUT {
            if sample(&self.metrics(client).await, &ready).unwrap_or(0.0) as usize >= target {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// SIGTERM (graceful: the server removes its sandboxes), then wait.
    async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                lock(&SPAWNED_SERVERS).retain(|&p| p != pid);
            }
            if let Some(pid) = child.id() {
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// A server dropped without [`ServerUnderTest::stop`] (the bench failed or was interrupted)
/// is sent SIGTERM, not SIGKILL: it ends the way it would be stopped, removing its sandboxes.
impl Drop for ServerUnderTest {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            // The child is not reaped yet, so the pid is still its own.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

/// /proc reports CPU times in USER_HZ ticks, which Linux fixes at 100 for user space.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Busy CPU seconds of the whole machine so far (everything but idle and iowait).
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle) / CLOCK_TICKS_PER_SECOND)
}

/// The metric of the containers a server has made: during a back-to-back series of a pooled
/// server, the sandboxes that replaced retired ones (each costs the engine ~200 ms of CPU,
/// which the runs next to it wait behind on a small machine).
const CONTAINERS_MADE: &str = "runbox_containers_created_total";

fn containers_made_line(made: f64, runs: usize) -> String {
    if made < 1.0 {
        return "no sandbox made during it".to_owned();
    }
    format!(
        "{made:.0} sandboxes made during it (one per {:.0} runs: retired ones replaced, or one per run without reuse)",
        runs as f64 / made
    )
}

/// The value of the sample `name{labels}` in a metrics text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

/// The program as a bare process on the host (python3, or the C program built once with cc);
/// `None` when the host lacks the tool.
async fn bare_process(language: &str, runs: usize) -> anyhow::Result<Option<Vec<Duration>>> {
    let dir = std::env::temp_dir().join(format!("runbox-bench-{}", std::process::id()));
    let argv: Vec<String> = match language {
        // Debian's interpreter, not whatever `python3` a PATH shim resolves to.
        "python" => {
            let debian = Path::new("/usr/bin/python3");
            let python = if debian.exists() {
                debian.to_string_lossy().into_owned()
            } else {
                "python3".to_owned()
            };
            vec![python, "-c".into(), PROGRAMS[0].code.into()]
        }
        "c" => {
            // Compiled and run each time, as the service does.
            std::fs::create_dir_all(&dir)?;
            let source = dir.join("hello.c");
            std::fs::write(&source, PROGRAMS[1].code)?;
            let binary = dir.join("hello").to_string_lossy().into_owned();
            let script = format!(
                "cc -O2 -o {binary} {} && {binary}",
                source.to_string_lossy()
            );
            vec!["sh".into(), "-c".into(), script]
        }
        _ => return Ok(None),
    };
    let probe = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .await;
    if !probe.is_ok_and(|o| o.stdout == b"hello\n") {
        return Ok(None);
    }
    let samples = measure_sequential(runs, || async {
        let out = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .await?;
        anyhow::ensure!(
            out.stdout == b"hello\n",
            "bare process printed {:?}",
            out.stdout
        );
        Ok(())
    })
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(samples))
}

async fn measure_sequential<F, Fut>(runs: usize, mut once: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for _ in 0..WARMUP_RUNS {
        once().await?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        once().await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(samples)
}

fn print_steps(steps: &[StepTimes]) {
    let column = |f: fn(&StepTimes) -> Duration| {
        let mut v: Vec<Duration> = steps.iter().map(f).collect();
        v.sort();
        percentile(&v, 0.5)
    };
    println!("{:<52} {:>9}", "step (median)", "time");
    for (name, value) in [
        ("create", column(|s| s.create)),
        (
            "attach (stdin/stdout/stderr, before start)",
            column(|s| s.attach),
        ),
        ("start", column(|s| s.start)),
        ("job: send, run, both trailers in", column(|s| s.job)),
        ("wait: engine-side exit after the job", column(|s| s.wait)),
        ("remove (force)", column(|s| s.remove)),
    ] {
        println!("{name:<52} {:>7.1}ms", ms(value));
    }
}

fn print_row(name: &str, sorted: &[Duration]) {
    println!(
        "{name:<44} {:>7.1}ms {:>7.1}ms {:>7.1}ms",
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.95)),
        ms(percentile(sorted, 0.99))
    );
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&s, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&s[..1], 0.95), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn the_containers_made_during_a_series_are_said_per_run() {
        assert_eq!(containers_made_line(0.0, 3000), "no sandbox made during it");
        let line = containers_made_line(30.0, 2640);
        assert!(
            line.starts_with("30 sandboxes made during it (one per 88 runs"),
            "{line}"
        );
    }

    #[test]
    fn samples_are_read_from_metrics_text() {
        let text = "# HELP x\nrunbox_pool_target{language=\"python\"} 4\nrunbox_pool_target{language=\"c\"} 2\n";
        assert_eq!(
            sample(text, "runbox_pool_target{language=\"c\"}"),
            Some(2.0)
        );
        assert_eq!(sample(text, "runbox_pool_target{language=\"go\"}"), None);
    }
}
