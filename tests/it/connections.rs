//! Connections that never make a request: caps per client address and in total, the deadline
//! from accept to a first request on every protocol, and the server's health while a flood
//! of them is held open. Attackers connect from other loopback addresses (127.0.0.2, …) than
//! the bystander (127.0.0.1).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{ServerProcess, metric, start_on_own_runtime};

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

async fn connect_from(source: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))?;
    socket.connect(server).await
}

/// Whether the server closes `stream` within `within` (reading whatever it sends first).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// The test process holds every attacking socket itself: its own limit must not be the one
/// that runs out.
fn raise_own_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on this process.
    #[expect(unsafe_code, reason = "getrlimit/setrlimit have no safe wrapper here")]
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

#[tokio::test]
async fn silent_connections_past_the_open_file_limit_leave_health_and_runs_answered() {
    raise_own_open_file_limit();
    const OPEN_FILES: u64 = 512;
    // The first-request deadline stays far off: the caps alone must hold the flood.
    let server = ServerProcess::start(
        &[("RUNBOX_SERVER__HEADER_TIMEOUT_SECS", "60")],
        Some(OPEN_FILES),
        None,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..OPEN_FILES + 100 {
        held.push(connect_from("127.0.0.2", server.addr).await.unwrap());
    }
    // The accept loop closes the ones past the per-address cap at once.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A server out of descriptors never accepts: the bystander gives up rather than hang.
    let client = reqwest::Client::builder()
        .local_address("127.0.0.1".parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let health = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let health_took = started.elapsed();
    assert!(health_took < Duration::from_secs(1), "{health_took:?}");
    let started = Instant::now();
    let run = client
        .post(format!("{}/run", server.base))
        .json(&json!({ "language": "python", "code": "print(6*7)" }))
        .send()
        .await
        .unwrap();
    let run_took = started.elapsed();
    assert_eq!(run.status(), StatusCode::OK);
    let run: serde_json::Value = run.json().await.unwrap();
    assert_eq!(run["stdout"], "42\n", "{run}");
    assert!(run_took < Duration::from_secs(1), "{run_took:?}");

    // 128 per address stay open (idle, within the deadline); the rest were refused.
    let refused = metric(
        &server.base,
        "runbox_connections_refused_total{reason=\"connections_per_client\"}",
    )
    .await;
    assert!(refused >= (OPEN_FILES + 100 - 128) as f64, "{refused}");
    let open = metric(&server.base, "runbox_connections").await;
    assert!((128.0..=131.0).contains(&open), "{open}");
    let mut one_refused = held.pop().unwrap();
    assert!(closed_within(&mut one_refused, Duration::from_millis(100)).await);
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_first_request_deadline() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_SERVER__HEADER_TIMEOUT_SECS", "2"),
        ("RUNBOX_SERVER__HTTP2", "true"),
    ]);
    let addr = app.server.addr;
    // Silence from the start: the protocol detection of HTTP/1 + HTTP/2 waits for a byte.
    let mut silent = connect_from("127.0.0.3", addr).await.unwrap();
    // HTTP/2 by prior knowledge: the preface and an empty SETTINGS frame, then nothing.
    let mut h2 = connect_from("127.0.0.3", addr).await.unwrap();
    h2.write_all(H2_PREFACE).await.unwrap();
    h2.write_all(&H2_EMPTY_SETTINGS).await.unwrap();
    // Half a request line.
    let mut partial = connect_from("127.0.0.3", addr).await.unwrap();
    partial.write_all(b"GET /healthz HT").await.unwrap();
    let started = Instant::now();
    for (name, stream) in [
        ("silent", &mut silent),
        ("http/2", &mut h2),
        ("partial", &mut partial),
    ] {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "{name} still open after {:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let closed = metric(
        &app.base,
        "runbox_connections_closed_idle_total{reason=\"no_first_request\"}",
    )
    .await;
    assert!(closed >= 2.0, "{closed}");
    // A real HTTP/2 client is still served, and so is HTTP/1.
    let h2_client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let answer = h2_client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_http2_the_preface_is_refused_and_the_connection_closed() {
    let app = start_on_own_runtime(&[("RUNBOX_SERVER__HEADER_TIMEOUT_SECS", "30")]);
    let mut h2 = connect_from("127.0.0.4", app.server.addr).await.unwrap();
    h2.write_all(H2_PREFACE).await.unwrap();
    assert!(closed_within(&mut h2, Duration::from_secs(2)).await);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_total_connection_cap_holds_across_addresses() {
    let app = start_on_own_runtime(&[
        ("RUNBOX_SERVER__MAX_CONNECTIONS", "20"),
        ("RUNBOX_SERVER__MAX_CONNECTIONS_PER_CLIENT", "8"),
    ]);
    let addr = app.server.addr;
    let mut held = Vec::new();
    for source in ["127.0.0.5", "127.0.0.6", "127.0.0.7"] {
        for _ in 0..8 {
            held.push(connect_from(source, addr).await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut open = 0;
    for stream in &mut held {
        if !closed_within(stream, Duration::from_millis(20)).await {
            open += 1;
        }
    }
    assert_eq!(open, 20);
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = metric(
        &app.base,
        "runbox_connections_refused_total{reason=\"connections_total\"}",
    )
    .await;
    assert_eq!(refused, 4.0);
    app.server.shutdown().await.unwrap();
}
