//! A cluster of real `corvid serve` processes whose server-to-server links the test
//! controls, and the checker of what clients saw.
//!
//! Every server dials each peer through its own proxy (one per direction: server `i`
//! reaches server `j` through `links[i][j]`), because each server gets its own
//! configuration file in which its peers' server-to-server addresses are those proxies.
//! Blocking a proxy cuts that direction of traffic: the connections through it are
//! closed and new ones are closed at once, as when a network drops every packet. A cut of
//! both directions between two groups is a partition.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corvid_core::{Message, MessageId};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::common::{corvid, first_line, Transport};

/// How long a server may take to print its ready line (a leader is known).
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// One cluster at a time: two clusters of processes on two cores would measure the
/// machine, and their free ports could collide.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

/// Holds the right to run a cluster until dropped; every test that starts one takes it.
pub fn one_cluster() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A loopback port nobody listens on now. The configuration must name every address
/// before any server starts, so ports are picked ahead; another process taking one in
/// between is possible but unlikely on a test machine.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("a bound address")
}

/// One direction of server-to-server traffic, through a proxy the test can cut.
pub struct Link {
    /// Where the dialling server connects.
    pub listen: SocketAddr,
    blocked: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Link {
    /// Starts a proxy to `target` on the current tokio runtime.
    pub async fn start(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy");
        let listen = listener.local_addr().expect("a bound address");
        let blocked = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (is_blocked, live) = (blocked.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if is_blocked.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let mut live = live.lock().unwrap();
                live.retain(|handle| !handle.is_finished());
                live.push(task.abort_handle());
            }
        });
        Link {
            listen,
            blocked,
            connections,
        }
    }

    /// Drops this direction's traffic: open connections are closed, new ones refused.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::SeqCst)
    }
}

/// The addresses of one server.
#[derive(Clone, Debug)]
pub struct Ports {
    pub raft: SocketAddr,
    pub wire: SocketAddr,
    pub grpc: SocketAddr,
}

/// What a server process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Running {
    Up,
    /// SIGSTOP'd: alive, holding its connections, answering nothing.
    Stopped,
    /// SIGKILL'd, not restarted yet.
    Down,
}

/// `n` `corvid serve` processes forming one cluster in a temporary directory.
pub struct ProcessCluster {
    pub dir: PathBuf,
    pub ports: Vec<Ports>,
    /// `links[i][j]`: server `i`'s way to server `j` (`None` on the diagonal).
    pub links: Vec<Vec<Option<Link>>>,
    children: Vec<Option<Child>>,
    state: Vec<Running>,
    /// Configuration every server's file carries besides `[cluster]` (say, `[limits]`).
    extra_config: String,
}

impl ProcessCluster {
    /// Starts `n` servers (ids 1..=n; index `i` is id `i + 1`) and waits until each has
    /// printed its ready line.
    pub async fn start(dir: &Path, n: usize) -> ProcessCluster {
        ProcessCluster::start_with(dir, n, "").await
    }

    /// [`start`](Self::start), with `extra_config` (TOML sections other than `[cluster]`)
    /// in every server's configuration file.
    pub async fn start_with(dir: &Path, n: usize, extra_config: &str) -> ProcessCluster {
        // Every server port is held until the proxies are bound, so that no proxy (and no
        // two servers) can be given the same port; they are released just before the
        // servers start.
        let held: Vec<std::net::TcpListener> = (0..3 * n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
            .collect();
        let address = |i: usize| held[i].local_addr().expect("a bound address");
        let ports: Vec<Ports> = (0..n)
            .map(|i| Ports {
                raft: address(3 * i),
                wire: address(3 * i + 1),
                grpc: address(3 * i + 2),
            })
            .collect();
        let mut links = Vec::new();
        for i in 0..n {
            let mut row = Vec::new();
            for (j, target) in ports.iter().enumerate() {
                row.push(if i == j {
                    None
                } else {
                    Some(Link::start(target.raft).await)
                });
            }
            links.push(row);
        }
        let mut cluster = ProcessCluster {
            dir: dir.to_path_buf(),
            ports,
            links,
            children: (0..n).map(|_| None).collect(),
            state: vec![Running::Down; n],
            extra_config: extra_config.to_string(),
        };
        for i in 0..n {
            std::fs::write(cluster.config_path(i), cluster.config(i)).unwrap();
        }
        drop(held);
        let spawned: Vec<_> = (0..n).map(|i| cluster.spawn(i)).collect();
        for (i, ready) in spawned.into_iter().enumerate() {
            cluster.await_ready(i, ready);
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("cluster-{}.toml", i + 1))
    }

    /// Server `i`'s data directory.
    pub fn data_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("corvid-data-{}", i + 1))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("server-{}.log", i + 1))
    }

    /// Server `i`'s configuration: the same members as everyone's, except that its peers'
    /// server-to-server addresses are its own proxies to them.
    fn config(&self, i: usize) -> String {
        let mut config = format!("{}\n[cluster]\nname = \"fault-test\"\n", self.extra_config);
        for (j, ports) in self.ports.iter().enumerate() {
            let raft = match &self.links[i][j] {
                Some(link) => link.listen,
                None => ports.raft,
            };
            let data = self.data_path(j);
            config.push_str(&format!(
                "\n[[cluster.members]]\nid = {}\nraft = \"{raft}\"\nwire = \"{}\"\ngrpc = \"{}\"\ndata = \"{}\"\n",
                j + 1,
                ports.wire,
                ports.grpc,
                data.display()
            ));
        }
        config
    }

    /// Starts server `i`'s process; the receiver gets its ready line.
    fn spawn(&mut self, i: usize) -> std::sync::mpsc::Receiver<String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let mut child = corvid()
            .arg("serve")
            .arg("--config")
            .arg(self.config_path(i))
            .arg("--id")
            .arg((i + 1).to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("corvid serve starts");
        let ready = first_line(&mut child);
        self.children[i] = Some(child);
        self.state[i] = Running::Up;
        ready
    }

    fn await_ready(&mut self, i: usize, ready: std::sync::mpsc::Receiver<String>) {
        if ready.recv_timeout(READY_DEADLINE).is_err() {
            panic!(
                "server {} printed no ready line within {READY_DEADLINE:?}; its log:\n{}",
                i + 1,
                self.log(i)
            );
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    pub fn state(&self, i: usize) -> Running {
        self.state[i]
    }

    /// Servers not up (killed or stopped).
    pub fn down_count(&self) -> usize {
        self.state.iter().filter(|s| **s != Running::Up).count()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            if self.state[i] == Running::Stopped {
                signal(child.id(), "CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.state[i] = Running::Down;
    }

    /// Restarts a killed server and waits for its ready line.
    pub fn restart(&mut self, i: usize) {
        assert_eq!(self.state[i], Running::Down, "restart of a running server");
        let ready = self.spawn(i);
        self.await_ready(i, ready);
    }

    /// Restarts a killed server without waiting for its ready line, which it prints only
    /// once it knows a leader; the receiver gets the line.
    pub fn restart_unready(&mut self, i: usize) -> std::sync::mpsc::Receiver<String> {
        assert_eq!(self.state[i], Running::Down, "restart of a running server");
        self.spawn(i)
    }

    /// Whether server `i`'s process has ended by itself (it was not killed by the test).
    pub fn has_exited(&mut self, i: usize) -> bool {
        match self.children[i].as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, "STOP");
            self.state[i] = Running::Stopped;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, "CONT");
            self.state[i] = Running::Up;
        }
    }

    /// Cuts every link between `group` and the other servers, both ways.
    pub fn partition(&self, group: &[usize]) {
        for i in 0..self.len() {
            for j in 0..self.len() {
                if group.contains(&i) != group.contains(&j) {
                    if let Some(link) = &self.links[i][j] {
                        link.block();
                    }
                }
            }
        }
    }

    /// Cuts only what `from` sends to the others (what it dials); it still hears them.
    pub fn cut_outbound(&self, from: usize) {
        for link in self.links[from].iter().flatten() {
            link.block();
        }
    }

    pub fn heal(&self) {
        for link in self.links.iter().flatten().flatten() {
            link.unblock();
        }
    }

    /// Every server's address for `transport`, in id order: a client's server list.
    pub fn addresses(&self, transport: Transport) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| match transport {
                Transport::Wire => p.wire.to_string(),
                Transport::Grpc => p.grpc.to_string(),
            })
            .collect()
    }

    /// Which server leads now, as `corvid cluster status` run against an up server says
    /// (its first line is `leader N (term T), voters [...]`).
    pub fn leader(&self) -> Option<usize> {
        let via = (0..self.len()).find(|i| self.state(*i) == Running::Up)?;
        let output = self.status(via);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let id: usize = stdout
            .lines()
            .find_map(|line| line.strip_prefix("leader "))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        id.checked_sub(1)
    }

    /// Each server's applied index as `corvid cluster status` run against server `via`
    /// reports it (index by server; servers it could not reach are left out).
    pub fn applied_indexes(&self, via: usize) -> BTreeMap<usize, u64> {
        let output = self.status(via);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut applied = BTreeMap::new();
        for line in stdout.lines() {
            // `  id  raft  role  leader  term  last log  applied  lag`
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 8 {
                continue;
            }
            if let (Ok(id), Ok(index)) = (fields[0].parse::<usize>(), fields[6].parse::<u64>()) {
                if let Some(i) = id.checked_sub(1) {
                    applied.insert(i, index);
                }
            }
        }
        applied
    }

    /// Waits until an up server reports a leader, and returns it.
    pub async fn wait_for_leader(&self) -> usize {
        let mut found = None;
        let ok = eventually(Duration::from_secs(20), || {
            found = self.leader();
            found.is_some()
        })
        .await;
        assert!(ok, "no leader within 20 s");
        found.unwrap()
    }

    /// Runs `corvid cluster status` against server `via`'s configuration.
    pub fn status(&self, via: usize) -> std::process::Output {
        corvid()
            .args(["cluster", "status", "--config"])
            .arg(self.config_path(via))
            .output()
            .expect("corvid cluster status runs")
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Waits, polling, until `f` holds or `deadline` passes; returns whether it held.
pub async fn eventually(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of message `seq` from `sender`: unique, and says who sent which.
pub fn text(sender: &str, seq: u64) -> String {
    format!("{sender}#{seq}")
}

/// The sender and sequence number of a message's text: what [`text`] made, maybe followed
/// by a space and padding.
fn parse_text(text: &str) -> Option<(&str, u64)> {
    let text = text.split(' ').next()?;
    let (sender, seq) = text.rsplit_once('#')?;
    Some((sender, seq.parse().ok()?))
}

/// What the clients did and saw, checked against what the cluster stored.
#[derive(Default)]
pub struct Record {
    /// Per sender: the sequence numbers of messages the cluster acknowledged, with the id
    /// it gave each.
    pub acknowledged: BTreeMap<String, BTreeMap<u64, MessageId>>,
    /// Per sender: every sequence number ever sent (acknowledged or not).
    pub attempted: BTreeMap<String, HashSet<u64>>,
    /// Per listener (recipient): the messages its subscription pushed, in order.
    pub pushed: BTreeMap<String, Vec<Message>>,
}

impl Record {
    pub fn attempt(&mut self, sender: &str, seq: u64) {
        self.attempted
            .entry(sender.to_string())
            .or_default()
            .insert(seq);
    }

    pub fn acknowledge(&mut self, sender: &str, seq: u64, id: MessageId) {
        let previous = self
            .acknowledged
            .entry(sender.to_string())
            .or_default()
            .insert(seq, id);
        if let Some(previous) = previous {
            assert_eq!(
                previous, id,
                "{sender}'s message {seq} was acknowledged twice with different ids"
            );
        }
    }

    /// Checks `inboxes` (per recipient, every message the cluster stored for it, oldest
    /// first) against the record:
    /// - every acknowledged message is stored exactly once, with the id it was acknowledged with;
    /// - every stored message was sent (attempted), and nothing is stored twice;
    /// - each sender's messages are stored in the order they were sent;
    /// - each listener was pushed exactly its inbox, in order: no gap, no repeat.
    pub fn check(&self, inboxes: &BTreeMap<String, Vec<Message>>) -> Result<(), String> {
        let mut stored: HashMap<(String, u64), MessageId> = HashMap::new();
        for (recipient, inbox) in inboxes {
            let mut last_seq: HashMap<&str, u64> = HashMap::new();
            let mut last_id = MessageId(0);
            for message in inbox {
                if message.id <= last_id {
                    return Err(format!(
                        "{recipient}'s inbox is not in id order at {:?}",
                        message.id
                    ));
                }
                last_id = message.id;
                let (sender, seq) = parse_text(&message.text)
                    .ok_or_else(|| format!("a message nobody sent: {:?}", message.text))?;
                if sender != message.from {
                    return Err(format!(
                        "{:?} is stored as from {}",
                        message.text, message.from
                    ));
                }
                let sent = self.attempted.get(sender).is_some_and(|s| s.contains(&seq));
                if !sent {
                    return Err(format!("{:?} was stored but never sent", message.text));
                }
                if stored
                    .insert((sender.to_string(), seq), message.id)
                    .is_some()
                {
                    return Err(format!("{:?} is stored twice", message.text));
                }
                if let Some(previous) = last_seq.insert(sender, seq) {
                    if previous >= seq {
                        return Err(format!(
                            "{sender}'s messages to {recipient} are out of order: {previous} before {seq}"
                        ));
                    }
                }
            }
        }
        for (sender, acknowledged) in &self.acknowledged {
            for (seq, id) in acknowledged {
                match stored.get(&(sender.clone(), *seq)) {
                    None => return Err(format!("{sender}'s acknowledged message {seq} ({id:?}) is lost")),
                    Some(found) if found != id => {
                        return Err(format!(
                            "{sender}'s message {seq} was acknowledged as {id:?} but stored as {found:?}"
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        for (listener, pushed) in &self.pushed {
            let inbox: Vec<MessageId> = inboxes
                .get(listener)
                .map(|inbox| inbox.iter().map(|m| m.id).collect())
                .unwrap_or_default();
            let seen: Vec<MessageId> = pushed.iter().map(|m| m.id).collect();
            if seen != inbox {
                let seen_set: HashSet<_> = seen.iter().collect();
                let missing: Vec<_> = inbox.iter().filter(|id| !seen_set.contains(id)).collect();
                let mut counts: HashMap<MessageId, usize> = HashMap::new();
                for id in &seen {
                    *counts.entry(*id).or_default() += 1;
                }
                let repeated: Vec<_> = counts
                    .iter()
                    .filter(|(_, n)| **n > 1)
                    .map(|(id, _)| id)
                    .collect();
                return Err(format!(
                    "{listener} was pushed {} messages for an inbox of {}: missing {missing:?}, repeated {repeated:?}",
                    seen.len(),
                    inbox.len()
                ));
            }
        }
        Ok(())
    }
}
