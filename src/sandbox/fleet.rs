//! The engines sandboxes are placed on: one on a single machine, several in a cluster.
//!
//! Each engine has its own [`Sandboxes`] (client, cleanup queue, OOM watch, live set, budget),
//! its own warm pool and its own health. A job goes to an engine that has a ready sandbox of
//! its language when one does, else to the freer of two engines picked at random (the
//! "power of two choices": nearly the balance of always taking the freest, without every
//! node herding onto the same one). An engine whose pings or calls fail `unhealthy_after`
//! times in a row gets no new work until a ping succeeds. A job whose sandbox could not be
//! made or leased on one engine is placed again on another: nothing of it has run yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::pool::{PoolLease, PoolSlot, PoolStats, WarmPool};
use super::{
    Adopted, Lifetimes, Sandbox, SandboxError, SandboxKind, SandboxSpec, SandboxTally, Sandboxes,
};
use crate::config::SandboxConfig;

/// The engines and their pools. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    engines: Vec<Engine>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

struct Engine {
    sandboxes: Sandboxes,
    pool: WarmPool,
    health: Health,
    /// Job sandboxes handed out from this engine (pooled or made for the job).
    leased: AtomicU64,
}

/// Failures in a row, and whether the engine takes new work.
struct Health {
    failures: AtomicU32,
    healthy: AtomicBool,
    unhealthy_after: u32,
}

impl Health {
    fn succeeded(&self, engine: &str) {
        self.failures.store(0, Ordering::Relaxed);
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(engine, "the engine answers again: it takes new work");
        }
    }

    fn failed(&self, engine: &str) {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.unhealthy_after && self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(engine, failures, "the engine fails: no new work goes to it");
        }
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

/// One engine as the metrics and readiness see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineHealth {
    pub id: String,
    pub healthy: bool,
    pub owned: usize,
    pub capacity: usize,
    pub created: u64,
    /// Job sandboxes handed out from it since start.
    pub leased: u64,
}

/// How the fleet watches its engines.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    pub interval: Duration,
    pub unhealthy_after: u32,
}

impl Fleet {
    /// Starts every engine's warm pool (`slots`, the same on each) and its health checks.
    /// `engines` must not be empty.
    pub fn start(
        engines: Vec<Sandboxes>,
        slots: &[PoolSlot],
        max_idle: Duration,
        health: HealthPolicy,
    ) -> Fleet {
        assert!(!engines.is_empty(), "a fleet needs an engine");
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let engines: Vec<Engine> = engines
            .into_iter()
            .map(|sandboxes| Engine {
                pool: WarmPool::start(&sandboxes, slots.to_vec(), max_idle, sandboxes.capacity()),
                sandboxes,
                health: Health {
                    failures: AtomicU32::new(0),
                    // Until a ping says otherwise: a single engine that is down answers
                    // `sandbox_unavailable` from the engine itself, as before.
                    healthy: AtomicBool::new(true),
                    unhealthy_after: health.unhealthy_after,
                },
                leased: AtomicU64::new(0),
            })
            .collect();
        let fleet = Fleet {
            inner: Arc::new(Inner {
                engines,
                stop,
                tasks,
            }),
        };
        // One engine has nowhere else to send work: it is never marked out.
        if fleet.inner.engines.len() > 1 {
            for index in 0..fleet.inner.engines.len() {
                fleet
                    .inner
                    .tasks
                    .spawn(watch_health(fleet.clone(), index, health.interval));
            }
        }
        fleet
    }

    /// Each engine's removal of orphans (see [`Sandboxes::start_sweep`]).
    pub fn start_sweeps(&self, lifetimes: Lifetimes) {
        for engine in &self.inner.engines {
            engine.sandboxes.start_sweep(lifetimes);
        }
    }

    /// Every engine's sandboxes share one config but for its runtime (an engine's own
    /// `runtime`): the first engine's.
    pub fn config(&self) -> &SandboxConfig {
        self.inner.engines[0].sandboxes.config()
    }

    /// The engines' handles, in configuration order.
    pub fn engines(&self) -> impl Iterator<Item = &Sandboxes> {
        self.inner.engines.iter().map(|e| &e.sandboxes)
    }

    /// The engines that take new work now.
    pub fn taking_work(&self) -> impl Iterator<Item = &Sandboxes> {
        self.inner
            .engines
            .iter()
            .filter(|e| e.health.is_healthy())
            .map(|e| &e.sandboxes)
    }

    pub fn engine_health(&self) -> Vec<EngineHealth> {
        self.inner
            .engines
            .iter()
            .map(|e| EngineHealth {
                id: e.sandboxes.engine_id().to_owned(),
                healthy: e.health.is_healthy(),
                owned: e.sandboxes.owned_count(),
                capacity: e.sandboxes.capacity(),
                created: e.sandboxes.created_count(),
                leased: e.leased.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Containers created since start, on every engine.
    pub fn created_count(&self) -> u64 {
        self.engines().map(Sandboxes::created_count).sum()
    }

    /// Sandboxes owned right now, on every engine.
    pub fn owned_count(&self) -> usize {
        self.engines().map(Sandboxes::owned_count).sum()
    }

    /// Every engine's tally, added up.
    pub fn tally(&self) -> SandboxTally {
        let mut total = SandboxTally::default();
        for engine in self.engines() {
            let tally = engine.tally();
            for (key, count) in tally.by_kind {
                *total.by_kind.entry(key).or_default() += count;
            }
            total.created += tally.created;
            total.removed += tally.removed;
            total.reaped += tally.reaped;
            // A process-wide counter already: the same on every engine.
            total.engine_errors = tally.engine_errors;
        }
        total
    }

    /// Every language's pool, added up over the engines.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        let mut total: Vec<PoolStats> = Vec::new();
        for engine in &self.inner.engines {
            for stats in engine.pool.stats() {
                match total.iter_mut().find(|t| t.language == stats.language) {
                    Some(t) => {
                        t.size += stats.size;
                        t.ready += stats.ready;
                        t.filling += stats.filling;
                        t.hits += stats.hits;
                        t.misses += stats.misses;
                        t.recycled += stats.recycled;
                        t.returned += stats.returned;
                    }
                    None => total.push(stats),
                }
            }
        }
        total
    }

    /// Answers whether an engine that takes work responds.
    pub async fn ping(&self) -> Result<(), SandboxError> {
        let mut last = None;
        for engine in self.taking_work() {
            match engine.ping().await {
                Ok(()) => return Ok(()),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(no_engine))
    }

    /// A started sandbox for `spec` (see [`WarmPool::lease`]) on the engine placement picks,
    /// placed again elsewhere when that engine fails before the sandbox is handed over.
    pub async fn lease(
        &self,
        spec: &SandboxSpec,
    ) -> Result<(Sandbox, Option<PoolLease>), SandboxError> {
        self.placed(Some(&spec.language), |engine| async move {
            let leased = engine.pool.lease(&engine.sandboxes, spec).await?;
            engine.leased.fetch_add(1, Ordering::Relaxed);
            Ok(leased)
        })
        .await
    }

    /// A new sandbox (a session's) on the engine with room, placed again elsewhere when that
    /// engine fails.
    pub async fn create(&self, spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        self.placed(None, |engine| engine.sandboxes.create(spec))
            .await
    }

    /// Tries engines in placement order until one does `work` or none is left.
    async fn placed<'a, T, F, Fut>(
        &'a self,
        language: Option<&str>,
        work: F,
    ) -> Result<T, SandboxError>
    where
        F: Fn(&'a Engine) -> Fut,
        Fut: std::future::Future<Output = Result<T, SandboxError>>,
    {
        let engines = &self.inner.engines;
        let mut tried = vec![false; engines.len()];
        let mut last = None;
        while let Some(index) = self.place(language, &tried) {
            tried[index] = true;
            let engine = &engines[index];
            match work(engine).await {
                Ok(done) => return Ok(done),
                Err(err) if engines.len() > 1 && elsewhere_may_work(&err) => {
                    if is_engine_failure(&err) {
                        engine.health.failed(engine.sandboxes.engine_id());
                    }
                    tracing::warn!(engine = engine.sandboxes.engine_id(), error = %err, "placing the sandbox on another engine");
                    last = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(no_engine))
    }

    /// The engine for the next sandbox among those not `tried`: healthy ones only; of those
    /// with a ready sandbox of `language` if any, the freer of two picked at random.
    fn place(&self, language: Option<&str>, tried: &[bool]) -> Option<usize> {
        let engines = &self.inner.engines;
        // One engine: nothing to choose (it is never marked out), no look at pools or room.
        if engines.len() == 1 {
            return (!tried[0]).then_some(0);
        }
        let open: Vec<usize> = (0..engines.len())
            .filter(|&i| !tried[i] && engines[i].health.is_healthy())
            .collect();
        let warm: Vec<usize> = match language {
            Some(language) => open
                .iter()
                .copied()
                .filter(|&i| engines[i].pool.ready(language) > 0)
                .collect(),
            None => Vec::new(),
        };
        let among = if warm.is_empty() { open } else { warm };
        let free: Vec<usize> = among
            .iter()
            .map(|&i| {
                let sandboxes = &engines[i].sandboxes;
                sandboxes.capacity().saturating_sub(sandboxes.owned_count())
            })
            .collect();
        let mut rng = rand::rng();
        let (a, b) = (
            rng.random_range(0..among.len().max(1)),
            rng.random_range(0..among.len().max(1)),
        );
        pick_freer(&among, &free, a, b)
    }

    /// Back to its own engine's pool (see [`WarmPool::give_back`]).
    pub fn give_back(&self, sandbox: Sandbox) {
        if let Some(engine) = self
            .inner
            .engines
            .iter()
            .find(|e| e.sandboxes.engine_id() == sandbox.engine_id())
        {
            engine.pool.give_back(sandbox);
        }
    }

    /// Takes back the running sandboxes of `kind` on every engine that answers (see
    /// [`Sandboxes::adopt`]); an engine that does not is skipped and logged, its sandboxes
    /// stay where they are for the next start.
    pub async fn adopt(
        &self,
        kind: SandboxKind,
        labels: &[String],
        memory_mb: u64,
    ) -> Result<Vec<Adopted>, SandboxError> {
        let mut adopted = Vec::new();
        let mut answered = false;
        let mut last = None;
        for engine in self.engines() {
            match engine.adopt(kind, labels, memory_mb).await {
                Ok(found) => {
                    answered = true;
                    adopted.extend(found);
                }
                Err(err) => {
                    tracing::warn!(engine = engine.engine_id(), error = %err, "cannot take back this engine's sandboxes");
                    last = Some(err);
                }
            }
        }
        match (answered, last) {
            (false, Some(err)) => Err(err),
            _ => Ok(adopted),
        }
    }

    /// Stops the health checks and every pool, then removes what each engine still owns.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        for engine in &self.inner.engines {
            engine.pool.shutdown().await;
        }
        for engine in &self.inner.engines {
            engine.sandboxes.shutdown().await;
        }
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("engines", &self.engine_health())
            .finish()
    }
}

fn no_engine() -> SandboxError {
    SandboxError::EngineUnavailable("no engine takes work right now".to_owned())
}

/// A failure that says nothing about the job: another engine may well succeed.
fn elsewhere_may_work(err: &SandboxError) -> bool {
    is_engine_failure(err)
        || matches!(
            err,
            SandboxError::AtCapacity
                | SandboxError::ImageMissing(_)
                | SandboxError::RuntimeMissing(_)
        )
}

/// A failure of the engine itself (counted against its health).
fn is_engine_failure(err: &SandboxError) -> bool {
    match err {
        SandboxError::EngineUnavailable(_) | SandboxError::CreationTask(_) => true,
        SandboxError::EngineRefused { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Of the candidates at positions `a` and `b` of `among`, the one with more free room (`a`
/// on a tie); `None` when there is no candidate.
fn pick_freer(among: &[usize], free: &[usize], a: usize, b: usize) -> Option<usize> {
    if among.is_empty() {
        return None;
    }
    let (a, b) = (a % among.len(), b % among.len());
    Some(if free[b] > free[a] {
        among[b]
    } else {
        among[a]
    })
}

/// Pings one engine every `interval` until the fleet stops.
async fn watch_health(fleet: Fleet, index: usize, interval: Duration) {
    let stop = fleet.inner.stop.clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let engine = &fleet.inner.engines[index];
        let id = engine.sandboxes.engine_id();
        match tokio::time::timeout(interval, engine.sandboxes.ping()).await {
            Ok(Ok(())) => engine.health.succeeded(id),
            Ok(Err(_)) | Err(_) => engine.health.failed(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_freer_of_the_two_choices_wins_and_a_tie_keeps_the_first() {
        let among = [4, 7, 9];
        let free = [1, 5, 5];
        assert_eq!(pick_freer(&among, &free, 0, 1), Some(7));
        assert_eq!(pick_freer(&among, &free, 1, 0), Some(7));
        assert_eq!(pick_freer(&among, &free, 1, 2), Some(7));
        assert_eq!(pick_freer(&among, &free, 2, 1), Some(9));
        assert_eq!(pick_freer(&among, &free, 0, 0), Some(4));
        assert_eq!(pick_freer(&[], &[], 0, 1), None);
    }

    #[test]
    fn an_engine_is_out_after_failures_in_a_row_and_back_after_one_success() {
        let health = Health {
            failures: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            unhealthy_after: 3,
        };
        health.failed("e");
        health.failed("e");
        assert!(health.is_healthy());
        health.succeeded("e");
        health.failed("e");
        health.failed("e");
        assert!(
            health.is_healthy(),
            "a success in between starts the count again"
        );
        health.failed("e");
        assert!(!health.is_healthy());
        health.succeeded("e");
        assert!(health.is_healthy());
    }

    #[test]
    fn only_failures_that_say_nothing_of_the_job_are_placed_again() {
        assert!(elsewhere_may_work(&SandboxError::EngineUnavailable(
            "x".into()
        )));
        assert!(elsewhere_may_work(&SandboxError::AtCapacity));
        assert!(elsewhere_may_work(&SandboxError::ImageMissing("i".into())));
        assert!(elsewhere_may_work(&SandboxError::EngineRefused {
            status: 500,
            message: String::new()
        }));
        assert!(!elsewhere_may_work(&SandboxError::EngineRefused {
            status: 409,
            message: String::new()
        }));
        assert!(!elsewhere_may_work(&SandboxError::NestedLauncher));
        assert!(!is_engine_failure(&SandboxError::AtCapacity));
    }
}
