//! Judge0's `additional_files`: a zip (base64 in the request) unpacked into the work dir
//! before the compile, as `unzip -n` does there (a file already written, the source, is not
//! replaced). Unpacked here, in memory, into the job's files: what goes into the sandbox is
//! runbox's own tar of checked names. Bounded whatever the archive claims: its entries are
//! read through a budget, so a zip bomb stops at the cap; absolute names, `..` and links are
//! refused, never rewritten.

use std::io::Read;

use crate::executor::files::{MAX_FILES, MAX_TOTAL_BYTES, SourceFile, validate_name};

/// Most bytes the archive may unpack to: Judge0's `max_extract_size` (10240 KB) or runbox's
/// bound on a job's files, the smaller.
pub const MAX_EXTRACT_BYTES: usize = if MAX_TOTAL_BYTES < 10240 * 1024 {
    MAX_TOTAL_BYTES
} else {
    10240 * 1024
};

/// The files of `archive`, in its order, less directories and any named `keep` (the source
/// file, which `unzip -n` does not overwrite). `Err` is the client's message.
pub fn unzip(archive: &[u8], keep: &str) -> Result<Vec<SourceFile>, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive))
        .map_err(|_| "is not a valid zip archive".to_owned())?;
    if zip.len() > MAX_FILES * 4 {
        return Err(format!("holds more than {} entries", MAX_FILES * 4));
    }
    let mut files = Vec::new();
    let mut budget = MAX_EXTRACT_BYTES;
    for index in 0..zip.len() {
        let mut entry = zip
            .by_index(index)
            .map_err(|_| "is not a valid zip archive".to_owned())?;
        let name = entry.name().to_owned();
        let shown: String = name
            .chars()
            .take(64)
            .collect::<String>()
            .escape_default()
            .to_string();
        if entry.is_symlink() {
            return Err(format!("holds a link ({shown}): links are not allowed"));
        }
        let path = name.trim_end_matches('/');
        if name.starts_with('/') || name.contains('\\') || path.split('/').any(|s| s == "..") {
            return Err(format!(
                "holds a path outside the work dir ({shown}): absolute paths and '..' are not allowed"
            ));
        }
        if entry.is_dir() {
            validate_name(path).map_err(|e| format!("holds {shown}: {e}"))?;
            continue;
        }
        if entry.encrypted() {
            return Err(format!("holds an encrypted file ({shown})"));
        }
        validate_name(path).map_err(|e| format!("holds {shown}: {e}"))?;
        let mut content = Vec::new();
        let read = (&mut entry)
            .take(budget as u64 + 1)
            .read_to_end(&mut content)
            .map_err(|_| format!("holds a damaged file ({shown})"))?;
        if read > budget {
            return Err(format!(
                "unpacks to more than {} KB",
                MAX_EXTRACT_BYTES / 1024
            ));
        }
        budget -= read;
        if path != keep {
            files.push(SourceFile {
                name: path.to_owned(),
                content,
            });
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in entries {
            if let Some(dir) = name.strip_suffix('/') {
                writer.add_directory(dir, options).unwrap();
            } else {
                writer.start_file(*name, options).unwrap();
                writer.write_all(content).unwrap();
            }
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn files_are_unpacked_in_order_and_the_source_is_kept() {
        let zip = archive(&[
            ("data/", b""),
            ("data/in.txt", b"42\n"),
            ("main.py", b"print('from the zip')"),
            ("lib.py", b"X = 1"),
        ]);
        let files = unzip(&zip, "main.py").unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["data/in.txt", "lib.py"]);
        assert_eq!(files[0].content, b"42\n");
    }

    #[test]
    fn escapes_links_bombs_and_garbage_are_refused() {
        assert!(
            unzip(b"not a zip", "m")
                .unwrap_err()
                .contains("not a valid zip")
        );
        for name in ["/etc/passwd", "../up.txt", "a/../../b", "a\\..\\b"] {
            let error = unzip(&archive(&[(name, b"x")]), "m").unwrap_err();
            assert!(error.contains("outside the work dir"), "{name}: {error}");
        }
        // 64 MiB of zeros deflate to ~64 KB: unpacking stops at the cap.
        let zeros = vec![0u8; 64 << 20];
        let bomb = archive(&[("zeros.bin", &zeros)]);
        assert!(bomb.len() < 1 << 20);
        assert!(
            unzip(&bomb, "m")
                .unwrap_err()
                .contains("unpacks to more than")
        );
        // A link.
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        writer
            .add_symlink(
                "passwd",
                "/etc/passwd",
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
        let link = writer.finish().unwrap().into_inner();
        assert!(
            unzip(&link, "m")
                .unwrap_err()
                .contains("links are not allowed")
        );
    }
}
