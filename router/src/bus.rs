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

/// What the consuming side of a bus reports to the node that owns shards.
#[derive(Debug)]
pub enum SourceEvent {
    /// These shard partitions are now this node's.
    Assigned(Vec<ShardId>),
    /// These are no longer this node's.
    Revoked(Vec<ShardId>),
    /// An envelope of an owned partition, at its offset.
    Record {
        /// The partition.
        shard: ShardId,
        /// Its offset (increasing within the partition, not necessarily by one).
        offset: i64,
        /// The envelope.
        env: ShardEnvelope,
    },
    /// A record that could not be decoded (a poisoned record): skipped.
    Unreadable {
        /// The partition.
        shard: ShardId,
        /// Its offset.
        offset: i64,
        /// Why it could not be read.
        error: String,
    },
    /// Reading failed for now (the broker is away); try again shortly.
    Failed(String),
    /// The source is gone for good (shutting down).
    Closed,
}

/// The consuming side of a bus for the shard partitions: which partitions
/// this node owns, their envelopes in offset order, pausing one partition
/// while its shard is full, and committing how far each is done. The
/// in-process bus ([`InProcessSource`]) and Kafka (`iris_kafka::KafkaSource`)
/// both implement it and both pass [`crate::contract`]; the node feeds it
/// through [`crate::feed::Feed`].
#[async_trait]
pub trait ShardSource: Send + 'static {
    /// The next event. Cancel-safe: nothing is lost if the future is dropped.
    async fn next(&mut self) -> SourceEvent;
    /// Stops delivering records of `shard` until [`ShardSource::resume`]:
    /// after resuming, delivery goes on after the last record returned.
    /// Returns the shards whose records stop coming: `shard`'s, and the
    /// others on its partition when several share one (ADR 0031; their
    /// records wait on the bus too). It may name shards already stopped
    /// (marking them again is harmless), and names none when a shared
    /// partition was paused already.
    fn pause(&mut self, shard: ShardId) -> Result<Vec<ShardId>, BusError>;
    /// Delivers `shard`'s records again (harmless when not paused).
    /// Returns the shards whose records come again with this call: none
    /// while another shard on its partition still holds it paused.
    fn resume(&mut self, shard: ShardId) -> Result<Vec<ShardId>, BusError>;
    /// Records that every record of each partition before its offset is done.
    fn commit(&mut self, offsets: &[(ShardId, i64)]) -> Result<(), BusError>;
}

/// The in-process bus's shard receivers as a [`ShardSource`]: every
/// partition is this node's from the start, offsets count from zero, and
/// commits are only remembered (an in-process queue does not outlive its
/// process). Used by the bus contract and the simulator; a single node
/// hands its receivers straight to its shards instead (nothing to commit,
/// nothing to pause: the queue's bound makes publishers wait).
pub struct InProcessSource {
    receivers: Vec<ShardReceiver>,
    next_offset: Vec<i64>,
    paused: Vec<bool>,
    committed: std::sync::Arc<std::sync::Mutex<HashMap<ShardId, i64>>>,
    assigned: bool,
    turn: usize,
}

impl InProcessSource {
    /// A source over the receivers [`InProcessBus::new`] returned.
    pub fn new(receivers: Vec<ShardReceiver>) -> Self {
        let n = receivers.len();
        Self {
            receivers,
            next_offset: vec![0; n],
            paused: vec![false; n],
            committed: Default::default(),
            assigned: false,
            turn: 0,
        }
    }

    /// The offsets committed so far, readable after the source moved away.
    pub fn commits(&self) -> std::sync::Arc<std::sync::Mutex<HashMap<ShardId, i64>>> {
        self.committed.clone()
    }
}

#[async_trait]
impl ShardSource for InProcessSource {
    async fn next(&mut self) -> SourceEvent {
        if !self.assigned {
            self.assigned = true;
            return SourceEvent::Assigned((0..self.receivers.len() as u32).map(ShardId).collect());
        }
        std::future::poll_fn(|cx| {
            let n = self.receivers.len();
            let mut closed = 0;
            for i in 0..n {
                // Round robin, so that a busy partition cannot starve the others.
                let k = (self.turn + i) % n;
                if self.paused[k] {
                    continue;
                }
                match self.receivers[k].poll_recv(cx) {
                    std::task::Poll::Ready(Some(env)) => {
                        self.turn = k + 1;
                        let offset = self.next_offset[k];
                        self.next_offset[k] += 1;
                        return std::task::Poll::Ready(SourceEvent::Record { shard: ShardId(k as u32), offset, env });
                    }
                    std::task::Poll::Ready(None) => closed += 1,
                    std::task::Poll::Pending => {}
                }
            }
            if n > 0 && closed == n { std::task::Poll::Ready(SourceEvent::Closed) } else { std::task::Poll::Pending }
        })
        .await
    }

    fn pause(&mut self, shard: ShardId) -> Result<Vec<ShardId>, BusError> {
        let p = self.paused.get_mut(shard.0 as usize).ok_or_else(|| BusError::Closed(format!("shard {}", shard.0)))?;
        *p = true;
        Ok(vec![shard])
    }

    fn resume(&mut self, shard: ShardId) -> Result<Vec<ShardId>, BusError> {
        let p = self.paused.get_mut(shard.0 as usize).ok_or_else(|| BusError::Closed(format!("shard {}", shard.0)))?;
        *p = false;
        Ok(vec![shard])
    }

    fn commit(&mut self, offsets: &[(ShardId, i64)]) -> Result<(), BusError> {
        let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        for (s, next) in offsets {
            c.insert(*s, *next);
        }
        Ok(())
    }
}
