//! A region in one process, deterministic.
//!
//! The real state machines run here unchanged: each core node's
//! [`Feed`] (which partitions it owns, what it hands to its shards, what
//! it pauses and commits), each shard's [`ShardState`] (inbox seqs, dedup,
//! sessions and edge leases, the ticket order), its [`CommitQueue`] and
//! its [`InputClock`] (how far it has read, for the lease check). Around
//! them everything is simulated and driven by one seeded random source and
//! a simulated clock: the bus (a log per partition with offsets, one
//! consumer group, commits fenced by ownership), the store
//! ([`MemoryStore`], which passes the same contract as the real backends),
//! commit latency, edges (which renew their lease on every shard and run
//! each session on the edge's own [`SessionState`], as its session task
//! does: the token checked, envelopes routed, notices written as frames,
//! resyncs, the farewell, hello and heartbeat deadlines), and clients that
//! speak the protocol to them: each writes its frames (`hello`, `send`,
//! `subscribe`, `ping`) encoded as JSON or binary, decodes every frame the
//! edge writes, and retries a send by its id until accepted.
//!
//! With `regions` above one, several such regions are federated through a
//! simulated global layer, as `iris_router::Federation` and the relays of
//! `iris_kafka` make them: users are homed round robin, edges and shards
//! route what belongs to another region to their region's outbound topic
//! (`Router::shard_path`, `edge_path`), edges renew their lease and
//! announce a restart in every region, and each region's relay process runs
//! the real [`RelayOut`], [`RelayIn`] and [`RelayLedger`] over its outbound
//! topic and its topic on the global layer, committing as it goes. Clients
//! connect through any region's edges, so some are travellers.
//!
//! Faults drawn from the seed: a core node crashes (its memory lost; the
//! bus and the store keep what they had, and a commit in flight lands or
//! not) and comes back later; the group moves partitions; store commits
//! fail; commits finish out of order; a node's retry timer for envelopes
//! held before a full shard fires late; an edge crashes without a goodbye
//! and comes back (often within a lease, under the same id, as a restarted
//! process does); clients close their sessions, or vanish without a close
//! (the edge ends the session when its heartbeat runs out), and reconnect
//! elsewhere; a hello carries a forged token; an opening outlives its hello
//! timeout; in a federation, a relay process crashes (and starts again from
//! its committed positions: the receiving relay drops the copies it has
//! seen) or is cut off from the global layer.
//! After a run the faults stop, the region heals and drains, and the
//! checker looks at the store:
//!
//! - every accepted send is in its recipient's inbox exactly once, and no
//!   send is there twice (dedup holds across redelivery);
//! - every inbox holds seqs 1..=head without gaps;
//! - each sender's messages to one recipient are in the order it sent them;
//! - every send is eventually accepted once the region is healthy;
//! - presence converges: each user's session record names exactly the
//!   session its client holds open;
//! - during the run: an offset is committed only by the partition's owner
//!   and only over sends that are stored or were answered with an error
//!   (an error for any attempt of the same client id counts, so a lost
//!   later attempt is caught by the end-of-run checks, not here);
//! - during the run: a revoked shard writes nothing after its revocation,
//!   and no shard ends the lease of an edge that has been up and renewing
//!   it for a whole lease;
//! - every frame an edge writes decodes in its client's encoding;
//! - each client has one send pending at a time, so order is checked
//!   against redelivery and moves, not against pipelining.
//!
//! A run is a pure function of its seed: the same seed gives the same trace
//! hash (`--check` runs it twice), and a failing seed replays exactly.

use iris_auth::{Signer, Verifier, VerifierConfig};
use iris_clock::ManualClock;
use iris_core::commits::{CommitQueue, Started};
use iris_core::state::{Found, InputClock, Output, ReadResult, ShardConfig, ShardState, Ticket};
use iris_edge::notice::frame_of;
use iris_edge::state::{SessionOutput, token_checked};
use iris_edge::{CloseReason, SessionConfig, SessionState};
use iris_envelope::{
    EdgeEnvelope, EdgeId, EdgeInput, GlobalBody, GlobalEnvelope, HomeAssignment, InboxSeq, Notice, SessionAddr,
    SessionId, ShardEnvelope, ShardId, ShardInput, ShardKey, UserKey,
};
use iris_protocol::{ClientFrame, Encoding, Hello, Ping, ServerFrame, SetPresence, SetStatus, Users};
use iris_router::feed::{Feed, FeedInput, FeedOutput};
use iris_router::relay::{Arrival, Outbound, RelayIn, RelayLedger, RelayOut};
use iris_router::spread::ShardPartitions;
use iris_router::{HomeDirectory, Ring, ShardSpread};
use iris_storage::memory::MemoryStore;
use iris_storage::{Store, StoreError, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The shape and the fault rates of one simulated region.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Shards (the ring's).
    pub shards: u32,
    /// Shards to a partition of the shard topic (ADR 0031): 1, a partition
    /// per shard as every region made before it; more, records naming
    /// their shard and a partition committed only as far as all its shards
    /// did. `None`: by seed, one on even seeds and two on odd ones.
    pub shards_per_partition: Option<u32>,
    /// Regions: one, or several federated through a simulated global layer
    /// (each with the nodes, edges, bus and store below, and a relay).
    pub regions: usize,
    /// Core nodes in each region's consumer group.
    pub nodes: usize,
    /// Edges clients connect through, in each region.
    pub edges: usize,
    /// Users (each also a client that sends).
    pub users: usize,
    /// Steps (simulated milliseconds) of traffic with faults.
    pub steps: u64,
    /// Most steps the region gets to heal and drain afterwards.
    pub heal_steps: u64,
    /// Envelopes one shard's queue holds (the feed pauses beyond).
    pub shard_queue: usize,
    /// Inputs a shard holds whose writes are not yet durable (the actor's
    /// in-flight-writes permits): it takes no more until some are.
    pub max_inflight: u64,
    /// Most inputs a shard takes in one step.
    pub max_take: usize,
    /// Chance per step that a node crashes (when more than one is up).
    pub crash: f64,
    /// Chance per step that a crashed node comes back.
    pub restart: f64,
    /// Chance that a store commit fails.
    pub commit_failure: f64,
    /// Most simulated milliseconds a commit takes.
    pub max_commit_ms: u64,
    /// Chance per step that a node's timer for envelopes held before a
    /// full shard fires late, and by at most how many milliseconds.
    pub late_retry: f64,
    /// See `late_retry`.
    pub max_retry_delay_ms: u64,
    /// An edge not heard from for this long is dead (the shards' lease).
    pub edge_lease_ms: u64,
    /// Lease renewals per lease.
    pub renewals: u64,
    /// Chance per step that an edge crashes (when more than one is up).
    pub edge_crash: f64,
    /// Chance per step that a crashed edge comes back (same id).
    pub edge_restart: f64,
    /// Chance per step that a connected client closes its session.
    pub drop: f64,
    /// Chance per step that a disconnected client connects.
    pub connect: f64,
    /// Chance per step that a client sends (or retries).
    pub send: f64,
    /// Steps a client waits for `accepted` before sending again.
    pub retry_after: u64,
    /// Chance per step that a node stalls: its process stops (SIGSTOP)
    /// or it is cut off from the bus while it runs on.
    pub stall: f64,
    /// Most simulated milliseconds a stall lasts.
    pub max_stall_ms: u64,
    /// A node not heard from by the group for this long is out of it (the
    /// consumer group's session timeout): its partitions go to others.
    pub group_timeout_ms: u64,
    /// Most milliseconds a node out of the group takes to learn it: from
    /// the group's timeout if it runs (librdkafka's own check, on the
    /// local clock), or from when it runs again if it was stopped.
    pub max_learn_ms: u64,
    /// Let a stopped node stay stopped past the group's timeout: it wakes
    /// as a zombie, whose commits in flight and queued inputs land after
    /// the new owner's. Its session records and metas are fenced, and
    /// edges drop its presence words once its successor has spoken (ADR
    /// 0021). Off by default so that the regression seeds keep drawing
    /// what they drew; CI and the fences' tests turn it on.
    pub zombies: bool,
    /// Chance per step that an edge is cut off from the bus (its clients
    /// still reach it): what it publishes waits in its producer, what is
    /// published to it waits on its topic, and its renewals stop.
    pub edge_cut: f64,
    /// Most simulated milliseconds an edge's cut lasts.
    pub max_edge_cut_ms: u64,
    /// Chance that a store commit times out although it landed: the shard
    /// is told it failed.
    pub commit_timeout: f64,
    /// Chance per step that a node's wall clock jumps.
    pub clock_jump: f64,
    /// Most milliseconds a clock jumps forward (and a third of it back).
    pub max_jump_ms: u64,
    /// The sessions' heartbeat: a client pings at this interval, and an
    /// edge closes a session it has heard nothing from for two.
    pub heartbeat_ms: u64,
    /// Time a session has from connecting to its `welcome` (the hello, the
    /// token, the shard's answer): past it, the edge refuses it
    /// `unavailable` and closes it, and the client connects again.
    pub hello_timeout_ms: u64,
    /// Chance that a client's hello carries a token the edge refuses (signed
    /// with another key): the edge answers `unauthorized` and closes.
    pub bad_token: f64,
    /// Chance that a client leaving a session vanishes (its network gone,
    /// no close reaches the edge) rather than closing it: the edge keeps
    /// the session until its heartbeat runs out.
    pub vanish: f64,
    /// Chance per step that a connected client sets its status (online,
    /// away or invisible, drawn alike); once the region heals, each sets
    /// `online` again, which its follower must come to hear.
    pub set_status: f64,
    /// Chance per step that a region's relay process crashes (when
    /// federated): it starts again from its committed positions.
    pub relay_crash: f64,
    /// Chance per step that a crashed relay comes back.
    pub relay_restart: f64,
    /// Chance per step that a region's relay is cut off from the global
    /// layer, and for at most how many milliseconds.
    pub global_cut: f64,
    /// See `global_cut`.
    pub max_global_cut_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            shards: 4,
            shards_per_partition: None,
            regions: 1,
            nodes: 3,
            edges: 2,
            users: 6,
            steps: 600,
            heal_steps: 20_000,
            shard_queue: 3,
            max_inflight: 8,
            max_take: 3,
            crash: 0.003,
            restart: 0.02,
            commit_failure: 0.02,
            max_commit_ms: 6,
            late_retry: 0.003,
            max_retry_delay_ms: 300,
            edge_lease_ms: 120,
            renewals: 4,
            edge_crash: 0.002,
            edge_restart: 0.03,
            drop: 0.002,
            connect: 0.05,
            send: 0.3,
            retry_after: 40,
            stall: 0.002,
            max_stall_ms: 400,
            group_timeout_ms: 60,
            max_learn_ms: 5,
            zombies: false,
            edge_cut: 0.001,
            max_edge_cut_ms: 360,
            commit_timeout: 0.01,
            clock_jump: 0.001,
            max_jump_ms: 400,
            // The product's defaults in proportion (heartbeat 30 s, hello
            // 10 s, edge lease 10 s) to the simulation's 120 ms lease.
            heartbeat_ms: 360,
            hello_timeout_ms: 120,
            bad_token: 0.05,
            vanish: 0.5,
            set_status: 0.005,
            relay_crash: 0.002,
            relay_restart: 0.05,
            global_cut: 0.002,
            max_global_cut_ms: 300,
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
    /// Edge crashes.
    pub edge_crashes: usize,
    /// Sessions opened.
    pub sessions: usize,
    /// Store commits that failed by injection.
    pub failed_commits: usize,
    /// Leases ended (edges a shard declared dead).
    pub leases_ended: usize,
    /// Node stalls (paused or cut off from the bus).
    pub stalls: usize,
    /// Stalls that lasted past the group's timeout (zombies).
    pub evictions: usize,
    /// Clock jumps.
    pub clock_jumps: usize,
    /// Edges cut off from the bus.
    pub edge_cuts: usize,
    /// Commits that landed but were reported failed.
    pub landed_timeouts: usize,
    /// Shards to a partition of the shard topic in this run.
    pub shards_per_partition: u32,
    /// Hellos refused for their token.
    pub bad_tokens: usize,
    /// Sessions an edge closed for want of a welcome in time.
    pub hello_timeouts: usize,
    /// Clients that vanished from a session without closing it.
    pub vanished: usize,
    /// Frames clients and edges exchanged, encoded and decoded.
    pub frames: usize,
    /// Statuses clients set (`presence` frames), besides the last `online`.
    pub statuses: usize,
    /// Regions in this run.
    pub regions: usize,
    /// Envelopes the relays carried across the global layer.
    pub relayed: usize,
    /// Relay crashes.
    pub relay_crashes: usize,
    /// Relays cut off from the global layer.
    pub global_cuts: usize,
}

/// Test-only switches that bring back bugs this project fixed, to show
/// the simulator finds them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bugs {
    /// Commit a partition's offsets as soon as records are handed to the
    /// shard, not once their work is durable (a crash then loses sends that
    /// were handed but not yet written).
    pub commit_on_hand: bool,
    /// Let one user's writes run in two commits at once on a store whose
    /// commits fail alone and may land in either order: the seq gap and the
    /// stale session record this simulator found (ADR 0004).
    pub no_user_isolation: bool,
    /// A revoked shard's actor lives on with its lease timer running (fixed
    /// in 1e62705): it ends every lease it held, since no edge renews them
    /// there any more, and writes offline records over the new owner's.
    pub lease_after_revoke: bool,
    /// An empty shard queue looks caught up even while envelopes are held
    /// before it (fixed in 4a7585c): a shard behind a paused partition ends
    /// the leases of edges whose renewals wait there.
    pub paused_looks_caught_up: bool,
    /// A shard keeps the sessions an edge held before it restarted, as long
    /// as the restarted edge renews the lease in time (found by this
    /// simulator; fixed by [`ShardInput::EdgeStarted`]): the restarted edge
    /// does not announce itself.
    pub silent_edge_restart: bool,
    /// A shard judges how far it has read by its queue alone, without
    /// ticks (found by this simulator; fixed by [`ShardInput::Tick`]): a
    /// node back from a stop, or cut off from the bus, or whose clock
    /// jumped, takes its own silence for the edges' and ends their leases.
    pub no_ticks: bool,
    /// Session records are not fenced by version (as before ADR 0021's
    /// fence): the last write to land wins, and a zombie's late records
    /// replace the new owner's.
    pub unfenced_records: bool,
    /// A node's clock follows its wall clock back when it is stepped back
    /// (fixed in `iris_clock::SystemClock`): renewals heard meanwhile are
    /// stamped with the lagging time, and a step forward then ends live
    /// leases.
    pub clock_goes_back: bool,
    /// Each shard's offset is committed to its partition as if the
    /// partition were its own, when several shards share it: the last
    /// shard to report wins, past records its siblings have not made
    /// durable (what `ShardPartitions` exists to prevent, ADR 0031).
    pub shared_commit_by_shard: bool,
    /// Only the full shard is marked as having envelopes wait before its
    /// queue when its shared partition pauses (found by this simulator):
    /// the other shards of the partition, whose records wait on the bus
    /// too, look caught up with an empty queue.
    pub siblings_look_caught_up: bool,
    /// A revoked shard still sends the outputs it held for writes in flight
    /// (found by this simulator once its edges ran the session state
    /// machine; fixed by [`ShardState::revoked`]): a presence it told a
    /// subscriber from its memory lands after the new owner's answers.
    pub revoked_shard_answers: bool,
    /// A restarted edge tells only its own region's shards (found by this
    /// simulator once it federated regions; fixed by
    /// `GlobalBody::EdgeStarted`): the shards of other regions keep the
    /// travellers' sessions of its previous process, since the new process
    /// renews the lease there.
    pub local_edge_start: bool,
    /// Edges send statuses without their stamp, as edges did before ADR
    /// 0032 (found by this simulator once its clients set statuses): a
    /// status held back by an edge cut off from the bus lands after one
    /// the user set later through another session, and stays.
    pub unstamped_statuses: bool,
    /// Edges write every presence word whoever told it, as before ADR
    /// 0021's owner marks (found by this simulator with zombies): a zombie
    /// answers a queued subscription from its stale memory after its
    /// successor has answered, and the follower keeps the stale word.
    pub owner_blind_edges: bool,
    /// User metas are not fenced by version (as before their fence, found
    /// by this simulator with zombies): a zombie's late meta sets back a
    /// status its successor stored, and the next owner to load the user
    /// shows the stale one.
    pub unfenced_metas: bool,
}

impl Bugs {
    /// The switch named `name` (as `iris-sim --bug` takes it).
    pub fn set(&mut self, name: &str) -> Result<(), String> {
        match name {
            "commit-on-hand" => self.commit_on_hand = true,
            "no-user-isolation" => self.no_user_isolation = true,
            "lease-after-revoke" => self.lease_after_revoke = true,
            "paused-looks-caught-up" => self.paused_looks_caught_up = true,
            "silent-edge-restart" => self.silent_edge_restart = true,
            "no-ticks" => self.no_ticks = true,
            "unfenced-records" => self.unfenced_records = true,
            "clock-goes-back" => self.clock_goes_back = true,
            "shared-commit-by-shard" => self.shared_commit_by_shard = true,
            "siblings-look-caught-up" => self.siblings_look_caught_up = true,
            "revoked-shard-answers" => self.revoked_shard_answers = true,
            "local-edge-start" => self.local_edge_start = true,
            "unstamped-statuses" => self.unstamped_statuses = true,
            "owner-blind-edges" => self.owner_blind_edges = true,
            "unfenced-metas" => self.unfenced_metas = true,
            other => return Err(format!("unknown bug {other:?} (known: {})", Self::NAMES.join(", "))),
        }
        Ok(())
    }

    /// Every switch's name.
    pub const NAMES: [&'static str; 15] = [
        "commit-on-hand",
        "no-user-isolation",
        "lease-after-revoke",
        "paused-looks-caught-up",
        "silent-edge-restart",
        "no-ticks",
        "unfenced-records",
        "clock-goes-back",
        "shared-commit-by-shard",
        "siblings-look-caught-up",
        "revoked-shard-answers",
        "local-edge-start",
        "unstamped-statuses",
        "owner-blind-edges",
        "unfenced-metas",
    ];
}

struct Partition {
    /// Each record with the shard its header names.
    log: Vec<(ShardId, ShardEnvelope)>,
    committed: i64,
    owner: Option<usize>,
}

impl Partition {
    /// Committed up to its end, but for the heartbeats (lease renewals and
    /// ticks) that keep arriving: a log that always grows is never all
    /// committed at the instant it is looked at.
    fn drained(&self) -> bool {
        self.log[self.committed as usize..]
            .iter()
            .all(|(_, e)| matches!(e.body, ShardInput::EdgeAlive { .. } | ShardInput::Tick { .. }))
    }
}

/// One region: its bus (a log per partition), its store, its consumer
/// group and, in a federation, its topics and relay to the global layer.
struct Region {
    name: Arc<str>,
    /// Where users are homed (`Federation`'s directory, as every node of
    /// the region holds it).
    homes: HomeDirectory,
    partitions: Vec<Partition>,
    store: MemoryStore,
    /// A rebalance waits for a stopped member.
    rebalance_pending: bool,
    /// Its outbound topic (one partition): envelopes for other regions,
    /// queued by its edges and shards (`FederationLink`).
    outbound: Vec<GlobalEnvelope>,
    /// Its topic on the global layer (one partition): envelopes for it.
    global: Vec<GlobalEnvelope>,
    relay: Relay,
}

impl Region {
    /// Everything relayed both ways and committed, but for the lease
    /// renewals that keep coming.
    fn relayed(&self) -> bool {
        let renewal = |e: &GlobalEnvelope| matches!(e.body, GlobalBody::EdgeAlive { .. });
        self.outbound[self.relay.out_committed as usize..].iter().all(renewal)
            && self.global[self.relay.in_committed as usize..].iter().all(renewal)
    }
}

/// A region's relay process (`iris_kafka::relay_out` and `relay_in`): the
/// real decisions of both relays, reading from their committed positions.
struct Relay {
    up: bool,
    /// Cut off from the global layer until then.
    cut_until: u64,
    out: RelayOut,
    /// The next outbound offset to read, and how far its group committed.
    out_next: i64,
    out_committed: i64,
    inbound: RelayIn,
    ledger: RelayLedger,
    in_next: i64,
    in_committed: i64,
}

impl Relay {
    /// A relay process starting from what its groups committed.
    fn start(region: &Arc<str>, out_committed: i64, in_committed: i64) -> Self {
        Self {
            up: true,
            cut_until: 0,
            out: RelayOut::new(region.clone(), 1),
            out_next: out_committed,
            out_committed,
            inbound: RelayIn::new(),
            ledger: RelayLedger::default(),
            in_next: in_committed,
            in_committed,
        }
    }
}

/// Records a relay moves per step, each way.
const RELAY_BATCH: usize = 16;

/// One shard actor: its state, its queue, its group commit (the actor's
/// own `CommitQueue`, as many commits in flight as the actor's) and its
/// input clock. A revoked shard keeps running until what it started is
/// written, as the actor does, but takes no input.
struct Shard {
    shard: ShardId,
    state: ShardState,
    queue: VecDeque<ShardEnvelope>,
    commits: CommitQueue,
    clock: InputClock,
    revoked: bool,
    next_lease_check: u64,
}

/// A commit running in the store: (due, shard instance, tickets, its queue's token, writes).
type Running = (u64, u64, Vec<Ticket>, Started, WriteBatch);

struct Node {
    /// Its region.
    region: usize,
    up: bool,
    feed: Feed,
    /// Shard actors by instance (a revoked one stays until it is idle).
    shards: BTreeMap<u64, Shard>,
    /// The instance running each owned partition's shard.
    active: BTreeMap<ShardId, u64>,
    /// Next offset to fetch, per owned partition.
    fetch: BTreeMap<i32, i64>,
    /// Partitions not fetched (a shard of theirs is full).
    paused: BTreeSet<i32>,
    /// Which shards its partitions carry, what to pause and how far to
    /// commit: the Kafka source's own decisions (`iris_kafka::KafkaSource`).
    parts: ShardPartitions,
    /// Commits in flight.
    commits: Vec<Running>,
    /// Records handed to each shard (for the commit-on-hand bug).
    handed: BTreeMap<ShardId, i64>,
    /// The retry timer for held envelopes fires no earlier than this.
    retry_at: u64,
    /// The process is stopped (SIGSTOP) until then: it runs nothing.
    paused_until: u64,
    /// Cut off from the bus until then: it runs, but fetches nothing,
    /// publishes nothing and cannot reach the group.
    cut_until: u64,
    /// Since when the group has not heard from it (a stall going on).
    stalled_since: Option<u64>,
    /// A member of the consumer group. A node out of it that does not know
    /// yet is a zombie: it goes on with the partitions it had.
    in_group: bool,
    /// When a node out of the group learns it (librdkafka's own check:
    /// no answer from the coordinator for a session timeout), and gives
    /// up its partitions as lost.
    learns_at: Option<u64>,
    /// It has given them up, and joins again once it reaches the bus.
    learned: bool,
    /// Its wall clock's offset from the simulation's time (the machine's:
    /// kept across restarts).
    skew: i64,
    /// The seed of this start, drawn afresh at every start as a node's is
    /// by default (it goes into the message ids its shards make).
    id_seed: u32,
    /// The latest time this process's clock returned (it never goes back).
    latest_time: i64,
}

impl Node {
    fn new(spread: ShardSpread, region: usize) -> Self {
        Self {
            region,
            up: true,
            feed: Feed::default(),
            shards: BTreeMap::new(),
            active: BTreeMap::new(),
            fetch: BTreeMap::new(),
            paused: BTreeSet::new(),
            parts: ShardPartitions::new(spread),
            commits: Vec::new(),
            handed: BTreeMap::new(),
            retry_at: 0,
            paused_until: 0,
            cut_until: 0,
            stalled_since: None,
            in_group: true,
            learns_at: None,
            learned: false,
            skew: 0,
            id_seed: 0,
            latest_time: 0,
        }
    }
}

/// A session an edge holds: the edge's own state machine for it, and the
/// client at the other end.
struct EdgeSession {
    state: SessionState,
    client: usize,
    /// The client vanished: nothing more comes from it, and what the edge
    /// writes reaches no one.
    gone: bool,
}

/// An edge: the sessions it holds (by session id) and its lease.
struct Edge {
    id: EdgeId,
    /// Its region.
    region: usize,
    up: bool,
    /// Since when it has been up (this incarnation) and reaching the bus:
    /// renewing its lease.
    up_since: u64,
    next_renewal: u64,
    /// What every session of this edge shares (its node name in `welcome`).
    session_cfg: Arc<SessionConfig>,
    sessions: BTreeMap<u64, EdgeSession>,
    /// Cut off from the bus until then.
    cut_until: u64,
    /// What it published while cut off (its producer's queue), in order.
    outbox: Vec<ShardEnvelope>,
    /// What was published to it while cut off (its topic), in order.
    inbox: VecDeque<EdgeInput>,
}

/// A client's connection.
#[derive(Clone, PartialEq, Eq)]
enum Conn {
    Off,
    /// Registered at its edge, waiting for the welcome.
    Opening(SessionAddr),
    Open(SessionAddr),
}

impl Conn {
    fn session(&self) -> Option<&SessionAddr> {
        match self {
            Conn::Off => None,
            Conn::Opening(s) | Conn::Open(s) => Some(s),
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
    conn: Conn,
    /// How it encodes its frames (JSON or binary, drawn from the seed).
    encoding: Encoding,
    /// When it last sent a frame (it pings when idle for a heartbeat).
    last_sent: u64,
    /// The highest inbox seq it was sent (it resumes above it).
    seen: InboxSeq,
    next: u64,
    pending: Option<Pending>,
    /// Accepted sends, in order: (recipient, client id, msg id).
    accepted: Vec<(usize, String, String)>,
    /// The session on which it follows its target's presence, once
    /// subscribed (every user follows the next one, who has it as a contact).
    subscribed: Option<u64>,
    /// The last presence of its target it was sent on that session.
    target_seen: Option<iris_types::PresenceStatus>,
    /// The status it last set (none yet: `online`). Once it has set one,
    /// it sets it again on every session it is welcomed on, as the
    /// TypeScript client does (a `presence` gets no answer, and one sent
    /// on a session whose edge died is lost).
    status: Option<SetStatus>,
}

impl Client {
    /// Its status is `online` (set, or never set otherwise).
    fn online(&self) -> bool {
        matches!(self.status, None | Some(SetStatus::Online))
    }
}

/// One simulated region.
pub struct Sim {
    cfg: SimConfig,
    bugs: Bugs,
    rng: StdRng,
    now: u64,
    ring: Ring,
    spread: ShardSpread,
    regions: Vec<Region>,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    clients: Vec<Client>,
    keep_trace: bool,
    trace: Vec<String>,
    hasher: std::collections::hash_map::DefaultHasher,
    violations: Vec<String>,
    crashes: usize,
    edge_crashes: usize,
    sessions_opened: usize,
    failed_commits: usize,
    leases_ended: usize,
    stalls: usize,
    evictions: usize,
    clock_jumps: usize,
    edge_cuts: usize,
    landed_timeouts: usize,
    relayed: usize,
    relay_crashes: usize,
    global_cuts: usize,
    /// Since when every relay has been up and reaching the global layer
    /// (a foreign edge's renewals reach a shard only through them).
    global_calm_since: u64,
    faults: bool,
    next_instance: u64,
    next_session: u64,
    /// Sends answered with an error (a failed write or load): done, not
    /// stored; the client sends again.
    refused: BTreeSet<String>,
    /// The edges' token check (HS256, judged on the simulation's clock).
    verifier: Verifier,
    auth_clock: Arc<ManualClock>,
    /// Each user's token, and one signed with a key no edge accepts.
    tokens: Vec<String>,
    forged: String,
    bad_tokens: usize,
    hello_timeouts: usize,
    vanished: usize,
    frames: usize,
    statuses: usize,
}

const TENANT: &str = "sim";

/// The region's signing key (a simulation's; never a secret).
const KEY: &[u8] = b"iris-sim token key, 32 bytes...";

/// Where an edge's publish went, for the trace.
fn placed(at: Option<String>) -> String {
    at.unwrap_or_else(|| "held: its edge is cut off from the bus".into())
}

fn user(i: usize) -> UserKey {
    UserKey::new(TENANT, format!("u{i}"))
}

fn edge_id(e: usize, region: &str) -> EdgeId {
    EdgeId(format!("e{e}@{region}").into())
}

/// Polls a future that never waits (the memory store's) to its end.
fn now_or_never<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

impl Sim {
    /// A region for `seed`.
    pub fn new(cfg: SimConfig, seed: u64, bugs: Bugs, keep_trace: bool) -> Self {
        let ring = Ring::new(cfg.shards);
        let per = cfg.shards_per_partition.unwrap_or(if seed % 2 == 1 { 2 } else { 1 }).max(1);
        assert!(cfg.shards.is_multiple_of(per), "{per} shards to a partition do not divide {} shards", cfg.shards);
        let spread = ShardSpread::new(cfg.shards, cfg.shards / per);
        assert!(cfg.regions >= 1, "a simulation needs a region");
        // One region is named as a single region names itself; regions of
        // a federation by number.
        let names: Vec<String> =
            if cfg.regions == 1 { vec!["sim".into()] } else { (0..cfg.regions).map(|r| format!("r{r}")).collect() };
        let regions = names
            .iter()
            .map(|name| {
                let name: Arc<str> = name.as_str().into();
                Region {
                    homes: HomeDirectory::new(&name, &names),
                    partitions: (0..spread.partitions())
                        .map(|_| Partition { log: Vec::new(), committed: 0, owner: None })
                        .collect(),
                    store: MemoryStore::default(),
                    rebalance_pending: false,
                    outbound: Vec::new(),
                    global: Vec::new(),
                    relay: Relay::start(&name, 0, 0),
                    name,
                }
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = (0..cfg.regions * cfg.nodes)
            .map(|n| Node { id_seed: rng.random(), ..Node::new(spread, n / cfg.nodes) })
            .collect();
        let edges = (0..cfg.regions * cfg.edges)
            .map(|e| Edge {
                id: edge_id(e, &names[e / cfg.edges]),
                region: e / cfg.edges,
                up: true,
                up_since: 0,
                next_renewal: 0,
                session_cfg: Arc::new(SessionConfig {
                    node: format!("e{e}"),
                    region: names[e / cfg.edges].clone(),
                    max_body_bytes: 64 * 1024,
                    // Never the limit here: a client has one send pending.
                    frames_per_second: 10_000,
                    frame_burst: 1_000,
                    heartbeat_ms: cfg.heartbeat_ms,
                    hello_timeout_ms: cfg.hello_timeout_ms,
                    max_subscriptions: 100,
                    max_list_items: 100,
                }),
                sessions: BTreeMap::new(),
                cut_until: 0,
                outbox: Vec::new(),
                inbox: VecDeque::new(),
            })
            .collect();
        let clients = (0..cfg.users)
            .map(|_| Client {
                conn: Conn::Off,
                encoding: if rng.random_bool(0.5) { Encoding::Json } else { Encoding::Binary },
                last_sent: 0,
                seen: 0,
                next: 0,
                pending: None,
                accepted: Vec::new(),
                subscribed: None,
                target_seen: None,
                status: None,
            })
            .collect();
        let now = 1_000_000;
        let auth_clock = Arc::new(ManualClock::new(now as i64));
        let signer = Signer::hs256(KEY).with_clock(auth_clock.clone());
        let tokens = (0..cfg.users).map(|c| signer.token(TENANT, &format!("u{c}"), 3_600).expect("signs")).collect();
        let forged = Signer::hs256(b"not the region's key, 32 bytes..")
            .with_clock(auth_clock.clone())
            .token(TENANT, "u0", 3_600)
            .expect("signs");
        let verifier = Verifier::hs256(KEY, &VerifierConfig::default(), auth_clock.clone());
        let mut sim = Self {
            rng,
            cfg,
            bugs,
            now,
            ring,
            spread,
            regions,
            nodes,
            edges,
            clients,
            keep_trace,
            trace: Vec::new(),
            hasher: Default::default(),
            violations: Vec::new(),
            crashes: 0,
            edge_crashes: 0,
            sessions_opened: 0,
            failed_commits: 0,
            leases_ended: 0,
            stalls: 0,
            evictions: 0,
            clock_jumps: 0,
            edge_cuts: 0,
            landed_timeouts: 0,
            relayed: 0,
            relay_crashes: 0,
            global_cuts: 0,
            global_calm_since: now,
            faults: true,
            next_instance: 0,
            next_session: 1,
            refused: BTreeSet::new(),
            verifier,
            auth_clock,
            tokens,
            forged,
            bad_tokens: 0,
            hello_timeouts: 0,
            vanished: 0,
            frames: 0,
            statuses: 0,
        };
        for e in &mut sim.edges {
            e.up_since = now;
            e.next_renewal = now;
        }
        // In a federation, users are homed round robin (as if assigned
        // long ago, in every region's directory).
        if sim.regions.len() > 1 {
            for c in 0..sim.cfg.users {
                let home = sim.regions[c % sim.regions.len()].name.clone();
                let a = HomeAssignment { user: user(c), region: Some(home), set_at: 0 };
                for r in &sim.regions {
                    r.homes.apply(&a);
                }
            }
        }
        // Every user has the one before it as a contact (in the default
        // circle, which may see presence): u(i-1) follows u(i).
        for c in 0..sim.cfg.users {
            let viewer = (c + sim.cfg.users - 1) % sim.cfg.users;
            let mut contacts = WriteBatch::default();
            contacts.push(iris_storage::WriteOp::Contact {
                owner: user(c),
                contact: format!("u{viewer}"),
                record: iris_storage::Contact { circle: iris_core::state::DEFAULT_CIRCLE.into(), channels: Vec::new() },
            });
            let home = sim.home(c);
            now_or_never(sim.regions[home].store.commit(contacts)).expect("the memory store takes the contacts");
        }
        for r in 0..sim.regions.len() {
            sim.rebalance(r);
        }
        sim
    }

    /// The region user `c` is homed in.
    fn home(&self, c: usize) -> usize {
        let (home, _) = self.regions[0].homes.home_of(&user(c));
        self.region_index(&home)
    }

    /// The index of the region named `name`.
    fn region_index(&self, name: &str) -> usize {
        self.regions.iter().position(|r| &*r.name == name).expect("a region of the simulation")
    }

    /// The user client `c` follows.
    fn target(&self, c: usize) -> usize {
        (c + 1) % self.cfg.users
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
        // Heal: no more faults; every node and edge up; clients connect and
        // finish what they started; the region drains, and runs on for a
        // few leases so that the leases of edges gone meanwhile end.
        self.faults = false;
        for n in 0..self.nodes.len() {
            if !self.nodes[n].up {
                self.restart(n);
            }
        }
        for e in 0..self.edges.len() {
            if !self.edges[e].up {
                self.edge_restart(e);
            }
        }
        for r in 0..self.regions.len() {
            if !self.regions[r].relay.up {
                self.relay_restart(r);
            }
        }
        let mut healed = 0;
        let settle = 4 * self.cfg.edge_lease_ms;
        while healed < self.cfg.heal_steps && (healed < settle || !self.quiet()) {
            self.step();
            healed += 1;
        }
        if !self.quiet() {
            let why = self.unquiet();
            self.violation(format!("not drained {} ms after healing: {why}", self.cfg.heal_steps));
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
            edge_crashes: self.edge_crashes,
            sessions: self.sessions_opened,
            failed_commits: self.failed_commits,
            leases_ended: self.leases_ended,
            stalls: self.stalls,
            evictions: self.evictions,
            clock_jumps: self.clock_jumps,
            edge_cuts: self.edge_cuts,
            landed_timeouts: self.landed_timeouts,
            shards_per_partition: self.cfg.shards / self.spread.partitions(),
            bad_tokens: self.bad_tokens,
            hello_timeouts: self.hello_timeouts,
            vanished: self.vanished,
            frames: self.frames,
            statuses: self.statuses,
            regions: self.regions.len(),
            relayed: self.relayed,
            relay_crashes: self.relay_crashes,
            global_cuts: self.global_cuts,
        }
    }

    /// Nothing pending anywhere: every client connected and every send
    /// accepted, every record consumed and committed, every commit done.
    fn quiet(&self) -> bool {
        self.clients.iter().all(|c| c.pending.is_none() && matches!(c.conn, Conn::Open(_)) && c.online())
            && self.edges.iter().all(|e| e.sessions.values().all(|s| !s.gone))
            && self.regions.iter().all(|r| r.partitions.iter().all(Partition::drained) && r.relayed())
            && self.nodes.iter().all(|n| {
                n.commits.is_empty() && n.shards.values().all(|s| s.queue.is_empty() && s.commits.waiting() == 0)
            })
    }

    /// What keeps the region from being quiet, for the report.
    fn unquiet(&self) -> String {
        let mut why = Vec::new();
        for (c, client) in self.clients.iter().enumerate() {
            if let Some(p) = &client.pending {
                why.push(format!("u{c}'s send {} pending", p.client_id));
            }
            if !matches!(client.conn, Conn::Open(_)) {
                why.push(format!("u{c} has no open session"));
            }
            if let Some(status) = client.status.filter(|_| !client.online()) {
                why.push(format!("u{c} is still {status:?}"));
            }
        }
        for (e, edge) in self.edges.iter().enumerate() {
            for (id, s) in edge.sessions.iter().filter(|(_, s)| s.gone) {
                why.push(format!("edge {e} still holds session {id}, which u{} left", s.client));
            }
        }
        for region in &self.regions {
            for (p, part) in region.partitions.iter().enumerate() {
                if !part.drained() {
                    let name = &region.name;
                    why.push(format!("{name}'s partition {p} committed to {} of {}", part.committed, part.log.len()));
                }
            }
            if !region.relayed() {
                why.push(format!(
                    "{}'s relay committed {} of {} out, {} of {} in",
                    region.name,
                    region.relay.out_committed,
                    region.outbound.len(),
                    region.relay.in_committed,
                    region.global.len()
                ));
            }
        }
        why.join("; ")
    }

    fn step(&mut self) {
        self.now += 1;
        if self.faults {
            self.faults_step();
        }
        self.group_step();
        self.edges_step();
        self.relays_step();
        self.sessions_step();
        self.clients_step();
        for n in 0..self.nodes.len() {
            if self.nodes[n].up && self.now >= self.nodes[n].paused_until {
                self.node_step(n);
            }
        }
    }

    /// Node `n`'s clock: its wall clock (which may have jumped), never
    /// going back, as `iris_clock::SystemClock` reads it.
    fn node_now(&mut self, n: usize) -> i64 {
        let wall = self.now as i64 + self.nodes[n].skew;
        if self.bugs.clock_goes_back {
            return wall;
        }
        let node = &mut self.nodes[n];
        node.latest_time = node.latest_time.max(wall);
        node.latest_time
    }

    /// The group's view of stalled nodes: one silent past the group's
    /// timeout is out, and its partitions go to the others without it being
    /// told (it is stopped, or cannot reach the group); once it runs again
    /// and reaches the group it learns that, a little later, gives up what
    /// it lost and joins again. Until then it is a zombie that goes on with
    /// the partitions it had.
    fn group_step(&mut self) {
        for r in 0..self.regions.len() {
            if self.regions[r].rebalance_pending {
                self.rebalance(r);
            }
        }
        for n in 0..self.nodes.len() {
            if !self.nodes[n].up {
                continue;
            }
            let node = &self.nodes[n];
            let running = self.now >= node.paused_until;
            let stalled = !running || self.now < node.cut_until;
            match (stalled, node.stalled_since) {
                (true, Some(since)) if node.in_group && self.now - since >= self.cfg.group_timeout_ms => {
                    self.nodes[n].in_group = false;
                    self.evictions += 1;
                    let r = self.nodes[n].region;
                    for p in &mut self.regions[r].partitions {
                        if p.owner == Some(n) {
                            p.owner = None;
                        }
                    }
                    self.event(format!("node {n} is out of the group (silent for {} ms)", self.now - since));
                    self.rebalance(r);
                    // A node that runs finds out by itself, as the group
                    // does; a stopped one when it runs again.
                    if running {
                        self.learn_soon(n);
                    }
                }
                (false, Some(_)) => {
                    self.nodes[n].stalled_since = None;
                    if !self.nodes[n].in_group && !self.nodes[n].learned && self.nodes[n].learns_at.is_none() {
                        self.learn_soon(n);
                    }
                    self.event(format!("node {n} runs and reaches the bus again"));
                }
                _ => {}
            }
            if self.nodes[n].learns_at.is_some_and(|t| self.now >= t) {
                self.nodes[n].learns_at = None;
                self.give_up_lost(n);
            }
            let node = &self.nodes[n];
            if !node.in_group && node.learned && node.stalled_since.is_none() {
                self.rejoin(n);
            }
        }
    }

    /// A node learns it is out of the group a little after its own check
    /// runs (at most `max_learn_ms`).
    fn learn_soon(&mut self, n: usize) {
        let learn = self.rng.random_range(1..=self.cfg.max_learn_ms);
        self.nodes[n].learns_at = Some(self.now + learn);
    }

    /// A node that is out of the group gives up the partitions it lost
    /// (librdkafka revokes them as lost).
    fn give_up_lost(&mut self, n: usize) {
        // All of them: it cannot know which the group gave away.
        let lost: Vec<i32> = self.nodes[n].fetch.keys().copied().collect();
        if !lost.is_empty() {
            let shards = self.nodes[n].parts.revoked(&lost);
            self.nodes[n].feed.handle_input(FeedInput::Revoked(shards));
            for p in &lost {
                self.nodes[n].fetch.remove(p);
                self.nodes[n].paused.remove(p);
            }
            self.carry_out(n);
        }
        self.nodes[n].learned = true;
        self.event(format!("node {n} learns it is out of the group and gives up partitions {lost:?}"));
    }

    /// A node that gave up its partitions joins the group again.
    fn rejoin(&mut self, n: usize) {
        self.nodes[n].in_group = true;
        self.nodes[n].learned = false;
        self.event(format!("node {n} joins the group again"));
        self.rebalance(self.nodes[n].region);
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
        if self.rng.random_bool(self.cfg.late_retry) {
            let n = self.rng.random_range(0..self.nodes.len());
            let delay = self.rng.random_range(1..=self.cfg.max_retry_delay_ms);
            self.nodes[n].retry_at = self.now + delay;
            self.event(format!("node {n}'s retry timer is late by {delay} ms"));
        }
        let members: Vec<usize> = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].up && self.nodes[*n].in_group && self.nodes[*n].stalled_since.is_none())
            .collect();
        if members.len() > 1 && self.rng.random_bool(self.cfg.stall) {
            let n = members[self.rng.random_range(0..members.len())];
            let ms = self.rng.random_range(1..=self.cfg.max_stall_ms);
            let kind = if self.rng.random_bool(0.5) {
                // A stop past the group's timeout makes a zombie whose
                // writes land late (`SimConfig::zombies`).
                let ms = if self.cfg.zombies { ms } else { ms.min(self.cfg.group_timeout_ms - 1) };
                self.nodes[n].paused_until = self.now + ms;
                "stops (SIGSTOP)"
            } else {
                self.nodes[n].cut_until = self.now + ms;
                "is cut off from the bus"
            };
            self.nodes[n].stalled_since = Some(self.now);
            self.stalls += 1;
            self.event(format!("node {n} {kind} for {ms} ms"));
        }
        if self.rng.random_bool(self.cfg.clock_jump) {
            let n = self.rng.random_range(0..self.nodes.len());
            let max = self.cfg.max_jump_ms as i64;
            let jump = self.rng.random_range(-max / 3..=max);
            self.nodes[n].skew += jump;
            self.clock_jumps += 1;
            self.event(format!("node {n}'s clock jumps by {jump} ms"));
        }
        let reachable: Vec<usize> =
            (0..self.edges.len()).filter(|e| self.edges[*e].up && self.now >= self.edges[*e].cut_until).collect();
        if reachable.len() > 1 && self.rng.random_bool(self.cfg.edge_cut) {
            let e = reachable[self.rng.random_range(0..reachable.len())];
            let ms = self.rng.random_range(1..=self.cfg.max_edge_cut_ms);
            self.edges[e].cut_until = self.now + ms;
            self.edge_cuts += 1;
            self.event(format!("edge {e} is cut off from the bus for {ms} ms"));
        }
        let up: Vec<usize> = (0..self.edges.len()).filter(|e| self.edges[*e].up).collect();
        if up.len() > 1 && self.rng.random_bool(self.cfg.edge_crash) {
            let e = up[self.rng.random_range(0..up.len())];
            self.edge_crash(e);
        }
        let down: Vec<usize> = (0..self.edges.len()).filter(|e| !self.edges[*e].up).collect();
        if !down.is_empty() && self.rng.random_bool(self.cfg.edge_restart) {
            let e = down[self.rng.random_range(0..down.len())];
            self.edge_restart(e);
        }
        if self.regions.len() > 1 {
            self.global_faults();
        }
    }

    /// The global layer's faults: a relay crashes or comes back; a relay is
    /// cut off from the global layer (its region still runs) for a while.
    fn global_faults(&mut self) {
        let regions = self.regions.len();
        if self.rng.random_bool(self.cfg.relay_crash) {
            let r = self.rng.random_range(0..regions);
            if self.regions[r].relay.up {
                self.relay_crash(r);
            }
        }
        if self.rng.random_bool(self.cfg.relay_restart) {
            let r = self.rng.random_range(0..regions);
            if !self.regions[r].relay.up {
                self.relay_restart(r);
            }
        }
        if self.rng.random_bool(self.cfg.global_cut) {
            let r = self.rng.random_range(0..regions);
            let ms = self.rng.random_range(1..=self.cfg.max_global_cut_ms);
            self.regions[r].relay.cut_until = self.now + ms;
            self.global_cuts += 1;
            self.global_calm_since = self.now;
            self.event(format!("{}'s relay is cut off from the global layer for {ms} ms", self.regions[r].name));
        }
    }

    fn crash(&mut self, n: usize) {
        self.crashes += 1;
        // A commit in flight either reached the store or did not.
        let commits = std::mem::take(&mut self.nodes[n].commits);
        let mut landed = 0;
        let r = self.nodes[n].region;
        for (_, _, _, _, batch) in commits {
            if self.rng.random_bool(0.5) {
                let _ = self.land(r, batch);
                landed += 1;
            }
        }
        self.nodes[n] = Node { up: false, skew: self.nodes[n].skew, ..Node::new(self.spread, r) };
        // The group forgets the member (it may have no other to give its
        // partitions to yet: a node that stalled is out of it too).
        for p in &mut self.regions[r].partitions {
            if p.owner == Some(n) {
                p.owner = None;
            }
        }
        self.event(format!("crash node {n} ({landed} in-flight commits landed)"));
        self.rebalance(r);
    }

    fn restart(&mut self, n: usize) {
        let r = self.nodes[n].region;
        self.nodes[n] = Node { skew: self.nodes[n].skew, id_seed: self.rng.random(), ..Node::new(self.spread, r) };
        self.event(format!("restart node {n}"));
        self.rebalance(r);
    }

    /// A region's relay process dies: what it read and did not commit is
    /// read again by the next one (the receiving relay drops copies it has
    /// seen; one that restarted too hands them on, and shards and clients
    /// take them as the duplicates they are).
    fn relay_crash(&mut self, r: usize) {
        self.relay_crashes += 1;
        self.regions[r].relay.up = false;
        self.global_calm_since = self.now;
        self.event(format!("crash {}'s relay", self.regions[r].name));
    }

    fn relay_restart(&mut self, r: usize) {
        let region = &mut self.regions[r];
        region.relay = Relay::start(&region.name, region.relay.out_committed, region.relay.in_committed);
        self.global_calm_since = self.now;
        let (out, into) = (self.regions[r].relay.out_committed, self.regions[r].relay.in_committed);
        self.event(format!("restart {}'s relay (out from {out}, in from {into})", self.regions[r].name));
    }

    /// An edge process dies without a goodbye: its sessions are gone, and
    /// only the shards' leases can tell.
    fn edge_crash(&mut self, e: usize) {
        self.edge_crashes += 1;
        self.edges[e].up = false;
        // Its producer's queue dies with it; its topic's backlog is for the
        // process before (a restarted edge reads from the end).
        self.edges[e].outbox.clear();
        self.edges[e].inbox.clear();
        self.edges[e].cut_until = 0;
        let sessions = std::mem::take(&mut self.edges[e].sessions);
        for (id, s) in sessions {
            if self.client_on(s.client, e, id) {
                self.clients[s.client].conn = Conn::Off;
                self.clients[s.client].subscribed = None;
            }
        }
        self.event(format!("crash edge {e}"));
    }

    /// The edge process starts again, under the same id, with no sessions.
    fn edge_restart(&mut self, e: usize) {
        let edge = &mut self.edges[e];
        edge.up = true;
        edge.up_since = self.now;
        edge.next_renewal = self.now;
        self.event(format!("restart edge {e}"));
        if !self.bugs.silent_edge_restart {
            self.announce_start(e);
        }
    }

    /// A restarted edge tells every shard before it takes a session
    /// (`Router::edge_started`): those of its region on the bus, those of
    /// every other region through the outbound topic.
    fn announce_start(&mut self, e: usize) {
        let (edge, r) = (self.edges[e].id.clone(), self.edges[e].region);
        self.put_on_every_shard(r, ShardInput::EdgeStarted { edge: edge.clone() });
        if !self.bugs.local_edge_start {
            self.send_to_other_regions(r, GlobalBody::EdgeStarted { edge });
        }
    }

    /// A shard's own input (`ShardKey::Shard`) to every shard of region `r`.
    fn put_on_every_shard(&mut self, r: usize, body: ShardInput) {
        for s in 0..self.cfg.shards {
            let env = ShardEnvelope { owner: ShardKey::Shard, body: body.clone(), trace: None };
            self.append(r, ShardId(s), env);
        }
    }

    /// An envelope from region `r` to every other region, through `r`'s
    /// outbound topic.
    fn send_to_other_regions(&mut self, r: usize, body: GlobalBody) {
        for other in 0..self.regions.len() {
            if other != r {
                let dest = self.regions[other].name.clone();
                self.queue_out(r, dest, body.clone());
            }
        }
    }

    /// Appends an envelope to its owner's shard's partition in region `r`.
    fn publish(&mut self, r: usize, env: ShardEnvelope) -> (usize, usize) {
        let shard = self.ring.shard_of_key(&env.owner);
        self.append(r, shard, env)
    }

    /// Appends an envelope for `shard` of region `r` to the partition that
    /// carries it (named in its header when the partition is shared).
    fn append(&mut self, r: usize, shard: ShardId, env: ShardEnvelope) -> (usize, usize) {
        let p = self.spread.partition(shard) as usize;
        let log = &mut self.regions[r].partitions[p].log;
        log.push((shard, env));
        (p, log.len() - 1)
    }

    /// A shard envelope made in region `r`: to its shard's partition when
    /// its owner is homed here, else to the outbound topic for the owner's
    /// home (`Router::shard_path`). Says where it went, for the trace.
    fn route_shard(&mut self, r: usize, env: ShardEnvelope) -> String {
        let (home, _) = self.regions[r].homes.home_of_key(&env.owner);
        if home == self.regions[r].name {
            let (p, off) = self.publish(r, env);
            format!("partition {p} offset {off}")
        } else {
            self.queue_out(r, home.clone(), GlobalBody::Shard(env));
            format!("outbound, for {home}")
        }
    }

    /// An edge envelope made in region `r`: to an edge of this region at
    /// once, else to the edge's region through the outbound topic
    /// (`Router::edge_path`).
    fn route_edge(&mut self, r: usize, env: EdgeEnvelope) {
        // A send answered with an error is done once the answer leaves its
        // shard, whether or not its session is there to hear it.
        let parts = match &env.body {
            EdgeInput::Batch(parts) => parts.as_slice(),
            one => std::slice::from_ref(one),
        };
        for part in parts {
            if let EdgeInput::Notice { notice: Notice::Refused { id: Some(id), .. }, .. } = part {
                self.refused.insert(id.clone());
            }
        }
        let to = self.edges[self.edge_index(&env.edge)].region;
        if to == r {
            for part in env.body.into_parts() {
                self.edge_input(&env.edge, part);
            }
        } else {
            let dest = self.regions[to].name.clone();
            self.queue_out(r, dest, GlobalBody::Edge(env));
        }
    }

    /// Queues an envelope for region `dest` on region `r`'s outbound topic
    /// (`Federation`'s link, stamped by its clock).
    fn queue_out(&mut self, r: usize, dest: Arc<str>, body: GlobalBody) {
        let origin = self.regions[r].name.clone();
        let env = GlobalEnvelope { origin, dest, hops: 0, relay: None, queued_at: self.now as i64, body };
        self.regions[r].outbound.push(env);
    }

    /// Each region's relay moves what waits, when it runs and reaches the
    /// global layer (on half the steps: the global layer's latency), a few
    /// records each way: its outbound topic to the other regions' topics on
    /// the global layer (`RelayOut`: stamped, confirmed, then committed),
    /// and its own topic into the region (`RelayIn`: copies dropped,
    /// envelopes for users homed elsewhere sent on, renewals of foreign
    /// edges' leases put on every shard); each commits as it goes.
    fn relays_step(&mut self) {
        if self.regions.len() < 2 {
            return;
        }
        for r in 0..self.regions.len() {
            let relay = &mut self.regions[r].relay;
            if relay.cut_until != 0 && self.now >= relay.cut_until {
                relay.cut_until = 0;
                self.global_calm_since = self.now;
                let name = self.regions[r].name.clone();
                self.event(format!("{name}'s relay reaches the global layer again"));
            }
            let relay = &self.regions[r].relay;
            if !relay.up || relay.cut_until != 0 || !self.rng.random_bool(0.5) {
                continue;
            }
            for _ in 0..RELAY_BATCH {
                let region = &mut self.regions[r];
                let off = region.relay.out_next;
                if off as usize >= region.outbound.len() || !region.relay.out.may_read() {
                    break;
                }
                let env = region.outbound[off as usize].clone();
                region.relay.out_next += 1;
                if let Outbound::Produce { env, .. } = region.relay.out.read(0, off, Some(env)) {
                    let d = self.region_index(&env.dest);
                    self.regions[d].global.push(env);
                    self.relayed += 1;
                    let confirmed = self.regions[r].relay.out.delivered(0, off, Ok(()));
                    confirmed.expect("a confirmation is never refused");
                }
            }
            for _ in 0..RELAY_BATCH {
                let region = &mut self.regions[r];
                let off = region.relay.in_next;
                if off as usize >= region.global.len() {
                    break;
                }
                let env = region.global[off as usize].clone();
                region.relay.in_next += 1;
                region.relay.ledger.read(0, off);
                let (kind, origin) = (env.body.kind(), env.origin.clone());
                let arrival = region.relay.inbound.arrival(env, &region.homes);
                self.arrive(r, arrival, kind, &origin);
                self.regions[r].relay.ledger.done(0, off);
            }
            if self.now.is_multiple_of(5) {
                let relay = &mut self.regions[r].relay;
                if let Some((_, next)) = relay.out.to_commit(None).pop() {
                    relay.out_committed = next;
                }
                if let Some((_, next)) = relay.ledger.to_commit(None).pop() {
                    relay.in_committed = next;
                }
            }
        }
    }

    /// What region `r`'s inbound relay does with an arrival (as
    /// `iris_kafka`'s `deliver`; the regional bus here never refuses).
    fn arrive(&mut self, r: usize, arrival: Arrival, kind: &str, origin: &str) {
        let name = self.regions[r].name.clone();
        match arrival {
            Arrival::Shard(se) => {
                let (p, off) = self.publish(r, se);
                self.event(format!("{name}'s relay hands {kind} from {origin} to partition {p} offset {off}"));
            }
            Arrival::Forward { env, home } => {
                self.event(format!("{name}'s relay sends {kind} from {origin} on to {home}"));
                self.regions[r].outbound.push(env);
            }
            Arrival::Edge(ee) => {
                for part in ee.body.into_parts() {
                    self.edge_input(&ee.edge, part);
                }
            }
            Arrival::EdgeAlive(edge) => self.put_on_every_shard(r, ShardInput::EdgeAlive { edge }),
            Arrival::EdgeStarted(edge) => {
                self.event(format!("{name}'s relay tells every shard {edge} started"));
                self.put_on_every_shard(r, ShardInput::EdgeStarted { edge });
            }
            Arrival::Home(a) => {
                self.regions[r].homes.apply(&a);
            }
            Arrival::Dropped(reason) => {
                self.event(format!("{name}'s relay drops {kind} from {origin}: {reason}"));
            }
        }
    }

    /// Edges renew their lease on every shard, `renewals` times a lease.
    fn edges_step(&mut self) {
        let every = (self.cfg.edge_lease_ms / self.cfg.renewals).max(1);
        for e in 0..self.edges.len() {
            if self.edges[e].up && self.edges[e].cut_until != 0 && self.now >= self.edges[e].cut_until {
                self.edge_reconnects(e);
            }
            if !self.edges[e].up || self.now < self.edges[e].cut_until || self.now < self.edges[e].next_renewal {
                continue;
            }
            self.edges[e].next_renewal = self.now + every;
            let (edge, r) = (self.edges[e].id.clone(), self.edges[e].region);
            self.put_on_every_shard(r, ShardInput::EdgeAlive { edge: edge.clone() });
            // And in every other region, through the global layer
            // (`Federation::edge_alive`): its sessions may be travellers'.
            self.send_to_other_regions(r, GlobalBody::EdgeAlive { edge });
        }
    }

    /// An edge reaches the bus again: its producer sends what it held, in
    /// order, and it reads what waited on its topic; it renews again.
    fn edge_reconnects(&mut self, e: usize) {
        self.edges[e].cut_until = 0;
        self.edges[e].up_since = self.now;
        self.edges[e].next_renewal = self.now;
        let (outbox, inbox) = (std::mem::take(&mut self.edges[e].outbox), std::mem::take(&mut self.edges[e].inbox));
        self.event(format!("edge {e} reaches the bus again ({} held out, {} held in)", outbox.len(), inbox.len()));
        let r = self.edges[e].region;
        for env in outbox {
            self.route_shard(r, env);
        }
        let edge = self.edges[e].id.clone();
        for input in inbox {
            self.edge_input(&edge, input);
        }
    }

    /// Edge `e` publishes an envelope: at once, or held in its producer
    /// while it is cut off from the bus (`None`).
    fn edge_publish(&mut self, e: usize, env: ShardEnvelope) -> Option<String> {
        if self.now < self.edges[e].cut_until {
            self.edges[e].outbox.push(env);
            return None;
        }
        Some(self.route_shard(self.edges[e].region, env))
    }

    /// The group assigns partitions round robin over the nodes that are up.
    fn rebalance(&mut self, r: usize) {
        // A rebalance waits for every member to take part: a stopped one
        // holds it up until it runs again or is put out of the group (the
        // old owner gives a partition up before the new one gets it).
        let members: Vec<usize> = (0..self.nodes.len()).filter(|n| self.nodes[*n].region == r).collect();
        if members.iter().any(|&n| self.nodes[n].up && self.nodes[n].in_group && self.now < self.nodes[n].paused_until)
        {
            self.regions[r].rebalance_pending = true;
            return;
        }
        self.regions[r].rebalance_pending = false;
        let up: Vec<usize> = members.into_iter().filter(|&n| self.nodes[n].up && self.nodes[n].in_group).collect();
        if up.is_empty() {
            return;
        }
        for p in 0..self.regions[r].partitions.len() {
            let owner = up[p % up.len()];
            let old = self.regions[r].partitions[p].owner;
            if old == Some(owner) {
                continue;
            }
            let part = p as i32;
            // A node out of the group (stalled) is not told: it learns
            // when it reaches the group again.
            if let Some(o) = old
                && self.nodes[o].up
                && self.nodes[o].in_group
            {
                let shards = self.nodes[o].parts.revoked(&[part]);
                self.nodes[o].feed.handle_input(FeedInput::Revoked(shards));
                self.nodes[o].fetch.remove(&part);
                self.nodes[o].paused.remove(&part);
                self.carry_out(o);
            }
            self.regions[r].partitions[p].owner = Some(owner);
            let from = self.regions[r].partitions[p].committed;
            self.nodes[owner].fetch.insert(part, from);
            self.nodes[owner].paused.remove(&part);
            let shards = self.nodes[owner].parts.assigned(&[part]);
            self.nodes[owner].feed.handle_input(FeedInput::Assigned(shards));
            let name = self.regions[r].name.clone();
            self.event(format!("{name}'s partition {p} to node {owner} from offset {from}"));
            self.carry_out(owner);
        }
    }

    fn clients_step(&mut self) {
        for c in 0..self.clients.len() {
            self.connection_step(c);
            // A client sends once welcomed, as the protocol has it.
            if !matches!(self.clients[c].conn, Conn::Open(_)) {
                continue;
            }
            // It sets a status now and then; healed, it is online again
            // (the status holds for all its sessions: set on any one).
            let status = if self.faults {
                self.rng
                    .random_bool(self.cfg.set_status)
                    .then(|| [SetStatus::Online, SetStatus::Away, SetStatus::Invisible][self.rng.random_range(0..3)])
            } else {
                (!self.clients[c].online()).then_some(SetStatus::Online)
            };
            if let Some(status) = status {
                self.clients[c].status = Some(status);
                self.statuses += usize::from(self.faults);
                self.event(format!("u{c} sets its status {status:?}"));
                self.client_writes(c, ClientFrame::Presence(SetPresence { status }));
            }
            if !self.rng.random_bool(self.cfg.send) {
                // Idle for a heartbeat: it pings, which keeps the session.
                if self.now - self.clients[c].last_sent >= self.cfg.heartbeat_ms {
                    self.client_writes(c, ClientFrame::Ping(Ping { ts: Some(self.now as i64) }));
                }
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
            self.event(format!("u{c} sends {client_id} to u{to}"));
            let body = client_id.clone().into();
            self.client_writes(c, ClientFrame::Send(iris_protocol::Send { id: client_id, to: format!("u{to}"), body }));
        }
    }

    /// A client connects through an edge that is up, or leaves its session:
    /// it closes it, or it vanishes (nothing reaches the edge).
    fn connection_step(&mut self, c: usize) {
        match self.clients[c].conn.clone() {
            Conn::Off => {
                let up: Vec<usize> = (0..self.edges.len()).filter(|e| self.edges[*e].up).collect();
                if up.is_empty() || !self.rng.random_bool(self.cfg.connect) {
                    return;
                }
                let e = up[self.rng.random_range(0..up.len())];
                // (A client can connect to an edge cut off from the bus: its
                // opening waits there, and the welcome comes after the cut,
                // or the edge gives up on it first.)
                let id = self.next_session;
                self.next_session += 1;
                let session = SessionAddr { edge: self.edges[e].id.clone(), session: SessionId(id) };
                let state = SessionState::new(self.edges[e].session_cfg.clone(), session.clone(), self.now as i64);
                self.edges[e].sessions.insert(id, EdgeSession { state, client: c, gone: false });
                self.clients[c].conn = Conn::Opening(session);
                self.sessions_opened += 1;
                let forged = self.faults && self.rng.random_bool(self.cfg.bad_token);
                let token = if forged { self.forged.clone() } else { self.tokens[c].clone() };
                let seen = self.clients[c].seen;
                let resume_after = (seen > 0).then_some(seen);
                let how = if forged { ", with a forged token" } else { "" };
                self.event(format!("u{c} connects to edge {e} (session {id}, resume after {resume_after:?}{how})"));
                self.client_writes(c, ClientFrame::Hello(Hello { token, device: None, resume_after }));
            }
            Conn::Open(session) if self.faults && self.rng.random_bool(self.cfg.drop) => {
                let e = self.edge_index(&session.edge);
                let id = session.session.0;
                self.clients[c].conn = Conn::Off;
                self.clients[c].subscribed = None;
                if self.rng.random_bool(self.cfg.vanish) {
                    self.vanished += 1;
                    if let Some(s) = self.edges[e].sessions.get_mut(&id) {
                        s.gone = true;
                    }
                    self.event(format!("u{c} vanishes from session {id}"));
                } else {
                    // The edge reads the close (or the broken connection).
                    self.event(format!("u{c} closes session {id}"));
                    if let Some(s) = self.edges[e].sessions.get_mut(&id) {
                        s.state.close_now(CloseReason::ClientGone);
                    }
                    self.pump(e, id);
                }
            }
            _ => {}
        }
    }

    /// Is session `id` of edge `e` the one client `c` holds?
    fn client_on(&self, c: usize, e: usize, id: u64) -> bool {
        self.clients[c].conn.session().is_some_and(|s| s.session.0 == id && s.edge == self.edges[e].id)
    }

    /// Client `c` writes a frame on its session, encoded as it encodes, and
    /// its edge reads it.
    fn client_writes(&mut self, c: usize, frame: ClientFrame) {
        let Some(addr) = self.clients[c].conn.session().cloned() else { return };
        let (e, id) = (self.edge_index(&addr.edge), addr.session.0);
        let encoding = self.clients[c].encoding;
        let bytes = frame.encode(encoding);
        self.clients[c].last_sent = self.now;
        self.frames += 1;
        let now = self.now as i64;
        let Some(s) = self.edges[e].sessions.get_mut(&id) else { return };
        s.state.handle_frame(now, &bytes, encoding);
        self.pump(e, id);
    }

    /// Each session's hello and heartbeat deadlines, on its edge's clock.
    fn sessions_step(&mut self) {
        let now = self.now as i64;
        for e in 0..self.edges.len() {
            if !self.edges[e].up {
                continue;
            }
            let due: Vec<u64> = self.edges[e]
                .sessions
                .iter()
                .filter(|(_, s)| s.state.poll_timeout() <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                let s = self.edges[e].sessions.get_mut(&id).expect("listed above");
                let opening = !s.state.is_open();
                s.state.handle_timeout(now);
                if opening && s.state.is_closed() {
                    self.hello_timeouts += 1;
                }
                self.pump(e, id);
            }
        }
    }

    /// Carries out what session `id` of edge `e` has to do, as the edge's
    /// session task does: frames to its client, envelopes to the bus, its
    /// token checked, its close (and farewell).
    fn pump(&mut self, e: usize, id: u64) {
        loop {
            let Some(s) = self.edges[e].sessions.get_mut(&id) else { return };
            let Some(out) = s.state.poll_output() else { return };
            let (c, gone, encoding) = (s.client, s.gone, s.state.encoding().unwrap_or(Encoding::Json));
            match out {
                SessionOutput::Send(frame) => {
                    if !gone {
                        self.client_reads(c, e, id, &frame.encode(encoding), encoding);
                    }
                }
                SessionOutput::Route { mut env, .. } => {
                    if let (true, ShardInput::SetPresenceAt { session, status, .. }) =
                        (self.bugs.unstamped_statuses, &env.body)
                    {
                        env.body = ShardInput::SetPresence { session: session.clone(), status: *status };
                    }
                    let kind = env.body.kind();
                    let at = self.edge_publish(e, env);
                    self.event(format!("edge {e} routes {kind} of session {id} ({})", placed(at)));
                }
                SessionOutput::Verify(token) => {
                    self.auth_clock.set(self.now as i64);
                    let result = token_checked(true, || self.verifier.verify(&token));
                    if result.is_err() {
                        self.bad_tokens += 1;
                        self.event(format!("edge {e} refuses the token of session {id}"));
                    }
                    if let Some(s) = self.edges[e].sessions.get_mut(&id) {
                        s.state.authenticated(result);
                    }
                }
                SessionOutput::AuthFailed | SessionOutput::Register(_) => {}
                SessionOutput::Close(reason) => {
                    self.session_closed(e, id, reason);
                    return;
                }
            }
        }
    }

    /// Edge `e` closes session `id`: it tells the shards (the farewell), and
    /// its client, if still there, is off.
    fn session_closed(&mut self, e: usize, id: u64, reason: CloseReason) {
        let Some(mut s) = self.edges[e].sessions.remove(&id) else { return };
        self.event(format!("edge {e} closes session {id} of u{}: {} {}", s.client, reason.code(), reason.as_str()));
        if self.client_on(s.client, e, id) {
            self.clients[s.client].conn = Conn::Off;
            self.clients[s.client].subscribed = None;
        }
        for env in s.state.farewell() {
            self.edge_publish(e, env);
        }
    }

    fn edge_index(&self, id: &EdgeId) -> usize {
        let index = id.0[1..].split('@').next().unwrap_or_default();
        index.parse().expect("edge ids are e<index>@<region>")
    }

    fn node_step(&mut self, n: usize) {
        // Fetch what each owned, unpaused partition has (a fetch returns a
        // batch, as Kafka's does).
        let owned: Vec<(i32, i64)> = self.nodes[n].fetch.iter().map(|(p, o)| (*p, *o)).collect();
        let cut = self.now < self.nodes[n].cut_until;
        let r = self.nodes[n].region;
        for (p, at) in owned {
            if cut || self.nodes[n].paused.contains(&p) {
                continue;
            }
            let log_len = self.regions[r].partitions[p as usize].log.len() as i64;
            let upto = (at + 16).min(log_len);
            for off in at..upto {
                let (shard, env) = self.regions[r].partitions[p as usize].log[off as usize].clone();
                // (Never past its bound here: a few thousand records a run.)
                self.nodes[n].parts.returned(p, off, Some(shard));
                self.nodes[n].feed.handle_input(FeedInput::Record { shard, offset: off, env });
            }
            self.nodes[n].fetch.insert(p, upto);
        }
        // The shell's timer retries envelopes held before a full shard
        // (it may fire late).
        if self.nodes[n].feed.holding() && self.now >= self.nodes[n].retry_at {
            self.nodes[n].feed.handle_input(FeedInput::Retry);
        }
        self.carry_out(n);
        // Each active shard takes a few inputs, as its permits allow, and
        // its pump marks the input clock.
        let active: Vec<u64> = self.nodes[n].active.values().copied().collect();
        for inst in active {
            let take = self.rng.random_range(1..=self.cfg.max_take);
            for _ in 0..take {
                self.shard_input(n, inst);
            }
            let t = self.node_now(n);
            if let Some(sh) = self.nodes[n].shards.get_mut(&inst) {
                let empty = sh.queue.is_empty();
                sh.clock.mark(t, empty, empty);
            }
        }
        self.lease_checks(n);
        // Commits that are due finish, in due order (not issue order).
        let now = self.now;
        let commits = std::mem::take(&mut self.nodes[n].commits);
        let (due, waiting): (Vec<_>, Vec<_>) = commits.into_iter().partition(|c| c.0 <= now);
        self.nodes[n].commits = waiting;
        for (_, inst, tickets, started, batch) in due {
            let records: Vec<(String, u32, Vec<String>)> = batch
                .ops
                .iter()
                .filter_map(|op| match op {
                    iris_storage::WriteOp::Session { user, record, .. } => {
                        Some((user.user.to_string(), record.sessions, record.nodes.clone()))
                    }
                    _ => None,
                })
                .collect();
            let fail = self.faults && self.rng.random_bool(self.cfg.commit_failure);
            let timed_out = !fail && self.faults && self.rng.random_bool(self.cfg.commit_timeout);
            let result = if fail {
                self.failed_commits += 1;
                Err(StoreError::Unavailable("injected".into()))
            } else if timed_out {
                // It landed, but the answer never came back in time.
                self.landed_timeouts += 1;
                self.land(r, batch).and(Err(StoreError::Unavailable("timed out (landed)".into())))
            } else {
                self.land(r, batch)
            };
            let ok = if result.is_ok() { "ok" } else { "failed" };
            let records: Vec<String> = records.iter().map(|(u, n, nodes)| format!("{u}: {n} on {nodes:?}")).collect();
            let records = if records.is_empty() { String::new() } else { format!(", records {}", records.join(", ")) };
            self.event(format!("node {n} shard instance {inst} tickets {tickets:?} commit {ok}{records}"));
            if let Some(sh) = self.nodes[n].shards.get_mut(&inst) {
                let unwritten = sh.commits.finished(started, result.is_ok());
                for t in tickets.into_iter().chain(unwritten) {
                    sh.state.committed(t, result.clone());
                }
            }
            self.start_commits(n, inst);
            self.outputs(n, inst);
        }
        // A revoked shard goes once nothing of it runs (with the
        // lease-after-revoke bug, it lives on).
        let active: BTreeSet<u64> = self.nodes[n].active.values().copied().collect();
        let running: BTreeSet<u64> = self.nodes[n].commits.iter().map(|c| c.1).collect();
        let leak = self.bugs.lease_after_revoke;
        self.nodes[n]
            .shards
            .retain(|inst, sh| leak || active.contains(inst) || running.contains(inst) || sh.commits.waiting() > 0);
        // Offsets: every few steps, as the shell's commit tick.
        if self.now.is_multiple_of(5) {
            let node = &self.nodes[n];
            let durable: Vec<(ShardId, u64)> =
                node.active.iter().map(|(s, inst)| (*s, node.shards[inst].state.inputs_durable())).collect();
            self.nodes[n].feed.handle_input(FeedInput::Progress(durable));
            self.carry_out(n);
        }
    }

    /// Each shard's lease timer, a few times per lease: the shard ends the
    /// leases of edges it has not heard from, judged by its input clock.
    /// A revoked shard's timer is cancelled (unless the bug is back).
    fn lease_checks(&mut self, n: usize) {
        let every = (self.cfg.edge_lease_ms / 8).max(1);
        let lease = self.cfg.edge_lease_ms;
        let insts: Vec<u64> = self.nodes[n].shards.keys().copied().collect();
        for inst in insts {
            // Scheduled on the simulation's time; judged on the node's clock.
            let (now, t) = (self.now, self.node_now(n));
            let sh = self.nodes[n].shards.get_mut(&inst).expect("listed above");
            if (sh.revoked && !self.bugs.lease_after_revoke) || now < sh.next_lease_check {
                continue;
            }
            sh.next_lease_check = now + every;
            // The shard's tick to its own partition (not while its node is
            // cut off from the bus).
            let (shard, tick) = (sh.shard, sh.clock.tick(t));
            if let Some(tick) = tick
                && now >= self.nodes[n].cut_until
            {
                let r = self.nodes[n].region;
                self.append(r, shard, ShardEnvelope { owner: ShardKey::Shard, body: tick, trace: None });
            }
            let sh = self.nodes[n].shards.get_mut(&inst).expect("listed above");
            // After a failed commit, an idle shard repairs its records too.
            if sh.state.needs_reset()
                && let Some((ticket, batch)) = sh.state.reset()
            {
                sh.commits.push(ticket, batch);
                self.start_commits(n, inst);
            }
            let sh = self.nodes[n].shards.get_mut(&inst).expect("listed above");
            let before = sh.state.leased_edges();
            let caught_up = sh.clock.caught_up(t);
            let written = sh.state.handle_timeout(t, caught_up);
            let after = sh.state.leased_edges();
            let (p, revoked) = (sh.shard.0, sh.revoked);
            for edge in before.iter().filter(|e| !after.contains(e)) {
                self.leases_ended += 1;
                let e = self.edge_index(edge);
                self.event(format!("shard instance {inst} (shard {p}) ends the lease of edge {e}"));
                // (An edge cut off from the bus is not renewing; a foreign
                // edge's renewals come through the relays.)
                let calm = self.regions.iter().all(|r| r.relay.up && r.relay.cut_until == 0);
                let reaches =
                    self.edges[e].region == self.nodes[n].region || (calm && self.global_calm_since + lease <= now);
                if self.edges[e].up
                    && now >= self.edges[e].cut_until
                    && self.edges[e].up_since + lease <= now
                    && reaches
                {
                    self.violation(format!(
                        "shard instance {inst} (shard {p}) ended the lease of edge {e}, which has been up and renewing it since {}",
                        self.edges[e].up_since
                    ));
                }
            }
            if let Some((ticket, batch)) = written {
                if revoked {
                    self.violation(format!(
                        "shard instance {inst} (shard {p}) wrote {} records after its revocation",
                        batch.ops.len()
                    ));
                }
                let sh = self.nodes[n].shards.get_mut(&inst).expect("listed above");
                sh.commits.push(ticket, batch);
                self.start_commits(n, inst);
            }
            self.outputs(n, inst);
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
                        // Per actor, as the node's shard host makes it.
                        id_seed: self.nodes[n].id_seed ^ (self.next_instance as u32).wrapping_mul(0x9e37_79b9),
                        recent_dedup: 64,
                        edge_lease_ms: self.cfg.edge_lease_ms as i64,
                        region: self.regions[self.nodes[n].region].name.clone(),
                        page_max_bytes: 1 << 16,
                        mark_presence: true,
                    });
                    let inst = self.next_instance;
                    self.next_instance += 1;
                    // The shell claims the shard's owner epoch before it hands
                    // the shard any input (a store round trip; here at once).
                    let mut state = state;
                    let store = &self.regions[self.nodes[n].region].store;
                    let epoch = now_or_never(store.claim_shard(s.0)).expect("the memory store claims");
                    state.claimed(epoch);
                    let commits = CommitQueue::new(2, 512).isolating_users(!self.bugs.no_user_isolation);
                    let clock = if self.bugs.paused_looks_caught_up {
                        InputClock::default().with_paused_looking_caught_up()
                    } else {
                        InputClock::default()
                    };
                    // Each shard instance ticks with an origin of its own.
                    // (The paused-partition bug predates ticks, which hide
                    // it too: bringing it back means the clock of that time.)
                    let ticks = !self.bugs.no_ticks && !self.bugs.paused_looks_caught_up;
                    let clock = if ticks { clock.with_ticks(inst + 1, self.node_now(n)) } else { clock };
                    let shard = Shard {
                        shard: s,
                        state,
                        queue: VecDeque::new(),
                        commits,
                        clock,
                        revoked: false,
                        next_lease_check: self.now,
                    };
                    self.nodes[n].shards.insert(inst, shard);
                    self.nodes[n].active.insert(s, inst);
                    // As the shell does: its partition may have been left
                    // paused by an earlier owner here (shared: unless a
                    // sibling shard still holds it paused).
                    if let Some(p) = self.nodes[n].parts.resume(s) {
                        self.nodes[n].paused.remove(&p);
                        self.partition_held(n, p, false);
                    }
                }
                FeedOutput::Stop(s) => {
                    // The actor finishes what is in flight and stops; what
                    // it had not taken is read again by the next owner.
                    if let Some(inst) = self.nodes[n].active.remove(&s)
                        && let Some(sh) = self.nodes[n].shards.get_mut(&inst)
                    {
                        sh.queue.clear();
                        sh.revoked = true;
                        // What it still holds answers inputs the next owner
                        // reads again (the actor's `Close`).
                        if !self.bugs.revoked_shard_answers {
                            sh.state.revoked();
                        }
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
                        self.commit_offsets(n, vec![(self.spread.partition(shard), next)]);
                    }
                }
                FeedOutput::Pause(s) => {
                    self.held_upstream(n, s, true);
                    if let Some(p) = self.nodes[n].parts.pause(s) {
                        self.nodes[n].paused.insert(p);
                        if !self.bugs.siblings_look_caught_up {
                            self.partition_held(n, p, true);
                        }
                    }
                }
                FeedOutput::Resume(s) => {
                    // Only once no shard of its partition holds it paused.
                    if let Some(p) = self.nodes[n].parts.resume(s) {
                        self.nodes[n].paused.remove(&p);
                        self.partition_held(n, p, false);
                    } else if self.bugs.siblings_look_caught_up {
                        self.held_upstream(n, s, false);
                    }
                }
                FeedOutput::Commit(_) if !self.nodes[n].in_group || self.now < self.nodes[n].cut_until => {
                    // The coordinator cannot be reached, or refuses a member
                    // it no longer has; the feed commits again later.
                }
                FeedOutput::Commit(offsets) => {
                    let partitions = if self.bugs.shared_commit_by_shard {
                        offsets.iter().map(|(s, next)| (self.spread.partition(*s), *next)).collect()
                    } else {
                        self.nodes[n].parts.to_commit(&offsets)
                    };
                    if !self.bugs.commit_on_hand {
                        self.commit_offsets(n, partitions.clone());
                    }
                    self.nodes[n].parts.committed(&partitions);
                    self.nodes[n].feed.handle_input(FeedInput::Committed(offsets));
                }
                FeedOutput::NotOwned { shard, offset } => {
                    self.event(format!("node {n} dropped record {offset} of partition {} not owned", shard.0));
                }
            }
        }
    }

    /// Tells the active shard of `s` on node `n` that envelopes wait (or no
    /// longer wait) before its queue, as the shell does on pause and resume.
    fn held_upstream(&mut self, n: usize, s: ShardId, held: bool) {
        if let Some(inst) = self.nodes[n].active.get(&s).copied()
            && let Some(sh) = self.nodes[n].shards.get_mut(&inst)
        {
            sh.clock.set_held_upstream(held);
        }
    }

    /// Every shard partition `p` carries, as the shell marks them when the
    /// partition pauses or resumes (their records wait on the bus).
    fn partition_held(&mut self, n: usize, p: i32, held: bool) {
        let shards: Vec<ShardId> = self.spread.shards_of(p).collect();
        for s in shards {
            self.held_upstream(n, s, held);
        }
    }

    /// The group coordinator takes a commit only from the partition's
    /// owner; the checker verifies it covers only durable work.
    fn commit_offsets(&mut self, n: usize, offsets: Vec<(i32, i64)>) {
        let r = self.nodes[n].region;
        for (p, next) in offsets {
            let p = p as usize;
            if !self.nodes[n].in_group || self.now < self.nodes[n].cut_until {
                continue; // refused: the coordinator does not hear it, or not from a member
            }
            if self.regions[r].partitions[p].owner != Some(n) {
                // The coordinator refuses it; a feed that tries it has kept
                // a partition it no longer owns.
                self.violation(format!("node {n} committed partition {p}, which it does not own"));
                continue;
            }
            if next <= self.regions[r].partitions[p].committed {
                continue;
            }
            // Every send before `next` must be done: in the store, or
            // answered with an error (its write failed; the client retries).
            for off in self.regions[r].partitions[p].committed..next {
                let (_, env) = self.regions[r].partitions[p].log[off as usize].clone();
                if let (ShardInput::Send { from, client_id, .. }, Some(owner)) = (&env.body, env.owner.user())
                    && !self.refused.contains(&**client_id)
                    && !self.stored(r, owner, from, client_id)
                {
                    self.violation(format!(
                        "partition {p} committed to {next} by node {n}, but the send {client_id} at offset {off} is neither durable nor answered"
                    ));
                }
            }
            self.regions[r].partitions[p].committed = next;
            self.event(format!("partition {p} committed to {next} by node {n}"));
        }
    }

    /// A commit reaches the store.
    fn land(&self, r: usize, mut batch: WriteBatch) -> Result<(), StoreError> {
        for op in &mut batch.ops {
            match op {
                iris_storage::WriteOp::Session { version, .. } if self.bugs.unfenced_records => {
                    *version = u64::MAX; // every write lands: last writer wins
                }
                iris_storage::WriteOp::Meta { version, .. } if self.bugs.unfenced_metas => *version = u64::MAX,
                _ => {}
            }
        }
        now_or_never(self.regions[r].store.commit(batch))
    }

    fn stored(&self, r: usize, owner: &UserKey, from: &str, client_id: &str) -> bool {
        self.regions[r].store.inbox(owner).iter().any(|m| &*m.from == from && m.body.as_ref() == client_id.as_bytes())
    }

    /// Shard instance `inst` of node `n` takes its next input.
    fn shard_input(&mut self, n: usize, inst: u64) {
        let (t, r) = (self.node_now(n), self.nodes[n].region);
        let Some(sh) = self.nodes[n].shards.get_mut(&inst) else { return };
        // The pump holds a permit per input until its writes are durable.
        if sh.state.inputs_seen() - sh.state.inputs_durable() >= self.cfg.max_inflight {
            return;
        }
        let Some(env) = sh.queue.pop_front() else { return };
        sh.clock.took(&env.body);
        if sh.state.needs_reset()
            && let Some((ticket, batch)) = sh.state.reset()
        {
            sh.commits.push(ticket, batch);
            self.start_commits(n, inst);
        }
        let Some(sh) = self.nodes[n].shards.get_mut(&inst) else { return };
        let needs = sh.state.needs(&env);
        let store = &self.regions[r].store;
        let loaded = (|| -> Result<Found, StoreError> {
            if let Some(u) = &needs.user {
                let record = now_or_never(store.load_user(u))?;
                sh.state.insert_user(u.clone(), record);
            }
            let dedup = match &needs.dedup {
                Some(k) => now_or_never(store.dedup(k))?,
                None => None,
            };
            Ok(Found { dedup, events_seen: vec![false; needs.events.len()] })
        })();
        let written = match loaded {
            Ok(found) => sh.state.handle(t, env, found),
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
                Output::Edge(env) => self.route_edge(self.nodes[n].region, env),
                Output::Shard(env) => {
                    self.route_shard(self.nodes[n].region, env);
                }
                Output::Read(read) => {
                    let store = &self.regions[self.nodes[n].region].store;
                    let Some(sh) = self.nodes[n].shards.get_mut(&inst) else { return };
                    let result = match sh.state.query(&read) {
                        iris_core::state::Query::Inbox { user, after, limit, max_bytes } => {
                            ReadResult::Inbox(now_or_never(store.read_inbox(user, after, limit, max_bytes)))
                        }
                        iris_core::state::Query::Range { user, from, to, limit } => {
                            ReadResult::Range(now_or_never(store.read_range(user, from, to, limit)))
                        }
                        iris_core::state::Query::PendingReceipts { user, limit } => {
                            ReadResult::PendingReceipts(now_or_never(store.pending_receipts(user, limit)))
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

    /// What an edge receives for its sessions.
    fn edge_input(&mut self, edge: &EdgeId, input: EdgeInput) {
        let e = self.edge_index(edge);
        if !self.edges[e].up {
            return; // the bus keeps it for no one: the process is gone
        }
        if self.now < self.edges[e].cut_until {
            self.edges[e].inbox.push_back(input); // waits on the edge's topic
            return;
        }
        let now = self.now as i64;
        match input {
            EdgeInput::Welcome { session, inbox_head } => {
                if let Some(s) = self.edges[e].sessions.get_mut(&session.0) {
                    s.state.welcomed(now, inbox_head);
                    self.pump(e, session.0);
                }
            }
            EdgeInput::Resync { region, shard } => {
                // Every open session whose user the shard owns registers
                // again, and each subscription to a user there is made again
                // (the session state machine decides which, by
                // `Router::owns`: homed in the shard's region, on its shard).
                let (ring, homes) = (&self.ring, &self.regions[self.edges[e].region].homes);
                for s in self.edges[e].sessions.values_mut() {
                    s.state.resync(|user| homes.home_of(user).0 == region && ring.shard_of(user) == shard);
                }
                let ids: Vec<u64> = self.edges[e].sessions.keys().copied().collect();
                self.event(format!("edge {e} resyncs its {} sessions with shard {}", ids.len(), shard.0));
                for id in ids {
                    self.pump(e, id);
                }
            }
            EdgeInput::Notice { to, notice, .. } => {
                let owner = match &notice {
                    Notice::MarkedPresence { owner, .. } if !self.bugs.owner_blind_edges => Some(*owner),
                    _ => None,
                };
                for id in to.as_slice() {
                    let id = id.0;
                    let frame = frame_of(notice.clone());
                    let Some(s) = self.edges[e].sessions.get_mut(&id) else { continue };
                    if let Some(owner) = owner
                        && !s.state.presence_from(&frame, owner)
                    {
                        self.event(format!("edge {e} drops session {id}'s presence word from an earlier owner"));
                        continue;
                    }
                    let (c, gone, encoding) = (s.client, s.gone, s.state.encoding().unwrap_or(Encoding::Json));
                    if !gone {
                        self.client_reads(c, e, id, &frame.encode(encoding), encoding);
                    }
                    if let Some(s) = self.edges[e].sessions.get_mut(&id) {
                        s.state.wrote_from_shard(&frame);
                    }
                    self.pump(e, id);
                }
            }
            _ => {}
        }
    }

    /// Client `c` reads a frame its session `id` on edge `e` was written.
    fn client_reads(&mut self, c: usize, e: usize, id: u64, bytes: &[u8], encoding: Encoding) {
        self.frames += 1;
        let frame = match ServerFrame::decode(bytes, encoding) {
            Ok(frame) => frame,
            Err(err) => {
                self.violation(format!("u{c} could not decode a frame of session {id}: {err:?}"));
                return;
            }
        };
        if !self.client_on(c, e, id) {
            return; // a session it has left
        }
        match frame {
            ServerFrame::Welcome(w) => {
                if let Conn::Opening(s) = self.clients[c].conn.clone() {
                    self.clients[c].conn = Conn::Open(s);
                    // Without resume_after, what the inbox held is history.
                    if self.clients[c].seen == 0 {
                        self.clients[c].seen = w.inbox_head;
                    }
                    self.event(format!("u{c} welcomed on session {id} (head {})", w.inbox_head));
                    // It follows its target's presence on this session.
                    // (One target each: the edge keeps a session's
                    // subscriptions in a hash set, whose order would enter
                    // the trace through its resync and farewell with more.)
                    let t = self.target(c);
                    self.clients[c].subscribed = Some(id);
                    self.clients[c].target_seen = None;
                    self.client_writes(c, ClientFrame::Subscribe(Users { users: vec![format!("u{t}")] }));
                    if let Some(status) = self.clients[c].status {
                        self.event(format!("u{c} sets its status {status:?} again"));
                        self.client_writes(c, ClientFrame::Presence(SetPresence { status }));
                    }
                }
            }
            ServerFrame::Error(err) => {
                let about = err.id.map(|send| format!(" for {send}")).unwrap_or_default();
                self.event(format!("u{c} got error {}{about}: {}", err.code.as_str(), err.message));
            }
            ServerFrame::Accepted(a) => {
                let Some(p) = &self.clients[c].pending else { return };
                if p.client_id != a.id {
                    return; // an answer to an earlier try, already taken
                }
                let to = p.to;
                self.event(format!("u{c} got accepted {} ({})", a.id, a.msg_id));
                self.clients[c].accepted.push((to, a.id, a.msg_id));
                self.clients[c].pending = None;
            }
            ServerFrame::Message(m) => {
                self.clients[c].seen = self.clients[c].seen.max(m.seq);
            }
            ServerFrame::Presence(p)
                if self.clients[c].subscribed == Some(id) && p.user == format!("u{}", self.target(c)) =>
            {
                self.clients[c].target_seen = Some(p.status);
                self.event(format!("u{c} hears {} is {:?} (session {id})", p.user, p.status));
            }
            _ => {}
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
        // Presence converges for followers too: everyone is online at the
        // end, and each follower's last word of its target says so.
        for c in 0..self.clients.len() {
            let (t, seen) = (self.target(c), self.clients[c].target_seen);
            if seen != Some(iris_types::PresenceStatus::Online) {
                self.violation(format!("u{c} follows u{t}, who is online, and last heard {seen:?}"));
            }
        }
        // Presence converges: the session record names what the client holds.
        for c in 0..self.clients.len() {
            let record = now_or_never(self.regions[self.home(c)].store.session(&user(c))).ok().flatten();
            let (sessions, nodes) = record.map(|r| (r.sessions, r.nodes)).unwrap_or_default();
            let (want, want_nodes) = match self.clients[c].conn.session() {
                Some(s) => (1, vec![s.edge.to_string()]),
                None => (0, Vec::new()),
            };
            if sessions != want || nodes != want_nodes {
                self.violation(format!(
                    "u{c}'s session record says {sessions} sessions on {nodes:?}; its client holds {want} on {want_nodes:?}"
                ));
            }
        }
        for r in 0..self.cfg.users {
            let inbox = self.regions[self.home(r)].store.inbox(&user(r));
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
                let inbox = self.regions[self.home(r)].store.inbox(&user(r));
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
