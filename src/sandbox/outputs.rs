//! Files a program wrote, read out of its work dir after it ended: listed by `find` and read
//! by `tar`, both run inside the sandbox as the sandbox user, so the host never opens a path
//! of the work dir (a symlink the program made points wherever it likes *on the host's side*
//! of a bind mount as well). Neither follows a link: `find` lists a link as a link, and only
//! regular files are ever named to `tar`, whose archive the host then reads as data.
//!
//! Which files are wanted is not the sandbox's business: a [`FilePicker`] (the executor's)
//! sees the listing and names the files to read. The listing is bounded in entries and bytes,
//! the read in bytes (the picked files' listed sizes): a work dir of 10 000 files or a file
//! that grows while it is read (a session's terminal program) costs no more than the caps.
//!
//! How the tools run depends on the sandbox: an exec (a fresh container, whose runner ended
//! every process of the program; a session's, after its programs were ended; a reused one
//! whose runner takes no more steps) or a reused runner's `tool` steps (no Engine API call:
//! the runner kept the nested sandbox's work dir after a `run-keep` step, and a `discard`
//! step deletes it afterwards; see `nested::SCRIPT`).

use std::collections::HashMap;
use std::io::Read as _;
use std::time::Duration;

use bytes::Bytes;

use super::container::Sandbox;
use super::{ExecEnd, ExecSpec, OutputCollector, RunnerJob, SandboxError, Step};

/// Lists every entry but directories under a dir (NUL-terminated `<type> <size> <path>`);
/// `find -P` (the default) never follows a link. Run as it is, no shell and no `head`: a
/// pipeline of bash, find and two heads took 26 ms in a sandbox here, find alone 3.7 ms
/// (measured, ten runs each). The work dir's inode cap bounds the entries; the bytes are
/// bounded by [`MAX_LISTING_BYTES`].
fn list_command(dir: &str) -> Vec<String> {
    [
        "find",
        dir,
        "-mindepth",
        "1",
        "!",
        "-type",
        "d",
        "-printf",
        "%y %s %P\\0",
    ]
    .map(String::from)
    .to_vec()
}

/// Archives the named files of a dir (each given as `./name`): links are archived as links
/// and a hard link as the file it names (`--hard-dereference`), never followed out of it.
fn read_command(dir: &str, names: &[String]) -> Vec<String> {
    let mut cmd: Vec<String> = ["tar", "-c", "-b", "1", "-f", "-", "--no-recursion"]
        .map(String::from)
        .to_vec();
    cmd.extend(["--hard-dereference", "-C", dir, "--"].map(String::from));
    cmd.extend(names.iter().map(|name| format!("./{name}")));
    cmd
}

/// Most entries looked at (past it, the listing is incomplete).
pub const MAX_LISTED: usize = 4096;
/// Most bytes of listing read: 4096 entries of names up to ~1 KiB. A work dir whose listing is
/// larger (thousands of very long names) is not read.
const MAX_LISTING_BYTES: usize = 4 * 1024 * 1024;
/// How long listing or reading may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// A tar archive's overhead per file (header, padding, a long name's extra header and data)
/// and at its end (two zero blocks): the read's byte cap is the files' sizes plus this.
const TAR_PER_FILE: usize = 3 * 512 + 4096;
const TAR_END: usize = 2 * 512;

/// What a work dir entry is; only [`EntryKind::File`] is ever read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Symlink,
    Fifo,
    Socket,
    Device,
    Other,
}

impl EntryKind {
    fn from_find(letter: &str) -> EntryKind {
        match letter {
            "f" => EntryKind::File,
            "l" => EntryKind::Symlink,
            "p" => EntryKind::Fifo,
            "s" => EntryKind::Socket,
            "c" | "b" => EntryKind::Device,
            _ => EntryKind::Other,
        }
    }
}

/// One entry of the work dir (directories are not listed; their files are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    /// The path relative to the work dir (lossy when it is not UTF-8).
    pub name: String,
    /// The name is valid UTF-8 (one that is not can be neither matched nor read).
    pub name_is_utf8: bool,
    pub kind: EntryKind,
    /// The size `find` saw (a link's is its target's name's length).
    pub size: u64,
}

/// The work dir's entries, in `find`'s order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkDirListing {
    pub entries: Vec<ListedEntry>,
    /// Every entry is listed (`false`: the listing stopped at its cap).
    pub complete: bool,
}

/// Chooses, from the listing, the regular files to read out.
pub trait FilePicker: Send {
    fn pick(&mut self, listing: &WorkDirListing) -> Vec<String>;
}

/// What came of reading out a work dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilesRead {
    /// The picked files that were read, by name (a picked name missing here could not be
    /// read: unreadable to the sandbox user, or no longer a regular file).
    Read(HashMap<String, Vec<u8>>),
    NotRead(FilesNotRead),
}

/// Why a work dir was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesNotRead {
    /// The program did not end by itself (a limit, a kill): nothing is read while it might
    /// still be writing, and its sandbox is killed.
    CutShort,
    /// Something the program started could not be ended, or the sandbox is gone (its memory
    /// ran out).
    SandboxNotClean,
    /// Listing or reading failed (the work dir is not there, or the tools did not finish).
    Failed,
}

/// Parses [`LIST_SCRIPT`]'s output: NUL-terminated `<type> <size> <path>` records. A record
/// cut off by the byte cap, or one past the entry cap, makes the listing incomplete.
pub(crate) fn parse_listing(output: &[u8], max_entries: usize) -> WorkDirListing {
    let mut entries = Vec::new();
    let mut complete = true;
    let mut records = output.split(|&b| b == 0).peekable();
    while let Some(record) = records.next() {
        if records.peek().is_none() {
            // After the last NUL: empty, unless the byte cap cut a record.
            if !record.is_empty() {
                complete = false;
            }
            break;
        }
        if entries.len() == max_entries {
            complete = false;
            break;
        }
        let mut parts = record.splitn(3, |&b| b == b' ');
        let (Some(kind), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (name, name_is_utf8) = match std::str::from_utf8(name) {
            Ok(name) => (name.to_owned(), true),
            Err(_) => (String::from_utf8_lossy(name).into_owned(), false),
        };
        entries.push(ListedEntry {
            name,
            name_is_utf8,
            kind: EntryKind::from_find(&String::from_utf8_lossy(kind)),
            size: String::from_utf8_lossy(size).parse().unwrap_or(0),
        });
    }
    WorkDirListing { entries, complete }
}

/// The regular files of a tar archive by name (`./` left off); other entries, and a file the
/// archive ends in the middle of, are left out.
pub(crate) fn parse_archive(archive: &[u8], wanted: &[String]) -> HashMap<String, Vec<u8>> {
    let mut files = HashMap::new();
    let mut reader = tar::Archive::new(archive);
    let Ok(entries) = reader.entries() else {
        return files;
    };
    for entry in entries {
        let Ok(mut entry) = entry else { break };
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let Ok(path) = entry.path() else { continue };
        let Some(name) = path.to_str().map(|p| p.trim_start_matches("./").to_owned()) else {
            continue;
        };
        if !wanted.contains(&name) {
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        let mut content = Vec::new();
        // An archive cut short reads as a shorter file, not as an error.
        if entry.read_to_end(&mut content).is_err() || content.len() as u64 != size {
            break;
        }
        files.insert(name, content);
    }
    files
}

/// Where the tools run: an exec, or the steps of a reused runner that kept the work dir.
enum Tools<'a> {
    Exec(&'a Sandbox),
    Steps(&'a mut Sandbox),
}

impl Tools<'_> {
    /// Runs `cmd` as the sandbox user; its stdout when it ended within `limit` bytes (and,
    /// with `must_succeed`, exited 0).
    async fn run(
        &mut self,
        cmd: Vec<String>,
        limit: usize,
        must_succeed: bool,
    ) -> Result<Option<Vec<u8>>, SandboxError> {
        // One byte more than allowed: output that reaches it is output past the cap.
        let mut output = OutputCollector::new(limit + 1);
        let outcome = match self {
            Tools::Exec(sandbox) => {
                let spec = ExecSpec {
                    cmd,
                    stdin: Bytes::new(),
                    timeout: TOOL_TIMEOUT,
                    cpu_limit: None,
                };
                sandbox.exec(spec, &mut output).await?
            }
            Tools::Steps(sandbox) => {
                let job = RunnerJob {
                    step: Step::Tool,
                    archive: Bytes::new(),
                    argv: cmd,
                    stdin: Bytes::new(),
                    live_stdin: None,
                    timeout: TOOL_TIMEOUT,
                    cpu_limit: None,
                    kill: Default::default(),
                };
                sandbox.run_main(job, &mut output).await?
            }
        };
        let collected = output.finish();
        let ended = match outcome.end {
            ExecEnd::Exited { code } => code == 0 || !must_succeed,
            _ => false,
        };
        if !ended || collected.truncated {
            return Ok(None);
        }
        Ok(Some(collected.stdout))
    }
}

/// Lists `dir`, lets `picker` choose, reads the chosen files.
async fn read_out(
    mut tools: Tools<'_>,
    dir: &str,
    picker: &mut dyn FilePicker,
) -> Result<FilesRead, SandboxError> {
    let listed = tools
        .run(list_command(dir), MAX_LISTING_BYTES, true)
        .await?;
    let Some(listed) = listed else {
        return Ok(FilesRead::NotRead(FilesNotRead::Failed));
    };
    let listing = parse_listing(&listed, MAX_LISTED);
    let sizes: HashMap<&str, u64> = listing
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.name_is_utf8)
        .map(|e| (e.name.as_str(), e.size))
        .collect();
    // Only regular files the listing holds are ever named to tar.
    let picked: Vec<String> = picker
        .pick(&listing)
        .into_iter()
        .filter(|name| sizes.contains_key(name.as_str()))
        .collect();
    if picked.is_empty() {
        return Ok(FilesRead::Read(HashMap::new()));
    }
    let limit = picked
        .iter()
        .map(|name| sizes[name.as_str()] as usize + TAR_PER_FILE)
        .sum::<usize>()
        + TAR_END;
    // tar exits non-zero when a file could not be read, and archives the others whole: each
    // file is taken from the archive or reported unread (`parse_archive` checks every size).
    let archive = match tools.run(read_command(dir, &picked), limit, false).await? {
        Some(archive) => archive,
        None => return Ok(FilesRead::Read(HashMap::new())),
    };
    Ok(FilesRead::Read(parse_archive(&archive, &picked)))
}

impl Sandbox {
    /// Reads out files of the work dir through execs, as the sandbox user: for a sandbox whose
    /// programs have all ended (a session's after its run, a batch's after an input).
    pub async fn read_out_files(
        &self,
        picker: &mut dyn FilePicker,
    ) -> Result<FilesRead, SandboxError> {
        read_out(Tools::Exec(self), self.work_dir_path(), picker).await
    }

    /// After a job sandbox's program ended by itself: the files it wrote, through the reused
    /// runner's steps when it kept the nested work dir (which is deleted after), else through
    /// execs.
    pub(super) async fn read_out_job_files(
        &mut self,
        picker: &mut dyn FilePicker,
    ) -> Result<FilesRead, SandboxError> {
        let kept = self.reuse.as_ref().is_some_and(|r| r.work_dir_kept);
        if !kept {
            let dir = self.work_dir_path();
            return read_out(Tools::Exec(&*self), dir, picker).await;
        }
        let read = read_out(Tools::Steps(self), super::nested::JOB_DIR, picker).await;
        self.discard_work_dir().await;
        read
    }

    /// Where the program's work dir is, seen from the container: a reused sandbox's job had
    /// a nested sandbox of its own, whose `/box` is a directory of the container's.
    fn work_dir_path(&self) -> &'static str {
        match self.reuse {
            Some(_) => super::nested::JOB_DIR,
            None => super::policy::WORK_DIR,
        }
    }

    /// Ends a reused runner's kept work dir (its `discard` step): it is deleted and the
    /// runner says ready, as after any job. A runner that does not answer is not trusted.
    pub(super) async fn discard_work_dir(&mut self) {
        let Some(reuse) = &mut self.reuse else { return };
        if !reuse.work_dir_kept {
            return;
        }
        reuse.work_dir_kept = false;
        let job = RunnerJob {
            step: Step::Discard,
            archive: Bytes::new(),
            argv: Vec::new(),
            stdin: Bytes::new(),
            live_stdin: None,
            timeout: TOOL_TIMEOUT,
            cpu_limit: None,
            kill: Default::default(),
        };
        let mut output = OutputCollector::new(0);
        let ended = self.run_main(job, &mut output).await;
        if !matches!(ended, Ok(outcome) if outcome.end == (ExecEnd::Exited { code: 0 })) {
            if let Some(reuse) = &mut self.reuse {
                reuse.trusted = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_records_with_spaces_newlines_and_kinds() {
        let output = b"f 12 a b.txt\0l 11 link\0p 0 out/fifo\0f 3 new\nline\0s 0 sock\0c 0 null\0";
        let listing = parse_listing(output, 10);
        assert!(listing.complete);
        let names: Vec<(&str, EntryKind, u64)> = listing
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.size))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a b.txt", EntryKind::File, 12),
                ("link", EntryKind::Symlink, 11),
                ("out/fifo", EntryKind::Fifo, 0),
                ("new\nline", EntryKind::File, 3),
                ("sock", EntryKind::Socket, 0),
                ("null", EntryKind::Device, 0),
            ]
        );
    }

    #[test]
    fn listing_past_its_caps_is_incomplete() {
        let listing = parse_listing(b"f 1 a\0f 1 b\0f 1 c\0", 2);
        assert_eq!(listing.entries.len(), 2);
        assert!(!listing.complete);
        // The byte cap cut the last record.
        let listing = parse_listing(b"f 1 a\0f 1 b", 10);
        assert_eq!(listing.entries.len(), 1);
        assert!(!listing.complete);
        let listing = parse_listing(b"", 10);
        assert!(listing.entries.is_empty() && listing.complete);
    }

    #[test]
    fn names_that_are_not_utf8_are_marked() {
        let listing = parse_listing(b"f 1 bad\xff\0", 10);
        assert!(!listing.entries[0].name_is_utf8);
    }

    fn archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn only_wanted_regular_files_come_out_of_an_archive() {
        let data = archive(&[
            ("./a.png", tar::EntryType::Regular, b"PNG"),
            ("./out/b.csv", tar::EntryType::Regular, b"x,y"),
            ("./fifo", tar::EntryType::Fifo, b""),
            ("./extra", tar::EntryType::Regular, b"not asked"),
        ]);
        let wanted = vec![
            "a.png".to_owned(),
            "out/b.csv".to_owned(),
            "fifo".to_owned(),
        ];
        let files = parse_archive(&data, &wanted);
        assert_eq!(files.len(), 2);
        assert_eq!(files["a.png"], b"PNG");
        assert_eq!(files["out/b.csv"], b"x,y");
    }

    #[test]
    fn an_archive_cut_short_keeps_its_whole_files() {
        let big = vec![7u8; 5000];
        let data = archive(&[
            ("./first", tar::EntryType::Regular, b"whole"),
            ("./second", tar::EntryType::Regular, &big),
        ]);
        let cut = &data[..data.len() - 3000];
        let files = parse_archive(cut, &["first".to_owned(), "second".to_owned()]);
        assert_eq!(
            files.get("first").map(Vec::as_slice),
            Some(b"whole".as_slice())
        );
        assert!(!files.contains_key("second"));
    }
}
