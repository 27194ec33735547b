//! Helpers for end-to-end tests: a real `corvid serve` process and CLI invocations.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "correct horse battery";

/// The protocol a test's clients speak. Every end-to-end scenario runs over both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Wire,
    Grpc,
}

impl Transport {
    /// The value of `--transport`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Wire => "wire",
            Transport::Grpc => "grpc",
        }
    }

    pub fn client(self) -> corvid_client::Protocol {
        match self {
            Transport::Wire => corvid_client::Protocol::Wire,
            Transport::Grpc => corvid_client::Protocol::Grpc,
        }
    }
}

/// Runs each scenario `fn(Transport)` as two tests, `<scenario>::wire` and
/// `<scenario>::grpc`.
#[allow(unused_macros)]
macro_rules! over_both_transports {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn wire() {
                    super::$scenario($crate::common::Transport::Wire);
                }

                #[test]
                fn grpc() {
                    super::$scenario($crate::common::Transport::Grpc);
                }
            }
        )+
    };
}

pub fn corvid() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corvid"));
    command
        .env_remove("CORVID_SERVER")
        .env_remove("CORVID_SESSION")
        .env_remove("RUST_LOG");
    command
}

/// Runs `command` with its standard output a pipe whose reading end is closed before
/// anything is written (`corvid … | head -0`), and returns how it ended.
pub fn output_into_closed_pipe(command: &mut Command) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

/// The first line `child` prints on its piped stdout (a server's ready line), on a
/// channel; the rest is read and dropped, so that the child never blocks on a full pipe.
pub fn first_line(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    rx
}

/// A `corvid serve` process on free loopback ports.
pub struct Server {
    pub child: Child,
    /// The binary protocol's address.
    pub addr: SocketAddr,
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The admin listener's address, unless it is off.
    pub admin: Option<SocketAddr>,
    pub log: PathBuf,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[], &[])
    }

    pub fn start_with(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(data, "127.0.0.1:0", "127.0.0.1:0", args, env)
    }

    /// A server started again on the addresses `earlier` had, as after a crash.
    pub fn start_again(data: &Path, earlier: &Server) -> Server {
        let (wire, grpc) = (earlier.addr.to_string(), earlier.grpc.to_string());
        Server::launch(data, &wire, &grpc, &[], &[])
    }

    fn launch(
        data: &Path,
        listen: &str,
        grpc_listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let log = data.with_extension(format!("log.{}", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = corvid()
            .args([
                "serve",
                "--listen",
                listen,
                "--grpc-listen",
                grpc_listen,
                "--http-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(data)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("corvid serve starts");
        let line = first_line(&mut child)
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "server did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let (addr, grpc) = parse_ready_line(&line);
        let admin = line
            .split_once("admin ")
            .and_then(|(_, rest)| rest.split([',', ')']).next()?.parse().ok());
        Server {
            child,
            addr,
            grpc,
            admin,
            log,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status of a clean shutdown.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    /// The address that clients of `transport` connect to.
    pub fn address(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Wire => self.addr,
            Transport::Grpc => self.grpc,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A user of the CLI: its own session file, talking to one server over one protocol.
pub struct User {
    pub name: String,
    pub session: PathBuf,
    pub server: String,
    pub transport: Transport,
    /// `--tls-ca`, to speak TLS.
    pub tls_ca: Option<PathBuf>,
}

impl User {
    pub fn new(dir: &Path, name: &str, server: &Server, transport: Transport) -> User {
        User {
            name: name.into(),
            session: dir.join(format!("{name}.session.json")),
            server: server.address(transport).to_string(),
            transport,
            tls_ca: None,
        }
    }

    /// The same user speaking TLS, trusting the CA in `ca`.
    pub fn with_tls_ca(mut self, ca: &Path) -> User {
        self.tls_ca = Some(ca.to_path_buf());
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = corvid();
        command
            .arg("--server")
            .arg(&self.server)
            .arg("--transport")
            .arg(self.transport.name())
            .arg("--session")
            .arg(&self.session);
        if let Some(ca) = &self.tls_ca {
            command.arg("--tls-ca").arg(ca);
        }
        command.args(args);
        command
    }

    /// Runs the CLI with `stdin` as standard input.
    pub fn run_with_input(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, "")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "corvid {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    pub fn register(&self) {
        let output = self.run_with_input(
            &["--password-stdin", "register", &self.name],
            &format!("{PASSWORD}\n"),
        );
        assert!(
            output.status.success(),
            "register: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn login(&self) {
        let output = self.run_with_input(
            &["--password-stdin", "login", &self.name],
            &format!("{PASSWORD}\n"),
        );
        assert!(
            output.status.success(),
            "login: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Polls `users` until `who` shows as online (their `listen` has subscribed).
    pub fn wait_online(&self, who: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let listing = self.ok(&["--json", "users", who]);
            let page: serde_json::Value = serde_json::from_str(listing.trim())
                .unwrap_or_else(|e| panic!("not JSON: {listing:?}: {e}"));
            if page["accounts"][0]["online"] == serde_json::Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "{who} never came online");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `corvid listen --json` in the background, its lines on a channel.
    pub fn listen(&self) -> Listener {
        let mut child = self
            .command(&["--json", "listen"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Listener { child, lines: rx }
    }
}

pub struct Listener {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Listener {
    /// The next JSON object printed, within a deadline.
    pub fn next(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(15))
            .expect("listen printed a line in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    /// Asserts nothing more is printed within a short grace period.
    pub fn quiet(&self) {
        if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            panic!("unexpected output: {line}");
        }
    }

    /// Interrupts it the way a person does (Ctrl-C).
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        let _ = self.child.wait();
    }
}

/// The wire and gRPC addresses of
/// `corvid serving on 127.0.0.1:7070 (grpc 127.0.0.1:7071, data in ./corvid-data)`.
pub fn parse_ready_line(line: &str) -> (SocketAddr, SocketAddr) {
    let addresses: Vec<SocketAddr> = line
        .split_whitespace()
        .filter_map(|word| {
            word.trim_matches(|c| matches!(c, '(' | ')' | ','))
                .parse()
                .ok()
        })
        .collect();
    match addresses[..] {
        [wire, grpc, ..] if line.contains(&format!("(grpc {grpc},")) => (wire, grpc),
        _ => panic!("no wire and gRPC address in {line:?}"),
    }
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
