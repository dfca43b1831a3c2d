//! `docker inspect` of a live job's container shows every hardening setting.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{assert_removed, containers_with_labels, docker, shared, under_gvisor};

/// Memory cap that only this test's job asks for, to find its container among parallel tests.
const MARKER_MEMORY_MB: i64 = 203;

#[tokio::test]
async fn live_container_has_every_hardening_setting() {
    let job = tokio::spawn(shared().run_ok(json!({
        "language": "python",
        "code": "import time\ntime.sleep(4)\nprint('done')",
        "memory_mb": MARKER_MEMORY_MB
    })));
    let docker = docker().await;
    let started = Instant::now();
    let inspect = loop {
        let mut found = None;
        for c in containers_with_labels(&["runbox.kind=job".to_owned()]).await {
            let inspect = docker
                .inspect_container(c.id.as_deref().unwrap(), None)
                .await;
            if let Ok(i) = inspect
                && i.host_config.as_ref().and_then(|h| h.memory) == Some(MARKER_MEMORY_MB << 20)
                && i.state.as_ref().and_then(|s| s.running) == Some(true)
            {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never saw the job's container"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let hc = inspect.host_config.unwrap();
    let config = inspect.config.unwrap();
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    assert!(hc.cap_add.unwrap_or_default().is_empty());
    let security = hc.security_opt.unwrap();
    assert_eq!(security[0], "no-new-privileges");
    let profile: serde_json::Value = serde_json::from_str(
        security[1]
            .strip_prefix("seccomp=")
            .expect("runbox's own seccomp profile"),
    )
    .unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.memory_swap, hc.memory, "swap equals the memory cap");
    assert_eq!(hc.nano_cpus, Some(1_000_000_000));
    if under_gvisor() {
        // The program's cap is RLIMIT_NPROC there; the host cap leaves room for gVisor's own
        // threads (see the sandbox policy).
        assert!(hc.pids_limit > Some(64));
        assert!(
            hc.ulimits
                .iter()
                .flatten()
                .any(|u| u.name.as_deref() == Some("nproc") && u.hard == Some(64)),
        );
    } else {
        assert_eq!(hc.pids_limit, Some(64));
    }
    assert_eq!(hc.init, Some(true));
    assert_eq!(hc.log_config.unwrap().typ.as_deref(), Some("none"));
    assert_eq!(hc.ipc_mode.as_deref(), Some("private"));
    assert_eq!(hc.shm_size, Some(16 << 20));
    let ulimits: Vec<String> = hc
        .ulimits
        .unwrap()
        .iter()
        .map(|u| {
            format!(
                "{}={}:{}",
                u.name.clone().unwrap(),
                u.soft.unwrap(),
                u.hard.unwrap()
            )
        })
        .collect();
    assert!(
        ulimits.contains(&"nofile=512:512".to_owned()),
        "{ulimits:?}"
    );
    assert!(
        ulimits.iter().any(|u| u.starts_with("fsize=")),
        "{ulimits:?}"
    );
    let tmpfs = hc.tmpfs.unwrap();
    let writable: Vec<_> = tmpfs
        .iter()
        .filter(|(_, options)| !options.split(',').any(|o| o == "ro"))
        .map(|(path, _)| path.as_str())
        .collect();
    assert_eq!(
        writable,
        ["/box"],
        "the work dir is the only writable mount: {tmpfs:?}"
    );
    let options = &tmpfs["/box"];
    for option in ["size=", "nr_inodes=", "nosuid", "nodev", "exec"] {
        assert!(options.contains(option), "{option} in {options}");
    }
    assert!(
        hc.binds.unwrap_or_default().is_empty(),
        "no host paths are mounted"
    );
    assert_eq!(config.user.as_deref(), Some("65534:65534"));
    assert_eq!(config.hostname.as_deref(), Some("runbox"));
    let env = config.env.unwrap();
    assert!(
        env.iter().all(|e| ["PATH=", "HOME=", "TMPDIR=", "LANG="]
            .iter()
            .any(|p| e.starts_with(p))),
        "{env:?}"
    );
    let labels = config.labels.unwrap();
    assert_eq!(labels["runbox.managed"], "true");
    assert_eq!(labels["runbox.kind"], "job");
    assert_eq!(labels["runbox.language"], "python");

    let result = job.await.unwrap();
    assert_eq!(result["stdout"], "done\n");
    assert_eq!(labels["runbox.id"], result["id"].as_str().unwrap());
    assert_removed(result["id"].as_str().unwrap()).await;
}

/// Ids of running job containers whose memory cap is `memory_mb`.
async fn job_containers_with_memory(memory_mb: i64) -> Vec<String> {
    let docker = docker().await;
    let mut found = Vec::new();
    for c in containers_with_labels(&["runbox.kind=job".to_owned()]).await {
        let id = c.id.unwrap();
        if let Ok(i) = docker.inspect_container(&id, None).await
            && i.host_config.and_then(|h| h.memory) == Some(memory_mb << 20)
        {
            found.push(id);
        }
    }
    found
}

#[tokio::test]
async fn client_disconnect_mid_run_removes_the_container() {
    let app = shared();
    let memory = 207;
    let request = tokio::spawn(
        reqwest::Client::new()
            .post(app.url("/run"))
            .json(&json!({ "language": "python", "code": "import time\ntime.sleep(20)", "memory_mb": memory, "timeout_ms": 25000 }))
            .send(),
    );
    let started = Instant::now();
    while job_containers_with_memory(memory).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the job never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client goes away mid-run: its connection is dropped.
    request.abort();
    let _ = request.await;
    let gone = Instant::now();
    while !job_containers_with_memory(memory).await.is_empty() {
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "container outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
