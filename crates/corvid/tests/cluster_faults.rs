//! Fault tests of a real five-server cluster: `corvid serve` processes whose
//! server-to-server links run through proxies the test cuts. While clients of both
//! protocols send and listen, the test kills the leader and random servers (never more
//! than two down at once), stops and resumes them, cuts the leader off into a minority and
//! cuts one direction of a server's traffic. Then it heals everything, drains every inbox
//! and checks: every acknowledged message stored exactly once, with the id it was
//! acknowledged with; nothing stored that was never sent; each sender's order kept; every
//! listener pushed exactly its inbox, with no gap and no repeat.
//!
//! `CORVID_FAULT_ROUNDS` sets the number of fault rounds (default 20) and
//! `CORVID_FAULT_SEED` replays the fault schedule of a failed run (printed at the start).

#[macro_use]
mod common;
#[path = "common/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::{eventually, one_cluster, text, ProcessCluster, Record};
use common::{Transport, PASSWORD};
use corvid_client::{Client, ClientConfig};
use corvid_core::{Event, Message, MessageId, Token};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SERVERS: usize = 5;
const SENDERS: usize = 4;
const RECIPIENTS: usize = 2;
const DEFAULT_ROUNDS: usize = 20;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A client that tries every server, and keeps trying through elections.
async fn client(cluster: &ProcessCluster, transport: Transport) -> Client {
    let mut config = ClientConfig::new(&cluster.addresses(transport));
    config.transport = transport.client();
    config.request_timeout = Duration::from_secs(3);
    config.connect_timeout = Duration::from_secs(1);
    config.max_attempts = 30;
    config.max_backoff = Duration::from_millis(300);
    Client::connect_with(config)
        .await
        .expect("connect to the cluster")
}

fn sender_name(i: usize) -> String {
    format!("sender{i}")
}

fn recipient_name(i: usize) -> String {
    format!("reader{i}")
}

/// The client id of a sender's message: the same for every retry of it.
fn client_id(sender: usize, seq: u64) -> u64 {
    ((sender as u64 + 1) << 40) | seq
}

/// Every message stored for `recipient`, oldest first, read from its conversation with each
/// sender.
async fn inbox(client: &Client, token: Token) -> Vec<Message> {
    let mut all = Vec::new();
    for s in 0..SENDERS {
        let mut before: Option<MessageId> = None;
        loop {
            let page = client
                .history(token, &sender_name(s), before, Some(100))
                .await
                .expect("history");
            all.extend(
                page.messages
                    .into_iter()
                    .filter(|m| m.from == sender_name(s)),
            );
            match page.next_before {
                Some(next) => before = Some(next),
                None => break,
            }
        }
    }
    all.sort_by_key(|m| m.id);
    all
}

/// Every sender's and recipient's account.
async fn create_accounts(cluster: &ProcessCluster) {
    let setup = client(cluster, Transport::Wire).await;
    for name in (0..SENDERS)
        .map(sender_name)
        .chain((0..RECIPIENTS).map(recipient_name))
    {
        setup
            .create_account(&name, "", PASSWORD)
            .await
            .expect("create account");
    }
}

/// One listener per recipient, alternating protocols, from the start of its inbox: each
/// records every message pushed to it, and fails the test if its subscription ends.
async fn spawn_listeners(
    cluster: &ProcessCluster,
    record: &Arc<Mutex<Record>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut listeners = Vec::new();
    for r in 0..RECIPIENTS {
        let transport = [Transport::Wire, Transport::Grpc][r % 2];
        let client = client(cluster, transport).await;
        let token = client
            .login(&recipient_name(r), PASSWORD)
            .await
            .unwrap()
            .token;
        let mut subscription = client.subscribe(token, Some(MessageId(0))).await.unwrap();
        let (record, name) = (record.clone(), recipient_name(r));
        listeners.push(tokio::spawn(async move {
            while let Some(item) = subscription.events.recv().await {
                match item {
                    Ok(Event::Message(message)) => record
                        .lock()
                        .unwrap()
                        .pushed
                        .entry(name.clone())
                        .or_default()
                        .push(message),
                    Ok(_) => {}
                    Err(e) => panic!("{name}'s subscription ended: {e}"),
                }
            }
            drop(client);
        }));
    }
    listeners
}

/// One sender per sender account, alternating protocols, until `stop`: each sends its
/// next message (`body(sender, name, seq)`) only once the previous one is acknowledged,
/// retrying it with the same client id for as long as it takes. Each task ends with the
/// number of messages it had acknowledged.
async fn spawn_senders(
    cluster: &ProcessCluster,
    record: &Arc<Mutex<Record>>,
    stop: &Arc<AtomicBool>,
    body: impl Fn(usize, &str, u64) -> String + Clone + Send + 'static,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let transport = [Transport::Wire, Transport::Grpc][s % 2];
        let client = client(cluster, transport).await;
        let token = client.login(&sender_name(s), PASSWORD).await.unwrap().token;
        let (record, stop, body) = (record.clone(), stop.clone(), body.clone());
        senders.push(tokio::spawn(async move {
            let name = sender_name(s);
            let to = recipient_name(s % RECIPIENTS);
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                let text = body(s, &name, seq);
                record.lock().unwrap().attempt(&name, seq);
                loop {
                    match client.send(token, &to, &text, client_id(s, seq)).await {
                        Ok(sent) => {
                            record
                                .lock()
                                .unwrap()
                                .acknowledge(&name, seq, sent.message.id);
                            break;
                        }
                        // Retried with the same client id: the cluster must keep it once.
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                seq += 1;
            }
            seq
        }));
    }
    senders
}

/// Waits until every listener has caught up with its recipient's inbox (or 30 s), stops
/// the listeners, and checks what they and the senders recorded against the inboxes.
async fn check_listeners(
    record: &Arc<Mutex<Record>>,
    inboxes: &BTreeMap<String, Vec<Message>>,
    listeners: &[tokio::task::JoinHandle<()>],
    seed: u64,
) {
    let caught_up = eventually(Duration::from_secs(30), || {
        let record = record.lock().unwrap();
        inboxes
            .iter()
            .all(|(name, inbox)| record.pushed.get(name).map_or(0, Vec::len) >= inbox.len())
    })
    .await;
    for listener in listeners {
        listener.abort();
    }
    let record = record.lock().unwrap();
    if let Err(violation) = record.check(inboxes) {
        panic!("seed {seed}: {violation} (caught up: {caught_up})");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn run_faults(rounds: usize, seed: u64) {
    println!("fault schedule seed {seed} (CORVID_FAULT_SEED={seed} replays it), {rounds} rounds");
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ProcessCluster::start(dir.path(), SERVERS).await;
    let mut rng = StdRng::seed_from_u64(seed);

    create_accounts(&cluster).await;

    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));

    // Listeners: one per recipient, alternating protocols, from the start of the inbox.
    let listeners = spawn_listeners(&cluster, &record).await;

    // Senders: each sends its next message only once the previous one is acknowledged,
    // retrying it with the same client id for as long as it takes.
    let senders = spawn_senders(&cluster, &record, &stop, |_, name, seq| text(name, seq)).await;

    for round in 0..rounds {
        let leader = cluster.wait_for_leader().await;
        let fault = rng.gen_range(0..6);
        let hold = Duration::from_millis(rng.gen_range(500..2000));
        let others: Vec<usize> = (0..SERVERS).filter(|i| *i != leader).collect();
        let other = others[rng.gen_range(0..others.len())];
        println!(
            "round {round}: leader {}, fault {fault}, hold {hold:?}",
            leader + 1
        );
        match fault {
            0 => {
                cluster.kill(leader);
                tokio::time::sleep(hold).await;
                cluster.restart(leader);
            }
            1 => {
                cluster.kill(leader);
                cluster.kill(other);
                tokio::time::sleep(hold).await;
                cluster.restart(leader);
                cluster.restart(other);
            }
            2 => {
                cluster.pause(leader);
                tokio::time::sleep(hold).await;
                cluster.resume(leader);
            }
            3 => {
                // The leader and one follower in a minority.
                cluster.partition(&[leader, other]);
                tokio::time::sleep(hold).await;
                cluster.heal();
            }
            4 => {
                // The leader cannot reach anyone, but hears everyone.
                cluster.cut_outbound(leader);
                tokio::time::sleep(hold).await;
                cluster.heal();
            }
            _ => {
                let second =
                    others[(others.iter().position(|o| *o == other).unwrap() + 1) % others.len()];
                cluster.kill(other);
                cluster.pause(second);
                tokio::time::sleep(hold).await;
                cluster.resume(second);
                cluster.restart(other);
            }
        }
        assert_eq!(cluster.down_count(), 0);
    }

    stop.store(true, Ordering::SeqCst);
    let mut sent = 0;
    for sender in senders {
        sent += tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("senders finish their last message after healing")
            .expect("sender task");
    }
    println!("{sent} messages acknowledged over {rounds} fault rounds");
    assert!(sent > 0, "no message got through");

    let reader = client(&cluster, Transport::Grpc).await;
    let mut inboxes = BTreeMap::new();
    for r in 0..RECIPIENTS {
        let token = reader
            .login(&recipient_name(r), PASSWORD)
            .await
            .unwrap()
            .token;
        inboxes.insert(recipient_name(r), inbox(&reader, token).await);
    }
    check_listeners(&record, &inboxes, &listeners, seed).await;
}

#[test]
fn no_acknowledged_message_is_lost_duplicated_or_reordered_through_faults() {
    let _one = one_cluster();
    let rounds = env_number("CORVID_FAULT_ROUNDS").map_or(DEFAULT_ROUNDS, |n| n as usize);
    let seed = env_number("CORVID_FAULT_SEED").unwrap_or_else(rand::random);
    run_faults(rounds, seed);
}

/// A leader cut off with a minority acknowledges no write; the majority goes on; after
/// healing, the writes retried with their client ids are stored once each.
#[test]
fn a_leader_cut_off_with_a_minority_acknowledges_nothing() {
    let _one = one_cluster();
    cut_off_leader();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_leader() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ProcessCluster::start(dir.path(), SERVERS).await;
    let setup = client(&cluster, Transport::Wire).await;
    for name in ["alice", "bob"] {
        setup.create_account(name, "", PASSWORD).await.unwrap();
    }
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % SERVERS;

    // A client that talks only to the old leader, and gives up quickly.
    let mut config = ClientConfig::new(&[cluster.ports[leader].wire.to_string()]);
    config.request_timeout = Duration::from_secs(2);
    config.max_attempts = 1;
    let pinned = Client::connect_with(config).await.unwrap();
    let token = pinned.login("alice", PASSWORD).await.unwrap().token;
    // One write acknowledged before the cut.
    let before = pinned
        .send(token, "bob", "before the cut", 1)
        .await
        .unwrap();

    cluster.partition(&[leader, follower]);
    for id in 2..=4 {
        let result = pinned
            .send(token, "bob", &format!("during the cut {id}"), id)
            .await;
        assert!(
            result.is_err(),
            "the cut-off leader acknowledged write {id}: {result:?}"
        );
    }
    // The majority elects a leader of its own and serves.
    let majority: Vec<String> = (0..SERVERS)
        .filter(|i| *i != leader && *i != follower)
        .map(|i| cluster.ports[i].wire.to_string())
        .collect();
    let mut config = ClientConfig::new(&majority);
    config.request_timeout = Duration::from_secs(3);
    config.max_attempts = 20;
    let outside = Client::connect_with(config).await.unwrap();
    let bob = outside.login("bob", PASSWORD).await.unwrap().token;
    outside
        .send(bob, "alice", "from the majority", 100)
        .await
        .unwrap();

    cluster.heal();
    // Retrying everything with the same client ids stores each message once.
    let again = outside
        .send(token, "bob", "before the cut", 1)
        .await
        .unwrap();
    assert!(
        again.duplicate,
        "the write acknowledged before the cut was applied twice"
    );
    assert_eq!(again.message.id, before.message.id);
    for id in 2..=4 {
        outside
            .send(token, "bob", &format!("during the cut {id}"), id)
            .await
            .unwrap();
    }
    let mut texts = Vec::new();
    let mut before_id = None;
    loop {
        let page = outside
            .history(bob, "alice", before_id, Some(100))
            .await
            .unwrap();
        texts.splice(
            0..0,
            page.messages
                .iter()
                .filter(|m| m.from == "alice")
                .map(|m| m.text.clone()),
        );
        match page.next_before {
            Some(next) => before_id = Some(next),
            None => break,
        }
    }
    assert_eq!(
        texts,
        [
            "before the cut",
            "during the cut 2",
            "during the cut 3",
            "during the cut 4"
        ],
        "each write stored exactly once, in order"
    );
}

/// The largest text the kill-loop cluster accepts: far above the default, so that one
/// message spans many log pages and a log entry of a batch runs to megabytes.
const LARGE_TEXT_BYTES: usize = 256 << 10;

/// Large messages (4 KiB up to the text limit) over both protocols while the leader or a
/// random follower of three is killed with SIGKILL and restarted, round after round (never
/// more than one down): every acknowledged message ends in its recipient's inbox exactly
/// once, in each sender's order, every listener is pushed exactly its inbox, and every
/// server starts again after each kill and after all are killed at once.
#[test]
fn large_messages_survive_kill_9_of_leaders_and_followers_in_a_loop() {
    let _one = one_cluster();
    let rounds = env_number("CORVID_FAULT_ROUNDS").map_or(8, |n| n as usize);
    let seed = env_number("CORVID_FAULT_SEED").unwrap_or_else(rand::random);
    kill_loop(rounds, seed);
}

/// A text of `len` bytes that [`Record::check`] reads as message `seq` of `sender`.
fn padded_text(sender: &str, seq: u64, len: usize) -> String {
    let mut text = format!("{} ", text(sender, seq));
    let pad = len.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', pad));
    text
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn kill_loop(rounds: usize, seed: u64) {
    const SERVERS: usize = 3;
    println!("kill schedule seed {seed} (CORVID_FAULT_SEED={seed} replays it), {rounds} rounds");
    let dir = tempfile::tempdir().unwrap();
    let limits = format!(
        "[limits]\nmax_text_bytes = {LARGE_TEXT_BYTES}\nmax_frame_bytes = {}\n",
        LARGE_TEXT_BYTES * 2
    );
    let mut cluster = ProcessCluster::start_with(dir.path(), SERVERS, &limits).await;
    let mut rng = StdRng::seed_from_u64(seed);

    create_accounts(&cluster).await;
    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));

    let listeners = spawn_listeners(&cluster, &record).await;

    let senders = spawn_senders(&cluster, &record, &stop, move |s, name, seq| {
        // One in four at the limit exactly, the others anywhere from 4 KiB to it; each
        // sender's sizes from its own generator, so that a seed gives the same texts.
        let mut sizes = StdRng::seed_from_u64(seed ^ ((s as u64) << 32) ^ seq);
        let len = if sizes.gen_range(0..4) == 0 {
            LARGE_TEXT_BYTES
        } else {
            sizes.gen_range(4096..=LARGE_TEXT_BYTES)
        };
        padded_text(name, seq, len)
    })
    .await;

    for round in 0..rounds {
        let leader = cluster.wait_for_leader().await;
        let victim = if round % 2 == 0 {
            leader
        } else {
            (leader + rng.gen_range(1..SERVERS)) % SERVERS
        };
        let hold = Duration::from_millis(rng.gen_range(200..1500));
        println!(
            "round {round}: leader {}, kill -9 of {}, down for {hold:?}",
            leader + 1,
            victim + 1
        );
        cluster.kill(victim);
        tokio::time::sleep(hold).await;
        cluster.restart(victim);
    }

    stop.store(true, Ordering::SeqCst);
    let mut sent = 0;
    for sender in senders {
        sent += tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("senders finish their last message")
            .expect("sender task");
    }
    println!("{sent} large messages acknowledged over {rounds} kill rounds");
    assert!(sent > 0, "no message got through");

    let check = |cluster: &ProcessCluster| {
        let addresses = cluster.addresses(Transport::Grpc);
        async move {
            let mut config = ClientConfig::new(&addresses);
            config.transport = Transport::Grpc.client();
            config.max_attempts = 30;
            let reader = Client::connect_with(config).await.expect("a reader");
            let mut inboxes = BTreeMap::new();
            for r in 0..RECIPIENTS {
                let token = reader
                    .login(&recipient_name(r), PASSWORD)
                    .await
                    .unwrap()
                    .token;
                inboxes.insert(recipient_name(r), inbox(&reader, token).await);
            }
            inboxes
        }
    };
    let inboxes = check(&cluster).await;
    check_listeners(&record, &inboxes, &listeners, seed).await;

    // Every server killed at once, then all started again: they start, and hold the same.
    for i in 0..SERVERS {
        cluster.kill(i);
    }
    for i in 0..SERVERS {
        let _ = cluster.restart_unready(i);
    }
    cluster.wait_for_leader().await;
    let again = check(&cluster).await;
    assert!(
        again == inboxes,
        "seed {seed}: the inboxes changed across a kill -9 of every server"
    );
}
