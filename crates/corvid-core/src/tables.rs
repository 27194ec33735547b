//! The catalogue of every table Corvid stores, and the ordered key-value interface the
//! state machine is written against.
//!
//! Each table maps a big-endian binary key to a postcard-encoded value (see `records`);
//! the records of `account`, `session` and `message` carry a checksum, verified on every
//! read.
//! Keys are built so that every hot read is one range scan over exactly the rows it returns.
//!
//! | table              | key                                   | value            |
//! |--------------------|---------------------------------------|------------------|
//! | `meta`             | name (`next_account`, `next_message`) | u64              |
//! | `account`          | account id                            | AccountRecord    |
//! | `username_account` | folded username                       | account id       |
//! | `session`          | session key (SHA-256 of the token)    | SessionRecord    |
//! | `account_session`  | account id, session key               | ()               |
//! | `message`          | message id                            | MessageRecord    |
//! | `inbox`            | recipient id, message id              | 1 unread, 0 read |
//! | `conversation`     | lower id, higher id, message id       | ()               |
//! | `dedup`            | sender id, client message id          | message id       |
//! | `peer`             | higher account id, lower account id   | ()               |
//! | `former_username`  | folded username, `00`, account id     | ()               |
//!
//! `meta` also holds `clock`, the greatest time any applied command was stamped with: every
//! command takes effect at the later of its own stamp and the clock, so that recorded times
//! never go backwards when a server with a slower clock starts proposing.
//!
//! A received message has one `inbox` row, whose value says whether it is read: one row
//! to write per message, not one in an inbox and another in an unread index. The account
//! record keeps the unread count and `unread_from`, below which nothing is unread, so that
//! fetching the oldest unread messages starts near them.
//!
//! A message has one `conversation` row, shared by its two users (its sender's and its
//! recipient's account ids in ascending order): one random-access B-tree write per message
//! rather than one per user. Who still sees it is in the message record; the row goes when
//! neither does. An account's conversations with higher ids are one range of `conversation`;
//! `peer` lists, under each account, the lower ids it has exchanged a message with, so that
//! deleting an account finds the rest.
//!
//! `former_username` remembers, for each deleted account, the name it had, so that its
//! peers can still read their conversation with it by that name (a username never holds a
//! `00` byte, so one name's rows are one range that no longer name shares).

use std::collections::BTreeMap;
use std::ops::Bound;

/// Every table of the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Meta,
    Account,
    UsernameAccount,
    Session,
    AccountSession,
    Message,
    Inbox,
    Conversation,
    Dedup,
    Peer,
    FormerUsername,
}

impl Table {
    pub const ALL: [Table; 11] = [
        Table::Meta,
        Table::Account,
        Table::UsernameAccount,
        Table::Session,
        Table::AccountSession,
        Table::Message,
        Table::Inbox,
        Table::Conversation,
        Table::Dedup,
        Table::Peer,
        Table::FormerUsername,
    ];

    /// The table's name in the database file.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Account => "account",
            Table::UsernameAccount => "username_account",
            Table::Session => "session",
            Table::AccountSession => "account_session",
            Table::Message => "message",
            Table::Inbox => "inbox",
            Table::Conversation => "conversation",
            Table::Dedup => "dedup",
            Table::Peer => "peer",
            Table::FormerUsername => "former_username",
        }
    }

    /// A stable one-byte tag, used by snapshots.
    pub fn tag(self) -> u8 {
        self as u8
    }

    pub fn from_tag(tag: u8) -> Option<Table> {
        Table::ALL.get(tag as usize).copied()
    }
}

/// The storage under the state machine failed. Not a business outcome: the command was not
/// applied and the caller must not acknowledge it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("storage fault: {0}")]
pub struct StorageFault(pub String);

/// A read-only view of the tables, consistent for its whole lifetime.
pub trait Tables {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageFault>;

    /// Visits the rows of `table` with keys in `(start, end)`, in key order (or reversed),
    /// until `visit` returns `false`.
    fn scan(
        &self,
        table: Table,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageFault>;
}

/// A writable view: all changes of one [`crate::apply`] call land in one transaction.
pub trait TablesMut: Tables {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageFault>;
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), StorageFault>;
}

/// Tables in memory, for tests and models.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemTables {
    rows: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
}

impl MemTables {
    pub fn new() -> MemTables {
        MemTables::default()
    }

    /// Every row, in table then key order: what a snapshot holds.
    pub fn rows(&self) -> impl Iterator<Item = (Table, &[u8], &[u8])> {
        self.rows
            .iter()
            .map(|((table, key), value)| (*table, key.as_slice(), value.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl Tables for MemTables {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageFault> {
        Ok(self.rows.get(&(table, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        table: Table,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageFault> {
        let lower = match start {
            Bound::Included(k) => Bound::Included((table, k.to_vec())),
            Bound::Excluded(k) => Bound::Excluded((table, k.to_vec())),
            Bound::Unbounded => Bound::Included((table, Vec::new())),
        };
        let upper = match end {
            Bound::Included(k) => Bound::Included((table, k.to_vec())),
            Bound::Excluded(k) => Bound::Excluded((table, k.to_vec())),
            Bound::Unbounded => match Table::from_tag(table.tag() + 1) {
                Some(next) => Bound::Excluded((next, Vec::new())),
                None => Bound::Unbounded,
            },
        };
        if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
            (&lower, &upper)
        {
            // `BTreeMap::range` panics on an inverted or empty-exclusive range; both are
            // simply empty here, as they are in every real store.
            let both_inclusive =
                matches!((&lower, &upper), (Bound::Included(_), Bound::Included(_)));
            if a > b || (a == b && !both_inclusive) {
                return Ok(());
            }
        }
        let range = self.rows.range((lower, upper));
        if reverse {
            for ((_, key), value) in range.rev() {
                if !visit(key, value) {
                    break;
                }
            }
        } else {
            for ((_, key), value) in range {
                if !visit(key, value) {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl TablesMut for MemTables {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageFault> {
        self.rows.insert((table, key.to_vec()), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), StorageFault> {
        self.rows.remove(&(table, key.to_vec()));
        Ok(())
    }
}

/// The value of an `inbox` row.
pub(crate) mod inbox {
    pub const UNREAD: &[u8] = &[1];
    pub const READ: &[u8] = &[0];
}

/// Big-endian key building, so that byte order is numeric order.
pub(crate) mod key {
    pub fn id(a: u64) -> [u8; 8] {
        a.to_be_bytes()
    }

    pub fn pair(a: u64, b: u64) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&a.to_be_bytes());
        key[8..].copy_from_slice(&b.to_be_bytes());
        key
    }

    pub fn triple(a: u64, b: u64, c: u64) -> [u8; 24] {
        let mut key = [0u8; 24];
        key[..8].copy_from_slice(&a.to_be_bytes());
        key[8..16].copy_from_slice(&b.to_be_bytes());
        key[16..].copy_from_slice(&c.to_be_bytes());
        key
    }

    /// The `conversation` key of message `id` between accounts `a` and `b` (either order).
    pub fn conversation(a: u64, b: u64, id: u64) -> [u8; 24] {
        triple(a.min(b), a.max(b), id)
    }

    /// The `former_username` key of deleted account `id` that was named `folded`.
    pub fn former_username(folded: &str, id: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(folded.len() + 9);
        key.extend_from_slice(folded.as_bytes());
        key.push(0);
        key.extend_from_slice(&id.to_be_bytes());
        key
    }

    /// The `n`th big-endian u64 of a key.
    pub fn part(key: &[u8], n: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&key[8 * n..8 * n + 8]);
        u64::from_be_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(
        t: &MemTables,
        table: Table,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        rev: bool,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        t.scan(table, start, end, rev, &mut |k, _| {
            out.push(k.to_vec());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn scans_stay_inside_their_table_and_range() {
        let mut t = MemTables::new();
        for k in [1u8, 2, 3] {
            t.put(Table::Inbox, &[k], b"").unwrap();
            t.put(Table::Conversation, &[k], b"").unwrap();
        }
        t.put(Table::Meta, b"z", b"").unwrap();
        assert_eq!(
            collect(&t, Table::Inbox, Bound::Unbounded, Bound::Unbounded, false),
            vec![vec![1], vec![2], vec![3]]
        );
        assert_eq!(
            collect(
                &t,
                Table::Inbox,
                Bound::Excluded(&[1]),
                Bound::Unbounded,
                true
            ),
            vec![vec![3], vec![2]]
        );
        assert_eq!(
            collect(&t, Table::Dedup, Bound::Unbounded, Bound::Unbounded, false),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(
            collect(
                &t,
                Table::Inbox,
                Bound::Included(&[3]),
                Bound::Excluded(&[1]),
                false
            ),
            Vec::<Vec<u8>>::new()
        );
        let two: &[u8] = &[2];
        let empty = Vec::<Vec<u8>>::new();
        let scan = |a, b| collect(&t, Table::Inbox, a, b, false);
        assert_eq!(scan(Bound::Excluded(two), Bound::Excluded(two)), empty);
        assert_eq!(scan(Bound::Included(two), Bound::Excluded(two)), empty);
        assert_eq!(
            scan(Bound::Included(two), Bound::Included(two)),
            vec![vec![2]]
        );
    }

    #[test]
    fn tags_round_trip() {
        for table in Table::ALL {
            assert_eq!(Table::from_tag(table.tag()), Some(table));
        }
        assert_eq!(Table::from_tag(200), None);
    }
}
