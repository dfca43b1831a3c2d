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
pub mod catalog;
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
use crate::shared::{Shared, SharedError};
use catalog::{Catalog, Claim, Held};
use store::{MemoryStore, SessionRecord, SessionStore};

/// Language of a session created without one: a shell.
const DEFAULT_LANGUAGE: &str = "bash";
/// Labels that let a restarted runbox take a session back.
const LABEL_SESSION_ID: &str = "runbox.session.id";
const LABEL_SESSION_CREATED: &str = "runbox.session.created";
const LABEL_SESSION_OWNER: &str = "runbox.session.owner";
/// The client that created the session: its per-client cap counts it again after the shared
/// catalog is rebuilt from the labels.
const LABEL_SESSION_CLIENT: &str = "runbox.session.client";

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
    /// The session's sandbox is gone with its engine (e.g. a daemon restarted without
    /// live-restore): the session is removed.
    #[error("this session's sandbox was lost with its engine; create a new session")]
    Lost,
    /// The shared catalog cannot be reached, or the session is moving between nodes.
    #[error("{0}")]
    Shared(#[from] SharedError),
    #[error("this session is moving to another node; retry")]
    Moving,
}

/// Which node serves a request for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// This one (always so without shared state).
    Here,
    /// Another live node, at this address (`cluster.node_url`).
    At(String),
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
    /// With several nodes: the shared records and leases.
    catalog: Option<Catalog>,
    /// One takeover at a time on this node (two requests for one session find it once).
    takeovers: tokio::sync::Mutex<()>,
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

/// A session's sandbox found by its label, with what its labels say.
struct Adopted {
    sandbox: Sandbox,
    language: Arc<Language>,
    labels: HashMap<String, String>,
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
    /// running (expired ones are removed), then starts the reaper. With `shared` (several
    /// nodes) nothing is taken back at start: a session is taken over by the node its next
    /// request reaches, and this node renews the leases of those it hosts.
    pub async fn start(
        config: SessionsConfig,
        terminal_config: TerminalConfig,
        executor: Executor,
        shared: Option<Shared>,
    ) -> Sessions {
        let sessions = Sessions {
            inner: Arc::new(Inner {
                config,
                terminal_config: Arc::new(terminal_config),
                store: Arc::new(MemoryStore::default()),
                executor,
                live: Mutex::default(),
                catalog: shared.map(Catalog::new),
                takeovers: tokio::sync::Mutex::new(()),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        };
        if sessions.inner.catalog.is_some() {
            let renewer = sessions.clone();
            sessions
                .inner
                .tasks
                .spawn(async move { renewer.renew_until_stopped().await });
        } else {
            match sessions.recover().await {
                Ok(0) => {}
                Ok(taken) => tracing::info!(taken, "took back live sessions"),
                Err(err) => tracing::warn!(error = %err, "cannot take back earlier sessions"),
            }
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
        // The cluster's caps, counted in the catalog (after this node's own, which cost
        // nothing to check).
        if let Some(catalog) = &self.inner.catalog {
            let claimed = catalog
                .claim(
                    &record,
                    self.inner.config.max_sessions,
                    self.inner.config.max_per_client,
                )
                .await;
            let refusal = match claimed {
                Ok(Claim::Taken) => None,
                Ok(Claim::AtCapacity) => Some(SessionError::AtCapacity),
                Ok(Claim::ClientAtCapacity) => Some(SessionError::ClientAtCapacity(
                    self.inner.config.max_per_client,
                )),
                Err(err) => Some(err.into()),
            };
            if let Some(refusal) = refusal {
                self.lock_live().remove(&id);
                self.inner.store.remove(&id);
                return Err(refusal);
            }
        }
        let sandbox = match self.new_sandbox(&id, &language, now).await {
            Ok(sandbox) => sandbox,
            Err(err) => {
                self.lock_live().remove(&id);
                self.inner.store.remove(&id);
                if let Some(catalog) = &self.inner.catalog {
                    let _ = catalog.remove(&id, Some(client)).await;
                }
                return Err(err.into());
            }
        };
        record.sandbox = Some(sandbox.id().to_owned());
        self.install(&id, &mut *live.slot.lock().await, sandbox, language)
            .await;
        Ok(self.view(&record))
    }

    /// Puts `sandbox` in the session's slot (the one there before, if any, is removed as it
    /// is dropped) and the record says so.
    async fn install(
        &self,
        id: &str,
        slot: &mut Option<SessionSandbox>,
        sandbox: Sandbox,
        language: Arc<Language>,
    ) {
        self.inner.store.set_sandbox(id, sandbox.id(), &language.id);
        if let Some(catalog) = &self.inner.catalog
            && let Err(err) = catalog.set_sandbox(id, sandbox.id(), &language.id).await
        {
            // The record's sandbox is for the reader's information only: a takeover finds
            // the sandbox by its session label.
            tracing::warn!(error = %err, "the shared catalog missed a session's new sandbox");
        }
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
        match &result {
            Ok(_) => {
                let now = SystemTime::now();
                self.inner.store.touch(id, now);
                if let Some(catalog) = &self.inner.catalog {
                    let _ = catalog.touch(id, now).await;
                }
            }
            Err(SessionError::Lost) => {
                tracing::warn!(session = %log_tag(id), "a session's sandbox is gone: session removed");
                let _ = self.delete(id).await;
            }
            Err(_) => {}
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
        let run = match self.inner.executor.run_in(&current.sandbox, job).await {
            Err(RunError::Sandbox(err)) if err.is_gone() => return Err(SessionError::Lost),
            other => other?,
        };
        let restarted = run.sandbox_unusable;
        if restarted {
            // The old sandbox goes (dropping removes it, the terminal's program with it); the
            // session goes on in a fresh one.
            let language = current.language.clone();
            live.terminal.program_lost(LOST_WITH_SANDBOX);
            *slot = None;
            let sandbox = self.new_sandbox(id, &language, self.created_at(id)).await?;
            self.install(id, &mut slot, sandbox, language).await;
        }
        Ok(SessionRun { run, restarted })
    }

    /// Removes a session at once (a run in progress is ended).
    pub async fn delete(&self, id: &str) -> Result<(), SessionError> {
        let live = self.lock_live().remove(id);
        let record = self.inner.store.remove(id);
        if let Some(catalog) = &self.inner.catalog
            && record.is_some()
        {
            let client = record.as_ref().and_then(|r| r.client.as_deref());
            if let Err(err) = catalog.remove(id, client).await {
                tracing::warn!(error = %err, "the shared catalog keeps a deleted session until the reaper");
            }
        }
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
        removed + self.reap_unhosted(now).await
    }

    /// With several nodes: the expired sessions no live node hosts (their host died and no
    /// request came since) are taken over and removed by whichever node's reaper finds them.
    async fn reap_unhosted(&self, now: SystemTime) -> usize {
        let Some(catalog) = &self.inner.catalog else {
            return 0;
        };
        let unhosted = match catalog.unhosted().await {
            Ok(unhosted) => unhosted,
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the shared catalog to reap");
                return 0;
            }
        };
        let mut removed = 0;
        for (holder, record) in unhosted {
            if !self.is_expired(&record, now) {
                continue;
            }
            let id = record.id.clone();
            if self.take_over(&id, holder, Some(record)).await.is_ok() {
                if self.delete(&id).await.is_ok() {
                    removed += 1;
                }
            } else if catalog.locate(&id).await.ok() == Some(Held::Unknown) {
                removed += 1;
            }
        }
        removed
    }

    /// Which node serves a request for session `id`: here when this node hosts it or has just
    /// taken it over (its host's lease lapsed, or the catalog lost it and its sandbox's labels
    /// found it), else the live node that hosts it. A request forwarded here is never sent on
    /// (`forwarded`): it is served here, or answered "moving".
    pub async fn locate(&self, id: &str, forwarded: bool) -> Result<Location, SessionError> {
        let Some(catalog) = &self.inner.catalog else {
            return Ok(Location::Here);
        };
        let held = match catalog.locate(id).await {
            Ok(held) => held,
            // Redis is down: nobody can take a session over meanwhile, so the sessions hosted
            // here go on answering here; the others wait for Redis.
            Err(_) if self.lock_live().contains_key(id) => return Ok(Location::Here),
            Err(err) => return Err(err.into()),
        };
        match held {
            Held::By { node, .. } if node == catalog.node_id() => {
                if self.lock_live().contains_key(id) {
                    Ok(Location::Here)
                } else {
                    // This node's name holds it but not this process (restarted with the same
                    // `cluster.node_id`): taken over like any other.
                    self.take_over(id, Some(node), None).await
                }
            }
            Held::By { .. } if forwarded => Err(SessionError::Moving),
            Held::By { url, .. } => Ok(Location::At(url)),
            Held::Free { holder, record } => self.take_over(id, holder, Some(record)).await,
            Held::Unknown => {
                if self.lock_live().contains_key(id) {
                    // Redis lost it (restarted empty): the next renewal puts it back.
                    return Ok(Location::Here);
                }
                self.take_over(id, None, None).await
            }
        }
    }

    /// Takes the session's lease, then its sandbox by its session label (the processes an
    /// earlier host left running in it, its terminal's program among them, are ended before
    /// its next run or terminal start), and hosts it here.
    async fn take_over(
        &self,
        id: &str,
        holder: Option<String>,
        record: Option<SessionRecord>,
    ) -> Result<Location, SessionError> {
        let Some(catalog) = &self.inner.catalog else {
            return Ok(Location::Here);
        };
        let _one_at_a_time = self.inner.takeovers.lock().await;
        if self.lock_live().contains_key(id) {
            return Ok(Location::Here);
        }
        if record.is_none() && holder.is_none() {
            // Not in the catalog: only a sandbox labelled with this id says it exists. No
            // lease to take yet; the labels are looked up first (an unknown id costs one
            // list per engine, like a 404).
            return self.hydrate(id, catalog).await;
        }
        if catalog.take(id, holder.as_deref()).await?.is_none() {
            // Another node was quicker: ask again where it is now.
            return match catalog.locate(id).await? {
                Held::By { url, node } if node != catalog.node_id() => Ok(Location::At(url)),
                _ => Err(SessionError::Moving),
            };
        }
        let found = self.adopt_sandbox(id).await;
        let Some(Adopted {
            sandbox,
            language,
            labels,
        }) = found?
        else {
            let client = record.as_ref().and_then(|r| r.client.clone());
            let _ = catalog.remove(id, client.as_deref()).await;
            return Err(SessionError::Lost);
        };
        let mut record = match record {
            Some(record) => record,
            None => match self.record_from_labels(id, &labels, &language) {
                Some(record) => record,
                None => return Err(SessionError::NotFound),
            },
        };
        record.holder = self.inner.config.owner.clone();
        record.sandbox = Some(sandbox.id().to_owned());
        self.host(record, sandbox, language);
        tracing::info!(session = %log_tag(id), "took over a session");
        Ok(Location::Here)
    }

    /// A session the catalog does not know (Redis restarted empty, or never had it) that a
    /// sandbox's labels still name: entered again, hosted here.
    async fn hydrate(&self, id: &str, catalog: &Catalog) -> Result<Location, SessionError> {
        let Some(Adopted {
            sandbox,
            language,
            labels,
        }) = self.adopt_sandbox(id).await?
        else {
            return Err(SessionError::NotFound);
        };
        let Some(mut record) = self.record_from_labels(id, &labels, &language) else {
            return Err(SessionError::NotFound);
        };
        record.sandbox = Some(sandbox.id().to_owned());
        if self.is_expired(&record, SystemTime::now()) {
            return Err(SessionError::NotFound); // dropped: removed
        }
        // Entered as a claim (counted again), past the caps: it exists already.
        match catalog.claim(&record, usize::MAX, usize::MAX).await? {
            Claim::Taken => {}
            _ => return Err(SessionError::Moving),
        }
        self.host(record, sandbox, language);
        tracing::info!(session = %log_tag(id), "rebuilt a session from its sandbox's labels");
        Ok(Location::Here)
    }

    async fn adopt_sandbox(&self, id: &str) -> Result<Option<Adopted>, SessionError> {
        let adopted = self
            .inner
            .executor
            .adopt_lasting(
                &[format!("{LABEL_SESSION_ID}={id}")],
                self.inner.config.memory_mb,
            )
            .await?;
        // One sandbox per session; a second would be a leftover of a replacement (dropping
        // it removes it).
        let Some(found) = adopted.into_iter().find_map(|found| {
            let language = found
                .labels
                .get(LABEL_LANGUAGE)
                .and_then(|l| self.inner.executor.catalogue().resolve(l).cloned())?;
            Some(Adopted {
                sandbox: found.sandbox,
                language,
                labels: found.labels,
            })
        }) else {
            return Ok(None);
        };
        // What the earlier host left running (a run cut off, its terminal's REPL) is ended:
        // two nodes never drive one sandbox's programs.
        if let Err(err) = found.sandbox.end_all_programs().await {
            tracing::warn!(session = %log_tag(id), error = %err, "the programs an earlier host left did not end");
        }
        Ok(Some(found))
    }

    fn record_from_labels(
        &self,
        id: &str,
        labels: &HashMap<String, String>,
        language: &Language,
    ) -> Option<SessionRecord> {
        let created = labels
            .get(LABEL_SESSION_CREATED)
            .and_then(|s| s.parse::<u64>().ok())
            .map(|secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))?;
        Some(SessionRecord {
            id: id.to_owned(),
            language: language.id.clone(),
            client: labels.get(LABEL_SESSION_CLIENT).cloned(),
            holder: self.inner.config.owner.clone(),
            sandbox: None,
            created_at: created,
            last_used_at: SystemTime::now(),
        })
    }

    fn host(&self, record: SessionRecord, sandbox: Sandbox, language: Arc<Language>) {
        let live = LiveSession::new(
            Some(SessionSandbox { sandbox, language }),
            &self.inner.terminal_config,
        );
        self.lock_live().insert(record.id.clone(), live);
        self.inner.store.insert(record);
    }

    /// Renews the leases of the sessions hosted here every third of their TTL; a session
    /// another node holds now (this node was too slow to renew) is let go of at once, its
    /// sandbox left to that node.
    async fn renew_until_stopped(&self) {
        let Some(catalog) = &self.inner.catalog else {
            return;
        };
        let mut ticker = tokio::time::interval(catalog.lease_ttl() / 3);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = self.inner.stop.cancelled() => return,
            }
            let hosted: Vec<SessionRecord> = {
                let live = self.lock_live();
                self.inner
                    .store
                    .all()
                    .into_iter()
                    .filter(|r| live.contains_key(&r.id))
                    .collect()
            };
            match catalog.renew(&hosted).await {
                Ok(lost) => {
                    for id in lost {
                        tracing::warn!(session = %log_tag(&id), "another node holds this session now: let go");
                        self.let_go(&id).await;
                    }
                }
                Err(err) => tracing::debug!(error = %err, "cannot renew the session leases"),
            }
        }
    }

    /// Drops this node's live part of a session without removing its sandbox (another node
    /// hosts it now, or will: this one stops).
    async fn let_go(&self, id: &str) {
        let live = self.lock_live().remove(id);
        self.inner.store.remove(id);
        if let Some(live) = live {
            live.ended.cancel();
            live.terminal.close();
            if let Some(current) = live.slot.lock().await.take() {
                current.sandbox.detach();
            }
        }
    }

    /// Stops the reaper; then leaves every session's sandbox running for the next start
    /// (`sessions.keep_on_shutdown`) or removes it.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let ids: Vec<String> = self.lock_live().keys().cloned().collect();
        for id in ids {
            if let Some(catalog) = &self.inner.catalog
                && self.inner.config.keep_on_shutdown
            {
                // The session is the cluster's: handed over (the next node asked takes it
                // over at once, not after the lease's TTL).
                self.let_go(&id).await;
                let _ = catalog.release(&id).await;
            } else if self.inner.config.keep_on_shutdown {
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
                    (
                        LABEL_SESSION_CLIENT.to_owned(),
                        self.inner
                            .store
                            .get(id)
                            .and_then(|r| r.client)
                            .unwrap_or_default(),
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
