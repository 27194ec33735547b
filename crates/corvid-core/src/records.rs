//! The stored form of each row (postcard). This is the disk format: it is independent of
//! every wire format, and changes to it need a migration.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::tables::StorageFault;
use crate::types::{AccountId, ReceiptStatus, Timestamp};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub created_at: Timestamp,
    /// Number of this account's `inbox` rows marked unread, kept in step with them.
    pub unread: u64,
    /// No unread message of this account has a smaller id: where `fetch_unread` starts. Kept
    /// close to the oldest unread message, so that reads skip few read ones.
    pub unread_from: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub account: AccountId,
    pub created_at: Timestamp,
    pub last_active: Timestamp,
    pub idle_timeout_ms: u64,
    pub expires_at: Timestamp,
}

impl SessionRecord {
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at && now < self.last_active.saturating_add(self.idle_timeout_ms)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub from: AccountId,
    pub to: AccountId,
    pub from_name: String,
    pub to_name: String,
    pub text: String,
    pub sent_at: Timestamp,
    pub client_id: u64,
    pub status: ReceiptStatus,
    /// Still in the sender's view (not deleted by the sender, sender not deleted).
    pub sender_sees: bool,
    /// Still in the recipient's view.
    pub recipient_sees: bool,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs into a Vec cannot fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageFault> {
    postcard::from_bytes(bytes).map_err(|err| StorageFault(format!("corrupt row: {err}")))
}
