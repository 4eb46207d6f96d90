//! The bus: how envelopes move between roles.

use async_trait::async_trait;
use iris_envelope::{EdgeEnvelope, EdgeId, ShardEnvelope, ShardId};
use std::collections::HashMap;
use tokio::sync::mpsc;

/// A publish that could not happen now; the envelope comes back.
#[derive(Debug, thiserror::Error)]
pub enum PublishError<T> {
    /// The destination's queue is full.
    #[error("destination queue is full")]
    Full(T),
    /// The destination is gone (unknown, or shutting down).
    #[error("destination is closed")]
    Closed(T),
}

/// A publish that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The destination is unknown or shut down.
    #[error("destination {0} is closed")]
    Closed(String),
}

/// Moves envelopes to shards and edges.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Queues an envelope for a shard if there is room now.
    fn try_publish_shard(&self, shard: ShardId, env: ShardEnvelope) -> Result<(), PublishError<ShardEnvelope>>;
    /// Queues an envelope for a shard, waiting for room.
    async fn publish_shard(&self, shard: ShardId, env: ShardEnvelope) -> Result<(), BusError>;
    /// Queues an envelope for an edge if there is room now.
    fn try_publish_edge(&self, env: EdgeEnvelope) -> Result<(), PublishError<EdgeEnvelope>>;
    /// Queues an envelope for an edge, waiting for room.
    async fn publish_edge(&self, env: EdgeEnvelope) -> Result<(), BusError>;
}

/// The receiving end of one shard partition.
pub type ShardReceiver = mpsc::Receiver<ShardEnvelope>;
/// The receiving end of one edge's queue.
pub type EdgeReceiver = mpsc::Receiver<EdgeEnvelope>;

/// The single-node bus: one bounded channel per shard partition and per edge.
/// At the bound, `try_*` returns `Full` and `publish_*` waits.
pub struct InProcessBus {
    shards: Vec<mpsc::Sender<ShardEnvelope>>,
    edges: HashMap<EdgeId, mpsc::Sender<EdgeEnvelope>>,
}

impl InProcessBus {
    /// A bus with `shards` partitions and the given edges, each queue holding
    /// at most `capacity` envelopes. Returns the receivers to hand to consumers.
    pub fn new(
        shards: u32,
        edges: &[EdgeId],
        capacity: usize,
    ) -> (Self, Vec<ShardReceiver>, HashMap<EdgeId, EdgeReceiver>) {
        let (mut txs, mut rxs) = (Vec::new(), Vec::new());
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel(capacity);
            txs.push(tx);
            rxs.push(rx);
        }
        let (mut etx, mut erx) = (HashMap::new(), HashMap::new());
        for e in edges {
            let (tx, rx) = mpsc::channel(capacity);
            etx.insert(e.clone(), tx);
            erx.insert(e.clone(), rx);
        }
        (Self { shards: txs, edges: etx }, rxs, erx)
    }
}

fn map_try<T>(e: mpsc::error::TrySendError<T>) -> PublishError<T> {
    match e {
        mpsc::error::TrySendError::Full(v) => PublishError::Full(v),
        mpsc::error::TrySendError::Closed(v) => PublishError::Closed(v),
    }
}

#[async_trait]
impl Bus for InProcessBus {
    fn try_publish_shard(&self, shard: ShardId, env: ShardEnvelope) -> Result<(), PublishError<ShardEnvelope>> {
        match self.shards.get(shard.0 as usize) {
            Some(tx) => tx.try_send(env).map_err(map_try),
            None => Err(PublishError::Closed(env)),
        }
    }

    async fn publish_shard(&self, shard: ShardId, env: ShardEnvelope) -> Result<(), BusError> {
        let tx = self.shards.get(shard.0 as usize).ok_or_else(|| BusError::Closed(format!("shard {}", shard.0)))?;
        tx.send(env).await.map_err(|_| BusError::Closed(format!("shard {}", shard.0)))
    }

    fn try_publish_edge(&self, env: EdgeEnvelope) -> Result<(), PublishError<EdgeEnvelope>> {
        match self.edges.get(&env.edge) {
            Some(tx) => tx.try_send(env).map_err(map_try),
            None => Err(PublishError::Closed(env)),
        }
    }

    async fn publish_edge(&self, env: EdgeEnvelope) -> Result<(), BusError> {
        let tx = self.edges.get(&env.edge).ok_or_else(|| BusError::Closed(format!("edge {}", env.edge)))?;
        let edge = env.edge.clone();
        tx.send(env).await.map_err(|_| BusError::Closed(format!("edge {edge}")))
    }
}
