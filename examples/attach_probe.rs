// Throwaway timing probe (not committed).
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::*;
use futures_util::StreamExt;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

#[tokio::main]
async fn main() {
    let docker = Docker::connect_with_defaults().unwrap();
    docker.clone().negotiate_version().await.unwrap();
    let script = r#"read -r n; exec python3 -c 'print("hello")'"#;
    for round in 0..8 {
        let t0 = Instant::now();
        let body = ContainerCreateBody {
            image: Some("runbox/python:latest".into()),
            cmd: Some(vec!["bash".into(), "-c".into(), script.into()]),
            entrypoint: Some(vec![]),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            user: Some("65534:65534".into()),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                init: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                readonly_rootfs: Some(true),
                memory: Some(128 << 20),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .unwrap()
            .id;
        let t_create = t0.elapsed();
        let att = docker
            .attach_container(
                &id,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await
            .unwrap();
        let t_attach = t0.elapsed();
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .unwrap();
        let t_start = t0.elapsed();
        let mut wait = docker.wait_container(
            &id,
            Some(
                WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build(),
            ),
        );
        // prepared. now the "job"
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let j0 = Instant::now();
        let mut input = att.input;
        let mut output = att.output;
        input.write_all(b"1\n").await.unwrap();
        input.shutdown().await.unwrap();
        let mut out = Vec::new();
        let mut first = None;
        while let Some(f) = output.next().await {
            let f = f.unwrap();
            if first.is_none() {
                first = Some(j0.elapsed());
            }
            out.extend_from_slice(&f.into_bytes());
        }
        let t_eof = j0.elapsed();
        let code = match wait.next().await {
            Some(Ok(r)) => r.status_code,
            Some(Err(e)) => {
                format!("{e}");
                -1
            }
            None => -2,
        };
        let t_wait = j0.elapsed();
        let r0 = Instant::now();
        docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await
            .unwrap();
        let t_rm = r0.elapsed();
        println!(
            "round {round}: create {:?} attach {:?} start {:?} | job: first {:?} eof {:?} wait {:?} code {code} | remove {:?} out {:?}",
            t_create,
            t_attach - t_create,
            t_start - t_attach,
            first,
            t_eof,
            t_wait,
            t_rm,
            String::from_utf8_lossy(&out)
        );
    }
}
