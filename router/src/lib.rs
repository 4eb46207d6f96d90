//! The region router: places envelopes with the consistent-hash ring and
//! moves them over a bus. The bus trait has an in-process implementation
//! (bounded channels, single node); the Kafka one plugs in behind the same
//! trait.

mod bus;
pub mod contract;
mod federation;
pub mod feed;
pub mod relay;
mod ring;
pub mod spread;

pub use bus::{
    Bus, BusError, EdgeReceiver, InProcessBus, InProcessSource, PublishError, ShardReceiver, ShardSource, SourceEvent,
};
pub use federation::{Federation, FederationLink, HomeDirectory, MAX_HOPS, PresenceBatch};
pub use ring::{RING_VERSION, Ring, VNODES_PER_SHARD};
pub use spread::ShardSpread;

use iris_envelope::{EdgeEnvelope, EdgeId, ShardEnvelope, ShardId, ShardInput, ShardKey, UserKey};
use std::sync::Arc;

/// Where a shard envelope goes ([`Router::shard_path`]), decided before
/// anything is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardPath {
    /// A shard of this region, on its bus.
    Shard(ShardId),
    /// The owner's home, another region, through the outbound queue.
    Region(Arc<str>),
}

/// Where an edge envelope goes ([`Router::edge_path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgePath {
    /// The edge's topic in this region.
    Here,
    /// The edge's region, another one, through the outbound queue.
    Region(Arc<str>),
}

/// Routes envelopes: shard envelopes to `ring(owner)`, edge envelopes to
/// their edge; in a federation, envelopes for users homed elsewhere and for
/// edges of other regions to this region's outbound queue. Cheap to clone;
/// shared by sessions and shards.
#[derive(Clone)]
pub struct Router {
    ring: Arc<Ring>,
    bus: Arc<dyn Bus>,
    federation: Option<Arc<Federation>>,
}

impl Router {
    /// A router over a ring and a bus.
    pub fn new(ring: Arc<Ring>, bus: Arc<dyn Bus>) -> Self {
        Self { ring, bus, federation: None }
    }

    /// The same router, sending what belongs to other regions through `federation`.
    pub fn with_federation(mut self, federation: Arc<Federation>) -> Self {
        self.federation = Some(federation);
        self
    }

    /// The federation, when this region is part of one.
    pub fn federation(&self) -> Option<&Arc<Federation>> {
        self.federation.as_ref()
    }

    /// The regional bus, bypassing federation (the relay delivers here).
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Renews an edge's lease on every shard of this region and, in a
    /// federation, of every other region. Returns how many renewals were
    /// dropped for full queues (the next beat covers them).
    pub fn edge_alive(&self, edge: &EdgeId) -> u32 {
        let mut dropped = self.renew_lease_here(edge);
        if let Some(f) = &self.federation {
            dropped += f.edge_alive(edge);
        }
        dropped
    }

    /// Renews an edge's lease on every shard of this region only (the relay
    /// does this for edges of other regions). Returns how many renewals were
    /// dropped for full queues.
    pub fn renew_lease_here(&self, edge: &EdgeId) -> u32 {
        let mut dropped = 0;
        for s in 0..self.shards() {
            let env = ShardEnvelope {
                owner: ShardKey::Shard,
                body: ShardInput::EdgeAlive { edge: edge.clone() },
                trace: None,
            };
            if self.try_to_shard_id(ShardId(s), env).is_err() {
                dropped += 1;
            }
        }
        dropped
    }

    /// Tells every shard that `edge` has started, so that each ends the
    /// sessions it still holds from the edge's previous process
    /// ([`ShardInput::EdgeStarted`]); waits until every shard's envelope is
    /// on this region's bus and, in a federation, until the word for every
    /// other region is in the outbound queue. An edge calls it before it
    /// takes a session: its sessions' envelopes then come after it on every
    /// partition here. In another region the word may arrive after one of
    /// the new process's sessions did (the outbound queue keeps order per
    /// partition, not across them): that session ends too, and at once the
    /// shard asks the edge to register its sessions again (the resync every
    /// `EdgeStarted` makes), which brings it back.
    pub async fn edge_started(&self, edge: &EdgeId) -> Result<(), BusError> {
        self.announce_start_here(edge).await?;
        if let Some(f) = &self.federation {
            f.edge_started(edge).await?;
        }
        Ok(())
    }

    /// [`Router::edge_started`] in this region only (the inbound relay does
    /// this for edges of other regions).
    pub async fn announce_start_here(&self, edge: &EdgeId) -> Result<(), BusError> {
        let publishes = (0..self.shards()).map(|s| {
            let env = ShardEnvelope {
                owner: ShardKey::Shard,
                body: ShardInput::EdgeStarted { edge: edge.clone() },
                trace: None,
            };
            self.bus.publish_shard(ShardId(s), env)
        });
        futures::future::try_join_all(publishes).await?;
        Ok(())
    }

    /// The shard that owns a user.
    pub fn shard_of(&self, user: &UserKey) -> ShardId {
        self.ring.shard_of(user)
    }

    /// The shard that owns a shard envelope's key.
    pub fn shard_of_key(&self, key: &ShardKey) -> ShardId {
        self.ring.shard_of_key(key)
    }

    /// Whether `shard` of `region` owns `user`: the user is homed there and
    /// the ring places them on that shard. (Regions of a federation share
    /// the ring's shard count; where they did not, a travelling user's
    /// session would merely register again more often than needed.)
    pub fn owns(&self, user: &UserKey, region: &str, shard: ShardId) -> bool {
        let home_here = match &self.federation {
            Some(f) => &*f.home_of(user) == region,
            None => true,
        };
        home_here && self.ring.shard_of(user) == shard
    }

    /// Publishes to the owner's shard, waiting for room (backpressure).
    pub async fn to_shard(&self, env: ShardEnvelope) -> Result<(), BusError> {
        match (self.shard_path(&env), &self.federation) {
            (ShardPath::Shard(shard), _) => self.bus.publish_shard(shard, env).await,
            (ShardPath::Region(home), Some(f)) => f.send_shard(home, env).await,
            (ShardPath::Region(home), None) => Err(BusError::Closed(format!("region {home}"))),
        }
    }

    /// Publishes to the owner's shard only if there is room now.
    pub fn try_to_shard(&self, env: ShardEnvelope) -> Result<(), PublishError<ShardEnvelope>> {
        match (self.shard_path(&env), &self.federation) {
            (ShardPath::Shard(shard), _) => self.bus.try_publish_shard(shard, env),
            (ShardPath::Region(home), Some(f)) => f.try_send_shard(home, env),
            (ShardPath::Region(_), None) => Err(PublishError::Closed(env)),
        }
    }

    /// Where a shard envelope goes: to its owner's home region when that
    /// is another one, else to the shard the ring places the owner on.
    pub fn shard_path(&self, env: &ShardEnvelope) -> ShardPath {
        match self.federation.as_ref().and_then(|f| f.foreign_home(env)) {
            Some(home) => ShardPath::Region(home),
            None => ShardPath::Shard(self.ring.shard_of_key(&env.owner)),
        }
    }

    /// Where an edge envelope goes: to the edge's region when its id names
    /// another one, else to the edge's topic here.
    pub fn edge_path(&self, edge: &EdgeId) -> EdgePath {
        match self.federation.as_ref().and_then(|f| f.foreign_edge(edge)) {
            Some(region) => EdgePath::Region(region),
            None => EdgePath::Here,
        }
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
        match (self.edge_path(&env.edge), &self.federation) {
            (EdgePath::Region(region), Some(f)) => f.send_edge(region, env).await,
            _ => self.bus.publish_edge(env).await,
        }
    }

    /// Publishes to an edge only if there is room now.
    pub fn try_to_edge(&self, env: EdgeEnvelope) -> Result<(), PublishError<EdgeEnvelope>> {
        match (self.edge_path(&env.edge), &self.federation) {
            (EdgePath::Region(region), Some(f)) => f.try_send_edge(region, env),
            _ => self.bus.try_publish_edge(env),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iris_envelope::{GlobalEnvelope, HomeAssignment};

    /// A link that takes everything and keeps nothing.
    struct Nowhere;

    #[async_trait::async_trait]
    impl FederationLink for Nowhere {
        fn try_send(&self, _: GlobalEnvelope) -> Result<(), PublishError<GlobalEnvelope>> {
            Ok(())
        }
        async fn send(&self, _: GlobalEnvelope) -> Result<(), BusError> {
            Ok(())
        }
        async fn record_home(&self, _: &HomeAssignment) -> Result<(), BusError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_edge_that_started_tells_every_shard() {
        let (bus, receivers, _) = InProcessBus::new(4, &[], 4);
        let router = Router::new(Arc::new(Ring::new(4)), Arc::new(bus));
        let edge = EdgeId("e1".into());
        router.edge_started(&edge).await.unwrap();
        for mut rx in receivers {
            let env = rx.try_recv().expect("every shard hears it");
            assert!(matches!(env.body, ShardInput::EdgeStarted { edge: ref e } if *e == edge), "{env:?}");
        }
    }

    #[test]
    fn envelopes_go_to_the_ring_s_shard_or_edge_here_and_to_the_home_or_edge_s_region_elsewhere() {
        let ring = Arc::new(Ring::new(8));
        let (bus, _, _) = InProcessBus::new(8, &[], 4);
        let router = Router::new(ring.clone(), Arc::new(bus));
        let (bob, carol) = (UserKey::new("acme", "bob"), UserKey::new("acme", "carol"));
        let env = |owner: &UserKey| ShardEnvelope {
            owner: owner.clone().into(),
            body: ShardInput::EdgeAlive { edge: EdgeId("e".into()) },
            trace: None,
        };
        assert_eq!(router.shard_path(&env(&bob)), ShardPath::Shard(ring.shard_of(&bob)), "no federation: the ring");
        assert_eq!(router.edge_path(&EdgeId::qualified("e1", "us")), EdgePath::Here, "no federation: here");
        let homes = Arc::new(HomeDirectory::new("eu", &["eu".to_owned(), "us".to_owned()]));
        homes.apply(&HomeAssignment { user: bob.clone(), region: Some("us".into()), set_at: 1 });
        homes.apply(&HomeAssignment { user: carol.clone(), region: Some("eu".into()), set_at: 1 });
        let fed = Arc::new(Federation::new(homes, Arc::new(Nowhere), 16, iris_clock::system()));
        let router = router.with_federation(fed);
        assert_eq!(router.shard_path(&env(&bob)), ShardPath::Region("us".into()), "bob's home is us");
        assert_eq!(router.shard_path(&env(&carol)), ShardPath::Shard(ring.shard_of(&carol)));
        assert_eq!(router.edge_path(&EdgeId::qualified("e1", "us")), EdgePath::Region("us".into()));
        assert_eq!(router.edge_path(&EdgeId::qualified("e1", "eu")), EdgePath::Here);
        assert_eq!(router.edge_path(&EdgeId("e1".into())), EdgePath::Here, "an unqualified edge is local");
    }

    #[test]
    fn a_shard_owns_a_user_the_ring_places_on_it_and_whose_home_is_its_region() {
        let ring = Arc::new(Ring::new(8));
        let (bus, _, _) = InProcessBus::new(8, &[], 4);
        let router = Router::new(ring.clone(), Arc::new(bus));
        let bob = UserKey::new("acme", "bob");
        let here = ring.shard_of(&bob);
        let elsewhere = ShardId((here.0 + 1) % 8);
        assert!(router.owns(&bob, "any", here), "a single region: the ring decides");
        assert!(!router.owns(&bob, "any", elsewhere));
        let homes = Arc::new(HomeDirectory::new("eu", &["eu".to_owned(), "us".to_owned()]));
        homes.apply(&HomeAssignment { user: bob.clone(), region: Some("us".into()), set_at: 1 });
        let fed = Arc::new(Federation::new(homes, Arc::new(Nowhere), 16, iris_clock::system()));
        let router = router.with_federation(fed);
        assert!(router.owns(&bob, "us", here), "bob's home is us");
        assert!(!router.owns(&bob, "eu", here), "not eu's shard, whatever the ring says");
    }
}
