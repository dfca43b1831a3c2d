//! Judge0 CE 1.13.1's words for runbox's: language ids, the 14 statuses, a run's end as a
//! status, `expected_output` judging, Ruby's base64, Rails' times and the `fields` rule. Pure
//! translation (no I/O): the facts are judge0@v1.13.1's (`../shared/spec/compat.md` §2).

use base64::Engine as _;

use crate::executor::{PhaseOutcome, RunStatus, signal_number};

/// Judge0's ids for each runbox language: the CE 1.13.1 family ids, the SDK's 1.14.0 ids, and
/// the hosted instance's, each with Judge0's label (the version part is runbox's own).
/// Ids that name another language (Python 2.7 is 70, JavaFX 96) are not mapped.
pub const LANGUAGE_IDS: &[(&str, &str, &[u32])] = &[
    ("python", "Python", &[71, 92, 100, 109, 113]),
    ("javascript", "JavaScript (Node.js", &[63, 93, 97, 102]),
    ("typescript", "TypeScript", &[74, 94, 101]),
    ("c", "C (GCC", &[48, 49, 50, 103]),
    ("cpp", "C++ (GCC", &[52, 53, 54, 105]),
    ("java", "Java (OpenJDK", &[62, 91]),
    ("go", "Go", &[60, 95, 106, 107]),
    ("rust", "Rust", &[73, 108]),
    ("ruby", "Ruby", &[72]),
    ("php", "PHP", &[68, 98]),
    ("bash", "Bash", &[46]),
    ("lua", "Lua", &[64]),
    ("perl", "Perl", &[85]),
    ("csharp", "C# (Mono", &[51]),
];

/// runbox's language for Judge0 id `id`.
pub fn language_of(id: u32) -> Option<&'static str> {
    LANGUAGE_IDS
        .iter()
        .find(|(_, _, ids)| ids.contains(&id))
        .map(|(ours, ..)| *ours)
}

/// Judge0's name for a language at runbox's `version`: `Python (3.11.2)`,
/// `C++ (GCC 12.2.0)`, `JavaScript (Node.js 18.20.4)`.
pub fn language_name(label: &str, version: &str) -> String {
    if label.contains('(') {
        format!("{label} {version})")
    } else {
        format!("{label} ({version})")
    }
}

/// The 14 statuses: id and description.
pub const STATUSES: [(u8, &str); 14] = [
    (1, "In Queue"),
    (2, "Processing"),
    (3, "Accepted"),
    (4, "Wrong Answer"),
    (5, "Time Limit Exceeded"),
    (6, "Compilation Error"),
    (7, "Runtime Error (SIGSEGV)"),
    (8, "Runtime Error (SIGXFSZ)"),
    (9, "Runtime Error (SIGFPE)"),
    (10, "Runtime Error (SIGABRT)"),
    (11, "Runtime Error (NZEC)"),
    (12, "Runtime Error (Other)"),
    (13, "Internal Error"),
    (14, "Exec Format Error"),
];

pub const IN_QUEUE: u8 = 1;
pub const PROCESSING: u8 = 2;
pub const TIME_LIMIT_EXCEEDED: u8 = 5;
pub const INTERNAL_ERROR: u8 = 13;

pub fn status_description(id: u8) -> &'static str {
    STATUSES
        .iter()
        .find(|(i, _)| *i == id)
        .map_or("Internal Error", |(_, d)| d)
}

/// A finished run as Judge0 reports it: the status id, `exit_code` and `exit_signal`.
/// `expected` is the submission's `expected_output`.
pub fn judged(run: &PhaseOutcome, expected: Option<&str>) -> (u8, Option<i64>, Option<i64>) {
    let signal = run.signal.and_then(signal_number);
    match run.status {
        RunStatus::Success => {
            let stdout = run.output.stdout_text();
            let passed = expected.is_none_or(|e| same_output(&stdout, e));
            (if passed { 3 } else { 4 }, Some(0), None)
        }
        RunStatus::Timeout => (5, Some(0), signal.or(Some(9))),
        RunStatus::CompileError => (6, None, None),
        // Judge0 has no memory or output status: the memory cgroup's kill is signal 9
        // ("Other"), output past the file-size limit is SIGXFSZ.
        RunStatus::MemoryLimitExceeded => (12, Some(0), Some(9)),
        RunStatus::OutputLimitExceeded => (8, Some(0), Some(25)),
        RunStatus::RuntimeError => match signal {
            Some(11) => (7, Some(0), signal),
            Some(25) => (8, Some(0), signal),
            Some(8) => (9, Some(0), signal),
            Some(6) => (10, Some(0), signal),
            Some(_) => (12, Some(0), signal),
            None => (11, run.exit_code, None),
        },
    }
}

/// A command line as Judge0's shell splits it, after Judge0 has stripped `$&;<>|` and the
/// backtick (so no expansion is left): words apart at whitespace, `'…'` literal, `"…"` with
/// `\` escaping `"` and `\`, and `\` outside quotes taking the next character as it is. An
/// unclosed quote runs to the end.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().filter(|c| !"$&;<>|`".contains(*c));
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                current.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(next @ ('"' | '\\')) => current.push(next),
                            Some(next) => {
                                current.push('\\');
                                current.push(next);
                            }
                            None => current.push('\\'),
                        },
                        c => current.push(c),
                    }
                }
            }
            '\\' => {
                let current = word.get_or_insert_with(String::new);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Judge0's comparison: trailing whitespace of every line and of the whole is ignored;
/// leading whitespace counts.
pub fn same_output(actual: &str, expected: &str) -> bool {
    fn strip(text: &str) -> String {
        text.lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_owned()
    }
    strip(actual) == strip(expected)
}

/// Ruby's `Base64.encode64`: a newline after every 60 characters and at the end (the form
/// Judge0's answers carry). Empty input is `""`.
pub fn encode64(bytes: &[u8]) -> String {
    let plain = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut wrapped = String::with_capacity(plain.len() + plain.len() / 60 + 1);
    for chunk in plain.as_bytes().chunks(60) {
        wrapped.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        wrapped.push('\n');
    }
    wrapped
}

/// Ruby's `Base64.decode64`, which never fails: characters outside the alphabet are skipped,
/// and what does not make a whole byte is dropped.
pub fn decode64(text: &str) -> Vec<u8> {
    let alphabet: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '+' || *c == '/')
        .collect();
    let whole = alphabet.len() - alphabet.len() % 4;
    let mut bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&alphabet[..whole])
        .unwrap_or_default();
    let rest = &alphabet[whole..];
    if rest.len() >= 2
        && let Ok(tail) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(rest)
    {
        bytes.extend(tail);
    }
    bytes
}

/// Seconds as Judge0 writes `time` and `wall_time`: a string, three decimals (`"0.002"`).
pub fn seconds(duration: std::time::Duration) -> String {
    format!("{:.3}", duration.as_secs_f64())
}

/// A time as Rails writes it: UTC, milliseconds, `Z` (`2024-04-03T05:40:51.306Z`).
pub fn timestamp(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 as (year, month, day), proleptic Gregorian (Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Every attribute a submission's answer may carry (1.13.1's serializer: its columns less
/// `id` and the bookkeeping ones, plus `status` and `language`): what `fields` may name, and
/// all that `*` gives. Nothing else may appear: the official SDK sets every attribute it is
/// sent on a model that refuses unknown ones (it fails on e.g. `queue_host`).
pub const ATTRIBUTES: [&str; 35] = [
    "source_code",
    "language_id",
    "language",
    "stdin",
    "expected_output",
    "stdout",
    "status_id",
    "status",
    "created_at",
    "finished_at",
    "time",
    "memory",
    "stderr",
    "token",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "compile_output",
    "exit_code",
    "exit_signal",
    "message",
    "wall_time",
    "compiler_options",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
];

/// The fields an answer carries when none are asked for.
pub const DEFAULT_FIELDS: [&str; 8] = [
    "token",
    "time",
    "memory",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "status",
];

/// The `fields` parameter as the attributes to send, or Judge0's 400 text naming the unknown
/// ones.
pub fn fields(asked: Option<&str>) -> Result<Vec<&'static str>, String> {
    let asked = asked.map(str::trim).unwrap_or("");
    if asked.is_empty() {
        return Ok(DEFAULT_FIELDS.to_vec());
    }
    if asked == "*" {
        return Ok(ATTRIBUTES.to_vec());
    }
    let mut chosen = Vec::new();
    let mut unknown = Vec::new();
    for name in asked.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match ATTRIBUTES.iter().find(|a| **a == name) {
            Some(attribute) => chosen.push(*attribute),
            None => unknown.push(name),
        }
    }
    if unknown.is_empty() {
        Ok(chosen)
    } else {
        Err(format!("invalid fields: [{}]", unknown.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::CollectedOutput;
    use std::time::Duration;

    #[test]
    fn command_lines_split_as_the_shell_splits_them_without_expansions() {
        let words = |line: &str| shell_words(line);
        assert_eq!(words("  a  b\tc "), ["a", "b", "c"]);
        assert_eq!(words("'a b' \"c \\\" d\" e\\ f"), ["a b", "c \" d", "e f"]);
        assert_eq!(words("x''y \"\""), ["xy", ""]);
        // Judge0's stripped characters are gone before the split: nothing is expanded.
        assert_eq!(
            words("$HOME; rm -rf / | cat `id` && x>y"),
            ["HOME", "rm", "-rf", "/", "cat", "id", "xy"]
        );
        assert_eq!(words("'unclosed rest"), ["unclosed rest"]);
        assert!(words("").is_empty());
    }

    fn run(
        status: RunStatus,
        exit_code: Option<i64>,
        signal: Option<&'static str>,
    ) -> PhaseOutcome {
        PhaseOutcome {
            status,
            exit_code,
            signal,
            output: CollectedOutput {
                stdout: b"42 \n".to_vec(),
                stderr: Vec::new(),
                truncated: false,
            },
            duration: Duration::from_millis(2),
            cut_short: false,
            from_cache: false,
        }
    }

    #[test]
    fn ends_map_to_judge0s_statuses() {
        assert_eq!(judged(&run(RunStatus::Success, Some(0), None), None).0, 3);
        assert_eq!(
            judged(&run(RunStatus::Success, Some(0), None), Some("42")).0,
            3
        );
        assert_eq!(
            judged(&run(RunStatus::Success, Some(0), None), Some(" 42")).0,
            4
        );
        assert_eq!(
            judged(&run(RunStatus::Timeout, None, Some("SIGKILL")), None).0,
            5
        );
        assert_eq!(
            judged(&run(RunStatus::RuntimeError, None, Some("SIGSEGV")), None),
            (7, Some(0), Some(11))
        );
        assert_eq!(
            judged(&run(RunStatus::RuntimeError, Some(3), None), None),
            (11, Some(3), None)
        );
        assert_eq!(
            judged(&run(RunStatus::MemoryLimitExceeded, None, None), None),
            (12, Some(0), Some(9))
        );
        assert_eq!(
            judged(&run(RunStatus::OutputLimitExceeded, None, None), None).0,
            8
        );
        assert_eq!(status_description(7), "Runtime Error (SIGSEGV)");
    }

    #[test]
    fn ids_names_and_fields_follow_judge0() {
        assert_eq!(language_of(54), Some("cpp"));
        assert_eq!(language_of(52), Some("cpp"));
        assert_eq!(language_of(70), None);
        assert_eq!(language_name("C++ (GCC", "12.2.0"), "C++ (GCC 12.2.0)");
        assert_eq!(language_name("Python", "3.11.2"), "Python (3.11.2)");
        assert_eq!(fields(None).unwrap(), DEFAULT_FIELDS);
        assert_eq!(fields(Some("*")).unwrap().len(), 35);
        assert!(!fields(Some("*")).unwrap().contains(&"queue_host"));
        assert_eq!(
            fields(Some("stdout,status_id")).unwrap(),
            ["stdout", "status_id"]
        );
        assert_eq!(
            fields(Some("stdout,nope,also")).unwrap_err(),
            "invalid fields: [nope, also]"
        );
    }

    #[test]
    fn base64_and_times_are_rubys_and_rails() {
        assert_eq!(encode64(b"hello, Judge0\n"), "aGVsbG8sIEp1ZGdlMAo=\n");
        assert_eq!(encode64(&[b'x'; 50]).lines().next().unwrap().len(), 60);
        assert_eq!(decode64("aGVs\nbG8=\n"), b"hello");
        assert_eq!(decode64("aGVsbG8"), b"hello");
        assert_eq!(decode64("!!"), b"");
        assert_eq!(seconds(Duration::from_micros(2400)), "0.002");
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_712_123_251_306);
        assert_eq!(timestamp(at), "2024-04-03T05:47:31.306Z");
        assert!(same_output("a  \nb\n\n", "a\nb"));
        assert!(!same_output(" a", "a"));
    }
}
