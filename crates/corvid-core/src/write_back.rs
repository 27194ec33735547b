//! A write-back cache in front of one batch's tables.
//!
//! A batch of commands reads and rewrites the same few rows over and over: every `Send`
//! reads the message counter, its sender's session and account, and its recipient's name
//! and account, and writes the counter and the recipient's account back. In a B-tree store
//! each of those is a walk from the root, and each write a page copy. [`WriteBack`] keeps
//! the rows of the small, hot tables ([`is_cached`]) in memory for the batch: the first read
//! of a row goes to the store, later reads and all writes stay here, and [`WriteBack::finish`]
//! writes each changed row once, in key order.
//!
//! It is invisible to the state machine: every `get` and `scan` returns what the store alone
//! would (a scan of a cached table first writes that table's changes through), and the store
//! ends up with exactly the same rows. A test checks both against [`crate::MemTables`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::tables::{StorageFault, Table, Tables, TablesMut};

/// Whether [`WriteBack`] keeps `table`'s rows in memory: the tables of few, hot rows that
/// a batch rereads and rewrites (counters, accounts, sessions, the name index). The others
/// (messages and their indexes) are mostly written once each, so they go straight through.
pub fn is_cached(table: Table) -> bool {
    matches!(
        table,
        Table::Meta | Table::Account | Table::Session | Table::UsernameAccount
    )
}

/// One row as the batch sees it.
struct Row {
    /// `None`: absent (never existed, or deleted in this batch).
    value: Option<Vec<u8>>,
    /// Changed in this batch and not yet written to the store.
    dirty: bool,
}

type Rows = [BTreeMap<Vec<u8>, Row>; Table::ALL.len()];

/// Tables with the hot ones cached for the length of a batch. See the module docs.
pub struct WriteBack<T> {
    inner: RefCell<T>,
    rows: RefCell<Rows>,
}

impl<T: TablesMut> WriteBack<T> {
    pub fn new(inner: T) -> WriteBack<T> {
        WriteBack {
            inner: RefCell::new(inner),
            rows: RefCell::new(std::array::from_fn(|_| BTreeMap::new())),
        }
    }

    /// Writes every changed row to the store and returns it.
    pub fn finish(self) -> Result<T, StorageFault> {
        for table in Table::ALL {
            self.write_through(table)?;
        }
        Ok(self.inner.into_inner())
    }

    /// Writes `table`'s changed rows to the store, in key order.
    fn write_through(&self, table: Table) -> Result<(), StorageFault> {
        let mut rows = self.rows.borrow_mut();
        let mut inner = self.inner.borrow_mut();
        for (key, row) in rows[table.tag() as usize].iter_mut() {
            if !row.dirty {
                continue;
            }
            match &row.value {
                Some(value) => inner.put(table, key, value)?,
                None => inner.delete(table, key)?,
            }
            row.dirty = false;
        }
        Ok(())
    }

    fn set(&mut self, table: Table, key: &[u8], value: Option<&[u8]>) {
        let row = Row {
            value: value.map(<[u8]>::to_vec),
            dirty: true,
        };
        self.rows.get_mut()[table.tag() as usize].insert(key.to_vec(), row);
    }
}

impl<T: TablesMut> Tables for WriteBack<T> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageFault> {
        if !is_cached(table) {
            return self.inner.borrow().get(table, key);
        }
        if let Some(row) = self.rows.borrow()[table.tag() as usize].get(key) {
            return Ok(row.value.clone());
        }
        let value = self.inner.borrow().get(table, key)?;
        let row = Row {
            value: value.clone(),
            dirty: false,
        };
        self.rows.borrow_mut()[table.tag() as usize].insert(key.to_vec(), row);
        Ok(value)
    }

    fn scan(
        &self,
        table: Table,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageFault> {
        if is_cached(table) {
            self.write_through(table)?;
        }
        self.inner.borrow().scan(table, start, end, reverse, visit)
    }
}

impl<T: TablesMut> TablesMut for WriteBack<T> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageFault> {
        if !is_cached(table) {
            return self.inner.get_mut().put(table, key, value);
        }
        self.set(table, key, Some(value));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), StorageFault> {
        if !is_cached(table) {
            return self.inner.get_mut().delete(table, key);
        }
        self.set(table, key, None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::MemTables;

    #[derive(Clone, Debug)]
    enum Op {
        Get(Table, u8),
        Put(Table, u8, u8),
        Delete(Table, u8),
        Scan(Table, u8, u8, bool),
    }

    fn table() -> impl Strategy<Value = Table> {
        // Cached and uncached tables, and neighbours of each other in tag order.
        prop::sample::select(vec![
            Table::Meta,
            Table::Account,
            Table::UsernameAccount,
            Table::Session,
            Table::Message,
        ])
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (table(), 0u8..8).prop_map(|(t, k)| Op::Get(t, k)),
            (table(), 0u8..8, any::<u8>()).prop_map(|(t, k, v)| Op::Put(t, k, v)),
            (table(), 0u8..8).prop_map(|(t, k)| Op::Delete(t, k)),
            (table(), 0u8..8, 0u8..8, any::<bool>()).prop_map(|(t, a, b, r)| Op::Scan(t, a, b, r)),
        ]
    }

    fn scan(t: &dyn Tables, table: Table, a: u8, b: u8, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        t.scan(
            table,
            Bound::Included(&[a]),
            Bound::Excluded(&[b]),
            reverse,
            &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                true
            },
        )
        .unwrap();
        out
    }

    proptest! {
        /// Every read through the cache answers what the store alone answers, and after
        /// `finish` the store holds exactly the rows it would have without the cache.
        #[test]
        fn the_cache_is_invisible(
            initial in prop::collection::vec((table(), 0u8..8, any::<u8>()), 0..12),
            ops in prop::collection::vec(op(), 0..60),
        ) {
            let mut plain = MemTables::new();
            for (t, k, v) in &initial {
                plain.put(*t, &[*k], &[*v]).unwrap();
            }
            let mut cached = WriteBack::new(plain.clone());
            for op in ops {
                match op {
                    Op::Get(t, k) => {
                        prop_assert_eq!(cached.get(t, &[k]).unwrap(), plain.get(t, &[k]).unwrap());
                    }
                    Op::Put(t, k, v) => {
                        cached.put(t, &[k], &[v]).unwrap();
                        plain.put(t, &[k], &[v]).unwrap();
                    }
                    Op::Delete(t, k) => {
                        cached.delete(t, &[k]).unwrap();
                        plain.delete(t, &[k]).unwrap();
                    }
                    Op::Scan(t, a, b, r) => {
                        prop_assert_eq!(scan(&cached, t, a, b, r), scan(&plain, t, a, b, r));
                    }
                }
            }
            prop_assert_eq!(cached.finish().unwrap(), plain);
        }
    }

    /// The point of the cache: rereads and rewrites of a hot row reach the store once.
    #[test]
    fn hot_rows_reach_the_store_once() {
        #[derive(Default)]
        struct Counting {
            rows: MemTables,
            gets: std::cell::Cell<usize>,
            puts: usize,
        }
        impl Tables for Counting {
            fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageFault> {
                self.gets.set(self.gets.get() + 1);
                self.rows.get(table, key)
            }
            fn scan(
                &self,
                table: Table,
                start: Bound<&[u8]>,
                end: Bound<&[u8]>,
                reverse: bool,
                visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
            ) -> Result<(), StorageFault> {
                self.rows.scan(table, start, end, reverse, visit)
            }
        }
        impl TablesMut for Counting {
            fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageFault> {
                self.puts += 1;
                self.rows.put(table, key, value)
            }
            fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), StorageFault> {
                self.rows.delete(table, key)
            }
        }
        let mut t = WriteBack::new(Counting::default());
        for n in 0u8..100 {
            let current = t.get(Table::Meta, b"next").unwrap().map_or(0, |v| v[0]);
            assert_eq!(current, n);
            t.put(Table::Meta, b"next", &[n + 1]).unwrap();
            t.put(Table::Message, &[n], b"m").unwrap();
        }
        let store = t.finish().unwrap();
        assert_eq!(store.puts, 100 + 1, "100 message rows and the counter once");
        assert_eq!(store.gets.get(), 1, "only the first read of the counter");
        assert_eq!(
            store.rows.get(Table::Meta, b"next").unwrap(),
            Some(vec![100])
        );
    }
}
