//! The store passes openraft's storage conformance suite.

use corvid_store::typ::{StorageError, TypeConfig};
use corvid_store::{no_effects, LogStore, StateMachine, Store};
use openraft::testing::{StoreBuilder, Suite};

/// Opens a fresh store in a new temporary directory; the directory lives as long as the guard.
struct FreshStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FreshStore {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), no_effects()).expect("a fresh store opens");
        Ok((dir, store.log, store.state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(FreshStore) {
        panic!("the storage suite failed: {e}");
    }
}
