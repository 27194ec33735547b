//! The [`Client`]: one connection at a time to one of several servers, with failover and
//! retries, and the subscription kept alive across failovers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use corvid_core::{MessageId, Request, Response, SubscribeFrom, Token};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, Protocol};
use crate::events::{EventRouter, Events};
use crate::tls::TlsConfig;
use crate::ClientError;

/// How a [`Client`] connects, waits and retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Server addresses (`host:port`), tried in order and then round-robin. With gRPC,
    /// these are the servers' gRPC addresses.
    pub servers: Vec<String>,
    /// The protocol: the binary protocol unless told otherwise.
    pub transport: Protocol,
    /// TLS to every server, checked against this CA; `None` for plain TCP.
    pub tls: Option<TlsConfig>,
    /// How long one attempt of a request may wait for its answer.
    pub request_timeout: Duration,
    /// How long a TCP connect plus handshake may take.
    pub connect_timeout: Duration,
    /// Attempts per request, the first included, across reconnections and servers.
    pub max_attempts: u32,
    /// The pause before the first retry; it doubles for each later one.
    pub initial_backoff: Duration,
    /// The longest pause between two attempts.
    pub max_backoff: Duration,
    /// The largest frame accepted from a server.
    pub max_frame_len: usize,
}

impl ClientConfig {
    /// The defaults for these servers: a 10 s request timeout, a 3 s connect timeout, and
    /// enough attempts to go round all servers twice (at least 8).
    pub fn new(servers: &[String]) -> ClientConfig {
        let rounds = u32::try_from(servers.len().saturating_mul(2)).unwrap_or(u32::MAX);
        ClientConfig {
            servers: servers.to_vec(),
            transport: Protocol::Wire,
            tls: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_attempts: rounds.max(8),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            // A page of 100 messages of the largest text a server may allow, with room.
            max_frame_len: 128 << 20,
        }
    }
}

/// A connection to a Corvid server (or cluster) over the binary protocol or gRPC
/// ([`ClientConfig::transport`]); the methods and their behaviour are the same.
///
/// Cheap to clone: clones share one connection, and every method takes `&self`, so many
/// calls can be in flight at once. When the connection drops, or a server answers
/// `not_leader`, `unavailable` or `too_many_connections`, a call reconnects to the next
/// server (round-robin, with backoff, at most [`ClientConfig::max_attempts`] times) and
/// retries; a `not_leader` that names the leader's address sends the next attempt there,
/// even if it is not in [`ClientConfig::servers`]. A request timeout counts as a lost
/// server when there is another to try. A
/// `rate_limited` answer is retried on the same connection after the backoff.
///
/// Retrying is safe: `send` carries a client message id that the server deduplicates, and
/// the other requests read, or set state to a value. What a retry cannot know is whether
/// a lost first attempt had already taken effect, so its *answer* may differ: a retried
/// `create_account` that did succeed answers `username_taken`, a retried `logout` or
/// `delete_account` answers `unauthenticated`, and retried `mark_read`/`delete_messages`
/// count only what was still left to do. A second `login` opens a second session.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: ClientConfig,
    link: Mutex<Link>,
    next_id: AtomicU32,
    pub(crate) router: Arc<EventRouter>,
}

/// The current connection, and which server to use next.
struct Link {
    current: Option<Arc<Connection>>,
    server: usize,
    /// The leader a `not_leader` answer named: the next connection goes there, once.
    leader: Option<String>,
}

impl Client {
    /// Connects to the first of `servers` that answers, with [`ClientConfig::new`].
    pub async fn connect(servers: &[String]) -> Result<Client, ClientError> {
        Client::connect_with(ClientConfig::new(servers)).await
    }

    /// Connects to the first server of `config.servers` that answers the handshake,
    /// trying each once in order; fails with the last server's error if none does.
    pub async fn connect_with(config: ClientConfig) -> Result<Client, ClientError> {
        if config.servers.is_empty() {
            return Err(ClientError::NoServers);
        }
        let router = Arc::new(EventRouter::new());
        let mut last_error = ClientError::NoServers;
        for (index, address) in config.servers.iter().enumerate() {
            match Connection::open(&config, address, router.clone()).await {
                Ok(connection) => {
                    let link = Link {
                        current: Some(Arc::new(connection)),
                        server: index,
                        leader: None,
                    };
                    return Ok(Client {
                        inner: Arc::new(Inner {
                            config,
                            link: Mutex::new(link),
                            next_id: AtomicU32::new(1),
                            router,
                        }),
                    });
                }
                Err(err) => {
                    tracing::debug!(%address, error = %err, "cannot connect");
                    last_error = err;
                }
            }
        }
        Err(last_error)
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The address of the server currently connected, if any.
    pub async fn server(&self) -> Option<String> {
        let link = self.inner.link.lock().await;
        link.current
            .as_ref()
            .filter(|connection| !connection.is_closed())
            .map(|connection| connection.address().to_string())
    }

    /// Sends `request` and waits for its answer, failing over and retrying as described on
    /// [`Client`]. A server's rejection is [`ClientError::Api`].
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        self.call_on(request).await.map(|(response, _)| response)
    }

    /// Like [`Client::call`], and also returns the connection that answered.
    async fn call_on(&self, request: Request) -> Result<(Response, Arc<Connection>), ClientError> {
        let config = &self.inner.config;
        let mut backoff = config.initial_backoff;
        let mut attempt = 1;
        loop {
            let error = match self.connection().await {
                Ok(connection) => {
                    let id = self.next_request_id();
                    match connection
                        .request(id, request.clone(), config.request_timeout)
                        .await
                    {
                        Ok(response) => return Ok((response, connection)),
                        Err(error) => {
                            // A server that does not answer in time is treated as lost when
                            // there is another to try; alone, it is only slow.
                            let timed_out_in_cluster =
                                matches!(error, ClientError::Timeout) && config.servers.len() > 1;
                            if error.is_failover() || timed_out_in_cluster {
                                let leader = error.leader(config.transport);
                                self.abandon(&connection, leader).await;
                            } else if !error.is_slow_down() {
                                return Err(error);
                            }
                            error
                        }
                    }
                }
                // Connecting failed; `connection` has moved on to the next server.
                Err(error) => error,
            };
            if attempt >= config.max_attempts {
                return Err(error);
            }
            tracing::debug!(attempt, %error, "retrying");
            attempt += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
    }

    /// A fresh request id: never 0, which is reserved for events.
    fn next_request_id(&self) -> u32 {
        loop {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// The live connection, opening one to the current server if there is none. On
    /// failure, the next call tries the next server.
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let config = &self.inner.config;
        let mut link = self.inner.link.lock().await;
        if let Some(connection) = &link.current {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
            // It dropped by itself: the server went away, so try the next one.
            link.current = None;
            link.server = (link.server + 1) % config.servers.len();
        }
        // A leader named by the last `not_leader` is tried once; if it cannot be reached,
        // the servers of the list are tried in turn, from where the round-robin stands.
        let redirected = link.leader.take();
        let address = redirected.as_ref().unwrap_or(&config.servers[link.server]);
        match Connection::open(config, address, self.inner.router.clone()).await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                link.current = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                tracing::debug!(%address, %error, "cannot connect");
                if redirected.is_none() {
                    link.server = (link.server + 1) % config.servers.len();
                }
                Err(error)
            }
        }
    }

    /// Gives up on `connection` (if it is still the current one) and moves to `leader`, if
    /// a `not_leader` answer named one, else to the next server.
    async fn abandon(&self, connection: &Arc<Connection>, leader: Option<String>) {
        let mut link = self.inner.link.lock().await;
        let is_current = link
            .current
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, connection));
        if is_current {
            link.current = None;
            link.server = (link.server + 1) % self.inner.config.servers.len();
            link.leader = leader;
        }
        connection.close();
    }

    /// The stream of events pushed to this client. Events that arrived before anyone asked
    /// wait in it; if a stream was already taken, that one ends and this one gets the
    /// events from now on.
    pub fn events(&self) -> Events {
        Events::new(self.inner.router.take_receiver(), self.clone())
    }

    /// Starts pushed events for the session of `token`. With `after` (the id of the last
    /// message this client saw), the server first replays every message received after
    /// it; with `None` (no saved position), every unread message. Then live messages
    /// follow, with no gap and no repeat. [`Client::subscribe_from`] has every start,
    /// including new messages only.
    pub async fn subscribe(
        &self,
        token: Token,
        after: Option<MessageId>,
    ) -> Result<Subscription, ClientError> {
        let from = after.map_or(SubscribeFrom::OldestUnread, SubscribeFrom::After);
        self.subscribe_from(token, from).await
    }

    /// Starts pushed events for the session of `token`, first replaying what `from`
    /// names: [`SubscribeFrom::After`] the id of the last message a client saw, or
    /// [`SubscribeFrom::OldestUnread`] for a client with no saved position. Either way,
    /// the replay and the live events meet with no gap and no repeat.
    ///
    /// The subscription follows the client through failovers: when the connection is lost,
    /// the client subscribes again on the next server, after the newest message already
    /// delivered (or, if none was yet, from the same start). If that fails, the stream
    /// yields the error and ends.
    pub async fn subscribe_from(
        &self,
        token: Token,
        from: SubscribeFrom,
    ) -> Result<Subscription, ClientError> {
        // The stream exists before the request leaves, so no event can be missed.
        let events = self.events();
        let router = &self.inner.router;
        let generation = router.start(token, from);
        let (response, connection) = match self.call_on(Request::Subscribe { token, from }).await {
            Ok(answer) => answer,
            Err(error) => {
                router.abandon(generation);
                return Err(error);
            }
        };
        let Response::Subscribed { last_id } = response else {
            router.abandon(generation);
            return Err(crate::calls::unexpected("subscribe", &response));
        };
        router.confirmed(generation, last_id);
        tokio::spawn(keep_subscribed(
            Arc::downgrade(&self.inner),
            generation,
            connection.subscription_ended(),
        ));
        Ok(Subscription { last_id, events })
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.inner.config.servers)
            .finish_non_exhaustive()
    }
}

/// A started subscription: the newest message id in the inbox when it started, and the
/// events from then on.
#[derive(Debug)]
pub struct Subscription {
    pub last_id: MessageId,
    pub events: Events,
}

/// Resubscribes each time the subscribed connection ends, until the subscription is over
/// or replaced, or the client is gone.
async fn keep_subscribed(inner: Weak<Inner>, generation: u64, mut closed: CancellationToken) {
    loop {
        closed.cancelled().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let client = Client { inner };
        let router = &client.inner.router;
        let Some((token, from)) = router.resume_point(generation) else {
            return;
        };
        match client.call_on(Request::Subscribe { token, from }).await {
            Ok((Response::Subscribed { .. }, connection)) => {
                tracing::debug!(server = connection.address(), "subscription resumed");
                closed = connection.subscription_ended();
            }
            Ok((response, _)) => {
                router.fail(generation, crate::calls::unexpected("subscribe", &response));
                return;
            }
            Err(error) => {
                router.fail(generation, error);
                return;
            }
        }
    }
}
