//! `corvid serve` refuses a data directory written in a newer data format with one line.

mod common;

use std::process::Stdio;

use common::corvid;

/// A state file as a newer server would leave it: its `format_version` row says 3.
fn newer_data_directory(dir: &std::path::Path) {
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("sm_meta");
    let db = redb::Database::create(dir.join("state.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(meta)
        .unwrap()
        .insert(
            "format_version",
            postcard::to_allocvec(&3u32).unwrap().as_slice(),
        )
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn serve_refuses_a_newer_data_format_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    newer_data_directory(dir.path());
    let output = corvid()
        .args(["serve", "--config", "/dev/null", "--listen", "127.0.0.1:0"])
        .args([
            "--grpc-listen",
            "off",
            "--http-listen",
            "off",
            "--admin-listen",
            "off",
            "--data",
        ])
        .arg(dir.path())
        .stdin(Stdio::null())
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "no ready line: {output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "the data directory is in format version 3, newer than this server reads (up to 2): \
             run a newer corvid on it"
        ),
        "{stderr}"
    );
}
