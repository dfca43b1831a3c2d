//! The warm pool: job sandboxes created, attached and started before any job asks for one, so
//! a job's hot path makes no Engine API call (see [`super::runner`]).
//!
//! Security is unchanged: a pooled sandbox has the full policy. In `fresh` mode it serves
//! exactly one job and is removed after it, like a sandbox created for the job; in `nested`
//! mode it serves jobs one at a time, each in a fresh nested sandbox (see `nested`), and comes
//! back after each one it ended cleanly ([`WarmPool::give_back`]). One refill task per language keeps
//! `size` sandboxes ready, creating the missing ones concurrently as soon as one is taken; a
//! sandbox that waited longer than `max_idle` is removed and replaced (so an image rebuilt
//! meanwhile is picked up and nothing sits forever). The pool never fills past `capacity`
//! sandboxes owned by this process, and a job that finds its pool empty waits for a sandbox
//! the pool owes (handed over the moment it is started) or, when more jobs wait than the pool
//! will make, creates one itself: an empty pool costs time, never an error. Under a
//! sustained load this keeps the engine at the pool's number of concurrent creations instead
//! of adding one per waiting job, which only made every creation slower.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{MainProcess, Sandbox, SandboxError, SandboxKind, SandboxSpec, Sandboxes};

/// Pause after a failed creation (engine down, image missing) before the pool tries again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Longest pause between two looks at a pool when nothing happens (for recycling).
const MAX_RECHECK: Duration = Duration::from_secs(30);
/// Longest time a refill yields to jobs the pool just served. Starting a container costs
/// ~100 ms of CPU in the engine and runc; on a small machine, refilling while a burst of warm
/// jobs runs made those jobs 4x slower (measured: 134 ms instead of 31 ms at the median).
const REFILL_YIELD_MAX: Duration = Duration::from_millis(250);

/// What one language's pool holds.
#[derive(Debug, Clone)]
pub struct PoolSlot {
    pub language: String,
    pub image: String,
    /// Memory cap the sandboxes are started with (a job may change it when it takes one).
    pub memory_mb: u64,
    /// How many sandboxes to keep ready; 0 disables the pool for the language.
    pub size: usize,
    /// The compiler each of them starts ahead of a job (`SandboxSpec::warm_compiler`).
    pub warm_compiler: Option<Vec<String>>,
}

/// One language's pool as the metrics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub language: String,
    pub size: usize,
    pub ready: usize,
    /// Being created right now.
    pub filling: usize,
    /// Jobs served from the pool / that found it empty.
    pub hits: u64,
    pub misses: u64,
    /// Sandboxes removed unused because they waited longer than `max_idle`.
    pub recycled: u64,
    /// Reused sandboxes that came back after a job, ready for the next.
    pub returned: u64,
}

/// Handle to every language's pool. Cheap to clone.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<Inner>,
}

struct Inner {
    pools: HashMap<String, Arc<LanguagePool>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

struct LanguagePool {
    slot: PoolSlot,
    state: Mutex<PoolState>,
    filling: AtomicUsize,
    wake: Notify,
    hits: AtomicU64,
    misses: AtomicU64,
    recycled: AtomicU64,
    returned: AtomicU64,
    /// Reused sandboxes on their way back, cleaning up after a job.
    returning: AtomicUsize,
    /// Jobs served by this pool that are still running (see [`PoolLease`]).
    in_use: AtomicUsize,
}

/// Held by a job that a pooled sandbox serves, for as long as it runs: the pool's refill
/// yields to it for a moment (see `refill`).
#[derive(Debug)]
pub struct PoolLease {
    pool: Arc<LanguagePool>,
}

impl Drop for PoolLease {
    fn drop(&mut self) {
        self.pool.in_use.fetch_sub(1, Ordering::AcqRel);
        self.pool.wake.notify_one();
    }
}

impl std::fmt::Debug for LanguagePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanguagePool")
            .field("language", &self.slot.language)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct PoolState {
    ready: VecDeque<Ready>,
    /// Jobs waiting for a sandbox being created, first come first served.
    waiters: VecDeque<oneshot::Sender<Sandbox>>,
}

struct Ready {
    sandbox: Sandbox,
    since: Instant,
}

impl WarmPool {
    /// Starts a refill task for every slot with a size above 0.
    pub fn start(
        sandboxes: &Sandboxes,
        slots: Vec<PoolSlot>,
        max_idle: Duration,
        capacity: usize,
    ) -> WarmPool {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut pools = HashMap::new();
        for slot in slots {
            let pool = Arc::new(LanguagePool {
                slot,
                state: Mutex::default(),
                filling: AtomicUsize::new(0),
                wake: Notify::new(),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                recycled: AtomicU64::new(0),
                returned: AtomicU64::new(0),
                returning: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
            });
            if pool.slot.size > 0 {
                tasks.spawn(refill(
                    pool.clone(),
                    sandboxes.clone(),
                    max_idle,
                    capacity,
                    stop.clone(),
                    tasks.clone(),
                ));
            }
            pools.insert(pool.slot.language.clone(), pool);
        }
        WarmPool {
            inner: Arc::new(Inner { pools, stop, tasks }),
        }
    }

    /// A started sandbox for `spec`: a pooled one of its language (given `spec`'s memory cap;
    /// the hot path makes no Engine API call when the caps agree), else one created now. The
    /// lease, held while the job runs, tells the pool one of its sandboxes is at work.
    pub async fn lease(
        &self,
        sandboxes: &Sandboxes,
        spec: &SandboxSpec,
    ) -> Result<(Sandbox, Option<PoolLease>), SandboxError> {
        if let Some((sandbox, lease)) = self.take(&spec.language).await {
            match sandbox.with_memory_limit(spec).await {
                Ok(sandbox) => return Ok((sandbox, Some(lease))),
                // One that cannot take the job's cap (it holds more at rest, a warm compiler
                // among it, than the job may use): removed, and the job gets a new one.
                Err(err) => {
                    tracing::debug!(language = %spec.language, error = %err, "a pooled sandbox could not take the job's memory cap; a new one instead")
                }
            }
        }
        Ok((sandboxes.create(spec).await?, None))
    }

    /// A sandbox for `language` from its pool: a ready one, or else the next one the pool
    /// finishes creating when more are on their way than jobs already wait for. `None` when
    /// the language has no pool or nothing is on its way: the caller creates its own. The
    /// pool starts replacing what was taken at once.
    pub async fn take(&self, language: &str) -> Option<(Sandbox, PoolLease)> {
        let pool = self.inner.pools.get(language)?;
        if pool.slot.size == 0 {
            return None;
        }
        let waiting = {
            let mut state = pool.lock();
            if let Some(ready) = state.ready.pop_front() {
                pool.hits.fetch_add(1, Ordering::Relaxed);
                pool.wake.notify_one();
                return Some((ready.sandbox, pool.lease()));
            }
            // Every sandbox the pool lacks is on its way: being created, or about to be once
            // the refill stops yielding (a waiting job stops it at once).
            let on_its_way = pool.slot.size.saturating_sub(state.ready.len());
            if on_its_way > state.waiters.len() {
                let (sender, receiver) = oneshot::channel();
                state.waiters.push_back(sender);
                Some(receiver)
            } else {
                None
            }
        };
        pool.wake.notify_one();
        // A failed creation or a shutdown drops the sender: then the caller creates its own.
        let handed = match waiting {
            Some(receiver) => receiver.await.ok(),
            None => None,
        };
        let counter = if handed.is_some() {
            &pool.hits
        } else {
            &pool.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        handed.map(|sandbox| (sandbox, pool.lease()))
    }

    /// Takes back a reused sandbox after a job (see `Sandbox::run_program`): to a job waiting
    /// for one, else to the front of the ready ones (the one just used has the warmest cache)
    /// while fewer than the pool's size are ready. Otherwise, or when its language has no
    /// pool, it is dropped, i.e. removed.
    ///
    /// It first waits, in a task of the pool's, for the runner to say it has cleaned up (see
    /// [`Sandbox::until_ready`]): the job's answer does not wait for that.
    pub fn give_back(&self, mut sandbox: Sandbox) {
        let Some(pool) = sandbox
            .reused_for()
            .and_then(|language| self.inner.pools.get(language))
            .cloned()
        else {
            return;
        };
        if pool.slot.size == 0 || self.inner.stop.is_cancelled() {
            return;
        }
        let stop = self.inner.stop.clone();
        pool.returning.fetch_add(1, Ordering::AcqRel);
        self.inner.tasks.spawn(async move {
            let ready = tokio::select! {
                ready = sandbox.until_ready() => ready,
                () = stop.cancelled() => false,
            };
            if ready {
                pool.take_back(sandbox);
            }
            pool.returning.fetch_sub(1, Ordering::AcqRel);
            pool.wake.notify_one();
        });
    }

    /// Sandboxes of `language` ready right now.
    pub fn ready(&self, language: &str) -> usize {
        self.inner
            .pools
            .get(language)
            .map_or(0, |pool| pool.lock().ready.len())
    }

    pub fn stats(&self) -> Vec<PoolStats> {
        let mut stats: Vec<PoolStats> = self
            .inner
            .pools
            .values()
            .map(|pool| PoolStats {
                language: pool.slot.language.clone(),
                size: pool.slot.size,
                ready: pool.lock().ready.len(),
                filling: pool.filling.load(Ordering::Relaxed),
                hits: pool.hits.load(Ordering::Relaxed),
                misses: pool.misses.load(Ordering::Relaxed),
                recycled: pool.recycled.load(Ordering::Relaxed),
                returned: pool.returned.load(Ordering::Relaxed),
            })
            .collect();
        stats.sort_by(|a, b| a.language.cmp(&b.language));
        stats
    }

    /// Stops refilling and hands every ready sandbox to the cleanup task.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        for pool in self.inner.pools.values() {
            let mut state = pool.lock();
            state.ready.clear();
            state.waiters.clear();
        }
    }
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("stats", &self.stats())
            .finish()
    }
}

impl LanguagePool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // Only push/pop/retain happen under this lock: a panic cannot leave it inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lease(self: &Arc<Self>) -> PoolLease {
        self.in_use.fetch_add(1, Ordering::AcqRel);
        PoolLease { pool: self.clone() }
    }

    /// Hands a new sandbox to the first job still waiting, else puts it with the ready ones.
    fn deliver(&self, mut sandbox: Sandbox) {
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.send(sandbox) {
                Ok(()) => return,
                // That job went away meanwhile: the next one, or the ready queue.
                Err(returned) => sandbox = returned,
            }
        }
        state.ready.push_back(Ready {
            sandbox,
            since: Instant::now(),
        });
    }

    /// A reused sandbox that is ready again: to the first waiting job, else to the front of
    /// the ready ones while fewer than the pool's size are ready (else it is dropped).
    fn take_back(&self, mut sandbox: Sandbox) {
        self.returned.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.send(sandbox) {
                Ok(()) => return,
                Err(returned) => sandbox = returned,
            }
        }
        if state.ready.len() < self.slot.size {
            state.ready.push_front(Ready {
                sandbox,
                since: Instant::now(),
            });
        }
    }

    /// A creation failed: the first waiting job stops waiting and creates its own.
    fn release_one_waiter(&self) {
        self.lock().waiters.pop_front();
    }

    /// Jobs waiting for more sandboxes than are on their way stop waiting and create their
    /// own, latest first. On their way: being created (the refill stops at the capacity), or
    /// a reused one back from its job and not yet ready (its runner cleaning up, ~3 ms, or
    /// warming the next job's compiler, ~0.65 s of CPU), which a job rather waits for than
    /// have a container made for it (~230 ms of engine CPU, and for Java a compile in a new
    /// JVM: measured back to back, every such job 600-1100 ms against 340-470 ms p50).
    fn release_unbacked_waiters(&self) {
        let backed = self.filling.load(Ordering::Acquire) + self.returning.load(Ordering::Acquire);
        let mut state = self.lock();
        while state.waiters.len() > backed {
            state.waiters.pop_back();
        }
    }

    fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            kind: SandboxKind::Pool,
            id: uuid::Uuid::new_v4().to_string(),
            image: self.slot.image.clone(),
            language: self.slot.language.clone(),
            memory_mb: self.slot.memory_mb,
            main: MainProcess::Runner,
            work_dir_mb: None,
            labels: Vec::new(),
            warm_compiler: self.slot.warm_compiler.clone(),
        }
    }
}

/// Keeps one language's pool full until `stop`.
async fn refill(
    pool: Arc<LanguagePool>,
    sandboxes: Sandboxes,
    max_idle: Duration,
    capacity: usize,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let recheck = (max_idle / 2).min(MAX_RECHECK);
    loop {
        let expired = {
            let mut state = pool.lock();
            let before = state.ready.len();
            state.ready.retain(|r| r.since.elapsed() < max_idle);
            before - state.ready.len()
        };
        if expired > 0 {
            pool.recycled.fetch_add(expired as u64, Ordering::Relaxed);
        }
        // Let the jobs the pool just served run first, unless a job waits for a sandbox.
        let yield_until = Instant::now() + REFILL_YIELD_MAX;
        while pool.in_use.load(Ordering::Acquire) > 0
            && pool.lock().waiters.is_empty()
            && Instant::now() < yield_until
        {
            tokio::select! {
                () = stop.cancelled() => return,
                () = pool.wake.notified() => {}
                () = tokio::time::sleep_until(yield_until.into()) => {}
            }
        }
        // Reused sandboxes at work come back after their job: they are not replaced (a job
        // that retires one drops its lease, which wakes this loop to replace it).
        let at_work = if sandboxes.config().nested() {
            pool.in_use.load(Ordering::Acquire) + pool.returning.load(Ordering::Acquire)
        } else {
            0
        };
        let have = pool.lock().ready.len() + pool.filling.load(Ordering::Relaxed) + at_work;
        for _ in have..pool.slot.size {
            if sandboxes.owned_count() >= capacity {
                break;
            }
            pool.filling.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(fill_one(pool.clone(), sandboxes.clone(), stop.clone()));
        }
        pool.release_unbacked_waiters();
        tokio::select! {
            () = stop.cancelled() => return,
            () = pool.wake.notified() => {}
            () = tokio::time::sleep(recheck) => {}
        }
    }
}

/// Creates one sandbox for the pool.
async fn fill_one(pool: Arc<LanguagePool>, sandboxes: Sandboxes, stop: CancellationToken) {
    let spec = pool.spec();
    let created = tokio::select! {
        created = sandboxes.create(&spec) => created,
        () = stop.cancelled() => {
            pool.filling.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    // A reused sandbox is at rest (its memory at rest measured) once its runner says so, for
    // a runner with a warm compiler once that is warm: it is still being made until then.
    let created = match created {
        Ok(mut sandbox) if sandbox.is_reused() => {
            let at_rest = tokio::select! {
                ready = sandbox.until_ready() => ready,
                () = stop.cancelled() => false,
            };
            if at_rest || stop.is_cancelled() {
                Ok(sandbox)
            } else {
                Err(SandboxError::RunnerNotReady)
            }
        }
        other => other,
    };
    // Counted down before a waiter is served, so `filling` never promises a sandbox that has
    // already been handed out.
    pool.filling.fetch_sub(1, Ordering::Relaxed);
    match created {
        Ok(sandbox) if !stop.is_cancelled() => pool.deliver(sandbox),
        // Shutting down: dropping it removes it.
        Ok(_) => {}
        Err(err) => {
            pool.release_one_waiter();
            tracing::warn!(language = %pool.slot.language, error = %err, "the warm pool cannot create a sandbox; retrying later");
            tokio::select! {
                () = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                () = stop.cancelled() => {}
            }
        }
    }
    pool.wake.notify_one();
}
