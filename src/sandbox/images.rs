//! Sandbox images: the shared base (debootstrap + import where no registry is reachable) and
//! one image per language, built from `images/<id>/Dockerfile`, labelled with the language,
//! its version (read by running the image, never typed by hand) and the content hash of its
//! build context, so an unchanged image is never rebuilt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::policy::{ENVIRONMENT, SandboxKind, SandboxSpec};
use super::{ExecEnd, ExecSpec, OutputCollector, SandboxError, Sandboxes};
use crate::config::ImagesConfig;
use crate::languages::Language;

pub const LABEL_LANGUAGE: &str = "runbox.language";
pub const LABEL_VERSION: &str = "runbox.version";
pub const LABEL_CONTEXT_HASH: &str = "runbox.context-sha256";
/// The catalogue's libraries with the versions the image holds, as a JSON object.
pub const LABEL_LIBRARIES: &str = "runbox.libraries";
/// Added to every language image: bubblewrap, which makes a reused sandbox's fresh nested
/// sandbox for each job (see `runner::NESTED_SCRIPT`), and the runner's bash, executable but
/// unreadable by the sandbox user, which makes the running runner non-dumpable (see
/// `runner::SCRIPT`).
fn runner_step() -> String {
    format!(
        "RUN apt-get update \\\n && apt-get install -y --no-install-recommends bubblewrap \\\n \
         && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/* \\\n \
         && install -D -o root -g root -m 0111 /bin/bash {}",
        super::runner::RUNNER_BINARY
    )
}

/// Base images runbox makes itself (with debootstrap) are named here; any other base is pulled.
const LOCAL_BASE_PREFIX: &str = "runbox/";
/// The build argument each Dockerfile takes its `FROM` from.
const BASE_BUILD_ARG: &str = "RUNBOX_BASE";
const VERSION_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const VERSION_PROBE_MEMORY_MB: u64 = 512;
const MAX_VERSION_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("cannot read build context {path}: {source}")]
    Context {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building {image} failed: {message}")]
    Build { image: String, message: String },
    #[error("making the base image failed: {0}")]
    Base(String),
    #[error("the version command of {language} failed: {message}")]
    Version { language: String, message: String },
}

/// What `GET /languages` and readiness need to know of a language's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The engine's id of the image (`sha256:…`).
    pub id: String,
    pub version: String,
    pub context_hash: Option<String>,
    /// Library name -> version (upstream part of the Debian version), as probed at build.
    pub libraries: Vec<(String, String)>,
}

/// What a build did for one image.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub image: String,
    pub version: String,
    pub rebuilt: bool,
    pub seconds: f64,
    pub size_bytes: Option<i64>,
}

impl Sandboxes {
    /// The labels of a language image, or `None` when the image is missing.
    pub async fn image_info(&self, language: &Language) -> Result<Option<ImageInfo>, SandboxError> {
        let inspect = match self.docker().inspect_image(&language.image_ref()).await {
            Ok(inspect) => inspect,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(err) => return Err(SandboxError::from_engine(err)),
        };
        let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
        Ok(Some(ImageInfo {
            id: inspect.id.unwrap_or_default(),
            version: labels
                .get(LABEL_VERSION)
                .cloned()
                .unwrap_or_else(|| "unknown".to_owned()),
            context_hash: labels.get(LABEL_CONTEXT_HASH).cloned(),
            libraries: labels
                .get(LABEL_LIBRARIES)
                .and_then(|json| {
                    serde_json::from_str::<std::collections::BTreeMap<String, String>>(json).ok()
                })
                .map(|map| map.into_iter().collect())
                .unwrap_or_default(),
        }))
    }

    /// Makes sure the base and every given language image exist and are up to date.
    pub async fn build_images(
        &self,
        config: &ImagesConfig,
        languages: &[std::sync::Arc<Language>],
    ) -> Result<Vec<BuildReport>, ImageError> {
        let base_id = self.ensure_base(config).await?;
        let mut reports = Vec::new();
        for language in languages {
            reports.push(self.build_language(config, &base_id, language).await?);
        }
        Ok(reports)
    }

    /// Returns the base image's id, making the base first when it is missing.
    async fn ensure_base(&self, config: &ImagesConfig) -> Result<String, ImageError> {
        if let Some(id) = self.image_id(&config.base).await? {
            tracing::info!(image = %config.base, "base image present");
            return Ok(id);
        }
        if config.base.starts_with(LOCAL_BASE_PREFIX) {
            tracing::info!(image = %config.base, suite = %config.suite, "base image missing: making it with debootstrap (about a minute)");
            self.debootstrap_base(config).await?;
        } else {
            tracing::info!(image = %config.base, "base image missing: pulling it");
            self.pull(&config.base).await?;
        }
        self.image_id(&config.base)
            .await?
            .ok_or_else(|| ImageError::Base(format!("{} is still missing", config.base)))
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, SandboxError> {
        match self.docker().inspect_image(image).await {
            Ok(inspect) => Ok(inspect.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(err) => Err(SandboxError::from_engine(err)),
        }
    }

    async fn pull(&self, image: &str) -> Result<(), ImageError> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut progress = self.docker().create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            step.map_err(|e| ImageError::Base(format!("pulling {image}: {e}")))?;
        }
        Ok(())
    }

    /// debootstrap a minimal Debian into a scratch directory, slim it the way
    /// `debian:*-slim` is slimmed, and import it as the base image.
    async fn debootstrap_base(&self, config: &ImagesConfig) -> Result<(), ImageError> {
        let scratch = std::env::temp_dir().join(format!("runbox-base-{}", uuid::Uuid::new_v4()));
        let result = self.debootstrap_into(config, &scratch).await;
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        result
    }

    async fn debootstrap_into(&self, config: &ImagesConfig, root: &Path) -> Result<(), ImageError> {
        let status = tokio::process::Command::new("debootstrap")
            .args(["--variant=minbase", &config.suite])
            .arg(root)
            .arg(&config.mirror)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| {
                ImageError::Base(format!(
                    "cannot run debootstrap ({e}); install it (apt-get install debootstrap) and run as root, \
                     or set images.base = \"debian:bookworm-slim\" where a registry is reachable"
                ))
            })?;
        if !status.success() {
            return Err(ImageError::Base(format!(
                "debootstrap exited with {status}; it needs root and the Debian mirror {}",
                config.mirror
            )));
        }
        slim_root(root).map_err(|e| ImageError::Base(format!("slimming the base: {e}")))?;

        let mut tar = tokio::process::Command::new("tar")
            .arg("-C")
            .arg(root)
            .args(["-c", "."])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| ImageError::Base(format!("cannot run tar: {e}")))?;
        let stdout = tar.stdout.take().expect("stdout is piped");
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(stdout));
        let (repo, tag) = config
            .base
            .rsplit_once(':')
            .unwrap_or((config.base.as_str(), "latest"));
        let mut changes: Vec<String> = ENVIRONMENT
            .iter()
            .filter(|e| e.starts_with("PATH=") || e.starts_with("LANG="))
            .map(|e| format!("ENV {e}"))
            .collect();
        changes.push(format!("LABEL runbox.base=debootstrap-{}", config.suite));
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(changes)
            .build();
        let mut progress = self.docker().create_image(Some(options), Some(body), None);
        while let Some(step) = progress.next().await {
            step.map_err(|e| ImageError::Base(format!("importing the base: {e}")))?;
        }
        let status = tar
            .wait()
            .await
            .map_err(|e| ImageError::Base(format!("tar: {e}")))?;
        if !status.success() {
            return Err(ImageError::Base(format!("tar exited with {status}")));
        }
        Ok(())
    }

    async fn build_language(
        &self,
        config: &ImagesConfig,
        base_id: &str,
        language: &Language,
    ) -> Result<BuildReport, ImageError> {
        let started = Instant::now();
        let image = language.image_ref();
        let context_dir = config.dir.join(&language.id);
        let context = read_context(&context_dir)?;
        // The library list is read from the image at build: a changed list builds it again.
        let mut hashed = context.clone();
        hashed.push((
            PathBuf::from("\0libraries"),
            format!("{:?}", language.libraries).into_bytes(),
        ));
        let hash = context_hash(base_id, &hashed);
        if let Some(info) = self.image_info(language).await?
            && info.context_hash.as_deref() == Some(hash.as_str())
        {
            tracing::info!(%image, version = %info.version, "image up to date");
            return Ok(BuildReport {
                image,
                version: info.version,
                rebuilt: false,
                seconds: started.elapsed().as_secs_f64(),
                size_bytes: self.image_size(&language.image_ref()).await,
            });
        }
        tracing::info!(%image, "building image");
        let staging = format!("{}:build", language.image);
        let labels = HashMap::from([
            (LABEL_LANGUAGE.to_owned(), language.id.clone()),
            (LABEL_CONTEXT_HASH.to_owned(), hash.clone()),
        ]);
        let build_args = HashMap::from([(BASE_BUILD_ARG.to_owned(), config.base.clone())]);
        self.run_build(
            &staging,
            pack_context(&context),
            Some(build_args),
            labels.clone(),
        )
        .await?;

        let (version, libraries) = self.probe_version(&staging, language).await?;
        tracing::info!(%image, %version, ?libraries, "language version read from the image");
        // A one-line build adds the version label on top of the staged image.
        let mut labels = labels;
        labels.insert(LABEL_VERSION.to_owned(), version.clone());
        labels.insert(
            LABEL_LIBRARIES.to_owned(),
            serde_json::to_string(&libraries).expect("a map of strings serializes"),
        );
        let dockerfile = format!("FROM {staging}\n{}\n", runner_step());
        let label_context = pack_context(&[(PathBuf::from("Dockerfile"), dockerfile.into_bytes())]);
        self.run_build(&image, label_context, None, labels).await?;
        let remove = RemoveImageOptionsBuilder::default().noprune(true).build();
        if let Err(err) = self
            .docker()
            .remove_image(&staging, Some(remove), None)
            .await
        {
            tracing::warn!(image = %staging, error = %err, "cannot untag the staging image");
        }
        Ok(BuildReport {
            image: image.clone(),
            version,
            rebuilt: true,
            seconds: started.elapsed().as_secs_f64(),
            size_bytes: self.image_size(&image).await,
        })
    }

    /// Copies each language's image to `target` (the engine's save, streamed into the other's
    /// load: the image id stays the same); an image `target` holds with the same id already is
    /// left alone. Returns each image with whether it was copied.
    pub async fn copy_images(
        &self,
        target: &Sandboxes,
        languages: &[std::sync::Arc<Language>],
    ) -> Result<Vec<(String, bool)>, ImageError> {
        let mut copied = Vec::new();
        for language in languages {
            let image = language.image_ref();
            let source = self
                .image_info(language)
                .await?
                .ok_or_else(|| ImageError::Sandbox(SandboxError::ImageMissing(image.clone())))?;
            if target.image_info(language).await?.map(|info| info.id) == Some(source.id.clone()) {
                copied.push((image, false));
                continue;
            }
            tracing::info!(%image, from = self.engine_id(), to = target.engine_id(), "copying image");
            let saved = self.docker().export_image(&image);
            let mut loaded = target.docker().import_image_stream(
                bollard::query_parameters::ImportImageOptionsBuilder::default()
                    .quiet(true)
                    .build(),
                saved,
                None,
            );
            while let Some(step) = loaded.next().await {
                let step = step.map_err(SandboxError::from_engine)?;
                if let Some(detail) = step.error_detail {
                    return Err(ImageError::Build {
                        image,
                        message: detail.message.unwrap_or_default(),
                    });
                }
            }
            let landed = target.image_info(language).await?.map(|info| info.id);
            if landed != Some(source.id.clone()) {
                return Err(ImageError::Build {
                    image,
                    message: format!("the copy has id {landed:?}, not {}", source.id),
                });
            }
            copied.push((image, true));
        }
        Ok(copied)
    }

    async fn image_size(&self, image: &str) -> Option<i64> {
        self.docker()
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.size)
    }

    async fn run_build(
        &self,
        tag: &str,
        context: Vec<u8>,
        build_args: Option<HashMap<String, String>>,
        labels: HashMap<String, String>,
    ) -> Result<(), ImageError> {
        let mut options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .labels(&labels);
        if let Some(args) = &build_args {
            options = options.buildargs(args);
        }
        let mut progress = self.docker().build_image(
            options.build(),
            None,
            Some(bollard::body_full(Bytes::from(context))),
        );
        let mut tail: Vec<String> = Vec::new();
        while let Some(step) = progress.next().await {
            match step {
                Ok(info) => {
                    if let Some(line) = info.stream {
                        let line = line.trim_end();
                        if !line.is_empty() {
                            tracing::debug!(image = %tag, "{line}");
                            tail.push(line.to_owned());
                            if tail.len() > 20 {
                                tail.remove(0);
                            }
                        }
                    }
                }
                Err(err) => {
                    return Err(ImageError::Build {
                        image: tag.to_owned(),
                        message: format!("{err}\n{}", tail.join("\n")),
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs the language's version command in a hardened sandbox of the new image, and reads
    /// the versions of its libraries' Debian packages there.
    async fn probe_version(
        &self,
        image: &str,
        language: &Language,
    ) -> Result<(String, std::collections::BTreeMap<String, String>), ImageError> {
        let spec = SandboxSpec {
            kind: SandboxKind::Probe,
            id: uuid::Uuid::new_v4().to_string(),
            image: image.to_owned(),
            language: language.id.clone(),
            memory_mb: VERSION_PROBE_MEMORY_MB,
            main: super::MainProcess::Idle,
            work_dir_mb: None,
            labels: Vec::new(),
            warm_compiler: None,
        };
        let sandbox = self.create(&spec).await?;
        let failed = |message: String| ImageError::Version {
            language: language.id.clone(),
            message,
        };
        let (end, output) = probe(&sandbox, language.version.clone(), 4096).await?;
        if end != (ExecEnd::Exited { code: 0 }) {
            return Err(failed(format!("{end:?}: {}", output.stderr_text().trim())));
        }
        let text = output.stdout_text();
        let version = text.trim();
        if version.is_empty() || version.len() > MAX_VERSION_LEN || version.contains('\n') {
            return Err(failed(format!("unexpected output {version:?}")));
        }
        let mut libraries = std::collections::BTreeMap::new();
        if !language.libraries.is_empty() {
            let mut cmd: Vec<String> = ["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", "--"]
                .map(String::from)
                .to_vec();
            cmd.extend(language.libraries.values().cloned());
            let (end, output) = probe(&sandbox, cmd, 16 * 1024).await?;
            let listed = output.stdout_text();
            let installed = parse_package_versions(&listed);
            for (name, package) in &language.libraries {
                let Some(version) = installed.get(package.as_str()) else {
                    return Err(failed(format!(
                        "library {name}: package {package} is not installed ({end:?}: {})",
                        output.stderr_text().trim()
                    )));
                };
                libraries.insert(name.clone(), version.clone());
            }
        }
        Ok((version.to_owned(), libraries))
    }
}

/// Runs `cmd` in a probe sandbox: how it ended and its output (at most `limit` bytes).
async fn probe(
    sandbox: &super::Sandbox,
    cmd: Vec<String>,
    limit: usize,
) -> Result<(ExecEnd, super::CollectedOutput), SandboxError> {
    let mut output = OutputCollector::new(limit);
    let spec = ExecSpec {
        cmd,
        stdin: Bytes::new(),
        timeout: VERSION_PROBE_TIMEOUT,
        cpu_limit: None,
    };
    let outcome = sandbox.exec(spec, &mut output).await?;
    Ok((outcome.end, output.finish()))
}

/// The build context: every file under `dir`, relative path and content, sorted by path.
fn read_context(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, ImageError> {
    let err = |source| ImageError::Context {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).map_err(err)? {
            let path = entry.map_err(err)?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let content = std::fs::read(&path).map_err(err)?;
                let relative = path.strip_prefix(dir).expect("below dir").to_owned();
                files.push((relative, content));
            }
        }
    }
    if !files.iter().any(|(p, _)| p == Path::new("Dockerfile")) {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no Dockerfile",
        )));
    }
    files.sort();
    Ok(files)
}

/// Hash of the base image id and every file of the context: a changed Dockerfile or a new
/// base makes a new hash, and so a rebuild.
/// `dpkg-query -f '${Package}\t${Version}\n'` output as package -> upstream version: the
/// epoch, the Debian revision and repacking suffixes (`+dfsg`, `+ds`) left out.
fn parse_package_versions(text: &str) -> HashMap<&str, String> {
    text.lines()
        .filter_map(|line| {
            let (package, version) = line.split_once('\t')?;
            let version = version.trim();
            // An installed package has a version; one dpkg only knows of has none.
            if version.is_empty() {
                return None;
            }
            let version = version.split_once(':').map_or(version, |(_, v)| v);
            let version = version.rsplit_once('-').map_or(version, |(v, _)| v);
            let version = version.split(['+', '~']).next().unwrap_or(version);
            Some((package, version.to_owned()))
        })
        .collect()
}

fn context_hash(base_id: &str, files: &[(PathBuf, Vec<u8>)]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(base_id.as_bytes());
    // The step every image gets on top of its Dockerfile: changing it rebuilds them all.
    hasher.update(runner_step().as_bytes());
    for (path, content) in files {
        hasher.update([0]);
        hasher.update(path.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(content);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pack_context(files: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, path, content.as_slice())
            .expect("writing into memory cannot fail");
    }
    builder
        .into_inner()
        .expect("writing into memory cannot fail")
}

/// Drops what a sandbox never needs (docs, man pages, translations, apt caches) and keeps
/// later `apt-get install`s from bringing them back, like Debian's slim images.
fn slim_root(root: &Path) -> std::io::Result<()> {
    std::fs::write(
        root.join("etc/dpkg/dpkg.cfg.d/runbox-slim"),
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n\
         path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n\
         path-exclude /usr/share/locale/*\npath-exclude /usr/share/lintian/*\n",
    )?;
    std::fs::write(
        root.join("etc/apt/apt.conf.d/99runbox-slim"),
        "APT::Install-Recommends \"false\";\nAPT::Install-Suggests \"false\";\n",
    )?;
    for dir in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/cache/apt",
        "var/lib/apt/lists",
    ] {
        let path = root.join(dir);
        if path.exists() {
            for entry in std::fs::read_dir(&path)? {
                let entry = entry?.path();
                if entry.is_dir() {
                    std::fs::remove_dir_all(&entry)?;
                } else {
                    std::fs::remove_file(&entry)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dockerfile: &str) -> Vec<(PathBuf, Vec<u8>)> {
        vec![(PathBuf::from("Dockerfile"), dockerfile.as_bytes().to_vec())]
    }

    #[test]
    fn package_versions_are_the_upstream_part() {
        let text = "python3-numpy\t1:1.24.2-1+b1\npython3-pandas\t1.5.3+dfsg-2\n\
                    python3-scipy\t1.10.1-2\nnlohmann-json3-dev\t3.11.2-2\nghost\t\n";
        let versions = parse_package_versions(text);
        assert_eq!(versions["python3-numpy"], "1.24.2");
        assert_eq!(versions["python3-pandas"], "1.5.3");
        assert_eq!(versions["python3-scipy"], "1.10.1");
        assert_eq!(versions["nlohmann-json3-dev"], "3.11.2");
        assert!(!versions.contains_key("ghost"));
    }

    #[test]
    fn hash_changes_with_the_dockerfile_and_the_base() {
        let a = context_hash("sha256:base1", &ctx("FROM x\n"));
        assert_eq!(a, context_hash("sha256:base1", &ctx("FROM x\n")));
        assert_ne!(a, context_hash("sha256:base1", &ctx("FROM x\nRUN true\n")));
        assert_ne!(a, context_hash("sha256:base2", &ctx("FROM x\n")));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn shipped_contexts_have_dockerfiles_from_the_base_argument() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
        for id in ["python", "javascript", "c", "cpp"] {
            let files = read_context(&dir.join(id)).unwrap();
            let dockerfile = String::from_utf8(files[0].1.clone()).unwrap();
            assert!(
                dockerfile.contains(&format!("FROM ${{{BASE_BUILD_ARG}}}")),
                "{id}"
            );
        }
    }
}
