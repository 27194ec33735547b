//! `connections`: many idle, logged-in, subscribed connections; the server's resident
//! memory per connection.
//!
//! Logging in costs an argon2 hash, so the connections share the sessions of a few
//! accounts: a token is not tied to a connection, and each connection subscribes with one,
//! which is what makes the server keep per-connection state (the socket, its task, its
//! buffers and a hub registration).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use super::Common;
use crate::report::{self, Report};
use crate::target::Target;
use crate::{progress, users};

#[derive(Clone, Debug)]
pub struct ConnectionsParams {
    pub connections: usize,
    pub accounts: usize,
}

/// Connections opened at once.
const OPEN_CONCURRENCY: usize = 128;
/// Time given to the server to settle before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);

pub async fn run(
    target: &Target,
    common: &Common,
    params: &ConnectionsParams,
) -> anyhow::Result<Report> {
    let mut report = Report::new("connections");
    report.set("connections", params.connections as u64);
    let accounts = params.accounts.clamp(1, params.connections.max(1));
    report.set("accounts", accounts as u64);
    let fd_limit = crate::target::raise_fd_limit();
    if let Some(limit) = fd_limit {
        report.set("fd_limit", limit);
    }

    let setup = std::time::Instant::now();
    let addr = target.endpoint(common.transport);
    let users = users::create(&addr, users::names(&users::run_prefix(), "c", accounts)).await?;
    let tokens: Vec<_> = users.iter().map(|u| u.token).collect();
    report.set("setup_secs", report::secs(setup.elapsed()));
    // The accounts' own connections stay open; they are few and are part of the baseline.
    tokio::time::sleep(SETTLE).await;
    let before = target.rss_bytes();

    let bar = progress::bar(params.connections as u64, "connections", common.progress);
    let start = std::time::Instant::now();
    // Two halves, with the memory read after each: the second half's growth is the
    // marginal cost of a connection, after the first half has used up whatever memory the
    // allocator had kept free from the setup.
    let first_half = params.connections / 2;
    let mut connections = Vec::with_capacity(params.connections);
    let mut middle = None;
    for (from, to) in [(0, first_half), (first_half, params.connections)] {
        let open = futures::stream::iter(from..to)
            .map(|i| {
                let (addr, token, bar) = (addr.clone(), tokens[i % tokens.len()], bar.clone());
                async move {
                    let client = users::connect(&addr).await?;
                    let subscription = client.subscribe(token, None).await?;
                    bar.inc(1);
                    Ok::<_, anyhow::Error>((client, subscription))
                }
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .try_collect::<Vec<_>>();
        match tokio::time::timeout(common.deadline, open).await {
            Ok(result) => connections.extend(result?),
            Err(_) => {
                report.problem("the deadline ended the run before every connection was open");
                bar.finish_and_clear();
                return Ok(report);
            }
        }
        tokio::time::sleep(SETTLE).await;
        if middle.is_none() {
            middle = Some(target.rss_bytes());
        }
    }
    bar.finish_and_clear();
    report.set("open_secs", report::secs(start.elapsed()));
    let after = target.rss_bytes();
    let middle = middle.flatten();

    // Every connection is still served.
    let failed = futures::stream::iter(connections.iter())
        .map(|(client, _)| async move { client.ping().await.is_err() })
        .buffer_unordered(OPEN_CONCURRENCY)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    report.set("ping_failures", failed as u64);
    if failed > 0 {
        report.problem(format!("{failed} connections did not answer a ping"));
    }
    match (before, after) {
        (Some(before), Some(after)) => {
            let per = after.saturating_sub(before) as f64 / params.connections.max(1) as f64;
            report.set("server_rss_before_mib", mib(before));
            report.set("server_rss_after_mib", mib(after));
            report.set("rss_bytes_per_connection", per.round());
            report.set(
                "rss_kib_per_connection",
                (per / 1024.0 * 100.0).round() / 100.0,
            );
            let second_half = (params.connections - first_half).max(1) as f64;
            if let Some(middle) = middle {
                let marginal = after.saturating_sub(middle) as f64 / second_half;
                report.set("server_rss_middle_mib", mib(middle));
                report.set(
                    "marginal_rss_kib_per_connection",
                    (marginal / 1024.0 * 100.0).round() / 100.0,
                );
            }
        }
        _ => {
            report.problem("the server's memory cannot be read: start it here or pass --server-pid")
        }
    }
    drop(connections);
    drop(users);
    Ok(report)
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1048576.0 * 10.0).round() / 10.0
}
