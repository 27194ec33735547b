//! Pushed events: where connections hand them in, the subscription they belong to, and the
//! [`Events`] stream a user reads them from.
//!
//! The router outlives connections. It remembers the live subscription (its token and the
//! newest message id delivered), so that after a failover the client can subscribe again
//! on the next server from exactly where it stopped, and it drops a replayed message it has
//! already delivered: nothing missed, nothing twice.

use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use corvid_core::{Event, MessageId, SubscribeFrom, Token};
use tokio::sync::mpsc;

use crate::{Client, ClientError};

/// What an [`Events`] stream yields: an event, or the error that ended the subscription.
pub type EventItem = Result<Event, ClientError>;

/// The live subscription, as needed to resume it elsewhere.
#[derive(Clone, Copy, Debug)]
struct SubscriptionState {
    token: Token,
    /// Where to resume: after the newest message id delivered (or the id the subscription
    /// started after), or, before any was delivered, the start it was asked with.
    from: SubscribeFrom,
    /// Tells this subscription from an earlier one, so an old keeper task stops.
    generation: u64,
}

struct RouterState {
    sink: mpsc::UnboundedSender<EventItem>,
    /// The receiving end of `sink` while no one has taken it.
    waiting: Option<mpsc::UnboundedReceiver<EventItem>>,
    subscription: Option<SubscriptionState>,
    next_generation: u64,
}

/// Shared by the client and every connection task.
pub(crate) struct EventRouter {
    state: Mutex<RouterState>,
}

impl EventRouter {
    pub(crate) fn new() -> EventRouter {
        let (sink, waiting) = mpsc::unbounded_channel();
        EventRouter {
            state: Mutex::new(RouterState {
                sink,
                waiting: Some(waiting),
                subscription: None,
                next_generation: 1,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RouterState> {
        // The state stays consistent even if a holder panicked: every update is one field.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The receiver for events from now on: the waiting one if no one took it yet,
    /// otherwise a new one (whose predecessor then ends).
    pub(crate) fn take_receiver(&self) -> mpsc::UnboundedReceiver<EventItem> {
        let mut state = self.lock();
        match state.waiting.take() {
            Some(receiver) => receiver,
            None => {
                let (sink, receiver) = mpsc::unbounded_channel();
                state.sink = sink;
                receiver
            }
        }
    }

    /// Called when the connection reads an event frame.
    pub(crate) fn deliver(&self, event: Event) {
        let mut state = self.lock();
        let ends = match &event {
            Event::Message(message) => {
                if let Some(subscription) = state.subscription.as_mut() {
                    if matches!(subscription.from, SubscribeFrom::After(after) if message.id <= after)
                    {
                        // Replayed after a resubscription, and already delivered.
                        return;
                    }
                    subscription.from = SubscribeFrom::After(message.id);
                }
                false
            }
            Event::Receipt { .. } => false,
            Event::SessionEnded { .. } => {
                state.subscription = None;
                true
            }
        };
        let _ = state.sink.send(Ok(event));
        if ends {
            close_stream(&mut state);
        }
    }

    /// Records a subscription about to be requested and returns its generation.
    pub(crate) fn start(&self, token: Token, from: SubscribeFrom) -> u64 {
        let mut state = self.lock();
        let generation = state.next_generation;
        state.next_generation += 1;
        state.subscription = Some(SubscriptionState {
            token,
            from,
            generation,
        });
        generation
    }

    /// The server confirmed subscription `generation`; `last_id` is its newest inbox id.
    ///
    /// A subscription that started from now replays nothing, so every message up to
    /// `last_id` counts as seen: a resubscription must not replay it. (One that replays
    /// keeps its start until a message is delivered: a resubscription before then asks
    /// for the same replay.)
    pub(crate) fn confirmed(&self, generation: u64, last_id: MessageId) {
        let mut state = self.lock();
        if let Some(subscription) = state.subscription.as_mut() {
            if subscription.generation == generation && subscription.from == SubscribeFrom::Now {
                subscription.from = SubscribeFrom::After(last_id);
            }
        }
    }

    /// Where subscription `generation` should resume, if it is still the live one.
    pub(crate) fn resume_point(&self, generation: u64) -> Option<(Token, SubscribeFrom)> {
        let state = self.lock();
        state
            .subscription
            .filter(|subscription| subscription.generation == generation)
            .map(|subscription| (subscription.token, subscription.from))
    }

    /// Ends subscription `generation` quietly (its request failed; the caller has the error).
    pub(crate) fn abandon(&self, generation: u64) {
        let mut state = self.lock();
        if state
            .subscription
            .is_some_and(|subscription| subscription.generation == generation)
        {
            state.subscription = None;
        }
    }

    /// Ends subscription `generation` because it could not be resumed: the reader of the
    /// stream gets `error`, then the end of the stream.
    pub(crate) fn fail(&self, generation: u64, error: ClientError) {
        let mut state = self.lock();
        if state
            .subscription
            .is_some_and(|subscription| subscription.generation == generation)
        {
            state.subscription = None;
            let _ = state.sink.send(Err(error));
            close_stream(&mut state);
        }
    }
}

/// Ends the current stream after what it already holds; later events wait for a new taker.
fn close_stream(state: &mut RouterState) {
    let (sink, waiting) = mpsc::unbounded_channel();
    state.sink = sink;
    state.waiting = Some(waiting);
}

/// Events pushed by the server, in the order they arrived.
///
/// Holds a [`Client`] so the connection stays open while the stream is read. A message
/// that the server replays after a failover is delivered only once. The stream ends after
/// [`Event::SessionEnded`], after an error (the subscription could not be resumed on any
/// server), or when another `events()` or `subscribe` call takes over the events.
pub struct Events {
    receiver: mpsc::UnboundedReceiver<EventItem>,
    _client: Client,
}

impl Events {
    pub(crate) fn new(receiver: mpsc::UnboundedReceiver<EventItem>, client: Client) -> Events {
        Events {
            receiver,
            _client: client,
        }
    }

    /// The next event; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<EventItem> {
        self.receiver.recv().await
    }
}

impl futures::Stream for Events {
    type Item = EventItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EventItem>> {
        self.receiver.poll_recv(cx)
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}
