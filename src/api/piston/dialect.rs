//! Piston v2's words for runbox's: language names and aliases, semver versions and ranges, the
//! `execute` request's fields and checks, and a phase's end as a Piston stage. Pure
//! translation (no I/O): the facts are piston@0a844d0's (`../shared/spec/compat.md` §1).

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::executor::files::SourceFile;
use crate::executor::{JobRequest, PhaseOutcome, RunStatus, signal_number};

/// Piston's name, aliases and `runtime` for each runbox language (its packages' metadata),
/// less the aliases that name a version (`python3.12`, `typescript5`, `ts5`): runbox's
/// versions are its images', and an alias must not promise another.
pub const NAMES: &[(&str, &str, &[&str], Option<&str>)] = &[
    ("python", "python", &["py", "py3", "python3"], None),
    (
        "javascript",
        "javascript",
        &["node-javascript", "node-js", "javascript", "js"],
        Some("node"),
    ),
    ("typescript", "typescript", &["ts", "node-ts", "tsc"], None),
    ("c", "c", &["gcc"], Some("gcc")),
    ("cpp", "c++", &["cpp", "g++"], Some("gcc")),
    ("java", "java", &[], None),
    ("go", "go", &["go", "golang"], None),
    ("rust", "rust", &["rs"], None),
    ("ruby", "ruby", &["ruby3", "rb"], None),
    ("php", "php", &[], None),
    ("bash", "bash", &["sh"], None),
    ("lua", "lua", &[], None),
    ("perl", "perl", &["pl"], None),
    (
        "csharp",
        "csharp",
        &["mono", "mono-csharp", "mono-c#", "mono-cs", "c#", "cs"],
        Some("mono"),
    ),
];

/// Piston's defaults for a stage's limits (`config.js`), in ms.
const DEFAULT_TIMEOUT_MS: u64 = 3000;

/// A runtime as `GET /api/v2/runtimes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Runtime {
    pub language: &'static str,
    pub version: String,
    pub aliases: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<&'static str>,
    /// runbox's id of the language.
    #[serde(skip)]
    pub id: String,
}

/// The runtime of runbox language `id` at image version `label` (`None` for a language
/// Piston has no name for, or whose image is missing).
pub fn runtime(id: &str, label: Option<&str>) -> Option<Runtime> {
    let (_, language, aliases, runtime) = NAMES.iter().find(|(ours, ..)| *ours == id)?;
    Some(Runtime {
        language,
        version: semver_of(label?)?,
        aliases: aliases.to_vec(),
        runtime: *runtime,
        id: id.to_owned(),
    })
}

/// A version label as valid semver `MAJOR.MINOR.PATCH`: its first run of dot-separated
/// numbers, padded (`1.19` → `1.19.0`) or cut (`6.12.0.182` → `6.12.0`).
pub fn semver_of(label: &str) -> Option<String> {
    let start = label.find(|c: char| c.is_ascii_digit())?;
    let numbers: Vec<&str> = label[start..]
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()?
        .split('.')
        .filter(|part| !part.is_empty())
        .take(3)
        .collect();
    let mut parts: Vec<u64> = numbers
        .iter()
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    parts.resize(3, 0);
    Some(format!("{}.{}.{}", parts[0], parts[1], parts[2]))
}

/// Whether `version` satisfies the npm-style `range` Piston's clients send: `*`, `x`, `3`,
/// `3.x`, `3.12`, `3.12.0` (exact), `>=3.10 <4`, `^3.9`, `~3.12`, alternatives with `||`.
pub fn satisfies(version: &str, range: &str) -> bool {
    let Ok(version) = semver::Version::parse(version) else {
        return false;
    };
    range
        .split("||")
        .any(|alternative| match npm_range(alternative) {
            Some(req) => req.matches(&version),
            None => false,
        })
}

/// One npm comparator set as a `semver` requirement: comparators are separated by spaces
/// (commas there), and a bare version is exact or a wildcard, never a caret.
fn npm_range(range: &str) -> Option<semver::VersionReq> {
    let range = range.trim();
    if range.is_empty() || range == "*" || range.eq_ignore_ascii_case("x") {
        return Some(semver::VersionReq::STAR);
    }
    let comparators: Vec<String> = range
        .split_whitespace()
        .map(|c| {
            if c.starts_with(|ch: char| ch.is_ascii_digit()) {
                format!("={c}")
            } else {
                c.to_owned()
            }
        })
        .collect();
    semver::VersionReq::parse(&comparators.join(", ")).ok()
}

/// The newest runtime whose name or alias is `language` and whose version satisfies
/// `version`.
pub fn resolve<'a>(runtimes: &'a [Runtime], language: &str, version: &str) -> Option<&'a Runtime> {
    runtimes
        .iter()
        .filter(|rt| rt.language == language || rt.aliases.contains(&language))
        .filter(|rt| satisfies(&rt.version, version))
        .max_by(|a, b| {
            let parse = |v: &str| semver::Version::parse(v).ok();
            parse(&a.version).cmp(&parse(&b.version))
        })
}

/// runbox's bounds that Piston's stage limits are checked against (its "configured limits").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub run_timeout_ms: u64,
    pub compile_timeout_ms: u64,
    pub run_memory_bytes: u64,
    pub compile_memory_bytes: u64,
}

/// What a valid `execute` request asks for.
#[derive(Debug)]
pub struct Execute {
    pub language: String,
    pub version: String,
    pub job: JobRequest,
}

/// Reads an `execute` body (or a WebSocket `init`) with Piston's checks and messages; the
/// runtime is resolved by the caller. `Err` is Piston's `message`.
pub fn read_execute(body: &Value) -> Result<Execute, String> {
    let language = match body.get("language") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("language is required as a string".to_owned()),
    };
    let version = match body.get("version") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("version is required as a string".to_owned()),
    };
    let Some(Value::Array(files)) = body.get("files") else {
        return Err("files is required as an array".to_owned());
    };
    let mut read = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let Some(Value::String(content)) = file.get("content") else {
            return Err(format!("files[{i}].content is required as a string"));
        };
        let name = match file.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => format!("file{i}.code"),
        };
        let encoding = file.get("encoding").and_then(Value::as_str);
        let (bytes, utf8) = match encoding {
            Some("base64") => (
                base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .map_err(|_| format!("files[{i}].content is not valid base64"))?,
                false,
            ),
            Some("hex") => (
                decode_hex(content)
                    .ok_or_else(|| format!("files[{i}].content is not valid hex"))?,
                false,
            ),
            // Piston takes anything else as utf8.
            _ => (content.clone().into_bytes(), true),
        };
        read.push((name, bytes, utf8));
    }
    let Some(main) = read.iter().position(|(_, _, utf8)| *utf8) else {
        return Err("files must include at least one utf8 encoded file".to_owned());
    };
    let (_, code, _) = read.remove(main);
    let code = String::from_utf8(code).map_err(|_| "the main file is not UTF-8".to_owned())?;
    let mut stdin = match body.get("stdin") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("stdin must be a string".to_owned()),
    };
    // Piston ends stdin with a newline when it has none.
    if !stdin.ends_with('\n') {
        stdin.push('\n');
    }
    let args = match body.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(args)) => args
            .iter()
            .map(|a| match a {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(_) => return Err("args must be an array".to_owned()),
    };
    Ok(Execute {
        language,
        version,
        job: JobRequest {
            language: None,
            code: Some(code),
            files: read
                .into_iter()
                .map(|(name, content, _)| SourceFile { name, content })
                .collect(),
            input: Some(stdin),
            args,
            timeout_ms: None,
            memory_mb: None,
            tests: None,
            ..Default::default()
        },
    })
}

/// Applies the stage limits of `body` to `job` after Piston's checks against `limits`: a
/// value may be absent or falsy (the default), `-1` for a memory limit (the default), else a
/// number at most the limit. The run gets Piston's two limits: its wall clock (`run_timeout`)
/// and its CPU time (`run_cpu_time`), each 3 s by default. The compile gets its wall clock,
/// the tighter of `compile_timeout` and `compile_cpu_time` (a compiler on one CPU cannot use
/// more CPU than wall time), and its memory; absent, the language's own.
pub fn apply_limits(body: &Value, limits: &Limits, job: &mut JobRequest) -> Result<(), String> {
    let check = |name: &str, limit: u64| -> Result<Option<u64>, String> {
        let value = match body.get(name) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            Some(_) => return Err(format!("If specified, {name} must be a number")),
        };
        if value == 0.0 {
            return Ok(None);
        }
        if value < 0.0 {
            // Piston's memory defaults are -1, which skips its checks.
            return if name.ends_with("memory_limit") {
                Ok(None)
            } else {
                Err(format!("{name} must be non-negative"))
            };
        }
        if value > limit as f64 {
            return Err(format!(
                "{name} cannot exceed the configured limit of {limit}"
            ));
        }
        Ok(Some(value.ceil() as u64))
    };
    let compile_wall = check("compile_timeout", limits.compile_timeout_ms)?;
    let compile_cpu = check("compile_cpu_time", limits.compile_timeout_ms)?;
    let compile_memory = check("compile_memory_limit", limits.compile_memory_bytes)?;
    let wall = check("run_timeout", limits.run_timeout_ms)?;
    let cpu = check("run_cpu_time", limits.run_timeout_ms)?;
    let memory = check("run_memory_limit", limits.run_memory_bytes)?;
    let default = DEFAULT_TIMEOUT_MS.min(limits.run_timeout_ms);
    job.timeout_ms = Some(wall.unwrap_or(default));
    job.cpu_time_ms = Some(cpu.unwrap_or(default));
    job.compile_timeout_ms = match (compile_wall, compile_cpu) {
        (Some(w), Some(c)) => Some(w.min(c)),
        (w, c) => w.or(c),
    };
    // runbox's smallest sandbox is 16 MB.
    let mb = |bytes: u64| bytes.div_ceil(1024 * 1024).max(16);
    job.memory_mb = memory.map(mb);
    job.compile_memory_mb = compile_memory.map(mb);
    Ok(())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// isolate's words for a time limit: "(wall clock)" unless the CPU-time limit ended it.
pub fn name_cpu_limit(stage: &mut Stage, cpu_limit: Option<Duration>) {
    let spent = stage
        .cpu_time
        .zip(cpu_limit)
        .is_some_and(|(used, limit)| used as u128 >= limit.as_millis());
    if stage.status == Some("TO") && spent {
        stage.message = Some("Time limit exceeded".to_owned());
    }
}

/// A stage (compile or run) as Piston reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub stdout: String,
    pub stderr: String,
    /// stdout and stderr interleaved in the order they arrived.
    pub output: String,
    pub code: Option<i64>,
    pub signal: Option<&'static str>,
    pub message: Option<String>,
    pub status: Option<&'static str>,
    pub cpu_time: Option<u64>,
    pub wall_time: u64,
    pub memory: Option<u64>,
}

/// A phase's end as a Piston stage. `output` is the interleaved text the caller collected;
/// CPU time and memory are the job's (runbox measures them for the run phase).
pub fn stage(
    phase: &PhaseOutcome,
    output: String,
    cpu_time: Option<Duration>,
    memory_kb: Option<u64>,
) -> Stage {
    let stdout = phase.output.stdout_text();
    let stderr = phase.output.stderr_text();
    let (status, message, signal, code) = match phase.status {
        RunStatus::Success => (None, None, None, phase.exit_code),
        RunStatus::RuntimeError | RunStatus::CompileError => {
            match (phase.signal, phase.exit_code) {
                (Some(signal), _) => (
                    Some("SG"),
                    Some(format!(
                        "Caught fatal signal {}",
                        signal_number(signal).unwrap_or(0)
                    )),
                    Some(signal),
                    None,
                ),
                (None, code) => (
                    Some("RE"),
                    Some(format!("Exited with error status {}", code.unwrap_or(1))),
                    None,
                    code,
                ),
            }
        }
        RunStatus::Timeout => (
            Some("TO"),
            Some("Time limit exceeded (wall clock)".to_owned()),
            Some("SIGKILL"),
            None,
        ),
        // isolate has no memory status: the cgroup's kill is a fatal SIGKILL.
        RunStatus::MemoryLimitExceeded => (
            Some("SG"),
            Some("Caught fatal signal 9".to_owned()),
            Some("SIGKILL"),
            None,
        ),
        RunStatus::OutputLimitExceeded if stderr.len() > stdout.len() => (
            Some("EL"),
            Some("stderr length exceeded".to_owned()),
            Some("SIGKILL"),
            None,
        ),
        RunStatus::OutputLimitExceeded => (
            Some("OL"),
            Some("stdout length exceeded".to_owned()),
            Some("SIGKILL"),
            None,
        ),
    };
    Stage {
        stdout,
        stderr,
        output,
        code,
        signal,
        message,
        status,
        cpu_time: cpu_time.map(|t| t.as_millis() as u64),
        wall_time: phase.duration.as_millis() as u64,
        memory: memory_kb.map(|kb| kb * 1024),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runtimes() -> Vec<Runtime> {
        [
            ("python", "3.11.2"),
            ("cpp", "12.2.0"),
            ("csharp", "6.8.0.105"),
            ("go", "1.19"),
        ]
        .into_iter()
        .filter_map(|(id, v)| runtime(id, Some(v)))
        .collect()
    }

    #[test]
    fn versions_are_semver_and_ranges_are_npm_ranges() {
        assert_eq!(semver_of("6.8.0.105").as_deref(), Some("6.8.0"));
        assert_eq!(semver_of("go1.19").as_deref(), Some("1.19.0"));
        assert_eq!(semver_of("Python 3.11.2\n").as_deref(), Some("3.11.2"));
        assert_eq!(semver_of("unknown"), None);
        for yes in [
            "*",
            "x",
            "3",
            "3.x",
            "3.11",
            "3.11.2",
            ">=3.10 <4",
            "^3.9",
            "~3.11",
            "2 || 3",
        ] {
            assert!(satisfies("3.11.2", yes), "{yes}");
        }
        for no in ["2", "3.12", "3.11.3", ">=3.12", "~3.10", "<3", "junk"] {
            assert!(!satisfies("3.11.2", no), "{no}");
        }
    }

    #[test]
    fn names_and_aliases_resolve_to_the_canonical_runtime() {
        let all = runtimes();
        assert_eq!(resolve(&all, "c++", "*").unwrap().id, "cpp");
        assert_eq!(resolve(&all, "cpp", "12").unwrap().language, "c++");
        assert_eq!(resolve(&all, "c#", "6.8.0").unwrap().runtime, Some("mono"));
        assert_eq!(resolve(&all, "py3", "3.x").unwrap().version, "3.11.2");
        assert!(resolve(&all, "python", "3.12").is_none());
        // Matched exactly, as Piston does.
        assert!(resolve(&all, "Python", "*").is_none());
        assert!(resolve(&all, "golang", "1.19.0").is_some());
    }

    #[test]
    fn execute_bodies_get_pistons_checks_and_messages() {
        let err = |body: Value| read_execute(&body).unwrap_err();
        assert_eq!(err(json!({})), "language is required as a string");
        assert_eq!(
            err(json!({"language": "py", "version": ""})),
            "version is required as a string"
        );
        assert_eq!(
            err(json!({"language": "py", "version": "*"})),
            "files is required as an array"
        );
        assert_eq!(
            err(json!({"language": "py", "version": "*", "files": [{"name": "a"}]})),
            "files[0].content is required as a string"
        );
        assert_eq!(
            err(json!({"language": "py", "version": "*",
                "files": [{"content": "aGk=", "encoding": "base64"}]})),
            "files must include at least one utf8 encoded file"
        );
        let read = read_execute(&json!({"language": "py", "version": "*", "stdin": "x",
            "args": ["1", 2],
            "files": [{"content": "6869", "encoding": "hex", "name": "data.bin"},
                      {"content": "print(1)"}, {"content": "second", "encoding": "utf16"}]}))
        .unwrap();
        assert_eq!(read.job.code.as_deref(), Some("print(1)"));
        assert_eq!(read.job.input.as_deref(), Some("x\n"));
        assert_eq!(read.job.args, ["1", "2"]);
        let names: Vec<_> = read.job.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["data.bin", "file2.code"]);
        assert_eq!(read.job.files[0].content, b"hi");
    }

    #[test]
    fn stage_limits_are_checked_like_pistons() {
        let limits = Limits {
            run_timeout_ms: 10_000,
            compile_timeout_ms: 30_000,
            run_memory_bytes: 512 * 1024 * 1024,
            compile_memory_bytes: 1024 * 1024 * 1024,
        };
        let apply = |body: Value| {
            let mut job = read_execute(&json!({"language": "py", "version": "*",
                "files": [{"content": ""}]}))
            .unwrap()
            .job;
            apply_limits(&body, &limits, &mut job).map(|()| {
                (
                    job.timeout_ms,
                    job.cpu_time_ms,
                    job.memory_mb,
                    job.compile_timeout_ms,
                    job.compile_memory_mb,
                )
            })
        };
        // What the clients send on every call.
        assert_eq!(
            apply(json!({"compile_timeout": 10000, "run_timeout": 3000,
                "compile_memory_limit": -1, "run_memory_limit": -1})),
            Ok((Some(3000), Some(3000), None, Some(10000), None))
        );
        assert_eq!(
            apply(json!({})),
            Ok((Some(3000), Some(3000), None, None, None))
        );
        assert_eq!(
            apply(json!({"run_timeout": 5000, "run_cpu_time": 2000})),
            Ok((Some(5000), Some(2000), None, None, None))
        );
        assert_eq!(
            apply(
                json!({"run_memory_limit": 100_000_000, "compile_timeout": 9000,
                "compile_cpu_time": 4000, "compile_memory_limit": 300_000_000})
            ),
            Ok((Some(3000), Some(3000), Some(96), Some(4000), Some(287)))
        );
        assert_eq!(
            apply(json!({"run_timeout": "3000"})),
            Err("If specified, run_timeout must be a number".to_owned())
        );
        assert_eq!(
            apply(json!({"run_timeout": 20000})),
            Err("run_timeout cannot exceed the configured limit of 10000".to_owned())
        );
        assert_eq!(
            apply(json!({"run_cpu_time": -5})),
            Err("run_cpu_time must be non-negative".to_owned())
        );
    }
}
