//! A node in a regional cluster: the Kafka bus instead of the in-process
//! one, shard actors started and stopped as the core consumer group moves
//! partitions, and this node's edge topics read into its edge queues.

use anyhow::Context as _;
use iris_config::{Cluster, Config, Role};
use iris_core::{ShardHost, ShardsConfig};
use iris_envelope::{EdgeId, ShardEnvelope, ShardId};
use iris_kafka::{KafkaBus, Ownership, PartitionReader, ShardGroup, Topics, ensure_topics};
use iris_router::{EdgeReceiver, Ring, Router};
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
    let refs: Vec<(&str, usize)> = wanted.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    ensure_topics(&cluster.kafka, &refs).await.context("checking the cluster's topics")?;
    let bus = KafkaBus::new(&cluster.kafka, topics.clone(), 0).context("connecting the Kafka producer")?;
    let router = Router::new(ring, Arc::new(bus));

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

/// One owned partition: its actor's input, the offsets handed to it in
/// order, and how many of those the actor reports durable.
struct Owned {
    input: mpsc::Sender<ShardEnvelope>,
    offsets: std::collections::VecDeque<i64>,
    handed: u64,
    progress: Arc<std::sync::atomic::AtomicU64>,
    /// The newest offset whose work is durable, and the newest committed.
    durable: Option<i64>,
    committed: Option<i64>,
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
                            slot.insert(Owned { input: tx, offsets: Default::default(), handed: 0, progress, durable: None, committed: None });
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
                    // `handed - offsets.len()` envelopes are already accounted for.
                    while (o.handed - o.offsets.len() as u64) < durable {
                        match o.offsets.pop_front() {
                            Some(off) => o.durable = Some(off),
                            None => break,
                        }
                    }
                    // A failed commit is retried on the next tick.
                    if let Some(off) = o.durable {
                        if o.committed != Some(off) {
                            match members.commit(*p, off + 1) {
                                Ok(()) => o.committed = Some(off),
                                Err(e) => tracing::warn!(shard = *p, error = %e, "offset commit failed; retried"),
                            }
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
                            o.handed += 1;
                            o.offsets.push_back(offset);
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
