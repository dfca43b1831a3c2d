//! The language catalogue, loaded from `config/languages.toml`. Languages are data: adding one is
//! a config entry plus `images/<id>/Dockerfile`, no Rust code.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// Compile phase limits when a language does not set its own.
const DEFAULT_COMPILE_TIMEOUT_MS: u64 = 15_000;

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot read language catalogue {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("language catalogue {path} is invalid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid language `{id}`: {reason}")]
    Language { id: String, reason: String },
}

/// One language as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Language {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Image name without tag; runbox tags what it builds `:latest`.
    pub image: String,
    /// The file `code` is written to.
    pub main_file: String,
    /// Compile command (compiled languages only).
    pub compile: Option<Vec<String>>,
    /// The compile command passes arguments appended to it on to the compiler.
    #[serde(default)]
    pub compile_takes_args: bool,
    /// A compiler a reused sandbox starts ahead of each job, in the job's nested sandbox, that
    /// takes the compile's argv when it comes and compiles in a process already warm (see
    /// `sandbox::nested`); the compile's memory cap in MiB is appended. Its argv[0] is the
    /// compile command's.
    pub warm_compile: Option<Vec<String>>,
    /// Run command; the request's `args` are appended.
    pub run: Vec<String>,
    /// Prints the language version; run once at image build time.
    pub version: Vec<String>,
    /// The interactive interpreter a room starts on a terminal (none: a shell in the work dir).
    pub repl: Option<Vec<String>>,
    /// Libraries the image carries, by the name users import them by, each with the Debian
    /// package that installs it: their versions are read from the image when it is built.
    #[serde(default)]
    pub libraries: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub memory_mb: u64,
    pub max_memory_mb: u64,
    pub compile_timeout_ms: Option<u64>,
    /// Memory the compiler needs; the sandbox gets the larger of this and the run's limit
    /// while compiling, and is lowered to the run's limit before the program starts.
    pub compile_memory_mb: Option<u64>,
}

impl Language {
    pub fn is_compiled(&self) -> bool {
        self.compile.is_some()
    }

    /// The image reference runbox builds and runs (`runbox/python:latest`).
    pub fn image_ref(&self) -> String {
        format!("{}:latest", self.image)
    }

    pub fn compile_timeout(&self) -> Duration {
        Duration::from_millis(
            self.compile_timeout_ms
                .unwrap_or(DEFAULT_COMPILE_TIMEOUT_MS),
        )
    }

    /// The warm compiler's argv for a reused sandbox: `warm_compile` and the language's
    /// compile memory cap in MiB, the cap a new compiler's JVM would size its heap for (a job
    /// asking another cap still finds it: the cap is set before the compile starts).
    pub fn warm_compiler(&self) -> Option<Vec<String>> {
        self.warm_compile.as_ref().map(|warm| {
            let mut argv = warm.clone();
            argv.push(self.compile_memory_mb().to_string());
            argv
        })
    }

    pub fn compile_memory_mb(&self) -> u64 {
        self.compile_memory_mb.unwrap_or(self.memory_mb)
    }

    fn validate(&self) -> Result<(), CatalogueError> {
        let fail = |reason: &str| {
            Err(CatalogueError::Language {
                id: self.id.clone(),
                reason: reason.to_owned(),
            })
        };
        let is_identifier = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-_".contains(&b))
        };
        if !is_identifier(&self.id) {
            return fail("id must be lowercase letters, digits, '+', '-' or '_'");
        }
        if self.aliases.iter().any(|a| !is_identifier(a)) {
            return fail("aliases must be lowercase letters, digits, '+', '-' or '_'");
        }
        if self.run.is_empty() || self.version.is_empty() {
            return fail("run and version commands must not be empty");
        }
        if self.compile_takes_args && self.compile.is_none() {
            return fail("compile_takes_args needs a compile command");
        }
        if matches!(&self.compile, Some(c) if c.is_empty()) {
            return fail("compile command must not be empty when given");
        }
        if let Some(warm) = &self.warm_compile {
            let same_program = matches!((warm.first(), self.compile.as_ref().and_then(|c| c.first())),
                (Some(w), Some(c)) if w == c);
            if !same_program || self.compile_takes_args {
                return fail(
                    "warm_compile must start with the compile command's program, which takes no arguments",
                );
            }
            // The runner splits it into words at spaces (see `sandbox::nested::warm_words`).
            if warm
                .iter()
                .any(|w| w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '\''))
            {
                return fail("warm_compile's words must be non-empty, without spaces or quotes");
            }
        }
        if matches!(&self.repl, Some(c) if c.is_empty()) {
            return fail("repl command must not be empty when given");
        }
        if crate::names::validate_name(&self.main_file).is_err() {
            return fail("main_file must be a safe relative file name");
        }
        let is_package = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        };
        let is_library = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-._:/".contains(&b))
        };
        if self
            .libraries
            .iter()
            .any(|(name, package)| !is_library(name) || !is_package(package))
        {
            return fail("libraries map names (letters, digits, +-._:/) to Debian package names");
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.max_timeout_ms {
            return fail("timeout_ms must be positive and at most max_timeout_ms");
        }
        if self.memory_mb < 16 || self.memory_mb > self.max_memory_mb {
            return fail("memory_mb must be at least 16 and at most max_memory_mb");
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    language: Vec<Language>,
}

/// Every served language, looked up by id or alias.
#[derive(Debug, Clone)]
pub struct Catalogue {
    languages: Vec<Arc<Language>>,
    /// id and every alias -> index into `languages`.
    by_name: HashMap<String, usize>,
}

impl Catalogue {
    pub fn load(path: &Path) -> Result<Catalogue, CatalogueError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Catalogue, CatalogueError> {
        let file: CatalogueFile =
            toml::from_str(text).map_err(|e: toml::de::Error| CatalogueError::Syntax {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let mut by_name = HashMap::new();
        for (index, language) in file.language.iter().enumerate() {
            language.validate()?;
            for name in std::iter::once(&language.id).chain(&language.aliases) {
                if by_name.insert(name.clone(), index).is_some() {
                    return Err(CatalogueError::Language {
                        id: language.id.clone(),
                        reason: format!("name `{name}` is used twice in the catalogue"),
                    });
                }
            }
        }
        Ok(Catalogue {
            languages: file.language.into_iter().map(Arc::new).collect(),
            by_name,
        })
    }

    /// Finds a language by id or alias, case-insensitively.
    pub fn resolve(&self, name: &str) -> Option<&Arc<Language>> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .map(|&i| &self.languages[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Language>> {
        self.languages.iter()
    }

    /// Keeps only the named languages (by id or alias); unknown names are returned as the error.
    pub fn select(&self, names: &[String]) -> Result<Vec<Arc<Language>>, String> {
        if names.is_empty() {
            return Ok(self.languages.clone());
        }
        names
            .iter()
            .map(|n| self.resolve(n).cloned().ok_or_else(|| n.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"
        [[language]]
        id = "python"
        name = "Python"
        aliases = ["py"]
        image = "runbox/python"
        main_file = "main.py"
        run = ["python3", "main.py"]
        version = ["python3", "--version"]
        timeout_ms = 1000
        max_timeout_ms = 2000
        memory_mb = 64
        max_memory_mb = 128
    "#;

    #[test]
    fn resolves_ids_and_aliases_case_insensitively() {
        let c = Catalogue::parse(Path::new("t"), ONE).unwrap();
        assert_eq!(c.resolve("PY").unwrap().id, "python");
        assert_eq!(
            c.resolve("python").unwrap().image_ref(),
            "runbox/python:latest"
        );
        assert!(c.resolve("cobol").is_none());
    }

    #[test]
    fn duplicate_names_are_refused() {
        let text = format!("{ONE}\n{}", ONE.replace("\"python\"", "\"python2\""));
        let err = Catalogue::parse(Path::new("t"), &text).unwrap_err();
        assert!(err.to_string().contains("`py`"), "{err}");
    }

    #[test]
    fn default_above_maximum_is_refused() {
        let text = ONE.replace("timeout_ms = 1000", "timeout_ms = 3000");
        assert!(Catalogue::parse(Path::new("t"), &text).is_err());
    }

    #[test]
    fn shipped_catalogue_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/languages.toml");
        let c = Catalogue::load(&path).unwrap();
        for id in ["python", "javascript", "c", "cpp"] {
            assert!(c.resolve(id).is_some(), "{id} missing");
        }
        assert!(c.resolve("c").unwrap().is_compiled());
    }
}
