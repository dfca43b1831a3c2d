//! The compile cache: a hit answers as the miss did, anything that changes the compile misses,
//! sessions never use it, and it stays within its bounds. Each test has its own app, so the
//! cache's counters are its own.

use serde_json::{Value, json};

use crate::common::{TestApp, run_in_session, session_id, start_on_own_runtime};

const HELLO: &str = "#include <stdio.h>\nint main(void){ puts(\"hi from c\"); return 3; }";

async fn c(app: &TestApp, code: &str) -> Value {
    let (status, body) = app.run(json!({ "language": "c", "code": code })).await;
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[tokio::test]
async fn a_hit_answers_as_the_miss_did_and_changes_miss() {
    let app = start_on_own_runtime(&[]);
    let miss = c(&app, HELLO).await;
    assert_eq!(miss["status"], "runtime_error", "{miss}");
    assert_eq!(miss["compile"]["cached"], false, "{miss}");
    let hit = c(&app, HELLO).await;
    assert_eq!(hit["compile"]["cached"], true, "{hit}");
    for field in ["status", "exit_code", "stdout", "stderr"] {
        assert_eq!(hit[field], miss[field], "{field}: {hit} vs {miss}");
    }
    for field in ["status", "exit_code", "stdout", "stderr", "duration_ms"] {
        assert_eq!(
            hit["compile"][field], miss["compile"][field],
            "compile {field}: {hit} vs {miss}"
        );
    }
    assert_eq!(app.metric("runbox_compile_cache_hits_total").await, 1);

    // Another source is another compile.
    let other = c(&app, &HELLO.replace("hi from c", "another")).await;
    assert_eq!(other["compile"]["cached"], false, "{other}");
    assert_eq!(other["stdout"], "another\n", "{other}");

    // Other flags (Judge0's compiler_options) are other compiles too: the second run must
    // not get the first one's binary.
    for value in [42, 43] {
        let response = reqwest::Client::new()
            .post(app.url("/judge0/submissions?wait=true"))
            .json(&json!({
                "language_id": 50,
                "source_code": "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", VALUE); return 0; }",
                "compiler_options": format!("-DVALUE={value}"),
            }))
            .send()
            .await
            .unwrap();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["stdout"], format!("{value}\n"), "{answer}");
    }

    // A compile error is kept as well, and the same error again takes no sandbox at all.
    let broken = "int main(void) { return missing; }";
    let first = c(&app, broken).await;
    assert_eq!(first["status"], "compile_error", "{first}");
    let created = app.server.executor.sandboxes().created_count();
    let again = c(&app, broken).await;
    assert_eq!(again["status"], "compile_error", "{again}");
    assert_eq!(again["compile"]["cached"], true, "{again}");
    assert_eq!(again["compile"]["stderr"], first["compile"]["stderr"]);
    assert_eq!(app.server.executor.sandboxes().created_count(), created);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_session_compile_is_never_cached() {
    let app = start_on_own_runtime(&[]);
    let id = session_id(&app, "c").await;
    for _ in 0..2 {
        let (status, body) =
            run_in_session(&app, &id, json!({ "language": "c", "code": HELLO })).await;
        assert!(status.is_success(), "{body}");
        assert_eq!(body["stdout"], "hi from c\n", "{body}");
        assert_eq!(body["compile"]["cached"], false, "{body}");
    }
    assert_eq!(app.metric("runbox_compile_cache_entries").await, 0);
    assert_eq!(app.metric("runbox_compile_cache_hits_total").await, 0);
    // The same program outside the session is a miss: the session's compile was not kept.
    let outside = c(&app, HELLO).await;
    assert_eq!(outside["compile"]["cached"], false, "{outside}");
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_cache_keeps_within_its_entry_bound() {
    let app = start_on_own_runtime(&[("RUNBOX_COMPILE_CACHE__MAX_ENTRIES", "2")]);
    for word in ["one", "two", "three"] {
        let r = c(&app, &HELLO.replace("hi from c", word)).await;
        assert_eq!(r["stdout"], format!("{word}\n"), "{r}");
    }
    assert_eq!(app.metric("runbox_compile_cache_entries").await, 2);
    assert_eq!(app.metric("runbox_compile_cache_evictions_total").await, 1);
    // The first went out: it is compiled again.
    let first = c(&app, &HELLO.replace("hi from c", "one")).await;
    assert_eq!(first["compile"]["cached"], false, "{first}");
    let last = c(&app, &HELLO.replace("hi from c", "three")).await;
    assert_eq!(last["compile"]["cached"], true, "{last}");
    app.server.shutdown().await.unwrap();
}
