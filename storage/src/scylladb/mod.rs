//! The ScyllaDB backend (the `scylla` driver), for large regions. Also runs
//! against Apache Cassandra 4+.
//!
//! Prepared statements only, each with the consistency, timeout, retry
//! policy and idempotence the config and [`cql::Stmt`] give it; token- and
//! shard-aware routing is the driver's. A commit is one logged batch (in
//! chunks of [`MAX_BATCH_STATEMENTS`]), with counter increments in a counter
//! batch after it, and conditional inbox appends before it where a seq may
//! be contended (docs/adr/0011-inbox-seq-ownership.md). The schema comes
//! from `iris migrate` ([`ScyllaStore::migrate`]); a node refuses to start
//! against a keyspace whose schema is older or newer than it knows.

pub mod cql;

use crate::*;
use cql::{Bound, Outcome, Stmt, Ttls};
use dashmap::DashMap;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::policies::retry::{DefaultRetryPolicy, FallthroughRetryPolicy, RetryPolicy};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue, Row};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most statements in one logged batch; a commit with more is written in
/// several batches (each atomic on its own).
pub const MAX_BATCH_STATEMENTS: usize = 200;

/// Most users remembered as "appended since loaded"; beyond it the memory
/// is dropped, which only makes the next appends conditional again.
const MAX_CONFIRMED: usize = 1_000_000;

/// How long `iris migrate` waits for another migration's lock (longer than
/// the lock's TTL, so a crashed holder's lock runs out first).
const LOCK_WAIT: Duration = Duration::from_secs(330);

/// The longest TTL CQL accepts (20 years).
const MAX_TTL_SECS: i64 = 630_720_000;

/// What the node resolved for the store: the config section plus the
/// secrets and retention it does not carry.
#[derive(Clone)]
pub struct ScyllaOptions {
    /// The `[storage.scylla]` section.
    pub settings: iris_config::Scylla,
    /// The password read from `password_env`.
    pub password: Option<String>,
    /// How long dedup records and event keys live, seconds.
    pub retention_secs: i64,
    /// How long a session record lives, seconds.
    pub session_ttl_secs: i64,
}

impl std::fmt::Debug for ScyllaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaOptions")
            .field("settings", &self.settings)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("retention_secs", &self.retention_secs)
            .field("session_ttl_secs", &self.session_ttl_secs)
            .finish()
    }
}

/// The ScyllaDB-backed store.
pub struct ScyllaStore {
    session: Session,
    stmts: HashMap<Stmt, PreparedStatement>,
    settings: iris_config::Scylla,
    ttl: Ttls,
    log_seqs: cql::LogSeqs,
    /// Users this node appended to since it last loaded them: their next
    /// append needs no condition (this node owns them).
    confirmed: DashMap<UserKey, ()>,
    /// The ticket of each user's latest load: a commit that began before a
    /// load must not mark the user confirmed after it.
    loads: DashMap<UserKey, u64>,
    next_load: std::sync::atomic::AtomicU64,
    always_check: bool,
    /// What batches are sent with, resolved once from the settings.
    retry: Arc<dyn RetryPolicy>,
    write_consistency: scylla::statement::Consistency,
    counter_consistency: scylla::statement::Consistency,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string().into())
}

fn corrupt(what: &'static str) -> impl Fn(scylla::errors::DeserializationError) -> StoreError {
    move |_| StoreError::Corrupt(what)
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// A random writer id for this process's log entries.
fn random_writer() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_us() as u128 ^ ((std::process::id() as u128) << 64));
    h.finish() as i64
}

fn retry_policy(s: &iris_config::Scylla) -> Arc<dyn RetryPolicy> {
    match s.retry.as_str() {
        "none" => Arc::new(FallthroughRetryPolicy::new()),
        _ => Arc::new(DefaultRetryPolicy::new()),
    }
}

fn consistency_of(s: &iris_config::Scylla, setting: &str) -> Result<scylla::statement::Consistency, StoreError> {
    let name = s.consistency_of(setting);
    cql::consistency(name).ok_or_else(|| StoreError::Backend(format!("unknown consistency {name:?}").into()))
}

fn tls(s: &iris_config::Scylla) -> Result<Option<Arc<rustls::ClientConfig>>, StoreError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let Some(ca) = &s.tls_ca_file else { return Ok(None) };
    let bad = |path: &std::path::Path, e: &dyn std::fmt::Display| {
        StoreError::Backend(format!("{}: {e}", path.display()).into())
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(ca, &e))? {
        roots.add(cert.map_err(|e| bad(ca, &e))?).map_err(|e| bad(ca, &e))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(ca, &e))?
        .with_root_certificates(roots);
    let config = match (&s.tls_cert_file, &s.tls_key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| bad(cert, &e))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(cert, &e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| bad(cert, &e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

async fn connect_session(o: &ScyllaOptions) -> Result<Session, StoreError> {
    let s = &o.settings;
    let mut b = SessionBuilder::new()
        .known_nodes(&s.nodes)
        .connection_timeout(Duration::from_millis(s.connect_timeout_ms))
        // Client-side timestamps, increasing within the process: a user's
        // writes (all from its shard's owner) land in the order made.
        .timestamp_generator(Arc::new(scylla::policies::timestamp_generator::MonotonicTimestampGenerator::new()))
        .tls_context(tls(s)?);
    if let (Some(user), Some(password)) = (&s.username, &o.password) {
        b = b.user(user, password);
    }
    if let Some(dc) = &s.local_datacenter {
        b = b.prefer_datacenter(dc.clone());
    }
    b.build().await.map_err(|e| unavailable(format!("connecting to ScyllaDB at {}: {e}", s.nodes.join(", "))))
}

impl ScyllaStore {
    /// Connects, checks that the keyspace's schema is the one this binary
    /// knows, and prepares every statement.
    pub async fn connect(o: ScyllaOptions) -> Result<Self, StoreError> {
        let session = connect_session(&o).await?;
        let s = &o.settings;
        let ks = s.keyspace.as_str();
        let applied = applied_versions(&session, ks).await.map_err(|e| {
            StoreError::Backend(format!("{e}; run `iris migrate --config FILE` to create the schema").into())
        })?;
        let pending = cql::pending(&applied).map_err(|e| StoreError::Backend(e.into()))?;
        if !pending.is_empty() {
            return Err(StoreError::Backend(
                format!(
                    "keyspace {ks} lacks schema steps {:?}: run `iris migrate --config FILE`",
                    pending.iter().map(|m| m.version).collect::<Vec<_>>()
                )
                .into(),
            ));
        }
        let timeout = Some(Duration::from_millis(s.request_timeout_ms));
        let retry = retry_policy(s);
        let serial = cql::serial_consistency(&s.serial_consistency);
        let mut stmts = HashMap::new();
        for &stmt in Stmt::ALL {
            let mut p = session
                .prepare(cql::qualify(stmt.cql(), ks))
                .await
                .map_err(|e| StoreError::Backend(format!("preparing {stmt:?}: {e}").into()))?;
            p.set_consistency(consistency_of(s, stmt.setting())?);
            p.set_serial_consistency(serial);
            p.set_request_timeout(timeout);
            p.set_retry_policy(Some(retry.clone()));
            p.set_is_idempotent(stmt.idempotent());
            stmts.insert(stmt, p);
        }
        Ok(Self {
            session,
            stmts,
            settings: o.settings.clone(),
            ttl: Ttls {
                retention_secs: o.retention_secs.clamp(1, MAX_TTL_SECS) as i32,
                session_secs: o.session_ttl_secs.clamp(1, MAX_TTL_SECS) as i32,
            },
            log_seqs: cql::LogSeqs::new(random_writer()),
            confirmed: DashMap::new(),
            loads: DashMap::new(),
            next_load: std::sync::atomic::AtomicU64::new(1),
            always_check: o.settings.checked_appends == "always",
            write_consistency: consistency_of(s, "write")?,
            counter_consistency: consistency_of(s, "rollup_add")?,
            retry,
        })
    }

    /// Creates the keyspace and applies the schema steps it lacks, under a
    /// lock in the keyspace (so two nodes may run it at once; the second
    /// waits and then finds nothing to do). Returns the steps applied.
    pub async fn migrate(o: &ScyllaOptions, owner: &str) -> Result<Vec<u32>, StoreError> {
        let session = connect_session(o).await?;
        let s = &o.settings;
        let ks = s.keyspace.as_str();
        let ddl = |e: scylla::errors::ExecutionError| StoreError::Backend(e.to_string().into());
        session.query_unpaged(cql::keyspace(s), ()).await.map_err(ddl)?;
        session.await_schema_agreement().await.map_err(unavailable)?;
        for stmt in cql::bootstrap(ks) {
            session.query_unpaged(stmt, ()).await.map_err(ddl)?;
        }
        session.await_schema_agreement().await.map_err(unavailable)?;
        let migrate = consistency_of(s, "migrate")?;
        let prepare = |cql_text: &'static str| {
            let session = &session;
            async move {
                let mut p = session.prepare(cql::qualify(cql_text, ks)).await.map_err(unavailable)?;
                p.set_consistency(migrate);
                p.set_serial_consistency(cql::serial_consistency(&s.serial_consistency));
                Ok::<_, StoreError>(p)
            }
        };
        let (lock, unlock, record) =
            (prepare(cql::LOCK).await?, prepare(cql::UNLOCK).await?, prepare(cql::RECORD).await?);
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            let answer = session.execute_unpaged(&lock, (owner,)).await.map_err(unavailable)?;
            if conditional(answer)? == Outcome::Applied {
                break;
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(
                    format!("another `iris migrate` holds the lock in {ks}.schema_lock (it expires 300 s after it was taken)")
                        .into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let result = async {
            let applied = applied_versions(&session, ks).await?;
            let mut done = Vec::new();
            for m in cql::pending(&applied).map_err(|e| StoreError::Backend(e.into()))? {
                for stmt in m.statements {
                    if let Some((table, column)) = cql::added_column(stmt) {
                        let found = session
                            .query_unpaged(cql::COLUMN_EXISTS, (ks, table, column))
                            .await
                            .map_err(unavailable)?
                            .into_rows_result()
                            .map_err(|e| StoreError::Backend(e.to_string().into()))?
                            .rows_num();
                        if found > 0 {
                            continue;
                        }
                    }
                    session.query_unpaged(cql::qualify(stmt, ks), ()).await.map_err(ddl)?;
                }
                session.await_schema_agreement().await.map_err(unavailable)?;
                let now = CqlTimestamp(now_us() / 1_000);
                session.execute_unpaged(&record, (m.version as i32, m.name, now)).await.map_err(unavailable)?;
                done.push(m.version);
            }
            Ok::<_, StoreError>(done)
        }
        .await;
        if let Err(e) = session.execute_unpaged(&unlock, (owner,)).await {
            tracing::warn!(error = %e, "releasing the migration lock failed; it expires by itself");
        }
        result
    }

    fn stmt(&self, s: Stmt) -> &PreparedStatement {
        &self.stmts[&s]
    }

    async fn rows<R>(&self, s: Stmt, values: impl scylla::serialize::row::SerializeRow) -> Result<Vec<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let result = self.session.execute_unpaged(self.stmt(s), values).await.map_err(unavailable)?;
        let rows = result.into_rows_result().map_err(|_| StoreError::Corrupt("a result without rows"))?;
        let mut out = Vec::new();
        for r in rows.rows::<R>().map_err(|_| StoreError::Corrupt("an unexpected row shape"))? {
            out.push(r.map_err(corrupt("a row"))?);
        }
        Ok(out)
    }

    /// Runs one statement that returns no rows.
    async fn exec(&self, s: Stmt, values: impl scylla::serialize::row::SerializeRow) -> Result<(), StoreError> {
        self.session.execute_unpaged(self.stmt(s), values).await.map_err(unavailable)?;
        Ok(())
    }

    /// Writes bound statements in order, as batches of at most
    /// [`MAX_BATCH_STATEMENTS`] and `max_batch_bytes`; a chunk of one
    /// statement goes alone (a batch of one big message would still be
    /// "too large" to Cassandra). Chunks go one after another and stop at
    /// the first failure, so a message is always written before its dedup
    /// record: a failure may leave a message without one (a retry stores it
    /// again), never a dedup record without its message.
    async fn batch(
        &self,
        kind: BatchType,
        writes: &[Bound],
        consistency: scylla::statement::Consistency,
    ) -> Result<(), StoreError> {
        let timeout = Some(Duration::from_millis(self.settings.request_timeout_ms));
        let mut start = 0;
        while start < writes.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < writes.len() && end - start < MAX_BATCH_STATEMENTS {
                let size = cql::size_of(&writes[end]);
                if end > start && bytes + size > self.settings.max_batch_bytes {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let chunk = &writes[start..end];
            start = end;
            if let [one] = chunk {
                self.session.execute_unpaged(self.stmt(one.stmt), &one.values).await.map_err(unavailable)?;
                continue;
            }
            let mut batch = Batch::new(kind);
            batch.set_consistency(consistency);
            batch.set_request_timeout(timeout);
            batch.set_retry_policy(Some(self.retry.clone()));
            // A logged batch carries client-assigned values only: sending
            // it twice writes the same cells. Counter batches are not.
            batch.set_is_idempotent(kind == BatchType::Logged);
            let mut values: Vec<&Vec<Option<CqlValue>>> = Vec::with_capacity(chunk.len());
            for w in chunk {
                batch.append_statement(self.stmt(w.stmt).clone());
                values.push(&w.values);
            }
            self.session.batch(&batch, values).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// Appends conditionally. `Ok(None)`: written (or this very message was
    /// already there); `Ok(Some(id))`: the seq holds message `id`.
    async fn append_checked(&self, user: &UserKey, m: &StoredMessage) -> Result<Option<String>, StoreError> {
        let answer = self
            .session
            .execute_unpaged(self.stmt(Stmt::AppendChecked), cql::append_values(user, m))
            .await
            .map_err(unavailable)?;
        match conditional(answer)? {
            Outcome::Applied => Ok(None),
            Outcome::Held(id) if id == *m.msg_id => Ok(None),
            Outcome::Held(id) => Ok(Some(id)),
        }
    }

    /// Takes back the checked appends of a commit whose later conditional
    /// append found its seq taken (nothing else of the commit was sent), so
    /// that a retry does not find an orphan at its seq. Best effort: a
    /// failure here leaves the orphan, a message stored twice at worst.
    async fn unappend(&self, appended: &[(UserKey, StoredMessage)]) {
        for (user, m) in appended {
            if let Err(e) = self.session.execute_unpaged(self.stmt(Stmt::Unappend), cql::unappend_values(user, m)).await
            {
                tracing::warn!(error = %e, seq = m.seq, "taking back a checked append failed");
            }
        }
    }
}

async fn applied_versions(session: &Session, ks: &str) -> Result<BTreeSet<u32>, StoreError> {
    let result = session
        .query_unpaged(cql::qualify(cql::APPLIED, ks), ())
        .await
        .map_err(|e| StoreError::Backend(format!("reading {ks}.schema_migrations: {e}").into()))?;
    let rows = result.into_rows_result().map_err(|_| StoreError::Corrupt("schema_migrations"))?;
    let mut out = BTreeSet::new();
    for r in rows.rows::<(i32,)>().map_err(|_| StoreError::Corrupt("schema_migrations"))? {
        let (v,) = r.map_err(corrupt("schema_migrations"))?;
        out.insert(u32::try_from(v).map_err(|_| StoreError::Corrupt("schema_migrations.version"))?);
    }
    Ok(out)
}

/// The column names and the row of a conditional write's answer.
fn answer_row(answer: scylla::response::query_result::QueryResult) -> Result<(Vec<String>, Row), StoreError> {
    let rows = answer.into_rows_result().map_err(|_| StoreError::Corrupt("conditional write answer"))?;
    let names: Vec<String> = rows.column_specs().iter().map(|c| c.name().to_owned()).collect();
    let row: Row = rows.first_row().map_err(|_| StoreError::Corrupt("conditional write answer"))?;
    Ok((names, row))
}

fn conditional(answer: scylla::response::query_result::QueryResult) -> Result<Outcome, StoreError> {
    let (names, row) = answer_row(answer)?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    cql::outcome(&names, &row)
}

#[async_trait]
impl Store for ScyllaStore {
    async fn load_user(&self, u: &UserKey) -> Result<UserRecord, StoreError> {
        // A (re)load is a recovery: this node may not have been the owner
        // since its last append, so the next append is conditional.
        let ticket = self.next_load.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.loads.len() >= MAX_CONFIRMED {
            self.loads.clear();
        }
        self.loads.insert(u.clone(), ticket);
        self.confirmed.remove(u);
        let key = (&*u.tenant, &*u.user);
        let (head, meta, contacts, identities, policies) = futures::try_join!(
            self.rows::<(i64,)>(Stmt::Head, key),
            self.rows::<cql::MetaRow>(Stmt::MetaRow, key),
            self.rows::<(String, Option<String>, Option<Vec<String>>)>(Stmt::Contacts, key),
            self.rows::<(String,)>(Stmt::Identities, key),
            self.rows::<(String, Option<bool>, Option<bool>)>(Stmt::Policies, key),
        )?;
        let head = match head.first() {
            Some((seq,)) => u64::try_from(*seq).map_err(|_| StoreError::Corrupt("inbox seq"))?,
            None => 0,
        };
        let meta = match meta.into_iter().next() {
            Some(row) => cql::meta(row)?,
            None => UserMeta::default(),
        };
        let contacts = contacts
            .into_iter()
            .map(|(name, circle, channels)| {
                (name, Contact { circle: circle.unwrap_or_default(), channels: channels.unwrap_or_default() })
            })
            .collect();
        let identities = identities.into_iter().map(|(c,)| c).collect();
        let policies = policies
            .into_iter()
            .map(|(circle, presence, last_seen)| {
                (circle, CirclePolicy { presence: presence.unwrap_or(false), last_seen: last_seen.unwrap_or(false) })
            })
            .collect();
        Ok(UserRecord { head, meta, contacts, identities, policies })
    }

    async fn dedup(&self, k: &DedupKey) -> Result<Option<DedupRecord>, StoreError> {
        let rows =
            self.rows::<cql::DedupRow>(Stmt::DedupRow, (&*k.sender.tenant, &*k.sender.user, &*k.client_id)).await?;
        rows.into_iter().next().map(cql::dedup).transpose()
    }

    async fn read_inbox(
        &self,
        u: &UserKey,
        after: InboxSeq,
        limit: usize,
        max_bytes: usize,
    ) -> Result<InboxPage, StoreError> {
        let fetch = (limit.saturating_add(1)).min(i32::MAX as usize) as i32;
        let rows = self
            .rows::<cql::InboxRow>(Stmt::InboxAfter, (&*u.tenant, &*u.user, after.min(i64::MAX as u64) as i64, fetch))
            .await?;
        InboxPage::fill(rows.into_iter().map(cql::message), limit, max_bytes)
    }

    async fn read_range(
        &self,
        u: &UserKey,
        from: InboxSeq,
        to: InboxSeq,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if to <= from || limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .rows::<cql::InboxRow>(
                Stmt::InboxRange,
                (
                    &*u.tenant,
                    &*u.user,
                    from as i64,
                    to.min(i64::MAX as u64) as i64,
                    limit.min(i32::MAX as usize) as i32,
                ),
            )
            .await?;
        rows.into_iter().map(cql::message).collect()
    }

    async fn pending_receipts(&self, u: &UserKey, limit: usize) -> Result<Vec<PendingReceipt>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .rows::<cql::ReceiptRow>(Stmt::Receipts, (&*u.tenant, &*u.user, limit.min(i32::MAX as usize) as i32))
            .await?;
        rows.into_iter().map(cql::receipt).collect()
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut checked: Vec<(UserKey, StoredMessage)> = Vec::new();
        let mut logged: Vec<Bound> = Vec::with_capacity(batch.ops.len());
        let mut counters: Vec<Bound> = Vec::new();
        // Users appended to, with the ticket of their latest load as this
        // commit began.
        let mut appended: Vec<(UserKey, Option<u64>)> = Vec::new();
        let writer = self.log_seqs.writer();
        let mut next_seq = || (self.log_seqs.next(now_us() / 1_000), writer);
        // Each user's lowest seq in this commit: only that append needs the
        // condition, since once it holds, the seqs above it are ours (a
        // shard appends in seq order, but the check must not depend on it).
        let mut lowest: Vec<(&UserKey, u64)> = Vec::new();
        for op in &batch.ops {
            if let WriteOp::Message { user, message } = op {
                match lowest.iter_mut().find(|(u, _)| *u == user) {
                    Some((_, seq)) => *seq = (*seq).min(message.seq),
                    None => lowest.push((user, message.seq)),
                }
            }
        }
        let lowest: Vec<(UserKey, u64)> = lowest.into_iter().map(|(u, s)| (u.clone(), s)).collect();
        for op in batch.ops {
            if let WriteOp::Message { user, message } = &op {
                if !appended.iter().any(|(u, _)| u == user) {
                    appended.push((user.clone(), self.loads.get(user).map(|t| *t)));
                }
                let guards = lowest.iter().any(|(u, s)| u == user && *s == message.seq);
                if self.always_check || (guards && !self.confirmed.contains_key(user)) {
                    checked.push((user.clone(), message.clone()));
                    continue;
                }
            }
            for b in cql::bind(op, self.ttl, &mut next_seq) {
                if b.stmt == Stmt::RollupAdd { counters.push(b) } else { logged.push(b) }
            }
        }
        let logged = cql::coalesce(logged);
        // Conditional appends first: if a seq is taken, nothing else is
        // written and the shard reloads the head.
        let mut done: Vec<(UserKey, StoredMessage)> = Vec::with_capacity(checked.len());
        for (user, m) in checked {
            match self.append_checked(&user, &m).await {
                Ok(None) => done.push((user, m)),
                Ok(Some(holder)) => {
                    self.unappend(&done).await;
                    metrics::counter!("iris_store_seq_conflicts_total").increment(1);
                    return Err(StoreError::Conflict(
                        format!("{}/{} seq {} holds {holder}", user.tenant, user.user, m.seq).into(),
                    ));
                }
                // It may have been applied: leave what landed (a message
                // stored twice at worst, never one lost).
                Err(e) => return Err(e),
            }
        }
        // A failed or timed-out batch may still be applied (the batchlog
        // replays it), so nothing is taken back after this point.
        self.batch(BatchType::Logged, &logged, self.write_consistency).await?;
        // After the logged batch: a failure here loses increments rather
        // than counting them twice on the client's retry (which the event
        // keys, already written, turn into a no-op).
        self.batch(BatchType::Counter, &counters, self.counter_consistency).await?;
        if self.confirmed.len() >= MAX_CONFIRMED {
            self.confirmed.clear();
        }
        for (u, ticket) in appended {
            // A load since this commit began may have read a head without
            // this commit's appends: leave the user unconfirmed then.
            if self.loads.get(&u).map(|t| *t) == ticket {
                self.confirmed.insert(u, ());
            }
        }
        Ok(())
    }

    async fn session(&self, u: &UserKey) -> Result<Option<SessionRecord>, StoreError> {
        let rows = self.rows::<cql::SessionRow>(Stmt::SessionRow, (&*u.tenant, &*u.user)).await?;
        rows.into_iter().next().map(cql::session).transpose()
    }

    async fn event_seen(&self, k: &EventKey) -> Result<bool, StoreError> {
        let rows = self.rows::<(Option<i64>,)>(Stmt::EventRow, (&*k.tenant, &*k.stream, &*k.key)).await?;
        Ok(!rows.is_empty())
    }

    async fn read_log(
        &self,
        kind: LogKind,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let after = after.min(i64::MAX as u64) as i64;
        let kind_name = cql::kind_name(kind);
        let mut out = Vec::new();
        let mut from_day = cql::day_of(after);
        while out.len() < limit {
            let days = self.rows::<(i32,)>(Stmt::LogDays, (tenant, kind_name, from_day, 32i32)).await?;
            if days.is_empty() {
                break;
            }
            for (day,) in &days {
                let want = (limit - out.len()).min(i32::MAX as usize) as i32;
                let rows = self.rows::<(i64, Vec<u8>)>(Stmt::LogPage, (tenant, kind_name, *day, after, want)).await?;
                for (seq, record) in rows {
                    out.push(LogEntry {
                        seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt("logs.seq"))?,
                        record: Bytes::from(record),
                    });
                }
                if out.len() >= limit {
                    break;
                }
            }
            from_day = days.last().map(|(d,)| d + 1).unwrap_or(i32::MAX);
        }
        Ok(out)
    }

    fn keeps_api_keys(&self) -> bool {
        true
    }

    async fn put_api_key(&self, hash: &str, tenant: &str) -> Result<(), StoreError> {
        // Both rows in one logged batch: a key is listed under its tenant
        // (so it can be revoked) whenever it can be looked up.
        let text = |v: &str| Some(CqlValue::Text(v.to_owned()));
        let writes = [
            Bound { stmt: Stmt::ApiKeyPut, values: vec![text(hash), text(tenant)] },
            Bound { stmt: Stmt::TenantApiKeyPut, values: vec![text(tenant), text(hash)] },
        ];
        self.batch(BatchType::Logged, &writes, self.write_consistency).await
    }

    async fn api_key_tenant(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self.rows::<(String,)>(Stmt::ApiKeyRow, (hash,)).await?.into_iter().next().map(|(t,)| t))
    }

    async fn revoke_api_key(&self, tenant: &str, prefix: &str) -> Result<bool, StoreError> {
        // Only the tenant's own list is searched: another tenant's key
        // cannot go, whatever the prefix.
        let hashes = self.rows::<(String,)>(Stmt::TenantApiKeys, (tenant,)).await?;
        let Some((hash,)) = hashes.into_iter().find(|(h,)| h.starts_with(prefix)) else {
            return Ok(false);
        };
        // The lookup row goes first: a failure between the two leaves a
        // listed key that no longer works, never a working unlisted one.
        self.exec(Stmt::ApiKeyDelete, (hash.as_str(),)).await?;
        self.exec(Stmt::TenantApiKeyDelete, (tenant, hash.as_str())).await?;
        Ok(true)
    }

    fn keeps_bars(&self) -> bool {
        true
    }

    async fn bar_tenant(&self, tenant: &str, id: u64) -> Result<u64, StoreError> {
        // A lightweight transaction: two operators barring one tenant at
        // once agree on one id. Its answer carries the id that holds.
        let answer =
            self.session.execute_unpaged(self.stmt(Stmt::BarPut), (tenant, id as i64)).await.map_err(unavailable)?;
        let (names, row) = answer_row(answer)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(cql::bar_held(&names, &row)?.map_or(id, |held| held as u64))
    }

    async fn lift_bar(&self, tenant: &str) -> Result<bool, StoreError> {
        let answer = self.session.execute_unpaged(self.stmt(Stmt::BarDelete), (tenant,)).await.map_err(unavailable)?;
        Ok(conditional(answer)? == Outcome::Applied)
    }

    async fn barred_tenants(&self) -> Result<Vec<Bar>, StoreError> {
        let rows = self.rows::<(String, i64)>(Stmt::Bars, ()).await?;
        Ok(rows.into_iter().map(|(t, id)| Bar { tenant: t.into(), id: id as u64 }).collect())
    }

    async fn confirm_bar(&self, region: &str, bar: &Bar, shard: u32) -> Result<(), StoreError> {
        self.exec(Stmt::BarConfirm, (region, &*bar.tenant, shard as i32, bar.id as i64)).await
    }

    async fn bar_confirmations(&self, region: &str, tenant: &str, id: u64) -> Result<Vec<u32>, StoreError> {
        let rows = self.rows::<(i32, i64)>(Stmt::BarConfirmations, (region, tenant)).await?;
        Ok(rows.into_iter().filter(|(_, b)| *b as u64 == id).map(|(s, _)| s as u32).collect())
    }

    async fn delete_tenant(&self, tenant: &str) -> Result<u64, StoreError> {
        use futures::StreamExt;
        let ks = self.settings.keyspace.as_str();
        let mut gone = 0u64;
        // The tenant's API keys first: `api_keys` is partitioned by hash,
        // so its rows are found through the tenant's list (which goes with
        // the other tables below).
        for (hash,) in self.rows::<(String,)>(Stmt::TenantApiKeys, (tenant,)).await? {
            self.exec(Stmt::ApiKeyDelete, (hash.as_str(),)).await?;
            gone += 1;
        }
        // Every other table is partitioned by tenant first: each one's
        // partitions are listed (a full scan, paged: an operator's rare
        // step) and the tenant's are deleted whole.
        for (table, key) in cql::TENANT_PARTITIONS {
            let cols = key.join(", ");
            let list = format!("SELECT DISTINCT {cols} FROM {ks}.{table}");
            let cond = key.iter().map(|c| format!("{c} = ?")).collect::<Vec<_>>().join(" AND ");
            let delete =
                self.session.prepare(format!("DELETE FROM {ks}.{table} WHERE {cond}")).await.map_err(unavailable)?;
            let pager = self.session.query_iter(list, ()).await.map_err(unavailable)?;
            let mut rows =
                pager.rows_stream::<cql::PartitionKey>().map_err(|_| StoreError::Corrupt("partition key"))?;
            let mut mine = Vec::new();
            while let Some(row) = rows.next().await {
                let row = row.map_err(unavailable)?;
                if row.tenant() == Some(tenant) {
                    mine.push(row);
                }
            }
            for row in mine {
                self.session.execute_unpaged(&delete, row.values()).await.map_err(unavailable)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    async fn retained_tenants(&self) -> Result<Vec<String>, StoreError> {
        let mut all: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        all.extend(self.rows::<(String, String)>(Stmt::LogTenants, ()).await?.into_iter().map(|(t, _)| t));
        all.extend(self.rows::<(String,)>(Stmt::RollupTenants, ()).await?.into_iter().map(|(t,)| t));
        Ok(all.into_iter().collect())
    }

    async fn trim_log(&self, kind: LogKind, tenant: &str, upto: u64) -> Result<(), StoreError> {
        // Seqs carry their day: whole days before `upto`'s go as
        // partitions, its own day up to `upto`.
        let upto = upto.min(i64::MAX as u64) as i64;
        let (kind_name, last) = (cql::kind_name(kind), cql::day_of(upto));
        let days = self.rows::<(i32,)>(Stmt::LogDaysUpTo, (tenant, kind_name, last)).await?;
        for (day,) in days {
            if day < last {
                self.exec(Stmt::LogDrop, (tenant, kind_name, day)).await?;
                self.exec(Stmt::LogDayForget, (tenant, kind_name, day)).await?;
            } else {
                self.exec(Stmt::LogTrim, (tenant, kind_name, day, upto)).await?;
            }
        }
        Ok(())
    }

    async fn trim_rollups(&self, tenant: &str, before_ms: i64) -> Result<u64, StoreError> {
        let rows = self.rows::<cql::RollupRow>(Stmt::RollupsAll, (tenant,)).await?;
        let mut gone = 0;
        for (event_type, hour_ms, project, _) in rows {
            if hour_ms < before_ms {
                self.exec(Stmt::RollupDelete, (tenant, event_type.as_str(), hour_ms, project.as_str())).await?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    async fn rollups(
        &self,
        tenant: &str,
        event_type: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(RollupKey, u64)>, StoreError> {
        let rows = match event_type {
            Some(t) => self.rows::<cql::RollupRow>(Stmt::RollupsOfType, (tenant, t, from_ms, to_ms)).await?,
            None => self.rows::<cql::RollupRow>(Stmt::RollupsAll, (tenant,)).await?,
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (key, n) = cql::rollup(tenant, row)?;
            if key.hour_ms >= from_ms && key.hour_ms < to_ms {
                out.push((key, n));
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract suite against a live CQL node: `IRIS_TEST_SCYLLA=HOST:PORT`.
    /// `scripts/test` starts Apache Cassandra (`scripts/cassandra`) for it;
    /// a ScyllaDB node works the same way (README, "ScyllaDB").
    #[tokio::test]
    async fn scylla_store_passes_the_contract() {
        let node = std::env::var("IRIS_TEST_SCYLLA")
            .expect("IRIS_TEST_SCYLLA is not set: run scripts/test, which starts Apache Cassandra (scripts/cassandra)");
        let toml = format!(
            "roles = [\"core\", \"router\"]\n[cluster]\nkafka = \"unused:9092\"\n[storage]\nbackend = \"scylla\"\n\
             [storage.scylla]\nnodes = [\"{node}\"]\nkeyspace = \"iris_test\"\nreplication_factor = 1\n\
             consistency = {{ write = \"ONE\", append_checked = \"ONE\", rollup_add = \"ONE\", load_user = \"ONE\", \
             dedup = \"ONE\", read_inbox = \"ONE\", receipts = \"ONE\", event_seen = \"ONE\", read_log = \"ONE\", \
             migrate = \"ONE\" }}\nserial_consistency = \"SERIAL\"\n"
        );
        let settings = iris_config::Config::from_toml(&toml).unwrap().storage.scylla.unwrap();
        let o = ScyllaOptions { settings, password: None, retention_secs: 3_600, session_ttl_secs: 60 };
        // Twice, as two nodes would: the second finds nothing to do.
        ScyllaStore::migrate(&o, "test-a").await.unwrap();
        assert!(ScyllaStore::migrate(&o, "test-b").await.unwrap().is_empty(), "a second migrate applies nothing");
        // A run interrupted after a step that adds a column, before it was
        // recorded: the next run finds the column and records the step.
        let alter = cql::MIGRATIONS
            .iter()
            .find(|m| m.statements.iter().any(|s| cql::added_column(s).is_some()))
            .expect("a step adds a column");
        let session = connect_session(&o).await.unwrap();
        session
            .query_unpaged("DELETE FROM iris_test.schema_migrations WHERE version = ?", (alter.version as i32,))
            .await
            .unwrap();
        assert_eq!(
            ScyllaStore::migrate(&o, "test-c").await.unwrap(),
            vec![alter.version],
            "the step again, without error"
        );
        let store = ScyllaStore::connect(o).await.unwrap();
        let tenant = format!("t{}", now_us());
        crate::contract::run_all(&store, &tenant).await.unwrap();
    }
}
