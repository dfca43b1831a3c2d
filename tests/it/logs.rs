//! What runbox's log lines may hold: never a session id (the only credential of a room).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{ServerProcess, session_id_at};

#[tokio::test]
async fn session_ids_never_reach_the_log() {
    let log = std::env::temp_dir().join(format!("runbox-log-{}.txt", uuid::Uuid::new_v4()));
    // runbox at debug; its dependencies at the default level (bollard at debug prints engine
    // URLs, which name containers).
    let server =
        ServerProcess::start(&[("RUNBOX_LOG", "info,runbox=debug")], None, Some(&log)).await;
    let client = reqwest::Client::new();
    let id = session_id_at(&server.base, "bash").await;
    let run = client
        .post(format!("{}/sessions/{id}/run", server.base))
        .json(&json!({ "language": "bash", "code": "echo hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), StatusCode::OK);
    for path in [
        format!("/sessions/{id}"),
        format!("/sessions/{id}/terminal"),
    ] {
        client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
    }
    let deleted = client
        .delete(format!("{}/sessions/{id}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(text.contains("/sessions/{id}/run"), "{text}");
    assert!(text.contains("session="), "{text}");
    // Neither the id nor any 8-character piece of it.
    let compact = id.replace('-', "");
    for piece in [id.as_str(), &id[..8], &compact[compact.len() - 8..]] {
        assert!(!text.contains(piece), "the log holds {piece:?}:\n{text}");
    }
}
