//! Account-listing patterns: case-insensitive globs by default, or regular expressions
//! (the `regex` crate: linear time, with compiled-size limits).

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::validate::MAX_PATTERN;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum PatternSyntax {
    /// `*` matches any run of characters, `?` any one character; the whole name must match.
    #[default]
    Glob = 0,
    /// A regular expression that must match somewhere in the name (anchor it with `^...$`).
    Regex = 1,
}

impl PatternSyntax {
    pub fn from_u8(value: u8) -> Option<PatternSyntax> {
        match value {
            0 => Some(PatternSyntax::Glob),
            1 => Some(PatternSyntax::Regex),
            _ => None,
        }
    }
}

/// A compiled pattern, with the literal prefix every match must start with (globs only),
/// so that a listing scans only the part of the username index that can match.
#[derive(Clone, Debug)]
pub struct Pattern {
    regex: regex::Regex,
    prefix: String,
}

/// Bounds on the compiled program, so that a hostile regex cannot take the server's memory.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

impl Pattern {
    pub fn compile(source: &str, syntax: PatternSyntax) -> Result<Pattern, ApiError> {
        if source.len() > MAX_PATTERN {
            return Err(ApiError::new(
                ErrorCode::InvalidPattern,
                format!("pattern longer than {MAX_PATTERN} bytes"),
            ));
        }
        let (expression, prefix) = match syntax {
            PatternSyntax::Glob => glob_to_regex(source),
            PatternSyntax::Regex => (source.to_string(), String::new()),
        };
        let regex = regex::RegexBuilder::new(&expression)
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|err| {
                let detail = err.to_string();
                let first = detail.lines().last().unwrap_or("").trim().to_string();
                ApiError::new(
                    ErrorCode::InvalidPattern,
                    format!("invalid pattern: {first}"),
                )
            })?;
        Ok(Pattern { regex, prefix })
    }

    /// Whether `username` is listed.
    pub fn matches(&self, username: &str) -> bool {
        self.regex.is_match(username)
    }

    /// The folded prefix that every matching username starts with ("" if none is known).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Translates a glob into an anchored regex, and returns its folded literal prefix.
fn glob_to_regex(glob: &str) -> (String, String) {
    let glob = if glob.is_empty() { "*" } else { glob };
    let mut expression = String::from("^");
    let mut prefix = String::new();
    let mut in_prefix = true;
    for c in glob.chars() {
        match c {
            '*' => {
                in_prefix = false;
                expression.push_str(".*");
            }
            '?' => {
                in_prefix = false;
                expression.push('.');
            }
            c => {
                if in_prefix {
                    prefix.push(c.to_ascii_lowercase());
                }
                expression.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
            }
        }
    }
    expression.push('$');
    (expression, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, syntax: PatternSyntax, yes: &[&str], no: &[&str]) {
        let p = Pattern::compile(pattern, syntax).unwrap();
        for name in yes {
            assert!(p.matches(name), "{pattern} should match {name}");
        }
        for name in no {
            assert!(!p.matches(name), "{pattern} should not match {name}");
        }
    }

    #[test]
    fn globs_match_whole_names_case_insensitively() {
        check(
            "al*",
            PatternSyntax::Glob,
            &["alice", "ALBERT", "al"],
            &["bal", "xalice"],
        );
        check(
            "?ob",
            PatternSyntax::Glob,
            &["bob", "Rob"],
            &["bobby", "ob"],
        );
        check("a.b", PatternSyntax::Glob, &["a.b", "A.B"], &["axb"]);
        check("", PatternSyntax::Glob, &["anyone"], &[]);
        check("*", PatternSyntax::Glob, &["x"], &[]);
    }

    #[test]
    fn regexes_search_anywhere_unless_anchored() {
        check("li", PatternSyntax::Regex, &["alice", "LILY"], &["bob"]);
        check("^b.b$", PatternSyntax::Regex, &["bob", "BIB"], &["bobby"]);
    }

    #[test]
    fn glob_prefixes_are_folded_literals() {
        assert_eq!(
            Pattern::compile("AL*ce", PatternSyntax::Glob)
                .unwrap()
                .prefix(),
            "al"
        );
        assert_eq!(
            Pattern::compile("*x", PatternSyntax::Glob)
                .unwrap()
                .prefix(),
            ""
        );
        assert_eq!(
            Pattern::compile("al", PatternSyntax::Regex)
                .unwrap()
                .prefix(),
            ""
        );
    }

    #[test]
    fn bad_patterns_are_clear_errors() {
        let err = Pattern::compile("(unclosed", PatternSyntax::Regex).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPattern);
        assert!(
            err.message.starts_with("invalid pattern:"),
            "{}",
            err.message
        );
        let err = Pattern::compile(&"a".repeat(300), PatternSyntax::Glob).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPattern);
        // A pattern whose compiled program is huge is refused, not built.
        let err = Pattern::compile("\\w{1000}\\w{1000}", PatternSyntax::Regex).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPattern);
    }
}
