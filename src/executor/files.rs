//! Submitted source files: name validation and packing into the tar stream that the sandbox
//! unpacks into its work dir (as the sandbox user, inside the sandbox: the host never writes
//! into a sandbox's file system).

/// Most files one request may carry (code + files).
pub const MAX_FILES: usize = 64;
/// Longest accepted file name (whole relative path), in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Deepest accepted directory nesting of a file name.
const MAX_DEPTH: usize = 8;
/// Most bytes of source one request may carry, all files together. The body cap usually bites
/// first; this bound holds whatever the body cap is configured to.
pub const MAX_TOTAL_BYTES: usize = 4 * 1024 * 1024;

/// One file to place in the work dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub content: Vec<u8>,
}

/// Why a file name was refused; the text goes to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileNameError {
    #[error("file name must not be empty")]
    Empty,
    #[error("file name `{0}` is longer than {MAX_NAME_BYTES} bytes")]
    TooLong(String),
    #[error("file name `{0}` must be a relative path")]
    Absolute(String),
    #[error("file name `{0}` must not contain `.` or `..` segments or empty segments")]
    DotSegment(String),
    #[error("file name `{0}` is nested deeper than {MAX_DEPTH} directories")]
    TooDeep(String),
    #[error(
        "file name `{0}` may only use letters, digits, `.`, `_`, `-` and `/`, and no segment may start with `-`"
    )]
    BadCharacter(String),
}

/// Checks one relative file name. Allowed: segments of `[A-Za-z0-9._-]` joined by `/`, no `.`,
/// `..` or empty segment, no segment starting with `-` (it would read as an option to the
/// compiler), bounded length and depth. Anything else (NUL, backslash, spaces, absolute paths)
/// is refused rather than escaped, so commands can name files without quoting.
pub fn validate_name(name: &str) -> Result<(), FileNameError> {
    // Shown back to the client: keep it printable and short.
    let shown = || {
        name.chars()
            .take(MAX_NAME_BYTES)
            .collect::<String>()
            .escape_default()
            .to_string()
    };
    if name.is_empty() {
        return Err(FileNameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(FileNameError::TooLong(shown()));
    }
    if name.starts_with('/') {
        return Err(FileNameError::Absolute(shown()));
    }
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() > MAX_DEPTH + 1 {
        return Err(FileNameError::TooDeep(shown()));
    }
    for segment in &segments {
        if segment.is_empty() || *segment == "." || *segment == ".." {
            return Err(FileNameError::DotSegment(shown()));
        }
        let safe = segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !safe || segment.starts_with('-') {
            return Err(FileNameError::BadCharacter(shown()));
        }
    }
    Ok(())
}

/// Checks a whole file set: every name valid, no duplicates, no file that is also a directory of
/// another (`a` and `a/b`), bounded count. Returns the client-facing reason on failure.
pub fn validate_set(files: &[SourceFile]) -> Result<(), String> {
    if files.is_empty() {
        return Err("`code` or at least one entry in `files` is required".to_owned());
    }
    if files.len() > MAX_FILES {
        return Err(format!("at most {MAX_FILES} files are accepted"));
    }
    let total: usize = files.iter().map(|f| f.content.len()).sum();
    if total > MAX_TOTAL_BYTES {
        return Err(format!(
            "source files may hold at most {MAX_TOTAL_BYTES} bytes together"
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for file in files {
        validate_name(&file.name).map_err(|e| e.to_string())?;
        if !names.insert(file.name.as_str()) {
            return Err(format!("file name `{}` is given twice", file.name));
        }
    }
    for name in &names {
        let prefix = format!("{name}/");
        if names.iter().any(|other| other.starts_with(&prefix)) {
            return Err(format!("`{name}` is both a file and a directory"));
        }
    }
    Ok(())
}

/// Packs validated files into a ustar archive. Only regular files and directories are written
/// (never links), owned by nobody in particular: the unpacking tar runs unprivileged and keeps
/// nothing but the bits below.
pub fn pack(files: &[SourceFile]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for file in files {
        let mut parent = String::new();
        let segments: Vec<&str> = file.name.split('/').collect();
        for dir in &segments[..segments.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(dir);
            if dirs.insert(parent.clone()) {
                let mut header = tar::Header::new_ustar();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                header.set_mtime(now);
                builder
                    .append_data(&mut header, format!("{parent}/"), std::io::empty())
                    .expect("writing a tar header into memory cannot fail");
            }
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(file.content.len() as u64);
        header.set_mtime(now);
        builder
            .append_data(&mut header, &file.name, file.content.as_slice())
            .expect("writing a validated file into memory cannot fail");
    }
    builder
        .into_inner()
        .expect("finishing an in-memory tar cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &str) -> SourceFile {
        SourceFile {
            name: name.to_owned(),
            content: content.as_bytes().to_vec(),
        }
    }

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "main.py",
            "pkg/util.py",
            "include/a_b-c.h",
            ".hidden",
            "a/b/c/d.txt",
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_unsafe_names() {
        let cases = [
            ("", "empty"),
            ("/etc/passwd", "relative"),
            ("../x", "`.`"),
            ("a/../../x", "`.`"),
            ("a//b", "`.`"),
            ("./a", "`.`"),
            ("a/", "`.`"),
            ("a\0b", "letters"),
            ("a b", "letters"),
            ("a\\b", "letters"),
            ("-rf", "letters"),
            ("ü.py", "letters"),
        ];
        for (name, fragment) in cases {
            let err = validate_name(name).unwrap_err().to_string();
            assert!(err.contains(fragment), "{name:?}: {err}");
        }
        assert!(matches!(
            validate_name(&"a".repeat(129)),
            Err(FileNameError::TooLong(_))
        ));
        let too_deep = format!("{}f", "a/".repeat(9));
        assert!(matches!(
            validate_name(&too_deep),
            Err(FileNameError::TooDeep(_))
        ));
    }

    #[test]
    fn error_text_does_not_echo_control_bytes() {
        let err = validate_name("a\0b").unwrap_err().to_string();
        assert!(!err.contains('\0'));
        assert!(err.contains("\\u{0}"));
    }

    #[test]
    fn set_refuses_duplicates_file_dir_clash_and_too_many() {
        assert!(
            validate_set(&[file("a.py", ""), file("a.py", "")])
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            validate_set(&[file("a", ""), file("a/b", "")])
                .unwrap_err()
                .contains("directory")
        );
        let many: Vec<_> = (0..=MAX_FILES)
            .map(|i| file(&format!("f{i}"), ""))
            .collect();
        assert!(validate_set(&many).unwrap_err().contains("at most"));
        assert!(validate_set(&[]).is_err());
        assert!(validate_set(&[file("main.c", ""), file("inc/x.h", "")]).is_ok());
    }

    #[test]
    fn set_refuses_more_source_than_the_total_bound() {
        let half = "x".repeat(MAX_TOTAL_BYTES / 2);
        assert!(validate_set(&[file("a", &half), file("b", &half)]).is_ok());
        let err = validate_set(&[file("a", &half), file("b", &half), file("c", "x")]).unwrap_err();
        assert!(err.contains("at most"), "{err}");
    }

    #[test]
    fn pack_round_trips_with_directories() {
        let files = [
            file("main.py", "print(1)\n"),
            file("pkg/sub/util.py", "X = 2\n"),
        ];
        let archive = pack(&files);
        let mut reader = tar::Archive::new(archive.as_slice());
        let entries: Vec<(String, bool, Vec<u8>)> = reader
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let is_dir = e.header().entry_type().is_dir();
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut content).unwrap();
                (name, is_dir, content)
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["main.py", "pkg/", "pkg/sub/", "pkg/sub/util.py"]);
        assert_eq!(entries[3].2, b"X = 2\n");
        assert!(entries[1].1);
        // Tar archives end with two zero blocks and are a whole number of 512-byte blocks.
        assert_eq!(archive.len() % 512, 0);
    }
}
