//! Federation: which region a user is homed in, and the hook that sends
//! envelopes for other regions through this region's durable outbound queue
//! instead of the regional bus. Nothing here calls another region: the
//! queue is local (a regional Kafka topic), and the relay moves it on.
//!
//! See docs/adr/0012-federation.md. The times it stamps (`queued_at`,
//! `set_at`) come from the clock it is given (ADR 0019).

use crate::bus::{BusError, PublishError};
use async_trait::async_trait;
use dashmap::DashMap;
use hashring::HashRing;
use iris_clock::SharedClock;
use iris_envelope::{
    EdgeEnvelope, EdgeId, EdgeInput, GlobalBody, GlobalEnvelope, HomeAssignment, Millis, Notice, SessionId,
    ShardEnvelope, ShardKey, UserKey,
};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// An envelope crosses the global layer at most this many times: once to
/// its home, once more if the home changed while it travelled.
pub const MAX_HOPS: u8 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
struct RegionNode {
    name: Arc<str>,
    replica: u32,
}

impl Hash for RegionNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(b"iris-region");
        state.write(self.name.as_bytes());
        state.write(&self.replica.to_le_bytes());
    }
}

struct KeyBytes<'a>(&'a [u8]);

impl Hash for KeyBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// Virtual nodes per region on the home ring.
const VNODES_PER_REGION: u32 = 64;

/// Where users are homed: an explicit assignment wins, else a consistent
/// hash over the configured regions (the same list in every region, so
/// every region computes the same answer without asking).
pub struct HomeDirectory {
    local: Arc<str>,
    regions: Vec<Arc<str>>,
    ring: HashRing<RegionNode>,
    explicit: DashMap<UserKey, (Option<Arc<str>>, Millis)>,
}

impl HomeDirectory {
    /// A directory for `local` among `regions` (which include it).
    ///
    /// # Panics
    /// When `regions` is empty (configuration validation rejects it first).
    pub fn new(local: &str, regions: &[String]) -> Self {
        assert!(!regions.is_empty(), "a federation needs regions");
        let mut ring = HashRing::new();
        let regions: Vec<Arc<str>> = regions.iter().map(|r| Arc::from(r.as_str())).collect();
        for r in &regions {
            for replica in 0..VNODES_PER_REGION {
                ring.add(RegionNode { name: r.clone(), replica });
            }
        }
        Self { local: local.into(), regions, ring, explicit: DashMap::new() }
    }

    /// This region.
    pub fn local(&self) -> &Arc<str> {
        &self.local
    }

    /// Every region of the federation.
    pub fn regions(&self) -> &[Arc<str>] {
        &self.regions
    }

    /// Whether `region` is one of the federation's.
    pub fn knows(&self, region: &str) -> bool {
        self.regions.iter().any(|r| &**r == region)
    }

    /// The home region of a shard envelope's key: a user's home; event
    /// streams and a shard's own inputs never leave the region.
    pub fn home_of_key(&self, key: &ShardKey) -> (Arc<str>, bool) {
        match key {
            ShardKey::User(u) => self.home_of(u),
            ShardKey::Stream { .. } | ShardKey::Shard => (self.local.clone(), false),
        }
    }

    /// The home region of a user, and whether it was assigned explicitly.
    pub fn home_of(&self, user: &UserKey) -> (Arc<str>, bool) {
        if let Some(e) = self.explicit.get(user) {
            if let Some(r) = &e.0 {
                return (r.clone(), true);
            }
        }
        let node = self.ring.get(&KeyBytes(&user.shard_key())).expect("ring is never empty");
        (node.name.clone(), false)
    }

    /// Whether a user is homed in this region.
    pub fn is_local(&self, user: &UserKey) -> bool {
        self.home_of(user).0 == self.local
    }

    /// Applies an assignment if it is newer than the one held; returns
    /// whether it changed anything.
    pub fn apply(&self, a: &HomeAssignment) -> bool {
        let mut entry = self.explicit.entry(a.user.clone()).or_insert((None, Millis::MIN));
        let (region, at) = &*entry;
        let newer = a.set_at > *at || (a.set_at == *at && a.region.as_deref() > region.as_deref());
        if newer {
            *entry = (a.region.clone(), a.set_at);
        }
        newer
    }
}

/// Where envelopes for other regions go: this region's durable outbound
/// queue, and its copy of the home assignments.
#[async_trait]
pub trait FederationLink: Send + Sync + 'static {
    /// Queues an envelope for another region if there is room now.
    fn try_send(&self, env: GlobalEnvelope) -> Result<(), PublishError<GlobalEnvelope>>;
    /// Queues an envelope for another region; resolves once it is durable.
    async fn send(&self, env: GlobalEnvelope) -> Result<(), BusError>;
    /// Records an assignment in this region's copy; resolves once durable.
    async fn record_home(&self, a: &HomeAssignment) -> Result<(), BusError>;
}

/// Presence updates for edges in other regions, held back so that each
/// crosses at most once per interval: a newer update for the same user and
/// the same sessions replaces the one waiting. Pure; the owner flushes.
pub struct PresenceBatch {
    /// Each held update with the arrival number of the first update of its
    /// key, so that a flush keeps the order in which keys first changed.
    waiting: HashMap<(EdgeId, String, Vec<SessionId>), (u64, EdgeEnvelope)>,
    arrivals: u64,
    max: usize,
}

impl PresenceBatch {
    /// A batch holding at most `max` distinct updates.
    pub fn new(max: usize) -> Self {
        Self { waiting: HashMap::new(), arrivals: 0, max }
    }

    /// Takes a presence update. At the bound the update is handed back, to
    /// be sent at once rather than held.
    pub fn offer(&mut self, env: EdgeEnvelope) -> Option<EdgeEnvelope> {
        let EdgeInput::Notice {
            to, notice: Notice::Presence { user, .. } | Notice::MarkedPresence { user, .. }, ..
        } = &env.body
        else {
            return Some(env);
        };
        let key = (env.edge.clone(), user.clone(), to.as_slice().to_vec());
        if self.waiting.len() >= self.max && !self.waiting.contains_key(&key) {
            return Some(env);
        }
        self.arrivals += 1;
        let arrival = self.arrivals;
        self.waiting.entry(key).and_modify(|held| held.1 = env.clone()).or_insert((arrival, env));
        None
    }

    /// Everything waiting, in the order the keys first arrived, to send now.
    pub fn drain(&mut self) -> Vec<EdgeEnvelope> {
        let mut held: Vec<(u64, EdgeEnvelope)> = self.waiting.drain().map(|(_, h)| h).collect();
        held.sort_unstable_by_key(|h| h.0);
        held.into_iter().map(|h| h.1).collect()
    }

    /// How many updates wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// Whether an edge envelope is a presence update (batched across regions).
fn is_presence(env: &EdgeEnvelope) -> bool {
    matches!(&env.body, EdgeInput::Notice { notice: Notice::Presence { .. } | Notice::MarkedPresence { .. }, .. })
}

/// This node's view of the federation: the home directory and the link.
pub struct Federation {
    homes: Arc<HomeDirectory>,
    link: Arc<dyn FederationLink>,
    presence: Mutex<PresenceBatch>,
    clock: SharedClock,
}

impl Federation {
    /// A federation view; `max_presence` bounds the held-back updates;
    /// envelopes and assignments are stamped by `clock`.
    pub fn new(
        homes: Arc<HomeDirectory>,
        link: Arc<dyn FederationLink>,
        max_presence: usize,
        clock: SharedClock,
    ) -> Self {
        Self { homes, link, presence: Mutex::new(PresenceBatch::new(max_presence)), clock }
    }

    /// The home directory.
    pub fn homes(&self) -> &Arc<HomeDirectory> {
        &self.homes
    }

    /// The clock envelopes are stamped by (the relay measures their
    /// transit by it too).
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn now_ms(&self) -> Millis {
        self.clock.now_ms()
    }

    fn wrap(&self, dest: Arc<str>, body: GlobalBody) -> GlobalEnvelope {
        GlobalEnvelope { origin: self.homes.local.clone(), dest, hops: 0, relay: None, queued_at: self.now_ms(), body }
    }

    /// The region a shard envelope must go to, when it is not this one.
    pub(crate) fn home_of(&self, user: &UserKey) -> Arc<str> {
        self.homes.home_of(user).0
    }

    pub(crate) fn foreign_home(&self, env: &ShardEnvelope) -> Option<Arc<str>> {
        let (home, _) = self.homes.home_of_key(&env.owner);
        (home != self.homes.local).then_some(home)
    }

    /// The region of an edge, when it is not this one.
    pub(crate) fn foreign_edge(&self, edge: &EdgeId) -> Option<Arc<str>> {
        match edge.region() {
            Some(r) if r != &*self.homes.local => Some(Arc::from(r)),
            _ => None,
        }
    }

    pub(crate) async fn send_shard(&self, dest: Arc<str>, env: ShardEnvelope) -> Result<(), BusError> {
        metrics::counter!("iris_federation_queued_total", "kind" => "shard").increment(1);
        self.link.send(self.wrap(dest, GlobalBody::Shard(env))).await
    }

    pub(crate) fn try_send_shard(&self, dest: Arc<str>, env: ShardEnvelope) -> Result<(), PublishError<ShardEnvelope>> {
        metrics::counter!("iris_federation_queued_total", "kind" => "shard").increment(1);
        self.link.try_send(self.wrap(dest, GlobalBody::Shard(env))).map_err(|e| match e {
            PublishError::Full(g) => PublishError::Full(unwrap_shard(g)),
            PublishError::Closed(g) => PublishError::Closed(unwrap_shard(g)),
        })
    }

    pub(crate) async fn send_edge(&self, dest: Arc<str>, env: EdgeEnvelope) -> Result<(), BusError> {
        let Some(env) = self.hold_presence(env) else { return Ok(()) };
        metrics::counter!("iris_federation_queued_total", "kind" => "edge").increment(1);
        self.link.send(self.wrap(dest, GlobalBody::Edge(env))).await
    }

    pub(crate) fn try_send_edge(&self, dest: Arc<str>, env: EdgeEnvelope) -> Result<(), PublishError<EdgeEnvelope>> {
        let Some(env) = self.hold_presence(env) else { return Ok(()) };
        metrics::counter!("iris_federation_queued_total", "kind" => "edge").increment(1);
        self.link.try_send(self.wrap(dest, GlobalBody::Edge(env))).map_err(|e| match e {
            PublishError::Full(g) => PublishError::Full(unwrap_edge(g)),
            PublishError::Closed(g) => PublishError::Closed(unwrap_edge(g)),
        })
    }

    /// Holds a presence update for the next flush; anything else (or an
    /// update that finds the batch full) comes back to be sent now.
    fn hold_presence(&self, env: EdgeEnvelope) -> Option<EdgeEnvelope> {
        if !is_presence(&env) {
            return Some(env);
        }
        self.presence.lock().expect("presence batch lock").offer(env)
    }

    /// Sends the held presence updates; called once per interval.
    pub fn flush_presence(&self) {
        let due = self.presence.lock().expect("presence batch lock").drain();
        for env in due {
            let Some(dest) = self.foreign_edge(&env.edge) else { continue };
            metrics::counter!("iris_federation_queued_total", "kind" => "presence").increment(1);
            if self.link.try_send(self.wrap(dest, GlobalBody::Edge(env))).is_err() {
                // Presence is a view, not a message: the next change (or the
                // viewer's next subscribe) carries the state again.
                metrics::counter!("iris_ephemeral_dropped_total").increment(1);
            }
        }
    }

    /// Renews an edge's lease in every other region (its sessions may be
    /// travellers homed there). Returns how many could not be queued.
    pub fn edge_alive(&self, edge: &EdgeId) -> u32 {
        let mut dropped = 0;
        for r in self.homes.regions.iter().filter(|r| **r != self.homes.local) {
            let env = self.wrap(r.clone(), GlobalBody::EdgeAlive { edge: edge.clone() });
            if self.link.try_send(env).is_err() {
                dropped += 1;
            }
        }
        dropped
    }

    /// Tells every other region that `edge` started (its shards hold the
    /// sessions of travellers on it, which its previous process had);
    /// resolves once the words are in the outbound queue.
    pub async fn edge_started(&self, edge: &EdgeId) -> Result<(), BusError> {
        for r in self.homes.regions.iter().filter(|r| **r != self.homes.local) {
            metrics::counter!("iris_federation_queued_total", "kind" => "edge_started").increment(1);
            self.link.send(self.wrap(r.clone(), GlobalBody::EdgeStarted { edge: edge.clone() })).await?;
        }
        Ok(())
    }

    /// Sets (or with `None` clears) a user's explicit home: recorded in this
    /// region at once and queued durably for every other region.
    pub async fn set_home(&self, user: UserKey, region: Option<Arc<str>>) -> Result<HomeAssignment, BusError> {
        let a = HomeAssignment { user, region, set_at: self.now_ms() };
        // Other regions first: the assignment is keyed by the user, so it
        // travels ahead of every envelope for the user that this region
        // routes by it afterwards. (Recorded here first, a node of this
        // region could send the user's envelopes to the new home before the
        // new home knows it is one, and they would bounce.)
        for r in self.homes.regions.iter().filter(|r| **r != self.homes.local) {
            self.link.send(self.wrap(r.clone(), GlobalBody::Home(a.clone()))).await?;
        }
        self.link.record_home(&a).await?;
        self.homes.apply(&a);
        Ok(a)
    }

    /// Sends a relayed envelope on once more (its home changed while it
    /// travelled), unless it already crossed too often.
    pub async fn forward(&self, mut env: GlobalEnvelope, dest: Arc<str>) -> Result<bool, BusError> {
        if env.hops >= MAX_HOPS {
            return Ok(false);
        }
        env.dest = dest;
        env.relay = None;
        self.link.send(env).await.map(|()| true)
    }
}

fn unwrap_shard(g: GlobalEnvelope) -> ShardEnvelope {
    match g.body {
        GlobalBody::Shard(e) => e,
        _ => unreachable!("wrapped a shard envelope"),
    }
}

fn unwrap_edge(g: GlobalEnvelope) -> EdgeEnvelope {
    match g.body {
        GlobalBody::Edge(e) => e,
        _ => unreachable!("wrapped an edge envelope"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iris_envelope::Recipients;
    use iris_types::PresenceStatus;

    fn regions() -> Vec<String> {
        vec!["eu".into(), "us".into(), "ap".into()]
    }

    #[test]
    fn hashed_homes_agree_everywhere_and_spread() {
        let eu = HomeDirectory::new("eu", &regions());
        let mut reordered = regions();
        reordered.reverse();
        let us = HomeDirectory::new("us", &reordered);
        let mut counts: HashMap<Arc<str>, u32> = HashMap::new();
        for i in 0..3_000 {
            let u = UserKey::new("acme", format!("user-{i}"));
            let (a, explicit) = eu.home_of(&u);
            assert!(!explicit);
            assert_eq!(a, us.home_of(&u).0, "every region computes the same home");
            *counts.entry(a).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|c| (600..1_400).contains(c)), "uneven: {counts:?}");
    }

    #[test]
    fn explicit_homes_win_and_the_newest_assignment_stays() {
        let d = HomeDirectory::new("eu", &regions());
        let u = UserKey::new("acme", "bob");
        let hashed = d.home_of(&u).0;
        let other: Arc<str> = if &*hashed == "ap" { "us".into() } else { "ap".into() };
        assert!(d.apply(&HomeAssignment { user: u.clone(), region: Some(other.clone()), set_at: 10 }));
        assert_eq!(d.home_of(&u), (other.clone(), true));
        // An older assignment arriving late changes nothing.
        assert!(!d.apply(&HomeAssignment { user: u.clone(), region: Some("eu".into()), set_at: 5 }));
        assert_eq!(d.home_of(&u).0, other);
        // Clearing falls back to the hash.
        assert!(d.apply(&HomeAssignment { user: u.clone(), region: None, set_at: 11 }));
        assert_eq!(d.home_of(&u), (hashed, false));
        // Event streams and a shard's own inputs never leave the region.
        let stream = iris_envelope::ShardKey::stream(&"acme".into(), "s");
        assert_eq!(d.home_of_key(&stream).0, d.local().clone());
        assert_eq!(d.home_of_key(&iris_envelope::ShardKey::Shard).0, d.local().clone());
        assert_eq!(d.home_of_key(&u.clone().into()), d.home_of(&u));
    }

    fn presence(edge: &str, user: &str, status: PresenceStatus) -> EdgeEnvelope {
        EdgeEnvelope {
            edge: EdgeId(edge.into()),
            body: EdgeInput::Notice {
                to: Recipients::Sessions(vec![SessionId(1), SessionId(2)]),
                notice: Notice::Presence { user: user.into(), status, last_seen: None },
                droppable: false,
            },
            traces: Vec::new(),
        }
    }

    #[test]
    fn presence_batch_keeps_the_newest_per_user_and_hands_back_at_the_bound() {
        let mut b = PresenceBatch::new(2);
        assert!(b.offer(presence("e@us", "bob", PresenceStatus::Online)).is_none());
        assert!(b.offer(presence("e@us", "bob", PresenceStatus::Away)).is_none());
        assert!(b.offer(presence("e@us", "carol", PresenceStatus::Online)).is_none());
        assert_eq!(b.len(), 2, "one per user");
        // Full: a third user is handed back, an update of a held one is not.
        assert!(b.offer(presence("e@us", "dave", PresenceStatus::Online)).is_some());
        assert!(b.offer(presence("e@us", "bob", PresenceStatus::Offline)).is_none());
        let mut out = b.drain();
        out.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(out.len(), 2);
        assert!(out.contains(&presence("e@us", "bob", PresenceStatus::Offline)), "the newest of bob's");
        assert!(b.is_empty());
    }

    /// Keeps what it is sent.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<GlobalEnvelope>>, Mutex<Vec<HomeAssignment>>);

    #[async_trait]
    impl FederationLink for Recorder {
        fn try_send(&self, env: GlobalEnvelope) -> Result<(), PublishError<GlobalEnvelope>> {
            self.0.lock().unwrap().push(env);
            Ok(())
        }
        async fn send(&self, env: GlobalEnvelope) -> Result<(), BusError> {
            self.0.lock().unwrap().push(env);
            Ok(())
        }
        async fn record_home(&self, a: &HomeAssignment) -> Result<(), BusError> {
            self.1.lock().unwrap().push(a.clone());
            Ok(())
        }
    }

    /// Writes down, in order, what it was asked to do, and refuses
    /// `try_send` when told to.
    struct Ordered {
        log: Mutex<Vec<String>>,
        homes: Arc<HomeDirectory>,
        refuse: bool,
    }

    #[async_trait]
    impl FederationLink for Ordered {
        fn try_send(&self, env: GlobalEnvelope) -> Result<(), PublishError<GlobalEnvelope>> {
            if self.refuse {
                return Err(PublishError::Full(env));
            }
            self.log.lock().unwrap().push(format!("try_send {} {}", env.dest, env.body.kind()));
            Ok(())
        }
        async fn send(&self, env: GlobalEnvelope) -> Result<(), BusError> {
            self.log.lock().unwrap().push(format!("send {} {} hops {}", env.dest, env.body.kind(), env.hops));
            Ok(())
        }
        async fn record_home(&self, a: &HomeAssignment) -> Result<(), BusError> {
            let applied = self.homes.home_of(&a.user).1;
            self.log.lock().unwrap().push(format!("record (applied here already: {applied})"));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_home_change_reaches_other_regions_before_this_one_routes_by_it() {
        let homes = Arc::new(HomeDirectory::new("eu", &regions()));
        let link = Arc::new(Ordered { log: Mutex::default(), homes: homes.clone(), refuse: false });
        let f = Federation::new(homes.clone(), link.clone(), 16, iris_clock::system());
        let bob = UserKey::new("acme", "bob");
        f.set_home(bob.clone(), Some("us".into())).await.unwrap();
        assert_eq!(
            link.log.lock().unwrap().as_slice(),
            ["send us home hops 0", "send ap home hops 0", "record (applied here already: false)"],
            "every other region first, then this region's record, and only then is it applied here"
        );
        assert_eq!(homes.home_of(&bob), ("us".into(), true));
    }

    #[tokio::test]
    async fn an_envelope_crosses_at_most_max_hops_and_presence_the_link_refuses_is_dropped() {
        let homes = Arc::new(HomeDirectory::new("eu", &regions()));
        let link = Arc::new(Ordered { log: Mutex::default(), homes: homes.clone(), refuse: true });
        let f = Federation::new(homes, link.clone(), 16, iris_clock::system());
        let mut env = GlobalEnvelope {
            origin: "us".into(),
            dest: "eu".into(),
            hops: MAX_HOPS - 1,
            relay: None,
            queued_at: 0,
            body: GlobalBody::EdgeAlive { edge: EdgeId("e@us".into()) },
        };
        assert!(f.forward(env.clone(), "ap".into()).await.unwrap());
        env.hops = MAX_HOPS;
        assert!(!f.forward(env, "ap".into()).await.unwrap(), "no further crossing");
        assert!(f.try_send_edge("us".into(), presence("e@us", "bob", PresenceStatus::Online)).is_ok(), "held");
        f.flush_presence();
        assert_eq!(link.log.lock().unwrap().as_slice(), ["send ap edge_alive hops 1"], "the refused update is gone");
    }

    #[tokio::test]
    async fn an_edge_that_started_is_announced_to_every_other_region() {
        let homes = Arc::new(HomeDirectory::new("eu", &regions()));
        let link = Arc::new(Ordered { log: Mutex::default(), homes: homes.clone(), refuse: true });
        let f = Federation::new(homes, link.clone(), 16, iris_clock::system());
        f.edge_started(&EdgeId::qualified("e", "eu")).await.unwrap();
        assert_eq!(
            link.log.lock().unwrap().as_slice(),
            ["send us edge_started hops 0", "send ap edge_started hops 0"],
            "durably (not try_send, which this link refuses), to each region but this one"
        );
    }

    #[tokio::test]
    async fn envelopes_and_assignments_are_stamped_by_the_given_clock() {
        let clock = Arc::new(iris_clock::ManualClock::new(5_000));
        let link = Arc::new(Recorder::default());
        let f = Federation::new(Arc::new(HomeDirectory::new("eu", &regions())), link.clone(), 16, clock.clone());
        assert_eq!(f.edge_alive(&EdgeId::qualified("e", "eu")), 0);
        clock.advance_ms(1_000);
        let a = f.set_home(UserKey::new("acme", "bob"), Some("us".into())).await.unwrap();
        assert_eq!(a.set_at, 6_000);
        assert_eq!(link.1.lock().unwrap().as_slice(), &[a]);
        let stamps: Vec<Millis> = link.0.lock().unwrap().iter().map(|e| e.queued_at).collect();
        assert_eq!(stamps, [5_000, 5_000, 6_000, 6_000], "two leases, then the assignment for us and ap");
    }
}
