//! The shard state machine: every decision a shard makes, with no I/O.
//!
//! A shard owns the users the ring places on it: their inbox sequence, dedup
//! of retried sends, who is online where, who subscribed to their presence,
//! their contacts and circle policies. Inputs are envelopes (plus what the
//! actor loaded from storage for them); outputs are writes to make durable
//! and envelopes to publish.
//!
//! Durability ordering: an input that writes gets a ticket; every output is
//! tagged with the newest ticket issued so far and released only once that
//! ticket (and all before it) committed. So `accepted` and `message` never go
//! out before the message is synced, replays read only committed data, and a
//! shard's outputs leave in the order its inputs arrived. The ledger that
//! keeps this order is [`tickets`] (its own tests beside it).

use iris_envelope::{
    EdgeEnvelope, EdgeId, EdgeInput, InboxSeq, IngestEvent, Millis, Notice, OwnerMark, Recipients, ServiceReply,
    SessionAddr, ShardEnvelope, ShardId, ShardInput, ShardKey, UserKey,
};
use iris_storage::{
    CirclePolicy, Contact, DedupKey, DedupRecord, EventKey, LogKind, RollupKey, StoreError, StoredMessage, UserMeta,
    UserRecord, WriteBatch, WriteOp,
};
use iris_types::{ContactEntry, ErrorCode, PresenceStatus, ReceiptState, SetStatus};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The circle a contact lands in when none is named; it allows everything
/// until its owner changes it.
pub const DEFAULT_CIRCLE: &str = "contacts";

pub use input::InputClock;
pub use presence::STATUS_STAMP_LEEWAY_MS;
pub use tickets::Ticket;
use tickets::TicketLedger;

mod bars;
mod contacts;
mod inbox;
mod ingest;
mod input;
mod outputs;
mod presence;
mod receipts;
mod sessions;
mod tickets;
mod user;

pub use outputs::coalesce_edge_outputs;
use outputs::*;
use user::*;

/// What handling one input produces, gathered by the domain handlers
/// (`sessions`, `inbox`, `receipts`, `presence`, `contacts`) and then
/// ordered behind the input's write by [`ShardState::handle`].
#[derive(Default)]
struct Effects {
    /// Outputs, released once the input's write (and every one before) is durable.
    out: Vec<Output>,
    /// The input's writes: one ticket.
    batch: WriteBatch,
    /// Outputs that stand or fall with an earlier write (a retried send).
    dependent: Vec<(Ticket, Output)>,
    /// Outputs released in order behind the input's write but sent even if
    /// it fails: asking an edge to register its sessions again
    /// ([`EdgeInput::Resync`]), which the shard asks only once per lease.
    ordered: Vec<Output>,
    /// The owner's presence as others see it may have changed.
    presence_changed: bool,
}

/// Limits of one shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// This shard.
    pub shard: ShardId,
    /// Users kept in memory before idle ones are dropped (reloaded on demand).
    pub max_cached_users: usize,
    /// Most contacts one user may have.
    pub max_contacts: usize,
    /// Most presence subscribers one user may have.
    pub max_subscribers: usize,
    /// Most sessions one user may hold at once.
    pub max_sessions: usize,
    /// Random bits that make message ids unique across restarts.
    pub id_seed: u32,
    /// Committed dedup records kept in memory for fast retries.
    pub recent_dedup: usize,
    /// An edge not heard from for this long is dead: its sessions end.
    pub edge_lease_ms: Millis,
    /// The region, recorded with where users are connected.
    pub region: Arc<str>,
    /// About how many bytes one replay page holds at most.
    pub page_max_bytes: usize,
    /// Mark presence notices with this shard's owner
    /// ([`Notice::MarkedPresence`], ADR 0021), so that edges drop a
    /// zombie's stale word. Off only while edges of a version that cannot
    /// read the marked notice remain (a rolling upgrade, docs/operations.md).
    pub mark_presence: bool,
}

/// What the actor must load before handing an envelope to [`ShardState::handle`].
#[derive(Debug, Default, PartialEq)]
pub struct Needs {
    /// Load this user's record ([`ShardState::insert_user`]).
    pub user: Option<UserKey>,
    /// Look up this dedup record and pass it to `handle`.
    pub dedup: Option<DedupKey>,
    /// Check which of these event keys the store has seen.
    pub events: Vec<EventKey>,
}

/// What the actor found in storage for [`Needs`].
#[derive(Debug, Default)]
pub struct Found {
    /// The dedup record of a `Send`, if stored.
    pub dedup: Option<DedupRecord>,
    /// For each of [`Needs::events`], whether the store has seen it.
    pub events_seen: Vec<bool>,
}

/// Something the actor carries out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Publish to an edge.
    Edge(EdgeEnvelope),
    /// Publish to another shard.
    Shard(ShardEnvelope),
    /// Read from the store; the result comes back with the request through
    /// [`ShardState::read_done`], which decides what follows from it.
    Read(Read),
}

/// A read the shell makes for the shard ([`Output::Read`]): what to ask
/// the store is [`ShardState::query`]; the answer goes back, with the
/// request, to [`ShardState::read_done`].
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// Read a page of `user`'s inbox, send it to `session`, then `synced`.
    Replay {
        /// Whose inbox.
        user: UserKey,
        /// Where to send it.
        session: SessionAddr,
        /// Messages above this seq.
        after: InboxSeq,
        /// At most this many.
        limit: u32,
        /// The head to report in `synced`.
        inbox_head: InboxSeq,
        /// Whether `synced` ends the page whatever it held (a `sync` or a
        /// `hello` replay), or only when more pages wait (a replay after a
        /// shard moved, which the client did not ask for).
        always_synced: bool,
    },
    /// Read `user`'s messages in `(from, to]` and send `state` receipts to
    /// their senders' shards.
    Receipts {
        /// The recipient who acknowledged.
        user: UserKey,
        /// Exclusive lower bound.
        from: InboxSeq,
        /// Inclusive upper bound.
        to: InboxSeq,
        /// Delivered or read.
        state: ReceiptState,
    },
    /// Send `user`'s pending receipts to `session`, then forget them.
    FlushReceipts {
        /// The sender who was offline.
        user: UserKey,
        /// The session that just opened.
        session: SessionAddr,
    },
}

/// What the store is asked for a [`Read`].
#[derive(Debug, PartialEq)]
pub enum Query<'a> {
    /// `Store::read_inbox`.
    Inbox {
        /// Whose inbox.
        user: &'a UserKey,
        /// Messages above this seq.
        after: InboxSeq,
        /// At most this many.
        limit: usize,
        /// And at most about this many bytes.
        max_bytes: usize,
    },
    /// `Store::read_range`.
    Range {
        /// Whose inbox.
        user: &'a UserKey,
        /// Exclusive lower bound.
        from: InboxSeq,
        /// Inclusive upper bound.
        to: InboxSeq,
        /// At most this many.
        limit: usize,
    },
    /// `Store::pending_receipts`.
    PendingReceipts {
        /// Whose.
        user: &'a UserKey,
        /// At most this many.
        limit: usize,
    },
}

/// The store's answer to a [`Query`].
#[derive(Debug)]
pub enum ReadResult {
    /// For [`Query::Inbox`].
    Inbox(Result<iris_storage::InboxPage, StoreError>),
    /// For [`Query::Range`].
    Range(Result<Vec<StoredMessage>, StoreError>),
    /// For [`Query::PendingReceipts`].
    PendingReceipts(Result<Vec<iris_storage::PendingReceipt>, StoreError>),
}

/// What follows from a read: outputs to carry out at once, before anything
/// else ready (they answer a request already in the output order), and a
/// write to make durable.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// In order.
    pub outputs: Vec<Output>,
    /// To commit, like [`ShardState::handle`]'s.
    pub commit: Option<(Ticket, WriteBatch)>,
}

/// Messages read per page when fanning receipts out to their senders.
pub const RECEIPT_PAGE: usize = 1_000;
/// Pending receipts delivered to a session at most, per session opened.
pub const PENDING_RECEIPTS_MAX: usize = 10_000;

/// The state of one shard.
pub struct ShardState {
    config: ShardConfig,
    users: HashMap<UserKey, UserState>,
    inflight_dedup: HashMap<DedupKey, (DedupRecord, Ticket)>,
    inflight_order: VecDeque<(Ticket, DedupKey)>,
    recent_dedup: HashMap<DedupKey, DedupRecord>,
    recent_order: VecDeque<DedupKey>,
    inflight_events: HashMap<EventKey, Ticket>,
    inflight_events_order: VecDeque<(Ticket, EventKey)>,
    recent_events: HashSet<EventKey>,
    recent_events_order: VecDeque<EventKey>,
    tickets: TicketLedger<Output>,
    id_counter: u32,
    /// When each edge with sessions here was last heard from.
    leases: HashMap<EdgeId, Millis>,
    /// When the lease check last found the input behind (see
    /// `handle_timeout`).
    stalled_at: Option<Millis>,
    /// Tickets in flight that write session records, and whose; and those
    /// that write user metadata, and whose.
    record_writes: BTreeMap<Ticket, Vec<UserKey>>,
    meta_writes: BTreeMap<Ticket, Vec<UserKey>>,
    /// How many times [`ShardState::reset`] forgot the in-memory
    /// idempotency records (see [`ShardState::resets`]).
    resets: u64,
    /// Users whose session record write failed: rewritten from memory
    /// (which is true) at the next [`ShardState::reset`].
    records_to_repair: std::collections::BTreeSet<UserKey>,
    /// Users whose metadata write failed: rewritten from memory at the next
    /// reset, as their records are (ADR 0004 point 7).
    meta_to_repair: std::collections::BTreeSet<UserKey>,
    /// When this shard first ran here (its first input or lease check).
    started_at: Option<Millis>,
    /// Users whose session record this shard wrote in its first two leases
    /// here, while the previous owner's last writes may still land; `None`
    /// once they have been written again (see `handle_timeout`).
    takeover: Option<std::collections::BTreeSet<UserKey>>,
    /// Writes this shard's session records, versioned by its owner epoch.
    records: SessionRecords,
    /// The sampled trace of the input being handled: every edge output it
    /// causes carries it (ADR 0023). Set only inside `handle`.
    trace: Option<iris_envelope::TraceParent>,
    /// Tenants barred from this shard (their deletion under way or done):
    /// see [`bars`].
    bars: HashMap<Arc<str>, bars::Barred>,
    /// When the shard first read the bars (at its claim).
    bars_since: Option<Millis>,
    /// See [`ShardState::bars_changed`].
    bars_changed: u64,
    /// What presence notices are marked with, once claimed (when
    /// [`ShardConfig::mark_presence`]).
    owner: Option<OwnerMark>,
}

impl ShardState {
    /// An empty shard.
    pub fn new(config: ShardConfig) -> Self {
        let records = SessionRecords { region: config.region.clone(), epoch: None, made: 0 };
        Self {
            config,
            users: HashMap::new(),
            inflight_dedup: HashMap::new(),
            inflight_order: VecDeque::new(),
            recent_dedup: HashMap::new(),
            recent_order: VecDeque::new(),
            inflight_events: HashMap::new(),
            inflight_events_order: VecDeque::new(),
            recent_events: HashSet::new(),
            recent_events_order: VecDeque::new(),
            tickets: TicketLedger::new(failed_output),
            id_counter: 0,
            leases: HashMap::new(),
            stalled_at: None,
            record_writes: BTreeMap::new(),
            meta_writes: BTreeMap::new(),
            resets: 0,
            records_to_repair: Default::default(),
            meta_to_repair: Default::default(),
            started_at: None,
            takeover: Some(Default::default()),
            records,
            trace: None,
            bars: HashMap::new(),
            bars_since: None,
            bars_changed: 0,
            owner: None,
        }
    }

    /// The store granted this shard its owner epoch
    /// ([`iris_storage::Store::claim_shard`]): the shell claims it before it
    /// hands the shard any input, and the shard writes nothing before.
    pub fn claimed(&mut self, epoch: u64) {
        self.records.epoch = Some(epoch);
        self.owner = self.config.mark_presence.then(|| OwnerMark::new(&self.config.region, epoch));
    }

    /// Whether the owner epoch is known (see [`ShardState::claimed`]).
    pub fn has_claimed(&self) -> bool {
        self.records.epoch.is_some()
    }

    /// Writes issued but not yet committed.
    pub fn inflight(&self) -> u64 {
        self.tickets.inflight()
    }

    /// Users held in memory.
    pub fn cached_users(&self) -> usize {
        self.users.len()
    }

    /// The shard's partition was revoked: it takes no more input, and it
    /// tells no one what it sees of a user's presence any more. A presence
    /// it holds behind a write in flight, or makes later (a failed write's
    /// repair is not made: its lease timer is gone), is a view from memory
    /// the partition's next owner has its own of, from the store and the
    /// edges' resync; sent late, it would land after the new owner's and
    /// stay (found by the simulator). So presence notices are dropped; the
    /// rest still goes: answers whose writes landed, receipts and reads
    /// (an ack's receipts are read once, by whoever moved `acked`).
    /// Writes in flight still finish. Returns how many were dropped.
    pub fn revoked(&mut self) -> usize {
        self.tickets.abandon(outputs::is_presence)
    }

    /// True after a failed commit, until every in-flight write has completed
    /// and the actor has called [`ShardState::reset`].
    pub fn needs_reset(&self) -> bool {
        self.tickets.poisoned() && self.tickets.inflight() == 0
    }

    /// Marks every cached user stale so that their durable fields are
    /// reloaded from storage (after a failed commit, in-memory heads may be
    /// ahead of disk). Sessions and subscriptions are kept: they are true.
    /// Returns the write that repairs the session records whose writes
    /// failed (a user shown online after their last session ended, or the
    /// other way round), from those sessions; the caller commits it like
    /// any other.
    #[must_use = "the repair of failed session records must be committed"]
    pub fn reset(&mut self) -> Option<(Ticket, WriteBatch)> {
        for u in self.users.values_mut() {
            u.stale = true;
        }
        self.resets += 1;
        self.inflight_dedup.clear();
        self.inflight_order.clear();
        self.recent_dedup.clear();
        self.recent_order.clear();
        self.inflight_events.clear();
        self.inflight_events_order.clear();
        self.recent_events.clear();
        self.recent_events_order.clear();
        // Every output that depended on a failed write has left by now
        // (nothing is in flight), so the failures can be forgotten.
        self.tickets.forget_failures();
        let mut batch = WriteBatch::default();
        let mut out = Vec::new();
        let records = std::mem::take(&mut self.records_to_repair);
        let metas = std::mem::take(&mut self.meta_to_repair);
        for key in records.union(&metas) {
            if let Some(user) = self.users.get_mut(key) {
                if records.contains(key) {
                    batch.push(self.records.write(key, user));
                }
                // A status set (invisible, or back from it), an ack, a
                // `last_seen` get no answer a client could retry on, so a
                // failed write of them would be lost (found by the
                // simulator once clients set statuses).
                if metas.contains(key) {
                    batch.push(self.records.meta(key, user));
                }
                // The notice of the change whose write failed went with it,
                // but the subscribers' views were marked as told: tell them
                // again what they may see now (found by the simulator: a
                // follower left hearing "offline" for good).
                announce_presence(&key.user, user, &mut out);
            }
        }
        if batch.is_empty() {
            self.tickets.repaired_by(None);
            return None;
        }
        let t = self.issue();
        // The inputs whose writes failed are durable once this is: until
        // then their offsets stay uncommitted, so that if the shard moves
        // first its next owner reads them again.
        self.tickets.repaired_by(Some(t));
        self.track_records(t, &batch);
        self.emit(out, vec![t]);
        Some((t, batch))
    }

    /// Remembers which users' session records and metadata ticket `t`
    /// writes, so that a failure can be repaired; they are not evicted
    /// meanwhile. (Only session records are written again after a takeover.)
    fn track_records(&mut self, t: Ticket, batch: &WriteBatch) {
        let (mut records, mut metas) = (Vec::new(), Vec::new());
        for op in &batch.ops {
            match op {
                WriteOp::Session { user, .. } => records.push(user.clone()),
                WriteOp::Meta { user, .. } => metas.push(user.clone()),
                _ => {}
            }
        }
        for u in records.iter().chain(&metas) {
            if let Some(state) = self.users.get_mut(u) {
                state.last_ticket = state.last_ticket.max(t);
            }
        }
        if !records.is_empty() {
            if let Some(takeover) = &mut self.takeover {
                takeover.extend(records.iter().cloned());
            }
            self.record_writes.insert(t, records);
        }
        if !metas.is_empty() {
            self.meta_writes.insert(t, metas);
        }
    }

    /// What must be loaded before `env` can be handled.
    pub fn needs(&self, env: &ShardEnvelope) -> Needs {
        let mut needs = Needs::default();
        if env.owner.tenant().is_some_and(|t| self.is_barred(t)) {
            return needs; // refused by `handle`, unloaded
        }
        if let ShardInput::EdgeAlive { .. } | ShardInput::EdgeStarted { .. } | ShardInput::Tick { .. } = &env.body {
            return needs;
        }
        if let (ShardInput::Ingest { stream, events, .. }, Some(tenant)) = (&env.body, env.owner.tenant()) {
            // Event streams have no user state; only their keys matter.
            needs.events = events
                .iter()
                .map(|e| EventKey { tenant: tenant.clone(), stream: stream.clone(), key: e.key.clone() })
                .collect();
            return needs;
        }
        let Some(owner) = env.owner.user() else { return needs }; // refused by `handle`
        if self.users.get(owner).is_none_or(|u| u.stale) {
            needs.user = Some(owner.clone());
        }
        if let Some(key) = Self::dedup_key(env)
            && !self.inflight_dedup.contains_key(&key)
            && !self.recent_dedup.contains_key(&key)
        {
            needs.dedup = Some(key);
        }
        needs
    }

    /// The idempotency record a `send` is checked against (`None` for any
    /// other input). A shell may look it up in the store before the state
    /// asks ([`Needs::dedup`]), for envelopes still waiting: the state
    /// checks its in-flight and recent records first, so an answer read
    /// early cannot hide a duplicate of an input handled in between, as
    /// long as no [`ShardState::reset`] forgot those records meanwhile
    /// ([`ShardState::resets`] tells).
    pub fn dedup_key(env: &ShardEnvelope) -> Option<DedupKey> {
        match &env.body {
            ShardInput::Send { from, client_id, .. } => {
                Some(DedupKey { sender: env.owner.user()?.peer(from), client_id: client_id.clone() })
            }
            _ => None,
        }
    }

    /// How many times the state forgot its in-memory idempotency records
    /// ([`ShardState::reset`]). A store answer for [`Needs::dedup`] read
    /// while this count was lower than it is now may be older than a write
    /// the state no longer remembers, and must be read again.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Hands over a user record the actor loaded.
    pub fn insert_user(&mut self, user: UserKey, record: UserRecord) {
        if self.is_barred(&user.tenant) {
            return; // barred while it was loaded: its input is refused
        }
        match self.users.get_mut(&user) {
            Some(u) => u.refresh(record),
            None => {
                self.users.insert(user, UserState::from_record(record));
            }
        }
    }

    /// Answers an envelope that could not be handled because what it
    /// needed could not be loaded: the client may retry.
    pub fn load_failed(&mut self, env: &ShardEnvelope) {
        self.reject(env, ErrorCode::Unavailable, "storage unavailable; retry");
    }

    /// Answers an envelope that could not be handled.
    fn reject(&mut self, env: &ShardEnvelope, code: ErrorCode, message: &str) {
        self.input_done();
        self.refuse(env, code, message);
    }

    /// Refuses a user's input whose key names no user (a record no node
    /// of ours writes; read from the bus, it must not touch anyone's state).
    fn reject_unowned(&mut self, env: &ShardEnvelope) {
        self.refuse(env, ErrorCode::BadFrame, "the input names no user");
    }

    /// Tells whoever waits for `env` that it was refused.
    fn refuse(&mut self, env: &ShardEnvelope, code: ErrorCode, message: &str) {
        let refused = |id: Option<String>| Notice::refused(code, message, id);
        let out = match &env.body {
            ShardInput::Send { client_id, reply: r, .. } => Some(reply(r, refused(Some(client_id.to_string())))),
            ShardInput::ContactsReplace { reply: r, .. }
            | ShardInput::IdentityVerified { reply: r, .. }
            | ShardInput::Ingest { reply: r, .. } => {
                Some(service_reply(r, ServiceReply::Error { code, message: message.to_owned() }))
            }
            ShardInput::SessionOpened { session, .. }
            | ShardInput::Sync { session, .. }
            | ShardInput::Contacts { session, .. }
            | ShardInput::CirclePolicy { session, .. } => Some(reply(session, refused(None))),
            _ => None,
        };
        if let Some(o) = out {
            self.emit(vec![o], Vec::new());
        }
    }

    /// Queues outputs behind the newest ticket. `deps` names the writes the
    /// outputs stand or fall with (the input's own write, or the in-flight
    /// original of a retried send): if one fails, they turn into errors.
    /// Outputs merely ordered behind someone else's write go out as they are.
    fn emit(&mut self, mut outputs: Vec<Output>, deps: Vec<Ticket>) {
        if let Some(t) = self.trace {
            for o in &mut outputs {
                if let Output::Edge(env) = o
                    && !env.traces.contains(&t)
                    && env.traces.len() < iris_envelope::MAX_TRACES
                {
                    env.traces.push(t);
                }
            }
        }
        if let Some(owner) = self.owner {
            outputs.iter_mut().for_each(|o| mark_presence(o, owner));
        }
        self.tickets.emit(outputs, &deps);
    }

    fn issue(&mut self) -> Ticket {
        self.tickets.issue()
    }

    /// Handles one envelope. The owner must be loaded; `dedup` is the stored
    /// record for a `Send` (as [`Needs::dedup`] asked). Returns the writes to
    /// make durable, with their ticket, if any.
    pub fn handle(&mut self, now: Millis, env: ShardEnvelope, found: Found) -> Option<(Ticket, WriteBatch)> {
        self.started_at.get_or_insert(now);
        if env.owner.tenant().is_some_and(|t| self.is_barred(t)) {
            // The tenant is being deleted: nothing of it is written again.
            self.reject(&env, ErrorCode::Forbidden, "tenant deleted");
            return None;
        }
        self.trace = env.trace;
        let written = self.handle_input(now, env, found);
        self.trace = None;
        self.input_done();
        written
    }

    /// Counts an input as handled; it is durable once the newest ticket so
    /// far (its own write, or any write before it) has committed.
    fn input_done(&mut self) {
        self.tickets.input_done();
    }

    /// How many inputs have been handled (or rejected) so far.
    pub fn inputs_seen(&self) -> u64 {
        self.tickets.inputs_seen()
    }

    /// How many inputs, counted in arrival order, have all their writes
    /// durable: a bus may forget (commit the offsets of) that many.
    pub fn inputs_durable(&self) -> u64 {
        self.tickets.inputs_durable()
    }

    fn handle_input(&mut self, now: Millis, env: ShardEnvelope, found: Found) -> Option<(Ticket, WriteBatch)> {
        if let ShardInput::Ingest { .. } = env.body {
            let Some(tenant) = env.owner.tenant().cloned() else {
                self.reject_unowned(&env);
                return None;
            };
            let ShardInput::Ingest { stream, events, reply } = env.body else { return None };
            return self.ingest(now, &tenant, stream, events, &reply, found.events_seen);
        }
        if let ShardInput::EdgeAlive { edge } = env.body {
            let mut out = Vec::new();
            self.heard_from(edge, now, &mut out);
            self.emit(out, Vec::new());
            return None;
        }
        if let ShardInput::EdgeStarted { edge } = env.body {
            return self.edge_started(now, edge);
        }
        if let ShardInput::Tick { .. } = env.body {
            // Read by the pump's input clock; nothing to do here.
            return None;
        }
        let dedup = found.dedup;
        let owner = match env.owner {
            ShardKey::User(u) => u,
            // A user's input under a stream's key or the shard's own:
            // refused, never applied to anyone.
            other => {
                self.reject_unowned(&ShardEnvelope { owner: other, body: env.body, trace: env.trace });
                return None;
            }
        };
        if !self.users.contains_key(&owner) {
            debug_assert!(false, "handle called before the owner was loaded");
            return None;
        }
        let mut fx = Effects::default();
        match env.body {
            ShardInput::SessionOpened { session, resume_after } => {
                self.session_opened(now, &owner, session, resume_after, &mut fx)
            }
            ShardInput::SessionResumed { session, after } => self.session_resumed(now, &owner, session, after, &mut fx),
            ShardInput::SessionClosed { session } => self.session_closed(now, &owner, session, &mut fx),
            ShardInput::Send { from, client_id, body, reply } => {
                self.send(now, &owner, from, client_id, body, reply, dedup, &mut fx)
            }
            ShardInput::Ack { up_to, read } => self.ack(&owner, up_to, read, &mut fx),
            ShardInput::Receipt { msg_id, by, state } => self.receipt(&owner, msg_id, by, state, &mut fx),
            ShardInput::Sync { session, after, limit } => self.sync(&owner, session, after, limit, &mut fx),
            ShardInput::SetPresence { session: _, status } => self.set_presence(now, &owner, status, None, &mut fx),
            ShardInput::SetPresenceAt { session: _, status, at } => {
                self.set_presence(now, &owner, status, Some(at), &mut fx)
            }
            ShardInput::Subscribe { viewer, session } => self.subscribe(&owner, viewer, session, &mut fx),
            ShardInput::Unsubscribe { viewer, session } => self.unsubscribe(&owner, viewer, session),
            ShardInput::Contacts { session, upsert, remove } => {
                self.contacts(now, &owner, session, upsert, remove, &mut fx)
            }
            ShardInput::ContactsReplace { list, reply } => self.contacts_replace(now, &owner, list, reply, &mut fx),
            ShardInput::IdentityVerified { channel, reply } => {
                self.identity_verified(now, &owner, channel, reply, &mut fx)
            }
            ShardInput::CirclePolicy { session, circle, presence, last_seen } => {
                self.circle_policy(now, &owner, session, circle, presence, last_seen, &mut fx)
            }
            ShardInput::Typing { from, state } => self.typing(&owner, from, state, &mut fx),
            ShardInput::Ingest { .. }
            | ShardInput::EdgeAlive { .. }
            | ShardInput::EdgeStarted { .. }
            | ShardInput::Tick { .. } => {
                unreachable!("handled above")
            }
        }
        let Effects { mut out, batch, dependent, ordered, presence_changed } = fx;
        if presence_changed {
            let user = self.users.get_mut(&owner).expect("loaded above");
            notify_subscribers(&owner.user, user, &mut out);
        }
        let written = if batch.is_empty() {
            None
        } else {
            let t = self.issue();
            if let Some(u) = self.users.get_mut(&owner) {
                u.last_ticket = t;
            }
            self.track_records(t, &batch);
            Some((t, batch))
        };
        let own = written.as_ref().map(|(t, _)| *t);
        self.emit(out, own.into_iter().collect());
        for (original, o) in dependent {
            self.emit(vec![o], vec![original]);
        }
        if !ordered.is_empty() {
            self.emit(ordered, Vec::new());
        }
        self.evict_idle();
        written
    }

    /// Records that a ticket's writes completed (or failed).
    pub fn committed(&mut self, ticket: Ticket, result: Result<(), StoreError>) {
        self.tickets.committed(ticket, result.is_ok());
        if let Some(users) = self.record_writes.remove(&ticket)
            && result.is_err()
        {
            self.records_to_repair.extend(users);
        }
        if let Some(users) = self.meta_writes.remove(&ticket)
            && result.is_err()
        {
            self.meta_to_repair.extend(users);
        }
        let done = self.tickets.done_upto();
        while let Some((t, _)) = self.inflight_order.front() {
            if *t > done {
                break;
            }
            let (t, key) = self.inflight_order.pop_front().expect("front exists");
            if let Some((record, _)) = self.inflight_dedup.remove(&key) {
                if !self.tickets.failed(t) {
                    self.recent_order.push_back(key.clone());
                    self.recent_dedup.insert(key, record);
                }
            }
        }
        while let Some((t, _)) = self.inflight_events_order.front() {
            if *t > done {
                break;
            }
            let (t, key) = self.inflight_events_order.pop_front().expect("front exists");
            self.inflight_events.remove(&key);
            if !self.tickets.failed(t) {
                self.recent_events_order.push_back(key.clone());
                self.recent_events.insert(key);
            }
        }
        while self.recent_events_order.len() > self.config.recent_dedup {
            if let Some(k) = self.recent_events_order.pop_front() {
                self.recent_events.remove(&k);
            }
        }
        while self.recent_order.len() > self.config.recent_dedup {
            if let Some(k) = self.recent_order.pop_front() {
                self.recent_dedup.remove(&k);
            }
        }
    }

    /// The next output to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.tickets.poll()
    }

    /// Every output ready now, edge outputs merged per edge
    /// ([`coalesce_edge_outputs`]).
    pub fn poll_outputs(&mut self) -> Vec<Output> {
        let ready: Vec<Output> = self.tickets.drain();
        coalesce_edge_outputs(ready, &self.config.region)
    }

    fn evict_idle(&mut self) {
        if self.users.len() <= self.config.max_cached_users {
            return;
        }
        let target = self.config.max_cached_users * 9 / 10;
        let done = self.tickets.done_upto();
        let mut excess = self.users.len() - target;
        let (repair, metas, takeover) = (&self.records_to_repair, &self.meta_to_repair, self.takeover.as_ref());
        self.users.retain(|k, u| {
            if excess > 0
                && u.sessions.is_empty()
                && u.subscribers.is_empty()
                && u.last_ticket <= done
                && !repair.contains(k)
                && !metas.contains(k)
                && !takeover.is_some_and(|t| t.contains(k))
            {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// The version of the records in the downstream graph and events logs.
pub const GRAPH_EVENT_VERSION: u32 = 1;

fn raw_null() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string("null".into()).expect("null is JSON")
}

/// Where users are connected, for `session:{tenant}:{user}`: each record
/// versioned by the shard's owner epoch above its count of record writes,
/// so that a record written by an earlier owner of the user's shard and
/// landing late (a zombie woken after its partitions moved) never replaces
/// a newer owner's (ADR 0021). The count saturates: at the top, versions
/// repeat, and an equal version still replaces. (A field of its own, so
/// that it can write while a user's state is borrowed.)
#[derive(Debug)]
struct SessionRecords {
    region: Arc<str>,
    /// The owner epoch the store granted (none until claimed).
    epoch: Option<u64>,
    /// Records written (the low half of their versions).
    made: u32,
}

impl SessionRecords {
    fn next_version(&mut self) -> u64 {
        let version = (self.epoch.unwrap_or(0) << 32) | u64::from(self.made);
        self.made = self.made.saturating_add(1);
        version
    }

    /// `user`'s meta as it is now, at the next version: versioned like the
    /// session records, so that a zombie's stale meta (a status it set back)
    /// never lands over its successor's either.
    fn meta(&mut self, owner: &UserKey, user: &UserState) -> WriteOp {
        WriteOp::Meta { user: owner.clone(), meta: user.meta.clone(), version: self.next_version() }
    }

    /// The record of where `user` is connected now, at the next version.
    fn write(&mut self, owner: &UserKey, user: &UserState) -> WriteOp {
        let version = self.next_version();
        let mut nodes: Vec<String> = user.sessions.iter().map(|s| s.edge.to_string()).collect();
        nodes.sort();
        nodes.dedup();
        let last_seen = if user.sessions.is_empty() { user.meta.last_seen } else { None };
        let record = iris_storage::SessionRecord {
            nodes,
            region: self.region.to_string(),
            sessions: user.sessions.len() as u32,
            last_seen,
        };
        WriteOp::Session { user: owner.clone(), record, version }
    }
}

#[cfg(test)]
mod tests;
