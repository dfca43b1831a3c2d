//! Safe relative file names: the one rule for a job's files and a language's entry file (a
//! leaf, so that the catalogue and the executor both use it without depending on each other).

/// Longest accepted file name (whole relative path), in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Deepest accepted directory nesting of a file name.
const MAX_DEPTH: usize = 8;

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
