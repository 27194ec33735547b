//! No plaintext password is ever written: not in the data directory, not in the logs.

#[macro_use]
mod common;

use common::{Server, Transport, User};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

over_both_transports!(passwords_never_reach_the_disk_or_the_logs);

fn passwords_never_reach_the_disk_or_the_logs(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let password = "Plaintext-Secret-4711";
    let mut server = Server::start_with(&data, &[], &[("RUST_LOG", "trace")]);
    let user = User::new(dir.path(), "alice", &server, transport);
    let stdin = format!("{password}\n");
    assert!(user
        .run_with_input(&["--password-stdin", "register", "alice"], &stdin)
        .status
        .success());
    assert!(user
        .run_with_input(&["--password-stdin", "login", "alice"], &stdin)
        .status
        .success());
    user.ok(&["send", "alice", "note to self"]);
    // A wrong password attempt is logged nowhere either.
    let _ = user.run_with_input(
        &["--password-stdin", "login", "alice"],
        "Wrong-Secret-0815\n",
    );
    assert!(user
        .run_with_input(&["--password-stdin", "delete-account", "--force"], &stdin)
        .status
        .success());
    server.terminate();

    let log = std::fs::read(&server.log).unwrap();
    assert!(
        !log.is_empty(),
        "the server logged something at trace level"
    );
    let mut checked = 0;
    for file in files(&data).into_iter().chain([server.log.clone()]) {
        let bytes = std::fs::read(&file).unwrap();
        for secret in [password.as_bytes(), b"Wrong-Secret-0815"] {
            assert!(
                !contains(&bytes, secret),
                "{} contains a plaintext password",
                file.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 2, "the data directory and the log were checked");
}
