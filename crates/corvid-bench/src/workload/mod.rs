//! The workloads, and the two loops they are built from: a sender that keeps at most
//! `window` sends unacknowledged, and a receiver that reads pushed messages into the
//! [`Ledger`](crate::tally::Ledger).

pub mod connections;
pub mod failover;
pub mod login_flood;
pub mod offline;
pub mod online;
pub mod recovery;

use std::sync::Arc;
use std::time::Duration;

use corvid_client::{Client, Events};
use corvid_core::{Event, Token};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::report::{self, Report};
use crate::tally::Ledger;
use crate::target::Target;

/// What every workload is given.
#[derive(Clone, Debug)]
pub struct Common {
    /// The whole measured part of a run stops by this long after it starts.
    pub deadline: Duration,
    /// Size of each message text, in bytes.
    pub text_bytes: usize,
    /// Draw progress bars (on a terminal).
    pub progress: bool,
    /// The protocol the load uses.
    pub transport: crate::ProtocolArg,
}

/// Who a sender sends to.
#[derive(Clone, Copy, Debug)]
pub enum Recipients {
    /// Any user of the same pool but the sender.
    OthersInPool,
    /// Any user of a separate pool of this many.
    Pool(usize),
}

impl Recipients {
    fn pick(self, rng: &mut StdRng, sender: usize, pool_size: usize) -> usize {
        match self {
            Recipients::OthersInPool => {
                // Uniform over the pool without the sender.
                let pick = rng.gen_range(0..pool_size - 1);
                if pick >= sender {
                    pick + 1
                } else {
                    pick
                }
            }
            Recipients::Pool(size) => rng.gen_range(0..size),
        }
    }
}

/// One sender's part of a run.
pub struct SendJob {
    pub sender: usize,
    pub pool_size: usize,
    pub client: Client,
    pub token: Token,
    pub recipients: Recipients,
    /// Usernames of the recipient pool.
    pub recipient_names: Arc<Vec<String>>,
    pub messages: usize,
    pub window: usize,
    pub text_bytes: usize,
    pub ledger: Arc<Ledger>,
    pub deadline: Instant,
    pub bar: ProgressBar,
    pub seed: u64,
    /// Senders take turns (see [`Turns`]) instead of each sending on its own.
    pub turns: Option<Turns>,
}

/// Senders `0..senders` take turns, one message at a time: message `seq` of sender `s` is
/// turn `seq * senders + s`, sent once every earlier turn's message has arrived. So exactly
/// one message is in flight, and none queues behind another.
#[derive(Clone, Copy, Debug)]
pub struct Turns {
    pub senders: usize,
}

/// What every sender shares when a pool of senders writes to a pool of recipients.
pub struct PoolSend {
    /// Size of the recipient pool; each message goes to a uniformly random member.
    pub recipients: usize,
    pub recipient_names: Arc<Vec<String>>,
    /// Messages per sender.
    pub messages: usize,
    pub window: usize,
    pub text_bytes: usize,
    pub ledger: Arc<Ledger>,
    pub deadline: Instant,
    pub bar: ProgressBar,
    pub seed: u64,
}

/// Runs every sender of `senders` at once against the recipient pool; their stats merged.
pub async fn send_from_pool(
    senders: &[crate::users::User],
    pool: &PoolSend,
) -> anyhow::Result<SendStats> {
    let tasks: Vec<_> = senders
        .iter()
        .map(|user| {
            tokio::spawn(send_all(SendJob {
                sender: user.index,
                pool_size: senders.len(),
                client: user.client.clone(),
                token: user.token,
                recipients: Recipients::Pool(pool.recipients),
                recipient_names: pool.recipient_names.clone(),
                messages: pool.messages,
                window: pool.window,
                text_bytes: pool.text_bytes,
                ledger: pool.ledger.clone(),
                deadline: pool.deadline,
                bar: pool.bar.clone(),
                seed: pool.seed,
                turns: None,
            }))
        })
        .collect();
    let mut sends = SendStats::new();
    for task in tasks {
        sends.merge(task.await?);
    }
    Ok(sends)
}

/// What one sender saw.
pub struct SendStats {
    pub acked: u64,
    pub errors: u64,
    /// Sends the server answered as retries of an earlier one: none should be.
    pub duplicate_acks: u64,
    pub first_error: Option<String>,
    /// Send to acknowledgement, in µs.
    pub ack_latency: Histogram<u64>,
    /// Whether the deadline cut the sender short.
    pub cut_short: bool,
}

impl Default for SendStats {
    fn default() -> SendStats {
        SendStats::new()
    }
}

impl SendStats {
    pub fn new() -> SendStats {
        SendStats {
            acked: 0,
            errors: 0,
            duplicate_acks: 0,
            first_error: None,
            ack_latency: report::histogram(),
            cut_short: false,
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: SendStats) {
        self.acked += other.acked;
        self.errors += other.errors;
        self.duplicate_acks += other.duplicate_acks;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        let _ = self.ack_latency.add(&other.ack_latency);
        self.cut_short |= other.cut_short;
    }
}

/// Sends `job.messages` messages, at most `job.window` unacknowledged at a time.
pub async fn send_all(job: SendJob) -> SendStats {
    let mut stats = SendStats::new();
    let mut rng = StdRng::seed_from_u64(job.seed ^ (job.sender as u64).wrapping_mul(0x9e37_79b9));
    let work = async {
        let mut in_flight = FuturesUnordered::new();
        for seq in 0..job.messages {
            while in_flight.len() >= job.window.max(1) {
                if let Some(done) = in_flight.next().await {
                    settle(&job, &mut stats, done);
                }
            }
            if let Some(turns) = job.turns {
                let turn = (seq * turns.senders + job.sender) as u64;
                job.ledger.delivered_at_least(turn).await;
            }
            let recipient = job.recipients.pick(&mut rng, job.sender, job.pool_size);
            let tag = job.ledger.tag(job.sender, seq, recipient);
            let text = tag.text(job.text_bytes);
            let (client, names) = (&job.client, &job.recipient_names);
            in_flight.push(async move {
                let start = std::time::Instant::now();
                let result = client
                    .send(job.token, &names[recipient], &text, tag.client_id())
                    .await;
                (tag, result, start.elapsed())
            });
        }
        while let Some(done) = in_flight.next().await {
            settle(&job, &mut stats, done);
        }
    };
    if tokio::time::timeout_at(job.deadline, work).await.is_err() {
        stats.cut_short = true;
    }
    stats
}

type SendResult = (
    crate::tally::Tag,
    Result<corvid_client::Sent, corvid_client::ClientError>,
    Duration,
);

fn settle(job: &SendJob, stats: &mut SendStats, (tag, result, elapsed): SendResult) {
    match result {
        Ok(sent) => {
            if sent.duplicate {
                stats.duplicate_acks += 1;
            }
            stats.acked += 1;
            job.ledger.acked(&tag);
            report::record(&mut stats.ack_latency, elapsed);
        }
        Err(error) => {
            stats.errors += 1;
            stats.first_error.get_or_insert_with(|| error.to_string());
        }
    }
    job.bar.inc(1);
}

/// What one receiver saw.
pub struct ReceiveStats {
    /// Send to push, in µs, for each first arrival.
    pub latency: Histogram<u64>,
    pub receipts: u64,
    pub error: Option<String>,
}

impl ReceiveStats {
    pub fn merge(&mut self, other: ReceiveStats) {
        let _ = self.latency.add(&other.latency);
        self.receipts += other.receipts;
        if self.error.is_none() {
            self.error = other.error;
        }
    }

    pub fn new() -> ReceiveStats {
        ReceiveStats {
            latency: report::histogram(),
            receipts: 0,
            error: None,
        }
    }
}

impl Default for ReceiveStats {
    fn default() -> ReceiveStats {
        ReceiveStats::new()
    }
}

/// Reads `receiver`'s pushed events into `ledger` until `stop` turns true, or (with
/// `until`) once it has received that many distinct messages.
pub async fn receive(
    receiver: usize,
    mut events: Events,
    ledger: Arc<Ledger>,
    mut stop: watch::Receiver<bool>,
    until: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    bar: ProgressBar,
) -> ReceiveStats {
    let mut stats = ReceiveStats::new();
    let done = |ledger: &Ledger| {
        until
            .as_ref()
            .is_some_and(|until| ledger.received_by(receiver) >= until())
    };
    while !*stop.borrow() && !done(&ledger) {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stop.changed() => continue,
        };
        match event {
            Some(Ok(Event::Message(message))) => {
                if let Some(tag) = ledger.arrived(receiver, &message.text) {
                    let latency = ledger.now_ns().saturating_sub(tag.sent_ns);
                    report::record(&mut stats.latency, Duration::from_nanos(latency));
                    bar.inc(1);
                }
            }
            Some(Ok(Event::Receipt { .. })) => stats.receipts += 1,
            Some(Ok(Event::SessionEnded { reason })) => {
                stats.error = Some(format!("user {receiver}: session ended ({reason:?})"));
                break;
            }
            Some(Err(error)) => {
                stats.error = Some(format!("user {receiver}: {error}"));
                break;
            }
            None => {
                stats.error = Some(format!("user {receiver}: event stream ended"));
                break;
            }
        }
    }
    stats
}

/// Waits until `ledger` has delivered everything acknowledged, or `deadline`. Returns
/// whether everything arrived.
pub async fn wait_for_delivery(ledger: &Ledger, deadline: Instant) -> bool {
    loop {
        if ledger.delivered() >= ledger.acked_count() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long receivers keep listening after the last expected message, so that a late
/// duplicate is still counted.
pub const DUPLICATE_GRACE: Duration = Duration::from_millis(300);

/// Adds the ledger's verdict, send statistics and server resource use to `report`, and
/// the problems they show.
pub fn conclude(report: &mut Report, ledger: &Ledger, sends: &SendStats, deadline_hit: bool) {
    let tally = ledger.tally();
    report.set("sent", tally.acked);
    report.set("delivered", tally.delivered);
    report.set("lost", tally.lost);
    report.set("duplicated", tally.duplicated);
    report.set("strays", tally.strays);
    report.set("send_errors", sends.errors);
    if tally.lost > 0 {
        report.problem(format!(
            "{} acknowledged messages never arrived",
            tally.lost
        ));
    }
    if tally.duplicated > 0 {
        report.problem(format!(
            "{} messages arrived more than once",
            tally.duplicated
        ));
    }
    if tally.strays > 0 {
        report.problem(format!("{} messages reached the wrong user", tally.strays));
    }
    if sends.errors > 0 {
        report.problem(format!(
            "{} sends failed, the first with: {}",
            sends.errors,
            sends.first_error.as_deref().unwrap_or("?")
        ));
    }
    if sends.duplicate_acks > 0 {
        report.problem(format!(
            "{} fresh sends were answered as retries",
            sends.duplicate_acks
        ));
    }
    if deadline_hit || sends.cut_short {
        report.problem("the deadline ended the run before it finished");
    }
}

/// Server CPU and memory over a measured phase.
pub struct ServerUsage {
    /// Each server's CPU seconds at the start, by pid.
    cpu_start: Vec<(u32, f64)>,
    bench_cpu_start: f64,
}

impl ServerUsage {
    pub fn start(target: &Target) -> ServerUsage {
        ServerUsage {
            cpu_start: target
                .pids()
                .into_iter()
                .filter_map(|pid| Some((pid, crate::target::cpu_secs(pid).ok()?)))
                .collect(),
            bench_cpu_start: crate::target::own_cpu_secs(),
        }
    }

    /// Adds CPU seconds used since `start` (per message, when `messages` > 0) and RSS: of
    /// all the servers together, and for a cluster of each server too.
    pub fn finish(&self, target: &Target, report: &mut Report, messages: u64) {
        let per_message = |secs: f64| {
            if messages == 0 {
                0.0
            } else {
                (secs * 1e6 / messages as f64 * 100.0).round() / 100.0
            }
        };
        let round = |secs: f64| (secs * 100.0).round() / 100.0;
        let mib = |bytes: u64| (bytes as f64 / 1048576.0 * 10.0).round() / 10.0;
        // Servers that were restarted in the meantime have another pid and are left out.
        let used: Vec<f64> = self
            .cpu_start
            .iter()
            .filter_map(|&(pid, start)| Some(crate::target::cpu_secs(pid).ok()? - start))
            .collect();
        if !used.is_empty() {
            let total: f64 = used.iter().sum();
            report.set("server_cpu_secs", round(total));
            report.set("server_cpu_us_per_msg", per_message(total));
        }
        let bench = crate::target::own_cpu_secs() - self.bench_cpu_start;
        report.set("bench_cpu_secs", round(bench));
        report.set("bench_cpu_us_per_msg", per_message(bench));
        if let Some(rss) = target.rss_bytes() {
            report.set("server_rss_mib", mib(rss));
        }
        let pids = target.pids();
        if pids.len() > 1 {
            let rss: Vec<f64> = pids
                .iter()
                .map(|&pid| crate::target::rss_bytes(pid).map_or(0.0, mib))
                .collect();
            report.set("servers_rss_mib", rss);
            report.set(
                "servers_cpu_secs",
                used.iter().map(|&secs| round(secs)).collect::<Vec<_>>(),
            );
        }
    }
}
