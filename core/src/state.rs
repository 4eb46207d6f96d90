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
    EdgeEnvelope, EdgeId, EdgeInput, InboxSeq, IngestEvent, Millis, Recipients, ServiceReply, SessionAddr,
    ShardEnvelope, ShardId, ShardInput, UserKey,
};
use iris_protocol::{
    Accepted, Body, ContactEntry, ContactsOk, ErrorCode, Message, PresenceStatus, PresenceUpdate, Receipt,
    ReceiptState, ServerFrame, SetStatus, Synced, TypingFrom,
};
use iris_storage::{
    CirclePolicy, Contact, DedupKey, DedupRecord, EventKey, LogKind, RollupKey, StoreError, StoredMessage, UserMeta,
    UserRecord, WriteBatch, WriteOp,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The circle a contact lands in when none is named; it allows everything
/// until its owner changes it.
pub const DEFAULT_CIRCLE: &str = "contacts";

pub use tickets::Ticket;
use tickets::TicketLedger;

mod tickets;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    status: PresenceStatus,
    last_seen: Option<Millis>,
}

const HIDDEN: View = View { status: PresenceStatus::Offline, last_seen: None };

#[derive(Debug)]
struct Subscriber {
    viewer: Arc<str>,
    session: SessionAddr,
    last: View,
}

#[derive(Debug)]
struct UserState {
    head: InboxSeq,
    meta: UserMeta,
    contacts: BTreeMap<String, Contact>,
    identities: Vec<String>,
    policies: BTreeMap<String, CirclePolicy>,
    sessions: Vec<SessionAddr>,
    away: bool,
    subscribers: Vec<Subscriber>,
    last_ticket: Ticket,
    /// Durable fields may be ahead of storage (after a failed commit):
    /// reload them before the next use; sessions and subscribers stay.
    stale: bool,
}

impl UserState {
    fn from_record(r: UserRecord) -> Self {
        Self {
            head: r.head,
            meta: r.meta,
            contacts: r.contacts,
            identities: r.identities,
            policies: r.policies,
            sessions: Vec::new(),
            away: false,
            subscribers: Vec::new(),
            last_ticket: 0,
            stale: false,
        }
    }

    fn refresh(&mut self, r: UserRecord) {
        self.head = r.head;
        self.meta = r.meta;
        self.contacts = r.contacts;
        self.identities = r.identities;
        self.policies = r.policies;
        self.stale = false;
    }

    fn policy(&self, circle: &str) -> CirclePolicy {
        match self.policies.get(circle) {
            Some(p) => *p,
            None if circle == DEFAULT_CIRCLE => CirclePolicy { presence: true, last_seen: true },
            None => CirclePolicy::default(),
        }
    }

    /// What `viewer` may see of this user (named `me`).
    fn view_for(&self, me: &str, viewer: &str) -> View {
        let (presence, last_seen) = if viewer == me {
            (true, true)
        } else {
            match self.contacts.get(viewer) {
                Some(contact) => {
                    let p = self.policy(&contact.circle);
                    (p.presence, p.presence && p.last_seen)
                }
                None => (false, false),
            }
        };
        if !presence {
            return HIDDEN;
        }
        let (status, seen) = if let Some(since) = self.meta.invisible_since {
            (PresenceStatus::Offline, Some(since))
        } else if self.sessions.is_empty() {
            (PresenceStatus::Offline, self.meta.last_seen)
        } else if self.away {
            (PresenceStatus::Away, None)
        } else {
            (PresenceStatus::Online, None)
        };
        View { status, last_seen: if status == PresenceStatus::Offline && last_seen { seen } else { None } }
    }
}

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
}

fn frame_to(sessions: &[SessionAddr], frame: ServerFrame, droppable: bool, out: &mut Vec<Output>) {
    let mut by_edge: Vec<(EdgeId, Vec<iris_envelope::SessionId>)> = Vec::new();
    for s in sessions {
        match by_edge.iter_mut().find(|(e, _)| *e == s.edge) {
            Some((_, v)) => v.push(s.session),
            None => by_edge.push((s.edge.clone(), vec![s.session])),
        }
    }
    for (edge, mut ids) in by_edge {
        let to =
            if ids.len() == 1 { Recipients::Session(ids.pop().expect("one id")) } else { Recipients::Sessions(ids) };
        out.push(Output::Edge(EdgeEnvelope { edge, body: EdgeInput::Frame { to, frame: frame.clone(), droppable } }));
    }
}

/// Merges each run of consecutive edge outputs into one envelope per edge
/// (in the order the edges first appear, each edge's inputs in their
/// order), so that outputs released together cost one bus record per edge.
/// Any other output ends a run: a replay's frames must not be overtaken.
/// Edges of other regions are left alone (federation batches their
/// presence itself).
pub fn coalesce_edge_outputs(outputs: Vec<Output>, region: &str) -> Vec<Output> {
    let mut out = Vec::with_capacity(outputs.len());
    let mut run: Vec<(EdgeId, Vec<EdgeInput>)> = Vec::new();
    let end_run = |run: &mut Vec<(EdgeId, Vec<EdgeInput>)>, out: &mut Vec<Output>| {
        for (edge, mut parts) in run.drain(..) {
            let body = if parts.len() == 1 { parts.pop().expect("one part") } else { EdgeInput::Batch(parts) };
            out.push(Output::Edge(EdgeEnvelope { edge, body }));
        }
    };
    for o in outputs {
        match o {
            Output::Edge(env) if env.edge.region().is_none_or(|r| r == region) => {
                match run.iter_mut().find(|(e, _)| *e == env.edge) {
                    Some((_, parts)) => parts.extend(env.body.into_parts()),
                    None => run.push((env.edge, env.body.into_parts())),
                }
            }
            other => {
                end_run(&mut run, &mut out);
                out.push(other);
            }
        }
    }
    end_run(&mut run, &mut out);
    out
}

fn reply(session: &SessionAddr, frame: ServerFrame) -> Output {
    Output::Edge(EdgeEnvelope {
        edge: session.edge.clone(),
        body: EdgeInput::Frame { to: Recipients::Session(session.session), frame, droppable: false },
    })
}

impl ShardState {
    /// An empty shard.
    pub fn new(config: ShardConfig) -> Self {
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
        }
    }

    /// Writes issued but not yet committed.
    pub fn inflight(&self) -> u64 {
        self.tickets.inflight()
    }

    /// Users held in memory.
    pub fn cached_users(&self) -> usize {
        self.users.len()
    }

    /// True after a failed commit, until every in-flight write has completed
    /// and the actor has called [`ShardState::reset`].
    pub fn needs_reset(&self) -> bool {
        self.tickets.poisoned() && self.tickets.inflight() == 0
    }

    /// Marks every cached user stale so that their durable fields are
    /// reloaded from storage (after a failed commit, in-memory heads may be
    /// ahead of disk). Sessions and subscriptions are kept: they are true.
    pub fn reset(&mut self) {
        for u in self.users.values_mut() {
            u.stale = true;
        }
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
    }

    /// What must be loaded before `env` can be handled.
    pub fn needs(&self, env: &ShardEnvelope) -> Needs {
        let mut needs = Needs::default();
        if let ShardInput::EdgeAlive { .. } = &env.body {
            return needs;
        }
        if let ShardInput::Ingest { stream, events, .. } = &env.body {
            // Event streams have no user state; only their keys matter.
            needs.events = events
                .iter()
                .map(|e| EventKey { tenant: env.owner.tenant.clone(), stream: stream.clone(), key: e.key.clone() })
                .collect();
            return needs;
        }
        if self.users.get(&env.owner).is_none_or(|u| u.stale) {
            needs.user = Some(env.owner.clone());
        }
        if let ShardInput::Send { from, client_id, .. } = &env.body {
            let key = DedupKey { sender: env.owner.peer(from), client_id: client_id.clone() };
            if !self.inflight_dedup.contains_key(&key) && !self.recent_dedup.contains_key(&key) {
                needs.dedup = Some(key);
            }
        }
        needs
    }

    /// Hands over a user record the actor loaded.
    pub fn insert_user(&mut self, user: UserKey, record: UserRecord) {
        match self.users.get_mut(&user) {
            Some(u) => u.refresh(record),
            None => {
                self.users.insert(user, UserState::from_record(record));
            }
        }
    }

    /// Answers an envelope that could not be handled because a load failed.
    pub fn reject(&mut self, env: &ShardEnvelope, code: ErrorCode, message: &str) {
        self.input_done();
        let frame = |id: Option<String>| ServerFrame::error(code, message, id);
        let out = match &env.body {
            ShardInput::Send { client_id, reply: r, .. } => Some(reply(r, frame(Some(client_id.to_string())))),
            ShardInput::ContactsReplace { reply: r, .. }
            | ShardInput::IdentityVerified { reply: r, .. }
            | ShardInput::Ingest { reply: r, .. } => {
                Some(service_reply(r, ServiceReply::Error { code, message: message.to_owned() }))
            }
            ShardInput::SessionOpened { session, .. }
            | ShardInput::Sync { session, .. }
            | ShardInput::Contacts { session, .. }
            | ShardInput::CirclePolicy { session, .. } => Some(reply(session, frame(None))),
            _ => None,
        };
        if let Some(o) = out {
            self.emit(vec![o], Vec::new());
        }
    }

    /// A UUIDv7: the time, then 12 bits of shard (the version nibble takes
    /// the top 4 bits of the first byte, so shards are capped at 4,096), 30
    /// bits of per-start seed (the variant takes 2 bits of the third byte)
    /// and a 32-bit counter. Unique across shards, restarts and time.
    fn next_msg_id(&mut self, now: Millis) -> Arc<str> {
        self.id_counter = self.id_counter.wrapping_add(1);
        let shard = self.config.shard.0 & 0x0fff;
        let seed = self.config.id_seed & 0x3fff_ffff;
        let mut rand = [0u8; 10];
        rand[0] = (shard >> 8) as u8;
        rand[1] = shard as u8;
        rand[2..6].copy_from_slice(&seed.to_be_bytes());
        rand[6..].copy_from_slice(&self.id_counter.to_be_bytes());
        let id = uuid::Builder::from_unix_timestamp_millis(now.max(0) as u64, &rand).into_uuid();
        Arc::from(id.hyphenated().to_string())
    }

    /// Queues outputs behind the newest ticket. `own` says the newest ticket
    /// is this input's own write: if that write fails, these outputs turn into
    /// errors; outputs merely ordered behind someone else's write go out as
    /// they are.
    /// Queues outputs behind the newest ticket. `dep` names the write the
    /// outputs depend on (the input's own write, or the in-flight original
    /// of a retried send): if it fails, they turn into errors. Outputs
    /// merely ordered behind someone else's write go out as they are.
    fn emit(&mut self, outputs: Vec<Output>, deps: Vec<Ticket>) {
        self.tickets.emit(outputs, &deps);
    }

    fn issue(&mut self) -> Ticket {
        self.tickets.issue()
    }

    /// Handles one envelope. The owner must be loaded; `dedup` is the stored
    /// record for a `Send` (as [`Needs::dedup`] asked). Returns the writes to
    /// make durable, with their ticket, if any.
    pub fn handle(&mut self, now: Millis, env: ShardEnvelope, found: Found) -> Option<(Ticket, WriteBatch)> {
        let written = self.handle_input(now, env, found);
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
        if let ShardInput::Ingest { stream, events, reply } = env.body {
            return self.ingest(now, &env.owner.tenant, stream, events, &reply, found.events_seen);
        }
        if let ShardInput::EdgeAlive { edge } = env.body {
            let mut out = Vec::new();
            self.heard_from(edge, now, &mut out);
            self.emit(out, Vec::new());
            return None;
        }
        let dedup = found.dedup;
        let owner = env.owner;
        let mut out = Vec::new();
        let mut dependent: Vec<(Ticket, Output)> = Vec::new();
        let mut batch = WriteBatch::default();
        let Some(user) = self.users.get_mut(&owner) else {
            debug_assert!(false, "handle called before the owner was loaded");
            return None;
        };
        let mut presence_changed = false;
        match env.body {
            ShardInput::SessionOpened { session, .. }
                if !user.sessions.contains(&session) && user.sessions.len() >= self.config.max_sessions =>
            {
                let m = format!("at most {} sessions per user", self.config.max_sessions);
                out.push(reply(&session, ServerFrame::error(ErrorCode::RateLimited, m, None)));
            }
            ShardInput::SessionOpened { session, resume_after } => {
                if !user.sessions.contains(&session) {
                    user.sessions.push(session.clone());
                }
                batch.push(session_write(&owner, user, &self.config.region));
                presence_changed = user.sessions.len() == 1;
                out.push(Output::Edge(EdgeEnvelope {
                    edge: session.edge.clone(),
                    body: EdgeInput::Welcome { session: session.session, inbox_head: user.head },
                }));
                if let Some(after) = resume_after {
                    out.push(Output::Read(Read::Replay {
                        user: owner.clone(),
                        session: session.clone(),
                        after,
                        limit: iris_protocol::MAX_PAGE_LIMIT,
                        inbox_head: user.head,
                        always_synced: true,
                    }));
                }
                out.push(Output::Read(Read::FlushReceipts { user: owner.clone(), session: session.clone() }));
                // A session opening is proof its edge lives.
                self.heard_from(session.edge, now, &mut out);
            }
            ShardInput::SessionResumed { session, after } => {
                // The session was admitted when it opened: no session limit
                // here, and no welcome. It hears what it missed while no
                // owner knew it.
                if !user.sessions.contains(&session) {
                    user.sessions.push(session.clone());
                    presence_changed = user.sessions.len() == 1;
                    batch.push(session_write(&owner, user, &self.config.region));
                }
                if after < user.head {
                    out.push(Output::Read(Read::Replay {
                        user: owner.clone(),
                        session: session.clone(),
                        after,
                        limit: iris_protocol::MAX_PAGE_LIMIT,
                        inbox_head: user.head,
                        always_synced: false,
                    }));
                }
                out.push(Output::Read(Read::FlushReceipts { user: owner.clone(), session: session.clone() }));
                self.heard_from(session.edge, now, &mut out);
            }
            ShardInput::SessionClosed { session } => {
                let before = user.sessions.len();
                user.sessions.retain(|s| *s != session);
                if before > 0 && user.sessions.is_empty() {
                    user.away = false;
                    user.meta.last_seen = Some(now);
                    batch.push(WriteOp::Meta { user: owner.clone(), meta: user.meta.clone() });
                    presence_changed = true;
                }
                if user.sessions.len() != before {
                    batch.push(session_write(&owner, user, &self.config.region));
                }
            }
            ShardInput::Send { from, client_id, body, reply: to_session } => {
                let key = DedupKey { sender: owner.peer(&from), client_id: client_id.clone() };
                let in_flight = self.inflight_dedup.get(&key).map(|(r, t)| (r.clone(), *t));
                let earlier =
                    in_flight.clone().map(|(r, _)| r).or_else(|| self.recent_dedup.get(&key).cloned()).or(dedup);
                if let Some(rec) = earlier {
                    let accepted = reply(
                        &to_session,
                        ServerFrame::Accepted(Accepted {
                            id: client_id.to_string(),
                            msg_id: rec.msg_id.to_string(),
                            ts: rec.ts,
                        }),
                    );
                    match in_flight {
                        // A retry of a send still being written: its answer
                        // stands or falls with that write.
                        Some((_, original)) => dependent.push((original, accepted)),
                        None => out.push(accepted),
                    }
                } else if self.tickets.poisoned() {
                    out.push(reply(
                        &to_session,
                        ServerFrame::error(
                            ErrorCode::Unavailable,
                            "storage failed; retry",
                            Some(client_id.to_string()),
                        ),
                    ));
                } else {
                    let user = self.users.get_mut(&owner).expect("loaded above");
                    user.head += 1;
                    let seq = user.head;
                    let sessions = user.sessions.clone();
                    let msg_id = self.next_msg_id(now);
                    let message =
                        StoredMessage { seq, msg_id: msg_id.clone(), from: from.clone(), body: body.clone(), ts: now };
                    let record = DedupRecord { msg_id: msg_id.clone(), ts: now, to: owner.user.clone(), seq };
                    batch.push(WriteOp::Message { user: owner.clone(), message });
                    batch.push(WriteOp::Dedup { key: key.clone(), record: record.clone() });
                    let ticket = self.tickets.next();
                    self.inflight_order.push_back((ticket, key.clone()));
                    self.inflight_dedup.insert(key, (record, ticket));
                    out.push(reply(
                        &to_session,
                        ServerFrame::Accepted(Accepted {
                            id: client_id.to_string(),
                            msg_id: msg_id.to_string(),
                            ts: now,
                        }),
                    ));
                    let frame = ServerFrame::Message(Message {
                        seq,
                        msg_id: msg_id.to_string(),
                        from: from.to_string(),
                        body: Body(body),
                        ts: now,
                    });
                    frame_to(&sessions, frame, false, &mut out);
                }
            }
            ShardInput::Ack { up_to, read } => {
                let up = up_to.min(user.head);
                if read {
                    if up > user.meta.read {
                        out.push(Output::Read(Read::Receipts {
                            user: owner.clone(),
                            from: user.meta.read,
                            to: up,
                            state: ReceiptState::Read,
                        }));
                        user.meta.read = up;
                        user.meta.acked = user.meta.acked.max(up);
                        batch.push(WriteOp::Meta { user: owner.clone(), meta: user.meta.clone() });
                    }
                } else if up > user.meta.acked {
                    // Messages already read got their (stronger) receipt.
                    let from = user.meta.acked.max(user.meta.read);
                    if up > from {
                        out.push(Output::Read(Read::Receipts {
                            user: owner.clone(),
                            from,
                            to: up,
                            state: ReceiptState::Delivered,
                        }));
                    }
                    user.meta.acked = up;
                    batch.push(WriteOp::Meta { user: owner.clone(), meta: user.meta.clone() });
                }
            }
            ShardInput::Receipt { msg_id, by, state } => {
                if user.sessions.is_empty() {
                    batch.push(WriteOp::Receipt {
                        user: owner.clone(),
                        receipt: iris_storage::PendingReceipt { msg_id, by, state },
                    });
                } else {
                    let frame = ServerFrame::Receipt(Receipt { msg_id: msg_id.to_string(), by: by.to_string(), state });
                    frame_to(&user.sessions, frame, false, &mut out);
                }
            }
            ShardInput::Sync { session, after, limit } => {
                out.push(Output::Read(Read::Replay {
                    user: owner.clone(),
                    session,
                    after,
                    limit: limit.clamp(1, iris_protocol::MAX_PAGE_LIMIT),
                    inbox_head: user.head,
                    always_synced: true,
                }));
            }
            ShardInput::SetPresence { session: _, status } => {
                match status {
                    SetStatus::Invisible => {
                        if user.meta.invisible_since.is_none() {
                            user.meta.invisible_since = Some(now);
                            batch.push(WriteOp::Meta { user: owner.clone(), meta: user.meta.clone() });
                        }
                    }
                    SetStatus::Online | SetStatus::Away => {
                        user.away = status == SetStatus::Away;
                        if user.meta.invisible_since.take().is_some() {
                            batch.push(WriteOp::Meta { user: owner.clone(), meta: user.meta.clone() });
                        }
                    }
                }
                presence_changed = true;
            }
            ShardInput::Subscribe { viewer, session } => {
                let view = user.view_for(&owner.user, &viewer);
                let known = user.subscribers.iter().any(|s| s.viewer == viewer && s.session == session);
                if !known && user.subscribers.len() >= self.config.max_subscribers {
                    out.push(reply(
                        &session,
                        ServerFrame::error(
                            ErrorCode::RateLimited,
                            format!("too many subscribers for {}", owner.user),
                            None,
                        ),
                    ));
                } else {
                    if !known {
                        user.subscribers.push(Subscriber { viewer, session: session.clone(), last: view });
                    }
                    out.push(reply(&session, presence_frame(&owner.user, view)));
                }
            }
            ShardInput::Unsubscribe { viewer, session } => {
                user.subscribers.retain(|s| !(s.viewer == viewer && s.session == session));
            }
            ShardInput::Contacts { session, upsert, remove } => {
                match plan_contacts(user, &upsert, &remove, self.config.max_contacts) {
                    Err(message) => out.push(reply(&session, ServerFrame::error(ErrorCode::Forbidden, message, None))),
                    Ok(()) => {
                        for ContactEntry { user: contact, circle } in upsert {
                            let circle = circle.unwrap_or_else(|| DEFAULT_CIRCLE.to_owned());
                            // A client frame moves a contact; its channels stay.
                            let channels = user.contacts.get(&contact).map(|c| c.channels.clone()).unwrap_or_default();
                            upsert_contact(&owner, user, now, contact, Contact { circle, channels }, &mut batch);
                        }
                        for contact in remove {
                            remove_contact(&owner, user, now, contact, &mut batch);
                        }
                        let count = user.contacts.len() as u32;
                        out.push(reply(&session, ServerFrame::ContactsOk(ContactsOk { count })));
                        presence_changed = true;
                    }
                }
            }
            ShardInput::ContactsReplace { list, reply: to } => {
                if list.len() > self.config.max_contacts {
                    let message = format!("at most {} contacts", self.config.max_contacts);
                    out.push(service_reply(&to, ServiceReply::Error { code: ErrorCode::Forbidden, message }));
                } else {
                    let mut target: BTreeMap<String, Contact> = BTreeMap::new();
                    for c in list {
                        let circle = c.circle.unwrap_or_else(|| DEFAULT_CIRCLE.to_owned());
                        target.insert(c.user, Contact { circle, channels: c.channels });
                    }
                    let gone: Vec<String> =
                        user.contacts.keys().filter(|k| !target.contains_key(*k)).cloned().collect();
                    let mut upserted = 0;
                    for (name, contact) in target {
                        if upsert_contact(&owner, user, now, name, contact, &mut batch) {
                            upserted += 1;
                        }
                    }
                    let removed = gone.len() as u32;
                    for name in gone {
                        remove_contact(&owner, user, now, name, &mut batch);
                    }
                    let count = user.contacts.len() as u32;
                    out.push(service_reply(&to, ServiceReply::ContactsSynced { upserted, removed, count }));
                    presence_changed = upserted > 0 || removed > 0;
                }
            }
            ShardInput::IdentityVerified { channel, reply: to } => {
                if !user.identities.contains(&channel) {
                    let record = serde_json::json!({
                        "v": GRAPH_EVENT_VERSION, "type": "identity.verified", "tenant": &*owner.tenant,
                        "user": &*owner.user, "channel": &channel, "ts": now,
                    });
                    batch.push(graph_log(&owner, &record));
                    batch.push(WriteOp::Identity { user: owner.clone(), channel: channel.clone() });
                    user.identities.push(channel);
                }
                out.push(service_reply(&to, ServiceReply::IdentityVerified));
            }
            ShardInput::CirclePolicy { session, circle, presence, last_seen } => {
                let current = user.policy(&circle);
                let policy = CirclePolicy {
                    presence: presence.unwrap_or(current.presence),
                    last_seen: last_seen.unwrap_or(current.last_seen),
                };
                if policy != current || !user.policies.contains_key(&circle) {
                    user.policies.insert(circle.clone(), policy);
                    batch.push(WriteOp::Policy { owner: owner.clone(), circle: circle.clone(), policy });
                    let record = serde_json::json!({
                        "v": GRAPH_EVENT_VERSION, "type": "circle.policy_changed", "tenant": &*owner.tenant,
                        "owner": &*owner.user, "circle": &circle, "presence": policy.presence,
                        "last_seen": policy.last_seen, "ts": now,
                    });
                    batch.push(graph_log(&owner, &record));
                }
                out.push(reply(&session, ServerFrame::CirclePolicyOk(iris_protocol::CirclePolicyOk { circle })));
                presence_changed = true;
            }
            ShardInput::Typing { from, state } => {
                let frame = ServerFrame::Typing(TypingFrom { from: from.to_string(), state });
                frame_to(&user.sessions, frame, true, &mut out);
            }
            ShardInput::Ingest { .. } | ShardInput::EdgeAlive { .. } => unreachable!("handled above"),
        }
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
            Some((t, batch))
        };
        let own = written.as_ref().map(|(t, _)| *t);
        self.emit(out, own.into_iter().collect());
        for (original, o) in dependent {
            self.emit(vec![o], vec![original]);
        }
        self.evict_idle();
        written
    }

    /// Takes in a batch of events of one stream: drops duplicates (within
    /// the batch, in flight, recently committed, or stored), and writes each
    /// new event, its key and its rollup increment in one batch.
    fn ingest(
        &mut self,
        now: Millis,
        tenant: &iris_envelope::Tenant,
        stream: Arc<str>,
        events: Vec<IngestEvent>,
        to: &SessionAddr,
        stored: Vec<bool>,
    ) -> Option<(Ticket, WriteBatch)> {
        let mut batch = WriteBatch::default();
        let (mut accepted, mut duplicates) = (Vec::new(), Vec::new());
        let mut in_batch: HashSet<EventKey> = HashSet::new();
        // Duplicates of events still being written stand or fall with them.
        let mut deps: Vec<Ticket> = Vec::new();
        let ticket = self.tickets.next();
        for (i, e) in events.into_iter().enumerate() {
            let key = EventKey { tenant: tenant.clone(), stream: stream.clone(), key: e.key.clone() };
            if let Some(t) = self.inflight_events.get(&key) {
                deps.push(*t);
            }
            let seen = stored.get(i).copied().unwrap_or(false)
                || in_batch.contains(&key)
                || self.inflight_events.contains_key(&key)
                || self.recent_events.contains(&key);
            if seen {
                duplicates.push(e.index);
                continue;
            }
            accepted.push(e.index);
            let hour_ms = e.ts.div_euclid(3_600_000) * 3_600_000;
            // The API validated the payload as JSON; a record is never lost
            // for want of one.
            let payload: Box<serde_json::value::RawValue> =
                serde_json::from_slice(&e.payload).unwrap_or_else(|_| raw_null());
            let record = serde_json::json!({
                "v": GRAPH_EVENT_VERSION, "tenant": &**tenant, "stream": &*stream, "type": &*e.event_type,
                "project": &*e.project, "ts": e.ts, "key": &*e.key, "received": now, "payload": payload,
            });
            batch.push(WriteOp::Log {
                kind: LogKind::Events,
                tenant: tenant.clone(),
                record: record.to_string().into_bytes().into(),
            });
            batch.push(WriteOp::EventSeen { key: key.clone(), ts: now });
            let rollup = RollupKey { tenant: tenant.clone(), event_type: e.event_type, project: e.project, hour_ms };
            batch.push(WriteOp::RollupAdd { key: rollup, by: 1 });
            in_batch.insert(key);
        }
        for key in in_batch {
            self.inflight_events_order.push_back((ticket, key.clone()));
            self.inflight_events.insert(key, ticket);
        }
        let answer = service_reply(to, ServiceReply::Ingested { accepted, duplicates });
        deps.sort_unstable();
        deps.dedup();
        if batch.is_empty() {
            self.emit(vec![answer], deps);
            return None;
        }
        let t = self.issue();
        debug_assert_eq!(t, ticket);
        deps.push(t);
        self.emit(vec![answer], deps);
        Some((t, batch))
    }

    /// Renews `edge`'s lease. The first time this shard (since it started
    /// here, or since the edge's lease ran out) hears from an edge, it asks
    /// the edge to register its sessions and subscriptions here again
    /// ([`EdgeInput::Resync`]): a shard that moved, or restarted, starts
    /// knowing no session, and an edge's sessions must not go without
    /// deliveries until they reconnect.
    fn heard_from(&mut self, edge: EdgeId, now: Millis, out: &mut Vec<Output>) {
        if self.leases.insert(edge.clone(), now).is_none() {
            out.push(Output::Edge(EdgeEnvelope {
                edge,
                body: EdgeInput::Resync { region: self.config.region.clone(), shard: self.config.shard },
            }));
        }
    }

    /// Ends the sessions of edges whose lease expired (a crashed edge never
    /// says goodbye): their users go offline with `last_seen`, and
    /// subscribers hear of it. Returns the writes, like `handle`.
    ///
    /// `caught_up` is the newest instant at which the shard's input held
    /// nothing unread. A shard further behind than a quarter lease may
    /// have heartbeats waiting in its input, or dropped at its full queue,
    /// so it ends no lease until it has run caught up for a whole lease:
    /// a busy shard never ends a live edge's sessions, and a crashed edge's
    /// users go offline one lease after the backlog clears.
    pub fn handle_timeout(&mut self, now: Millis, caught_up: Millis) -> Option<(Ticket, WriteBatch)> {
        let lease = self.config.edge_lease_ms;
        if now - caught_up > lease / 4 {
            self.stalled_at = Some(now);
        }
        if self.stalled_at.is_some_and(|at| now - at <= lease) {
            return None;
        }
        let dead: Vec<EdgeId> = self.leases.iter().filter(|(_, t)| now - **t > lease).map(|(e, _)| e.clone()).collect();
        if dead.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        let mut batch = WriteBatch::default();
        for edge in &dead {
            self.leases.remove(edge);
        }
        for (key, user) in self.users.iter_mut() {
            let before = user.sessions.len();
            user.sessions.retain(|s| !dead.contains(&s.edge));
            if before > 0 && user.sessions.is_empty() {
                user.away = false;
                user.meta.last_seen = Some(now);
                batch.push(WriteOp::Meta { user: key.clone(), meta: user.meta.clone() });
                notify_subscribers(&key.user, user, &mut out);
            }
            if user.sessions.len() != before {
                batch.push(session_write(key, user, &self.config.region));
            }
            // Subscriptions held by sessions of a dead edge end too.
            user.subscribers.retain(|s| !dead.contains(&s.session.edge));
        }
        let written = if batch.is_empty() { None } else { Some((self.issue(), batch)) };
        let own = written.as_ref().map(|(t, _)| *t);
        self.emit(out, own.into_iter().collect());
        written
    }

    /// Records that a ticket's writes completed (or failed).
    pub fn committed(&mut self, ticket: Ticket, result: Result<(), StoreError>) {
        self.tickets.committed(ticket, result.is_ok());
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

    /// What the shell must ask the store for `read`.
    pub fn query<'a>(&self, read: &'a Read) -> Query<'a> {
        match read {
            Read::Replay { user, after, limit, .. } => {
                Query::Inbox { user, after: *after, limit: *limit as usize, max_bytes: self.config.page_max_bytes }
            }
            Read::Receipts { user, from, to, .. } => Query::Range { user, from: *from, to: *to, limit: RECEIPT_PAGE },
            Read::FlushReceipts { user, .. } => Query::PendingReceipts { user, limit: PENDING_RECEIPTS_MAX },
        }
    }

    /// Takes the store's answer to a [`Read`] and decides what follows: the
    /// frames of a replay page and its `synced`; receipts to the senders'
    /// shards and the next page's read; a returning sender's pending
    /// receipts, and forgetting them through the ticket order like every
    /// other write.
    pub fn read_done(&mut self, read: Read, result: ReadResult) -> ReadOutcome {
        let mut o = ReadOutcome::default();
        match (read, result) {
            (Read::Replay { session, after, inbox_head, always_synced, .. }, ReadResult::Inbox(r)) => {
                let to = std::slice::from_ref(&session);
                match r {
                    Ok(page) => {
                        let last = page.messages.last().map(|m| m.seq).unwrap_or(after);
                        let more = page.more;
                        for m in page.messages {
                            frame_to(to, message_frame(m), false, &mut o.outputs);
                        }
                        // A replay nobody asked for ends silently unless the
                        // client must go on with `sync` (PROTOCOL: synced
                        // with more).
                        if always_synced || more {
                            let synced = ServerFrame::Synced(Synced { inbox_head: inbox_head.max(last), more });
                            frame_to(to, synced, false, &mut o.outputs);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "replay read failed");
                        let frame = ServerFrame::error(ErrorCode::Unavailable, "history unavailable; retry sync", None);
                        frame_to(to, frame, false, &mut o.outputs);
                    }
                }
            }
            (Read::Receipts { user, to, state, .. }, ReadResult::Range(r)) => match r {
                Ok(page) => {
                    let Some(last) = page.last().map(|m| m.seq) else { return o };
                    for m in page {
                        o.outputs.push(Output::Shard(ShardEnvelope {
                            owner: user.peer(&m.from),
                            body: ShardInput::Receipt { msg_id: m.msg_id, by: user.user.clone(), state },
                        }));
                    }
                    if last < to {
                        o.outputs.push(Output::Read(Read::Receipts { user, from: last, to, state }));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "receipt read failed; receipts dropped"),
            },
            (Read::FlushReceipts { user, session }, ReadResult::PendingReceipts(r)) => match r {
                Ok(pending) if !pending.is_empty() => {
                    let to = std::slice::from_ref(&session);
                    let mut ids = Vec::with_capacity(pending.len());
                    for r in pending {
                        let frame = ServerFrame::Receipt(Receipt {
                            msg_id: r.msg_id.to_string(),
                            by: r.by.to_string(),
                            state: r.state,
                        });
                        frame_to(to, frame, false, &mut o.outputs);
                        ids.push(r.msg_id);
                    }
                    let mut batch = WriteBatch::default();
                    batch.push(WriteOp::ReceiptsDelivered { user, msg_ids: ids });
                    o.commit = Some((self.issue(), batch));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pending receipts unreadable; kept for next time"),
            },
            (read, result) => {
                debug_assert!(false, "{read:?} answered with {result:?}");
                tracing::error!(?read, "a read answered with the wrong kind of result; dropped");
            }
        }
        o
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
        self.users.retain(|_, u| {
            if excess > 0 && u.sessions.is_empty() && u.subscribers.is_empty() && u.last_ticket <= done {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// What a client sees instead of an output whose write failed.
fn failed_output(o: Output) -> Option<Output> {
    match o {
        Output::Edge(EdgeEnvelope { edge, body: EdgeInput::Frame { to, frame, droppable: false } }) => {
            let id = match &frame {
                ServerFrame::Accepted(a) => Some(a.id.clone()),
                ServerFrame::ContactsOk(_) | ServerFrame::CirclePolicyOk(_) => None,
                _ => return None,
            };
            Some(Output::Edge(EdgeEnvelope {
                edge,
                body: EdgeInput::Frame {
                    to,
                    frame: ServerFrame::error(ErrorCode::Unavailable, "storage failed; retry", id),
                    droppable: false,
                },
            }))
        }
        // A session whose opening could not be written is refused with
        // `unavailable` (the edge closes it; the client retries).
        Output::Edge(EdgeEnvelope { edge, body: EdgeInput::Welcome { session, .. } }) => {
            Some(Output::Edge(EdgeEnvelope {
                edge,
                body: EdgeInput::Frame {
                    to: Recipients::Session(session),
                    frame: ServerFrame::error(ErrorCode::Unavailable, "storage failed; retry", None),
                    droppable: false,
                },
            }))
        }
        Output::Edge(EdgeEnvelope { edge, body: EdgeInput::Reply { request, .. } }) => {
            Some(Output::Edge(EdgeEnvelope {
                edge,
                body: EdgeInput::Reply {
                    request,
                    reply: ServiceReply::Error {
                        code: ErrorCode::Unavailable,
                        message: "storage failed; retry".into(),
                    },
                },
            }))
        }
        _ => None,
    }
}

fn presence_frame(user: &str, view: View) -> ServerFrame {
    ServerFrame::Presence(PresenceUpdate { user: user.to_owned(), status: view.status, last_seen: view.last_seen })
}

/// Sends each subscriber whose view changed one frame; subscribers on the
/// same edge who see the same thing share one envelope.
fn notify_subscribers(me: &str, user: &mut UserState, out: &mut Vec<Output>) {
    let mut groups: Vec<(View, Vec<SessionAddr>)> = Vec::new();
    for i in 0..user.subscribers.len() {
        let view = user.view_for(me, &user.subscribers[i].viewer);
        let sub = &mut user.subscribers[i];
        if view != sub.last {
            sub.last = view;
            match groups.iter_mut().find(|(v, _)| *v == view) {
                Some((_, s)) => s.push(sub.session.clone()),
                None => groups.push((view, vec![sub.session.clone()])),
            }
        }
    }
    for (view, sessions) in groups {
        frame_to(&sessions, presence_frame(me, view), false, out);
    }
}

/// The version of the records in the downstream graph and events logs.
pub const GRAPH_EVENT_VERSION: u32 = 1;

fn graph_log(owner: &UserKey, record: &serde_json::Value) -> WriteOp {
    WriteOp::Log { kind: LogKind::Graph, tenant: owner.tenant.clone(), record: record.to_string().into_bytes().into() }
}

/// Puts a contact in place; writes it and its `contact.upserted` event only
/// if it changed. Returns whether it did.
fn upsert_contact(
    owner: &UserKey,
    user: &mut UserState,
    now: Millis,
    name: String,
    contact: Contact,
    batch: &mut WriteBatch,
) -> bool {
    if user.contacts.get(&name) == Some(&contact) {
        return false;
    }
    let record = serde_json::json!({
        "v": GRAPH_EVENT_VERSION, "type": "contact.upserted", "tenant": &*owner.tenant, "owner": &*owner.user,
        "contact": &name, "circle": &contact.circle, "channels": &contact.channels, "ts": now,
    });
    batch.push(graph_log(owner, &record));
    batch.push(WriteOp::Contact { owner: owner.clone(), contact: name.clone(), record: contact.clone() });
    user.contacts.insert(name, contact);
    true
}

/// Removes a contact with its `contact.removed` event, if it was there.
fn remove_contact(owner: &UserKey, user: &mut UserState, now: Millis, name: String, batch: &mut WriteBatch) {
    if user.contacts.remove(&name).is_some() {
        let record = serde_json::json!({
            "v": GRAPH_EVENT_VERSION, "type": "contact.removed", "tenant": &*owner.tenant, "owner": &*owner.user,
            "contact": &name, "ts": now,
        });
        batch.push(graph_log(owner, &record));
        batch.push(WriteOp::ContactRemoved { owner: owner.clone(), contact: name });
    }
}

fn raw_null() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string("null".into()).expect("null is JSON")
}

/// Where a user is connected now, for `session:{tenant}:{user}`.
fn session_write(owner: &UserKey, user: &UserState, region: &Arc<str>) -> WriteOp {
    let mut nodes: Vec<String> = user.sessions.iter().map(|s| s.edge.to_string()).collect();
    nodes.sort();
    nodes.dedup();
    let last_seen = if user.sessions.is_empty() { user.meta.last_seen } else { None };
    let record = iris_storage::SessionRecord {
        nodes,
        region: region.to_string(),
        sessions: user.sessions.len() as u32,
        last_seen,
    };
    WriteOp::Session { user: owner.clone(), record }
}

fn service_reply(to: &SessionAddr, reply: ServiceReply) -> Output {
    Output::Edge(EdgeEnvelope { edge: to.edge.clone(), body: EdgeInput::Reply { request: to.session, reply } })
}

fn plan_contacts(user: &UserState, upsert: &[ContactEntry], remove: &[String], max: usize) -> Result<(), String> {
    use std::collections::HashSet;
    let removed: HashSet<&str> = remove.iter().map(String::as_str).collect();
    let mut added: HashSet<&str> = HashSet::new();
    for e in upsert {
        if !user.contacts.contains_key(&e.user) && !removed.contains(e.user.as_str()) {
            added.insert(&e.user);
        }
    }
    let gone = removed.iter().filter(|r| user.contacts.contains_key(**r)).count();
    let count = user.contacts.len() + added.len() - gone;
    if count > max { Err(format!("at most {max} contacts")) } else { Ok(()) }
}

/// The frame of one replayed message.
fn message_frame(m: StoredMessage) -> ServerFrame {
    ServerFrame::Message(Message {
        seq: m.seq,
        msg_id: m.msg_id.to_string(),
        from: m.from.to_string(),
        body: Body(m.body),
        ts: m.ts,
    })
}

#[cfg(test)]
mod tests;
