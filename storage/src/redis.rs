//! The Redis backend (fred), for small and medium regions and as the shared
//! store of multi-node tests.
//!
//! Layout (every key part is separated by NUL, which names never contain):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `inbox\0T\0U` | sorted set | messages, score = seq |
//! | `dedup\0T\0SENDER\0ID` | string, TTL | a send's first answer |
//! | `meta\0T\0U` / `metav\0T\0U` | string / string | acks, read, presence that must survive / the version that wrote it (ADR 0021; one more key per user, about 60 bytes, kept as long as the meta) |
//! | `contacts\0T\0U` | hash | contact → circle and channels |
//! | `ids\0T\0U` | set | verified channels |
//! | `policies\0T\0U` | hash | circle → policy |
//! | `receipts\0T\0U` | hash | msg id → receipt waiting for its sender |
//! | `log\0K\0T` / `logseq\0K\0T` | sorted set / counter | a tenant's log |
//! | `event\0T\0S\0KEY` | string, TTL | an ingested event's idempotency key |
//! | `rollup\0T\0TYPE` / `rolluptypes\0T` | hash / set | hourly counters |
//! | `outbox\0R\0SHARD` / `outboxpos\0R\0SHARD` | sorted set / counter | log records to publish (ADR 0022) |
//! | `apikey\0HASH` / `apikeys\0T` | string / set | an API key's tenant / a tenant's key hashes |
//! | `retained` | set | tenants with a log or rollups (what retention sweeps visit) |
//!
//! A batch is one Lua script: it applies atomically, nothing interleaves. Durability is Redis's own (AOF `appendfsync always` for `accepted`
//! to mean "on disk"; see docs/operations.md).

use crate::keys::{dec, dec_meta, enc};
use crate::*;
use bytes::Bytes;
use fred::prelude::*;
use fred::types::Key;
use std::collections::HashMap;

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// How long dedup records and event keys are kept, seconds.
    pub retention_secs: i64,
    /// How long a `session:{tenant}:{user}` record lives, seconds.
    pub session_ttl_secs: i64,
}

/// The Redis-backed store.
pub struct RedisStore {
    /// Every command fails at once while the connection is down or being
    /// made again (fred's `fail_fast`), rather than waiting in fred's queue
    /// for a reconnection until its 5 s timeout (see [`RedisStore::connect`]).
    /// Except Lua scripts: they go through [`RedisStore::scripts`].
    client: fred::clients::WithOptions<Client>,
    retention_secs: i64,
    session_ttl_secs: i64,
    /// The SHA1 of [`APPLY_BATCH`] as Redis named it (`SCRIPT LOAD`), once
    /// known: commits send `EVALSHA` with it rather than the 2.5 KB script.
    apply_batch_sha: std::sync::OnceLock<String>,
    /// The connection's watchdog ([`watch`]), stopped with the store.
    watchdog: tokio::task::AbortHandle,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.watchdog.abort();
    }
}

/// Barred tenants: tenant → bar id (ADR 0030).
const BARS: &str = "barred";

/// The documented lookup key other services read: `session:{tenant}:{user}`.
fn session_key(u: &UserKey) -> Key {
    Key::from(format!("session:{}:{}", u.tenant, u.user).as_str())
}

/// The users of a tenant that have a session record (they may have
/// nothing else), for deleting the tenant.
fn session_users_key(tenant: &str) -> Key {
    key(&[b"sessusers", tenant.as_bytes()])
}

/// The version of a user's session record (ADR 0021), beside the record.
fn session_version_key(u: &UserKey) -> Key {
    Key::from(format!("sessionv:{}:{}", u.tenant, u.user).as_str())
}

fn key(parts: &[&[u8]]) -> Key {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    Key::from(k.into_boxed_slice())
}

fn user(kind: &str, u: &UserKey) -> Key {
    key(&[kind.as_bytes(), u.tenant.as_bytes(), u.user.as_bytes()])
}

fn log_kind(kind: LogKind) -> &'static [u8] {
    match kind {
        LogKind::Graph => b"graph",
        LogKind::Events => b"events",
    }
}

/// The byte an outbox entry names its log by.
fn kind_byte(kind: LogKind) -> u8 {
    match kind {
        LogKind::Graph => b'g',
        LogKind::Events => b'e',
    }
}

fn outbox_key(id: &OutboxId) -> Key {
    key(&[b"outbox", id.region.as_bytes(), id.shard.to_string().as_bytes()])
}

fn outbox_pos_key(id: &OutboxId) -> Key {
    key(&[b"outboxpos", id.region.as_bytes(), id.shard.to_string().as_bytes()])
}

/// Reads an outbox member: position, kind, seq, tenant, NUL, record.
fn parse_outbox(m: &Bytes) -> Result<OutboxEntry, StoreError> {
    let bad = || StoreError::Corrupt("outbox entry");
    let u64_at = |at: usize| -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(m.get(at..at + 8).ok_or_else(bad)?.try_into().map_err(|_| bad())?))
    };
    let pos = u64_at(0)?;
    let kind = match m.get(8) {
        Some(b'g') => LogKind::Graph,
        Some(b'e') => LogKind::Events,
        _ => return Err(bad()),
    };
    let seq = u64_at(9)?;
    let rest = m.get(17..).ok_or_else(bad)?;
    let nul = rest.iter().position(|b| *b == 0).ok_or_else(bad)?;
    let tenant = std::str::from_utf8(&rest[..nul]).map_err(|_| bad())?;
    Ok(OutboxEntry { pos, kind, tenant: tenant.into(), seq, record: m.slice(17 + nul + 1..) })
}

/// `s` with Redis glob's special characters escaped.
fn glob_escape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for b in s {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\' | b'^' | b'-') {
            out.push(b'\\');
        }
        out.push(*b);
    }
    out
}

fn err(e: fred::error::Error) -> StoreError {
    use fred::error::ErrorKind as K;
    if e.details().contains("CONFLICT") {
        return StoreError::Conflict(e.details().into());
    }
    if e.details().contains("OUTBOXFULL") {
        return StoreError::Unavailable(e.details().into());
    }
    // A command in flight on a connection fred dropped and made again is
    // not resent (`max_command_attempts = 1`) and fails with this.
    if e.details().contains("failed write attempts") {
        return StoreError::Unavailable(e.to_string().into());
    }
    match e.kind() {
        K::IO | K::Timeout | K::Canceled | K::Backpressure => StoreError::Unavailable(e.to_string().into()),
        _ => StoreError::Backend(e.to_string().into()),
    }
}

/// Applies a whole batch atomically (a Lua script runs without anything
/// interleaving). First the count of seq checks and the count of session
/// records, then the outbox's key (empty for none), its position counter
/// and its bound (0: the batch has no log record, nothing to check); a
/// full outbox fails the script before any write (`OUTBOXFULL`). Then for
/// each inbox append its key, seq and the index of its message among the
/// arguments; a seq holding another message fails the script before any
/// write (`CONFLICT`). Then the ops, each a name and its arguments; `log`
/// appends to a tenant's log under the next seq, so log order is commit
/// order, and with an outbox puts the record in the shard's outbox too,
/// under its next position. Last the versioned records (session records
/// and metas), each checked against its stored version before any write
/// (an older one: `CONFLICT`, ADR 0021). Keys are passed as arguments:
/// this targets a single Redis, not Redis Cluster.
const APPLY_BATCH: &str = r"
local checks = tonumber(ARGV[1])
local versioned = tonumber(ARGV[2])
local outbox, outboxpos, outboxmax = ARGV[3], ARGV[4], tonumber(ARGV[5])
if outbox ~= '' and outboxmax > 0 and redis.call('ZCARD', outbox) >= outboxmax then
  return redis.error_reply('OUTBOXFULL the outbox holds ' .. outboxmax .. ' unpublished records')
end
local i = 6
for c = 1, checks do
  local held = redis.call('ZRANGEBYSCORE', ARGV[i], ARGV[i+1], ARGV[i+1])
  local mine = ARGV[tonumber(ARGV[i+2])]
  for _, m in ipairs(held) do
    if m ~= mine then return redis.error_reply('CONFLICT seq ' .. ARGV[i+1] .. ' holds another message') end
  end
  i = i + 3
end
-- Versioned records (session records and metas), last in the arguments
-- (key, value, TTL or '' for none, version key, version as fixed-width
-- hex, so strings compare as numbers): one older than the stored version
-- is a late write of an earlier owner of the user's shard, and the whole
-- batch is refused, as for a taken seq.
local n = #ARGV - 5 * versioned
for j = n + 1, #ARGV, 5 do
  local held = redis.call('GET', ARGV[j+3])
  if held and held > ARGV[j+4] then
    return redis.error_reply('CONFLICT record ' .. string.gsub(ARGV[j], '%z', '/') .. ' is newer (an earlier owner writes late)')
  end
end
while i <= n do
  local op = ARGV[i]
  if op == 'zadd' then redis.call('ZADD', ARGV[i+1], ARGV[i+2], ARGV[i+3]); i = i + 4
  elseif op == 'set' then redis.call('SET', ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'setex' then redis.call('SET', ARGV[i+1], ARGV[i+2], 'EX', ARGV[i+3]); i = i + 4
  elseif op == 'hset' then redis.call('HSET', ARGV[i+1], ARGV[i+2], ARGV[i+3]); i = i + 4
  elseif op == 'hdel' then redis.call('HDEL', ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'sadd' then redis.call('SADD', ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'hincrby' then redis.call('HINCRBY', ARGV[i+1], ARGV[i+2], ARGV[i+3]); i = i + 4
  elseif op == 'log' then
    local s = redis.call('INCR', ARGV[i+1])
    redis.call('ZADD', ARGV[i+2], s, struct.pack('>I8', s) .. ARGV[i+5])
    if outbox ~= '' then
      -- position, kind, seq, tenant, NUL, record
      local p = redis.call('INCR', outboxpos)
      redis.call('ZADD', outbox, p, struct.pack('>I8', p) .. ARGV[i+3] .. struct.pack('>I8', s) .. ARGV[i+4] .. '\0' .. ARGV[i+5])
    end
    i = i + 6
  else return redis.error_reply('unknown op ' .. tostring(op)) end
end
for j = n + 1, #ARGV, 5 do
  if ARGV[j+2] == '' then
    redis.call('SET', ARGV[j], ARGV[j+1])
    redis.call('SET', ARGV[j+3], ARGV[j+4])
  else
    redis.call('SET', ARGV[j], ARGV[j+1], 'EX', ARGV[j+2])
    redis.call('SET', ARGV[j+3], ARGV[j+4], 'EX', ARGV[j+2])
  end
end
return 1
";

/// Raises a counter to at least a value: the counter, the value.
const RAISE_POSITION: &str = r"
local held = tonumber(redis.call('GET', ARGV[1]) or '0')
if held < tonumber(ARGV[2]) then
  redis.call('SET', ARGV[1], ARGV[2])
  return 1
end
return 0
";

/// Stores a key's tenant under its hash and adds the hash to the tenant's
/// set, together: key, set, tenant, hash.
const PUT_API_KEY: &str = r"
redis.call('SET', ARGV[1], ARGV[3])
redis.call('SADD', ARGV[2], ARGV[4])
return 1
";

/// Bars a tenant unless it is barred, and answers the id of the bar that
/// holds, in one step (a lift in between cannot leave nothing to read):
/// the bars' hash, the tenant, the new id.
const BAR_TENANT: &str = r"
redis.call('HSETNX', ARGV[1], ARGV[2], ARGV[3])
return redis.call('HGET', ARGV[1], ARGV[2])
";

/// Removes the first of the tenant's keys whose hash starts with the
/// prefix: the tenant's set, the prefix, the key-name prefix. Only the
/// tenant's own set is searched, so no other tenant's key can go.
const REVOKE_API_KEY: &str = r"
for _, h in ipairs(redis.call('SMEMBERS', ARGV[1])) do
  if string.sub(h, 1, #ARGV[2]) == ARGV[2] then
    redis.call('DEL', ARGV[3] .. h)
    redis.call('SREM', ARGV[1], h)
    return 1
  end
end
return 0
";

/// How often the watchdog asks Redis whether it answers (`PING`).
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the watchdog's `PING` may go unanswered before the connection
/// is dropped and made again: the command timeout, so that the watchdog
/// gives up on a connection only when any command sent with its `PING`
/// would have failed anyway. (A `PING` waits behind the commands sent
/// before it: a Redis slowed by a disk stall or a long command is not
/// given up on sooner than its commands are.)
const WATCH_TIMEOUT: std::time::Duration = COMMAND_TIMEOUT;

/// How long a command may go unanswered; also the connection's
/// `TCP_USER_TIMEOUT` (data written but unacknowledged, or unsent behind a
/// zero window, that long drops the connection).
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The watchdog: a Redis that keeps its connection open but answers
/// nothing (frozen, or cut off with no reset) would cost every command its
/// 5 s timeout, for as long as it lasts. fred's own check for unresponsive
/// connections measures from the last write, so a connection written to
/// every few milliseconds (a core's publisher, the shards) never trips it.
/// This one asks `PING` every second; one unanswered for the command
/// timeout, on a connection that was not made again meanwhile, drops the
/// connection and makes it again (fred's `force_reconnection`). Commands
/// in flight on it fail (they are never resent), and while the new
/// connection waits for its own `PING` every command fails at once
/// (`fail_fast`). When Redis stops reading while commands are written to
/// it, fred's writer waits on the full socket and cannot take the
/// reconnection; the connection's `TCP_USER_TIMEOUT` ends that wait.
/// How the watchdog's `PING` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ping {
    /// Answered.
    Answered,
    /// Not answered within [`WATCH_TIMEOUT`].
    Unanswered,
    /// Failed another way (at once: the connection is down and being made
    /// again).
    Failed,
}

/// Whether the watchdog drops the connection after a `PING`: only one left
/// unanswered, on a connection still up and not made again meanwhile (the
/// `PING` waited on the connection that was replaced).
fn drop_connection(ping: Ping, reconnected_meanwhile: bool, connected: bool) -> bool {
    ping == Ping::Unanswered && !reconnected_meanwhile && connected
}

fn watch(client: Client) -> tokio::task::JoinHandle<()> {
    use tokio::sync::broadcast::error::TryRecvError;
    tokio::spawn(async move {
        let probe =
            fred::types::config::Options { fail_fast: true, timeout: Some(WATCH_TIMEOUT), ..Default::default() };
        let ping = client.with_options(&probe);
        let mut reconnects = client.reconnect_rx();
        // Whether fred made a connection again since the last look.
        let mut reconnected = move || {
            let mut any = false;
            loop {
                match reconnects.try_recv() {
                    Ok(_) | Err(TryRecvError::Lagged(_)) => any = true,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => return any,
                }
            }
        };
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            reconnected();
            let outcome = match ping.ping::<Value>(None).await {
                Ok(_) => Ping::Answered,
                Err(e) if *e.kind() == fred::error::ErrorKind::Timeout => Ping::Unanswered,
                Err(_) => Ping::Failed,
            };
            if !drop_connection(outcome, reconnected(), client.is_connected()) {
                continue;
            }
            tracing::warn!("Redis left a PING unanswered for 5 s: dropping the connection and connecting again");
            metrics::counter!("iris_redis_unresponsive_total").increment(1);
            // Resolves once a connection is made again, however long.
            if let Err(e) = client.force_reconnection().await {
                tracing::debug!(error = %e, "forced Redis reconnection");
            }
        }
    })
}

/// How a lost connection is made again: after 1 ms, then 2, 4, … ms up to
/// every 2 s, for ever. fred holds the client `Connected` until its first
/// attempt, and a command sent meanwhile waits (up to its timeout) instead
/// of failing fast: the first attempt comes after a millisecond or two,
/// not after 100 to 200 ms (fred's default delay and jitter). Attempts
/// against a Redis that refuses them cost a round trip each.
fn reconnect_policy() -> ReconnectPolicy {
    let mut policy = ReconnectPolicy::new_exponential(0, 1, 2_000, 2);
    policy.set_jitter(1);
    policy
}

impl RedisStore {
    /// Connects (and keeps reconnecting in the background when Redis goes
    /// away; calls meanwhile fail with `Unavailable`).
    pub async fn connect(cfg: RedisConfig) -> Result<Self, StoreError> {
        let config = Config::from_url(&cfg.url).map_err(err)?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = std::time::Duration::from_secs(5);
                c.internal_command_timeout = COMMAND_TIMEOUT;
                // A Redis that stops reading (frozen, or its host cut off)
                // while commands are written to it drops the connection
                // after this long instead of holding fred's writer on a
                // full socket (see [`watch`]).
                c.tcp = fred::types::config::TcpConfig { user_timeout: Some(COMMAND_TIMEOUT), ..Default::default() };
                // A batch script whose reply was lost may have run: sending it
                // again would append logs and add rollups twice. The shard
                // sees the failure and answers `unavailable`; clients retry
                // by id, which dedup makes safe.
                c.max_command_attempts = 1;
                // Bounded: beyond this many queued commands, calls fail fast.
                c.max_command_buffer_len = 100_000;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
            })
            .set_policy(reconnect_policy())
            .build()
            .map_err(err)?;
        client.init().await.map_err(err)?;
        // A Redis that is gone (its process stopped, its connection reset)
        // fails every command at once, not after a 5 s timeout each: a
        // shard then answers `unavailable` within the client's round trip
        // and tries its repair commits again without waiting out a timeout
        // for each (they were what kept answers waiting 5 to 15 s while
        // Redis was down). A Redis that stops answering without closing the
        // connection is found by the watchdog, which drops the connection:
        // from then on commands fail at once too.
        let watchdog = watch(client.clone()).abort_handle();
        let fail_fast = fred::types::config::Options { fail_fast: true, ..Default::default() };
        let client = client.with_options(&fail_fast);
        Ok(Self {
            client,
            watchdog,
            retention_secs: cfg.retention_secs,
            session_ttl_secs: cfg.session_ttl_secs,
            apply_batch_sha: std::sync::OnceLock::new(),
        })
    }

    /// The client for Lua scripts (`EVAL`, `EVALSHA`, `SCRIPT LOAD`), or
    /// the error fred's `fail_fast` gives while the connection is down or
    /// being made again. fred 10.1 has no `LuaInterface` for `WithOptions`:
    /// a script called on [`RedisStore::client`] reaches the plain client
    /// through `Deref` and loses the options (aembke/fred.rs#353), so it
    /// waited its whole 5 s timeout in fred's queue instead of failing at
    /// once. Measured against a frozen Redis: every commit took 5 s for as
    /// long as the freeze lasted while every read failed within a
    /// millisecond; a shard answers a send only after its commit, so
    /// refusals took 5 to 10 s each. This is the check fred makes for the
    /// other commands.
    fn scripts(&self) -> Result<&Client, fred::error::Error> {
        if self.client.state() != fred::types::ClientState::Connected {
            return Err(fred::error::Error::new(fred::error::ErrorKind::Canceled, "Connection closed unexpectedly."));
        }
        Ok(&self.client)
    }

    /// Runs [`APPLY_BATCH`] by its SHA1 (`EVALSHA`): a commit then carries
    /// its arguments and 40 bytes instead of the 2.5 KB script, which Redis
    /// would also hash again on every call, and Redis, which reads a
    /// client's commands 16 KiB at a time and fsyncs once per turn of its
    /// loop, takes several times more commits per fsync. A Redis that does
    /// not know the script (restarted, or `SCRIPT FLUSH`) answers NOSCRIPT
    /// without running anything; the commit is then sent as `EVAL`, which
    /// caches it again; so does a commit while `SCRIPT LOAD` is refused.
    async fn apply_batch(&self, all: Vec<Value>) -> Result<(), fred::error::Error> {
        let keys: Vec<Key> = Vec::new();
        let sha = match self.apply_batch_sha.get() {
            Some(sha) => sha.clone(),
            None => match self.scripts()?.script_load::<String, _>(APPLY_BATCH).await {
                Ok(sha) => self.apply_batch_sha.get_or_init(|| sha).clone(),
                // `SCRIPT` refused (an ACL, a renamed command) or failed:
                // this commit goes whole, as `EVAL`, and the next tries again.
                Err(e) => {
                    tracing::debug!(error = %e, "SCRIPT LOAD failed; committing with EVAL");
                    let _: Value = self.scripts()?.eval(APPLY_BATCH, keys, all).await?;
                    return Ok(());
                }
            },
        };
        match self.scripts()?.evalsha::<Value, _, _, _>(sha, keys.clone(), all.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                let _: Value = self.scripts()?.eval(APPLY_BATCH, keys, all).await?;
                Ok(())
            }
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }

    /// Every key matching `pattern` (SCAN, in steps).
    async fn scan(&self, pattern: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = "0".to_owned();
        loop {
            let (next, keys): (String, Vec<Bytes>) = self
                .client
                .custom(
                    fred::cmd!("SCAN"),
                    vec![
                        Value::from(cursor.as_str()),
                        "MATCH".into(),
                        Value::Bytes(Bytes::copy_from_slice(pattern)),
                        "COUNT".into(),
                        "1000".into(),
                    ],
                )
                .await
                .map_err(err)?;
            out.extend(keys.into_iter().map(|k| k.to_vec()));
            if next == "0" {
                return Ok(out);
            }
            cursor = next;
        }
    }

    async fn hash_all(&self, k: Key) -> Result<HashMap<Bytes, Bytes>, StoreError> {
        self.client.hgetall(k).await.map_err(err)
    }
}

fn rollup_field(project: &str, hour_ms: i64) -> Vec<u8> {
    let mut f = project.as_bytes().to_vec();
    f.push(0);
    f.extend_from_slice(&(hour_ms as u64).to_be_bytes());
    f
}

fn parse_rollup_field(f: &[u8]) -> Option<(String, i64)> {
    let (project, hour) = f.split_at(f.len().checked_sub(9)?);
    if hour[0] != 0 {
        return None;
    }
    Some((String::from_utf8(project.to_vec()).ok()?, u64::from_be_bytes(hour[1..].try_into().ok()?) as i64))
}

#[async_trait]
impl Store for RedisStore {
    async fn claim_shard(&self, shard: u32) -> Result<u64, StoreError> {
        self.client.incr(key(&[b"owner", shard.to_string().as_bytes()])).await.map_err(err)
    }

    fn fences_session_records(&self) -> bool {
        true
    }

    async fn load_user(&self, u: &UserKey) -> Result<UserRecord, StoreError> {
        let top: Vec<(Bytes, f64)> = self.client.zrevrange(user("inbox", u), 0, 0, true).await.map_err(err)?;
        let head = top.first().map(|(_, s)| *s as u64).unwrap_or(0);
        let meta: Option<Bytes> = self.client.get(user("meta", u)).await.map_err(err)?;
        let meta = match meta {
            Some(b) => dec_meta(&b)?,
            None => UserMeta::default(),
        };
        let mut contacts = BTreeMap::new();
        for (k, v) in self.hash_all(user("contacts", u)).await? {
            let name = String::from_utf8(k.to_vec()).map_err(|_| StoreError::Corrupt("contact key"))?;
            contacts.insert(name, dec("contact", &v)?);
        }
        let ids: Vec<Bytes> = self.client.smembers(user("ids", u)).await.map_err(err)?;
        let mut identities = Vec::with_capacity(ids.len());
        for id in ids {
            identities.push(String::from_utf8(id.to_vec()).map_err(|_| StoreError::Corrupt("identity"))?);
        }
        identities.sort();
        let mut policies = BTreeMap::new();
        for (k, v) in self.hash_all(user("policies", u)).await? {
            let name = String::from_utf8(k.to_vec()).map_err(|_| StoreError::Corrupt("policy key"))?;
            policies.insert(name, dec("policy", &v)?);
        }
        Ok(UserRecord { head, meta, contacts, identities, policies })
    }

    async fn dedup(&self, k: &DedupKey) -> Result<Option<DedupRecord>, StoreError> {
        let v: Option<Bytes> = self
            .client
            .get(key(&[b"dedup", k.sender.tenant.as_bytes(), k.sender.user.as_bytes(), k.client_id.as_bytes()]))
            .await
            .map_err(err)?;
        v.map(|b| dec("dedup", &b)).transpose()
    }

    async fn read_inbox(
        &self,
        u: &UserKey,
        after: InboxSeq,
        limit: usize,
        max_bytes: usize,
    ) -> Result<InboxPage, StoreError> {
        let min = format!("({after}");
        let rows: Vec<Bytes> = self
            .client
            .zrangebyscore(user("inbox", u), min.as_str(), "+inf", false, Some((0, limit as i64 + 1)))
            .await
            .map_err(err)?;
        InboxPage::fill(rows.iter().map(|r| dec("inbox", r)), limit, max_bytes)
    }

    async fn read_range(
        &self,
        u: &UserKey,
        from: InboxSeq,
        to: InboxSeq,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let min = format!("({from}");
        let rows: Vec<Bytes> = self
            .client
            .zrangebyscore(user("inbox", u), min.as_str(), to as i64, false, Some((0, limit as i64)))
            .await
            .map_err(err)?;
        rows.iter().map(|r| dec("inbox", r)).collect()
    }

    async fn pending_receipts(&self, u: &UserKey, limit: usize) -> Result<Vec<PendingReceipt>, StoreError> {
        let all = self.hash_all(user("receipts", u)).await?;
        all.values().take(limit).map(|v| dec("receipt", v)).collect()
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let ttl = Value::from(self.retention_secs.to_string());
        let appends = batch.ops.iter().filter(|op| matches!(op, WriteOp::Message { .. })).count();
        // The checks come first; each names its message by argument index
        // (Lua counts from 1), which is known once the ops are laid out.
        let mut checks: Vec<(Key, InboxSeq, usize)> = Vec::with_capacity(appends);
        let first_op = 6 + 3 * appends;
        // Session records and metas: checked against their versions.
        let mut versioned: Vec<Value> = Vec::new();
        let mut args: Vec<Value> = Vec::with_capacity(batch.ops.len() * 4);
        let mut logs = false;
        // Tenants with a log or rollups in this batch, listed once each for
        // the retention sweep.
        let mut retained: std::collections::BTreeSet<std::sync::Arc<str>> = Default::default();
        let outbox = batch.outbox;
        let push = |args: &mut Vec<Value>, parts: Vec<Value>| args.extend(parts);
        let b = |v: Vec<u8>| Value::Bytes(Bytes::from(v));
        let k = |key: Key| Value::Bytes(key.into_bytes());
        for op in batch.ops {
            match op {
                WriteOp::Message { user: u, message } => {
                    checks.push((user("inbox", &u), message.seq, first_op + args.len() + 3));
                    push(
                        &mut args,
                        vec!["zadd".into(), k(user("inbox", &u)), message.seq.to_string().into(), b(enc(&message))],
                    )
                }
                WriteOp::Dedup { key: d, record } => {
                    let rk =
                        key(&[b"dedup", d.sender.tenant.as_bytes(), d.sender.user.as_bytes(), d.client_id.as_bytes()]);
                    push(&mut args, vec!["setex".into(), k(rk), b(enc(&record)), ttl.clone()])
                }
                // Versioned, last in the arguments with the session records.
                WriteOp::Meta { user: u, meta, version } => versioned.extend([
                    k(user("meta", &u)),
                    b(enc(&meta)),
                    "".into(),
                    k(user("metav", &u)),
                    format!("{version:016x}").into(),
                ]),
                WriteOp::Contact { owner, contact, record } => {
                    push(&mut args, vec!["hset".into(), k(user("contacts", &owner)), contact.into(), b(enc(&record))])
                }
                WriteOp::ContactRemoved { owner, contact } => {
                    push(&mut args, vec!["hdel".into(), k(user("contacts", &owner)), contact.into()])
                }
                WriteOp::Identity { user: u, channel } => {
                    push(&mut args, vec!["sadd".into(), k(user("ids", &u)), channel.into()])
                }
                WriteOp::Policy { owner, circle, policy } => {
                    push(&mut args, vec!["hset".into(), k(user("policies", &owner)), circle.into(), b(enc(&policy))])
                }
                WriteOp::Receipt { user: u, receipt } => push(
                    &mut args,
                    vec!["hset".into(), k(user("receipts", &u)), receipt.msg_id.to_string().into(), b(enc(&receipt))],
                ),
                WriteOp::ReceiptsDelivered { user: u, msg_ids } => {
                    for id in msg_ids {
                        push(&mut args, vec!["hdel".into(), k(user("receipts", &u)), id.to_string().into()]);
                    }
                }
                WriteOp::Log { kind, tenant, record } => {
                    logs = true;
                    retained.insert(tenant.clone());
                    push(
                        &mut args,
                        vec![
                            "log".into(),
                            k(key(&[b"logseq", log_kind(kind), tenant.as_bytes()])),
                            k(key(&[b"log", log_kind(kind), tenant.as_bytes()])),
                            b(vec![kind_byte(kind)]),
                            tenant.to_string().into(),
                            Value::Bytes(record),
                        ],
                    )
                }
                WriteOp::EventSeen { key: e, ts: _ } => {
                    let ek = key(&[b"event", e.tenant.as_bytes(), e.stream.as_bytes(), e.key.as_bytes()]);
                    push(&mut args, vec!["setex".into(), k(ek), "1".into(), ttl.clone()])
                }
                WriteOp::Session { user: u, record, version } => {
                    // JSON, so that other services can read it; last in the
                    // arguments, checked before anything is written.
                    let json = serde_json::to_string(&record).map_err(|e| StoreError::Backend(e.to_string().into()))?;
                    // Listed under its tenant: a user may have no other
                    // record by which a tenant's deletion finds it.
                    push(&mut args, vec!["sadd".into(), k(session_users_key(&u.tenant)), u.user.to_string().into()]);
                    versioned.extend([
                        k(session_key(&u)),
                        json.into(),
                        self.session_ttl_secs.to_string().into(),
                        k(session_version_key(&u)),
                        format!("{version:016x}").into(),
                    ]);
                }
                WriteOp::RollupAdd { key: r, by } => {
                    retained.insert(r.tenant.clone());
                    let hk = key(&[b"rollup", r.tenant.as_bytes(), r.event_type.as_bytes()]);
                    push(
                        &mut args,
                        vec!["hincrby".into(), k(hk), b(rollup_field(&r.project, r.hour_ms)), by.to_string().into()],
                    );
                    push(
                        &mut args,
                        vec![
                            "sadd".into(),
                            k(key(&[b"rolluptypes", r.tenant.as_bytes()])),
                            r.event_type.to_string().into(),
                        ],
                    );
                }
            }
        }
        for t in retained {
            push(&mut args, vec!["sadd".into(), "retained".into(), t.to_string().into()]);
        }
        let mut all: Vec<Value> = Vec::with_capacity(2 + 3 * checks.len() + args.len() + versioned.len());
        all.push(checks.len().to_string().into());
        all.push((versioned.len() / 5).to_string().into());
        match outbox {
            Some(target) => all.extend([
                k(outbox_key(&target.id)),
                k(outbox_pos_key(&target.id)),
                (if logs { target.max.max(1) } else { 0 }).to_string().into(),
            ]),
            None => all.extend(["".into(), "".into(), "0".into()]),
        }
        for (key, seq, index) in checks {
            all.extend([k(key), seq.to_string().into(), index.to_string().into()]);
        }
        all.extend(args);
        all.extend(versioned);
        self.apply_batch(all).await.map_err(err)
    }

    async fn session(&self, u: &UserKey) -> Result<Option<SessionRecord>, StoreError> {
        let v: Option<String> = self.client.get(session_key(u)).await.map_err(err)?;
        v.map(|text| serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("session"))).transpose()
    }

    async fn event_seen(&self, k: &EventKey) -> Result<bool, StoreError> {
        let n: i64 = self
            .client
            .exists(key(&[b"event", k.tenant.as_bytes(), k.stream.as_bytes(), k.key.as_bytes()]))
            .await
            .map_err(err)?;
        Ok(n > 0)
    }

    async fn read_log(
        &self,
        kind: LogKind,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let min = format!("({after}");
        let rows: Vec<Bytes> = self
            .client
            .zrangebyscore(
                key(&[b"log", log_kind(kind), tenant.as_bytes()]),
                min.as_str(),
                "+inf",
                false,
                Some((0, limit as i64)),
            )
            .await
            .map_err(err)?;
        rows.into_iter()
            .map(|r| {
                let seq = u64::from_be_bytes(
                    r.get(..8).ok_or(StoreError::Corrupt("log"))?.try_into().map_err(|_| StoreError::Corrupt("log"))?,
                );
                Ok(LogEntry { seq, record: r.slice(8..) })
            })
            .collect()
    }

    fn keeps_outbox(&self) -> bool {
        true
    }

    fn keeps_api_keys(&self) -> bool {
        true
    }

    async fn delete_tenant(&self, tenant: &str) -> Result<u64, StoreError> {
        let t = tenant.as_bytes();
        let mut gone = 0u64;
        // Keys `kind NUL tenant NUL …`, found by pattern (the tenant's glob
        // characters escaped), and the users they name, for their session
        // records (`session:{tenant}:{user}` cannot be matched by pattern
        // without catching a tenant whose name continues with ':').
        let mut users = std::collections::BTreeSet::new();
        for kind in ["inbox", "dedup", "meta", "metav", "contacts", "ids", "policies", "receipts", "event", "rollup"] {
            let pattern = [kind.as_bytes(), &[0], &glob_escape(t), &[0], b"*"].concat();
            for k in self.scan(&pattern).await? {
                if matches!(kind, "inbox" | "meta" | "contacts" | "ids" | "policies" | "receipts") {
                    let rest = &k[kind.len() + 1 + t.len() + 1..];
                    users.insert(String::from_utf8_lossy(rest).into_owned());
                }
                let n: u64 = self.client.del(Key::from(k.as_slice())).await.map_err(err)?;
                gone += n;
            }
        }
        let listed: Vec<String> = self.client.smembers(session_users_key(tenant)).await.map_err(err)?;
        users.extend(listed);
        let mut exact: Vec<Key> = vec![session_users_key(tenant)];
        // (The log seq counters stay: a tenant of the same name later must
        // not hand out seqs that readers and the topics have seen.)
        for kind in [LogKind::Graph, LogKind::Events] {
            exact.push(key(&[b"log", log_kind(kind), t]));
        }
        exact.push(key(&[b"rolluptypes", t]));
        for u in &users {
            let user = UserKey::new(tenant, u.as_str());
            exact.push(session_key(&user));
            exact.push(session_version_key(&user));
        }
        let hashes: Vec<String> = self.client.smembers(key(&[b"apikeys", t])).await.map_err(err)?;
        exact.extend(hashes.iter().map(|h| key(&[b"apikey", h.as_bytes()])));
        exact.push(key(&[b"apikeys", t]));
        for k in exact {
            let n: u64 = self.client.del(k).await.map_err(err)?;
            gone += n;
        }
        let _: u64 = self.client.srem("retained", tenant).await.map_err(err)?;
        // Records still waiting in an outbox.
        // Page by page: an outbox holds up to `log_outbox_max` records.
        for k in self.scan(b"outbox\0*").await? {
            let mut after = "-inf".to_owned();
            loop {
                let rows: Vec<(Bytes, f64)> = self
                    .client
                    .zrangebyscore(Key::from(k.as_slice()), after.as_str(), "+inf", true, Some((0, 1_000)))
                    .await
                    .map_err(err)?;
                let Some((_, last)) = rows.last() else { break };
                after = format!("({last}");
                let mine: Vec<Bytes> = rows
                    .into_iter()
                    .map(|(m, _)| m)
                    .filter(|m| parse_outbox(m).is_ok_and(|e| &*e.tenant == tenant))
                    .collect();
                if !mine.is_empty() {
                    let n: u64 = self.client.zrem(Key::from(k.as_slice()), mine).await.map_err(err)?;
                    gone += n;
                }
            }
        }
        Ok(gone)
    }

    async fn retained_tenants(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = self.client.smembers("retained").await.map_err(err)?;
        out.sort();
        Ok(out)
    }

    async fn trim_log(&self, kind: LogKind, tenant: &str, upto: u64) -> Result<(), StoreError> {
        let k = key(&[b"log", log_kind(kind), tenant.as_bytes()]);
        let _: u64 = self.client.zremrangebyscore(k, "-inf", upto as f64).await.map_err(err)?;
        Ok(())
    }

    async fn trim_rollups(&self, tenant: &str, before_ms: i64) -> Result<u64, StoreError> {
        let types: Vec<String> = self.client.smembers(key(&[b"rolluptypes", tenant.as_bytes()])).await.map_err(err)?;
        let mut gone = 0;
        for t in types {
            let hk = key(&[b"rollup", tenant.as_bytes(), t.as_bytes()]);
            let fields: Vec<Bytes> = self.client.hkeys(hk.clone()).await.map_err(err)?;
            let old: Vec<Bytes> = fields
                .into_iter()
                .filter(|f| parse_rollup_field(f).is_some_and(|(_, hour)| hour < before_ms))
                .collect();
            if !old.is_empty() {
                let n: u64 = self.client.hdel(hk, old).await.map_err(err)?;
                gone += n;
            }
        }
        Ok(gone)
    }

    fn keeps_bars(&self) -> bool {
        true
    }

    async fn bar_tenant(&self, tenant: &str, id: u64) -> Result<u64, StoreError> {
        let args: Vec<Value> = vec![BARS.into(), tenant.into(), id.to_string().into()];
        let held: String = self.scripts().map_err(err)?.eval(BAR_TENANT, Vec::<Key>::new(), args).await.map_err(err)?;
        held.parse().map_err(|_| StoreError::Corrupt("tenant bar"))
    }

    async fn lift_bar(&self, tenant: &str) -> Result<bool, StoreError> {
        let n: u64 = self.client.hdel(BARS, tenant).await.map_err(err)?;
        Ok(n > 0)
    }

    async fn barred_tenants(&self) -> Result<Vec<Bar>, StoreError> {
        let all: HashMap<String, String> = self.client.hgetall(BARS).await.map_err(err)?;
        let mut bars = all
            .into_iter()
            .map(|(t, id)| Ok(Bar { tenant: t.into(), id: id.parse().map_err(|_| StoreError::Corrupt("tenant bar"))? }))
            .collect::<Result<Vec<_>, StoreError>>()?;
        bars.sort();
        Ok(bars)
    }

    async fn confirm_bar(&self, region: &str, bar: &Bar, shard: u32) -> Result<(), StoreError> {
        let k = key(&[b"barconf", region.as_bytes(), bar.tenant.as_bytes()]);
        let _: u64 = self.client.hset(k, (shard.to_string(), bar.id.to_string())).await.map_err(err)?;
        Ok(())
    }

    async fn bar_confirmations(&self, region: &str, tenant: &str, id: u64) -> Result<Vec<u32>, StoreError> {
        let k = key(&[b"barconf", region.as_bytes(), tenant.as_bytes()]);
        let all: HashMap<String, String> = self.client.hgetall(k).await.map_err(err)?;
        let id = id.to_string();
        let mut shards = all
            .into_iter()
            .filter(|(_, b)| *b == id)
            .map(|(s, _)| s.parse().map_err(|_| StoreError::Corrupt("tenant bar confirmation")))
            .collect::<Result<Vec<u32>, StoreError>>()?;
        shards.sort_unstable();
        Ok(shards)
    }

    async fn put_api_key(&self, hash: &str, tenant: &str) -> Result<(), StoreError> {
        let args: Vec<Value> = vec![
            Value::Bytes(key(&[b"apikey", hash.as_bytes()]).into_bytes()),
            Value::Bytes(key(&[b"apikeys", tenant.as_bytes()]).into_bytes()),
            tenant.into(),
            hash.into(),
        ];
        let _: Value = self.scripts().map_err(err)?.eval(PUT_API_KEY, Vec::<Key>::new(), args).await.map_err(err)?;
        Ok(())
    }

    async fn api_key_tenant(&self, hash: &str) -> Result<Option<String>, StoreError> {
        self.client.get(key(&[b"apikey", hash.as_bytes()])).await.map_err(err)
    }

    async fn revoke_api_key(&self, tenant: &str, prefix: &str) -> Result<bool, StoreError> {
        let args: Vec<Value> = vec![
            Value::Bytes(key(&[b"apikeys", tenant.as_bytes()]).into_bytes()),
            prefix.into(),
            Value::Bytes(Bytes::from_static(b"apikey\0")),
        ];
        let n: i64 = self.scripts().map_err(err)?.eval(REVOKE_API_KEY, Vec::<Key>::new(), args).await.map_err(err)?;
        Ok(n > 0)
    }

    async fn read_outbox(&self, id: &OutboxId, after: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let min = format!("({after}");
        let rows: Vec<Bytes> = self
            .client
            .zrangebyscore(outbox_key(id), min.as_str(), "+inf", false, Some((0, limit as i64)))
            .await
            .map_err(err)?;
        rows.iter().map(parse_outbox).collect()
    }

    async fn raise_outbox_position(&self, id: &OutboxId, at_least: u64) -> Result<bool, StoreError> {
        let args: Vec<Value> = vec![Value::Bytes(outbox_pos_key(id).into_bytes()), at_least.to_string().into()];
        let n: i64 = self.scripts().map_err(err)?.eval(RAISE_POSITION, Vec::<Key>::new(), args).await.map_err(err)?;
        Ok(n > 0)
    }

    async fn trim_outbox(&self, id: &OutboxId, upto: u64) -> Result<u64, StoreError> {
        self.client.zremrangebyscore(outbox_key(id), "-inf", upto as f64).await.map_err(err)
    }

    async fn rollups(
        &self,
        tenant: &str,
        event_type: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(RollupKey, u64)>, StoreError> {
        let types: Vec<String> = match event_type {
            Some(t) => vec![t.to_owned()],
            None => self.client.smembers(key(&[b"rolluptypes", tenant.as_bytes()])).await.map_err(err)?,
        };
        let mut out = Vec::new();
        for t in types {
            let counters: HashMap<Bytes, u64> =
                self.client.hgetall(key(&[b"rollup", tenant.as_bytes(), t.as_bytes()])).await.map_err(err)?;
            for (f, n) in counters {
                let (project, hour_ms) = parse_rollup_field(&f).ok_or(StoreError::Corrupt("rollup field"))?;
                if hour_ms >= from_ms && hour_ms < to_ms {
                    out.push((
                        RollupKey {
                            tenant: tenant.into(),
                            event_type: t.as_str().into(),
                            project: project.into(),
                            hour_ms,
                        },
                        n,
                    ));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Redis that `scripts/test` starts (IRIS_TEST_REDIS).
    async fn test_store() -> RedisStore {
        let Ok(url) = std::env::var("IRIS_TEST_REDIS") else {
            panic!("IRIS_TEST_REDIS is not set: run scripts/test, which starts a Redis server on loopback");
        };
        RedisStore::connect(RedisConfig { url, retention_secs: 3_600, session_ttl_secs: 60 }).await.unwrap()
    }

    #[test]
    fn the_watchdog_drops_only_a_live_connection_that_left_its_ping_unanswered() {
        assert!(drop_connection(Ping::Unanswered, false, true));
        assert!(!drop_connection(Ping::Answered, false, true));
        assert!(!drop_connection(Ping::Failed, false, true), "failed fast: already being made again");
        assert!(!drop_connection(Ping::Unanswered, true, true), "it waited on the connection replaced meanwhile");
        assert!(!drop_connection(Ping::Unanswered, false, false), "down already");
    }

    /// A fresh tenant per run: the server may hold earlier runs' data.
    fn fresh_tenant(prefix: &str) -> String {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("{prefix}{t}")
    }

    #[tokio::test]
    async fn redis_store_passes_the_contract() {
        let store = test_store().await;
        crate::contract::run_all(&store, &fresh_tenant("t")).await.unwrap();
    }

    /// Commits go by the script's SHA1; a Redis that forgot the script (a
    /// restart, `SCRIPT FLUSH`) answers NOSCRIPT, and the commit is sent
    /// whole instead: the contract passes again after a flush.
    #[tokio::test]
    async fn commits_go_on_after_redis_forgets_the_script() {
        let store = test_store().await;
        crate::contract::run_all(&store, &fresh_tenant("s1")).await.unwrap();
        assert!(store.apply_batch_sha.get().is_some(), "commits went by the script's SHA1");
        let _: () = store.client.script_flush(false).await.unwrap();
        crate::contract::run_all(&store, &fresh_tenant("s2")).await.unwrap();
    }

    /// A Redis of this test's own on a free port, without persistence, to
    /// freeze and thaw (SIGSTOP, SIGCONT) without touching the shared one.
    struct PrivateRedis {
        child: std::process::Child,
        port: u16,
    }

    impl PrivateRedis {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (scripts/test installs it)");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis-server did not listen");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Self { child, port }
        }

        fn signal(&self, sig: &str) {
            let ok = std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
            assert!(ok.success(), "kill {sig}");
        }
    }

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A frozen Redis whose connection the watchdog has dropped fails
    /// commits (Lua scripts) as fast as reads. Before, fred's `fail_fast`
    /// never reached a script (see [`RedisStore::scripts`]): reads failed
    /// within a millisecond while every commit waited its 5 s timeout, for
    /// as long as the freeze lasted. Commits succeed again once Redis runs.
    #[tokio::test]
    async fn a_frozen_redis_fails_commits_as_fast_as_reads() {
        use std::time::{Duration, Instant};
        let redis = PrivateRedis::start();
        let url = format!("redis://127.0.0.1:{}", redis.port);
        let store =
            RedisStore::connect(RedisConfig { url, retention_secs: 3_600, session_ttl_secs: 60 }).await.unwrap();
        let bob = UserKey::new(fresh_tenant("z").as_str(), "bob");
        let batch = |seq: u64| {
            let mut batch = WriteBatch::default();
            let message = StoredMessage {
                seq,
                msg_id: format!("m{seq}").into(),
                from: "a".into(),
                body: Bytes::from_static(b"x"),
                ts: 1,
            };
            batch.push(WriteOp::Message { user: bob.clone(), message });
            batch
        };
        store.commit(batch(1)).await.expect("Redis answers before the freeze");
        redis.signal("-STOP");
        // The watchdog drops the connection within about 6 s of the freeze;
        // from then on a read fails at once.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let asked = Instant::now();
            assert!(store.load_user(&bob).await.is_err(), "Redis is frozen, yet it answered");
            if asked.elapsed() < Duration::from_secs(1) {
                break;
            }
            assert!(Instant::now() < deadline, "reads still wait on a frozen Redis after 30 s");
        }
        for seq in 2..5 {
            let asked = Instant::now();
            let answer = store.commit(batch(seq)).await;
            let took = asked.elapsed();
            assert!(answer.is_err(), "Redis is frozen, yet the commit succeeded");
            assert!(took < Duration::from_secs(1), "a commit waited {took:?} while reads failed at once");
        }
        let asked = Instant::now();
        assert!(store.put_api_key("h", "t").await.is_err(), "Redis is frozen, yet a script ran");
        assert!(asked.elapsed() < Duration::from_secs(1), "a script waited {:?}", asked.elapsed());
        redis.signal("-CONT");
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.commit(batch(2)).await.is_err() {
            assert!(Instant::now() < deadline, "Redis runs again, yet commits still fail");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let head = store.load_user(&bob).await.expect("Redis answers after the thaw");
        assert_eq!(head.head, 2, "the first commit and the one after the thaw are stored");
    }

    /// A Redis that stops reading while commits are written to it fills the
    /// connection's socket buffers, and fred's writer then waits on the
    /// socket: no reconnection, forced or not, gets through, and every
    /// command waits its 5 s timeout for as long as Redis is frozen. The
    /// connection's TCP_USER_TIMEOUT ends it: within 30 s of the freeze
    /// (5 s of a full socket, then the watchdog's and the reconnection's
    /// time), a command fails at once, and once Redis runs again commands
    /// succeed.
    #[tokio::test]
    async fn a_redis_frozen_under_write_load_fails_commands_fast_and_comes_back() {
        use std::time::{Duration, Instant};
        let redis = PrivateRedis::start();
        let url = format!("redis://127.0.0.1:{}", redis.port);
        let store = Arc::new(
            RedisStore::connect(RedisConfig { url, retention_secs: 3_600, session_ttl_secs: 60 }).await.unwrap(),
        );
        let bob = UserKey::new(fresh_tenant("f").as_str(), "bob");
        store.load_user(&bob).await.expect("Redis answers before the freeze");
        redis.signal("-STOP");
        // 64 writers, each with a 256 KiB commit always in flight: 16 MiB
        // waiting, more than a loopback connection's socket buffers hold.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let body = Bytes::from(vec![b'x'; 256 << 10]);
        let writers: Vec<_> = (0..64u64)
            .map(|w| {
                let (store, stop, body, bob) = (store.clone(), stop.clone(), body.clone(), bob.clone());
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let mut batch = WriteBatch::default();
                        let message = StoredMessage {
                            seq: w + 1,
                            msg_id: "m".into(),
                            from: "a".into(),
                            body: body.clone(),
                            ts: 1,
                        };
                        batch.push(WriteOp::Message { user: bob.clone(), message });
                        // Fails while Redis is frozen: what matters is that
                        // it keeps the socket full.
                        let _ = store.commit(batch).await;
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut waits = Vec::new();
        loop {
            let asked = Instant::now();
            let answer = store.load_user(&bob).await;
            waits.push(asked.elapsed());
            assert!(answer.is_err(), "Redis is frozen, yet it answered");
            if asked.elapsed() < Duration::from_secs(1) {
                break;
            }
            assert!(Instant::now() < deadline, "commands still wait on a frozen Redis after 30 s: {waits:?}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        redis.signal("-CONT");
        for w in writers {
            w.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.load_user(&bob).await.is_err() {
            assert!(Instant::now() < deadline, "Redis runs again, yet commands still fail");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
