//! Storage traits for Iris and their backends.
//!
//! One trait, [`Store`], covers what a shard needs: inbox append and read,
//! dedup records, per-user state (acks, presence that must survive), contacts
//! and circle policies, and receipts waiting for an offline sender. Writes go
//! in a [`WriteBatch`] that [`Store::commit`] makes durable as a unit; the
//! future resolves only once the batch is synced, so `accepted` can follow.
//!
//! Backends: [`embedded::EmbeddedStore`] (fjall, group commit),
//! [`redis::RedisStore`] (fred) and [`scylladb::ScyllaStore`] (the scylla
//! driver). Every backend must pass [`contract::run_all`].
//! [`memory::MemoryStore`] mirrors the embedded store in memory, for the simulator and tests.

pub mod bars;
pub mod contract;
pub mod embedded;
mod keys;
pub mod memory;
pub mod redis;
pub mod retention;
pub mod scylladb;

use async_trait::async_trait;
use bytes::Bytes;
use iris_envelope::{InboxSeq, Millis, UserKey};
use iris_types::ReceiptState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A message stored in a recipient's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The recipient's inbox seq.
    pub seq: InboxSeq,
    /// The server's message id.
    pub msg_id: Arc<str>,
    /// The sender (same tenant).
    pub from: Arc<str>,
    /// The body.
    pub body: Bytes,
    /// When it was accepted, ms since the epoch.
    pub ts: Millis,
}

/// What a `(tenant, sender, client id)` was answered with the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    /// The message id given out.
    pub msg_id: Arc<str>,
    /// The timestamp given out.
    pub ts: Millis,
    /// The recipient of the first send.
    pub to: Arc<str>,
    /// Its seq in the recipient's inbox.
    pub seq: InboxSeq,
}

/// Identifies a dedup record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// The sender.
    pub sender: UserKey,
    /// The sender's client id.
    pub client_id: Arc<str>,
}

/// Per-user state that must survive restarts (besides the inbox itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMeta {
    /// Highest seq acknowledged as delivered.
    pub acked: InboxSeq,
    /// Highest seq read.
    pub read: InboxSeq,
    /// Set while the user is invisible: the moment they became invisible.
    pub invisible_since: Option<Millis>,
    /// When the user's last session ended.
    pub last_seen: Option<Millis>,
    /// The edge's stamp on the newest status the user set: a status stamped
    /// earlier is older than the one shown and is ignored (ADR 0032).
    /// `None` in records written before it existed.
    pub status_at: Option<Millis>,
}

/// [`UserMeta`] as records stored before `status_at` existed: read only.
#[derive(Deserialize)]
pub(crate) struct UserMetaV1 {
    acked: InboxSeq,
    read: InboxSeq,
    invisible_since: Option<Millis>,
    last_seen: Option<Millis>,
}

impl From<UserMetaV1> for UserMeta {
    fn from(v: UserMetaV1) -> Self {
        UserMeta {
            acked: v.acked,
            read: v.read,
            invisible_since: v.invisible_since,
            last_seen: v.last_seen,
            status_at: None,
        }
    }
}

/// What a circle's members may see of its owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CirclePolicy {
    /// Online/away.
    pub presence: bool,
    /// last_seen (effective only with `presence`).
    pub last_seen: bool,
}

/// Everything a shard loads about a user when it first needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRecord {
    /// The highest seq in the inbox (0 when empty).
    pub head: InboxSeq,
    /// Acks, read marks, presence that must survive.
    pub meta: UserMeta,
    /// Contact name → circle and verified channels.
    pub contacts: BTreeMap<String, Contact>,
    /// Channels (e.g. phone-number hashes) verified for this user.
    pub identities: Vec<String>,
    /// Circle → policy, for circles whose policy was set.
    pub policies: BTreeMap<String, CirclePolicy>,
}

/// Where a user is connected, for last-seen and for lookups by other
/// services (`session:{tenant}:{user}` on Redis, 24 h TTL).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The edges (nodes) holding the user's sessions.
    pub nodes: Vec<String>,
    /// The region.
    pub region: String,
    /// How many sessions.
    pub sessions: u32,
    /// When the last session ended (ms), if none is open.
    pub last_seen: Option<Millis>,
}

/// One contact of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The circle the contact is in.
    pub circle: String,
    /// Verified channel hashes the owner's address book has for the contact.
    pub channels: Vec<String>,
}

/// The append-only logs downstream jobs read, one per kind, per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// Contact-graph events (`contact.upserted`, `identity.verified`, ...).
    Graph,
    /// Ingested analytics events.
    Events,
}

/// One entry of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Position in the tenant's log (strictly increasing, gaps allowed).
    pub seq: u64,
    /// The record (JSON).
    pub record: Bytes,
}

/// Where a batch's log records also go: a shard's outbox, drained in
/// order to the region's topics (`iris.<region>.graph|events`) by whoever
/// holds the shard's outbox lease (docs/adr/0022-log-topics-from-an-outbox.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxTarget {
    /// The outbox that takes the records.
    pub id: OutboxId,
    /// The most entries that outbox may hold. A batch with log records
    /// that finds it full fails, nothing of it applied
    /// ([`StoreError::Unavailable`]): accepting more would let the topics
    /// fall behind without bound.
    pub max: u64,
}

/// Names a shard's outbox: per region, since regions may share a store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxId {
    /// The region.
    pub region: Arc<str>,
    /// The shard.
    pub shard: u32,
}

/// A log record in a shard's outbox, waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the shard's outbox: strictly increasing in commit order,
    /// never reused.
    pub pos: u64,
    /// Which log.
    pub kind: LogKind,
    /// The tenant.
    pub tenant: Arc<str>,
    /// The record's seq in the tenant's log.
    pub seq: u64,
    /// The record (JSON), as in the log.
    pub record: Bytes,
}

/// A tenant barred from a region's shards: its deletion is under way or
/// done, and no shard may write anything of it
/// (docs/adr/0030-a-tenant-deleted-under-running-shards.md).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bar {
    /// The tenant.
    pub tenant: Arc<str>,
    /// Names this bar: a shard confirms the bar it saw, so a confirmation of
    /// an earlier bar of the same name (lifted since) never counts.
    pub id: u64,
}

/// Identifies an ingested event for deduplication.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The stream the event belongs to.
    pub stream: Arc<str>,
    /// The client's idempotency key.
    pub key: Arc<str>,
}

/// One hourly rollup counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The event type.
    pub event_type: Arc<str>,
    /// The project.
    pub project: Arc<str>,
    /// Start of the hour, ms since the epoch.
    pub hour_ms: i64,
}

/// A receipt waiting for its (offline) sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReceipt {
    /// The message.
    pub msg_id: Arc<str>,
    /// Who acknowledged it.
    pub by: Arc<str>,
    /// The latest state.
    pub state: ReceiptState,
}

/// One page of an inbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxPage {
    /// Messages in seq order.
    pub messages: Vec<StoredMessage>,
    /// More messages follow the page.
    pub more: bool,
}

impl InboxPage {
    /// Fills a page from messages in seq order: at most `limit` messages,
    /// and it stops once `max_bytes` of bodies are in (never empty for
    /// that). `more` says a message was left over, so the source should
    /// offer one more than `limit`.
    pub fn fill(
        rows: impl IntoIterator<Item = Result<StoredMessage, StoreError>>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Self, StoreError> {
        let mut page = InboxPage::default();
        let mut bytes = 0usize;
        for row in rows {
            if page.messages.len() >= limit || (bytes >= max_bytes && !page.messages.is_empty()) {
                page.more = true;
                break;
            }
            let m = row?;
            bytes += m.body.len();
            page.messages.push(m);
        }
        Ok(page)
    }
}

/// One write in a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Append a message to `user`'s inbox. The seq must be free or hold
    /// this very message (a replay); a seq holding another message fails
    /// the whole batch with [`StoreError::Conflict`].
    Message {
        /// The recipient.
        user: UserKey,
        /// The message.
        message: StoredMessage,
    },
    /// Remember a send's answer for retries.
    Dedup {
        /// The sender and client id.
        key: DedupKey,
        /// The answer.
        record: DedupRecord,
    },
    /// Replace a user's meta record.
    Meta {
        /// The user.
        user: UserKey,
        /// The new record.
        meta: UserMeta,
        /// The writer's version, as for [`WriteOp::Session`] (the owner
        /// epoch above the count of writes): on a backend that fences
        /// session records, a meta record older than the stored one fails
        /// the whole batch the same way. A zombie's meta (a status, a read
        /// mark, `last_seen` from its stale memory) never lands over its
        /// successor's (ADR 0021).
        version: u64,
    },
    /// Put a contact in a circle (with its verified channels).
    Contact {
        /// The owner.
        owner: UserKey,
        /// The contact's name.
        contact: String,
        /// The circle and channels.
        record: Contact,
    },
    /// Remember a channel verified for a user.
    Identity {
        /// The user.
        user: UserKey,
        /// The channel (e.g. a phone-number hash).
        channel: String,
    },
    /// Append a record to a tenant's log; the store assigns its seq.
    Log {
        /// Which log.
        kind: LogKind,
        /// The tenant.
        tenant: Arc<str>,
        /// The record (JSON).
        record: Bytes,
    },
    /// Remember an ingested event's idempotency key.
    EventSeen {
        /// The key.
        key: EventKey,
        /// When it was accepted (retention runs from here).
        ts: Millis,
    },
    /// Record where a user is connected.
    Session {
        /// The user.
        user: UserKey,
        /// The record.
        record: SessionRecord,
        /// The writer's version of the record: its owner epoch
        /// ([`Store::claim_shard`]) in the high 32 bits, its count of record
        /// writes in the low. On a backend that fences records
        /// ([`Store::fences_session_records`]) a write older than the
        /// record's version fails the whole batch with
        /// [`StoreError::Conflict`], nothing of it applied: it comes from an
        /// earlier owner of the user's shard that woke up late (a zombie),
        /// whose outputs must not go out either (ADR 0021).
        version: u64,
    },
    /// Add to an hourly rollup counter.
    RollupAdd {
        /// The counter.
        key: RollupKey,
        /// How much.
        by: u64,
    },
    /// Remove a contact.
    ContactRemoved {
        /// The owner.
        owner: UserKey,
        /// The contact's name.
        contact: String,
    },
    /// Set a circle's policy.
    Policy {
        /// The owner.
        owner: UserKey,
        /// The circle.
        circle: String,
        /// The policy.
        policy: CirclePolicy,
    },
    /// Keep a receipt for an offline sender.
    Receipt {
        /// The sender who will get it.
        user: UserKey,
        /// The receipt.
        receipt: PendingReceipt,
    },
    /// Forget receipts that were delivered.
    ReceiptsDelivered {
        /// The sender.
        user: UserKey,
        /// The messages.
        msg_ids: Vec<Arc<str>>,
    },
}

/// Writes that become durable together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// The writes, applied in order.
    pub ops: Vec<WriteOp>,
    /// Whose outbox the batch's log records go to as well, in the same
    /// atomic write ([`Store::keeps_outbox`]); `None`: only to the logs.
    pub outbox: Option<OutboxTarget>,
}

impl WriteBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds a write.
    pub fn push(&mut self, op: WriteOp) {
        self.ops.push(op);
    }
}

/// Storage failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (disk, engine); the write may not be durable.
    #[error("storage backend failed: {0}")]
    Backend(Arc<str>),
    /// The backend is unreachable or shut down; retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(Arc<str>),
    /// A stored record does not decode.
    #[error("corrupt record in {0}")]
    Corrupt(&'static str),
    /// An inbox seq the batch appends at already holds another message:
    /// another owner of the user wrote it (two owners overlapped during a
    /// shard move). Nothing of the batch was applied; reload the user's
    /// head and retry. See docs/adr/0011-inbox-seq-ownership.md.
    #[error("inbox seq taken by another writer: {0}")]
    Conflict(Arc<str>),
}

/// The storage a shard needs. Reads see every committed write.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Loads a user's head seq, meta, contacts and policies.
    async fn load_user(&self, user: &UserKey) -> Result<UserRecord, StoreError>;
    /// Looks up the answer to an earlier send with the same client id.
    async fn dedup(&self, key: &DedupKey) -> Result<Option<DedupRecord>, StoreError>;
    /// Reads at most `limit` messages (and about `max_bytes` of bodies) with seq > `after`.
    async fn read_inbox(
        &self,
        user: &UserKey,
        after: InboxSeq,
        limit: usize,
        max_bytes: usize,
    ) -> Result<InboxPage, StoreError>;
    /// Reads messages with `from < seq <= to`, at most `limit`.
    async fn read_range(
        &self,
        user: &UserKey,
        from: InboxSeq,
        to: InboxSeq,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// Receipts waiting for `user`, at most `limit`.
    async fn pending_receipts(&self, user: &UserKey, limit: usize) -> Result<Vec<PendingReceipt>, StoreError>;
    /// Makes a batch durable; resolves once it is synced.
    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError>;
    /// False once the backend has failed for good (the node should stop and
    /// recover on restart). Backends that recover by themselves stay true.
    fn healthy(&self) -> bool {
        true
    }
    /// Whether one commit can fail while a later one succeeds (a timeout,
    /// a dropped connection), and two running commits can apply in either
    /// order: Redis, ScyllaDB. The shards then never put one user's writes
    /// in two commits at once, so that no later seq lands after an earlier
    /// one failed (no gaps, ADR 0004) and no older record lands after a
    /// newer one. False only for a backend that applies commits in order
    /// and whose failure fails every later commit too (fjall), where such
    /// writes may run together.
    fn commits_fail_alone(&self) -> bool {
        true
    }
    /// Claims `shard` for a new owner: a number greater than every earlier
    /// claim of it on this store, the epoch of the owner's session record
    /// versions. Backends that do not fence session records return 0.
    async fn claim_shard(&self, _shard: u32) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// Whether a session record or meta write older than the stored one's
    /// version fails its batch (Redis and the memory store, which a region's
    /// owners share; not the embedded store, which one node owns alone, nor
    /// ScyllaDB yet, ADR 0021).
    fn fences_session_records(&self) -> bool {
        false
    }
    /// Whether [`WriteBatch::outbox`] is honoured: the batch's log records
    /// are put in the shard's outbox in the same atomic write (Redis and
    /// the memory store). Others ignore it.
    fn keeps_outbox(&self) -> bool {
        false
    }
    /// Reads a shard's outbox after position `after`, at most `limit`
    /// entries, in position order.
    async fn read_outbox(&self, _id: &OutboxId, _after: u64, _limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        Err(StoreError::Backend("this backend keeps no outbox".into()))
    }
    /// Makes the outbox hand out positions above `at_least` (the position
    /// its publisher has published up to); true when it had to be raised
    /// (the store had lost writes it acknowledged).
    async fn raise_outbox_position(&self, _id: &OutboxId, _at_least: u64) -> Result<bool, StoreError> {
        Err(StoreError::Backend("this backend keeps no outbox".into()))
    }
    /// Removes a shard's outbox entries up to and including `upto` (they
    /// are published). Returns how many went.
    async fn trim_outbox(&self, _id: &OutboxId, _upto: u64) -> Result<u64, StoreError> {
        Err(StoreError::Backend("this backend keeps no outbox".into()))
    }
    /// Tenants that have a log or rollups here: what a retention sweep
    /// visits ([`retention`]).
    async fn retained_tenants(&self) -> Result<Vec<String>, StoreError>;
    /// Removes `tenant`'s `kind` log records with seq ≤ `upto`. Records
    /// after `upto` are never touched.
    async fn trim_log(&self, kind: LogKind, tenant: &str, upto: u64) -> Result<(), StoreError>;
    /// Removes `tenant`'s rollup counters of hours starting before
    /// `before_ms`; returns how many went.
    async fn trim_rollups(&self, tenant: &str, before_ms: i64) -> Result<u64, StoreError>;
    /// Removes everything of `tenant`: inboxes, dedup records and event
    /// keys, user state, contacts, identities, policies, receipts, session
    /// records, logs, rollups, unpublished outbox records and (where kept
    /// here) API keys. Returns how many keys or rows went. Nothing of
    /// another tenant is touched. Idempotent.
    async fn delete_tenant(&self, tenant: &str) -> Result<u64, StoreError>;
    /// Whether ingestion API keys live here, shared by every node of the
    /// region (Redis, ScyllaDB and the memory store); the embedded store's
    /// node keeps them in files.
    fn keeps_api_keys(&self) -> bool {
        false
    }
    /// Stores an API key's hash for `tenant`.
    async fn put_api_key(&self, _hash: &str, _tenant: &str) -> Result<(), StoreError> {
        Err(StoreError::Backend("this backend keeps no API keys".into()))
    }
    /// The tenant of the key stored under `hash`, if it is live.
    async fn api_key_tenant(&self, _hash: &str) -> Result<Option<String>, StoreError> {
        Err(StoreError::Backend("this backend keeps no API keys".into()))
    }
    /// Revokes `tenant`'s key whose hash starts with `prefix` (at least 16
    /// hex characters). Returns whether one was revoked; another tenant's
    /// key is never touched.
    async fn revoke_api_key(&self, _tenant: &str, _prefix: &str) -> Result<bool, StoreError> {
        Err(StoreError::Backend("this backend keeps no API keys".into()))
    }
    /// Whether tenants can be barred here: a store a region's nodes share
    /// (Redis, ScyllaDB, the memory store). The embedded store's node is
    /// stopped to delete a tenant, and bars nothing.
    fn keeps_bars(&self) -> bool {
        false
    }
    /// Bars `tenant` from every shard of the store, under `id` unless it
    /// is barred already. Returns the id of the bar that holds.
    async fn bar_tenant(&self, _tenant: &str, _id: u64) -> Result<u64, StoreError> {
        Err(StoreError::Backend("this backend keeps no tenant bars".into()))
    }
    /// Lifts `tenant`'s bar; returns whether there was one.
    async fn lift_bar(&self, _tenant: &str) -> Result<bool, StoreError> {
        Err(StoreError::Backend("this backend keeps no tenant bars".into()))
    }
    /// Every barred tenant (a store that keeps none has none).
    async fn barred_tenants(&self) -> Result<Vec<Bar>, StoreError> {
        Ok(Vec::new())
    }
    /// Records that `shard` of `region` writes nothing of `bar`'s tenant
    /// any more, and that every write it made of it before has finished.
    async fn confirm_bar(&self, _region: &str, _bar: &Bar, _shard: u32) -> Result<(), StoreError> {
        Err(StoreError::Backend("this backend keeps no tenant bars".into()))
    }
    /// The shards of `region` that confirmed bar `id` of `tenant`.
    async fn bar_confirmations(&self, _region: &str, _tenant: &str, _id: u64) -> Result<Vec<u32>, StoreError> {
        Err(StoreError::Backend("this backend keeps no tenant bars".into()))
    }
    /// Finishes queued writes and releases the backend.
    async fn close(&self) {}
    /// Where a user is connected, if recorded (and not expired).
    async fn session(&self, user: &UserKey) -> Result<Option<SessionRecord>, StoreError>;
    /// Was this event key seen (within retention)?
    async fn event_seen(&self, key: &EventKey) -> Result<bool, StoreError>;
    /// Reads a tenant's log after `after`, at most `limit` entries.
    async fn read_log(
        &self,
        kind: LogKind,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;
    /// Hourly rollups of a tenant for `[from_ms, to_ms)`, optionally one type.
    async fn rollups(
        &self,
        tenant: &str,
        event_type: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(RollupKey, u64)>, StoreError>;
}
