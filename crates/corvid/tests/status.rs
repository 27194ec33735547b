//! `corvid status` against a running server's admin listener.

#[macro_use]
mod common;

use common::{corvid, stderr, Server, Transport, User};

#[test]
fn status_prints_one_screen_about_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let admin = server
        .admin
        .expect("the ready line names the admin listener");
    let alice = User::new(dir.path(), "alice", &server, Transport::Wire);
    alice.register();
    alice.login();
    alice.ok(&["send", "alice", "note to self"]);

    let output = corvid()
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let screen = String::from_utf8(output.stdout).unwrap();
    for line in [
        "version",
        "uptime",
        "role         leader (node 1)",
        "leader       1 (term",
        "ready        yes",
        "connections  ",
        "messages/s",
        "log          last",
        "data ",
    ] {
        assert!(screen.contains(line), "{line:?} in\n{screen}");
    }
}

#[test]
fn status_of_nothing_is_a_one_line_error_with_the_connection_exit_status() {
    // A port nothing listens on: bound, then released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap().to_string();
    drop(free);
    let output = corvid()
        .args(["status", "--admin", &address])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let said = stderr(&output);
    assert!(
        said.starts_with("error: ") && said.trim_end().ends_with("(unreachable)"),
        "{said}"
    );
    assert_eq!(said.trim_end().lines().count(), 1, "{said}");
}
