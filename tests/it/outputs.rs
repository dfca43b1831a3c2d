//! Files out (`outputs`) and the libraries in the images: a plot comes back as a PNG, pandas
//! reads a CSV sent in and writes one back, caps truncate, links and pipes are refused, a
//! flood of files stops at the count cap. Real server, engine and images.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    nested_sandboxes, run_and_clean, run_in_session, session_id, shared, start_on_own_runtime,
    wait_for_pool_ready, wait_until_no_containers,
};

fn content(file: &Value) -> Vec<u8> {
    assert_eq!(file["encoding"], "base64", "{file}");
    base64::engine::general_purpose::STANDARD
        .decode(file["content"].as_str().expect("content"))
        .expect("base64")
}

fn named<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files in {result}"))
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no file {name} in {result}"))
}

#[tokio::test]
async fn a_matplotlib_plot_comes_back_as_a_valid_png() {
    let code = "import matplotlib.pyplot as plt\n\
                fig, ax = plt.subplots(figsize=(4, 3))\n\
                ax.plot([0, 1, 2, 3], [1, 4, 2, 5])\n\
                ax.set_title('runbox')\n\
                fig.savefig('plot.png', dpi=50)\n\
                print('saved')";
    let result = run_and_clean(json!({
        "language": "python",
        "code": code,
        "outputs": ["*.png"],
        "memory_mb": 256,
    }))
    .await;
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(result["stdout"], "saved\n");
    // No warning about matplotlib's config dir, no font cache built per run.
    assert_eq!(result["stderr"], "", "{result}");
    assert_eq!(result["files_truncated"], false);
    let plot = named(&result, "plot.png");
    assert_eq!(plot["media_type"], "image/png");
    assert_eq!(plot["truncated"], false);
    let bytes = content(plot);
    assert_eq!(plot["size"], bytes.len());
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).expect("PNG pixels decode");
    assert_eq!((frame.width, frame.height), (200, 150));
    // Not a blank canvas: the line and the title are drawn.
    let distinct: std::collections::HashSet<&[u8]> = pixels[..frame.buffer_size()]
        .chunks(frame.color_type.samples())
        .collect();
    assert!(distinct.len() > 10, "{} colours", distinct.len());
}

#[tokio::test]
async fn pandas_reads_a_csv_sent_in_and_writes_one_back() {
    let code = "import pandas as pd\n\
                df = pd.read_csv('data.csv')\n\
                totals = df.groupby('city')['sales'].sum().sort_index()\n\
                import os\n\
                os.makedirs('out', exist_ok=True)\n\
                totals.to_csv('out/totals.csv')\n\
                print(len(df))";
    let csv = "city,sales\nOslo,3\nLima,5\nOslo,4\nLima,1\nPune,2\n";
    let result = run_and_clean(json!({
        "language": "python",
        "files": [
            { "name": "main.py", "content": code },
            { "name": "data.csv", "content": csv },
        ],
        "outputs": ["out/**"],
        "memory_mb": 256,
    }))
    .await;
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(result["stdout"], "5\n");
    let files = result["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{result}");
    let totals = named(&result, "out/totals.csv");
    assert_eq!(totals["media_type"], "text/csv");
    assert_eq!(
        String::from_utf8(content(totals)).unwrap(),
        "city,sales\nLima,6\nOslo,7\nPune,2\n"
    );
}

#[tokio::test]
async fn numpy_scipy_and_sympy_compute() {
    let code = "import numpy as np, scipy.linalg, sympy\n\
                a = np.array([[3.0, 1.0], [1.0, 2.0]])\n\
                print(np.linalg.solve(a, np.array([9.0, 8.0])).round(6).tolist())\n\
                print(round(float(scipy.linalg.det(a)), 6))\n\
                x = sympy.symbols('x')\n\
                print(sympy.integrate(x**2, (x, 0, 3)))";
    let result =
        run_and_clean(json!({ "language": "python", "code": code, "memory_mb": 256 })).await;
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(result["stdout"], "[2.0, 3.0]\n5.0\n9\n");
}

#[tokio::test]
async fn every_library_listed_for_python_imports_and_cpp_has_json() {
    let languages: Value = reqwest::get(shared().url("/languages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let language = |id: &str| {
        languages["languages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .cloned()
            .unwrap()
    };
    let python = language("python");
    let names: Vec<&str> = python["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    for expected in ["numpy", "pandas", "matplotlib", "scipy"] {
        assert!(names.contains(&expected), "{python}");
    }
    for library in python["libraries"].as_array().unwrap() {
        let version = library["version"].as_str().unwrap();
        assert!(
            version.starts_with(|c: char| c.is_ascii_digit()),
            "{library}"
        );
    }
    // The names are what a program imports, and the versions the ones it gets.
    let checks: Vec<String> = python["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "m = importlib.import_module({:?}); v = getattr(m, '__version__', None); print({:?}, v is None or str(v).startswith({:?}))",
                l["name"].as_str().unwrap(),
                l["name"].as_str().unwrap(),
                l["version"].as_str().unwrap(),
            )
        })
        .collect();
    let code = format!("import importlib\n{}", checks.join("\n"));
    let result =
        run_and_clean(json!({ "language": "python", "code": code, "memory_mb": 256 })).await;
    assert_eq!(result["status"], "success", "{result}");
    let stdout = result["stdout"].as_str().unwrap();
    assert_eq!(stdout.lines().count(), names.len(), "{stdout}");
    assert!(stdout.lines().all(|l| l.ends_with(" True")), "{stdout}");

    let cpp = language("cpp");
    assert_eq!(cpp["libraries"][0]["name"], "nlohmann-json", "{cpp}");
    let code = "#include <iostream>\n#include <nlohmann/json.hpp>\nint main(){ auto j = nlohmann::json::parse(R\"({\"a\":[1,2,3]})\"); std::cout << j[\"a\"].size() << \" \" << j.dump() << std::endl; }";
    let result = run_and_clean(json!({ "language": "cpp", "code": code })).await;
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(result["stdout"], "3 {\"a\":[1,2,3]}\n");
}

#[tokio::test]
async fn a_file_over_the_size_cap_is_listed_as_truncated() {
    // The shipped caps: 2 MiB a file, 8 MiB together.
    let code = "open('big.bin', 'wb').write(b'x' * (3 * 1024 * 1024))\n\
                open('small.txt', 'w').write('kept')";
    let result = run_and_clean(json!({
        "language": "python",
        "code": code,
        "outputs": ["*.bin", "*.txt"],
    }))
    .await;
    assert_eq!(result["status"], "success", "{result}");
    let big = named(&result, "big.bin");
    assert_eq!(big["truncated"], true);
    assert_eq!(big["size"], 3 * 1024 * 1024);
    assert!(big.get("content").is_none(), "{big}");
    assert_eq!(content(named(&result, "small.txt")), b"kept");
    assert_eq!(result["files_truncated"], true);
    assert_eq!(result["files_omitted"], 0);
}

#[tokio::test]
async fn a_symlink_to_etc_passwd_and_a_fifo_are_refused() {
    let code = "import os\n\
                os.symlink('/etc/passwd', 'passwd')\n\
                os.mkfifo('pipe')\n\
                os.makedirs('out')\n\
                os.symlink('/etc', 'out/etc')\n\
                open('locked.txt', 'w').write('locked')\n\
                os.chmod('locked.txt', 0)\n\
                open('plain.txt', 'w').write('plain')";
    let result = run_and_clean(json!({
        "language": "python",
        "code": code,
        "outputs": ["passwd", "pipe", "out/**", "*.txt"],
    }))
    .await;
    assert_eq!(result["status"], "success", "{result}");
    let passwd = named(&result, "passwd");
    assert_eq!(passwd["refused"], "a symbolic link (never followed)");
    assert!(passwd.get("content").is_none());
    assert_eq!(
        named(&result, "pipe")["refused"],
        "a named pipe (never read)"
    );
    // A link to a directory is not walked into: only the link itself is listed.
    let names: Vec<&str> = result["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["locked.txt", "out/etc", "passwd", "pipe", "plain.txt"],
        "{result}"
    );
    // A file the sandbox user may not read is said so; the others still come back.
    assert_eq!(
        named(&result, "locked.txt")["refused"],
        "could not be read by the sandbox user"
    );
    assert_eq!(content(named(&result, "plain.txt")), b"plain");
    assert!(!result.to_string().contains("root:x:0:0"));
}

#[tokio::test]
async fn ten_thousand_tiny_files_stop_at_the_count_cap_quickly() {
    let code = "import os\nos.makedirs('out')\n\
                for i in range(10000):\n    open('out/%05d.txt' % i, 'w').write(str(i))";
    // The shipped work dir holds 4096 inodes: room for 10 000 files here.
    let app = start_on_own_runtime(&[("RUNBOX_SANDBOX__WORK_DIR_INODES", "12000")]);
    let started = Instant::now();
    let result = app
        .run_ok(json!({
            "language": "python",
            "code": code,
            "outputs": ["out/*.txt"],
            "timeout_ms": 20000,
        }))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(result["status"], "success", "{result}");
    let files = result["files"].as_array().unwrap();
    assert_eq!(files.len(), 64);
    assert_eq!(result["files_truncated"], true);
    // The scan itself stops at 4096 entries: the rest are neither listed nor counted.
    assert_eq!(result["files_omitted"], 4096 - 64);
    for file in files {
        let name = file["name"].as_str().unwrap();
        let number: u32 = name[4..9].parse().unwrap();
        assert_eq!(content(file), number.to_string().as_bytes());
    }
    // What reading them out adds to the run: well under the program's own time.
    let run_ms = result["duration_ms"].as_u64().unwrap();
    let beyond_run = elapsed.saturating_sub(Duration::from_millis(run_ms));
    assert!(
        beyond_run < Duration::from_secs(3),
        "{beyond_run:?} beyond the run"
    );
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn outputs_come_back_from_a_session_run() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "python").await;
    let (status, first) = run_in_session(
        &app,
        &id,
        json!({ "language": "python", "code": "open('notes.txt', 'w').write('one')", "outputs": ["*.txt"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(content(named(&first, "notes.txt")), b"one");
    // The work dir lives on: the next run's outputs see both files.
    let (status, second) = run_in_session(
        &app,
        &id,
        json!({ "language": "python", "code": "open('more.txt', 'w').write('two')", "outputs": ["*.txt"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(content(named(&second, "more.txt")), b"two");
    assert_eq!(content(named(&second, "notes.txt")), b"one");
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_input_of_a_batch_has_its_files() {
    let code =
        "import sys\nn = sys.stdin.read().strip()\nopen('answer.txt', 'w').write(n * 2)\nprint(n)";
    let result = run_and_clean(json!({
        "language": "python",
        "code": code,
        "tests": [{ "input": "a" }, { "input": "b" }],
        "outputs": ["answer.txt"],
    }))
    .await;
    let tests = result["tests"].as_array().unwrap();
    assert_eq!(content(named(&tests[0], "answer.txt")), b"aa");
    assert_eq!(content(named(&tests[1], "answer.txt")), b"bb");
    assert!(result.get("files").is_none(), "{result}");
}

#[tokio::test]
async fn a_program_cut_short_returns_no_files_and_says_why() {
    let code = "open('partial.txt', 'w').write('x')\nimport time\ntime.sleep(30)";
    let result = run_and_clean(json!({
        "language": "python",
        "code": code,
        "outputs": ["*.txt"],
        "timeout_ms": 1000,
    }))
    .await;
    assert_eq!(result["status"], "timeout");
    assert_eq!(result["files"], json!([]));
    assert!(
        result["files_error"]
            .as_str()
            .unwrap()
            .contains("did not end by itself"),
        "{result}"
    );
    // A compile error: the program never ran.
    let result = run_and_clean(json!({
        "language": "c",
        "code": "int main( {",
        "outputs": ["*"],
    }))
    .await;
    assert_eq!(result["status"], "compile_error");
    assert!(
        result["files_error"]
            .as_str()
            .unwrap()
            .contains("never ran")
    );
}

#[tokio::test]
async fn bad_patterns_are_refused_before_any_container() {
    // An app of its own: no other test's containers in its count.
    let app = start_on_own_runtime(&[]);
    let created = app.server.executor.sandboxes().created_count();
    for (outputs, expected) in [
        (json!(["/etc/passwd"]), "relative to the work dir"),
        (json!(["../x"]), "must not leave the work dir"),
        (json!([]), "1 to 16 patterns"),
        (json!(["a["]), "not a valid glob"),
    ] {
        let (status, body) = app
            .run(json!({ "language": "python", "code": "print(1)", "outputs": outputs }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
    let (status, body) = app
        .run(json!({ "language": "python", "code": "print(1)", "outputs": "*.png" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_json", "{body}");
    assert_eq!(app.server.executor.sandboxes().created_count(), created);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reused_sandbox_keeps_nothing_of_the_files_it_returned() {
    if !nested_sandboxes() {
        return;
    }
    let app = start_on_own_runtime(&[
        ("RUNBOX_POOL__ENABLED", "true"),
        ("RUNBOX_POOL__SIZES", "{ python = 1 }"),
    ]);
    let write = json!({
        "language": "python",
        "code": "open('secret.txt', 'w').write('mine')",
        "outputs": ["*.txt"],
    });
    let look = json!({ "language": "python", "code": "import os; print(sorted(os.listdir('.')))" });
    wait_for_pool_ready(&app, "python").await;
    let created = app.server.executor.sandboxes().created_count();
    for _ in 0..3 {
        let written = app.run_ok(write.clone()).await;
        assert_eq!(content(named(&written, "secret.txt")), b"mine", "{written}");
        wait_for_pool_ready(&app, "python").await;
        let looked = app.run_ok(look.clone()).await;
        wait_for_pool_ready(&app, "python").await;
        assert_eq!(looked["stdout"], "['main.py']\n", "{looked}");
    }
    // One container served all six jobs, files read out in between.
    assert_eq!(app.server.executor.sandboxes().created_count(), created);
    app.server.shutdown().await.unwrap();
    wait_until_no_containers(&[
        "runbox.language=python".to_owned(),
        "runbox.kind=pool".to_owned(),
    ])
    .await;
}
