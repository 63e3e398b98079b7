//! Validation of daemon names.
//!
//! A NAME becomes part of file names in a directory that may be shared with
//! other users, so it is checked before anything touches the file system.
//! The rules (from the contract): 1 to 64 bytes; the first an ASCII letter or
//! digit; the rest ASCII letters, digits, `.`, `_` or `-`. That excludes `/`,
//! `..` as a whole name, leading dots and dashes (hidden files, options),
//! spaces, control characters and anything non-ASCII.

use crate::error::Error;

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks `name` against the contract's rules; the error says which rule failed.
pub fn validate(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 64 bytes")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some("it must start with an ASCII letter or digit")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            name: name.escape_debug().to_string(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "a",
            "mailer",
            "Mailer-2",
            "queue.consumer_1",
            "9lives",
            &"x".repeat(64),
        ] {
            assert!(validate(n).is_ok(), "{n:?} should be valid");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for n in [
            "",
            ".",
            "..",
            "-x",
            ".hidden",
            "_x",
            "a/b",
            "a b",
            "a\0b",
            "a\nb",
            "é",
            "a\u{7f}",
            &"x".repeat(65),
        ] {
            assert!(validate(n).is_err(), "{n:?} should be rejected");
        }
    }
}
