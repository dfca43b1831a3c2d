//! Submitted source files: name validation and packing into the tar stream that the sandbox
//! unpacks into its work dir (as the sandbox user, inside the sandbox: the host never writes
//! into a sandbox's file system).

pub use crate::names::{FileNameError, MAX_NAME_BYTES, validate_name};

/// Most files one request may carry (code + files).
pub const MAX_FILES: usize = 64;
/// Most bytes of source one request may carry, all files together. The body cap usually bites
/// first; this bound holds whatever the body cap is configured to.
pub const MAX_TOTAL_BYTES: usize = 4 * 1024 * 1024;

/// One file to place in the work dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub content: Vec<u8>,
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
