//! `offline`: recipients stay offline while senders send; then the recipients subscribe
//! with `after = 0` and drain their inboxes. Two rates: sends, and drained messages.

use std::sync::Arc;
use std::time::Duration;

use corvid_core::MessageId;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Common, PoolSend, ReceiveStats, ServerUsage};
use crate::report::{self, Report};
use crate::tally::Ledger;
use crate::target::Target;
use crate::{progress, users};

#[derive(Clone, Debug)]
pub struct OfflineParams {
    pub recipients: usize,
    pub senders: usize,
    pub messages: usize,
    pub window: usize,
}

pub async fn run(
    target: &Target,
    common: &Common,
    params: &OfflineParams,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        params.recipients >= 1 && params.senders >= 1,
        "at least one sender and one recipient are needed"
    );
    let mut report = Report::new("offline");
    report.set("senders", params.senders as u64);
    report.set("recipients", params.recipients as u64);
    report.set("messages_per_sender", params.messages as u64);
    report.set("window", params.window as u64);
    report.set("text_bytes", common.text_bytes as u64);

    let setup = std::time::Instant::now();
    let addr = target.endpoint(common.transport);
    let prefix = users::run_prefix();
    let recipient_names = users::names(&prefix, "r", params.recipients);
    let senders = users::create(&addr, users::names(&prefix, "s", params.senders)).await?;
    let recipients = users::create(&addr, recipient_names.clone()).await?;
    report.set("setup_secs", report::secs(setup.elapsed()));

    let total = (params.senders * params.messages) as u64;
    let ledger = Arc::new(Ledger::new(
        params.senders,
        params.messages,
        params.recipients,
    ));
    let recipient_names = Arc::new(recipient_names);
    let start = Instant::now();
    let deadline = start + common.deadline;

    // Phase 1: everyone who receives is offline.
    let usage = ServerUsage::start(target);
    let bar = progress::bar(total, "offline send", common.progress);
    let seed = rand::random();
    let pool = PoolSend {
        recipients: params.recipients,
        recipient_names: recipient_names.clone(),
        messages: params.messages,
        window: params.window,
        text_bytes: common.text_bytes,
        ledger: ledger.clone(),
        deadline,
        bar: bar.clone(),
        seed,
    };
    let sends = super::send_from_pool(&senders, &pool).await?;
    let send_time = start.elapsed();
    bar.finish_and_clear();
    report.set("send_secs", report::secs(send_time));
    report.set("sends_per_sec", report::rate(sends.acked, send_time));
    report.set("ack_latency", report::latency_json(&sends.ack_latency));

    // Phase 2: the recipients come online and drain their inboxes.
    let bar = progress::bar(ledger.acked_count(), "offline drain", common.progress);
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain_start_ns = ledger.now_ns();
    let drains: Vec<_> = recipients
        .iter()
        .map(|user| {
            let (client, token, index) = (user.client.clone(), user.token, user.index);
            let (ledger, stop, bar) = (ledger.clone(), stop_rx.clone(), bar.clone());
            tokio::spawn(async move {
                let subscription = match client.subscribe(token, Some(MessageId(0))).await {
                    Ok(subscription) => subscription,
                    Err(error) => {
                        let mut stats = ReceiveStats::new();
                        stats.error = Some(format!("recipient {index} cannot subscribe: {error}"));
                        return stats;
                    }
                };
                // Listen until told to stop, so that a late duplicate is still counted.
                super::receive(index, subscription.events, ledger, stop, None, bar).await
            })
        })
        .collect();
    let delivered_all = super::wait_for_delivery(&ledger, deadline).await;
    let drain_time = Duration::from_nanos(ledger.last_arrival_ns().saturating_sub(drain_start_ns));
    tokio::time::sleep(super::DUPLICATE_GRACE).await;
    let _ = stop_tx.send(true);
    let mut received = ReceiveStats::new();
    for drain in drains {
        received.merge(drain.await?);
    }
    bar.finish_and_clear();
    report.set("drain_secs", report::secs(drain_time));
    report.set(
        "drain_per_sec",
        report::rate(ledger.delivered(), drain_time),
    );
    usage.finish(target, &mut report, ledger.delivered());
    super::conclude(&mut report, &ledger, &sends, !delivered_all);
    if let Some(error) = received.error {
        report.problem(error);
    }
    Ok(report)
}
