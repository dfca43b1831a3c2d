//! `POST /run`: wire types and the handler.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::live;
use crate::executor::files::SourceFile;
use crate::executor::{
    FilesOutcome, JobRequest, OutputFile, PhaseOutcome, RunOutcome, RunStatus, TestCase,
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RunRequest {
    pub language: Option<String>,
    pub code: Option<String>,
    pub files: Option<Vec<FileRequest>>,
    /// The program's standard input (`stdin` is accepted as an alias).
    #[serde(alias = "stdin")]
    pub input: Option<String>,
    pub args: Option<Vec<String>>,
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    /// CPU time of the program's processes together, past which it ends as a `timeout`.
    pub cpu_time_ms: Option<u64>,
    /// Compile once, run against each of these inputs.
    pub tests: Option<Vec<TestRequest>>,
    /// Glob patterns (relative to the work dir) of files to return after the run, e.g.
    /// `["*.png", "out/**"]`: `*` stays within a directory, `**` crosses them.
    pub outputs: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    #[serde(default, alias = "stdin")]
    pub input: String,
    pub expected_output: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FileRequest {
    pub name: String,
    pub content: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunResponse {
    pub id: String,
    pub language: String,
    pub version: String,
    pub status: RunStatus,
    #[schema(required = true)]
    pub exit_code: Option<i64>,
    #[schema(required = true)]
    pub signal: Option<&'static str>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub duration_ms: u64,
    #[schema(required = true)]
    pub cpu_time_ms: Option<u64>,
    #[schema(required = true)]
    pub memory_kb: Option<u64>,
    #[schema(required = true)]
    pub compile: Option<PhaseResponse>,
    /// A `tests` job's result per input, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<Vec<TestResponse>>,
    /// The files `outputs` asked for (its fields present only then).
    #[serde(flatten)]
    pub files: FilesResponse,
}

/// The files of one run; every field is present when the request asked for files
/// (`outputs`) and absent otherwise (`files_error` only when no file was read).
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct FilesResponse {
    /// Each matching entry in name order, up to the count cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileResponse>>,
    /// Some file is listed without its content (past a size cap), matches past the count cap
    /// were left out (`files_omitted`), or the work dir held too many entries to look at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_truncated: Option<bool>,
    /// Matching entries past the count cap: counted, not listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_omitted: Option<usize>,
    /// Why no file was read (the program was cut short, never ran, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_error: Option<&'static str>,
}

/// One file a run wrote.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileResponse {
    /// Relative to the work dir.
    pub name: String,
    pub size: u64,
    /// By the file's extension (`application/octet-stream` when unknown).
    pub media_type: &'static str,
    /// `base64`, with `content`; absent when the content is not returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Past a size cap: listed without its content.
    pub truncated: bool,
    /// Not a regular file (a link, a pipe, ...) or unreadable: why it is not returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<&'static str>,
}

impl From<OutputFile> for FileResponse {
    fn from(f: OutputFile) -> Self {
        use base64::Engine as _;
        FileResponse {
            name: f.name,
            size: f.size,
            media_type: f.media_type,
            encoding: f.content.as_ref().map(|_| "base64"),
            content: f
                .content
                .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes)),
            truncated: f.truncated,
            refused: f.refused,
        }
    }
}

impl From<Option<FilesOutcome>> for FilesResponse {
    fn from(o: Option<FilesOutcome>) -> Self {
        let Some(o) = o else {
            return FilesResponse::default();
        };
        FilesResponse {
            files_truncated: Some(o.truncated()),
            files_omitted: Some(o.omitted),
            files_error: o.error,
            files: Some(o.files.into_iter().map(FileResponse::from).collect()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestResponse {
    #[serde(flatten)]
    pub run: PhaseResponse,
    /// Trimmed stdout equals trimmed `expected_output` (absent when none was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    /// The files `outputs` asked for, as the work dir held them after this input's run.
    #[serde(flatten)]
    pub files: FilesResponse,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PhaseResponse {
    pub status: RunStatus,
    #[schema(required = true)]
    pub exit_code: Option<i64>,
    #[schema(required = true)]
    pub signal: Option<&'static str>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub duration_ms: u64,
    /// Compile phases only: whether this compile came from the compile cache (then
    /// `duration_ms` and the output are those of the compile it repeats).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Answer as an NDJSON stream of events (as `Accept: application/x-ndjson` asks).
    #[serde(default)]
    pub stream: bool,
}

/// The JSON result at the end, or (streamed) events as the program runs and then the result.
/// Either way the request is validated first: a bad one is an HTTP error and runs nothing.
#[utoipa::path(
    post,
    path = "/run",
    tag = "runs",
    request_body = RunRequest,
    params(RunQuery),
    responses(
        (status = 200, description = "The program ran: its outcome (a failing program is a status, not an error). With `Accept: application/x-ndjson` or `?stream=true`: NDJSON events, then the result", body = RunResponse),
        (status = 400, description = "invalid_json, invalid_request, unknown_language", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 408, description = "request_timeout", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 429, description = "rate_limited", body = ErrorBody),
        (status = 503, description = "overloaded, sandbox_unavailable, shutting_down", body = ErrorBody),
        (status = 500, description = "internal_error", body = ErrorBody),
    )
)]
pub async fn run_code(
    State(state): State<AppState>,
    query: Result<Query<RunQuery>, QueryRejection>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RunRequest>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let job = state.executor.validate(request.into())?;
    if query.stream || accepts_ndjson(&headers) {
        job.check_live()?;
        return Ok(live::ndjson_response(state.executor.clone(), job));
    }
    let outcome = state.executor.run(job).await?;
    Ok(Json(RunResponse::from(outcome)).into_response())
}

/// Whether `Accept` names the NDJSON media type (parameters and other types aside).
fn accepts_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().map(str::trim) == Some(live::NDJSON))
}

impl From<RunRequest> for JobRequest {
    fn from(r: RunRequest) -> Self {
        JobRequest {
            language: r.language,
            code: r.code,
            files: r
                .files
                .unwrap_or_default()
                .into_iter()
                .map(|f| SourceFile {
                    name: f.name,
                    content: f.content.into_bytes(),
                })
                .collect(),
            input: r.input,
            args: r.args.unwrap_or_default(),
            timeout_ms: r.timeout_ms,
            memory_mb: r.memory_mb,
            cpu_time_ms: r.cpu_time_ms,
            tests: r.tests.map(|tests| {
                tests
                    .into_iter()
                    .map(|t| TestCase {
                        input: t.input.into(),
                        expected_output: t.expected_output,
                    })
                    .collect()
            }),
            outputs: r.outputs,
            ..Default::default()
        }
    }
}

impl From<PhaseOutcome> for PhaseResponse {
    fn from(p: PhaseOutcome) -> Self {
        PhaseResponse {
            status: p.status,
            exit_code: p.exit_code,
            signal: p.signal,
            stdout: p.output.stdout_text(),
            stderr: p.output.stderr_text(),
            truncated: p.output.truncated,
            duration_ms: p.duration.as_millis() as u64,
            cached: None,
        }
    }
}

impl From<RunOutcome> for RunResponse {
    fn from(o: RunOutcome) -> Self {
        // A compile that failed leaves no run phase: its fields are empty.
        let run = o.run.map(PhaseResponse::from).unwrap_or(PhaseResponse {
            status: o.status,
            exit_code: None,
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            duration_ms: 0,
            cached: None,
        });
        RunResponse {
            id: o.id,
            language: o.language,
            version: o.version,
            status: o.status,
            exit_code: run.exit_code,
            signal: run.signal,
            stdout: run.stdout,
            stderr: run.stderr,
            truncated: run.truncated,
            duration_ms: run.duration_ms,
            cpu_time_ms: o.cpu_time.map(|d| d.as_millis() as u64),
            memory_kb: o.memory_kb,
            compile: o.compile.map(|compile| {
                let cached = compile.from_cache;
                PhaseResponse {
                    cached: Some(cached),
                    ..PhaseResponse::from(compile)
                }
            }),
            tests: o.tests.map(|tests| {
                tests
                    .into_iter()
                    .map(|t| TestResponse {
                        run: t.run.into(),
                        passed: t.passed,
                        files: t.files.into(),
                    })
                    .collect()
            }),
            files: o.files.into(),
        }
    }
}
