//! Every language of the foundation: hello world, stdin, args, runtime error, compile error.

use serde_json::json;

use crate::common::run_and_clean;

struct Case {
    language: &'static str,
    hello: &'static str,
    echo_stdin: &'static str,
    print_args: &'static str,
    /// Exits with code 3 after printing "boom" to stderr.
    fail: &'static str,
}

const CASES: [Case; 4] = [
    Case {
        language: "python",
        hello: "print('hello, world')",
        echo_stdin: "import sys\nsys.stdout.write(sys.stdin.read())",
        print_args: "import sys\nprint(' | '.join(sys.argv[1:]))",
        fail: "import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)",
    },
    Case {
        language: "javascript",
        hello: "console.log('hello, world')",
        echo_stdin: "process.stdin.pipe(process.stdout)",
        print_args: "console.log(process.argv.slice(2).join(' | '))",
        fail: "console.error('boom'); process.exit(3)",
    },
    Case {
        language: "c",
        hello: "#include <stdio.h>\nint main(void){ puts(\"hello, world\"); return 0; }",
        echo_stdin: "#include <stdio.h>\nint main(void){ int c; while((c=getchar())!=EOF) putchar(c); return 0; }",
        print_args: "#include <stdio.h>\nint main(int n, char**v){ for(int i=1;i<n;i++) printf(i>1?\" | %s\":\"%s\", v[i]); puts(\"\"); return 0; }",
        fail: "#include <stdio.h>\nint main(void){ fprintf(stderr, \"boom\\n\"); return 3; }",
    },
    Case {
        language: "cpp",
        hello: "#include <iostream>\nint main(){ std::cout << \"hello, world\" << std::endl; }",
        echo_stdin: "#include <iostream>\nint main(){ std::cout << std::cin.rdbuf(); }",
        print_args: "#include <iostream>\nint main(int n, char**v){ for(int i=1;i<n;i++) std::cout << (i>1?\" | \":\"\") << v[i]; std::cout << '\\n'; }",
        fail: "#include <iostream>\nint main(){ std::cerr << \"boom\" << std::endl; return 3; }",
    },
];

fn case(language: &str) -> &'static Case {
    CASES.iter().find(|c| c.language == language).unwrap()
}

async fn hello_world(language: &str) {
    let r = run_and_clean(json!({ "language": language, "code": case(language).hello })).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "hello, world\n");
    assert_eq!(r["stderr"], "");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["signal"], json!(null));
    assert_eq!(r["truncated"], false);
    assert!(
        r["version"]
            .as_str()
            .unwrap()
            .chars()
            .next()
            .unwrap()
            .is_ascii_digit(),
        "{r}"
    );
    assert!(r["duration_ms"].as_u64().is_some());
    assert!(
        r["cpu_time_ms"].as_u64().is_some(),
        "cgroup v1 reports CPU time: {r}"
    );
    let compiled = matches!(language, "c" | "cpp");
    assert_eq!(r["compile"].is_object(), compiled, "{r}");
    if compiled {
        assert_eq!(r["compile"]["status"], "success");
    }
    // runbox reads the sandbox's cgroup on this host; after a compile the peak is reset, so
    // the run phase's own peak is reported, far below the compiler's.
    let memory_kb = r["memory_kb"]
        .as_u64()
        .unwrap_or_else(|| panic!("memory_kb: {r}"));
    assert!((100..40_000).contains(&memory_kb), "{r}");
}

async fn stdin_echo(language: &str) {
    let input = "line one\nline two ünïcode\n";
    let r = run_and_clean(
        json!({ "language": language, "code": case(language).echo_stdin, "input": input }),
    )
    .await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], input);
    // `stdin` is accepted as an alias of `input`.
    let r = run_and_clean(
        json!({ "language": language, "code": case(language).echo_stdin, "stdin": "x" }),
    )
    .await;
    assert_eq!(r["stdout"], "x");
}

async fn args(language: &str) {
    let r = run_and_clean(json!({
        "language": language,
        "code": case(language).print_args,
        "args": ["one", "two words", "$HOME", "'quoted'"]
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    // Arguments arrive verbatim: no shell expansion, no splitting.
    assert_eq!(r["stdout"], "one | two words | $HOME | 'quoted'\n");
}

async fn runtime_error(language: &str) {
    let r = run_and_clean(json!({ "language": language, "code": case(language).fail })).await;
    assert_eq!(r["status"], "runtime_error", "{r}");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["stderr"], "boom\n");
}

macro_rules! language_tests {
    ($($module:ident => $language:literal),*) => {$(
        mod $module {
            #[tokio::test]
            async fn hello_world() { super::hello_world($language).await }
            #[tokio::test]
            async fn stdin_echo() { super::stdin_echo($language).await }
            #[tokio::test]
            async fn args() { super::args($language).await }
            #[tokio::test]
            async fn runtime_error() { super::runtime_error($language).await }
        }
    )*};
}

language_tests!(python => "python", javascript => "javascript", c => "c", cpp => "cpp");

async fn compile_error(language: &str, code: &str, fragment: &str) {
    let r = run_and_clean(json!({ "language": language, "code": code })).await;
    assert_eq!(r["status"], "compile_error", "{r}");
    assert_eq!(r["compile"]["status"], "compile_error");
    assert_eq!(r["compile"]["exit_code"], 1);
    let message = r["compile"]["stderr"].as_str().unwrap();
    assert!(message.contains(fragment), "{message}");
    assert!(
        message.contains("main."),
        "the message names the file: {message}"
    );
    // The program never ran.
    assert_eq!(r["stdout"], "");
    assert_eq!(r["exit_code"], json!(null));
}

#[tokio::test]
async fn c_compile_error() {
    compile_error(
        "c",
        "int main(void){ return undeclared_thing; }",
        "undeclared_thing",
    )
    .await;
}

#[tokio::test]
async fn cpp_compile_error() {
    compile_error("cpp", "int main(){ std::vector<int> v; }", "vector").await;
}

#[tokio::test]
async fn python_runtime_exception_has_traceback() {
    let r = run_and_clean(json!({ "language": "py", "code": "1/0" })).await;
    assert_eq!(r["status"], "runtime_error");
    assert_eq!(r["exit_code"], 1);
    assert!(
        r["stderr"].as_str().unwrap().contains("ZeroDivisionError"),
        "{r}"
    );
    assert_eq!(r["language"], "python", "aliases resolve to the id");
}

#[tokio::test]
async fn c_segfault_reports_the_signal() {
    let r = run_and_clean(
        json!({ "language": "c", "code": "int main(void){ volatile int *p = 0; return *p; }" }),
    )
    .await;
    assert_eq!(r["status"], "runtime_error", "{r}");
    assert_eq!(r["signal"], "SIGSEGV");
    assert_eq!(r["exit_code"], json!(null));
}

#[tokio::test]
async fn multi_file_programs() {
    let r = run_and_clean(json!({
        "language": "python",
        "code": "from pkg.util import greet\nprint(greet('files'))",
        "files": [
            { "name": "pkg/__init__.py", "content": "" },
            { "name": "pkg/util.py", "content": "def greet(x):\n    return 'hello, ' + x\n" }
        ]
    }))
    .await;
    assert_eq!(r["stdout"], "hello, files\n", "{r}");
    let r = run_and_clean(json!({
        "language": "c",
        "files": [
            { "name": "main.c", "content": "#include \"lib/add.h\"\n#include <stdio.h>\nint main(void){ printf(\"%d\\n\", add(2, 3)); return 0; }" },
            { "name": "lib/add.h", "content": "int add(int a, int b);\n" },
            { "name": "lib/add.c", "content": "int add(int a, int b){ return a + b; }\n" }
        ]
    }))
    .await;
    assert_eq!(r["stdout"], "5\n", "{r}");
}

#[tokio::test]
async fn output_bytes_that_are_not_utf8_are_replaced_and_nul_survives() {
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import sys\nsys.stdout.buffer.write(b'ok\\xff\\x00end')"
    }))
    .await;
    assert_eq!(r["stdout"], "ok\u{FFFD}\u{0}end", "{r}");
}
