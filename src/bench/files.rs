//! `runbox bench --files`: what the libraries and the files out cost a user. Python hello
//! world (does the scientific stack in the image slow a program that imports nothing?), the
//! stack's import in the sandbox (time and memory), a matplotlib plot returned as a PNG, and a
//! 1 MiB file returned next to the same program returning nothing. Every figure is `runs`
//! requests sent back to back (sequential: no wait for the pool to refill between them).

use serde_json::{Value, json};

use super::{ServerUnderTest, ms, percentile, section, timed_post};

/// Writes 1 MiB of bytes that do not compress (base64 sees every byte).
const ONE_MIB: &str =
    "import os\nopen('out.bin', 'wb').write(os.urandom(1024 * 1024))\nprint('written')";
const IMPORTS: &str = "import numpy, pandas, matplotlib.pyplot\nprint('imported')";
const PLOT: &str = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.savefig('plot.png')\nprint('plotted')";

pub(super) async fn measure(server: &ServerUnderTest, runs: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = server.url("/run");
    section(&format!(
        "files and libraries: {runs} runs each, back to back (e2e p50/p90/p99; run, memory: medians)"
    ));
    println!(
        "{:<52} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8}",
        "program", "p50", "p90", "p99", "run", "memory", "status"
    );
    let rows: [(&str, Value); 6] = [
        (
            "python hello world",
            json!({ "language": "python", "code": "print('hello')" }),
        ),
        (
            "import numpy, pandas, matplotlib (128 MB default)",
            json!({ "language": "python", "code": IMPORTS }),
        ),
        (
            "import numpy, pandas, matplotlib (256 MB)",
            json!({ "language": "python", "code": IMPORTS, "memory_mb": 256 }),
        ),
        (
            "matplotlib plot, PNG returned (256 MB)",
            json!({ "language": "python", "code": PLOT, "memory_mb": 256, "outputs": ["*.png"] }),
        ),
        (
            "1 MiB file written, not returned",
            json!({ "language": "python", "code": ONE_MIB }),
        ),
        (
            "1 MiB file written and returned (outputs)",
            json!({ "language": "python", "code": ONE_MIB, "outputs": ["out.bin"] }),
        ),
    ];
    let mut medians = Vec::new();
    for (name, body) in rows {
        // One unmeasured run: the first after a start pays for caches no later run sees.
        timed_post(&client, &url, &body).await?;
        let mut e2e = Vec::with_capacity(runs);
        let mut run_ms = Vec::with_capacity(runs);
        let mut memory_kb = Vec::with_capacity(runs);
        let mut statuses = std::collections::BTreeSet::new();
        for _ in 0..runs {
            let (took, answer) = timed_post(&client, &url, &body).await?;
            e2e.push(took);
            run_ms.push(answer["duration_ms"].as_u64().unwrap_or(0));
            memory_kb.push(answer["memory_kb"].as_u64().unwrap_or(0));
            let returned = answer["files"]
                .as_array()
                .is_none_or(|files| files.iter().all(|f| f["content"].is_string()));
            statuses.insert(match (answer["status"].as_str(), returned) {
                (Some(status), true) => status.to_owned(),
                (Some(status), false) => format!("{status}, a file not returned"),
                (None, _) => "no status".to_owned(),
            });
        }
        e2e.sort();
        run_ms.sort();
        memory_kb.sort();
        println!(
            "{name:<52} {:>6.1}ms {:>6.1}ms {:>6.1}ms {:>6}ms {:>8}KB {:>8}",
            ms(percentile(&e2e, 0.5)),
            ms(percentile(&e2e, 0.9)),
            ms(percentile(&e2e, 0.99)),
            run_ms[run_ms.len() / 2],
            memory_kb[memory_kb.len() / 2],
            statuses.into_iter().collect::<Vec<_>>().join("/"),
        );
        medians.push(percentile(&e2e, 0.5));
    }
    let cost = medians[5].saturating_sub(medians[4]);
    println!(
        "returning a 1 MiB file costs {:.1} ms at the median (p50 with outputs minus p50 without)",
        ms(cost)
    );
    Ok(())
}
