//! The CQL of the ScyllaDB backend, kept free of I/O so that it is tested
//! without a server: the schema and its migrations, the statements, the
//! values each write binds, and the mapping of rows back to records.

use crate::*;
use scylla::value::{CqlTimestamp, CqlValue, Row};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};

/// One step of the schema. Every statement is idempotent (`IF NOT EXISTS`),
/// so a step interrupted half-way is simply run again. `{ks}` stands for
/// the keyspace.
#[derive(Debug)]
pub struct Migration {
    /// Applied in increasing order; recorded in `schema_migrations`.
    pub version: u32,
    /// What the step does.
    pub name: &'static str,
    /// Its statements, in order.
    pub statements: &'static [&'static str],
}

/// The schema, step by step. Append new steps; never edit an applied one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "inbox, inbox state, dedup, contacts, identities, circle policies, receipts, sessions, event keys, logs, rollups",
        statements: &[
            // One partition per recipient, newest first (ARCHITECTURE.md).
            "CREATE TABLE IF NOT EXISTS {ks}.inbox (tenant text, user_id text, seq bigint, msg_id text, \
         sender_id text, body blob, created_at timestamp, PRIMARY KEY ((tenant, user_id), seq)) \
         WITH CLUSTERING ORDER BY (seq DESC)",
            "CREATE TABLE IF NOT EXISTS {ks}.inbox_state (tenant text, user_id text, acked bigint, read_upto bigint, \
         invisible_since bigint, last_seen bigint, PRIMARY KEY ((tenant, user_id)))",
            // Written with a TTL (the retry window, at least 7 days).
            "CREATE TABLE IF NOT EXISTS {ks}.dedup (tenant text, sender_id text, client_id text, msg_id text, \
         ts bigint, to_user text, seq bigint, PRIMARY KEY ((tenant, sender_id, client_id)))",
            "CREATE TABLE IF NOT EXISTS {ks}.contacts (tenant text, user_id text, contact text, circle text, \
         channels list<text>, PRIMARY KEY ((tenant, user_id), contact))",
            "CREATE TABLE IF NOT EXISTS {ks}.identities (tenant text, user_id text, channel text, \
         PRIMARY KEY ((tenant, user_id), channel))",
            "CREATE TABLE IF NOT EXISTS {ks}.circle_policies (tenant text, user_id text, circle text, \
         presence boolean, last_seen boolean, PRIMARY KEY ((tenant, user_id), circle))",
            "CREATE TABLE IF NOT EXISTS {ks}.receipts (tenant text, user_id text, msg_id text, by_user text, \
         state text, PRIMARY KEY ((tenant, user_id), msg_id))",
            // Written with a TTL (storage.session_ttl_hours).
            "CREATE TABLE IF NOT EXISTS {ks}.sessions (tenant text, user_id text, nodes list<text>, region text, \
         sessions int, last_seen bigint, PRIMARY KEY ((tenant, user_id)))",
            // Written with a TTL (the retry window).
            "CREATE TABLE IF NOT EXISTS {ks}.event_keys (tenant text, stream text, key text, ts bigint, \
         PRIMARY KEY ((tenant, stream, key)))",
            // A tenant's log, one partition per kind and day; log_days lists the
            // days that have entries, so that a reader finds the next one.
            "CREATE TABLE IF NOT EXISTS {ks}.logs (tenant text, kind text, day int, seq bigint, writer bigint, \
         record blob, PRIMARY KEY ((tenant, kind, day), seq, writer))",
            "CREATE TABLE IF NOT EXISTS {ks}.log_days (tenant text, kind text, day int, \
         PRIMARY KEY ((tenant, kind), day))",
            "CREATE TABLE IF NOT EXISTS {ks}.rollups (tenant text, event_type text, hour_ms bigint, project text, \
         n counter, PRIMARY KEY ((tenant), event_type, hour_ms, project))",
        ],
    },
    Migration {
        version: 2,
        name: "API keys, shared by every node of the region",
        statements: &[
            // Looked up by the hash of the key a request presents...
            "CREATE TABLE IF NOT EXISTS {ks}.api_keys (hash text, tenant text, PRIMARY KEY ((hash)))",
            // ...and listed by tenant, to revoke by id and to delete a tenant.
            "CREATE TABLE IF NOT EXISTS {ks}.tenant_api_keys (tenant text, hash text, PRIMARY KEY ((tenant), hash))",
        ],
    },
    Migration {
        version: 3,
        name: "tenant bars: tenants being deleted under running shards, and each shard's confirmation",
        statements: &[
            // One small partition (a handful of tenants being deleted),
            // read by every shard as it starts and every few seconds.
            "CREATE TABLE IF NOT EXISTS {ks}.tenant_bars (bucket int, tenant text, bar_id bigint, \
         PRIMARY KEY ((bucket), tenant))",
            "CREATE TABLE IF NOT EXISTS {ks}.tenant_bar_confirmations (region text, tenant text, shard int, \
         bar_id bigint, PRIMARY KEY ((region, tenant), shard))",
        ],
    },
    Migration {
        version: 4,
        name: "the stamp of a user's newest status (ADR 0032)",
        // Run only when the column is missing (`added_column`): ScyllaDB
        // and Cassandra before 4.1 do not take `ADD IF NOT EXISTS`.
        statements: &["ALTER TABLE {ks}.inbox_state ADD status_at bigint"],
    },
];

/// Every table and its partition key, whose first column is the tenant:
/// what deleting a tenant removes.
pub const TENANT_PARTITIONS: &[(&str, &[&str])] = &[
    ("inbox", &["tenant", "user_id"]),
    ("inbox_state", &["tenant", "user_id"]),
    ("dedup", &["tenant", "sender_id", "client_id"]),
    ("contacts", &["tenant", "user_id"]),
    ("identities", &["tenant", "user_id"]),
    ("circle_policies", &["tenant", "user_id"]),
    ("receipts", &["tenant", "user_id"]),
    ("sessions", &["tenant", "user_id"]),
    ("event_keys", &["tenant", "stream", "key"]),
    ("logs", &["tenant", "kind", "day"]),
    ("log_days", &["tenant", "kind"]),
    ("rollups", &["tenant"]),
    ("tenant_api_keys", &["tenant"]),
];

/// A partition key of [`TENANT_PARTITIONS`], read as its CQL values.
#[derive(Debug, Clone)]
pub struct PartitionKey(Vec<CqlValue>);

impl PartitionKey {
    /// Its tenant (the first column).
    pub fn tenant(&self) -> Option<&str> {
        match self.0.first() {
            Some(CqlValue::Text(t)) => Some(t),
            _ => None,
        }
    }

    /// Its values, to bind to a delete of the partition.
    pub fn values(&self) -> &[CqlValue] {
        &self.0
    }
}

impl<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> for PartitionKey {
    fn type_check(
        _: &[scylla::frame::response::result::ColumnSpec],
    ) -> Result<(), scylla::deserialize::TypeCheckError> {
        Ok(())
    }

    fn deserialize(
        row: scylla::deserialize::row::ColumnIterator<'f, 'm>,
    ) -> Result<Self, scylla::deserialize::DeserializationError> {
        let mut out = Vec::new();
        for col in row {
            let col = col?;
            let v = <Option<CqlValue> as scylla::deserialize::value::DeserializeValue>::deserialize(
                col.spec.typ(),
                col.slice,
            )?;
            out.push(v.ok_or_else(|| scylla::deserialize::DeserializationError::new(NullKey))?);
        }
        Ok(PartitionKey(out))
    }
}

/// A partition key column was null.
#[derive(Debug, thiserror::Error)]
#[error("a partition key column is null")]
struct NullKey;

/// The newest schema version this binary knows.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// The tables `iris migrate` needs before it can take its lock: the record
/// of applied steps and the lock itself.
pub fn bootstrap(ks: &str) -> [String; 2] {
    [
        qualify(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, name text, applied_at timestamp)",
            ks,
        ),
        qualify("CREATE TABLE IF NOT EXISTS {ks}.schema_lock (id text PRIMARY KEY, owner text)", ks),
    ]
}

/// Takes the migration lock; expires by itself if its holder dies.
pub const LOCK: &str = "INSERT INTO {ks}.schema_lock (id, owner) VALUES ('migrate', ?) IF NOT EXISTS USING TTL 300";
/// Releases the lock (only the holder's).
pub const UNLOCK: &str = "DELETE FROM {ks}.schema_lock WHERE id = 'migrate' IF owner = ?";
/// The applied steps.
pub const APPLIED: &str = "SELECT version FROM {ks}.schema_migrations";
/// Records a step as applied.
pub const RECORD: &str = "INSERT INTO {ks}.schema_migrations (version, name, applied_at) VALUES (?, ?, ?)";

/// Puts the keyspace into a statement.
pub fn qualify(cql: &str, ks: &str) -> String {
    cql.replace("{ks}", ks)
}

/// The table and column a step's `ALTER TABLE {ks}.T ADD C type` adds: the
/// runner runs it only while `system_schema.columns` lacks the column, so
/// that the step is idempotent on every CQL server.
pub fn added_column(stmt: &str) -> Option<(&str, &str)> {
    let rest = stmt.strip_prefix("ALTER TABLE {ks}.")?;
    let (table, rest) = rest.split_once(" ADD ")?;
    Some((table, rest.split(' ').next()?))
}

/// Whether a keyspace's table has a column (both names as the schema
/// stores them: unquoted identifiers are lower case).
pub const COLUMN_EXISTS: &str =
    "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?";

/// `CREATE KEYSPACE` with the configured replication. The names were
/// validated by the config (identifiers only), so they can be spliced in.
pub fn keyspace(s: &iris_config::Scylla) -> String {
    let replication = match s.replication_class.as_str() {
        "NetworkTopologyStrategy" => {
            let dcs: Vec<String> = s.datacenters.iter().map(|(dc, rf)| format!("'{dc}': {rf}")).collect();
            let tablets = if s.disable_tablets { " AND tablets = {'enabled': false}" } else { "" };
            format!("{{'class': 'NetworkTopologyStrategy', {}}}{tablets}", dcs.join(", "))
        }
        _ => format!("{{'class': 'SimpleStrategy', 'replication_factor': {}}}", s.replication_factor),
    };
    format!("CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {replication}", s.keyspace)
}

/// The steps still to apply, in order. Refuses a schema newer than this
/// binary (a step it does not know was applied): an old binary must not
/// run against it.
pub fn pending(applied: &BTreeSet<u32>) -> Result<Vec<&'static Migration>, String> {
    if let Some(unknown) = applied.iter().find(|v| !MIGRATIONS.iter().any(|m| m.version == **v)) {
        return Err(format!(
            "the keyspace has schema step {unknown}, which this binary (up to step {}) does not know: upgrade iris",
            latest_version()
        ));
    }
    Ok(MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)).collect())
}

/// Every statement the store prepares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stmt {
    /// Inbox append, unconditional (the owner is the only writer).
    Append,
    /// Inbox append that fails if the seq is taken (after a recovery).
    AppendChecked,
    /// Takes back a checked append whose batch then failed.
    Unappend,
    /// Dedup record, with a TTL.
    Dedup,
    /// Acks, read marks, invisibility, last seen.
    Meta,
    /// A contact and its circle.
    Contact,
    /// Removes a contact.
    ContactRemoved,
    /// A verified channel.
    Identity,
    /// A circle's policy.
    Policy,
    /// A receipt for an offline sender.
    Receipt,
    /// Forgets a delivered receipt.
    ReceiptDelivered,
    /// A log entry.
    Log,
    /// The day of a log entry.
    LogDay,
    /// An event's idempotency key, with a TTL.
    EventSeen,
    /// Where a user is connected, with a TTL.
    Session,
    /// Adds to a rollup counter.
    RollupAdd,
    /// The inbox head.
    Head,
    /// The inbox state row.
    MetaRow,
    /// A user's contacts.
    Contacts,
    /// A user's verified channels.
    Identities,
    /// A user's circle policies.
    Policies,
    /// A dedup record.
    DedupRow,
    /// Messages after a seq.
    InboxAfter,
    /// Messages in `(from, to]`.
    InboxRange,
    /// Receipts waiting for a user.
    Receipts,
    /// A session record.
    SessionRow,
    /// An event key.
    EventRow,
    /// The days of a log from a day on.
    LogDays,
    /// A day of a log after a seq.
    LogPage,
    /// One event type's rollups in an hour range.
    RollupsOfType,
    /// All of a tenant's rollups.
    RollupsAll,
    /// Every tenant and kind with a log (retention).
    LogTenants,
    /// Every tenant with rollups (retention).
    RollupTenants,
    /// The days of a log up to a day (retention).
    LogDaysUpTo,
    /// Drops a whole day of a log (retention).
    LogDrop,
    /// Drops a day's entries up to a seq (retention).
    LogTrim,
    /// Forgets a dropped day (retention).
    LogDayForget,
    /// Drops one rollup counter (retention).
    RollupDelete,
    /// An API key's hash and tenant.
    ApiKeyPut,
    /// An API key in its tenant's list.
    TenantApiKeyPut,
    /// The tenant of a key hash.
    ApiKeyRow,
    /// A tenant's key hashes.
    TenantApiKeys,
    /// Forgets a key hash.
    ApiKeyDelete,
    /// Takes a key out of its tenant's list.
    TenantApiKeyDelete,
    /// Bars a tenant (if not barred: `IF NOT EXISTS`).
    BarPut,
    /// Every bar.
    Bars,
    /// Lifts a bar (`IF EXISTS`: a bar is written under Paxos, and so is
    /// its lift, or a skewed clock could order them the other way).
    BarDelete,
    /// A shard's confirmation of a bar.
    BarConfirm,
    /// The confirmations of a tenant's bar in a region.
    BarConfirmations,
}

impl Stmt {
    /// All statements.
    pub const ALL: &'static [Stmt] = &[
        Stmt::Append,
        Stmt::AppendChecked,
        Stmt::Unappend,
        Stmt::Dedup,
        Stmt::Meta,
        Stmt::Contact,
        Stmt::ContactRemoved,
        Stmt::Identity,
        Stmt::Policy,
        Stmt::Receipt,
        Stmt::ReceiptDelivered,
        Stmt::Log,
        Stmt::LogDay,
        Stmt::EventSeen,
        Stmt::Session,
        Stmt::RollupAdd,
        Stmt::Head,
        Stmt::MetaRow,
        Stmt::Contacts,
        Stmt::Identities,
        Stmt::Policies,
        Stmt::DedupRow,
        Stmt::InboxAfter,
        Stmt::InboxRange,
        Stmt::Receipts,
        Stmt::SessionRow,
        Stmt::EventRow,
        Stmt::LogDays,
        Stmt::LogPage,
        Stmt::RollupsOfType,
        Stmt::RollupsAll,
        Stmt::LogTenants,
        Stmt::RollupTenants,
        Stmt::LogDaysUpTo,
        Stmt::LogDrop,
        Stmt::LogTrim,
        Stmt::LogDayForget,
        Stmt::RollupDelete,
        Stmt::ApiKeyPut,
        Stmt::TenantApiKeyPut,
        Stmt::ApiKeyRow,
        Stmt::TenantApiKeys,
        Stmt::ApiKeyDelete,
        Stmt::TenantApiKeyDelete,
        Stmt::BarPut,
        Stmt::Bars,
        Stmt::BarDelete,
        Stmt::BarConfirm,
        Stmt::BarConfirmations,
    ];

    /// The CQL, with `{ks}` for the keyspace.
    pub fn cql(self) -> &'static str {
        match self {
            Stmt::Append => {
                "INSERT INTO {ks}.inbox (tenant, user_id, seq, msg_id, sender_id, body, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)"
            }
            Stmt::AppendChecked => {
                "INSERT INTO {ks}.inbox (tenant, user_id, seq, msg_id, sender_id, body, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
            }
            Stmt::Unappend => "DELETE FROM {ks}.inbox WHERE tenant = ? AND user_id = ? AND seq = ? IF msg_id = ?",
            Stmt::Dedup => {
                "INSERT INTO {ks}.dedup (tenant, sender_id, client_id, msg_id, ts, to_user, seq) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            }
            Stmt::Meta => {
                "INSERT INTO {ks}.inbox_state (tenant, user_id, acked, read_upto, invisible_since, last_seen, \
                 status_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            }
            Stmt::Contact => {
                "INSERT INTO {ks}.contacts (tenant, user_id, contact, circle, channels) VALUES (?, ?, ?, ?, ?)"
            }
            Stmt::ContactRemoved => "DELETE FROM {ks}.contacts WHERE tenant = ? AND user_id = ? AND contact = ?",
            Stmt::Identity => "INSERT INTO {ks}.identities (tenant, user_id, channel) VALUES (?, ?, ?)",
            Stmt::Policy => {
                "INSERT INTO {ks}.circle_policies (tenant, user_id, circle, presence, last_seen) VALUES (?, ?, ?, ?, ?)"
            }
            Stmt::Receipt => {
                "INSERT INTO {ks}.receipts (tenant, user_id, msg_id, by_user, state) VALUES (?, ?, ?, ?, ?)"
            }
            Stmt::ReceiptDelivered => "DELETE FROM {ks}.receipts WHERE tenant = ? AND user_id = ? AND msg_id = ?",
            Stmt::Log => "INSERT INTO {ks}.logs (tenant, kind, day, seq, writer, record) VALUES (?, ?, ?, ?, ?, ?)",
            Stmt::LogDay => "INSERT INTO {ks}.log_days (tenant, kind, day) VALUES (?, ?, ?)",
            Stmt::EventSeen => "INSERT INTO {ks}.event_keys (tenant, stream, key, ts) VALUES (?, ?, ?, ?) USING TTL ?",
            Stmt::Session => {
                "INSERT INTO {ks}.sessions (tenant, user_id, nodes, region, sessions, last_seen) \
                 VALUES (?, ?, ?, ?, ?, ?) USING TTL ?"
            }
            Stmt::RollupAdd => {
                "UPDATE {ks}.rollups SET n = n + ? WHERE tenant = ? AND event_type = ? AND hour_ms = ? AND project = ?"
            }
            Stmt::Head => "SELECT seq FROM {ks}.inbox WHERE tenant = ? AND user_id = ? LIMIT 1",
            Stmt::MetaRow => {
                "SELECT acked, read_upto, invisible_since, last_seen, status_at FROM {ks}.inbox_state \
                 WHERE tenant = ? AND user_id = ?"
            }
            Stmt::Contacts => "SELECT contact, circle, channels FROM {ks}.contacts WHERE tenant = ? AND user_id = ?",
            Stmt::Identities => "SELECT channel FROM {ks}.identities WHERE tenant = ? AND user_id = ?",
            Stmt::Policies => {
                "SELECT circle, presence, last_seen FROM {ks}.circle_policies WHERE tenant = ? AND user_id = ?"
            }
            Stmt::DedupRow => {
                "SELECT msg_id, ts, to_user, seq FROM {ks}.dedup WHERE tenant = ? AND sender_id = ? AND client_id = ?"
            }
            Stmt::InboxAfter => {
                "SELECT seq, msg_id, sender_id, body, created_at FROM {ks}.inbox \
                 WHERE tenant = ? AND user_id = ? AND seq > ? ORDER BY seq ASC LIMIT ?"
            }
            Stmt::InboxRange => {
                "SELECT seq, msg_id, sender_id, body, created_at FROM {ks}.inbox \
                 WHERE tenant = ? AND user_id = ? AND seq > ? AND seq <= ? ORDER BY seq ASC LIMIT ?"
            }
            Stmt::Receipts => {
                "SELECT msg_id, by_user, state FROM {ks}.receipts WHERE tenant = ? AND user_id = ? LIMIT ?"
            }
            Stmt::SessionRow => {
                "SELECT nodes, region, sessions, last_seen FROM {ks}.sessions WHERE tenant = ? AND user_id = ?"
            }
            Stmt::EventRow => "SELECT ts FROM {ks}.event_keys WHERE tenant = ? AND stream = ? AND key = ?",
            Stmt::LogDays => "SELECT day FROM {ks}.log_days WHERE tenant = ? AND kind = ? AND day >= ? LIMIT ?",
            Stmt::LogPage => {
                "SELECT seq, record FROM {ks}.logs WHERE tenant = ? AND kind = ? AND day = ? AND seq > ? \
                 ORDER BY seq ASC LIMIT ?"
            }
            Stmt::RollupsOfType => {
                "SELECT event_type, hour_ms, project, n FROM {ks}.rollups \
                 WHERE tenant = ? AND event_type = ? AND hour_ms >= ? AND hour_ms < ?"
            }
            Stmt::RollupsAll => "SELECT event_type, hour_ms, project, n FROM {ks}.rollups WHERE tenant = ?",
            Stmt::LogTenants => "SELECT DISTINCT tenant, kind FROM {ks}.log_days",
            Stmt::RollupTenants => "SELECT DISTINCT tenant FROM {ks}.rollups",
            Stmt::LogDaysUpTo => "SELECT day FROM {ks}.log_days WHERE tenant = ? AND kind = ? AND day <= ?",
            Stmt::LogDrop => "DELETE FROM {ks}.logs WHERE tenant = ? AND kind = ? AND day = ?",
            Stmt::LogTrim => "DELETE FROM {ks}.logs WHERE tenant = ? AND kind = ? AND day = ? AND seq <= ?",
            Stmt::LogDayForget => "DELETE FROM {ks}.log_days WHERE tenant = ? AND kind = ? AND day = ?",
            Stmt::RollupDelete => {
                "DELETE FROM {ks}.rollups WHERE tenant = ? AND event_type = ? AND hour_ms = ? AND project = ?"
            }
            Stmt::ApiKeyPut => "INSERT INTO {ks}.api_keys (hash, tenant) VALUES (?, ?)",
            Stmt::TenantApiKeyPut => "INSERT INTO {ks}.tenant_api_keys (tenant, hash) VALUES (?, ?)",
            Stmt::ApiKeyRow => "SELECT tenant FROM {ks}.api_keys WHERE hash = ?",
            Stmt::TenantApiKeys => "SELECT hash FROM {ks}.tenant_api_keys WHERE tenant = ?",
            Stmt::ApiKeyDelete => "DELETE FROM {ks}.api_keys WHERE hash = ?",
            Stmt::TenantApiKeyDelete => "DELETE FROM {ks}.tenant_api_keys WHERE tenant = ? AND hash = ?",
            Stmt::BarPut => "INSERT INTO {ks}.tenant_bars (bucket, tenant, bar_id) VALUES (0, ?, ?) IF NOT EXISTS",
            Stmt::Bars => "SELECT tenant, bar_id FROM {ks}.tenant_bars WHERE bucket = 0",
            Stmt::BarDelete => "DELETE FROM {ks}.tenant_bars WHERE bucket = 0 AND tenant = ? IF EXISTS",
            Stmt::BarConfirm => {
                "INSERT INTO {ks}.tenant_bar_confirmations (region, tenant, shard, bar_id) VALUES (?, ?, ?, ?)"
            }
            Stmt::BarConfirmations => {
                "SELECT shard, bar_id FROM {ks}.tenant_bar_confirmations WHERE region = ? AND tenant = ?"
            }
        }
    }

    /// The config name of its consistency setting (`iris_config::SCYLLA_STATEMENTS`).
    pub fn setting(self) -> &'static str {
        match self {
            Stmt::AppendChecked | Stmt::Unappend => "append_checked",
            Stmt::RollupAdd => "rollup_add",
            Stmt::Head | Stmt::MetaRow | Stmt::Contacts | Stmt::Identities | Stmt::Policies => "load_user",
            Stmt::DedupRow => "dedup",
            Stmt::InboxAfter | Stmt::InboxRange => "read_inbox",
            Stmt::Receipts => "receipts",
            Stmt::SessionRow => "session",
            Stmt::EventRow => "event_seen",
            Stmt::LogDays | Stmt::LogPage | Stmt::LogTenants | Stmt::LogDaysUpTo => "read_log",
            Stmt::RollupsOfType | Stmt::RollupsAll | Stmt::RollupTenants => "rollups",
            Stmt::ApiKeyRow | Stmt::TenantApiKeys => "api_keys",
            _ => "write",
        }
    }

    /// Safe to send twice (the driver may retry it on another node).
    /// Counter increments are not; conditional writes are retried by Paxos
    /// itself, not by the driver.
    pub fn idempotent(self) -> bool {
        !matches!(self, Stmt::RollupAdd | Stmt::AppendChecked | Stmt::Unappend | Stmt::BarPut | Stmt::BarDelete)
    }

    /// How many values it binds.
    pub fn params(self) -> usize {
        self.cql().matches('?').count()
    }

    /// Its table and how many leading values name the row it writes.
    pub fn row_key(self) -> Option<(&'static str, usize)> {
        Some(match self {
            Stmt::Append | Stmt::AppendChecked | Stmt::Unappend => ("inbox", 3),
            Stmt::Dedup => ("dedup", 3),
            Stmt::Meta => ("inbox_state", 2),
            Stmt::Contact | Stmt::ContactRemoved => ("contacts", 3),
            Stmt::Identity => ("identities", 3),
            Stmt::Policy => ("circle_policies", 3),
            Stmt::Receipt | Stmt::ReceiptDelivered => ("receipts", 3),
            Stmt::Log => ("logs", 5),
            Stmt::LogDay => ("log_days", 3),
            Stmt::EventSeen => ("event_keys", 3),
            Stmt::Session => ("sessions", 2),
            _ => return None,
        })
    }
}

/// Keeps only the last write to each row (all writes of a batch share one
/// timestamp, and at equal timestamps a delete wins over an insert and the
/// larger value over the smaller, so "in order" must be made explicit).
/// Counter increments are kept as they are: they add up.
pub fn coalesce(writes: Vec<Bound>) -> Vec<Bound> {
    // Key values are text and integers, whose debug form is exact.
    let key = |w: &Bound| w.stmt.row_key().map(|(table, n)| format!("{table}{:?}", &w.values[..n]));
    let mut last = std::collections::HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        if let Some(k) = key(w) {
            last.insert(k, i);
        }
    }
    writes
        .into_iter()
        .enumerate()
        .filter(|(i, w)| key(w).is_none_or(|k| last.get(&k) == Some(i)))
        .map(|(_, w)| w)
        .collect()
}

/// About how many bytes a write's values take on the wire.
pub fn size_of(w: &Bound) -> usize {
    w.values
        .iter()
        .map(|v| match v {
            Some(CqlValue::Text(s)) => s.len() + 4,
            Some(CqlValue::Blob(b)) => b.len() + 4,
            Some(CqlValue::List(items)) => items.len() * 16 + 4,
            _ => 12,
        })
        .sum()
}

/// A write ready to go: a statement and its values (`None` is null).
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// The statement.
    pub stmt: Stmt,
    /// Its values, in order.
    pub values: Vec<Option<CqlValue>>,
}

fn text(s: &str) -> Option<CqlValue> {
    Some(CqlValue::Text(s.to_owned()))
}

fn big(n: i64) -> Option<CqlValue> {
    Some(CqlValue::BigInt(n))
}

fn seq_value(seq: InboxSeq) -> Option<CqlValue> {
    big(seq as i64)
}

fn texts(items: &[String]) -> Option<CqlValue> {
    Some(CqlValue::List(items.iter().map(|s| CqlValue::Text(s.clone())).collect()))
}

/// The name of a log kind in the `logs` table.
pub fn kind_name(kind: LogKind) -> &'static str {
    match kind {
        LogKind::Graph => "graph",
        LogKind::Events => "events",
    }
}

/// A receipt state as stored.
pub fn state_name(state: ReceiptState) -> &'static str {
    match state {
        ReceiptState::Delivered => "delivered",
        ReceiptState::Read => "read",
    }
}

/// Log seqs: time-ordered and strictly increasing within a process. A seq
/// is `(ms << 21) | (counter << 10) | writer`: milliseconds since the
/// epoch, a per-millisecond counter (borrowing the next millisecond when
/// 2048 are used) and 10 bits of this process's writer id. Entries of
/// different processes are ordered by their clocks; they never overwrite
/// each other, because the full 64-bit writer id is part of the row's key
/// (docs/adr/0011-inbox-seq-ownership.md).
#[derive(Debug)]
pub struct LogSeqs {
    /// The last `(ms << 11) | counter` handed out.
    last: AtomicI64,
    writer: i64,
}

const WRITER_BITS: u32 = 10;
const COUNTER_BITS: u32 = 11;
const MS_PER_DAY: i64 = 86_400_000;

impl LogSeqs {
    /// Seqs of the writer with this id (random per process in the store).
    pub fn new(writer: i64) -> Self {
        Self { last: AtomicI64::new(0), writer }
    }

    /// The writer id, stored with each entry.
    pub fn writer(&self) -> i64 {
        self.writer
    }

    /// The next seq at `now_ms` (milliseconds since the epoch).
    pub fn next(&self, now_ms: i64) -> i64 {
        let floor = now_ms.max(0) << COUNTER_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = floor.max(last + 1);
            match self.last.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return (next << WRITER_BITS) | (self.writer & ((1 << WRITER_BITS) - 1)),
                Err(seen) => last = seen,
            }
        }
    }
}

/// The day partition of a log seq.
pub fn day_of(seq: i64) -> i32 {
    ((seq.max(0) >> (WRITER_BITS + COUNTER_BITS)) / MS_PER_DAY) as i32
}

/// The retention of dedup records and event keys and the lifetime of
/// session records, seconds.
#[derive(Debug, Clone, Copy)]
pub struct Ttls {
    /// Dedup records and event keys.
    pub retention_secs: i32,
    /// Session records.
    pub session_secs: i32,
}

/// The writes of one op. Counter increments come out as [`Stmt::RollupAdd`]
/// (they go in a counter batch of their own); inbox appends as
/// [`Stmt::Append`], which the store turns into [`Stmt::AppendChecked`]
/// where it must.
pub fn bind(op: WriteOp, ttl: Ttls, log_seq: &mut dyn FnMut() -> (i64, i64)) -> Vec<Bound> {
    let b = |stmt: Stmt, values: Vec<Option<CqlValue>>| Bound { stmt, values };
    match op {
        WriteOp::Message { user, message } => vec![b(Stmt::Append, append_values(&user, &message))],
        WriteOp::Dedup { key, record } => vec![b(
            Stmt::Dedup,
            vec![
                text(&key.sender.tenant),
                text(&key.sender.user),
                text(&key.client_id),
                text(&record.msg_id),
                big(record.ts),
                text(&record.to),
                seq_value(record.seq),
                Some(CqlValue::Int(ttl.retention_secs)),
            ],
        )],
        WriteOp::Meta { user, meta, .. } => vec![b(
            Stmt::Meta,
            vec![
                text(&user.tenant),
                text(&user.user),
                seq_value(meta.acked),
                seq_value(meta.read),
                meta.invisible_since.and_then(big),
                meta.last_seen.and_then(big),
                meta.status_at.and_then(big),
            ],
        )],
        WriteOp::Contact { owner, contact, record } => vec![b(
            Stmt::Contact,
            vec![text(&owner.tenant), text(&owner.user), text(&contact), text(&record.circle), texts(&record.channels)],
        )],
        WriteOp::ContactRemoved { owner, contact } => {
            vec![b(Stmt::ContactRemoved, vec![text(&owner.tenant), text(&owner.user), text(&contact)])]
        }
        WriteOp::Identity { user, channel } => {
            vec![b(Stmt::Identity, vec![text(&user.tenant), text(&user.user), text(&channel)])]
        }
        WriteOp::Policy { owner, circle, policy } => vec![b(
            Stmt::Policy,
            vec![
                text(&owner.tenant),
                text(&owner.user),
                text(&circle),
                Some(CqlValue::Boolean(policy.presence)),
                Some(CqlValue::Boolean(policy.last_seen)),
            ],
        )],
        WriteOp::Receipt { user, receipt } => vec![b(
            Stmt::Receipt,
            vec![
                text(&user.tenant),
                text(&user.user),
                text(&receipt.msg_id),
                text(&receipt.by),
                text(state_name(receipt.state)),
            ],
        )],
        WriteOp::ReceiptsDelivered { user, msg_ids } => msg_ids
            .iter()
            .map(|id| b(Stmt::ReceiptDelivered, vec![text(&user.tenant), text(&user.user), text(id)]))
            .collect(),
        WriteOp::Log { kind, tenant, record } => {
            let (seq, writer) = log_seq();
            let day = Some(CqlValue::Int(day_of(seq)));
            vec![
                b(
                    Stmt::Log,
                    vec![
                        text(&tenant),
                        text(kind_name(kind)),
                        day.clone(),
                        big(seq),
                        big(writer),
                        Some(CqlValue::Blob(record.to_vec())),
                    ],
                ),
                b(Stmt::LogDay, vec![text(&tenant), text(kind_name(kind)), day]),
            ]
        }
        WriteOp::EventSeen { key, ts } => vec![b(
            Stmt::EventSeen,
            vec![
                text(&key.tenant),
                text(&key.stream),
                text(&key.key),
                big(ts),
                Some(CqlValue::Int(ttl.retention_secs)),
            ],
        )],
        // Not fenced by version yet (ADR 0021): last writer wins.
        WriteOp::Session { user, record, version: _ } => vec![b(
            Stmt::Session,
            vec![
                text(&user.tenant),
                text(&user.user),
                texts(&record.nodes),
                text(&record.region),
                Some(CqlValue::Int(record.sessions.min(i32::MAX as u32) as i32)),
                record.last_seen.and_then(big),
                Some(CqlValue::Int(ttl.session_secs)),
            ],
        )],
        WriteOp::RollupAdd { key, by } => vec![b(
            Stmt::RollupAdd,
            vec![
                Some(CqlValue::Counter(scylla::value::Counter(by.min(i64::MAX as u64) as i64))),
                text(&key.tenant),
                text(&key.event_type),
                big(key.hour_ms),
                text(&key.project),
            ],
        )],
    }
}

/// The values of an inbox append (both kinds).
pub fn append_values(user: &UserKey, m: &StoredMessage) -> Vec<Option<CqlValue>> {
    vec![
        text(&user.tenant),
        text(&user.user),
        seq_value(m.seq),
        text(&m.msg_id),
        text(&m.from),
        Some(CqlValue::Blob(m.body.to_vec())),
        Some(CqlValue::Timestamp(CqlTimestamp(m.ts))),
    ]
}

/// The values that take back a checked append.
pub fn unappend_values(user: &UserKey, m: &StoredMessage) -> Vec<Option<CqlValue>> {
    vec![text(&user.tenant), text(&user.user), seq_value(m.seq), text(&m.msg_id)]
}

fn seq_of(n: i64, what: &'static str) -> Result<InboxSeq, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(what))
}

/// An inbox row: seq, msg_id, sender_id, body, created_at.
pub type InboxRow = (i64, String, String, Vec<u8>, CqlTimestamp);

/// Maps an inbox row to a message.
pub fn message(row: InboxRow) -> Result<StoredMessage, StoreError> {
    let (seq, msg_id, from, body, ts) = row;
    if seq < 1 {
        return Err(StoreError::Corrupt("inbox seq"));
    }
    Ok(StoredMessage { seq: seq as u64, msg_id: msg_id.into(), from: from.into(), body: Bytes::from(body), ts: ts.0 })
}

/// An inbox state row: acked, read_upto, invisible_since, last_seen, status_at.
pub type MetaRow = (Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// Maps an inbox state row to a user's meta.
pub fn meta(row: MetaRow) -> Result<UserMeta, StoreError> {
    let (acked, read, invisible_since, last_seen, status_at) = row;
    Ok(UserMeta {
        acked: seq_of(acked.unwrap_or(0), "inbox_state.acked")?,
        read: seq_of(read.unwrap_or(0), "inbox_state.read_upto")?,
        invisible_since,
        last_seen,
        status_at,
    })
}

/// A dedup row: msg_id, ts, to_user, seq.
pub type DedupRow = (String, i64, String, i64);

/// Maps a dedup row to a record.
pub fn dedup(row: DedupRow) -> Result<DedupRecord, StoreError> {
    let (msg_id, ts, to, seq) = row;
    Ok(DedupRecord { msg_id: msg_id.into(), ts, to: to.into(), seq: seq_of(seq, "dedup.seq")? })
}

/// A receipt row: msg_id, by_user, state.
pub type ReceiptRow = (String, String, String);

/// Maps a receipt row.
pub fn receipt(row: ReceiptRow) -> Result<PendingReceipt, StoreError> {
    let (msg_id, by, state) = row;
    let state = match state.as_str() {
        "delivered" => ReceiptState::Delivered,
        "read" => ReceiptState::Read,
        _ => return Err(StoreError::Corrupt("receipts.state")),
    };
    Ok(PendingReceipt { msg_id: msg_id.into(), by: by.into(), state })
}

/// A session row: nodes, region, sessions, last_seen.
pub type SessionRow = (Option<Vec<String>>, Option<String>, Option<i32>, Option<i64>);

/// Maps a session row.
pub fn session(row: SessionRow) -> Result<SessionRecord, StoreError> {
    let (nodes, region, sessions, last_seen) = row;
    Ok(SessionRecord {
        nodes: nodes.unwrap_or_default(),
        region: region.unwrap_or_default(),
        sessions: u32::try_from(sessions.unwrap_or(0)).map_err(|_| StoreError::Corrupt("sessions.sessions"))?,
        last_seen,
    })
}

/// A rollup row: event_type, hour_ms, project, n.
pub type RollupRow = (String, i64, String, scylla::value::Counter);

/// Maps a rollup row.
pub fn rollup(tenant: &str, row: RollupRow) -> Result<(RollupKey, u64), StoreError> {
    let (event_type, hour_ms, project, n) = row;
    let n = u64::try_from(n.0).map_err(|_| StoreError::Corrupt("rollups.n"))?;
    Ok((RollupKey { tenant: tenant.into(), event_type: event_type.into(), project: project.into(), hour_ms }, n))
}

/// What a conditional append found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The row was written.
    Applied,
    /// The seq holds a message with this id.
    Held(String),
}

/// Reads the answer of `INSERT ... IF NOT EXISTS` (or `DELETE ... IF`):
/// `[applied]`, and when not applied, the row as it is.
pub fn outcome(columns: &[&str], row: &Row) -> Result<Outcome, StoreError> {
    let col = |name: &str| columns.iter().position(|c| *c == name).and_then(|i| row.columns.get(i)?.as_ref());
    match col("[applied]") {
        Some(CqlValue::Boolean(true)) => Ok(Outcome::Applied),
        Some(CqlValue::Boolean(false)) => match col("msg_id") {
            Some(CqlValue::Text(id)) => Ok(Outcome::Held(id.clone())),
            _ => Ok(Outcome::Held(String::new())),
        },
        _ => Err(StoreError::Corrupt("conditional write answer")),
    }
}

/// Reads the answer of a bar's `INSERT ... IF NOT EXISTS`: `None` when it
/// was applied, else the id of the bar that holds.
pub fn bar_held(columns: &[&str], row: &Row) -> Result<Option<i64>, StoreError> {
    let col = |name: &str| columns.iter().position(|c| *c == name).and_then(|i| row.columns.get(i)?.as_ref());
    match (col("[applied]"), col("bar_id")) {
        (Some(CqlValue::Boolean(true)), _) => Ok(None),
        (Some(CqlValue::Boolean(false)), Some(CqlValue::BigInt(id))) => Ok(Some(*id)),
        _ => Err(StoreError::Corrupt("conditional write answer")),
    }
}

/// Parses a consistency level as the config names it.
pub fn consistency(name: &str) -> Option<scylla::statement::Consistency> {
    use scylla::statement::Consistency as C;
    Some(match name {
        "ANY" => C::Any,
        "ONE" => C::One,
        "TWO" => C::Two,
        "THREE" => C::Three,
        "QUORUM" => C::Quorum,
        "ALL" => C::All,
        "LOCAL_QUORUM" => C::LocalQuorum,
        "EACH_QUORUM" => C::EachQuorum,
        "LOCAL_ONE" => C::LocalOne,
        _ => return None,
    })
}

/// Parses a serial consistency level.
pub fn serial_consistency(name: &str) -> Option<scylla::statement::SerialConsistency> {
    use scylla::statement::SerialConsistency as S;
    match name {
        "SERIAL" => Some(S::Serial),
        "LOCAL_SERIAL" => Some(S::LocalSerial),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables the migrations create, and their columns.
    fn schema() -> Vec<(String, Vec<String>)> {
        let mut tables = Vec::new();
        for m in MIGRATIONS {
            for s in m.statements {
                if let Some((name, col)) = added_column(s) {
                    let table: &mut (String, Vec<String>) = tables.iter_mut().find(|(t, _)| t == name).unwrap();
                    table.1.push(col.to_owned());
                    continue;
                }
                let Some(rest) = s.strip_prefix("CREATE TABLE IF NOT EXISTS {ks}.") else { continue };
                let (name, rest) = rest.split_once(" (").unwrap();
                let body = rest.split(", PRIMARY KEY").next().unwrap();
                let cols = body.split(", ").map(|c| c.split(' ').next().unwrap().to_owned()).collect();
                tables.push((name.to_owned(), cols));
            }
        }
        tables
    }

    #[test]
    fn migrations_are_ordered_idempotent_and_refuse_a_newer_schema() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version), "versions increase");
        assert_eq!(MIGRATIONS[0].version, 1);
        for m in MIGRATIONS {
            for s in m.statements {
                assert!(
                    (s.contains("IF NOT EXISTS") || added_column(s).is_some()) && s.contains("{ks}."),
                    "step {} is idempotent and qualified: {s}",
                    m.version
                );
            }
        }
        let all: Vec<u32> = pending(&BTreeSet::new()).unwrap().iter().map(|m| m.version).collect();
        assert_eq!(all, MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>());
        assert!(pending(&MIGRATIONS.iter().map(|m| m.version).collect()).unwrap().is_empty(), "run twice: nothing");
        let e = pending(&[1, 99].into_iter().collect()).unwrap_err();
        assert!(e.contains("99") && e.contains("upgrade"), "{e}");
        for s in bootstrap("iris") {
            assert!(s.starts_with("CREATE TABLE IF NOT EXISTS iris."), "{s}");
        }
    }

    #[test]
    fn the_inbox_follows_the_seed_design() {
        let inbox = MIGRATIONS[0].statements[0];
        assert!(inbox.contains("PRIMARY KEY ((tenant, user_id), seq)"), "{inbox}");
        assert!(inbox.contains("CLUSTERING ORDER BY (seq DESC)"), "{inbox}");
    }

    #[test]
    fn keyspace_replication_is_rendered_from_the_config() {
        let cfg = |extra: &str| {
            let toml = format!(
                "roles = [\"core\", \"router\"]\n[cluster]\nkafka = \"k:9092\"\n[storage]\nbackend = \"scylla\"\n\
                 [storage.scylla]\nnodes = [\"n:9042\"]\nkeyspace = \"chat\"\n{extra}"
            );
            iris_config::Config::from_toml(&toml).unwrap().storage.scylla.unwrap()
        };
        assert_eq!(
            keyspace(&cfg("replication_factor = 1\n")),
            "CREATE KEYSPACE IF NOT EXISTS chat WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        assert_eq!(
            keyspace(&cfg("replication_class = \"NetworkTopologyStrategy\"\ndatacenters = { dc1 = 3, dc2 = 2 }\n")),
            "CREATE KEYSPACE IF NOT EXISTS chat WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2} \
             AND tablets = {'enabled': false}"
        );
        let cassandra =
            "replication_class = \"NetworkTopologyStrategy\"\ndatacenters = { dc1 = 3 }\ndisable_tablets = false\n";
        assert!(!keyspace(&cfg(cassandra)).contains("tablets"), "Cassandra does not know tablets");
    }

    #[test]
    fn statements_name_only_tables_and_columns_the_schema_has() {
        let schema = schema();
        for stmt in Stmt::ALL {
            let cql = stmt.cql();
            let table = cql.split("{ks}.").nth(1).unwrap().split([' ', '(']).next().unwrap();
            let (_, cols) =
                schema.iter().find(|(t, _)| t == table).unwrap_or_else(|| panic!("{stmt:?}: no table {table}"));
            // Every identifier-like word that is a column somewhere must be a column of this table.
            let all_cols: BTreeSet<&str> = schema.iter().flat_map(|(_, c)| c.iter().map(String::as_str)).collect();
            for word in cql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if all_cols.contains(word) && word != table {
                    assert!(cols.iter().any(|c| c == word), "{stmt:?}: {table} has no column {word}");
                }
            }
            let setting = stmt.setting();
            assert!(iris_config::SCYLLA_STATEMENTS.iter().any(|(s, _)| *s == setting), "{stmt:?}: setting {setting}");
        }
    }

    fn all_ops() -> Vec<WriteOp> {
        let u = UserKey::new("t", "bob");
        vec![
            WriteOp::Message {
                user: u.clone(),
                message: StoredMessage {
                    seq: 7,
                    msg_id: "m7".into(),
                    from: "alice".into(),
                    body: Bytes::from("hi"),
                    ts: 42,
                },
            },
            WriteOp::Dedup {
                key: DedupKey { sender: UserKey::new("t", "alice"), client_id: "c1".into() },
                record: DedupRecord { msg_id: "m7".into(), ts: 42, to: "bob".into(), seq: 7 },
            },
            WriteOp::Meta {
                user: u.clone(),
                meta: UserMeta { acked: 3, read: 2, invisible_since: None, last_seen: Some(9), status_at: Some(8) },
                version: 0,
            },
            WriteOp::Contact {
                owner: u.clone(),
                contact: "carol".into(),
                record: Contact { circle: "family".into(), channels: vec!["tel:1".into()] },
            },
            WriteOp::ContactRemoved { owner: u.clone(), contact: "dan".into() },
            WriteOp::Identity { user: u.clone(), channel: "tel:2".into() },
            WriteOp::Policy {
                owner: u.clone(),
                circle: "family".into(),
                policy: CirclePolicy { presence: true, last_seen: false },
            },
            WriteOp::Receipt {
                user: u.clone(),
                receipt: PendingReceipt { msg_id: "m1".into(), by: "carol".into(), state: ReceiptState::Read },
            },
            WriteOp::ReceiptsDelivered { user: u.clone(), msg_ids: vec!["m1".into(), "m2".into()] },
            WriteOp::Log { kind: LogKind::Graph, tenant: "t".into(), record: Bytes::from("{}") },
            WriteOp::EventSeen { key: EventKey { tenant: "t".into(), stream: "s".into(), key: "k".into() }, ts: 5 },
            WriteOp::Session {
                user: u.clone(),
                record: SessionRecord { nodes: vec!["e1".into()], region: "r".into(), sessions: 2, last_seen: None },
                version: 0,
            },
            WriteOp::RollupAdd {
                key: RollupKey {
                    tenant: "t".into(),
                    event_type: "click".into(),
                    project: "p".into(),
                    hour_ms: 3_600_000,
                },
                by: 4,
            },
        ]
    }

    #[test]
    fn every_write_binds_as_many_values_as_its_statement_has_markers() {
        let ttl = Ttls { retention_secs: 691_200, session_secs: 86_400 };
        let seqs = LogSeqs::new(1);
        let mut seq = || (seqs.next(1_700_000_000_000), seqs.writer());
        let mut seen = BTreeSet::new();
        for op in all_ops() {
            for b in bind(op, ttl, &mut seq) {
                assert_eq!(b.values.len(), b.stmt.params(), "{:?}", b.stmt);
                seen.insert(format!("{:?}", b.stmt));
            }
        }
        assert_eq!(seen.len(), 14, "every write statement was bound: {seen:?}");
        let m = StoredMessage { seq: 7, msg_id: "m7".into(), from: "a".into(), body: Bytes::new(), ts: 1 };
        assert_eq!(append_values(&UserKey::new("t", "u"), &m).len(), Stmt::AppendChecked.params());
        assert_eq!(unappend_values(&UserKey::new("t", "u"), &m).len(), Stmt::Unappend.params());
    }

    #[test]
    fn bindings_carry_the_record_and_the_ttls() {
        let ttl = Ttls { retention_secs: 100, session_secs: 200 };
        let mut seq = || (5, 9);
        let ops = all_ops();
        let dedup = bind(ops[1].clone(), ttl, &mut seq);
        assert_eq!(
            dedup[0].values,
            vec![
                text("t"),
                text("alice"),
                text("c1"),
                text("m7"),
                big(42),
                text("bob"),
                big(7),
                Some(CqlValue::Int(100))
            ]
        );
        let meta = bind(ops[2].clone(), ttl, &mut seq);
        assert_eq!(meta[0].values[4], None, "no invisibility is a null");
        assert_eq!(meta[0].values[5], big(9));
        let session = bind(ops[11].clone(), ttl, &mut seq);
        assert_eq!(session[0].values.last().unwrap(), &Some(CqlValue::Int(200)));
        let delivered = bind(ops[8].clone(), ttl, &mut seq);
        assert_eq!(delivered.len(), 2, "one delete per receipt");
        let rollup = bind(ops[12].clone(), ttl, &mut seq);
        assert_eq!(
            rollup[0].values[0],
            Some(CqlValue::Counter(scylla::value::Counter(4))),
            "the increment comes first, as the UPDATE reads, typed as a counter"
        );
        let log = bind(ops[9].clone(), ttl, &mut seq);
        assert_eq!((log[0].stmt, log[1].stmt), (Stmt::Log, Stmt::LogDay));
        assert_eq!(log[0].values[2], log[1].values[2], "the entry and its day agree");
    }

    #[test]
    fn the_last_write_to_a_row_wins_within_a_commit() {
        let ttl = Ttls { retention_secs: 1, session_secs: 1 };
        let mut seq = || (1, 1);
        let u = UserKey::new("t", "bob");
        let ops = vec![
            WriteOp::ContactRemoved { owner: u.clone(), contact: "carol".into() },
            WriteOp::Contact { owner: u.clone(), contact: "carol".into(), record: Contact::default() },
            WriteOp::Meta { user: u.clone(), meta: UserMeta { acked: 5, ..Default::default() }, version: 0 },
            WriteOp::Meta { user: u.clone(), meta: UserMeta { acked: 3, ..Default::default() }, version: 0 },
            WriteOp::Contact { owner: u.clone(), contact: "dan".into(), record: Contact::default() },
            WriteOp::ContactRemoved { owner: u.clone(), contact: "dan".into() },
        ];
        let writes: Vec<Bound> = ops.into_iter().flat_map(|op| bind(op, ttl, &mut seq)).collect();
        let kept = coalesce(writes);
        let stmts: Vec<Stmt> = kept.iter().map(|w| w.stmt).collect();
        assert_eq!(stmts, vec![Stmt::Contact, Stmt::Meta, Stmt::ContactRemoved], "one write per row, the last");
        assert_eq!(kept[1].values[2], big(3), "the later meta, even though smaller");
        for stmt in Stmt::ALL {
            if let Some((table, n)) = stmt.row_key() {
                assert!(stmt.cql().contains(&format!("{{ks}}.{table} ")), "{stmt:?} writes {table}");
                assert!(n <= stmt.params(), "{stmt:?}");
            }
        }
    }

    #[test]
    fn rows_map_back_and_bad_rows_are_corrupt() {
        let m = message((3, "m3".into(), "alice".into(), b"hi".to_vec(), CqlTimestamp(77))).unwrap();
        assert_eq!(
            m,
            StoredMessage { seq: 3, msg_id: "m3".into(), from: "alice".into(), body: Bytes::from("hi"), ts: 77 }
        );
        assert!(matches!(message((0, "m".into(), "a".into(), vec![], CqlTimestamp(0))), Err(StoreError::Corrupt(_))));
        assert_eq!(meta((None, None, None, None, None)).unwrap(), UserMeta::default());
        assert_eq!(
            meta((Some(4), Some(2), Some(10), None, Some(11))).unwrap(),
            UserMeta { acked: 4, read: 2, invisible_since: Some(10), last_seen: None, status_at: Some(11) }
        );
        assert!(meta((Some(-1), None, None, None, None)).is_err());
        assert_eq!(dedup(("m".into(), 1, "bob".into(), 9)).unwrap().seq, 9);
        assert_eq!(receipt(("m".into(), "b".into(), "read".into())).unwrap().state, ReceiptState::Read);
        assert!(receipt(("m".into(), "b".into(), "seen".into())).is_err());
        assert_eq!(
            session((None, None, None, Some(5))).unwrap(),
            SessionRecord { last_seen: Some(5), ..Default::default() }
        );
        let (k, n) = rollup("t", ("click".into(), 3_600_000, "p".into(), scylla::value::Counter(6))).unwrap();
        assert_eq!((k.event_type.as_ref(), k.hour_ms, n), ("click", 3_600_000, 6));
        assert!(rollup("t", ("click".into(), 0, "p".into(), scylla::value::Counter(-1))).is_err());
    }

    #[test]
    fn conditional_answers_are_read_by_column_name() {
        let row = |cols: Vec<Option<CqlValue>>| Row { columns: cols };
        let names = ["[applied]", "tenant", "user_id", "seq", "body", "created_at", "msg_id", "sender_id"];
        assert_eq!(outcome(&["[applied]"], &row(vec![Some(CqlValue::Boolean(true))])).unwrap(), Outcome::Applied);
        let held = row(vec![
            Some(CqlValue::Boolean(false)),
            text("t"),
            text("u"),
            big(1),
            None,
            None,
            text("other"),
            text("a"),
        ]);
        assert_eq!(outcome(&names, &held).unwrap(), Outcome::Held("other".into()));
        assert!(outcome(&["seq"], &row(vec![big(1)])).is_err());
        let bar = ["[applied]", "bucket", "tenant", "bar_id"];
        assert_eq!(bar_held(&["[applied]"], &row(vec![Some(CqlValue::Boolean(true))])).unwrap(), None);
        let held = row(vec![Some(CqlValue::Boolean(false)), Some(CqlValue::Int(0)), text("t"), big(7)]);
        assert_eq!(bar_held(&bar, &held).unwrap(), Some(7));
        assert!(bar_held(&bar[..2], &row(vec![Some(CqlValue::Boolean(false)), Some(CqlValue::Int(0))])).is_err());
    }

    #[test]
    fn log_seqs_increase_fall_in_their_day_and_differ_by_writer() {
        let seqs = LogSeqs::new(5);
        let day = 20_000i64;
        let now = day * MS_PER_DAY + 5;
        let a = seqs.next(now);
        let b = seqs.next(now);
        let c = seqs.next(now - 1_000);
        assert!(a < b && b < c, "strictly increasing even when the clock steps back");
        assert_eq!(day_of(a), day as i32);
        assert_eq!(day_of(seqs.next((day + 1) * MS_PER_DAY)), day as i32 + 1);
        let many: Vec<i64> = (0..5_000).map(|_| seqs.next(now + 10)).collect();
        assert!(many.windows(2).all(|w| w[0] < w[1]), "more than 2048 in a millisecond still increase");
        let other = LogSeqs::new(6);
        assert_ne!(LogSeqs::new(5).next(now), other.next(now), "two writers in the same millisecond differ");
    }

    #[test]
    fn consistency_names_parse_as_the_config_allows() {
        for level in iris_config::CQL_CONSISTENCY_LEVELS {
            assert!(consistency(level).is_some(), "{level}");
        }
        for (_, default) in iris_config::SCYLLA_STATEMENTS {
            assert!(consistency(default).is_some(), "{default}");
        }
        assert!(consistency("local_quorum").is_none());
        assert!(serial_consistency("LOCAL_SERIAL").is_some() && serial_consistency("ONE").is_none());
    }
}
