//! The Kafka bus (rdkafka): the regional implementation of
//! [`iris_router::Bus`], beside the in-process one.
//!
//! Topics per region R (names from the cluster config; these are defaults):
//! `iris.R.shard` with one partition per shard (the ring's shard id *is* the
//! partition), and `iris.R.edge.<edge-id>` with one partition per edge.
//! Envelopes travel encoded by `iris_envelope::encode` (postcard behind a
//! version byte), keyed by the owner's shard key.
//!
//! Built so far: topic creation and checking, the producer side of the bus,
//! the shard consumer group that reports which partitions this node owns
//! (Kafka's group assignment decides; a member that leaves loses its
//! partitions to the others), and a reader of explicitly assigned
//! partitions. [`KafkaSource`] is that group as the consuming side of the
//! bus ([`iris_router::ShardSource`]); what to start, hand, pause and commit
//! is decided by `iris_router::feed`, and both buses pass
//! `iris_router::contract`.

use async_trait::async_trait;
use iris_envelope::{EdgeEnvelope, EdgeId, MAX_TRACES, ShardEnvelope, ShardId, TRACEPARENT, TraceParent};
use iris_router::{Bus, BusError, PublishError, ShardSource, SourceEvent};
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use std::time::Duration;

mod federation;
mod lanes;
pub mod logs;
pub use federation::{OutboundLink, RelayConfig, follow_homes, relay_in, relay_out};
/// Several shards to a partition (ADR 0031): the pure layout and commit
/// ledger, in `iris-router` so the simulator runs the same decisions.
pub use iris_router::spread;
pub use spread::ShardSpread;

/// Kafka failures.
#[derive(Debug, thiserror::Error)]
pub enum KafkaBusError {
    /// The client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A topic exists with a different partition count than configured.
    #[error(
        "topic {topic} has {found} partitions but the config says {expected}; partition counts cannot change under existing data"
    )]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// What the cluster has.
        found: usize,
        /// What the config wants.
        expected: usize,
    },
    /// The brokers' metadata for a topic carried an error past the wait.
    #[error("topic {0}: the brokers' metadata says {1}")]
    Metadata(String, String),
    /// A topic made (or found existing) was not listed by the brokers
    /// within the wait.
    #[error("topic {0} was not listed by the brokers within 30 s of creating it")]
    NotVisible(String),
    /// A topic's partitions had no leader within the wait.
    #[error("topic {0} has partitions without a leader")]
    Leaderless(String),
    /// Creating a topic failed.
    #[error("creating topic {0}: {1}")]
    Create(String, RDKafkaErrorCode),
    /// Deleting a topic failed.
    #[error("deleting topic {0}: {1}")]
    Delete(String, RDKafkaErrorCode),
    /// A relay stopped rather than commit past an envelope it could not move.
    #[error("relay stopped: {0}")]
    Relay(String),
    /// A topic to read does not exist.
    #[error("topic {0} does not exist")]
    NoTopic(String),
    /// The log publisher stopped (it starts over from the committed positions).
    #[error("log publisher: {0}")]
    Publisher(String),
    /// An envelope did not decode.
    #[error("undecodable envelope on {topic}/{partition} at {offset}: {source}")]
    Decode {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
        /// Why.
        #[source]
        source: iris_envelope::EnvelopeError,
    },
}

/// Topic names of a region.
#[derive(Debug, Clone)]
pub struct Topics {
    /// The shard topic.
    pub shard: String,
    /// Prefix of edge topics (`<prefix><edge-node>`).
    pub edge_prefix: String,
    /// Envelopes waiting to leave for other regions (regional cluster).
    pub outbound: String,
    /// This region's copy of the explicit home assignments (regional cluster).
    pub homes: String,
}

impl Topics {
    /// The default names for a region.
    pub fn for_region(region: &str) -> Self {
        Self {
            shard: format!("iris.{region}.shard"),
            edge_prefix: format!("iris.{region}.edge."),
            outbound: format!("iris.{region}.outbound"),
            homes: format!("iris.{region}.homes"),
        }
    }

    /// The topic of an edge (named by its node; the region is the topic's).
    pub fn edge(&self, edge: &EdgeId) -> String {
        format!("{}{}", self.edge_prefix, edge.node())
    }

    /// A region's inbound topic on the global cluster.
    pub fn global(region: &str) -> String {
        format!("iris.global.{region}")
    }

    /// The topics a region's node needs, with their partition counts: the
    /// shard topic (`shard_partitions`), one single-partition topic per
    /// edge, and, in a federation (`outbound_partitions`), the outbound
    /// topic and the one-partition homes topic. The second list names those
    /// that are compacted: the home assignments are state keyed by user,
    /// never expired.
    pub fn region_plan(
        &self,
        shard_partitions: usize,
        edges: &[EdgeId],
        outbound_partitions: Option<usize>,
    ) -> (Vec<(String, usize)>, Vec<String>) {
        let mut wanted = vec![(self.shard.clone(), shard_partitions)];
        wanted.extend(edges.iter().map(|e| (self.edge(e), 1)));
        let mut compacted = Vec::new();
        if let Some(n) = outbound_partitions {
            wanted.push((self.outbound.clone(), n));
            wanted.push((self.homes.clone(), 1));
            compacted.push(self.homes.clone());
        }
        (wanted, compacted)
    }

    /// The consumer group of an edge's reader: its own, read from the end
    /// (an edge only needs what arrives while it runs).
    pub fn edge_group(region: &str, edge: &EdgeId) -> String {
        format!("iris.{region}.edge.{edge}")
    }
}

/// A client that only asks about topics: its metadata requests must not
/// create the topic they ask about. An admin client is a producer to
/// librdkafka, whose default lets a broker with
/// `auto.create.topics.enable=true` (Kafka's default) create a topic asked
/// about, with the broker's `num.partitions`: a new region's shard topic
/// would get that count instead of the one the region wants.
fn asking_config(bootstrap: &str) -> ClientConfig {
    let mut c = client_config(bootstrap);
    c.set("allow.auto.create.topics", "false");
    c
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    // Nagle off: librdkafka leaves it on, and a small request then waits
    // for the previous one's ACK (measured here: one hop p50 5.5 ms with
    // it, 0.4 ms without, at 1,000 msgs/s).
    c.set("bootstrap.servers", bootstrap).set("socket.nagle.disable", "true");
    // A connection attempt whose SYN is dropped (a cut link) is abandoned
    // after 5 s and tried again, and reconnects back off to at most 1 s
    // (librdkafka: 30 s and 10 s), so a client is connected again within
    // seconds of a link healing rather than tens of seconds.
    c.set("socket.connection.setup.timeout.ms", "5000").set("reconnect.backoff.max.ms", "1000");
    // librdkafka's own debug contexts (`consumer,fetch,topic`, say), for an
    // operator reading why a client waits; shown with IRIS_LOG=librdkafka=debug.
    if let Ok(contexts) = std::env::var("IRIS_KAFKA_DEBUG") {
        c.set("debug", contexts).set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    c
}

/// How a consumer's fetches wait: the broker answers a fetch once it holds
/// `min_bytes` for it or `wait_ms` have passed (librdkafka's
/// `fetch.min.bytes` and `fetch.wait.max.ms`). A bare number is a wait
/// with `min_bytes` 1 (answered as soon as anything arrives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    /// The longest a fetch waits, ms.
    pub wait_ms: u32,
    /// What a fetch waits for before it is answered, bytes.
    pub min_bytes: u32,
}

impl From<u32> for Fetch {
    fn from(wait_ms: u32) -> Self {
        Self { wait_ms, min_bytes: 1 }
    }
}

/// A consumer that commits its offsets itself (never automatically),
/// starts at the earliest offset when it has none, and fetches as `fetch`
/// says (chat latency).
pub(crate) fn reader_config(bootstrap: &str, group: &str, fetch: impl Into<Fetch>) -> ClientConfig {
    let fetch = fetch.into();
    let mut c = client_config(bootstrap);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", fetch.wait_ms.to_string())
        .set("fetch.min.bytes", fetch.min_bytes.max(1).to_string());
    c
}

/// How long a request may go unanswered on a connection that
/// [`quick_to_reconnect`] set up before the connection is dropped and made
/// again (librdkafka's default is 60 s).
const QUICK_SOCKET_TIMEOUT_MS: u32 = 10_000;

/// Settings for a client whose link may be cut silently (packets dropped,
/// not refused) and that must be back soon after it heals: the relays, the
/// edges' readers of their topics, and every node's producers. A request in
/// flight during a cut is given up after [`QUICK_SOCKET_TIMEOUT_MS`]
/// instead of 60 s (a produce request: instead of the lesser of 60 s and
/// what is left of `message.timeout.ms`), and the connection made anew,
/// instead of waiting on TCP's retransmission back-off, which grows through
/// the cut (0.2 s doubling: the seventh retransmission is 26 s after the
/// first loss).
pub(crate) fn quick_to_reconnect(c: &mut ClientConfig) -> &mut ClientConfig {
    c.set("socket.timeout.ms", QUICK_SOCKET_TIMEOUT_MS.to_string()).set("socket.keepalive.enable", "true")
}

/// How long the broker may wait for its replicas before answering a
/// produce request of a [`quick_producer`] with a timeout (librdkafka's
/// default is 30 s). Enforced by the broker only: the client's own limit on
/// an unanswered request is [`QUICK_SOCKET_TIMEOUT_MS`].
const QUICK_REQUEST_TIMEOUT_MS: u32 = 5_000;

/// [`quick_to_reconnect`] for an idempotent producer (the bus's and the
/// cross-region path's): a produce request whose replicas lag is answered
/// with a retriable timeout (and sent again, safe: the broker drops the
/// duplicate by its sequence number) after [`QUICK_REQUEST_TIMEOUT_MS`],
/// not after 30 s, and so before the client's own 10 s would drop the
/// whole connection.
pub(crate) fn quick_producer(c: &mut ClientConfig) -> &mut ClientConfig {
    quick_to_reconnect(c).set("request.timeout.ms", QUICK_REQUEST_TIMEOUT_MS.to_string())
}

/// The longest a group member goes between heartbeats. A member learns
/// that its group is rebalancing only from a heartbeat's answer, so every
/// step of a rebalance (one when a member leaves, two when one joins under
/// incremental assignment) leaves the moving partitions unread for up to
/// this long: a third of the session, as librdkafka suggests, was 2 s at
/// the chaos runs' 6 s session (ADR 0026, amended again). A heartbeat is a
/// few dozen bytes to the coordinator.
const MAX_HEARTBEAT_MS: u32 = 500;

/// A consumer-group member (`reader_config`) that is thrown out after
/// `session_timeout_ms` of silence, and heartbeats every third of that, at
/// most every [`MAX_HEARTBEAT_MS`].
fn group_config(bootstrap: &str, group: &str, fetch: impl Into<Fetch>, session_timeout_ms: u32) -> ClientConfig {
    let mut c = reader_config(bootstrap, group, fetch);
    c.set("session.timeout.ms", session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", heartbeat_ms(session_timeout_ms).to_string());
    c
}

/// A group member's heartbeat interval for a session of `session_timeout_ms`.
fn heartbeat_ms(session_timeout_ms: u32) -> u32 {
    (session_timeout_ms / 3).clamp(100, MAX_HEARTBEAT_MS)
}

/// [`group_config`] with incremental (cooperative-sticky) assignment: when
/// a member joins or leaves, only the partitions that move stop; the others
/// are neither revoked nor assigned again (eager assignment stops every
/// partition of the group twice per change). The shard group uses it; the
/// relay groups went back to eager assignment (ADR 0026, amended). Every
/// member of a group must agree: librdkafka refuses to mix eager and
/// cooperative assignors, and the coordinator refuses a member whose
/// assignor no other member has.
fn incremental_group_config(
    bootstrap: &str,
    group: &str,
    fetch: impl Into<Fetch>,
    session_timeout_ms: u32,
) -> ClientConfig {
    let mut c = group_config(bootstrap, group, fetch, session_timeout_ms);
    c.set("partition.assignment.strategy", "cooperative-sticky");
    c
}

/// How long a created topic may take to appear in the brokers' metadata,
/// every partition led. 30 s, as Kafka's own admin tools wait: a broker
/// holding about 16,000 partitions, on two cores where three other brokers
/// were starting, took longer than 10 s (a test region's node refused to
/// start).
const TOPIC_VISIBLE_WAIT: Duration = Duration::from_secs(30);

/// Asks CreateTopics for the brokers' `default.replication.factor` (KIP-464).
const BROKER_DEFAULT_REPLICATION: i32 = -1;

/// Creates missing topics and checks existing ones: creating is idempotent,
/// and a topic whose partition count differs from `partitions` is an error
/// (a node must refuse to start rather than misplace users).
pub async fn ensure_topics(bootstrap: &str, topics: &[(&str, usize)]) -> Result<(), KafkaBusError> {
    ensure_topics_compacting(bootstrap, topics, &[]).await
}

/// [`ensure_topics`], creating the topics named in `compacted` with
/// `cleanup.policy=compact` (state keyed by id, kept past retention).
pub async fn ensure_topics_compacting(
    bootstrap: &str,
    topics: &[(&str, usize)],
    compacted: &[&str],
) -> Result<(), KafkaBusError> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, n)| {
            // Replication is the brokers' `default.replication.factor`
            // (-1 asks for it): 3 on a production cluster, 1 on one broker.
            let t = NewTopic::new(name, *n as i32, TopicReplication::Fixed(BROKER_DEFAULT_REPLICATION));
            if compacted.contains(name) { t.set("cleanup.policy", "compact") } else { t }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(new.iter(), &opts).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            // The controller goes on making a topic after the operation's
            // timeout: whether it did is the visibility check's to say.
            Err((_, RDKafkaErrorCode::RequestTimedOut)) => {}
            Err((name, code)) => return Err(KafkaBusError::Create(name, code)),
        }
    }
    let client = admin.inner();
    for (name, expected) in topics {
        // A topic just created may not be in every broker's metadata yet
        // (Kafka propagates it from the controller): an absent topic is
        // asked for again until TOPIC_VISIBLE_WAIT has passed.
        let deadline = std::time::Instant::now() + TOPIC_VISIBLE_WAIT;
        loop {
            let metadata = client.fetch_metadata(Some(name), Duration::from_secs(10))?;
            let topic = metadata.topics().iter().find(|t| t.name() == *name && t.error().is_none());
            let found = topic.map(|t| t.partitions().len()).unwrap_or(0);
            // Ready once every partition has a leader: a consumer that
            // asks before then is told "not leader".
            let led = topic.is_some_and(|t| t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none()));
            match topic_readiness(found, *expected, led, std::time::Instant::now() >= deadline) {
                TopicReadiness::Ready => break,
                TopicReadiness::Wait => tokio::time::sleep(Duration::from_millis(50)).await,
                TopicReadiness::Leaderless => return Err(KafkaBusError::Leaderless(name.to_string())),
                TopicReadiness::NotVisible => return Err(KafkaBusError::NotVisible(name.to_string())),
                TopicReadiness::Mismatch => {
                    return Err(KafkaBusError::PartitionMismatch {
                        topic: name.to_string(),
                        found,
                        expected: *expected,
                    });
                }
            }
        }
    }
    Ok(())
}

/// What a topic's metadata, asked after creating it, says of it.
#[derive(Debug, PartialEq, Eq)]
enum TopicReadiness {
    /// Every partition there, each with a leader.
    Ready,
    /// Not yet in this broker's metadata, or partitions still without a
    /// leader: ask again.
    Wait,
    /// The right partitions, some without a leader past the wait.
    Leaderless,
    /// Not listed (or listed with an error) past the wait.
    NotVisible,
    /// Another partition count.
    Mismatch,
}

/// Decides [`TopicReadiness`] from `found` partitions of `expected`,
/// whether all are `led`, and whether the wait is `over`. A topic with the
/// right count whose leaders are still being elected is waited for (a
/// freshly made topic on a busy broker), never taken for a mismatch.
fn topic_readiness(found: usize, expected: usize, led: bool, over: bool) -> TopicReadiness {
    match (found, led, over) {
        (f, true, _) if f == expected => TopicReadiness::Ready,
        (f, false, false) if f == expected => TopicReadiness::Wait,
        (f, false, true) if f == expected => TopicReadiness::Leaderless,
        (0, _, false) => TopicReadiness::Wait,
        (0, _, true) => TopicReadiness::NotVisible,
        _ => TopicReadiness::Mismatch,
    }
}

/// How many partitions `topic` has, or `None` when it does not exist (a
/// new region).
pub async fn partition_count(bootstrap: &str, topic: &str) -> Result<Option<usize>, KafkaBusError> {
    let admin: AdminClient<DefaultClientContext> = asking_config(bootstrap).create()?;
    // A topic listed with another error (its leaders being elected, say)
    // exists: asked again rather than taken for a new region's, which would
    // lay it out anew and be refused.
    let deadline = std::time::Instant::now() + TOPIC_VISIBLE_WAIT;
    loop {
        let metadata = admin.inner().fetch_metadata(Some(topic), Duration::from_secs(10))?;
        match metadata.topics().iter().find(|t| t.name() == topic) {
            None => return Ok(None),
            Some(t) => match t.error() {
                None => return Ok(Some(t.partitions().len())),
                Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => return Ok(None),
                Some(e) if std::time::Instant::now() >= deadline => {
                    return Err(KafkaBusError::Metadata(topic.to_owned(), format!("{e:?}")));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
}

/// Deletes every topic of `region` (every name under `iris.<region>.`:
/// its shard, edge, log and federation topics), answering how many it
/// asked the brokers to delete. For a region taken down for good, once its
/// nodes are stopped; the tests delete each region they made, so that one
/// broker does not carry every region of a run (its memory grows with
/// partitions: 512 MiB of heap ran out near 20,000).
pub async fn delete_region_topics(bootstrap: &str, region: &str) -> Result<usize, KafkaBusError> {
    let admin: AdminClient<DefaultClientContext> = asking_config(bootstrap).create()?;
    let prefix = format!("iris.{region}.");
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10))?;
    let names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).filter(|n| n.starts_with(&prefix)).collect();
    if names.is_empty() {
        return Ok(0);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.delete_topics(&names, &opts).await? {
        match result {
            // Gone already, or going (the controller goes on past the timeout).
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::RequestTimedOut)) => {}
            Err((name, code)) => return Err(KafkaBusError::Delete(name, code)),
        }
    }
    Ok(names.len())
}

/// The producer side of the bus: idempotent producers (acks=all), each
/// with its own broker connections. A partition is always written by the
/// same one (`partition % n`; an edge's topic by its name), so its order holds;
/// several spread the partitions over several connections because
/// librdkafka sends one partition per ProduceRequest (librdkafka#1700),
/// at most five in flight per connection with idempotence, and a broker
/// answers a connection's requests one at a time (ADR 0016).
///
/// What goes to an edge's topic goes through that edge's lane (ADR 0027):
/// at most four records in flight, and what arrives meanwhile merged into
/// the next one.
pub struct KafkaBus {
    producers: Vec<FutureProducer>,
    topics: Topics,
    spread: ShardSpread,
    watch: DeliveryWatch,
    edges: std::sync::Arc<EdgeWriter>,
}

/// How long librdkafka keeps trying to deliver a message before it reports
/// it failed (its default is 300 s): a partition that cannot be written
/// shows as failures in `iris_bus_delivery_failures_total` within this,
/// not after five minutes of silence.
const MESSAGE_TIMEOUT_MS: u32 = 30_000;

/// A bus producer: idempotent, `acks=all`, holding at most `queued`
/// messages, and quick to reconnect ([`quick_producer`]). Without the
/// last, a produce request in flight during a cut that drops the broker's
/// answers (`one-way`) waited on TCP's retransmission back-off, and since
/// an edge's lease renewals and re-registrations (`Resync`, ADR 0015) go
/// through this producer, deliveries to its sessions waited as long: 12.9 s
/// after a 14.7 s cut had healed (docs/chaos.md, seed 61). The broker
/// answers a request whose replicas lag within 5 s, below the 10 s after
/// which the client drops the connection, so a slow follower costs a
/// retry, not a connection.
fn bus_producer_config(bootstrap: &str, linger_ms: u32, queued: usize) -> ClientConfig {
    let mut c = client_config(bootstrap);
    quick_producer(&mut c)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .set("queue.buffering.max.messages", queued.to_string());
    c
}

/// Messages a process's producers may hold unacknowledged in all; beyond
/// this a `try_publish` answers `Full` (a bounded queue, ADR 0016).
const QUEUED_PER_PROCESS: usize = 100_000;

/// Deliveries not awaited by their publisher (fire and forget) that are
/// watched at once; beyond this a delivery goes unwatched, counted.
const WATCHED_DELIVERIES: usize = 65_536;

/// Watches the outcome of deliveries nobody awaits, so that a failure is
/// counted and logged instead of vanishing with its dropped future.
#[derive(Clone)]
struct DeliveryWatch(tokio::sync::mpsc::Sender<(&'static str, rdkafka::producer::DeliveryFuture)>);

impl DeliveryWatch {
    fn start() -> Self {
        use futures::StreamExt;
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(&'static str, rdkafka::producer::DeliveryFuture)>(WATCHED_DELIVERIES);
        tokio::spawn(async move {
            let mut pending = futures::stream::FuturesUnordered::new();
            // Once every sender is gone, only what is pending is awaited (a
            // closed channel answers at once: polling it again would spin).
            let mut open = true;
            loop {
                tokio::select! {
                    next = rx.recv(), if open => match next {
                        Some((topic, delivery)) => pending.push(async move { (topic, delivery.await) }),
                        None => open = false,
                    },
                    Some((topic, outcome)) = pending.next(), if !pending.is_empty() => {
                        let failure = match outcome {
                            Ok(Ok(_)) => None,
                            Ok(Err((e, _))) => Some(e.to_string()),
                            Err(_) => Some("the producer went away".to_owned()),
                        };
                        if let Some(e) = failure {
                            count_failure(topic, &e);
                        }
                    }
                    else => return,
                }
            }
        });
        Self(tx)
    }

    fn watch(&self, topic: &'static str, delivery: rdkafka::producer::DeliveryFuture) {
        if self.0.try_send((topic, delivery)).is_err() {
            metrics::counter!("iris_bus_deliveries_unwatched_total").increment(1);
        }
    }
}

impl KafkaBus {
    /// Connects one producer to `bootstrap`. `linger_ms` trades latency for
    /// batching. Runs inside a tokio runtime (it watches deliveries).
    pub fn new(bootstrap: &str, topics: Topics, linger_ms: u32) -> Result<Self, KafkaBusError> {
        Self::with_producers(bootstrap, topics, linger_ms, 1)
    }

    /// Connects `producers` producers (at least one) to `bootstrap`, each
    /// queueing at most `QUEUED_PER_PROCESS / producers` messages.
    pub fn with_producers(
        bootstrap: &str,
        topics: Topics,
        linger_ms: u32,
        producers: usize,
    ) -> Result<Self, KafkaBusError> {
        let n = producers.max(1);
        let queued = (QUEUED_PER_PROCESS / n).max(1);
        let producers = (0..n)
            .map(|_| bus_producer_config(bootstrap, linger_ms, queued).create())
            .collect::<Result<Vec<FutureProducer>, _>>()?;
        let edges = EdgeWriter::start(producers.clone(), topics.clone());
        Ok(Self { producers, topics, spread: ShardSpread::default(), watch: DeliveryWatch::start(), edges })
    }

    /// Writes shards to the shard topic's partitions as `spread` says
    /// (ADR 0031; by default one partition per shard).
    pub fn with_spread(mut self, spread: ShardSpread) -> Self {
        self.spread = spread;
        self
    }

    /// The producer that writes a partition: always the same one, so that
    /// a partition's records stay in the order they were sent.
    fn for_partition(&self, partition: i32) -> &FutureProducer {
        &self.producers[partition as usize % self.producers.len()]
    }

    /// `env`'s record for `shard`: its partition, its key, its headers (a
    /// trace, and the shard when partitions are shared).
    fn shard_record<'a>(
        &'a self,
        shard: ShardId,
        env: &ShardEnvelope,
        key: &'a [u8],
        payload: &'a [u8],
    ) -> (i32, FutureRecord<'a, [u8], [u8]>) {
        let partition = self.spread.partition(shard);
        let mut record = FutureRecord::to(&self.topics.shard).partition(partition).key(key).payload(payload);
        let mut headers = trace_headers(&env.trace);
        if self.spread.shared() {
            let id = shard.0.to_be_bytes();
            let h = rdkafka::message::Header { key: spread::SHARD_HEADER, value: Some(&id[..]) };
            headers = Some(headers.unwrap_or_default().insert(h));
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        (partition, record)
    }

    /// Waits until everything queued is delivered (shutdown), within
    /// `timeout` in all: what waits in the edge lanes first, then the
    /// producers' queues.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaBusError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let room = self.edges.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.edges.idle() {
                break;
            }
            if tokio::time::timeout_at(deadline.into(), room).await.is_err() {
                return Err(KafkaBusError::Kafka(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)));
            }
        }
        for p in &self.producers {
            p.flush(deadline.saturating_duration_since(std::time::Instant::now()))?;
        }
        Ok(())
    }
}

const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

#[async_trait]
impl Bus for KafkaBus {
    fn try_publish_shard(&self, shard: ShardId, env: ShardEnvelope) -> Result<(), PublishError<ShardEnvelope>> {
        let payload = iris_envelope::encode(&env);
        let key = env.owner.shard_key();
        let (partition, record) = self.shard_record(shard, &env, key.as_ref(), &payload);
        match self.for_partition(partition).send_result(record) {
            // Delivery is confirmed asynchronously (the idempotent producer
            // retries); a failure after this point is counted by the watch.
            Ok(delivery) => {
                self.watch.watch("shard", delivery);
                Ok(())
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Err(PublishError::Full(env)),
            Err(_) => Err(PublishError::Closed(env)),
        }
    }

    async fn publish_shard(&self, shard: ShardId, env: ShardEnvelope) -> Result<(), BusError> {
        let payload = iris_envelope::encode(&env);
        let key = env.owner.shard_key();
        let (partition, record) = self.shard_record(shard, &env, key.as_ref(), &payload);
        let started = std::time::Instant::now();
        let sent = self.for_partition(partition).send(record, PUBLISH_TIMEOUT).await;
        metrics::histogram!("iris_bus_publish_seconds", "topic" => "shard").record(started.elapsed().as_secs_f64());
        sent.map(|_| ()).map_err(|(e, _)| BusError::Closed(format!("shard {}: {e}", shard.0)))
    }

    fn try_publish_edge(&self, env: EdgeEnvelope) -> Result<(), PublishError<EdgeEnvelope>> {
        match self.edges.offer(env, None) {
            Ok(()) => Ok(()),
            Err(Refused::Full(p) | Refused::QueueFull(p)) => Err(PublishError::Full(p.env)),
            Err(Refused::Closed(p, _)) => Err(PublishError::Closed(p.env)),
        }
    }

    async fn publish_edge(&self, env: EdgeEnvelope) -> Result<(), BusError> {
        let edge = env.edge.clone();
        let closed = |e: String| BusError::Closed(format!("edge {edge}: {e}"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (mut env, mut tx) = (env, tx);
        // Room is waited for as long as a full producer queue was before
        // (PUBLISH_TIMEOUT): a lane at its bound is told when a record of
        // any lane completes; a producer queue full of other records is
        // tried again every LANE_RETRY.
        let room_until = tokio::time::Instant::now() + PUBLISH_TIMEOUT;
        loop {
            let room = self.edges.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let (mut p, wait) = match self.edges.offer(env, Some(tx)) {
                Ok(()) => break,
                Err(Refused::Closed(_, e)) => return Err(closed(e.to_string())),
                Err(Refused::Full(p)) => (p, None),
                Err(Refused::QueueFull(p)) => (p, Some(LANE_RETRY)),
            };
            let Some(t) = p.done.pop() else { return Err(closed("no waiter".into())) };
            (env, tx) = (p.env, t);
            if tokio::time::Instant::now() >= room_until {
                return Err(closed("no room in its lane".into()));
            }
            let until = wait.map_or(room_until, |w| (tokio::time::Instant::now() + w).min(room_until));
            let _ = tokio::time::timeout_at(until, room).await;
        }
        // Always answered: delivered, failed (librdkafka gives up after
        // MESSAGE_TIMEOUT_MS, and a lane sends what waits behind a failed
        // record), or the writer gone. No timeout of its own here: one
        // could report a failure for an envelope still waiting in its lane
        // and delivered later.
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(closed(e)),
            Err(_) => Err(closed("the producer went away".into())),
        }
    }
}

/// Who waits for an edge record's delivery ([`Bus::publish_edge`]).
type Done = tokio::sync::oneshot::Sender<Result<(), String>>;

/// An envelope a lane would not take.
enum Refused {
    /// The lane, or all lanes of the process, at their bound.
    Full(lanes::Pending<Done>),
    /// The producer's queue (shared with the shard topic's records) is full.
    QueueFull(lanes::Pending<Done>),
    /// The producer will not take records.
    Closed(lanes::Pending<Done>, KafkaError),
}

/// How long an edge lane waits before it tries again a record the
/// producer's queue had no room for (the queue is shared with the shard
/// topic's records).
const LANE_RETRY: Duration = Duration::from_millis(10);

/// Writes edge topics through their lanes ([`lanes::Lane`] decides; this
/// sends, and a task of its own watches the deliveries and sends what
/// waited). Lanes with nothing in flight and nothing waiting are
/// forgotten, so there are only as many as edges being written to.
struct EdgeWriter {
    producers: Vec<FutureProducer>,
    topics: Topics,
    lanes: std::sync::Mutex<Lanes>,
    /// Told whenever a lane has room again (a record completed).
    room: tokio::sync::Notify,
    /// To the watching task: a record handed to the producer, or a lane to
    /// try again after [`LANE_RETRY`]. Unbounded, but it never holds more
    /// than [`lanes::IN_FLIGHT`] records and as many retries per lane.
    events: tokio::sync::mpsc::UnboundedSender<LaneEvent>,
}

/// The lanes of a process, and the bytes waiting in all of them.
#[derive(Default)]
struct Lanes {
    by_edge: std::collections::HashMap<EdgeId, lanes::Lane<Done>>,
    waiting_bytes: usize,
}

impl Lanes {
    /// Runs `f` on `edge`'s lane (made if missing), keeps the count of
    /// waiting bytes, and forgets the lane if it is left idle.
    fn with<T>(&mut self, edge: &EdgeId, f: impl FnOnce(&mut lanes::Lane<Done>, bool) -> T) -> T {
        let may_queue = self.waiting_bytes < lanes::MAX_WAITING_BYTES_PER_PROCESS;
        let lane = self.by_edge.entry(edge.clone()).or_default();
        let before = lane.waiting_bytes();
        let out = f(lane, may_queue);
        let after = lane.waiting_bytes();
        self.waiting_bytes = self.waiting_bytes + after - before;
        if lane.idle() {
            self.by_edge.remove(edge);
        }
        out
    }
}

enum LaneEvent {
    Sent { edge: EdgeId, delivery: rdkafka::producer::DeliveryFuture, done: Vec<Done> },
    Retry(EdgeId),
}

impl EdgeWriter {
    /// Starts the writer and its watching task (in the current runtime).
    fn start(producers: Vec<FutureProducer>, topics: Topics) -> std::sync::Arc<Self> {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = std::sync::Arc::new(Self {
            producers,
            topics,
            lanes: std::sync::Mutex::new(Lanes::default()),
            room: tokio::sync::Notify::new(),
            events,
        });
        tokio::spawn(watch_lanes(std::sync::Arc::downgrade(&writer), rx));
        writer
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        // A panic while the lock was held cannot leave a lane half-changed
        // (each change is one call on it); go on with it.
        self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Nothing in flight and nothing waiting in any lane.
    fn idle(&self) -> bool {
        self.lanes().by_edge.is_empty()
    }

    /// Offers an envelope to its edge's lane: sent now, or queued behind
    /// what waits, or refused at the bounds.
    fn offer(&self, env: EdgeEnvelope, done: Option<Done>) -> Result<(), Refused> {
        let payload = iris_envelope::encode(&env);
        let edge = env.edge.clone();
        let p = lanes::Pending { size: payload.len(), env, done: done.into_iter().collect() };
        self.lanes().with(&edge, |lane, may_queue| match lane.offer(p, may_queue) {
            lanes::Offer::Queued => Ok(()),
            lanes::Offer::Full(p) => Err(Refused::Full(p)),
            lanes::Offer::Send(p) => match self.send(p, Some(payload)) {
                Ok(()) => Ok(()),
                Err((e, p)) => {
                    lane.refused();
                    match e {
                        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => Err(Refused::QueueFull(p)),
                        e => Err(Refused::Closed(p, e)),
                    }
                }
            },
        })
    }

    /// Hands a record to the producer (`payload`: its encoding, if made
    /// already); its delivery goes to the watching task. Called with the
    /// lanes locked, so that records of a lane reach the producer in order.
    /// Refused (`Canceled`) if the watching task is gone: a record whose
    /// completion nobody would see would hold its lane forever.
    fn send(
        &self,
        p: lanes::Pending<Done>,
        payload: Option<Vec<u8>>,
    ) -> Result<(), (KafkaError, lanes::Pending<Done>)> {
        if self.events.is_closed() {
            return Err((KafkaError::Canceled, p));
        }
        let payload = payload.unwrap_or_else(|| iris_envelope::encode(&p.env));
        let topic = self.topics.edge(&p.env.edge);
        let mut record = FutureRecord::<(), _>::to(&topic).partition(0).payload(&payload);
        if let Some(h) = trace_headers(&p.env.traces) {
            record = record.headers(h);
        }
        match producer_for_edge_topic(&self.producers, &topic).send_result(record) {
            Ok(delivery) => {
                // Checked open above, under the lock; the task only ends
                // once the writer (this sender) is gone.
                let _ = self.events.send(LaneEvent::Sent { edge: p.env.edge, delivery, done: p.done });
                Ok(())
            }
            Err((e, _)) => Err((e, p)),
        }
    }

    /// A record of `edge`'s lane completed (`completed`), or the lane is to
    /// be tried again: sends what waits, if anything.
    fn settle(&self, edge: &EdgeId, completed: bool) {
        let mut all = self.lanes();
        if !all.by_edge.contains_key(edge) {
            return;
        }
        all.with(edge, |lane, _| {
            let mut next = if completed { lane.completed() } else { lane.next() };
            while let Some(p) = next.take() {
                match self.send(p, None) {
                    Ok(()) => {}
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), p)) => {
                        lane.unsent(p);
                        let _ = self.events.send(LaneEvent::Retry(edge.clone()));
                    }
                    Err((e, p)) => {
                        // Not deliverable at all (the producer is failing):
                        // counted and told, as a failed delivery is; the
                        // next waiting record is tried.
                        lane.refused();
                        fail(p.done, &e.to_string());
                        next = lane.next();
                    }
                }
            }
        });
        drop(all);
        self.room.notify_waiters();
    }
}

/// Counts and logs a record of `topic` that was not delivered.
fn count_failure(topic: &'static str, error: &str) {
    metrics::counter!("iris_bus_delivery_failures_total", "topic" => topic).increment(1);
    tracing::warn!(topic, error, "a publish was not delivered");
}

/// Tells whoever waits that their records were not delivered, and counts
/// it.
fn fail(done: Vec<Done>, error: &str) {
    count_failure("edge", error);
    for d in done {
        let _ = d.send(Err(error.to_owned()));
    }
}

/// Watches the deliveries of the edge lanes' records: tells their waiters,
/// counts failures, and lets the lane send what waited. Ends when the
/// writer is gone and nothing is pending.
async fn watch_lanes(writer: std::sync::Weak<EdgeWriter>, mut rx: tokio::sync::mpsc::UnboundedReceiver<LaneEvent>) {
    use futures::StreamExt;
    type Settled = (EdgeId, Option<Result<(), String>>, Vec<Done>);
    let mut pending: futures::stream::FuturesUnordered<futures::future::BoxFuture<'static, Settled>> =
        futures::stream::FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            next = rx.recv(), if open => match next {
                Some(LaneEvent::Sent { edge, delivery, done }) => pending.push(Box::pin(async move {
                    let outcome = match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(e.to_string()),
                        Err(_) => Err("the producer went away".to_owned()),
                    };
                    (edge, Some(outcome), done)
                })),
                Some(LaneEvent::Retry(edge)) => pending.push(Box::pin(async move {
                    tokio::time::sleep(LANE_RETRY).await;
                    (edge, None, Vec::new())
                })),
                None => open = false,
            },
            Some((edge, outcome, done)) = pending.next(), if !pending.is_empty() => {
                let completed = outcome.is_some();
                match outcome {
                    Some(Ok(())) => done.into_iter().for_each(|d| { let _ = d.send(Ok(())); }),
                    Some(Err(e)) => fail(done, &e),
                    None => {}
                }
                if let Some(w) = writer.upgrade() {
                    w.settle(&edge, completed);
                }
            }
            else => return,
        }
    }
}

/// The producer that writes an edge's topic (one partition each).
fn producer_for_edge_topic<'a>(producers: &'a [FutureProducer], topic: &str) -> &'a FutureProducer {
    // FNV-1a: stable across processes and releases, unlike std's hasher.
    let h = topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    &producers[(h % producers.len() as u64) as usize]
}

/// Records how long a message took from its producer to this consumer
/// (its create time, set by the producing node's clock: across machines
/// this includes their clock difference). Deliberately the system clock,
/// not an injected one: librdkafka stamps the create time with it, and the
/// figure is a metric that decides nothing.
fn record_hop(m: &impl Message, hop: &'static str) {
    use iris_clock::Clock;
    if let Some(created) = m.timestamp().to_millis() {
        let now = iris_clock::SystemClock.now_ms();
        metrics::histogram!("iris_bus_hop_seconds", "hop" => hop).record((now - created).max(0) as f64 / 1_000.0);
    }
}

/// The `traceparent` headers of a record (ADR 0023), sampled and well
/// formed ones only, at most `MAX_TRACES`.
fn traces_of(m: &impl Message) -> Vec<TraceParent> {
    use rdkafka::message::Headers;
    let Some(headers) = m.headers() else { return Vec::new() };
    headers
        .iter()
        .filter(|h| h.key == TRACEPARENT)
        .filter_map(|h| std::str::from_utf8(h.value?).ok().and_then(TraceParent::parse))
        .take(MAX_TRACES)
        .collect()
}

/// Headers carrying `traces`, if any.
fn trace_headers<'a>(traces: impl IntoIterator<Item = &'a TraceParent>) -> Option<rdkafka::message::OwnedHeaders> {
    let mut headers: Option<rdkafka::message::OwnedHeaders> = None;
    for t in traces {
        let value = t.to_string();
        headers = Some(
            headers
                .unwrap_or_default()
                .insert(rdkafka::message::Header { key: TRACEPARENT, value: Some(value.as_bytes()) }),
        );
    }
    headers
}

/// A shard envelope read from a record, with its trace.
fn decode_shard(m: &impl Message) -> Result<ShardEnvelope, KafkaBusError> {
    let mut env: ShardEnvelope = decode_message(m)?;
    env.trace = traces_of(m).into_iter().next();
    Ok(env)
}

/// An edge envelope read from a record, with its traces.
fn decode_edge(m: &impl Message) -> Result<EdgeEnvelope, KafkaBusError> {
    let mut env: EdgeEnvelope = decode_message(m)?;
    env.traces = traces_of(m);
    Ok(env)
}

/// Decodes a message's envelope, naming where it came from on failure.
fn decode_message<T: serde::de::DeserializeOwned>(m: &impl Message) -> Result<T, KafkaBusError> {
    iris_envelope::decode(m.payload().unwrap_or_default()).map_err(|source| KafkaBusError::Decode {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        source,
    })
}

/// A change of which shard partitions this node owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// These partitions are now ours: start their shard actors.
    Assigned(Vec<i32>),
    /// These partitions are no longer ours: finish in-flight work, stop.
    Revoked(Vec<i32>),
}

/// Reports rebalances of the shard consumer group.
pub struct GroupContext {
    changes: tokio::sync::mpsc::Sender<Ownership>,
}

/// Ownership changes queued for the node; rebalances are rare (membership
/// changes), so this bound is never near.
const OWNERSHIP_QUEUE: usize = 256;

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    let mut v: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    v.sort_unstable();
    v
}

impl rdkafka::client::ClientContext for GroupContext {}

impl rdkafka::consumer::ConsumerContext for GroupContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        let change = match rebalance {
            rdkafka::consumer::Rebalance::Assign(tpl) => Ownership::Assigned(partitions(tpl)),
            rdkafka::consumer::Rebalance::Revoke(tpl) => Ownership::Revoked(partitions(tpl)),
            rdkafka::consumer::Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        if let Err(e) = self.changes.try_send(change) {
            // Losing an ownership change would leave shards unowned or owned
            // twice: make it loud. (Full cannot happen at rebalance rates.)
            tracing::error!(error = %e, "ownership change not delivered");
        }
    }
}

/// The core nodes' consumer of the shard topic: one consumer group, in
/// which Kafka decides which node owns which shard partitions. Assignment
/// is incremental: a change of members revokes only the partitions that
/// move, and [`Ownership`] reports exactly those.
pub struct ShardGroup {
    consumer: StreamConsumer<GroupContext>,
    topic: String,
}

impl ShardGroup {
    /// Joins `group` on `topic`. Ownership changes arrive on the returned
    /// receiver.
    pub fn join(
        bootstrap: &str,
        group: &str,
        topic: &str,
        fetch: impl Into<Fetch>,
        session_timeout_ms: u32,
    ) -> Result<(Self, tokio::sync::mpsc::Receiver<Ownership>), KafkaBusError> {
        let (changes, rx) = tokio::sync::mpsc::channel(OWNERSHIP_QUEUE);
        // Offsets are committed by the node, only up to envelopes whose work
        // is durable (`ShardGroup::commit`).
        let consumer: StreamConsumer<GroupContext> =
            incremental_group_config(bootstrap, group, fetch, session_timeout_ms)
                .create_with_context(GroupContext { changes })?;
        consumer.subscribe(&[topic])?;
        Ok((Self { consumer, topic: topic.to_owned() }, rx))
    }

    /// Records that every envelope of `partition` before `next_offset` is
    /// done: after a restart or a move, consumption resumes there.
    pub fn commit(&self, partition: i32, next_offset: i64) -> Result<(), KafkaBusError> {
        self.commit_all(&[(partition, next_offset)])
    }

    /// [`ShardGroup::commit`] for several partitions in one request: the
    /// group coordinator answers a member's requests in order, so one
    /// commit per partition per tick would queue its heartbeats behind
    /// them (and cost it its session under load).
    pub fn commit_all(&self, offsets: &[(i32, i64)]) -> Result<(), KafkaBusError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (partition, next_offset) in offsets {
            tpl.add_partition_offset(&self.topic, *partition, rdkafka::Offset::Offset(*next_offset))?;
        }
        Ok(self.consumer.commit(&tpl, rdkafka::consumer::CommitMode::Async)?)
    }

    /// The next envelope of an owned partition, with its partition and offset.
    pub async fn next_shard(&self) -> Result<(i32, i64, ShardEnvelope), KafkaBusError> {
        let m = self.consumer.recv().await?;
        record_hop(&m, "shard");
        Ok((m.partition(), m.offset(), decode_shard(&m)?))
    }

    /// Stops fetching `partition` (its shard is full) while the others go
    /// on. librdkafka drops what it had prefetched for it; after `resume`,
    /// fetching restarts after the last envelope returned by `next_shard`.
    pub fn pause(&self, partition: i32) -> Result<(), KafkaBusError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        Ok(self.consumer.pause(&tpl)?)
    }

    /// Fetches `partition` again after `pause` (harmless when not paused).
    pub fn resume(&self, partition: i32) -> Result<(), KafkaBusError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        Ok(self.consumer.resume(&tpl)?)
    }
}

/// The shard consumer group as the consuming side of the bus
/// ([`ShardSource`]): ownership changes first, then records, a record that
/// does not decode reported (and skipped) rather than failing the read.
pub struct KafkaSource {
    group: ShardGroup,
    ownership: tokio::sync::mpsc::Receiver<Ownership>,
    /// How shards lie on the partitions: which shards an assignment
    /// brings, what to pause and commit (pure, shared with the simulator).
    parts: spread::ShardPartitions,
}

impl KafkaSource {
    /// Joins `group` on `topic` (see [`ShardGroup::join`]).
    pub fn join(
        bootstrap: &str,
        group: &str,
        topic: &str,
        fetch: impl Into<Fetch>,
        session_timeout_ms: u32,
    ) -> Result<Self, KafkaBusError> {
        let (group, ownership) = ShardGroup::join(bootstrap, group, topic, fetch, session_timeout_ms)?;
        Ok(Self { group, ownership, parts: spread::ShardPartitions::new(ShardSpread::default()) })
    }

    /// Reads the shard topic as `spread` lays it out (ADR 0031; by
    /// default one partition per shard).
    pub fn with_spread(mut self, spread: ShardSpread) -> Self {
        self.parts = spread::ShardPartitions::new(spread);
        self
    }
}

/// A record read from the shard topic, as the feed takes it (`parts`
/// learns of it).
fn read_record(parts: &mut spread::ShardPartitions, m: &impl Message) -> SourceEvent {
    let (partition, offset, spread) = (m.partition(), m.offset(), parts.spread());
    let header = match spread.shared() {
        false => None,
        true => m.headers().and_then(|h| {
            rdkafka::message::Headers::iter(h)
                .find(|h| h.key == spread::SHARD_HEADER)
                .map(|h| h.value.unwrap_or_default())
        }),
    };
    let (shard, env) = match spread.shard_of(partition, header) {
        // Reported on the partition's first shard, which it carries.
        Err(error) => (ShardId(partition.max(0) as u32), Err(error)),
        Ok(shard) => (shard, decode_shard(m).map_err(|e| e.to_string())),
    };
    if parts.returned(partition, offset, env.is_ok().then_some(shard)) {
        metrics::counter!("iris_bus_partition_commits_stopped_total").increment(1);
        tracing::error!(
            partition,
            offset,
            max = spread::MAX_OUTSTANDING,
            "a shared shard partition's first record is still not done after this many more: it is no longer committed until it moves"
        );
    }
    match env {
        Ok(env) => SourceEvent::Record { shard, offset, env },
        Err(error) => SourceEvent::Unreadable { shard, offset, error },
    }
}

impl KafkaSource {
    /// Pauses or resumes `partition` as `ShardPartitions` decided (`None`:
    /// nothing to do): the shards whose records stop or start coming.
    fn flip(
        &self,
        partition: Option<i32>,
        call: fn(&ShardGroup, i32) -> Result<(), KafkaBusError>,
    ) -> Result<Vec<ShardId>, iris_router::BusError> {
        let Some(p) = partition else { return Ok(Vec::new()) };
        call(&self.group, p).map_err(bus_error)?;
        Ok(self.parts.spread().shards_of(p).collect())
    }
}

fn bus_error(e: KafkaBusError) -> iris_router::BusError {
    iris_router::BusError::Closed(e.to_string())
}

#[async_trait]
impl ShardSource for KafkaSource {
    async fn next(&mut self) -> SourceEvent {
        tokio::select! {
            // An ownership change goes before the records that follow it.
            biased;
            change = self.ownership.recv() => match change {
                Some(Ownership::Assigned(p)) => SourceEvent::Assigned(self.parts.assigned(&p)),
                Some(Ownership::Revoked(p)) => SourceEvent::Revoked(self.parts.revoked(&p)),
                None => SourceEvent::Closed,
            },
            m = self.group.consumer.recv() => match m {
                Ok(m) => {
                    record_hop(&m, "shard");
                    read_record(&mut self.parts, &m)
                }
                Err(e) => SourceEvent::Failed(e.to_string()),
            },
        }
    }

    fn pause(&mut self, shard: ShardId) -> Result<Vec<ShardId>, iris_router::BusError> {
        let partition = self.parts.pause(shard);
        self.flip(partition, ShardGroup::pause)
    }

    fn resume(&mut self, shard: ShardId) -> Result<Vec<ShardId>, iris_router::BusError> {
        let partition = self.parts.resume(shard);
        self.flip(partition, ShardGroup::resume)
    }

    fn commit(&mut self, offsets: &[(ShardId, i64)]) -> Result<(), iris_router::BusError> {
        let partitions = self.parts.to_commit(offsets);
        self.group.commit_all(&partitions).map_err(bus_error)?;
        self.parts.committed(&partitions);
        Ok(())
    }
}

/// Reads envelopes from explicitly assigned partitions of a topic.
pub struct PartitionReader {
    consumer: StreamConsumer,
}

impl PartitionReader {
    /// A reader of `partitions` of `topic` from their beginning (or only
    /// what arrives from now on, with `from_end`), with a short
    /// `fetch.wait.max.ms` (chat latency).
    pub fn new(
        bootstrap: &str,
        group: &str,
        topic: &str,
        partitions: &[i32],
        fetch: impl Into<Fetch>,
        from_end: bool,
    ) -> Result<Self, KafkaBusError> {
        let consumer: StreamConsumer = quick_to_reconnect(&mut reader_config(bootstrap, group, fetch)).create()?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let start = if from_end { rdkafka::Offset::End } else { rdkafka::Offset::Beginning };
            tpl.add_partition_offset(topic, *p, start)?;
        }
        consumer.assign(&tpl)?;
        Ok(Self { consumer })
    }

    /// The next edge envelope.
    pub async fn next_edge(&self) -> Result<EdgeEnvelope, KafkaBusError> {
        let m = self.consumer.recv().await?;
        record_hop(&m, "edge");
        decode_edge(&m)
    }

    /// The next shard envelope, with its partition and offset.
    pub async fn next_shard(&self) -> Result<(i32, i64, ShardEnvelope), KafkaBusError> {
        let m = self.consumer.recv().await?;
        Ok((m.partition(), m.offset(), decode_shard(&m)?))
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    #[test]
    fn a_region_wants_its_shard_topic_a_topic_per_edge_and_in_a_federation_outbound_and_compacted_homes() {
        let t = Topics::for_region("eu");
        let edges = [EdgeId::qualified("e1", "eu"), EdgeId::qualified("e2", "eu")];
        let (wanted, compacted) = t.region_plan(8, &edges, None);
        assert_eq!(
            wanted,
            vec![("iris.eu.shard".to_owned(), 8), ("iris.eu.edge.e1".to_owned(), 1), ("iris.eu.edge.e2".to_owned(), 1)]
        );
        assert!(compacted.is_empty());
        let (wanted, compacted) = t.region_plan(8, &edges[..1], Some(4));
        assert_eq!(&wanted[2..], &[("iris.eu.outbound".to_owned(), 4), ("iris.eu.homes".to_owned(), 1)]);
        assert_eq!(compacted, vec!["iris.eu.homes".to_owned()]);
        assert_eq!(Topics::edge_group("eu", &edges[0]), "iris.eu.edge.e1@eu");
    }
}

#[cfg(test)]
mod tests {
    /// Heartbeats every third of the session, but never further apart than
    /// 500 ms, nor closer than 100 ms.
    #[test]
    fn heartbeats_are_a_third_of_the_session_at_most_500_ms() {
        assert_eq!(super::heartbeat_ms(6_000), 500, "2 s would leave moving partitions unread that long");
        assert_eq!(super::heartbeat_ms(1_200), 400);
        assert_eq!(super::heartbeat_ms(150), 100);
    }

    /// Asking how many partitions a new region's shard topic has must not
    /// create it on a broker that creates topics on demand (Kafka's
    /// default; the test brokers have it off, so this is checked here).
    #[test]
    fn asking_about_a_topic_never_creates_it() {
        let c = super::asking_config("k:9092");
        assert_eq!(c.get("allow.auto.create.topics"), Some("false"));
        assert_eq!(c.get("socket.nagle.disable"), Some("true"), "otherwise a client like the others");
    }

    /// A topic just made, all its partitions listed but some leaders still
    /// being elected, is waited for: it was taken for a partition mismatch
    /// (found 64, expected 64), which stops a node at start.
    #[test]
    fn a_topic_whose_leaders_are_being_elected_is_waited_for() {
        use super::{TopicReadiness::*, topic_readiness};
        assert_eq!(topic_readiness(64, 64, false, false), Wait);
        assert_eq!(topic_readiness(64, 64, true, false), Ready);
        assert_eq!(topic_readiness(64, 64, true, true), Ready);
        assert_eq!(topic_readiness(64, 64, false, true), Leaderless);
        assert_eq!(topic_readiness(0, 64, false, false), Wait, "not yet in this broker's metadata");
        assert_eq!(topic_readiness(0, 64, false, true), NotVisible, "not a count that differs");
        assert_eq!(topic_readiness(8, 64, true, false), Mismatch, "made before with another count");
        assert_eq!(topic_readiness(8, 64, false, false), Mismatch);
    }

    /// The bus producers (an edge's lease renewals and re-registrations go
    /// through them) give up a request unanswered for 10 s and connect
    /// again, rather than waiting on TCP's back-off after a one-way cut
    /// (60 s, or what is left of the 30 s message timeout, by default).
    #[test]
    fn bus_producers_drop_a_silent_connection_after_10_s() {
        let c = super::bus_producer_config("localhost:9092", 1, 10);
        assert_eq!(c.get("socket.timeout.ms"), Some("10000"));
        assert_eq!(c.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(c.get("request.timeout.ms"), Some("5000"), "a lagging replica must be answered before 10 s");
        assert_eq!(c.get("enable.idempotence"), Some("true"), "a request sent again must not be stored twice");
        assert_eq!(c.get("acks"), Some("all"));
    }

    /// A member that takes over a partition resumes after the last
    /// committed offset: what was committed is not handed out again, what
    /// was not is.
    #[tokio::test]
    async fn consumption_resumes_after_the_committed_offset() {
        let b = broker();
        let region = unique("resume");
        let topics = Topics::for_region(&region);
        ensure_topics(&b, &[(&topics.shard, 1)]).await.unwrap();
        let bus = KafkaBus::new(&b, topics.clone(), 0).unwrap();
        for i in 0..4 {
            let env = ShardEnvelope {
                owner: UserKey::new("acme", "bob").into(),
                body: ShardInput::Ack { up_to: i, read: false },
                trace: None,
            };
            bus.publish_shard(ShardId(0), env).await.unwrap();
        }
        let group = unique("group");
        {
            let (first, _) = ShardGroup::join(&b, &group, &topics.shard, 5, 6_000).unwrap();
            let mut seen = Vec::new();
            while seen.len() < 4 {
                let (_, offset, _) =
                    tokio::time::timeout(Duration::from_secs(20), first.next_shard()).await.unwrap().unwrap();
                seen.push(offset);
            }
            // Only the first two are done.
            first.commit(0, seen[2]).unwrap();
            // Let the asynchronous commit reach the broker before leaving.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let committed = first.consumer.committed(Duration::from_secs(5)).unwrap();
                let at = committed.find_partition(&topics.shard, 0).map(|e| e.offset());
                if at == Some(rdkafka::Offset::Offset(seen[2])) {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "commit never landed: {at:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let (second, _) = ShardGroup::join(&b, &group, &topics.shard, 5, 6_000).unwrap();
        let (_, offset, env) =
            tokio::time::timeout(Duration::from_secs(30), second.next_shard()).await.unwrap().unwrap();
        assert!(
            matches!(env.body, ShardInput::Ack { up_to: 2, .. }),
            "resumed at the first uncommitted envelope (offset {offset})"
        );
    }

    /// Two members of a group split the shard partitions; when one leaves,
    /// the other owns them all. Assignment is incremental: the first member
    /// gives up only what the second takes when it joins, and the second is
    /// only given, never asked to give up, when the first leaves.
    #[tokio::test]
    async fn the_group_moves_partitions_when_a_member_leaves() {
        let b = broker();
        let topic = unique("group-topic");
        ensure_topics(&b, &[(&topic, 4)]).await.unwrap();
        let group = unique("group");
        let (first, mut first_rx) = ShardGroup::join(&b, &group, &topic, 5, 6_000).unwrap();
        // The consumer only takes part in the group while it is polled.
        let a = tokio::spawn(async move {
            loop {
                if first.next_shard().await.is_err() {
                    break;
                }
            }
        });
        // Every partition ever revoked from a member is kept in `revoked`.
        let owned_by = |rx: &mut tokio::sync::mpsc::Receiver<Ownership>,
                        owned: &mut std::collections::BTreeSet<i32>,
                        revoked: &mut std::collections::BTreeSet<i32>| {
            while let Ok(change) = rx.try_recv() {
                match change {
                    Ownership::Assigned(p) => owned.extend(p),
                    Ownership::Revoked(p) => p.iter().for_each(|x| {
                        owned.remove(x);
                        revoked.insert(*x);
                    }),
                }
            }
        };
        let (mut a_revoked, mut b_revoked) = Default::default();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut a_owned = std::collections::BTreeSet::new();
        while a_owned.len() != 4 {
            assert!(std::time::Instant::now() < deadline, "first member never owned all: {a_owned:?}");
            owned_by(&mut first_rx, &mut a_owned, &mut a_revoked);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (second, mut second_rx) = ShardGroup::join(&b, &group, &topic, 5, 6_000).unwrap();
        let b_task = tokio::spawn(async move {
            loop {
                if second.next_shard().await.is_err() {
                    break;
                }
            }
        });
        let mut b_owned = std::collections::BTreeSet::new();
        loop {
            owned_by(&mut first_rx, &mut a_owned, &mut a_revoked);
            owned_by(&mut second_rx, &mut b_owned, &mut b_revoked);
            if !a_owned.is_empty()
                && !b_owned.is_empty()
                && a_owned.len() + b_owned.len() == 4
                && a_owned.is_disjoint(&b_owned)
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no split: {a_owned:?} / {b_owned:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Only what moved to the second member was revoked from the first
        // (eager assignment would have revoked all four, then given some
        // back).
        assert_eq!(a_revoked, b_owned, "the first member gave up only what moved");
        // The first member leaves (its consumer is dropped with its task).
        a.abort();
        let _ = a.await;
        let kept = b_owned.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while b_owned.len() != 4 {
            owned_by(&mut second_rx, &mut b_owned, &mut b_revoked);
            assert!(std::time::Instant::now() < deadline, "partitions never moved: {b_owned:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(b_revoked.is_empty(), "the staying member kept {kept:?} throughout, but gave up {b_revoked:?}");
        b_task.abort();
    }

    use super::*;
    use iris_envelope::{SessionAddr, SessionId, ShardInput, UserKey};

    struct KafkaFixture {
        bootstrap: String,
        topics: Topics,
        spread: ShardSpread,
        bus: std::sync::Arc<KafkaBus>,
        source: KafkaSource,
        edges: [EdgeId; 2],
        readers: std::collections::HashMap<EdgeId, PartitionReader>,
        /// Parts of a merged record not yet handed out.
        unpacked: std::collections::HashMap<EdgeId, std::collections::VecDeque<EdgeEnvelope>>,
    }

    #[async_trait]
    impl iris_router::contract::BusFixture for KafkaFixture {
        fn bus(&self) -> std::sync::Arc<dyn Bus> {
            self.bus.clone()
        }
        fn source(&mut self) -> &mut dyn ShardSource {
            &mut self.source
        }
        fn edges(&self) -> [EdgeId; 2] {
            self.edges.clone()
        }
        async fn next_edge(&mut self, edge: &EdgeId, within: Duration) -> Option<EdgeEnvelope> {
            let queued = self.unpacked.entry(edge.clone()).or_default();
            if queued.is_empty() {
                let r = self.readers.get(edge)?;
                let env = tokio::time::timeout(within, r.next_edge()).await.ok()?.ok()?;
                queued.extend(env.body.into_parts().into_iter().map(|body| EdgeEnvelope {
                    edge: env.edge.clone(),
                    body,
                    traces: Vec::new(),
                }));
            }
            queued.pop_front()
        }
        async fn poison(&mut self, shard: ShardId) -> bool {
            let producer: FutureProducer = client_config(&self.bootstrap).create().unwrap();
            let partition = self.spread.partition(shard);
            let id = shard.0.to_be_bytes();
            let header = rdkafka::message::Header { key: spread::SHARD_HEADER, value: Some(&id[..]) };
            let record = FutureRecord::<(), _>::to(&self.topics.shard)
                .partition(partition)
                .headers(rdkafka::message::OwnedHeaders::new().insert(header))
                .payload(b"\xffnot an envelope");
            producer.send(record, Duration::from_secs(10)).await.is_ok()
        }
        fn patience(&self) -> Duration {
            Duration::from_secs(30)
        }
    }

    /// The Kafka bus passes the same contract as the in-process one, on a
    /// real broker: publish order per partition, pausing, edges, commits,
    /// and a poisoned record that does not stop its partition; with one
    /// producer and with the partitions spread over three; and with four
    /// shards sharing two partitions (ADR 0031).
    #[tokio::test]
    async fn the_kafka_bus_passes_the_bus_contract() {
        for producers in [1, 3] {
            bus_contract(producers, ShardSpread::one_per_shard(2)).await;
        }
        bus_contract(2, ShardSpread::new(4, 2)).await;
    }

    async fn bus_contract(producers: usize, spread: ShardSpread) {
        let b = broker();
        let region = unique("contract");
        let topics = Topics::for_region(&region);
        let edges = [EdgeId("a".into()), EdgeId("b".into())];
        let partitions = spread.partitions() as usize;
        ensure_topics(&b, &[(&topics.shard, partitions), (&topics.edge(&edges[0]), 1), (&topics.edge(&edges[1]), 1)])
            .await
            .unwrap();
        let bus = KafkaBus::with_producers(&b, topics.clone(), 0, producers).unwrap().with_spread(spread);
        let bus = std::sync::Arc::new(bus);
        let source = KafkaSource::join(&b, &unique("group"), &topics.shard, 5, 6_000).unwrap().with_spread(spread);
        let mut readers = std::collections::HashMap::new();
        for e in &edges {
            readers
                .insert(e.clone(), PartitionReader::new(&b, &unique("edge"), &topics.edge(e), &[0], 5, false).unwrap());
        }
        let mut f =
            KafkaFixture { bootstrap: b, topics, spread, bus, source, edges, readers, unpacked: Default::default() };
        iris_router::contract::run_all(&mut f, "acme").await.unwrap();
    }

    fn broker() -> String {
        std::env::var("IRIS_TEST_KAFKA")
            .expect("IRIS_TEST_KAFKA is not set: run scripts/test, which starts Apache Kafka (scripts/kafka)")
    }

    fn unique(name: &str) -> String {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("test.{name}.{n}")
    }

    #[tokio::test]
    async fn topics_are_created_idempotently_and_mismatches_refused() {
        let b = broker();
        let t = unique("topics");
        ensure_topics(&b, &[(&t, 4)]).await.unwrap();
        ensure_topics(&b, &[(&t, 4)]).await.unwrap();
        let e = ensure_topics(&b, &[(&t, 8)]).await.unwrap_err();
        assert!(matches!(e, KafkaBusError::PartitionMismatch { found: 4, expected: 8, .. }), "{e}");
    }

    #[tokio::test]
    async fn a_region_s_topics_are_deleted_and_no_other_region_s() {
        let b = broker();
        let region = unique("gone").replace('.', "-");
        // A region whose name the first one's begins with keeps its topics.
        let longer = format!("{region}0");
        let (topics, other) = (Topics::for_region(&region), Topics::for_region(&longer));
        let edge = topics.edge(&EdgeId("e1".into()));
        ensure_topics(&b, &[(&topics.shard, 2), (&edge, 1), (&other.shard, 1)]).await.unwrap();
        assert_eq!(delete_region_topics(&b, &region).await.unwrap(), 2);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while partition_count(&b, &topics.shard).await.unwrap().is_some()
            || partition_count(&b, &edge).await.unwrap().is_some()
        {
            assert!(std::time::Instant::now() < deadline, "the region's topics are still listed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(partition_count(&b, &other.shard).await.unwrap(), Some(1));
        assert_eq!(delete_region_topics(&b, &region).await.unwrap(), 0, "nothing left to delete");
        delete_region_topics(&b, &longer).await.unwrap();
    }

    #[tokio::test]
    async fn shard_envelopes_reach_their_partition_in_order() {
        let b = broker();
        let region = unique("region");
        let topics = Topics::for_region(&region);
        ensure_topics(&b, &[(&topics.shard, 4)]).await.unwrap();
        let bus = KafkaBus::new(&b, topics.clone(), 0).unwrap();
        let owner = UserKey::new("acme", "bob");
        for i in 0..5 {
            let env = ShardEnvelope {
                owner: owner.clone().into(),
                body: ShardInput::Send {
                    from: "alice".into(),
                    client_id: format!("c-{i}").into(),
                    body: bytes::Bytes::from_static(b"hi"),
                    reply: SessionAddr { edge: EdgeId("e1".into()), session: SessionId(1) },
                },
                trace: None,
            };
            bus.publish_shard(ShardId(2), env).await.unwrap();
        }
        let reader = PartitionReader::new(&b, &unique("group"), &topics.shard, &[2], 5, false).unwrap();
        for i in 0..5 {
            let (partition, _, env) =
                tokio::time::timeout(Duration::from_secs(20), reader.next_shard()).await.unwrap().unwrap();
            assert_eq!(partition, 2);
            assert_eq!(env.owner.user(), Some(&owner));
            assert!(matches!(env.body, ShardInput::Send { ref client_id, .. } if **client_id == *format!("c-{i}")));
        }
    }

    /// Two shards share a partition (ADR 0031): each reads only its own
    /// records, and the partition is committed only as far as both have
    /// reported done; a member taking over resumes there, so nothing a
    /// shard had not finished is skipped.
    #[tokio::test]
    async fn shards_sharing_a_partition_commit_only_what_both_did() {
        let b = broker();
        let topics = Topics::for_region(&unique("shared"));
        let spread = ShardSpread::new(4, 2);
        ensure_topics(&b, &[(&topics.shard, 2)]).await.unwrap();
        let bus = KafkaBus::new(&b, topics.clone(), 0).unwrap().with_spread(spread);
        // Shards 0 and 2 share partition 0: a0 b0 a1 b1 a2 b2.
        for i in 0..3 {
            for (shard, name) in [(0, "a"), (2, "b")] {
                let env = ShardEnvelope {
                    owner: UserKey::new("acme", format!("{name}{i}")).into(),
                    body: ShardInput::Ack { up_to: i, read: false },
                    trace: None,
                };
                bus.publish_shard(ShardId(shard), env).await.unwrap();
            }
        }
        let group = unique("group");
        let mut source = KafkaSource::join(&b, &group, &topics.shard, 5, 6_000).unwrap().with_spread(spread);
        let mut owned = std::collections::BTreeSet::new();
        let mut got: Vec<(u32, i64, String)> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got.len() < 6 {
            match tokio::time::timeout_at(deadline, source.next()).await.expect("records never arrived") {
                SourceEvent::Assigned(s) => owned.extend(s.into_iter().map(|s| s.0)),
                SourceEvent::Record { shard, offset, env } => got.push((shard.0, offset, env.owner.name().to_string())),
                SourceEvent::Failed(_) => {}
                e => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(owned, (0..4).collect(), "a partition's assignment brings all its shards");
        let names: Vec<String> = got.iter().map(|(s, _, n)| format!("{s}:{n}")).collect();
        assert_eq!(names, ["0:a0", "2:b0", "0:a1", "2:b1", "0:a2", "2:b2"], "each record to its own shard, in order");
        // Shard 0 did all three, shard 2 only b0: the partition may go no
        // further than b1.
        let after = |shard: u32, name: &str| got.iter().find(|g| g.0 == shard && g.2 == name).unwrap().1 + 1;
        source.commit(&[(ShardId(0), after(0, "a2")), (ShardId(2), after(2, "b0"))]).unwrap();
        let b1 = after(2, "b1") - 1;
        // A full shard pauses its whole partition, and says so: shard 2's
        // records wait too, so it must not look caught up (ADR 0031).
        assert_eq!(source.pause(ShardId(0)).unwrap(), vec![ShardId(0), ShardId(2)]);
        assert_eq!(source.pause(ShardId(2)).unwrap(), vec![], "already paused");
        assert_eq!(source.resume(ShardId(0)).unwrap(), vec![], "shard 2 still holds it paused");
        assert_eq!(source.resume(ShardId(2)).unwrap(), vec![ShardId(0), ShardId(2)]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let committed = source.group.consumer.committed(Duration::from_secs(5)).unwrap();
            let at = committed.find_partition(&topics.shard, 0).map(|e| e.offset());
            if at == Some(rdkafka::Offset::Offset(b1)) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "partition 0 committed at {at:?}, wanted b1's {b1}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(source);
        let (second, _) = ShardGroup::join(&b, &group, &topics.shard, 5, 6_000).unwrap();
        let (partition, offset, env) =
            tokio::time::timeout(Duration::from_secs(30), second.next_shard()).await.unwrap().unwrap();
        assert_eq!((partition, offset, &*env.owner.name()), (0, b1, "b1"), "resumed at the first record not done");
    }

    /// Every third record carries a trace context (ADR 0023).
    fn traced(i: usize) -> Option<TraceParent> {
        (i % 3 == 0).then(|| TraceParent::new([i as u8 + 1; 16], [7; 8]).unwrap())
    }

    /// Fire-and-forget publishes spread over several producers keep each
    /// partition's order (a partition is always written by the same one),
    /// for shard partitions and edge topics alike; trace contexts travel as
    /// record headers.
    #[tokio::test]
    async fn a_partition_keeps_its_order_across_several_producers() {
        let b = broker();
        let topics = Topics::for_region(&unique("pool"));
        let edges = [EdgeId(unique("e1").into()), EdgeId(unique("e2").into())];
        ensure_topics(&b, &[(&topics.shard, 5), (&topics.edge(&edges[0]), 1), (&topics.edge(&edges[1]), 1)])
            .await
            .unwrap();
        let bus = KafkaBus::with_producers(&b, topics.clone(), 0, 3).unwrap();
        assert_eq!(bus.producers.len(), 3);
        const EACH: usize = 30;
        let reply = SessionAddr { edge: EdgeId("e1".into()), session: SessionId(1) };
        for i in 0..EACH {
            for shard in 0..5u32 {
                let env = ShardEnvelope {
                    owner: UserKey::new("acme", format!("u{shard}")).into(),
                    body: ShardInput::Send {
                        from: "alice".into(),
                        client_id: format!("{shard}-{i}").into(),
                        body: bytes::Bytes::from_static(b"hi"),
                        reply: reply.clone(),
                    },
                    trace: traced(i),
                };
                assert!(bus.try_publish_shard(ShardId(shard), env).is_ok());
            }
            for e in &edges {
                let env = EdgeEnvelope {
                    edge: e.clone(),
                    body: iris_envelope::EdgeInput::Resync { region: "order".into(), shard: ShardId(i as u32) },
                    traces: traced(i).into_iter().collect(),
                };
                assert!(bus.try_publish_edge(env).is_ok());
            }
        }
        bus.flush(Duration::from_secs(20)).await.unwrap();
        for shard in 0..5i32 {
            let reader = PartitionReader::new(&b, &unique("g"), &topics.shard, &[shard], 5, false).unwrap();
            for i in 0..EACH {
                let (partition, _, env) =
                    tokio::time::timeout(Duration::from_secs(20), reader.next_shard()).await.unwrap().unwrap();
                assert_eq!(partition, shard);
                assert!(
                    matches!(env.body, ShardInput::Send { ref client_id, .. } if **client_id == *format!("{shard}-{i}")),
                    "partition {shard}, record {i}: {env:?}"
                );
                assert_eq!(env.trace, traced(i), "the traceparent header travels with the record");
            }
        }
        // An edge's envelopes may arrive merged (its lane, ADR 0027): in
        // order, each record carrying the traces of its parts.
        for e in &edges {
            let reader = PartitionReader::new(&b, &unique("g"), &topics.edge(e), &[0], 5, false).unwrap();
            let mut next = 0;
            while next < EACH {
                let env = tokio::time::timeout(Duration::from_secs(20), reader.next_edge()).await.unwrap().unwrap();
                assert_eq!(env.edge, *e);
                let parts = env.body.into_parts();
                let first = next;
                for part in parts {
                    assert!(
                        matches!(part, iris_envelope::EdgeInput::Resync { shard, .. } if shard == ShardId(next as u32)),
                        "{e:?}, envelope {next}: {part:?}"
                    );
                    next += 1;
                }
                let traces: Vec<TraceParent> = (first..next).filter_map(traced).take(MAX_TRACES).collect();
                assert_eq!(env.traces, traces, "the traceparent headers travel with the record");
            }
        }
    }
}
