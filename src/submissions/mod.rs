//! Submissions: runs whose results are fetched later, by token (Judge0's asynchronous API).
//! A submission is queued, then processing (it has its sandbox), then finished with the run's
//! outcome or why it could not run. The runs are the executor's, admitted like any other.
//! Records live behind [`SubmissionStore`] (in this process's memory), bounded: at most
//! `max_pending` waiting or running, at most `max_kept` finished, none kept longer than
//! `keep_secs`. With several nodes (`cluster.redis`) each record is also written to the
//! shared [`catalog`], where every other node finds it. Whatever happens to its task, a
//! submission ends: a task that panics or is cancelled leaves it finished with an internal
//! error, and one whose node was killed is ended as abandoned by the next node that reads
//! it; never "processing" forever.

mod catalog;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SubmissionsConfig;
use crate::executor::{Executor, Job, LiveRun, RunError, RunEvent, RunOutcome, RunStatus};
use crate::shared::{Shared, SharedError};
use catalog::Catalog;

/// Where a submission is.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum State {
    Queued,
    Processing,
    /// The run's outcome, or why there is none.
    Finished(Result<Box<RunOutcome>, Failure>),
}

impl State {
    pub fn is_finished(&self) -> bool {
        matches!(self, State::Finished(_))
    }
}

/// Why a submission has no outcome, in words fit for its client (the cause itself, which may
/// name engine internals, is logged when it happens).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
pub enum Failure {
    #[error("runbox is shutting down")]
    ShuttingDown,
    #[error("runbox was overloaded and could not start the run")]
    Overloaded,
    #[error("runbox could not complete the run (an internal error, logged)")]
    Internal,
    #[error("the run did not finish")]
    Abandoned,
}

impl From<RunError> for Failure {
    fn from(err: RunError) -> Self {
        match err {
            RunError::ShuttingDown => Failure::ShuttingDown,
            RunError::Overloaded(_) => Failure::Overloaded,
            err @ (RunError::Sandbox(_) | RunError::FilesNotUnpacked(_)) => {
                tracing::error!(error = %err, "a submission's run failed");
                Failure::Internal
            }
        }
    }
}

/// One submission: what its dialect keeps of the request (opaque here), where it is, and
/// when it was created and finished.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Submission {
    pub token: String,
    /// Who submitted it (the client's identity at the edge).
    pub owner: String,
    pub request: Value,
    pub state: State,
    pub created_at: SystemTime,
    pub finished_at: Option<SystemTime>,
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// Removed; as it was.
    Gone(Box<Submission>),
    /// Still queued or running: kept.
    Pending(Box<Submission>),
    /// Another client's: kept.
    NotOwner,
    Unknown,
}

/// What is done with a submission once it has finished.
pub type OnFinish = Box<dyn FnOnce(&Submission) + Send>;

/// Refused: `max_pending` submissions are waiting or running already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("queue is full")]
pub struct QueueFull;

/// Where this process keeps its submission records (in memory; with several nodes the
/// shared [`catalog`] holds them too, written beside this store, not behind it).
pub trait SubmissionStore: Send + Sync + 'static {
    /// Adds a queued submission unless `max_pending` are pending already.
    fn insert(&self, submission: Submission) -> Result<(), QueueFull>;
    fn get(&self, token: &str) -> Option<Submission>;
    /// Moves a pending submission on; a finished one stays as it is.
    fn advance(&self, token: &str, state: State, at: SystemTime);
    /// Drops finished submissions older than `keep` (at `now`).
    fn expire(&self, now: SystemTime, keep: Duration);
    /// Removes a finished submission and returns it; a pending one stays (`Err` holds it).
    fn remove_finished(&self, token: &str) -> Option<Result<Submission, Submission>>;
    /// The finished submissions' tokens, oldest first.
    fn finished_tokens(&self) -> Vec<String>;
}

#[derive(Debug)]
pub struct MemoryStore {
    max_pending: usize,
    max_kept: usize,
    inner: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    by_token: HashMap<String, Submission>,
    pending: usize,
    /// Finished tokens, oldest first.
    finished: VecDeque<String>,
}

impl MemoryStore {
    pub fn new(max_pending: usize, max_kept: usize) -> MemoryStore {
        MemoryStore {
            max_pending,
            max_kept,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // Every operation leaves the records whole before it can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SubmissionStore for MemoryStore {
    fn insert(&self, submission: Submission) -> Result<(), QueueFull> {
        let mut records = self.lock();
        if records.pending >= self.max_pending {
            return Err(QueueFull);
        }
        records.pending += 1;
        records
            .by_token
            .insert(submission.token.clone(), submission);
        Ok(())
    }

    fn get(&self, token: &str) -> Option<Submission> {
        self.lock().by_token.get(token).cloned()
    }

    fn advance(&self, token: &str, state: State, at: SystemTime) {
        let mut records = self.lock();
        let Some(submission) = records.by_token.get_mut(token) else {
            return;
        };
        if submission.state.is_finished() {
            return;
        }
        let finishing = state.is_finished();
        submission.state = state;
        if finishing {
            submission.finished_at = Some(at);
            records.pending -= 1;
            records.finished.push_back(token.to_owned());
            while records.finished.len() > self.max_kept {
                if let Some(oldest) = records.finished.pop_front() {
                    records.by_token.remove(&oldest);
                }
            }
        }
    }

    fn remove_finished(&self, token: &str) -> Option<Result<Submission, Submission>> {
        let mut records = self.lock();
        let submission = records.by_token.get(token)?.clone();
        if !submission.state.is_finished() {
            return Some(Err(submission));
        }
        records.by_token.remove(token);
        records.finished.retain(|t| t != token);
        Some(Ok(submission))
    }

    fn finished_tokens(&self) -> Vec<String> {
        self.lock().finished.iter().cloned().collect()
    }

    fn expire(&self, now: SystemTime, keep: Duration) {
        let mut records = self.lock();
        while let Some(oldest) = records.finished.front().cloned() {
            let finished = records
                .by_token
                .get(&oldest)
                .and_then(|s| s.finished_at)
                .unwrap_or(now);
            if now.duration_since(finished).unwrap_or_default() < keep {
                break;
            }
            records.finished.pop_front();
            records.by_token.remove(&oldest);
        }
    }
}

/// The submissions of this process. Cheap to clone.
#[derive(Clone)]
pub struct Submissions {
    inner: Arc<Inner>,
}

struct Inner {
    executor: Executor,
    store: Arc<dyn SubmissionStore>,
    /// With several nodes: where the other nodes find this node's submissions, and this
    /// node theirs.
    catalog: Option<Catalog>,
    max_pending: usize,
    keep: Duration,
    /// Cancelled at shutdown: submissions still pending end as failed.
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Each pending submission's end, for a client that waits for it (`wait=true`).
    ends: Mutex<HashMap<String, watch::Sender<bool>>>,
}

/// How often finished submissions past their keep time are dropped.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

impl Submissions {
    /// Starts the expiry task. With `shared`, every submission is written to the shared
    /// catalog too.
    pub fn start(
        config: &SubmissionsConfig,
        executor: Executor,
        shared: Option<Shared>,
    ) -> Submissions {
        let keep = Duration::from_secs(config.keep_secs);
        let submissions = Submissions {
            inner: Arc::new(Inner {
                executor,
                store: Arc::new(MemoryStore::new(config.max_pending, config.max_kept)),
                catalog: shared.map(|shared| Catalog::new(shared, keep, config.max_kept)),
                max_pending: config.max_pending,
                keep,
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                ends: Mutex::default(),
            }),
        };
        let expiring = submissions.clone();
        submissions.inner.tasks.spawn(async move {
            let mut ticker = tokio::time::interval(EXPIRY_INTERVAL);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = expiring.inner.stop.cancelled() => return,
                }
                let inner = &expiring.inner;
                inner.store.expire(SystemTime::now(), inner.keep);
                // Finished ones the catalog did not take when they ended (Redis was down).
                if inner.catalog.is_some() {
                    for token in inner.store.finished_tokens() {
                        expiring.publish(&token).await;
                    }
                }
            }
        });
        submissions
    }

    /// Queues `job` and runs it in the background `runs` times (at least once), stopping at
    /// the first that does not succeed; returns its token at once. The outcome kept is the
    /// last run's, with the CPU time, wall time and memory of the runs averaged (Judge0's
    /// `number_of_runs`).
    /// `on_finish` is called with the finished submission (e.g. to call its client back).
    pub async fn submit(
        &self,
        job: Job,
        owner: &str,
        request: Value,
        runs: u32,
        on_finish: Option<OnFinish>,
    ) -> Result<String, QueueFull> {
        let token = uuid::Uuid::new_v4().to_string();
        self.inner.store.insert(Submission {
            token: token.clone(),
            owner: owner.to_owned(),
            request,
            state: State::Queued,
            created_at: SystemTime::now(),
            finished_at: None,
        })?;
        let (ended, _) = watch::channel(false);
        self.lock_ends().insert(token.clone(), ended);
        self.publish(&token).await;
        let this = self.clone();
        let running = token.clone();
        self.inner.tasks.spawn(async move {
            // Marks the submission failed if this task ends any other way than below.
            let mut guard = EndGuard {
                submissions: this.clone(),
                token: running.clone(),
                armed: true,
            };
            let ended = tokio::select! {
                ended = this.run_times(&running, job, runs.max(1)) => ended,
                () = this.inner.stop.cancelled() => Err(Failure::ShuttingDown),
            };
            this.finish(&running, ended.map(Box::new));
            guard.armed = false;
            if let (Some(on_finish), Some(finished)) = (on_finish, this.inner.store.get(&running)) {
                on_finish(&finished);
            }
            this.publish(&running).await;
        });
        Ok(token)
    }

    async fn run_times(&self, token: &str, job: Job, runs: u32) -> Result<RunOutcome, Failure> {
        let mut outcomes = Vec::with_capacity(runs as usize);
        for _ in 0..runs {
            let outcome = self.run(token, job.again()).await?;
            let succeeded = outcome.status == RunStatus::Success;
            outcomes.push(outcome);
            if !succeeded {
                break;
            }
        }
        Ok(averaged(outcomes))
    }

    async fn run(&self, token: &str, job: Job) -> Result<RunOutcome, Failure> {
        let (events, mut started) = mpsc::unbounded_channel();
        let live = LiveRun {
            events,
            stdin: None,
            kill: CancellationToken::new(),
        };
        let store = self.inner.store.clone();
        let watch_start = async {
            while let Some(event) = started.recv().await {
                if matches!(event, RunEvent::Started { .. }) {
                    store.advance(token, State::Processing, SystemTime::now());
                    self.publish(token).await;
                }
            }
        };
        let (ended, ()) = tokio::join!(self.inner.executor.run_live(job, live), watch_start);
        ended.map_err(Failure::from)
    }

    fn finish(&self, token: &str, ended: Result<Box<RunOutcome>, Failure>) {
        self.inner
            .store
            .advance(token, State::Finished(ended), SystemTime::now());
        if let Some(ended) = self.lock_ends().remove(token) {
            let _ = ended.send(true);
        }
    }

    /// Writes this node's record of `token` to the shared catalog (with several nodes). A
    /// finished one that is there leaves this node's memory: the catalog is where every node
    /// reads it and where a delete from any node removes it. A write that fails is logged and
    /// the submission goes on: its next write (when it ends, or the expiry task's retry of a
    /// finished one) carries the whole record again.
    async fn publish(&self, token: &str) {
        let (Some(catalog), Some(submission)) = (&self.inner.catalog, self.inner.store.get(token))
        else {
            return;
        };
        match catalog.put(catalog.node_id(), &submission).await {
            Ok(()) if submission.state.is_finished() => {
                self.inner.store.remove_finished(token);
            }
            Ok(()) => {}
            Err(err) => {
                tracing::warn!(error = %err, "a submission could not be written to the shared state");
            }
        }
    }

    /// The submission `token`: this node's own from memory, another node's from the shared
    /// catalog (`Err` only when that catalog cannot be read).
    pub async fn get(&self, token: &str) -> Result<Option<Submission>, SharedError> {
        if let Some(own) = self.inner.store.get(token) {
            return Ok(Some(own));
        }
        let Some(catalog) = &self.inner.catalog else {
            return Ok(None);
        };
        let Some(found) = catalog.get(token).await? else {
            return Ok(None);
        };
        let mut submission = found.submission;
        let pending = !submission.state.is_finished();
        // This node's own pending ones are in its memory: one here is from a process of the
        // same node id that is gone.
        let orphaned = pending
            && (found.node == catalog.node_id() || !catalog.node_is_live(&found.node).await?);
        if orphaned {
            // Its node is gone and will never end it.
            submission.state = State::Finished(Err(Failure::Abandoned));
            submission.finished_at = Some(SystemTime::now());
            if let Err(err) = catalog.put(&found.node, &submission).await {
                tracing::warn!(error = %err, "an abandoned submission could not be ended");
            }
        }
        Ok(Some(submission))
    }

    /// Deletes a finished submission of `owner`'s, wherever it ran; see [`Deleted`].
    pub async fn delete(&self, token: &str, owner: &str) -> Result<Deleted, SharedError> {
        let Some(found) = self.get(token).await? else {
            return Ok(Deleted::Unknown);
        };
        if found.owner != owner {
            return Ok(Deleted::NotOwner);
        }
        if !found.state.is_finished() {
            return Ok(Deleted::Pending(Box::new(found)));
        }
        if let Some(catalog) = &self.inner.catalog {
            catalog.remove(token).await?;
        }
        // Finished, so never kept back as pending; in memory still when the catalog did not
        // take it.
        self.inner.store.remove_finished(token);
        Ok(Deleted::Gone(Box::new(found)))
    }

    /// Submissions waiting or running now.
    pub fn pending(&self) -> usize {
        self.lock_ends().len()
    }

    /// Most submissions waiting or running at once.
    pub fn max_pending(&self) -> usize {
        self.inner.max_pending
    }

    /// Waits until `token` has finished (at once when it has, or is unknown).
    pub async fn wait(&self, token: &str) {
        let receiver = self.lock_ends().get(token).map(watch::Sender::subscribe);
        if let Some(mut receiver) = receiver {
            let _ = receiver.wait_for(|ended| *ended).await;
        }
    }

    /// Ends every pending submission (as failed) and waits for their tasks.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn lock_ends(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<bool>>> {
        self.inner.ends.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The last of `outcomes` (at least one), with the averages of what every run measured.
fn averaged(mut outcomes: Vec<RunOutcome>) -> RunOutcome {
    let count = outcomes.len() as u32;
    let cpu: Option<Vec<Duration>> = outcomes.iter().map(|o| o.cpu_time).collect();
    let memory: Option<Vec<u64>> = outcomes.iter().map(|o| o.memory_kb).collect();
    let wall: Option<Vec<Duration>> = outcomes
        .iter()
        .map(|o| o.run.as_ref().map(|r| r.duration))
        .collect();
    let mut last = outcomes.pop().expect("at least one run");
    if count > 1 {
        last.cpu_time = cpu.map(|all| all.iter().sum::<Duration>() / count);
        last.memory_kb = memory.map(|all| all.iter().sum::<u64>() / u64::from(count));
        if let (Some(all), Some(run)) = (wall, last.run.as_mut()) {
            run.duration = all.iter().sum::<Duration>() / count;
        }
    }
    last
}

/// Ends a submission whose task stopped without finishing it (a panic, a dropped runtime).
struct EndGuard {
    submissions: Submissions,
    token: String,
    armed: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if self.armed {
            self.submissions
                .finish(&self.token, Err(Failure::Abandoned));
            // Told to the other nodes too, while a runtime is there to do it (a node that
            // cannot leaves the record pending, and a reader ends it once the node is gone).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (submissions, token) = (self.submissions.clone(), self.token.clone());
                runtime.spawn(async move { submissions.publish(&token).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(token: &str) -> Submission {
        Submission {
            token: token.to_owned(),
            owner: "me".to_owned(),
            request: Value::Null,
            state: State::Queued,
            created_at: SystemTime::UNIX_EPOCH,
            finished_at: None,
        }
    }

    #[test]
    fn a_finished_submission_reads_back_from_its_shared_record_as_it_was() {
        use crate::executor::{CollectedOutput, PhaseOutcome};
        let run = PhaseOutcome {
            status: RunStatus::RuntimeError,
            exit_code: None,
            signal: Some("SIGSEGV"),
            output: CollectedOutput {
                stdout: vec![0xff, 0x00, b'a'],
                stderr: b"Segmentation fault\n".to_vec(),
                truncated: true,
            },
            duration: Duration::from_micros(12_345),
            cut_short: false,
            from_cache: false,
        };
        let mut submission = queued("t");
        submission.request = serde_json::json!({"source_code": "x", "language_id": 50});
        submission.finished_at = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_500));
        submission.state = State::Finished(Ok(Box::new(RunOutcome {
            id: "job".into(),
            language: "c".into(),
            version: "12".into(),
            status: RunStatus::RuntimeError,
            compile: Some(PhaseOutcome {
                status: RunStatus::Success,
                signal: None,
                exit_code: Some(0),
                from_cache: true,
                ..run.clone()
            }),
            run: Some(run),
            cpu_time: Some(Duration::from_millis(7)),
            memory_kb: Some(1024),
            tests: None,
            files: None,
        })));
        let json = serde_json::to_string(&submission).unwrap();
        // The bytes travel as base64, not as an array of numbers.
        assert!(json.contains(r#""stdout":"/wBh""#), "{json}");
        let back: Submission = serde_json::from_str(&json).unwrap();
        assert_eq!(format!("{back:?}"), format!("{submission:?}"));
        // A failure, and a signal name runbox does not know, read back too.
        submission.state = State::Finished(Err(Failure::Abandoned));
        let back: Submission =
            serde_json::from_str(&serde_json::to_string(&submission).unwrap()).unwrap();
        assert!(matches!(
            back.state,
            State::Finished(Err(Failure::Abandoned))
        ));
        let phase: PhaseOutcome = serde_json::from_value(serde_json::json!({
            "status": "timeout", "exit_code": null, "signal": "SIGNOPE",
            "output": {"stdout": "", "stderr": "", "truncated": false},
            "duration": {"secs": 1, "nanos": 0}, "cut_short": true, "from_cache": false
        }))
        .unwrap();
        assert_eq!(phase.signal, None);
    }

    #[test]
    fn the_store_bounds_pending_and_kept_submissions() {
        let store = MemoryStore::new(2, 2);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        store.insert(queued("a")).unwrap();
        store.insert(queued("b")).unwrap();
        assert_eq!(store.insert(queued("c")), Err(QueueFull));
        store.advance("a", State::Processing, t0);
        assert!(matches!(store.get("a").unwrap().state, State::Processing));
        store.advance("a", State::Finished(Err(Failure::Internal)), t0);
        // A finished one stays finished.
        store.advance("a", State::Processing, t0);
        assert!(matches!(store.get("a").unwrap().state, State::Finished(_)));
        // A place is free again; the kept ones are bounded, the oldest dropped first.
        store.insert(queued("c")).unwrap();
        store.advance("b", State::Finished(Err(Failure::Internal)), t0);
        store.advance(
            "c",
            State::Finished(Err(Failure::Internal)),
            t0 + Duration::from_secs(5),
        );
        assert!(store.get("a").is_none());
        assert!(store.get("b").is_some());
        // Expiry by age.
        store.expire(t0 + Duration::from_secs(10), Duration::from_secs(8));
        assert!(store.get("b").is_none());
        assert!(store.get("c").is_some());
        // Only a finished one is removed.
        store.insert(queued("d")).unwrap();
        assert!(matches!(store.remove_finished("d"), Some(Err(_))));
        assert!(matches!(store.remove_finished("c"), Some(Ok(_))));
        assert!(store.get("c").is_none() && store.remove_finished("c").is_none());
    }
}
