//! End-to-end: `corvid listen` across a crash and restart of its server.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Server, Transport, User};
use serde_json::Value;

over_both_transports!(listen_prints_every_message_once_across_a_server_crash_and_restart);

/// Polls `users` until `who` shows as online (their `listen` has subscribed).
fn wait_online(asker: &User, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page: Value = serde_json::from_str(asker.ok(&["--json", "users", who]).trim()).unwrap();
        if page["accounts"][0]["online"] == Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "{who} never came online");
        std::thread::sleep(Duration::from_millis(50));
    }
}

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
    wait_online(&alice, "bob");
    alice.ok(&["send", "bob", "before the crash"]);
    assert_eq!(listener.next()["text"], "before the crash");

    // The server is killed, and comes back on the same data and addresses; `listen` goes
    // on by itself.
    server.kill();
    let server = Server::start_again(&data, &server);
    // Sent before `listen` is back, it comes from the replay; the next one live.
    alice.ok(&["send", "bob", "after the restart 1"]);
    wait_online(&alice, "bob");
    alice.ok(&["send", "bob", "after the restart 2"]);
    for text in ["after the restart 1", "after the restart 2"] {
        assert_eq!(listener.next()["text"], text);
    }
    listener.quiet();
    listener.stop();
    drop(server);
}
