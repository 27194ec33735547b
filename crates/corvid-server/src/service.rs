//! The service core: every operation of Corvid, whatever the frontend.
//!
//! A frontend decodes its wire format into a [`Request`], calls [`Service::handle`] (or
//! [`Service::subscribe`] for pushed events) and encodes what comes back. This is where
//! requests are validated, stamped (time, tokens, password hashes) into commands for the
//! log, and where reads are served after `ensure_linearizable`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use corvid_core::query::{self, QueryError};
use corvid_core::{
    validate, AccountId, ApiError, Command, EndReason, ErrorCode, Event, LeaderAddrs, Message,
    MessageId, Outcome, Pattern, Request, Response, SessionKey, SessionPolicy, SubscribeFrom,
    Timestamp, Token,
};
use corvid_raft::{Node, NodeError};

use crate::config::Login;
use crate::hub::{EventQueue, Hub, Queued, Registration};
use crate::metrics::{Live, Metrics};
pub use crate::password::Origin;
use crate::password::Passwords;

/// How long delivery notes gather before they are proposed as one `MarkDelivered` batch.
const DELIVERY_BATCH_DELAY: Duration = Duration::from_millis(10);
/// Message ids whose `delivered` mark may wait to be written, over all accounts. Past it a
/// new note is dropped, with a warning: the message stays `sent` until it is fetched or
/// pushed again. Marks wait only while writes are refused, and 64 Ki ids are about 3 MiB.
const MAX_PENDING_DELIVERIES: usize = 64 * 1024;
/// Delivery notes proposed in one round, at most.
const DELIVERY_ROUND: usize = 8 * validate::MAX_IDS;
/// How long a refused round of delivery marks waits before it is tried again: doubled on
/// each refusal, up to the maximum.
const DELIVERY_RETRY_FIRST: Duration = Duration::from_millis(50);
const DELIVERY_RETRY_MAX: Duration = Duration::from_secs(2);
/// How soon a subscription's refused session touch is tried again (or at its next regular
/// touch, if that comes sooner).
const TOUCH_RETRY: Duration = Duration::from_secs(1);

/// Backlog messages read per page when a subscriber resumes.
const REPLAY_PAGE: usize = 256;

/// Settings of the service that come from the configuration.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub session_policy: SessionPolicy,
    pub max_text_bytes: usize,
    /// Password hashing and the failed-login throttle.
    pub login: Login,
    /// Where requests, sends and fetches are counted.
    pub metrics: Metrics,
}

pub struct Service {
    node: Node,
    hub: Arc<Hub>,
    config: ServiceConfig,
    passwords: Passwords,
    deliveries: Arc<PendingDeliveries>,
}

impl Service {
    /// Builds the service over a started node whose effects feed `hub`.
    pub fn new(node: Node, hub: Arc<Hub>, config: ServiceConfig) -> anyhow::Result<Arc<Service>> {
        let passwords = Passwords::new(&config.login)?;
        let deliveries = Arc::new(PendingDeliveries::default());
        let service = Arc::new(Service {
            node,
            hub,
            config,
            passwords,
            deliveries: deliveries.clone(),
        });
        tokio::spawn(record_deliveries(Arc::downgrade(&service), deliveries));
        Ok(service)
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn metrics(&self) -> &Metrics {
        &self.config.metrics
    }

    /// Serves one request that came over `protocol` from `origin`, and counts it: what
    /// every frontend calls.
    pub async fn serve(
        &self,
        protocol: &'static str,
        origin: Origin,
        request: Request,
    ) -> Result<Response, ApiError> {
        let operation = crate::metrics::operation(&request);
        let started = Instant::now();
        let result = self.handle_from(origin, request).await;
        let outcome = result.as_ref().map(|_| ());
        self.config
            .metrics
            .request(protocol, operation, outcome, started.elapsed());
        result
    }

    /// [`Service::subscribe`] for a client over `protocol`: counted as a request, and as a
    /// live subscription while it lasts.
    pub async fn subscribe_over(
        self: &Arc<Self>,
        protocol: &'static str,
        token: Token,
        from: SubscribeFrom,
    ) -> Result<SessionEvents, ApiError> {
        let started = Instant::now();
        let result = self.subscribe(token, from).await;
        let metrics = &self.config.metrics;
        metrics.request(
            protocol,
            "subscribe",
            result.as_ref().map(|_| ()),
            started.elapsed(),
        );
        result.map(|mut subscription| {
            subscription._live = metrics.subscription(protocol);
            subscription
        })
    }

    /// Serves one request that came from `origin`: the address a login or an account
    /// deletion is throttled by. Frontends call this; [`Service::handle`] is for callers
    /// with no address.
    pub async fn handle_from(
        &self,
        origin: Origin,
        request: Request,
    ) -> Result<Response, ApiError> {
        match request {
            Request::Login { username, password } => self.login(origin, username, password).await,
            Request::DeleteAccount {
                token,
                password,
                force,
            } => self.delete_account(origin, token, password, force).await,
            request => self.handle(request).await,
        }
    }

    /// Serves one request from a caller of unknown origin (all such callers share one
    /// failed-login allowance). `Subscribe` needs a stream: use [`Service::subscribe`].
    pub async fn handle(&self, request: Request) -> Result<Response, ApiError> {
        match request {
            Request::Ping => Ok(Response::Pong),
            Request::CreateAccount {
                username,
                display_name,
                password,
            } => self.create_account(username, display_name, password).await,
            Request::Login { username, password } => {
                self.login(Origin::UNKNOWN, username, password).await
            }
            Request::Logout { token } => {
                let now = now();
                self.write(Command::Logout {
                    session: token.session_key(),
                    now,
                })
                .await?;
                Ok(Response::LoggedOut)
            }
            Request::DeleteAccount {
                token,
                password,
                force,
            } => {
                self.delete_account(Origin::UNKNOWN, token, password, force)
                    .await
            }
            Request::ListAccounts {
                token,
                pattern,
                syntax,
                limit,
                cursor,
            } => {
                let limit = validate::page_limit(limit)?;
                let pattern = Pattern::compile(&pattern, syntax)?;
                let session = token.session_key();
                let now = now();
                let mut page = self
                    .read(move |t| {
                        query::authenticate(t, &session, now)?;
                        query::list_accounts(t, &pattern, cursor.as_deref(), limit)
                    })
                    .await?;
                for row in &mut page.rows {
                    // Online anywhere in the cluster: here, or as another server reported.
                    row.online = self.hub.is_online(&row.username)
                        || self.node.is_online_elsewhere(&row.username);
                }
                Ok(Response::Accounts(page))
            }
            Request::Send {
                token,
                to,
                text,
                client_id,
            } => {
                validate::text(&text, self.config.max_text_bytes).map_err(|code| {
                    ApiError::new(
                        code,
                        format!(
                            "message text must be 1 to {} bytes",
                            self.config.max_text_bytes
                        ),
                    )
                })?;
                let session = token.session_key();
                match self
                    .write(Command::Send {
                        session,
                        to,
                        text,
                        client_id,
                        now: now(),
                    })
                    .await?
                {
                    Outcome::Sent { message, duplicate } => {
                        if !duplicate {
                            self.config.metrics.message_sent();
                        }
                        Ok(Response::Sent { message, duplicate })
                    }
                    other => Err(unexpected(other)),
                }
            }
            Request::FetchUnread { token, limit } => {
                let limit = validate::page_limit(limit)?;
                let session = token.session_key();
                let now = now();
                let (account, messages) = self
                    .read(move |t| {
                        let (account, _) = query::authenticate(t, &session, now)?;
                        Ok::<_, QueryError>((account, query::fetch_unread(t, account, limit)?))
                    })
                    .await?;
                for message in &messages {
                    self.delivered(account, message);
                }
                self.config.metrics.messages_fetched(messages.len() as u64);
                Ok(Response::Messages { messages })
            }
            Request::MarkRead { token, ids } => {
                validate::id_count(ids.len())?;
                let command = Command::MarkRead {
                    session: token.session_key(),
                    ids,
                    now: now(),
                };
                match self.write(command).await? {
                    Outcome::MarkedRead { count } => Ok(Response::MarkedRead { count }),
                    other => Err(unexpected(other)),
                }
            }
            Request::History {
                token,
                with,
                before,
                limit,
            } => {
                let limit = validate::page_limit(limit)?;
                let session = token.session_key();
                let now = now();
                let page = self
                    .read(move |t| {
                        let (account, _) = query::authenticate(t, &session, now)?;
                        query::history(t, account, &with, before, limit)
                    })
                    .await?;
                Ok(Response::History(page))
            }
            Request::DeleteMessages { token, ids } => {
                validate::id_count(ids.len())?;
                let command = Command::DeleteMessages {
                    session: token.session_key(),
                    ids,
                    now: now(),
                };
                match self.write(command).await? {
                    Outcome::MessagesDeleted { count } => Ok(Response::MessagesDeleted { count }),
                    other => Err(unexpected(other)),
                }
            }
            Request::Subscribe { .. } => Err(ApiError::new(
                ErrorCode::Malformed,
                "subscribe is served by the frontend's event stream",
            )),
        }
    }

    async fn create_account(
        &self,
        username: String,
        display_name: String,
        password: String,
    ) -> Result<Response, ApiError> {
        validate::username(&username)?;
        validate::display_name(&display_name)?;
        validate::password(&password)?;
        // A cheap local look-up spares the hashing work for a name that is surely taken;
        // the state machine makes the authoritative check.
        let name = username.clone();
        let taken = self
            .node
            .read_local(move |t| query::credentials(t, &name))
            .map_err(fault)?;
        if taken.map_err(storage_fault)?.is_some() {
            return Err(ErrorCode::UsernameTaken.into());
        }
        let password_hash = self.passwords.hash(password).await?;
        let command = Command::CreateAccount {
            username,
            display_name,
            password_hash,
            now: now(),
        };
        match self.write(command).await? {
            Outcome::AccountCreated { username, .. } => Ok(Response::AccountCreated { username }),
            other => Err(unexpected(other)),
        }
    }

    async fn login(
        &self,
        origin: Origin,
        username: String,
        password: String,
    ) -> Result<Response, ApiError> {
        // The throttle answers before anything is read or hashed, and in the same way
        // whether the account exists or not.
        let attempt = self.passwords.attempt(origin, &username)?;
        let found = self
            .read(move |t| Ok::<_, QueryError>(query::credentials(t, &username)?))
            .await?;
        let (account, phc) = found.unzip();
        let matches = attempt.verify(password, phc).await?;
        let Some(account) = account.filter(|_| matches) else {
            return Err(ErrorCode::InvalidCredentials.into());
        };
        let token = new_token();
        let command = Command::Login {
            account,
            session: token.session_key(),
            policy: self.config.session_policy,
            now: now(),
        };
        match self.write(command).await? {
            Outcome::LoggedIn {
                username, unread, ..
            } => Ok(Response::LoggedIn {
                token,
                username,
                unread,
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_account(
        &self,
        origin: Origin,
        token: Token,
        password: String,
        force: bool,
    ) -> Result<Response, ApiError> {
        let session = token.session_key();
        let now = now();
        let (account, username, phc) = self
            .read(move |t| {
                let (account, username) = query::authenticate(t, &session, now)?;
                let phc = query::password_hash(t, account)?;
                Ok::<_, QueryError>((account, username, phc))
            })
            .await?;
        // A stolen session must not become a way around the login throttle.
        let attempt = self.passwords.attempt(origin, &username)?;
        if !attempt.verify(password, phc).await? {
            return Err(ErrorCode::InvalidCredentials.into());
        }
        match self
            .write(Command::DeleteAccount {
                session,
                account,
                force,
                now,
            })
            .await?
        {
            Outcome::AccountDeleted => Ok(Response::AccountDeleted),
            other => Err(unexpected(other)),
        }
    }

    /// Starts pushed events for a session. The subscription first replays the inbox
    /// messages `from` names (none, those after an id, or the unread ones), then goes live
    /// without gaps or repeats.
    pub async fn subscribe(
        self: &Arc<Self>,
        token: Token,
        from: SubscribeFrom,
    ) -> Result<SessionEvents, ApiError> {
        let session = token.session_key();
        let now = now();
        let (account, username) = self
            .read(move |t| query::authenticate(t, &session, now))
            .await?;
        // Register before reading the inbox, so that a message applied in between is in
        // the backlog, the live queue, or both (then skipped), never in neither.
        let (registration, events) = self
            .hub
            .subscribe(account, session, &username)
            .map_err(|full| ApiError::new(ErrorCode::TooManySubscriptions, full.to_string()))?;
        let last_id = self
            .read(move |t| Ok::<_, QueryError>(query::last_inbox_id(t, account)?))
            .await?;
        let touch_every =
            Duration::from_millis((self.config.session_policy.idle_timeout_ms / 3).max(1000));
        let mut touch =
            tokio::time::interval_at(tokio::time::Instant::now() + touch_every, touch_every);
        touch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let touch_retry = TOUCH_RETRY.min(touch_every);
        let (replay, skip_through) = match from {
            SubscribeFrom::Now => (None, MessageId(0)),
            SubscribeFrom::After(after) => (
                Some(Replay {
                    cursor: after,
                    through: last_id,
                    unread_only: false,
                })
                .filter(|_| after < last_id),
                last_id,
            ),
            SubscribeFrom::OldestUnread => (
                Some(Replay {
                    cursor: MessageId(0),
                    through: last_id,
                    unread_only: true,
                })
                .filter(|_| last_id > MessageId(0)),
                last_id,
            ),
        };
        Ok(SessionEvents {
            service: self.clone(),
            account,
            session,
            _registration: registration,
            _live: Live::none(),
            events,
            backlog: VecDeque::new(),
            replay,
            skip_through,
            live_through: last_id,
            last_id,
            touch,
            touch_retry,
            ended: false,
        })
    }

    /// Notes that `message` reached a session of `account`; the receipt follows shortly.
    fn delivered(&self, account: AccountId, message: &Message) {
        if message.status == corvid_core::ReceiptStatus::Sent {
            self.deliveries.add(account, message.id);
        }
    }

    async fn write(&self, command: Command) -> Result<Outcome, ApiError> {
        match self.node.write(command).await.map_err(fault)? {
            Outcome::Rejected(rejection) => Err(rejection.into()),
            outcome => Ok(outcome),
        }
    }

    async fn read<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        F: FnOnce(&dyn corvid_core::Tables) -> Result<R, QueryError> + Send + 'static,
        R: Send + 'static,
    {
        match self.node.read(f).await.map_err(fault)? {
            Ok(value) => Ok(value),
            Err(QueryError::Rejected(rejection)) => Err(rejection.into()),
            Err(QueryError::Fault(fault)) => Err(storage_fault(fault)),
        }
    }
}

/// A live stream of events for one session.
pub struct SessionEvents {
    service: Arc<Service>,
    account: AccountId,
    session: SessionKey,
    _registration: Registration,
    /// Counts this subscription as live in the metrics while it lasts.
    _live: Live,
    events: Arc<EventQueue>,
    backlog: VecDeque<Message>,
    /// Where the replay of inbox messages stands; `None` once it has caught up.
    replay: Option<Replay>,
    /// Live messages up to this id were (or will be) sent by the replay.
    skip_through: MessageId,
    /// Everything in the inbox up to this id was sent, replayed or is not to be sent: the
    /// newest id when the subscription started, then each live message sent. After the
    /// state is replaced, the subscription resumes after it.
    live_through: MessageId,
    last_id: MessageId,
    touch: tokio::time::Interval,
    /// How soon a refused touch is tried again.
    touch_retry: Duration,
    ended: bool,
}

impl SessionEvents {
    /// The newest inbox message id when the subscription started.
    pub fn last_id(&self) -> MessageId {
        self.last_id
    }

    /// Completes when the hub dropped this subscription for falling behind (its queue
    /// was full): its stream should end, so that the client resumes with `after`.
    pub fn fell_behind(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.events.fell_behind()
    }

    /// The next event, or `None` when the stream is over (session ended, or this
    /// subscriber fell too far behind and must resubscribe with `after`).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(message) = self.backlog.pop_front() {
                self.service.delivered(self.account, &message);
                return Some(Event::Message(message));
            }
            if let Some(Replay {
                cursor,
                through,
                unread_only,
            }) = self.replay
            {
                let account = self.account;
                let page = self
                    .service
                    .read(move |t| {
                        if unread_only {
                            return Ok::<_, QueryError>(query::unread_between(
                                t,
                                account,
                                cursor,
                                through,
                                REPLAY_PAGE,
                            )?);
                        }
                        let page = query::inbox_after(t, account, cursor, REPLAY_PAGE)?;
                        let full = page.len() == REPLAY_PAGE;
                        let next = page.last().map(|m| m.id).filter(|id| full && *id < through);
                        Ok((page, next))
                    })
                    .await;
                let Ok((page, next)) = page else {
                    self.ended = true;
                    return None;
                };
                self.replay = next.map(|cursor| Replay {
                    cursor,
                    through,
                    unread_only,
                });
                self.backlog
                    .extend(page.into_iter().filter(|m| m.id <= through));
                continue;
            }
            tokio::select! {
                event = self.events.recv() => match event {
                    None => {
                        self.ended = true;
                        return None;
                    }
                    Some(Queued::StateReplaced) => {
                        if !self.resume_after_state_replaced().await {
                            self.ended = true;
                            return None;
                        }
                    }
                    Some(Queued::Event(Event::Message(message))) if message.id <= self.skip_through => continue,
                    Some(Queued::Event(Event::Message(message))) => {
                        self.live_through = self.live_through.max(message.id);
                        self.service.delivered(self.account, &message);
                        return Some(Event::Message(message));
                    }
                    Some(Queued::Event(event @ Event::SessionEnded { .. })) => {
                        self.ended = true;
                        return Some(event);
                    }
                    Some(Queued::Event(event)) => return Some(event),
                },
                _ = self.touch.tick() => {
                    // A live subscription is activity: it keeps the session from idling out.
                    let touched = self.service.write(Command::Touch { session: self.session, now: now() }).await;
                    match touched {
                        Err(e) if e.code == ErrorCode::Unauthenticated => {
                            self.ended = true;
                            return Some(Event::SessionEnded { reason: EndReason::Expired });
                        }
                        // Refused for now (no leader, a full disk): the subscription goes
                        // on, and the touch is tried again soon.
                        Err(e) => {
                            tracing::warn!(code = ?e.code, "could not touch a subscribed session; retrying");
                            self.touch.reset_after(self.touch_retry);
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}

impl SessionEvents {
    /// After an installed snapshot replaced the state, messages may have arrived that were
    /// never pushed: replays the inbox after the last message this subscription sent, up to
    /// the newest now, and skips live messages up to there, exactly as a new subscription
    /// `after` that id would. Only called once the replay has caught up, so that what it
    /// sent is exactly the inbox up to `live_through`. `false` if the stream must end: the
    /// session is gone (its end may be in what the snapshot covered), or the state cannot
    /// be read now; either way the client resubscribes and learns which.
    async fn resume_after_state_replaced(&mut self) -> bool {
        let (account, session, now) = (self.account, self.session, now());
        let newest = self
            .service
            .read(move |t| {
                query::authenticate(t, &session, now)?;
                Ok::<_, QueryError>(query::last_inbox_id(t, account)?)
            })
            .await;
        let Ok(newest) = newest else {
            return false;
        };
        if newest > self.live_through {
            self.replay = Some(Replay {
                cursor: self.live_through,
                through: newest,
                unread_only: false,
            });
            self.skip_through = self.skip_through.max(newest);
            self.live_through = newest;
        }
        true
    }
}

/// What a subscription still has to replay before it goes live: inbox messages after
/// `cursor` up to `through` (the newest when it started, or when the state was replaced),
/// all of them or only the unread ones.
#[derive(Clone, Copy, Debug)]
struct Replay {
    cursor: MessageId,
    through: MessageId,
    unread_only: bool,
}

/// Delivery notes not yet written: message ids per account, merged, bounded in number
/// ([`MAX_PENDING_DELIVERIES`]). A note stays until its `MarkDelivered` applies; a refused
/// write puts its ids back.
#[derive(Default)]
struct PendingDeliveries {
    state: Mutex<Pending>,
    /// Wakes `record_deliveries` when a note arrives.
    added: Notify,
}

#[derive(Default)]
struct Pending {
    ids: BTreeMap<AccountId, BTreeSet<MessageId>>,
    count: usize,
    /// Notes dropped because the set was full, not yet reported.
    dropped: u64,
}

impl PendingDeliveries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Every update leaves the set consistent before anything that could panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, account: AccountId, id: MessageId) {
        let mut pending = self.lock();
        if pending.count >= MAX_PENDING_DELIVERIES {
            pending.dropped += 1;
            return;
        }
        if pending.ids.entry(account).or_default().insert(id) {
            pending.count += 1;
        }
        drop(pending);
        self.added.notify_one();
    }

    /// Puts back the ids of a refused write. Not bounded by the limit: they were counted
    /// before they were taken, and a round takes at most [`DELIVERY_ROUND`].
    fn put_back(&self, account: AccountId, ids: &[MessageId]) {
        let mut pending = self.lock();
        let set = pending.ids.entry(account).or_default();
        let before = set.len();
        set.extend(ids.iter().copied());
        let added = set.len() - before;
        pending.count += added;
    }

    /// Takes at most `limit` ids, account by account, and the count of notes dropped
    /// since the last call.
    fn take(&self, limit: usize) -> (Vec<(AccountId, Vec<MessageId>)>, u64) {
        let mut pending = self.lock();
        let mut taken = Vec::new();
        let mut size = 0;
        while size < limit {
            let Some(mut entry) = pending.ids.first_entry() else {
                break;
            };
            let account = *entry.key();
            let room = limit - size;
            let ids: Vec<MessageId> = if entry.get().len() <= room {
                entry.remove().into_iter().collect()
            } else {
                (0..room)
                    .filter_map(|_| entry.get_mut().pop_first())
                    .collect()
            };
            size += ids.len();
            taken.push((account, ids));
        }
        pending.count -= size;
        (taken, std::mem::take(&mut pending.dropped))
    }

    fn is_empty(&self) -> bool {
        self.lock().count == 0
    }
}

/// Writes delivery notes as `MarkDelivered` commands: one log entry per round, however many
/// messages were pushed meanwhile. A write refused for now (no leader, a full disk) is tried
/// again with a growing delay until it applies; one that is moot (the account or the
/// message is gone) applies as a no-op. Ends with the service.
async fn record_deliveries(service: std::sync::Weak<Service>, pending: Arc<PendingDeliveries>) {
    let mut retry = DELIVERY_RETRY_FIRST;
    loop {
        if pending.is_empty() {
            pending.added.notified().await;
        }
        // Wait a moment before proposing: more deliveries join this batch, and its log entry
        // (with its fsync) stops sitting in front of every next send. A delivered receipt
        // is a little later; a send is not.
        tokio::time::sleep(DELIVERY_BATCH_DELAY).await;
        let (batch, dropped) = pending.take(DELIVERY_ROUND);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                limit = MAX_PENDING_DELIVERIES,
                "too many delivery marks waiting: these messages stay `sent` until fetched"
            );
        }
        let Some(service) = service.upgrade() else {
            return;
        };
        // Proposed all at once, so that the proposer puts them in one log entry: one
        // fsync for the whole batch, not one per account.
        let now = now();
        let commands: Vec<(AccountId, Vec<MessageId>)> = batch
            .into_iter()
            .flat_map(|(account, ids)| {
                ids.chunks(validate::MAX_IDS)
                    .map(|chunk| (account, chunk.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let writes = commands.iter().map(|(account, ids)| {
            service.node.write(Command::MarkDelivered {
                account: *account,
                ids: ids.clone(),
                now,
            })
        });
        let mut refused = false;
        for ((account, ids), result) in commands.iter().zip(futures::future::join_all(writes).await)
        {
            match result {
                Ok(_) => {}
                Err(err) if is_transient(&err) => {
                    tracing::debug!(%err, "delivery marks refused for now; retrying");
                    pending.put_back(*account, ids);
                    refused = true;
                }
                Err(err) => {
                    tracing::error!(%err, count = ids.len(), "could not record deliveries");
                }
            }
        }
        drop(service);
        if refused {
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(DELIVERY_RETRY_MAX);
        } else {
            retry = DELIVERY_RETRY_FIRST;
        }
    }
}

/// Whether a write refused with `err` may apply if tried again later: no leader now, or
/// a full disk.
fn is_transient(err: &NodeError) -> bool {
    matches!(
        err,
        NodeError::NotLeader { .. }
            | NodeError::Unavailable(_)
            | NodeError::Store(corvid_store::StoreError::StorageFull { .. })
    )
}

/// The one mapping of node faults to client errors.
fn fault(err: NodeError) -> ApiError {
    match err {
        // The client's next attempt goes to the leader, over whichever protocol it speaks.
        NodeError::NotLeader { leader } => {
            ApiError::not_leader(leader.map(|(_, member)| LeaderAddrs {
                wire: member.client.wire,
                grpc: member.client.grpc,
            }))
        }
        NodeError::Store(corvid_store::StoreError::StorageFull { .. }) => {
            ErrorCode::StorageFull.into()
        }
        NodeError::Unavailable(reason) => {
            tracing::warn!(%reason, "service unavailable");
            ErrorCode::Unavailable.into()
        }
        other => {
            tracing::error!(err = %other, "node fault");
            ErrorCode::Internal.into()
        }
    }
}

fn storage_fault(fault: corvid_core::StorageFault) -> ApiError {
    tracing::error!(%fault, "read failed");
    ErrorCode::Internal.into()
}

fn unexpected(outcome: Outcome) -> ApiError {
    tracing::error!(?outcome, "unexpected outcome");
    ErrorCode::Internal.into()
}

fn new_token() -> Token {
    let mut bytes = [0u8; 16];
    corvid_store::replay::fill_random(&mut bytes);
    Token(bytes)
}

/// Wall-clock milliseconds, stamped into commands by the server that proposes them.
pub fn now() -> Timestamp {
    corvid_store::replay::unix_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_store::{ClientAddrs, Member};

    #[test]
    fn not_leader_names_the_leaders_client_addresses() {
        let leader = Member {
            raft_addr: "10.0.0.2:7000".into(),
            client: ClientAddrs {
                wire: Some("10.0.0.2:7070".into()),
                grpc: Some("10.0.0.2:7071".into()),
                http: None,
            },
        };
        let error = fault(NodeError::NotLeader {
            leader: Some((2, leader)),
        });
        assert_eq!(error.code, ErrorCode::NotLeader);
        assert_eq!(
            error.leader,
            Some(LeaderAddrs {
                wire: Some("10.0.0.2:7070".into()),
                grpc: Some("10.0.0.2:7071".into()),
            })
        );
        let unknown = fault(NodeError::NotLeader { leader: None });
        assert_eq!((unknown.code, unknown.leader), (ErrorCode::NotLeader, None));
    }
}
