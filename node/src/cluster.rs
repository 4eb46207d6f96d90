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

/// Runs the shards this node owns: starts an actor when Kafka assigns its
/// partition, closes its input when the partition is revoked, and feeds
/// each owned partition's envelopes to its actor in order.
async fn core_loop(host: Arc<ShardHost>, members: ShardGroup, mut ownership: mpsc::Receiver<Ownership>, queue: usize) {
    let mut inputs: HashMap<i32, mpsc::Sender<ShardEnvelope>> = HashMap::new();
    loop {
        tokio::select! {
            biased;
            change = ownership.recv() => match change {
                Some(Ownership::Assigned(partitions)) => {
                    for p in partitions {
                        if let std::collections::hash_map::Entry::Vacant(slot) = inputs.entry(p) {
                            let (tx, rx) = mpsc::channel(queue);
                            host.start(ShardId(p as u32), rx);
                            slot.insert(tx);
                            tracing::info!(shard = p, "shard assigned here");
                        }
                    }
                }
                Some(Ownership::Revoked(partitions)) => {
                    for p in partitions {
                        // Dropping the input lets the actor finish and stop.
                        inputs.remove(&p);
                        host.forget(ShardId(p as u32));
                        tracing::info!(shard = p, "shard revoked");
                    }
                }
                None => return,
            },
            next = members.next_shard() => match next {
                Ok((p, _, env)) => match inputs.get(&p) {
                    Some(tx) => {
                        if tx.send(env).await.is_err() {
                            tracing::warn!(shard = p, "shard input closed; envelope dropped");
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
