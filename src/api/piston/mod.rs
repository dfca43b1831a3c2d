//! Piston v2 at `/api/v2/…` and `/api/v2/piston/…` (the public instance's shape): runtimes,
//! execute, packages. The same executor, sandbox policy and limits as `POST /run`; only the
//! words differ ([`dialect`]). Errors are Piston's `{"message"}`: [`reshape_errors`] turns
//! every runbox error under these paths (401, 413, 429, 503, …) into that shape.

pub mod connect;
pub mod dialect;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::error::ApiError;
use super::json::read_any_body;
use crate::executor::{Job, LiveRun, Phase, RunEvent, RunOutcome};
use dialect::{Limits, Runtime, Stage};

/// Piston's routes under the prefixes its clients use (a self-hosted server's `/api/v2`, the
/// public instance's `/api/v2/piston`), each also with a trailing slash as Express allows.
/// Rate-limit rules name them as `/api/v2/…` without the slash (see [`super::rule_name`]).
pub fn routes() -> Vec<super::Route> {
    const PATHS: [&str; 16] = [
        "/api/v2/connect",
        "/api/v2/connect/",
        "/api/v2/piston/connect",
        "/api/v2/piston/connect/",
        "/api/v2/runtimes",
        "/api/v2/runtimes/",
        "/api/v2/piston/runtimes",
        "/api/v2/piston/runtimes/",
        "/api/v2/execute",
        "/api/v2/execute/",
        "/api/v2/piston/execute",
        "/api/v2/piston/execute/",
        "/api/v2/packages",
        "/api/v2/packages/",
        "/api/v2/piston/packages",
        "/api/v2/piston/packages/",
    ];
    let mut routes = Vec::new();
    for path in PATHS {
        let route = |method, handler| super::Route {
            method,
            path,
            handler,
        };
        if path.contains("/connect") {
            routes.push(route("GET", get(connect::connect)));
        } else if path.contains("/runtimes") {
            routes.push(route("GET", get(list_runtimes)));
        } else if path.contains("/execute") {
            routes.push(route("POST", post(execute)));
        } else {
            routes.push(route("GET", get(list_packages)));
            routes.push(route("POST", post(install_package)));
            routes.push(route("DELETE", delete(uninstall_package)));
        }
    }
    routes
}

/// A routed Piston path with the public instance's prefix taken as the self-hosted one's
/// (`/api/v2/piston/execute` is `/api/v2/execute`): the same route for a client's quota.
pub fn canonical_path(path: &str) -> Option<String> {
    path.strip_prefix("/api/v2/piston/")
        .map(|rest| format!("/api/v2/{rest}"))
}

/// Every runtime runbox serves, in Piston's words (languages whose image is missing are left
/// out, as an uninstalled package is).
fn runtimes(state: &AppState) -> Vec<Runtime> {
    state
        .executor
        .languages()
        .iter()
        .filter_map(|info| dialect::runtime(&info.language.id, info.version.as_deref()))
        .collect()
}

/// `GET /api/v2/runtimes`.
#[utoipa::path(get, path = "/api/v2/runtimes", tag = "piston",
    responses((status = 200, description = "Piston v2: the runtimes, in Piston's names and semver versions (docs/API.md, \"Piston v2\")")))]
pub async fn list_runtimes(State(state): State<AppState>) -> Json<Vec<Runtime>> {
    Json(runtimes(&state))
}

/// A package as `GET /api/v2/packages` lists it.
#[derive(Debug, Serialize)]
pub struct Package {
    language: &'static str,
    language_version: String,
    installed: bool,
}

/// `GET /api/v2/packages`: what is installed (runbox's languages come from its images).
#[utoipa::path(get, path = "/api/v2/packages", tag = "piston",
    responses((status = 200, description = "Piston v2: every package, installed")))]
pub async fn list_packages(State(state): State<AppState>) -> Json<Vec<Package>> {
    Json(
        runtimes(&state)
            .into_iter()
            .map(|rt| Package {
                language: rt.language,
                language_version: rt.version,
                installed: true,
            })
            .collect(),
    )
}

/// `POST /api/v2/packages`: runbox installs nothing at run time (its languages come from
/// images), so every package is one Piston "does not exist" (its 404 shape).
#[utoipa::path(post, path = "/api/v2/packages", tag = "piston",
    responses((status = 404, description = "Piston v2: `{\"message\":\"Requested package <l>-<v> does not exist\"}`")))]
pub async fn install_package(request: Request) -> Response {
    no_such_package(request).await
}

/// `DELETE /api/v2/packages`: as [`install_package`].
#[utoipa::path(delete, path = "/api/v2/packages", tag = "piston",
    responses((status = 404, description = "Piston v2: `{\"message\":\"Requested package <l>-<v> does not exist\"}`")))]
pub async fn uninstall_package(request: Request) -> Response {
    no_such_package(request).await
}

async fn no_such_package(request: Request) -> Response {
    let body = read_any_body(request).await.ok();
    let field = |name: &str| {
        body.as_ref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .and_then(|v| v.get(name).and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default()
    };
    let message = format!(
        "Requested package {}-{} does not exist",
        field("language"),
        field("version")
    );
    (StatusCode::NOT_FOUND, Json(json!({ "message": message }))).into_response()
}

/// The answer of `POST /api/v2/execute`.
#[derive(Debug, Serialize)]
pub struct ExecuteResponse {
    language: &'static str,
    version: String,
    run: Stage,
    #[serde(skip_serializing_if = "Option::is_none")]
    compile: Option<Stage>,
}

/// `POST /api/v2/execute`: a JSON body whatever its `Content-Type` (npm `piston-client` sends
/// `text/plain`), checked as Piston checks it, run as `POST /run` runs it.
#[utoipa::path(post, path = "/api/v2/execute", tag = "piston",
    responses(
        (status = 200, description = "Piston v2: `{language, version, run, compile?}` (docs/API.md, \"Piston v2\")"),
        (status = 400, description = "Piston v2: `{\"message\"}` (a check failed, or `<language>-<version> runtime is unknown`)"),
        (status = 429, description = "Piston v2: `{\"message\"}`, over the `runs` rate limit"),
    ))]
pub async fn execute(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let body = read_any_body(request).await?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("the body is not valid JSON: {e}")))?;
    let (runtime, job) = prepare(&state, &body)?;
    let cpu_limit = job.cpu_limit;
    // Streamed to this handler only, to keep stdout and stderr in the order they arrived.
    let (events, mut arrived) = mpsc::unbounded_channel();
    let live = LiveRun {
        events,
        stdin: None,
        kill: CancellationToken::new(),
    };
    let running = state.executor.run_live(job, live);
    let interleave = async {
        let (mut compile, mut run) = (String::new(), String::new());
        while let Some(event) = arrived.recv().await {
            if let RunEvent::Output { phase, data, .. } = event {
                match phase {
                    Phase::Compile => compile.push_str(&data),
                    Phase::Run => run.push_str(&data),
                }
            }
        }
        (compile, run)
    };
    let (outcome, (compile_output, run_output)) = tokio::join!(running, interleave);
    let mut answer = response(&runtime, outcome?, compile_output, run_output);
    dialect::name_cpu_limit(&mut answer.run, cpu_limit);
    Ok(Json(answer))
}

/// An `execute` body (or a WebSocket `init`) checked as Piston checks it, its runtime
/// resolved and its limits applied: the runtime and the validated job.
fn prepare(state: &AppState, body: &Value) -> Result<(Runtime, Job), ApiError> {
    let read = dialect::read_execute(body).map_err(ApiError::InvalidRequest)?;
    let all = runtimes(state);
    let runtime = dialect::resolve(&all, &read.language, &read.version)
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "{}-{} runtime is unknown",
                read.language, read.version
            ))
        })?
        .clone();
    let mut job = read.job;
    job.language = Some(runtime.id.clone());
    let limits = stage_limits(state, &runtime.id);
    dialect::apply_limits(body, &limits, &mut job).map_err(ApiError::InvalidRequest)?;
    let job = state.executor.validate(job)?;
    Ok((runtime, job))
}

/// Piston's response: `compile` for a compiled language, and `run` the same as `compile`
/// when the compile failed (Piston's "backward compatibility" when the run never started).
fn response(
    runtime: &Runtime,
    outcome: RunOutcome,
    compile_output: String,
    run_output: String,
) -> ExecuteResponse {
    let compile = outcome
        .compile
        .as_ref()
        .map(|phase| dialect::stage(phase, compile_output, None, None));
    let run = match &outcome.run {
        Some(phase) => dialect::stage(phase, run_output, outcome.cpu_time, outcome.memory_kb),
        None => compile.clone().unwrap_or_else(|| Stage {
            stdout: String::new(),
            stderr: String::new(),
            output: String::new(),
            code: None,
            signal: None,
            message: Some("the program did not run".to_owned()),
            status: Some("XX"),
            cpu_time: None,
            wall_time: 0,
            memory: None,
        }),
    };
    ExecuteResponse {
        language: runtime.language,
        version: runtime.version.clone(),
        run,
        compile,
    }
}

/// runbox's bounds for `language`, as Piston's "configured limits".
fn stage_limits(state: &AppState, language: &str) -> Limits {
    let info = state
        .executor
        .catalogue()
        .resolve(language)
        .cloned()
        .map(|l| {
            (
                l.max_timeout_ms,
                l.compile_timeout().as_millis() as u64,
                l.max_memory_mb,
                l.compile_memory_mb(),
            )
        })
        .unwrap_or_default();
    Limits {
        run_timeout_ms: info.0,
        compile_timeout_ms: info.1,
        run_memory_bytes: info.2 * 1024 * 1024,
        compile_memory_bytes: info.3 * 1024 * 1024,
    }
}

/// Turns runbox's error bodies (`{"error":{"code","message"}}`) under Piston's prefixes into
/// Piston's `{"message"}`, status and headers kept: what a Piston client reads. A route
/// outside the table answers Piston's `404 {"message":"Not Found"}`.
pub async fn reshape_errors(request: Request, next: Next) -> Response {
    let piston = is_piston_path(request.uri().path());
    let response = next.run(request).await;
    if !piston || response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ERROR_BODY_LIMIT).await else {
        return (parts.status, Json(json!({ "message": "internal error" }))).into_response();
    };
    let parsed = serde_json::from_slice::<Value>(&bytes).ok();
    if parsed.as_ref().is_some_and(|v| v.get("message").is_some()) {
        // Already Piston's shape (a handler's own answer).
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = match parts.status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => "Not Found".to_owned(),
        status => parsed
            .as_ref()
            .and_then(|v| v["error"]["message"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
    };
    if parts.status == StatusCode::METHOD_NOT_ALLOWED {
        parts.status = StatusCode::NOT_FOUND;
    }
    let body = serde_json::to_vec(&json!({ "message": message })).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Largest error body reshaped (runbox's are a few hundred bytes).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

fn is_piston_path(path: &str) -> bool {
    path == "/api/v2" || path.starts_with("/api/v2/")
}

/// The mean time Piston's translation takes per run, over `iterations` of a hello world: the
/// request read and checked, a runtime matched among runbox's 14, the stage built and the
/// answer serialised. What `runbox bench` reports beside the end-to-end figures.
#[cfg(feature = "bench")]
pub fn translation_cost(iterations: u32) -> std::time::Duration {
    use crate::executor::{PhaseOutcome, RunStatus};
    let body = json!({ "language": "py3", "version": "3.x", "files": [{ "content": "print('hello')" }],
        "stdin": "", "args": [], "compile_timeout": 10000, "run_timeout": 3000,
        "compile_memory_limit": -1, "run_memory_limit": -1 });
    let all: Vec<Runtime> = dialect::NAMES
        .iter()
        .filter_map(|(id, ..)| dialect::runtime(id, Some("3.11.2")))
        .collect();
    let limits = Limits {
        run_timeout_ms: 30_000,
        compile_timeout_ms: 30_000,
        run_memory_bytes: 512 << 20,
        compile_memory_bytes: 512 << 20,
    };
    let phase = PhaseOutcome {
        status: RunStatus::Success,
        exit_code: Some(0),
        signal: None,
        output: crate::executor::CollectedOutput {
            stdout: b"hello\n".to_vec(),
            stderr: Vec::new(),
            truncated: false,
        },
        duration: std::time::Duration::from_millis(20),
        cut_short: false,
        from_cache: false,
    };
    let started = std::time::Instant::now();
    for _ in 0..iterations {
        let mut read = dialect::read_execute(std::hint::black_box(&body)).expect("valid");
        let runtime = dialect::resolve(&all, &read.language, &read.version).expect("python");
        dialect::apply_limits(&body, &limits, &mut read.job).expect("within limits");
        let run = dialect::stage(&phase, "hello\n".to_owned(), None, Some(4096));
        let answer = ExecuteResponse {
            language: runtime.language,
            version: runtime.version.clone(),
            run,
            compile: None,
        };
        std::hint::black_box(serde_json::to_vec(&answer).expect("serialises"));
    }
    started.elapsed() / iterations
}
