//! The region's log topics, `iris.<region>.graph` and `iris.<region>.events`
//! (ADR 0022, docs/events-schema.md).
//!
//! A shard's commits put their log records in the shard's outbox, in the
//! same atomic write as the change ([`iris_storage::WriteBatch::outbox`]).
//! On every core node, [`run_log_publisher`] drains the outboxes of the
//! shards it holds a lease on to the topics, in Kafka transactions that
//! also commit how far each outbox is published: the leases are the
//! partitions of `iris.<region>.outbox` in the consumer group
//! `iris.<region>.outbox`, a topic nothing is written to, and the position
//! is stored as that group's committed offset, written in the same
//! transaction as the records (KIP-447: a member that lost its lease has
//! its offset commit refused, and with it the whole transaction). So a
//! record is on its topic once, and only if its change was committed:
//! a publisher killed mid-transaction leaves an aborted transaction that
//! `read_committed` readers never see, and whoever takes the lease reads
//! the committed position and goes on from there.
//!
//! Record `i` of shard `s`'s outbox goes to partition `s` of its topic: a
//! user's (or a stream's) records stay in their shard's commit order.

use crate::{KafkaBusError, client_config, group_config};
use iris_storage::{LogKind, OutboxEntry, OutboxId, Store, StoreError};
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Most outbox records one transaction publishes.
const BATCH: usize = 2_000;
/// How long one transactional call may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// The topic names of a region's logs.
#[derive(Debug, Clone)]
pub struct LogTopics {
    /// Contact-graph records.
    pub graph: String,
    /// Ingested events.
    pub events: String,
    /// The leases on the shards' outboxes (empty; its group's offsets are
    /// the published positions).
    pub outbox: String,
    /// The group holding the leases.
    pub group: String,
}

impl LogTopics {
    /// The names for `region`.
    pub fn for_region(region: &str) -> Self {
        Self {
            graph: format!("iris.{region}.graph"),
            events: format!("iris.{region}.events"),
            outbox: format!("iris.{region}.outbox"),
            group: format!("iris.{region}.outbox"),
        }
    }

    /// The topic of a log.
    pub fn of(&self, kind: LogKind) -> &str {
        match kind {
            LogKind::Graph => &self.graph,
            LogKind::Events => &self.events,
        }
    }

    /// The topics and their partition counts for a region of `shards`.
    pub fn wanted(&self, shards: u32) -> Vec<(String, usize)> {
        [&self.graph, &self.events, &self.outbox].into_iter().map(|t| (t.clone(), shards as usize)).collect()
    }
}

/// One record as it goes on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    /// `["tenant","owner"]` (graph; `user` for `identity.verified`) or
    /// `["tenant","stream"]` (events), as JSON.
    pub key: String,
    /// `{"seq":N,"event":{…}}`, exactly an entry of the HTTP log's pages.
    pub value: String,
}

/// What an outbox entry becomes on its topic.
pub fn topic_record(entry: &OutboxEntry) -> TopicRecord {
    let record = String::from_utf8_lossy(&entry.record);
    let owner = serde_json::from_str::<serde_json::Value>(&record).ok().and_then(|v| {
        let field = match entry.kind {
            LogKind::Graph => {
                ["owner", "user"].into_iter().find_map(|f| v.get(f).and_then(|o| o.as_str()).map(str::to_owned))
            }
            LogKind::Events => v.get("stream").and_then(|o| o.as_str()).map(str::to_owned),
        };
        field
    });
    let key = serde_json::to_string(&(&*entry.tenant, owner.as_deref().unwrap_or(""))).unwrap_or_default();
    TopicRecord { key, value: format!("{{\"seq\":{},\"event\":{}}}", entry.seq, record) }
}

/// What a core node's publisher needs.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// The region.
    pub region: String,
    /// This node (its transactional id is `iris.<region>.outbox.<node>`).
    pub node_id: String,
    /// How often an idle publisher looks for records.
    pub interval: Duration,
    /// A silent publisher loses its leases after this, ms.
    pub session_timeout_ms: u32,
}

/// Creates the log topics (one partition per shard) if missing.
pub async fn ensure_log_topics(bootstrap: &str, region: &str, shards: u32) -> Result<(), KafkaBusError> {
    let topics = LogTopics::for_region(region);
    let wanted = topics.wanted(shards);
    let refs: Vec<(&str, usize)> = wanted.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    crate::ensure_topics(bootstrap, &refs).await
}

/// Publishes the outboxes of the shards this node holds leases on, for
/// as long as the node runs (a failed round starts over from the
/// committed positions).
pub async fn run_log_publisher(cfg: PublisherConfig, store: Arc<dyn Store>) {
    loop {
        let Err(e) = publish(&cfg, &store).await;
        metrics::counter!("iris_log_publish_failures_total").increment(1);
        tracing::warn!(error = %e, "log publisher failed; starting over in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn producer(cfg: &PublisherConfig) -> Result<Arc<ThreadedProducer<DefaultProducerContext>>, KafkaError> {
    let mut c = client_config(&cfg.bootstrap);
    c.set("transactional.id", format!("iris.{}.outbox.{}", cfg.region, cfg.node_id))
        .set("transaction.timeout.ms", (cfg.session_timeout_ms.max(1_000) * 2).max(10_000).to_string())
        .set("linger.ms", "5");
    let p: ThreadedProducer<DefaultProducerContext> = c.create()?;
    p.init_transactions(TXN_TIMEOUT)?;
    Ok(Arc::new(p))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a blocking Kafka call panicked")
}

/// The longest wait between outbox reads while the store is away.
const STORE_AWAY_MAX_WAIT: Duration = Duration::from_secs(1);

/// How long the publisher waits before its next round: not at all after a
/// full round (more is waiting), `interval` after a quiet one, and after
/// `store_away` rounds in a row that found the store away, `interval`
/// doubled that many times, at most [`STORE_AWAY_MAX_WAIT`].
fn next_wait(interval: Duration, busy: bool, store_away: u32) -> Duration {
    match (busy, store_away) {
        (true, 0) => Duration::ZERO,
        (false, 0) => interval,
        (_, n) => interval.saturating_mul(2u32.saturating_pow(n.min(16))).min(STORE_AWAY_MAX_WAIT),
    }
}

/// The shards whose outbox leases `consumer` holds.
fn leased(consumer: &StreamConsumer, topic: &str) -> BTreeSet<u32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition() as u32).collect())
        .unwrap_or_default()
}

/// One run of the publisher: joins the lease group and drains outboxes
/// until an error.
async fn publish(cfg: &PublisherConfig, store: &Arc<dyn Store>) -> Result<std::convert::Infallible, KafkaBusError> {
    let topics = LogTopics::for_region(&cfg.region);
    let mut c = group_config(&cfg.bootstrap, &topics.group, 500, cfg.session_timeout_ms);
    // Committed positions are read stable: a transaction of the lease's
    // previous holder still open is finished (committed or aborted) first.
    c.set("isolation.level", "read_committed").set("auto.offset.reset", "latest");
    // Its committed offsets are positions in the outboxes, past the empty
    // topic's end: librdkafka warns of the reset at every lease taken.
    c.set_log_level(rdkafka::config::RDKafkaLogLevel::Error);
    let consumer: Arc<StreamConsumer> = Arc::new(c.create()?);
    consumer.subscribe(&[&topics.outbox])?;
    let producer = {
        let cfg = cfg.clone();
        blocking(move || producer(&cfg)).await?
    };
    let region: Arc<str> = cfg.region.as_str().into();
    let outbox = |shard: u32| OutboxId { region: region.clone(), shard };
    // Shard → position published up to.
    let mut published: BTreeMap<u32, u64> = BTreeMap::new();
    let mut busy = false;
    // Rounds in a row whose outbox read found the store away: the wait
    // before the next grows with them (the store fails at once while its
    // connection is down), and only the first is logged as a warning.
    let mut store_away: u32 = 0;
    loop {
        // Serves the group (rebalances, heartbeats); nothing is ever
        // written to the lease topic, so this only waits.
        let wait = next_wait(cfg.interval, busy, store_away);
        busy = false;
        if let Ok(Err(e)) = tokio::time::timeout(wait, consumer.recv()).await {
            tracing::debug!(error = %e, "outbox lease consumer");
        }
        let leases = leased(&consumer, &topics.outbox);
        published.retain(|shard, _| leases.contains(shard));
        let new: Vec<u32> = leases.iter().filter(|s| !published.contains_key(s)).copied().collect();
        if !new.is_empty() {
            let positions = {
                let (consumer, topic) = (consumer.clone(), topics.outbox.clone());
                blocking(move || committed(&consumer, &topic, &new)).await?
            };
            for (shard, pos) in positions {
                tracing::info!(shard, pos, "outbox lease taken");
                // A store that lost acknowledged writes (a failover) may
                // count positions from below what is published: new
                // records would be read past and trimmed. Not before it
                // counts from above.
                match store.raise_outbox_position(&outbox(shard), pos).await {
                    Ok(true) => tracing::error!(
                        shard,
                        pos,
                        "outbox positions were behind the published ones (the store lost writes?); raised"
                    ),
                    Ok(false) => {}
                    Err(e) => return Err(KafkaBusError::Publisher(format!("outbox of shard {shard}: {e}"))),
                }
                // Published before the lease moved but not trimmed yet.
                if let Err(e) = store.trim_outbox(&outbox(shard), pos).await {
                    tracing::warn!(error = %e, shard, "outbox trim failed");
                }
                published.insert(shard, pos);
            }
        }
        let mut by_shard: BTreeMap<u32, Vec<OutboxEntry>> = BTreeMap::new();
        let mut n = 0;
        // A fair share each, so that one busy shard does not hold up the
        // others.
        let share = (BATCH / published.len().max(1)).max(1);
        let was_away = std::mem::take(&mut store_away);
        for (shard, pos) in &published {
            match store.read_outbox(&outbox(*shard), *pos, share).await {
                Ok(entries) if !entries.is_empty() => {
                    busy |= entries.len() >= share;
                    n += entries.len();
                    by_shard.insert(*shard, entries);
                }
                Ok(_) => {}
                Err(StoreError::Unavailable(e)) => {
                    // The store is away: the rest of the round would wait
                    // for it too; the next round tries again, later.
                    if was_away == 0 {
                        tracing::warn!(error = %e, shard, "outbox read failed; retrying with a growing wait");
                    } else {
                        tracing::debug!(error = %e, shard, rounds = was_away, "outbox read failed again");
                    }
                    store_away = was_away.saturating_add(1);
                    break;
                }
                Err(e) => {
                    // An entry that does not read: this shard waits (its
                    // outbox fills, then its writes with log records are
                    // refused), the others go on.
                    metrics::counter!("iris_log_outbox_unreadable_total").increment(1);
                    tracing::error!(error = %e, shard, "outbox unreadable");
                }
            }
        }
        if by_shard.is_empty() {
            continue;
        }
        let gm = consumer.group_metadata().ok_or_else(|| KafkaBusError::Publisher("no group metadata".into()))?;
        let job = {
            let (producer, topics, by_shard) = (producer.clone(), topics.clone(), by_shard.clone());
            blocking(move || transaction(&producer, &topics, &by_shard, &gm)).await
        };
        match job {
            Ok(()) => {
                metrics::counter!("iris_log_records_published_total").increment(n as u64);
                for (shard, entries) in by_shard {
                    let Some(last) = entries.last() else { continue };
                    published.insert(shard, last.pos);
                    if let Err(e) = store.trim_outbox(&outbox(shard), last.pos).await {
                        tracing::warn!(error = %e, shard, "outbox trim failed");
                    }
                }
            }
            Err(e) => {
                let p = producer.clone();
                if let Err(abort) = blocking(move || p.abort_transaction(TXN_TIMEOUT)).await {
                    // Fenced or gone: the next holder's start aborts it.
                    tracing::debug!(error = %abort, "aborting the failed transaction");
                }
                return Err(e.into());
            }
        }
    }
}

/// The published positions of `shards`, as committed in the lease group.
fn committed(consumer: &StreamConsumer, topic: &str, shards: &[u32]) -> Result<Vec<(u32, u64)>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for s in shards {
        tpl.add_partition(topic, *s as i32);
    }
    let got = consumer.committed_offsets(tpl, TXN_TIMEOUT)?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            let pos = match e.offset() {
                Offset::Offset(n) if n > 0 => n as u64,
                _ => 0,
            };
            (e.partition() as u32, pos)
        })
        .collect())
}

/// Publishes `by_shard` and commits the new positions, in one transaction.
fn transaction(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topics: &LogTopics,
    by_shard: &BTreeMap<u32, Vec<OutboxEntry>>,
    gm: &rdkafka::consumer::ConsumerGroupMetadata,
) -> Result<(), KafkaError> {
    producer.begin_transaction()?;
    let mut positions = TopicPartitionList::new();
    for (shard, entries) in by_shard {
        for e in entries {
            let r = topic_record(e);
            let mut record = BaseRecord::to(topics.of(e.kind))
                .partition(*shard as i32)
                .key(r.key.as_bytes())
                .payload(r.value.as_bytes());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        if let Some(last) = entries.last() {
            positions.add_partition_offset(&topics.outbox, *shard as i32, Offset::Offset(last.pos as i64))?;
        }
    }
    producer.send_offsets_to_transaction(&positions, gm, TXN_TIMEOUT)?;
    producer.commit_transaction(TXN_TIMEOUT)
}

/// Reads a log topic from every partition's start (or end) and hands each
/// record's value to `out`, until `out` returns false. Reads committed
/// records only.
pub async fn tail(
    bootstrap: &str,
    topic: &str,
    from_beginning: bool,
    mut out: impl FnMut(&str) -> bool,
) -> Result<(), KafkaBusError> {
    let consumer = reader(bootstrap)?;
    let partitions = partition_count(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, if from_beginning { Offset::Beginning } else { Offset::End })?;
    }
    consumer.assign(&tpl)?;
    loop {
        let m = consumer.recv().await?;
        let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        if !out(&value) {
            return Ok(());
        }
    }
}

/// Reads a log topic from the start up to its end as it was when called,
/// in each partition's order, handing every record's value to `out`.
pub async fn read_to_end(bootstrap: &str, topic: &str, mut out: impl FnMut(&str)) -> Result<(), KafkaBusError> {
    let consumer = reader(bootstrap)?;
    let partitions = partition_count(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    loop {
        // Done once every partition's position reached its end (transaction
        // markers included, which are never handed out as records).
        let position = consumer.position()?;
        let done = ends.iter().all(|(p, high)| {
            *high == 0
                || position
                    .find_partition(topic, *p)
                    .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *high))
        });
        if done {
            return Ok(());
        }
        match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Ok(Ok(m)) => out(&String::from_utf8_lossy(m.payload().unwrap_or_default())),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {}
        }
    }
}

fn reader(bootstrap: &str) -> Result<StreamConsumer, KafkaBusError> {
    let mut c = client_config(bootstrap);
    // A group of its own that never commits: assignment is by hand.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    c.set("group.id", format!("iris.tail.{}.{nanos}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    Ok(c.create()?)
}

fn partition_count(consumer: &StreamConsumer, topic: &str) -> Result<i32, KafkaBusError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let n = md.topics().iter().find(|t| t.name() == topic).map(|t| t.partitions().len()).unwrap_or(0);
    if n == 0 {
        return Err(KafkaBusError::NoTopic(topic.to_owned()));
    }
    Ok(n as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(kind: LogKind, record: &str) -> OutboxEntry {
        OutboxEntry { pos: 1, kind, tenant: "acme".into(), seq: 17, record: Bytes::from(record.to_owned()) }
    }

    #[test]
    fn records_are_keyed_by_tenant_and_owner_and_carry_their_seq() {
        let r =
            topic_record(&entry(LogKind::Graph, r#"{"v":1,"type":"contact.upserted","owner":"bob","contact":"cat"}"#));
        assert_eq!(r.key, r#"["acme","bob"]"#);
        assert_eq!(r.value, r#"{"seq":17,"event":{"v":1,"type":"contact.upserted","owner":"bob","contact":"cat"}}"#);
        let r = topic_record(&entry(LogKind::Graph, r#"{"v":1,"type":"identity.verified","user":"ann"}"#));
        assert_eq!(r.key, r#"["acme","ann"]"#);
        let r = topic_record(&entry(LogKind::Events, r#"{"v":1,"stream":"clicks","type":"click"}"#));
        assert_eq!(r.key, r#"["acme","clicks"]"#);
        let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        assert_eq!(v["seq"], 17);
    }

    #[test]
    fn the_publisher_waits_longer_while_the_store_is_away_and_not_at_all_when_busy() {
        let ms = Duration::from_millis;
        assert_eq!(next_wait(ms(50), true, 0), Duration::ZERO);
        assert_eq!(next_wait(ms(50), false, 0), ms(50));
        let away: Vec<Duration> = (1..=6).map(|n| next_wait(ms(50), false, n)).collect();
        assert_eq!(away, vec![ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]);
        // A full round does not hurry a store that is away.
        assert_eq!(next_wait(ms(50), true, 2), ms(200));
        // No overflow however long the outage.
        assert_eq!(next_wait(Duration::from_secs(3_600), false, u32::MAX), STORE_AWAY_MAX_WAIT);
    }
}
