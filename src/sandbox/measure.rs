//! Engine-level measurements for `runbox bench`: where a sandbox's time goes (create, attach,
//! start, the job, remove), what each hardening setting costs, the engine's own
//! create+start+remove ceiling, and the baselines the service is compared with (a bare Engine
//! API run, `docker run --rm` with the same flags). Here because only `sandbox/` talks to the
//! engine; nothing in the service calls it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::policy::{self, MainProcess, SandboxSpec};
use super::runner::{self, RunnerJob};
use super::{OutputCollector, SandboxError, Sandboxes};

/// Where one sandbox's time went, step by step.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepTimes {
    pub create: Duration,
    pub attach: Duration,
    pub start: Duration,
    /// Sending the job to the runner until both trailers are in.
    pub job: Duration,
    /// Engine-side exit of the container after the job (what waiting for it would cost).
    pub wait: Duration,
    pub remove: Duration,
}

/// One hardening setting left out, to see what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The full policy.
    Full,
    NoInit,
    NoTmpfs,
    WritableRootfs,
    NoMemoryLimit,
    NoCpuLimit,
    NoPidsLimit,
    NoUlimits,
    KeepCapabilities,
    NoSecurityOpt,
    /// `json-file` instead of the `none` log driver.
    JsonFileLogs,
    /// The engine's default IPC mode and /dev/shm instead of a private, sized one.
    DefaultIpc,
    /// No network namespace of its own (`host`): only to see what `none` costs.
    HostNetwork,
}

impl Variant {
    pub const ALL: [Variant; 13] = [
        Variant::Full,
        Variant::NoInit,
        Variant::NoTmpfs,
        Variant::WritableRootfs,
        Variant::NoMemoryLimit,
        Variant::NoCpuLimit,
        Variant::NoPidsLimit,
        Variant::NoUlimits,
        Variant::KeepCapabilities,
        Variant::NoSecurityOpt,
        Variant::JsonFileLogs,
        Variant::DefaultIpc,
        Variant::HostNetwork,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Variant::Full => "full policy",
            Variant::NoInit => "without --init (tini)",
            Variant::NoTmpfs => "without the /box tmpfs",
            Variant::WritableRootfs => "without --read-only",
            Variant::NoMemoryLimit => "without memory/swap caps",
            Variant::NoCpuLimit => "without the CPU quota",
            Variant::NoPidsLimit => "without the pids cap",
            Variant::NoUlimits => "without ulimits",
            Variant::KeepCapabilities => "without --cap-drop ALL",
            Variant::NoSecurityOpt => "without no-new-privileges",
            Variant::JsonFileLogs => "json-file logs instead of none",
            Variant::DefaultIpc => "default IPC and /dev/shm",
            Variant::HostNetwork => "host network instead of none",
        }
    }

    fn apply(self, body: &mut ContainerCreateBody) {
        let hc = body
            .host_config
            .as_mut()
            .expect("the policy sets a host config");
        match self {
            Variant::Full => {}
            Variant::NoInit => hc.init = Some(false),
            Variant::NoTmpfs => hc.tmpfs = None,
            Variant::WritableRootfs => hc.readonly_rootfs = Some(false),
            Variant::NoMemoryLimit => {
                hc.memory = None;
                hc.memory_swap = None;
            }
            Variant::NoCpuLimit => hc.nano_cpus = None,
            Variant::NoPidsLimit => hc.pids_limit = None,
            Variant::NoUlimits => hc.ulimits = None,
            Variant::KeepCapabilities => hc.cap_drop = None,
            Variant::NoSecurityOpt => hc.security_opt = None,
            Variant::JsonFileLogs => {
                hc.log_config = None;
            }
            Variant::DefaultIpc => {
                hc.ipc_mode = None;
                hc.shm_size = None;
            }
            Variant::HostNetwork => {
                hc.network_mode = Some("host".to_owned());
                body.network_disabled = Some(false);
            }
        }
    }
}

impl Sandboxes {
    /// One runner sandbox through every step, timed: create, attach, start, one job (`argv`),
    /// the container's exit once the job is done, remove.
    pub async fn step_times(
        &self,
        spec: &SandboxSpec,
        argv: Vec<String>,
    ) -> anyhow::Result<StepTimes> {
        self.negotiate().await?;
        let docker = self.docker();
        let mut times = StepTimes::default();
        // The steps of a fresh sandbox's one job: a reused runner never exits to be waited for.
        let fresh = crate::config::SandboxConfig {
            reuse: crate::config::Reuse::Fresh,
            ..self.shared.config.clone()
        };
        let mut body = policy::container_body(&fresh, spec);
        // Exit after the job instead of sleeping, so the engine-side exit can be timed.
        if let Some(cmd) = body.cmd.as_mut()
            && let Some(script) = cmd.last_mut()
        {
            *script = script.replace("exec sleep infinity", "exit \"$status\"");
        }
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.container_name())
            .build();
        let clock = Instant::now();
        let id = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| SandboxError::from_create(e, &spec.image, &self.shared.config.runtime))?
            .id;
        times.create = clock.elapsed();
        let result = async {
            let clock = Instant::now();
            let attach = AttachContainerOptionsBuilder::default()
                .stdin(true)
                .stdout(true)
                .stderr(true)
                .stream(true)
                .build();
            let attached = docker
                .attach_container(&id, Some(attach))
                .await
                .map_err(SandboxError::from_engine)?;
            times.attach = clock.elapsed();
            let clock = Instant::now();
            docker
                .start_container(&id, None)
                .await
                .map_err(SandboxError::from_engine)?;
            times.start = clock.elapsed();
            let mut wait = docker.wait_container(&id, None);
            let clock = Instant::now();
            let io = runner::RunnerIo {
                output: attached.output,
                input: attached.input,
            };
            let mut io = io;
            let job = RunnerJob {
                step: runner::Step::Run,
                archive: bytes::Bytes::new(),
                argv,
                stdin: bytes::Bytes::new(),
                live_stdin: None,
                timeout: Duration::from_secs(10),
                cpu_limit: None,
                kill: Default::default(),
            };
            let mut output = OutputCollector::new(4096);
            runner::run(&self.shared, &id, &mut io, job, false, &mut output).await?;
            times.job = clock.elapsed();
            let clock = Instant::now();
            while let Some(step) = wait.next().await {
                if let Err(err) = step {
                    // bollard reports a non-zero exit as an error; the time is what counts.
                    tracing::debug!(error = %err, "wait");
                }
            }
            times.wait = clock.elapsed();
            anyhow::Ok(())
        }
        .await;
        let clock = Instant::now();
        remove(docker, &id).await?;
        times.remove = clock.elapsed();
        result?;
        Ok(times)
    }

    /// Create, start and remove one idle sandbox with `variant` of the policy.
    pub async fn create_start_remove(
        &self,
        spec: &SandboxSpec,
        variant: Variant,
    ) -> anyhow::Result<()> {
        self.negotiate().await?;
        let docker = self.docker();
        let mut body = policy::container_body(&self.shared.config, spec);
        variant.apply(&mut body);
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.container_name())
            .build();
        let id = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| SandboxError::from_create(e, &spec.image, &self.shared.config.runtime))?
            .id;
        let started = docker
            .start_container(&id, None)
            .await
            .map_err(SandboxError::from_engine);
        remove(docker, &id).await?;
        Ok(started?)
    }

    /// The engine's own ceiling: `concurrency` workers creating, starting and removing idle
    /// sandboxes with the full policy for `duration`; returns how many completed.
    pub async fn engine_ceiling(
        &self,
        make_spec: impl Fn() -> SandboxSpec + Send + Sync + 'static,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<u64> {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let make_spec = Arc::new(make_spec);
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (sandboxes, done, stop, make_spec) =
                (self.clone(), done.clone(), stop.clone(), make_spec.clone());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    sandboxes
                        .create_start_remove(&make_spec(), Variant::Full)
                        .await?;
                    if !stop.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(())
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.context("a load worker failed")??;
        }
        Ok(done.load(Ordering::Relaxed))
    }

    /// The baseline: the same hardened container running `cmd` as its main process, created,
    /// started, waited for and removed through the Engine API, nothing else.
    pub async fn bare_run(&self, spec: &SandboxSpec, cmd: Vec<String>) -> anyhow::Result<()> {
        self.negotiate().await?;
        let docker = self.docker();
        let mut body = policy::container_body(&self.shared.config, spec);
        body.cmd = Some(cmd);
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.container_name())
            .build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| SandboxError::from_create(e, &spec.image, &self.shared.config.runtime))?;
        let result = async {
            docker
                .start_container(&created.id, None)
                .await
                .map_err(SandboxError::from_engine)?;
            let mut wait = docker.wait_container(&created.id, None);
            while let Some(step) = wait.next().await {
                step.map_err(SandboxError::from_engine)?;
            }
            Ok(())
        }
        .await;
        remove(docker, &created.id).await?;
        result
    }

    /// `docker run --rm` of `cmd` with exactly the service's flags, through the docker CLI;
    /// returns its stdout.
    pub async fn docker_cli_run(
        &self,
        spec: &SandboxSpec,
        cmd: &[String],
    ) -> anyhow::Result<Vec<u8>> {
        let seccomp_file =
            std::env::temp_dir().join(format!("runbox-seccomp-{}.json", std::process::id()));
        let kernel = policy::seccomp_kernel(&self.shared.config);
        tokio::fs::write(
            &seccomp_file,
            super::seccomp::profile(kernel, super::seccomp::Role::Program),
        )
        .await
        .context("writing the seccomp profile")?;
        let flags = policy::docker_run_flags(
            &policy::container_body(&self.shared.config, spec),
            &seccomp_file,
        );
        let output = tokio::process::Command::new("docker")
            .arg("run")
            .args(&flags)
            .arg(&spec.image)
            .args(cmd)
            .output()
            .await
            .context("running the docker CLI")?;
        if !output.status.success() {
            anyhow::bail!(
                "docker run failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output.stdout)
    }
}

impl Sandboxes {
    /// How many running sandboxes of `kind` there are and the memory their cgroups charge
    /// right now (host cgroup files; `None` where runbox cannot see them).
    pub async fn memory_of_kind(
        &self,
        kind: super::SandboxKind,
    ) -> anyhow::Result<(usize, Option<u64>)> {
        let containers = self.list(Some(kind), &[], false).await?;
        let mut total = Some(0u64);
        for container in &containers {
            let bytes = match &container.id {
                Some(id) => super::host_cgroup::memory_usage(id).await,
                None => None,
            };
            total = total.zip(bytes).map(|(t, b)| t + b);
        }
        Ok((containers.len(), total))
    }
}

/// A spec for measurements: the policy's main process as asked, a fresh id.
pub fn spec_for(image: &str, language: &str, memory_mb: u64, main: MainProcess) -> SandboxSpec {
    SandboxSpec {
        kind: super::SandboxKind::Probe,
        id: uuid::Uuid::new_v4().to_string(),
        image: image.to_owned(),
        language: language.to_owned(),
        memory_mb,
        main,
        work_dir_mb: None,
        labels: Vec::new(),
        warm_compiler: None,
    }
}

async fn remove(docker: &bollard::Docker, id: &str) -> anyhow::Result<()> {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    docker
        .remove_container(id, Some(options))
        .await
        .map_err(SandboxError::from_engine)?;
    Ok(())
}
