//! Judge0 CE 1.13.1 at `/judge0/…`: submissions (synchronous with `wait=true`, else queued and
//! fetched by token; batches of up to 20), `fields`, `base64_encoded`, and the info routes
//! its clients read. The runs are `POST /run`'s (the same executor, policy and limits); the
//! queue is [`crate::submissions`]. Errors are Judge0's shapes ([`reshape_errors`]).

pub mod additional_files;
pub mod dialect;

use std::collections::HashMap;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::json::read_any_body;
use crate::access::ClientId;
use crate::executor::files::SourceFile;
use crate::executor::{JobRequest, PhaseOutcome, RunOutcome, RunStatus};
use crate::languages::{Catalogue, Language};
use crate::submissions::{Deleted, QueueFull, State as Progress, Submission};

/// Where Judge0's routes are mounted (its `/languages` would collide with runbox's own).
pub const PREFIX: &str = "/judge0";
/// The Judge0 version runbox answers as (the official SDK picks its language ids by it).
const VERSION: &str = "1.13.1";
/// Most submissions in one batch.
const MAX_BATCH: usize = 20;

/// Judge0's routes, each also with a trailing slash as Rails allows. Rate-limit rules name
/// them without it.
pub fn routes() -> Vec<super::Route> {
    let mut routes = Vec::new();
    let mut add = |method: &'static str, path: &'static str, handler| {
        routes.push(super::Route {
            method,
            path,
            handler,
        })
    };
    add("GET", "/judge0", get(home));
    add("GET", "/judge0/", get(home));
    add("POST", "/judge0/submissions", post(create));
    add("POST", "/judge0/submissions/", post(create));
    add("GET", "/judge0/submissions", get(index));
    add("GET", "/judge0/submissions/", get(index));
    add("GET", "/judge0/submissions/batch", get(batch_show));
    add("GET", "/judge0/submissions/batch/", get(batch_show));
    add("POST", "/judge0/submissions/batch", post(batch_create));
    add("POST", "/judge0/submissions/batch/", post(batch_create));
    add("GET", "/judge0/submissions/{token}", get(show));
    add("GET", "/judge0/submissions/{token}/", get(show));
    add("DELETE", "/judge0/submissions/{token}", delete(destroy));
    add("DELETE", "/judge0/submissions/{token}/", delete(destroy));
    add("GET", "/judge0/languages", get(languages));
    add("GET", "/judge0/languages/", get(languages));
    add("GET", "/judge0/languages/all", get(all_languages));
    add("GET", "/judge0/languages/{id}", get(language));
    add("GET", "/judge0/statuses", get(statuses));
    add("GET", "/judge0/about", get(about));
    add("GET", "/judge0/version", get(version));
    add("GET", "/judge0/config_info", get(config_info));
    add("GET", "/judge0/workers", get(workers));
    add("GET", "/judge0/system_info", get(system_info));
    add("GET", "/judge0/isolate", get(isolate));
    add("GET", "/judge0/license", get(license));
    add("POST", "/judge0/authenticate", post(authenticate));
    add("POST", "/judge0/authorize", post(authorize));
    routes
}

/// The query parameters of the submission routes.
fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).map(String::as_str) == Some("true")
}

/// `POST /judge0/submissions`: `201 {"token"}` at once, or with `wait=true` the finished
/// submission's fields.
#[utoipa::path(post, path = "/judge0/submissions", tag = "judge0", responses((status = 201, description = "Judge0 CE: `{token}`, or with `wait=true` the finished submission (docs/API.md, \"Judge0 CE\")")))]
pub async fn create(
    State(state): State<AppState>,
    Extension(client): Extension<ClientId>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let base64 = flag(&query, "base64_encoded");
    let fields =
        dialect::fields(query.get("fields").map(String::as_str)).map_err(|e| bad_request(&e))?;
    let body = read_any_body(request).await?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let token = match submit(&state, &client.to_string(), &body, base64).await {
        Ok(token) => token,
        Err(Refused::Invalid(errors)) => return Ok(unprocessable(errors)),
        Err(Refused::Full) => return Err(ApiError::Overloaded(crate::executor::Overloaded)),
        Err(Refused::Api(err)) => return Err(err),
    };
    if !flag(&query, "wait") {
        return Ok((StatusCode::CREATED, Json(json!({ "token": token }))).into_response());
    }
    state.submissions.wait(&token).await;
    let submission = (state.submissions.get(&token).await?).ok_or(ApiError::NotFound)?;
    let answer = serialize(&state, &submission, &fields, base64)?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /judge0`: Judge0's home page, empty.
#[utoipa::path(get, path = "/judge0", tag = "judge0", responses((status = 200, description = "Judge0 CE: empty")))]
pub async fn home() -> StatusCode {
    StatusCode::OK
}

/// `GET /judge0/submissions`: Judge0 lists submissions to an authorized user only (its
/// `X-Auth-User`), and runbox has no such users: 403, as Judge0 without authorization tokens.
#[utoipa::path(get, path = "/judge0/submissions", tag = "judge0", responses((status = 403, description = "Judge0 CE: no authorization tokens are configured")))]
pub async fn index() -> StatusCode {
    StatusCode::FORBIDDEN
}

/// `DELETE /judge0/submissions/{token}`: with `judge0.submission_delete` on, the client that
/// made a finished submission may delete it (the answer is its fields, as they were).
#[utoipa::path(delete, path = "/judge0/submissions/{token}", tag = "judge0", params(("token" = String, Path, description = "The submission's token")), responses((status = 200, description = "Judge0 CE: the deleted submission's `fields`"), (status = 400, description = "Judge0 CE: `delete not allowed`, or the submission is still pending")))]
pub async fn destroy(
    State(state): State<AppState>,
    Extension(client): Extension<ClientId>,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if !state.judge0.submission_delete {
        return Err(bad_request("delete not allowed"));
    }
    let fields =
        dialect::fields(query.get("fields").map(String::as_str)).map_err(|e| bad_request(&e))?;
    match state
        .submissions
        .delete(&token, &client.to_string())
        .await?
    {
        Deleted::Gone(gone) => {
            let answer = serialize(&state, &gone, &fields, flag(&query, "base64_encoded"))?;
            Ok(Json(answer).into_response())
        }
        Deleted::Pending(pending) => {
            let (status, _) = progress(&pending);
            Err(bad_request(&format!(
                "submission cannot be deleted because its status is {status} ({})",
                dialect::status_description(status)
            )))
        }
        Deleted::NotOwner => Ok(StatusCode::FORBIDDEN.into_response()),
        Deleted::Unknown => Err(ApiError::NotFound),
    }
}

/// `GET /judge0/submissions/{token}`.
#[utoipa::path(get, path = "/judge0/submissions/{token}", tag = "judge0", params(("token" = String, Path, description = "The submission's token")), responses((status = 200, description = "Judge0 CE: the submission's asked `fields`")))]
pub async fn show(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let fields =
        dialect::fields(query.get("fields").map(String::as_str)).map_err(|e| bad_request(&e))?;
    let submission = (state.submissions.get(&token).await?).ok_or(ApiError::NotFound)?;
    Ok(Json(serialize(
        &state,
        &submission,
        &fields,
        flag(&query, "base64_encoded"),
    )?))
}

/// `POST /judge0/submissions/batch`: one result per submission (`{"token"}` or its errors);
/// 201 when any was taken, else 422.
#[utoipa::path(post, path = "/judge0/submissions/batch", tag = "judge0", responses((status = 201, description = "Judge0 CE: `[{token} | {attribute: [errors]}]`")))]
pub async fn batch_create(
    State(state): State<AppState>,
    Extension(client): Extension<ClientId>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let base64 = flag(&query, "base64_encoded");
    let body = read_any_body(request).await?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let items = body["submissions"].as_array().cloned().unwrap_or_default();
    check_batch_size(items.len())?;
    let mut answers = Vec::with_capacity(items.len());
    let mut taken = false;
    for item in &items {
        answers.push(
            match submit(&state, &client.to_string(), item, base64).await {
                Ok(token) => {
                    taken = true;
                    json!({ "token": token })
                }
                Err(Refused::Invalid(errors)) => Value::Object(errors),
                Err(Refused::Full) => json!({ "error": "queue is full" }),
                Err(Refused::Api(err)) => json!({ "error": err.detail().2 }),
            },
        );
    }
    let status = if taken {
        StatusCode::CREATED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, Json(Value::Array(answers))).into_response())
}

/// `GET /judge0/submissions/batch?tokens=a,b`: `{"submissions": [… | null]}`.
#[utoipa::path(get, path = "/judge0/submissions/batch", tag = "judge0", responses((status = 200, description = "Judge0 CE: `{submissions: [submission | null]}`")))]
pub async fn batch_show(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let fields =
        dialect::fields(query.get("fields").map(String::as_str)).map_err(|e| bad_request(&e))?;
    let base64 = flag(&query, "base64_encoded");
    let tokens: Vec<&str> = query
        .get("tokens")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default();
    check_batch_size(tokens.len())?;
    let mut found = Vec::with_capacity(tokens.len());
    for token in tokens {
        found.push(match state.submissions.get(token).await? {
            Some(submission) => serialize(&state, &submission, &fields, base64)?,
            None => Value::Null,
        });
    }
    Ok(Json(json!({ "submissions": found })))
}

/// A batch holds 1 to [`MAX_BATCH`] submissions, with Judge0's texts.
fn check_batch_size(len: usize) -> Result<(), ApiError> {
    if len == 0 {
        return Err(bad_request(
            "there should be at least one submission in a batch",
        ));
    }
    if len > MAX_BATCH {
        return Err(bad_request(&format!(
            "number of submissions in a batch should be less than or equal to {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// Why a submission was not taken.
enum Refused {
    /// Judge0's 422: attribute → messages.
    Invalid(Map<String, Value>),
    Full,
    Api(ApiError),
}

/// A submission's attributes as read, with the errors found on the way (Judge0's 422 map:
/// attribute → messages).
struct Attributes<'a> {
    body: &'a Value,
    base64: bool,
    errors: Map<String, Value>,
}

impl Attributes<'_> {
    fn fail(&mut self, attribute: &str, message: &str) {
        if let Some(list) = self
            .errors
            .entry(attribute)
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            list.push(json!(message));
        }
    }

    /// A text attribute; `source_code`, `stdin` and `expected_output` decoded when the
    /// request is base64 (Ruby's decoder never fails), as Judge0 decodes those three only.
    fn text(&self, name: &str) -> Option<String> {
        let value = self.body.get(name)?;
        let raw = value
            .as_str()
            .map(str::to_owned)
            .or_else(|| (!value.is_null()).then(|| value.to_string()))?;
        let encoded = matches!(name, "source_code" | "stdin" | "expected_output");
        Some(if self.base64 && encoded {
            String::from_utf8_lossy(&dialect::decode64(&raw)).into_owned()
        } else {
            raw
        })
    }

    /// A number, or a string holding one (Rails casts `"4"`).
    fn number(&self, name: &str) -> Option<f64> {
        let value = self.body.get(name)?;
        value
            .as_f64()
            .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
    }

    fn is_set(&self, name: &str) -> bool {
        self.body
            .get(name)
            .is_some_and(|v| !v.is_null() && v != &json!(false))
    }

    /// A limit within Judge0's bounds (its default when absent). Rails prints a bound as the
    /// attribute's type: `15.0` for a float, `2048` for an integer.
    fn bounded(
        &mut self,
        name: &str,
        default: f64,
        (min, max): (f64, f64),
        above_min: bool,
    ) -> f64 {
        let integer = !matches!(
            name,
            "cpu_time_limit" | "cpu_extra_time" | "wall_time_limit"
        );
        let show = |bound: f64| {
            if integer {
                format!("{}", bound as i64)
            } else {
                float(bound)
            }
        };
        let Some(value) = self.number(name) else {
            if self.body.get(name).is_some_and(|v| !v.is_null()) {
                self.fail(name, "is not a number");
            }
            return default;
        };
        if above_min && value <= min {
            self.fail(name, &format!("must be greater than {}", show(min)));
        } else if value < min {
            self.fail(
                name,
                &format!("must be greater than or equal to {}", show(min)),
            );
        }
        if value > max {
            self.fail(
                name,
                &format!("must be less than or equal to {}", show(max)),
            );
        }
        value
    }
}

/// What a valid submission asks for.
struct Checked {
    source: String,
    language: &'static str,
    language_id: u64,
    /// CPU limit, its extra time and the wall limit, in seconds.
    cpu: f64,
    extra: f64,
    wall: f64,
    /// Memory in KB; `None`: not given, the language's own (a warm sandbox's size).
    memory_kb: Option<f64>,
    compile_args: Vec<String>,
    args: Vec<String>,
    merge_stderr: bool,
    runs: u32,
    files: Vec<SourceFile>,
}

/// Longest `compiler_options` and `command_line_arguments`, as Judge0 bounds them.
const MAX_OPTIONS_CHARS: usize = 512;

/// Compiler options that make a compiler run another program or load code (gcc's `-wrapper`
/// and plugins, response files, rustc's linker, go's tool wrappers, mcs' pkg-config): they
/// would run a program under the compile's limits instead of the run's. Refused.
const PROGRAM_RUNNING_OPTIONS: &[&str] = &[
    "@",
    "-wrapper",
    "-fplugin",
    "-B",
    "-specs",
    "--specs",
    "-fuse-ld",
    "-Wl,",
    "-Xlinker",
    "-Wa,",
    "-Xassembler",
    "-Wp,",
    "-Xpreprocessor",
    "-no-integrated-cpp",
    "-Z",
    "-toolexec",
    "--toolexec",
    "-exec",
    "--exec",
    "-ldflags",
    "--ldflags",
    "-pkg:",
    "/pkg:",
];

/// rustc's codegen options that pick or feed the linker (`-C linker=…`, `-Clink-arg=…`).
const LINKER_CODEGEN: &[&str] = &["linker", "link-arg", "link-self-contained", "linker-flavor"];

/// The first word of `words` that would make a compiler run or load another program.
fn program_running(words: &[String]) -> Option<&str> {
    words.iter().enumerate().find_map(|(i, word)| {
        let codegen = match word.as_str() {
            "-C" | "--codegen" => words.get(i + 1).map(String::as_str),
            w => w
                .strip_prefix("--codegen=")
                .or_else(|| w.strip_prefix("-C")),
        };
        let bad = PROGRAM_RUNNING_OPTIONS.iter().any(|b| word.starts_with(b))
            || codegen.is_some_and(|c| LINKER_CODEGEN.iter().any(|l| c.starts_with(l)));
        bad.then_some(word.as_str())
    })
}

/// Checks a submission's attributes with Judge0's bounds and texts. What runbox does not do
/// is refused, never ignored: network, callbacks (so no outbound call, no SSRF).
fn check(
    read: &mut Attributes<'_>,
    catalogue: &Catalogue,
    compiler_options_on: bool,
) -> Option<Checked> {
    let source = read.text("source_code").filter(|s| !s.is_empty());
    if source.is_none() {
        read.fail("source_code", "can't be blank");
    }
    let language_id = read.number("language_id");
    let language = match language_id {
        None => {
            read.fail("language_id", "can't be blank");
            None
        }
        Some(id) => match dialect::language_of(id as u32) {
            Some(language) if id.fract() == 0.0 => Some(language),
            _ => {
                read.fail(
                    "language_id",
                    &format!("language with id {id} doesn't exist"),
                );
                None
            }
        },
    };
    for (name, refusal) in [
        ("enable_network", "enabling network is not allowed"),
        (
            "enable_per_process_and_thread_time_limit",
            "this option cannot be enabled",
        ),
        (
            "enable_per_process_and_thread_memory_limit",
            "this option cannot be enabled",
        ),
    ] {
        if read.is_set(name) {
            read.fail(name, refusal);
        }
    }
    let compile_args = compiler_options(
        read,
        language.and_then(|l| catalogue.resolve(l)).map(|l| &**l),
        compiler_options_on,
    );
    let args = match read.text("command_line_arguments") {
        Some(line) if line.chars().count() > MAX_OPTIONS_CHARS => {
            read.fail(
                "command_line_arguments",
                &format!("is too long (maximum is {MAX_OPTIONS_CHARS} characters)"),
            );
            Vec::new()
        }
        Some(line) => dialect::shell_words(&line),
        None => Vec::new(),
    };
    let merge_stderr = read.body.get("redirect_stderr_to_stdout") == Some(&json!(true));
    let cpu = read.bounded("cpu_time_limit", 5.0, (0.0, 15.0), false);
    let extra = read.bounded("cpu_extra_time", 1.0, (0.0, 5.0), false);
    let wall = read.bounded("wall_time_limit", 10.0, (1.0, 20.0), false);
    let memory_kb = read
        .body
        .get("memory_limit")
        .is_some_and(|v| !v.is_null())
        .then(|| read.bounded("memory_limit", 128_000.0, (2048.0, 512_000.0), false));
    read.bounded("stack_limit", 64_000.0, (0.0, 128_000.0), false);
    read.bounded("max_processes_and_or_threads", 60.0, (0.0, 120.0), true);
    read.bounded("max_file_size", 1024.0, (0.0, 4096.0), false);
    let runs = read.bounded("number_of_runs", 1.0, (0.0, 20.0), true);
    let files = match read.body.get("additional_files").and_then(Value::as_str) {
        None | Some("") => Vec::new(),
        Some(encoded) => {
            let main_file = language
                .and_then(|l| catalogue.resolve(l))
                .map_or("", |l| l.main_file.as_str());
            match additional_files::unzip(&dialect::decode64(encoded), main_file) {
                Ok(files) => files,
                Err(why) => {
                    read.fail("additional_files", &why);
                    Vec::new()
                }
            }
        }
    };
    if !read.errors.is_empty() {
        return None;
    }
    Some(Checked {
        source: source?,
        language: language?,
        language_id: language_id? as u64,
        cpu,
        extra,
        wall,
        memory_kb,
        compile_args,
        args,
        merge_stderr,
        runs: runs as u32,
        files,
    })
}

/// `compiler_options`, checked as Judge0 checks them (length, compiled languages only) and
/// split into words as its shell would; options that run programs are refused.
fn compiler_options(
    read: &mut Attributes<'_>,
    language: Option<&Language>,
    allowed: bool,
) -> Vec<String> {
    let Some(options) = read.text("compiler_options").filter(|o| !o.is_empty()) else {
        return Vec::new();
    };
    const NAME: &str = "compiler_options";
    if !allowed {
        read.fail(NAME, "setting compiler options is not allowed");
        return Vec::new();
    }
    if options.chars().count() > MAX_OPTIONS_CHARS {
        read.fail(
            NAME,
            &format!("is too long (maximum is {MAX_OPTIONS_CHARS} characters)"),
        );
        return Vec::new();
    }
    let Some(language) = language else {
        return Vec::new();
    };
    if !language.is_compiled() {
        read.fail(
            NAME,
            "setting compiler options is only allowed for compiled languages",
        );
        return Vec::new();
    }
    if !language.compile_takes_args {
        read.fail(
            NAME,
            &format!(
                "setting compiler options is not supported for {} by this server",
                language.name
            ),
        );
        return Vec::new();
    }
    let words = dialect::shell_words(&options);
    if let Some(word) = program_running(&words) {
        let shown: String = word.chars().take(32).collect();
        read.fail(
            NAME,
            &format!("{shown} is not allowed: it makes the compiler run or load other programs"),
        );
        return Vec::new();
    }
    words
}

/// Checks one submission as Judge0 does and queues its run (and, when it asks, its
/// callback).
async fn submit(
    state: &AppState,
    owner: &str,
    body: &Value,
    base64: bool,
) -> Result<String, Refused> {
    let mut read = Attributes {
        body,
        base64,
        errors: Map::new(),
    };
    let callback = match body.get("callback_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) if url.is_empty() => None,
        Some(url) => match state
            .callbacks
            .check(url.as_str().unwrap_or_default())
            .await
        {
            Ok(url) => Some(url),
            Err(refused) => {
                read.fail("callback_url", &refused.to_string());
                None
            }
        },
    };
    let catalogue = state.executor.catalogue();
    let Some(checked) = check(&mut read, catalogue, state.judge0.compiler_options) else {
        return Err(Refused::Invalid(read.errors));
    };
    let max_timeout = catalogue
        .resolve(checked.language)
        .map_or(u64::MAX, |l| l.max_timeout_ms);
    let ms = |seconds: f64| ((seconds * 1000.0).ceil() as u64).clamp(1, max_timeout);
    let job = JobRequest {
        language: Some(checked.language.to_owned()),
        code: Some(checked.source),
        files: checked.files,
        input: read.text("stdin"),
        args: checked.args,
        timeout_ms: Some(ms(checked.wall)),
        // isolate ends a program past its CPU limit and extra time, and calls any run past the
        // limit itself a timeout ([`verdict`]).
        // A limit of 0 is none (isolate's `-t 0`).
        cpu_time_ms: (checked.cpu > 0.0).then(|| ms(checked.cpu + checked.extra)),
        memory_mb: checked
            .memory_kb
            .map(|kb| ((kb / 1024.0).ceil() as u64).max(16)),
        compile_args: checked.compile_args,
        merge_stderr: checked.merge_stderr,
        ..Default::default()
    };
    let job = state
        .executor
        .validate(job)
        .map_err(|e| Refused::Api(e.into()))?;
    // What the answer echoes back, decoded, with the limits that apply.
    let mut kept = body.clone();
    for name in [
        "source_code",
        "stdin",
        "expected_output",
        "command_line_arguments",
        "compiler_options",
    ] {
        if let Some(value) = read.text(name) {
            kept[name] = json!(value);
        }
    }
    kept["language_id"] = json!(checked.language_id);
    kept["cpu_time_limit"] = json!(checked.cpu);
    kept["cpu_extra_time"] = json!(checked.extra);
    kept["wall_time_limit"] = json!(checked.wall);
    kept["memory_limit"] = json!(checked.memory_kb.unwrap_or(128_000.0) as u64);
    kept["number_of_runs"] = json!(checked.runs);
    kept["redirect_stderr_to_stdout"] = json!(checked.merge_stderr);
    let on_finish = callback.map(|url| {
        let state = state.clone();
        Box::new(move |finished: &Submission| call_back(&state, finished, url))
            as crate::submissions::OnFinish
    });
    state
        .submissions
        .submit(job, owner, kept, checked.runs, on_finish)
        .await
        .map_err(|QueueFull| Refused::Full)
}

/// Judge0's callback: the default fields, base64, PUT to the submission's `callback_url`.
fn call_back(state: &AppState, finished: &Submission, url: reqwest::Url) {
    let fields = dialect::fields(None).unwrap_or_default();
    match serialize(state, finished, &fields, true) {
        Ok(answer) => state
            .callbacks
            .deliver(url, serde_json::to_vec(&answer).unwrap_or_default()),
        Err(_) => tracing::warn!("a finished submission could not be serialized for its callback"),
    }
}

/// What Judge0's translation alone costs per submission, measured over `iterations`: a
/// `wait=true` hello world's attributes read and checked against `catalogue`, the job
/// request built, and its finished answer serialised with every field. What `runbox bench`
/// reports beside the end-to-end figures.
#[cfg(feature = "bench")]
pub fn translation_cost(catalogue: &Catalogue, iterations: u32) -> std::time::Duration {
    use crate::executor::CollectedOutput;
    let body = json!({ "source_code": "print('hello')", "language_id": 71, "stdin": "",
        "cpu_time_limit": 2, "wall_time_limit": 5 });
    let run = PhaseOutcome {
        status: RunStatus::Success,
        exit_code: Some(0),
        signal: None,
        output: CollectedOutput {
            stdout: b"hello\n".to_vec(),
            stderr: Vec::new(),
            truncated: false,
        },
        duration: std::time::Duration::from_millis(20),
        cut_short: false,
        from_cache: false,
    };
    let outcome = RunOutcome {
        id: "bench".to_owned(),
        language: "python".to_owned(),
        version: "3.11.2".to_owned(),
        status: RunStatus::Success,
        run: Some(run),
        compile: None,
        cpu_time: Some(std::time::Duration::from_millis(15)),
        memory_kb: Some(4096),
        tests: None,
        files: None,
    };
    let fields = dialect::fields(Some("*")).expect("every field");
    let started = std::time::Instant::now();
    for _ in 0..iterations {
        let body = std::hint::black_box(&body);
        let mut read = Attributes {
            body,
            base64: false,
            errors: Map::new(),
        };
        let checked = check(&mut read, catalogue, true).expect("valid");
        std::hint::black_box(JobRequest {
            language: Some(checked.language.to_owned()),
            code: Some(checked.source),
            input: read.text("stdin"),
            ..Default::default()
        });
        let submission = Submission {
            token: "00000000-0000-4000-8000-000000000000".to_owned(),
            owner: "bench".to_owned(),
            request: body.clone(),
            state: Progress::Finished(Ok(Box::new(outcome.clone()))),
            created_at: SystemTime::now(),
            finished_at: Some(SystemTime::now()),
        };
        let answer = serialize_named(
            &submission,
            Some("Python (3.11.2)".to_owned()),
            &fields,
            false,
        )
        .expect("serialises");
        std::hint::black_box(serde_json::to_vec(&answer).expect("JSON"));
    }
    started.elapsed() / iterations
}

/// A float as Ruby prints it: `15.0`, `0.5`.
fn float(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.1}")
    } else {
        value.to_string()
    }
}

fn unprocessable(errors: Map<String, Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(Value::Object(errors)),
    )
        .into_response()
}

/// Judge0's `400 {"error"}`, carried as runbox's error to the one reshaping layer.
fn bad_request(message: &str) -> ApiError {
    ApiError::InvalidRequest(message.to_owned())
}

/// A submission's attributes, as asked: every attribute of 1.13.1 computed, then the asked
/// ones kept, in the order asked. Text is base64 (Ruby's form) when asked; without it, output
/// that is not UTF-8 is Judge0's 400.
fn serialize(
    state: &AppState,
    submission: &Submission,
    fields: &[&str],
    base64: bool,
) -> Result<Value, ApiError> {
    let language_id = submission.request["language_id"].as_u64().unwrap_or(0);
    let language_name = state
        .executor
        .languages()
        .into_iter()
        .find(|info| dialect::language_of(language_id as u32) == Some(info.language.id.as_str()))
        .map(|info| name_of(&info.language.id, info.version.as_deref().unwrap_or("")));
    serialize_named(submission, language_name, fields, base64)
}

/// [`serialize`], the language's Judge0 name given.
fn serialize_named(
    submission: &Submission,
    language_name: Option<String>,
    fields: &[&str],
    base64: bool,
) -> Result<Value, ApiError> {
    let request = &submission.request;
    let language_id = request["language_id"].as_u64().unwrap_or(0);
    let (status, outcome) = progress(submission);
    let run = outcome.and_then(|o| o.run.as_ref());
    let mut all = text_attributes(submission, outcome, base64)?;
    let (exit_code, exit_signal) = match outcome.zip(run) {
        Some((outcome, run)) => {
            let (_, code, signal) = verdict(request, outcome, run);
            (json!(code), json!(signal))
        }
        None => (Value::Null, Value::Null),
    };
    let time = run.map(|_| {
        outcome
            .and_then(|o| o.cpu_time)
            .map_or(Value::Null, |t| json!(dialect::seconds(t)))
    });
    let stamp = |at: Option<SystemTime>| at.map_or(Value::Null, |t| json!(dialect::timestamp(t)));
    let limit = |name: &str, default: f64| json!(float(request[name].as_f64().unwrap_or(default)));
    let integer = |name: &str, default: i64| json!(request[name].as_i64().unwrap_or(default));
    let boolean = |name: &str| json!(request[name].as_bool().unwrap_or(false));
    let echo = |name: &str| match request.get(name) {
        Some(Value::String(text)) if !text.is_empty() => json!(text),
        _ => Value::Null,
    };
    for (name, value) in [
        ("token", json!(submission.token)),
        ("language_id", json!(language_id)),
        (
            "language",
            json!({ "id": language_id, "name": language_name }),
        ),
        ("status_id", json!(status)),
        (
            "status",
            json!({ "id": status, "description": dialect::status_description(status) }),
        ),
        ("time", time.unwrap_or(Value::Null)),
        (
            "wall_time",
            run.map_or(Value::Null, |r| json!(dialect::seconds(r.duration))),
        ),
        (
            "memory",
            run.and(outcome.and_then(|o| o.memory_kb))
                .map_or(Value::Null, |kb| json!(kb)),
        ),
        ("exit_code", exit_code),
        ("exit_signal", exit_signal),
        ("created_at", stamp(Some(submission.created_at))),
        ("finished_at", stamp(submission.finished_at)),
        ("number_of_runs", integer("number_of_runs", 1)),
        ("cpu_time_limit", limit("cpu_time_limit", 5.0)),
        ("cpu_extra_time", limit("cpu_extra_time", 1.0)),
        ("wall_time_limit", limit("wall_time_limit", 10.0)),
        ("memory_limit", integer("memory_limit", 128_000)),
        ("stack_limit", integer("stack_limit", 64_000)),
        (
            "max_processes_and_or_threads",
            integer("max_processes_and_or_threads", 60),
        ),
        (
            "enable_per_process_and_thread_time_limit",
            boolean("enable_per_process_and_thread_time_limit"),
        ),
        (
            "enable_per_process_and_thread_memory_limit",
            boolean("enable_per_process_and_thread_memory_limit"),
        ),
        ("max_file_size", integer("max_file_size", 1024)),
        (
            "redirect_stderr_to_stdout",
            boolean("redirect_stderr_to_stdout"),
        ),
        ("enable_network", json!(false)),
        ("compiler_options", echo("compiler_options")),
        ("command_line_arguments", echo("command_line_arguments")),
        ("callback_url", echo("callback_url")),
        // Always base64, as Judge0 stores the zip.
        ("additional_files", echo("additional_files")),
    ] {
        all.insert(name.to_owned(), value);
    }
    let mut chosen = Map::new();
    for field in fields {
        chosen.insert(
            (*field).to_owned(),
            all.get(*field).cloned().unwrap_or(Value::Null),
        );
    }
    Ok(Value::Object(chosen))
}

/// A run's status, `exit_code` and `exit_signal` as Judge0 judges them, with isolate's rule
/// that a run whose CPU time passed `cpu_time_limit` exceeded the time limit, even when it
/// ended within the extra time.
fn verdict(
    request: &Value,
    outcome: &RunOutcome,
    run: &PhaseOutcome,
) -> (u8, Option<i64>, Option<i64>) {
    let judged = dialect::judged(run, request["expected_output"].as_str());
    let limit = request["cpu_time_limit"].as_f64().unwrap_or(5.0);
    let over = limit > 0.0 && outcome.cpu_time.is_some_and(|t| t.as_secs_f64() > limit);
    if over && matches!(run.status, RunStatus::Success | RunStatus::RuntimeError) {
        (dialect::TIME_LIMIT_EXCEEDED, judged.1, judged.2)
    } else {
        judged
    }
}

/// Where a submission is, as Judge0's status, with its outcome once it has one.
fn progress(submission: &Submission) -> (u8, Option<&RunOutcome>) {
    match &submission.state {
        Progress::Queued => (dialect::IN_QUEUE, None),
        Progress::Processing => (dialect::PROCESSING, None),
        Progress::Finished(Err(_)) => (dialect::INTERNAL_ERROR, None),
        Progress::Finished(Ok(outcome)) => {
            let status = match &outcome.run {
                Some(run) => verdict(&submission.request, outcome, run).0,
                None => 6,
            };
            (status, Some(outcome.as_ref()))
        }
    }
}

/// The text attributes (the request's and the run's): `null` when empty, base64 in Ruby's
/// form when asked, else UTF-8 or Judge0's 400.
fn text_attributes(
    submission: &Submission,
    outcome: Option<&RunOutcome>,
    base64: bool,
) -> Result<Map<String, Value>, ApiError> {
    let request = &submission.request;
    let given = |name: &str| request[name].as_str().map(|s| s.as_bytes().to_vec());
    let run = outcome.and_then(|o| o.run.as_ref());
    let nonempty = |bytes: &[u8]| (!bytes.is_empty()).then(|| bytes.to_vec());
    let texts = [
        ("source_code", given("source_code")),
        ("stdin", given("stdin")),
        ("expected_output", given("expected_output")),
        ("stdout", run.and_then(|r| nonempty(&r.output.stdout))),
        ("stderr", run.and_then(|r| nonempty(&r.output.stderr))),
        ("compile_output", outcome.and_then(compile_output)),
        (
            "message",
            message(submission, outcome).map(String::into_bytes),
        ),
    ];
    let mut all = Map::new();
    for (name, bytes) in texts {
        let value = match bytes {
            None => Value::Null,
            Some(bytes) if base64 => json!(dialect::encode64(&bytes)),
            Some(bytes) => match String::from_utf8(bytes) {
                Ok(text) => json!(text),
                Err(_) => {
                    return Err(bad_request(
                        "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter",
                    ));
                }
            },
        };
        all.insert(name.to_owned(), value);
    }
    Ok(all)
}

/// The compiler's messages, stdout and stderr together, when it printed any.
fn compile_output(outcome: &RunOutcome) -> Option<Vec<u8>> {
    let compile = outcome.compile.as_ref()?;
    let mut bytes = compile.output.stdout.clone();
    bytes.extend_from_slice(&compile.output.stderr);
    (!bytes.is_empty()).then_some(bytes)
}

/// isolate's message for an end that has one, or why the submission could not run.
fn message(submission: &Submission, outcome: Option<&RunOutcome>) -> Option<String> {
    if let Progress::Finished(Err(why)) = &submission.state {
        return Some(why.to_string());
    }
    let run = outcome?.run.as_ref()?;
    super::piston::dialect::stage(run, String::new(), None, None)
        .message
        .map(|m| m.replace(" (wall clock)", ""))
}

/// Judge0's name of runbox language `id` at `version`.
fn name_of(id: &str, version: &str) -> String {
    let label = dialect::LANGUAGE_IDS
        .iter()
        .find(|(ours, ..)| *ours == id)
        .map_or(id, |(_, label, _)| label);
    dialect::language_name(label, version)
}

/// Every Judge0 id runbox serves, with its name, ordered by name then id.
fn listed(state: &AppState) -> Vec<(u32, String, String)> {
    let mut all = Vec::new();
    for info in state.executor.languages() {
        let Some(version) = info.version.as_deref() else {
            continue; // image missing: not served now
        };
        let Some((_, _, ids)) = dialect::LANGUAGE_IDS
            .iter()
            .find(|(ours, ..)| *ours == info.language.id)
        else {
            continue;
        };
        let name = name_of(&info.language.id, version);
        for id in *ids {
            all.push((*id, name.clone(), info.language.id.clone()));
        }
    }
    all.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    all
}

#[utoipa::path(get, path = "/judge0/languages", tag = "judge0", responses((status = 200, description = "Judge0 CE: `[{id, name}]`")))]
pub async fn languages(State(state): State<AppState>) -> Json<Value> {
    Json(Value::Array(
        listed(&state)
            .into_iter()
            .map(|(id, name, _)| json!({ "id": id, "name": name }))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/judge0/languages/all", tag = "judge0", responses((status = 200, description = "Judge0 CE: `[{id, name, is_archived}]`")))]
pub async fn all_languages(State(state): State<AppState>) -> Json<Value> {
    Json(Value::Array(
        listed(&state)
            .into_iter()
            .map(|(id, name, _)| json!({ "id": id, "name": name, "is_archived": false }))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/judge0/languages/{id}", tag = "judge0", params(("id" = u32, Path, description = "A Judge0 language id")), responses((status = 200, description = "Judge0 CE: `{id, name, is_archived, source_file, compile_cmd, run_cmd}`")))]
pub async fn language(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: u32 = id.parse().map_err(|_| ApiError::NotFound)?;
    let (_, name, ours) = listed(&state)
        .into_iter()
        .find(|(i, ..)| *i == id)
        .ok_or(ApiError::NotFound)?;
    let language = state
        .executor
        .catalogue()
        .resolve(&ours)
        .cloned()
        .ok_or(ApiError::NotFound)?;
    Ok(Json(json!({
        "id": id,
        "name": name,
        "is_archived": false,
        "source_file": language.main_file,
        "compile_cmd": language.compile.as_ref().map(|c| c.join(" ")),
        "run_cmd": language.run.join(" "),
    })))
}

#[utoipa::path(get, path = "/judge0/statuses", tag = "judge0", responses((status = 200, description = "Judge0 CE: the 14 statuses")))]
pub async fn statuses() -> Json<Value> {
    Json(Value::Array(
        dialect::STATUSES
            .iter()
            .map(|(id, description)| json!({ "id": id, "description": description }))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/judge0/about", tag = "judge0", responses((status = 200, description = "Judge0 CE: `{version, …}`")))]
pub async fn about() -> Json<Value> {
    Json(json!({
        "version": VERSION,
        "homepage": "https://judge0.com",
        "source_code": "https://github.com/judge0/judge0",
        "maintainer": "runbox, serving Judge0 CE's API (Judge0 is Herman Zvonimir Došilović's)",
    }))
}

#[utoipa::path(get, path = "/judge0/version", tag = "judge0", responses((status = 200, description = "Judge0 CE: `1.13.1` as text")))]
pub async fn version() -> &'static str {
    VERSION
}

/// Every key of 1.13.1's `/config_info` (the official SDK requires all 39), with runbox's
/// values: what it allows and the limits it checks.
#[utoipa::path(get, path = "/judge0/config_info", tag = "judge0", responses((status = 200, description = "Judge0 CE: the 39 configuration keys")))]
pub async fn config_info(State(state): State<AppState>) -> Json<Value> {
    let pending = state.submissions.max_pending();
    Json(json!({
        "maintenance_mode": false,
        "enable_wait_result": true,
        "enable_compiler_options": state.judge0.compiler_options,
        "allowed_languages_for_compile_options": [],
        "enable_command_line_arguments": true,
        "enable_submission_delete": state.judge0.submission_delete,
        "enable_callbacks": state.judge0.callbacks,
        "callbacks_max_tries": 3,
        "callbacks_timeout": 5.0,
        "enable_additional_files": true,
        "max_queue_size": pending,
        "cpu_time_limit": 5.0,
        "max_cpu_time_limit": 15.0,
        "cpu_extra_time": 1.0,
        "max_cpu_extra_time": 5.0,
        "wall_time_limit": 10.0,
        "max_wall_time_limit": 20.0,
        "memory_limit": 128000,
        "max_memory_limit": 512000,
        "stack_limit": 64000,
        "max_stack_limit": 128000,
        "max_processes_and_or_threads": 60,
        "max_max_processes_and_or_threads": 120,
        "enable_per_process_and_thread_time_limit": false,
        "allow_enable_per_process_and_thread_time_limit": false,
        "enable_per_process_and_thread_memory_limit": false,
        "allow_enable_per_process_and_thread_memory_limit": false,
        "max_file_size": 1024,
        "max_max_file_size": 4096,
        "number_of_runs": 1,
        "max_number_of_runs": 20,
        "redirect_stderr_to_stdout": false,
        "max_extract_size": additional_files::MAX_EXTRACT_BYTES / 1024,
        "enable_batched_submissions": true,
        "max_submission_batch_size": MAX_BATCH,
        "submission_cache_duration": 1.0,
        "use_docs_as_homepage": false,
        "allow_enable_network": false,
        "enable_network": false,
    }))
}

/// One "queue" (runbox's submissions), in `/workers`' shape.
#[utoipa::path(get, path = "/judge0/workers", tag = "judge0", responses((status = 200, description = "Judge0 CE: the queue")))]
pub async fn workers(State(state): State<AppState>) -> Json<Value> {
    let pending = state.submissions.pending();
    Json(json!([{
        "queue": VERSION,
        "size": pending,
        "available": 1,
        "idle": usize::from(pending == 0),
        "working": usize::from(pending > 0),
        "paused": 0,
        "failed": 0,
    }]))
}

/// `GET /judge0/system_info`: Judge0 answers `lscpu`'s table; runbox the two lines of it a
/// client can use to size its load, and nothing more of the host.
#[utoipa::path(get, path = "/judge0/system_info", tag = "judge0", responses((status = 200, description = "Judge0 CE: `{Architecture, CPU(s)}`")))]
pub async fn system_info() -> Json<Value> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    Json(json!({
        "Architecture": std::env::consts::ARCH,
        "CPU(s)": cpus.to_string(),
    }))
}

/// `GET /judge0/isolate`: what Judge0's `isolate --version` stands for here.
#[utoipa::path(get, path = "/judge0/isolate", tag = "judge0", responses((status = 200, description = "Judge0 CE: text")))]
pub async fn isolate() -> String {
    format!(
        "runbox {}: no isolate; every run is in a hardened container of its own (docs/API.md)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `GET /judge0/license`.
#[utoipa::path(get, path = "/judge0/license", tag = "judge0", responses((status = 200, description = "Judge0 CE: text")))]
pub async fn license() -> &'static str {
    concat!(
        "runbox is licensed under the ",
        env!("CARGO_PKG_LICENSE"),
        " license. It serves Judge0 CE's API; Judge0 is GPL-3.0 software by Herman Zvonimir \
         Došilović, and runbox holds none of its code.\n"
    )
}

/// `POST /judge0/authenticate`: reaching here means the key (if keys are on) passed.
#[utoipa::path(post, path = "/judge0/authenticate", tag = "judge0", responses((status = 200, description = "Judge0 CE: the key passed")))]
pub async fn authenticate() -> StatusCode {
    StatusCode::OK
}

/// `POST /judge0/authorize`: runbox has no authorization tokens (Judge0 answers 403 when none
/// is configured).
#[utoipa::path(post, path = "/judge0/authorize", tag = "judge0", responses((status = 403, description = "Judge0 CE: no authorization tokens are configured")))]
pub async fn authorize() -> StatusCode {
    StatusCode::FORBIDDEN
}

/// Where Judge0's routes are served on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Under a prefix of the main listener (`judge0.prefix`, `/judge0` by default).
    Prefix(String),
    /// At the root of a listener of its own (`judge0.listen`), as Judge0 itself serves.
    Root,
}

/// What a request's path means for Judge0's routes, which are routed under [`PREFIX`].
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// Not Judge0's: routed as it is.
    AsIs,
    /// Judge0's, at this path under [`PREFIX`].
    At(String),
    /// Under [`PREFIX`] while Judge0 is mounted elsewhere: not found.
    Elsewhere,
}

/// Where `path` goes under `mount`.
pub fn routed(mount: &Mount, path: &str) -> Routed {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .map(str::to_owned)
    };
    match mount {
        Mount::Root => Routed::At(format!("{PREFIX}{path}")),
        Mount::Prefix(prefix) if prefix == PREFIX => Routed::AsIs,
        Mount::Prefix(prefix) => match under(prefix) {
            Some(rest) => Routed::At(format!("{PREFIX}{rest}")),
            None if under(PREFIX).is_some() => Routed::Elsewhere,
            None => Routed::AsIs,
        },
    }
}

/// Serves Judge0 where it is mounted (the path rewritten to the routes' own), and takes
/// Judge0's key from the `X-Auth-Token` query parameter too, as Judge0 does. Runs before
/// routing.
pub async fn mount(State(mount): State<Mount>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let judge0_path = match routed(&mount, &path) {
        Routed::AsIs if path == PREFIX || path.starts_with("/judge0/") => path,
        Routed::AsIs => return next.run(request).await,
        Routed::Elsewhere => return ApiError::NotFound.into_response(),
        Routed::At(rewritten) => rewritten,
    };
    let query = request.uri().query().map(str::to_owned);
    let mut uri = request.uri().clone().into_parts();
    let path_and_query = match &query {
        Some(query) => format!("{judge0_path}?{query}"),
        None => judge0_path,
    };
    uri.path_and_query = path_and_query.parse().ok();
    if let Ok(uri) = axum::http::Uri::from_parts(uri) {
        *request.uri_mut() = uri;
    }
    let token = query.as_deref().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| name.eq_ignore_ascii_case("x-auth-token"))
            .map(|(_, value)| value.to_owned())
    });
    if let Some(token) = token
        && !request.headers().contains_key("x-auth-token")
        && let Ok(value) = HeaderValue::from_str(&percent_decoded(&token))
    {
        request.headers_mut().insert("x-auth-token", value);
    }
    next.run(request).await
}

/// A query value with its `%XX` escapes and `+` decoded.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match text
                    .get(i + 1..i + 3)
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns runbox's error bodies under `/judge0` into Judge0's: `{"error": message}` with the
/// status kept; a 404 is Rails' `{"status":404,"error":"Not Found"}`, a 401 is empty, and a
/// full queue is `503 {"error":"queue is full"}`.
pub async fn reshape_errors(request: Request, next: Next) -> Response {
    let judge0 = request.uri().path().starts_with("/judge0/") || request.uri().path() == PREFIX;
    let response = next.run(request).await;
    let status = response.status();
    if !judge0 || status.is_success() || status == StatusCode::UNPROCESSABLE_ENTITY {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let body = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Vec::new(),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            parts.status = StatusCode::NOT_FOUND;
            br#"{"status":404,"error":"Not Found"}"#.to_vec()
        }
        StatusCode::SERVICE_UNAVAILABLE
            if parsed
                .as_ref()
                .is_some_and(|v| v["error"]["code"] == "overloaded") =>
        {
            br#"{"error":"queue is full"}"#.to_vec()
        }
        _ => {
            let message = parsed
                .as_ref()
                .and_then(|v| v["error"]["message"].as_str())
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"));
            serde_json::to_vec(&json!({ "error": message })).unwrap_or_default()
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if body.is_empty() {
        parts.headers.remove(header::CONTENT_TYPE);
    } else {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge0_is_routed_where_it_is_mounted() {
        let default = Mount::Prefix(PREFIX.to_owned());
        assert_eq!(routed(&default, "/judge0/submissions"), Routed::AsIs);
        assert_eq!(routed(&default, "/run"), Routed::AsIs);
        let moved = Mount::Prefix("/api/judge".to_owned());
        assert_eq!(
            routed(&moved, "/api/judge/submissions/x"),
            Routed::At("/judge0/submissions/x".to_owned())
        );
        assert_eq!(
            routed(&moved, "/api/judge"),
            Routed::At("/judge0".to_owned())
        );
        assert_eq!(routed(&moved, "/api/judgement"), Routed::AsIs);
        assert_eq!(routed(&moved, "/judge0/submissions"), Routed::Elsewhere);
        assert_eq!(routed(&moved, "/judge0x"), Routed::AsIs);
        assert_eq!(
            routed(&Mount::Root, "/languages/71"),
            Routed::At("/judge0/languages/71".to_owned())
        );
        assert_eq!(routed(&Mount::Root, "/"), Routed::At("/judge0/".to_owned()));
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decoded("a%2Bb+c%zz%4"), "a+b c%zz%4");
        assert_eq!(percent_decoded("%E2%82%AC"), "€");
    }
}
