//! The Iris node configuration: one TOML file, every field documented,
//! unknown fields rejected by name. `iris check-config FILE` runs
//! [`Config::load`] and nothing else.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not match the schema (unknown field, wrong type).
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field, as a dotted path.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// A role a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds client sessions.
    Edge,
    /// Runs shard actors.
    Core,
    /// Routes envelopes between edges, shards and regions.
    Router,
}

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id (names its edge queue; shown in `welcome`).
    #[serde(default = "default_node_id")]
    pub node_id: String,
    /// The region this node serves (shown in `welcome`).
    #[serde(default = "default_region")]
    pub region: String,
    /// Where embedded storage and the dev signing key live (default `./iris-data`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Roles this node plays (default: all three, single node).
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    /// Listening addresses.
    #[serde(default)]
    pub listen: Listen,
    /// Per-session and per-message limits.
    #[serde(default)]
    pub limits: Limits,
    /// Shards and their queues.
    #[serde(default)]
    pub core: Core,
    /// Storage backend settings.
    #[serde(default)]
    pub storage: Storage,
    /// Token verification.
    #[serde(default)]
    pub auth: Auth,
    /// Certificates for wss and QUIC.
    #[serde(default)]
    pub tls: Tls,
    /// QUIC transport settings.
    #[serde(default)]
    pub quic: Quic,
    /// The service HTTP API.
    #[serde(default)]
    pub http: Http,
    /// How long the graph and events logs and the hourly rollups are kept.
    #[serde(default)]
    pub retention: Retention,
    /// A regional cluster (absent: a single node with the in-process bus).
    #[serde(default)]
    pub cluster: Option<Cluster>,
    /// Federation with other regions (needs `[cluster]`).
    #[serde(default)]
    pub federation: Option<Federation>,
    /// Sampled traces of messages, sent to an OpenTelemetry collector
    /// (absent: no tracing).
    #[serde(default)]
    pub tracing: Option<Tracing>,
    /// The root seed every random choice of the node derives from (ADR
    /// 0019). Unset, as production wants it, it is drawn afresh at every
    /// start and logged at debug level; set it only to reproduce a run: a
    /// fixed seed makes every start pick the same session ids and
    /// message-id seeds.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// Traces of a sampled fraction of messages through the region, exported
/// over OTLP/HTTP (JSON) to a collector (ADR 0023).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// The collector's traces endpoint, `http://HOST[:PORT][/PATH]` (port
    /// 4318 and path `/v1/traces` by default).
    pub otlp_endpoint: String,
    /// The fraction of messages traced, 0 to 1. The edge that takes a
    /// message decides; every node that handles it then records its span.
    #[serde(default = "d_sample_ratio")]
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    #[serde(default = "d_service_name")]
    pub service_name: String,
}

fn d_sample_ratio() -> f64 {
    0.01
}
fn d_service_name() -> String {
    "iris".to_owned()
}

/// Where spans are sent: an OTLP/HTTP traces endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// Host (name or address) and port, for connecting.
    pub authority: String,
    /// The request path.
    pub path: String,
}

impl OtlpEndpoint {
    /// Reads `http://HOST[:PORT][/PATH]` (port 4318, OTLP/HTTP's, and path
    /// `/v1/traces` when none is given). HTTPS is not spoken: spans go to
    /// a collector on the node's machine or network, which forwards them.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = || format!("{url:?} is not http://HOST[:PORT][/PATH] (a collector beside the node; no https)");
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || authority.chars().any(|c| c.is_whitespace()) {
            return Err(bad());
        }
        let authority = match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.ends_with(':') => {
                port.parse::<u16>().map_err(|_| bad())?;
                authority.to_owned()
            }
            Some(_) => return Err(bad()),
            None => format!("{authority}:4318"),
        };
        let path = if path.is_empty() || path == "/" { "/v1/traces".to_owned() } else { path.to_owned() };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        Ok(Self { authority, path })
    }
}

/// The federation this region belongs to: users are homed to regions, and
/// envelopes between regions travel through the global Kafka layer only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Federation {
    /// Every region of the federation, this one included; the same list in
    /// every region (the home hash is computed over it).
    pub regions: Vec<String>,
    /// Bootstrap servers of the global Kafka cluster (only relays use it).
    pub global_kafka: String,
    /// Whether this node runs the relays between the outbound topic, the
    /// global layer and the regional bus (at least one node per region).
    #[serde(default = "d_true")]
    pub relay: bool,
    /// Partitions of every `iris.global.<region>` topic (same everywhere).
    #[serde(default = "d_global_partitions")]
    pub global_partitions: u32,
    /// Partitions of this region's `iris.<region>.outbound` topic.
    #[serde(default = "d_outbound_partitions")]
    pub outbound_partitions: u32,
    /// Presence updates to other regions cross at most once per user per
    /// this interval.
    #[serde(default = "d_presence_interval")]
    pub presence_interval_ms: u64,
    /// At most this many presence updates wait for the next interval; more
    /// are sent at once.
    #[serde(default = "d_presence_batch")]
    pub max_presence_batch: usize,
}

/// The regional cluster a node belongs to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Kafka bootstrap servers, `HOST:PORT[,HOST:PORT]`.
    pub kafka: String,
    /// Consumer group of the core nodes (default `iris.<region>.core`).
    #[serde(default)]
    pub core_group: Option<String>,
    /// How long a fetch may wait for data. Apache Kafka answers as soon as
    /// data arrives, so this costs no latency; it bounds how often an idle
    /// consumer asks (and how long a resumed partition waits for the fetch
    /// in flight).
    #[serde(default = "d_fetch_wait")]
    pub fetch_wait_ms: u32,
    /// What a fetch of the shard and edge topics waits for before the
    /// broker answers it, bytes (librdkafka `fetch.min.bytes`; 1: answered
    /// as soon as anything arrives). Larger, with a short `fetch_wait_ms`,
    /// means fewer fetches under load, each at most `fetch_wait_ms` late.
    #[serde(default = "d_fetch_min_bytes")]
    pub fetch_min_bytes: u32,
    /// A core node silent this long loses its shards to the others.
    #[serde(default = "d_session_timeout")]
    pub session_timeout_ms: u32,
    /// How long the producer waits to fill a batch (librdkafka
    /// `linger.ms`): a little latency for fewer, larger requests.
    #[serde(default = "d_linger")]
    pub linger_ms: u32,
    /// Producers (each with its own broker connections) a node spreads its
    /// partitions over: librdkafka sends one partition per request and a
    /// broker answers a connection's requests one at a time, so with many
    /// shards one connection queues them (ADR 0016).
    #[serde(default = "d_producers")]
    pub producers: u32,
    /// Partitions of the shard topic (`iris.<region>.shard`), a divisor of
    /// `core.shards`: shard `s` goes to partition `s % shard_partitions`, so
    /// that the edges' produce requests, which carry one partition each,
    /// carry more records (ADR 0031). Unset: as the topic already has them,
    /// or for a new region eight shards to a partition. Fixed for the life
    /// of the topic: a topic with another count is refused.
    #[serde(default)]
    pub shard_partitions: Option<u32>,
    /// Publish every accepted graph change and ingested event to the
    /// topics `iris.<region>.graph` and `iris.<region>.events`, exactly
    /// once, through each shard's outbox (ADR 0022). Unset: on with the
    /// Redis backend, off with ScyllaDB (which keeps no outbox yet; `true`
    /// with it is refused).
    #[serde(default)]
    pub log_topics: Option<bool>,
    /// Most unpublished records one shard's outbox holds; past it, writes
    /// with log records are refused as `unavailable` until the topics
    /// catch up.
    #[serde(default = "d_log_outbox_max")]
    pub log_outbox_max: u64,
    /// How often an idle publisher looks for new outbox records, ms (a
    /// busy one goes on at once): the most a record waits for its topic
    /// beyond the broker's own latency.
    #[serde(default = "d_log_publish_interval")]
    pub log_publish_interval_ms: u32,
}

impl Cluster {
    /// Whether this region publishes its log topics, with `backend`.
    pub fn publishes_logs(&self, backend: Backend) -> bool {
        self.log_topics.unwrap_or(backend == Backend::Redis)
    }
}

/// How long the downstream logs and the hourly rollups are kept, in days
/// (0: forever), by default and per tenant. Dedup records and event keys
/// are kept `storage.dedup_retention_hours`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The graph log: the graph's changelog, which consumers rebuild the
    /// graph from, so kept forever unless set.
    #[serde(default)]
    pub graph_log_days: u32,
    /// The events log.
    #[serde(default = "d_events_log_days")]
    pub events_log_days: u32,
    /// Hourly rollups, by the hour's start (analytics answer at most 93
    /// days at a time).
    #[serde(default = "d_rollup_days")]
    pub rollup_days: u32,
    /// How often the sweep runs on each node that runs shards.
    #[serde(default = "d_sweep_interval")]
    pub sweep_interval_secs: u64,
    /// Tenant → its own retention (fields left out: the defaults above).
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, TenantRetention>,
}

/// One tenant's exceptions to `[retention]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRetention {
    /// Its graph log, days (0: forever).
    #[serde(default)]
    pub graph_log_days: Option<u32>,
    /// Its events log, days (0: forever).
    #[serde(default)]
    pub events_log_days: Option<u32>,
    /// Its rollups, days (0: forever).
    #[serde(default)]
    pub rollup_days: Option<u32>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            graph_log_days: 0,
            events_log_days: d_events_log_days(),
            rollup_days: d_rollup_days(),
            sweep_interval_secs: d_sweep_interval(),
            tenants: Default::default(),
        }
    }
}

fn d_events_log_days() -> u32 {
    30
}
fn d_rollup_days() -> u32 {
    400
}
fn d_sweep_interval() -> u64 {
    3_600
}

/// Certificates. Without files, a self-signed dev certificate is created in
/// `data_dir/tls` (QUIC is always TLS). SIGHUP re-reads the files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// QUIC transport settings, tuned for mobile clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quic {
    /// A connection silent this long is closed; clients send QUIC pings
    /// more often than this (the Rust client: every 15 s).
    #[serde(default = "d_quic_idle")]
    pub idle_timeout_ms: u64,
    /// Flow-control window per stream.
    #[serde(default = "d_quic_stream_window")]
    pub stream_window_bytes: u32,
    /// Flow-control window per connection.
    #[serde(default = "d_quic_conn_window")]
    pub connection_window_bytes: u32,
    /// Handshakes in progress above which a new client must first prove
    /// its address with a Retry (one round trip more; a flood from spoofed
    /// addresses then costs the node no handshake state).
    #[serde(default = "d_quic_handshakes_before_retry")]
    pub handshakes_before_retry: usize,
    /// Handshakes in progress at once; one more is refused
    /// (CONNECTION_REFUSED).
    #[serde(default = "d_quic_max_handshakes")]
    pub max_handshakes: usize,
}

/// Listening addresses. Port 0 picks a free port (printed at start).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// WebSocket listener (`/v1/ws`); `"off"` disables it.
    #[serde(default = "default_ws", deserialize_with = "listen_addr")]
    pub ws: Option<SocketAddr>,
    /// Prometheus metrics listener (`/metrics`); `"off"` disables it.
    #[serde(default = "default_metrics", deserialize_with = "listen_addr")]
    pub metrics: Option<SocketAddr>,
    /// QUIC listener (UDP, ALPN `iris/1`); `"off"` disables it.
    #[serde(default = "default_quic", deserialize_with = "listen_addr")]
    pub quic: Option<SocketAddr>,
    /// WebSocket over TLS (`wss://HOST:PORT/v1/ws`); absent or `"off"` disables it.
    #[serde(default, deserialize_with = "listen_addr")]
    pub wss: Option<SocketAddr>,
    /// Service HTTP API (contacts, identity, circles, events, analytics);
    /// `"off"` disables it.
    #[serde(default = "default_http", deserialize_with = "listen_addr")]
    pub http: Option<SocketAddr>,
    /// The same API over TLS; absent or `"off"` disables it.
    #[serde(default, deserialize_with = "listen_addr")]
    pub https: Option<SocketAddr>,
    /// On SIGTERM, how long `/readyz` (on the metrics listener) answers 503
    /// `draining` before sessions are closed, so that a load balancer stops
    /// sending new sessions first. 0: close at once.
    #[serde(default)]
    pub drain_ms: u64,
    /// After `drain_ms`, the time over which the node closes its sessions,
    /// a few at a time, so that their clients reconnect elsewhere spread
    /// over it rather than all at once. 0: close every session at once.
    #[serde(default)]
    pub drain_spread_ms: u64,
}

/// The service HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Largest request body; larger gets 413.
    #[serde(default = "d_http_body")]
    pub max_body_bytes: usize,
    /// How long a client has to send a request's whole body once its head
    /// is in; slower gets 408 and the connection closes.
    #[serde(default = "d_http_body_timeout")]
    pub body_timeout_ms: u64,
    /// Events in one ingestion batch.
    #[serde(default = "d_http_batch")]
    pub max_batch_events: usize,
    /// Bytes of one event's payload.
    #[serde(default = "d_http_event")]
    pub max_event_bytes: usize,
    /// Nesting depth of an event's payload.
    #[serde(default = "d_http_depth")]
    pub max_payload_depth: usize,
    /// How far in the past an ingested event's `ts` may be.
    #[serde(default = "d_http_event_age")]
    pub max_event_age_ms: u64,
    /// How far in the future an ingested event's `ts` may be (the sender's
    /// clock running ahead).
    #[serde(default = "d_http_event_skew")]
    pub max_event_skew_ms: u64,
    /// Sustained ingested events per second per tenant; beyond, 429.
    #[serde(default = "d_http_rate")]
    pub tenant_events_per_second: u32,
    /// Burst above the sustained rate.
    #[serde(default = "d_http_burst")]
    pub tenant_event_burst: u32,
    /// Requests waiting for shards at once; beyond, 503.
    #[serde(default = "d_http_pending")]
    pub max_pending_requests: usize,
    /// How long a request waits for its shard before 504.
    #[serde(default = "d_http_timeout")]
    pub request_timeout_ms: u64,
}

/// Limits on what one session may do and hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest message body; larger sends get `too_large`.
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
    /// Largest frame read whole; larger frames close the connection.
    #[serde(default = "d_frame")]
    pub max_frame_bytes: usize,
    /// Frames queued for one session; a session that falls this far behind is
    /// closed (it resumes from its last seq).
    #[serde(default = "d_queue")]
    pub session_queue_frames: usize,
    /// Sustained frames per second a session may send.
    #[serde(default = "d_fps")]
    pub frames_per_second: u32,
    /// Burst of frames above the sustained rate.
    #[serde(default = "d_burst")]
    pub frame_burst: u32,
    /// Heartbeat interval announced in `welcome`; silence for two closes.
    #[serde(default = "d_heartbeat")]
    pub heartbeat_ms: u64,
    /// Time allowed between connect and a valid `hello`.
    #[serde(default = "d_hello")]
    pub hello_timeout_ms: u64,
    /// Sessions one user may hold at once (across devices); more get
    /// `rate_limited` and are closed.
    #[serde(default = "d_sessions_per_user")]
    pub max_sessions_per_user: usize,
    /// Client connections (WebSocket and QUIC together) one node holds at
    /// once; one more is refused at once (HTTP 503 on WebSocket,
    /// CONNECTION_REFUSED on QUIC). Bound it below the open-files limit.
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    /// Sends per second per tenant, across all its sessions on a node;
    /// beyond, sends get `rate_limited`.
    #[serde(default = "d_tenant_sends")]
    pub tenant_sends_per_second: u32,
    /// Burst of sends above the per-tenant rate.
    #[serde(default = "d_tenant_burst")]
    pub tenant_send_burst: u32,
    /// Presence subscriptions one session may hold.
    #[serde(default = "d_subs")]
    pub max_subscriptions_per_session: usize,
    /// Users named in one subscribe/unsubscribe/contacts frame.
    #[serde(default = "d_list")]
    pub max_list_items: usize,
    /// Contacts one user may have.
    #[serde(default = "d_contacts")]
    pub max_contacts: usize,
    /// Presence subscribers one user may have.
    #[serde(default = "d_subscribers")]
    pub max_subscribers_per_user: usize,
    /// Body bytes in one replay or sync page (a page also stops at its limit).
    #[serde(default = "d_page_bytes")]
    pub max_page_bytes: usize,
}

/// Shards and queues.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Core {
    /// Number of shards (virtual shards; ring partitions). Fixed for the
    /// life of the data: changing it moves users.
    #[serde(default = "d_shards")]
    pub shards: u32,
    /// Threads that run shard actors.
    #[serde(default = "d_threads")]
    pub shard_threads: usize,
    /// Envelopes queued per shard partition and per edge.
    #[serde(default = "d_bus_queue")]
    pub bus_queue: usize,
    /// Writes one shard may have in flight before it stops taking input.
    #[serde(default = "d_inflight")]
    pub max_inflight_writes: usize,
    /// Users one shard keeps in memory.
    #[serde(default = "d_cached")]
    pub max_cached_users: usize,
    /// An edge not heard from for this long is dead: shards end its
    /// sessions (users go offline). Edges renew it `edge_lease_renewals`
    /// times per lease.
    #[serde(default = "d_lease")]
    pub edge_lease_ms: u64,
    /// How many times per `edge_lease_ms` an edge renews its lease on every
    /// shard (every `edge_lease_ms / edge_lease_renewals`): more renewals
    /// survive more lost or late ones, at one envelope per shard each.
    #[serde(default = "d_lease_renewals")]
    pub edge_lease_renewals: u32,
    /// Shards mark each presence notice with their owner epoch, so that
    /// edges drop a word from an owner that lost the shard (ADR 0021).
    /// Turn off (in every region of a federation) only while an edge or
    /// relay node runs a version before 2026-12-07, which cannot read the
    /// marked notice; then on again.
    #[serde(default = "d_true")]
    pub mark_presence: bool,
}

/// Where a node keeps its data: `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Backend {
    /// fjall under `data_dir/store`; a single node only.
    #[default]
    Embedded,
    /// The Redis server at `storage.redis_url`.
    Redis,
    /// The ScyllaDB (or Cassandra 4+) cluster of `[storage.scylla]`.
    Scylla,
}

impl Backend {
    /// Every backend, as the config names them.
    pub const ALL: [Backend; 3] = [Backend::Embedded, Backend::Redis, Backend::Scylla];

    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Redis => "redis",
            Backend::Scylla => "scylla",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for Backend {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Backend::ALL.into_iter().find(|b| b.name() == name).ok_or_else(|| {
            format!("storage.backend: unknown backend {name:?}; one of \"embedded\", \"redis\" or \"scylla\"")
        })
    }
}

/// Which storage backend, and its settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// `embedded` (fjall under `data_dir`), `redis` (at `redis_url`) or
    /// `scylla` (as `[storage.scylla]` says); anything else is refused when
    /// the config is loaded.
    #[serde(default)]
    pub backend: Backend,
    /// The Redis server of the `redis` backend, `redis://HOST:PORT/DB`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Most writes sharing one fsync.
    #[serde(default = "d_batch_ops")]
    pub max_batch_ops: usize,
    /// Write batches waiting for the committer; shards wait beyond it.
    #[serde(default = "d_queue_batches")]
    pub queue_batches: usize,
    /// How long a `session:{tenant}:{user}` record lives on Redis.
    #[serde(default = "d_session_ttl")]
    pub session_ttl_hours: u64,
    /// How long retried sends are recognised (at least 7 days = 168 h).
    #[serde(default = "d_dedup_hours")]
    pub dedup_retention_hours: u64,
    /// The ScyllaDB (or Cassandra 4+) cluster of the `scylla` backend.
    #[serde(default)]
    pub scylla: Option<Scylla>,
}

/// The statements of the ScyllaDB backend whose consistency can be set,
/// each with its default. Writes that back an `accepted` default to
/// LOCAL_QUORUM, and so do the reads a new shard owner recovers from.
pub const SCYLLA_STATEMENTS: &[(&str, &str)] = &[
    ("write", "LOCAL_QUORUM"),
    ("append_checked", "LOCAL_QUORUM"),
    ("rollup_add", "LOCAL_QUORUM"),
    ("load_user", "LOCAL_QUORUM"),
    ("dedup", "LOCAL_QUORUM"),
    ("read_inbox", "LOCAL_QUORUM"),
    ("receipts", "LOCAL_QUORUM"),
    ("session", "LOCAL_ONE"),
    ("event_seen", "LOCAL_QUORUM"),
    ("read_log", "LOCAL_QUORUM"),
    ("rollups", "LOCAL_ONE"),
    ("api_keys", "LOCAL_QUORUM"),
    ("migrate", "QUORUM"),
];

/// Consistency levels as CQL names them.
pub const CQL_CONSISTENCY_LEVELS: &[&str] =
    &["ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"];

/// The ScyllaDB backend: where the cluster is, how to reach it, and how
/// strongly each statement reads and writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scylla {
    /// Contact points, `host:port` (the driver discovers the rest).
    pub nodes: Vec<String>,
    /// The keyspace (`iris migrate` creates it).
    #[serde(default = "d_keyspace")]
    pub keyspace: String,
    /// `SimpleStrategy` (with `replication_factor`) or
    /// `NetworkTopologyStrategy` (with `datacenters`).
    #[serde(default = "d_replication_class")]
    pub replication_class: String,
    /// Replicas with `SimpleStrategy`.
    #[serde(default = "d_replication_factor")]
    pub replication_factor: u32,
    /// Datacenter → replicas with `NetworkTopologyStrategy`.
    #[serde(default)]
    pub datacenters: std::collections::BTreeMap<String, u32>,
    /// The datacenter whose nodes this region prefers (LOCAL_* levels are
    /// relative to it).
    #[serde(default)]
    pub local_datacenter: Option<String>,
    /// Statement name (see [`SCYLLA_STATEMENTS`]) → consistency level.
    #[serde(default)]
    pub consistency: std::collections::BTreeMap<String, String>,
    /// Serial consistency of conditional writes: `LOCAL_SERIAL` or `SERIAL`.
    #[serde(default = "d_serial")]
    pub serial_consistency: String,
    /// Client-side timeout of one request, ms.
    #[serde(default = "d_request_timeout")]
    pub request_timeout_ms: u64,
    /// Timeout of opening a connection, ms.
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// `default` (retry idempotent statements on another node, as the
    /// driver's default policy decides) or `none` (fail at once).
    #[serde(default = "d_retry")]
    pub retry: String,
    /// When inbox appends are conditional (`IF NOT EXISTS`): `recovery`
    /// (the first append per user after a shard owner loaded it) or
    /// `always` (every append; closes the window of a zombie owner at the
    /// cost of a Paxos round per message). See ADR 0011.
    #[serde(default = "d_checked_appends")]
    pub checked_appends: String,
    /// Most bytes of values in one batch; a commit beyond it is written in
    /// several batches, in order (Cassandra's default
    /// `batch_size_fail_threshold_in_kb` is 50; ScyllaDB's is 1024).
    #[serde(default = "d_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Create the keyspace with `tablets = {'enabled': false}` (ScyllaDB
    /// 2025+ with NetworkTopologyStrategy: counters and the conditional
    /// writes need vnode keyspaces there). Set false for Cassandra, which
    /// does not know the option.
    #[serde(default = "d_true")]
    pub disable_tablets: bool,
    /// Username for password authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable holding the password (the password itself
    /// never appears in a config file or a log).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Connect with TLS, verifying the nodes against this CA bundle (PEM).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

impl Scylla {
    /// The consistency level configured for a statement (or its default).
    pub fn consistency_of(&self, statement: &str) -> &str {
        self.consistency.get(statement).map(String::as_str).unwrap_or_else(|| {
            SCYLLA_STATEMENTS.iter().find(|(s, _)| *s == statement).map(|(_, d)| *d).unwrap_or("LOCAL_QUORUM")
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check(!self.nodes.is_empty(), "storage.scylla.nodes", "name at least one host:port")?;
        for n in &self.nodes {
            let port = n.rsplit_once(':').and_then(|(h, p)| (!h.is_empty()).then_some(p));
            check(
                port.is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p > 0)),
                "storage.scylla.nodes",
                format!("{n:?} is not host:port"),
            )?;
        }
        let k = &self.keyspace;
        check(
            (1..=48).contains(&k.len())
                && k.starts_with(|c: char| c.is_ascii_lowercase())
                && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "storage.scylla.keyspace",
            "1–48 characters of [a-z0-9_], starting with a letter",
        )?;
        match self.replication_class.as_str() {
            "SimpleStrategy" => check(
                (1..=15).contains(&self.replication_factor),
                "storage.scylla.replication_factor",
                "between 1 and 15",
            )?,
            "NetworkTopologyStrategy" => {
                check(
                    !self.datacenters.is_empty(),
                    "storage.scylla.datacenters",
                    "NetworkTopologyStrategy needs datacenters = { NAME = REPLICAS }",
                )?;
                for (dc, rf) in &self.datacenters {
                    check(
                        !dc.is_empty() && dc.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                        "storage.scylla.datacenters",
                        format!("{dc:?} is not a datacenter name"),
                    )?;
                    check((1..=15).contains(rf), "storage.scylla.datacenters", "replicas between 1 and 15")?;
                }
            }
            other => check(
                false,
                "storage.scylla.replication_class",
                format!("{other:?}: \"SimpleStrategy\" or \"NetworkTopologyStrategy\""),
            )?,
        }
        for (statement, level) in &self.consistency {
            check(
                SCYLLA_STATEMENTS.iter().any(|(s, _)| s == statement),
                "storage.scylla.consistency",
                format!(
                    "unknown statement {statement:?}; known: {}",
                    SCYLLA_STATEMENTS.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
                ),
            )?;
            check(
                CQL_CONSISTENCY_LEVELS.contains(&level.as_str()),
                "storage.scylla.consistency",
                format!("{statement} = {level:?}: one of {}", CQL_CONSISTENCY_LEVELS.join(", ")),
            )?;
        }
        check(
            matches!(self.serial_consistency.as_str(), "SERIAL" | "LOCAL_SERIAL"),
            "storage.scylla.serial_consistency",
            "\"SERIAL\" or \"LOCAL_SERIAL\"",
        )?;
        check(
            (10..=600_000).contains(&self.request_timeout_ms),
            "storage.scylla.request_timeout_ms",
            "between 10 and 600000",
        )?;
        check(
            (100..=600_000).contains(&self.connect_timeout_ms),
            "storage.scylla.connect_timeout_ms",
            "between 100 and 600000",
        )?;
        check(matches!(self.retry.as_str(), "default" | "none"), "storage.scylla.retry", "\"default\" or \"none\"")?;
        check(
            (1_024..=16 << 20).contains(&self.max_batch_bytes),
            "storage.scylla.max_batch_bytes",
            "between 1024 and 16777216",
        )?;
        check(
            matches!(self.checked_appends.as_str(), "recovery" | "always"),
            "storage.scylla.checked_appends",
            "\"recovery\" or \"always\"",
        )?;
        check(
            self.username.is_some() == self.password_env.is_some(),
            "storage.scylla.password_env",
            "name both username and password_env (the variable holding the password), or neither",
        )?;
        check(
            self.tls_cert_file.is_some() == self.tls_key_file.is_some(),
            "storage.scylla.tls_cert_file",
            "name both tls_cert_file and tls_key_file, or neither",
        )?;
        check(
            self.tls_cert_file.is_none() || self.tls_ca_file.is_some(),
            "storage.scylla.tls_ca_file",
            "a client certificate needs TLS: name tls_ca_file too",
        )?;
        Ok(())
    }
}

fn d_max_batch_bytes() -> usize {
    49_152
}

fn d_true() -> bool {
    true
}

fn d_keyspace() -> String {
    "iris".into()
}

fn d_replication_class() -> String {
    "SimpleStrategy".into()
}

fn d_replication_factor() -> u32 {
    3
}

fn d_serial() -> String {
    "LOCAL_SERIAL".into()
}

fn d_request_timeout() -> u64 {
    2_000
}

fn d_connect_timeout() -> u64 {
    5_000
}

fn d_retry() -> String {
    "default".into()
}

fn d_checked_appends() -> String {
    "recovery".into()
}

/// Token verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// JWKS file with EdDSA, RS256 or HS256 keys, each with a `kid`;
    /// SIGHUP re-reads it (key rotation without restart).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Failed token checks allowed per source address per minute; beyond,
    /// the address gets `unauthorized` without a check until the minute ends.
    #[serde(default = "d_failed_auth")]
    pub failed_auth_per_minute: u32,
    /// File holding the HS256 secret (default: a dev key created in
    /// `data_dir/auth/dev-hs256.key` on first start).
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// Required `iss`, if set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`.
    #[serde(default = "d_leeway")]
    pub leeway_secs: u64,
}

/// A listen address, or `"off"` to disable the listener.
fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("{text:?} is not HOST:PORT or \"off\"")))
}

fn default_node_id() -> String {
    "node-1".into()
}
fn default_region() -> String {
    "local".into()
}
fn default_roles() -> Vec<Role> {
    vec![Role::Edge, Role::Core, Role::Router]
}
fn default_ws() -> Option<SocketAddr> {
    Some("127.0.0.1:8080".parse().expect("valid literal"))
}
fn default_metrics() -> Option<SocketAddr> {
    Some("127.0.0.1:9100".parse().expect("valid literal"))
}
fn default_quic() -> Option<SocketAddr> {
    Some("127.0.0.1:4433".parse().expect("valid literal"))
}
fn d_global_partitions() -> u32 {
    8
}
fn d_outbound_partitions() -> u32 {
    8
}
fn d_presence_interval() -> u64 {
    1_000
}
fn d_presence_batch() -> usize {
    100_000
}
fn d_fetch_wait() -> u32 {
    100
}
fn d_linger() -> u32 {
    0
}
/// `cluster.producers` unset (measured in bench/region-hops, ADR 0016).
pub const DEFAULT_PRODUCERS: u32 = 1;

fn d_fetch_min_bytes() -> u32 {
    1
}
fn d_producers() -> u32 {
    DEFAULT_PRODUCERS
}
fn d_log_outbox_max() -> u64 {
    1_000_000
}
fn d_log_publish_interval() -> u32 {
    50
}
fn d_session_timeout() -> u32 {
    6_000
}
fn default_http() -> Option<SocketAddr> {
    Some("127.0.0.1:8090".parse().expect("valid literal"))
}
fn d_http_body() -> usize {
    4 << 20
}
fn d_http_body_timeout() -> u64 {
    30_000
}
fn d_http_batch() -> usize {
    1_000
}
fn d_http_event() -> usize {
    16 * 1024
}
fn d_http_depth() -> usize {
    16
}
fn d_http_event_age() -> u64 {
    30 * 24 * 3_600_000
}
fn d_http_event_skew() -> u64 {
    3_600_000
}
fn d_http_rate() -> u32 {
    100_000
}
fn d_http_burst() -> u32 {
    200_000
}
fn d_http_pending() -> usize {
    10_000
}
fn d_http_timeout() -> u64 {
    10_000
}
fn d_quic_idle() -> u64 {
    60_000
}
fn d_quic_stream_window() -> u32 {
    256 * 1024
}
fn d_quic_conn_window() -> u32 {
    512 * 1024
}
fn d_tenant_sends() -> u32 {
    100_000
}
fn d_tenant_burst() -> u32 {
    200_000
}
fn d_sessions_per_user() -> usize {
    16
}
fn d_max_connections() -> usize {
    1_000_000
}
fn d_quic_handshakes_before_retry() -> usize {
    256
}
fn d_quic_max_handshakes() -> usize {
    8_192
}
fn d_failed_auth() -> u32 {
    20
}
fn d_body() -> usize {
    65_536
}
fn d_frame() -> usize {
    1_048_576
}
fn d_queue() -> usize {
    2_048
}
fn d_fps() -> u32 {
    200
}
fn d_burst() -> u32 {
    400
}
fn d_heartbeat() -> u64 {
    30_000
}
fn d_hello() -> u64 {
    10_000
}
fn d_subs() -> usize {
    1_000
}
fn d_list() -> usize {
    1_000
}
fn d_contacts() -> usize {
    10_000
}
fn d_subscribers() -> usize {
    100_000
}
fn d_page_bytes() -> usize {
    4 << 20
}
fn d_shards() -> u32 {
    64
}
fn d_threads() -> usize {
    2
}
fn d_bus_queue() -> usize {
    8_192
}
fn d_inflight() -> usize {
    1_024
}
fn d_session_ttl() -> u64 {
    24
}
fn d_lease() -> u64 {
    10_000
}
fn d_lease_renewals() -> u32 {
    3
}
fn d_cached() -> usize {
    100_000
}
fn d_batch_ops() -> usize {
    8_192
}
fn d_queue_batches() -> usize {
    4_096
}
fn d_dedup_hours() -> u64 {
    192
}
fn d_leeway() -> u64 {
    30
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            ws: default_ws(),
            metrics: default_metrics(),
            quic: default_quic(),
            wss: None,
            http: default_http(),
            https: None,
            drain_ms: 0,
            drain_spread_ms: 0,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl Default for Auth {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl Default for Core {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl Default for Quic {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl Default for Http {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl Default for Storage {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// The longest `http.max_event_age_ms`: 366 days.
const MAX_EVENT_AGE_MS: u64 = 366 * 24 * 3_600_000;

fn check(ok: bool, field: &'static str, problem: impl Into<String>) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::Invalid { field, problem: problem.into() }) }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text)
    }

    /// Parses and validates config text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The data directory, defaulted.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from("./iris-data"))
    }

    /// Checks ranges and relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = |s: &str| {
            !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        check(name_ok(&self.node_id), "node_id", "1–64 characters of [A-Za-z0-9-_.]")?;
        check(name_ok(&self.region), "region", "1–64 characters of [A-Za-z0-9-_.]")?;
        check(!self.roles.is_empty(), "roles", "name at least one role")?;
        let all = [Role::Edge, Role::Core, Role::Router].iter().all(|r| self.roles.contains(r));
        check(all || self.cluster.is_some(), "roles", "a node without all of edge, core, router needs [cluster]")?;
        check(self.roles.contains(&Role::Router), "roles", "every node routes: include \"router\"")?;
        check(self.listen.drain_ms <= 600_000, "listen.drain_ms", "at most 600000 (ten minutes)")?;
        check(self.listen.drain_spread_ms <= 600_000, "listen.drain_spread_ms", "at most 600000 (ten minutes)")?;
        if let Some(t) = &self.tracing {
            OtlpEndpoint::parse(&t.otlp_endpoint)
                .map_err(|problem| ConfigError::Invalid { field: "tracing.otlp_endpoint", problem })?;
            check((0.0..=1.0).contains(&t.sample_ratio), "tracing.sample_ratio", "between 0 and 1")?;
            check(name_ok(&t.service_name), "tracing.service_name", "1–64 characters of [A-Za-z0-9-_.]")?;
        }
        let r = &self.retention;
        check((1..=86_400).contains(&r.sweep_interval_secs), "retention.sweep_interval_secs", "between 1 and 86400")?;
        check(r.tenants.keys().all(|t| !t.is_empty()), "retention.tenants", "a tenant name is empty")?;
        if let Some(c) = &self.cluster {
            check(!c.kafka.is_empty(), "cluster.kafka", "name the Kafka bootstrap servers")?;
            check(
                self.storage.backend != Backend::Embedded,
                "storage.backend",
                "a cluster shares its storage: use \"redis\" or \"scylla\"",
            )?;
            check((1..=10_000).contains(&c.fetch_wait_ms), "cluster.fetch_wait_ms", "between 1 and 10000")?;
            check(c.session_timeout_ms >= 1_000, "cluster.session_timeout_ms", "at least 1000")?;
            check(c.linger_ms <= 1_000, "cluster.linger_ms", "at most 1000")?;
            check((1..=16).contains(&c.producers), "cluster.producers", "between 1 and 16")?;
            if let Some(p) = c.shard_partitions {
                check(
                    p >= 1 && p <= self.core.shards && self.core.shards.is_multiple_of(p),
                    "cluster.shard_partitions",
                    "a divisor of core.shards (each partition carries the same number of shards)",
                )?;
            }
            check((1..=1_048_576).contains(&c.fetch_min_bytes), "cluster.fetch_min_bytes", "between 1 and 1048576")?;
            check(
                !(c.log_topics == Some(true) && self.storage.backend != Backend::Redis),
                "cluster.log_topics",
                "the log topics are published from an outbox only the redis backend keeps; set false or use redis",
            )?;
            check(c.log_outbox_max >= 1, "cluster.log_outbox_max", "at least 1")?;
            check(
                (1..=10_000).contains(&c.log_publish_interval_ms),
                "cluster.log_publish_interval_ms",
                "between 1 and 10000",
            )?;
        }
        if let Some(f) = &self.federation {
            check(self.cluster.is_some(), "federation", "a federated region is a cluster: add [cluster]")?;
            check(!f.global_kafka.is_empty(), "federation.global_kafka", "name the global Kafka bootstrap servers")?;
            check(
                f.regions.iter().all(|r| name_ok(r)),
                "federation.regions",
                "1–64 characters of [A-Za-z0-9-_.] each",
            )?;
            let unique: std::collections::BTreeSet<&String> = f.regions.iter().collect();
            check(unique.len() == f.regions.len(), "federation.regions", "a region is named twice")?;
            check(f.regions.contains(&self.region), "federation.regions", "must include this node's region")?;
            check((1..=1_024).contains(&f.global_partitions), "federation.global_partitions", "between 1 and 1024")?;
            check(
                (1..=1_024).contains(&f.outbound_partitions),
                "federation.outbound_partitions",
                "between 1 and 1024",
            )?;
            check(
                (50..=5_000).contains(&f.presence_interval_ms),
                "federation.presence_interval_ms",
                "between 50 and 5000 (staleness across regions must stay under 5 s)",
            )?;
            check(f.max_presence_batch >= 1, "federation.max_presence_batch", "at least 1")?;
            check(!self.node_id.contains('@'), "node_id", "no '@' in a federation (edge ids are node@region)")?;
        }
        let l = &self.limits;
        check(l.max_body_bytes >= 1, "limits.max_body_bytes", "must be at least 1")?;
        check(
            l.max_frame_bytes >= 1 << 20,
            "limits.max_frame_bytes",
            "at least 1048576 (the protocol reads 1 MiB frames whole)",
        )?;
        check(
            l.max_frame_bytes >= l.max_body_bytes + 1_024,
            "limits.max_frame_bytes",
            "must exceed max_body_bytes by at least 1024",
        )?;
        check(l.max_frame_bytes <= 64 << 20, "limits.max_frame_bytes", "at most 64 MiB")?;
        check(
            l.session_queue_frames >= 1_100,
            "limits.session_queue_frames",
            "must hold a replay page (at least 1100)",
        )?;
        check(l.frames_per_second >= 1, "limits.frames_per_second", "must be at least 1")?;
        check(l.frame_burst >= 1, "limits.frame_burst", "must be at least 1")?;
        check((1_000..=3_600_000).contains(&l.heartbeat_ms), "limits.heartbeat_ms", "between 1000 and 3600000")?;
        check(l.hello_timeout_ms >= 100, "limits.hello_timeout_ms", "at least 100")?;
        check(l.max_list_items >= 1, "limits.max_list_items", "must be at least 1")?;
        check(l.max_page_bytes >= 1_024, "limits.max_page_bytes", "at least 1024")?;
        let c = &self.core;
        check((1..=4_096).contains(&c.shards), "core.shards", "between 1 and 4096")?;
        check((1..=256).contains(&c.shard_threads), "core.shard_threads", "between 1 and 256")?;
        check(c.bus_queue >= 16, "core.bus_queue", "at least 16")?;
        check(c.max_inflight_writes >= 1, "core.max_inflight_writes", "at least 1")?;
        check(c.max_cached_users >= 16, "core.max_cached_users", "at least 16")?;
        check((300..=600_000).contains(&c.edge_lease_ms), "core.edge_lease_ms", "between 300 and 600000")?;
        check(
            (2..=20).contains(&c.edge_lease_renewals),
            "core.edge_lease_renewals",
            "between 2 and 20 (one renewal per lease would expire as it is renewed)",
        )?;
        check(
            c.edge_lease_ms / u64::from(c.edge_lease_renewals) >= 100,
            "core.edge_lease_renewals",
            "at most one renewal per 100 ms of edge_lease_ms",
        )?;
        check(l.max_sessions_per_user >= 1, "limits.max_sessions_per_user", "at least 1")?;
        check(l.max_connections >= 1, "limits.max_connections", "at least 1")?;
        check(self.quic.max_handshakes >= 1, "quic.max_handshakes", "at least 1")?;
        check(l.tenant_sends_per_second >= 1, "limits.tenant_sends_per_second", "at least 1")?;
        check(l.tenant_send_burst >= 1, "limits.tenant_send_burst", "at least 1")?;
        check(self.auth.failed_auth_per_minute >= 1, "auth.failed_auth_per_minute", "at least 1")?;
        check(
            self.tls.cert_file.is_some() == self.tls.key_file.is_some(),
            "tls",
            "name both cert_file and key_file, or neither",
        )?;
        check(
            (1_000..=600_000).contains(&self.quic.idle_timeout_ms),
            "quic.idle_timeout_ms",
            "between 1000 and 600000",
        )?;
        check(self.quic.stream_window_bytes >= 16 * 1024, "quic.stream_window_bytes", "at least 16384")?;
        check(
            self.quic.connection_window_bytes >= self.quic.stream_window_bytes,
            "quic.connection_window_bytes",
            "at least stream_window_bytes",
        )?;
        let h = &self.http;
        check(h.max_body_bytes >= 1_024, "http.max_body_bytes", "at least 1024")?;
        check((100..=600_000).contains(&h.body_timeout_ms), "http.body_timeout_ms", "between 100 and 600000")?;
        check((1..=100_000).contains(&h.max_batch_events), "http.max_batch_events", "between 1 and 100000")?;
        check(h.max_event_bytes >= 64, "http.max_event_bytes", "at least 64")?;
        check(h.max_payload_depth >= 1, "http.max_payload_depth", "at least 1")?;
        check(
            (60_000..=MAX_EVENT_AGE_MS).contains(&h.max_event_age_ms),
            "http.max_event_age_ms",
            "between 60000 (a minute) and 31622400000 (366 days)",
        )?;
        check(h.max_event_skew_ms <= 86_400_000, "http.max_event_skew_ms", "at most 86400000 (a day)")?;
        check(h.tenant_events_per_second >= 1, "http.tenant_events_per_second", "at least 1")?;
        check(
            h.tenant_event_burst as usize >= h.max_batch_events,
            "http.tenant_event_burst",
            "at least max_batch_events",
        )?;
        check(h.max_pending_requests >= 1, "http.max_pending_requests", "at least 1")?;
        check(h.request_timeout_ms >= 100, "http.request_timeout_ms", "at least 100")?;
        match &self.storage.scylla {
            Some(s) => s.validate()?,
            None => check(
                self.storage.backend != Backend::Scylla,
                "storage.scylla",
                "the scylla backend needs a [storage.scylla] section with nodes = [\"HOST:9042\"]",
            )?,
        }
        check(
            self.storage.backend != Backend::Redis
                || self.storage.redis_url.as_deref().is_some_and(|u| u.starts_with("redis://")),
            "storage.redis_url",
            "the redis backend needs redis_url = \"redis://HOST:PORT\"",
        )?;
        check(self.storage.max_batch_ops >= 1, "storage.max_batch_ops", "at least 1")?;
        check(self.storage.queue_batches >= 1, "storage.queue_batches", "at least 1")?;
        check(self.storage.session_ttl_hours >= 1, "storage.session_ttl_hours", "at least 1")?;
        check(
            self.storage.dedup_retention_hours >= 168,
            "storage.dedup_retention_hours",
            "at least 168 (7 days, as the protocol promises)",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_seed_is_drawn_unless_configured() {
        assert_eq!(Config::from_toml("").unwrap().seed, None);
        assert_eq!(Config::from_toml("seed = 9223372036854775807\n").unwrap().seed, Some(i64::MAX as u64));
    }

    #[test]
    fn empty_config_is_the_single_node_default() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.ws.unwrap().port(), 8080);
        assert_eq!(c.listen.quic.unwrap().port(), 4433);
        assert_eq!(c.listen.metrics.unwrap().port(), 9100);
        assert_eq!(c.core.shards, 64);
        assert_eq!(c.limits.max_body_bytes, 65_536);
    }

    #[test]
    fn listeners_can_be_turned_off() {
        let c = Config::from_toml("[listen]\nmetrics = \"off\"\nquic = \"off\"\nwss = \"127.0.0.1:8443\"\n").unwrap();
        assert!(c.listen.metrics.is_none() && c.listen.quic.is_none());
        assert_eq!(c.listen.wss.unwrap().port(), 8443);
        assert!(Config::from_toml("[listen]\nws = \"nope\"\n").unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn tracing_and_producers_are_validated() {
        let c = Config::from_toml("[tracing]\notlp_endpoint = \"http://otel:4318\"\n").unwrap();
        let t = c.tracing.unwrap();
        assert_eq!((t.sample_ratio, t.service_name.as_str()), (0.01, "iris"));
        assert_eq!(
            OtlpEndpoint::parse("http://otel:4318").unwrap(),
            OtlpEndpoint { authority: "otel:4318".into(), path: "/v1/traces".into() }
        );
        assert_eq!(
            OtlpEndpoint::parse("http://127.0.0.1/custom/traces").unwrap(),
            OtlpEndpoint { authority: "127.0.0.1:4318".into(), path: "/custom/traces".into() }
        );
        for bad in [
            "https://otel:4318",
            "otel:4318",
            "http://",
            "http://:4318",
            "http://a:b",
            "http://u@h:1",
            "http://h:1/a b",
        ] {
            let e = Config::from_toml(&format!("[tracing]\notlp_endpoint = \"{bad}\"\n")).unwrap_err().to_string();
            assert!(e.contains("tracing.otlp_endpoint"), "{bad}: {e}");
        }
        let e =
            Config::from_toml("[tracing]\notlp_endpoint = \"http://h\"\nsample_ratio = 1.5\n").unwrap_err().to_string();
        assert!(e.contains("tracing.sample_ratio"), "{e}");
        let redis = |extra: &str| {
            Config::from_toml(&format!(
                "roles = [\"core\", \"router\"]\n[cluster]\nkafka = \"k:9092\"\n{extra}\
                 [storage]\nbackend = \"redis\"\nredis_url = \"redis://r:6379\"\n"
            ))
        };
        assert_eq!(redis("").unwrap().cluster.unwrap().producers, DEFAULT_PRODUCERS);
        assert_eq!(redis("producers = 4\n").unwrap().cluster.unwrap().producers, 4);
        assert_eq!(redis("").unwrap().cluster.unwrap().fetch_min_bytes, 1);
        assert_eq!(redis("fetch_min_bytes = 2048\n").unwrap().cluster.unwrap().fetch_min_bytes, 2048);
        let e = redis("fetch_min_bytes = 0\n").unwrap_err().to_string();
        assert!(e.contains("cluster.fetch_min_bytes"), "{e}");
        for bad in ["0", "17"] {
            let e = redis(&format!("producers = {bad}\n")).unwrap_err().to_string();
            assert!(e.contains("cluster.producers"), "{e}");
        }
        assert_eq!(redis("").unwrap().cluster.unwrap().shard_partitions, None);
        assert_eq!(redis("shard_partitions = 16\n").unwrap().cluster.unwrap().shard_partitions, Some(16));
        for bad in ["0", "12", "128"] {
            let e = redis(&format!("shard_partitions = {bad}\n")).unwrap_err().to_string();
            assert!(e.contains("cluster.shard_partitions"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = Config::from_toml("[limits]\nmax_body_byte = 5\n").unwrap_err().to_string();
        assert!(e.contains("max_body_byte"), "{e}");
        let e = Config::from_toml("nodeid = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("nodeid"), "{e}");
    }

    const SCYLLA: &str = "[cluster]\nkafka = \"127.0.0.1:9092\"\n[storage]\nbackend = \"scylla\"\n[storage.scylla]\nnodes = [\"10.0.0.1:9042\"]\n";

    fn cluster(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("roles = [\"core\", \"router\"]\n{SCYLLA}{extra}"))
    }

    #[test]
    fn log_topics_follow_the_backend_and_refuse_one_without_an_outbox() {
        let redis = "roles = [\"core\", \"router\"]\n[cluster]\nkafka = \"k:9092\"\n\
                     [storage]\nbackend = \"redis\"\nredis_url = \"redis://r:6379\"\n";
        let c = Config::from_toml(redis).unwrap();
        assert!(c.cluster.as_ref().unwrap().publishes_logs(c.storage.backend), "on by default with redis");
        let c = cluster("").unwrap();
        assert!(!c.cluster.as_ref().unwrap().publishes_logs(c.storage.backend), "off by default with scylla");
        let e = Config::from_toml(&redis.replace("[storage]", "log_topics = false\n[storage]")).unwrap();
        assert!(!e.cluster.as_ref().unwrap().publishes_logs(e.storage.backend), "turned off");
        let e = Config::from_toml(&format!(
            "roles = [\"core\", \"router\"]\n{}",
            SCYLLA.replace("[storage]", "log_topics = true\n[storage]")
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("cluster.log_topics"), "{e}");
        let e =
            Config::from_toml(&redis.replace("[storage]", "log_outbox_max = 0\n[storage]")).unwrap_err().to_string();
        assert!(e.contains("cluster.log_outbox_max"), "{e}");
    }

    #[test]
    fn the_scylla_backend_validates_its_settings() {
        let c = cluster("").unwrap();
        let s = c.storage.scylla.as_ref().unwrap();
        assert_eq!((s.keyspace.as_str(), s.replication_factor, s.checked_appends.as_str()), ("iris", 3, "recovery"));
        assert_eq!(s.consistency_of("write"), "LOCAL_QUORUM");
        assert_eq!(s.consistency_of("rollups"), "LOCAL_ONE");
        let c = cluster("consistency = { read_inbox = \"LOCAL_ONE\" }\n").unwrap();
        assert_eq!(c.storage.scylla.unwrap().consistency_of("read_inbox"), "LOCAL_ONE");
        let bad = |extra: &str, field: &str, says: &str| {
            let e = cluster(extra).unwrap_err().to_string();
            assert!(e.starts_with(field) && e.contains(says), "{extra:?}: {e}");
        };
        bad("consistency = { apend = \"ONE\" }\n", "storage.scylla.consistency", "apend");
        bad("consistency = { write = \"LOCAL_QUOROM\" }\n", "storage.scylla.consistency", "LOCAL_QUOROM");
        bad("keyspace = \"iris; DROP\"\n", "storage.scylla.keyspace", "[a-z0-9_]");
        bad("replication_class = \"NetworkTopologyStrategy\"\n", "storage.scylla.datacenters", "datacenters");
        bad("replication_class = \"Everywhere\"\n", "storage.scylla.replication_class", "Everywhere");
        bad("username = \"iris\"\n", "storage.scylla.password_env", "neither");
        bad("tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n", "storage.scylla.tls_ca_file", "TLS");
        bad("retry = \"forever\"\n", "storage.scylla.retry", "none");
        bad("checked_appends = \"never\"\n", "storage.scylla.checked_appends", "always");
        bad("request_timeout_ms = 0\n", "storage.scylla.request_timeout_ms", "between");
        let nts = "replication_class = \"NetworkTopologyStrategy\"\ndatacenters = { eu-west = 3, us-east = 3 }\n";
        assert_eq!(cluster(nts).unwrap().storage.scylla.unwrap().datacenters.len(), 2);
        let e = Config::from_toml("[storage]\nbackend = \"scylla\"\n").unwrap_err().to_string();
        assert!(e.starts_with("storage.scylla"), "{e}");
        let e = Config::from_toml(&SCYLLA.replace("10.0.0.1:9042", "10.0.0.1")).unwrap_err().to_string();
        assert!(e.contains("host:port"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let e = Config::from_toml("[core]\nshards = 0\n").unwrap_err().to_string();
        assert!(e.starts_with("core.shards"), "{e}");
        let e = Config::from_toml("[limits]\nmax_body_bytes = 2000000\n").unwrap_err().to_string();
        assert!(e.starts_with("limits.max_frame_bytes"), "{e}");
        let e = Config::from_toml("[limits]\nmax_frame_bytes = 4096\n").unwrap_err().to_string();
        assert!(e.starts_with("limits.max_frame_bytes"), "{e}");
        let e = Config::from_toml("[storage]\ndedup_retention_hours = 1\n").unwrap_err().to_string();
        assert!(e.contains("dedup_retention_hours"), "{e}");
    }

    #[test]
    fn the_backend_is_a_name_the_node_knows() {
        assert_eq!(Config::from_toml("").unwrap().storage.backend, Backend::Embedded);
        let redis = Config::from_toml("[storage]\nbackend = \"redis\"\nredis_url = \"redis://r:6379\"\n").unwrap();
        assert_eq!(redis.storage.backend, Backend::Redis);
        assert_eq!(cluster("").unwrap().storage.backend, Backend::Scylla);
        for bad in ["mongo", "Redis", ""] {
            let e = Config::from_toml(&format!("[storage]\nbackend = {bad:?}\n")).unwrap_err().to_string();
            assert!(e.contains("storage.backend: unknown backend") && e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("\"embedded\", \"redis\" or \"scylla\""), "{e}");
        }
        let e = Config::from_toml("[cluster]\nkafka = \"k:9092\"\n").unwrap_err().to_string();
        assert!(e.starts_with("storage.backend"), "a cluster cannot use the embedded store: {e}");
    }

    #[test]
    fn the_ingest_window_and_lease_renewals_default_to_the_old_fixed_values() {
        let c = Config::from_toml("").unwrap();
        assert_eq!((c.http.max_event_age_ms, c.http.max_event_skew_ms), (30 * 24 * 3_600_000, 3_600_000));
        assert_eq!(c.core.edge_lease_renewals, 3);
        let c = Config::from_toml("[http]\nmax_event_age_ms = 86400000\nmax_event_skew_ms = 0\n").unwrap();
        assert_eq!((c.http.max_event_age_ms, c.http.max_event_skew_ms), (86_400_000, 0));
        let bad = |text: &str, field: &str| {
            let e = Config::from_toml(text).unwrap_err().to_string();
            assert!(e.starts_with(field), "{text:?}: {e}");
        };
        bad("[http]\nmax_event_age_ms = 1000\n", "http.max_event_age_ms");
        bad("[http]\nmax_event_age_ms = 40000000000\n", "http.max_event_age_ms");
        bad("[http]\nmax_event_skew_ms = 100000000\n", "http.max_event_skew_ms");
        bad("[core]\nedge_lease_renewals = 1\n", "core.edge_lease_renewals");
        bad("[core]\nedge_lease_renewals = 21\n", "core.edge_lease_renewals");
        bad("[core]\nedge_lease_ms = 300\nedge_lease_renewals = 4\n", "core.edge_lease_renewals");
        assert_eq!(Config::from_toml("[core]\nedge_lease_renewals = 10\n").unwrap().core.edge_lease_renewals, 10);
    }

    #[test]
    fn example_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in ["single.toml", "region-local.toml", "two-regions/eu.toml", "two-regions/us.toml"] {
            Config::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn federation_needs_a_cluster_and_a_consistent_region_list() {
        let base = "region = \"eu\"\n[storage]\nbackend = \"redis\"\nredis_url = \"redis://r:6379\"\n[cluster]\nkafka = \"k:9092\"\n";
        let fed = |extra: &str| {
            Config::from_toml(&format!(
                "{base}[federation]\nregions = [\"eu\", \"us\"]\nglobal_kafka = \"g:9092\"\n{extra}"
            ))
        };
        let ok = fed("").unwrap();
        let f = ok.federation.unwrap();
        assert!(f.relay);
        assert_eq!((f.presence_interval_ms, f.global_partitions), (1_000, 8));
        let e = fed("presence_interval_ms = 10000\n").unwrap_err().to_string();
        assert!(e.starts_with("federation.presence_interval_ms"), "{e}");
        let e =
            Config::from_toml(&format!("{base}[federation]\nregions = [\"us\", \"ap\"]\nglobal_kafka = \"g:9092\"\n"))
                .unwrap_err()
                .to_string();
        assert!(e.contains("must include this node's region"), "{e}");
        let e =
            Config::from_toml(&format!("{base}[federation]\nregions = [\"eu\", \"eu\"]\nglobal_kafka = \"g:9092\"\n"))
                .unwrap_err()
                .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = Config::from_toml("[federation]\nregions = [\"local\"]\nglobal_kafka = \"g:9092\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("federation"), "{e}");
    }
}
