//! The `runbox` command: `serve`, `images build`, `bench`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use runbox::config::Config;

#[derive(Parser)]
#[command(
    name = "runbox",
    version,
    about = "Runs untrusted programs in hardened throwaway containers"
)]
struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "RUNBOX_CONFIG",
        default_value = "config/runbox.toml"
    )]
    config: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "RUNBOX_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP server.
    Serve {
        /// Address to listen on (overrides server.listen).
        #[arg(long, env = "RUNBOX_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Manage the sandbox images.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Measure end-to-end latency of python hello world against `docker run --rm` and the bare
    /// Engine API, on this machine, in one run.
    #[cfg(feature = "bench")]
    Bench {
        /// Sequential runs per measured path.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// A running server to measure; by default two are started (pool on, pool off).
        #[arg(long)]
        url: Option<String>,
        /// Seconds each back-to-back series lasts (at least `--runs` runs).
        #[arg(long, default_value_t = 60)]
        back_to_back: u64,
        /// Seconds per throughput phase (and for the engine ceiling).
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Concurrency levels of the throughput phases.
        #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
        concurrency: Vec<usize>,
        /// Skip the step timings and the hardening cost table.
        #[arg(long)]
        skip_engine: bool,
        /// Only the sessions benchmark: open this many idle sessions each (e.g. 50,100,200).
        #[arg(long, value_delimiter = ',')]
        sessions: Vec<usize>,
        /// Only the terminal benchmark: keystroke echo round trips through a room.
        #[arg(long)]
        terminal: bool,
        /// Only the soak: this many seconds of mixed and hostile programs at concurrency 16.
        #[arg(long)]
        soak: Option<u64>,
        /// Only the engines: python hello world back to back on each engine of
        /// `cluster.engines` alone (one server each, its pool warm).
        #[arg(long)]
        engines: bool,
        /// Only the engines' scaling: the create+start+remove ceiling of the first two
        /// engines of `cluster.engines`, the first alone, then both at once (pin each to a
        /// CPU of its own first: `scripts/engines.sh pin`).
        #[arg(long)]
        ceiling_scaling: bool,
        /// Only files and libraries: python hello world and `import numpy, pandas,
        /// matplotlib` in the sandbox, a plot and a 1 MiB file returned (`outputs`).
        #[arg(long)]
        files: bool,
    },
    /// The benchmarks are not in this build: it says how to get them.
    #[cfg(not(feature = "bench"))]
    #[command(hide = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Build the base and the language images; an up-to-date image is left alone.
    Build {
        /// Languages to build (ids or aliases); all when none is given.
        languages: Vec<String>,
        /// The engine of `cluster.engines` to build on (default: the first).
        #[arg(long)]
        engine: Option<String>,
    },
    /// Copy the language images from one engine of the cluster to another (save, then load:
    /// the image ids stay the same, which readiness compares); an image already there with
    /// the same id is left alone.
    Copy {
        /// Languages to copy (ids or aliases); all when none is given.
        languages: Vec<String>,
        /// The engine to copy from (default: the first).
        #[arg(long)]
        from: Option<String>,
        /// The engine to copy to.
        #[arg(long)]
        to: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let config =
        Config::load(&cli.config).with_context(|| format!("loading {}", cli.config.display()))?;
    match cli.command {
        Command::Serve { listen } => {
            config.log_effective();
            let addr = listen.unwrap_or(config.server.listen);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let server = runbox::app::Server::start(config, listener).await?;
            server.wait_for_signal().await?;
        }
        Command::Images {
            command:
                ImagesCommand::Copy {
                    languages,
                    from,
                    to,
                },
        } => {
            let selected = config
                .languages
                .select(&languages)
                .map_err(|unknown| anyhow::anyhow!("unknown language `{unknown}`"))?;
            let source = runbox::app::connect_tool(&config, from.as_deref()).await?;
            let target = runbox::app::connect_tool(&config, Some(&to)).await?;
            let result = source.copy_images(&target, &selected).await;
            source.shutdown().await;
            target.shutdown().await;
            for (image, copied) in result? {
                println!(
                    "{image:<28} {}",
                    if copied { "copied" } else { "already there" }
                );
            }
        }
        Command::Images {
            command: ImagesCommand::Build { languages, engine },
        } => {
            let selected = config
                .languages
                .select(&languages)
                .map_err(|unknown| anyhow::anyhow!("unknown language `{unknown}`"))?;
            let sandboxes = runbox::app::connect_tool(&config, engine.as_deref())
                .await
                .context("the Docker engine does not answer; is dockerd running?")?;
            let result = sandboxes.build_images(&config.images, &selected).await;
            sandboxes.shutdown().await;
            for report in result? {
                println!(
                    "{:<28} {:<12} {:>7.1} MB  {:>6.1} s  {}",
                    report.image,
                    report.version,
                    report.size_bytes.unwrap_or(0) as f64 / 1e6,
                    report.seconds,
                    if report.rebuilt {
                        "built"
                    } else {
                        "up to date"
                    }
                );
            }
        }
        #[cfg(not(feature = "bench"))]
        Command::Bench { args } => anyhow::bail!(
            "this runbox is built without its benchmarks; run them with \
             `cargo run --release --features bench -- bench {}`",
            args.join(" ")
        ),
        #[cfg(feature = "bench")]
        Command::Bench {
            runs,
            back_to_back,
            url,
            duration,
            concurrency,
            skip_engine,
            sessions,
            terminal,
            soak,
            engines,
            ceiling_scaling,
            files,
        } => {
            let options = runbox::bench::BenchOptions {
                url,
                config_path: cli.config.clone(),
                runs,
                back_to_back: std::time::Duration::from_secs(back_to_back),
                duration: std::time::Duration::from_secs(duration),
                concurrency,
                skip_engine,
                sessions,
                terminal,
                soak: soak.map(std::time::Duration::from_secs),
                engines,
                ceiling_scaling,
                files,
            };
            runbox::bench::run(config, options).await?
        }
    }
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: in a container's or journal's log they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
