//! A node in a regional cluster: the Kafka bus instead of the in-process
//! one, shard actors started and stopped as the core consumer group moves
//! partitions, and this node's edge topics read into its edge queues.

use crate::settings::{ClusterSettings, Settings};
use anyhow::Context as _;
use iris_clock::SharedClock;
use iris_core::ShardHost;
use iris_envelope::EdgeId;
use iris_kafka::{
    KafkaBus, KafkaSource, OutboundLink, PartitionReader, RelayConfig, ShardSpread, Topics, ensure_topics_compacting,
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
pub async fn start(
    cfg: &Settings,
    cluster: &ClusterSettings,
    ring: Arc<Ring>,
    store: Arc<dyn Store>,
    edges: &[EdgeId],
    clock: &SharedClock,
    shard_seed: u64,
) -> anyhow::Result<Started> {
    let topics = Topics::for_region(&cfg.region);
    let spread = shard_spread(cfg.shards.shards, cluster, &topics.shard).await?;
    let outbound = cluster.federation.as_ref().map(|f| f.outbound_partitions as usize);
    let (wanted, compacted) = topics.region_plan(spread.partitions() as usize, edges, outbound);
    let refs: Vec<(&str, usize)> = wanted.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    let compacted: Vec<&str> = compacted.iter().map(String::as_str).collect();
    ensure_topics_compacting(&cluster.kafka, &refs, &compacted).await.context("checking the cluster's topics")?;
    let bus = KafkaBus::with_producers(&cluster.kafka, topics.clone(), cluster.linger_ms, cluster.producers)
        .context("connecting the Kafka producer")?
        .with_spread(spread);
    let mut router = Router::new(ring, Arc::new(bus));
    if let Some(f) = &cluster.federation {
        router = federate(cfg, cluster, f, &topics, router, clock).await?;
    }

    let mut edge_rxs = HashMap::new();
    let fetch = iris_kafka::Fetch { wait_ms: cluster.fetch_wait_ms, min_bytes: cluster.fetch_min_bytes };
    for e in edges {
        let (tx, rx) = mpsc::channel(cfg.bus_queue);
        let group = Topics::edge_group(&cfg.region, e);
        let reader = PartitionReader::new(&cluster.kafka, &group, &topics.edge(e), &[0], fetch, true)?;
        tokio::spawn(edge_pump(reader, tx));
        edge_rxs.insert(e.clone(), rx);
    }

    if cluster.log_topics {
        iris_kafka::logs::ensure_log_topics(&cluster.kafka, &cfg.region, cfg.shards.shards)
            .await
            .context("checking the log topics")?;
        if cluster.runs_shards {
            let publisher = iris_kafka::logs::PublisherConfig {
                bootstrap: cluster.kafka.clone(),
                region: cfg.region.clone(),
                node_id: cfg.node_id.clone(),
                interval: cluster.log_publish_interval,
                session_timeout_ms: cluster.session_timeout_ms,
            };
            tokio::spawn(iris_kafka::logs::run_log_publisher(publisher, store.clone()));
        }
    }

    let shards = if cluster.runs_shards {
        let host = Arc::new(ShardHost::new(&cfg.shards, store, router.clone(), clock.clone(), shard_seed));
        let source =
            KafkaSource::join(&cluster.kafka, &cluster.core_group, &topics.shard, fetch, cluster.session_timeout_ms)?
                .with_spread(spread);
        // Which partitions are ours, what is handed, paused and committed:
        // decided in `iris_router::feed`, carried out by `run_feed`.
        tokio::spawn(iris_core::run_feed(host.clone(), source, cfg.bus_queue));
        Some(host)
    } else {
        None
    };
    Ok((router, shards, edge_rxs))
}

/// How the region's shards lie on its shard topic ([`ShardSpread::choose`]):
/// the topic's partition count is read only when none is configured.
async fn shard_spread(shards: u32, cluster: &ClusterSettings, topic: &str) -> anyhow::Result<ShardSpread> {
    let found = match cluster.shard_partitions {
        Some(_) => None,
        None => iris_kafka::partition_count(&cluster.kafka, topic).await.context("reading the shard topic")?,
    };
    ShardSpread::choose(shards, cluster.shard_partitions, found).map_err(|e| anyhow::anyhow!("{topic}: {e}"))
}

/// Joins the federation: loads the home assignments, sends what belongs to
/// other regions through the outbound topic, flushes cross-region presence
/// once per interval, and (on relay nodes) runs the two relays.
async fn federate(
    cfg: &Settings,
    cluster: &ClusterSettings,
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
