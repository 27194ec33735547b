//! `corvid check` on real data directories made by a real server, and what a server does
//! with a message record damaged on disk: an error, never the altered text.

#[macro_use]
mod common;

use std::path::Path;

use common::{corvid, stderr, Server, Transport, User};

/// Runs `corvid check --data DIR`: its exit status, stdout and stderr.
fn check(data: &Path) -> (Option<i32>, String, String) {
    let output = corvid()
        .arg("check")
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr(&output),
    )
}

/// Flips a bit in the last byte of every copy of `needle` in the files of `dir` whose
/// names end in `suffix` (copy-on-write may have left older copies of a page); returns
/// how many it changed.
fn damage(dir: &Path, suffix: &str, needle: &[u8]) -> usize {
    let mut changed = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(suffix) {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let starts: Vec<usize> = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, window)| *window == needle)
            .map(|(at, _)| at)
            .collect();
        for at in &starts {
            bytes[at + needle.len() - 1] ^= 0x20;
        }
        if !starts.is_empty() {
            std::fs::write(&path, &bytes).unwrap();
        }
        changed += starts.len();
    }
    changed
}

/// A server with alice and bob logged in; alice has sent bob `text`.
fn chat(dir: &Path, text: &str) -> (Server, User, User) {
    let server = Server::start(&dir.join("data"));
    let alice = User::new(dir, "alice", &server, Transport::Wire);
    let bob = User::new(dir, "bob", &server, Transport::Wire);
    for user in [&alice, &bob] {
        user.register();
        user.login();
    }
    alice.ok(&["send", "bob", text]);
    (server, alice, bob)
}

#[test]
fn a_damaged_message_is_found_by_check_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, _alice, _bob) = chat(dir.path(), "meet at noon");

    let (code, _, err) = check(&data);
    assert_eq!(
        code,
        Some(2),
        "a running server's directory is not checked: {err}"
    );
    assert!(err.contains("running server"), "{err}");

    assert!(server.terminate().success());
    let (code, out, err) = check(&data);
    assert_eq!(code, Some(0), "a clean directory passes: {out}{err}");
    assert!(out.starts_with("ok: "), "{out}");
    assert!(out.contains("2 accounts, 2 sessions, 1 messages"), "{out}");

    assert!(damage(&data, "state.redb", b"meet at noon") > 0);
    let (code, out, _) = check(&data);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l == "state: message 1: checksum mismatch"),
        "{out}"
    );

    let mut server = Server::start(&data);
    let bob = User::new(dir.path(), "bob", &server, Transport::Wire);
    for args in [&["read"][..], &["history", "alice"][..]] {
        let output = bob.run(args);
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "{args:?} printed {printed}");
        assert!(!printed.contains("meet at"), "{args:?} printed {printed}");
        assert!(
            stderr(&output).contains("(internal)"),
            "{}",
            stderr(&output)
        );
    }
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("message 1: checksum mismatch"),
        "the server's log names the message: {log}"
    );

    // With no snapshot, the log holds every command: a state moved aside is rebuilt from
    // it, as the README says.
    assert!(server.terminate().success());
    std::fs::rename(
        data.join("state.redb"),
        dir.path().join("state.redb.damaged"),
    )
    .unwrap();
    let server = Server::start(&data);
    let bob = User::new(dir.path(), "bob", &server, Transport::Wire);
    assert!(bob.ok(&["history", "alice"]).contains("meet at noon"));
}

#[test]
fn a_garbled_log_record_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, _alice, _bob) = chat(dir.path(), "kept in the log");
    assert!(server.terminate().success());
    assert_eq!(check(&data).0, Some(0));

    assert!(damage(&data.join("log"), ".wal", b"kept in the log") > 0);
    let (code, out, _) = check(&data);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("log: ") && l.contains("unreadable")),
        "{out}"
    );
}

#[test]
fn a_directory_that_is_not_a_data_directory_is_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = check(dir.path());
    assert_eq!(code, Some(2), "{out}");
    assert!(err.contains("not a Corvid data directory"), "{err}");
}

/// `corvid check --data DIR | head -1` and the like: a stdout closed before the result is
/// printed is one error line, and the exit status still says what the check found.
#[test]
fn check_into_a_closed_pipe_is_an_error_line_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, _alice, _bob) = chat(dir.path(), "checked");
    assert!(server.terminate().success());
    let output = common::output_into_closed_pipe(corvid().arg("check").arg("--data").arg(&data));
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot write the output"), "{stderr}");
}
