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
        let (expression, prefix, unicode) = match syntax {
            PatternSyntax::Glob => {
                let (expression, prefix) = glob_to_regex(source);
                (expression, prefix, false)
            }
            PatternSyntax::Regex => (source.to_string(), String::new(), true),
        };
        let regex = regex::RegexBuilder::new(&expression)
            .case_insensitive(true)
            .unicode(unicode)
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

/// One character of a username in a compiled glob. Usernames are ASCII (see
/// `validate::username`), so a one-byte class is exact, and it keeps the compiled program
/// small: Unicode `.` costs dozens of states, and 256 of them overflowed the size limit.
const ANY_CHAR: &str = r"[\x00-\x7F]";

/// Translates a glob into an anchored regex, and returns its folded literal prefix.
///
/// Every run of wildcards becomes one bounded repetition: a run with `n` `?` and no `*`
/// is `.{n}`, one with a `*` is `.{n,}` (`*?*` is `?*`, `**` is `*`). So the regex has one
/// repetition per run, at most 257 single-byte states, and every glob within
/// [`MAX_PATTERN`] compiles well under the size limit and matches in time linear in the
/// name (the `regex` crate never backtracks).
fn glob_to_regex(glob: &str) -> (String, String) {
    let glob = if glob.is_empty() { "*" } else { glob };
    let mut expression = String::from("^");
    let mut prefix = String::new();
    let mut in_prefix = true;
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '*' || c == '?' {
            in_prefix = false;
            let (mut ones, mut star) = (0usize, false);
            let mut wildcard = Some(c);
            while let Some(w) = wildcard {
                match w {
                    '*' => star = true,
                    _ => ones += 1,
                }
                wildcard = chars.next_if(|&n| n == '*' || n == '?');
            }
            expression.push_str(ANY_CHAR);
            match (ones, star) {
                (0, _) => expression.push('*'),
                (1, false) => {}
                (n, false) => expression.push_str(&format!("{{{n}}}")),
                (n, true) => expression.push_str(&format!("{{{n},}}")),
            }
            continue;
        }
        if in_prefix {
            prefix.push(c.to_ascii_lowercase());
        }
        expression.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
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
    fn runs_of_wildcards_mean_what_they_say() {
        check("a**b", PatternSyntax::Glob, &["ab", "axyb"], &["a", "b"]);
        check(
            "a?*?b",
            PatternSyntax::Glob,
            &["axyb", "axyzb"],
            &["ab", "axb"],
        );
        check("a??b", PatternSyntax::Glob, &["axyb"], &["axb", "axyzb"]);
        check("*?", PatternSyntax::Glob, &["x", "xyz"], &[]);
        check("?*?*", PatternSyntax::Glob, &["xy", "xyz"], &["x"]);
        // Literals outside the username alphabet compile and simply match no one.
        check("é*", PatternSyntax::Glob, &[], &["e", "alice"]);
        check("a\\b", PatternSyntax::Glob, &[], &["ab"]);
    }

    /// The worst globs within the length limit: each must compile (they used to overflow
    /// the regex size limit: 256 `*` did) and match as a glob does.
    #[test]
    fn the_largest_globs_compile_and_match() {
        let long_name = "a".repeat(crate::validate::MAX_USERNAME);
        let cases = [
            "*".repeat(MAX_PATTERN),
            "?".repeat(MAX_PATTERN),
            "*?".repeat(MAX_PATTERN / 2),
            "?*".repeat(MAX_PATTERN / 2),
            "a*".repeat(MAX_PATTERN / 2),
            "*a".repeat(MAX_PATTERN / 2),
            "a?".repeat(MAX_PATTERN / 2),
            "k".repeat(MAX_PATTERN),
            "s*".repeat(MAX_PATTERN / 2),
            format!("{}*", "?".repeat(MAX_PATTERN - 1)),
            "é".repeat(MAX_PATTERN / 2),
        ];
        for glob in &cases {
            assert!(glob.len() <= MAX_PATTERN);
            let pattern = Pattern::compile(glob, PatternSyntax::Glob)
                .unwrap_or_else(|err| panic!("{glob}: {err}"));
            for name in ["a", "ab", long_name.as_str(), "Kk", "s"] {
                assert_eq!(
                    pattern.matches(name),
                    reference_match(glob, name),
                    "{glob} on {name}"
                );
            }
        }
    }

    /// A glob matcher written the obvious way, to compare the compiled regex with.
    fn reference_match(glob: &str, name: &str) -> bool {
        let glob: Vec<char> = glob.chars().collect();
        let name: Vec<char> = name.chars().map(|c| c.to_ascii_lowercase()).collect();
        // matched[j]: the glob read so far matches name[..j].
        let mut matched = vec![false; name.len() + 1];
        matched[0] = true;
        for g in glob {
            let mut next = vec![false; name.len() + 1];
            for j in 0..=name.len() {
                next[j] = match g {
                    '*' => matched[j] || (j > 0 && next[j - 1]),
                    '?' => j > 0 && matched[j - 1],
                    c => j > 0 && matched[j - 1] && name[j - 1] == c.to_ascii_lowercase(),
                };
            }
            matched = next;
        }
        matched[name.len()]
    }

    proptest::proptest! {
        /// Every glob within the length limit compiles and matches exactly the names the
        /// obvious matcher does.
        #[test]
        fn every_glob_within_the_limit_compiles_and_matches_like_a_glob(
            glob in "[*?aAbB.é]{0,128}",
            name in "[aAbB.]{1,12}",
        ) {
            proptest::prop_assume!(glob.len() <= MAX_PATTERN);
            let pattern = Pattern::compile(&glob, PatternSyntax::Glob);
            proptest::prop_assert!(pattern.is_ok(), "{glob}: {:?}", pattern.err());
            let expected = reference_match(if glob.is_empty() { "*" } else { &glob }, &name);
            proptest::prop_assert_eq!(pattern.unwrap().matches(&name), expected);
        }

        /// Globs of the longest length, heavy in wildcards: a long run of `*` first (which
        /// used to overflow the regex size limit), then any mix.
        #[test]
        fn every_wildcard_glob_of_the_longest_length_compiles(
            stars in 0usize..=MAX_PATTERN,
            rest in "[*?a]{256}",
        ) {
            let glob: String = "*".repeat(stars) + &rest[..MAX_PATTERN - stars];
            proptest::prop_assert!(Pattern::compile(&glob, PatternSyntax::Glob).is_ok());
        }
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
