//! Identifiers and small value types shared by the state machine and every protocol.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Milliseconds since the Unix epoch, as stamped by the leader.
pub type Timestamp = u64;

/// An account's number. Assigned in order by the state machine and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountId(pub u64);

/// A message's number. Assigned in order by the state machine: a larger id was sent later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(pub u64);

/// The opaque session token a client holds: 128 random bits made by the leader.
///
/// The state machine never stores a token, only its [`SessionKey`], so neither the log
/// nor the database holds a credential that could be replayed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Token(pub [u8; 16]);

impl Token {
    /// The key under which the session of this token is stored.
    pub fn session_key(&self) -> SessionKey {
        SessionKey(Sha256::digest(self.0).into())
    }

    /// Lower-case hexadecimal, as the CLI stores it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 32 hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Token> {
        let text = text.trim();
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Token(bytes))
    }
}

impl std::fmt::Debug for Token {
    // A token is a credential: debug output must not leak it into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// SHA-256 of a session token: how the state machine names a session.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionKey(pub [u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SessionKey({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// How far a message has got, as its sender sees it. Only ever moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ReceiptStatus {
    /// Stored durably; no session of the recipient has seen it yet.
    Sent = 0,
    /// Pushed to, or fetched by, a session of the recipient.
    Delivered = 1,
    /// Marked read by the recipient.
    Read = 2,
}

impl ReceiptStatus {
    pub fn from_u8(value: u8) -> Option<ReceiptStatus> {
        match value {
            0 => Some(ReceiptStatus::Sent),
            1 => Some(ReceiptStatus::Delivered),
            2 => Some(ReceiptStatus::Read),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ReceiptStatus::Sent => "sent",
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Read => "read",
        }
    }
}

/// Why a session ended, told to its live streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum EndReason {
    /// The client logged out.
    LoggedOut = 0,
    /// A newer login replaced it (the `single_session` policy).
    ReplacedByNewLogin = 1,
    /// The account was deleted.
    AccountDeleted = 2,
    /// The session passed its idle timeout or its absolute lifetime.
    Expired = 3,
}

impl EndReason {
    pub fn from_u8(value: u8) -> Option<EndReason> {
        match value {
            0 => Some(EndReason::LoggedOut),
            1 => Some(EndReason::ReplacedByNewLogin),
            2 => Some(EndReason::AccountDeleted),
            3 => Some(EndReason::Expired),
            _ => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            EndReason::LoggedOut => "logged out",
            EndReason::ReplacedByNewLogin => "logged in elsewhere (single session policy)",
            EndReason::AccountDeleted => "account deleted",
            EndReason::Expired => "session expired",
        }
    }
}

/// A message as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    /// The sender's username as it was when the message was sent.
    pub from: String,
    /// The recipient's username.
    pub to: String,
    pub text: String,
    /// When the leader accepted the message.
    pub sent_at: Timestamp,
    pub status: ReceiptStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hex_round_trips_and_rejects_garbage() {
        let token = Token([0xab; 16]);
        assert_eq!(Token::from_hex(&token.to_hex()), Some(token));
        assert_eq!(Token::from_hex("abc"), None);
        assert_eq!(Token::from_hex(&"zz".repeat(16)), None);
        assert_eq!(Token::from_hex(&"é".repeat(16)), None);
    }

    #[test]
    fn token_debug_does_not_leak_the_secret() {
        let token = Token([0x42; 16]);
        assert!(!format!("{token:?}").contains("42"));
    }

    #[test]
    fn different_tokens_have_different_session_keys() {
        assert_ne!(Token([1; 16]).session_key(), Token([2; 16]).session_key());
    }
}
