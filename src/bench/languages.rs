//! Hello world in every language of the catalogue through `POST /run`: end to end, the
//! compile, the run, CPU and memory (the table of the language catalogue's issue, measured
//! again as the sandboxes and compilers change).

use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use super::{ServerUnderTest, ms, percentile, section, timed_post};

/// A hello world per language, printing `hello`. A compiled one gets a new comment every run,
/// so that its compile is a miss of the compile cache each time.
const HELLO: [(&str, &str); 15] = [
    ("python", "print('hello')"),
    ("javascript", "console.log('hello')"),
    (
        "typescript",
        "const greeting: string = 'hello';\nconsole.log(greeting);",
    ),
    (
        "c",
        "#include <stdio.h>\nint main(void){ puts(\"hello\"); return 0; }",
    ),
    (
        "cpp",
        "#include <iostream>\nint main(){ std::cout << \"hello\" << std::endl; }",
    ),
    (
        "cpp",
        "#include <bits/stdc++.h>\nusing namespace std;\nint main(){ vector<string> v{\"hello\"}; sort(v.begin(), v.end()); cout << v[0] << endl; }",
    ),
    (
        "java",
        "public class Main { public static void main(String[] a) { System.out.println(\"hello\"); } }",
    ),
    (
        "go",
        "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n",
    ),
    ("rust", "fn main() {\n    println!(\"hello\");\n}\n"),
    ("ruby", "puts 'hello'"),
    ("php", "<?php\necho \"hello\\n\";"),
    ("bash", "echo hello"),
    ("lua", "print('hello')"),
    ("perl", "print \"hello\\n\";"),
    (
        "csharp",
        "class Program { static void Main() { System.Console.WriteLine(\"hello\"); } }",
    ),
];

/// One run's figures, in milliseconds and KiB.
#[derive(Default, Clone, Copy)]
struct Figures {
    e2e: Duration,
    compile_ms: Option<u64>,
    run_ms: u64,
    cpu_ms: u64,
    memory_kb: u64,
}

/// `runs` runs of each hello world back to back, medians printed as a table.
pub(super) async fn table(server: &ServerUnderTest, runs: usize) -> anyhow::Result<()> {
    section(&format!(
        "languages: hello world, {runs} runs each back to back, every compile a cache miss (medians)"
    ));
    println!(
        "{:<26} {:>6} {:>10} {:>10} {:>8} {:>8} {:>10}",
        "language", "pool", "e2e", "compile", "run", "cpu", "memory"
    );
    let client = reqwest::Client::new();
    let url = server.url("/run");
    for (language, code) in HELLO {
        let pool = server.pool_target(&client, language).await;
        let mut figures = Vec::with_capacity(runs);
        for run in 0..runs {
            let code = match comment_prefix(language) {
                Some(prefix) => format!("{code}\n{prefix} run {run} {}", uuid::Uuid::new_v4()),
                None => code.to_owned(),
            };
            let body = json!({ "language": language, "code": code });
            let (e2e, answer) = timed_post(&client, &url, &body).await?;
            figures.push(read_figures(language, e2e, &answer)?);
        }
        let name = if code.contains("bits/stdc++.h") {
            format!("{language} (<bits/stdc++.h>)")
        } else {
            language.to_owned()
        };
        let median = |f: fn(&Figures) -> u64| {
            let mut values: Vec<u64> = figures.iter().map(f).collect();
            values.sort_unstable();
            values[values.len() / 2]
        };
        let mut e2e: Vec<Duration> = figures.iter().map(|f| f.e2e).collect();
        e2e.sort();
        let compile = figures[0]
            .compile_ms
            .map(|_| format!("{}ms", median(|f| f.compile_ms.unwrap_or(0))))
            .unwrap_or_else(|| "—".to_owned());
        println!(
            "{:<26} {:>6} {:>8.1}ms {:>10} {:>6}ms {:>6}ms {:>8}KB",
            name,
            pool,
            ms(percentile(&e2e, 0.5)),
            compile,
            median(|f| f.run_ms),
            median(|f| f.cpu_ms),
            median(|f| f.memory_kb),
        );
    }
    Ok(())
}

/// A line comment in `language`, for the compiled ones (whose compiles are cached).
fn comment_prefix(language: &str) -> Option<&'static str> {
    match language {
        "c" | "cpp" | "java" | "go" | "rust" | "csharp" | "typescript" => Some("//"),
        _ => None,
    }
}

fn read_figures(language: &str, e2e: Duration, answer: &Value) -> anyhow::Result<Figures> {
    if answer["status"] != "success" || answer["stdout"] != "hello\n" {
        bail!("unexpected {language} answer: {answer}");
    }
    if answer["compile"]["cached"] == true {
        bail!("a {language} compile came from the cache: every source here is new");
    }
    let number = |v: &Value| v.as_u64().unwrap_or(0);
    Ok(Figures {
        e2e,
        compile_ms: answer["compile"]["duration_ms"].as_u64(),
        // The run phase's fields are the answer's own (`compile` is beside them).
        run_ms: number(&answer["duration_ms"]),
        cpu_ms: number(&answer["cpu_time_ms"]),
        memory_kb: number(&answer["memory_kb"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_of_the_catalogue_is_measured_and_every_compile_is_new() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/languages.toml");
        let catalogue = crate::languages::Catalogue::load(&path).unwrap();
        for language in catalogue.iter() {
            assert!(
                HELLO.iter().any(|(id, _)| *id == language.id),
                "{} has no hello world here",
                language.id
            );
        }
        for (id, _) in HELLO {
            let language = catalogue.resolve(id).unwrap();
            assert_eq!(comment_prefix(id).is_some(), language.is_compiled(), "{id}");
        }
    }

    #[test]
    fn a_cached_or_wrong_answer_is_an_error() {
        let ok = json!({"status": "success", "stdout": "hello\n", "duration_ms": 5,
            "cpu_time_ms": 3, "memory_kb": 900, "compile": {"duration_ms": 80, "cached": false}});
        let figures = read_figures("c", Duration::from_millis(100), &ok).unwrap();
        assert_eq!(
            (figures.compile_ms, figures.run_ms, figures.cpu_ms),
            (Some(80), 5, 3)
        );
        let mut cached = ok.clone();
        cached["compile"]["cached"] = json!(true);
        assert!(read_figures("c", Duration::ZERO, &cached).is_err());
        let mut wrong = ok;
        wrong["stdout"] = json!("hell\n");
        assert!(read_figures("c", Duration::ZERO, &wrong).is_err());
    }
}
