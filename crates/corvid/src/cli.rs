//! The command line: every subcommand and flag, as clap derive types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use corvid_client::Protocol;
use corvid_core::validate::MAX_PAGE;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  the server refused the request (the code name is printed), or a local problem
     such as not being logged in or an unreadable session file
  2  usage error: bad arguments
  3  no server could be reached, or the connection failed
`corvid check`: 0 the data directory is sound, 1 problems were found (one line
each on stdout), 2 it could not be checked.

Errors print one line to stderr: `error: <message> (<code name>)`.";

/// Corvid: a chat server that never loses a message, and its terminal client.
#[derive(Debug, Parser)]
#[command(name = "corvid", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten, next_help_heading = "Global options")]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every client subcommand understands, before or after its name.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Servers to try, in order, comma-separated; with gRPC, their gRPC addresses
    /// [default: the servers of the session, else 127.0.0.1:7070, or 127.0.0.1:7071 for
    /// gRPC]
    #[arg(
        long,
        global = true,
        env = "CORVID_SERVER",
        value_name = "ADDR[,ADDR...]"
    )]
    pub server: Option<String>,
    /// Protocol to speak [default: the session's, else wire]
    #[arg(long, global = true, env = "CORVID_TRANSPORT", value_enum)]
    pub transport: Option<TransportArg>,
    /// Speak TLS, trusting the CA certificate(s) in this PEM file [default: the
    /// session's, else plain TCP]
    #[arg(long, global = true, env = "CORVID_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry [default: the host of the address]
    #[arg(long, global = true, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// Session file [default: <config dir>/corvid/session.json]
    #[arg(long, global = true, env = "CORVID_SESSION", value_name = "FILE")]
    pub session: Option<PathBuf>,
    /// Print machine-readable JSON (one object per line for `listen`)
    #[arg(long, global = true)]
    pub json: bool,
    /// Read the password from the first line of standard input instead of prompting
    #[arg(long, global = true)]
    pub password_stdin: bool,
}

/// The protocols a client can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// The binary protocol (docs/protocol.md)
    Wire,
    /// gRPC (proto/corvid.proto)
    Grpc,
}

impl From<TransportArg> for Protocol {
    fn from(transport: TransportArg) -> Protocol {
        match transport {
            TransportArg::Wire => Protocol::Wire,
            TransportArg::Grpc => Protocol::Grpc,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Corvid server
    Serve(corvid_server::ServeArgs),
    /// A cluster's status, and adding or removing servers
    Cluster(crate::cluster::ClusterArgs),
    /// Verify a stopped server's data directory: exit 0 if sound, 1 if problems were found
    /// (one line each), 2 if it could not be checked (e.g. a running server holds it)
    Check {
        /// The data directory, as given to `corvid serve --data`
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// Print one screen about a running server, from its admin listener: version, uptime,
    /// role, readiness, connections, messages per second, log indexes, data size
    Status {
        /// The server's admin listener (`admin_listen`)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
        admin: String,
    },
    /// Create an account (asks for its password twice)
    Register {
        /// Username: 1-32 characters of A-Z a-z 0-9 _ . -
        name: String,
        /// Name shown to others (at most 64 characters)
        #[arg(long, value_name = "X")]
        display_name: Option<String>,
    },
    /// Log in and keep the session in the session file
    Login {
        /// Username
        name: String,
    },
    /// End the session and remove the session file
    Logout,
    /// List accounts whose names match a pattern
    Users {
        /// Glob (`*` and `?`, case-insensitive), or a regular expression with --regex
        #[arg(default_value = "*")]
        pattern: String,
        /// Treat PATTERN as a regular expression
        #[arg(long)]
        regex: bool,
        /// Rows per page (1-100) [default: 50]
        #[arg(long, value_name = "N", value_parser = page_size)]
        limit: Option<u32>,
        /// Continue a listing from the cursor a previous page printed
        #[arg(long, value_name = "C")]
        cursor: Option<String>,
    },
    /// Send a message (put `--` before text that starts with `-`)
    Send {
        /// Recipient's username
        user: String,
        /// The message; several words are joined with spaces
        #[arg(required = true, value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Print the oldest unread messages, then mark them read
    Read {
        /// At most this many messages (1-100) [default: 50]
        #[arg(long, value_name = "N", value_parser = page_size)]
        limit: Option<u32>,
    },
    /// Print the conversation with a user, oldest first, one page back at a time
    History {
        /// The other user
        user: String,
        /// Only messages older than this id (the id the previous page printed)
        #[arg(long, value_name = "ID")]
        before: Option<u64>,
        /// At most this many messages (1-100) [default: 50]
        #[arg(long, value_name = "N", value_parser = page_size)]
        limit: Option<u32>,
    },
    /// Delete messages from your view, for good
    DeleteMessages {
        /// Message ids
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
    /// Delete your account (asks for the password again)
    DeleteAccount {
        /// Delete it even if it has unread messages
        #[arg(long)]
        force: bool,
    },
    /// Print messages and receipts as they arrive, until Ctrl-C or the session ends
    ///
    /// Resumes after the last message it printed (kept in the session file), so a
    /// restarted `listen` shows nothing twice and misses nothing. The first `listen` after
    /// a login starts with every unread message, oldest first. Printed messages stay
    /// unread: `corvid read` marks them read.
    Listen,
    /// Chat full-screen: conversations, live messages and receipts, finding people
    ///
    /// Starts with the session of `corvid login` if there is one, else shows a login
    /// screen (and keeps the new session in the session file). The keys that work are
    /// shown at the bottom of the screen; Ctrl-C quits.
    Chat,
}

fn page_size(text: &str) -> Result<u32, String> {
    let value: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (1..=MAX_PAGE).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between 1 and {MAX_PAGE}"))
    }
}

impl GlobalArgs {
    /// The servers named by `--server` or `CORVID_SERVER`, if any.
    pub fn servers(&self) -> Option<Vec<String>> {
        let servers = split_servers(self.server.as_deref()?);
        (!servers.is_empty()).then_some(servers)
    }
}

/// Splits `a:1, b:2,,c:3` into its non-empty addresses.
pub fn split_servers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("corvid").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_joins_its_words_and_takes_global_flags_anywhere() {
        let cli = parse(&["send", "bob", "hello", "there", "--json"]).unwrap();
        let Command::Send { user, text } = cli.command else {
            panic!("not a send: {:?}", cli.command);
        };
        assert_eq!(user, "bob");
        assert_eq!(text.join(" "), "hello there");
        assert!(cli.global.json);

        let cli = parse(&["--server", "a:1, b:2,", "send", "bob", "--", "-1", "°C"]).unwrap();
        assert_eq!(
            cli.global.servers(),
            Some(vec!["a:1".to_string(), "b:2".to_string()])
        );
        let Command::Send { text, .. } = cli.command else {
            panic!("not a send");
        };
        assert_eq!(text, ["-1", "°C"]);
    }

    #[test]
    fn send_needs_text() {
        let err = parse(&["send", "bob"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn users_defaults_to_every_account() {
        let cli = parse(&["users"]).unwrap();
        let Command::Users {
            pattern,
            regex,
            limit,
            cursor,
        } = cli.command
        else {
            panic!("not users");
        };
        assert_eq!(pattern, "*");
        assert!(!regex);
        assert_eq!(limit, None);
        assert_eq!(cursor, None);

        let cli = parse(&["users", "^a", "--regex", "--limit", "5", "--cursor", "xyz"]).unwrap();
        let Command::Users {
            pattern,
            regex,
            limit,
            cursor,
        } = cli.command
        else {
            panic!("not users");
        };
        assert_eq!(
            (pattern.as_str(), regex, limit, cursor.as_deref()),
            ("^a", true, Some(5), Some("xyz"))
        );
    }

    #[test]
    fn page_sizes_outside_1_to_100_are_usage_errors() {
        for bad in ["0", "101", "ten", "-3"] {
            let err = parse(&["read", "--limit", bad]).unwrap_err();
            assert!(
                matches!(
                    err.kind(),
                    clap::error::ErrorKind::ValueValidation
                        | clap::error::ErrorKind::UnknownArgument
                ),
                "{bad}: {:?}",
                err.kind()
            );
        }
        let cli = parse(&["read", "--limit", "100"]).unwrap();
        assert!(matches!(cli.command, Command::Read { limit: Some(100) }));
    }

    #[test]
    fn the_other_subcommands_parse() {
        let cli = parse(&["register", "alice", "--display-name", "Alice A."]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Register { ref name, display_name: Some(ref d) } if name == "alice" && d == "Alice A."
        ));
        let cli = parse(&["login", "alice", "--password-stdin"]).unwrap();
        assert!(cli.global.password_stdin);
        assert!(matches!(cli.command, Command::Login { ref name } if name == "alice"));
        let cli = parse(&["history", "bob", "--before", "42", "--limit", "10"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::History { ref user, before: Some(42), limit: Some(10) } if user == "bob"
        ));
        let cli = parse(&["delete-messages", "1", "2", "3"]).unwrap();
        assert!(matches!(cli.command, Command::DeleteMessages { ref ids } if ids == &[1, 2, 3]));
        assert!(parse(&["delete-messages"]).is_err());
        assert!(parse(&["delete-messages", "x"]).is_err());
        let cli = parse(&["delete-account", "--force"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::DeleteAccount { force: true }
        ));
        let cli = parse(&["--session", "/tmp/s.json", "listen"]).unwrap();
        assert!(matches!(cli.command, Command::Listen));
        assert_eq!(cli.global.session, Some(PathBuf::from("/tmp/s.json")));
        let cli = parse(&["--server", "a:1,b:2", "--transport", "grpc", "chat"]).unwrap();
        assert!(matches!(cli.command, Command::Chat));
        assert_eq!(cli.global.transport, Some(TransportArg::Grpc));
        assert!(matches!(
            parse(&["logout"]).unwrap().command,
            Command::Logout
        ));
        assert!(matches!(
            parse(&["serve"]).unwrap().command,
            Command::Serve(_)
        ));
    }

    #[test]
    fn a_missing_subcommand_or_unknown_flag_is_an_error() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["send", "bob", "hi", "--bogus"]).is_err());
        assert!(parse(&["fly"]).is_err());
    }

    #[test]
    fn the_transport_is_wire_or_grpc() {
        assert_eq!(parse(&["read"]).unwrap().global.transport, None);
        let cli = parse(&["read", "--transport", "grpc"]).unwrap();
        assert_eq!(cli.global.transport, Some(TransportArg::Grpc));
        assert_eq!(Protocol::from(TransportArg::Grpc), Protocol::Grpc);
        let cli = parse(&["--transport", "wire", "read"]).unwrap();
        assert_eq!(cli.global.transport, Some(TransportArg::Wire));
        assert!(parse(&["read", "--transport", "carrier-pigeon"]).is_err());
    }

    #[test]
    fn tls_takes_a_ca_file_and_optionally_a_name() {
        let cli = parse(&[
            "read",
            "--tls-ca",
            "ca.pem",
            "--tls-server-name",
            "chat.local",
        ])
        .unwrap();
        assert_eq!(cli.global.tls_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(cli.global.tls_server_name.as_deref(), Some("chat.local"));
        assert!(parse(&["read", "--tls-server-name", "chat.local"]).is_err());
    }

    #[test]
    fn cluster_takes_its_config_before_or_after_the_action() {
        for args in [
            ["cluster", "status", "--config", "c.toml"],
            ["cluster", "--config", "c.toml", "status"],
        ] {
            let Command::Cluster(cluster) = parse(&args).unwrap().command else {
                panic!("not cluster: {args:?}");
            };
            assert!(matches!(
                cluster.action,
                crate::cluster::ClusterAction::Status
            ));
            assert_eq!(
                cluster.config_file().unwrap(),
                std::path::Path::new("c.toml"),
                "{args:?}"
            );
        }
        let cli = parse(&["cluster", "remove", "4", "--config", "c.toml"]).unwrap();
        let Command::Cluster(cluster) = cli.command else {
            panic!("not cluster");
        };
        assert!(matches!(
            cluster.action,
            crate::cluster::ClusterAction::Remove { id: 4 }
        ));
        assert_eq!(cluster.config, Some(PathBuf::from("c.toml")));
    }

    #[test]
    fn cluster_without_a_config_is_a_usage_error() {
        let Command::Cluster(cluster) = parse(&["cluster", "status"]).unwrap().command else {
            panic!("not cluster");
        };
        if std::env::var_os("CORVID_CONFIG").is_none() {
            let error = cluster.config_file().unwrap_err();
            assert!(
                matches!(error, crate::error::CliError::Usage(_)),
                "{error:?}"
            );
        }
    }

    #[test]
    fn server_lists_drop_blanks() {
        assert_eq!(split_servers(" a:1 ,,b:2 "), ["a:1", "b:2"]);
        assert!(split_servers(" , ").is_empty());
    }
}
