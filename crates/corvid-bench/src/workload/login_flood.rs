//! `login-flood`: connections pipelining wrong-password logins while one other client
//! pings; the server's peak resident memory and the pinger's latency.
//!
//! This is the attack a server must survive from outside: every login costs an argon2id
//! hash (19 MiB of memory, tens of milliseconds of a core), so a flood of them is the
//! cheapest way to make a server spend memory and CPU. The run reports how each attempt
//! was answered (`invalid_credentials`, `too_many_attempts`, `busy`), the server's memory
//! before, at its peak and after, and what the flood did to an innocent client's pings.
//! It stops early, as a problem, if the server's memory passes `max_rss_mib`, so that
//! measuring an unprotected server cannot exhaust the machine.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corvid_core::ErrorCode;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::time::Instant;

use super::Common;
use crate::report::{self, Report};
use crate::target::Target;
use crate::users;

#[derive(Clone, Debug)]
pub struct LoginFloodParams {
    /// Connections flooding at once.
    pub connections: usize,
    /// Logins each connection keeps in flight.
    pub window: usize,
    /// How long the flood lasts.
    pub duration: Duration,
    /// Pause between the pinger's pings (each waits for the previous answer).
    pub ping_interval: Duration,
    /// Every attempt names a fresh unknown username (password spraying) instead of one
    /// existing account.
    pub spray: bool,
    /// The flood stops early, as a problem, once the server's memory passes this.
    pub max_rss_mib: u64,
}

/// How often the server's memory is read during the flood.
const RSS_SAMPLE: Duration = Duration::from_millis(50);
/// Time given to the server to settle before its memory is read after the flood.
const SETTLE: Duration = Duration::from_secs(2);
/// A wrong password (of valid length).
const WRONG_PASSWORD: &str = "not-the-password";

/// How the attempts were answered.
#[derive(Default)]
struct Answers {
    invalid_credentials: AtomicU64,
    too_many_attempts: AtomicU64,
    busy: AtomicU64,
    succeeded: AtomicU64,
    other: AtomicU64,
    first_other: std::sync::Mutex<Option<String>>,
}

impl Answers {
    fn count(&self, result: Result<(), corvid_client::ClientError>) {
        let counter = match &result {
            Ok(()) => &self.succeeded,
            Err(error) => match error.code() {
                Some(ErrorCode::InvalidCredentials) => &self.invalid_credentials,
                Some(ErrorCode::TooManyAttempts) => &self.too_many_attempts,
                Some(ErrorCode::Busy) => &self.busy,
                _ => {
                    if let Ok(mut first) = self.first_other.lock() {
                        first.get_or_insert_with(|| error.to_string());
                    }
                    &self.other
                }
            },
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub async fn run(
    target: &Target,
    common: &Common,
    params: &LoginFloodParams,
) -> anyhow::Result<Report> {
    let mut report = Report::new("login-flood");
    report.set("connections", params.connections as u64);
    report.set("window", params.window as u64);
    report.set("spray", params.spray);
    let duration = params.duration.min(common.deadline);
    report.set("flood_secs", report::secs(duration));

    let addr = target.endpoint(common.transport);
    let prefix = users::run_prefix();
    let victim = users::create(&addr, users::names(&prefix, "victim", 1)).await?;
    let victim_name = victim[0].name.clone();
    let pinger = users::connect(&addr).await?;
    let mut flooders = Vec::with_capacity(params.connections);
    for _ in 0..params.connections {
        flooders.push(users::connect(&addr).await?);
    }
    tokio::time::sleep(SETTLE).await;
    let rss_before = target.rss_bytes();

    let answers = Arc::new(Answers::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = flooders
        .into_iter()
        .enumerate()
        .map(|(connection, client)| {
            let (answers, stop) = (answers.clone(), stop.clone());
            let victim = victim_name.clone();
            let (window, spray) = (params.window.max(1), params.spray);
            tokio::spawn(async move {
                let mut in_flight = FuturesUnordered::new();
                let mut attempt = 0u64;
                loop {
                    while in_flight.len() < window
                        && !stop.load(Ordering::Relaxed)
                        && Instant::now() < end
                    {
                        let username = if spray {
                            format!("nobody{connection}x{attempt}")
                        } else {
                            victim.clone()
                        };
                        attempt += 1;
                        let client = &client;
                        in_flight.push(async move {
                            client.login(&username, WRONG_PASSWORD).await.map(|_| ())
                        });
                    }
                    match in_flight.next().await {
                        Some(result) => answers.count(result),
                        None => break,
                    }
                }
            })
        })
        .collect();

    // The pinger: one ping at a time, as an innocent client would.
    let ping_stop = stop.clone();
    let ping_interval = params.ping_interval;
    let pings = tokio::spawn(async move {
        let mut latency = report::histogram();
        let mut failures = 0u64;
        while !ping_stop.load(Ordering::Relaxed) && Instant::now() < end {
            let sent = std::time::Instant::now();
            match pinger.ping().await {
                Ok(_) => report::record(&mut latency, sent.elapsed()),
                Err(_) => failures += 1,
            }
            tokio::time::sleep(ping_interval).await;
        }
        (latency, failures)
    });

    let mut rss_peak = rss_before.unwrap_or(0);
    let mut rss_limit_hit = false;
    while Instant::now() < end {
        tokio::time::sleep(RSS_SAMPLE).await;
        if let Some(rss) = target.rss_bytes() {
            rss_peak = rss_peak.max(rss);
            if rss > params.max_rss_mib.saturating_mul(1 << 20) {
                rss_limit_hit = true;
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flood_time = start.elapsed();
    let (latency, ping_failures) = pings.await?;
    // The attempts already in flight are answered before the run goes on, bounded by the
    // run's deadline: an unprotected server may take long to work through them.
    let drain = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    let drained = tokio::time::timeout(common.deadline, drain).await.is_ok();
    let drain_time = start.elapsed();
    tokio::time::sleep(SETTLE).await;
    let rss_after = target.rss_bytes();

    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let answered = load(&answers.invalid_credentials)
        + load(&answers.too_many_attempts)
        + load(&answers.busy)
        + load(&answers.succeeded)
        + load(&answers.other);
    // The flood's real length: shorter than asked when the memory cap stopped it.
    report.set("flood_secs", report::secs(flood_time));
    report.set("attempts", answered);
    report.set("attempts_per_sec", report::rate(answered, flood_time));
    report.set(
        "answers",
        serde_json::json!({
            "invalid_credentials": load(&answers.invalid_credentials),
            "too_many_attempts": load(&answers.too_many_attempts),
            "busy": load(&answers.busy),
            "other": load(&answers.other),
        }),
    );
    report.set("drain_secs", report::secs(drain_time - flood_time));
    report.set("ping", report::latency_json(&latency));
    report.set("ping_failures", ping_failures);
    match rss_before {
        Some(before) => {
            report.set("server_rss_before_mib", mib(before));
            report.set("server_rss_peak_mib", mib(rss_peak));
            if let Some(after) = rss_after {
                report.set("server_rss_after_mib", mib(after));
            }
        }
        None => {
            report.problem("the server's memory cannot be read: start it here or pass --server-pid")
        }
    }
    if rss_limit_hit {
        report.problem(format!(
            "the server's memory passed {} MiB; the flood was stopped early",
            params.max_rss_mib
        ));
    }
    if !drained {
        report.problem("the deadline passed before every attempt was answered");
    }
    if load(&answers.succeeded) > 0 {
        report.problem("a login with a wrong password succeeded");
    }
    if load(&answers.other) > 0 {
        let first = answers
            .first_other
            .lock()
            .ok()
            .and_then(|first| first.clone())
            .unwrap_or_default();
        report.problem(format!(
            "{} attempts failed otherwise, the first with: {first}",
            load(&answers.other)
        ));
    }
    if ping_failures > 0 {
        report.problem(format!("{ping_failures} pings failed"));
    }
    drop(victim);
    Ok(report)
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1048576.0 * 10.0).round() / 10.0
}

/// The `[login]` section that lifts the server's failed-login throttle (`--no-throttle`).
pub const NO_THROTTLE_CONFIG: &str = "\n[login]\naddress_burst = 1000000000\n\
    user_address_burst = 1000000000\nuser_burst = 1000000000\n";
