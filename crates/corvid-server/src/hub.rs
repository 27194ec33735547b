//! The push hub: which sessions are listening on this server, and delivery of the state
//! machine's effects to them.
//!
//! Every server applies every command, and each pushes to the clients connected to it, so
//! the hub is local state: it is never replicated. It is fed synchronously by the state
//! machine after each applied batch, so it never blocks: each subscriber has a queue bounded
//! in bytes, and a subscriber whose queue is full is dropped at once, its queued events
//! freed (its stream ends) and it resumes from its last message id when it resubscribes.
//! An account may hold only so many live subscriptions on this server.
//!
//! When an installed snapshot replaces the whole state, the effects of the entries it
//! covers were never emitted here: every subscriber is told so ([`Queued::StateReplaced`])
//! and rereads its inbox after the last message it delivered.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use corvid_core::{AccountId, Effect, Event, SessionKey};

/// How much the hub keeps for its subscribers (from `Limits`).
#[derive(Clone, Copy, Debug)]
pub struct HubLimits {
    /// Bytes of events queued for one subscriber before it counts as too slow.
    pub queue_bytes: usize,
    /// Live subscriptions one account may hold on this server.
    pub subscriptions_per_account: usize,
}

impl Default for HubLimits {
    fn default() -> HubLimits {
        let limits = crate::config::Limits::default();
        HubLimits {
            queue_bytes: limits.subscriber_queue_bytes,
            subscriptions_per_account: limits.max_subscriptions_per_account,
        }
    }
}

/// The account already holds as many live subscriptions as allowed.
#[derive(Debug, thiserror::Error)]
#[error("the account already has {0} live subscriptions on this server")]
pub struct TooManySubscriptions(pub usize);

/// What an event costs its queue: the event itself plus the text it owns. Close enough to
/// the allocator's view to bound memory, and cheap to compute.
pub fn event_bytes(event: &Event) -> usize {
    let owned = match event {
        Event::Message(message) => message.text.len() + message.from.len() + message.to.len(),
        Event::Receipt { .. } | Event::SessionEnded { .. } => 0,
    };
    std::mem::size_of::<Event>() + owned
}

/// What a subscriber takes from its queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Queued {
    Event(Event),
    /// The state was replaced by an installed snapshot since the subscriber last looked:
    /// messages may have arrived that were never pushed. It comes before any event still
    /// queued, which is fine: those events were applied before the snapshot's state, so the
    /// subscriber's reread covers them too.
    StateReplaced,
}

/// One subscriber's events, bounded in bytes. The hub pushes without waiting; the
/// subscription takes them one at a time.
pub struct EventQueue {
    state: Mutex<QueueState>,
    max_bytes: usize,
    /// Wakes the subscription when an event arrives or the queue closes.
    ready: Notify,
    /// Cancelled when the subscriber is dropped for falling behind.
    fell_behind: CancellationToken,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<Event>,
    bytes: usize,
    closed: bool,
    /// The state was replaced since the subscriber last took from the queue. One flag,
    /// not a queued item: however many snapshots are installed, one reread covers them.
    state_replaced: bool,
}

/// Why an event could not be queued.
enum PushError {
    Full,
    Closed,
}

/// Queue capacity (in events) kept after the queue empties; a burst's larger buffer is
/// given back.
const KEPT_CAPACITY: usize = 16;

impl EventQueue {
    fn new(max_bytes: usize) -> EventQueue {
        EventQueue {
            state: Mutex::new(QueueState::default()),
            max_bytes,
            ready: Notify::new(),
            fell_behind: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // Every update of the state is complete before any call that could panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, event: Event) -> Result<(), PushError> {
        let size = event_bytes(&event);
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        // One event is always taken into an empty queue, whatever its size, so that a
        // message as large as the server allows still reaches a subscriber that keeps up.
        if !state.events.is_empty() && state.bytes + size > self.max_bytes {
            return Err(PushError::Full);
        }
        state.bytes += size;
        state.events.push_back(event);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Tells the subscriber that the state was replaced (see [`Queued::StateReplaced`]).
    fn mark_state_replaced(&self) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.state_replaced = true;
        drop(state);
        self.ready.notify_one();
    }

    /// Ends the queue. Events already queued are still taken (a `SessionEnded` must reach
    /// its client), unless the subscriber fell behind: then they are freed at once, since
    /// the subscriber resumes from its last id anyway, and nothing else may hold them
    /// while its stream waits for a client that does not read.
    fn close(&self, fell_behind: bool) {
        let mut state = self.lock();
        state.closed = true;
        if fell_behind {
            state.events = VecDeque::new();
            state.bytes = 0;
        }
        drop(state);
        if fell_behind {
            self.fell_behind.cancel();
        }
        self.ready.notify_one();
    }

    /// The next event, or the notice that the state was replaced; `None` once the queue is
    /// closed and empty.
    pub async fn recv(&self) -> Option<Queued> {
        loop {
            {
                let mut state = self.lock();
                if std::mem::take(&mut state.state_replaced) {
                    return Some(Queued::StateReplaced);
                }
                if let Some(event) = state.events.pop_front() {
                    state.bytes -= event_bytes(&event);
                    if state.events.is_empty() && state.events.capacity() > KEPT_CAPACITY {
                        state.events.shrink_to(KEPT_CAPACITY);
                    }
                    return Some(Queued::Event(event));
                }
                if state.closed {
                    return None;
                }
            }
            // A push between the check above and this wait stores a permit in `ready`,
            // so it is not missed.
            self.ready.notified().await;
        }
    }

    /// Completes when the hub dropped this subscriber for falling behind.
    pub fn fell_behind(&self) -> WaitForCancellationFutureOwned {
        self.fell_behind.clone().cancelled_owned()
    }

    /// Bytes of events queued now.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

struct Subscriber {
    id: u64,
    session: SessionKey,
    username: String,
    queue: Arc<EventQueue>,
}

/// Ordered maps, so that what is done to every subscriber (a replaced state) happens in
/// the same order every time: a replayed simulation depends on it (`corvid_store::replay`).
#[derive(Default)]
struct Registry {
    by_account: BTreeMap<AccountId, Vec<Subscriber>>,
    /// Live subscriptions per folded username, for the `online` flag of listings.
    online: BTreeMap<String, usize>,
}

#[derive(Default)]
pub struct Hub {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    limits: HubLimits,
    metrics: crate::metrics::Metrics,
}

/// A live subscription's place in the hub. Dropping it ends the subscription.
pub struct Registration {
    hub: Arc<Hub>,
    account: AccountId,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.account, self.id);
    }
}

/// Why a subscriber leaves the hub.
#[derive(Clone, Copy)]
enum Removal {
    /// Its session ended: the events queued (the last is `SessionEnded`) still go out.
    SessionEnded,
    /// Its queue was full: the events queued are dropped with it.
    FellBehind,
}

impl Hub {
    pub fn new(limits: HubLimits) -> Hub {
        Hub {
            limits,
            ..Hub::default()
        }
    }

    /// Counts pushed messages and dropped subscribers in `metrics`.
    pub fn with_metrics(self, metrics: crate::metrics::Metrics) -> Hub {
        Hub { metrics, ..self }
    }

    /// Registers a listener for `account` through `session`; returns the event queue and a
    /// registration that ends the subscription when dropped.
    pub fn subscribe(
        self: &Arc<Hub>,
        account: AccountId,
        session: SessionKey,
        username: &str,
    ) -> Result<(Registration, Arc<EventQueue>), TooManySubscriptions> {
        let queue = Arc::new(EventQueue::new(self.limits.queue_bytes));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let folded = corvid_core::validate::fold(username);
        let mut registry = self.lock();
        let subscribers = registry.by_account.entry(account).or_default();
        if subscribers.len() >= self.limits.subscriptions_per_account {
            return Err(TooManySubscriptions(subscribers.len()));
        }
        subscribers.push(Subscriber {
            id,
            session,
            username: folded.clone(),
            queue: queue.clone(),
        });
        *registry.online.entry(folded).or_default() += 1;
        let registration = Registration {
            hub: self.clone(),
            account,
            id,
        };
        Ok((registration, queue))
    }

    /// The folded names of the users with a live subscription here, for the other servers
    /// of a cluster.
    pub fn online_usernames(&self) -> Vec<String> {
        self.lock().online.keys().cloned().collect()
    }

    /// Whether any session of the user with this (folded or typed) name listens here now.
    pub fn is_online(&self, username: &str) -> bool {
        self.lock()
            .online
            .contains_key(&corvid_core::validate::fold(username))
    }

    /// Number of live subscriptions on this server.
    pub fn subscribers(&self) -> usize {
        self.lock().by_account.values().map(Vec::len).sum()
    }

    /// Hands effects of applied commands to the local subscribers they concern.
    pub fn dispatch(&self, effects: &[Effect]) {
        let mut registry = self.lock();
        let mut dropped = Vec::new();
        let mut pushed = 0;
        for effect in effects {
            match effect {
                Effect::Message { to, message } => {
                    pushed += push(
                        &mut registry,
                        *to,
                        |_| Some(Event::Message(message.clone())),
                        &mut dropped,
                    );
                }
                Effect::Receipt { to, id, status } => {
                    push(
                        &mut registry,
                        *to,
                        |_| {
                            Some(Event::Receipt {
                                id: *id,
                                status: *status,
                            })
                        },
                        &mut dropped,
                    );
                }
                Effect::SessionEnded {
                    account,
                    session,
                    reason,
                } => {
                    // Tell the session's streams why, then end them.
                    push(
                        &mut registry,
                        *account,
                        |s| {
                            (s.session == *session)
                                .then_some(Event::SessionEnded { reason: *reason })
                        },
                        &mut dropped,
                    );
                    if let Some(subs) = registry.by_account.get(account) {
                        dropped.extend(
                            subs.iter()
                                .filter(|s| s.session == *session)
                                .map(|s| (*account, s.id, Removal::SessionEnded)),
                        );
                    }
                }
                Effect::StateReplaced => {
                    for subscriber in registry.by_account.values().flatten() {
                        subscriber.queue.mark_state_replaced();
                    }
                }
            }
        }
        self.metrics.messages_pushed(pushed);
        for (account, id, removal) in dropped {
            if matches!(removal, Removal::FellBehind) {
                self.metrics.push_queue_drop();
            }
            remove(&mut registry, account, id, removal);
        }
    }

    fn unregister(&self, account: AccountId, id: u64) {
        remove(&mut self.lock(), account, id, Removal::SessionEnded);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves the maps consistent (every update is one
        // statement), so a poisoned lock is still safe to use.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn push(
    registry: &mut Registry,
    account: AccountId,
    event_for: impl Fn(&Subscriber) -> Option<Event>,
    dropped: &mut Vec<(AccountId, u64, Removal)>,
) -> u64 {
    let Some(subs) = registry.by_account.get(&account) else {
        return 0;
    };
    let mut queued = 0;
    for sub in subs {
        if let Some(event) = event_for(sub) {
            if sub.queue.push(event).is_err() {
                // Full (too slow) or closed: end this subscription; the client resumes later.
                dropped.push((account, sub.id, Removal::FellBehind));
            } else {
                queued += 1;
            }
        }
    }
    queued
}

fn remove(registry: &mut Registry, account: AccountId, id: u64, removal: Removal) {
    let Some(subs) = registry.by_account.get_mut(&account) else {
        return;
    };
    let Some(index) = subs.iter().position(|s| s.id == id) else {
        return;
    };
    let sub = subs.swap_remove(index);
    sub.queue.close(matches!(removal, Removal::FellBehind));
    if subs.is_empty() {
        registry.by_account.remove(&account);
    }
    if let Some(count) = registry.online.get_mut(&sub.username) {
        *count -= 1;
        if *count == 0 {
            registry.online.remove(&sub.username);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_core::{EndReason, Message, MessageId, ReceiptStatus};
    use futures::FutureExt;

    fn message(id: u64) -> Message {
        message_of(id, 1)
    }

    fn message_of(id: u64, text_bytes: usize) -> Message {
        Message {
            id: MessageId(id),
            from: "a".into(),
            to: "b".into(),
            text: "t".repeat(text_bytes),
            sent_at: 0,
            status: ReceiptStatus::Sent,
        }
    }

    /// The next event if one is queued now; `Some(None)` when the queue has ended.
    fn next_now(queue: &EventQueue) -> Option<Option<Event>> {
        queue.recv().now_or_never().map(|queued| {
            queued.map(|queued| match queued {
                Queued::Event(event) => event,
                Queued::StateReplaced => panic!("the state was not replaced"),
            })
        })
    }

    fn subscribe(
        hub: &Arc<Hub>,
        account: u64,
        session: u8,
        name: &str,
    ) -> (Registration, Arc<EventQueue>) {
        hub.subscribe(AccountId(account), SessionKey([session; 32]), name)
            .expect("room for a subscription")
    }

    #[test]
    fn messages_reach_every_session_of_the_recipient_only() {
        let hub = Arc::new(Hub::default());
        let (_r1, phone) = subscribe(&hub, 2, 1, "Bob");
        let (_r2, laptop) = subscribe(&hub, 2, 2, "bob");
        let (_r3, other) = subscribe(&hub, 3, 3, "carol");
        hub.dispatch(&[Effect::Message {
            to: AccountId(2),
            message: message(1),
        }]);
        assert_eq!(next_now(&phone), Some(Some(Event::Message(message(1)))));
        assert_eq!(next_now(&laptop), Some(Some(Event::Message(message(1)))));
        assert_eq!(next_now(&other), None);
        assert!(hub.is_online("BOB"));
    }

    #[test]
    fn ending_a_session_tells_it_why_and_closes_only_it() {
        let hub = Arc::new(Hub::default());
        let (_r1, old) = subscribe(&hub, 2, 1, "bob");
        let (_r2, new) = subscribe(&hub, 2, 2, "bob");
        hub.dispatch(&[Effect::SessionEnded {
            account: AccountId(2),
            session: SessionKey([1; 32]),
            reason: EndReason::ReplacedByNewLogin,
        }]);
        assert_eq!(
            next_now(&old),
            Some(Some(Event::SessionEnded {
                reason: EndReason::ReplacedByNewLogin
            }))
        );
        assert_eq!(next_now(&old), Some(None));
        hub.dispatch(&[Effect::Message {
            to: AccountId(2),
            message: message(5),
        }]);
        assert_eq!(next_now(&new), Some(Some(Event::Message(message(5)))));
        assert_eq!(hub.subscribers(), 1);
    }

    #[test]
    fn a_slow_subscriber_is_dropped_with_its_queue_freed_and_presence_follows_registrations() {
        let fits = 10;
        let hub = Arc::new(Hub::new(HubLimits {
            queue_bytes: fits * event_bytes(&Event::Message(message(0))),
            subscriptions_per_account: 4,
        }));
        let (registration, slow) = subscribe(&hub, 2, 1, "bob");
        for id in 0..fits as u64 {
            hub.dispatch(&[Effect::Message {
                to: AccountId(2),
                message: message(id),
            }]);
        }
        assert_eq!(hub.subscribers(), 1);
        assert!(slow.fell_behind().now_or_never().is_none());
        hub.dispatch(&[Effect::Message {
            to: AccountId(2),
            message: message(fits as u64),
        }]);
        assert_eq!(hub.subscribers(), 0);
        assert!(!hub.is_online("bob"));
        // What was queued is gone at once: the stream ends, and the client resumes with
        // `after` from the last message it saw.
        assert_eq!(slow.queued_bytes(), 0);
        assert!(slow.fell_behind().now_or_never().is_some());
        assert_eq!(next_now(&slow), Some(None));
        drop(registration);
        let (registration, _queue) = subscribe(&hub, 2, 1, "bob");
        assert!(hub.is_online("bob"));
        drop(registration);
        assert!(!hub.is_online("bob"));
    }

    #[test]
    fn a_queue_is_bounded_in_bytes_whatever_the_number_of_events() {
        let hub = Arc::new(Hub::new(HubLimits {
            queue_bytes: 64 * 1024,
            subscriptions_per_account: 4,
        }));
        let (_registration, queue) = subscribe(&hub, 2, 1, "bob");
        let mut accepted = 0;
        for id in 0..4096 {
            hub.dispatch(&[Effect::Message {
                to: AccountId(2),
                message: message_of(id, 4096),
            }]);
            if hub.subscribers() == 0 {
                break;
            }
            accepted += 1;
        }
        assert!(
            (1..16).contains(&accepted),
            "{accepted} messages of 4 KiB in a queue of 64 KiB"
        );
        // A single event larger than the whole queue still reaches a subscriber that keeps
        // up: it is taken into an empty queue.
        let (_registration, queue_2) = subscribe(&hub, 3, 2, "carol");
        hub.dispatch(&[Effect::Message {
            to: AccountId(3),
            message: message_of(1, 100 * 1024),
        }]);
        assert!(matches!(next_now(&queue_2), Some(Some(Event::Message(_)))));
        assert_eq!(next_now(&queue), Some(None));
    }

    #[test]
    fn every_subscriber_hears_once_that_the_state_was_replaced_before_its_queued_events() {
        let hub = Arc::new(Hub::default());
        let (_r1, bob) = subscribe(&hub, 2, 1, "bob");
        let (_r2, carol) = subscribe(&hub, 3, 2, "carol");
        hub.dispatch(&[Effect::Message {
            to: AccountId(2),
            message: message(1),
        }]);
        hub.dispatch(&[Effect::StateReplaced]);
        hub.dispatch(&[Effect::StateReplaced]);
        assert_eq!(bob.recv().now_or_never(), Some(Some(Queued::StateReplaced)));
        assert_eq!(next_now(&bob), Some(Some(Event::Message(message(1)))));
        assert_eq!(next_now(&bob), None);
        assert_eq!(
            carol.recv().now_or_never(),
            Some(Some(Queued::StateReplaced))
        );
        assert_eq!(next_now(&carol), None);
    }

    #[test]
    fn an_account_holds_at_most_its_share_of_subscriptions() {
        let hub = Arc::new(Hub::new(HubLimits {
            queue_bytes: 64 * 1024,
            subscriptions_per_account: 2,
        }));
        let (first, _) = subscribe(&hub, 2, 1, "bob");
        let (_second, _) = subscribe(&hub, 2, 2, "bob");
        assert!(hub
            .subscribe(AccountId(2), SessionKey([3; 32]), "bob")
            .is_err());
        // Other accounts are not affected, and a slot is free again once one ends.
        let (_carol, _) = subscribe(&hub, 3, 1, "carol");
        drop(first);
        let (_third, _) = subscribe(&hub, 2, 3, "bob");
        assert_eq!(hub.subscribers(), 3);
    }
}
