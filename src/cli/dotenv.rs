//! `.env`: loaded into the environment before the database URL is resolved; one that cannot be
//! read is bad usage, and its error never quotes what the file holds.

use super::error::CliError;
use roachbank::db::one_line;

/// Loads `.env` (in this directory or the nearest parent), if there is one.
pub fn load() -> Result<(), CliError> {
    match dotenvy::dotenv() {
        Err(err) if !err.not_found() => Err(CliError::Usage(format!(
            "cannot read .env: {}",
            dotenv_error(&err)
        ))),
        _ => Ok(()),
    }
}

/// A `.env` that cannot be read, without the offending line: dotenvy's message quotes it, and it
/// may hold a password (`DATABASE_URL=postgresql://u:secret@…` with a stray quote). Only the
/// file's line number is kept; an I/O error (no content in it) is printed as it is.
fn dotenv_error(err: &dotenvy::Error) -> String {
    match err {
        dotenvy::Error::LineParse(content, index) => {
            // dotenvy gives the line itself (a multi-line value starts at its first line) and the
            // byte offset of the error in it; find its line number in the file.
            match line_number_of(content) {
                Some(line) => format!("line {line} is not KEY=VALUE"),
                None => format!("a line is not KEY=VALUE (error at byte {index} of it)"),
            }
        }
        dotenvy::Error::Io(io) => one_line(&io.to_string()),
        // Its text may quote the variable's value.
        dotenvy::Error::EnvVar(_) => "a variable it uses is not valid Unicode".to_string(),
        _ => "it is not a valid .env file".to_string(),
    }
}

/// The 1-based number of the line of `.env` (the one dotenvy reads: in this directory or the
/// nearest parent) where `content` starts, if the file can be read again and holds it.
fn line_number_of(content: &str) -> Option<usize> {
    let first = content.lines().next().filter(|first| !first.is_empty())?;
    let mut dir = std::env::current_dir().ok()?;
    loop {
        let candidate = dir.join(".env");
        if candidate.is_file() {
            let text = std::fs::read_to_string(candidate).ok()?;
            // dotenvy drops a trailing comment; the whole line first, then the line it began.
            let lines: Vec<&str> = text.lines().collect();
            return lines
                .iter()
                .position(|line| *line == first)
                .or_else(|| lines.iter().position(|line| line.starts_with(first)))
                .map(|index| index + 1);
        }
        if !dir.pop() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No `.env` error quotes what the file holds: not the offending line, not a variable's
    /// value.
    #[test]
    fn dotenv_errors_never_quote_the_file() {
        let secret = "pw-S3cret";
        let not_unicode = std::ffi::OsString::from(secret);
        for err in [
            dotenvy::Error::EnvVar(std::env::VarError::NotUnicode(not_unicode)),
            dotenvy::Error::LineParse(format!("DATABASE_URL postgresql://u:{secret}@h/db"), 12),
        ] {
            let text = dotenv_error(&err);
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }
}
