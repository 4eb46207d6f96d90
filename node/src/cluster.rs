//! A node in a regional cluster: the Kafka bus instead of the in-process
//! one, shard actors started and stopped as the core consumer group moves
//! partitions, and this node's edge topics read into its edge queues.

use anyhow::Context as _;
use iris_clock::SharedClock;
use iris_config::{Cluster, Config, Role};
use iris_core::{ShardHost, ShardsConfig};
use iris_envelope::{EdgeId, ShardEnvelope, ShardId};
use iris_kafka::{
    KafkaBus, OutboundLink, Ownership, PartitionReader, RelayConfig, ShardGroup, Topics, ensure_topics_compacting,
    follow_homes, relay_in, relay_out,
};
use iris_router::{EdgeReceiver, Federation, HomeDirectory, Ring, Router};
use iris_storage::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a clustered node runs on.
pub type Started = (Router, Option<Arc<ShardHost>>, HashMap<EdgeId, EdgeReceiver>);

/// Joins the cluster: topics, the bus, edge queues, and (core role) shards.
/// `clock` and `shard_seed` are the node's, for [`ShardHost::new`].
#[allow(clippy::too_many_arguments)]
pub async fn start(
    cfg: &Config,
    cluster: &Cluster,
    shards_cfg: &ShardsConfig,
    ring: Arc<Ring>,
    store: Arc<dyn Store>,
    edges: &[EdgeId],
    clock: &SharedClock,
    shard_seed: u64,
) -> anyhow::Result<Started> {
    let topics = Topics::for_region(&cfg.region);
    let mut wanted: Vec<(String, usize)> = vec![(topics.shard.clone(), cfg.core.shards as usize)];
    wanted.extend(edges.iter().map(|e| (topics.edge(e), 1)));
    if let Some(f) = &cfg.federation {
        wanted.push((topics.outbound.clone(), f.outbound_partitions as usize));
        wanted.push((topics.homes.clone(), 1));
    }
    let refs: Vec<(&str, usize)> = wanted.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    // The home assignments are state keyed by user: compacted, never expired.
    ensure_topics_compacting(&cluster.kafka, &refs, &[topics.homes.as_str()])
        .await
        .context("checking the cluster's topics")?;
    let bus =
        KafkaBus::new(&cluster.kafka, topics.clone(), cluster.linger_ms).context("connecting the Kafka producer")?;
    let mut router = Router::new(ring, Arc::new(bus));
    if let Some(f) = &cfg.federation {
        router = federate(cfg, cluster, f, &topics, router, clock).await?;
    }

    let mut edge_rxs = HashMap::new();
    for e in edges {
        let (tx, rx) = mpsc::channel(cfg.core.bus_queue);
        let group = format!("iris.{}.edge.{}", cfg.region, e);
        // An edge only needs what arrives while it runs: its sessions are new.
        let reader = PartitionReader::new(&cluster.kafka, &group, &topics.edge(e), &[0], cluster.fetch_wait_ms, true)?;
        tokio::spawn(edge_pump(reader, tx));
        edge_rxs.insert(e.clone(), rx);
    }

    let shards = if cfg.roles.contains(&Role::Core) {
        let host = Arc::new(ShardHost::new(shards_cfg, store, router.clone(), clock.clone(), shard_seed));
        let group = cluster.core_group.clone().unwrap_or_else(|| format!("iris.{}.core", cfg.region));
        let (members, ownership) =
            ShardGroup::join(&cluster.kafka, &group, &topics.shard, cluster.fetch_wait_ms, cluster.session_timeout_ms)?;
        tokio::spawn(core_loop(host.clone(), members, ownership, cfg.core.bus_queue));
        Some(host)
    } else {
        None
    };
    Ok((router, shards, edge_rxs))
}

/// Joins the federation: loads the home assignments, sends what belongs to
/// other regions through the outbound topic, flushes cross-region presence
/// once per interval, and (on relay nodes) runs the two relays.
async fn federate(
    cfg: &Config,
    cluster: &Cluster,
    f: &iris_config::Federation,
    topics: &Topics,
    router: Router,
    clock: &SharedClock,
) -> anyhow::Result<Router> {
    let homes = Arc::new(HomeDirectory::new(&cfg.region, &f.regions));
    let group = format!("iris.{}.homes.{}", cfg.region, cfg.node_id);
    follow_homes(&cluster.kafka, &topics.homes, &group, homes.clone(), cluster.fetch_wait_ms)
        .await
        .context("loading the home assignments")?;
    let link = Arc::new(OutboundLink::new(&cluster.kafka, topics).context("connecting the outbound producer")?);
    let federation = Arc::new(Federation::new(homes, link, f.max_presence_batch, clock.clone()));
    let router = router.with_federation(federation.clone());
    let every = Duration::from_millis(f.presence_interval_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            federation.flush_presence();
        }
    });
    if f.relay {
        let relay = RelayConfig {
            region: cfg.region.clone(),
            regions: f.regions.clone(),
            regional: cluster.kafka.clone(),
            global: f.global_kafka.clone(),
            global_partitions: f.global_partitions as usize,
            fetch_wait_ms: cluster.fetch_wait_ms,
            session_timeout_ms: cluster.session_timeout_ms,
        };
        let (out_cfg, in_router) = (relay.clone(), router.clone());
        // A relay that stops (it never commits past what it could not move)
        // starts again from its last commit.
        tokio::spawn(async move {
            loop {
                if let Err(e) = relay_out(out_cfg.clone()).await {
                    tracing::error!(error = %e, "outbound relay stopped; restarting in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        tokio::spawn(async move {
            loop {
                if let Err(e) = relay_in(relay.clone(), in_router.clone()).await {
                    tracing::error!(error = %e, "inbound relay stopped; restarting in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        tracing::info!(global = %f.global_kafka, "relays started");
    }
    Ok(router)
}

/// Moves envelopes from an edge topic into the edge's queue.
async fn edge_pump(reader: PartitionReader, tx: mpsc::Sender<iris_envelope::EdgeEnvelope>) {
    loop {
        match reader.next_edge().await {
            Ok(env) => {
                if tx.send(env).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "edge topic read failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One owned partition: its actor's input, how many of the envelopes
/// handed to it the actor reports durable, and the offsets in between.
struct Owned {
    input: mpsc::Sender<ShardEnvelope>,
    progress: Arc<std::sync::atomic::AtomicU64>,
    ledger: OffsetLedger,
    /// Envelopes read while the actor's input was full, in order. The
    /// partition is paused from the first of them until they are all in,
    /// so this holds at most what the consumer had already fetched (and
    /// `MAX_HELD` if pausing failed).
    waiting: std::collections::VecDeque<(i64, ShardEnvelope)>,
    /// The shard's input clock, told while envelopes are held here so that
    /// an empty queue is not taken for caught up (edge leases).
    clock: Arc<iris_core::InputClock>,
}

/// Held envelopes beyond which the core loop waits for the shard instead
/// (only reached if pausing the partition failed).
const MAX_HELD: usize = 4_096;

/// Stops and restarts the fetching of one partition.
trait Pauser {
    fn pause(&self, partition: i32);
    fn resume(&self, partition: i32);
}

impl Pauser for ShardGroup {
    fn pause(&self, partition: i32) {
        if let Err(e) = ShardGroup::pause(self, partition) {
            tracing::warn!(shard = partition, error = %e, "pausing a full shard's partition failed");
        }
    }

    fn resume(&self, partition: i32) {
        if let Err(e) = ShardGroup::resume(self, partition) {
            tracing::warn!(shard = partition, error = %e, "resuming a shard's partition failed");
        }
    }
}

impl Owned {
    fn new(
        input: mpsc::Sender<ShardEnvelope>,
        progress: Arc<std::sync::atomic::AtomicU64>,
        clock: Arc<iris_core::InputClock>,
    ) -> Self {
        Self { input, progress, ledger: OffsetLedger::default(), waiting: Default::default(), clock }
    }

    /// Hands an envelope to the shard without waiting: a full shard gets
    /// its partition paused and the envelope held, so that one busy shard
    /// never stops the others, the offset commits or ownership changes.
    fn offer(&mut self, pauser: &dyn Pauser, partition: i32, offset: i64, env: ShardEnvelope) {
        self.drain(pauser, partition);
        if !self.waiting.is_empty() {
            self.waiting.push_back((offset, env));
            return;
        }
        match self.input.try_send(env) {
            Ok(()) => self.ledger.handed(offset),
            Err(mpsc::error::TrySendError::Full(env)) => {
                self.clock.set_held_upstream(true);
                pauser.pause(partition);
                self.waiting.push_back((offset, env));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!(shard = partition, "shard input closed; envelope dropped")
            }
        }
    }

    /// Moves held envelopes in while the shard has room, and resumes the
    /// partition once none is left.
    fn drain(&mut self, pauser: &dyn Pauser, partition: i32) {
        if self.waiting.is_empty() {
            return;
        }
        while let Some((offset, env)) = self.waiting.pop_front() {
            match self.input.try_send(env) {
                Ok(()) => self.ledger.handed(offset),
                Err(mpsc::error::TrySendError::Full(env)) => {
                    self.waiting.push_front((offset, env));
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::warn!(shard = partition, "shard input closed; held envelopes dropped");
                    self.waiting.clear();
                    return;
                }
            }
        }
        pauser.resume(partition);
        self.clock.set_held_upstream(false);
    }

    /// The bound on held envelopes: waits for the shard to take them all.
    async fn drain_waiting(&mut self, pauser: &(dyn Pauser + Sync), partition: i32) {
        while let Some((offset, env)) = self.waiting.pop_front() {
            if self.input.send(env).await.is_err() {
                self.waiting.clear();
                return;
            }
            self.ledger.handed(offset);
        }
        pauser.resume(partition);
        self.clock.set_held_upstream(false);
    }
}

/// How often a paused partition's shard is offered its held envelopes.
const RETRY_HELD: Duration = Duration::from_millis(2);

/// Maps a count of durable inputs back to Kafka offsets. Pure: the core
/// loop feeds it and does the committing.
#[derive(Default)]
struct OffsetLedger {
    /// Offsets handed to the actor and not yet durable, in order.
    pending: std::collections::VecDeque<i64>,
    handed: u64,
    /// The newest offset whose work is durable, and the newest committed.
    durable: Option<i64>,
    committed: Option<i64>,
}

impl OffsetLedger {
    fn handed(&mut self, offset: i64) {
        self.handed += 1;
        self.pending.push_back(offset);
    }

    /// Given how many handed inputs are durable, the offset to commit next
    /// (the one after the newest durable), if it is not committed yet.
    fn to_commit(&mut self, durable_inputs: u64) -> Option<i64> {
        while self.handed - (self.pending.len() as u64) < durable_inputs {
            match self.pending.pop_front() {
                Some(off) => self.durable = Some(off),
                None => break,
            }
        }
        self.durable.filter(|d| self.committed != Some(*d)).map(|d| d + 1)
    }

    fn committed(&mut self, next: i64) {
        self.committed = Some(next - 1);
    }
}

/// How often durable offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// Runs the shards this node owns: starts an actor when Kafka assigns its
/// partition, closes its input when the partition is revoked, feeds each
/// owned partition's envelopes to its actor in order, and commits offsets
/// only up to envelopes whose work the actor reports durable.
async fn core_loop(host: Arc<ShardHost>, members: ShardGroup, mut ownership: mpsc::Receiver<Ownership>, queue: usize) {
    let mut owned: HashMap<i32, Owned> = HashMap::new();
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    // A persistent interval: a sleep re-created on every turn would never
    // fire while other partitions keep `next_shard` ready.
    let mut retry = tokio::time::interval(RETRY_HELD);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            change = ownership.recv() => match change {
                Some(Ownership::Assigned(partitions)) => {
                    for p in partitions {
                        if let std::collections::hash_map::Entry::Vacant(slot) = owned.entry(p) {
                            let (tx, rx) = mpsc::channel(queue);
                            let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
                            let clock = host.start(ShardId(p as u32), rx, Some(progress.clone()));
                            // A partition paused under an earlier owner
                            // here must not stay paused.
                            Pauser::resume(&members, p);
                            slot.insert(Owned::new(tx, progress, clock));
                            tracing::info!(shard = p, "shard assigned here");
                        }
                    }
                }
                Some(Ownership::Revoked(partitions)) => {
                    for p in partitions {
                        // Dropping the input lets the actor finish and stop.
                        owned.remove(&p);
                        host.forget(ShardId(p as u32));
                        tracing::info!(shard = p, "shard revoked");
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                let mut offsets = Vec::new();
                for (p, o) in owned.iter_mut() {
                    let durable = o.progress.load(std::sync::atomic::Ordering::Acquire);
                    if let Some(next) = o.ledger.to_commit(durable) {
                        offsets.push((*p, next));
                    }
                }
                // One request for every partition that moved; a failed
                // commit is offered again on the next tick.
                match members.commit_all(&offsets) {
                    Ok(()) => {
                        for (p, next) in offsets {
                            if let Some(o) = owned.get_mut(&p) {
                                o.ledger.committed(next);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(partitions = offsets.len(), error = %e, "offset commit failed; retried"),
                }
            }
            _ = retry.tick(), if owned.values().any(|o| !o.waiting.is_empty()) => {
                for (p, o) in owned.iter_mut() {
                    o.drain(&members, *p);
                }
            }
            next = members.next_shard() => match next {
                Ok((p, offset, env)) => match owned.get_mut(&p) {
                    Some(o) => {
                        o.offer(&members, p, offset, env);
                        if o.waiting.len() > MAX_HELD {
                            tracing::warn!(shard = p, "too many envelopes held for a full shard; waiting for it");
                            o.drain_waiting(&members, p).await;
                        }
                    }
                    None => tracing::warn!(shard = p, "envelope for a shard not owned here; dropped"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "shard topic read failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{OffsetLedger, Owned, Pauser};
    use iris_envelope::{EdgeId, ShardEnvelope, ShardInput, UserKey};
    use std::cell::RefCell;
    use std::sync::Arc;
    use tokio::sync::mpsc;

    #[derive(Default)]
    struct Recorded(RefCell<Vec<(&'static str, i32)>>);

    impl Pauser for Recorded {
        fn pause(&self, p: i32) {
            self.0.borrow_mut().push(("pause", p));
        }
        fn resume(&self, p: i32) {
            self.0.borrow_mut().push(("resume", p));
        }
    }

    fn env(n: usize) -> ShardEnvelope {
        ShardEnvelope {
            owner: UserKey::new("t", format!("u{n}")),
            body: ShardInput::EdgeAlive { edge: EdgeId("e".into()) },
        }
    }

    #[test]
    fn a_full_shard_pauses_its_partition_and_gets_its_envelopes_in_order_once_there_is_room() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut o = Owned::new(tx, Arc::default(), Arc::default());
        let kafka = Recorded::default();
        for off in 10..15 {
            o.offer(&kafka, 3, off, env(off as usize));
        }
        assert_eq!(*kafka.0.borrow(), vec![("pause", 3)], "paused once, at the first that did not fit");
        assert_eq!(o.waiting.len(), 3);
        o.drain(&kafka, 3);
        assert_eq!(o.waiting.len(), 3, "still no room");
        // The shard takes one: one held envelope moves in, the rest wait.
        assert_eq!(rx.try_recv().unwrap().owner.user.as_ref(), "u10");
        o.drain(&kafka, 3);
        assert_eq!(o.waiting.len(), 2);
        let mut seen = vec!["u11".to_string()];
        assert_eq!(rx.try_recv().unwrap().owner.user.as_ref(), "u11");
        while !o.waiting.is_empty() {
            o.drain(&kafka, 3);
            while let Ok(e) = rx.try_recv() {
                seen.push(e.owner.user.to_string());
            }
        }
        assert_eq!(seen, ["u11", "u12", "u13", "u14"], "in offset order");
        assert_eq!(*kafka.0.borrow(), vec![("pause", 3), ("resume", 3)]);
        // All five offsets were handed, so all five can be committed.
        assert_eq!(o.ledger.to_commit(5), Some(15));
    }

    #[test]
    fn commits_only_up_to_durable_inputs_and_retries_a_failed_commit() {
        let mut l = OffsetLedger::default();
        assert_eq!(l.to_commit(0), None, "nothing handed, nothing to commit");
        // Offsets need not be contiguous (skipped undecodable messages).
        for off in [10, 11, 14, 15] {
            l.handed(off);
        }
        assert_eq!(l.to_commit(0), None);
        assert_eq!(l.to_commit(2), Some(12), "next after the second input");
        // The commit failed: the same offset is offered again.
        assert_eq!(l.to_commit(2), Some(12));
        l.committed(12);
        assert_eq!(l.to_commit(2), None, "already committed");
        assert_eq!(l.to_commit(4), Some(16));
        l.committed(16);
        l.handed(16);
        assert_eq!(l.to_commit(4), None, "the new input is not durable yet");
        assert_eq!(l.to_commit(5), Some(17));
    }
}
