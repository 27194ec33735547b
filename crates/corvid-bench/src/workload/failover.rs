//! `failover`: how long clients wait for an acknowledged write when the leader of a cluster
//! dies. Each trial finds the leader (asking the servers for their status), starts one
//! writer per server, SIGKILLs the leader, and measures from the kill to the first
//! acknowledgement of a write each writer sent after it; then it starts the killed server
//! again and waits until it has caught up, before the next trial.
//!
//! A writer keeps one send in flight and sends the next once it is acknowledged; a send
//! that fails is sent again with the same client message id, so the cluster applies it
//! once whatever happened to the first attempt. Writer `i` connects to server `i` first,
//! so in every trial one writer was connected to the server that died (its client
//! reconnects to another) and the others to followers (which forward to the leader, and
//! wait for the new one). A trial's figure is its slowest writer's. At the end the
//! recipient's unread count must equal the number of distinct sends acknowledged.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context};
use corvid_core::Token;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Common;
use crate::cluster::StartedCluster;
use crate::report::{self, Report};
use crate::target::{Endpoint, Target};
use crate::users;

#[derive(Clone, Debug)]
pub struct FailoverParams {
    /// Leader kills.
    pub trials: usize,
    /// How long the writers write before the kill (once each has had a write acknowledged).
    pub settle: Duration,
}

/// Runs the workload; `target` must be a cluster this bench started (`--servers N`).
pub async fn run(
    target: &mut Target,
    common: &Common,
    params: &FailoverParams,
) -> anyhow::Result<Report> {
    let Target::Cluster(cluster) = target else {
        bail!("failover kills and restarts servers of a cluster: give --servers 3 (or 5)");
    };
    let servers = cluster.ids().len();
    anyhow::ensure!(
        servers >= 3,
        "failover needs at least 3 servers, so that a majority survives a kill"
    );
    let mut report = Report::new("failover");
    report.set("servers", servers as u64);
    report.set("trials", params.trials as u64);
    report.set("settle_ms", params.settle.as_millis() as u64);
    report.set("text_bytes", common.text_bytes as u64);

    let setup = std::time::Instant::now();
    let endpoint = cluster.endpoint(common.transport);
    let names = users::names(&users::run_prefix(), "f", 2);
    let accounts = users::create(&endpoint, names.clone()).await?;
    let (writer, recipient) = (&accounts[0], &names[1]);
    report.set("setup_secs", report::secs(setup.elapsed()));

    let deadline = Instant::now() + common.deadline;
    let mut failovers = Vec::with_capacity(params.trials);
    let mut on_killed = Vec::with_capacity(params.trials);
    let mut catch_ups = Vec::with_capacity(params.trials);
    let mut acked = BTreeSet::new();
    let mut send_errors = 0u64;
    let mut terms = Vec::with_capacity(params.trials);
    for trial in 0..params.trials {
        let outcome = run_trial(
            cluster,
            &endpoint,
            writer.token,
            recipient,
            trial,
            params,
            common.text_bytes,
            deadline,
        )
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                report.problem(format!("trial {trial}: {error:#}"));
                break;
            }
        };
        failovers.push(outcome.failover);
        on_killed.push(outcome.on_killed);
        catch_ups.push(outcome.catch_up);
        acked.extend(outcome.acked);
        send_errors += outcome.send_errors;
        terms.push(outcome.new_term);
    }
    report.set("failover", summary(&failovers));
    report.set("failover_client_on_killed_server", summary(&on_killed));
    report.set("catch_up", summary(&catch_ups));
    report.set(
        "failover_ms",
        failovers.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
    );
    report.set("terms", terms);
    report.set("send_retries", send_errors);

    // Every acknowledged send is in the recipient's inbox, once.
    let client = users::connect(&endpoint).await?;
    let unread = client
        .login(recipient, users::PASSWORD)
        .await
        .context("cannot log the recipient in to count its inbox")?
        .unread;
    let expected = acked.len() as u64;
    report.set("sent", expected);
    report.set("lost", expected.saturating_sub(unread));
    report.set("duplicated", unread.saturating_sub(expected));
    if unread < expected {
        report.problem(format!(
            "{} acknowledged messages are missing",
            expected - unread
        ));
    }
    if unread > expected {
        report.problem(format!(
            "{} more messages in the inbox than were acknowledged",
            unread - expected
        ));
    }
    if failovers.len() < params.trials {
        report.problem(format!(
            "{} of {} trials finished",
            failovers.len(),
            params.trials
        ));
    }
    Ok(report)
}

/// What one trial measured.
struct Trial {
    /// From the kill to the last writer's first acknowledgement of a write sent after it.
    failover: Duration,
    /// The same for the writer that was connected to the killed server.
    on_killed: Duration,
    /// From the killed server's restart to its having applied the leader's log.
    catch_up: Duration,
    new_term: u64,
    /// Client ids of the acknowledged sends.
    acked: Vec<u64>,
    send_errors: u64,
}

#[allow(clippy::too_many_arguments)]
async fn run_trial(
    cluster: &mut StartedCluster,
    endpoint: &Endpoint,
    token: Token,
    recipient: &str,
    trial: usize,
    params: &FailoverParams,
    text_bytes: usize,
    deadline: Instant,
) -> anyhow::Result<Trial> {
    let leader = cluster.leader(deadline).await?;
    let ids = cluster.ids();
    let killed_index = ids
        .iter()
        .position(|id| *id == leader.id)
        .context("the leader is not a configured server")?;
    let kill_at = Arc::new(OnceLock::new());
    let started = Arc::new(AtomicUsize::new(0));
    let recovered = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let writers: Vec<_> = (0..ids.len())
        .map(|index| {
            tokio::spawn(write(Writer {
                endpoint: endpoint.starting_at(index),
                token,
                recipient: recipient.to_string(),
                number: (trial * ids.len() + index) as u64,
                text_bytes,
                kill_at: kill_at.clone(),
                started: started.clone(),
                recovered: recovered.clone(),
                stop: stop_rx.clone(),
                deadline,
            }))
        })
        .collect();
    wait_for_count(&started, ids.len(), deadline).await?;
    tokio::time::sleep(params.settle).await;

    let _ = kill_at.set(Instant::now());
    cluster.kill(leader.id).await?;
    let all_recovered = wait_for_count(&recovered, ids.len(), deadline).await;
    let _ = stop_tx.send(true);
    let mut results = Vec::with_capacity(writers.len());
    for writer in writers {
        results.push(writer.await?);
    }
    all_recovered.context("not every writer had a write acknowledged after the kill")?;
    let mut failover = Duration::ZERO;
    let mut on_killed = Duration::ZERO;
    let mut acked = Vec::new();
    let mut send_errors = 0;
    for (index, result) in results.into_iter().enumerate() {
        let result = result?;
        let waited = result
            .after_kill
            .context("a writer saw no acknowledgement after the kill")?;
        failover = failover.max(waited);
        if index == killed_index {
            on_killed = waited;
        }
        acked.extend(result.acked);
        send_errors += result.send_errors;
    }
    let new_leader = cluster.leader(deadline).await?;

    let restart = Instant::now();
    cluster.restart(leader.id).await?;
    cluster.wait_caught_up(leader.id, deadline).await?;
    Ok(Trial {
        failover,
        on_killed,
        catch_up: restart.elapsed(),
        new_term: new_leader.term,
        acked,
        send_errors,
    })
}

/// One writer of a trial.
struct Writer {
    endpoint: Endpoint,
    token: Token,
    recipient: String,
    /// Unique over the run: the high half of each of its client message ids.
    number: u64,
    text_bytes: usize,
    kill_at: Arc<OnceLock<Instant>>,
    /// Counts writers that had a first write acknowledged.
    started: Arc<AtomicUsize>,
    /// Counts writers that had a write sent after the kill acknowledged.
    recovered: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
    deadline: Instant,
}

/// What a writer saw.
struct Written {
    acked: Vec<u64>,
    /// From the kill to the acknowledgement of its first write sent after it.
    after_kill: Option<Duration>,
    /// Attempts that failed and were sent again.
    send_errors: u64,
}

/// Sends one message at a time until told to stop, each until it is acknowledged.
async fn write(writer: Writer) -> anyhow::Result<Written> {
    let client = users::connect(&writer.endpoint).await?;
    let mut written = Written {
        acked: Vec::new(),
        after_kill: None,
        send_errors: 0,
    };
    let mut seq: u64 = 0;
    while !*writer.stop.borrow() {
        seq += 1;
        let client_id = (writer.number << 32) | seq;
        let mut text = format!("failover {} {seq}", writer.number);
        if text.len() < writer.text_bytes {
            text.extend(std::iter::repeat_n('.', writer.text_bytes - text.len()));
        }
        let sent_at = Instant::now();
        loop {
            let attempt = tokio::time::timeout_at(
                writer.deadline,
                client.send(writer.token, &writer.recipient, &text, client_id),
            )
            .await;
            match attempt {
                Ok(Ok(_)) => break,
                Ok(Err(_)) => written.send_errors += 1,
                Err(_) => bail!("the deadline passed with a send unacknowledged"),
            }
            // The client already tried every server with backoff: the same send again.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let acked_at = Instant::now();
        if seq == 1 {
            writer.started.fetch_add(1, Ordering::Relaxed);
        }
        written.acked.push(client_id);
        if written.after_kill.is_none() {
            if let Some(&kill_at) = writer.kill_at.get() {
                // Only a write sent after the kill proves the cluster serves again: one
                // in flight at the kill may have been answered by the old leader.
                if sent_at >= kill_at {
                    written.after_kill = Some(acked_at - kill_at);
                    writer.recovered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(written)
}

/// Waits until `count` reaches `want`, polling, until `deadline`.
async fn wait_for_count(count: &AtomicUsize, want: usize, deadline: Instant) -> anyhow::Result<()> {
    while count.load(Ordering::Relaxed) < want {
        if Instant::now() >= deadline {
            bail!("the deadline passed");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// Median, p90 and max of `values` (nearest rank), in milliseconds.
pub fn summary(values: &[Duration]) -> serde_json::Value {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = |q: f64| {
        let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        ms(sorted[index])
    };
    if sorted.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": sorted.len(),
        "p50_ms": rank(0.5),
        "p90_ms": rank(0.9),
        "max_ms": ms(sorted[sorted.len() - 1]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_by_nearest_rank() {
        let values: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        let summary = summary(&values);
        assert_eq!(summary["count"], 20);
        assert_eq!(summary["p50_ms"], 10.0);
        assert_eq!(summary["p90_ms"], 18.0);
        assert_eq!(summary["max_ms"], 20.0);
        assert_eq!(super::summary(&[])["count"], 0);
    }
}
