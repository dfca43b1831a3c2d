//! Files out: which files of the work dir a job asked for (`outputs`, glob patterns), under
//! which caps (`[outputs]`), and how each one is reported. The sandbox lists the work dir and
//! reads what this picks, through the sandbox as the sandbox user (see `sandbox::outputs`);
//! the policy is here.
//!
//! Patterns are matched against paths relative to the work dir: `*` and `?` stay within one
//! directory, `**` crosses them (`**/*.png` is every PNG, at any depth, the top included), and
//! `out/**` everything under `out/`. Entries are taken in name order. A matching entry that is
//! not a regular file (a link, a FIFO, a socket, a device) is listed as refused, never read; a
//! file past a cap is listed as truncated, without content; past the count cap, entries are
//! counted and not listed.

use globset::{GlobSet, GlobSetBuilder};

use crate::config::OutputsConfig;
use crate::sandbox::{EntryKind, FilePicker, FilesNotRead, FilesRead, WorkDirListing};

/// Most patterns one request may give.
pub const MAX_PATTERNS: usize = 16;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 256;

/// A request's `outputs`, checked and compiled.
#[derive(Debug, Clone)]
pub struct OutputPatterns {
    set: GlobSet,
}

impl OutputPatterns {
    /// Checks each pattern: relative to the work dir, no `..`, a valid glob.
    pub fn parse(patterns: &[String]) -> Result<OutputPatterns, String> {
        if patterns.is_empty() || patterns.len() > MAX_PATTERNS {
            return Err(format!("`outputs` must hold 1 to {MAX_PATTERNS} patterns"));
        }
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let shown = pattern.escape_debug();
            if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES {
                return Err(format!(
                    "each `outputs` pattern must be 1 to {MAX_PATTERN_BYTES} bytes"
                ));
            }
            if pattern.contains('\0') {
                return Err("an `outputs` pattern must not contain NUL".to_owned());
            }
            if pattern.starts_with('/') {
                return Err(format!(
                    "`outputs` pattern \"{shown}\" must be relative to the work dir (no leading `/`)"
                ));
            }
            if pattern.split('/').any(|part| part == "..") {
                return Err(format!(
                    "`outputs` pattern \"{shown}\" must not leave the work dir (`..`)"
                ));
            }
            let glob = globset::GlobBuilder::new(pattern.trim_start_matches("./"))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| {
                    format!(
                        "`outputs` pattern \"{shown}\" is not a valid glob: {}",
                        e.kind()
                    )
                })?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| format!("`outputs` patterns are not valid: {e}"))?;
        Ok(OutputPatterns { set })
    }

    fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }
}

/// The caps, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCaps {
    pub max_files: usize,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
}

impl From<&OutputsConfig> for FileCaps {
    fn from(c: &OutputsConfig) -> Self {
        FileCaps {
            max_files: c.max_files,
            max_file_bytes: c.max_file_kb as u64 * 1024,
            max_total_bytes: c.max_total_kb as u64 * 1024,
        }
    }
}

/// One file a run returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// Relative to the work dir.
    pub name: String,
    pub size: u64,
    pub media_type: &'static str,
    /// The bytes; `None` when truncated or refused.
    pub content: Option<Vec<u8>>,
    /// Past a size cap: listed, not returned.
    pub truncated: bool,
    /// Why it is not returned at all (not a regular file, unreadable).
    pub refused: Option<&'static str>,
}

/// The files of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilesOutcome {
    pub files: Vec<OutputFile>,
    /// Matching entries past the count cap (counted, not listed).
    pub omitted: usize,
    /// The work dir held more entries than runbox lists: some matches may be missing.
    pub scan_incomplete: bool,
    /// Why no file was read (the program was cut short, ...); `files` is then empty.
    pub error: Option<&'static str>,
}

impl FilesOutcome {
    /// For a job whose program never ran (its compile failed).
    pub fn never_ran() -> FilesOutcome {
        FilesOutcome {
            error: Some("the program never ran (its compile failed): no files"),
            ..FilesOutcome::default()
        }
    }

    /// Some file was not returned whole, or some match not listed.
    pub fn truncated(&self) -> bool {
        self.omitted > 0 || self.scan_incomplete || self.files.iter().any(|f| f.truncated)
    }
}

/// What was decided for a listed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Read,
    Truncated,
    Refused(&'static str),
}

/// The files of one run, from the listing to the outcome: the sandbox's [`FilePicker`].
#[derive(Debug)]
pub struct FilePlan {
    patterns: OutputPatterns,
    caps: FileCaps,
    decided: Vec<(String, u64, Decision)>,
    omitted: usize,
    scan_incomplete: bool,
}

impl FilePlan {
    pub fn new(patterns: OutputPatterns, caps: FileCaps) -> FilePlan {
        FilePlan {
            patterns,
            caps,
            decided: Vec::new(),
            omitted: 0,
            scan_incomplete: false,
        }
    }

    /// The outcome, from what the sandbox read.
    pub fn finish(self, read: FilesRead) -> FilesOutcome {
        let mut contents = match read {
            FilesRead::Read(contents) => contents,
            FilesRead::NotRead(why) => {
                return FilesOutcome {
                    error: Some(not_read_reason(why)),
                    ..FilesOutcome::default()
                };
            }
        };
        let files = self
            .decided
            .into_iter()
            .map(|(name, size, decision)| {
                let media_type = media_type(&name);
                let mut file = OutputFile {
                    name,
                    size,
                    media_type,
                    content: None,
                    truncated: false,
                    refused: None,
                };
                match decision {
                    Decision::Truncated => file.truncated = true,
                    Decision::Refused(why) => file.refused = Some(why),
                    Decision::Read => match contents.remove(&file.name) {
                        // It grew past its cap while being read (a session's other program).
                        Some(bytes) if bytes.len() as u64 > self.caps.max_file_bytes => {
                            file.size = bytes.len() as u64;
                            file.truncated = true;
                        }
                        Some(bytes) => {
                            file.size = bytes.len() as u64;
                            file.content = Some(bytes);
                        }
                        None => file.refused = Some("could not be read by the sandbox user"),
                    },
                }
                file
            })
            .collect();
        FilesOutcome {
            files,
            omitted: self.omitted,
            scan_incomplete: self.scan_incomplete,
            error: None,
        }
    }
}

impl FilePicker for FilePlan {
    fn pick(&mut self, listing: &WorkDirListing) -> Vec<String> {
        self.scan_incomplete = !listing.complete;
        let mut matching: Vec<_> = listing
            .entries
            .iter()
            .filter(|e| self.patterns.matches(&e.name))
            .collect();
        matching.sort_by(|a, b| a.name.cmp(&b.name));
        let mut total = 0u64;
        let mut to_read = Vec::new();
        for entry in matching {
            if self.decided.len() == self.caps.max_files {
                self.omitted += 1;
                continue;
            }
            let decision = match entry.kind {
                _ if !entry.name_is_utf8 => Decision::Refused("its name is not UTF-8"),
                EntryKind::Symlink => Decision::Refused("a symbolic link (never followed)"),
                EntryKind::Fifo => Decision::Refused("a named pipe (never read)"),
                EntryKind::Socket => Decision::Refused("a socket (never read)"),
                EntryKind::Device => Decision::Refused("a device (never read)"),
                EntryKind::Other => Decision::Refused("not a regular file"),
                EntryKind::File if entry.size > self.caps.max_file_bytes => Decision::Truncated,
                EntryKind::File if total + entry.size > self.caps.max_total_bytes => {
                    Decision::Truncated
                }
                EntryKind::File => {
                    total += entry.size;
                    to_read.push(entry.name.clone());
                    Decision::Read
                }
            };
            self.decided
                .push((entry.name.clone(), entry.size, decision));
        }
        to_read
    }
}

fn not_read_reason(why: FilesNotRead) -> &'static str {
    match why {
        FilesNotRead::CutShort => {
            "the program did not end by itself (a limit or a kill): its files were not read"
        }
        FilesNotRead::SandboxNotClean => {
            "the program left its sandbox unclean (a process that could not be ended, or its memory ran out): its files were not read"
        }
        FilesNotRead::Failed => "the files could not be read out of the sandbox",
    }
}

/// The media type of a file by its extension (the program named it); unknown ones are bytes.
pub fn media_type(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty() && !stem.ends_with('/'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    extension
        .and_then(|ext| {
            MEDIA_TYPES
                .iter()
                .find(|(known, _)| *known == ext)
                .map(|(_, media)| *media)
        })
        .unwrap_or("application/octet-stream")
}

const MEDIA_TYPES: &[(&str, &str)] = &[
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("bmp", "image/bmp"),
    ("svg", "image/svg+xml"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
    ("log", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("tsv", "text/tab-separated-values"),
    ("json", "application/json"),
    ("xml", "application/xml"),
    ("html", "text/html"),
    ("htm", "text/html"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("wav", "audio/wav"),
    ("mp3", "audio/mpeg"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("ppm", "image/x-portable-pixmap"),
    ("pgm", "image/x-portable-graymap"),
    ("npy", "application/octet-stream"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::ListedEntry;
    use std::collections::HashMap;

    fn entry(name: &str, kind: EntryKind, size: u64) -> ListedEntry {
        ListedEntry {
            name: name.to_owned(),
            name_is_utf8: true,
            kind,
            size,
        }
    }

    fn patterns(list: &[&str]) -> OutputPatterns {
        OutputPatterns::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    const CAPS: FileCaps = FileCaps {
        max_files: 3,
        max_file_bytes: 100,
        max_total_bytes: 150,
    };

    #[test]
    fn patterns_stay_relative_and_inside() {
        let bad = |p: &str| OutputPatterns::parse(&[p.to_owned()]).unwrap_err();
        assert!(bad("/etc/passwd").contains("relative"));
        assert!(bad("../x").contains("leave"));
        assert!(bad("out/../../x").contains("leave"));
        assert!(bad("").contains("1 to"));
        assert!(bad("[").contains("not a valid glob"));
        assert!(OutputPatterns::parse(&[]).unwrap_err().contains("1 to 16"));
        let many: Vec<String> = (0..17).map(|i| format!("{i}.txt")).collect();
        assert!(OutputPatterns::parse(&many).is_err());
    }

    #[test]
    fn a_star_stays_in_its_directory_and_two_cross() {
        let p = patterns(&["*.png"]);
        assert!(p.matches("plot.png"));
        assert!(!p.matches("out/plot.png"));
        let p = patterns(&["**/*.png"]);
        assert!(p.matches("plot.png") && p.matches("a/b/plot.png"));
        let p = patterns(&["out/**"]);
        assert!(p.matches("out/a.csv") && p.matches("out/x/y") && !p.matches("outside"));
        let p = patterns(&["./result.csv"]);
        assert!(p.matches("result.csv"));
    }

    #[test]
    fn caps_truncate_refuse_and_count() {
        let mut plan = FilePlan::new(patterns(&["**"]), CAPS);
        let listing = WorkDirListing {
            entries: vec![
                entry("e.txt", EntryKind::File, 10),
                entry("a.bin", EntryKind::File, 101),
                entry("b.txt", EntryKind::File, 90),
                entry("c.txt", EntryKind::File, 70),
                entry("d", EntryKind::Symlink, 11),
            ],
            complete: true,
        };
        let picked = plan.pick(&listing);
        assert_eq!(picked, vec!["b.txt"]);
        let mut contents = HashMap::new();
        contents.insert("b.txt".to_owned(), vec![1u8; 90]);
        let outcome = plan.finish(FilesRead::Read(contents));
        let summary: Vec<(&str, bool, bool, Option<&str>)> = outcome
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.content.is_some(), f.truncated, f.refused))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a.bin", false, true, None),
                ("b.txt", true, false, None),
                // 90 + 70 passes the total cap of 150.
                ("c.txt", false, true, None),
            ]
        );
        assert_eq!(outcome.omitted, 2);
        assert!(outcome.truncated());
    }

    #[test]
    fn links_pipes_and_odd_names_are_refused_and_unread_files_said() {
        let mut plan = FilePlan::new(
            patterns(&["*"]),
            FileCaps {
                max_files: 10,
                ..CAPS
            },
        );
        let mut odd = entry("bad\u{fffd}", EntryKind::File, 1);
        odd.name_is_utf8 = false;
        let listing = WorkDirListing {
            entries: vec![
                entry("passwd", EntryKind::Symlink, 11),
                entry("pipe", EntryKind::Fifo, 0),
                entry("locked", EntryKind::File, 5),
                odd,
            ],
            complete: false,
        };
        assert_eq!(plan.pick(&listing), vec!["locked"]);
        let outcome = plan.finish(FilesRead::Read(HashMap::new()));
        let refused: Vec<(&str, Option<&str>)> = outcome
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.refused))
            .collect();
        assert_eq!(refused[0].1, Some("its name is not UTF-8"));
        assert_eq!(
            refused[1],
            ("locked", Some("could not be read by the sandbox user"))
        );
        assert_eq!(
            refused[2],
            ("passwd", Some("a symbolic link (never followed)"))
        );
        assert_eq!(refused[3], ("pipe", Some("a named pipe (never read)")));
        assert!(outcome.scan_incomplete && outcome.truncated());
    }

    #[test]
    fn nothing_read_says_why() {
        let plan = FilePlan::new(patterns(&["*"]), CAPS);
        let outcome = plan.finish(FilesRead::NotRead(FilesNotRead::CutShort));
        assert!(outcome.files.is_empty());
        assert!(outcome.error.unwrap().contains("did not end by itself"));
    }

    #[test]
    fn media_types_by_extension() {
        assert_eq!(media_type("plot.PNG"), "image/png");
        assert_eq!(media_type("out/data.csv"), "text/csv");
        assert_eq!(media_type("noext"), "application/octet-stream");
        assert_eq!(media_type(".hidden"), "application/octet-stream");
        assert_eq!(media_type("dir/.png"), "application/octet-stream");
    }
}
