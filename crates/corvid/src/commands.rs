//! The client subcommands: each connects, makes its calls and prints the result.

use std::io::Write;
use std::path::PathBuf;

use corvid_client::{
    Client, ClientConfig, ClientError, LoggedIn, Protocol, Subscription, TlsConfig,
};
use corvid_core::{ErrorCode, Event, MessageId, PatternSyntax, Token};
use serde_json::{json, Value};

use crate::cli::{Command, GlobalArgs};
use crate::error::CliError;
use crate::output;
use crate::password::{self, Source};
use crate::session::{self, Session};

/// The servers a command talks to, the protocol, and TLS.
pub(crate) struct Target {
    pub(crate) transport: Protocol,
    pub(crate) servers: Vec<String>,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) tls_server_name: Option<String>,
}

/// What every command needs: the global flags and where the session lives.
pub(crate) struct Context {
    global: GlobalArgs,
    pub(crate) session_path: PathBuf,
}

impl Context {
    fn password_source(&self) -> Source {
        if self.global.password_stdin {
            Source::Stdin
        } else {
            Source::Terminal
        }
    }

    /// Where to connect and how: `--transport`, else the session's transport, else the
    /// binary protocol; `--server`, else the session's servers if they speak that
    /// transport, else the transport's default address on this machine; `--tls-ca` (and
    /// `--tls-server-name`), else the session's, else plain TCP.
    pub(crate) fn target(&self, session: Option<&Session>) -> Target {
        let transport = self
            .global
            .transport
            .map(Protocol::from)
            .or_else(|| session.map(Session::transport))
            .unwrap_or_default();
        let servers = self
            .global
            .servers()
            .or_else(|| {
                session
                    .filter(|session| session.transport() == transport)
                    .map(|session| session.servers.clone())
                    .filter(|servers| !servers.is_empty())
            })
            .unwrap_or_else(|| vec![transport.default_server().to_string()]);
        let (tls_ca, tls_server_name) = match &self.global.tls_ca {
            Some(ca) => (Some(ca.clone()), self.global.tls_server_name.clone()),
            None => match session {
                Some(session) => (session.tls_ca.clone(), session.tls_server_name.clone()),
                None => (None, None),
            },
        };
        Target {
            transport,
            servers,
            tls_ca,
            tls_server_name,
        }
    }

    pub(crate) async fn connect(&self, target: &Target) -> Result<Client, CliError> {
        let mut config = ClientConfig::new(&target.servers);
        config.transport = target.transport;
        if let Some(ca) = &target.tls_ca {
            config.tls = Some(TlsConfig::from_ca_file(ca, target.tls_server_name.clone())?);
        }
        Ok(Client::connect_with(config).await?)
    }

    /// The logged-in session and its token.
    fn session(&self) -> Result<(Session, Token), CliError> {
        let session = session::load(&self.session_path)?.ok_or(CliError::NotLoggedIn)?;
        let token = session.token().ok_or_else(|| {
            CliError::session_file(format!(
                "{} holds no valid token; run corvid login NAME",
                self.session_path.display()
            ))
        })?;
        Ok((session, token))
    }

    /// Prints the human line or, with `--json`, the JSON object.
    fn emit(&self, human: impl std::fmt::Display, json: Value) -> Result<(), CliError> {
        if self.global.json {
            print_line(json)
        } else {
            print_line(human)
        }
    }

    /// Prints lines only in human mode (JSON goes out whole, with [`Context::emit`]).
    fn human(&self, lines: impl IntoIterator<Item = String>) -> Result<(), CliError> {
        if self.global.json {
            return Ok(());
        }
        lines.into_iter().try_for_each(print_line)
    }

    /// A remark for people (a hint, an empty result): to stderr, and not in JSON mode.
    fn remark(&self, text: impl std::fmt::Display) {
        if !self.global.json {
            eprintln!("{text}");
        }
    }
}

/// Prints one line (or several, joined) to stdout; a closed stdout is an error, not a panic.
pub(crate) fn print_line(line: impl std::fmt::Display) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|err| CliError::local("output", format!("cannot write the output: {err}")))
}

/// Runs a client subcommand (everything but `serve`).
pub async fn run(global: GlobalArgs, command: Command) -> Result<(), CliError> {
    let session_path = match &global.session {
        Some(path) => path.clone(),
        None => session::default_path()?,
    };
    let ctx = Context {
        global,
        session_path,
    };
    match command {
        Command::Serve(_)
        | Command::Check { .. }
        | Command::Cluster(_)
        | Command::Status { .. } => Err(CliError::usage(
            "serve, check, cluster and status are not client commands",
        )),
        Command::Register { name, display_name } => {
            register(&ctx, &name, display_name.as_deref()).await
        }
        Command::Login { name } => login(&ctx, &name).await,
        // The chat logs in by itself when there is no session.
        Command::Chat => crate::chat::run(&ctx).await,
        command => {
            let (session, token) = ctx.session()?;
            // Asked before connecting, so a slow typist does not hold an idle connection.
            let password = match command {
                Command::DeleteAccount { .. } => {
                    Some(password::read(ctx.password_source(), "Password: ")?)
                }
                _ => None,
            };
            let client = ctx.connect(&ctx.target(Some(&session))).await?;
            let result = with_session(&ctx, &client, session, token, command, password).await;
            match result {
                Err(CliError::Api(error)) if error.code == ErrorCode::Unauthenticated => {
                    session::remove_if_token(&ctx.session_path, token)?;
                    Err(CliError::SessionEnded)
                }
                other => other,
            }
        }
    }
}

async fn with_session(
    ctx: &Context,
    client: &Client,
    session: Session,
    token: Token,
    command: Command,
    password: Option<String>,
) -> Result<(), CliError> {
    match command {
        Command::Logout => logout(ctx, client, token).await,
        Command::Users {
            pattern,
            regex,
            limit,
            cursor,
        } => users(ctx, client, token, &pattern, regex, limit, cursor).await,
        Command::Send { user, text } => send(ctx, client, token, &user, &text.join(" ")).await,
        Command::Read { limit } => read(ctx, client, token, limit).await,
        Command::History {
            user,
            before,
            limit,
        } => history(ctx, client, &session, token, &user, before, limit).await,
        Command::DeleteMessages { ids } => delete_messages(ctx, client, token, ids).await,
        Command::DeleteAccount { force } => {
            let password = password.unwrap_or_default();
            delete_account(ctx, client, &session, token, &password, force).await
        }
        Command::Listen => listen(ctx, client, session, token).await,
        Command::Serve(_)
        | Command::Check { .. }
        | Command::Cluster(_)
        | Command::Status { .. }
        | Command::Register { .. }
        | Command::Login { .. }
        | Command::Chat => Err(CliError::usage("this command does not use a session")),
    }
}

async fn register(ctx: &Context, name: &str, display_name: Option<&str>) -> Result<(), CliError> {
    let password = password::read_new(ctx.password_source())?;
    let existing = session::load(&ctx.session_path).ok().flatten();
    let client = ctx.connect(&ctx.target(existing.as_ref())).await?;
    let username = client
        .create_account(name, display_name.unwrap_or(""), &password)
        .await?;
    ctx.emit(
        format!("created account {username}; log in with: corvid login {username}"),
        json!({ "username": username }),
    )
}

async fn login(ctx: &Context, name: &str) -> Result<(), CliError> {
    let password = password::read(ctx.password_source(), "Password: ")?;
    let existing = session::load(&ctx.session_path).ok().flatten();
    let target = ctx.target(existing.as_ref());
    let client = ctx.connect(&target).await?;
    let logged_in = client.login(name, &password).await?;
    let new_session = new_session(&target, &logged_in, existing.as_ref());
    session::save(&ctx.session_path, &new_session)?;
    ctx.emit(
        format!(
            "logged in as {}; {} unread message(s)",
            logged_in.username, logged_in.unread
        ),
        json!({ "username": logged_in.username, "unread": logged_in.unread }),
    )
}

/// The session file for a login just made through `target`. The same user's earlier
/// session passes on where `listen` was.
pub(crate) fn new_session(
    target: &Target,
    logged_in: &LoggedIn,
    existing: Option<&Session>,
) -> Session {
    let mut new_session = Session::new(
        target.servers.clone(),
        target.transport,
        logged_in.username.clone(),
        logged_in.token,
    );
    // A relative CA path would break when the next command runs elsewhere.
    new_session.tls_ca = target
        .tls_ca
        .as_ref()
        .map(|ca| std::path::absolute(ca).unwrap_or_else(|_| ca.clone()));
    new_session.tls_server_name = target.tls_server_name.clone();
    // Message ids only grow, so the same user's `listen` can resume where it was.
    if let Some(existing) = existing {
        if existing.username.eq_ignore_ascii_case(&logged_in.username) {
            new_session.last_seen = existing.last_seen;
        }
    }
    new_session
}

async fn logout(ctx: &Context, client: &Client, token: Token) -> Result<(), CliError> {
    match client.logout(token).await {
        Ok(()) => {}
        // Already over on the server: forgetting it here is all that is left to do.
        Err(ClientError::Api(error)) if error.code == ErrorCode::Unauthenticated => {}
        Err(error) => return Err(error.into()),
    }
    session::remove_if_token(&ctx.session_path, token)?;
    ctx.emit("logged out", json!({ "logged_out": true }))
}

async fn users(
    ctx: &Context,
    client: &Client,
    token: Token,
    pattern: &str,
    regex: bool,
    limit: Option<u32>,
    cursor: Option<String>,
) -> Result<(), CliError> {
    let syntax = if regex {
        PatternSyntax::Regex
    } else {
        PatternSyntax::Glob
    };
    let page = client
        .list_accounts(token, pattern, syntax, limit, cursor)
        .await?;
    if ctx.global.json {
        let accounts: Vec<Value> = page.rows.iter().map(output::account_json).collect();
        return print_line(json!({ "accounts": accounts, "next_cursor": page.next_cursor }));
    }
    if page.rows.is_empty() {
        ctx.remark("no matching accounts");
    }
    ctx.human(output::account_lines(&page.rows))?;
    if let Some(cursor) = page.next_cursor {
        let regex = if regex { " --regex" } else { "" };
        ctx.remark(format!(
            "more: corvid users '{pattern}'{regex} --cursor {cursor}"
        ));
    }
    Ok(())
}

async fn send(
    ctx: &Context,
    client: &Client,
    token: Token,
    to: &str,
    text: &str,
) -> Result<(), CliError> {
    // One id for this invocation: the client's own retries of it are deduplicated.
    let client_id: u64 = rand::random();
    let sent = client.send(token, to, text, client_id).await?;
    let message = &sent.message;
    let mut value = output::message_json(message);
    value["duplicate"] = json!(sent.duplicate);
    let note = if sent.duplicate {
        " (already sent)"
    } else {
        ""
    };
    ctx.emit(
        format!("sent #{} to {}{note}", message.id.0, message.to),
        value,
    )
}

async fn read(
    ctx: &Context,
    client: &Client,
    token: Token,
    limit: Option<u32>,
) -> Result<(), CliError> {
    let messages = client.fetch_unread(token, limit).await?;
    if ctx.global.json {
        let values: Vec<Value> = messages.iter().map(output::message_json).collect();
        print_line(json!({ "messages": values }))?;
    } else if messages.is_empty() {
        ctx.remark("no unread messages");
    } else {
        ctx.human(
            messages
                .iter()
                .map(|message| output::message_line(message, false)),
        )?;
    }
    // Marked only once printed: a failure above leaves them unread for the next try.
    if !messages.is_empty() {
        let ids = messages.iter().map(|message| message.id).collect();
        client.mark_read(token, ids).await?;
    }
    Ok(())
}

async fn history(
    ctx: &Context,
    client: &Client,
    session: &Session,
    token: Token,
    with: &str,
    before: Option<u64>,
    limit: Option<u32>,
) -> Result<(), CliError> {
    let page = client
        .history(token, with, before.map(MessageId), limit)
        .await?;
    if ctx.global.json {
        let values: Vec<Value> = page.messages.iter().map(output::message_json).collect();
        return print_line(json!({
            "messages": values,
            "next_before": page.next_before.map(|id| id.0),
        }));
    }
    if page.messages.is_empty() {
        ctx.remark("no messages");
    }
    ctx.human(page.messages.iter().map(|message| {
        // Receipts matter to the sender: show them on one's own messages.
        let mine = message.from.eq_ignore_ascii_case(&session.username);
        output::message_line(message, mine)
    }))?;
    if let Some(before) = page.next_before {
        ctx.remark(format!(
            "older messages: corvid history {with} --before {}",
            before.0
        ));
    }
    Ok(())
}

async fn delete_messages(
    ctx: &Context,
    client: &Client,
    token: Token,
    ids: Vec<u64>,
) -> Result<(), CliError> {
    let count = client
        .delete_messages(token, ids.into_iter().map(MessageId).collect())
        .await?;
    ctx.emit(
        format!("deleted {count} message(s)"),
        json!({ "deleted": count }),
    )
}

async fn delete_account(
    ctx: &Context,
    client: &Client,
    session: &Session,
    token: Token,
    password: &str,
    force: bool,
) -> Result<(), CliError> {
    client.delete_account(token, password, force).await?;
    session::remove_if_token(&ctx.session_path, token)?;
    ctx.emit(
        format!("deleted account {}", session.username),
        json!({ "deleted_account": session.username }),
    )
}

async fn listen(
    ctx: &Context,
    client: &Client,
    mut session: Session,
    token: Token,
) -> Result<(), CliError> {
    // The first listen starts from the oldest unread message, so that nothing that
    // arrived since the login (or before it) is missed; later ones resume after the last
    // message printed. Printed messages stay unread; `corvid read` marks them read.
    let Subscription { mut events, .. } = client.subscribe(token, session.last_seen()).await?;
    ctx.remark(format!(
        "listening as {}; press Ctrl-C to stop",
        session.username
    ));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let item = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            item = events.recv() => item,
        };
        match item {
            None => return Err(CliError::Connection(ClientError::Closed)),
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(Event::Message(message))) => {
                ctx.emit(
                    output::message_line(&message, false),
                    output::message_json(&message),
                )?;
                session.last_seen = Some(message.id.0);
                save_last_seen(ctx, &session, token)?;
            }
            Some(Ok(Event::Receipt { id, status })) => ctx.emit(
                output::receipt_line(id, status),
                output::receipt_json(id, status),
            )?,
            Some(Ok(Event::SessionEnded { reason })) => {
                ctx.emit(
                    output::session_ended_line(reason),
                    output::session_ended_json(reason),
                )?;
                session::remove_if_token(&ctx.session_path, token)?;
                return Ok(());
            }
        }
    }
}

/// Records the last message printed, unless another login has replaced the session since.
fn save_last_seen(ctx: &Context, session: &Session, token: Token) -> Result<(), CliError> {
    match session::load(&ctx.session_path)? {
        Some(mut current) if current.token() == Some(token) => {
            current.last_seen = session.last_seen;
            session::save(&ctx.session_path, &current)
        }
        _ => Ok(()),
    }
}
