//! The core's [`Tables`] / [`TablesMut`] over redb transactions.
//!
//! A state table is opened at most once per transaction, on its first use, not once per
//! call: `apply` runs thousands of gets and puts per batch, and a single send touches only
//! some of the tables (opening all ten cost a sixth of a lone send's apply).

use std::cell::OnceCell;
use std::ops::Bound;

use corvid_core::{StorageFault, Table, Tables, TablesMut};
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, WriteTransaction};

use crate::error::StoreError;
use crate::schema::state_table;

fn fault(e: impl std::fmt::Display) -> StorageFault {
    StorageFault(e.to_string())
}

/// Whether `(start, end)` is certainly empty. redb (like `BTreeMap`) is not asked about such
/// ranges, which the core may build (e.g. "older than message 1").
fn is_empty_range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    }
}

/// Runs `visit` over a redb range, forwards or backwards, until it returns false.
fn visit_range<'a, I>(
    range: I,
    reverse: bool,
    visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), StorageFault>
where
    I: DoubleEndedIterator<
        Item = Result<
            (
                redb::AccessGuard<'a, &'static [u8]>,
                redb::AccessGuard<'a, &'static [u8]>,
            ),
            redb::StorageError,
        >,
    >,
{
    let mut step = |item: Result<_, redb::StorageError>| -> Result<bool, StorageFault> {
        let (key, value): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
            item.map_err(fault)?;
        Ok(visit(key.value(), value.value()))
    };
    if reverse {
        for item in range.rev() {
            if !step(item)? {
                break;
            }
        }
    } else {
        for item in range {
            if !step(item)? {
                break;
            }
        }
    }
    Ok(())
}

/// `Tables::get` over any readable redb table, read or write.
fn get_row<T>(table: &T, key: &[u8]) -> Result<Option<Vec<u8>>, StorageFault>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let value = table.get(key).map_err(fault)?;
    Ok(value.map(|v| v.value().to_vec()))
}

/// `Tables::scan` over any readable redb table, read or write.
fn scan_rows<T>(
    table: &T,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    reverse: bool,
    visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), StorageFault>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    if is_empty_range(start, end) {
        return Ok(());
    }
    let range = table.range::<&[u8]>((start, end)).map_err(fault)?;
    visit_range(range, reverse, visit)
}

/// A write transaction's state table.
type WriteTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;
/// A read transaction's state table.
type ReadTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// One cell per state table, in [`Table::ALL`] order, each filled when first used.
fn unopened<T>() -> [OnceCell<T>; Table::ALL.len()] {
    std::array::from_fn(|_| OnceCell::new())
}

/// The table in `cells`, opened with `open` the first time it is asked for.
fn opened<T, E: std::fmt::Display>(
    cells: &[OnceCell<T>; Table::ALL.len()],
    table: Table,
    open: impl FnOnce() -> Result<T, E>,
) -> Result<&T, StorageFault> {
    let cell = &cells[table.tag() as usize];
    if let Some(opened) = cell.get() {
        return Ok(opened);
    }
    let opened = open().map_err(fault)?;
    Ok(cell.get_or_init(|| opened))
}

/// The state tables inside one write transaction.
pub struct WriteTables<'txn> {
    txn: &'txn WriteTransaction,
    tables: [OnceCell<WriteTable<'txn>>; Table::ALL.len()],
}

impl<'txn> WriteTables<'txn> {
    pub fn new(txn: &'txn WriteTransaction) -> WriteTables<'txn> {
        WriteTables {
            txn,
            tables: unopened(),
        }
    }

    fn table(&self, table: Table) -> Result<&WriteTable<'txn>, StorageFault> {
        opened(&self.tables, table, || {
            self.txn.open_table(state_table(table))
        })
    }

    fn table_mut(&mut self, table: Table) -> Result<&mut WriteTable<'txn>, StorageFault> {
        self.table(table)?;
        Ok(self.tables[table.tag() as usize]
            .get_mut()
            .expect("the table was opened just above"))
    }
}

impl Tables for WriteTables<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageFault> {
        get_row(self.table(table)?, key)
    }

    fn scan(
        &self,
        table: Table,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageFault> {
        scan_rows(self.table(table)?, start, end, reverse, visit)
    }
}

impl TablesMut for WriteTables<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageFault> {
        self.table_mut(table)?.insert(key, value).map_err(fault)?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), StorageFault> {
        self.table_mut(table)?.remove(key).map_err(fault)?;
        Ok(())
    }
}

/// The state tables as of one read transaction: a consistent MVCC view that does not block
/// writers.
pub struct ReadTables<'txn> {
    txn: &'txn ReadTransaction,
    tables: [OnceCell<ReadTable>; Table::ALL.len()],
}

impl<'txn> ReadTables<'txn> {
    pub fn new(txn: &'txn ReadTransaction) -> ReadTables<'txn> {
        ReadTables {
            txn,
            tables: unopened(),
        }
    }

    fn table(&self, table: Table) -> Result<&ReadTable, StorageFault> {
        opened(&self.tables, table, || {
            self.txn.open_table(state_table(table))
        })
    }

    /// Visits every row of `table` in key order: what a snapshot streams.
    pub(crate) fn for_each(
        &self,
        table: Table,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let table = self.table(table).map_err(StoreError::from)?;
        for item in table.iter()? {
            let (key, value) = item?;
            visit(key.value(), value.value())?;
        }
        Ok(())
    }
}

impl Tables for ReadTables<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageFault> {
        get_row(self.table(table)?, key)
    }

    fn scan(
        &self,
        table: Table,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageFault> {
        scan_rows(self.table(table)?, start, end, reverse, visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_core::MemTables;
    use redb::ReadableDatabase;

    /// The redb views must scan exactly like the in-memory model the core is tested on.
    #[test]
    fn redb_scans_match_mem_tables() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        crate::schema::prepare(&db).unwrap();
        let mut model = MemTables::new();
        let txn = db.begin_write().unwrap();
        {
            let mut tables = WriteTables::new(&txn);
            for k in [1u8, 2, 3, 5, 8] {
                for t in [Table::Inbox, Table::Conversation] {
                    tables.put(t, &[k], &[k, k]).unwrap();
                    model.put(t, &[k], &[k, k]).unwrap();
                }
            }
            tables.delete(Table::Conversation, &[3]).unwrap();
            model.delete(Table::Conversation, &[3]).unwrap();
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let tables = ReadTables::new(&read);

        let bounds: Vec<Bound<&[u8]>> = vec![
            Bound::Unbounded,
            Bound::Included(&[2]),
            Bound::Excluded(&[2]),
            Bound::Included(&[5]),
            Bound::Excluded(&[9]),
        ];
        for table in [Table::Inbox, Table::Conversation, Table::Dedup] {
            for start in &bounds {
                for end in &bounds {
                    for reverse in [false, true] {
                        for limit in [1usize, 2, 10] {
                            let collect = |t: &dyn Tables| {
                                let mut out = Vec::new();
                                t.scan(table, *start, *end, reverse, &mut |k, v| {
                                    out.push((k.to_vec(), v.to_vec()));
                                    out.len() < limit
                                })
                                .unwrap();
                                out
                            };
                            assert_eq!(
                                collect(&tables),
                                collect(&model),
                                "{table:?} {start:?} {end:?} reverse={reverse} limit={limit}"
                            );
                        }
                    }
                }
            }
            assert_eq!(
                tables.get(table, &[5]).unwrap(),
                model.get(table, &[5]).unwrap()
            );
            assert_eq!(
                tables.get(table, &[3]).unwrap(),
                model.get(table, &[3]).unwrap()
            );
        }
    }
}
