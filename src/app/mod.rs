//! Wiring: builds the parts, serves them, and stops them. The router is in [`router`], the
//! connection loop in [`serve`].

mod router;
mod serve;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::access::Access;
use crate::api;
use crate::callbacks::Callbacks;
use crate::config::{Config, EngineEntry};
use crate::executor::{Executor, HealthPolicy};
use crate::metrics::Metrics;
use crate::sandbox::{
    EngineAddress, Lifetimes, NodeRegistry, SandboxBudget, SandboxError, Sandboxes,
};
use crate::sessions::Sessions;
use crate::shared::Shared;
use crate::submissions::Submissions;

pub use crate::api::AppState;
pub use router::router;
use serve::{connection_limits, serve};

/// Slack on top of the longest compile + run a job may take: a `job` container older than
/// that cannot belong to a running job, so the sweep may remove it.
const JOB_LIFETIME_SLACK: Duration = Duration::from_secs(60);
/// After the grace period, how long the ended jobs' answers may take to go out.
const STOPPED_JOBS_ANSWER: Duration = Duration::from_secs(2);

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("the listener has no address: {0}")]
    Listener(#[from] std::io::Error),
    #[error("cluster.redis: {0}")]
    Shared(#[from] crate::shared::SharedError),
}

/// A client for every engine of the config, each with its share of the sandbox budget.
pub async fn connect_engines(config: &Config) -> Result<Vec<Sandboxes>, SandboxError> {
    let entries = config.engines();
    // A running job may own two sandboxes for a moment: its own, and the one that takes
    // over with the run's memory cap under gVisor while the first is being removed. Jobs are
    // placed over the engines, so each keeps its share of that room free of sessions.
    let reserved = (2 * config.limits.running_jobs()).div_ceil(entries.len());
    let mut engines = Vec::with_capacity(entries.len());
    for (entry, capacity) in &entries {
        let budget = SandboxBudget {
            max: *capacity,
            reserved_for_jobs: reserved.min(*capacity),
        };
        engines.push(connect_engine(config, entry, budget).await?);
    }
    Ok(engines)
}

/// A client for one engine of the config by id (`None`: the first), for the tools (image
/// builds and copies, the bench): no budget, no sweep.
pub async fn connect_tool(config: &Config, id: Option<&str>) -> Result<Sandboxes, ToolError> {
    let entries = config.engines();
    let entry = match id {
        None => &entries[0].0,
        Some(id) => {
            &entries
                .iter()
                .find(|(entry, _)| entry.id == id)
                .ok_or_else(|| ToolError::UnknownEngine(id.to_owned()))?
                .0
        }
    };
    Ok(connect_engine(config, entry, SandboxBudget::unbounded()).await?)
}

/// Why a tool could not reach its engine.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("no engine `{0}` in the config's cluster.engines")]
    UnknownEngine(String),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

async fn connect_engine(
    config: &Config,
    entry: &EngineEntry,
    budget: SandboxBudget,
) -> Result<Sandboxes, SandboxError> {
    let mut sandbox = config.sandbox.clone();
    if let Some(runtime) = &entry.runtime {
        sandbox.runtime = runtime.clone();
    }
    let sandboxes =
        Sandboxes::connect(&entry.id, &EngineAddress::of(entry), sandbox, budget).await?;
    if let Some(parent) = &entry.cgroup_parent {
        sandboxes.cgroups_under(parent);
    }
    Ok(sandboxes)
}

/// The other nodes as the sandbox sweep asks after them: alive while their heartbeat is.
struct HeartbeatRegistry(Shared);

impl NodeRegistry for HeartbeatRegistry {
    fn is_gone<'a>(&'a self, node: &'a str) -> futures_util::future::BoxFuture<'a, Option<bool>> {
        Box::pin(async move { self.0.node_address(node).await.ok().map(|a| a.is_none()) })
    }

    fn lease(&self) -> Duration {
        self.0.lease_ttl()
    }
}

/// A running server: its address, and a way to stop it.
pub struct Server {
    pub addr: SocketAddr,
    /// The second address, serving Judge0 alone at the root (`judge0.listen`).
    pub judge0_addr: Option<SocketAddr>,
    pub executor: Executor,
    pub sessions: Sessions,
    pub submissions: Submissions,
    callbacks: Callbacks,
    shared: Option<Shared>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    judge0_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// How long running jobs may go on after shutdown begins.
    grace: Duration,
}

impl Server {
    /// Connects to the engine, starts the background tasks and serves on `listener`.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Server, StartError> {
        // The settings the domain checks itself, before anything starts.
        crate::sandbox::policy::validate(&config.sandbox)?;
        let addr = listener.local_addr()?;
        // Several nodes: their shared state, reached lazily (a node starts while Redis is
        // down, and serves one-shot runs meanwhile).
        let shared = if config.cluster.is_shared() {
            let shared = Shared::connect(&config.cluster, addr)?;
            shared.start_heartbeat();
            tracing::info!(
                node = shared.node_id(),
                url = shared.node_url(),
                "a node of a cluster (shared state in Redis)"
            );
            Some(shared)
        } else {
            None
        };
        let access = Access::new(
            &config.rate_limit,
            &config.auth,
            &api::route_names(),
            shared.as_ref(),
        )?;
        let job_lifetime_bound = config
            .languages
            .iter()
            .map(|l| {
                Duration::from_millis(l.max_timeout_ms)
                    + l.compile
                        .as_ref()
                        .map_or(Duration::ZERO, |_| l.compile_timeout())
            })
            .max()
            .unwrap_or_default()
            + JOB_LIFETIME_SLACK;
        let lifetimes = Lifetimes {
            job: job_lifetime_bound,
            pool: config.pool.max_idle() + job_lifetime_bound,
            session: config.sessions.max_age() + job_lifetime_bound,
        };
        let engines = connect_engines(&config).await?;
        if let Some(shared) = &shared {
            // Before the pools start: every container this node makes carries its id.
            let registry: std::sync::Arc<dyn NodeRegistry> =
                std::sync::Arc::new(HeartbeatRegistry(shared.clone()));
            for engine in &engines {
                engine.as_node(shared.node_id(), registry.clone());
            }
        }
        // Built here and handed to each part that counts (nothing reaches through another).
        let metrics = std::sync::Arc::new(Metrics::new());
        let executor = Executor::new(
            engines,
            HealthPolicy {
                interval: config.cluster.health_interval(),
                unhealthy_after: config.cluster.unhealthy_after,
            },
            config.languages.clone(),
            crate::executor::Settings {
                limits: &config.limits,
                pool: &config.pool,
                compile_cache: &config.compile_cache,
                outputs: &config.outputs,
            },
            metrics.clone(),
        );
        executor.sandboxes().start_sweeps(lifetimes);
        match executor.check_ready().await {
            Ok(()) => tracing::info!("engine and every language image present"),
            Err(not_ready) => tracing::warn!(reason = %not_ready, "not ready yet"),
        }
        let sessions = Sessions::start(
            config.sessions.clone(),
            config.terminal.clone(),
            executor.clone(),
            shared.clone(),
        )
        .await;
        metrics.watch_sessions(std::sync::Arc::new(sessions.clone()));
        let submissions = Submissions::start(&config.submissions, executor.clone(), shared.clone());
        let callbacks = Callbacks::new(&config.judge0);
        let app = router(
            AppState {
                executor: executor.clone(),
                sessions: sessions.clone(),
                submissions: submissions.clone(),
                access,
                metrics: metrics.clone(),
                callbacks: callbacks.clone(),
                shared: shared.clone(),
                judge0: config.judge0.clone(),
                playground: std::sync::Arc::new(api::playground::Playground::load(
                    config.server.playground,
                    &config.server.playground_dir,
                )),
            },
            &config.server,
        );
        let stop = tokio_util::sync::CancellationToken::new();
        // Judge0 alone at the root of a second address, when configured.
        let judge0_listener = match config.judge0.listen {
            Some(at) => Some(TcpListener::bind(at).await?),
            None => None,
        };
        let judge0_addr = match &judge0_listener {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        };
        let judge0_task = judge0_listener.map(|listener| {
            tokio::spawn(serve(
                listener,
                mounted(app.clone(), api::judge0::Mount::Root),
                config.server.clone(),
                connection_limits(&config, metrics.connections_open()),
                metrics.clone(),
                stop.clone(),
            ))
        });
        let main_mount = api::judge0::Mount::Prefix(config.judge0.prefix.clone());
        let task = tokio::spawn(serve(
            listener,
            mounted(app, main_mount),
            config.server.clone(),
            connection_limits(&config, metrics.connections_open()),
            metrics,
            stop.clone(),
        ));
        tracing::info!(%addr, "runbox listening");
        if let Some(judge0_addr) = judge0_addr {
            tracing::info!(addr = %judge0_addr, "Judge0 CE's API listening at the root");
        }
        Ok(Server {
            addr,
            judge0_addr,
            executor,
            sessions,
            submissions,
            callbacks,
            shared,
            stop,
            task,
            judge0_task,
            grace: Duration::from_secs(config.server.shutdown_grace_secs),
        })
    }

    /// Stops accepting, lets in-flight requests finish for up to the grace period, ends the
    /// jobs still running (503 shutting_down), closes every room, then removes every sandbox
    /// this process owns (sessions by `sessions.keep_on_shutdown`).
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.stop.cancel();
        if let Some(judge0) = self.judge0_task.take() {
            // Its requests are the main listener's too: the same grace and the same end.
            self.task = tokio::spawn(async move {
                let (main, second) = tokio::join!(self.task, judge0);
                main.unwrap_or(Ok(()))?;
                second.unwrap_or(Ok(()))
            });
        }
        let served = match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(served) => served,
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "grace period over: ending the jobs still running");
                self.executor.stop_jobs();
                // Their handlers answer at once now; a response still being written to a
                // stalled client is not waited for past this.
                tokio::time::timeout(STOPPED_JOBS_ANSWER, &mut self.task)
                    .await
                    .unwrap_or(Ok(Ok(())))
            }
        };
        // Submissions still pending end as failed (they live in this process only).
        self.submissions.shutdown().await;
        // Callbacks of the submissions just ended are dropped with the ones in flight.
        self.callbacks.shutdown().await;
        self.sessions.shutdown().await;
        if let Some(shared) = &self.shared {
            shared.shutdown().await;
        }
        self.executor.shutdown().await;
        served.unwrap_or(Ok(()))
    }

    /// Serves until SIGINT or SIGTERM, then shuts down as [`Server::shutdown`] does.
    pub async fn wait_for_signal(self) -> std::io::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// `app` with Judge0's routes where `mount` puts them (a rewrite before routing).
fn mounted(app: axum::Router, mount: api::judge0::Mount) -> axum::Router {
    axum::Router::new()
        .fallback_service(app)
        .layer(axum::middleware::from_fn_with_state(
            mount,
            api::judge0::mount,
        ))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
