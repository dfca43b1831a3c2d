//! Configuration: the TOML file, then `RUNBOX_<SECTION>__<KEY>` environment overrides, then
//! validation into [`Config`]. Anything invalid is refused at start with the offending key named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::languages::{Catalogue, CatalogueError};

/// Prefix of environment variables that override config keys (`RUNBOX_SANDBOX__CPUS=0.5`).
const ENV_PREFIX: &str = "RUNBOX_";
/// Separator between the section and the key in an override variable's name.
const ENV_SECTION_SEPARATOR: &str = "__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("invalid config key `{key}`: {reason}")]
    Key { key: String, reason: String },
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
}

/// The validated configuration of one runbox process.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub engine: EngineConfig,
    pub cluster: ClusterConfig,
    pub sandbox: SandboxConfig,
    pub limits: LimitsConfig,
    pub pool: PoolConfig,
    pub compile_cache: CompileCacheConfig,
    pub outputs: OutputsConfig,
    pub sessions: SessionsConfig,
    pub terminal: TerminalConfig,
    pub submissions: SubmissionsConfig,
    pub judge0: Judge0Config,
    pub rate_limit: RateLimitConfig,
    pub auth: AuthConfig,
    pub images: ImagesConfig,
    pub languages: Catalogue,
}

/// The digest stays out of logs (the effective config is logged at start).
impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("name", &self.name)
            .field("sha256", &"<redacted>")
            .field("limits", &self.limits)
            .finish()
    }
}

/// Per-client rate limits at the HTTP edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// The header a trusted reverse proxy puts the client's address in (`x-forwarded-for`,
    /// `x-real-ip`); empty: the connection's peer address is the client.
    pub client_ip_header: String,
    /// Rule name -> the routes that share its quota, and the quota.
    pub rules: BTreeMap<String, RateRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    /// `METHOD /path` as routed, e.g. `POST /sessions/{id}/run`.
    pub routes: Vec<String>,
    /// Requests one client may make per window (all at once, or spread out).
    pub requests: u32,
    pub window_secs: u64,
}

/// Optional API keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// When any is set, every route but `/healthz` needs `Authorization: Bearer <key>`.
    pub keys: Vec<ApiKeyConfig>,
    /// SHA-256 (hex) of a token that `GET /metrics` then needs (an API key also passes);
    /// empty: `/metrics` is guarded like every other route.
    pub metrics_token_sha256: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Names the key in logs and in rate limits (the key itself is never logged).
    pub name: String,
    /// SHA-256 of the key, 64 hex digits (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    /// Rule name -> this key's own quota per window, in place of the rule's.
    #[serde(default)]
    pub limits: BTreeMap<String, u32>,
}

/// A session's shared terminal (its room): what a newcomer sees, and the bounds on clients and
/// on the program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    /// Most recent output bytes a newcomer receives first.
    pub scrollback_bytes: usize,
    /// Output frames a client may have unsent; a client past it is dropped from the room.
    pub client_queue_frames: usize,
    /// Largest `input` frame (bytes of `data`).
    pub max_input_bytes: usize,
    /// Input frames a client may send per second (twice that in a burst).
    pub input_frames_per_sec: u32,
    /// `start` frames one terminal takes per minute (3 in a burst): a start of another
    /// language creates a sandbox.
    pub starts_per_minute: u32,
    /// Output the terminal's program may produce per second (in bytes, twice that in a
    /// burst); past it the program is slowed down, its output never buffered without bound.
    pub output_bytes_per_sec: u64,
}

/// Asynchronous submissions (Judge0's dialect): runs whose results are fetched later by
/// token, kept in memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionsConfig {
    /// Submissions waiting or running at once; past it a new one is refused (Judge0's
    /// `503 queue is full`).
    pub max_pending: usize,
    /// Finished submissions kept for their clients to fetch; past it the oldest go first.
    pub max_kept: usize,
    /// How long a finished submission is kept.
    pub keep_secs: u64,
}

/// Judge0's dialect: where it is mounted, and the attributes that reach out of a run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Judge0Config {
    /// Where Judge0's routes are on the main listener (`/judge0`).
    pub prefix: String,
    /// A second address that serves Judge0 alone at the root (`/submissions`), as Judge0
    /// itself does; `None`: no second listener.
    #[serde(default, deserialize_with = "optional_address")]
    pub listen: Option<std::net::SocketAddr>,
    /// `compiler_options` accepted (Judge0's `ENABLE_COMPILER_OPTIONS`).
    pub compiler_options: bool,
    /// `DELETE /submissions/{token}` deletes a finished submission for the client that made
    /// it (Judge0's `ENABLE_SUBMISSION_DELETE`).
    pub submission_delete: bool,
    /// `callback_url` accepted: the finished submission is PUT there.
    pub callbacks: bool,
    /// The hosts a callback may go to (names or IP literals, exact); empty: any host.
    pub callback_hosts: Vec<String>,
    /// Callbacks may reach loopback, private, link-local (cloud metadata) and other
    /// non-public addresses. Off: such an address is refused, whatever the name resolves to.
    pub callback_private_addresses: bool,
}

/// An address, or `""` for none.
fn optional_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// A session is removed this long after it was created, used or not.
    pub max_age_secs: u64,
    /// A session is removed after this long without a run.
    pub idle_timeout_secs: u64,
    /// How often the reaper looks for expired sessions.
    pub reaper_interval_secs: u64,
    /// Most live sessions; past it `POST /sessions` answers 503 overloaded.
    pub max_sessions: usize,
    /// Most live sessions one client (peer address) may hold; past it 429 rate_limited.
    pub max_per_client: usize,
    /// Memory cap of a session's sandbox (its work dir counts toward it).
    pub memory_mb: u64,
    /// Size of a session's work dir, which persists across its runs.
    pub work_dir_mb: u64,
    /// Sessions carry this name; at start runbox takes back the live sessions with its name.
    /// Every runbox sharing one engine needs its own.
    pub owner: String,
    /// Leave the sessions running at shutdown, for the next start to take back.
    pub keep_on_shutdown: bool,
}

impl SessionsConfig {
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn reaper_interval(&self) -> Duration {
        Duration::from_secs(self.reaper_interval_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Jobs running at once; 0 means twice the number of CPU cores.
    pub max_running_jobs: usize,
    /// Jobs waiting for a slot; past it a run is refused at once (503 overloaded).
    pub max_queued_jobs: usize,
    /// Most sandboxes this process keeps at once, of every kind (running jobs, the warm pool,
    /// sessions); sessions leave twice the running jobs free.
    pub max_sandboxes: usize,
}

impl LimitsConfig {
    /// `max_running_jobs` with 0 resolved from the core count. Jobs spend much of their time
    /// waiting on the engine rather than on a CPU, and each sandbox is capped at
    /// `sandbox.cpus`, so two per core keeps the cores busy without oversubscribing them.
    pub fn running_jobs(&self) -> usize {
        if self.max_running_jobs > 0 {
            return self.max_running_jobs;
        }
        2 * std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The caps on the files a run returns (`outputs`; see `executor::outputs`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// Files listed per run; more that match are counted, not listed.
    pub max_files: usize,
    /// A larger file is listed with `truncated: true` and no content.
    pub max_file_kb: usize,
    /// All files' content together; a file that would pass it is listed as truncated.
    pub max_total_kb: usize,
}

impl Default for OutputsConfig {
    fn default() -> Self {
        OutputsConfig {
            max_files: 64,
            max_file_kb: 2048,
            max_total_kb: 8192,
        }
    }
}

/// What compiles are kept, in memory (see `executor::compile_cache`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompileCacheConfig {
    pub enabled: bool,
    pub max_entries: usize,
    pub max_mb: usize,
    /// A compile whose work dir is larger than this is not kept.
    pub max_entry_mb: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// false: every job creates its own sandbox.
    pub enabled: bool,
    /// Ready sandboxes per language id; languages not named get none.
    pub sizes: BTreeMap<String, usize>,
    /// A pooled sandbox unused for this long is replaced.
    pub max_idle_secs: u64,
}

impl PoolConfig {
    /// The pool size of `language` (0 when the pool is off or the language has none).
    pub fn size(&self, language: &str) -> usize {
        if !self.enabled {
            return 0;
        }
        self.sizes.get(language).copied().unwrap_or(0)
    }

    pub fn max_idle(&self) -> Duration {
        Duration::from_secs(self.max_idle_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub body_limit_bytes: usize,
    /// A client must send its request head (line and headers) within this long.
    pub header_timeout_secs: u64,
    /// ... and its body within this long after that.
    pub body_timeout_secs: u64,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Most bytes of a request head.
    pub max_header_bytes: usize,
    /// At shutdown, running jobs may finish within this long; then they are ended.
    pub shutdown_grace_secs: u64,
    /// A connection with no request open this long is closed (HTTP/1 keep-alive waits for
    /// the next request head only `header_timeout_secs`).
    pub idle_timeout_secs: u64,
    /// Most connections open at once (lowered at start to what the open-file limit allows).
    pub max_connections: usize,
    /// Most connections one client address (an IPv6 /64) may hold open; 0: no cap.
    pub max_connections_per_client: usize,
    /// Serve HTTP/2 (prior knowledge, h2c) next to HTTP/1.1.
    pub http2: bool,
    /// `["*"]` means any origin; credentials are never allowed cross-origin.
    pub cors_allowed_origins: Vec<String>,
    /// Serve the browser playground at `/`.
    pub playground: bool,
    /// The built playground (`npm run build` in `web/`); relative to the repository root.
    pub playground_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Empty: `DOCKER_HOST` or the platform's default socket.
    pub host: String,
}

/// Several engines and several nodes. Absent: the one engine of [`EngineConfig`], every state
/// in memory, as on a single machine.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The Docker engines sandboxes are placed on; empty: the one of `[engine]`.
    pub engines: Vec<EngineEntry>,
    /// How often each engine is pinged.
    pub health_interval_ms: u64,
    /// Failed pings (or failed calls) in a row after which an engine gets no new work until a
    /// ping succeeds again.
    pub unhealthy_after: u32,
    /// `redis://host:port/db` of the Redis that several runbox nodes share (the session
    /// catalog and leases, rate limits, caps, Judge0's submissions); empty: this node alone,
    /// everything in memory.
    pub redis: String,
    /// This node's name in the shared state; empty: a random one at every start.
    pub node_id: String,
    /// Where the other nodes reach this one for a session it hosts (`http://host:port`);
    /// empty: `http://` + the address it listens on.
    pub node_url: String,
    /// The secret that authenticates a request one node forwards to another (the same on every
    /// node, at least 16 characters; never sent to a client). Needed with `redis`.
    pub internal_token: String,
    /// How long a node's hold on a session (and its own heartbeat) lasts without renewal: a
    /// node killed hands its sessions over this long after its last renewal.
    pub lease_ttl_ms: u64,
    /// Prefix of every Redis key runbox writes.
    pub key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            engines: Vec::new(),
            health_interval_ms: 2000,
            unhealthy_after: 3,
            redis: String::new(),
            node_id: String::new(),
            node_url: String::new(),
            internal_token: String::new(),
            lease_ttl_ms: 5000,
            key_prefix: "runbox:".to_owned(),
        }
    }
}

/// The nodes' shared secret stays out of logs (the effective config is logged at start).
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("engines", &self.engines)
            .field("health_interval_ms", &self.health_interval_ms)
            .field("unhealthy_after", &self.unhealthy_after)
            .field("redis", &self.redis)
            .field("node_id", &self.node_id)
            .field("node_url", &self.node_url)
            .field("internal_token", &"<redacted>")
            .field("lease_ttl_ms", &self.lease_ttl_ms)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl ClusterConfig {
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// Several nodes share state through Redis.
    pub fn is_shared(&self) -> bool {
        !self.redis.is_empty()
    }
}

/// One engine of the cluster.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineEntry {
    /// Short name: in logs, metrics and the labels of what runbox makes there.
    pub id: String,
    /// `unix:///path/docker.sock`, or `tcp://host:port` with `tls_*` (mutual TLS).
    pub host: String,
    /// Sandboxes runbox may own on this engine at once; default: an equal share of
    /// `limits.max_sandboxes`.
    #[serde(default)]
    pub capacity: Option<usize>,
    /// PEM files of mutual TLS: the CA that signed the engine's certificate, and runbox's
    /// client certificate and key.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The engine's `--cgroup-parent` when it runs on this machine with one, so that runbox
    /// reads and sets its sandboxes' cgroups directly (as for the default parent) instead of
    /// through the engine (measured: +55 ms a warm run without it).
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// The runtime this engine's sandboxes run under (registered with that engine), instead of
    /// `sandbox.runtime`: a fleet may mix runc and gVisor engines. `/readyz` says so when the
    /// engine has no such runtime.
    #[serde(default)]
    pub runtime: Option<String>,
}

/// Paths only: the key's file name is not secret, its content is never read into a log.
impl std::fmt::Debug for EngineEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineEntry")
            .field("id", &self.id)
            .field("host", &self.host)
            .field("capacity", &self.capacity)
            .field("tls", &self.tls_ca.is_some())
            .field("runtime", &self.runtime)
            .finish()
    }
}

/// The engine id used when `[cluster]` names none.
pub const LOCAL_ENGINE_ID: &str = "local";

impl Config {
    /// Every engine with its capacity: the cluster's list, or the one of `[engine]`.
    pub fn engines(&self) -> Vec<(EngineEntry, usize)> {
        let max = self.limits.max_sandboxes;
        if self.cluster.engines.is_empty() {
            let local = EngineEntry {
                id: LOCAL_ENGINE_ID.to_owned(),
                host: self.engine.host.clone(),
                capacity: Some(max),
                tls_ca: None,
                tls_cert: None,
                tls_key: None,
                cgroup_parent: None,
                runtime: None,
            };
            return vec![(local, max)];
        }
        let share = max / self.cluster.engines.len();
        self.cluster
            .engines
            .iter()
            .map(|e| (e.clone(), e.capacity.unwrap_or(share)))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    pub runtime: String,
    pub output_limit_bytes: usize,
    pub work_dir_mb: u64,
    pub work_dir_inodes: u64,
    pub cpus: f64,
    pub pids_limit: i64,
    pub nofile_limit: i64,
    pub user: String,
    pub sweep_interval_secs: u64,
    /// How a warm sandbox serves jobs; see [`Reuse`].
    pub reuse: Reuse,
    /// Most jobs a reused sandbox serves before it is replaced (each serves a share of it
    /// drawn in 75–100 %, as of the age below).
    pub reuse_jobs: u32,
    /// Seconds after its start past which a reused sandbox takes no more jobs (at most).
    pub reuse_max_age_secs: u64,
}

/// Whether a job sandbox serves one job (`fresh`) or, one at a time, many, each in a fresh
/// nested sandbox inside it (`nested`; see `sandbox::nested`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reuse {
    Fresh,
    Nested,
}

impl SandboxConfig {
    /// gVisor is registered with the engine as `runsc` (or a name starting with it, such as
    /// `runsc-debug`); some limits take another form there (see the sandbox policy).
    pub fn is_gvisor(&self) -> bool {
        self.runtime.starts_with("runsc")
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs(self.sweep_interval_secs)
    }

    /// Whether job sandboxes are reused with a nested sandbox per job. Not under gVisor: its
    /// `/proc` has no `/proc/sys/kernel/overflowuid`, without which bubblewrap cannot map the
    /// job's user namespace (measured with gVisor 20221219), so there every job keeps a fresh
    /// container.
    pub fn nested(&self) -> bool {
        self.reuse == Reuse::Nested && !self.is_gvisor()
    }

    pub fn reuse_max_age(&self) -> Duration {
        Duration::from_secs(self.reuse_max_age_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    pub base: String,
    pub dir: PathBuf,
    pub suite: String,
    pub mirror: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LanguagesSection {
    file: PathBuf,
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: ServerConfig,
    engine: EngineConfig,
    #[serde(default)]
    cluster: ClusterConfig,
    sandbox: SandboxConfig,
    limits: LimitsConfig,
    pool: PoolConfig,
    compile_cache: CompileCacheConfig,
    #[serde(default)]
    outputs: OutputsConfig,
    sessions: SessionsConfig,
    terminal: TerminalConfig,
    submissions: SubmissionsConfig,
    judge0: Judge0Config,
    rate_limit: RateLimitConfig,
    auth: AuthConfig,
    images: ImagesConfig,
    languages: LanguagesSection,
}

impl Config {
    /// Logs the effective configuration (after overrides), secrets redacted, one field per
    /// section; the language catalogue by its ids.
    pub fn log_effective(&self) {
        let languages: Vec<&str> = self.languages.iter().map(|l| l.id.as_str()).collect();
        tracing::info!(
            server = ?self.server,
            engine = ?self.engine,
            cluster = ?self.cluster,
            sandbox = ?self.sandbox,
            limits = ?self.limits,
            pool = ?self.pool,
            compile_cache = ?self.compile_cache,
            outputs = ?self.outputs,
            sessions = ?self.sessions,
            terminal = ?self.terminal,
            submissions = ?self.submissions,
            judge0 = ?self.judge0,
            rate_limit = ?self.rate_limit,
            auth = ?self.auth,
            images = ?self.images,
            languages = ?languages,
            "effective config"
        );
    }

    /// Loads `path`, applies the process environment's overrides and validates the result.
    /// Relative paths inside the file (images dir, languages file) are resolved against the
    /// directory that holds the config directory, i.e. the repository root in the default layout.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::from_parts(path, &text, &env, Self::root_of(path))
    }

    /// Like [`Config::load`], with `overrides` (`RUNBOX_<SECTION>__<KEY>` names) in place of
    /// the process environment.
    pub fn load_with_overrides(
        path: &Path,
        overrides: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let env = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::from_parts(path, &text, &env, Self::root_of(path))
    }

    /// Relative paths in the file are relative to the directory above the config directory.
    fn root_of(path: &Path) -> &Path {
        path.parent()
            .and_then(Path::parent)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."))
    }

    fn from_parts(
        path: &Path,
        text: &str,
        env: &BTreeMap<String, String>,
        root: &Path,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?;
        apply_env_overrides(&mut table, env)?;
        // Re-parsed from text so that a type error points at the offending key.
        let merged = toml::to_string(&table).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let raw: RawConfig = toml::from_str(&merged)
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        validate(&raw)?;

        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                root.join(p)
            }
        };
        let mut images = raw.images;
        images.dir = resolve(&images.dir);
        let mut server = raw.server;
        server.playground_dir = resolve(&server.playground_dir);
        let languages = Catalogue::load(&resolve(&raw.languages.file))?;
        for language in raw.pool.sizes.keys() {
            if languages.resolve(language).map(|l| &l.id) != Some(language) {
                return Err(ConfigError::Key {
                    key: format!("pool.sizes.{language}"),
                    reason: "is not a language id of the catalogue".to_owned(),
                });
            }
        }
        Ok(Config {
            server,
            engine: raw.engine,
            cluster: raw.cluster,
            sandbox: raw.sandbox,
            limits: raw.limits,
            pool: raw.pool,
            compile_cache: raw.compile_cache,
            outputs: raw.outputs,
            sessions: raw.sessions,
            terminal: raw.terminal,
            submissions: raw.submissions,
            judge0: raw.judge0,
            rate_limit: raw.rate_limit,
            auth: raw.auth,
            images,
            languages,
        })
    }
}

/// Applies every `RUNBOX_<SECTION>__<KEY>=value` variable to the table. The value is read as a
/// TOML value (`42`, `true`, `["a","b"]`) and falls back to a plain string.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once(ENV_SECTION_SEPARATOR) else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let section_table = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = section_table.as_table_mut() else {
            return Err(ConfigError::Key {
                key: format!("{section}.{key}"),
                reason: format!("`{section}` is not a section (set by {name})"),
            });
        };
        section_table.insert(key, parsed);
    }
    Ok(())
}

/// Each engine keeps the whole warm pool and must have room for it and for jobs; together they
/// stay within `limits.max_sandboxes` (the descriptor reserve is sized by it).
fn validate_cluster(raw: &RawConfig, pooled: usize) -> Result<(), ConfigError> {
    let c = &raw.cluster;
    let key = |key: &str, reason: String| {
        Err(ConfigError::Key {
            key: key.to_owned(),
            reason,
        })
    };
    if c.health_interval_ms < 100 || c.unhealthy_after == 0 {
        return key(
            "cluster",
            "health_interval_ms must be at least 100 and unhealthy_after at least 1".to_owned(),
        );
    }
    if c.is_shared() {
        if !c.redis.starts_with("redis://") && !c.redis.starts_with("unix://") {
            return key(
                "cluster.redis",
                "must start with redis:// (or unix:// for a socket)".to_owned(),
            );
        }
        if c.internal_token.chars().count() < 16 {
            return key(
                "cluster.internal_token",
                "needs at least 16 characters when cluster.redis is set (the nodes' shared secret)"
                    .to_owned(),
            );
        }
        if c.lease_ttl_ms < 500 {
            return key("cluster.lease_ttl_ms", "must be at least 500".to_owned());
        }
        if !c.node_url.is_empty() && !c.node_url.starts_with("http://") {
            return key("cluster.node_url", "must start with http://".to_owned());
        }
        if !c
            .node_id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return key(
                "cluster.node_id",
                "must be letters, digits, '-' or '_'".to_owned(),
            );
        }
    }
    if c.engines.is_empty() {
        return Ok(());
    }
    let share = raw.limits.max_sandboxes / c.engines.len();
    let mut ids = std::collections::HashSet::new();
    let mut total = 0;
    for engine in &c.engines {
        let named = format!("cluster.engines.{}", engine.id);
        if engine.id.is_empty()
            || !engine
                .id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return key(
                "cluster.engines",
                format!("id {:?} must be letters, digits, '-' or '_'", engine.id),
            );
        }
        if !ids.insert(engine.id.as_str()) {
            return key(&named, "is named twice".to_owned());
        }
        let scheme = engine.host.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("unix" | "tcp")) {
            return key(
                &named,
                format!("host {:?} must start with unix:// or tcp://", engine.host),
            );
        }
        let tls = [&engine.tls_ca, &engine.tls_cert, &engine.tls_key];
        let given = tls.iter().filter(|p| p.is_some()).count();
        if scheme == Some("unix") && given != 0 {
            return key(&named, "a unix:// engine takes no tls_* files".to_owned());
        }
        if scheme == Some("tcp") && given == 0 {
            // The Engine API is root on that machine: never without mutual TLS.
            return key(
                &named,
                "a tcp:// engine needs tls_ca, tls_cert and tls_key".to_owned(),
            );
        }
        if engine.runtime.as_ref().is_some_and(|r| r.trim().is_empty()) {
            return key(
                &named,
                "runtime must name a runtime registered with that engine, e.g. \"runsc\""
                    .to_owned(),
            );
        }
        let capacity = engine.capacity.unwrap_or(share);
        if capacity <= pooled {
            return key(
                &named,
                format!("capacity {capacity} must exceed the warm pool it keeps ({pooled})"),
            );
        }
        total += capacity;
    }
    if total > raw.limits.max_sandboxes {
        return key(
            "cluster.engines",
            format!(
                "capacities add up to {total}, past limits.max_sandboxes ({})",
                raw.limits.max_sandboxes
            ),
        );
    }
    Ok(())
}

fn validate(raw: &RawConfig) -> Result<(), ConfigError> {
    let key = |key: &str, reason: &str| {
        Err(ConfigError::Key {
            key: key.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if raw.server.body_limit_bytes < 1024 {
        return key("server.body_limit_bytes", "must be at least 1024");
    }
    if raw.server.header_timeout_secs == 0 || raw.server.body_timeout_secs == 0 {
        return key(
            "server.header_timeout_secs",
            "header_timeout_secs and body_timeout_secs must be at least 1",
        );
    }
    if raw.server.idle_timeout_secs == 0 {
        return key("server.idle_timeout_secs", "must be at least 1");
    }
    if raw.server.max_connections == 0 {
        return key("server.max_connections", "must be at least 1");
    }
    if raw.server.max_headers < 8 {
        return key("server.max_headers", "must be at least 8");
    }
    if raw.server.max_header_bytes < 8192 {
        return key("server.max_header_bytes", "must be at least 8192");
    }
    if raw.server.cors_allowed_origins.is_empty() {
        return key(
            "server.cors_allowed_origins",
            "must list at least one origin, or [\"*\"]",
        );
    }
    for origin in &raw.server.cors_allowed_origins {
        if origin != "*" && http::HeaderValue::from_str(origin).is_err() {
            return key("server.cors_allowed_origins", "holds an invalid origin");
        }
    }
    let s = &raw.sandbox;
    if s.runtime.is_empty() {
        return key("sandbox.runtime", "must name a runtime, e.g. \"runc\"");
    }
    if s.output_limit_bytes == 0 {
        return key("sandbox.output_limit_bytes", "must be positive");
    }
    if s.work_dir_mb == 0 {
        return key("sandbox.work_dir_mb", "must be positive");
    }
    if s.work_dir_inodes < 16 {
        return key("sandbox.work_dir_inodes", "must be at least 16");
    }
    if !(s.cpus > 0.0 && s.cpus <= 64.0) {
        return key("sandbox.cpus", "must be between 0 and 64");
    }
    if s.pids_limit < 8 {
        return key("sandbox.pids_limit", "must be at least 8");
    }
    if s.nofile_limit < 16 {
        return key("sandbox.nofile_limit", "must be at least 16");
    }
    if !is_non_root_user(&s.user) {
        return key(
            "sandbox.user",
            "must be a numeric non-root uid:gid, e.g. \"65534:65534\"",
        );
    }
    let cache = &raw.compile_cache;
    if cache.enabled && (cache.max_entries == 0 || cache.max_mb == 0 || cache.max_entry_mb == 0) {
        return key(
            "compile_cache",
            "max_entries, max_mb and max_entry_mb must be positive",
        );
    }
    if cache.max_entry_mb > cache.max_mb {
        return key("compile_cache.max_entry_mb", "must not exceed max_mb");
    }
    if s.reuse_jobs == 0 {
        return key("sandbox.reuse_jobs", "must be at least 1");
    }
    if s.reuse_max_age_secs == 0 {
        return key("sandbox.reuse_max_age_secs", "must be positive");
    }
    if s.sweep_interval_secs == 0 {
        return key("sandbox.sweep_interval_secs", "must be positive");
    }
    let sub = &raw.submissions;
    if sub.max_pending == 0 || sub.max_kept == 0 || sub.keep_secs == 0 {
        return key(
            "submissions",
            "max_pending, max_kept and keep_secs must be positive",
        );
    }
    let prefix = &raw.judge0.prefix;
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !prefix.starts_with('/') || !prefix[1..].split('/').all(segment_ok) {
        return key(
            "judge0.prefix",
            "must be a path like /judge0: segments of letters, digits, '-', '_' or '.'",
        );
    }
    if raw
        .judge0
        .callback_hosts
        .iter()
        .any(|h| h.trim().is_empty())
    {
        return key("judge0.callback_hosts", "must not hold an empty name");
    }
    let o = &raw.outputs;
    if o.max_files == 0 || o.max_files > 1024 {
        return key("outputs.max_files", "must be between 1 and 1024");
    }
    if o.max_file_kb == 0 || o.max_file_kb > o.max_total_kb {
        return key(
            "outputs.max_file_kb",
            "must be positive and at most max_total_kb",
        );
    }
    if o.max_total_kb > 64 * 1024 {
        return key("outputs.max_total_kb", "must be at most 65536 (64 MiB)");
    }
    let l = &raw.limits;
    if l.max_queued_jobs > 100_000 {
        return key("limits.max_queued_jobs", "must be at most 100000");
    }
    let pooled: usize = if raw.pool.enabled {
        raw.pool.sizes.values().sum()
    } else {
        0
    };
    if l.running_jobs() + pooled > l.max_sandboxes {
        return key(
            "limits.max_sandboxes",
            "must leave room for every running job next to the whole warm pool \
             (max_running_jobs + the sum of pool.sizes)",
        );
    }
    validate_cluster(raw, pooled)?;
    let t = &raw.terminal;
    if t.client_queue_frames < 2
        || t.max_input_bytes == 0
        || t.input_frames_per_sec == 0
        || t.starts_per_minute == 0
        || t.output_bytes_per_sec < 1024
    {
        return key(
            "terminal",
            "client_queue_frames must be at least 2, max_input_bytes and input_frames_per_sec \
             positive, output_bytes_per_sec at least 1024",
        );
    }
    let ss = &raw.sessions;
    if ss.max_age_secs == 0 || ss.idle_timeout_secs == 0 || ss.reaper_interval_secs == 0 {
        return key(
            "sessions",
            "max_age_secs, idle_timeout_secs and reaper_interval_secs must be positive",
        );
    }
    if ss.owner.is_empty()
        || !ss
            .owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return key(
            "sessions.owner",
            "must be letters, digits, '-', '_' or '.' (it is a container label value)",
        );
    }
    if ss.max_per_client == 0 {
        return key("sessions.max_per_client", "must be positive");
    }
    if ss.memory_mb < 64 {
        return key("sessions.memory_mb", "must be at least 64");
    }
    if ss.work_dir_mb == 0 || ss.work_dir_mb >= ss.memory_mb {
        return key(
            "sessions.work_dir_mb",
            "must be positive and below sessions.memory_mb (the files count toward it)",
        );
    }
    if raw.pool.max_idle_secs == 0 {
        return key("pool.max_idle_secs", "must be positive");
    }
    if raw.images.base.is_empty() {
        return key("images.base", "must name an image");
    }
    Ok(())
}

/// A sandbox user must be numeric (the images have no passwd entry for it) and never root.
fn is_non_root_user(user: &str) -> bool {
    let Some((uid, gid)) = user.split_once(':') else {
        return false;
    };
    matches!((uid.parse::<u32>(), gid.parse::<u32>()), (Ok(u), Ok(g)) if u != 0 && g != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn load_with(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let path = repo_root().join("config/runbox.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_parts(&path, &text, &env, &repo_root())
    }

    #[test]
    fn shipped_config_is_valid() {
        let config = load_with(&[]).unwrap();
        assert_eq!(config.sandbox.output_limit_bytes, 64 * 1024);
        assert_eq!(config.sandbox.user, "65534:65534");
        assert!(config.languages.resolve("python").is_some());
    }

    #[test]
    fn env_overrides_numbers_strings_and_arrays() {
        let config = load_with(&[
            ("RUNBOX_SANDBOX__OUTPUT_LIMIT_BYTES", "1000"),
            ("RUNBOX_SANDBOX__RUNTIME", "runsc"),
            (
                "RUNBOX_SERVER__CORS_ALLOWED_ORIGINS",
                r#"["https://a.example"]"#,
            ),
            ("RUNBOX_LISTEN", "ignored: no section separator"),
        ])
        .unwrap();
        assert_eq!(config.sandbox.output_limit_bytes, 1000);
        assert_eq!(config.sandbox.runtime, "runsc");
        assert_eq!(config.server.cors_allowed_origins, ["https://a.example"]);
    }

    #[test]
    fn invalid_value_names_the_key() {
        let err = load_with(&[("RUNBOX_SANDBOX__USER", "0:0")]).unwrap_err();
        assert!(err.to_string().contains("sandbox.user"), "{err}");
        let err = load_with(&[("RUNBOX_SANDBOX__CPUS", "0")]).unwrap_err();
        assert!(err.to_string().contains("sandbox.cpus"), "{err}");
    }

    #[test]
    fn pool_sizes_name_catalogue_ids_and_fit_the_capacity() {
        let config = load_with(&[("RUNBOX_POOL__SIZES", "{ python = 3 }")]).unwrap();
        assert_eq!(config.pool.size("python"), 3);
        assert_eq!(config.pool.size("c"), 0);
        let err = load_with(&[("RUNBOX_POOL__SIZES", "{ cobol = 1 }")]).unwrap_err();
        assert!(err.to_string().contains("pool.sizes.cobol"), "{err}");
        let err = load_with(&[("RUNBOX_POOL__SIZES", "{ py = 1 }")]).unwrap_err();
        assert!(
            err.to_string().contains("pool.sizes.py"),
            "aliases are not ids: {err}"
        );
        let err = load_with(&[
            ("RUNBOX_LIMITS__MAX_SANDBOXES", "10"),
            ("RUNBOX_LIMITS__MAX_RUNNING_JOBS", "4"),
            ("RUNBOX_POOL__SIZES", "{ python = 7 }"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("limits.max_sandboxes"), "{err}");
        let off = load_with(&[("RUNBOX_POOL__ENABLED", "false")]).unwrap();
        assert_eq!(off.pool.size("python"), 0);
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = load_with(&[("RUNBOX_SANDBOX__OUTPUT_LIMT", "5")]).unwrap_err();
        assert!(err.to_string().contains("output_limt"), "{err}");
    }

    #[test]
    fn wrong_type_is_refused() {
        let err = load_with(&[("RUNBOX_SANDBOX__PIDS_LIMIT", "many")]).unwrap_err();
        assert!(err.to_string().contains("pids_limit"), "{err}");
    }

    #[test]
    fn no_cluster_is_the_one_local_engine_with_the_whole_budget() {
        let config = load_with(&[]).unwrap();
        let engines = config.engines();
        assert_eq!(engines.len(), 1);
        assert_eq!(engines[0].0.id, LOCAL_ENGINE_ID);
        assert_eq!(engines[0].1, config.limits.max_sandboxes);
    }

    #[test]
    fn several_nodes_need_a_secret_and_the_secret_stays_out_of_logs() {
        let redis = ("RUNBOX_CLUSTER__REDIS", r#""redis://127.0.0.1:6379/""#);
        let err = load_with(&[redis]).unwrap_err();
        assert!(err.to_string().contains("cluster.internal_token"), "{err}");
        let short = ("RUNBOX_CLUSTER__INTERNAL_TOKEN", r#""short""#);
        assert!(load_with(&[redis, short]).is_err());
        let token = (
            "RUNBOX_CLUSTER__INTERNAL_TOKEN",
            r#""a-secret-of-24-characters""#,
        );
        let config = load_with(&[redis, token]).unwrap();
        assert!(config.cluster.is_shared());
        assert!(!format!("{config:?}").contains("a-secret-of-24-characters"));
        for (key, value, named) in [
            ("RUNBOX_CLUSTER__REDIS", r#""http://x""#, "cluster.redis"),
            (
                "RUNBOX_CLUSTER__LEASE_TTL_MS",
                "100",
                "cluster.lease_ttl_ms",
            ),
            (
                "RUNBOX_CLUSTER__NODE_URL",
                r#""ftp://x""#,
                "cluster.node_url",
            ),
            ("RUNBOX_CLUSTER__NODE_ID", r#""a b""#, "cluster.node_id"),
        ] {
            let err = load_with(&[redis, token, (key, value)]).unwrap_err();
            assert!(err.to_string().contains(named), "{key}: {err}");
        }
        assert!(!load_with(&[]).unwrap().cluster.is_shared());
    }

    #[test]
    fn engines_share_the_budget_unless_given_a_capacity() {
        let config = load_with(&[(
            "RUNBOX_CLUSTER__ENGINES",
            r#"[{id="a", host="unix:///a.sock"}, {id="b", host="unix:///b.sock", capacity=40}]"#,
        )])
        .unwrap();
        let engines = config.engines();
        assert_eq!(engines[0].1, config.limits.max_sandboxes / 2);
        assert_eq!(engines[1].1, 40);
        // No runtime of its own: sandbox.runtime's.
        assert_eq!(engines[0].0.runtime, None);
    }

    #[test]
    fn an_engine_may_run_its_sandboxes_under_a_runtime_of_its_own() {
        let config = load_with(&[(
            "RUNBOX_CLUSTER__ENGINES",
            r#"[{id="a", host="unix:///a.sock"}, {id="g", host="unix:///g.sock", runtime="runsc"}]"#,
        )])
        .unwrap();
        let engines = config.engines();
        assert_eq!(engines[1].0.runtime.as_deref(), Some("runsc"));
        assert!(format!("{:?}", engines[1].0).contains("runsc"));
    }

    #[test]
    fn a_bad_engine_list_names_what_is_wrong() {
        for (engines, expected) in [
            (r#"[{id="a", host="tcp://10.0.0.2:2376"}]"#, "needs tls_ca"),
            (
                r#"[{id="a", host="unix:///a"}, {id="a", host="unix:///b"}]"#,
                "named twice",
            ),
            (r#"[{id="a b", host="unix:///a"}]"#, "letters, digits"),
            (r#"[{id="a", host="ssh://x"}]"#, "must start with unix://"),
            (
                r#"[{id="a", host="unix:///a", runtime=" "}]"#,
                "runtime must name a runtime",
            ),
            (
                r#"[{id="a", host="unix:///a", tls_ca="/ca.pem", tls_cert="/c.pem", tls_key="/k.pem"}]"#,
                "takes no tls_",
            ),
            (
                r#"[{id="a", host="unix:///a", capacity=1}]"#,
                "must exceed the warm pool",
            ),
            (
                r#"[{id="a", host="unix:///a", capacity=100000}]"#,
                "past limits.max_sandboxes",
            ),
        ] {
            let err = load_with(&[("RUNBOX_CLUSTER__ENGINES", engines)]).unwrap_err();
            assert!(err.to_string().contains(expected), "{engines}: {err}");
        }
    }
}
