//! A run request checked against the catalogue and its limits: everything after this point may
//! assume the job is well-formed. Nothing here touches the engine, so a rejected request
//! creates no container.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::files::{self, SourceFile};
use super::outputs::OutputPatterns;
use crate::languages::{Catalogue, Language};

/// Most command-line arguments a program may get.
pub const MAX_ARGS: usize = 64;
/// Longest single argument, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;
/// Most inputs one compile may be run against.
pub const MAX_TESTS: usize = 32;

/// One input to run the compiled program against, and what it should print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestCase {
    pub input: Bytes,
    /// Compared with the program's stdout, both trimmed of surrounding whitespace.
    pub expected_output: Option<String>,
}

/// A run request as the domain sees it (the HTTP layer maps its wire type onto this).
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    pub language: Option<String>,
    pub code: Option<String>,
    pub files: Vec<SourceFile>,
    pub input: Option<String>,
    pub args: Vec<String>,
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    /// Run against each of these instead of `input` (one compile, a run per input).
    pub tests: Option<Vec<TestCase>>,
    /// CPU time the program may use, all its processes together (the wall clock is
    /// `timeout_ms`); `None`: only the wall clock.
    pub cpu_time_ms: Option<u64>,
    /// Appended to the language's compile command (compiled languages only).
    pub compile_args: Vec<String>,
    /// The compile's wall clock and memory, at most the language's own (its own by default).
    pub compile_timeout_ms: Option<u64>,
    pub compile_memory_mb: Option<u64>,
    /// The program's stderr is collected as stdout, in the order written.
    pub merge_stderr: bool,
    /// Glob patterns of the files to return after the run (see `outputs`).
    pub outputs: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A missing field, a value out of range, an unsafe file name: the text says which.
    #[error("{0}")]
    Invalid(String),
    #[error("unknown language '{0}'; see GET /languages")]
    UnknownLanguage(String),
}

/// A validated job, ready to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub language: Arc<Language>,
    /// Every file to place in the work dir, the entry point included.
    pub files: Vec<SourceFile>,
    /// The file the run (and `{main}` in commands) refers to.
    pub entry: String,
    pub input: Bytes,
    pub args: Vec<String>,
    pub timeout: Duration,
    pub memory_mb: u64,
    /// Inputs to run against, each in a run of its own with the limits above; empty: one run
    /// with `input`.
    pub tests: Vec<TestCase>,
    /// CPU time of the program's processes together past which it is ended as a timeout.
    pub cpu_limit: Option<Duration>,
    /// The compile command's extra arguments, after the language's own.
    pub compile_args: Vec<String>,
    pub compile_timeout: Duration,
    pub compile_memory_mb: u64,
    pub merge_stderr: bool,
    /// The files to return after each run; `None`: none asked for.
    pub outputs: Option<OutputPatterns>,
}

impl Job {
    pub fn validate(catalogue: &Catalogue, request: JobRequest) -> Result<Job, JobError> {
        let invalid = |m: String| Err(JobError::Invalid(m));
        let Some(name) = request.language else {
            return invalid("missing field `language`".to_owned());
        };
        let language = catalogue
            .resolve(&name)
            .cloned()
            .ok_or_else(|| JobError::UnknownLanguage(printable(&name)))?;

        let mut files = Vec::with_capacity(request.files.len() + 1);
        if let Some(code) = request.code {
            files.push(SourceFile {
                name: language.main_file.clone(),
                content: code.into_bytes(),
            });
        } else if request.files.is_empty() {
            return invalid("missing field `code` (or a non-empty `files`)".to_owned());
        }
        files.extend(request.files);
        files::validate_set(&files).map_err(JobError::Invalid)?;
        let entry = files[0].name.clone();

        check_args("args", &request.args).map_err(JobError::Invalid)?;
        check_args("compile_args", &request.compile_args).map_err(JobError::Invalid)?;
        if !request.compile_args.is_empty() && !language.compile_takes_args {
            return invalid(format!("{} takes no compiler options", language.id));
        }

        let timeout_ms = request.timeout_ms.unwrap_or(language.timeout_ms);
        if timeout_ms == 0 || timeout_ms > language.max_timeout_ms {
            return invalid(format!(
                "`timeout_ms` must be between 1 and {} for {}",
                language.max_timeout_ms, language.id
            ));
        }
        let memory_mb = request.memory_mb.unwrap_or(language.memory_mb);
        const MIN_MEMORY_MB: u64 = 16;
        if memory_mb < MIN_MEMORY_MB || memory_mb > language.max_memory_mb {
            return invalid(format!(
                "`memory_mb` must be between {MIN_MEMORY_MB} and {} for {}",
                language.max_memory_mb, language.id
            ));
        }

        let cpu_limit = match request.cpu_time_ms {
            None => None,
            Some(ms) if ms == 0 || ms > language.max_timeout_ms => {
                return invalid(format!(
                    "`cpu_time_ms` must be between 1 and {} for {}",
                    language.max_timeout_ms, language.id
                ));
            }
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        let most_compile_ms = language.compile_timeout().as_millis() as u64;
        let compile_timeout_ms = request.compile_timeout_ms.unwrap_or(most_compile_ms);
        if compile_timeout_ms == 0 || compile_timeout_ms > most_compile_ms {
            return invalid(format!(
                "`compile_timeout_ms` must be between 1 and {most_compile_ms} for {}",
                language.id
            ));
        }
        let most_compile_mb = language.compile_memory_mb();
        let compile_memory_mb = request.compile_memory_mb.unwrap_or(most_compile_mb);
        if compile_memory_mb < MIN_MEMORY_MB || compile_memory_mb > most_compile_mb {
            return invalid(format!(
                "`compile_memory_mb` must be between {MIN_MEMORY_MB} and {most_compile_mb} for {}",
                language.id
            ));
        }

        let tests = match request.tests {
            None => Vec::new(),
            Some(tests) if tests.is_empty() || tests.len() > MAX_TESTS => {
                return invalid(format!("`tests` must hold 1 to {MAX_TESTS} inputs"));
            }
            Some(_) if request.input.is_some() => {
                return invalid(
                    "give `input` or `tests`, not both (each test has its own `input`)".to_owned(),
                );
            }
            Some(tests) => tests,
        };

        let outputs = request
            .outputs
            .as_deref()
            .map(OutputPatterns::parse)
            .transpose()
            .map_err(JobError::Invalid)?;

        Ok(Job {
            id: uuid::Uuid::new_v4().to_string(),
            language,
            files,
            entry,
            input: Bytes::from(request.input.unwrap_or_default()),
            args: request.args,
            timeout: Duration::from_millis(timeout_ms),
            memory_mb,
            tests,
            cpu_limit,
            compile_args: request.compile_args,
            compile_timeout: Duration::from_millis(compile_timeout_ms),
            compile_memory_mb,
            merge_stderr: request.merge_stderr,
            outputs,
        })
    }

    /// Whether the job can be run live (streamed, interactive): a batch of `tests` cannot.
    pub fn check_live(&self) -> Result<(), JobError> {
        if self.tests.is_empty() {
            Ok(())
        } else {
            Err(JobError::Invalid(
                "`tests` runs are answered at the end: send them without streaming".to_owned(),
            ))
        }
    }

    /// The same job again, under an id of its own (each run's sandbox is named by its job).
    pub fn again(&self) -> Job {
        Job {
            id: uuid::Uuid::new_v4().to_string(),
            ..self.clone()
        }
    }

    /// The program's argv: the language's run command, then the job's arguments. With
    /// `merge_stderr` the program starts with its stderr on its stdout (`sh`'s `2>&1`, then
    /// `exec`), so the two keep the order they were written in: the engine carries two
    /// streams apart, and a line of one can overtake a line of the other.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        if self.merge_stderr {
            argv.extend(["sh", "-c", "exec \"$@\" 2>&1", "sh"].map(String::from));
        }
        argv.extend(self.command(&self.language.run));
        argv.extend(self.args.iter().cloned());
        argv
    }

    /// A configured command with `{main}` replaced by the entry file and `{main_stem}` by the
    /// entry file without its extension (`pkg/app.ts` -> `pkg/app`).
    pub fn command(&self, template: &[String]) -> Vec<String> {
        let stem = entry_stem(&self.entry);
        template
            .iter()
            .map(|part| {
                part.replace("{main_stem}", stem)
                    .replace("{main}", &self.entry)
            })
            .collect()
    }
}

/// Arguments within [`MAX_ARGS`] and [`MAX_ARG_BYTES`], without NUL bytes (the engine accepts
/// a NUL at create time and fails the exec later).
fn check_args(field: &str, args: &[String]) -> Result<(), String> {
    if args.len() > MAX_ARGS {
        return Err(format!("at most {MAX_ARGS} `{field}` are accepted"));
    }
    for arg in args {
        if arg.contains('\0') {
            return Err(format!("`{field}` must not contain NUL bytes"));
        }
        if arg.len() > MAX_ARG_BYTES {
            return Err(format!(
                "each of `{field}` must be at most {MAX_ARG_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

/// `name` without the extension of its last segment; a dot-file keeps its name.
fn entry_stem(name: &str) -> &str {
    let file_start = name.rfind('/').map_or(0, |i| i + 1);
    match name[file_start..].rfind('.') {
        Some(dot) if dot > 0 => &name[..file_start + dot],
        _ => name,
    }
}

/// A client-supplied name made safe to echo in a message.
fn printable(name: &str) -> String {
    name.chars()
        .take(64)
        .collect::<String>()
        .escape_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn catalogue() -> Catalogue {
        Catalogue::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/languages.toml"))
            .unwrap()
    }

    fn request(language: &str, code: &str) -> JobRequest {
        JobRequest {
            language: Some(language.to_owned()),
            code: Some(code.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn tests_are_bounded_and_exclude_input() {
        let with = |tests: Vec<TestCase>, input: Option<&str>| {
            let mut r = request("c", "int main(void){return 0;}");
            r.tests = Some(tests);
            r.input = input.map(str::to_owned);
            Job::validate(&catalogue(), r)
        };
        let one = TestCase::default();
        assert!(with(vec![], None).is_err());
        assert!(with(vec![one.clone(); MAX_TESTS + 1], None).is_err());
        assert!(with(vec![one.clone()], Some("x")).is_err());
        let job = with(vec![one.clone(); MAX_TESTS], None).unwrap();
        assert_eq!(job.tests.len(), MAX_TESTS);
        assert!(job.check_live().is_err());
    }

    #[test]
    fn defaults_come_from_the_language() {
        let job = Job::validate(&catalogue(), request("py", "print(1)")).unwrap();
        assert_eq!(job.language.id, "python");
        assert_eq!(job.entry, "main.py");
        assert_eq!(job.timeout, Duration::from_millis(job.language.timeout_ms));
        assert_eq!(job.memory_mb, job.language.memory_mb);
        assert_eq!(job.command(&job.language.run), ["python3", "main.py"]);
        assert_eq!(job.cpu_limit, None);
        assert_eq!(job.compile_timeout, job.language.compile_timeout());
        assert_eq!(job.compile_memory_mb, job.language.compile_memory_mb());
    }

    #[test]
    fn merged_streams_start_the_program_with_stderr_on_stdout() {
        let mut r = request("python", "print(1)");
        r.args = vec!["a b".into()];
        r.merge_stderr = true;
        let job = Job::validate(&catalogue(), r).unwrap();
        assert_eq!(
            job.argv(),
            [
                "sh",
                "-c",
                "exec \"$@\" 2>&1",
                "sh",
                "python3",
                "main.py",
                "a b"
            ]
        );
    }

    #[test]
    fn main_stem_drops_only_the_last_extension() {
        assert_eq!(entry_stem("main.ts"), "main");
        assert_eq!(entry_stem("pkg/app.test.ts"), "pkg/app.test");
        assert_eq!(entry_stem("v1.2/prog"), "v1.2/prog");
        assert_eq!(entry_stem(".profile"), ".profile");
        let job = Job::validate(&catalogue(), request("ts", "let x = 1")).unwrap();
        assert_eq!(job.command(&job.language.run), ["node", "main.js"]);
    }

    #[test]
    fn first_file_is_the_entry_without_code() {
        let mut r = request("python", "");
        r.code = None;
        r.files = vec![
            SourceFile {
                name: "app.py".into(),
                content: b"import util".to_vec(),
            },
            SourceFile {
                name: "util.py".into(),
                content: Vec::new(),
            },
        ];
        let job = Job::validate(&catalogue(), r).unwrap();
        assert_eq!(job.entry, "app.py");
        assert_eq!(job.command(&job.language.run), ["python3", "app.py"]);
    }

    #[test]
    fn rejections_say_why() {
        let c = catalogue();
        let cases: Vec<(JobRequest, &str)> = vec![
            (JobRequest::default(), "language"),
            (
                JobRequest {
                    language: Some("python".into()),
                    ..Default::default()
                },
                "code",
            ),
            (
                JobRequest {
                    args: vec!["a\0b".into()],
                    ..request("python", "")
                },
                "NUL",
            ),
            (
                JobRequest {
                    timeout_ms: Some(10_000_000),
                    ..request("python", "")
                },
                "timeout_ms",
            ),
            (
                JobRequest {
                    timeout_ms: Some(0),
                    ..request("python", "")
                },
                "timeout_ms",
            ),
            (
                JobRequest {
                    memory_mb: Some(1),
                    ..request("python", "")
                },
                "memory_mb",
            ),
            (
                JobRequest {
                    files: vec![SourceFile {
                        name: "../x".into(),
                        content: vec![],
                    }],
                    ..request("python", "")
                },
                "..",
            ),
            (
                JobRequest {
                    files: vec![SourceFile {
                        name: "main.py".into(),
                        content: vec![],
                    }],
                    ..request("python", "")
                },
                "twice",
            ),
            (
                JobRequest {
                    cpu_time_ms: Some(0),
                    ..request("python", "")
                },
                "cpu_time_ms",
            ),
            (
                JobRequest {
                    compile_args: vec!["-O2".into()],
                    ..request("python", "")
                },
                "takes no compiler options",
            ),
            (
                JobRequest {
                    compile_args: vec!["-D\0".into()],
                    ..request("c", "")
                },
                "NUL",
            ),
            (
                JobRequest {
                    compile_timeout_ms: Some(10_000_000),
                    ..request("c", "")
                },
                "compile_timeout_ms",
            ),
            (
                JobRequest {
                    compile_memory_mb: Some(1),
                    ..request("c", "")
                },
                "compile_memory_mb",
            ),
        ];
        for (r, fragment) in cases {
            match Job::validate(&c, r) {
                Err(JobError::Invalid(m)) => assert!(m.contains(fragment), "{fragment}: {m}"),
                other => panic!("{fragment}: {other:?}"),
            }
        }
        assert_eq!(
            Job::validate(&c, request("cobol", "")).unwrap_err(),
            JobError::UnknownLanguage("cobol".into())
        );
    }
}
