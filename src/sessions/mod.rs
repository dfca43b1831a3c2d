//! Sessions: one sandbox that lives across runs (its work dir keeps the files) until it is
//! deleted, reaches its maximum age, or sits idle too long.
//!
//! A session's sandbox is a lasting (keeper) sandbox: after every run, every process the
//! run started is ended before the response. Runs in one session are serialised (a second run
//! waits for the first). A sandbox whose memory ran out, or whose programs could not be ended,
//! is replaced by a fresh one (its files are lost, and the response says so). A reaper task
//! removes expired sessions; the records sit behind [`store::SessionStore`].
//!
//! A session also has a terminal shared by every client attached to it (its room, see
//! [`crate::rooms`] and [`attach`]): a REPL on a PTY in the same sandbox, which a run's cleanup
//! spares.

pub mod attach;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{SessionsConfig, TerminalConfig};
use crate::executor::{
    Executor, InSandboxRun, Job, JobError, JobRequest, LABEL_LANGUAGE, LastingSpec, RunError,
    Sandbox, SandboxError,
};
use crate::languages::Language;
use crate::rooms::{InputRefused, LOST_WITH_SANDBOX, SharedTerminal};
use store::{MemoryStore, SessionRecord, SessionStore};

/// Language of a session created without one: a shell.
const DEFAULT_LANGUAGE: &str = "bash";
/// Labels that let a restarted runbox take a session back.
const LABEL_SESSION_ID: &str = "runbox.session.id";
const LABEL_SESSION_CREATED: &str = "runbox.session.created";
const LABEL_SESSION_OWNER: &str = "runbox.session.owner";

/// What logs say of a session instead of its id, which is the session's only credential (the
/// invite link of its room): the first 12 hex digits of its SHA-256, the same on every line
/// of one session and no way back to the id.
pub fn log_tag(id: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(id.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A request path as logs may show it: a session's id replaced by `{id}`, with the session's
/// [`log_tag`] beside it.
pub fn loggable_path(path: &str) -> (String, Option<String>) {
    match path.strip_prefix("/sessions/") {
        Some(rest) if !rest.is_empty() => {
            let (id, tail) = rest
                .split_once('/')
                .map_or((rest, ""), |(id, tail)| (id, tail));
            let redacted = if tail.is_empty() {
                "/sessions/{id}".to_owned()
            } else {
                format!("/sessions/{{id}}/{tail}")
            };
            (redacted, Some(log_tag(id)))
        }
        _ => (path.to_owned(), None),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no such session (it may have expired or been deleted)")]
    NotFound,
    #[error("the maximum number of live sessions is reached; retry later")]
    AtCapacity,
    #[error("this client holds {0} live sessions, the most allowed; delete one first")]
    ClientAtCapacity(usize),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Refused(#[from] InputRefused),
}

/// A session as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    pub language: String,
    pub created_at: SystemTime,
    pub last_used_at: SystemTime,
    pub expires_at: SystemTime,
}

/// The result of a run in a session.
#[derive(Debug, Clone)]
pub struct SessionRun {
    pub run: InSandboxRun,
    /// The sandbox was replaced after this run (memory ran out, or its programs could not be
    /// ended): the session goes on, with an empty work dir.
    pub restarted: bool,
}

#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    config: SessionsConfig,
    terminal_config: Arc<TerminalConfig>,
    store: Arc<dyn SessionStore>,
    executor: Executor,
    /// The sandbox of every live session of this process. The async mutex serialises runs.
    live: Mutex<HashMap<String, Arc<LiveSession>>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// The part of a session only the process holding its sandbox has; its record is in the
/// store.
struct LiveSession {
    /// The sandbox and its language. The async mutex serialises runs and terminal starts.
    slot: tokio::sync::Mutex<Option<SessionSandbox>>,
    /// Cancelled by DELETE and expiry: a run in progress ends at once.
    ended: CancellationToken,
    terminal: SharedTerminal,
}

struct SessionSandbox {
    sandbox: Sandbox,
    /// The language of the sandbox's image, which runs must use (a terminal `start` of
    /// another language moves the session to that language's image).
    language: Arc<Language>,
}

impl LiveSession {
    fn new(slot: Option<SessionSandbox>, terminal: &Arc<TerminalConfig>) -> Arc<LiveSession> {
        Arc::new(LiveSession {
            slot: tokio::sync::Mutex::new(slot),
            ended: CancellationToken::new(),
            terminal: SharedTerminal::new(terminal.clone()),
        })
    }
}

impl Sessions {
    /// Takes back the live sessions an earlier process with the same `sessions.owner` left
    /// running (expired ones are removed), then starts the reaper.
    pub async fn start(
        config: SessionsConfig,
        terminal_config: TerminalConfig,
        executor: Executor,
    ) -> Sessions {
        let sessions = Sessions {
            inner: Arc::new(Inner {
                config,
                terminal_config: Arc::new(terminal_config),
                store: Arc::new(MemoryStore::default()),
                executor,
                live: Mutex::default(),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        };
        match sessions.recover().await {
            Ok(0) => {}
            Ok(taken) => tracing::info!(taken, "took back live sessions"),
            Err(err) => tracing::warn!(error = %err, "cannot take back earlier sessions"),
        }
        let reaper = sessions.clone();
        sessions
            .inner
            .tasks
            .spawn(async move { reaper.reap_until_stopped().await });
        sessions
    }

    /// Rebuilds the session table from the labels of this owner's session sandboxes. The last
    /// run's time is not kept in a label: a session taken back counts as used at the restart.
    async fn recover(&self) -> Result<usize, SandboxError> {
        let owner = format!("{LABEL_SESSION_OWNER}={}", self.inner.config.owner);
        let adopted = self
            .inner
            .executor
            .adopt_lasting(&[owner], self.inner.config.memory_mb)
            .await?;
        let now = SystemTime::now();
        let mut taken = 0;
        for found in adopted {
            let labels = &found.labels;
            let id = labels.get(LABEL_SESSION_ID).cloned();
            let created = labels
                .get(LABEL_SESSION_CREATED)
                .and_then(|s| s.parse::<u64>().ok())
                .map(|secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs));
            let language = labels
                .get(LABEL_LANGUAGE)
                .and_then(|l| self.inner.executor.catalogue().resolve(l).cloned());
            let (Some(id), Some(created_at), Some(language)) = (id, created, language) else {
                continue; // dropped: removed
            };
            let record = SessionRecord {
                id: id.clone(),
                language: language.id.clone(),
                client: None,
                holder: self.inner.config.owner.clone(),
                sandbox: Some(found.sandbox.id().to_owned()),
                created_at,
                last_used_at: now,
            };
            if self.is_expired(&record, now) || self.lock_live().contains_key(&id) {
                continue; // dropped: removed
            }
            let live = LiveSession::new(
                Some(SessionSandbox {
                    sandbox: found.sandbox,
                    language,
                }),
                &self.inner.terminal_config,
            );
            self.lock_live().insert(id, live);
            self.inner.store.insert(record);
            taken += 1;
        }
        Ok(taken)
    }

    /// Creates a session with its own sandbox for `client`; refused (nothing created) at the
    /// capacity or the client's cap.
    pub async fn create(
        &self,
        language: Option<&str>,
        client: &str,
    ) -> Result<SessionView, SessionError> {
        let name = language.unwrap_or(DEFAULT_LANGUAGE);
        let language = self
            .inner
            .executor
            .catalogue()
            .resolve(name)
            .cloned()
            .ok_or_else(|| JobError::UnknownLanguage(name.chars().take(64).collect()))?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let live = LiveSession::new(None, &self.inner.terminal_config);
        let now = SystemTime::now();
        let mut record = SessionRecord {
            id: id.clone(),
            language: language.id.clone(),
            client: Some(client.to_owned()),
            holder: self.inner.config.owner.clone(),
            sandbox: None,
            created_at: now,
            last_used_at: now,
        };
        {
            // The place is taken under the lock, so concurrent creations cannot overshoot.
            let mut map = self.lock_live();
            if map.len() >= self.inner.config.max_sessions {
                return Err(SessionError::AtCapacity);
            }
            let cap = self.inner.config.max_per_client;
            if self.inner.store.held_by(client) >= cap {
                return Err(SessionError::ClientAtCapacity(cap));
            }
            map.insert(id.clone(), live.clone());
            self.inner.store.insert(record.clone());
        }
        let sandbox = match self.new_sandbox(&id, &language, now).await {
            Ok(sandbox) => sandbox,
            Err(err) => {
                self.lock_live().remove(&id);
                self.inner.store.remove(&id);
                return Err(err.into());
            }
        };
        record.sandbox = Some(sandbox.id().to_owned());
        self.install(&id, &mut *live.slot.lock().await, sandbox, language);
        Ok(self.view(&record))
    }

    /// Puts `sandbox` in the session's slot (the one there before, if any, is removed as it
    /// is dropped) and the record says so.
    fn install(
        &self,
        id: &str,
        slot: &mut Option<SessionSandbox>,
        sandbox: Sandbox,
        language: Arc<Language>,
    ) {
        self.inner.store.set_sandbox(id, sandbox.id(), &language.id);
        *slot = Some(SessionSandbox { sandbox, language });
    }

    pub fn get(&self, id: &str) -> Result<SessionView, SessionError> {
        let record = self.inner.store.get(id).ok_or(SessionError::NotFound)?;
        if self.is_expired(&record, SystemTime::now()) {
            return Err(SessionError::NotFound);
        }
        Ok(self.view(&record))
    }

    /// Runs a job in the session. The job's language must be the session's.
    pub async fn run(&self, id: &str, request: JobRequest) -> Result<SessionRun, SessionError> {
        let live = self.live(id)?;
        if request.memory_mb.is_some() {
            return Err(SessionError::Invalid(format!(
                "`memory_mb` is fixed for a session ({} MB, files included)",
                self.inner.config.memory_mb
            )));
        }
        let job = self.inner.executor.validate(request)?;
        if !job.tests.is_empty() {
            return Err(SessionError::Invalid(
                "`tests` are run by POST /run, in a sandbox of their own".to_owned(),
            ));
        }
        let ended = live.ended.clone();
        let result = tokio::select! {
            result = self.run_locked(id, &live, job) => result,
            () = ended.cancelled() => Err(SessionError::NotFound),
        };
        if result.is_ok() {
            self.inner.store.touch(id, SystemTime::now());
        }
        result
    }

    async fn run_locked(
        &self,
        id: &str,
        live: &LiveSession,
        job: Job,
    ) -> Result<SessionRun, SessionError> {
        let mut slot = live.slot.lock().await;
        let current = slot.as_ref().ok_or(SessionError::NotFound)?;
        // Checked under the lock: a terminal `start` may have moved the session meanwhile.
        if job.language.id != current.language.id {
            return Err(SessionError::Invalid(format!(
                "this session runs {}; create a session for {}",
                current.language.id, job.language.id
            )));
        }
        let run = self.inner.executor.run_in(&current.sandbox, job).await?;
        let restarted = run.sandbox_unusable;
        if restarted {
            // The old sandbox goes (dropping removes it, the terminal's program with it); the
            // session goes on in a fresh one.
            let language = current.language.clone();
            live.terminal.program_lost(LOST_WITH_SANDBOX);
            *slot = None;
            let sandbox = self.new_sandbox(id, &language, self.created_at(id)).await?;
            self.install(id, &mut slot, sandbox, language);
        }
        Ok(SessionRun { run, restarted })
    }

    /// Removes a session at once (a run in progress is ended).
    pub async fn delete(&self, id: &str) -> Result<(), SessionError> {
        let live = self.lock_live().remove(id);
        let record = self.inner.store.remove(id);
        match (live, record) {
            (None, None) => Err(SessionError::NotFound),
            (live, _) => {
                if let Some(live) = live {
                    live.ended.cancel();
                    live.terminal.close();
                    // Once the run (if any) has let go, dropping the sandbox removes it.
                    live.slot.lock().await.take();
                }
                Ok(())
            }
        }
    }

    /// The process is shutting down (its sessions are being kept or removed).
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    pub fn terminal_config(&self) -> &TerminalConfig {
        &self.inner.terminal_config
    }

    pub fn live_count(&self) -> usize {
        self.lock_live().len()
    }

    /// Clients attached to the terminals of all live sessions.
    /// (Also what the metrics read: see the `SessionsState` impl below.)
    pub fn terminal_clients(&self) -> usize {
        self.lock_live()
            .values()
            .map(|session| session.terminal.clients())
            .sum()
    }

    /// Removes every session whose age or idle time is past the limit; returns how many.
    pub async fn reap(&self) -> usize {
        let now = SystemTime::now();
        // A session with clients on its terminal is in use: only its age can end it.
        let attended: Vec<String> = self
            .lock_live()
            .iter()
            .filter(|(_, live)| live.terminal.clients() > 0)
            .map(|(id, _)| id.clone())
            .collect();
        for id in attended {
            self.inner.store.touch(&id, now);
        }
        let expired: Vec<String> = self
            .inner
            .store
            .all()
            .into_iter()
            .filter(|r| self.is_expired(r, now))
            .map(|r| r.id)
            .collect();
        let mut removed = 0;
        for id in expired {
            if self.delete(&id).await.is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Stops the reaper; then leaves every session's sandbox running for the next start
    /// (`sessions.keep_on_shutdown`) or removes it.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let ids: Vec<String> = self.lock_live().keys().cloned().collect();
        for id in ids {
            if self.inner.config.keep_on_shutdown {
                let live = self.lock_live().remove(&id);
                if let Some(live) = live {
                    live.ended.cancel();
                    // The terminal's program stays with the sandbox; the next start ends it
                    // when a client starts one.
                    live.terminal.close();
                    if let Some(current) = live.slot.lock().await.take() {
                        current.sandbox.detach();
                    }
                }
            } else {
                let _ = self.delete(&id).await;
            }
        }
    }

    async fn reap_until_stopped(&self) {
        let mut ticker = tokio::time::interval(self.inner.config.reaper_interval());
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = self.inner.stop.cancelled() => return,
            }
            let removed = self.reap().await;
            if removed > 0 {
                tracing::info!(removed, "reaper removed expired sessions");
            }
        }
    }

    async fn new_sandbox(
        &self,
        id: &str,
        language: &Language,
        created_at: SystemTime,
    ) -> Result<Sandbox, SandboxError> {
        let created_secs = created_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.inner
            .executor
            .create_lasting(LastingSpec {
                name: format!("{id}.{}", uuid::Uuid::new_v4().simple()),
                language,
                memory_mb: self.inner.config.memory_mb,
                work_dir_mb: self.inner.config.work_dir_mb,
                labels: vec![
                    (LABEL_SESSION_ID.to_owned(), id.to_owned()),
                    (LABEL_SESSION_CREATED.to_owned(), created_secs.to_string()),
                    (
                        LABEL_SESSION_OWNER.to_owned(),
                        self.inner.config.owner.clone(),
                    ),
                ],
            })
            .await
    }

    fn created_at(&self, id: &str) -> SystemTime {
        self.inner
            .store
            .get(id)
            .map_or_else(SystemTime::now, |r| r.created_at)
    }

    fn expires_at(&self, record: &SessionRecord) -> SystemTime {
        let by_age = record.created_at + self.inner.config.max_age();
        let by_idle = record.last_used_at + self.inner.config.idle_timeout();
        by_age.min(by_idle)
    }

    fn is_expired(&self, record: &SessionRecord, now: SystemTime) -> bool {
        now >= self.expires_at(record)
    }

    fn view(&self, record: &SessionRecord) -> SessionView {
        SessionView {
            id: record.id.clone(),
            language: record.language.clone(),
            created_at: record.created_at,
            last_used_at: record.last_used_at,
            expires_at: self.expires_at(record),
        }
    }

    /// A live, unexpired session.
    fn live(&self, id: &str) -> Result<Arc<LiveSession>, SessionError> {
        self.get(id)?;
        self.lock_live()
            .get(id)
            .cloned()
            .ok_or(SessionError::NotFound)
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveSession>>> {
        // Single map operations only: a panic cannot leave the map inconsistent.
        self.inner
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.live_count())
            .finish_non_exhaustive()
    }
}

impl crate::metrics::SessionsState for Sessions {
    fn sessions_and_clients(&self) -> (usize, usize) {
        (self.live_count(), self.terminal_clients())
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;

    #[test]
    fn session_ids_never_reach_a_log_line() {
        let id = "3f2c9a4e-0000-4000-8000-1234567890ab";
        let (path, tag) = loggable_path(&format!("/sessions/{id}/terminal"));
        assert_eq!(path, "/sessions/{id}/terminal");
        let tag = tag.unwrap();
        assert_eq!(tag.len(), 12);
        assert!(!id.contains(&tag));
        assert_eq!(tag, log_tag(id));
        assert_eq!(
            loggable_path(&format!("/sessions/{id}")),
            ("/sessions/{id}".to_owned(), Some(tag))
        );
        assert_eq!(loggable_path("/sessions"), ("/sessions".to_owned(), None));
        assert_eq!(loggable_path("/run"), ("/run".to_owned(), None));
    }
}
