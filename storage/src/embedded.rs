//! The embedded single-node store on fjall, with group commit.
//!
//! Reads go straight to fjall. Writes go through one committer thread: it
//! takes every batch that is waiting (up to `max_batch_ops` writes), applies
//! them as one atomic fjall batch, syncs the journal once
//! (`PersistMode::SyncData`) and only then answers every waiting caller. While
//! one sync runs, the next group gathers, so sends share fsyncs under load
//! with no added delay when idle.
//!
//! Dedup records expire by the clock in [`EmbeddedConfig`], the one the
//! shards stamp them by (ADR 0019); `Instant`s here only pace the sweep and
//! time commits for metrics.

use crate::keys::*;
use crate::*;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use iris_clock::SharedClock;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Directory of the database.
    pub path: PathBuf,
    /// Most writes applied under one fsync.
    pub max_batch_ops: usize,
    /// Most batches waiting for the committer; callers wait beyond it.
    pub queue_batches: usize,
    /// How long dedup records are kept.
    pub dedup_retention_ms: i64,
    /// What dedup records' expiry is judged by: the clock that stamps them.
    pub clock: SharedClock,
}

impl EmbeddedConfig {
    /// Defaults for a data directory, on the system clock.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            max_batch_ops: 8_192,
            queue_batches: 4_096,
            dedup_retention_ms: 8 * 24 * 3_600_000,
            clock: iris_clock::system(),
        }
    }
}

#[derive(Clone)]
struct Spaces {
    db: Database,
    inbox: Keyspace,
    dedup: Keyspace,
    dedup_exp: Keyspace,
    meta: Keyspace,
    contacts: Keyspace,
    identities: Keyspace,
    policies: Keyspace,
    receipts: Keyspace,
    logs: Keyspace,
    rollups: Keyspace,
    sessions: Keyspace,
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

enum Request {
    Commit(WriteBatch, Reply),
    /// Retention: run by the committer, so that no rollup
    /// read-modify-write interleaves with a trim of the same counter.
    Trim(Trim, oneshot::Sender<Result<u64, StoreError>>),
    Stop(oneshot::Sender<()>),
}

/// A retention trim.
enum Trim {
    Log(LogKind, String, u64),
    Rollups(String, i64),
    /// Everything of a tenant.
    Tenant(String),
}

/// Most removals in one fjall batch of a trim.
const TRIM_STEP: usize = 10_000;

fn run_trim(s: &Spaces, trim: Trim) -> Result<u64, StoreError> {
    let mut gone = 0u64;
    loop {
        let mut batch = s.db.batch();
        let mut n = 0;
        match &trim {
            Trim::Log(kind, tenant, upto) => {
                let range = log_key(*kind, tenant, 0)..=log_key(*kind, tenant, *upto);
                for g in s.logs.range(range).take(TRIM_STEP) {
                    batch.remove(&s.logs, g.key().map_err(backend)?.to_vec());
                    n += 1;
                }
            }
            Trim::Tenant(tenant) => {
                let users = crate::keys::user_prefix_of_tenant(tenant);
                let events = [&[1u8][..], tenant.as_bytes(), &[0u8][..]].concat();
                let by_user = [&s.inbox, &s.meta, &s.contacts, &s.identities, &s.policies, &s.receipts, &s.sessions];
                let mut spaces: Vec<(&Keyspace, Vec<u8>)> = by_user.into_iter().map(|k| (k, users.clone())).collect();
                spaces.push((&s.dedup, users.clone()));
                spaces.push((&s.dedup, events));
                spaces.push((&s.logs, log_prefix(LogKind::Graph, tenant)));
                spaces.push((&s.logs, log_prefix(LogKind::Events, tenant)));
                spaces.push((&s.rollups, rollup_prefix(tenant, None)));
                'spaces: for (space, prefix) in spaces {
                    for g in space.prefix(prefix) {
                        batch.remove(space, g.key().map_err(backend)?.to_vec());
                        n += 1;
                        if n >= TRIM_STEP {
                            break 'spaces;
                        }
                    }
                }
                // (Their `dedup_exp` entries stay until they expire: the
                // sweep then removes a dedup key that is already gone.)
            }
            Trim::Rollups(tenant, before) => {
                for g in s.rollups.prefix(rollup_prefix(tenant, None)) {
                    let k = g.key().map_err(backend)?;
                    let key = parse_rollup_key(tenant, &k).ok_or(StoreError::Corrupt("rollup key"))?;
                    if key.hour_ms < *before {
                        batch.remove(&s.rollups, k.to_vec());
                        n += 1;
                        if n >= TRIM_STEP {
                            break;
                        }
                    }
                }
            }
        }
        if n == 0 {
            return Ok(gone);
        }
        batch.commit().map_err(backend)?;
        gone += n as u64;
    }
}

/// The distinct tenants among keys `tenant NUL …` after `skip` leading
/// bytes, jumping past each tenant's keys.
fn tenants_in(space: &Keyspace, lead: &[u8]) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut from = lead.to_vec();
    loop {
        let Some(g) = space.range(from.clone()..).next() else { return Ok(out) };
        let k = g.key().map_err(backend)?;
        let Some(rest) = k.strip_prefix(lead) else { return Ok(out) };
        let end = rest.iter().position(|b| *b == 0).ok_or(StoreError::Corrupt("tenant key"))?;
        let tenant = std::str::from_utf8(&rest[..end]).map_err(|_| StoreError::Corrupt("tenant key"))?;
        out.push(tenant.to_owned());
        from = lead.to_vec();
        from.extend_from_slice(tenant.as_bytes());
        from.push(1);
    }
}

/// The fjall-backed store.
pub struct EmbeddedStore {
    /// Held while open: a second process (another node, or `iris tenant
    /// delete` beside a running node) gets a clear refusal instead of a
    /// second writer.
    _lock: std::fs::File,
    spaces: Spaces,
    failed: Arc<std::sync::atomic::AtomicBool>,
    tx: mpsc::Sender<Request>,
    committer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string().into())
}

impl EmbeddedStore {
    /// Opens (or creates) the store and starts its committer thread.
    pub fn open(config: EmbeddedConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.path).map_err(backend)?;
        let lock = std::fs::File::create(config.path.join("iris.lock")).map_err(backend)?;
        if let Err(e) = lock.try_lock() {
            return Err(StoreError::Unavailable(
                format!("{} is in use by another process (a running node?): {e}", config.path.display()).into(),
            ));
        }
        let db = Database::builder(&config.path).open().map_err(backend)?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default).map_err(backend);
        let spaces = Spaces {
            inbox: ks("inbox")?,
            dedup: ks("dedup")?,
            dedup_exp: ks("dedup_exp")?,
            meta: ks("meta")?,
            contacts: ks("contacts")?,
            identities: ks("identities")?,
            logs: ks("logs")?,
            rollups: ks("rollups")?,
            sessions: ks("sessions")?,
            policies: ks("policies")?,
            receipts: ks("receipts")?,
            db,
        };
        // Log seqs continue where they stopped; an unreadable head would
        // restart them and overwrite records, so it refuses to open.
        let log_head = match spaces.meta.get(LOG_HEAD_KEY).map_err(backend)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt("log head"))?),
            None => 0,
        };
        let (tx, rx) = mpsc::channel(config.queue_batches.max(1));
        let worker = spaces.clone();
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failed_flag = failed.clone();
        let handle = std::thread::Builder::new()
            .name("iris-committer".into())
            .spawn(move || committer(worker, rx, config, failed_flag, log_head))
            .map_err(backend)?;
        Ok(Self { _lock: lock, spaces, failed, tx, committer: std::sync::Mutex::new(Some(handle)) })
    }

    async fn trim(&self, trim: Trim) -> Result<u64, StoreError> {
        self.ask(|reply| Request::Trim(trim, reply)).await
    }

    /// Sends the committer a request and waits for its answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, done) = oneshot::channel();
        self.tx.send(request(reply)).await.map_err(|_| StoreError::Unavailable("store is closed".into()))?;
        done.await.map_err(|_| StoreError::Unavailable("committer stopped".into()))?
    }

    /// Finishes the queued writes, syncs, and stops the committer. Writes
    /// submitted afterwards fail with `Unavailable`.
    async fn shutdown(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Request::Stop(done_tx)).await.is_ok() {
            // The committer answers after its final sync.
            let _ = done_rx.await;
        }
        if let Ok(mut guard) = self.committer.lock() {
            if let Some(handle) = guard.take() {
                if handle.join().is_err() {
                    tracing::error!("committer thread panicked");
                }
            }
        }
    }
}

#[cfg(test)]
impl EmbeddedStore {
    /// Runs the dedup sweep the committer runs every minute, now, as of
    /// `now_ms` and with no step bound (for tests that compare backends).
    pub(crate) fn sweep_now(&self, now_ms: i64) -> usize {
        sweep_dedup(&self.spaces, now_ms, usize::MAX).expect("dedup sweep")
    }
}

/// What one commit group accumulates besides plain writes: log seqs to
/// hand out and rollup increments to fold into read-modify-writes (the
/// committer is the only writer, so these are race-free).
struct Group {
    next_log_seq: u64,
    rollups: HashMap<Vec<u8>, u64>,
}

fn apply(s: &Spaces, batch: &mut fjall::OwnedWriteBatch, g: &mut Group, op: WriteOp, retention_ms: i64) {
    match op {
        WriteOp::Message { user, message } => {
            batch.insert(&s.inbox, inbox_key(&user, message.seq), enc(&message));
        }
        WriteOp::Dedup { key, record } => {
            let k = dedup_key(&key);
            let mut exp = (record.ts + retention_ms).to_be_bytes().to_vec();
            exp.extend_from_slice(&k);
            batch.insert(&s.dedup_exp, exp, Vec::new());
            batch.insert(&s.dedup, k, enc(&record));
        }
        WriteOp::Meta { user, meta, .. } => batch.insert(&s.meta, user_key(&user), enc(&meta)),
        WriteOp::Contact { owner, contact, record } => {
            batch.insert(&s.contacts, child_key(&owner, &contact), enc(&record))
        }
        WriteOp::ContactRemoved { owner, contact } => batch.remove(&s.contacts, child_key(&owner, &contact)),
        WriteOp::Identity { user, channel } => batch.insert(&s.identities, child_key(&user, &channel), Vec::new()),
        WriteOp::Policy { owner, circle, policy } => {
            batch.insert(&s.policies, child_key(&owner, &circle), enc(&policy))
        }
        WriteOp::Receipt { user, receipt } => {
            batch.insert(&s.receipts, child_key(&user, &receipt.msg_id), enc(&receipt))
        }
        WriteOp::ReceiptsDelivered { user, msg_ids } => {
            for id in msg_ids {
                batch.remove(&s.receipts, child_key(&user, &id));
            }
        }
        WriteOp::Log { kind, tenant, record } => {
            g.next_log_seq += 1;
            batch.insert(&s.logs, log_key(kind, &tenant, g.next_log_seq), record.to_vec());
        }
        WriteOp::EventSeen { key, ts } => {
            let k = event_key(&key);
            let mut exp = (ts + retention_ms).to_be_bytes().to_vec();
            exp.extend_from_slice(&k);
            batch.insert(&s.dedup_exp, exp, Vec::new());
            batch.insert(&s.dedup, k, Vec::new());
        }
        WriteOp::RollupAdd { key, by } => *g.rollups.entry(rollup_key(&key)).or_default() += by,
        // One node owns every shard of an embedded store: nothing to fence.
        WriteOp::Session { user, record, version: _ } => batch.insert(&s.sessions, user_key(&user), enc(&record)),
    }
}

/// The highest inbox seq stored for each user the committer wrote to
/// lately (by [`user_prefix`]): a message at a seq above it is at a free
/// seq, known without reading the inbox. Never below the truth: it is read
/// from the inbox the first time, rises with every seq claimed (a claim
/// whose commit then fails leaves it higher than the truth, which costs a
/// read, never a wrong answer), and nothing but the committer writes the
/// inbox; trims only delete. Forgotten whole when a group starts with
/// [`HEADS_MAX`] users or more, never within a group: a head read from the
/// inbox within a group would miss the group's own claims, which are not
/// on disk yet.
#[derive(Default)]
struct Heads(HashMap<Vec<u8>, InboxSeq>);

/// Users whose inbox head the committer keeps (about 100 bytes each).
const HEADS_MAX: usize = 100_000;

impl Heads {
    /// The stored head of the user of `prefix`, read from the inbox when
    /// not known.
    fn get(&mut self, s: &Spaces, prefix: &[u8]) -> Result<InboxSeq, StoreError> {
        if let Some(h) = self.0.get(prefix) {
            return Ok(*h);
        }
        let head = match s.inbox.prefix(prefix).next_back() {
            Some(g) => seq_of_inbox_key(&g.key().map_err(backend)?).ok_or(StoreError::Corrupt("inbox key"))?,
            None => 0,
        };
        self.raise(prefix, head);
        Ok(head)
    }

    fn raise(&mut self, prefix: &[u8], seq: InboxSeq) {
        match self.0.get_mut(prefix) {
            Some(h) => *h = (*h).max(seq),
            None => {
                self.0.insert(prefix.to_vec(), seq);
            }
        }
    }

    /// Called as a group starts, when nothing claimed is waiting to be
    /// written: the bound is kept here (a group adds at most its own users).
    fn start_group(&mut self) {
        if self.0.len() >= HEADS_MAX {
            self.0.clear();
        }
    }
}

/// Checks that every seq `b` appends at is free, or holds the same message
/// (a replay), both on disk and among the commits already in this group,
/// and claims them for the group. The committer is the only writer, so the
/// check and the write cannot interleave with another batch. A seq above
/// the user's known head is free without a read (appends, nearly always).
fn claim_seqs(
    s: &Spaces,
    heads: &mut Heads,
    taken: &mut HashMap<Vec<u8>, Arc<str>>,
    b: &WriteBatch,
) -> Result<(), StoreError> {
    let mut mine = Vec::new();
    for op in &b.ops {
        let WriteOp::Message { user, message } = op else { continue };
        let key = inbox_key(user, message.seq);
        let prefix = &key[..key.len() - 8];
        let holder = match taken.get(&key) {
            Some(id) => Some(id.clone()),
            None if message.seq > heads.get(s, prefix)? => None,
            None => match s.inbox.get(&key).map_err(backend)? {
                Some(v) => Some(dec::<StoredMessage>("inbox", &v)?.msg_id),
                None => None,
            },
        };
        if holder.is_some_and(|id| id != message.msg_id) {
            return Err(StoreError::Conflict(format!("{}/{} seq {}", user.tenant, user.user, message.seq).into()));
        }
        // Raised even if a later op of this batch is refused: a head above
        // the truth costs a read, never a wrong answer.
        heads.raise(prefix, message.seq);
        mine.push((key, message.msg_id.clone()));
    }
    taken.extend(mine);
    Ok(())
}

/// Writes what the group accumulated: the log head and the rollup sums.
fn finish_group(
    s: &Spaces,
    batch: &mut fjall::OwnedWriteBatch,
    g: &mut Group,
    log_head: u64,
) -> Result<(), StoreError> {
    if g.next_log_seq != log_head {
        batch.insert(&s.meta, LOG_HEAD_KEY.to_vec(), g.next_log_seq.to_be_bytes().to_vec());
    }
    for (k, by) in g.rollups.drain() {
        let current = match s.rollups.get(&k).map_err(backend)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt("rollup"))?),
            None => 0,
        };
        batch.insert(&s.rollups, k, (current + by).to_be_bytes().to_vec());
    }
    Ok(())
}

/// Where the last assigned log seq is kept (a key no user key can equal:
/// user keys never contain control characters).
const LOG_HEAD_KEY: &[u8] = b"\x01log_head";

fn log_key(kind: LogKind, tenant: &str, seq: u64) -> Vec<u8> {
    let mut k = log_prefix(kind, tenant);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn log_prefix(kind: LogKind, tenant: &str) -> Vec<u8> {
    let mut k = vec![match kind {
        LogKind::Graph => b'g',
        LogKind::Events => b'e',
    }];
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k
}

fn rollup_prefix(tenant: &str, event_type: Option<&str>) -> Vec<u8> {
    let mut v = tenant.as_bytes().to_vec();
    v.push(0);
    if let Some(t) = event_type {
        v.extend_from_slice(t.as_bytes());
        v.push(0);
    }
    v
}

fn rollup_key(k: &RollupKey) -> Vec<u8> {
    let mut v = rollup_prefix(&k.tenant, Some(&k.event_type));
    v.extend_from_slice(k.project.as_bytes());
    v.push(0);
    v.extend_from_slice(&(k.hour_ms as u64).to_be_bytes());
    v
}

fn parse_rollup_key(tenant: &str, k: &[u8]) -> Option<RollupKey> {
    let rest = k.strip_prefix(tenant.as_bytes())?.strip_prefix(&[0u8][..])?;
    let type_end = rest.iter().position(|b| *b == 0)?;
    let event_type = std::str::from_utf8(&rest[..type_end]).ok()?;
    let rest = &rest[type_end + 1..];
    let (project, tail) = rest.split_at(rest.len().checked_sub(9)?);
    if tail[0] != 0 {
        return None;
    }
    let hour = u64::from_be_bytes(tail[1..].try_into().ok()?);
    Some(RollupKey {
        tenant: tenant.into(),
        event_type: event_type.into(),
        project: std::str::from_utf8(project).ok()?.into(),
        hour_ms: hour as i64,
    })
}

/// Deletes dedup records past their retention, at most `max` per call.
fn sweep_dedup(s: &Spaces, now: i64, max: usize) -> Result<usize, fjall::Error> {
    let mut batch = s.db.batch();
    let mut n = 0;
    for guard in s.dedup_exp.range(..now.to_be_bytes().to_vec()).take(max) {
        let key = guard.key()?;
        batch.remove(&s.dedup, key[8..].to_vec());
        batch.remove(&s.dedup_exp, key.to_vec());
        n += 1;
    }
    if n > 0 {
        batch.commit()?;
        metrics::counter!("iris_retention_trimmed_total", "what" => "dedup").increment(n as u64);
    }
    Ok(n)
}

const SWEEP_EVERY: Duration = Duration::from_secs(60);
const SWEEP_STEP: usize = 2_000;

fn committer(
    s: Spaces,
    mut rx: mpsc::Receiver<Request>,
    cfg: EmbeddedConfig,
    failed: Arc<std::sync::atomic::AtomicBool>,
    cfg_log_head: u64,
) {
    let mut last_sweep = Instant::now();
    let mut waiting: Vec<Reply> = Vec::new();
    let mut log_head = cfg_log_head;
    let mut heads = Heads::default();
    let mut stop: Option<oneshot::Sender<()>> = None;
    while stop.is_none() {
        let (first, reply) = match rx.blocking_recv() {
            Some(Request::Commit(b, r)) => (b, r),
            Some(Request::Trim(t, r)) => {
                let _ = r.send(run_trim(&s, t));
                continue;
            }
            Some(Request::Stop(done)) => {
                stop = Some(done);
                break;
            }
            None => break,
        };
        let started = Instant::now();
        // With a durability mode set, fjall syncs the journal before it makes
        // the batch visible: no reader ever sees a write that is not durable.
        let mut batch = s.db.batch().durability(Some(PersistMode::SyncData));
        let mut group = Group { next_log_seq: log_head, rollups: HashMap::new() };
        let mut taken = HashMap::new();
        heads.start_group();
        let mut ops = 0;
        let mut next = Some((first, reply));
        // A read that failed while checking seqs: the group fails with it.
        let mut unreadable: Option<StoreError> = None;
        while let Some((b, reply)) = next.take() {
            // After a failure every later commit fails too, so no later
            // inbox seq can land after a failed one (no gaps; the shards
            // rely on it: `Store::commits_fail_alone`).
            if failed.load(std::sync::atomic::Ordering::Acquire) {
                let _ = reply.send(Err(StoreError::Backend("an earlier commit failed; restart the node".into())));
            } else {
                match claim_seqs(&s, &mut heads, &mut taken, &b) {
                    // A seq another message holds: only this commit fails
                    // (that seq is not empty, so no gap), the group goes on.
                    Err(e @ StoreError::Conflict(_)) => {
                        let _ = reply.send(Err(e));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.clone()));
                        unreadable = Some(e);
                    }
                    Ok(()) => {
                        ops += b.ops.len();
                        for op in b.ops {
                            apply(&s, &mut batch, &mut group, op, cfg.dedup_retention_ms);
                        }
                        waiting.push(reply);
                    }
                }
            }
            if ops >= cfg.max_batch_ops {
                break;
            }
            match rx.try_recv() {
                Ok(Request::Commit(b, reply)) => next = Some((b, reply)),
                // Runs before this group's batch is written (its rollup
                // sums are read when it is), then the group ends.
                Ok(Request::Trim(t, r)) => {
                    let _ = r.send(run_trim(&s, t));
                    break;
                }
                Ok(Request::Stop(done)) => {
                    stop = Some(done);
                    break;
                }
                Err(_) => break,
            }
        }
        if unreadable.is_some() {
            failed.store(true, std::sync::atomic::Ordering::Release);
        }
        if waiting.is_empty() {
            continue;
        }
        let result = match unreadable {
            Some(e) => Err(e),
            None => finish_group(&s, &mut batch, &mut group, log_head).and_then(|()| batch.commit().map_err(backend)),
        };
        if result.is_ok() {
            log_head = group.next_log_seq;
        }
        metrics::histogram!("iris_fsync_batch_size").record(waiting.len() as f64);
        metrics::histogram!("iris_fsync_seconds").record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            failed.store(true, std::sync::atomic::Ordering::Release);
            tracing::error!(error = %e, "commit failed; callers get errors");
        }
        for reply in waiting.drain(..) {
            // A caller that went away no longer needs the answer.
            let _ = reply.send(result.clone());
        }
        // Expired dedup records go in bounded steps between commits; while a
        // step finds a full load, the next commit cycle takes another.
        if last_sweep.elapsed() >= SWEEP_EVERY {
            match sweep_dedup(&s, cfg.clock.now_ms(), SWEEP_STEP) {
                Ok(n) if n == SWEEP_STEP => tracing::debug!(removed = n, "expired dedup records; more to go"),
                Ok(n) => {
                    last_sweep = Instant::now();
                    if n > 0 {
                        tracing::debug!(removed = n, "expired dedup records");
                    }
                }
                Err(e) => {
                    last_sweep = Instant::now();
                    tracing::warn!(error = %e, "dedup sweep failed");
                }
            }
        }
    }
    rx.close();
    if let Err(e) = s.db.persist(PersistMode::SyncData) {
        tracing::error!(error = %e, "final sync failed");
    }
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn load_user(&self, user: &UserKey) -> Result<UserRecord, StoreError> {
        let s = &self.spaces;
        let prefix = user_prefix(user);
        let head = match s.inbox.prefix(&prefix).next_back() {
            Some(g) => seq_of_inbox_key(&g.key().map_err(backend)?).ok_or(StoreError::Corrupt("inbox key"))?,
            None => 0,
        };
        let meta = match s.meta.get(user_key(user)).map_err(backend)? {
            Some(v) => dec_meta(&v)?,
            None => UserMeta::default(),
        };
        let mut contacts = BTreeMap::new();
        for g in s.contacts.prefix(&prefix) {
            let (k, v) = g.into_inner().map_err(backend)?;
            let name = child_of_key(&prefix, &k).ok_or(StoreError::Corrupt("contact key"))?;
            contacts.insert(name.to_owned(), dec("contact", &v)?);
        }
        let mut identities = Vec::new();
        for g in s.identities.prefix(&prefix) {
            let k = g.key().map_err(backend)?;
            identities.push(child_of_key(&prefix, &k).ok_or(StoreError::Corrupt("identity key"))?.to_owned());
        }
        let mut policies = BTreeMap::new();
        for g in s.policies.prefix(&prefix) {
            let (k, v) = g.into_inner().map_err(backend)?;
            let name = child_of_key(&prefix, &k).ok_or(StoreError::Corrupt("policy key"))?;
            policies.insert(name.to_owned(), dec("policy", &v)?);
        }
        Ok(UserRecord { head, meta, contacts, identities, policies })
    }

    async fn dedup(&self, key: &DedupKey) -> Result<Option<DedupRecord>, StoreError> {
        match self.spaces.dedup.get(dedup_key(key)).map_err(backend)? {
            Some(v) => Ok(Some(dec("dedup", &v)?)),
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
        let start = inbox_key(user, after.saturating_add(1));
        let end = inbox_key(user, u64::MAX);
        let rows = self.spaces.inbox.range(start..=end).map(|g| dec("inbox", &g.value().map_err(backend)?));
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
        let mut out = Vec::new();
        for g in self.spaces.inbox.range(inbox_key(user, from + 1)..=inbox_key(user, to)).take(limit) {
            out.push(dec("inbox", &g.value().map_err(backend)?)?);
        }
        Ok(out)
    }

    async fn pending_receipts(&self, user: &UserKey, limit: usize) -> Result<Vec<PendingReceipt>, StoreError> {
        let mut out = Vec::new();
        for g in self.spaces.receipts.prefix(user_prefix(user)).take(limit) {
            out.push(dec("receipt", &g.value().map_err(backend)?)?);
        }
        Ok(out)
    }

    async fn session(&self, user: &UserKey) -> Result<Option<SessionRecord>, StoreError> {
        match self.spaces.sessions.get(user_key(user)).map_err(backend)? {
            Some(v) => Ok(Some(dec("session", &v)?)),
            None => Ok(None),
        }
    }

    async fn event_seen(&self, key: &EventKey) -> Result<bool, StoreError> {
        self.spaces.dedup.contains_key(event_key(key)).map_err(backend)
    }

    async fn read_log(
        &self,
        kind: LogKind,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let start = log_key(kind, tenant, after.saturating_add(1));
        let end = log_key(kind, tenant, u64::MAX);
        let mut out = Vec::new();
        for g in self.spaces.logs.range(start..=end).take(limit) {
            let (k, v) = g.into_inner().map_err(backend)?;
            let seq = seq_of_inbox_key(&k).ok_or(StoreError::Corrupt("log key"))?;
            out.push(LogEntry { seq, record: Bytes::copy_from_slice(&v) });
        }
        Ok(out)
    }

    async fn rollups(
        &self,
        tenant: &str,
        event_type: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(RollupKey, u64)>, StoreError> {
        let mut out = Vec::new();
        for g in self.spaces.rollups.prefix(rollup_prefix(tenant, event_type)) {
            let (k, v) = g.into_inner().map_err(backend)?;
            let key = parse_rollup_key(tenant, &k).ok_or(StoreError::Corrupt("rollup key"))?;
            if key.hour_ms >= from_ms && key.hour_ms < to_ms {
                let n = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt("rollup"))?);
                out.push((key, n));
            }
        }
        out.sort();
        Ok(out)
    }

    /// After a failed commit (a failed write or sync, or a read that failed
    /// while checking seqs) the committer fails every later one, so no
    /// later commit can succeed after a failure.
    fn commits_fail_alone(&self) -> bool {
        false
    }

    /// False once a write or sync has failed. fjall then refuses every later
    /// write (a failed fsync leaves the journal in doubt), so the node should
    /// stop and recover from the journal on restart.
    fn healthy(&self) -> bool {
        !self.failed.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn close(&self) {
        self.shutdown().await;
    }

    async fn delete_tenant(&self, tenant: &str) -> Result<u64, StoreError> {
        self.trim(Trim::Tenant(tenant.to_owned())).await
    }

    async fn retained_tenants(&self) -> Result<Vec<String>, StoreError> {
        let mut all: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for lead in [&b"g"[..], &b"e"[..]] {
            all.extend(tenants_in(&self.spaces.logs, lead)?);
        }
        all.extend(tenants_in(&self.spaces.rollups, b"")?);
        Ok(all.into_iter().collect())
    }

    async fn trim_log(&self, kind: LogKind, tenant: &str, upto: u64) -> Result<(), StoreError> {
        self.trim(Trim::Log(kind, tenant.to_owned(), upto)).await.map(|_| ())
    }

    async fn trim_rollups(&self, tenant: &str, before_ms: i64) -> Result<u64, StoreError> {
        self.trim(Trim::Rollups(tenant.to_owned(), before_ms)).await
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ask(|reply| Request::Commit(batch, reply)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: InboxSeq, id: &str) -> StoredMessage {
        StoredMessage { seq, msg_id: id.into(), from: "bob".into(), body: bytes::Bytes::from_static(b"hi"), ts: 1 }
    }

    async fn append(store: &EmbeddedStore, user: &UserKey, m: StoredMessage) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        b.push(WriteOp::Message { user: user.clone(), message: m });
        store.commit(b).await
    }

    #[tokio::test]
    async fn a_known_head_answers_appends_and_taken_seqs_below_it_are_still_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ann = UserKey::new("acme", "ann");
        {
            let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
            append(&store, &ann, msg(1, "a")).await.unwrap();
            append(&store, &ann, msg(2, "b")).await.unwrap();
            store.close().await;
        }
        // A new committer learns the head from the inbox.
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        assert!(matches!(append(&store, &ann, msg(2, "other")).await, Err(StoreError::Conflict(_))));
        append(&store, &ann, msg(3, "c")).await.unwrap();
        // Below the head it knows now: still read, still refused or replayed.
        assert!(matches!(append(&store, &ann, msg(1, "other")).await, Err(StoreError::Conflict(_))));
        assert!(matches!(append(&store, &ann, msg(3, "other")).await, Err(StoreError::Conflict(_))));
        append(&store, &ann, msg(3, "c")).await.unwrap();
        // Two seqs of one user in one batch, above the head.
        let mut b = WriteBatch::default();
        b.push(WriteOp::Message { user: ann.clone(), message: msg(4, "d") });
        b.push(WriteOp::Message { user: ann.clone(), message: msg(5, "e") });
        store.commit(b).await.unwrap();
        // A deleted tenant's inbox starts again at 1, below the head kept.
        store.delete_tenant("acme").await.unwrap();
        append(&store, &ann, msg(1, "new")).await.unwrap();
        let page = store.read_inbox(&ann, 0, 10, usize::MAX).await.unwrap();
        assert_eq!(page.messages.iter().map(|m| (m.seq, &*m.msg_id)).collect::<Vec<_>>(), [(1, "new")]);
        store.close().await;
    }

    #[test]
    fn heads_forget_everything_at_their_bound_only_as_a_group_starts() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let mut heads = Heads::default();
        heads.raise(b"a", 5);
        heads.raise(b"a", 3);
        assert_eq!(heads.get(&store.spaces, b"a").unwrap(), 5);
        for i in 0..HEADS_MAX {
            heads.raise(format!("u{i}").as_bytes(), 1);
        }
        // Within a group nothing is forgotten.
        assert_eq!(heads.get(&store.spaces, b"a").unwrap(), 5);
        heads.start_group();
        assert!(heads.0.is_empty());
        // "a" was forgotten: read again from the (empty) inbox.
        assert_eq!(heads.get(&store.spaces, b"a").unwrap(), 0);
        futures::executor::block_on(store.close());
    }

    /// A group's claims are not on disk until it commits: a head read
    /// from the inbox within a group would be below them, and the next
    /// group would take a seq this one wrote as free.
    #[tokio::test]
    async fn a_head_never_falls_below_a_claim_of_the_same_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let (ann, carol) = (UserKey::new("acme", "ann"), UserKey::new("acme", "carol"));
        for seq in 1..=4 {
            append(&store, &ann, msg(seq, &format!("a{seq}"))).await.unwrap();
        }
        append(&store, &carol, msg(1, "c1")).await.unwrap();
        let batch = |ops: Vec<(UserKey, StoredMessage)>| {
            let mut b = WriteBatch::default();
            for (user, message) in ops {
                b.push(WriteOp::Message { user, message });
            }
            b
        };
        let (mut heads, mut taken) = (Heads::default(), HashMap::new());
        let s = &store.spaces;
        claim_seqs(s, &mut heads, &mut taken, &batch(vec![(ann.clone(), msg(5, "a5"))])).unwrap();
        // Many users later in the same group.
        for i in 0..HEADS_MAX {
            heads.raise(format!("u{i}").as_bytes(), 1);
        }
        // A batch that asks for ann's head and then fails on carol's taken seq.
        let refused =
            claim_seqs(s, &mut heads, &mut taken, &batch(vec![(ann.clone(), msg(6, "a6")), (carol, msg(1, "x"))]));
        assert!(matches!(refused, Err(StoreError::Conflict(_))));
        assert!(heads.get(s, &user_prefix(&ann)).unwrap() >= 5, "ann's head fell below the group's claim of 5");
        store.close().await;
    }
}
