//! Metrics in the Prometheus/OpenMetrics text format, through `prometheus-client`.
//!
//! Events (a run finished, a request was refused) are counted where they happen; state owned
//! elsewhere (the pool, the queue, the sandboxes) is read at scrape time by a collector, so no
//! number is kept twice.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Bucket bounds (seconds) of the job and queue-wait histograms: warm runs take tens of
/// milliseconds, cold ones hundreds, compiles seconds.
const SECONDS_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub language: String,
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LanguageLabels {
    pub language: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    language: String,
    state: &'static str,
}

/// Counters and histograms of events, plus the registry that renders everything.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    job_seconds: Family<LanguageLabels, Histogram>,
    queue_wait_seconds: Histogram,
    overloaded: Counter,
    compiles: Family<LanguageLabels, Counter>,
    rejections: Family<RejectionLabels, Counter>,
    connections_refused: Family<RejectionLabels, Counter>,
    connections_closed_idle: Family<RejectionLabels, Counter>,
    connections_open: prometheus_client::metrics::gauge::Gauge,
    /// Set once the sessions exist (they start after the executor that owns the metrics).
    live: Arc<OnceLock<Arc<dyn LiveState>>>,
    sessions: Arc<OnceLock<Arc<dyn SessionsState>>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SandboxLabels {
    kind: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    engine: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    /// `unauthorized`, or the rate-limit rule that refused.
    reason: String,
}

/// What the scrape-time collector reads.
pub trait LiveState: Send + Sync + std::fmt::Debug + 'static {
    fn snapshot(&self) -> LiveSnapshot;
}

/// The state of the service at one scrape.
#[derive(Debug, Clone, Default)]
pub struct LiveSnapshot {
    pub jobs_running: usize,
    pub jobs_queued: usize,
    /// Sandboxes this process owns right now (running jobs and pool).
    pub sandboxes_owned: usize,
    pub pools: Vec<crate::sandbox::pool::PoolStats>,
    pub sandboxes: crate::sandbox::SandboxTally,
    /// Every engine sandboxes are placed on.
    pub engines: Vec<crate::sandbox::EngineHealth>,
    /// `None` when compiles are not kept.
    pub compile_cache: Option<CompileCacheCounts>,
}

/// The compile cache as the scrape shows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompileCacheCounts {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
    pub bytes: usize,
}

/// Sessions and the clients on their terminals, read at scrape time.
pub trait SessionsState: Send + Sync + std::fmt::Debug + 'static {
    /// (live sessions, clients attached to their terminals)
    fn sessions_and_clients(&self) -> (usize, usize);
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Built once by the app and handed to every part that counts; the live state (jobs,
    /// pools, sandboxes, sessions) shows once its parts are watched.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("runbox");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Jobs finished, by language and status",
            runs.clone(),
        );
        let job_seconds =
            Family::<LanguageLabels, Histogram>::new_with_constructor(seconds_histogram);
        registry.register(
            "job_duration_seconds",
            "Wall time of a job from admission to its result (sandbox, compile and run)",
            job_seconds.clone(),
        );
        let queue_wait_seconds = seconds_histogram();
        registry.register(
            "queue_wait_duration_seconds",
            "Time a job waited for a running slot",
            queue_wait_seconds.clone(),
        );
        let overloaded = Counter::default();
        registry.register(
            "overloaded_rejections",
            "Runs refused with 503 overloaded (every slot and the queue were full)",
            overloaded.clone(),
        );
        let compiles = Family::<LanguageLabels, Counter>::default();
        registry.register(
            "compiles",
            "Compile phases started, by language (a `tests` job compiles once for all inputs)",
            compiles.clone(),
        );
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "edge_rejections",
            "Requests refused at the edge: reason=unauthorized (401), or the rate-limit rule (429)",
            rejections.clone(),
        );
        let connections_refused = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept: reason=connections_per_client or connections_total (a cap was full)",
            connections_refused.clone(),
        );
        let connections_closed_idle = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "connections_closed_idle",
            "Connections closed for sending nothing: reason=no_first_request (no request head within server.header_timeout_secs of the accept) or idle",
            connections_closed_idle.clone(),
        );
        let connections_open = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "connections",
            "TCP connections open (WebSockets included, until their upgrade)",
            connections_open.clone(),
        );
        let (live, sessions) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
        registry.register_collector(Box::new(LiveCollector(live.clone(), sessions.clone())));
        Metrics {
            registry,
            runs,
            job_seconds,
            queue_wait_seconds,
            overloaded,
            compiles,
            rejections,
            connections_refused,
            connections_closed_idle,
            connections_open,
            live,
            sessions,
        }
    }

    pub fn job_finished(&self, language: &str, status: &str, took: Duration) {
        self.runs
            .get_or_create(&RunLabels {
                language: language.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.job_seconds
            .get_or_create(&LanguageLabels {
                language: language.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn admitted_after(&self, waited: Duration) {
        self.queue_wait_seconds.observe(waited.as_secs_f64());
    }

    pub fn compiled(&self, language: &str) {
        self.compiles
            .get_or_create(&LanguageLabels {
                language: language.to_owned(),
            })
            .inc();
    }

    /// From now on the scrape shows running and queued jobs, pools and sandboxes.
    pub fn watch_live(&self, live: Arc<dyn LiveState>) {
        let _ = self.live.set(live);
    }

    /// From now on the scrape shows live sessions and terminal clients.
    pub fn watch_sessions(&self, sessions: Arc<dyn SessionsState>) {
        let _ = self.sessions.set(sessions);
    }

    /// A request refused before it reached a handler (`unauthorized`, or a rate-limit rule).
    pub fn rejected(&self, reason: &str) {
        self.rejections
            .get_or_create(&RejectionLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&RejectionLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The gauge of open connections, kept by whoever counts them.
    pub fn connections_open(&self) -> prometheus_client::metrics::gauge::Gauge {
        self.connections_open.clone()
    }

    pub fn connection_closed_idle(&self, reason: &str) {
        self.connections_closed_idle
            .get_or_create(&RejectionLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn overloaded(&self) {
        self.overloaded.inc();
    }

    /// The text exposition (OpenMetrics).
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

#[derive(Debug)]
struct LiveCollector(
    Arc<OnceLock<Arc<dyn LiveState>>>,
    Arc<OnceLock<Arc<dyn SessionsState>>>,
);

impl Collector for LiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let live = self.0.get().map(|live| live.snapshot()).unwrap_or_default();
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64| {
            let metric = ConstGauge::new(value);
            let metric_encoder =
                encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(metric_encoder)
        };
        gauge(
            &mut encoder,
            "jobs_running",
            "Jobs holding a running slot",
            live.jobs_running as i64,
        )?;
        gauge(
            &mut encoder,
            "jobs_queued",
            "Jobs waiting for a running slot",
            live.jobs_queued as i64,
        )?;
        gauge(
            &mut encoder,
            "sandboxes_owned",
            "Sandbox containers this process owns now (running jobs and the warm pool)",
            live.sandboxes_owned as i64,
        )?;
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        if let Some(cache) = live.compile_cache {
            for (name, help, value) in [
                (
                    "compile_cache_hits",
                    "Compiles answered from the compile cache",
                    cache.hits,
                ),
                (
                    "compile_cache_misses",
                    "Compiles the cache did not hold (compiled, then kept when they could be)",
                    cache.misses,
                ),
                (
                    "compile_cache_evictions",
                    "Kept compiles removed to make room (least recently used first)",
                    cache.evictions,
                ),
            ] {
                counter(&mut encoder, name, help, value)?;
            }
            gauge(
                &mut encoder,
                "compile_cache_entries",
                "Compiles kept",
                cache.entries as i64,
            )?;
            gauge(
                &mut encoder,
                "compile_cache_bytes",
                "Bytes the kept compiles hold",
                cache.bytes as i64,
            )?;
        }
        counter(
            &mut encoder,
            "containers_created",
            "Sandbox containers created since start",
            live.sandboxes.created,
        )?;
        counter(
            &mut encoder,
            "containers_removed",
            "Sandbox containers removed after their owner let go of them (or at shutdown)",
            live.sandboxes.removed,
        )?;
        counter(
            &mut encoder,
            "containers_reaped",
            "Orphaned runbox containers removed by the sweep",
            live.sandboxes.reaped,
        )?;
        counter(
            &mut encoder,
            "engine_errors",
            "Container engine calls that failed",
            live.sandboxes.engine_errors,
        )?;
        let mut family = encoder.encode_descriptor(
            "sandboxes",
            "Sandboxes this process owns, by kind (job, pool, session, probe) and state (active, removing)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for ((kind, state), count) in &live.sandboxes.by_kind {
            let labels = SandboxLabels {
                kind: kind.clone(),
                state,
            };
            ConstGauge::new(*count as i64).encode(family.encode_family(&labels)?)?;
        }
        use prometheus_client::metrics::MetricType;
        type PerEngine = fn(&crate::sandbox::EngineHealth) -> u64;
        let per_engine: [(&str, &str, MetricType, PerEngine); 5] = [
            (
                "engine_healthy",
                "1 while the engine takes new work, 0 while its pings or calls fail",
                MetricType::Gauge,
                |e| u64::from(e.healthy),
            ),
            (
                "engine_sandboxes",
                "Sandboxes this process owns on the engine",
                MetricType::Gauge,
                |e| e.owned as u64,
            ),
            (
                "engine_capacity",
                "Sandboxes this process may own on the engine",
                MetricType::Gauge,
                |e| e.capacity as u64,
            ),
            (
                "engine_containers_created",
                "Sandbox containers created on the engine since start",
                MetricType::Counter,
                |e| e.created,
            ),
            (
                "engine_jobs",
                "Job sandboxes handed out from the engine since start (pooled or made for the job)",
                MetricType::Counter,
                |e| e.leased,
            ),
        ];
        for (name, help, kind, value) in per_engine {
            let is_counter = matches!(kind, MetricType::Counter);
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for engine in &live.engines {
                let labels = EngineLabels {
                    engine: engine.id.clone(),
                };
                let sample = family.encode_family(&labels)?;
                if is_counter {
                    ConstCounter::new(value(engine)).encode(sample)?;
                } else {
                    ConstGauge::new(value(engine) as i64).encode(sample)?;
                }
            }
        }
        if let Some(sessions) = self.1.get() {
            let (live_sessions, clients) = sessions.sessions_and_clients();
            gauge(
                &mut encoder,
                "sessions",
                "Live sessions",
                live_sessions as i64,
            )?;
            gauge(
                &mut encoder,
                "terminal_clients",
                "Clients attached to session terminals (rooms)",
                clients as i64,
            )?;
        }

        let mut family = encoder.encode_descriptor(
            "pool_sandboxes",
            "Warm pool sandboxes by language and state (ready, filling)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for pool in &live.pools {
            for (state, value) in [("ready", pool.ready), ("filling", pool.filling)] {
                let labels = PoolStateLabels {
                    language: pool.language.clone(),
                    state,
                };
                ConstGauge::new(value as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "pool_target",
            "Configured warm pool size by language",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for pool in &live.pools {
            let labels = LanguageLabels {
                language: pool.language.clone(),
            };
            ConstGauge::new(pool.size as i64).encode(family.encode_family(&labels)?)?;
        }
        for (name, help, value) in [
            (
                "pool_hits",
                "Jobs served by a warm pool sandbox",
                (|p: &crate::sandbox::pool::PoolStats| p.hits) as fn(&_) -> u64,
            ),
            (
                "pool_misses",
                "Jobs that found their language's pool empty and created a sandbox",
                |p| p.misses,
            ),
            (
                "pool_recycled",
                "Pool sandboxes removed unused after waiting too long",
                |p| p.recycled,
            ),
            (
                "pool_returned",
                "Reused sandboxes that came back to the pool after a job",
                |p| p.returned,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for pool in live.pools.iter().filter(|p| p.size > 0) {
                let labels = LanguageLabels {
                    language: pool.language.clone(),
                };
                ConstCounter::new(value(pool)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::pool::PoolStats;

    #[derive(Debug)]
    struct Fixed;

    impl LiveState for Fixed {
        fn snapshot(&self) -> LiveSnapshot {
            LiveSnapshot {
                jobs_running: 2,
                jobs_queued: 5,
                sandboxes_owned: 7,
                pools: vec![PoolStats {
                    language: "python".into(),
                    size: 4,
                    ready: 3,
                    filling: 1,
                    hits: 10,
                    misses: 2,
                    recycled: 1,
                    returned: 6,
                }],
                compile_cache: Some(CompileCacheCounts {
                    hits: 3,
                    misses: 4,
                    evictions: 1,
                    entries: 2,
                    bytes: 4096,
                }),
                sandboxes: crate::sandbox::SandboxTally {
                    by_kind: [
                        (("job".to_owned(), "active"), 2),
                        (("pool".to_owned(), "active"), 3),
                    ]
                    .into_iter()
                    .collect(),
                    created: 40,
                    removed: 30,
                    reaped: 1,
                    engine_errors: 0,
                },
                engines: vec![crate::sandbox::EngineHealth {
                    id: "b".into(),
                    healthy: false,
                    owned: 3,
                    capacity: 64,
                    created: 12,
                    leased: 20,
                }],
            }
        }
    }

    #[test]
    fn renders_events_and_live_state() {
        let metrics = Metrics::new();
        metrics.watch_live(Arc::new(Fixed));
        metrics.job_finished("python", "success", Duration::from_millis(30));
        metrics.overloaded();
        let text = metrics.render();
        for line in [
            "runbox_runs_total{language=\"python\",status=\"success\"} 1",
            "runbox_job_duration_seconds_bucket{le=\"0.05\",language=\"python\"} 1",
            "runbox_overloaded_rejections_total 1",
            "runbox_sandboxes{kind=\"job\",state=\"active\"} 2",
            "runbox_containers_removed_total 30",
            "runbox_containers_reaped_total 1",
            "runbox_engine_errors_total 0",
            "runbox_jobs_queued 5",
            "runbox_sandboxes_owned 7",
            "runbox_containers_created_total 40",
            "runbox_pool_sandboxes{language=\"python\",state=\"ready\"} 3",
            "runbox_pool_target{language=\"python\"} 4",
            "runbox_pool_hits_total{language=\"python\"} 10",
            "runbox_pool_misses_total{language=\"python\"} 2",
            "runbox_engine_healthy{engine=\"b\"} 0",
            "runbox_engine_sandboxes{engine=\"b\"} 3",
            "runbox_engine_capacity{engine=\"b\"} 64",
            "runbox_engine_containers_created_total{engine=\"b\"} 12",
            "runbox_engine_jobs_total{engine=\"b\"} 20",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
