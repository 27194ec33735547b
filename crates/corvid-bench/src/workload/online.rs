//! `online` (and `unloaded`): every user connected and subscribed; each sends to uniformly
//! random other users with at most `window` sends unacknowledged; the clock runs from the
//! first send to the last push received.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Common, ReceiveStats, Recipients, SendJob, SendStats, ServerUsage};
use crate::report::{self, Report};
use crate::tally::Ledger;
use crate::target::Target;
use crate::{progress, users};

#[derive(Clone, Debug)]
pub struct OnlineParams {
    pub users: usize,
    pub messages: usize,
    pub window: usize,
    /// The users take turns: one message in flight in all (see [`super::Turns`]).
    pub alternate: bool,
}

/// The cluster's highest term, when the target is a cluster this bench started.
async fn cluster_term(target: &Target) -> Option<u64> {
    match target {
        Target::Cluster(cluster) => cluster.term().await,
        _ => None,
    }
}

/// Runs the workload under the name `workload` (`online` or `unloaded`).
pub async fn run(
    target: &Target,
    common: &Common,
    params: &OnlineParams,
    workload: &str,
) -> anyhow::Result<Report> {
    anyhow::ensure!(params.users >= 2, "at least 2 users are needed");
    let mut report = Report::new(workload);
    report.set("users", params.users as u64);
    report.set("messages_per_user", params.messages as u64);
    report.set("window", params.window as u64);
    report.set("alternate", params.alternate);
    report.set("text_bytes", common.text_bytes as u64);

    let setup = std::time::Instant::now();
    let addr = target.endpoint(common.transport);
    let names = users::names(&users::run_prefix(), "u", params.users);
    let users = users::create(&addr, names.clone()).await?;
    let mut subscriptions = Vec::with_capacity(users.len());
    for user in &users {
        subscriptions.push(user.client.subscribe(user.token, None).await?);
    }
    report.set("setup_secs", report::secs(setup.elapsed()));

    let total = (params.users * params.messages) as u64;
    let ledger = Arc::new(Ledger::new(params.users, params.messages, params.users));
    let names = Arc::new(names);
    let bar = progress::bar(total, workload, common.progress);
    let (stop_tx, stop_rx) = watch::channel(false);
    let term_before = cluster_term(target).await;
    let usage = ServerUsage::start(target);
    let start = Instant::now();
    let start_ns = ledger.now_ns();
    let deadline = start + common.deadline;

    let receivers: Vec<_> = subscriptions
        .into_iter()
        .enumerate()
        .map(|(index, subscription)| {
            tokio::spawn(super::receive(
                index,
                subscription.events,
                ledger.clone(),
                stop_rx.clone(),
                None,
                bar.clone(),
            ))
        })
        .collect();
    let seed = rand::random();
    let senders: Vec<_> = users
        .iter()
        .map(|user| {
            tokio::spawn(super::send_all(SendJob {
                sender: user.index,
                pool_size: params.users,
                client: user.client.clone(),
                token: user.token,
                recipients: Recipients::OthersInPool,
                recipient_names: names.clone(),
                messages: params.messages,
                window: params.window,
                text_bytes: common.text_bytes,
                ledger: ledger.clone(),
                deadline,
                bar: progress::bar(0, "", false),
                seed,
                turns: params.alternate.then_some(super::Turns {
                    senders: params.users,
                }),
            }))
        })
        .collect();
    let mut sends = SendStats::new();
    for sender in senders {
        sends.merge(sender.await?);
    }
    let send_time = start.elapsed();
    let delivered_all = super::wait_for_delivery(&ledger, deadline).await;
    let last_arrival = Duration::from_nanos(ledger.last_arrival_ns().saturating_sub(start_ns));
    tokio::time::sleep(super::DUPLICATE_GRACE).await;
    let _ = stop_tx.send(true);
    let mut received = ReceiveStats::new();
    for receiver in receivers {
        received.merge(receiver.await?);
    }
    bar.finish_and_clear();

    let tally = ledger.tally();
    report.set("duration_secs", report::secs(last_arrival));
    report.set(
        "delivered_per_sec",
        report::rate(tally.delivered, last_arrival),
    );
    report.set("sends_per_sec", report::rate(sends.acked, send_time));
    report.set("latency", report::latency_json(&received.latency));
    report.set("ack_latency", report::latency_json(&sends.ack_latency));
    report.set("receipts", received.receipts);
    report.set("max_in_flight", ledger.max_in_flight());
    usage.finish(target, &mut report, tally.delivered);
    // On a cluster, an election during the run (none is due: no server failed) shows as a
    // higher term.
    if let (Some(before), Some(after)) = (term_before, cluster_term(target).await) {
        report.set("term_changes", after.saturating_sub(before));
    }
    super::conclude(&mut report, &ledger, &sends, !delivered_all);
    if let Some(error) = received.error {
        report.problem(error);
    }
    for user in users {
        drop(user.client);
    }
    Ok(report)
}
