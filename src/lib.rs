//! runbox: a code-execution service. `POST /run` takes a program and runs it in a hardened,
//! throwaway Docker container; the result comes back as JSON.
//!
//! # Layout
//! - [`config`]: the TOML file plus `RUNBOX_<SECTION>__<KEY>` overrides, validated.
//! - [`names`]: the safe relative file name rule (job files, a language's entry file).
//! - [`languages`]: the language catalogue (`config/languages.toml`), languages as data.
//! - [`app`]: shared state, the router and its middleware, the server lifecycle.
//! - [`connections`]: caps on open connections (per address, in total) and their idle deadlines.
//! - [`access`]: who may call, and how often: API keys, client identity, rate limits.
//! - [`api`]: HTTP only: extract, one domain call, map; the one error-to-response table.
//! - [`executor`]: a validated job in, a run outcome out: admission (running slots and a
//!   bounded queue), phases, statuses, usage.
//! - [`sandbox`]: the only code that talks to Docker: hardening policy, container lifecycle,
//!   the runner that takes a job on an attached stdin, the warm pool, the owner that removes
//!   every container, the orphan sweep, OOM events, images, programs on a PTY.
//! - [`sessions`]: sandboxes that live across runs: creation, serialised runs, expiry, reaper,
//!   and the start of a session's terminal program.
//! - [`submissions`]: runs fetched later by token (Judge0's asynchronous API), bounded and
//!   expiring, in memory.
//! - [`rooms`]: a session's terminal shared by every client of its WebSocket: the program's
//!   PTY wired to a fan-out, a bounded queue and an input gate per client.
//! - [`metrics`]: counters and histograms, and the scrape-time view of live state.
//! - `bench` (feature `bench`, not in the service): the benchmarks behind `runbox bench`
//!   (jobs, idle sessions, keystroke echo).

pub mod access;
pub mod api;
pub mod app;
#[cfg(feature = "bench")]
pub mod bench;
pub mod callbacks;
pub mod config;
pub mod connections;
pub mod executor;
pub mod languages;
pub mod metrics;
pub mod names;
pub mod rooms;
pub mod sandbox;
pub mod sessions;
pub mod shared;
pub mod submissions;
