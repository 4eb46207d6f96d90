//! A region's core path in one process, deterministic.
//!
//! The real state machines run here unchanged: each core node's
//! [`Feed`] (which partitions it owns, what it hands to its shards, what
//! it pauses and commits) and each shard's [`ShardState`] (inbox seqs,
//! dedup, the ticket order). Around them everything is simulated and
//! driven by one seeded random source and a simulated clock: the bus (a
//! log per partition with offsets, one consumer group, commits fenced by
//! ownership), the store ([`MemoryStore`], which passes the same contract
//! as the real backends), commit latency, and clients that send messages
//! and retry until accepted.
//!
//! Faults drawn from the seed: a core node crashes (its memory lost; the
//! bus and the store keep what they had, and a commit in flight lands or
//! not) and comes back later; the group moves partitions; store commits
//! fail; commits finish out of order. After a run the faults stop, the
//! region heals and drains, and the checker looks at the store:
//!
//! - every accepted send is in its recipient's inbox exactly once, and no
//!   send is there twice (dedup holds across redelivery);
//! - every inbox holds seqs 1..=head without gaps;
//! - each sender's messages to one recipient are in the order it sent them;
//! - every send is eventually accepted once the region is healthy;
//! - during the run: an offset is committed only by the partition's owner
//!   and only over sends that are stored or were answered with an error
//!   (an error for any attempt of the same client id counts, so a lost
//!   later attempt is caught by the end-of-run checks, not here);
//! - each client has one send pending at a time, so order is checked
//!   against redelivery and moves, not against pipelining.
//!
//! A run is a pure function of its seed: the same seed gives the same trace
//! hash (`--check` runs it twice), and a failing seed replays exactly.

use iris_core::commits::{CommitQueue, Started};
use iris_core::state::{Found, Output, ReadResult, ShardConfig, ShardState, Ticket};
use iris_envelope::{EdgeInput, Recipients, SessionAddr, SessionId, ShardEnvelope, ShardId, ShardInput, UserKey};
use iris_protocol::ServerFrame;
use iris_router::Ring;
use iris_router::feed::{Feed, FeedInput, FeedOutput};
use iris_storage::memory::MemoryStore;
use iris_storage::{Store, StoreError, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};

/// The shape and the fault rates of one simulated region.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Shard partitions.
    pub partitions: u32,
    /// Core nodes in the consumer group.
    pub nodes: usize,
    /// Users (each also a client that sends).
    pub users: usize,
    /// Steps (simulated milliseconds) of traffic with faults.
    pub steps: u64,
    /// Most steps the region gets to heal and drain afterwards.
    pub heal_steps: u64,
    /// Envelopes one shard's queue holds (the feed pauses beyond).
    pub shard_queue: usize,
    /// Chance per step that a node crashes (when more than one is up).
    pub crash: f64,
    /// Chance per step that a crashed node comes back.
    pub restart: f64,
    /// Chance that a store commit fails.
    pub commit_failure: f64,
    /// Most simulated milliseconds a commit takes.
    pub max_commit_ms: u64,
    /// Chance per step that a client sends (or retries).
    pub send: f64,
    /// Steps a client waits for `accepted` before sending again.
    pub retry_after: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            partitions: 4,
            nodes: 3,
            users: 6,
            steps: 400,
            heal_steps: 20_000,
            shard_queue: 4,
            crash: 0.004,
            restart: 0.02,
            commit_failure: 0.02,
            max_commit_ms: 6,
            send: 0.3,
            retry_after: 40,
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Hash of the whole event trace (equal for equal seeds).
    pub trace_hash: u64,
    /// The trace, if it was kept.
    pub trace: Vec<String>,
    /// Violated invariants (empty when the run holds).
    pub violations: Vec<String>,
    /// Simulated milliseconds run.
    pub simulated_ms: u64,
    /// Sends accepted.
    pub accepted: usize,
    /// Node crashes.
    pub crashes: usize,
    /// Store commits that failed by injection.
    pub failed_commits: usize,
}

/// Test-only switches that bring back bugs this project fixed, to show
/// the simulator finds them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bugs {
    /// Commit a partition's offsets as soon as records are handed to the
    /// shard, not once their work is durable (a crash then loses sends that
    /// were handed but not yet written).
    pub commit_on_hand: bool,
    /// Let one user's appends run in two commits at once on a store whose
    /// commits fail alone: the seq gap this simulator found (ADR 0004).
    pub no_append_isolation: bool,
}

struct Partition {
    log: Vec<ShardEnvelope>,
    committed: i64,
    owner: Option<usize>,
}

/// One shard actor: its state, its queue, and its group commit (the
/// actor's own `CommitQueue`, as many commits in flight as the actor's).
/// A revoked shard keeps running until what it started is written, as the
/// actor does, but takes no input.
struct Shard {
    state: ShardState,
    queue: VecDeque<ShardEnvelope>,
    commits: CommitQueue,
}

/// A commit running in the store: (due, shard instance, tickets, its queue's token, writes).
type Running = (u64, u64, Vec<Ticket>, Started, WriteBatch);

struct Node {
    up: bool,
    feed: Feed,
    /// Shard actors by instance (a revoked one stays until it is idle).
    shards: BTreeMap<u64, Shard>,
    /// The instance running each owned partition's shard.
    active: BTreeMap<ShardId, u64>,
    /// Next offset to fetch, per owned partition.
    fetch: BTreeMap<ShardId, i64>,
    paused: BTreeSet<ShardId>,
    /// Commits in flight.
    commits: Vec<Running>,
    /// Records handed to each shard (for the commit-on-hand bug).
    handed: BTreeMap<ShardId, i64>,
}

impl Node {
    fn new() -> Self {
        Self {
            up: true,
            feed: Feed::default(),
            shards: BTreeMap::new(),
            active: BTreeMap::new(),
            fetch: BTreeMap::new(),
            paused: BTreeSet::new(),
            commits: Vec::new(),
            handed: BTreeMap::new(),
        }
    }
}

/// A client's current send, to one recipient.
struct Pending {
    to: usize,
    client_id: String,
    sent_at: u64,
}

struct Client {
    next: u64,
    pending: Option<Pending>,
    /// Accepted sends, in order: (recipient, client id, msg id).
    accepted: Vec<(usize, String, String)>,
}

/// One simulated region.
pub struct Sim {
    cfg: SimConfig,
    bugs: Bugs,
    rng: StdRng,
    now: u64,
    ring: Ring,
    partitions: Vec<Partition>,
    nodes: Vec<Node>,
    store: MemoryStore,
    clients: Vec<Client>,
    keep_trace: bool,
    trace: Vec<String>,
    hasher: std::collections::hash_map::DefaultHasher,
    violations: Vec<String>,
    crashes: usize,
    failed_commits: usize,
    faults: bool,
    next_instance: u64,
    /// Sends answered with an error (a failed write or load): done, not
    /// stored; the client sends again.
    refused: BTreeSet<String>,
}

const TENANT: &str = "sim";

fn user(i: usize) -> UserKey {
    UserKey::new(TENANT, format!("u{i}"))
}

/// The session a client's answers come back to: its index.
fn session_of(i: usize) -> SessionAddr {
    SessionAddr { edge: iris_envelope::EdgeId("e0".into()), session: SessionId(i as u64) }
}

/// Polls a future that never waits (the memory store's) to its end.
fn now_or_never<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

impl Sim {
    /// A region for `seed`.
    pub fn new(cfg: SimConfig, seed: u64, bugs: Bugs, keep_trace: bool) -> Self {
        let ring = Ring::new(cfg.partitions);
        let partitions =
            (0..cfg.partitions).map(|_| Partition { log: Vec::new(), committed: 0, owner: None }).collect();
        let nodes = (0..cfg.nodes).map(|_| Node::new()).collect();
        let clients = (0..cfg.users).map(|_| Client { next: 0, pending: None, accepted: Vec::new() }).collect();
        let mut sim = Self {
            rng: StdRng::seed_from_u64(seed),
            cfg,
            bugs,
            now: 1_000_000,
            ring,
            partitions,
            nodes,
            store: MemoryStore::default(),
            clients,
            keep_trace,
            trace: Vec::new(),
            hasher: Default::default(),
            violations: Vec::new(),
            crashes: 0,
            failed_commits: 0,
            faults: true,
            next_instance: 0,
            refused: BTreeSet::new(),
        };
        sim.rebalance();
        sim
    }

    fn event(&mut self, what: String) {
        self.now.hash(&mut self.hasher);
        what.hash(&mut self.hasher);
        if self.keep_trace {
            self.trace.push(format!("{:>8} {what}", self.now));
        }
    }

    fn violation(&mut self, what: String) {
        self.event(format!("VIOLATION {what}"));
        self.violations.push(what);
    }

    /// Runs the seed to its end and checks it.
    pub fn run(mut self, seed: u64) -> Outcome {
        let start = self.now;
        for _ in 0..self.cfg.steps {
            self.step();
        }
        // Heal: no more faults; every node up; clients finish what they
        // started; the region drains.
        self.faults = false;
        for n in 0..self.nodes.len() {
            if !self.nodes[n].up {
                self.restart(n);
            }
        }
        let mut healed = 0;
        while healed < self.cfg.heal_steps && !self.quiet() {
            self.step();
            healed += 1;
        }
        if !self.quiet() {
            self.violation(format!("not drained {} ms after healing", self.cfg.heal_steps));
        }
        self.check();
        Outcome {
            seed,
            trace_hash: self.hasher.finish(),
            trace: std::mem::take(&mut self.trace),
            violations: std::mem::take(&mut self.violations),
            simulated_ms: self.now - start,
            accepted: self.clients.iter().map(|c| c.accepted.len()).sum(),
            crashes: self.crashes,
            failed_commits: self.failed_commits,
        }
    }

    /// Nothing pending anywhere: every send accepted, every record consumed
    /// and committed, every commit done.
    fn quiet(&self) -> bool {
        self.clients.iter().all(|c| c.pending.is_none())
            && self.partitions.iter().all(|p| p.committed == p.log.len() as i64)
            && self.nodes.iter().all(|n| {
                n.commits.is_empty() && n.shards.values().all(|s| s.queue.is_empty() && s.commits.waiting() == 0)
            })
    }

    fn step(&mut self) {
        self.now += 1;
        if self.faults {
            self.faults_step();
        }
        self.clients_step();
        for n in 0..self.nodes.len() {
            if self.nodes[n].up {
                self.node_step(n);
            }
        }
    }

    fn faults_step(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|n| self.nodes[*n].up).collect();
        if up.len() > 1 && self.rng.random_bool(self.cfg.crash) {
            let n = up[self.rng.random_range(0..up.len())];
            self.crash(n);
        }
        let down: Vec<usize> = (0..self.nodes.len()).filter(|n| !self.nodes[*n].up).collect();
        if !down.is_empty() && self.rng.random_bool(self.cfg.restart) {
            let n = down[self.rng.random_range(0..down.len())];
            self.restart(n);
        }
    }

    fn crash(&mut self, n: usize) {
        self.crashes += 1;
        // A commit in flight either reached the store or did not.
        let commits = std::mem::take(&mut self.nodes[n].commits);
        let mut landed = 0;
        for (_, _, _, _, batch) in commits {
            if self.rng.random_bool(0.5) {
                let _ = now_or_never(self.store.commit(batch));
                landed += 1;
            }
        }
        self.nodes[n] = Node { up: false, ..Node::new() };
        self.event(format!("crash node {n} ({landed} in-flight commits landed)"));
        self.rebalance();
    }

    fn restart(&mut self, n: usize) {
        self.nodes[n] = Node::new();
        self.event(format!("restart node {n}"));
        self.rebalance();
    }

    /// The group assigns partitions round robin over the nodes that are up.
    fn rebalance(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|n| self.nodes[*n].up).collect();
        if up.is_empty() {
            return;
        }
        for p in 0..self.partitions.len() {
            let owner = up[p % up.len()];
            let old = self.partitions[p].owner;
            if old == Some(owner) {
                continue;
            }
            let shard = ShardId(p as u32);
            if let Some(o) = old
                && self.nodes[o].up
            {
                self.nodes[o].feed.handle_input(FeedInput::Revoked(vec![shard]));
                self.nodes[o].fetch.remove(&shard);
                self.nodes[o].paused.remove(&shard);
                self.carry_out(o);
            }
            self.partitions[p].owner = Some(owner);
            let from = self.partitions[p].committed;
            self.nodes[owner].fetch.insert(shard, from);
            self.nodes[owner].feed.handle_input(FeedInput::Assigned(vec![shard]));
            self.event(format!("partition {p} to node {owner} from offset {from}"));
            self.carry_out(owner);
        }
    }

    fn clients_step(&mut self) {
        for c in 0..self.clients.len() {
            if !self.rng.random_bool(self.cfg.send) {
                continue;
            }
            let retry = match &self.clients[c].pending {
                Some(p) if self.now - p.sent_at < self.cfg.retry_after => continue,
                Some(p) => Some((p.to, p.client_id.clone())),
                None if !self.faults => continue,
                None => None,
            };
            let (to, client_id) = match retry {
                Some(r) => r,
                None => {
                    let to = self.rng.random_range(0..self.cfg.users);
                    let id = format!("c{c}-{}", self.clients[c].next);
                    self.clients[c].next += 1;
                    (to, id)
                }
            };
            self.clients[c].pending = Some(Pending { to, client_id: client_id.clone(), sent_at: self.now });
            let env = ShardEnvelope {
                owner: user(to),
                body: ShardInput::Send {
                    from: format!("u{c}").into(),
                    client_id: client_id.as_str().into(),
                    body: client_id.clone().into_bytes().into(),
                    reply: session_of(c),
                },
            };
            let p = self.ring.shard_of(&env.owner).0 as usize;
            self.partitions[p].log.push(env);
            let off = self.partitions[p].log.len() - 1;
            self.event(format!("u{c} sends {client_id} to u{to} (partition {p} offset {off})"));
        }
    }

    fn node_step(&mut self, n: usize) {
        // Fetch a few records of each owned, unpaused partition.
        let owned: Vec<(ShardId, i64)> = self.nodes[n].fetch.iter().map(|(s, o)| (*s, *o)).collect();
        for (shard, at) in owned {
            if self.nodes[n].paused.contains(&shard) {
                continue;
            }
            let log_len = self.partitions[shard.0 as usize].log.len() as i64;
            let upto = (at + 3).min(log_len);
            for off in at..upto {
                let env = self.partitions[shard.0 as usize].log[off as usize].clone();
                self.nodes[n].feed.handle_input(FeedInput::Record { shard, offset: off, env });
            }
            self.nodes[n].fetch.insert(shard, upto);
        }
        if self.nodes[n].feed.holding() {
            self.nodes[n].feed.handle_input(FeedInput::Retry);
        }
        self.carry_out(n);
        // Each active shard takes one input.
        let active: Vec<u64> = self.nodes[n].active.values().copied().collect();
        for inst in active {
            self.shard_input(n, inst);
        }
        // Commits that are due finish, in due order (not issue order).
        let now = self.now;
        let commits = std::mem::take(&mut self.nodes[n].commits);
        let (due, waiting): (Vec<_>, Vec<_>) = commits.into_iter().partition(|c| c.0 <= now);
        self.nodes[n].commits = waiting;
        for (_, inst, tickets, started, batch) in due {
            let fail = self.faults && self.rng.random_bool(self.cfg.commit_failure);
            let result = if fail {
                self.failed_commits += 1;
                Err(StoreError::Unavailable("injected".into()))
            } else {
                now_or_never(self.store.commit(batch))
            };
            let ok = if result.is_ok() { "ok" } else { "failed" };
            self.event(format!("node {n} shard instance {inst} tickets {tickets:?} commit {ok}"));
            if let Some(sh) = self.nodes[n].shards.get_mut(&inst) {
                let unwritten = sh.commits.finished(started, result.is_ok());
                for t in tickets.into_iter().chain(unwritten) {
                    sh.state.committed(t, result.clone());
                }
            }
            self.start_commits(n, inst);
            self.outputs(n, inst);
        }
        // A revoked shard goes once nothing of it runs.
        let active: BTreeSet<u64> = self.nodes[n].active.values().copied().collect();
        let running: BTreeSet<u64> = self.nodes[n].commits.iter().map(|c| c.1).collect();
        self.nodes[n]
            .shards
            .retain(|inst, sh| active.contains(inst) || running.contains(inst) || sh.commits.waiting() > 0);
        // Offsets: every few steps, as the shell's commit tick.
        if self.now % 5 == 0 {
            let node = &self.nodes[n];
            let durable: Vec<(ShardId, u64)> =
                node.active.iter().map(|(s, inst)| (*s, node.shards[inst].state.inputs_durable())).collect();
            self.nodes[n].feed.handle_input(FeedInput::Progress(durable));
            self.carry_out(n);
        }
    }

    /// Carries out the feed's outputs for node `n`.
    fn carry_out(&mut self, n: usize) {
        while let Some(out) = self.nodes[n].feed.poll_output() {
            match out {
                FeedOutput::Start(s) => {
                    let state = ShardState::new(ShardConfig {
                        shard: s,
                        max_cached_users: 1_000,
                        max_contacts: 100,
                        max_subscribers: 100,
                        max_sessions: 10,
                        id_seed: n as u32,
                        recent_dedup: 64,
                        edge_lease_ms: 10_000,
                        region: "sim".into(),
                        page_max_bytes: 1 << 16,
                    });
                    let inst = self.next_instance;
                    self.next_instance += 1;
                    let commits = CommitQueue::new(2, 512).isolating_appends(!self.bugs.no_append_isolation);
                    self.nodes[n].shards.insert(inst, Shard { state, queue: VecDeque::new(), commits });
                    self.nodes[n].active.insert(s, inst);
                    self.nodes[n].paused.remove(&s);
                }
                FeedOutput::Stop(s) => {
                    // The actor finishes what is in flight and stops; what
                    // it had not taken is read again by the next owner.
                    if let Some(inst) = self.nodes[n].active.remove(&s)
                        && let Some(sh) = self.nodes[n].shards.get_mut(&inst)
                    {
                        sh.queue.clear();
                    }
                }
                FeedOutput::Hand { shard, offset, env, wait } => {
                    let cap = self.cfg.shard_queue;
                    let inst = self.nodes[n].active.get(&shard).copied();
                    match inst.and_then(|i| self.nodes[n].shards.get_mut(&i)) {
                        // `wait`: the shell waits for room; here, room is made.
                        Some(sh) if sh.queue.len() < cap || wait => {
                            sh.queue.push_back(env);
                            self.nodes[n].handed.insert(shard, offset + 1);
                            self.nodes[n].feed.handle_input(FeedInput::Handed { shard, offset });
                        }
                        Some(_) => self.nodes[n].feed.handle_input(FeedInput::Full { shard, offset, env }),
                        None => self.nodes[n].feed.handle_input(FeedInput::Gone { shard }),
                    }
                    if self.bugs.commit_on_hand {
                        let next = self.nodes[n].handed.get(&shard).copied().unwrap_or(0);
                        self.commit_offsets(n, vec![(shard, next)]);
                    }
                }
                FeedOutput::Pause(s) => {
                    self.nodes[n].paused.insert(s);
                }
                FeedOutput::Resume(s) => {
                    self.nodes[n].paused.remove(&s);
                }
                FeedOutput::Commit(offsets) => {
                    if !self.bugs.commit_on_hand {
                        self.commit_offsets(n, offsets.clone());
                    }
                    self.nodes[n].feed.handle_input(FeedInput::Committed(offsets));
                }
                FeedOutput::NotOwned { shard, offset } => {
                    self.event(format!("node {n} dropped record {offset} of partition {} not owned", shard.0));
                }
            }
        }
    }

    /// The group coordinator takes a commit only from the partition's
    /// owner; the checker verifies it covers only durable work.
    fn commit_offsets(&mut self, n: usize, offsets: Vec<(ShardId, i64)>) {
        for (s, next) in offsets {
            let p = s.0 as usize;
            if self.partitions[p].owner != Some(n) {
                // The coordinator refuses it; a feed that tries it has kept
                // a partition it no longer owns.
                self.violation(format!("node {n} committed partition {p}, which it does not own"));
                continue;
            }
            if next <= self.partitions[p].committed {
                continue;
            }
            // Every send before `next` must be done: in the store, or
            // answered with an error (its write failed; the client retries).
            for off in self.partitions[p].committed..next {
                let env = self.partitions[p].log[off as usize].clone();
                if let ShardInput::Send { from, client_id, .. } = &env.body
                    && !self.refused.contains(&**client_id)
                    && !self.stored(&env.owner, from, client_id)
                {
                    self.violation(format!(
                        "partition {p} committed to {next} by node {n}, but the send {client_id} at offset {off} is neither durable nor answered"
                    ));
                }
            }
            self.partitions[p].committed = next;
            self.event(format!("partition {p} committed to {next} by node {n}"));
        }
    }

    fn stored(&self, owner: &UserKey, from: &str, client_id: &str) -> bool {
        self.store.inbox(owner).iter().any(|m| &*m.from == from && m.body.as_ref() == client_id.as_bytes())
    }

    /// Shard instance `inst` of node `n` takes its next input.
    fn shard_input(&mut self, n: usize, inst: u64) {
        let Some(sh) = self.nodes[n].shards.get_mut(&inst) else { return };
        let Some(env) = sh.queue.pop_front() else { return };
        if sh.state.needs_reset() {
            sh.state.reset();
        }
        let needs = sh.state.needs(&env);
        let loaded = (|| -> Result<Found, StoreError> {
            if let Some(u) = &needs.user {
                let record = now_or_never(self.store.load_user(u))?;
                sh.state.insert_user(u.clone(), record);
            }
            let dedup = match &needs.dedup {
                Some(k) => now_or_never(self.store.dedup(k))?,
                None => None,
            };
            Ok(Found { dedup, events_seen: vec![false; needs.events.len()] })
        })();
        let written = match loaded {
            Ok(found) => sh.state.handle(self.now as i64, env, found),
            Err(_) => {
                sh.state.load_failed(&env);
                None
            }
        };
        if let Some((ticket, batch)) = written {
            sh.commits.push(ticket, batch);
            self.start_commits(n, inst);
        }
        self.outputs(n, inst);
    }

    /// Starts the commits a shard's queue allows, each with its latency.
    fn start_commits(&mut self, n: usize, inst: u64) {
        loop {
            let Some(sh) = self.nodes[n].shards.get_mut(&inst) else { return };
            let Some(c) = sh.commits.poll() else { return };
            let latency = self.rng.random_range(0..=self.cfg.max_commit_ms);
            self.nodes[n].commits.push((self.now + latency, inst, c.tickets, c.started, c.batch));
        }
    }

    /// Carries out a shard's released outputs: answers reach clients,
    /// shard-to-shard envelopes go on the bus, reads are made and their
    /// answers go back into the state.
    fn outputs(&mut self, n: usize, inst: u64) {
        let Some(sh) = self.nodes[n].shards.get_mut(&inst) else { return };
        let mut todo: VecDeque<Output> = sh.state.poll_outputs().into();
        while let Some(out) = todo.pop_front() {
            match out {
                Output::Edge(env) => {
                    for part in env.body.into_parts() {
                        self.edge_input(part);
                    }
                }
                Output::Shard(env) => {
                    let p = self.ring.shard_of(&env.owner).0 as usize;
                    self.partitions[p].log.push(env);
                }
                Output::Read(read) => {
                    let Some(sh) = self.nodes[n].shards.get_mut(&inst) else { return };
                    let result = match sh.state.query(&read) {
                        iris_core::state::Query::Inbox { user, after, limit, max_bytes } => {
                            ReadResult::Inbox(now_or_never(self.store.read_inbox(user, after, limit, max_bytes)))
                        }
                        iris_core::state::Query::Range { user, from, to, limit } => {
                            ReadResult::Range(now_or_never(self.store.read_range(user, from, to, limit)))
                        }
                        iris_core::state::Query::PendingReceipts { user, limit } => {
                            ReadResult::PendingReceipts(now_or_never(self.store.pending_receipts(user, limit)))
                        }
                    };
                    let outcome = sh.state.read_done(read, result);
                    if let Some((ticket, batch)) = outcome.commit {
                        sh.commits.push(ticket, batch);
                        self.start_commits(n, inst);
                    }
                    for o in outcome.outputs.into_iter().rev() {
                        todo.push_front(o);
                    }
                }
            }
        }
    }

    /// A frame for a client's session.
    fn edge_input(&mut self, input: EdgeInput) {
        let EdgeInput::Frame { to: Recipients::Session(session), frame, .. } = input else { return };
        let c = session.0 as usize;
        if let ServerFrame::Error(e) = &frame
            && let Some(id) = &e.id
        {
            self.event(format!("u{c} got error {} for {id}", e.code.as_str()));
            self.refused.insert(id.clone());
        }
        if let ServerFrame::Accepted(a) = frame {
            let Some(p) = &self.clients[c].pending else { return };
            if p.client_id != a.id {
                return; // an answer to an earlier try, already taken
            }
            let to = p.to;
            self.event(format!("u{c} got accepted {} ({})", a.id, a.msg_id));
            self.clients[c].accepted.push((to, a.id, a.msg_id));
            self.clients[c].pending = None;
        }
    }

    /// The end-of-run invariants, against the store.
    fn check(&mut self) {
        for c in 0..self.clients.len() {
            if let Some(p) = &self.clients[c].pending {
                let id = p.client_id.clone();
                self.violation(format!("u{c}'s send {id} was never accepted"));
            }
        }
        for r in 0..self.cfg.users {
            let inbox = self.store.inbox(&user(r));
            for (i, m) in inbox.iter().enumerate() {
                if m.seq != i as u64 + 1 {
                    self.violation(format!("u{r}'s inbox has seq {} at position {}", m.seq, i + 1));
                    break;
                }
            }
            let mut seen = BTreeSet::new();
            for m in &inbox {
                if !seen.insert((m.from.to_string(), m.body.clone())) {
                    let body = String::from_utf8_lossy(&m.body).to_string();
                    self.violation(format!("u{r}'s inbox holds {body} from {} twice", m.from));
                }
            }
        }
        for c in 0..self.clients.len() {
            let accepted = self.clients[c].accepted.clone();
            let from = format!("u{c}");
            for r in 0..self.cfg.users {
                let inbox = self.store.inbox(&user(r));
                let order: Vec<String> = inbox
                    .iter()
                    .filter(|m| *m.from == *from)
                    .map(|m| String::from_utf8_lossy(&m.body).to_string())
                    .collect();
                let sent: Vec<String> = accepted.iter().filter(|a| a.0 == r).map(|a| a.1.clone()).collect();
                for (id, msg_id) in accepted.iter().filter(|a| a.0 == r).map(|a| (&a.1, &a.2)) {
                    let n = inbox.iter().filter(|m| &*m.msg_id == msg_id.as_str()).count();
                    if n != 1 {
                        self.violation(format!("accepted {id} ({msg_id}) is in u{r}'s inbox {n} times"));
                    }
                }
                if order != sent {
                    self.violation(format!("{from} → u{r}: sent {sent:?}, inbox has {order:?}"));
                }
            }
        }
    }
}

/// Runs one seed.
pub fn run_seed(cfg: &SimConfig, seed: u64, bugs: Bugs, keep_trace: bool) -> Outcome {
    Sim::new(cfg.clone(), seed, bugs, keep_trace).run(seed)
}
