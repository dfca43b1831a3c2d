//! The HTTP layer: extract, make one domain call, map the result. No decisions, no Docker.

pub mod access;
pub mod error;
pub mod forward;
pub mod health;
pub mod json;
pub mod judge0;
pub mod languages;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod piston;
pub mod playground;
pub mod run;
pub mod sessions;
pub mod terminal;

use crate::metrics::Metrics;
use crate::submissions::Submissions;
pub use error::ApiError;

use axum::routing::{MethodRouter, delete, get, post};

use crate::access::Access;
use crate::executor::Executor;
use crate::sessions::Sessions;

/// Cheap, clonable handles shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub executor: Executor,
    pub sessions: Sessions,
    pub submissions: Submissions,
    pub access: Access,
    pub metrics: std::sync::Arc<Metrics>,
    /// Judge0's calls back (`callback_url`).
    pub callbacks: crate::callbacks::Callbacks,
    pub judge0: crate::config::Judge0Config,
    /// The browser playground's files (or why there are none).
    pub playground: playground::SharedPlayground,
    /// With several nodes: the shared state (the hop to a session's host goes by it).
    pub shared: Option<crate::shared::Shared>,
}

/// One route: its method and path (as routed, with `{id}`) and its handler.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub handler: MethodRouter<AppState>,
}

/// Every route runbox serves: the one table the router and the rate-limit rules' route names
/// (`METHOD /path`) are both built from.
pub fn routes() -> Vec<Route> {
    let route = |method, path, handler| Route {
        method,
        path,
        handler,
    };
    vec![
        route("POST", "/run", post(run::run_code)),
        route("GET", "/run/ws", get(live::run_socket)),
        route("POST", "/sessions", post(sessions::create_session)),
        route("GET", "/sessions/{id}", get(sessions::get_session)),
        route("DELETE", "/sessions/{id}", delete(sessions::delete_session)),
        route("POST", "/sessions/{id}/run", post(sessions::run_in_session)),
        route(
            "GET",
            "/sessions/{id}/terminal",
            get(terminal::open_terminal),
        ),
        route("GET", "/languages", get(languages::list_languages)),
        route("GET", "/healthz", get(health::get_health)),
        route("GET", "/readyz", get(health::get_ready)),
        route("GET", "/metrics", get(metrics::get_metrics)),
        route("GET", "/openapi.json", get(openapi::get_openapi)),
        route("GET", "/", get(playground::index)),
        route("GET", "/assets/{file}", get(playground::asset)),
    ]
    .into_iter()
    .chain(piston::routes())
    .chain(judge0::routes())
    .collect()
}

/// The name a rate-limit rule gives a routed request: `METHOD /path` with the path as routed
/// (`{id}` for an id). A dialect's aliases of one route are that route: a trailing slash
/// (Express and Rails allow one) and Piston's public-instance prefix make no difference to
/// a client's quota.
pub fn rule_name(method: &str, routed_path: &str) -> String {
    let path = match routed_path.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest,
        _ => routed_path,
    };
    match piston::canonical_path(path) {
        Some(canonical) => format!("{method} {canonical}"),
        None => format!("{method} {path}"),
    }
}

/// The routes' names as rate-limit rules write them: `METHOD /path`.
pub fn route_names() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for route in routes() {
        let name = rule_name(route.method, route.path);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}
