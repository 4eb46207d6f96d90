//! A node in a regional cluster: the Kafka bus instead of the in-process
//! one, shard actors started and stopped as the core consumer group moves
//! partitions, and this node's edge topics read into its edge queues.

use anyhow::Context as _;
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
pub async fn start(
    cfg: &Config,
    cluster: &Cluster,
    shards_cfg: &ShardsConfig,
    ring: Arc<Ring>,
    store: Arc<dyn Store>,
    edges: &[EdgeId],
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
    let bus = KafkaBus::new(&cluster.kafka, topics.clone(), 0).context("connecting the Kafka producer")?;
    let mut router = Router::new(ring, Arc::new(bus));
    if let Some(f) = &cfg.federation {
        router = federate(cfg, cluster, f, &topics, router).await?;
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
        let host = Arc::new(ShardHost::new(shards_cfg, store, router.clone(), rand::random()));
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
) -> anyhow::Result<Router> {
    let homes = Arc::new(HomeDirectory::new(&cfg.region, &f.regions));
    let group = format!("iris.{}.homes.{}", cfg.region, cfg.node_id);
    follow_homes(&cluster.kafka, &topics.homes, &group, homes.clone(), cluster.fetch_wait_ms)
        .await
        .context("loading the home assignments")?;
    let link = Arc::new(OutboundLink::new(&cluster.kafka, topics).context("connecting the outbound producer")?);
    let federation = Arc::new(Federation::new(homes, link, f.max_presence_batch));
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
}

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
    loop {
        tokio::select! {
            biased;
            change = ownership.recv() => match change {
                Some(Ownership::Assigned(partitions)) => {
                    for p in partitions {
                        if let std::collections::hash_map::Entry::Vacant(slot) = owned.entry(p) {
                            let (tx, rx) = mpsc::channel(queue);
                            let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
                            host.start(ShardId(p as u32), rx, Some(progress.clone()));
                            slot.insert(Owned { input: tx, progress, ledger: OffsetLedger::default() });
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
                for (p, o) in owned.iter_mut() {
                    let durable = o.progress.load(std::sync::atomic::Ordering::Acquire);
                    // A failed commit is offered again on the next tick.
                    if let Some(next) = o.ledger.to_commit(durable) {
                        match members.commit(*p, next) {
                            Ok(()) => o.ledger.committed(next),
                            Err(e) => tracing::warn!(shard = *p, error = %e, "offset commit failed; retried"),
                        }
                    }
                }
            }
            next = members.next_shard() => match next {
                Ok((p, offset, env)) => match owned.get_mut(&p) {
                    Some(o) => {
                        if o.input.send(env).await.is_err() {
                            tracing::warn!(shard = p, "shard input closed; envelope dropped");
                        } else {
                            o.ledger.handed(offset);
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
    use super::OffsetLedger;

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
