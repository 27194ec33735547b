//! No plaintext password is ever written: not in the data directory, not in the logs.

#[macro_use]
mod common;

use common::{stderr, Server, Transport, User};

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

over_both_transports!(a_trace_log_of_a_whole_chat_holds_no_password_token_or_text);

/// A whole chat (register, login, send, subscribe, read, history, delete) with the server
/// logging at trace level: no password, session token (in any encoding the code could
/// print) or message text reaches the log. Over gRPC the log is JSON, one object a line.
fn a_trace_log_of_a_whole_chat_holds_no_password_token_or_text(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let format = match transport {
        Transport::Wire => "text",
        Transport::Grpc => "json",
    };
    let mut server = Server::start_with(&data, &["--log-format", format], &[("RUST_LOG", "trace")]);
    let alice = User::new(dir.path(), "alice", &server, transport);
    let bob = User::new(dir.path(), "bob", &server, transport);
    let password = "Plaintext-Secret-4711";
    let stdin = format!("{password}\n");
    for user in [&alice, &bob] {
        for step in ["register", "login"] {
            let output = user.run_with_input(&["--password-stdin", step, &user.name], &stdin);
            assert!(output.status.success(), "{step}: {}", stderr(&output));
        }
    }
    let offline_text = "Quartz-Sphinx-Judges-My-Vow";
    let live_text = "Jackdaws-Love-My-Big-Sphinx";
    alice.ok(&["send", "bob", offline_text]);
    let listener = bob.listen();
    assert_eq!(listener.next()["text"], offline_text);
    alice.ok(&["send", "bob", live_text]);
    assert_eq!(listener.next()["text"], live_text);
    listener.stop();
    let read: serde_json::Value = serde_json::from_str(&bob.ok(&["--json", "read"])).unwrap();
    assert_eq!(read["messages"].as_array().map(Vec::len), Some(2));
    let history: serde_json::Value =
        serde_json::from_str(&bob.ok(&["--json", "history", "alice"])).unwrap();
    let id = history["messages"][0]["id"].as_u64().unwrap().to_string();
    bob.ok(&["delete-messages", &id]);
    let tokens: Vec<[u8; 16]> = [&alice, &bob].iter().map(|user| token_of(user)).collect();
    for user in [&alice, &bob] {
        let output =
            user.run_with_input(&["--password-stdin", "delete-account", "--force"], &stdin);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    server.terminate();

    let log = std::fs::read(&server.log).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("TRACE") || text.contains("\"level\":\"TRACE\""),
        "the server logged at trace level"
    );
    if transport == Transport::Grpc {
        for line in text.lines() {
            let object: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object: {line:?}: {e}"));
            assert!(object.is_object(), "{line}");
        }
    }
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("the password".into(), password.as_bytes().to_vec()),
        ("a message text".into(), offline_text.as_bytes().to_vec()),
        ("a message text".into(), live_text.as_bytes().to_vec()),
    ];
    for token in &tokens {
        for (encoding, form) in token_encodings(token) {
            secrets.push((format!("a session token ({encoding})"), form.into_bytes()));
        }
        secrets.push(("a session token (raw bytes)".into(), token.to_vec()));
    }
    for (what, secret) in secrets {
        assert!(!contains(&log, &secret), "the log holds {what}");
    }
}

/// The token in the session file a login wrote.
fn token_of(user: &User) -> [u8; 16] {
    let session: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&user.session).unwrap()).unwrap();
    let hex = session["token"].as_str().unwrap();
    let mut token = [0u8; 16];
    for (i, byte) in token.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    token
}

/// Every way the code could print a token: hex either case, base64 (standard, URL-safe,
/// with or without padding), and `Debug` of the bytes (decimal or hex lists).
fn token_encodings(token: &[u8; 16]) -> Vec<(&'static str, String)> {
    let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
    let standard = base64(
        token,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    );
    let url_safe = base64(
        token,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    );
    vec![
        ("hex", hex.clone()),
        ("upper-case hex", hex.to_uppercase()),
        ("base64", standard.trim_end_matches('=').to_string()),
        (
            "URL-safe base64",
            url_safe.trim_end_matches('=').to_string(),
        ),
        ("debug bytes", format!("{token:?}")),
        ("debug hex bytes", format!("{token:x?}")),
        // A line may be cut or wrapped: the first half of any form is enough to tell.
        ("half of the hex", hex[..16].to_string()),
    ]
}

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}
