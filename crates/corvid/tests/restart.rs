//! End-to-end: `corvid listen` across a crash and restart of its server.

#[macro_use]
mod common;

use common::{Server, Transport, User};

over_both_transports!(listen_prints_every_message_once_across_a_server_crash_and_restart);

fn listen_prints_every_message_once_across_a_server_crash_and_restart(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let alice = User::new(dir.path(), "alice", &server, transport);
    let bob = User::new(dir.path(), "bob", &server, transport);
    for user in [&alice, &bob] {
        user.register();
        user.login();
    }
    let listener = bob.listen();
    alice.wait_online("bob");
    alice.ok(&["send", "bob", "before the crash"]);
    assert_eq!(listener.next()["text"], "before the crash");

    // The server is killed, and comes back on the same data and addresses; `listen` goes
    // on by itself.
    server.kill();
    let server = Server::start_again(&data, &server);
    // Sent before `listen` is back, it comes from the replay; the next one live.
    alice.ok(&["send", "bob", "after the restart 1"]);
    alice.wait_online("bob");
    alice.ok(&["send", "bob", "after the restart 2"]);
    for text in ["after the restart 1", "after the restart 2"] {
        assert_eq!(listener.next()["text"], text);
    }
    listener.quiet();
    listener.stop();
    drop(server);
}
