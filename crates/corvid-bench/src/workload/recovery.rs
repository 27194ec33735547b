//! `recovery`: load many stored messages, restart the server (cleanly, or with SIGKILL),
//! and time how long until it serves its first request again. Afterwards every
//! recipient's unread count is checked against what was acknowledged.

use std::sync::Arc;
use std::time::Duration;

use corvid_client::Client;
use tokio::time::Instant;

use super::{Common, PoolSend, ServerUsage};
use crate::report::{self, Report};
use crate::tally::Ledger;
use crate::target::Target;
use crate::{progress, users};

#[derive(Clone, Debug)]
pub struct RecoveryParams {
    pub messages: usize,
    pub senders: usize,
    pub recipients: usize,
    pub window: usize,
    /// Kill the server with SIGKILL instead of stopping it cleanly.
    pub crash: bool,
}

pub async fn run(
    target: &mut Target,
    common: &Common,
    params: &RecoveryParams,
) -> anyhow::Result<Report> {
    let Target::Started(server) = target else {
        anyhow::bail!(
            "recovery restarts the server, so it needs one this bench starts: omit --server"
        );
    };
    anyhow::ensure!(
        params.senders >= 1 && params.recipients >= 1,
        "senders and recipients must be at least 1"
    );
    let per_sender = params.messages.div_ceil(params.senders);
    let mut report = Report::new("recovery");
    report.set("messages", (per_sender * params.senders) as u64);
    report.set("senders", params.senders as u64);
    report.set("recipients", params.recipients as u64);
    report.set("window", params.window as u64);
    report.set("text_bytes", common.text_bytes as u64);
    report.set("restart", if params.crash { "sigkill" } else { "sigterm" });

    let setup = std::time::Instant::now();
    let addr = server.endpoint(common.transport);
    let prefix = users::run_prefix();
    let recipient_names = users::names(&prefix, "r", params.recipients);
    let senders = users::create(&addr, users::names(&prefix, "s", params.senders)).await?;
    let recipients = users::create(&addr, recipient_names.clone()).await?;
    report.set("setup_secs", report::secs(setup.elapsed()));

    // Load.
    let ledger = Arc::new(Ledger::new(params.senders, per_sender, params.recipients));
    let recipient_names = Arc::new(recipient_names);
    let bar = progress::bar(
        (per_sender * params.senders) as u64,
        "load",
        common.progress,
    );
    let start = Instant::now();
    let deadline = start + common.deadline;
    let seed = rand::random();
    let target_view = Target::Running {
        addr: addr.servers.join(","),
        pid: server_pid(server),
    };
    let usage = ServerUsage::start(&target_view);
    let pool = PoolSend {
        recipients: params.recipients,
        recipient_names: recipient_names.clone(),
        messages: per_sender,
        window: params.window,
        text_bytes: common.text_bytes,
        ledger: ledger.clone(),
        deadline,
        bar: bar.clone(),
        seed,
    };
    let sends = super::send_from_pool(&senders, &pool).await?;
    let load_time = start.elapsed();
    bar.finish_and_clear();
    report.set("load_secs", report::secs(load_time));
    report.set("sends_per_sec", report::rate(sends.acked, load_time));
    usage.finish(&target_view, &mut report, sends.acked);
    drop(senders);
    let recipient_tokens: Vec<_> = recipients.iter().map(|u| u.token).collect();
    drop(recipients);
    // The log's chunk files and the state database, not the snapshots.
    let data = server.data_dir().join("data");
    let db_bytes = files_bytes(&data.join(corvid_store::LOG_DIR))
        + files_bytes(&data.join(corvid_store::STATE_FILE));
    report.set(
        "db_mib",
        (db_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
    );

    // Restart.
    let stop_time = server.stop(params.crash).await?;
    report.set("stop_secs", report::secs(stop_time));
    let restart = Instant::now();
    let listening = server.restart().await?;
    report.set("listening_secs", report::secs(listening));
    let endpoint = server.endpoint(common.transport);
    let first = first_request(&endpoint, recipient_tokens[0], restart, common.deadline).await;
    match first {
        Some(elapsed) => report.set("first_request_secs", report::secs(elapsed)),
        None => report.problem("the restarted server served no request before the deadline"),
    }
    report.set(
        "server_rss_after_restart_mib",
        server_pid(server)
            .and_then(|pid| crate::target::rss_bytes(pid).ok())
            .map_or(0.0, |rss| (rss as f64 / 1048576.0 * 10.0).round() / 10.0),
    );

    // Every acknowledged message is still there, once.
    let (mut lost, mut duplicated) = (0u64, 0u64);
    for (index, name) in recipient_names.iter().enumerate() {
        let client = users::connect(&server.endpoint(common.transport)).await?;
        let unread = client.login(name, users::PASSWORD).await?.unread;
        let expected = ledger.expected_for(index);
        lost += expected.saturating_sub(unread);
        duplicated += unread.saturating_sub(expected);
    }
    report.set("sent", sends.acked);
    report.set("lost", lost);
    report.set("duplicated", duplicated);
    report.set("send_errors", sends.errors);
    if lost > 0 {
        report.problem(format!(
            "{lost} acknowledged messages are missing after the restart"
        ));
    }
    if duplicated > 0 {
        report.problem(format!(
            "{duplicated} more unread messages than were acknowledged"
        ));
    }
    if sends.errors > 0 {
        report.problem(format!(
            "{} sends failed, the first with: {}",
            sends.errors,
            sends.first_error.as_deref().unwrap_or("?")
        ));
    }
    if sends.cut_short {
        report.problem("the deadline ended the load before it finished");
    }
    Ok(report)
}

fn server_pid(server: &crate::target::StartedServer) -> Option<u32> {
    server.pid()
}

/// Time from `restart` until a linearizable read with `token` succeeds.
async fn first_request(
    addr: &crate::target::Endpoint,
    token: corvid_core::Token,
    restart: Instant,
    limit: Duration,
) -> Option<Duration> {
    let deadline = restart + limit;
    let mut config = users::client_config(addr);
    config.connect_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(5);
    config.max_attempts = 1;
    while Instant::now() < deadline {
        if let Ok(client) = Client::connect_with(config.clone()).await {
            if client.fetch_unread(token, Some(1)).await.is_ok() {
                return Some(restart.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// The bytes of the file at `path`, or of the files directly in it if it is a directory.
fn files_bytes(path: &std::path::Path) -> u64 {
    match std::fs::read_dir(path) {
        Ok(dir) => dir
            .filter_map(Result::ok)
            .filter_map(|f| f.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum(),
        Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}
