//! The rules for user input that every server enforces the same way.

use crate::error::ErrorCode;

/// Longest username, in characters.
pub const MAX_USERNAME: usize = 32;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 64;
/// Shortest and longest password, in bytes.
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 128;
/// The text limit unless the server configures another.
pub const DEFAULT_MAX_TEXT: usize = 4096;
/// The largest text any configuration may allow; the state machine enforces it too.
pub const HARD_MAX_TEXT: usize = 1 << 20;
/// Largest page for listings, unread fetches and history.
pub const MAX_PAGE: u32 = 100;
/// Page size when a request gives none.
pub const DEFAULT_PAGE: u32 = 50;
/// Most message ids in one mark-read or delete request.
pub const MAX_IDS: usize = 1000;
/// Longest account-listing pattern, in bytes.
pub const MAX_PATTERN: usize = 256;

pub fn username(name: &str) -> Result<(), ErrorCode> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USERNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    ok.then_some(()).ok_or(ErrorCode::InvalidUsername)
}

pub fn display_name(name: &str) -> Result<(), ErrorCode> {
    (name.chars().count() <= MAX_DISPLAY_NAME)
        .then_some(())
        .ok_or(ErrorCode::InvalidDisplayName)
}

pub fn password(password: &str) -> Result<(), ErrorCode> {
    (MIN_PASSWORD..=MAX_PASSWORD)
        .contains(&password.len())
        .then_some(())
        .ok_or(ErrorCode::InvalidPassword)
}

pub fn text(text: &str, max_bytes: usize) -> Result<(), ErrorCode> {
    (!text.is_empty() && text.len() <= max_bytes.min(HARD_MAX_TEXT))
        .then_some(())
        .ok_or(ErrorCode::InvalidText)
}

/// A page size: `None` means the default, anything outside 1..=100 is refused.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ErrorCode> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ErrorCode::InvalidLimit),
    }
}

pub fn id_count(count: usize) -> Result<(), ErrorCode> {
    (count <= MAX_IDS)
        .then_some(())
        .ok_or(ErrorCode::TooManyIds)
}

/// The form under which usernames are unique: ASCII lower case.
pub fn fold(username: &str) -> String {
    username.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for good in ["a", "Alice", "bob_1", "x.y-z", &"a".repeat(32)] {
            assert_eq!(username(good), Ok(()), "{good}");
        }
        for bad in ["", "has space", "é", "semi;colon", &"a".repeat(33), "tab\t"] {
            assert_eq!(username(bad), Err(ErrorCode::InvalidUsername), "{bad:?}");
        }
    }

    #[test]
    fn display_names_count_characters_not_bytes() {
        assert_eq!(display_name(""), Ok(()));
        assert_eq!(display_name(&"é".repeat(64)), Ok(()));
        assert_eq!(
            display_name(&"é".repeat(65)),
            Err(ErrorCode::InvalidDisplayName)
        );
    }

    #[test]
    fn passwords_are_8_to_128_bytes() {
        assert_eq!(password("1234567"), Err(ErrorCode::InvalidPassword));
        assert_eq!(password("12345678"), Ok(()));
        assert_eq!(password(&"x".repeat(128)), Ok(()));
        assert_eq!(password(&"x".repeat(129)), Err(ErrorCode::InvalidPassword));
    }

    #[test]
    fn texts_and_limits() {
        assert_eq!(text("", 10), Err(ErrorCode::InvalidText));
        assert_eq!(text("hi", 10), Ok(()));
        assert_eq!(text("hello world", 10), Err(ErrorCode::InvalidText));
        assert_eq!(page_limit(None), Ok(50));
        assert_eq!(page_limit(Some(100)), Ok(100));
        assert_eq!(page_limit(Some(0)), Err(ErrorCode::InvalidLimit));
        assert_eq!(page_limit(Some(101)), Err(ErrorCode::InvalidLimit));
        assert_eq!(id_count(1000), Ok(()));
        assert_eq!(id_count(1001), Err(ErrorCode::TooManyIds));
    }
}
