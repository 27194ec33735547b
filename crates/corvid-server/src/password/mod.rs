//! Passwords: argon2id hashing and checking on a bounded pool, behind the failed-login
//! throttle. No login flood can make the server spend more than the pool's threads of CPU
//! and their memory blocks on passwords.
//!
//! A password check first asks the throttle ([`throttle`]), which may refuse it with
//! `too_many_attempts` before any hash is spent; then it goes to the pool ([`pool`]),
//! whose queue is bounded: past it, `busy` at once. Hashes are computed on the server
//! that receives the request, before anything enters the log, so a plaintext password is
//! never written down.

mod hasher;
mod pool;
mod throttle;

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use corvid_core::{ApiError, ErrorCode};

use crate::config::Login;
pub use hasher::HashError;
use hasher::Hasher;
use pool::{HashingPool, PoolError};
pub use throttle::Origin;
use throttle::{AttemptKeys, Rule, Throttle, ThrottleConfig};

/// The server's password work: the hashing pool and the failed-login throttle.
pub struct Passwords {
    pool: HashingPool,
    throttle: Mutex<Throttle>,
    /// Checked against when a login names an unknown user, so that unknown users and
    /// wrong passwords take the same time.
    dummy_hash: String,
}

/// Why the password work could not start.
#[derive(Debug, thiserror::Error)]
pub enum PasswordsError {
    #[error("cannot start the password-hashing threads: {0}")]
    Threads(#[from] std::io::Error),
    #[error("cannot hash: {0}")]
    Hash(#[from] HashError),
}

impl Passwords {
    pub fn new(config: &Login) -> Result<Passwords, PasswordsError> {
        let refill = Duration::from_secs;
        let throttle = Throttle::new(ThrottleConfig {
            per_address: Rule {
                burst: config.address_burst,
                refill: refill(config.address_refill_secs),
            },
            per_user_address: Rule {
                burst: config.user_address_burst,
                refill: refill(config.user_address_refill_secs),
            },
            per_user: Rule {
                burst: config.user_burst,
                refill: refill(config.user_refill_secs),
            },
            max_entries: config.throttle_entries,
        });
        Ok(Passwords {
            pool: HashingPool::new(config.threads(), config.hash_queue)?,
            throttle: Mutex::new(throttle),
            dummy_hash: Hasher::new().hash("corvid-no-such-user")?,
        })
    }

    /// An argon2id PHC string for `password`, computed on the pool.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.pool
            .run(move |hasher| hasher.hash(&password))
            .await
            .map_err(pool_error)?
            .map_err(|err| {
                tracing::error!(%err, "password hashing failed");
                ErrorCode::Internal.into()
            })
    }

    /// Starts a password check for `username` from `origin`: refused with
    /// `too_many_attempts` (its `detail` the seconds to wait) when the throttle says so.
    /// Call [`Attempt::verify`] next; the attempt counts as a failure unless the password
    /// is right or the check never happens.
    pub fn attempt(&self, origin: Origin, username: &str) -> Result<Attempt<'_>, ApiError> {
        let mut throttle = self.lock_throttle();
        let keys = throttle.keys(origin, username);
        match throttle.admit(&keys, Instant::now()) {
            Ok(()) => Ok(Attempt {
                passwords: self,
                keys,
                decided: false,
            }),
            Err(wait) => Err(too_many_attempts(wait)),
        }
    }

    fn lock_throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        // The throttle's state stays consistent even if a holder panicked: every change
        // is a single insert or remove.
        self.throttle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A password check the throttle admitted. Dropped before [`Attempt::verify`] handed it
/// to the pool (an error on the way), it gives its tokens back; once handed over it counts,
/// even if the caller goes away before the answer (a cancelled call must not be a free
/// guess: the pool checks the password all the same).
pub struct Attempt<'a> {
    passwords: &'a Passwords,
    keys: AttemptKeys,
    decided: bool,
}

impl Attempt<'_> {
    /// Whether `password` matches `phc`; with `None` (no such account) it is checked
    /// against a dummy hash, so that the answer takes the same time and is `false`.
    /// `busy` when the pool's queue is full, which does not count as a failure.
    pub async fn verify(mut self, password: String, phc: Option<String>) -> Result<bool, ApiError> {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.passwords.dummy_hash.clone());
        // From here the attempt counts, whether or not its caller waits for the answer.
        self.decided = true;
        let checked = self
            .passwords
            .pool
            .run(move |hasher| hasher.verify(&password, &phc))
            .await;
        let mut throttle = self.passwords.lock_throttle();
        let matches = match checked {
            Ok(matches) => matches && known,
            Err(err) => {
                // The pool never checked it (full queue, or stopped): not a failure.
                throttle.undecided(&self.keys, Instant::now());
                return Err(pool_error(err));
            }
        };
        if matches {
            throttle.succeeded(&self.keys, Instant::now());
        }
        // A failure keeps the tokens the attempt took when it was admitted.
        Ok(matches)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.decided {
            self.passwords
                .lock_throttle()
                .undecided(&self.keys, Instant::now());
        }
    }
}

fn pool_error(err: PoolError) -> ApiError {
    match err {
        PoolError::Busy => ErrorCode::Busy.into(),
        PoolError::Stopped => {
            tracing::error!(%err, "password check failed");
            ErrorCode::Internal.into()
        }
    }
}

/// `too_many_attempts` with the whole seconds to wait (at least one) as its `detail`.
fn too_many_attempts(wait: Duration) -> ApiError {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    ApiError {
        code: ErrorCode::TooManyAttempts,
        detail: seconds,
        message: format!("too many failed logins; wait {seconds} s before trying again"),
        leader: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords(user_address_burst: u32) -> Passwords {
        Passwords::new(&Login {
            hash_threads: 1,
            user_address_burst,
            ..Login::default()
        })
        .unwrap()
    }

    /// A caller that goes away once its check is queued (a reset stream, a closed
    /// connection) has still spent a guess: the pool checks the password all the same.
    #[tokio::test]
    async fn a_cancelled_check_counts_against_the_throttle() {
        let passwords = passwords(2);
        let origin = Origin::from(std::net::SocketAddr::from(([192, 0, 2, 1], 4000)));
        let phc = passwords.hash("right password".into()).await.unwrap();
        for _ in 0..2 {
            let attempt = passwords.attempt(origin, "alice").unwrap();
            let check = attempt.verify("wrong password".into(), Some(phc.clone()));
            // Polled once (handed to the pool), then dropped.
            let _ = futures::FutureExt::now_or_never(Box::pin(check));
        }
        let refused = passwords.attempt(origin, "alice").err().expect("throttled");
        assert_eq!(refused.code, ErrorCode::TooManyAttempts);
    }

    /// An attempt dropped before it reached the pool (an error on the way) is no guess.
    #[tokio::test]
    async fn an_attempt_never_checked_gives_its_tokens_back() {
        let passwords = passwords(1);
        let origin = Origin::from(std::net::SocketAddr::from(([192, 0, 2, 2], 4000)));
        for _ in 0..3 {
            drop(passwords.attempt(origin, "alice").unwrap());
        }
        assert!(passwords.attempt(origin, "alice").is_ok());
    }
}
