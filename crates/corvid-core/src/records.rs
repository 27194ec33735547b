//! The stored form of each row: postcard, and for the records a client's data lives in
//! (messages, accounts, sessions) a checksum. This is the disk format: it is independent
//! of every wire format, and changes to it need a migration.
//!
//! # Checked records
//!
//! A record of the `message`, `account` or `session` table is stored as
//!
//! ```text
//! 0x00            format tag: a checked record
//! crc32 (u32 LE)  CRC-32 of the table tag, the row's key and the body
//! body            the postcard encoding of the record
//! ```
//!
//! and every read verifies it: a changed byte anywhere in the value, or a value found under
//! another key, is a [`StorageFault`] naming the row, never a record with wrong contents.
//!
//! Records written before checksums existed are plain postcard. None of them starts with
//! `0x00`: each begins with a varint that is never zero (a message's sender id and a
//! session's account id start at 1, an account's username is 1–32 bytes long). They are
//! still read, strictly: the whole value must decode, with no bytes left over, and the
//! names in it must be valid usernames, so that a damaged tag byte of a checked record
//! does not pass for an old one. Old records gain a checksum when they are next rewritten;
//! until then damage inside one is found only if it breaks its decoding.
//!
//! The other tables hold ids and flags in keys and fixed-size values; they are not
//! checksummed, and `corvid check` verifies their shapes and that they agree with the
//! records (see `check`).

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::tables::{StorageFault, Table};
use crate::types::{AccountId, ReceiptStatus, Timestamp};
use crate::validate;

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

/// A record stored with a checksum, and the table it lives in.
pub(crate) trait Record: Serialize + DeserializeOwned {
    const TABLE: Table;

    /// Whether a record decoded from the old, unchecked format looks like one this server
    /// wrote (see the module docs).
    fn plausible(&self) -> bool;
}

impl Record for AccountRecord {
    const TABLE: Table = Table::Account;

    fn plausible(&self) -> bool {
        validate::username(&self.username).is_ok()
    }
}

impl Record for SessionRecord {
    const TABLE: Table = Table::Session;

    fn plausible(&self) -> bool {
        self.account.0 > 0
    }
}

impl Record for MessageRecord {
    const TABLE: Table = Table::Message;

    fn plausible(&self) -> bool {
        self.from.0 > 0
            && self.to.0 > 0
            && validate::username(&self.from_name).is_ok()
            && validate::username(&self.to_name).is_ok()
    }
}

/// The first byte of a checked record.
const CHECKED: u8 = 0x00;
/// The format tag and the checksum before a checked record's body.
const HEADER: usize = 5;

fn checksum(table: Table, key: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[table.tag()]);
    hasher.update(key);
    hasher.update(body);
    hasher.finalize()
}

/// The stored value of `record` under `key`: checked, as the module docs describe.
pub(crate) fn encode<R: Record>(key: &[u8], record: &R) -> Vec<u8> {
    let mut value = vec![CHECKED, 0, 0, 0, 0];
    // Serialising these plain structs into a Vec cannot fail.
    value = postcard::to_extend(record, value).unwrap_or_default();
    let sum = checksum(R::TABLE, key, value.get(HEADER..).unwrap_or_default());
    if let Some(slot) = value.get_mut(1..HEADER) {
        slot.copy_from_slice(&sum.to_le_bytes());
    }
    value
}

/// Reads a record stored under `key`, verifying its checksum (or, for a record older than
/// checksums, its strict decoding).
pub(crate) fn decode<R: Record>(key: &[u8], value: &[u8]) -> Result<R, StorageFault> {
    let corrupt = |what: &str| StorageFault(format!("{}: {what}", describe_row(R::TABLE, key)));
    let body = match value.first() {
        Some(&CHECKED) => {
            let (header, body) = value
                .split_at_checked(HEADER)
                .ok_or_else(|| corrupt("record cut short"))?;
            let mut stored = [0u8; 4];
            stored.copy_from_slice(&header[1..]);
            if u32::from_le_bytes(stored) != checksum(R::TABLE, key, body) {
                return Err(corrupt("checksum mismatch"));
            }
            body
        }
        Some(_) => value,
        None => return Err(corrupt("empty record")),
    };
    let (record, rest) = postcard::take_from_bytes::<R>(body)
        .map_err(|err| corrupt(&format!("undecodable record: {err}")))?;
    if !rest.is_empty() {
        return Err(corrupt("bytes after the record"));
    }
    if body.len() == value.len() && !record.plausible() {
        return Err(corrupt("undecodable record: implausible fields"));
    }
    Ok(record)
}

/// Whether a stored value is in the checked format (false for records older than checksums).
pub(crate) fn is_checked(value: &[u8]) -> bool {
    value.first() == Some(&CHECKED)
}

/// How a row is named in errors and log lines: `message 42`, `account 7`, `session 3fa2…`.
pub fn describe_row(table: Table, key: &[u8]) -> String {
    match (table, <[u8; 8]>::try_from(key)) {
        (Table::Message | Table::Account, Ok(id)) => {
            format!("{} {}", table.name(), u64::from_be_bytes(id))
        }
        _ => {
            let hex: String = key.iter().take(4).map(|b| format!("{b:02x}")).collect();
            format!("{} row {hex}…", table.name())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ReceiptStatus;

    fn message() -> MessageRecord {
        MessageRecord {
            from: AccountId(1),
            to: AccountId(300),
            from_name: "alice".into(),
            to_name: "Bob".into(),
            text: "meet at noon".into(),
            sent_at: 1_700_000_000_000,
            client_id: 9,
            status: ReceiptStatus::Delivered,
            sender_sees: true,
            recipient_sees: true,
        }
    }

    const KEY: [u8; 8] = [0, 0, 0, 0, 0, 0, 0, 42];

    #[test]
    fn checked_records_round_trip() {
        let value = encode(&KEY, &message());
        assert!(is_checked(&value));
        assert_eq!(decode::<MessageRecord>(&KEY, &value), Ok(message()));
    }

    /// Every single changed byte of a checked record is found, and so is a record moved
    /// under another key: the read is an error naming the message, never other text.
    #[test]
    fn every_changed_byte_and_a_moved_record_are_found() {
        let value = encode(&KEY, &message());
        for i in 0..value.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut damaged = value.clone();
                damaged[i] ^= flip;
                let err = decode::<MessageRecord>(&KEY, &damaged).unwrap_err();
                assert!(err.0.starts_with("message 42: "), "byte {i}: {err}");
            }
        }
        let other = [0, 0, 0, 0, 0, 0, 0, 43];
        assert!(decode::<MessageRecord>(&other, &value).is_err());
        assert!(decode::<MessageRecord>(&KEY, &value[..value.len() - 1]).is_err());
        assert!(decode::<MessageRecord>(&KEY, &[]).is_err());
    }

    /// Records written before checksums (plain postcard) still read, and none of them
    /// starts with the checked format's tag.
    #[test]
    fn records_older_than_checksums_still_read() {
        let old = postcard::to_stdvec(&message()).unwrap();
        assert!(!is_checked(&old));
        assert_eq!(decode::<MessageRecord>(&KEY, &old), Ok(message()));

        let account = AccountRecord {
            username: "a".into(),
            display_name: String::new(),
            password_hash: "$argon2id$...".into(),
            created_at: 1,
            unread: 0,
            unread_from: 0,
        };
        let old = postcard::to_stdvec(&account).unwrap();
        assert!(!is_checked(&old));
        assert_eq!(decode::<AccountRecord>(&KEY, &old), Ok(account));

        let session = SessionRecord {
            account: AccountId(1),
            created_at: 1,
            last_active: 2,
            idle_timeout_ms: 3,
            expires_at: 4,
        };
        let old = postcard::to_stdvec(&session).unwrap();
        assert!(!is_checked(&old));
        assert_eq!(decode::<SessionRecord>(&[7; 32], &old), Ok(session));

        // An old record with a byte too many is refused, not read with the excess ignored.
        let mut longer = postcard::to_stdvec(&message()).unwrap();
        longer.push(0);
        assert!(decode::<MessageRecord>(&KEY, &longer).is_err());
    }
}
