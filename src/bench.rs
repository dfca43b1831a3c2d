//! `runbox bench`: end-to-end latency of python hello world through the server, next to the same
//! program in a container with the same hardening through `docker run --rm` and through a bare
//! Engine API create+start+wait+remove, measured on this machine in one run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::Config;
use crate::sandbox::policy::{self, SandboxKind, SandboxSpec};

const WARMUP_RUNS: usize = 3;
const PROGRAM: &str = "print(\"hello\")";

pub async fn run(config: Config, runs: usize, url: Option<String>) -> anyhow::Result<()> {
    let python = config
        .languages
        .resolve("python")
        .cloned()
        .context("the catalogue has no python")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = match url {
        Some(_) => None,
        None => Some(crate::app::Server::start(config.clone(), listener).await?),
    };
    let base = url.unwrap_or_else(|| format!("http://{}", server.as_ref().expect("started").addr));
    let client = reqwest::Client::new();
    let body = serde_json::json!({ "language": "python", "code": PROGRAM });

    let through_server = measure(runs, || async {
        let response: serde_json::Value = client
            .post(format!("{base}/run"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if response["status"] != "success" || response["stdout"] != "hello\n" {
            bail!("unexpected run result: {response}");
        }
        Ok(())
    })
    .await?;

    let spec = |id: String| SandboxSpec {
        kind: SandboxKind::Job,
        id,
        image: python.image_ref(),
        language: python.id.clone(),
        memory_mb: python.memory_mb,
        main: crate::sandbox::MainProcess::Idle,
    };
    let program = vec!["python3".to_owned(), "-c".to_owned(), PROGRAM.to_owned()];

    let sandbox_config = config.sandbox.clone();
    let docker_run = measure(runs, || {
        let spec = spec(uuid::Uuid::new_v4().to_string());
        let flags = policy::docker_run_flags(&policy::container_body(&sandbox_config, &spec));
        let program = program.clone();
        async move {
            let output = tokio::process::Command::new("docker")
                .arg("run")
                .args(&flags)
                .arg(&spec.image)
                .args(&program)
                .output()
                .await
                .context("running the docker CLI")?;
            if !output.status.success() || output.stdout != b"hello\n" {
                bail!(
                    "docker run failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Ok(())
        }
    })
    .await?;

    let sandboxes = match &server {
        Some(server) => server.executor.sandboxes().clone(),
        None => {
            crate::sandbox::Sandboxes::connect(
                &config.engine,
                config.sandbox.clone(),
                crate::sandbox::Lifetimes {
                    job: Duration::from_secs(3600),
                    pool: Duration::from_secs(3600),
                },
            )
            .await?
        }
    };
    let bare_api = measure(runs, || {
        let spec = spec(uuid::Uuid::new_v4().to_string());
        let sandboxes = sandboxes.clone();
        let program = program.clone();
        async move { Ok(sandboxes.bare_run(&spec, program).await?) }
    })
    .await?;

    println!("python hello world, {runs} sequential runs each (after {WARMUP_RUNS} warm-up runs)");
    println!("{:<44} {:>9} {:>9} {:>9}", "path", "median", "p95", "mean");
    for (name, samples) in [
        ("runbox POST /run (end to end, HTTP)", &through_server),
        ("bare Engine API create+start+wait+remove", &bare_api),
        ("docker run --rm (same flags)", &docker_run),
    ] {
        println!(
            "{name:<44} {:>7.1}ms {:>7.1}ms {:>7.1}ms",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.95)),
            ms(mean(samples))
        );
    }
    println!(
        "runbox median minus bare Engine API median: {:+.1} ms",
        ms(percentile(&through_server, 0.5)) - ms(percentile(&bare_api, 0.5))
    );
    if let Some(server) = server {
        server.shutdown().await?;
    }
    Ok(())
}

async fn measure<F, Fut>(runs: usize, mut once: F) -> anyhow::Result<Vec<Duration>>
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

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / samples.len().max(1) as u32
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
        assert_eq!(percentile(&s, 0.95), Duration::from_millis(95));
        assert_eq!(percentile(&s[..1], 0.95), Duration::from_millis(1));
        assert_eq!(mean(&s), Duration::from_micros(50_500));
    }
}
