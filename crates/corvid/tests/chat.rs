//! End-to-end: two people chat through the real `corvid` binary, server and CLI.

#[macro_use]
mod common;

use common::{stderr, Server, Transport, User};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"))
}

over_both_transports!(
    two_users_chat_live_and_offline_and_listen_resumes_without_gaps_or_repeats,
    the_first_listen_shows_the_unread_messages_then_live_ones,
    sigterm_shuts_the_server_down_cleanly,
);

fn the_first_listen_shows_the_unread_messages_then_live_ones(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let alice = User::new(dir.path(), "alice", &server, transport);
    let bob = User::new(dir.path(), "bob", &server, transport);
    alice.register();
    bob.register();
    alice.login();
    bob.login();
    // Sent after Bob's login and before his first listen: no saved position yet.
    alice.ok(&["send", "bob", "before listen 1"]);
    alice.ok(&["send", "bob", "before listen 2"]);
    let listener = bob.listen();
    assert_eq!(listener.next()["text"], "before listen 1");
    assert_eq!(listener.next()["text"], "before listen 2");
    alice.wait_online("bob");
    alice.ok(&["send", "bob", "live"]);
    assert_eq!(listener.next()["text"], "live");
    listener.stop();
    // The next listen resumes after the last message printed, though all three are
    // still unread.
    alice.ok(&["send", "bob", "later"]);
    let listener = bob.listen();
    assert_eq!(listener.next()["text"], "later");
    listener.stop();
    let unread = json(&bob.ok(&["--json", "read"]));
    assert_eq!(unread["messages"].as_array().map(Vec::len), Some(4));
}

fn two_users_chat_live_and_offline_and_listen_resumes_without_gaps_or_repeats(
    transport: Transport,
) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let alice = User::new(dir.path(), "alice", &server, transport);
    let bob = User::new(dir.path(), "bob", &server, transport);
    alice.register();
    bob.register();
    alice.login();
    bob.login();

    // Offline: Bob is not listening; the message waits in his inbox.
    let sent = json(&alice.ok(&["--json", "send", "bob", "hello", "bob"]));
    assert_eq!(sent["text"], "hello bob");
    assert_eq!(sent["status"], "sent");
    let read = json(&bob.ok(&["--json", "read"]));
    assert_eq!(read["messages"][0]["text"], "hello bob");
    assert_eq!(read["messages"][0]["from"], "alice");
    assert_eq!(
        json(&bob.ok(&["--json", "read"]))["messages"],
        Value::Array(vec![]),
        "read marks them read"
    );

    // Live: Bob listens and Alice's message is pushed at once.
    let listener = bob.listen();
    alice.wait_online("bob");
    alice.ok(&["send", "bob", "are you there?"]);
    let pushed = listener.next();
    assert_eq!(
        (pushed["type"].as_str(), pushed["text"].as_str()),
        (Some("message"), Some("are you there?"))
    );
    listener.stop();

    // While Bob's listener is down, two more arrive; a new listener shows exactly those.
    alice.ok(&["send", "bob", "first while away"]);
    alice.ok(&["send", "bob", "second while away"]);
    let listener = bob.listen();
    assert_eq!(listener.next()["text"], "first while away");
    assert_eq!(listener.next()["text"], "second while away");
    listener.quiet();
    listener.stop();

    // History has both directions and receipts; the human form is one line per message.
    bob.ok(&["send", "alice", "yes, here"]);
    let history = json(&alice.ok(&["--json", "history", "bob"]));
    let texts: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "hello bob",
            "are you there?",
            "first while away",
            "second while away",
            "yes, here"
        ]
    );
    assert_eq!(history["messages"][0]["status"], "read");
    assert_eq!(
        history["messages"][1]["status"], "delivered",
        "pushed to a session"
    );
    let human = alice.ok(&["history", "bob"]);
    assert!(
        human
            .lines()
            .any(|l| l.contains("alice → bob") && l.ends_with("hello bob")),
        "{human}"
    );

    // Users: a glob and a regex, with paging.
    let carol = User::new(dir.path(), "carol", &server, transport);
    carol.register();
    let page = json(&alice.ok(&["--json", "users", "*", "--limit", "2"]));
    assert_eq!(page["accounts"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let rest = json(&alice.ok(&["--json", "users", "*", "--limit", "2", "--cursor", &cursor]));
    assert_eq!(rest["accounts"][0]["username"], "carol");
    let regex = json(&alice.ok(&["--json", "users", "--regex", "^(bob|carol)$"]));
    assert_eq!(regex["accounts"].as_array().unwrap().len(), 2);

    // Deleting messages removes them from one's own view only.
    let id = history["messages"][4]["id"].as_u64().unwrap().to_string();
    alice.ok(&["delete-messages", &id]);
    let after = json(&alice.ok(&["--json", "history", "bob"]));
    assert_eq!(after["messages"].as_array().unwrap().len(), 4);
    let bobs = json(&bob.ok(&["--json", "history", "alice"]));
    assert_eq!(bobs["messages"].as_array().unwrap().len(), 5);

    // Logout ends the session; delete-account needs the password and --force with unread.
    // Listening delivers but does not mark read: `read` does.
    let backlog = json(&bob.ok(&["--json", "read"]));
    assert_eq!(backlog["messages"].as_array().unwrap().len(), 3);
    alice.ok(&["send", "bob", "unread one"]);
    let refused = bob.run_with_input(
        &["--password-stdin", "delete-account"],
        &format!("{}\n", common::PASSWORD),
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("1 unread"),
        "{}",
        stderr(&refused)
    );
    let deleted = bob.run_with_input(
        &["--password-stdin", "delete-account", "--force"],
        &format!("{}\n", common::PASSWORD),
    );
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(!bob.session.exists(), "the session file is removed");
    let gone = alice.run(&["send", "bob", "anyone?"]);
    assert!(
        stderr(&gone).contains("unknown_recipient"),
        "{}",
        stderr(&gone)
    );
    alice.ok(&["logout"]);
    let out = alice.run(&["read"]);
    assert!(stderr(&out).contains("not logged in"), "{}", stderr(&out));
}

fn sigterm_shuts_the_server_down_cleanly(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"));
    let alice = User::new(dir.path(), "alice", &server, transport);
    alice.register();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    // And the data is there after a restart.
    let server = Server::start(&dir.path().join("data"));
    let alice = User::new(dir.path(), "alice", &server, transport);
    alice.login();
}

#[test]
fn a_message_sent_over_one_protocol_is_pushed_to_a_listener_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let alice = User::new(dir.path(), "alice", &server, Transport::Grpc);
    let bob = User::new(dir.path(), "bob", &server, Transport::Wire);
    for user in [&alice, &bob] {
        user.register();
        user.login();
    }

    // gRPC → binary protocol.
    let bobs = bob.listen();
    alice.wait_online("bob");
    alice.ok(&["send", "bob", "sent over grpc"]);
    let pushed = bobs.next();
    assert_eq!(
        (pushed["type"].as_str(), pushed["text"].as_str()),
        (Some("message"), Some("sent over grpc"))
    );
    bobs.stop();

    // Binary protocol → gRPC (a receipt for Alice's own message may come first).
    let alices = alice.listen();
    bob.wait_online("alice");
    bob.ok(&["send", "alice", "sent over the wire"]);
    let pushed = loop {
        let line = alices.next();
        if line["type"] != "receipt" {
            break line;
        }
    };
    assert_eq!(
        (pushed["type"].as_str(), pushed["text"].as_str()),
        (Some("message"), Some("sent over the wire"))
    );
    alices.stop();
}
