//! End-to-end durability: clients stream sends while the server is killed with SIGKILL at a
//! random moment and restarted, round after round. Afterwards every acknowledged message is
//! readable exactly once, in the order it was sent, and every restart succeeded.
//!
//! `CORVID_DURABILITY_ROUNDS` sets the number of rounds (for a long run, see
//! docs/benchmarks.md); the large-message test kills the server mid-write of entries of
//! 4 KiB messages, which is when a record is torn across pages.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, Transport, PASSWORD};
use corvid_client::{Client, ClientConfig};
use corvid_core::{MessageId, Token};

const ROUNDS: usize = 20;
/// Rounds of the large-message test in the normal test suite.
const LARGE_ROUNDS: usize = 8;
/// The largest text the server takes by default.
const LARGE_TEXT_BYTES: usize = 4096;
const SENDERS: usize = 3;

async fn client(server: &Server, transport: Transport) -> Client {
    let mut config = ClientConfig::new(&[server.address(transport).to_string()]);
    config.transport = transport.client();
    // A killed server must fail the call quickly, not be retried for long.
    config.max_attempts = 1;
    config.request_timeout = Duration::from_secs(5);
    Client::connect_with(config).await.expect("connect")
}

/// `default`, or the number of rounds `CORVID_DURABILITY_ROUNDS` asks for.
fn rounds(default: usize) -> usize {
    std::env::var("CORVID_DURABILITY_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(default)
}

over_both_transports!(acknowledged_messages_survive_sigkill_exactly_once_and_in_order);

fn acknowledged_messages_survive_sigkill_exactly_once_and_in_order(transport: Transport) {
    kill_rounds(transport, rounds(ROUNDS), 0);
}

/// A kill in the middle of writing an entry of 4 KiB messages can leave its record torn
/// across pages; the server must start again every time, losing nothing acknowledged.
#[test]
fn large_messages_survive_sigkill_and_every_restart_succeeds() {
    kill_rounds(Transport::Wire, rounds(LARGE_ROUNDS), LARGE_TEXT_BYTES);
}

/// The text of message `seq` of `sender`, padded to `text_bytes`.
fn text(sender: usize, seq: u64, text_bytes: usize) -> String {
    let mut text = format!("{sender}:{seq}:");
    let pad = text_bytes.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('.', pad));
    text
}

/// Kills and restarts the server `rounds` times while senders stream messages of
/// `text_bytes` (at least their sequence number), then checks what was stored. A restart
/// that fails panics with the server's log.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn kill_rounds(transport: Transport, rounds: usize, text_bytes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let setup = client(&server, transport).await;
    setup.create_account("reader", "", PASSWORD).await.unwrap();
    let mut tokens: Vec<Token> = Vec::new();
    for i in 0..SENDERS {
        let name = format!("writer{i}");
        setup.create_account(&name, "", PASSWORD).await.unwrap();
        tokens.push(setup.login(&name, PASSWORD).await.unwrap().token);
    }
    drop(setup);

    // Per sender: the sequence numbers the server acknowledged.
    let acked: Arc<Mutex<HashMap<usize, Vec<u64>>>> = Arc::default();
    let mut next_seq = [0u64; SENDERS];
    let mut rng_state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..rounds {
        let conn = client(&server, transport).await;
        let mut tasks = Vec::new();
        for (sender, token) in tokens.iter().copied().enumerate() {
            let (conn, acked) = (conn.clone(), acked.clone());
            let start = next_seq[sender];
            next_seq[sender] += 100_000;
            tasks.push(tokio::spawn(async move {
                for seq in start.. {
                    let text = text(sender, seq, text_bytes);
                    // A unique client id per message: a retry could not duplicate it.
                    let client_id = ((sender as u64 + 1) << 48) | (seq + 1);
                    match conn.send(token, "reader", &text, client_id).await {
                        Ok(_) => acked.lock().unwrap().entry(sender).or_default().push(seq),
                        Err(_) => return,
                    }
                }
            }));
        }
        // A pseudo-random moment in 30..330 ms.
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        tokio::time::sleep(Duration::from_millis(30 + rng_state % 300)).await;
        server.kill();
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
        drop(conn);
        server = Server::start(&data);
    }

    // Read the whole conversation back, page by page, oldest first.
    let conn = client(&server, transport).await;
    let reader = conn.login("reader", PASSWORD).await.unwrap().token;
    let mut stored: HashMap<usize, Vec<u64>> = HashMap::new();
    let mut total = 0;
    for sender in 0..SENDERS {
        let mut texts = Vec::new();
        let mut before: Option<MessageId> = None;
        loop {
            let page = conn
                .history(reader, &format!("writer{sender}"), before, Some(100))
                .await
                .unwrap();
            texts.splice(0..0, page.messages.iter().map(|m| m.text.clone()));
            match page.next_before {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        let seqs: Vec<u64> = texts
            .iter()
            .map(|t| t.split(':').nth(1).unwrap().parse().unwrap())
            .collect();
        total += seqs.len();
        stored.insert(sender, seqs);
    }
    let acked = acked.lock().unwrap();
    let acked_total: usize = acked.values().map(Vec::len).sum();
    assert!(
        acked_total >= rounds,
        "the test must acknowledge messages to mean anything ({acked_total})"
    );
    for sender in 0..SENDERS {
        let stored = &stored[&sender];
        let mut sorted = stored.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            &sorted, stored,
            "writer{sender}: stored messages are in send order with no duplicate"
        );
        for seq in acked.get(&sender).into_iter().flatten() {
            assert!(
                stored.binary_search(seq).is_ok(),
                "writer{sender}: acknowledged message {seq} was lost"
            );
        }
    }
    eprintln!(
        "{rounds} kills of {text_bytes}-byte sends: {rounds} restarts, all started; \
         {acked_total} acknowledged, {total} stored, none lost or repeated"
    );
}
