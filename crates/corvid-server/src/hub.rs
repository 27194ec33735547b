//! The push hub: which sessions are listening on this server, and delivery of the state
//! machine's effects to them.
//!
//! Every server applies every command, and each pushes to the clients connected to it, so
//! the hub is local state: it is never replicated. It is fed synchronously by the state
//! machine after each applied batch, so it never blocks: a subscriber whose queue is full is
//! dropped (its connection closes) and resumes from its last message id when it reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

use corvid_core::{AccountId, Effect, Event, SessionKey};

/// Events queued for one subscriber before it counts as too slow. Events are queued boxed:
/// the queue allocates its slots in blocks up front, and a boxed slot is 8 bytes instead of
/// a whole `Event`, which matters with tens of thousands of idle subscribers.
pub const SUBSCRIBER_QUEUE: usize = 4096;

struct Subscriber {
    id: u64,
    session: SessionKey,
    username: String,
    events: mpsc::Sender<Box<Event>>,
}

#[derive(Default)]
struct Registry {
    by_account: HashMap<AccountId, Vec<Subscriber>>,
    /// Live subscriptions per folded username, for the `online` flag of listings.
    online: HashMap<String, usize>,
}

#[derive(Default)]
pub struct Hub {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
}

/// A live subscription's place in the hub. Dropping it ends the subscription.
pub struct Registration {
    hub: std::sync::Arc<Hub>,
    account: AccountId,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.account, self.id);
    }
}

impl Hub {
    /// Registers a listener for `account` through `session`; returns the event queue and a
    /// registration that ends the subscription when dropped.
    pub fn subscribe(
        self: &std::sync::Arc<Hub>,
        account: AccountId,
        session: SessionKey,
        username: &str,
    ) -> (Registration, mpsc::Receiver<Box<Event>>) {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let folded = corvid_core::validate::fold(username);
        let mut registry = self.lock();
        registry
            .by_account
            .entry(account)
            .or_default()
            .push(Subscriber {
                id,
                session,
                username: folded.clone(),
                events: tx,
            });
        *registry.online.entry(folded).or_default() += 1;
        (
            Registration {
                hub: self.clone(),
                account,
                id,
            },
            rx,
        )
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
        for effect in effects {
            match effect {
                Effect::Message { to, message } => push(
                    &mut registry,
                    *to,
                    |_| Some(Event::Message(message.clone())),
                    &mut dropped,
                ),
                Effect::Receipt { to, id, status } => push(
                    &mut registry,
                    *to,
                    |_| {
                        Some(Event::Receipt {
                            id: *id,
                            status: *status,
                        })
                    },
                    &mut dropped,
                ),
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
                                .map(|s| (*account, s.id)),
                        );
                    }
                }
            }
        }
        for (account, id) in dropped {
            remove(&mut registry, account, id);
        }
    }

    fn unregister(&self, account: AccountId, id: u64) {
        remove(&mut self.lock(), account, id);
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
    dropped: &mut Vec<(AccountId, u64)>,
) {
    let Some(subs) = registry.by_account.get(&account) else {
        return;
    };
    for sub in subs {
        if let Some(event) = event_for(sub) {
            if sub.events.try_send(Box::new(event)).is_err() {
                // Full (too slow) or closed: end this subscription; the client resumes later.
                dropped.push((account, sub.id));
            }
        }
    }
}

fn remove(registry: &mut Registry, account: AccountId, id: u64) {
    let Some(subs) = registry.by_account.get_mut(&account) else {
        return;
    };
    let Some(index) = subs.iter().position(|s| s.id == id) else {
        return;
    };
    let sub = subs.swap_remove(index);
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
    use std::sync::Arc;

    fn message(id: u64) -> Message {
        Message {
            id: MessageId(id),
            from: "a".into(),
            to: "b".into(),
            text: "t".into(),
            sent_at: 0,
            status: ReceiptStatus::Sent,
        }
    }

    #[test]
    fn messages_reach_every_session_of_the_recipient_only() {
        let hub = Arc::new(Hub::default());
        let (_r1, mut phone) = hub.subscribe(AccountId(2), SessionKey([1; 32]), "Bob");
        let (_r2, mut laptop) = hub.subscribe(AccountId(2), SessionKey([2; 32]), "bob");
        let (_r3, mut other) = hub.subscribe(AccountId(3), SessionKey([3; 32]), "carol");
        hub.dispatch(&[Effect::Message {
            to: AccountId(2),
            message: message(1),
        }]);
        assert_eq!(*phone.try_recv().unwrap(), Event::Message(message(1)));
        assert_eq!(*laptop.try_recv().unwrap(), Event::Message(message(1)));
        assert!(other.try_recv().is_err());
        assert!(hub.is_online("BOB"));
    }

    #[test]
    fn ending_a_session_tells_it_why_and_closes_only_it() {
        let hub = Arc::new(Hub::default());
        let (_r1, mut old) = hub.subscribe(AccountId(2), SessionKey([1; 32]), "bob");
        let (_r2, mut new) = hub.subscribe(AccountId(2), SessionKey([2; 32]), "bob");
        hub.dispatch(&[Effect::SessionEnded {
            account: AccountId(2),
            session: SessionKey([1; 32]),
            reason: EndReason::ReplacedByNewLogin,
        }]);
        assert_eq!(
            *old.try_recv().unwrap(),
            Event::SessionEnded {
                reason: EndReason::ReplacedByNewLogin
            }
        );
        assert!(matches!(
            old.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        hub.dispatch(&[Effect::Message {
            to: AccountId(2),
            message: message(5),
        }]);
        assert_eq!(*new.try_recv().unwrap(), Event::Message(message(5)));
        assert_eq!(hub.subscribers(), 1);
    }

    #[test]
    fn a_slow_subscriber_is_dropped_and_presence_follows_registrations() {
        let hub = Arc::new(Hub::default());
        let (registration, mut slow) = hub.subscribe(AccountId(2), SessionKey([1; 32]), "bob");
        for id in 0..SUBSCRIBER_QUEUE as u64 + 1 {
            hub.dispatch(&[Effect::Message {
                to: AccountId(2),
                message: message(id),
            }]);
        }
        assert_eq!(hub.subscribers(), 0);
        assert!(!hub.is_online("bob"));
        let mut received = 0;
        while slow.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, SUBSCRIBER_QUEUE);
        drop(registration);
        let (registration, _rx) = hub.subscribe(AccountId(2), SessionKey([1; 32]), "bob");
        assert!(hub.is_online("bob"));
        drop(registration);
        assert!(!hub.is_online("bob"));
    }
}
