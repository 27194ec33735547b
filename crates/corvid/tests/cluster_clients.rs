//! End-to-end: the clients of a real three-server cluster while its leader is killed and
//! restarted. `corvid listen`, connected to the leader, goes on by itself and prints every
//! acknowledged message once, in order, with no gap and no repeat; a client sending
//! through a follower sees no error, only latency.

#[macro_use]
mod common;
#[path = "common/cluster.rs"]
mod cluster;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::{one_cluster, text, ProcessCluster};
use common::{Transport, User, PASSWORD};
use corvid_client::{Client, ClientConfig};
use corvid_core::MessageId;

const SERVERS: usize = 3;

/// Messages acknowledged before the first kill, while the leader is down, and after its
/// restart.
const PER_PHASE: usize = 10;
/// Leader kills, each followed by a restart.
const KILLS: usize = 2;

over_both_transports!(listen_and_a_follower_client_see_a_leader_kill_only_as_latency);

/// Every server's address for `transport`, `first` at the head of the list: the server a
/// client connects to first, the others to fail over to.
fn servers_from(cluster: &ProcessCluster, transport: Transport, first: usize) -> String {
    let addresses = cluster.addresses(transport);
    let mut ordered = vec![addresses[first].clone()];
    ordered.extend(
        addresses
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, address)| address.clone()),
    );
    ordered.join(",")
}

/// What the sender saw: each acknowledged message's sequence number and id, and every
/// error a send returned.
#[derive(Default)]
struct Sent {
    acknowledged: Vec<(u64, MessageId)>,
    errors: Vec<String>,
}

fn listen_and_a_follower_client_see_a_leader_kill_only_as_latency(transport: Transport) {
    let _one = one_cluster();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = runtime.block_on(ProcessCluster::start(dir.path(), SERVERS));
    let leader = runtime.block_on(cluster.wait_for_leader());
    let follower = (leader + 1) % SERVERS;

    let user = |name: &str, first: usize| User {
        name: name.to_string(),
        session: dir.path().join(format!("{name}.session.json")),
        server: servers_from(&cluster, transport, first),
        transport,
        tls_ca: None,
    };
    let alice = user("alice", follower);
    let bob = user("bob", leader);
    for person in [&alice, &bob] {
        person.register();
        person.login();
    }
    // `corvid listen` (the real binary), given every server, connected to the leader.
    let mut listener = bob.listen();
    alice.wait_online("bob");

    // The sender: a client whose first server is a follower, sending numbered messages
    // one after another for as long as the test runs, with the default client settings.
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut config = ClientConfig::new(
        &servers_from(&cluster, transport, follower)
            .split(',')
            .map(str::to_string)
            .collect::<Vec<_>>(),
    );
    config.transport = transport.client();
    let sender = runtime.spawn({
        let (sent, stop) = (sent.clone(), stop.clone());
        async move {
            let client = Client::connect_with(config).await.expect("connect");
            let token = client.login("alice", PASSWORD).await.expect("login").token;
            let mut seq = 1;
            while !stop.load(Ordering::SeqCst) {
                match client.send(token, "bob", &text("alice", seq), seq).await {
                    Ok(answer) => {
                        sent.lock()
                            .unwrap()
                            .acknowledged
                            .push((seq, answer.message.id));
                        seq += 1;
                    }
                    // Recorded to fail the test; the same message is tried again, so
                    // that `listen`'s output can still be checked.
                    Err(error) => sent
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("message {seq}: {error}")),
                }
            }
        }
    });
    let wait_for_acknowledged = |count: usize, phase: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while sent.lock().unwrap().acknowledged.len() < count {
            assert!(
                Instant::now() < deadline,
                "{phase}: fewer than {count} messages acknowledged in 30 s; errors: {:?}",
                sent.lock().unwrap().errors
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    wait_for_acknowledged(PER_PHASE, "before the kill");
    // The first kill takes the server `listen` is on; the second, whichever server leads
    // then (it may be the sender's).
    let mut victim = leader;
    for round in 1..=KILLS {
        cluster.kill(victim);
        let at_kill = sent.lock().unwrap().acknowledged.len();
        wait_for_acknowledged(
            at_kill + PER_PHASE,
            &format!("kill {round}: with the leader down"),
        );
        cluster.restart(victim);
        let at_restart = sent.lock().unwrap().acknowledged.len();
        wait_for_acknowledged(
            at_restart + PER_PHASE,
            &format!("kill {round}: after the restart"),
        );
        victim = runtime.block_on(cluster.wait_for_leader());
    }
    stop.store(true, Ordering::SeqCst);
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), sender).await })
        .expect("the sender finishes its last message")
        .expect("the sender task");

    let sent = std::mem::take(&mut *sent.lock().unwrap());
    assert!(
        sent.errors.is_empty(),
        "the client on a follower saw errors: {:?}",
        sent.errors
    );
    assert!(
        sent.acknowledged.windows(2).all(|w| w[0].1 < w[1].1),
        "message ids did not increase: {:?}",
        sent.acknowledged
    );

    // `listen` printed exactly the acknowledged messages, in order, and is still running.
    let mut printed = Vec::new();
    while printed.len() < sent.acknowledged.len() {
        let line = listener.next();
        if line["type"] == "message" {
            printed.push((
                line["text"].as_str().unwrap_or_default().to_string(),
                MessageId(line["id"].as_u64().unwrap_or_default()),
            ));
        }
    }
    let expected: Vec<(String, MessageId)> = sent
        .acknowledged
        .iter()
        .map(|(seq, id)| (text("alice", *seq), *id))
        .collect();
    assert_eq!(
        printed, expected,
        "listen's messages against the acknowledged ones"
    );
    listener.quiet();
    assert!(
        listener.child.try_wait().unwrap().is_none(),
        "listen exited across the leader kill"
    );
    listener.stop();
    drop(cluster);
}
