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

const CASES: [Case; 14] = [
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
        language: "typescript",
        hello: "const greeting: string = 'hello, world';\nconsole.log(greeting);",
        echo_stdin: "process.stdin.pipe(process.stdout);",
        print_args: "const args: string[] = process.argv.slice(2);\nconsole.log(args.join(' | '));",
        fail: "console.error('boom');\nprocess.exit(3);",
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
    Case {
        language: "java",
        hello: "public class Main {\n  public static void main(String[] args) {\n    System.out.println(\"hello, world\");\n  }\n}",
        echo_stdin: "public class Main {\n  public static void main(String[] args) throws Exception {\n    System.in.transferTo(System.out);\n    System.out.flush();\n  }\n}",
        print_args: "public class Main {\n  public static void main(String[] args) {\n    System.out.println(String.join(\" | \", args));\n  }\n}",
        fail: "public class Main {\n  public static void main(String[] args) {\n    System.err.println(\"boom\");\n    System.exit(3);\n  }\n}",
    },
    Case {
        language: "go",
        hello: "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello, world\") }\n",
        echo_stdin: "package main\n\nimport (\n\t\"io\"\n\t\"os\"\n)\n\nfunc main() { io.Copy(os.Stdout, os.Stdin) }\n",
        print_args: "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\t\"strings\"\n)\n\nfunc main() { fmt.Println(strings.Join(os.Args[1:], \" | \")) }\n",
        fail: "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\tfmt.Fprintln(os.Stderr, \"boom\")\n\tos.Exit(3)\n}\n",
    },
    Case {
        language: "rust",
        hello: "fn main() {\n    println!(\"hello, world\");\n}\n",
        echo_stdin: "use std::io::{Read, Write};\nfn main() {\n    let mut buf = Vec::new();\n    std::io::stdin().read_to_end(&mut buf).unwrap();\n    std::io::stdout().write_all(&buf).unwrap();\n}\n",
        print_args: "fn main() {\n    let args: Vec<String> = std::env::args().skip(1).collect();\n    println!(\"{}\", args.join(\" | \"));\n}\n",
        fail: "fn main() {\n    eprintln!(\"boom\");\n    std::process::exit(3);\n}\n",
    },
    Case {
        language: "ruby",
        hello: "puts 'hello, world'",
        echo_stdin: "$stdout.write($stdin.read)",
        print_args: "puts ARGV.join(' | ')",
        fail: "$stderr.puts 'boom'\nexit 3",
    },
    Case {
        language: "php",
        hello: "<?php\necho \"hello, world\\n\";",
        echo_stdin: "<?php\necho stream_get_contents(STDIN);",
        print_args: "<?php\necho implode(' | ', array_slice($argv, 1)), \"\\n\";",
        fail: "<?php\nfwrite(STDERR, \"boom\\n\");\nexit(3);",
    },
    Case {
        language: "bash",
        hello: "echo 'hello, world'",
        echo_stdin: "cat",
        print_args: "out=$1; shift\nfor a in \"$@\"; do out=\"$out | $a\"; done\necho \"$out\"",
        fail: "echo boom >&2\nexit 3",
    },
    Case {
        language: "lua",
        hello: "print('hello, world')",
        echo_stdin: "io.write(io.read('a'))",
        print_args: "print(table.concat(arg, ' | '))",
        fail: "io.stderr:write('boom\\n')\nos.exit(3)",
    },
    Case {
        language: "perl",
        hello: "print \"hello, world\\n\";",
        echo_stdin: "local $/;\nprint <STDIN>;",
        print_args: "print join(' | ', @ARGV), \"\\n\";",
        fail: "print STDERR \"boom\\n\";\nexit 3;",
    },
    Case {
        language: "csharp",
        hello: "class Program {\n  static void Main() {\n    System.Console.WriteLine(\"hello, world\");\n  }\n}",
        echo_stdin: "using System;\nclass Program {\n  static void Main() {\n    Console.OpenStandardInput().CopyTo(Console.OpenStandardOutput());\n  }\n}",
        print_args: "class Program {\n  static void Main(string[] args) {\n    System.Console.WriteLine(string.Join(\" | \", args));\n  }\n}",
        fail: "class Program {\n  static int Main() {\n    System.Console.Error.WriteLine(\"boom\");\n    return 3;\n  }\n}",
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
    let compiled = COMPILED.contains(&language);
    assert_eq!(r["compile"].is_object(), compiled, "{r}");
    if compiled {
        assert_eq!(r["compile"]["status"], "success", "{r}");
        assert!(r["compile"]["duration_ms"].as_u64().unwrap() > 0, "{r}");
    }
    let memory_kb = r["memory_kb"]
        .as_u64()
        .unwrap_or_else(|| panic!("memory_kb: {r}"));
    // runbox reads the sandbox's cgroup on this host; after a compile the peak is reset, so
    // the run phase's own peak is reported, far below the compiler's (gcc alone takes more).
    let ceiling_kb = match language {
        "c" | "cpp" | "rust" | "go" => 40_000,
        // The JVM and Mono are big at rest, yet a hello world stays well inside the default.
        _ => default_memory_mb(language) * 1024,
    };
    assert!((100..ceiling_kb).contains(&memory_kb), "{r}");
}

/// Languages with a compile phase.
const COMPILED: [&str; 7] = ["c", "cpp", "typescript", "java", "go", "rust", "csharp"];

fn default_memory_mb(language: &str) -> u64 {
    let catalogue = runbox::languages::Catalogue::load(
        &crate::common::repo_root().join("config/languages.toml"),
    )
    .unwrap();
    catalogue.resolve(language).unwrap().memory_mb
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

language_tests!(
    python => "python",
    javascript => "javascript",
    typescript => "typescript",
    c => "c",
    cpp => "cpp",
    java => "java",
    go => "go",
    rust => "rust",
    ruby => "ruby",
    php => "php",
    bash => "bash",
    lua => "lua",
    perl => "perl",
    csharp => "csharp"
);

#[test]
fn the_table_covers_the_whole_catalogue() {
    let catalogue = runbox::languages::Catalogue::load(
        &crate::common::repo_root().join("config/languages.toml"),
    )
    .unwrap();
    for language in catalogue.iter() {
        assert!(
            CASES.iter().any(|c| c.language == language.id),
            "{} has no test case",
            language.id
        );
        assert_eq!(
            language.is_compiled(),
            COMPILED.contains(&language.id.as_str()),
            "{}",
            language.id
        );
    }
}

async fn compile_error(language: &str, code: &str, fragment: &str) {
    let r = run_and_clean(json!({ "language": language, "code": code })).await;
    assert_eq!(r["status"], "compile_error", "{r}");
    assert_eq!(r["compile"]["status"], "compile_error");
    assert_ne!(r["compile"]["exit_code"].as_i64().unwrap(), 0, "{r}");
    // Some compilers (tsc, mcs) report on stdout: the client gets both streams.
    let message = format!("{}{}", r["compile"]["stdout"], r["compile"]["stderr"]);
    assert!(message.contains(fragment), "{message}");
    assert!(
        message.to_lowercase().contains("main."),
        "the message names the file: {message}"
    );
    // The program never ran.
    assert_eq!(r["stdout"], "");
    assert_eq!(r["exit_code"], json!(null));
    assert_eq!(r["duration_ms"], 0, "no run phase: {r}");
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
async fn typescript_type_error_is_a_compile_error() {
    compile_error(
        "typescript",
        "const n: number = 'text';\nconsole.log(n);",
        "not assignable",
    )
    .await;
}

#[tokio::test]
async fn java_compile_error() {
    compile_error(
        "java",
        "public class Main {\n  public static void main(String[] a) {\n    int x = \"text\";\n  }\n}",
        "incompatible types",
    )
    .await;
}

#[tokio::test]
async fn go_compile_error() {
    compile_error(
        "go",
        "package main\n\nfunc main() {\n\tx := undefinedThing\n}\n",
        "undefined: undefinedThing",
    )
    .await;
}

#[tokio::test]
async fn rust_compile_error() {
    compile_error(
        "rust",
        "fn main() {\n    let x: i32 = \"text\";\n}\n",
        "mismatched types",
    )
    .await;
}

#[tokio::test]
async fn csharp_compile_error() {
    compile_error(
        "csharp",
        "class Program {\n  static void Main() {\n    int x = \"text\";\n  }\n}",
        "CS0029",
    )
    .await;
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

/// A two-file program per language: the entry file uses a function from a second file (in a
/// subdirectory where the language allows) that returns "hello, " + its argument.
const TWO_FILE_PROGRAMS: [(&str, [(&str, &str); 2]); 14] = [
    (
        "python",
        [
            (
                "main.py",
                "from lib.greet import greet\nprint(greet('files'))\n",
            ),
            ("lib/greet.py", "def greet(x):\n    return 'hello, ' + x\n"),
        ],
    ),
    (
        "javascript",
        [
            (
                "main.js",
                "const { greet } = require('./lib/greet');\nconsole.log(greet('files'));\n",
            ),
            ("lib/greet.js", "exports.greet = (x) => 'hello, ' + x;\n"),
        ],
    ),
    (
        "typescript",
        [
            (
                "main.ts",
                "import { greet } from './lib/greet';\nconsole.log(greet('files'));\n",
            ),
            (
                "lib/greet.ts",
                "export function greet(x: string): string {\n  return 'hello, ' + x;\n}\n",
            ),
        ],
    ),
    (
        "c",
        [
            (
                "main.c",
                "#include <stdio.h>\n#include \"lib/greet.h\"\nint main(void){ greet(\"files\"); return 0; }\n",
            ),
            ("lib/greet.h", "void greet(const char *x);\n"),
        ],
    ),
    (
        "cpp",
        [
            (
                "main.cpp",
                "#include <iostream>\n#include \"lib/greet.hpp\"\nint main(){ std::cout << greet(\"files\") << '\\n'; }\n",
            ),
            (
                "lib/greet.hpp",
                "#include <string>\ninline std::string greet(const std::string &x){ return \"hello, \" + x; }\n",
            ),
        ],
    ),
    (
        "java",
        [
            (
                "Main.java",
                "import lib.Greeter;\npublic class Main {\n  public static void main(String[] args) {\n    System.out.println(Greeter.greet(\"files\"));\n  }\n}\n",
            ),
            (
                "lib/Greeter.java",
                "package lib;\npublic class Greeter {\n  public static String greet(String x) { return \"hello, \" + x; }\n}\n",
            ),
        ],
    ),
    (
        "go",
        [
            (
                "main.go",
                "package main\n\nimport (\n\t\"fmt\"\n\n\t\"runbox/greet\"\n)\n\nfunc main() { fmt.Println(greet.Greet(\"files\")) }\n",
            ),
            (
                "greet/greet.go",
                "package greet\n\nfunc Greet(x string) string { return \"hello, \" + x }\n",
            ),
        ],
    ),
    (
        "rust",
        [
            (
                "main.rs",
                "mod greet;\nfn main() {\n    println!(\"{}\", greet::greet(\"files\"));\n}\n",
            ),
            (
                "greet.rs",
                "pub fn greet(x: &str) -> String {\n    format!(\"hello, {x}\")\n}\n",
            ),
        ],
    ),
    (
        "ruby",
        [
            (
                "main.rb",
                "require_relative 'lib/greet'\nputs greet('files')\n",
            ),
            ("lib/greet.rb", "def greet(x)\n  \"hello, #{x}\"\nend\n"),
        ],
    ),
    (
        "php",
        [
            (
                "main.php",
                "<?php\nrequire __DIR__ . '/lib/greet.php';\necho greet('files'), \"\\n\";\n",
            ),
            (
                "lib/greet.php",
                "<?php\nfunction greet($x) { return \"hello, $x\"; }\n",
            ),
        ],
    ),
    (
        "bash",
        [
            (
                "main.sh",
                "source \"$(dirname \"$0\")/lib/greet.sh\"\ngreet files\n",
            ),
            ("lib/greet.sh", "greet() { echo \"hello, $1\"; }\n"),
        ],
    ),
    (
        "lua",
        [
            (
                "main.lua",
                "local greet = require('lib.greet')\nprint(greet('files'))\n",
            ),
            (
                "lib/greet.lua",
                "return function(x) return 'hello, ' .. x end\n",
            ),
        ],
    ),
    (
        "perl",
        [
            (
                "main.pl",
                "use lib '.';\nuse Greet;\nprint Greet::greet('files'), \"\\n\";\n",
            ),
            (
                "Greet.pm",
                "package Greet;\nsub greet { return \"hello, $_[0]\" }\n1;\n",
            ),
        ],
    ),
    (
        "csharp",
        [
            (
                "main.cs",
                "class Program {\n  static void Main() {\n    System.Console.WriteLine(Lib.Greeter.Greet(\"files\"));\n  }\n}\n",
            ),
            (
                "lib/Greeter.cs",
                "namespace Lib {\n  static class Greeter {\n    public static string Greet(string x) { return \"hello, \" + x; }\n  }\n}\n",
            ),
        ],
    ),
];

async fn two_file_program(language: &str) {
    let (_, files) = TWO_FILE_PROGRAMS
        .iter()
        .find(|(l, _)| *l == language)
        .unwrap();
    let mut files: Vec<_> = files
        .iter()
        .map(|(name, content)| json!({ "name": name, "content": content }))
        .collect();
    if language == "c" {
        // C needs the definition in a third file, compiled and linked with the entry file.
        files.push(json!({
            "name": "lib/greet.c",
            "content": "#include <stdio.h>\nvoid greet(const char *x){ printf(\"hello, %s\\n\", x); }\n"
        }));
    }
    let r = run_and_clean(json!({ "language": language, "files": files })).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "hello, files\n", "{r}");
}

macro_rules! two_file_tests {
    ($($name:ident => $language:literal),*) => {$(
        #[tokio::test]
        async fn $name() { two_file_program($language).await }
    )*};
}

two_file_tests!(
    two_files_python => "python",
    two_files_javascript => "javascript",
    two_files_typescript => "typescript",
    two_files_c => "c",
    two_files_cpp => "cpp",
    two_files_java => "java",
    two_files_go => "go",
    two_files_rust => "rust",
    two_files_ruby => "ruby",
    two_files_php => "php",
    two_files_bash => "bash",
    two_files_lua => "lua",
    two_files_perl => "perl",
    two_files_csharp => "csharp"
);

#[tokio::test]
async fn code_plus_files_python_package() {
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
}

#[tokio::test]
async fn typescript_programs_use_node_apis_and_keep_their_own_types_checked() {
    // Node's globals and built-in modules compile (Debian has no @types/node; runbox declares
    // them), with --lib es2022 and no DOM.
    let code = "import * as readline from 'readline';\n\ninterface Pair { a: number; b: number }\n\nconst rl = readline.createInterface({ input: process.stdin });\nconst lines: string[] = [];\nrl.on('line', (l: string) => lines.push(l));\nrl.on('close', () => {\n  const [a, b] = lines[0].split(' ').map(Number);\n  const p: Pair = { a, b };\n  setTimeout(() => console.log(p.a + p.b), 10);\n});\n";
    let r = run_and_clean(json!({ "language": "ts", "code": code, "input": "2 40\n" })).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "42\n");
    let wrong = code.replace("const p: Pair = { a, b };", "const p: Pair = { a };");
    let r = run_and_clean(json!({ "language": "ts", "code": wrong, "input": "2 40\n" })).await;
    assert_eq!(r["status"], "compile_error", "{r}");
    assert!(
        r["compile"]["stdout"].as_str().unwrap().contains("main.ts"),
        "{r}"
    );
}

/// A Go program on the heavy side of the standard library (net/http, encoding/json, regexp,
/// text/template) and a Rust program using the std collections, generics and formatting.
const GO_STD_HEAVY: &str = "package main\n\nimport (\n\t\"encoding/json\"\n\t\"fmt\"\n\t\"net/http\"\n\t\"net/http/httptest\"\n\t\"regexp\"\n\t\"sort\"\n\t\"strings\"\n\t\"text/template\"\n)\n\nfunc main() {\n\th := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(map[string]int{\"a\": 1}) })\n\trec := httptest.NewRecorder()\n\th.ServeHTTP(rec, httptest.NewRequest(\"GET\", \"/\", nil))\n\twords := strings.Fields(\"the quick brown fox\")\n\tsort.Strings(words)\n\tt := template.Must(template.New(\"x\").Parse(\"{{.}}\\n\"))\n\t_ = t\n\tfmt.Println(strings.TrimSpace(rec.Body.String()), words, regexp.MustCompile(\"o+\").FindAllString(\"foo boo\", -1))\n}\n";
const RUST_COLLECTIONS: &str = "use std::collections::{BTreeMap, HashMap, HashSet, VecDeque, BinaryHeap};\nuse std::fmt::Write as _;\n#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]\nenum Tok { Num(i64), Op(char), L, R }\nfn lex(s: &str) -> Vec<Tok> { let mut v = vec![]; let c: Vec<char> = s.chars().collect(); let mut i = 0;\n  while i < c.len() { if c[i].is_ascii_digit() { let mut n = 0i64; while i < c.len() && c[i].is_ascii_digit() { n = n*10 + c[i].to_digit(10).unwrap() as i64; i += 1; } v.push(Tok::Num(n)); continue; }\n  match c[i] { '(' => v.push(Tok::L), ')' => v.push(Tok::R), ' ' => {}, o => v.push(Tok::Op(o)) } i += 1; } v }\nfn main() {\n  let toks = lex(\"12 + (3 * 4) - 5\");\n  let mut m: HashMap<String, Vec<Tok>> = HashMap::new(); m.insert(\"e\".into(), toks.clone());\n  let b: BTreeMap<_, _> = toks.iter().enumerate().map(|(i, t)| (format!(\"{i:03}\"), t.clone())).collect();\n  let s: HashSet<_> = toks.iter().cloned().collect();\n  let mut q: VecDeque<i64> = (0..100).collect(); q.rotate_left(3);\n  let h: BinaryHeap<i64> = q.iter().map(|x| x * x % 97).collect();\n  let mut out = String::new(); for (k, v) in &b { writeln!(out, \"{k} {v:?}\").unwrap(); }\n  let total: i64 = h.into_sorted_vec().iter().rev().take(10).sum();\n  println!(\"{} {} {} {}\", out.lines().count(), s.len(), total, m[\"e\"].len());\n}\n";

#[tokio::test]
async fn go_and_rust_builds_of_real_programs_fit_their_compile_limits() {
    // Measured on the 2-core machine: about 0.9 s / 165 MiB for Go, 3 s / 285 MiB for Rust,
    // against 30 s and 768 MiB. A failure here means the defaults no longer fit the compilers.
    let r = run_and_clean(json!({ "language": "go", "code": GO_STD_HEAVY })).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "{\"a\":1} [brown fox quick the] [oo oo]\n");
    let r = run_and_clean(json!({ "language": "rust", "code": RUST_COLLECTIONS })).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "9 9 938 9\n");
}

#[tokio::test]
async fn java_runs_the_class_holding_main_whatever_the_file_is_called() {
    // A public class named otherwise than the file it was pasted into.
    let r = run_and_clean(json!({
        "language": "java",
        "code": "import java.util.*;\n\npublic class Solution {\n  public static void main(String[] args) {\n    System.out.println(new Scanner(System.in).nextInt() * 2);\n  }\n}\n",
        "input": "21\n"
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "42\n", "{r}");

    // An entry file of any name, in a package, next to another class that also has a main:
    // the entry file's class wins.
    let r = run_and_clean(json!({
        "language": "java",
        "files": [
            { "name": "app/Entry.java", "content": "package app;\npublic class Entry {\n  public static void main(String[] a) { System.out.println(\"entry\"); }\n}\n" },
            { "name": "Other.java", "content": "public class Other {\n  public static void main(String[] a) { System.out.println(\"other\"); }\n}\n" }
        ]
    }))
    .await;
    assert_eq!(r["stdout"], "entry\n", "{r}");

    // No main anywhere: a compile error that says so, and nothing runs.
    let r = run_and_clean(json!({
        "language": "java",
        "code": "public class Main {\n  static int twice(int x) { return 2 * x; }\n}\n"
    }))
    .await;
    assert_eq!(r["status"], "compile_error", "{r}");
    assert!(
        r["compile"]["stderr"]
            .as_str()
            .unwrap()
            .contains("no class has a method public static void main"),
        "{r}"
    );
}

#[tokio::test]
async fn java_heap_follows_the_memory_limit() {
    // 100 MB of live data fits a 512 MB sandbox (heap 60% of it) and is refused by the JVM
    // itself, not the kernel, in a 128 MB one.
    let code = "public class Main {\n  public static void main(String[] a) {\n    byte[][] keep = new byte[100][];\n    for (int i = 0; i < 100; i++) keep[i] = new byte[1 << 20];\n    System.out.println(keep.length);\n  }\n}\n";
    let r = run_and_clean(json!({ "language": "java", "code": code, "memory_mb": 512 })).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["stdout"], "100\n");
    let r = run_and_clean(json!({ "language": "java", "code": code, "memory_mb": 128 })).await;
    assert_eq!(r["status"], "runtime_error", "{r}");
    assert!(
        r["stderr"].as_str().unwrap().contains("OutOfMemoryError"),
        "{r}"
    );
}

#[tokio::test]
async fn every_language_reports_its_image_version_and_refuses_limits_above_its_maximum() {
    let app = crate::common::shared();
    let listing: serde_json::Value = reqwest::get(app.url("/languages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let languages = listing["languages"].as_array().unwrap();
    assert_eq!(languages.len(), CASES.len(), "{listing}");
    for l in languages {
        let id = l["id"].as_str().unwrap();
        let version = l["version"].as_str().unwrap_or_else(|| panic!("{l}"));
        assert!(
            version.starts_with(|c: char| c.is_ascii_digit())
                && version.chars().all(|c| c.is_ascii_digit() || c == '.'),
            "{id}: {version}"
        );
        for (field, max) in [
            ("timeout_ms", "max_timeout_ms"),
            ("memory_mb", "max_memory_mb"),
        ] {
            let above = l[max].as_u64().unwrap() + 1;
            let (status, body) = app
                .run(json!({ "language": id, "code": "x", field: above }))
                .await;
            assert_eq!(status, 400, "{id} {field}={above}: {body}");
            assert_eq!(body["error"]["code"], "invalid_request");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(field) && message.contains(&(above - 1).to_string()),
                "{message}"
            );
        }
    }
}

#[tokio::test]
async fn a_long_line_within_the_output_cap_arrives_whole() {
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import sys\nsys.stdout.write('x' * 60000)"
    }))
    .await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["truncated"], false);
    assert_eq!(r["stdout"].as_str().unwrap().len(), 60000);
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

/// A Python start pays for nothing the program does not import: no `.pth` hook runs (the one
/// matplotlib's package ships imported importlib.util on every start, +7 ms), and what it
/// registered still imports.
#[tokio::test]
async fn python_starts_without_importing_the_librarys_hooks() {
    let r = run_and_clean(json!({
        "language": "python",
        "code": "import sys\nprint(sorted(m for m in ('importlib.util', 'mpl_toolkits') if m in sys.modules))\nimport mpl_toolkits.mplot3d\nprint('ok')"
    }))
    .await;
    assert_eq!(r["stdout"], "[]\nok\n", "{r}");
}

/// The Java image's class-data sharing archive of javac's classes is one this JVM can map
/// with runbox-javac's class path: `-Xshare:on` makes the JVM fail instead of silently ignoring
/// an archive that does not match (a JDK upgraded under it, another class path, a corrupt
/// file). runbox-javac uses it with `-Xshare:auto`.
#[tokio::test]
async fn java_image_has_a_usable_javac_archive() {
    let code = r#"public class Main {
  public static void main(String[] args) throws Exception {
    Process p = new ProcessBuilder("java", "-Xshare:on", "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
        "-XX:SharedArchiveFile=/usr/local/lib/runbox/javac.jsa",
        "-cp", "/usr/local/lib/runbox/runbox-javac.jar", "-version")
        .redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes()).trim();
    System.out.println(p.waitFor() + " " + out);
  }
}"#;
    let r = run_and_clean(json!({ "language": "java", "code": code, "memory_mb": 512 })).await;
    assert_eq!(r["status"], "success", "{r}");
    let stdout = r["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("0 openjdk version \"17"), "{r}");
}

/// The C++ image's precompiled `<bits/stdc++.h>` is taken by g++ with the catalogue's flags
/// (`-H` lists it with `!` when it is used, `x` when it was found but refused).
#[tokio::test]
async fn cpp_image_uses_the_precompiled_bits_header() {
    let code = r#"#include <cstdio>
#include <cstdlib>
int main() {
  std::system("printf '#include <bits/stdc++.h>\\nint main(){}\\n' > /box/t.cpp");
  FILE* p = popen("g++ -O2 -std=gnu++20 -Wall -H -fsyntax-only /box/t.cpp 2>&1 | head -n 1", "r");
  char line[512] = {0};
  if (!fgets(line, sizeof line, p)) return 2;
  std::printf("%s", line);
  return pclose(p) == 0 ? 0 : 3;
}"#;
    let r = run_and_clean(json!({ "language": "cpp", "code": code, "memory_mb": 512 })).await;
    assert_eq!(r["status"], "success", "{r}");
    let stdout = r["stdout"].as_str().unwrap();
    assert!(
        stdout.starts_with("! /usr/include/") && stdout.trim_end().ends_with("bits/stdc++.h.gch"),
        "{r}"
    );
}
