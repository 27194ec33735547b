//! The password-hashing pool: a fixed number of threads, each with its own [`Hasher`]
//! (and so its own reused argon2 memory), behind a bounded queue.
//!
//! Every password check of the server runs here, so neither memory nor CPU spent on
//! passwords can grow with the number of attempts: at most `threads` hashes run at once,
//! at most `queue` wait, and one more is refused at once with [`PoolError::Busy`] rather
//! than queued. The threads are plain OS threads, not the runtime's blocking pool, which
//! would start a new thread (and a new 19 MiB block) for every concurrent attempt.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use super::hasher::Hasher;

/// Why the pool did not run a job.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the password-hashing queue is full")]
    Busy,
    #[error("the password-hashing pool stopped")]
    Stopped,
}

type Job = Box<dyn FnOnce(&mut Hasher) + Send>;

/// A fixed pool of hashing threads. Dropping it lets the threads finish the queued jobs
/// and exit.
pub struct HashingPool {
    jobs: SyncSender<Job>,
    occupancy: Arc<Occupancy>,
    /// In replay mode (see `corvid_store::replay`) there are no threads: each job runs on
    /// the caller's thread with this hasher.
    inline: Option<Mutex<Hasher>>,
}

/// How many jobs wait and run, and the most that ever ran at once.
#[derive(Default)]
struct Occupancy {
    queued: AtomicUsize,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl HashingPool {
    /// Starts `threads` hashing threads (at least one) behind a queue of `queue` jobs.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<HashingPool> {
        let (jobs, waiting) = mpsc::sync_channel::<Job>(queue);
        let occupancy = Arc::new(Occupancy::default());
        if corvid_store::replay::is_enabled() {
            return Ok(HashingPool {
                jobs,
                occupancy,
                inline: Some(Mutex::new(Hasher::new())),
            });
        }
        let waiting = Arc::new(Mutex::new(waiting));
        for index in 0..threads.max(1) {
            let (waiting, occupancy) = (waiting.clone(), occupancy.clone());
            std::thread::Builder::new()
                .name(format!("corvid-password-{index}"))
                .spawn(move || work(&waiting, &occupancy))?;
        }
        Ok(HashingPool {
            jobs,
            occupancy,
            inline: None,
        })
    }

    /// Runs `job` on a pool thread with that thread's hasher, and returns its result; or
    /// [`PoolError::Busy`] at once when the queue is full.
    pub async fn run<R, F>(&self, job: F) -> Result<R, PoolError>
    where
        F: FnOnce(&mut Hasher) -> R + Send + 'static,
        R: Send + 'static,
    {
        if let Some(hasher) = &self.inline {
            let mut hasher = hasher.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(job(&mut hasher));
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |hasher| {
            // The caller may have gone away; the work is done either way.
            let _ = answer.send(job(hasher));
        });
        // Counted before it is sent, so that a thread taking it at once never counts
        // below zero.
        self.occupancy.queued.fetch_add(1, Ordering::SeqCst);
        if let Err(err) = self.jobs.try_send(job) {
            self.occupancy.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(match err {
                TrySendError::Full(_) => PoolError::Busy,
                TrySendError::Disconnected(_) => PoolError::Stopped,
            });
        }
        answered.await.map_err(|_| PoolError::Stopped)
    }

    /// Jobs waiting for a thread now.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.occupancy.queued.load(Ordering::SeqCst)
    }

    /// Jobs running now.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.occupancy.running.load(Ordering::SeqCst)
    }

    /// The most jobs that ever ran at once.
    #[cfg(test)]
    pub fn most_running(&self) -> usize {
        self.occupancy.most_running.load(Ordering::SeqCst)
    }
}

/// One pool thread: takes jobs until the pool is dropped.
fn work(waiting: &Mutex<Receiver<Job>>, occupancy: &Occupancy) {
    let mut hasher = Hasher::new();
    loop {
        // The lock is held only while waiting for the next job, which cannot panic.
        let job = match waiting.lock() {
            Ok(receiver) => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        occupancy.queued.fetch_sub(1, Ordering::SeqCst);
        let running = occupancy.running.fetch_add(1, Ordering::SeqCst) + 1;
        occupancy.most_running.fetch_max(running, Ordering::SeqCst);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut hasher)));
        occupancy.running.fetch_sub(1, Ordering::SeqCst);
        if result.is_err() {
            // The job's caller sees its answer dropped; the thread stays in the pool.
            tracing::error!("a password-hashing job panicked");
            hasher = Hasher::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    /// Polls `condition` until it holds, or panics after a generous deadline.
    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::yield_now();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_its_threads_run_and_a_full_queue_is_busy_at_once() {
        let pool = Arc::new(HashingPool::new(2, 3).unwrap());
        let (release, released) = std_mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let mut answers = Vec::new();
        // Each job holds its thread until the test releases it.
        let submit = |pool: &Arc<HashingPool>| {
            let (pool, released) = (pool.clone(), released.clone());
            tokio::spawn(async move {
                pool.run(move |_| {
                    let _ = released.lock().unwrap().recv();
                })
                .await
            })
        };
        for started in 1..=2 {
            answers.push(submit(&pool));
            wait_until("a thread takes the job", || pool.running() == started);
        }
        // Both threads are held: three more jobs fill the queue, and the next is refused
        // without waiting.
        for _ in 0..3 {
            answers.push(submit(&pool));
        }
        wait_until("the queue is full", || pool.queued() == 3);
        let refused = pool.run(|_| ()).await;
        assert_eq!(refused, Err(PoolError::Busy));
        assert_eq!(pool.running(), 2);

        for _ in 0..answers.len() {
            release.send(()).unwrap();
        }
        for answer in answers {
            assert_eq!(answer.await.unwrap(), Ok(()));
        }
        assert_eq!(
            pool.most_running(),
            2,
            "the jobs ran two at a time, never more"
        );
        assert_eq!(
            pool.run(|_| 7).await,
            Ok(7),
            "the pool serves again once drained"
        );
    }

    #[tokio::test]
    async fn each_thread_keeps_its_hasher_memory_and_survives_a_panicking_job() {
        let pool = HashingPool::new(1, 4).unwrap();
        let first = pool
            .run(|hasher| {
                let phc = hasher.hash("correct horse").unwrap();
                (phc, hasher.memory_address())
            })
            .await
            .unwrap();
        let (phc, block) = first;
        let second = pool
            .run(move |hasher| {
                (
                    hasher.verify("correct horse", &phc),
                    hasher.memory_address(),
                )
            })
            .await
            .unwrap();
        assert_eq!(second, (true, block), "the thread's one block was reused");

        let panicked = pool.run(|_| panic!("a bug in a job")).await;
        assert_eq!(panicked.unwrap_err(), PoolError::Stopped);
        assert_eq!(pool.run(|_| 1).await, Ok(1), "the thread is still serving");
    }
}
