//! The inputs the cost examples (`protocol_costs`, `web_costs`) measure every operation
//! with: a typical case and the worst the server accepts, the same for every protocol so
//! that their tables compare.

pub const PASSWORD: &str = "correct horse battery";

/// Names of `len` characters, distinct by `seed`.
pub fn name(len: usize, seed: usize) -> String {
    let mut name = format!("u{seed:04}");
    while name.len() < len {
        name.push('x');
    }
    name.truncate(len);
    name
}

/// The inputs of one case, typical or worst.
pub struct Case {
    pub label: &'static str,
    pub name_len: usize,
    pub display_name: String,
    pub password: String,
    pub text: String,
    /// Accounts that a listing returns, and messages in a page.
    pub page: usize,
    pub ids: usize,
}

pub fn cases() -> [Case; 2] {
    [
        Case {
            label: "typical",
            name_len: 5,
            display_name: "Alice A.".into(),
            password: PASSWORD.into(),
            text: "lunch at noon? the usual place".into(),
            page: 5,
            ids: 1,
        },
        Case {
            label: "worst",
            name_len: 32,
            // 64 characters of 4 bytes each: the largest display name.
            display_name: "𝄞".repeat(64),
            password: "p".repeat(128),
            text: "x".repeat(4096),
            page: 100,
            ids: 1000,
        },
    ]
}
