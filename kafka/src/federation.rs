//! Federation over Kafka: this region's durable outbound topic (the
//! [`FederationLink`]), the relay that moves it to the global layer and the
//! relay that brings the global layer's envelopes for this region in, and
//! the follower of this region's copy of the home assignments.
//!
//! Nothing here waits on another region: the outbound topic is regional,
//! and the relays run beside the node's work, not in its path.

use crate::{
    KafkaBusError, PUBLISH_TIMEOUT, Topics, client_config, ensure_topics, group_config, quick_producer,
    quick_to_reconnect, reader_config,
};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use iris_envelope::{GlobalEnvelope, HomeAssignment};
use iris_router::relay::{Arrival, OUT_MAX_IN_FLIGHT, Outbound, RelayIn, RelayLedger, RelayOut, global_retry_wait};
use iris_router::{BusError, FederationLink, HomeDirectory, PublishError, Router};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;

/// This region's way out: envelopes for other regions are written to the
/// regional outbound topic (acks=all), where they wait for the relay.
pub struct OutboundLink {
    producer: FutureProducer,
    outbound: String,
    homes: String,
}

impl OutboundLink {
    /// A producer on the regional cluster.
    pub fn new(bootstrap: &str, topics: &Topics) -> Result<Self, KafkaBusError> {
        let producer: FutureProducer = quick_producer(&mut client_config(bootstrap))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("queue.buffering.max.messages", "100000")
            .create()?;
        Ok(Self { producer, outbound: topics.outbound.clone(), homes: topics.homes.clone() })
    }
}

#[async_trait]
impl FederationLink for OutboundLink {
    fn try_send(&self, env: GlobalEnvelope) -> Result<(), PublishError<GlobalEnvelope>> {
        let payload = iris_envelope::encode(&env);
        let key = env.body.key();
        match self.producer.send_result(FutureRecord::to(&self.outbound).key(&key).payload(&payload)) {
            Ok(_delivery) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Err(PublishError::Full(env)),
            Err(_) => Err(PublishError::Closed(env)),
        }
    }

    async fn send(&self, env: GlobalEnvelope) -> Result<(), BusError> {
        let payload = iris_envelope::encode(&env);
        let key = env.body.key();
        self.producer
            .send(FutureRecord::to(&self.outbound).key(&key).payload(&payload), PUBLISH_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| BusError::Closed(format!("outbound: {e}")))
    }

    async fn record_home(&self, a: &HomeAssignment) -> Result<(), BusError> {
        let payload = iris_envelope::encode(a);
        let key = a.user.shard_key();
        self.producer
            .send(FutureRecord::to(&self.homes).partition(0).key(&key).payload(&payload), PUBLISH_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| BusError::Closed(format!("homes: {e}")))
    }
}

/// How long the end of the home assignments may stay unknown at start.
const WATERMARK_WAIT: Duration = Duration::from_secs(10);

/// Reads this region's home assignments into `homes`: everything already
/// written before it returns (a node must not route on a partial view),
/// then, in a background task, what arrives later.
pub async fn follow_homes(
    bootstrap: &str,
    topic: &str,
    group: &str,
    homes: Arc<HomeDirectory>,
    fetch_wait_ms: u32,
) -> Result<(), KafkaBusError> {
    let consumer: StreamConsumer = reader_config(bootstrap, group, fetch_wait_ms).create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    // A partition that just got its leader may still answer "not leader"
    // for a moment: asked again until WATERMARK_WAIT has passed.
    let deadline = std::time::Instant::now() + WATERMARK_WAIT;
    let high = loop {
        match consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
            Ok((_, high)) => break high,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "home assignments' end not known yet; asking again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut next = 0;
    while next < high {
        let m = consumer.recv().await?;
        next = m.offset() + 1;
        apply_home(&homes, &m);
    }
    tracing::info!(assignments = high, "home assignments loaded");
    tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => apply_home(&homes, &m),
                Err(e) => {
                    tracing::warn!(error = %e, "home assignments read failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    Ok(())
}

fn apply_home(homes: &HomeDirectory, m: &impl Message) {
    match iris_envelope::decode::<HomeAssignment>(m.payload().unwrap_or_default()) {
        Ok(a) => {
            homes.apply(&a);
        }
        Err(e) => tracing::error!(offset = m.offset(), error = %e, "undecodable home assignment skipped"),
    }
}

/// Where a relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// This region.
    pub region: String,
    /// Every region of the federation (their inbound topics are created).
    pub regions: Vec<String>,
    /// Regional bootstrap servers.
    pub regional: String,
    /// Global bootstrap servers.
    pub global: String,
    /// Partitions of every `iris.global.<region>` topic.
    pub global_partitions: usize,
    /// Fetch wait (low for latency).
    pub fetch_wait_ms: u32,
    /// A relay silent this long loses its partitions to another relay.
    pub session_timeout_ms: u32,
}

/// How often relays commit what is done.
const COMMIT_EVERY: Duration = Duration::from_millis(100);

/// A relay's consumer-group member. Relays keep eager assignment (every
/// member stops all its partitions at a rebalance), unlike the shard group:
/// with incremental assignment, federated chaos seed 2 left one region's
/// path to the other stuck after a broker was killed, in four runs out of
/// four (a user homed across the link could not open a session for the
/// rest of the run); with eager assignment the path came back after every
/// fault (ADR 0026). A relay's connections give up on a silent peer sooner
/// than librdkafka's defaults ([`quick_to_reconnect`]).
fn group_consumer(
    bootstrap: &str,
    group: &str,
    topic: &str,
    fetch_wait_ms: u32,
    session_timeout_ms: u32,
) -> Result<StreamConsumer, KafkaBusError> {
    let mut c = group_config(bootstrap, group, fetch_wait_ms, session_timeout_ms);
    let consumer: StreamConsumer = quick_to_reconnect(&mut c).create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// The partitions of `topic` assigned to this member now, if that can be
/// read (a partition taken away since it was read is its new owner's to
/// commit; see [`RelayLedger::to_commit`]).
fn owned(consumer: &StreamConsumer, topic: &str) -> Option<Vec<i32>> {
    let assignment = consumer.assignment().ok()?;
    Some(assignment.elements_for_topic(topic).iter().map(|e| e.partition()).collect())
}

/// Commits these positions, asynchronously: a commit that fails later is
/// overtaken by a later one covering the same partitions. Returns them if
/// the commit could not even be started, to be offered again.
fn commit(consumer: &StreamConsumer, topic: &str, positions: Vec<(i32, i64)>) -> Option<Vec<(i32, i64)>> {
    if positions.is_empty() {
        return None;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, next) in &positions {
        if tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*next)).is_err() {
            return Some(positions);
        }
    }
    match consumer.commit(&tpl, CommitMode::Async) {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!(error = %e, "relay offset commit failed; retried");
            Some(positions)
        }
    }
}

/// Creates the global inbound topics, retrying while the global layer is
/// unreachable (the region keeps serving its own users meanwhile).
async fn ensure_global(cfg: &RelayConfig) {
    let names: Vec<String> = cfg.regions.iter().map(|r| Topics::global(r)).collect();
    let wanted: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), cfg.global_partitions)).collect();
    let mut wait = None;
    loop {
        match ensure_topics(&cfg.global, &wanted).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "global topics not ready; retrying");
                let w = global_retry_wait(wait);
                tokio::time::sleep(w).await;
                wait = Some(w);
            }
        }
    }
}

/// The outbound relay: moves this region's outbound topic to the global
/// layer, in order per outbound partition, committing an envelope only once
/// the global cluster confirmed it. While the global layer is unreachable
/// the producer retries without end and reading pauses at a bound: the
/// backlog stays in the outbound topic, durable, and drains in order when
/// the link returns.
pub async fn relay_out(cfg: RelayConfig) -> Result<(), KafkaBusError> {
    ensure_global(&cfg).await;
    let topics = Topics::for_region(&cfg.region);
    let group = format!("iris.{}.relay.out", cfg.region);
    let consumer = group_consumer(&cfg.regional, &group, &topics.outbound, cfg.fetch_wait_ms, cfg.session_timeout_ms)?;
    let producer: FutureProducer = quick_producer(&mut client_config(&cfg.global))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        // Never give up on an envelope: an outage only delays it.
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.messages", (OUT_MAX_IN_FLIGHT * 2).to_string())
        .create()?;
    let mut relay = RelayOut::new(cfg.region.as_str().into(), cfg.global_partitions as i32);
    let mut in_flight = FuturesOrdered::new();
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    loop {
        tokio::select! {
            Some((p, off, outcome)) = in_flight.next() => {
                // A refusal stops the relay: never commit past it.
                relay.delivered(p, off, outcome).map_err(KafkaBusError::Relay)?;
            }
            m = consumer.recv(), if relay.may_read() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbound read failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (p, off) = (m.partition(), m.offset());
                let env = iris_envelope::decode::<GlobalEnvelope>(m.payload().unwrap_or_default())
                    .inspect_err(|e| {
                        metrics::counter!("iris_federation_dropped_total", "reason" => "undecodable").increment(1);
                        tracing::error!(partition = p, offset = off, error = %e, "undecodable outbound envelope skipped");
                    })
                    .ok();
                let Outbound::Produce { env, partition } = relay.read(p, off, env) else { continue };
                let payload = iris_envelope::encode(&env);
                let key = env.body.key();
                let topic = Topics::global(&env.dest);
                let record = FutureRecord::to(&topic).partition(partition).key(&key).payload(&payload);
                match producer.send_result(record) {
                    Ok(delivery) => {
                        in_flight.push_back(async move {
                            let outcome: Result<(), String> = match delivery.await {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err((e, _))) => Err(e.to_string()),
                                Err(_) => Err("producer closed".to_owned()),
                            };
                            (p, off, outcome)
                        });
                        metrics::counter!("iris_federation_relayed_total", "direction" => "out", "kind" => env.body.kind()).increment(1);
                    }
                    Err((e, _)) => relay.delivered(p, off, Err(e.to_string())).map_err(KafkaBusError::Relay)?,
                }
            }
            _ = tick.tick() => {
                metrics::gauge!("iris_federation_in_flight").set(relay.in_flight() as f64);
                let positions = relay.to_commit(owned(&consumer, &topics.outbound).as_deref());
                if let Some(again) = commit(&consumer, &topics.outbound, positions) {
                    relay.not_committed(&again);
                }
            }
        }
    }
}

/// The inbound relay: consumes this region's topic on the global layer and
/// hands each envelope to the regional bus (shards, edges), applies home
/// assignments, and renews foreign edges' leases. Copies of envelopes
/// already handed on are dropped; an envelope for a user whose home moved
/// is sent on once more (at most [`iris_router::MAX_HOPS`] crossings).
/// Transit times are measured by the federation's clock, which stamped them.
pub async fn relay_in(cfg: RelayConfig, router: Router) -> Result<(), KafkaBusError> {
    ensure_global(&cfg).await;
    let federation = router.federation().cloned().expect("relay_in needs a federated router");
    let group = format!("iris.{}.relay.in", cfg.region);
    let topic = Topics::global(&cfg.region);
    let consumer = group_consumer(&cfg.global, &group, &topic, cfg.fetch_wait_ms, cfg.session_timeout_ms)?;
    let link = OutboundLink::new(&cfg.regional, &Topics::for_region(&cfg.region))?;
    let mut relay = RelayIn::new();
    let mut ledger = RelayLedger::default();
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    loop {
        let m = tokio::select! {
            m = consumer.recv() => m,
            _ = tick.tick() => {
                let positions = ledger.to_commit(owned(&consumer, &topic).as_deref());
                if let Some(again) = commit(&consumer, &topic, positions) {
                    ledger.not_committed(&again);
                }
                continue;
            }
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "global inbound read failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (p, off) = (m.partition(), m.offset());
        // Done once handled below (each record is handled before the next
        // is read), or at once when it is skipped.
        ledger.read(p, off);
        ledger.done(p, off);
        let env = match iris_envelope::decode::<GlobalEnvelope>(m.payload().unwrap_or_default()) {
            Ok(env) => env,
            Err(e) => {
                metrics::counter!("iris_federation_dropped_total", "reason" => "undecodable").increment(1);
                tracing::error!(partition = p, offset = off, error = %e, "undecodable global envelope skipped");
                continue;
            }
        };
        let (kind, queued_at, origin, hops) = (env.body.kind(), env.queued_at, env.origin.clone(), env.hops);
        let arrival = relay.arrival(env, federation.homes());
        match arrival {
            Arrival::Dropped("replay") => {
                metrics::counter!("iris_federation_replays_dropped_total").increment(1);
                continue;
            }
            Arrival::Dropped(reason) => {
                metrics::counter!("iris_federation_dropped_total", "reason" => reason).increment(1);
                tracing::error!(%origin, hops, reason, "relayed envelope dropped");
                continue;
            }
            _ => {}
        }
        metrics::counter!("iris_federation_relayed_total", "direction" => "in", "kind" => kind).increment(1);
        metrics::histogram!("iris_federation_transit_seconds", "kind" => kind)
            .record((federation.clock().now_ms() - queued_at).max(0) as f64 / 1_000.0);
        deliver(&router, &federation, &link, arrival).await;
    }
}

/// Hands one arrival from the global layer to this region, retrying while
/// the regional bus refuses (nothing is committed past it until then), as
/// long as [`RelayIn::retry`] says.
async fn deliver(router: &Router, federation: &Arc<iris_router::Federation>, link: &OutboundLink, arrival: Arrival) {
    for attempt in 1.. {
        let outcome = match &arrival {
            Arrival::Shard(se) => router.bus().publish_shard(router.shard_of_key(&se.owner), se.clone()).await,
            Arrival::Forward { env, home } => federation.forward(env.clone(), home.clone()).await.map(|_| ()),
            Arrival::Edge(ee) => router.bus().publish_edge(ee.clone()).await,
            Arrival::EdgeAlive(edge) => {
                // Ephemeral: the next beat covers a dropped one.
                let dropped = router.renew_lease_here(edge);
                metrics::counter!("iris_ephemeral_dropped_total").increment(dropped as u64);
                Ok(())
            }
            // Not ephemeral: a lost one leaves travellers' sessions of the
            // edge's previous process for good (its lease goes on).
            Arrival::EdgeStarted(edge) => router.announce_start_here(edge).await,
            Arrival::Home(a) => {
                let r = link.record_home(a).await;
                if r.is_ok() {
                    federation.homes().apply(a);
                }
                r
            }
            Arrival::Dropped(_) => Ok(()),
        };
        let Err(e) = outcome else { return };
        match RelayIn::retry(&arrival, attempt) {
            Some(wait) => {
                tracing::warn!(error = %e, "regional bus refused a relayed envelope; retrying");
                tokio::time::sleep(wait).await;
            }
            None => {
                metrics::counter!("iris_federation_dropped_total", "reason" => "edge_gone").increment(1);
                tracing::warn!(error = %e, "edge unreachable; relayed envelope for it dropped");
                return;
            }
        }
    }
}
