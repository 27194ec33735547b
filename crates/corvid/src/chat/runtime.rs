//! The side of `corvid chat` that touches the world: the terminal (raw mode, the
//! alternate screen, always restored), the keyboard, signals, and the server.

use std::time::Duration;

use corvid_client::{Client, ClientError, LoggedIn};
use corvid_core::{ErrorCode, PatternSyntax, Token};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::model::{App, HISTORY_PAGE, SEARCH_PAGE};
use super::update::{update, Effect, Input, Reply};
use super::view::view;
use crate::commands::{Context, Target};
use crate::error::CliError;
use crate::session::{self, Session};

/// Inputs waiting for the loop; keys, events and answers all queue here.
const INPUT_QUEUE: usize = 256;
/// How often the keyboard thread looks up from its wait to see if the client has quit.
const KEY_POLL: Duration = Duration::from_millis(200);
/// The pause before subscribing again after pushed events stopped.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(2);

/// What reaches the loop: an input for `update`, or a login whose token the runtime keeps.
enum Arrival {
    Input(Input),
    LoggedIn(LoggedIn),
    /// The keyboard could not be read: the client cannot go on.
    KeyboardFailed(std::io::Error),
}

/// Runs `corvid chat` until the user quits.
pub async fn run(ctx: &Context) -> Result<(), CliError> {
    let saved = session::load(&ctx.session_path)?;
    let target = ctx.target(saved.as_ref());
    // Connecting first means an unreachable server is one error line, not a blank screen.
    let client = ctx.connect(&target).await?;
    let label = server_label(&target);
    let resumed = saved
        .as_ref()
        .and_then(|saved| Some((saved.username.clone(), saved.token()?)));
    let (app, token, first) = match resumed {
        Some((username, token)) => (
            App::chat(label, username),
            Some(token),
            vec![Effect::Subscribe { after: None }],
        ),
        None => (App::login(label), None, Vec::new()),
    };
    let (sender, inputs) = mpsc::channel(INPUT_QUEUE);
    let mut runtime = Runtime {
        ctx,
        client,
        target,
        saved,
        token,
        sender,
        subscription: None,
    };
    let mut terminal = TerminalGuard::enter()?;
    start_keyboard(runtime.sender.clone());
    let result = runtime.run(&mut terminal, app, first, inputs).await;
    if let Some(task) = runtime.subscription.take() {
        task.abort();
    }
    drop(terminal);
    result
}

/// Raw mode and the alternate screen for as long as it lives. Dropping it, on any return
/// or while a panic unwinds, gives the terminal back as it was; ratatui's panic hook
/// restores it before the panic message prints.
struct TerminalGuard {
    terminal: ratatui::DefaultTerminal,
}

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard, CliError> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(err) => {
                ratatui::restore();
                Err(CliError::local(
                    "terminal",
                    format!("corvid chat needs a terminal: {err}"),
                ))
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Reads keys on a thread of its own (crossterm's read blocks) until the loop is gone.
fn start_keyboard(sender: mpsc::Sender<Arrival>) {
    std::thread::spawn(move || loop {
        let arrival = match crossterm::event::poll(KEY_POLL) {
            Ok(false) => {
                if sender.is_closed() {
                    return;
                }
                continue;
            }
            Ok(true) => match crossterm::event::read() {
                Ok(crossterm::event::Event::Key(key))
                    if key.kind != crossterm::event::KeyEventKind::Release =>
                {
                    Arrival::Input(Input::Key(key))
                }
                Ok(crossterm::event::Event::Resize(..)) => Arrival::Input(Input::Resize),
                Ok(_) => continue,
                Err(err) => Arrival::KeyboardFailed(err),
            },
            Err(err) => Arrival::KeyboardFailed(err),
        };
        let failed = matches!(arrival, Arrival::KeyboardFailed(_));
        if sender.blocking_send(arrival).is_err() || failed {
            return;
        }
    });
}

struct Runtime<'a> {
    ctx: &'a Context,
    client: Client,
    target: Target,
    /// The session file as it was at the start, for a login made here to keep its place.
    saved: Option<Session>,
    /// The session token while logged in.
    token: Option<Token>,
    sender: mpsc::Sender<Arrival>,
    /// The task forwarding pushed events, while there is one.
    subscription: Option<JoinHandle<()>>,
}

impl Runtime<'_> {
    async fn run(
        &mut self,
        guard: &mut TerminalGuard,
        mut app: App,
        first: Vec<Effect>,
        mut inputs: mpsc::Receiver<Arrival>,
    ) -> Result<(), CliError> {
        let draw_failed =
            |err: std::io::Error| CliError::local("terminal", format!("cannot draw: {err}"));
        for effect in first {
            self.start(effect, &app);
        }
        let mut signals = Signals::new()?;
        loop {
            guard
                .terminal
                .draw(|frame| view(&app, frame))
                .map_err(draw_failed)?;
            if app.quit {
                return Ok(());
            }
            let arrival = tokio::select! {
                arrival = inputs.recv() => arrival,
                () = signals.next() => return Ok(()),
            };
            let input = match arrival {
                None => return Ok(()),
                Some(Arrival::Input(input)) => input,
                Some(Arrival::LoggedIn(logged_in)) => self.logged_in(logged_in),
                Some(Arrival::KeyboardFailed(err)) => {
                    return Err(CliError::local(
                        "terminal",
                        format!("cannot read the keyboard: {err}"),
                    ))
                }
            };
            for effect in update(&mut app, input) {
                self.start(effect, &app);
            }
        }
    }

    /// Keeps the token of a login made on the login screen, and saves the session so the
    /// next `corvid chat` (or any other command) starts logged in.
    fn logged_in(&mut self, logged_in: LoggedIn) -> Input {
        self.token = Some(logged_in.token);
        let session = crate::commands::new_session(&self.target, &logged_in, self.saved.as_ref());
        let reply = Reply::LoggedIn {
            username: logged_in.username,
            unread: logged_in.unread,
        };
        if let Err(err) = session::save(&self.ctx.session_path, &session) {
            return Input::Reply(Reply::Failed { error: err.line() });
        }
        Input::Reply(reply)
    }

    /// Starts `effect`; its outcome arrives later as an input.
    fn start(&mut self, effect: Effect, app: &App) {
        let client = self.client.clone();
        let sender = self.sender.clone();
        let token = self.token;
        match effect {
            Effect::Login { username, password } => {
                tokio::spawn(async move {
                    let arrival = match client.login(&username, &password).await {
                        Ok(logged_in) => Arrival::LoggedIn(logged_in),
                        Err(error) => Arrival::Input(Input::Reply(Reply::LoginFailed {
                            error: CliError::from(error).line(),
                        })),
                    };
                    let _ = sender.send(arrival).await;
                });
            }
            Effect::ForgetSession => {
                if let Some(task) = self.subscription.take() {
                    task.abort();
                }
                if let Some(token) = self.token.take() {
                    // The file may already be gone or replaced by another login: both fine.
                    let _ = session::remove_if_token(&self.ctx.session_path, token);
                }
            }
            Effect::Subscribe { after } => {
                let Some(token) = token else { return };
                if let Some(task) = self.subscription.take() {
                    task.abort();
                }
                let pause = (!app.online).then_some(RESUBSCRIBE_AFTER);
                self.subscription = Some(tokio::spawn(forward_events(
                    client, token, after, pause, sender,
                )));
            }
            effect => {
                let Some(token) = token else { return };
                tokio::spawn(async move {
                    let reply = request(&client, token, effect).await;
                    let _ = sender.send(Arrival::Input(Input::Reply(reply))).await;
                });
            }
        }
    }
}

/// Makes one request of a logged-in session and turns its answer into a [`Reply`].
async fn request(client: &Client, token: Token, effect: Effect) -> Reply {
    let result = match effect {
        Effect::History { with, before } => {
            return match client
                .history(token, &with, before, Some(HISTORY_PAGE))
                .await
            {
                Ok(page) => Reply::History { with, page },
                Err(error) if is_session_over(&error) => Reply::SessionEnded,
                Err(error) => Reply::HistoryFailed {
                    with,
                    error: CliError::from(error).line(),
                },
            };
        }
        Effect::MarkRead { with, ids } => client
            .mark_read(token, ids)
            .await
            .map(|count| Reply::MarkedRead { with, count }),
        Effect::Search { pattern } => client
            .list_accounts(
                token,
                &pattern,
                PatternSyntax::Glob,
                Some(SEARCH_PAGE),
                None,
            )
            .await
            .map(|page| Reply::Accounts { pattern, page }),
        Effect::Send { to, text, local_id } => {
            // One id per message: the client's own retries of it are deduplicated.
            let client_id: u64 = rand::random();
            return match client.send(token, &to, &text, client_id).await {
                Ok(sent) => Reply::Sent {
                    local_id,
                    message: sent.message,
                },
                Err(error) if is_session_over(&error) => Reply::SessionEnded,
                Err(error) => Reply::SendFailed {
                    to,
                    local_id,
                    error: CliError::from(error).line(),
                },
            };
        }
        Effect::Login { .. } | Effect::Subscribe { .. } | Effect::ForgetSession => {
            return Reply::Failed {
                error: "internal: this request is not made here".to_string(),
            }
        }
    };
    match result {
        Ok(reply) => reply,
        Err(error) if is_session_over(&error) => Reply::SessionEnded,
        Err(error) => Reply::Failed {
            error: CliError::from(error).line(),
        },
    }
}

fn is_session_over(error: &ClientError) -> bool {
    matches!(error, ClientError::Api(api) if api.code == ErrorCode::Unauthenticated)
}

/// Subscribes (after `pause`, when retrying) and forwards pushed events until the stream
/// ends; then says why, so that the loop can subscribe again.
async fn forward_events(
    client: Client,
    token: Token,
    after: Option<corvid_core::MessageId>,
    pause: Option<Duration>,
    sender: mpsc::Sender<Arrival>,
) {
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
    let send = |input: Input| {
        let sender = sender.clone();
        async move { sender.send(Arrival::Input(input)).await.is_ok() }
    };
    let mut events = match client.subscribe(token, after).await {
        Ok(subscription) => subscription.events,
        Err(error) if is_session_over(&error) => {
            send(Input::Reply(Reply::SessionEnded)).await;
            return;
        }
        Err(error) => {
            send(Input::Offline {
                error: CliError::from(error).message(),
            })
            .await;
            return;
        }
    };
    if !send(Input::Subscribed).await {
        return;
    }
    loop {
        let input = match events.recv().await {
            Some(Ok(event)) => {
                let ends = matches!(event, corvid_core::Event::SessionEnded { .. });
                if !send(Input::Pushed(event)).await || ends {
                    return;
                }
                continue;
            }
            Some(Err(error)) if is_session_over(&error) => Input::Reply(Reply::SessionEnded),
            Some(Err(error)) => Input::Offline {
                error: CliError::from(error).message(),
            },
            None => Input::Offline {
                error: "the connection closed".to_string(),
            },
        };
        send(input).await;
        return;
    }
}

/// `127.0.0.1:7070 (wire)`, `a:7071, b:7071 (grpc, TLS)`.
fn server_label(target: &Target) -> String {
    let tls = if target.tls_ca.is_some() { ", TLS" } else { "" };
    format!(
        "{} ({}{tls})",
        target.servers.join(", "),
        target.transport.name()
    )
}

/// The signals that end the client as Ctrl-C does: SIGINT from elsewhere, SIGTERM, and
/// SIGHUP when the terminal goes away.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let fail = |err: std::io::Error| {
                CliError::local("signals", format!("cannot watch signals: {err}"))
            };
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).map_err(fail)?,
                terminate: signal(SignalKind::terminate()).map_err(fail)?,
                hangup: signal(SignalKind::hangup()).map_err(fail)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
