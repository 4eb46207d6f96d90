//! An in-memory store for the deterministic simulator (issue 19) and for
//! tests: the embedded store's semantics with no disk, no threads, no tokio
//! and no clock.
//!
//! Every future it returns is ready on its first poll (an operation takes
//! one mutex, does its work and lets go), so a simulator can drive it with
//! `futures::executor::block_on` or `FutureExt::now_or_never`. Maps are
//! ordered, so no hash order reaches anything it returns.
//!
//! It mirrors [`EmbeddedStore`](crate::embedded::EmbeddedStore) operation by
//! operation (the `matches_embedded` test below runs both on random batches
//! and compares every read), including where that store is surprising:
//!
//! - A batch applies as a unit and its writes in order, the last write to a
//!   key winning: a contact put and then removed in one batch is gone.
//! - An append at a seq that, before the batch, holds another message fails
//!   the whole batch with [`StoreError::Conflict`]. The same message id at
//!   its seq is a replay and is written again (body and stamp too). Two
//!   appends at one free seq within one batch do not conflict with each
//!   other: the last one stands.
//! - Log seqs come from one counter across every tenant and kind, starting
//!   at 1; a batch that fails takes none.
//! - Dedup records and event keys expire only when [`MemoryStore::sweep`]
//!   is called (embedded sweeps about every minute by its clock); reads never
//!   filter by time. Every write of a key schedules an expiry at its `ts`
//!   plus the retention, and the earliest one due removes the key, even if
//!   it was written again with a later `ts` since. Expiries compare as
//!   embedded's big-endian keys do, as `u64`: a negative `now` is past every
//!   non-negative expiry, and a negative expiry is never reached by a
//!   non-negative `now`.
//! - Sessions never expire.
//! - An empty batch succeeds without reaching the store (it is not counted,
//!   cannot be failed, and succeeds even after close). After
//!   [`Store::close`] every other commit fails with
//!   [`StoreError::Unavailable`]; reads go on working.
//!
//! For fault injection and invariants it adds [`MemoryStore::fail_commits`],
//! [`MemoryStore::lose_replies`],
//! [`MemoryStore::commits`], [`MemoryStore::inbox`] and
//! [`MemoryStore::reopen`] (a new handle on the same data, as a restarted
//! node opens the embedded store's directory again).

use crate::keys::{dedup_key, event_key};
use crate::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// How long dedup records are kept unless told otherwise (embedded's default).
pub const DEFAULT_DEDUP_RETENTION_MS: i64 = 8 * 24 * 3_600_000;

/// What the dedup keyspace holds under a key.
#[derive(Debug, Clone)]
enum Seen {
    /// A send's answer.
    Send(DedupRecord),
    /// An ingested event's key.
    Event,
}

#[derive(Debug, Default)]
struct State {
    dedup_retention_ms: i64,
    inbox: BTreeMap<UserKey, BTreeMap<InboxSeq, StoredMessage>>,
    /// Dedup records and event keys under embedded's byte keys: they share
    /// one keyspace and one expiry sweep there, so they do here.
    dedup: BTreeMap<Vec<u8>, Seen>,
    /// One entry per write: (expiry as embedded orders it, dedup key).
    dedup_exp: BTreeSet<(u64, Vec<u8>)>,
    /// Each user's meta with the version that wrote it.
    meta: BTreeMap<UserKey, (UserMeta, u64)>,
    contacts: BTreeMap<UserKey, BTreeMap<String, Contact>>,
    identities: BTreeMap<UserKey, BTreeSet<String>>,
    policies: BTreeMap<UserKey, BTreeMap<String, CirclePolicy>>,
    receipts: BTreeMap<UserKey, BTreeMap<Arc<str>, PendingReceipt>>,
    /// Per kind (see [`kind_index`]): tenant → seq → record.
    logs: [BTreeMap<Arc<str>, BTreeMap<u64, Bytes>>; 2],
    /// The last log seq handed out.
    log_head: u64,
    rollups: BTreeMap<RollupKey, u64>,
    sessions: BTreeMap<UserKey, (SessionRecord, u64)>,
    claims: BTreeMap<u32, u64>,
    /// API key hash → tenant.
    api_keys: BTreeMap<String, String>,
    /// Barred tenant → bar id.
    bars: BTreeMap<Arc<str>, u64>,
    /// (region, tenant) → shard → the bar id it confirmed.
    bar_confirmations: BTreeMap<(String, String), BTreeMap<u32, u64>>,
    /// Per shard: the last outbox position handed out, and the entries.
    outboxes: BTreeMap<OutboxId, (u64, BTreeMap<u64, OutboxEntry>)>,
    /// Commits that applied.
    commits: u64,
    /// Commits still to fail.
    fail_next: usize,
    /// Commits still to apply and then report failed.
    lose_next: usize,
}

fn kind_index(kind: LogKind) -> usize {
    match kind {
        LogKind::Graph => 0,
        LogKind::Events => 1,
    }
}

/// When a record written at `ts` expires, in the order embedded's sweep
/// compares them: its `dedup_exp` keys start with the big-endian bytes of
/// the `i64`, which order as the same bits read as a `u64`. (Embedded adds
/// with `+`, which wraps in release builds and panics its committer in
/// debug ones; this wraps.)
fn expiry(ts: Millis, retention_ms: i64) -> u64 {
    ts.wrapping_add(retention_ms) as u64
}

impl State {
    /// Embedded's `claim_seqs`: every seq the batch appends at must be free
    /// or hold the same message id, as the store was before the batch; and
    /// no session record may be older than the stored one.
    fn check_seqs(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        for op in &batch.ops {
            let WriteOp::Message { user, message } = op else { continue };
            let holder = self.inbox.get(user).and_then(|inbox| inbox.get(&message.seq));
            if holder.is_some_and(|held| held.msg_id != message.msg_id) {
                return Err(StoreError::Conflict(format!("{}/{} seq {}", user.tenant, user.user, message.seq).into()));
            }
        }
        // A session record older than the stored one is an earlier owner's
        // late write: the whole batch is refused (ADR 0021).
        for op in &batch.ops {
            let (user, what, newer) = match op {
                WriteOp::Session { user, version, .. } => {
                    (user, "session record", self.sessions.get(user).is_some_and(|(_, held)| held > version))
                }
                WriteOp::Meta { user, version, .. } => {
                    (user, "meta", self.meta.get(user).is_some_and(|(_, held)| held > version))
                }
                _ => continue,
            };
            if newer {
                return Err(StoreError::Conflict(
                    format!("{}/{} {what} is newer (an earlier owner writes late)", user.tenant, user.user).into(),
                ));
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: WriteOp) {
        match op {
            WriteOp::Message { user, message } => {
                self.inbox.entry(user).or_default().insert(message.seq, message);
            }
            WriteOp::Dedup { key, record } => {
                let k = dedup_key(&key);
                self.dedup_exp.insert((expiry(record.ts, self.dedup_retention_ms), k.clone()));
                self.dedup.insert(k, Seen::Send(record));
            }
            WriteOp::Meta { user, meta, version } => {
                // (Checked in `check_seqs`: no older version gets here.)
                self.meta.insert(user, (meta, version));
            }
            WriteOp::Contact { owner, contact, record } => {
                self.contacts.entry(owner).or_default().insert(contact, record);
            }
            WriteOp::ContactRemoved { owner, contact } => {
                if let Some(contacts) = self.contacts.get_mut(&owner) {
                    contacts.remove(&contact);
                }
            }
            WriteOp::Identity { user, channel } => {
                self.identities.entry(user).or_default().insert(channel);
            }
            WriteOp::Policy { owner, circle, policy } => {
                self.policies.entry(owner).or_default().insert(circle, policy);
            }
            WriteOp::Receipt { user, receipt } => {
                self.receipts.entry(user).or_default().insert(receipt.msg_id.clone(), receipt);
            }
            WriteOp::ReceiptsDelivered { user, msg_ids } => {
                if let Some(receipts) = self.receipts.get_mut(&user) {
                    for id in msg_ids {
                        receipts.remove(&id);
                    }
                }
            }
            WriteOp::Log { kind, tenant, record } => {
                self.log_head += 1;
                self.logs[kind_index(kind)].entry(tenant).or_default().insert(self.log_head, record);
            }
            WriteOp::EventSeen { key, ts } => {
                let k = event_key(&key);
                self.dedup_exp.insert((expiry(ts, self.dedup_retention_ms), k.clone()));
                self.dedup.insert(k, Seen::Event);
            }
            WriteOp::RollupAdd { key, by } => {
                let n = self.rollups.entry(key).or_insert(0);
                *n = n.wrapping_add(by);
            }
            WriteOp::Session { user, record, version } => {
                // (Checked in `check_seqs`: no older version gets here.)
                self.sessions.insert(user, (record, version));
            }
        }
    }
}

/// The in-memory store. Share it behind an `Arc`; [`MemoryStore::reopen`]
/// gives another handle on the same data.
#[derive(Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    closed: AtomicBool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_DEDUP_RETENTION_MS)
    }
}

impl MemoryStore {
    /// An empty store whose dedup records and event keys expire
    /// `dedup_retention_ms` after their own `ts`, once [`MemoryStore::sweep`]
    /// is called.
    pub fn new(dedup_retention_ms: i64) -> Self {
        let state = State { dedup_retention_ms, ..State::default() };
        Self { state: Arc::new(Mutex::new(state)), closed: AtomicBool::new(false) }
    }

    /// A new, open handle on the same data (what a restarted node gets by
    /// opening the embedded store's directory again): everything committed
    /// is there, log seqs go on, and failures still to inject stay pending.
    pub fn reopen(&self) -> Self {
        Self { state: self.state.clone(), closed: AtomicBool::new(false) }
    }

    /// No operation panics while holding the lock, but a caller's panic
    /// elsewhere must not turn every later call into one.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes the dedup records and event keys whose expiry is before
    /// `now_ms`, as embedded's sweep does (all of them at once, where
    /// embedded goes in steps of 2,000). Returns how many expiries it
    /// passed, which is embedded's count too: a key written twice counts twice.
    pub fn sweep(&self, now_ms: Millis) -> usize {
        let mut s = self.state();
        let due_from = (now_ms as u64, Vec::new());
        let later = s.dedup_exp.split_off(&due_from);
        let due = std::mem::replace(&mut s.dedup_exp, later);
        for (_, key) in &due {
            s.dedup.remove(key);
        }
        due.len()
    }

    /// Makes the next `n` commits of a non-empty batch fail with
    /// [`StoreError::Unavailable`] and apply nothing (replacing any count
    /// still pending; 0 cancels).
    pub fn fail_commits(&self, n: usize) {
        self.state().fail_next = n;
    }

    /// Makes the next `n` commits of a non-empty batch apply and then
    /// report [`StoreError::Unavailable`], as a Redis commit that ran but
    /// whose reply was lost (a timeout) does (replacing any count still
    /// pending; 0 cancels). Checked after [`MemoryStore::fail_commits`].
    pub fn lose_replies(&self, n: usize) {
        self.state().lose_next = n;
    }

    /// How many commits applied (not empty batches, nor failed commits).
    pub fn commits(&self) -> u64 {
        self.state().commits
    }

    /// Everything in `user`'s inbox, in seq order.
    pub fn inbox(&self, user: &UserKey) -> Vec<StoredMessage> {
        self.state().inbox.get(user).map(|inbox| inbox.values().cloned().collect()).unwrap_or_default()
    }

    fn commit_now(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("store is closed".into()));
        }
        let mut s = self.state();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(StoreError::Unavailable("injected commit failure".into()));
        }
        s.check_seqs(&batch)?;
        let logs = batch.ops.iter().any(|op| matches!(op, WriteOp::Log { .. }));
        if let Some(target) = batch.outbox.as_ref().filter(|_| logs) {
            let held = s.outboxes.get(&target.id).map_or(0, |(_, entries)| entries.len() as u64);
            if held >= target.max {
                return Err(StoreError::Unavailable(format!("outbox of shard {} is full", target.id.shard).into()));
            }
        }
        for op in batch.ops {
            if let (Some(target), WriteOp::Log { kind, tenant, record }) = (&batch.outbox, &op) {
                let seq = s.log_head + 1;
                let (head, entries) = s.outboxes.entry(target.id.clone()).or_default();
                *head += 1;
                let entry =
                    OutboxEntry { pos: *head, kind: *kind, tenant: tenant.clone(), seq, record: record.clone() };
                entries.insert(*head, entry);
            }
            s.apply(op);
        }
        s.commits += 1;
        if s.lose_next > 0 {
            s.lose_next -= 1;
            return Err(StoreError::Unavailable("injected lost reply (the commit applied)".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn claim_shard(&self, shard: u32) -> Result<u64, StoreError> {
        let mut s = self.state();
        let epoch = s.claims.entry(shard).or_insert(0);
        *epoch += 1;
        Ok(*epoch)
    }

    fn fences_session_records(&self) -> bool {
        true
    }

    async fn load_user(&self, user: &UserKey) -> Result<UserRecord, StoreError> {
        let s = self.state();
        Ok(UserRecord {
            head: s.inbox.get(user).and_then(|inbox| inbox.keys().next_back().copied()).unwrap_or(0),
            meta: s.meta.get(user).map(|(m, _)| m.clone()).unwrap_or_default(),
            contacts: s.contacts.get(user).cloned().unwrap_or_default(),
            identities: s.identities.get(user).map(|ids| ids.iter().cloned().collect()).unwrap_or_default(),
            policies: s.policies.get(user).cloned().unwrap_or_default(),
        })
    }

    async fn dedup(&self, key: &DedupKey) -> Result<Option<DedupRecord>, StoreError> {
        match self.state().dedup.get(&dedup_key(key)) {
            Some(Seen::Send(record)) => Ok(Some(record.clone())),
            // Embedded would fail to decode an event key's empty value; no
            // dedup key can equal an event key, so this is never reached.
            Some(Seen::Event) => Err(StoreError::Corrupt("dedup")),
            None => Ok(None),
        }
    }

    async fn read_inbox(
        &self,
        user: &UserKey,
        after: InboxSeq,
        limit: usize,
        max_bytes: usize,
    ) -> Result<InboxPage, StoreError> {
        let s = self.state();
        let rows = s
            .inbox
            .get(user)
            .into_iter()
            .flat_map(|inbox| inbox.range(after.saturating_add(1)..=u64::MAX))
            .map(|(_, m)| Ok(m.clone()));
        InboxPage::fill(rows, limit, max_bytes)
    }

    async fn read_range(
        &self,
        user: &UserKey,
        from: InboxSeq,
        to: InboxSeq,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let s = self.state();
        let Some(inbox) = s.inbox.get(user) else { return Ok(Vec::new()) };
        Ok(inbox.range(from + 1..=to).take(limit).map(|(_, m)| m.clone()).collect())
    }

    async fn pending_receipts(&self, user: &UserKey, limit: usize) -> Result<Vec<PendingReceipt>, StoreError> {
        let s = self.state();
        Ok(s.receipts.get(user).map(|r| r.values().take(limit).cloned().collect()).unwrap_or_default())
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.commit_now(batch)
    }

    /// Later commits fail with `Unavailable`, as on embedded; reads go on.
    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    async fn session(&self, user: &UserKey) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.state().sessions.get(user).map(|(r, _)| r.clone()))
    }

    async fn event_seen(&self, key: &EventKey) -> Result<bool, StoreError> {
        Ok(self.state().dedup.contains_key(&event_key(key)))
    }

    async fn read_log(
        &self,
        kind: LogKind,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let s = self.state();
        let Some(log) = s.logs[kind_index(kind)].get(tenant) else { return Ok(Vec::new()) };
        Ok(log
            .range(after.saturating_add(1)..=u64::MAX)
            .take(limit)
            .map(|(seq, record)| LogEntry { seq: *seq, record: record.clone() })
            .collect())
    }

    fn keeps_outbox(&self) -> bool {
        true
    }

    fn keeps_api_keys(&self) -> bool {
        true
    }

    async fn delete_tenant(&self, tenant: &str) -> Result<u64, StoreError> {
        let mut s = self.state();
        let s = &mut *s;
        let mut gone = 0usize;
        let mine = |u: &UserKey| &*u.tenant == tenant;
        macro_rules! by_user {
            ($($map:ident),*) => {$(
                let n = s.$map.len();
                s.$map.retain(|u, _| !mine(u));
                gone += n - s.$map.len();
            )*};
        }
        by_user!(inbox, meta, contacts, identities, policies, receipts, sessions);
        // Dedup records and event keys, by embedded's byte keys.
        let (sends, events) =
            (crate::keys::user_prefix_of_tenant(tenant), [&[1u8][..], tenant.as_bytes(), &[0u8][..]].concat());
        let ours = |k: &[u8]| k.starts_with(&sends) || k.starts_with(&events);
        let n = s.dedup.len();
        s.dedup.retain(|k, _| !ours(k));
        gone += n - s.dedup.len();
        s.dedup_exp.retain(|(_, k)| !ours(k));
        for log in s.logs.iter_mut() {
            if log.remove(tenant).is_some() {
                gone += 1;
            }
        }
        let n = s.rollups.len();
        s.rollups.retain(|k, _| &*k.tenant != tenant);
        gone += n - s.rollups.len();
        let n = s.api_keys.len();
        s.api_keys.retain(|_, t| t != tenant);
        gone += n - s.api_keys.len();
        for (_, entries) in s.outboxes.values_mut() {
            let n = entries.len();
            entries.retain(|_, e| &*e.tenant != tenant);
            gone += n - entries.len();
        }
        Ok(gone as u64)
    }

    async fn retained_tenants(&self) -> Result<Vec<String>, StoreError> {
        let s = self.state();
        let mut out: BTreeSet<String> = s.logs.iter().flat_map(|l| l.keys().map(|t| t.to_string())).collect();
        out.extend(s.rollups.keys().map(|k| k.tenant.to_string()));
        Ok(out.into_iter().collect())
    }

    async fn trim_log(&self, kind: LogKind, tenant: &str, upto: u64) -> Result<(), StoreError> {
        let mut s = self.state();
        let Some(log) = s.logs[kind_index(kind)].get_mut(tenant) else { return Ok(()) };
        *log = log.split_off(&upto.saturating_add(1));
        if log.is_empty() {
            s.logs[kind_index(kind)].remove(tenant);
        }
        Ok(())
    }

    async fn trim_rollups(&self, tenant: &str, before_ms: i64) -> Result<u64, StoreError> {
        let mut s = self.state();
        let before = s.rollups.len();
        s.rollups.retain(|k, _| &*k.tenant != tenant || k.hour_ms >= before_ms);
        Ok((before - s.rollups.len()) as u64)
    }

    fn keeps_bars(&self) -> bool {
        true
    }

    async fn bar_tenant(&self, tenant: &str, id: u64) -> Result<u64, StoreError> {
        Ok(*self.state().bars.entry(tenant.into()).or_insert(id))
    }

    async fn lift_bar(&self, tenant: &str) -> Result<bool, StoreError> {
        Ok(self.state().bars.remove(tenant).is_some())
    }

    async fn barred_tenants(&self) -> Result<Vec<Bar>, StoreError> {
        Ok(self.state().bars.iter().map(|(t, id)| Bar { tenant: t.clone(), id: *id }).collect())
    }

    async fn confirm_bar(&self, region: &str, bar: &Bar, shard: u32) -> Result<(), StoreError> {
        let mut s = self.state();
        s.bar_confirmations.entry((region.to_owned(), bar.tenant.to_string())).or_default().insert(shard, bar.id);
        Ok(())
    }

    async fn bar_confirmations(&self, region: &str, tenant: &str, id: u64) -> Result<Vec<u32>, StoreError> {
        let s = self.state();
        let Some(shards) = s.bar_confirmations.get(&(region.to_owned(), tenant.to_owned())) else {
            return Ok(Vec::new());
        };
        Ok(shards.iter().filter(|(_, b)| **b == id).map(|(shard, _)| *shard).collect())
    }

    async fn put_api_key(&self, hash: &str, tenant: &str) -> Result<(), StoreError> {
        self.state().api_keys.insert(hash.to_owned(), tenant.to_owned());
        Ok(())
    }

    async fn api_key_tenant(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state().api_keys.get(hash).cloned())
    }

    async fn revoke_api_key(&self, tenant: &str, prefix: &str) -> Result<bool, StoreError> {
        let mut s = self.state();
        let found = s.api_keys.iter().find(|(h, t)| h.starts_with(prefix) && *t == tenant).map(|(h, _)| h.clone());
        Ok(found.is_some_and(|h| s.api_keys.remove(&h).is_some()))
    }

    async fn read_outbox(&self, id: &OutboxId, after: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let s = self.state();
        let Some((_, entries)) = s.outboxes.get(id) else { return Ok(Vec::new()) };
        Ok(entries.range(after.saturating_add(1)..).take(limit).map(|(_, e)| e.clone()).collect())
    }

    async fn raise_outbox_position(&self, id: &OutboxId, at_least: u64) -> Result<bool, StoreError> {
        let mut s = self.state();
        let (head, _) = s.outboxes.entry(id.clone()).or_default();
        let raised = *head < at_least;
        *head = (*head).max(at_least);
        Ok(raised)
    }

    async fn trim_outbox(&self, id: &OutboxId, upto: u64) -> Result<u64, StoreError> {
        let mut s = self.state();
        let Some((_, entries)) = s.outboxes.get_mut(id) else { return Ok(0) };
        let kept = entries.split_off(&upto.saturating_add(1));
        let gone = entries.len() as u64;
        *entries = kept;
        Ok(gone)
    }

    async fn rollups(
        &self,
        tenant: &str,
        event_type: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(RollupKey, u64)>, StoreError> {
        let s = self.state();
        // Ordered by RollupKey, as embedded sorts its answer.
        Ok(s.rollups
            .iter()
            .filter(|(k, _)| &*k.tenant == tenant && event_type.is_none_or(|t| &*k.event_type == t))
            .filter(|(k, _)| k.hour_ms >= from_ms && k.hour_ms < to_ms)
            .map(|(k, n)| (k.clone(), *n))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Runs a store future, which must be ready on its first poll.
    fn now<T>(f: impl std::future::Future<Output = T>) -> T {
        f.now_or_never().expect("a MemoryStore future waited")
    }

    fn msg(seq: InboxSeq, id: &str) -> StoredMessage {
        StoredMessage { seq, msg_id: id.into(), from: "alice".into(), body: Bytes::from_static(b"hi"), ts: 7 }
    }

    /// A batch touching most kinds of state, the message at `seq`.
    fn busy_batch(user: &UserKey, seq: InboxSeq, id: &str) -> WriteBatch {
        let mut b = WriteBatch::default();
        b.push(WriteOp::Message { user: user.clone(), message: msg(seq, id) });
        b.push(WriteOp::Dedup {
            key: DedupKey { sender: user.peer("alice"), client_id: format!("c-{id}").into() },
            record: DedupRecord { msg_id: id.into(), ts: 7, to: user.user.clone(), seq },
        });
        b.push(WriteOp::Meta { user: user.clone(), meta: UserMeta { acked: seq, ..UserMeta::default() }, version: 0 });
        b.push(WriteOp::Contact { owner: user.clone(), contact: "carol".into(), record: Contact::default() });
        b.push(WriteOp::Log { kind: LogKind::Graph, tenant: user.tenant.clone(), record: Bytes::from("g") });
        b.push(WriteOp::EventSeen {
            key: EventKey { tenant: user.tenant.clone(), stream: "s".into(), key: id.into() },
            ts: 7,
        });
        b.push(WriteOp::RollupAdd {
            key: RollupKey { tenant: user.tenant.clone(), event_type: "e".into(), project: "p".into(), hour_ms: 0 },
            by: 1,
        });
        b.push(WriteOp::Receipt {
            user: user.clone(),
            receipt: PendingReceipt { msg_id: id.into(), by: "alice".into(), state: ReceiptState::Delivered },
        });
        b
    }

    /// Everything a read can see of `user`'s tenant.
    fn everything(store: &MemoryStore, user: &UserKey) -> String {
        let t = &*user.tenant;
        let dedup_keys: Vec<_> = store.state().dedup.keys().cloned().collect();
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?}",
            now(store.load_user(user)),
            store.inbox(user),
            now(store.pending_receipts(user, 100)),
            now(store.read_log(LogKind::Graph, t, 0, 100)),
            now(store.rollups(t, None, i64::MIN, i64::MAX)),
            dedup_keys,
        )
    }

    #[test]
    fn failed_commits_apply_nothing() {
        let store = MemoryStore::default();
        let bob = UserKey::new("t", "bob");
        now(store.commit(busy_batch(&bob, 1, "m1"))).unwrap();
        let before = everything(&store, &bob);
        store.fail_commits(2);
        for _ in 0..2 {
            match now(store.commit(busy_batch(&bob, 2, "m2"))) {
                Err(StoreError::Unavailable(_)) => {}
                other => panic!("an injected failure answers Unavailable, got {other:?}"),
            }
            assert_eq!(everything(&store, &bob), before, "a failed commit applies nothing");
        }
        assert_eq!(store.commits(), 1);
        now(store.commit(WriteBatch::default())).expect("an empty batch never reaches the store");
        now(store.commit(busy_batch(&bob, 2, "m2"))).expect("only the next n commits fail");
        assert_eq!(store.commits(), 2);
        let log = now(store.read_log(LogKind::Graph, "t", 0, 100)).unwrap();
        assert_eq!(log.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2], "failed commits take no log seq");
        store.fail_commits(3);
        store.fail_commits(0);
        now(store.commit(busy_batch(&bob, 3, "m3"))).expect("fail_commits(0) cancels");
    }

    #[test]
    fn lost_replies_apply_and_answer_unavailable() {
        let store = MemoryStore::default();
        let bob = UserKey::new("t", "bob");
        store.lose_replies(1);
        match now(store.commit(busy_batch(&bob, 1, "m1"))) {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("a lost reply answers Unavailable, got {other:?}"),
        }
        assert_eq!(store.inbox(&bob).len(), 1, "the commit whose reply was lost applied");
        assert_eq!(store.commits(), 1);
        now(store.commit(busy_batch(&bob, 2, "m2"))).expect("only the next n replies are lost");
        assert_eq!(store.inbox(&bob).len(), 2);
    }

    #[test]
    fn a_batch_with_a_taken_seq_applies_nothing() {
        let store = MemoryStore::default();
        let bob = UserKey::new("t", "bob");
        now(store.commit(busy_batch(&bob, 1, "m1"))).unwrap();
        now(store.commit(busy_batch(&bob, 1, "m1"))).expect("a replay of the same message succeeds");
        let before = everything(&store, &bob);
        let mut clash = busy_batch(&bob, 2, "m2");
        clash.push(WriteOp::Message { user: bob.clone(), message: msg(1, "other-owner") });
        clash.push(WriteOp::Log { kind: LogKind::Graph, tenant: "t".into(), record: Bytes::from("late") });
        match now(store.commit(clash)) {
            Err(StoreError::Conflict(what)) => assert_eq!(&*what, "t/bob seq 1", "embedded's wording"),
            other => panic!("an append at a taken seq fails with Conflict, got {other:?}"),
        }
        assert_eq!(everything(&store, &bob), before, "a conflicting batch applies nothing");
        assert_eq!(store.commits(), 2);
        now(store.commit(busy_batch(&bob, 2, "m2"))).unwrap();
        let log = now(store.read_log(LogKind::Graph, "t", 0, 100)).unwrap();
        assert_eq!(log.last().map(|l| l.seq), Some(3), "the conflicting batch took no log seq");
    }

    #[test]
    fn inbox_lists_everything_in_seq_order() {
        let store = MemoryStore::default();
        let bob = UserKey::new("t", "bob");
        assert!(store.inbox(&bob).is_empty());
        let mut b = WriteBatch::default();
        for seq in [3, 1, 40, 2] {
            b.push(WriteOp::Message { user: bob.clone(), message: msg(seq, &format!("m{seq}")) });
        }
        b.push(WriteOp::Message { user: bob.peer("eve"), message: msg(5, "e5") });
        b.push(WriteOp::Message { user: UserKey::new("u", "bob"), message: msg(6, "u6") });
        now(store.commit(b)).unwrap();
        let seqs: Vec<_> = store.inbox(&bob).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 40], "all of one user's messages, in seq order, gaps and all");
        assert_eq!(store.inbox(&bob)[0], msg(1, "m1"));
    }

    #[test]
    fn dedup_expires_by_the_records_own_ts_when_swept() {
        let store = MemoryStore::new(100);
        let key = |id: &str| DedupKey { sender: UserKey::new("t", "alice"), client_id: id.into() };
        let record = |ts| DedupRecord { msg_id: "m".into(), ts, to: "bob".into(), seq: 1 };
        let event = EventKey { tenant: "t".into(), stream: "s".into(), key: "k".into() };
        let mut b = WriteBatch::default();
        b.push(WriteOp::Dedup { key: key("old"), record: record(10) });
        b.push(WriteOp::Dedup { key: key("new"), record: record(50) });
        b.push(WriteOp::EventSeen { key: event.clone(), ts: 10 });
        now(store.commit(b)).unwrap();
        assert_eq!(store.sweep(110), 0, "an expiry is due strictly after ts + retention");
        assert!(now(store.dedup(&key("old"))).unwrap().is_some(), "reads never judge time themselves");
        assert_eq!(store.sweep(111), 2);
        assert!(now(store.dedup(&key("old"))).unwrap().is_none());
        assert!(!now(store.event_seen(&event)).unwrap(), "event keys expire with dedup records");
        assert!(now(store.dedup(&key("new"))).unwrap().is_some());
        // As on embedded, rewriting a key with a later ts does not postpone
        // the expiry its first write scheduled.
        let mut b = WriteBatch::default();
        b.push(WriteOp::Dedup { key: key("new"), record: record(500) });
        now(store.commit(b)).unwrap();
        assert_eq!(store.sweep(151), 1);
        assert!(now(store.dedup(&key("new"))).unwrap().is_none(), "the first write's expiry removes it");
    }

    #[test]
    fn close_refuses_commits_and_reopen_goes_on() {
        let store = MemoryStore::default();
        let bob = UserKey::new("t", "bob");
        now(store.commit(busy_batch(&bob, 1, "m1"))).unwrap();
        now(store.close());
        match now(store.commit(busy_batch(&bob, 2, "m2"))) {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("a closed store refuses commits, got {other:?}"),
        }
        assert_eq!(now(store.load_user(&bob)).unwrap().head, 1, "reads go on after close");
        let again = store.reopen();
        now(again.commit(busy_batch(&bob, 2, "m2"))).unwrap();
        assert_eq!(store.inbox(&bob).len(), 2, "both handles see the same data");
        let log = now(again.read_log(LogKind::Graph, "t", 0, 100)).unwrap();
        assert_eq!(log.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2], "log seqs go on");
    }

    /// Runs the same random steps on an embedded store and a memory store
    /// and compares every commit's answer and, after each step, every read
    /// over the small universe the steps write into.
    mod matches_embedded {
        use super::*;
        use crate::embedded::{EmbeddedConfig, EmbeddedStore};
        use futures::executor::block_on;
        use proptest::prelude::*;

        const TENANTS: [&str; 2] = ["a", "b"];
        const USERS: [&str; 2] = ["u", "v"];
        const SEQS: [u64; 5] = [0, 1, 2, 3, u64::MAX];
        const RETENTION: i64 = 10;

        #[derive(Debug, Clone)]
        enum Step {
            Commit(Vec<WriteOp>),
            Sweep(i64),
        }

        fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> + Clone {
            proptest::sample::select(items)
        }

        /// A narrow universe (one user, two seqs) makes steps collide:
        /// appends at one seq, keys written twice, puts and removes of one
        /// contact or receipt in one batch.
        fn user(narrow: bool) -> impl Strategy<Value = UserKey> + Clone {
            let (tenants, users): (&'static [&'static str], &'static [&'static str]) =
                if narrow { (&TENANTS[..1], &USERS[..1]) } else { (&TENANTS, &USERS) };
            (pick(tenants), pick(users)).prop_map(|(t, u)| UserKey::new(t, u))
        }

        fn tenant(narrow: bool) -> impl Strategy<Value = Arc<str>> + Clone {
            pick(if narrow { &TENANTS[..1] } else { &TENANTS[..] }).prop_map(Arc::from)
        }

        fn one_of(narrow: bool, items: &'static [&'static str]) -> impl Strategy<Value = &'static str> + Clone {
            pick(if narrow { &items[..1] } else { items })
        }

        fn seq(narrow: bool) -> impl Strategy<Value = u64> + Clone {
            pick(if narrow { &SEQS[1..3] } else { &SEQS[..] })
        }

        fn ts() -> impl Strategy<Value = i64> + Clone {
            pick(&[-30i64, 0, 5, 20])
        }

        fn op(narrow: bool) -> impl Strategy<Value = WriteOp> {
            prop_oneof![
                4 => (user(narrow), seq(narrow), pick(&["m1", "m2", "m3"]), pick(&["", "ab", "abcdef"]), ts()).prop_map(
                    |(user, seq, id, body, ts)| WriteOp::Message {
                        user,
                        message: StoredMessage {
                            seq,
                            msg_id: id.into(),
                            from: "x".into(),
                            body: Bytes::from_static(body.as_bytes()),
                            ts,
                        },
                    }
                ),
                3 => (user(narrow), one_of(narrow, &["c1", "c2"]), pick(&["m1", "m2"]), ts(), seq(narrow)).prop_map(
                    |(sender, client_id, id, ts, seq)| WriteOp::Dedup {
                        key: DedupKey { sender, client_id: client_id.into() },
                        record: DedupRecord { msg_id: id.into(), ts, to: "u".into(), seq },
                    }
                ),
                1 => (user(narrow), 0..3u64, 0..3u64, proptest::option::of(ts()), proptest::option::of(ts()), proptest::option::of(ts())).prop_map(
                    |(user, acked, read, invisible_since, last_seen, status_at)| WriteOp::Meta {
                        user,
                        meta: UserMeta { acked, read, invisible_since, last_seen, status_at },
                        version: 0,
                    }
                ),
                1 => (user(narrow), name(&["c1", "c2"]), name(&["f", "g"]), proptest::collection::vec(name(&["h1", "h2"]), 0..3))
                    .prop_map(|(owner, contact, circle, channels)| WriteOp::Contact {
                        owner,
                        contact,
                        record: Contact { circle, channels },
                    }),
                1 => (user(narrow), name(&["c1", "c2"])).prop_map(|(owner, contact)| WriteOp::ContactRemoved { owner, contact }),
                1 => (user(narrow), name(&["h1", "h2", ""])).prop_map(|(user, channel)| WriteOp::Identity { user, channel }),
                1 => (user(narrow), name(&["f", "g"]), any::<bool>(), any::<bool>()).prop_map(
                    |(owner, circle, presence, last_seen)| WriteOp::Policy {
                        owner,
                        circle,
                        policy: CirclePolicy { presence, last_seen },
                    }
                ),
                1 => (user(narrow), pick(&["m1", "m2"]), any::<bool>()).prop_map(|(user, id, read)| WriteOp::Receipt {
                    user,
                    receipt: PendingReceipt {
                        msg_id: id.into(),
                        by: "x".into(),
                        state: if read { ReceiptState::Read } else { ReceiptState::Delivered },
                    },
                }),
                1 => (user(narrow), proptest::collection::vec(pick(&["m1", "m2", "m3"]), 0..3)).prop_map(|(user, ids)| {
                    WriteOp::ReceiptsDelivered { user, msg_ids: ids.into_iter().map(Arc::from).collect() }
                }),
                2 => (any::<bool>(), tenant(narrow), pick(&["r0", "r1", ""])).prop_map(|(graph, tenant, record)| {
                    WriteOp::Log {
                        kind: if graph { LogKind::Graph } else { LogKind::Events },
                        tenant,
                        record: Bytes::from_static(record.as_bytes()),
                    }
                }),
                2 => (tenant(narrow), one_of(narrow, &["s1", "s2"]), one_of(narrow, &["k1", "k2"]), ts()).prop_map(|(tenant, stream, key, ts)| {
                    WriteOp::EventSeen { key: EventKey { tenant, stream: stream.into(), key: key.into() }, ts }
                }),
                1 => (user(narrow), proptest::collection::vec(name(&["e1", "e2"]), 0..3), pick(&["r1", "r2"]), any::<bool>())
                    .prop_map(|(user, nodes, region, online)| WriteOp::Session {
                        user,
                        record: SessionRecord {
                            sessions: nodes.len() as u32,
                            nodes,
                            region: region.into(),
                            last_seen: if online { None } else { Some(9) },
                        },
                        // Unversioned: the embedded store does not fence.
                        version: 0,
                    }),
                1 => (tenant(narrow), pick(&["x", "y"]), pick(&["p", "q"]), pick(&[-3_600_000i64, 0, 3_600_000]), 0..4u64)
                    .prop_map(|(tenant, event_type, project, hour_ms, by)| WriteOp::RollupAdd {
                        key: RollupKey { tenant, event_type: event_type.into(), project: project.into(), hour_ms },
                        by,
                    }),
            ]
        }

        fn name(names: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
            pick(names).prop_map(String::from)
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                3 => proptest::collection::vec(op(false), 0..6).prop_map(Step::Commit),
                3 => proptest::collection::vec(op(true), 1..6).prop_map(Step::Commit),
                2 => pick(&[-1i64, 0, 10, 15, 16, 31, 1_000]).prop_map(Step::Sweep),
            ]
        }

        /// Every read over the universe the steps write into, one line each.
        async fn observe(store: &dyn Store) -> Vec<String> {
            let mut out = Vec::new();
            for t in TENANTS {
                for u in USERS {
                    let user = UserKey::new(t, u);
                    out.push(format!("load_user {user:?}: {:?}", store.load_user(&user).await));
                    for after in [0, 1, 2, 3, u64::MAX] {
                        for limit in [0, 1, 2, 10] {
                            for max_bytes in [0, 2, 3, usize::MAX] {
                                let page = store.read_inbox(&user, after, limit, max_bytes).await;
                                out.push(format!("read_inbox {user:?} {after} {limit} {max_bytes}: {page:?}"));
                            }
                        }
                    }
                    for (from, to) in [(0, 0), (0, 2), (1, 3), (0, u64::MAX), (3, 1), (2, u64::MAX)] {
                        for limit in [0, 1, 10] {
                            let range = store.read_range(&user, from, to, limit).await;
                            out.push(format!("read_range {user:?} {from} {to} {limit}: {range:?}"));
                        }
                    }
                    for limit in [0, 1, 10] {
                        out.push(format!(
                            "receipts {user:?} {limit}: {:?}",
                            store.pending_receipts(&user, limit).await
                        ));
                    }
                    out.push(format!("session {user:?}: {:?}", store.session(&user).await));
                    for client_id in ["c1", "c2"] {
                        let key = DedupKey { sender: user.clone(), client_id: client_id.into() };
                        out.push(format!("dedup {key:?}: {:?}", store.dedup(&key).await));
                    }
                }
                for stream in ["s1", "s2"] {
                    for k in ["k1", "k2"] {
                        let key = EventKey { tenant: t.into(), stream: stream.into(), key: k.into() };
                        out.push(format!("event_seen {key:?}: {:?}", store.event_seen(&key).await));
                    }
                }
                for kind in [LogKind::Graph, LogKind::Events] {
                    for after in [0, 1, 3, u64::MAX] {
                        for limit in [0, 2, 100] {
                            let log = store.read_log(kind, t, after, limit).await;
                            out.push(format!("read_log {kind:?} {t} {after} {limit}: {log:?}"));
                        }
                    }
                }
                for event_type in [None, Some("x"), Some("y"), Some("")] {
                    for (from, to) in [(i64::MIN, i64::MAX), (0, i64::MAX), (i64::MIN, 0), (0, 3_600_000), (1, 0)] {
                        let rollups = store.rollups(t, event_type, from, to).await;
                        out.push(format!("rollups {t} {event_type:?} {from} {to}: {rollups:?}"));
                    }
                }
            }
            out
        }

        fn same(embedded: &[String], memory: &[String], after: &str) -> Result<(), TestCaseError> {
            prop_assert_eq!(embedded.len(), memory.len());
            for (e, m) in embedded.iter().zip(memory) {
                prop_assert_eq!(e, m, "after {}", after);
            }
            Ok(())
        }

        fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
            let dir = tempfile::tempdir().unwrap();
            let config = EmbeddedConfig {
                dedup_retention_ms: RETENTION,
                // Its own minutely sweep must not run by the system clock.
                clock: Arc::new(iris_clock::ManualClock::new(0)),
                ..EmbeddedConfig::new(dir.path())
            };
            let embedded = EmbeddedStore::open(config).unwrap();
            let memory = MemoryStore::new(RETENTION);
            let result = (|| -> Result<(), TestCaseError> {
                for (i, step) in steps.into_iter().enumerate() {
                    let what = format!("step {i}: {step:?}");
                    match step {
                        Step::Commit(ops) => {
                            let batch = WriteBatch { ops, outbox: None };
                            let e = block_on(embedded.commit(batch.clone()));
                            let m = now(memory.commit(batch));
                            prop_assert_eq!(format!("{e:?}"), format!("{m:?}"), "commit at {}", what);
                        }
                        Step::Sweep(at) => {
                            prop_assert_eq!(embedded.sweep_now(at), memory.sweep(at), "sweep at {}", what);
                        }
                    }
                    same(&block_on(observe(&embedded)), &now(observe(&memory)), &what)?;
                }
                Ok(())
            })();
            block_on(embedded.close());
            result
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
            #[test]
            fn on_random_batches(steps in proptest::collection::vec(step(), 1..12)) {
                run(steps)?;
            }
        }
    }
}
