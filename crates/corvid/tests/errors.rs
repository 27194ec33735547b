//! End-to-end: every error path reaches the CLI user as one clear line and a non-zero exit.

#[macro_use]
mod common;

use common::{stderr, Server, Transport, User, PASSWORD};

over_both_transports!(every_error_is_one_clear_line_with_its_code);

fn every_error_is_one_clear_line_with_its_code(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), &["--config", "/dev/null"], &[]);
    let alice = User::new(dir.path(), "alice", &server, transport);
    let bob = User::new(dir.path(), "bob", &server, transport);
    alice.register();
    bob.register();
    alice.login();
    let stranger = User::new(dir.path(), "stranger", &server, transport);
    let long_text = "x".repeat(5000);

    // (who, args, stdin, expected code in the line, exit code)
    let cases: Vec<(&User, Vec<&str>, String, &str, i32)> = vec![
        (
            &alice,
            vec!["send", "nobody", "hi"],
            String::new(),
            "unknown_recipient",
            1,
        ),
        (
            &alice,
            vec!["send", "bob", &long_text],
            String::new(),
            "invalid_text",
            1,
        ),
        (
            &alice,
            vec!["users", "--regex", "("],
            String::new(),
            "invalid_pattern",
            1,
        ),
        (
            &alice,
            vec!["history", "nobody"],
            String::new(),
            "unknown_user",
            1,
        ),
        (
            &alice,
            vec!["--password-stdin", "register", "ALICE"],
            format!("{PASSWORD}\n"),
            "username_taken",
            1,
        ),
        (
            &alice,
            vec!["--password-stdin", "register", "no spaces"],
            format!("{PASSWORD}\n"),
            "invalid_username",
            1,
        ),
        (
            &alice,
            vec!["--password-stdin", "register", "carol"],
            "short\n".into(),
            "invalid_password",
            1,
        ),
        (
            &stranger,
            vec!["--password-stdin", "login", "bob"],
            "wrong password\n".into(),
            "invalid_credentials",
            1,
        ),
        (
            &stranger,
            vec!["--password-stdin", "login", "nobody"],
            format!("{PASSWORD}\n"),
            "invalid_credentials",
            1,
        ),
        (&stranger, vec!["read"], String::new(), "not logged in", 1),
        (&alice, vec!["users", "--limit", "0"], String::new(), "", 2),
    ];
    for (user, args, stdin, expected, exit) in cases {
        let output = user.run_with_input(&args, &stdin);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(exit), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line, got {err:?}"
        );
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{args:?}: {err}"
        );
        assert!(output.stdout.is_empty(), "{args:?} printed to stdout");
    }

    // Wrong password and unknown user read exactly the same.
    let wrong =
        stderr(&stranger.run_with_input(&["--password-stdin", "login", "bob"], "wrong password\n"));
    let unknown = stderr(&stranger.run_with_input(
        &["--password-stdin", "login", "nobody"],
        &format!("{PASSWORD}\n"),
    ));
    assert_eq!(wrong, unknown);

    // No server at the address: a connection error, exit 3.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = User {
        name: "x".into(),
        session: dir.path().join("nowhere.json"),
        server: format!("127.0.0.1:{port}"),
        transport,
        tls_ca: None,
    };
    let output = nowhere.run_with_input(
        &["--password-stdin", "login", "x"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(stderr(&output).trim_end().lines().count(), 1);
}

/// `corvid cluster status | head -1` and the like: a stdout closed before the status is
/// printed is one error line and exit status 1, not a panic.
#[test]
fn cluster_status_into_a_closed_pipe_is_an_error_line_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    // Members nobody listens for: each is reported unreachable at once.
    let mut text = String::from("[cluster]\nname = \"closed-pipe\"\n");
    for id in 1..=3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        text.push_str(&format!(
            "[[cluster.members]]\nid = {id}\nraft = \"127.0.0.1:{port}\"\nwire = \"127.0.0.1:{port}\"\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let output = common::output_into_closed_pipe(
        common::corvid()
            .args(["cluster", "status", "--config"])
            .arg(&config),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot write the output"), "{stderr}");
}
