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
    use proptest::prelude::*;

    /// The contract's grammar, written independently of `validate`.
    fn grammar(name: &str) -> bool {
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        first_ok
            && name.len() <= 64
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    }

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

    proptest! {
        #[test]
        fn accepted_exactly_when_the_grammar_says_so(name in any::<String>()) {
            prop_assert_eq!(validate(&name).is_ok(), grammar(&name), "{:?}", name);
        }

        #[test]
        fn near_misses_follow_the_grammar(name in "[A-Za-z0-9._/ \t\n\x00-]{0,70}") {
            prop_assert_eq!(validate(&name).is_ok(), grammar(&name), "{:?}", name);
        }

        #[test]
        fn grammar_names_are_accepted(name in "[A-Za-z0-9][A-Za-z0-9._-]{0,63}") {
            prop_assert!(validate(&name).is_ok(), "{:?}", name);
        }

        #[test]
        fn slashes_leading_dots_and_dashes_are_rejected(
            head in "[./-]",
            body in "[A-Za-z0-9._/-]{0,70}",
            tail in "[A-Za-z0-9._-]{0,10}",
        ) {
            let leading = format!("{head}{body}");
            prop_assert!(validate(&leading).is_err(), "{:?}", leading);
            let with_slash = format!("a{body}/{tail}");
            prop_assert!(validate(&with_slash).is_err(), "{:?}", with_slash);
        }

        #[test]
        fn longer_than_64_bytes_is_rejected(name in "[A-Za-z0-9][A-Za-z0-9._-]{64,100}") {
            prop_assert!(validate(&name).is_err());
        }

        /// The message quotes the name escaped, so a hostile name cannot
        /// forge extra lines in a log or terminal.
        #[test]
        fn error_messages_are_one_printable_line(name in any::<String>()) {
            if let Err(e) = validate(&name) {
                let msg = e.to_string();
                prop_assert!(!msg.chars().any(char::is_control), "{:?}", msg);
            }
        }
    }
}
