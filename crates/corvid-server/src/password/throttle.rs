//! The failed-login throttle: how many wrong passwords a source address, a username, and
//! the two together may try, decided before any password is hashed.
//!
//! Three token buckets count failures (each bucket holds `burst` tokens, an attempt
//! takes one, and one comes back every `refill`):
//!
//! - **per address** (an IPv4 address, or an IPv6 /64, which is what one subscriber
//!   usually holds): one machine guessing at many accounts (password spraying);
//! - **per (username, address)**: one machine guessing at one account; the tightest;
//! - **per username**, across every address: many machines guessing at one account.
//!
//! The per-username bucket is the dangerous one: if it refused everybody, anyone could
//! lock a user out of their account by failing on purpose. So when it is empty it only
//! refuses addresses that have *already failed* for that username (whose per-pair bucket
//! is not full). An address with no recent failure for the username still gets its
//! attempt, which is how the real user logs in during an attack on their account. What
//! an attacker gains from that is one guess per fresh address per account, where without
//! the per-username bucket each address would have the whole per-pair burst; and each of
//! those addresses is still held by its own per-address bucket. An attacker can only lock
//! out their own address (and whoever shares it behind the same NAT).
//!
//! An attempt takes its tokens when it is admitted, before the hash, and a correct
//! password gives them back (and clears its per-pair bucket): so concurrent attempts
//! count at once, and pipelining many guesses buys no more than sending them one by one.
//! A bucket never falls more than `burst` below empty, so the wait after a burst is
//! bounded. Unknown usernames are throttled exactly like existing ones, which keeps the
//! throttle from telling which accounts exist.
//!
//! Memory is bounded: each bucket table keeps at most `max_entries` entries and forgets
//! the one touched longest ago. Keys are 64-bit keyed hashes (a random key per server),
//! so an entry's size does not depend on the username sent. An attacker who cycles through
//! more addresses than a table holds makes the oldest of them clean again; the
//! per-username bucket still holds for those.
//!
//! The throttle is per server and in memory, not replicated: a restart forgets it, and
//! in a cluster each server counts on its own, so an attacker who spreads attempts over
//! the servers gets each server's allowance.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

// The runtime's clock, which is the system's except in a simulation with paused time.
use tokio::time::Instant;

/// Where a request came from, as far as the login throttle cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    address: Option<IpAddr>,
}

impl Origin {
    /// A caller whose address is not known (an in-process caller). All such callers
    /// share one per-address bucket.
    pub const UNKNOWN: Origin = Origin { address: None };

    pub fn new(address: IpAddr) -> Origin {
        Origin {
            address: Some(address),
        }
    }

    /// The key of the per-address bucket: the IPv4 address (also when it comes mapped
    /// into IPv6), or the IPv6 /64.
    fn network(self) -> Option<IpAddr> {
        match self.address? {
            IpAddr::V4(v4) => Some(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Some(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Some(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl From<SocketAddr> for Origin {
    fn from(peer: SocketAddr) -> Origin {
        Origin::new(peer.ip())
    }
}

/// One bucket's rule: `burst` failures at once, then one more every `refill`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub burst: u32,
    pub refill: Duration,
}

/// The throttle's rules and its memory bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    pub per_address: Rule,
    pub per_user_address: Rule,
    pub per_user: Rule,
    /// Entries each bucket table keeps at most.
    pub max_entries: usize,
}

/// The bucket keys of one attempt.
#[derive(Clone, Copy, Debug)]
pub struct AttemptKeys {
    address: u64,
    user_address: u64,
    user: u64,
}

/// The failed-login throttle of one server.
pub struct Throttle {
    keys: RandomState,
    addresses: Buckets,
    user_addresses: Buckets,
    users: Buckets,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle {
            keys: RandomState::new(),
            addresses: Buckets::new(config.per_address, config.max_entries),
            user_addresses: Buckets::new(config.per_user_address, config.max_entries),
            users: Buckets::new(config.per_user, config.max_entries),
        }
    }

    /// The buckets an attempt at `username` from `origin` counts against. `username` is
    /// folded (usernames are unique case-insensitively).
    pub fn keys(&self, origin: Origin, username: &str) -> AttemptKeys {
        let network = origin.network();
        let user = corvid_core::validate::fold(username);
        AttemptKeys {
            address: self.keys.hash_one(("address", network)),
            user_address: self.keys.hash_one(("user-address", &user, network)),
            user: self.keys.hash_one(("user", &user)),
        }
    }

    /// Admits an attempt, taking its tokens, or says how long to wait before the next
    /// one can be admitted.
    pub fn admit(&mut self, keys: &AttemptKeys, now: Instant) -> Result<(), Duration> {
        let address = self.addresses.tokens(keys.address, now);
        if address < 1.0 {
            return Err(self.addresses.wait(keys.address, 1.0, now));
        }
        let pair = self.user_addresses.tokens(keys.user_address, now);
        if pair < 1.0 {
            return Err(self.user_addresses.wait(keys.user_address, 1.0, now));
        }
        let pair_is_clean = pair >= self.user_addresses.burst();
        if self.users.tokens(keys.user, now) < 1.0 && !pair_is_clean {
            // Admitted again once the username has a token, or this address's failures
            // for it have all been forgiven.
            let user_wait = self.users.wait(keys.user, 1.0, now);
            let clean_wait =
                self.user_addresses
                    .wait(keys.user_address, self.user_addresses.burst(), now);
            return Err(user_wait.min(clean_wait));
        }
        self.addresses.take(keys.address, now);
        self.user_addresses.take(keys.user_address, now);
        self.users.take(keys.user, now);
        Ok(())
    }

    /// An admitted attempt had the right password: its tokens come back, and its address
    /// starts clean for this username.
    pub fn succeeded(&mut self, keys: &AttemptKeys, now: Instant) {
        self.addresses.give_back(keys.address, now);
        self.users.give_back(keys.user, now);
        self.user_addresses.forget(keys.user_address);
    }

    /// An admitted attempt was never decided (the server was busy, or failed): it does
    /// not count as a failure.
    pub fn undecided(&mut self, keys: &AttemptKeys, now: Instant) {
        self.addresses.give_back(keys.address, now);
        self.user_addresses.give_back(keys.user_address, now);
        self.users.give_back(keys.user, now);
    }

    /// Entries held in all tables.
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.addresses.len() + self.user_addresses.len() + self.users.len()
    }
}

/// A table of token buckets that forgets the least recently touched entry when full.
struct Buckets {
    rule: Rule,
    max_entries: usize,
    entries: HashMap<u64, Bucket>,
    /// Entries by the order they were last touched, oldest first.
    by_age: BTreeMap<u64, u64>,
    next_touch: u64,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
    touch: u64,
}

impl Buckets {
    fn new(rule: Rule, max_entries: usize) -> Buckets {
        Buckets {
            rule,
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            next_touch: 0,
        }
    }

    fn burst(&self) -> f64 {
        f64::from(self.rule.burst)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Tokens in `key`'s bucket at `now` (a full bucket when it has no entry).
    fn tokens(&self, key: u64, now: Instant) -> f64 {
        match self.entries.get(&key) {
            Some(bucket) => self.refilled(bucket, now),
            None => self.burst(),
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        let refill = self.rule.refill.as_secs_f64().max(f64::MIN_POSITIVE);
        (bucket.tokens + elapsed / refill).min(self.burst())
    }

    /// How long until `key`'s bucket holds `wanted` tokens.
    fn wait(&self, key: u64, wanted: f64, now: Instant) -> Duration {
        let missing = (wanted - self.tokens(key, now)).max(0.0);
        self.rule.refill.mul_f64(missing)
    }

    fn take(&mut self, key: u64, now: Instant) {
        let tokens = (self.tokens(key, now) - 1.0).max(-self.burst());
        self.set(key, tokens, now);
    }

    fn give_back(&mut self, key: u64, now: Instant) {
        if self.entries.contains_key(&key) {
            let tokens = (self.tokens(key, now) + 1.0).min(self.burst());
            self.set(key, tokens, now);
        }
    }

    fn forget(&mut self, key: u64) {
        if let Some(bucket) = self.entries.remove(&key) {
            self.by_age.remove(&bucket.touch);
        }
    }

    fn set(&mut self, key: u64, tokens: f64, now: Instant) {
        self.forget(key);
        if self.entries.len() >= self.max_entries {
            if let Some((_, oldest)) = self.by_age.pop_first() {
                self.entries.remove(&oldest);
            }
        }
        let touch = self.next_touch;
        self.next_touch += 1;
        self.by_age.insert(touch, key);
        self.entries.insert(
            key,
            Bucket {
                tokens,
                updated: now,
                touch,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            per_address: Rule {
                burst: 10,
                refill: SECOND,
            },
            per_user_address: Rule {
                burst: 3,
                refill: 10 * SECOND,
            },
            per_user: Rule {
                burst: 5,
                refill: 20 * SECOND,
            },
            max_entries: 1000,
        }
    }

    fn from(address: &str) -> Origin {
        Origin::new(address.parse().unwrap())
    }

    /// Fails `count` attempts; panics if one is not admitted.
    fn fail(throttle: &mut Throttle, origin: Origin, user: &str, count: usize, now: Instant) {
        let keys = throttle.keys(origin, user);
        for attempt in 0..count {
            let admitted = throttle.admit(&keys, now);
            assert_eq!(admitted, Ok(()), "attempt {attempt} of {user}");
        }
    }

    fn admit(
        throttle: &mut Throttle,
        origin: Origin,
        user: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        let keys = throttle.keys(origin, user);
        throttle.admit(&keys, now)
    }

    #[test]
    fn one_address_guessing_one_account_is_held_to_the_per_pair_burst() {
        let now = Instant::now();
        let mut throttle = Throttle::new(config());
        let attacker = from("198.51.100.7");
        fail(&mut throttle, attacker, "alice", 3, now);
        assert_eq!(
            admit(&mut throttle, attacker, "alice", now),
            Err(10 * SECOND)
        );
        // Case does not make a new username.
        assert_eq!(
            admit(&mut throttle, attacker, "ALICE", now),
            Err(10 * SECOND)
        );
        // One attempt comes back per refill, not the burst.
        let later = now + 10 * SECOND;
        assert_eq!(admit(&mut throttle, attacker, "alice", later), Ok(()));
        assert!(admit(&mut throttle, attacker, "alice", later).is_err());
        // The same address may still try another account, and others may try alice.
        assert_eq!(admit(&mut throttle, attacker, "bob", later), Ok(()));
        assert_eq!(
            admit(&mut throttle, from("203.0.113.9"), "alice", later),
            Ok(())
        );
    }

    #[test]
    fn one_address_spraying_many_accounts_is_held_to_the_per_address_burst() {
        let now = Instant::now();
        let mut throttle = Throttle::new(config());
        let attacker = from("198.51.100.7");
        for user in 0..10 {
            fail(&mut throttle, attacker, &format!("user{user}"), 1, now);
        }
        assert_eq!(admit(&mut throttle, attacker, "user99", now), Err(SECOND));
        assert_eq!(
            admit(&mut throttle, from("203.0.113.9"), "user99", now),
            Ok(())
        );
    }

    #[test]
    fn many_addresses_on_one_account_cannot_lock_out_a_clean_address() {
        let now = Instant::now();
        let mut throttle = Throttle::new(config());
        // Five attackers use up alice's per-username bucket.
        for attacker in 1..=5 {
            fail(
                &mut throttle,
                from(&format!("198.51.100.{attacker}")),
                "alice",
                1,
                now,
            );
        }
        // An attacker that has failed for alice is now refused before its per-pair
        // burst is used up...
        let refused = admit(&mut throttle, from("198.51.100.1"), "alice", now);
        assert_eq!(
            refused,
            Err(10 * SECOND),
            "its failure is forgiven sooner than alice gets a token"
        );
        // ...but an address with no failure for alice still gets its attempt: the real
        // user logs in. Its own failure would make it refused as well.
        let user = from("203.0.113.9");
        let keys = throttle.keys(user, "alice");
        assert_eq!(throttle.admit(&keys, now), Ok(()));
        throttle.succeeded(&keys, now);
        assert_eq!(
            admit(&mut throttle, user, "alice", now),
            Ok(()),
            "still clean after a success"
        );
        let fresh = from("192.0.2.1");
        fail(&mut throttle, fresh, "alice", 1, now);
        assert!(admit(&mut throttle, fresh, "alice", now).is_err());
        // Other accounts are not affected.
        assert_eq!(
            admit(&mut throttle, from("198.51.100.1"), "bob", now),
            Ok(())
        );
    }

    #[test]
    fn a_correct_password_gives_its_tokens_back_and_an_undecided_attempt_never_counts() {
        let now = Instant::now();
        let mut throttle = Throttle::new(config());
        let user = from("203.0.113.9");
        let keys = throttle.keys(user, "alice");
        for _ in 0..20 {
            assert_eq!(throttle.admit(&keys, now), Ok(()));
            throttle.succeeded(&keys, now);
            assert_eq!(throttle.admit(&keys, now), Ok(()));
            throttle.undecided(&keys, now);
        }
        // Two failures, then the right password: the pair starts again from full.
        fail(&mut throttle, user, "alice", 2, now);
        assert_eq!(throttle.admit(&keys, now), Ok(()));
        throttle.succeeded(&keys, now);
        fail(&mut throttle, user, "alice", 3, now);
    }

    #[test]
    fn concurrent_attempts_count_when_admitted() {
        let now = Instant::now();
        let mut throttle = Throttle::new(ThrottleConfig {
            per_user: Rule {
                burst: 1000,
                refill: SECOND,
            },
            ..config()
        });
        let attacker = from("198.51.100.7");
        // Three attempts in flight at once use the pair's whole burst before any answer,
        // so pipelining guesses gains nothing over sending them one by one.
        fail(&mut throttle, attacker, "alice", 3, now);
        assert_eq!(
            admit(&mut throttle, attacker, "alice", now),
            Err(10 * SECOND)
        );
        let mut admitted = 0;
        for second in 1..100 {
            if admit(&mut throttle, attacker, "alice", now + SECOND * second).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(
            admitted, 9,
            "one attempt per 10 s refill over the next 99 s"
        );
    }

    #[test]
    fn ipv6_addresses_count_by_their_slash_64_and_mapped_ipv4_as_ipv4() {
        let now = Instant::now();
        let mut throttle = Throttle::new(config());
        for host in 1..=3 {
            fail(
                &mut throttle,
                from(&format!("2001:db8:1:2::{host}")),
                "alice",
                1,
                now,
            );
        }
        assert!(admit(&mut throttle, from("2001:db8:1:2:ffff::9"), "alice", now).is_err());
        assert_eq!(
            admit(&mut throttle, from("2001:db8:1:3::1"), "alice", now),
            Ok(())
        );

        fail(&mut throttle, from("192.0.2.1"), "bob", 3, now);
        assert!(admit(&mut throttle, from("::ffff:192.0.2.1"), "bob", now).is_err());
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_entries_are_forgotten() {
        let now = Instant::now();
        let mut throttle = Throttle::new(ThrottleConfig {
            max_entries: 100,
            ..config()
        });
        fail(&mut throttle, from("198.51.100.7"), "alice", 3, now);
        for host in 0..1000u32 {
            let origin = Origin::new(IpAddr::V4(host.into()));
            fail(&mut throttle, origin, &format!("user{host}"), 1, now);
            assert!(throttle.entries() <= 300);
        }
        assert_eq!(throttle.entries(), 300);
        // The first attacker's entries were the oldest.
        assert_eq!(
            admit(&mut throttle, from("198.51.100.7"), "alice", now),
            Ok(())
        );
    }

    #[test]
    fn callers_of_unknown_origin_share_one_address() {
        let now = Instant::now();
        let mut throttle = Throttle::new(config());
        fail(&mut throttle, Origin::UNKNOWN, "alice", 3, now);
        assert!(admit(&mut throttle, Origin::UNKNOWN, "alice", now).is_err());
        assert_eq!(
            admit(&mut throttle, from("127.0.0.1"), "alice", now),
            Ok(())
        );
    }
}
