//! The bounds of a TCP connection before and between requests: how many a client address and
//! the whole server may hold open, how long one may sit without a complete first request, and
//! how long it may sit idle afterwards. Rate limits and keys act on requests; these act on
//! connections that may never make one (1050 silent connections held a server at its
//! open-file limit, its health check and other users' runs timing out, until the attacker let
//! go).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::access::client::{ClientId, address_identity};

/// File descriptors kept out of the connection cap for everything else runbox holds open: one
/// per owned sandbox (a job's attached stream, a terminal's exec) and a fixed share for the
/// listener, logs, the engine's event stream, pooled engine connections and the sweep.
const FDS_PER_SANDBOX: usize = 1;
const FDS_FIXED_RESERVE: usize = 64;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client address holds `server.max_connections_per_client` already.
    PerClient,
    /// The server holds its connection cap already.
    Total,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::PerClient => "connections_per_client",
            Refused::Total => "connections_total",
        }
    }
}

/// Open connections, in total and per client address. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    inner: Arc<LimitsInner>,
}

#[derive(Debug)]
struct LimitsInner {
    max_total: usize,
    /// 0: no per-address cap (behind a trusted proxy every connection comes from the proxy).
    max_per_client: usize,
    total: AtomicUsize,
    per_client: Mutex<HashMap<ClientId, usize>>,
    /// The metric of open connections.
    gauge: Gauge,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_client: usize, gauge: Gauge) -> ConnectionLimits {
        ConnectionLimits {
            inner: Arc::new(LimitsInner {
                max_total,
                max_per_client,
                total: AtomicUsize::new(0),
                per_client: Mutex::new(HashMap::new()),
                gauge,
            }),
        }
    }

    /// Counts a new connection from `peer`, or says why it may not stay open.
    pub fn admit(&self, peer: IpAddr) -> Result<ConnectionPermit, Refused> {
        let client = address_identity(peer);
        let mut per_client = self.lock();
        let held = per_client.get(&client).copied().unwrap_or(0);
        if self.inner.max_per_client > 0 && held >= self.inner.max_per_client {
            return Err(Refused::PerClient);
        }
        // Changed under the same lock as the per-client map, so the two always agree.
        if self.inner.total.load(Ordering::Relaxed) >= self.inner.max_total {
            return Err(Refused::Total);
        }
        self.inner.total.fetch_add(1, Ordering::Relaxed);
        self.inner.gauge.inc();
        per_client.insert(client.clone(), held + 1);
        Ok(ConnectionPermit {
            limits: self.clone(),
            client,
        })
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.inner.total.load(Ordering::Relaxed)
    }

    pub fn max_total(&self) -> usize {
        self.inner.max_total
    }

    fn release(&self, client: &ClientId) {
        let mut per_client = self.lock();
        self.inner.total.fetch_sub(1, Ordering::Relaxed);
        self.inner.gauge.dec();
        if let Some(held) = per_client.get_mut(client) {
            *held -= 1;
            if *held == 0 {
                per_client.remove(client);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, usize>> {
        // Single insertions and removals: a panic cannot leave the map half-changed.
        self.inner
            .per_client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A request's share of its connection's permit: a WebSocket handler keeps it for as long as
/// the socket lives, so an upgraded connection still counts against the caps.
#[derive(Debug, Clone)]
pub struct ConnectionHold(pub Arc<ConnectionPermit>);

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: ConnectionLimits,
    client: ClientId,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limits.release(&self.client);
    }
}

/// The connection cap that fits in `open_files` descriptors next to `max_sandboxes`
/// sandboxes: `configured`, or less when the descriptors would run out first.
pub fn total_cap(configured: usize, open_files: u64, max_sandboxes: usize) -> usize {
    let reserve = FDS_FIXED_RESERVE + FDS_PER_SANDBOX * max_sandboxes;
    let available = usize::try_from(open_files)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve);
    configured.min(available).max(1)
}

/// Raises the open-file soft limit to the hard limit (the soft limit is often 1024 while the
/// hard one is far higher) and returns the limit in force.
#[expect(
    unsafe_code,
    reason = "getrlimit/setrlimit have no safe wrapper in the crates runbox uses"
)]
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Ok(before);
        }
    }
    Ok(limit.rlim_cur)
}

/// Which deadline closed an idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// No complete request head arrived within `server.header_timeout_secs` of the accept.
    NoFirstRequest,
    /// No request was open for `server.idle_timeout_secs`.
    Idle,
}

impl Idle {
    pub fn reason(self) -> &'static str {
        match self {
            Idle::NoFirstRequest => "no_first_request",
            Idle::Idle => "idle",
        }
    }
}

/// Requests in flight on one connection, to tell when it has sat idle too long, whatever the
/// protocol (hyper's HTTP/1 header timeout does not cover the protocol detection of an
/// HTTP/1+HTTP/2 connection, and HTTP/2 has no idle timeout of its own).
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Requests that have begun, ever.
    begun: AtomicUsize,
    changed: Notify,
}

impl Activity {
    /// A request's head is complete; the connection is busy until the guard drops.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.begun.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        RequestGuard(self.clone())
    }

    /// Resolves once the connection has been without an open request for `first_request`
    /// (before any request) or `idle` (after one), and says which.
    pub async fn idle_past(&self, first_request: Duration, idle: Duration) -> Idle {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before reading the counters, so no change between is missed.
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            let begun = self.begun.load(Ordering::Acquire);
            let (limit, why) = if begun == 0 {
                (first_request, Idle::NoFirstRequest)
            } else {
                (idle, Idle::Idle)
            };
            if tokio::time::timeout(limit, changed).await.is_err() {
                return why;
            }
        }
    }
}

/// Held while a request is being answered.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn caps_per_client_and_in_total() {
        let limits = ConnectionLimits::new(3, 2, Gauge::default());
        let a1 = limits.admit(ip("10.0.0.1")).unwrap();
        let _a2 = limits.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            limits.admit(ip("10.0.0.1")).unwrap_err(),
            Refused::PerClient
        );
        let _b1 = limits.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(limits.admit(ip("10.0.0.3")).unwrap_err(), Refused::Total);
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _c1 = limits.admit(ip("10.0.0.3")).unwrap();
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let limits = ConnectionLimits::new(10, 1, Gauge::default());
        let _one = limits.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(
            limits.admit(ip("2001:db8::2")).unwrap_err(),
            Refused::PerClient
        );
        let _other = limits.admit(ip("2001:db8:0:1::1")).unwrap();
    }

    #[test]
    fn no_per_client_cap_when_zero() {
        let limits = ConnectionLimits::new(3, 0, Gauge::default());
        let _held: Vec<_> = (0..3)
            .map(|_| limits.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(limits.admit(ip("10.0.0.1")).unwrap_err(), Refused::Total);
    }

    #[test]
    fn the_total_cap_leaves_descriptors_for_the_sandboxes() {
        assert_eq!(total_cap(4096, 1_048_576, 256), 4096);
        // 1024 descriptors, 256 sandboxes: 1024 - 64 - 256.
        assert_eq!(total_cap(4096, 1024, 256), 704);
        assert_eq!(total_cap(4096, 100, 256), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_deadlines_before_and_after_the_first_request() {
        let activity = Arc::new(Activity::default());
        let first = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        let started = tokio::time::Instant::now();
        assert_eq!(activity.idle_past(first, idle).await, Idle::NoFirstRequest);
        assert_eq!(started.elapsed(), first);

        let guard = activity.begin();
        let watching = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.idle_past(first, idle).await })
        };
        // Busy: never idle, however long the request takes.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watching.is_finished());
        let ended = tokio::time::Instant::now();
        drop(guard);
        assert_eq!(watching.await.unwrap(), Idle::Idle);
        assert_eq!(ended.elapsed(), idle);
    }
}
