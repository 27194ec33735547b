//! Loss and duplicate accounting: every message names its sender, its sequence number, its
//! recipient and when it was sent, and the ledger counts what was acknowledged and what
//! arrived.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::Instant;

/// What a benchmark message says about itself. Its text is `cb <sender> <seq> <recipient>
/// <sent_ns>`, padded with `.` to the requested size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub sender: u32,
    pub seq: u32,
    pub recipient: u32,
    /// Nanoseconds since the run's epoch (an `Instant` of this process) when it was sent.
    pub sent_ns: u64,
}

impl Tag {
    /// The message text for this tag, at least `size` bytes long.
    pub fn text(&self, size: usize) -> String {
        let mut text = format!(
            "cb {} {} {} {}",
            self.sender, self.seq, self.recipient, self.sent_ns
        );
        if text.len() < size {
            text.extend(std::iter::repeat_n('.', size - text.len()));
        }
        text
    }

    /// The tag of a benchmark message text, or `None` for any other text.
    pub fn parse(text: &str) -> Option<Tag> {
        let mut fields = text.trim_end_matches('.').split(' ');
        if fields.next()? != "cb" {
            return None;
        }
        let tag = Tag {
            sender: fields.next()?.parse().ok()?,
            seq: fields.next()?.parse().ok()?,
            recipient: fields.next()?.parse().ok()?,
            sent_ns: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(tag)
    }

    /// A client message id unique per sender account and message: never 0.
    pub fn client_id(&self) -> u64 {
        (u64::from(self.sender) << 32) | (u64::from(self.seq) + 1)
    }
}

/// What was sent, acknowledged and received in one run. Shared by every task of the run.
pub struct Ledger {
    epoch: Instant,
    messages_per_sender: usize,
    /// Per `sender * messages_per_sender + seq`: how many times it arrived.
    arrivals: Vec<AtomicU8>,
    /// Per message: whether the server acknowledged its send.
    acked: Vec<AtomicBool>,
    /// Per recipient: acknowledged messages addressed to it.
    expected: Vec<AtomicU64>,
    /// Per recipient: distinct messages received.
    received: Vec<AtomicU64>,
    unique: AtomicU64,
    duplicates: AtomicU64,
    /// Arrivals whose tag is out of range or whose recipient is wrong.
    strays: AtomicU64,
    /// When the last distinct message arrived, in ns since the epoch.
    last_arrival_ns: AtomicU64,
    /// Messages stamped for sending and not arrived yet, and the most there ever were.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Woken at every first arrival.
    arrival: tokio::sync::Notify,
}

/// The ledger's verdict at the end of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub acked: u64,
    pub delivered: u64,
    /// Acknowledged and never received.
    pub lost: u64,
    /// Received more than once (each extra arrival counts one).
    pub duplicated: u64,
    /// Received by the wrong user, or not a message of this run.
    pub strays: u64,
}

impl Ledger {
    pub fn new(senders: usize, messages_per_sender: usize, recipients: usize) -> Ledger {
        let total = senders * messages_per_sender;
        Ledger {
            epoch: Instant::now(),
            messages_per_sender,
            arrivals: (0..total).map(|_| AtomicU8::new(0)).collect(),
            acked: (0..total).map(|_| AtomicBool::new(false)).collect(),
            expected: (0..recipients).map(|_| AtomicU64::new(0)).collect(),
            received: (0..recipients).map(|_| AtomicU64::new(0)).collect(),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            strays: AtomicU64::new(0),
            last_arrival_ns: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            arrival: tokio::sync::Notify::new(),
        }
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The tag for message `seq` of `sender` to `recipient`, stamped now.
    pub fn tag(&self, sender: usize, seq: usize, recipient: usize) -> Tag {
        let in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
        Tag {
            sender: sender as u32,
            seq: seq as u32,
            recipient: recipient as u32,
            sent_ns: self.now_ns(),
        }
    }

    fn slot(&self, tag: &Tag) -> Option<usize> {
        let seq = tag.seq as usize;
        (seq < self.messages_per_sender)
            .then(|| tag.sender as usize * self.messages_per_sender + seq)
            .filter(|slot| *slot < self.arrivals.len())
    }

    /// The server acknowledged the send of `tag`.
    pub fn acked(&self, tag: &Tag) {
        let Some(slot) = self.slot(tag) else { return };
        if !self.acked[slot].swap(true, Ordering::Relaxed) {
            if let Some(expected) = self.expected.get(tag.recipient as usize) {
                expected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// User `receiver` received a message with this text. Returns the tag when this is the
    /// message's first arrival (then its latency counts), `None` for a repeat or a stray.
    pub fn arrived(&self, receiver: usize, text: &str) -> Option<Tag> {
        let Some((tag, slot)) = Tag::parse(text).and_then(|t| Some((t, self.slot(&t)?))) else {
            self.strays.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if tag.recipient as usize != receiver {
            self.strays.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self.arrivals[slot].fetch_add(1, Ordering::Relaxed) > 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if let Some(received) = self.received.get(receiver) {
            received.fetch_add(1, Ordering::Relaxed);
        }
        self.unique.fetch_add(1, Ordering::Relaxed);
        self.last_arrival_ns
            .fetch_max(self.now_ns(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.arrival.notify_waiters();
        Some(tag)
    }

    /// Acknowledged messages addressed to `recipient` so far.
    pub fn expected_for(&self, recipient: usize) -> u64 {
        self.expected
            .get(recipient)
            .map_or(0, |e| e.load(Ordering::Relaxed))
    }

    /// Distinct messages `recipient` received so far.
    pub fn received_by(&self, recipient: usize) -> u64 {
        self.received
            .get(recipient)
            .map_or(0, |r| r.load(Ordering::Relaxed))
    }

    /// Distinct messages received so far, by everyone.
    pub fn delivered(&self) -> u64 {
        self.unique.load(Ordering::Relaxed)
    }

    /// The most messages that were ever sent (stamped) and not arrived yet at once.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// Returns once `count` distinct messages have arrived.
    pub async fn delivered_at_least(&self, count: u64) {
        loop {
            // Registered before the check, so an arrival in between still wakes it.
            let arrived = self.arrival.notified();
            if self.delivered() >= count {
                return;
            }
            arrived.await;
        }
    }

    /// Acknowledged sends so far.
    pub fn acked_count(&self) -> u64 {
        self.expected
            .iter()
            .map(|e| e.load(Ordering::Relaxed))
            .sum()
    }

    /// When the last distinct message arrived, in ns since the epoch.
    pub fn last_arrival_ns(&self) -> u64 {
        self.last_arrival_ns.load(Ordering::Relaxed)
    }

    pub fn tally(&self) -> Tally {
        let mut lost = 0;
        for (acked, arrivals) in self.acked.iter().zip(&self.arrivals) {
            if acked.load(Ordering::Relaxed) && arrivals.load(Ordering::Relaxed) == 0 {
                lost += 1;
            }
        }
        Tally {
            acked: self.acked_count(),
            delivered: self.delivered(),
            lost,
            duplicated: self.duplicates.load(Ordering::Relaxed),
            strays: self.strays.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_padded_text() {
        let tag = Tag {
            sender: 3,
            seq: 41,
            recipient: 7,
            sent_ns: 123_456_789,
        };
        let text = tag.text(64);
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("cb 3 41 7 123456789."));
        assert_eq!(Tag::parse(&text), Some(tag));
        assert_eq!(Tag::parse(&tag.text(0)), Some(tag));
        for garbage in [
            "",
            "hello",
            "cb 1 2 3",
            "cb 1 2 3 4 5",
            "cb a 2 3 4",
            "xx 1 2 3 4",
        ] {
            assert_eq!(Tag::parse(garbage), None, "{garbage:?}");
        }
        assert_ne!(tag.client_id(), 0);
        assert_ne!(
            tag.client_id(),
            Tag { seq: 42, ..tag }.client_id(),
            "client ids differ per message"
        );
    }

    #[test]
    fn the_ledger_counts_losses_duplicates_and_strays() {
        let ledger = Ledger::new(2, 3, 2);
        let tags: Vec<Tag> = (0..3).map(|seq| ledger.tag(0, seq, 1)).collect();
        for tag in &tags {
            ledger.acked(tag);
        }
        ledger.acked(&tags[0]);
        assert_eq!(ledger.expected_for(1), 3);
        assert_eq!(ledger.arrived(1, &tags[0].text(10)), Some(tags[0]));
        assert_eq!(ledger.arrived(1, &tags[0].text(10)), None);
        assert_eq!(
            ledger.arrived(0, &tags[1].text(10)),
            None,
            "wrong recipient"
        );
        assert_eq!(ledger.arrived(1, "not ours"), None);
        assert_eq!(ledger.arrived(1, &Tag { seq: 9, ..tags[0] }.text(0)), None);
        assert_eq!(ledger.received_by(1), 1);
        assert_eq!(
            ledger.tally(),
            Tally {
                acked: 3,
                delivered: 1,
                lost: 2,
                duplicated: 1,
                strays: 3,
            }
        );
    }
}
