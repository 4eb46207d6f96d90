//! Envelopes and identifiers that move between Iris actors and nodes.
//!
//! Everything that crosses an actor boundary is an envelope addressed either
//! to a shard (`ShardEnvelope`, keyed by the user who owns the state it
//! touches) or to an edge (`EdgeEnvelope`, addressed to sessions there). The
//! in-process bus moves them as values; the Kafka bus will move them encoded
//! with [`encode`] / [`decode`] (postcard behind a version byte).

mod key;
mod notice;
mod trace;
pub use key::ShardKey;
pub use notice::{FrameOnly, Notice, OwnerMark};
pub use trace::{TRACEPARENT, TraceParent, to_hex};

use bytes::Bytes;
use iris_types::{ContactEntry, ErrorCode, ReceiptState, SetStatus, TypingState};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A tenant's id, from a verified token.
pub type Tenant = Arc<str>;

/// A user, scoped by tenant. Every piece of user state is keyed by this.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserKey {
    /// The tenant, from the token.
    pub tenant: Tenant,
    /// The user's name within the tenant.
    pub user: Arc<str>,
}

impl UserKey {
    /// A user key from its parts.
    pub fn new(tenant: impl Into<Arc<str>>, user: impl Into<Arc<str>>) -> Self {
        Self { tenant: tenant.into(), user: user.into() }
    }

    /// Another user of the same tenant.
    pub fn peer(&self, user: &str) -> Self {
        Self { tenant: self.tenant.clone(), user: Arc::from(user) }
    }

    /// The bytes the consistent-hash ring places: tenant, NUL, user.
    pub fn shard_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.tenant.len() + 1 + self.user.len());
        k.extend_from_slice(self.tenant.as_bytes());
        k.push(0);
        k.extend_from_slice(self.user.as_bytes());
        k
    }
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.user)
    }
}

/// An edge's id (names its topic in a cluster).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EdgeId(pub Arc<str>);

impl fmt::Debug for EdgeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl EdgeId {
    /// The edge's id in a federation: `<node>@<region>`, so that any region
    /// can tell where an edge lives without asking anyone.
    pub fn qualified(node: &str, region: &str) -> Self {
        Self(format!("{node}@{region}").into())
    }

    /// The node part (names the edge's topic in its region).
    pub fn node(&self) -> &str {
        self.0.split_once('@').map_or(&self.0, |(n, _)| n)
    }

    /// The region, for a qualified id.
    pub fn region(&self) -> Option<&str> {
        self.0.split_once('@').map(|(_, r)| r)
    }
}

impl fmt::Display for EdgeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A session's id, unique within its edge.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where a session lives: its edge and its id there.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
pub struct SessionAddr {
    /// The edge that holds the session.
    pub edge: EdgeId,
    /// The session on that edge.
    pub session: SessionId,
}

/// A virtual shard (a partition of the shard topic).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
pub struct ShardId(pub u32);

/// An inbox sequence number: per recipient, from 1, without gaps.
pub type InboxSeq = u64;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// An envelope addressed to the shard that owns `owner`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEnvelope {
    /// Whose state it touches: the ring places this key (a shard's own
    /// inputs are published to a shard by number).
    pub owner: ShardKey,
    /// What to do.
    pub body: ShardInput,
    /// The sampled trace this input belongs to, if any: carried beside the
    /// encoded envelope (a Kafka header), never inside it.
    #[serde(skip)]
    pub trace: Option<TraceParent>,
}

/// Work for a shard. `owner` (in the envelope) is the user whose state it touches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShardInput {
    /// A session of `owner` opened (authenticated) on an edge.
    SessionOpened {
        /// The session.
        session: SessionAddr,
        /// Replay messages above this seq after the welcome.
        resume_after: Option<InboxSeq>,
    },
    /// A session of `owner` ended (closed, timed out, or its edge died).
    SessionClosed {
        /// The session.
        session: SessionAddr,
    },
    /// A message to `owner`.
    Send {
        /// The sender (same tenant).
        from: Arc<str>,
        /// The sender's client id (dedup key with the sender).
        client_id: Arc<str>,
        /// The body.
        body: Bytes,
        /// The sender's session, which gets `accepted` or an error.
        reply: SessionAddr,
    },
    /// `owner` acknowledged (`read == false`) or read (`read == true`) up to a seq.
    Ack {
        /// Cumulative seq.
        up_to: InboxSeq,
        /// True for `read`.
        read: bool,
    },
    /// A receipt for a message `owner` sent.
    Receipt {
        /// The message.
        msg_id: Arc<str>,
        /// Who acknowledged it.
        by: Arc<str>,
        /// Delivered or read.
        state: ReceiptState,
    },
    /// `owner` asks for a page of history.
    Sync {
        /// The session that asked.
        session: SessionAddr,
        /// Messages above this seq.
        after: InboxSeq,
        /// At most this many.
        limit: u32,
    },
    /// `owner` set their status (unstamped: what edges of earlier versions
    /// send; today's send [`ShardInput::SetPresenceAt`]).
    SetPresence {
        /// The session that set it.
        session: SessionAddr,
        /// The status.
        status: SetStatus,
    },
    /// `viewer`'s session subscribes to `owner`'s presence.
    Subscribe {
        /// The subscriber's user name (same tenant).
        viewer: Arc<str>,
        /// The subscriber's session.
        session: SessionAddr,
    },
    /// `viewer`'s session no longer wants `owner`'s presence.
    Unsubscribe {
        /// The subscriber's user name (same tenant).
        viewer: Arc<str>,
        /// The subscriber's session.
        session: SessionAddr,
    },
    /// `owner` changes contacts (`contact.upserted` / `contact.removed`).
    Contacts {
        /// The session that asked, which gets `contacts_ok`.
        session: SessionAddr,
        /// Contacts to add or move.
        upsert: Vec<ContactEntry>,
        /// Contacts to remove.
        remove: Vec<String>,
    },
    /// `owner` changes a circle's policy (`circle.policy_changed`).
    CirclePolicy {
        /// The session that asked, which gets `circle_policy_ok`.
        session: SessionAddr,
        /// The circle.
        circle: String,
        /// New presence permission, if given.
        presence: Option<bool>,
        /// New last_seen permission, if given.
        last_seen: Option<bool>,
    },
    /// `from` is typing to `owner`.
    Typing {
        /// Who types.
        from: Arc<str>,
        /// Start or stop.
        state: TypingState,
    },
    /// A service replaces `owner`'s whole contact list; the shard applies
    /// only the differences (`contact.upserted` / `contact.removed`).
    ContactsReplace {
        /// The full list.
        list: Vec<ContactSpec>,
        /// Where the answer goes.
        reply: SessionAddr,
    },
    /// A service reports a channel verified for `owner` (`identity.verified`).
    IdentityVerified {
        /// The channel, e.g. a phone-number hash.
        channel: String,
        /// Where the answer goes.
        reply: SessionAddr,
    },
    /// An edge is alive: it renews its lease on this shard (the owner is
    /// [`ShardKey::Shard`]; the envelope is addressed to a shard directly).
    EdgeAlive {
        /// The edge.
        edge: EdgeId,
    },
    /// Analytics events of one stream (`owner` is the stream's
    /// [`ShardKey::Stream`]).
    Ingest {
        /// The stream.
        stream: Arc<str>,
        /// The events.
        events: Vec<IngestEvent>,
        /// Where the answer goes.
        reply: SessionAddr,
    },
    /// An open session of `owner` registers again with a shard that asked
    /// its edge to (a new owner after a shard moved, see
    /// [`EdgeInput::Resync`]): no welcome; what the session has not been
    /// sent, above `after`, is replayed. (Appended last: envelopes of
    /// earlier versions keep their variant indices.)
    SessionResumed {
        /// The session.
        session: SessionAddr,
        /// The highest seq the session was sent (or its inbox head at welcome).
        after: InboxSeq,
    },
    /// An edge process started (the owner is [`ShardKey::Shard`]; the envelope is
    /// addressed to every shard directly, before the edge takes any
    /// session): every session the shard holds on that edge belonged to
    /// the process before and is gone. Without it, an edge that restarts
    /// under the same id within a lease keeps its old sessions registered
    /// for good. (Appended last.)
    EdgeStarted {
        /// The edge.
        edge: EdgeId,
    },
    /// A shard's own clock tick (the owner is [`ShardKey::Shard`]): its actor publishes
    /// one to its own partition every eighth of a lease, and reading it
    /// back proves that everything the partition held when it was
    /// published has been read. The lease check trusts the input no further
    /// than the newest tick read (`iris_core::state::InputClock`): a shard
    /// whose consumer stalls, whose process was stopped, or whose clock
    /// jumped never takes its own silence for the edges'. Ticks of another
    /// `origin` (an earlier owner of the partition) are ignored.
    /// (Appended last.)
    Tick {
        /// The shard actor that published it (random per actor).
        origin: u64,
        /// Its clock when it published it.
        at: Millis,
    },
    /// `owner` set their status, stamped by the edge's clock when the
    /// session's frame was read. The shard keeps the newest stamp it
    /// applied and ignores an older one: a status held back (an edge cut
    /// off from the bus) cannot land over one the user set later through
    /// another session (ADR 0032). Edges send this; [`ShardInput::SetPresence`]
    /// stays readable, unstamped, from edges of earlier versions. (Appended
    /// last.)
    SetPresenceAt {
        /// The session that set it.
        session: SessionAddr,
        /// The status.
        status: SetStatus,
        /// The edge's clock when the session sent it.
        at: Millis,
    },
}

/// One contact in a full contact list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactSpec {
    /// The contact's user name.
    pub user: String,
    /// The circle (default `contacts`).
    pub circle: Option<String>,
    /// Verified channel hashes of the contact in the owner's address book.
    pub channels: Vec<String>,
}

/// One analytics event, validated by the ingestion API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestEvent {
    /// Its position in the request's batch.
    pub index: u32,
    /// The event type.
    pub event_type: Arc<str>,
    /// The project.
    pub project: Arc<str>,
    /// When it happened, ms since the epoch.
    pub ts: Millis,
    /// The idempotency key (unique within the stream).
    pub key: Arc<str>,
    /// The payload, as JSON text.
    pub payload: Bytes,
}

/// Answers to service requests (HTTP API), sent to the requesting node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServiceReply {
    /// A contact list was applied.
    ContactsSynced {
        /// Contacts added or changed.
        upserted: u32,
        /// Contacts removed.
        removed: u32,
        /// Contacts after the change.
        count: u32,
    },
    /// An identity was recorded.
    IdentityVerified,
    /// Events were taken in.
    Ingested {
        /// Batch indices accepted.
        accepted: Vec<u32>,
        /// Batch indices that were duplicates.
        duplicates: Vec<u32>,
    },
    /// The request failed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// Why.
        message: String,
    },
}

impl ShardInput {
    /// The envelope's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ShardInput::SessionOpened { .. } => "session_opened",
            ShardInput::SessionClosed { .. } => "session_closed",
            ShardInput::Send { .. } => "send",
            ShardInput::Ack { read: false, .. } => "ack",
            ShardInput::Ack { read: true, .. } => "read",
            ShardInput::Receipt { .. } => "receipt",
            ShardInput::Sync { .. } => "sync",
            ShardInput::SetPresence { .. } | ShardInput::SetPresenceAt { .. } => "presence",
            ShardInput::Subscribe { .. } => "subscribe",
            ShardInput::Unsubscribe { .. } => "unsubscribe",
            ShardInput::Contacts { .. } => "contacts",
            ShardInput::CirclePolicy { .. } => "circle_policy",
            ShardInput::Typing { .. } => "typing",
            ShardInput::ContactsReplace { .. } => "contacts_replace",
            ShardInput::IdentityVerified { .. } => "identity_verified",
            ShardInput::Ingest { .. } => "ingest",
            ShardInput::EdgeAlive { .. } => "edge_alive",
            ShardInput::SessionResumed { .. } => "session_resumed",
            ShardInput::EdgeStarted { .. } => "edge_started",
            ShardInput::Tick { .. } => "tick",
        }
    }

    /// Ephemeral envelopes may be dropped under load (typing, heartbeats).
    pub fn is_ephemeral(&self) -> bool {
        matches!(self, ShardInput::Typing { .. } | ShardInput::EdgeAlive { .. } | ShardInput::Tick { .. })
    }
}

/// Which sessions of an edge an envelope is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Recipients {
    /// One session.
    Session(SessionId),
    /// Several sessions (presence fan-out: one envelope per edge).
    Sessions(Vec<SessionId>),
}

impl Recipients {
    /// The sessions, as a slice.
    pub fn as_slice(&self) -> &[SessionId] {
        match self {
            Recipients::Session(s) => std::slice::from_ref(s),
            Recipients::Sessions(v) => v,
        }
    }
}

/// An envelope addressed to one edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeEnvelope {
    /// The edge.
    pub edge: EdgeId,
    /// What to do there.
    pub body: EdgeInput,
    /// The sampled traces whose outputs this carries (a batch may carry
    /// several; at most [`MAX_TRACES`]): beside the encoded envelope,
    /// never inside it.
    #[serde(skip)]
    pub traces: Vec<TraceParent>,
}

/// Most traces one edge envelope carries; a batch of more keeps the first.
pub const MAX_TRACES: usize = 16;

/// Work for an edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EdgeInput {
    /// Tell these sessions something: the edge writes it as a frame.
    Notice {
        /// The sessions.
        to: Recipients,
        /// What to tell them.
        notice: Notice,
        /// May be dropped when a session's queue is full (typing).
        droppable: bool,
    },
    /// An answer to a service request.
    Reply {
        /// The request (a pseudo-session of the HTTP front end).
        request: SessionId,
        /// The answer.
        reply: ServiceReply,
    },
    /// The shard registered the session: send `welcome`.
    Welcome {
        /// The session.
        session: SessionId,
        /// The user's inbox head.
        inbox_head: InboxSeq,
    },
    /// A shard heard from this edge for the first time since it started
    /// (its owner changed, or it restarted): every open session whose user
    /// the shard owns registers again ([`ShardInput::SessionResumed`]), and
    /// every subscription to a user it owns is made again. (Appended last.)
    Resync {
        /// The shard's region.
        region: Arc<str>,
        /// The shard.
        shard: ShardId,
    },
    /// Several of the above for the same edge, in order: one bus record
    /// instead of one each (a shard's outputs released together). Never
    /// nested. (Appended last.)
    Batch(Vec<EdgeInput>),
}

impl EdgeInput {
    /// The inputs this one stands for, in order (a batch unpacked).
    pub fn into_parts(self) -> Vec<EdgeInput> {
        match self {
            EdgeInput::Batch(parts) => parts,
            one => vec![one],
        }
    }

    /// May be dropped when its edge's queue is full (typing; a batch only
    /// if everything in it may be).
    pub fn is_droppable(&self) -> bool {
        match self {
            EdgeInput::Notice { droppable, .. } => *droppable,
            EdgeInput::Batch(parts) => parts.iter().all(EdgeInput::is_droppable),
            _ => false,
        }
    }
}

/// Where an envelope crossing regions was first relayed from: its place in
/// the origin's outbound topic. A relay that replays after a restart sends
/// the same id again, so the receiving region drops the copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RelayId {
    /// The region whose outbound topic it left.
    pub region: Arc<str>,
    /// The outbound partition.
    pub partition: i32,
    /// The offset in it.
    pub offset: i64,
}

/// An envelope on its way to another region, through the origin's durable
/// outbound topic and the global layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalEnvelope {
    /// The region that sent it.
    pub origin: Arc<str>,
    /// The region it is for.
    pub dest: Arc<str>,
    /// How many times it crossed the global layer (loop guard).
    pub hops: u8,
    /// Set by the origin's relay when it leaves for the global layer.
    pub relay: Option<RelayId>,
    /// When the origin queued it (ms since the epoch; for latency metrics).
    pub queued_at: Millis,
    /// What to do in the destination region.
    pub body: GlobalBody,
}

/// Work for another region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GlobalBody {
    /// For the shard of a user homed there.
    Shard(ShardEnvelope),
    /// For an edge there (replies, deliveries, presence to travellers).
    Edge(EdgeEnvelope),
    /// An edge of the origin is alive: renew its lease on every shard there.
    EdgeAlive {
        /// The edge.
        edge: EdgeId,
    },
    /// A user's explicit home region changed.
    Home(HomeAssignment),
    /// An edge of the origin started (a new process under its id): every
    /// shard there ends the sessions it holds on the edge, which belong to
    /// the process before (travellers' sessions), as
    /// [`ShardInput::EdgeStarted`] does in the edge's own region. (Appended
    /// last: envelopes of earlier versions keep their variant indices.)
    EdgeStarted {
        /// The edge.
        edge: EdgeId,
    },
}

impl GlobalBody {
    /// The body's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            GlobalBody::Shard(_) => "shard",
            GlobalBody::Edge(_) => "edge",
            GlobalBody::EdgeAlive { .. } => "edge_alive",
            GlobalBody::Home(_) => "home",
            GlobalBody::EdgeStarted { .. } => "edge_started",
        }
    }

    /// The key that keeps related envelopes in order on a partitioned topic.
    pub fn key(&self) -> Vec<u8> {
        match self {
            GlobalBody::Shard(env) => env.owner.shard_key(),
            GlobalBody::Edge(env) => env.edge.0.as_bytes().to_vec(),
            GlobalBody::EdgeAlive { edge } => edge.0.as_bytes().to_vec(),
            GlobalBody::Home(h) => h.user.shard_key(),
            GlobalBody::EdgeStarted { edge } => edge.0.as_bytes().to_vec(),
        }
    }
}

/// An explicit home region for a user (`None`: back to the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeAssignment {
    /// The user.
    pub user: UserKey,
    /// The region, or `None` to remove the assignment.
    pub region: Option<Arc<str>>,
    /// When it was set (ms since the epoch): the newest assignment wins.
    pub set_at: Millis,
}

/// Envelope codec version byte (postcard after it).
pub const ENVELOPE_VERSION: u8 = 1;

/// Why an envelope could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The version byte is not one this build reads.
    #[error("unsupported envelope version {0}")]
    Version(u8),
    /// The payload does not decode.
    #[error("malformed envelope")]
    Malformed(#[from] postcard::Error),
}

/// Encodes an envelope for a wire bus.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![ENVELOPE_VERSION]).expect("envelopes always serialize")
}

/// Decodes an envelope from a wire bus.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, EnvelopeError> {
    match bytes.split_first() {
        Some((&ENVELOPE_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&v, _)) => Err(EnvelopeError::Version(v)),
        None => Err(EnvelopeError::Version(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_roundtrip() {
        let env = ShardEnvelope {
            owner: UserKey::new("acme", "bob").into(),
            body: ShardInput::Send {
                from: "alice".into(),
                client_id: "c-1".into(),
                body: Bytes::from_static(b"hi"),
                reply: SessionAddr { edge: EdgeId("e1".into()), session: SessionId(7) },
            },
            trace: None,
        };
        let back: ShardEnvelope = decode(&encode(&env)).unwrap();
        assert_eq!(back, env);
        assert!(matches!(decode::<ShardEnvelope>(&[9, 1]), Err(EnvelopeError::Version(9))));
    }

    #[test]
    fn a_stamped_status_is_appended_after_every_earlier_input() {
        let body = ShardInput::SetPresenceAt {
            session: SessionAddr { edge: EdgeId("e1".into()), session: SessionId(7) },
            status: SetStatus::Away,
            at: 1_700_000_000_000,
        };
        let env = ShardEnvelope { owner: UserKey::new("acme", "bob").into(), body, trace: None };
        let bytes = encode(&env);
        assert_eq!(decode::<ShardEnvelope>(&bytes).unwrap(), env);
        // version, then the owner ("acme", "bob"), then the input's
        // variant: one past `Tick` (18), so that no earlier envelope reads
        // differently.
        assert_eq!(bytes[..11], [1, 4, b'a', b'c', b'm', b'e', 3, b'b', b'o', b'b', 19]);
    }
}
