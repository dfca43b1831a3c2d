//! Sandboxes that outlive a run (a session's): made and taken back through the executor, so a
//! session has one door to everything below it. Runs in them are [`Executor::run_in`]; what a
//! session does with one between runs (end its programs, open a terminal, carry its files to
//! another) are the [`Sandbox`] handle's own calls.

use super::{Executor, SandboxError};
use crate::languages::Language;
use crate::sandbox::{MainProcess, SandboxKind, SandboxSpec};

pub use crate::sandbox::policy::LABEL_LANGUAGE;
pub use crate::sandbox::{Adopted, Sandbox};

/// A lasting sandbox to make: a keeper (it runs nothing of its own; runs are execs), with a
/// work dir of its own size and the labels that let a restarted runbox find it again.
#[derive(Debug, Clone)]
pub struct LastingSpec<'a> {
    /// Unique per incarnation: a replacement must not wait for the old one's name.
    pub name: String,
    pub language: &'a Language,
    pub memory_mb: u64,
    pub work_dir_mb: u64,
    pub labels: Vec<(String, String)>,
}

impl Executor {
    pub async fn create_lasting(&self, spec: LastingSpec<'_>) -> Result<Sandbox, SandboxError> {
        self.fleet
            .create(&SandboxSpec {
                kind: SandboxKind::Session,
                id: spec.name,
                image: spec.language.image_ref(),
                language: spec.language.id.clone(),
                memory_mb: spec.memory_mb,
                main: MainProcess::Keeper,
                work_dir_mb: Some(spec.work_dir_mb),
                labels: spec.labels,
                warm_compiler: None,
            })
            .await
    }

    /// Takes back the running lasting sandboxes carrying every label of `labels`
    /// (`key=value`), as an earlier runbox process left them.
    pub async fn adopt_lasting(
        &self,
        labels: &[String],
        memory_mb: u64,
    ) -> Result<Vec<Adopted>, SandboxError> {
        self.fleet
            .adopt(SandboxKind::Session, labels, memory_mb)
            .await
    }
}
