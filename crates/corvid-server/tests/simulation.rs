//! A fault simulation of a five-server cluster, run for many seeds: Corvid's real nodes
//! (`corvid_raft::Node`, each on its own data directory) and service (`Service`: sends,
//! linearizable reads, subscriptions with their pushes and delivery receipts), joined by an
//! in-process network that a seeded schedule breaks, while several users send and listen.
//!
//! The faults: partitions (a minority cut off both ways, or links cut one way only: the
//! request arrives but its answer never does), calls dropped (before or after the peer
//! served them) and delayed, and crashes and restarts of at most two servers at a time (a
//! crash stops the node and reopens it later on its directory; power loss, where unsynced
//! writes vanish, is `corvid-raft/tests/crash.rs`'s subject). Each user sends numbered
//! messages through any server, retrying with the same client id on another server when a
//! call fails, and keeps one subscription, resuming after the last message it saw on
//! another server when its server goes away (as `corvid-client` does).
//!
//! Checked while the faults run:
//! - no server's vote ever goes backwards, across its restarts too (every node's openraft
//!   metrics are watched). openraft's leader ids are (term, node id), totally ordered, so a
//!   term may see a second leader that supersedes the first; at most one leader per leader
//!   id, and none granted below a vote already given, is the rule (see [`watch_votes`]);
//! - a committed entry never changes: every entry a server has applied is recorded as
//!   (index → log id, hash of its commands), and every server's log is compared with it,
//!   again after each restart and once more at the end;
//! - servers at the same applied index have the same state (a digest of every state table,
//!   read in one transaction with the index it is at).
//!
//! Checked at the end, after every fault is healed: every acknowledged message was pushed
//! to its recipient exactly once, each sender's messages in the order they were sent, and
//! nothing was pushed that was never sent; each inbox (read through every server) holds
//! exactly the acknowledged messages, in order.
//!
//! A seed replays the same run. It fixes the fault schedule (when each fault comes and what
//! it is), every user's operations (recipients, pauses, the servers tried), the odds of each
//! drop and delay, and each server's election timeout; and the run itself happens the same
//! way every time: all five servers, their users and the network run on one tokio
//! current-thread runtime with paused time (it jumps to the next timer whenever every task
//! waits) and a seeded `select!`, with the storage's blocking work, the log's fsyncs and the
//! servers' randomness and wall clock in replay mode (`corvid_store::replay`). Each run ends
//! with a digest of what happened (every committed entry, every acknowledgement and push,
//! the leaders, the virtual time taken), and `a_seed_replays_the_same_run` checks that
//! running a seed twice gives the same digest. A failure prints its seed and the command
//! that runs it again; `CORVID_SIM_SEEDS=N` runs N seeds (a soak), `CORVID_SIM_SEED=S` only
//! seed S.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corvid_core::{
    AccountId, ApiError, Command, ErrorCode, Event, MessageId, Outcome, Request, Response,
    SessionPolicy, SubscribeFrom, Token,
};
use corvid_raft::network::{LinkError, Links};
use corvid_raft::peer::{PeerCall, PeerService};
use corvid_raft::{Node, NodeConfig, Peers, RaftTiming};
use corvid_server::config::Login;
use corvid_server::hub::{Hub, HubLimits};
use corvid_server::service::{now, Service, ServiceConfig};
use corvid_store::typ::{LogId, NodeId, Vote};
use corvid_store::{ClientAddrs, ClusterId, Member};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Seeds run when `CORVID_SIM_SEEDS` does not say.
const SEEDS: u64 = 100;
/// Seeds run at once, each its own cluster on its own runtime and thread.
const PARALLEL_RUNS: usize = 2;
/// Real time one seed may take. A run takes about a second; one that takes this long has
/// a task that never waits.
const REAL_TIME_LIMIT: Duration = Duration::from_secs(120);
const SERVERS: u64 = 5;
/// At most this many servers are down at once: a majority of five always remains.
const MAX_DOWN: usize = 2;
const USERS: usize = 4;
/// Messages each user sends in one run.
const MESSAGES_PER_USER: u64 = 8;
/// How long faults are made; then everything is healed.
const FAULT_PHASE: Duration = Duration::from_millis(1000);
/// Bounds every wait for the healed cluster to reach a state.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a user waits for one call before it tries again elsewhere.
const ATTEMPT: Duration = Duration::from_secs(2);
/// A lost answer is noticed after this long (or the call's own timeout, if shorter).
const LOST_AFTER: Duration = Duration::from_millis(100);
/// How often the servers' logs and states are compared.
const SAMPLE_EVERY: Duration = Duration::from_millis(30);
/// Snapshots (and log purges behind them) come often, so that restarted servers catch up
/// by snapshot as well as by log.
const SNAPSHOT_EVERY: u64 = 10;
/// Elections on an in-process network take a few heartbeats. openraft draws each server's
/// election timeout from its range with a generator of its own, so each server's range is
/// one millisecond wide, drawn by the seed from this one.
const HEARTBEAT_MS: u64 = 30;
const ELECTION_TIMEOUT_MS: std::ops::Range<u64> = 120..240;
const CLUSTER: ClusterId = ClusterId([9; 16]);
/// A well-formed argon2id hash: accounts are made by proposing `CreateAccount` directly, so
/// no password is hashed (the password service is not what is simulated).
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

#[test]
fn a_five_server_cluster_under_faults_loses_duplicates_and_reorders_nothing() {
    let seeds: Vec<u64> = match std::env::var("CORVID_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("CORVID_SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("CORVID_SIM_SEEDS")
                .map(|n| n.parse().expect("CORVID_SIM_SEEDS is a number"))
                .unwrap_or(SEEDS);
            (1..=count).collect()
        }
    };
    // A run keeps one thread busy (its clock is virtual), so runs go side by side.
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<String>> = Mutex::default();
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_RUNS {
            scope.spawn(|| loop {
                if !lock(&failures).is_empty() {
                    return;
                }
                let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                if let Err(failure) = run_seed(seed) {
                    lock(&failures).push(failure);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The same seed, run twice, does the same thing: the same entries committed in the same
/// order, the same acknowledgements and pushes, the same leaders, in the same virtual time.
#[test]
fn a_seed_replays_the_same_run() {
    for seed in [7, 1_000_003] {
        let digests: Vec<(u64, String)> = (0..2)
            .map(|_| match replay_in_time(seed) {
                Ok(run) => (run.digest, run.summary),
                Err(failure) => panic!("{failure}"),
            })
            .collect();
        assert_eq!(digests[0], digests[1], "seed {seed} ran two different ways");
    }
}

/// Runs seed `seed` on this thread: its own current-thread runtime, paused and seeded, with
/// the servers in replay mode.
fn replay_seed(seed: u64) -> Result<Result<Replayed, Vec<String>>, Box<dyn std::any::Any + Send>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()))
        .build()
        .expect("a runtime");
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            corvid_store::replay::start(seed);
            run(seed).await
        })
    }));
    corvid_store::replay::stop();
    runtime.shutdown_timeout(Duration::from_secs(5));
    outcome
}

/// Runs one seed and prints its summary; a failure says what went wrong and how to replay
/// it.
fn run_seed(seed: u64) -> Result<(), String> {
    let run = replay_in_time(seed)?;
    eprintln!("seed {seed}: {}", run.summary);
    Ok(())
}

/// Runs one seed on a thread of its own, for at most [`REAL_TIME_LIMIT`] of real time: a
/// task that loops without ever waiting keeps a paused clock from moving, so it would hang
/// the run rather than time it out.
fn replay_in_time(seed: u64) -> Result<Replayed, String> {
    let replay = format!("CORVID_SIM_SEED={seed} cargo test -p corvid-server --test simulation");
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || {
            let _ = done.send(replay_seed(seed));
        })
        .expect("a thread for the run");
    let outcome = outcome.recv_timeout(REAL_TIME_LIMIT).map_err(|_| {
        format!(
            "seed {seed} was still running after {REAL_TIME_LIMIT:?} of real time: a task \
             loops without waiting (the paused clock moves only when every task waits)\n\
             replay it with: {replay}"
        )
    })?;
    match outcome {
        Ok(Ok(run)) => Ok(run),
        Ok(Err(violations)) => Err(format!(
            "seed {seed} failed:\n  {}\nreplay it with: {replay}",
            violations.join("\n  ")
        )),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!(
                "seed {seed} panicked: {reason}\nreplay it with: {replay}"
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The network.

/// The in-process network between the servers, and the faults it is told to make.
struct Net {
    services: Mutex<BTreeMap<NodeId, Arc<PeerService>>>,
    /// Directed links that carry nothing: `(from, to)`.
    blocked: Mutex<BTreeSet<(NodeId, NodeId)>>,
    weather: Mutex<Weather>,
    /// Draws each call's drops and delays.
    rng: Mutex<StdRng>,
}

/// Drops and delays of every link.
#[derive(Clone, Copy, Debug, Default)]
struct Weather {
    /// Percent of calls lost, half before and half after the peer served them.
    drop_percent: u32,
    /// Each way of a call is delayed by up to this long.
    max_delay_ms: u64,
}

impl Net {
    fn new(seed: u64) -> Arc<Net> {
        Arc::new(Net {
            services: Mutex::default(),
            blocked: Mutex::default(),
            weather: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b00)),
        })
    }

    fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        lock(&self.blocked).contains(&(from, to))
    }

    fn service(&self, id: NodeId) -> Option<Arc<PeerService>> {
        lock(&self.services).get(&id).cloned()
    }

    /// What befalls one call: `(lost before, lost after, delay there, delay back)`.
    fn roll(&self) -> (bool, bool, Duration, Duration) {
        let weather = *lock(&self.weather);
        let mut rng = lock(&self.rng);
        let lost = rng.gen_range(0..100) < weather.drop_percent;
        let before = rng.gen_bool(0.5);
        let mut delay = || Duration::from_millis(rng.gen_range(0..=weather.max_delay_ms));
        let (there, back) = (delay(), delay());
        (lost && before, lost && !before, there, back)
    }

    /// Cuts `side` off from the other servers, both ways (and nothing else).
    fn partition(&self, side: &BTreeSet<NodeId>) {
        let mut blocked = lock(&self.blocked);
        blocked.clear();
        for a in side {
            for b in (1..=SERVERS).filter(|b| !side.contains(b)) {
                blocked.insert((*a, b));
                blocked.insert((b, *a));
            }
        }
    }

    fn heal(&self) {
        lock(&self.blocked).clear();
        *lock(&self.weather) = Weather::default();
    }
}

struct SimLinks {
    net: Arc<Net>,
    from: NodeId,
}

impl Links for SimLinks {
    fn call<'a>(
        &'a self,
        target: NodeId,
        _address: &'a str,
        call: PeerCall,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, LinkError>> {
        Box::pin(async move {
            let net = &self.net;
            let lost = || async {
                tokio::time::sleep(LOST_AFTER.min(timeout)).await;
                Err(LinkError::Lost(format!("{call:?} to {target} lost")))
            };
            // A cut link or a stopped server refuses the connection: nothing was sent.
            let Some(service) = net
                .service(target)
                .filter(|_| !net.is_blocked(self.from, target))
            else {
                return Err(LinkError::NotSent(format!("{target} is unreachable")));
            };
            let (lost_before, lost_after, there, back) = net.roll();
            tokio::time::sleep(there).await;
            if lost_before || net.is_blocked(self.from, target) {
                return lost().await;
            }
            let answer = match tokio::time::timeout(timeout, service.handle(call, &body)).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return Err(LinkError::Refused(e.to_string())),
                Err(_) => return Err(LinkError::Lost(format!("{call:?} to {target} timed out"))),
            };
            tokio::time::sleep(back).await;
            let same_server = net
                .service(target)
                .is_some_and(|now| Arc::ptr_eq(&now, &service));
            if lost_after || !same_server || net.is_blocked(target, self.from) {
                return lost().await;
            }
            Ok(answer)
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// The fault schedule.

#[derive(Clone, Debug)]
enum Fault {
    /// These servers (a minority) are cut off from the others, both ways.
    Partition(BTreeSet<NodeId>),
    /// The leader of the moment, with `with_one_more` another server, is cut off from the
    /// others both ways: a leader left with a minority.
    IsolateLeader {
        with_one_more: Option<NodeId>,
    },
    /// These directed links carry nothing.
    OneWay(Vec<(NodeId, NodeId)>),
    Weather(Weather),
    /// Every link works again, with no drops or delays.
    HealNetwork,
    /// Stops the leader of the moment (if fewer than [`MAX_DOWN`] are down).
    CrashLeader,
    /// Stops this server (if it is up and fewer than [`MAX_DOWN`] are down).
    Crash(NodeId),
    /// Reopens the server that has been down longest.
    Restart,
}

/// The faults of one seed, each after the pause before it.
fn schedule(rng: &mut StdRng) -> Vec<(Duration, Fault)> {
    let mut faults = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        let pause = Duration::from_millis(rng.gen_range(50..250));
        at += pause;
        if at >= FAULT_PHASE {
            return faults;
        }
        let fault = match rng.gen_range(0..100) {
            0..=9 => Fault::IsolateLeader {
                with_one_more: rng.gen_bool(0.5).then(|| rng.gen_range(1..=SERVERS)),
            },
            10..=19 => {
                let size = rng.gen_range(1..=2);
                let mut side = BTreeSet::new();
                while side.len() < size {
                    side.insert(rng.gen_range(1..=SERVERS));
                }
                Fault::Partition(side)
            }
            20..=29 => {
                let links = (0..rng.gen_range(1..=4))
                    .map(|_| {
                        let from = rng.gen_range(1..=SERVERS);
                        let to = (from + rng.gen_range(1..SERVERS) - 1) % SERVERS + 1;
                        (from, to)
                    })
                    .collect();
                Fault::OneWay(links)
            }
            30..=41 => Fault::Weather(Weather {
                drop_percent: rng.gen_range(0..=30),
                max_delay_ms: rng.gen_range(0..=30),
            }),
            42..=54 => Fault::HealNetwork,
            55..=67 => Fault::CrashLeader,
            68..=79 => Fault::Crash(rng.gen_range(1..=SERVERS)),
            _ => Fault::Restart,
        };
        faults.push((pause, fault));
    }
}

// ---------------------------------------------------------------------------------------
// The servers and what is checked while they run.

/// One running server: its service over its node, and a token cancelled when it stops.
struct Server {
    service: Arc<Service>,
    down: CancellationToken,
}

/// What the checks found and recorded while the cluster runs.
#[derive(Default)]
struct Record {
    violations: Vec<String>,
    /// Every leader id held, (term, server), as the leaders' own metrics said.
    leaders: BTreeSet<(u64, NodeId)>,
    /// Each server's last vote, kept across its restarts.
    votes: BTreeMap<NodeId, Vote>,
    /// Every applied (so committed) entry: index → (log id, hash of its payload, who said).
    committed: BTreeMap<u64, (LogId, u64, NodeId)>,
    /// The state digest at each applied index: index → (digest, who said).
    digests: BTreeMap<u64, (u64, NodeId)>,
    elections: usize,
    crashes: usize,
    restarts: usize,
}

struct Cluster {
    net: Arc<Net>,
    root: tempfile::TempDir,
    servers: Mutex<BTreeMap<NodeId, Arc<Server>>>,
    /// Stopped servers, the one down longest first.
    down: Mutex<Vec<NodeId>>,
    record: Mutex<Record>,
    /// For the users' choices of server.
    rng: Mutex<StdRng>,
    /// For each start's election timeout.
    timing: Mutex<StdRng>,
}

fn member(id: NodeId) -> Member {
    Member {
        raft_addr: format!("sim-{id}"),
        client: ClientAddrs {
            wire: Some(format!("sim-{id}")),
            ..ClientAddrs::default()
        },
    }
}

fn policy() -> SessionPolicy {
    SessionPolicy {
        idle_timeout_ms: 3_600_000,
        max_lifetime_ms: 86_400_000,
        single_session: false,
    }
}

impl Cluster {
    fn violation(&self, what: String) {
        lock(&self.record).violations.push(what);
    }

    /// Opens server `id` on its directory (new or left by an earlier run) and puts it on
    /// the network, as `corvid serve` starts a configured member.
    async fn start(self: &Arc<Self>, id: NodeId) {
        let hub = Arc::new(Hub::new(HubLimits::default()));
        let sink = hub.clone();
        let config = NodeConfig {
            data_dir: self.root.path().join(format!("corvid-data-{id}")),
            node_id: id,
            member: member(id),
            cluster_id: Some(CLUSTER),
            snapshot_every: SNAPSHOT_EVERY,
            snapshot_log_bytes: corvid_raft::SNAPSHOT_LOG_BYTES,
            min_free_bytes: 0,
            peers: Peers::new(
                Arc::new(SimLinks {
                    net: self.net.clone(),
                    from: id,
                }),
                BTreeMap::new(),
            ),
            timing: {
                let min = lock(&self.timing).gen_range(ELECTION_TIMEOUT_MS);
                RaftTiming {
                    heartbeat_ms: HEARTBEAT_MS,
                    election_timeout_min_ms: min,
                    election_timeout_max_ms: min + 1,
                }
            },
            max_append_bytes: 1 << 20,
        };
        let node = Node::open(config, Arc::new(move |effects| sink.dispatch(effects)))
            .await
            .unwrap_or_else(|e| panic!("server {id} did not open: {e}"));
        if !node.is_initialized().await.unwrap() {
            let members = (1..=SERVERS).map(|id| (id, member(id))).collect();
            node.initialize(members).await.unwrap();
        }
        let online = hub.clone();
        node.report_presence(Arc::new(move || online.online_usernames()));
        lock(&self.net.services).insert(id, node.peer_service());
        let login = Login {
            hash_threads: 1,
            ..Login::default()
        };
        let service = Service::new(
            node,
            hub,
            ServiceConfig {
                session_policy: policy(),
                max_text_bytes: 4096,
                login,
                metrics: corvid_server::metrics::Metrics::off(),
            },
        )
        .unwrap();
        let server = Arc::new(Server {
            service,
            down: CancellationToken::new(),
        });
        tokio::spawn(watch_votes(self.clone(), id, server.clone()));
        lock(&self.servers).insert(id, server);
    }

    /// Stops server `id`: off the network, its subscriptions end, its node shuts down.
    async fn crash(&self, id: NodeId) {
        let Some(server) = lock(&self.servers).remove(&id) else {
            return;
        };
        lock(&self.net.services).remove(&id);
        server.down.cancel();
        if let Err(e) = server.service.node().shutdown().await {
            self.violation(format!("server {id} did not shut down: {e}"));
        }
        lock(&self.down).push(id);
        lock(&self.record).crashes += 1;
    }

    async fn restart_longest_down(self: &Arc<Self>) {
        let id = {
            let mut down = lock(&self.down);
            if down.is_empty() {
                return;
            }
            down.remove(0)
        };
        self.start(id).await;
        lock(&self.record).restarts += 1;
    }

    fn live(&self) -> BTreeMap<NodeId, Arc<Server>> {
        lock(&self.servers).clone()
    }

    /// A server that is up, chosen at random.
    fn any_server(&self) -> Option<(NodeId, Arc<Server>)> {
        let live: Vec<(NodeId, Arc<Server>)> = self.live().into_iter().collect();
        if live.is_empty() {
            return None;
        }
        let pick = lock(&self.rng).gen_range(0..live.len());
        Some(live[pick].clone())
    }

    fn leader(&self) -> Option<NodeId> {
        self.live().into_iter().find_map(|(id, server)| {
            let metrics = server.service.node().raft().metrics();
            let is_leader = metrics.borrow().state.is_leader();
            is_leader.then_some(id)
        })
    }

    async fn apply(self: &Arc<Self>, fault: Fault) {
        match fault {
            Fault::Partition(side) => self.net.partition(&side),
            Fault::IsolateLeader { with_one_more } => {
                if let Some(leader) = self.leader() {
                    let side = [Some(leader), with_one_more]
                        .into_iter()
                        .flatten()
                        .collect();
                    self.net.partition(&side);
                }
            }
            Fault::OneWay(links) => {
                let mut blocked = lock(&self.net.blocked);
                blocked.clear();
                blocked.extend(links);
            }
            Fault::Weather(weather) => *lock(&self.net.weather) = weather,
            Fault::HealNetwork => self.net.heal(),
            Fault::CrashLeader => {
                if let Some(leader) = self.leader() {
                    if lock(&self.down).len() < MAX_DOWN {
                        self.crash(leader).await;
                    }
                }
            }
            Fault::Crash(id) => {
                if lock(&self.down).len() < MAX_DOWN {
                    self.crash(id).await;
                }
            }
            Fault::Restart => self.restart_longest_down().await,
        }
    }

    /// Compares every server's newly applied entries and its state with what the others
    /// had at the same index. `checked` is, per running server, the last index compared.
    async fn compare(&self, checked: &mut BTreeMap<NodeId, (Arc<Server>, u64)>) {
        for (id, server) in self.live() {
            let node = server.service.node();
            let from = match checked.get(&id) {
                // The same run of the server: go on from where it was.
                Some((seen, upto)) if Arc::ptr_eq(seen, &server) => *upto + 1,
                // New, or restarted: its whole log again.
                _ => 0,
            };
            let applied = node.raft().metrics().borrow().last_applied;
            let Some(applied) = applied else {
                continue;
            };
            if applied.index >= from {
                match node.log_entries(from..=applied.index).await {
                    Ok(entries) => self.compare_entries(id, &entries),
                    // It stopped meanwhile.
                    Err(_) => continue,
                }
                checked.insert(id, (server.clone(), applied.index));
            }
            if let Ok(state) = node.state_digest() {
                if let Some(at) = state.last_applied {
                    let mut record = lock(&self.record);
                    match record.digests.get(&at.index) {
                        Some((digest, by)) if *digest != state.digest => {
                            let what = format!(
                                "servers {by} and {id} differ in state at applied index {}",
                                at.index
                            );
                            record.violations.push(what);
                        }
                        Some(_) => {}
                        None => {
                            record.digests.insert(at.index, (state.digest, id));
                        }
                    }
                }
            }
        }
    }

    fn compare_entries(&self, id: NodeId, entries: &[corvid_store::typ::Entry]) {
        let mut record = lock(&self.record);
        for entry in entries {
            let mut hasher = DefaultHasher::new();
            format!("{:?}", entry.payload).hash(&mut hasher);
            let hash = hasher.finish();
            let index = entry.log_id.index;
            match record.committed.get(&index) {
                Some((log_id, known, by)) if *log_id != entry.log_id || *known != hash => {
                    let what = format!(
                        "committed entry {index} changed: server {by} had {log_id:?}, \
                         server {id} has {:?} (same payload: {})",
                        entry.log_id,
                        *known == hash
                    );
                    record.violations.push(what);
                }
                Some(_) => {}
                None => {
                    record.committed.insert(index, (entry.log_id, hash, id));
                }
            }
        }
    }
}

/// Watches server `id`'s vote until the server stops: records each leadership it holds, and
/// checks that its vote never goes backwards.
///
/// openraft names a leader by its leader id, (term, node id), and in its default mode
/// these are totally ordered (openraft's `docs::data::leader_id`): a server grants a vote
/// only to a leader id at least as great as every one it granted before, so a term may see
/// a second leader, of a greater node id, which supersedes the first (no quorum is left to
/// commit anything for the first). Two leaders in one term are therefore not a fault;
/// what Raft's safety rests on is checked instead: no server's vote ever goes backwards,
/// across its restarts too (a vote forgotten in a crash would let it grant a lesser leader
/// the place it had given a greater one), and (in [`Cluster::compare_entries`]) no
/// committed entry ever changes.
async fn watch_votes(cluster: Arc<Cluster>, id: NodeId, server: Arc<Server>) {
    let mut metrics = server.service.node().raft().metrics();
    loop {
        let (vote, leads) = {
            let now = metrics.borrow_and_update();
            let vote = now.vote;
            // A leader is a server whose vote is its own and committed (granted by a
            // quorum). The server state alone is not enough: openraft publishes a restarted
            // leader as `Leader` at once, before a quorum confirms it again.
            let leads = now.state.is_leader()
                && vote.is_committed()
                && vote.leader_id().voted_for() == Some(id);
            (vote, leads)
        };
        // Term 0 is the vote a node publishes before it has read its own from disk.
        if vote.leader_id().get_term() > 0 {
            let mut record = lock(&cluster.record);
            if let Some(last) = record.votes.get(&id) {
                if vote.partial_cmp(last) == Some(std::cmp::Ordering::Less) {
                    let what = format!("server {id}'s vote went back from {last} to {vote}");
                    record.violations.push(what);
                }
            }
            record.votes.insert(id, vote);
            if leads {
                let leader = (vote.leader_id().get_term(), id);
                if record.leaders.insert(leader) {
                    record.elections += 1;
                }
            }
        }
        tokio::select! {
            _ = server.down.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// How many terms had more than one leader.
fn shared_terms(leaders: &BTreeSet<(u64, NodeId)>) -> usize {
    let mut per_term: BTreeMap<u64, usize> = BTreeMap::new();
    for (term, _) in leaders {
        *per_term.entry(*term).or_default() += 1;
    }
    per_term.values().filter(|&&leaders| leaders > 1).count()
}

// ---------------------------------------------------------------------------------------
// The users.

struct User {
    name: String,
    token: Token,
}

/// What the users saw.
#[derive(Default)]
struct Seen {
    /// (sender, sequence number) → the message id its acknowledgement carried, and the
    /// recipient.
    acknowledged: BTreeMap<(usize, u64), (MessageId, usize)>,
    /// Per recipient, every message pushed to it, in the order pushed: (id, sender's name,
    /// text).
    pushed: Vec<Vec<(MessageId, String, String)>>,
    /// Calls that failed and were tried again.
    retries: usize,
    resubscriptions: usize,
}

fn text(sender: usize, seq: u64) -> String {
    format!("user{sender}#{seq}")
}

/// `user3#7` → (3, 7).
fn parse(text: &str) -> Option<(usize, u64)> {
    let (user, seq) = text.strip_prefix("user")?.split_once('#')?;
    Some((user.parse().ok()?, seq.parse().ok()?))
}

/// Makes each user's account and session, through any server, before the faults start.
async fn sign_up(cluster: &Arc<Cluster>, rng: &mut StdRng) -> Vec<User> {
    let mut users = Vec::new();
    for u in 0..USERS {
        let name = format!("user{u}");
        let created = write(
            cluster,
            Command::CreateAccount {
                username: name.clone(),
                display_name: name.clone(),
                password_hash: HASH.into(),
                now: now(),
            },
        )
        .await;
        let Outcome::AccountCreated { account, .. } = created else {
            panic!("creating {name}: {created:?}");
        };
        let token = Token(rng.gen());
        login(cluster, account, token).await;
        users.push(User { name, token });
    }
    users
}

async fn login(cluster: &Arc<Cluster>, account: AccountId, token: Token) {
    let outcome = write(
        cluster,
        Command::Login {
            account,
            session: token.session_key(),
            policy: policy(),
            now: now(),
        },
    )
    .await;
    assert!(
        matches!(outcome, Outcome::LoggedIn { .. }),
        "login: {outcome:?}"
    );
}

/// Proposes `command` through any server until one applies it (no faults yet).
async fn write(cluster: &Arc<Cluster>, command: Command) -> Outcome {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some((_, server)) = cluster.any_server() {
            if let Ok(outcome) = server.service.node().write(command.clone()).await {
                return outcome;
            }
        }
        assert!(Instant::now() < deadline, "no server applied {command:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends user `sender`'s messages, one at a time, each retried (same client id) on
/// another server until acknowledged.
async fn send_all(
    cluster: Arc<Cluster>,
    users: Arc<Vec<User>>,
    seen: Arc<Mutex<Seen>>,
    sender: usize,
    plan: Vec<(usize, Duration)>,
) {
    let user = &users[sender];
    for (seq, (to, pause)) in (1..).zip(plan) {
        tokio::time::sleep(pause).await;
        let deadline = Instant::now() + DEADLINE;
        let message = loop {
            let Some((_, server)) = cluster.any_server() else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let request = Request::Send {
                token: user.token,
                to: users[to].name.clone(),
                text: text(sender, seq),
                client_id: seq,
            };
            match tokio::time::timeout(ATTEMPT, server.service.handle(request)).await {
                Ok(Ok(Response::Sent { message, .. })) => break message,
                Ok(Ok(other)) => {
                    cluster.violation(format!("a send was answered {other:?}"));
                    return;
                }
                Ok(Err(ApiError { code, .. })) if !retried(code) => {
                    cluster.violation(format!("{} #{seq} was refused: {code:?}", user.name));
                    return;
                }
                Ok(Err(_)) | Err(_) => lock(&seen).retries += 1,
            }
            if Instant::now() > deadline {
                cluster.violation(format!("{} #{seq} was never acknowledged", user.name));
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if message.from != user.name || message.to != users[to].name {
            cluster.violation(format!("{} #{seq} acknowledged as {message:?}", user.name));
        }
        lock(&seen)
            .acknowledged
            .insert((sender, seq), (message.id, to));
    }
}

/// The failures a client answers by trying again: the cluster is between leaders, or the
/// server it asked is going away.
fn retried(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::NotLeader | ErrorCode::Unavailable)
}

/// Keeps one subscription for user `me` until `done`, on a random server, resuming after
/// the last message seen on another when it ends or its server stops; now and then it
/// moves on by itself.
async fn listen(
    cluster: Arc<Cluster>,
    users: Arc<Vec<User>>,
    seen: Arc<Mutex<Seen>>,
    me: usize,
    done: CancellationToken,
) {
    let mut last = MessageId(0);
    let mut rng = StdRng::seed_from_u64(me as u64);
    while !done.is_cancelled() {
        let Some((_, server)) = cluster.any_server() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let subscribed = tokio::time::timeout(
            ATTEMPT,
            server
                .service
                .subscribe(users[me].token, SubscribeFrom::After(last)),
        )
        .await;
        let Ok(Ok(mut subscription)) = subscribed else {
            lock(&seen).resubscriptions += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let move_on = tokio::time::sleep(Duration::from_millis(rng.gen_range(200..800)));
        tokio::pin!(move_on);
        loop {
            let event = tokio::select! {
                event = subscription.next() => event,
                _ = server.down.cancelled() => break,
                _ = &mut move_on => break,
                _ = done.cancelled() => return,
            };
            match event {
                Some(Event::Message(message)) => {
                    if message.id <= last {
                        cluster.violation(format!(
                            "{} was pushed {:?} after {last:?}",
                            users[me].name, message.id
                        ));
                    }
                    last = last.max(message.id);
                    lock(&seen).pushed[me].push((message.id, message.from, message.text));
                }
                Some(Event::SessionEnded { reason }) => {
                    cluster.violation(format!("{}'s session ended: {reason:?}", users[me].name));
                    return;
                }
                Some(_) => {}
                None => break,
            }
        }
        lock(&seen).resubscriptions += 1;
    }
}

// ---------------------------------------------------------------------------------------
// One run.

/// What a run that broke no rule leaves: its summary, and the digest of everything it did.
struct Replayed {
    summary: String,
    digest: u64,
}

async fn run(seed: u64) -> Result<Replayed, Vec<String>> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = Arc::new(Cluster {
        net: Net::new(seed),
        root: data_root(),
        servers: Mutex::default(),
        down: Mutex::default(),
        record: Mutex::default(),
        rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x7573_6572_7300)),
        timing: Mutex::new(StdRng::seed_from_u64(seed ^ 0x7469_6d69_6e67)),
    });
    for id in 1..=SERVERS {
        cluster.start(id).await;
    }
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn({
        let cluster = cluster.clone();
        let stop = sampling.clone();
        async move {
            let mut checked = BTreeMap::new();
            while !stop.is_cancelled() {
                cluster.compare(&mut checked).await;
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        }
    });
    let users = Arc::new(sign_up(&cluster, &mut rng).await);
    let seen = Arc::new(Mutex::new(Seen {
        pushed: vec![Vec::new(); USERS],
        ..Seen::default()
    }));
    let listening = CancellationToken::new();
    let listeners: Vec<_> = (0..USERS)
        .map(|me| {
            tokio::spawn(listen(
                cluster.clone(),
                users.clone(),
                seen.clone(),
                me,
                listening.clone(),
            ))
        })
        .collect();
    let senders: Vec<_> = (0..USERS)
        .map(|sender| {
            let plan: Vec<(usize, Duration)> = (0..MESSAGES_PER_USER)
                .map(|_| {
                    let to = (sender + rng.gen_range(1..USERS)) % USERS;
                    let pause = FAULT_PHASE / MESSAGES_PER_USER as u32;
                    (to, pause.mul_f64(rng.gen_range(0.0..1.2)))
                })
                .collect();
            tokio::spawn(send_all(
                cluster.clone(),
                users.clone(),
                seen.clone(),
                sender,
                plan,
            ))
        })
        .collect();

    for (pause, fault) in schedule(&mut rng) {
        tokio::time::sleep(pause).await;
        cluster.apply(fault).await;
    }

    // Heal everything, then let the users finish.
    cluster.net.heal();
    while !lock(&cluster.down).is_empty() {
        cluster.restart_longest_down().await;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    wait_for_pushes(&cluster, &seen).await;
    listening.cancel();
    for listener in listeners {
        listener.await.unwrap();
    }
    wait_until_converged(&cluster).await;
    sampling.cancel();
    sampler.await.unwrap();
    // Every log whole once more, now that all servers are up and at the same index.
    cluster.compare(&mut BTreeMap::new()).await;
    check_inboxes(&cluster, &users, &seen).await;
    check_pushes(&cluster, &users, &seen);

    let (summary, digest) = {
        let record = lock(&cluster.record);
        let seen = lock(&seen);
        let took = started.elapsed();
        let mut digest = DefaultHasher::new();
        // Their debug forms: not every type here is `Hash`, and these name every field.
        format!(
            "{:?} {:?} {:?} {:?} {:?}",
            record.committed,
            record.leaders,
            (
                record.crashes,
                record.restarts,
                seen.retries,
                seen.resubscriptions
            ),
            seen.acknowledged,
            (&seen.pushed, took),
        )
        .hash(&mut digest);
        let digest = digest.finish();
        let summary = format!(
            "{} messages, {} leaders ({} terms with two or more), {} crashes, {} restarts, \
             {} retried calls, {} resubscriptions, {} entries compared, {:.3} s simulated, \
             digest {digest:016x}",
            seen.acknowledged.len(),
            record.elections,
            shared_terms(&record.leaders),
            record.crashes,
            record.restarts,
            seen.retries,
            seen.resubscriptions,
            record.committed.len(),
            took.as_secs_f64(),
        );
        (summary, digest)
    };
    let stopping = cluster.live().into_keys().map(|id| cluster.crash(id));
    futures::future::join_all(stopping).await;
    let violations = std::mem::take(&mut lock(&cluster.record).violations);
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(Replayed { summary, digest })
}

/// A directory for the servers' data directories: in memory (`/dev/shm`) where there is
/// such a filesystem. What is simulated is the cluster, not the disk (whose crashes
/// `corvid-raft/tests/crash.rs` covers), and each server reserves its next log chunk whole,
/// which a run should not take from a shared disk.
fn data_root() -> tempfile::TempDir {
    let memory = std::path::Path::new("/dev/shm");
    let builder = || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("corvid-sim-");
        builder
    };
    if memory.is_dir() {
        if let Ok(dir) = builder().tempdir_in(memory) {
            return dir;
        }
    }
    builder().tempdir().unwrap()
}

/// Waits until every acknowledged message was pushed to its recipient (or the deadline
/// passed: the checks then say what is missing).
async fn wait_for_pushes(cluster: &Cluster, seen: &Mutex<Seen>) {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        {
            let seen = lock(seen);
            let pushed: usize = seen.pushed.iter().map(Vec::len).sum();
            if pushed >= seen.acknowledged.len() {
                return;
            }
        }
        if !lock(&cluster.record).violations.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every server has applied the same last entry.
async fn wait_until_converged(cluster: &Cluster) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let applied: BTreeSet<Option<LogId>> = cluster
            .live()
            .values()
            .map(|server| server.service.node().raft().metrics().borrow().last_applied)
            .collect();
        if applied.len() == 1 {
            return;
        }
        if Instant::now() > deadline {
            cluster.violation(format!("the servers never converged: applied {applied:?}"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every push: exactly the acknowledged messages, each once, each sender's in order.
fn check_pushes(cluster: &Cluster, users: &[User], seen: &Mutex<Seen>) {
    let seen = lock(seen);
    // What was sent: id → (sender, seq, recipient).
    let mut sent: BTreeMap<MessageId, (usize, u64, usize)> = BTreeMap::new();
    for ((sender, seq), (id, to)) in &seen.acknowledged {
        if let Some(earlier) = sent.insert(*id, (*sender, *seq, *to)) {
            cluster.violation(format!(
                "message {id:?} acknowledged for both {earlier:?} and {:?}",
                (sender, seq)
            ));
        }
    }
    // A sender's acknowledged ids grow with its sequence numbers.
    for sender in 0..USERS {
        let ids: Vec<MessageId> = seen
            .acknowledged
            .range((sender, 0)..(sender + 1, 0))
            .map(|(_, (id, _))| *id)
            .collect();
        if ids.windows(2).any(|pair| pair[0] >= pair[1]) {
            cluster.violation(format!("user{sender}'s message ids go backwards: {ids:?}"));
        }
    }
    for (me, pushed) in seen.pushed.iter().enumerate() {
        let mut got: BTreeSet<MessageId> = BTreeSet::new();
        let mut last_seq: BTreeMap<usize, u64> = BTreeMap::new();
        for (id, from, text) in pushed {
            if !got.insert(*id) {
                cluster.violation(format!("user{me} was pushed {id:?} twice"));
            }
            let Some((sender, seq)) = parse(text) else {
                cluster.violation(format!("user{me} was pushed {text:?}, never sent"));
                continue;
            };
            if sent.get(id) != Some(&(sender, seq, me))
                || users.get(sender).is_none_or(|u| u.name != *from)
            {
                cluster.violation(format!(
                    "user{me} was pushed {id:?} from {from}: {text:?}, never sent as such"
                ));
            }
            if last_seq
                .insert(sender, seq)
                .is_some_and(|before| before >= seq)
            {
                cluster.violation(format!("user{me} was pushed {text} out of order"));
            }
        }
        for (id, (sender, seq, _)) in sent.iter().filter(|(_, (_, _, to))| *to == me) {
            if !got.contains(id) {
                cluster.violation(format!(
                    "user{me} was never pushed {id:?} ({}), acknowledged to its sender",
                    text(*sender, *seq)
                ));
            }
        }
    }
}

/// Every inbox, read through every server (linearizable reads on followers too), holds
/// exactly the acknowledged messages to it, each sender's in order.
async fn check_inboxes(cluster: &Cluster, users: &[User], seen: &Mutex<Seen>) {
    let expected: BTreeMap<(usize, usize), Vec<MessageId>> = {
        let seen = lock(seen);
        let mut expected: BTreeMap<(usize, usize), Vec<MessageId>> = BTreeMap::new();
        for ((sender, _), (id, to)) in &seen.acknowledged {
            expected.entry((*sender, *to)).or_default().push(*id);
        }
        expected
    };
    for (id, server) in cluster.live() {
        for (me, user) in users.iter().enumerate() {
            for (sender, from) in users.iter().enumerate() {
                if sender == me {
                    continue;
                }
                let history = history(&server.service, user.token, &from.name).await;
                let got: Vec<MessageId> = match history {
                    Ok(messages) => messages
                        .into_iter()
                        .filter(|m| m.from == from.name && m.to == user.name)
                        .map(|m| m.id)
                        .collect(),
                    Err(e) => {
                        cluster.violation(format!("server {id} could not read history: {e:?}"));
                        continue;
                    }
                };
                let want = expected.get(&(sender, me)).cloned().unwrap_or_default();
                if got != want {
                    cluster.violation(format!(
                        "server {id}: {}'s inbox from {} is {got:?}, acknowledged {want:?}",
                        user.name, from.name
                    ));
                }
            }
        }
    }
}

/// The whole conversation of `token`'s user with `with`, oldest first.
async fn history(
    service: &Service,
    token: Token,
    with: &str,
) -> Result<Vec<corvid_core::Message>, ApiError> {
    let mut messages = Vec::new();
    let mut before = None;
    loop {
        let request = Request::History {
            token,
            with: with.to_string(),
            before,
            limit: Some(100),
        };
        let Response::History(page) = service.handle(request).await? else {
            return Err(ErrorCode::Internal.into());
        };
        let mut page_messages = page.messages;
        page_messages.append(&mut messages);
        messages = page_messages;
        match page.next_before {
            Some(next) => before = Some(next),
            None => return Ok(messages),
        }
    }
}
