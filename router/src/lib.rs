//! The region router: places envelopes with the consistent-hash ring and
//! moves them over a bus. The bus trait has an in-process implementation
//! (bounded channels, single node); the Kafka one plugs in behind the same
//! trait.

mod bus;
mod ring;

pub use bus::{Bus, BusError, EdgeReceiver, InProcessBus, PublishError, ShardReceiver};
pub use ring::{RING_VERSION, Ring, VNODES_PER_SHARD};

use iris_envelope::{EdgeEnvelope, ShardEnvelope, ShardId, UserKey};
use std::sync::Arc;

/// Routes envelopes: shard envelopes to `ring(owner)`, edge envelopes to
/// their edge. Cheap to clone; shared by sessions and shards.
#[derive(Clone)]
pub struct Router {
    ring: Arc<Ring>,
    bus: Arc<dyn Bus>,
}

impl Router {
    /// A router over a ring and a bus.
    pub fn new(ring: Arc<Ring>, bus: Arc<dyn Bus>) -> Self {
        Self { ring, bus }
    }

    /// The shard that owns a user.
    pub fn shard_of(&self, user: &UserKey) -> ShardId {
        self.ring.shard_of(user)
    }

    /// Publishes to the owner's shard, waiting for room (backpressure).
    pub async fn to_shard(&self, env: ShardEnvelope) -> Result<(), BusError> {
        let shard = self.ring.shard_of(&env.owner);
        self.bus.publish_shard(shard, env).await
    }

    /// Publishes to the owner's shard only if there is room now.
    pub fn try_to_shard(&self, env: ShardEnvelope) -> Result<(), PublishError<ShardEnvelope>> {
        let shard = self.ring.shard_of(&env.owner);
        self.bus.try_publish_shard(shard, env)
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.ring.shards()
    }

    /// Publishes to one shard directly (not by owner) if there is room now.
    pub fn try_to_shard_id(&self, shard: ShardId, env: ShardEnvelope) -> Result<(), PublishError<ShardEnvelope>> {
        self.bus.try_publish_shard(shard, env)
    }

    /// Publishes to an edge, waiting for room (backpressure).
    pub async fn to_edge(&self, env: EdgeEnvelope) -> Result<(), BusError> {
        self.bus.publish_edge(env).await
    }

    /// Publishes to an edge only if there is room now.
    pub fn try_to_edge(&self, env: EdgeEnvelope) -> Result<(), PublishError<EdgeEnvelope>> {
        self.bus.try_publish_edge(env)
    }
}
