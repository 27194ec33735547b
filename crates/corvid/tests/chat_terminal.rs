//! End-to-end: `corvid chat` in a real terminal. tmux runs it in an 80×24 pane against a
//! real server; the test types with `send-keys`, reads the screen with `capture-pane`,
//! and a second user, a `corvid-client` in the test, chats back.
//!
//! Without tmux the test says so and passes, except under CI (`CI` set), where tmux is
//! installed by `.ci/run` and its absence is a failure.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Server, Transport, User, PASSWORD};
use corvid_client::{Client, ClientConfig};
use corvid_core::{Event, ReceiptStatus};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// How long the screen may take to show what the test waits for.
const SCREEN_DEADLINE: Duration = Duration::from_secs(20);

over_both_transports!(
    chat_in_a_real_terminal_logs_in_sends_and_shows_a_live_reply,
    chat_starts_from_a_saved_tls_session_and_q_quits,
    chat_says_when_it_is_offline_and_resumes_with_nothing_missed_or_doubled,
);

/// A tmux server of the test's own (its own socket), holding one 80×24 session.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// True if tmux runs here; under CI its absence fails the test.
    fn available() -> bool {
        let found = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|output| output.status.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "tmux is missing; .ci/run installs it"
            );
            eprintln!("tmux is not installed: the real-terminal test of corvid chat did not run");
        }
        found
    }

    /// Runs `shell_command` in a detached 80×24 session on socket `socket`.
    fn start(socket: &str, shell_command: &str) -> Tmux {
        let tmux = Tmux {
            socket: socket.to_string(),
        };
        // A stale server from an earlier run on the same socket would confuse the test.
        let _ = tmux.run(&["kill-server"]);
        let output = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            "80",
            "-y",
            "24",
            shell_command,
        ]);
        assert!(
            output.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            // No user configuration: the same terminal everywhere.
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux runs")
    }

    /// Presses keys by tmux name (`Enter`, `Tab`, `C-c`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "chat"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        assert!(self
            .run(&["send-keys", "-t", "chat", "-l", text])
            .status
            .success());
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "chat"]).stdout)
            .into_owned()
    }

    /// Polls the screen until `ready` holds; returns it. Fails with the screen at the
    /// deadline.
    fn wait_until(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_DEADLINE;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&self, text: &str) -> String {
        self.wait_until(&format!("{text:?}"), |screen| screen.contains(text))
    }

    /// Whether the pane is on the alternate screen (a full-screen program is drawing).
    fn alternate_screen(&self) -> bool {
        let output = self.run(&["display-message", "-p", "-t", "chat", "#{alternate_on}"]);
        String::from_utf8_lossy(&output.stdout).trim() == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// A shell word for `path` (test paths have no single quotes).
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}

fn chat_in_a_real_terminal_logs_in_sends_and_shows_a_live_reply(transport: Transport) {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let alice = User::new(dir.path(), "alice", &server, transport);
    let bob = User::new(dir.path(), "bob", &server, transport);
    alice.register();
    bob.register();

    // Bob is a library client, subscribed, so Alice's message reaches him live.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = ClientConfig::new(&[server.address(transport).to_string()]);
    config.transport = transport.client();
    let bob_client = runtime.block_on(Client::connect_with(config)).unwrap();
    let bob_session = runtime.block_on(bob_client.login("bob", PASSWORD)).unwrap();
    let mut bob_events = runtime
        .block_on(bob_client.subscribe(bob_session.token, None))
        .unwrap()
        .events;

    // Alice has no session: the chat opens on its login screen. The first server of the
    // list is down; the client moves on to the next, as every command does.
    let servers = format!("127.0.0.1:9,{}", server.address(transport));
    let command = format!(
        "{} --session {} --server {servers} --transport {} chat; \
         echo \"chat exited $?\"; stty -a; echo \"modes shown\"; sleep 600",
        quoted(Path::new(env!("CARGO_BIN_EXE_corvid"))),
        quoted(&alice.session),
        transport.name(),
    );
    let socket = format!(
        "corvid-chat-test-{}-{}",
        std::process::id(),
        transport.name()
    );
    let tmux = Tmux::start(&socket, &command);
    tmux.wait_for("Log in to Corvid");
    assert!(tmux.alternate_screen());
    tmux.type_text("alice");
    tmux.keys(&["Tab"]);
    tmux.type_text(PASSWORD);
    tmux.keys(&["Enter"]);
    tmux.wait_for("logged in as alice");

    // A message from Bob shows in the list with its unread count.
    let first = runtime
        .block_on(bob_client.send(bob_session.token, "alice", "are you there?", 1))
        .unwrap();
    tmux.wait_until("bob with 1 unread", |screen| {
        screen
            .lines()
            .any(|line| line.starts_with("│›bob") && line.contains("1│"))
    });

    // Enter opens it; the message shows, and is marked read.
    tmux.keys(&["Enter"]);
    tmux.wait_for("Message to bob");
    tmux.wait_for("bob: are you there?");
    let marked = runtime.block_on(async {
        let deadline = Instant::now() + SCREEN_DEADLINE;
        loop {
            let page = bob_client
                .history(bob_session.token, "alice", None, None)
                .await
                .unwrap();
            if page.messages.iter().any(|message| {
                message.id == first.message.id && message.status == ReceiptStatus::Read
            }) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(marked, "an open conversation marks what it shows read");

    // Alice sends; Bob gets it pushed, so it shows delivered.
    tmux.type_text("hello from the terminal");
    tmux.keys(&["Enter"]);
    let pushed = runtime.block_on(async {
        loop {
            match tokio::time::timeout(SCREEN_DEADLINE, bob_events.recv()).await {
                Ok(Some(Ok(Event::Message(message)))) if message.from == "alice" => return message,
                Ok(Some(Ok(_))) => continue,
                other => panic!("Bob got no message from Alice: {other:?}"),
            }
        }
    });
    assert_eq!(pushed.text, "hello from the terminal");
    tmux.wait_for("alice: hello from the terminal (delivered)");

    // Bob replies: it appears live. He reads hers: its receipt turns to read.
    runtime
        .block_on(bob_client.send(bob_session.token, "alice", "hi alice, pushed live", 2))
        .unwrap();
    tmux.wait_for("bob: hi alice, pushed live");
    runtime
        .block_on(bob_client.mark_read(bob_session.token, vec![pushed.id]))
        .unwrap();
    tmux.wait_for("alice: hello from the terminal (read)");

    // A narrower, shorter terminal: the conversation alone, redrawn to fit.
    assert!(tmux
        .run(&["resize-window", "-t", "chat", "-x", "44", "-y", "16"])
        .status
        .success());
    let narrow = tmux.wait_until("the conversation alone in 44 columns", |screen| {
        screen.contains("Message to bob") && !screen.contains("Conversations")
    });
    assert!(
        narrow.lines().all(|line| line.chars().count() <= 44),
        "{narrow}"
    );
    assert!(narrow.contains("pushed live"), "{narrow}");
    assert!(tmux
        .run(&["resize-window", "-t", "chat", "-x", "80", "-y", "24"])
        .status
        .success());
    tmux.wait_for("Conversations");

    // Finding people: Bob is online.
    tmux.keys(&["C-f"]);
    tmux.type_text("b*");
    tmux.keys(&["Enter"]);
    tmux.wait_until("bob online in the results", |screen| {
        screen
            .lines()
            .any(|line| line.contains("›bob") && line.contains("online"))
    });

    // Ctrl-C leaves, and the terminal is as it was: the normal screen, and a shell's
    // cooked mode with echo.
    tmux.keys(&["C-c"]);
    // `stty -a` prints after the exit line: wait for the line after it, or a loaded
    // machine shows the exit line alone.
    let screen = tmux.wait_for("modes shown");
    assert!(screen.contains("chat exited 0"), "{screen}");
    assert!(!tmux.alternate_screen(), "still on the alternate screen");
    let modes: Vec<&str> = screen.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(
            modes.contains(&mode),
            "the terminal was left without {mode}:\n{screen}"
        );
    }
    // The login made on the screen was saved for the next command.
    let saved = std::fs::read_to_string(&alice.session).unwrap();
    assert!(saved.contains("\"username\": \"alice\""), "{saved}");
}

/// A CA and a server certificate it signed for 127.0.0.1, as PEM files:
/// (CA, certificate, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn chat_starts_from_a_saved_tls_session_and_q_quits(transport: Transport) {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let alice = User::new(dir.path(), "alice", &server, transport).with_tls_ca(&ca);
    let bob = User::new(dir.path(), "bob", &server, transport).with_tls_ca(&ca);
    alice.register();
    bob.register();
    bob.login();
    bob.ok(&["send", "alice", "over tls"]);
    alice.login();

    // No flags but the session file: its servers, protocol and CA are used.
    let command = format!(
        "{} --session {} chat; echo \"chat exited $?\"; sleep 600",
        quoted(Path::new(env!("CARGO_BIN_EXE_corvid"))),
        quoted(&alice.session),
    );
    let socket = format!(
        "corvid-chat-tls-{}-{}",
        std::process::id(),
        transport.name()
    );
    let tmux = Tmux::start(&socket, &command);
    let screen = tmux.wait_until("bob with 1 unread", |screen| {
        screen
            .lines()
            .any(|line| line.starts_with("│›bob") && line.contains("1│"))
    });
    assert!(!screen.contains("Log in to Corvid"), "{screen}");
    assert!(
        screen.contains(&format!("({}, TLS)", transport.name())),
        "{screen}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("chat exited 0");
    assert!(!tmux.alternate_screen());
}

fn chat_says_when_it_is_offline_and_resumes_with_nothing_missed_or_doubled(transport: Transport) {
    if !Tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let user = |name: &str| User::new(dir.path(), name, &server, transport);
    let (alice, bob) = (user("alice"), user("bob"));
    alice.register();
    bob.register();
    alice.login();
    bob.login();
    bob.ok(&["send", "alice", "before the restart"]);

    let command = format!(
        "{} --session {} chat; echo \"chat exited $?\"; sleep 600",
        quoted(Path::new(env!("CARGO_BIN_EXE_corvid"))),
        quoted(&alice.session),
    );
    let socket = format!(
        "corvid-chat-offline-{}-{}",
        std::process::id(),
        transport.name()
    );
    let tmux = Tmux::start(&socket, &command);
    tmux.wait_for("│›bob");
    tmux.keys(&["Enter"]);
    tmux.wait_for("bob: before the restart");

    // The server goes away: the chat says so, and keeps what it shows.
    server.kill();
    let screen = tmux.wait_for("offline");
    assert!(screen.contains("bob: before the restart"), "{screen}");

    // Back on the same ports with the same data; a message sent meanwhile arrives once,
    // and what was shown before is not repeated.
    let _server = Server::start_again(&data, &server);
    bob.ok(&["send", "alice", "sent while alice was away"]);
    let screen = tmux.wait_for("bob: sent while alice was away");
    assert_eq!(screen.matches("before the restart").count(), 1, "{screen}");
    assert_eq!(
        screen.matches("while alice was away").count(),
        1,
        "{screen}"
    );
    tmux.keys(&["C-c"]);
    tmux.wait_for("chat exited 0");
}
