//! What the relays between a region and the global layer decide, with no
//! I/O: how an outbound envelope is stamped and where it goes on the global
//! layer; what an inbound envelope becomes in this region (a copy to drop,
//! a delivery to a shard or an edge, a forward to the user's new home, a
//! lease renewal, a home assignment); and when to stop retrying. The relay
//! shells in `iris-kafka` read, carry these out and commit.

use crate::{HomeDirectory, MAX_HOPS};
use iris_envelope::{EdgeEnvelope, EdgeId, GlobalBody, GlobalEnvelope, HomeAssignment, RelayId, ShardEnvelope};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Stamps an envelope read from this region's outbound topic (partition
/// `partition`, offset `offset`) for the global layer: one more crossing,
/// and the relay id by which the receiving region drops copies of it.
/// Returns the global partition it goes to (the outbound partition's, so
/// order per outbound partition holds).
pub fn stamp_outbound(
    env: &mut GlobalEnvelope,
    local: &Arc<str>,
    partition: i32,
    offset: i64,
    global_partitions: i32,
) -> i32 {
    env.hops = env.hops.saturating_add(1);
    env.relay = Some(RelayId { region: local.clone(), partition, offset });
    partition.rem_euclid(global_partitions.max(1))
}

/// Drops copies of envelopes already relayed: per (relaying region,
/// outbound partition), offsets arrive in increasing order, so anything at
/// or below the highest seen is a replay.
#[derive(Default)]
pub struct ReplayFilter {
    seen: HashMap<(Arc<str>, i32), i64>,
}

impl ReplayFilter {
    /// Whether an envelope with this relay id is new (and records it).
    pub fn admit(&mut self, id: &RelayId) -> bool {
        let slot = self.seen.entry((id.region.clone(), id.partition)).or_insert(-1);
        if id.offset <= *slot {
            return false;
        }
        *slot = id.offset;
        true
    }
}

/// What an envelope arriving from the global layer becomes here.
#[derive(Debug, PartialEq)]
pub enum Arrival {
    /// To this region's shard of its owner.
    Shard(ShardEnvelope),
    /// The owner's home moved on: send it on to `home` (one more crossing).
    Forward {
        /// The envelope (its destination set, its relay id cleared).
        env: GlobalEnvelope,
        /// Where it goes.
        home: Arc<str>,
    },
    /// To an edge of this region.
    Edge(EdgeEnvelope),
    /// Renew a foreign edge's lease on every shard here.
    EdgeAlive(EdgeId),
    /// Record and apply a home assignment.
    Home(HomeAssignment),
    /// Dropped, counted under this reason.
    Dropped(&'static str),
}

/// The inbound relay's decisions for one region.
pub struct RelayIn {
    replays: ReplayFilter,
}

impl Default for RelayIn {
    fn default() -> Self {
        Self::new()
    }
}

/// How many times an envelope for an edge is offered to the regional bus
/// before it is given up (its edge is gone: the region must not stall).
pub const EDGE_ATTEMPTS: u32 = 3;

impl RelayIn {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self { replays: ReplayFilter::default() }
    }

    /// What `env` becomes in this region, whose homes are `homes`.
    pub fn arrival(&mut self, env: GlobalEnvelope, homes: &HomeDirectory) -> Arrival {
        if let Some(id) = &env.relay
            && !self.replays.admit(id)
        {
            return Arrival::Dropped("replay");
        }
        match env.body {
            GlobalBody::Shard(ref se) => {
                let (home, _) = homes.home_of(&se.owner);
                if home == *homes.local() {
                    let GlobalBody::Shard(se) = env.body else { unreachable!("matched above") };
                    Arrival::Shard(se)
                } else if env.hops >= MAX_HOPS {
                    Arrival::Dropped("hops")
                } else {
                    let mut env = env;
                    env.dest = home.clone();
                    env.relay = None;
                    Arrival::Forward { env, home }
                }
            }
            GlobalBody::Edge(ee) => Arrival::Edge(ee),
            GlobalBody::EdgeAlive { edge } => Arrival::EdgeAlive(edge),
            GlobalBody::Home(a) if a.region.as_deref().is_some_and(|r| !homes.knows(r)) => {
                Arrival::Dropped("unknown_region")
            }
            GlobalBody::Home(a) => Arrival::Home(a),
        }
    }

    /// After the regional bus refused an arrival for the `attempt`th time:
    /// how long to wait before offering it again, or `None` to give it up
    /// (only an edge's envelope: its sessions are gone with it; anything
    /// else waits, and nothing is committed past it).
    pub fn retry(arrival: &Arrival, attempt: u32) -> Option<Duration> {
        if matches!(arrival, Arrival::Edge(_)) && attempt >= EDGE_ATTEMPTS {
            return None;
        }
        let ms = 50u64.saturating_mul(1 << attempt.saturating_sub(1).min(6)).min(2_000);
        Some(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iris_envelope::{ShardInput, UserKey};

    fn homes() -> HomeDirectory {
        HomeDirectory::new("eu", &["eu".to_owned(), "us".to_owned()])
    }

    fn global(body: GlobalBody, hops: u8, relay: Option<RelayId>) -> GlobalEnvelope {
        GlobalEnvelope { origin: "us".into(), dest: "eu".into(), hops, relay, queued_at: 0, body }
    }

    fn to(user: &str) -> GlobalBody {
        GlobalBody::Shard(ShardEnvelope {
            owner: UserKey::new("acme", user),
            body: ShardInput::Ack { up_to: 1, read: false },
            trace: None,
        })
    }

    #[test]
    fn replays_are_dropped_per_relay_partition() {
        let mut f = ReplayFilter::default();
        let id = |r: &str, p, o| RelayId { region: r.into(), partition: p, offset: o };
        assert!(f.admit(&id("eu", 0, 5)));
        assert!(f.admit(&id("eu", 0, 6)));
        assert!(!f.admit(&id("eu", 0, 6)), "a copy");
        assert!(!f.admit(&id("eu", 0, 3)), "a replay from before");
        assert!(f.admit(&id("eu", 1, 0)), "another partition");
        assert!(f.admit(&id("us", 0, 0)), "another region");
        assert!(f.admit(&id("eu", 0, 7)));
    }

    #[test]
    fn outbound_envelopes_are_stamped_and_keep_their_partition_s_order() {
        let mut env = global(to("bob"), 0, None);
        assert_eq!(stamp_outbound(&mut env, &"us".into(), 5, 42, 4), 1);
        assert_eq!(env.hops, 1);
        assert_eq!(env.relay, Some(RelayId { region: "us".into(), partition: 5, offset: 42 }));
    }

    #[test]
    fn an_arrival_goes_to_its_shard_here_or_on_to_the_user_s_new_home_within_the_hop_limit() {
        let mut r = RelayIn::new();
        let h = homes();
        let id = |o| Some(RelayId { region: "us".into(), partition: 0, offset: o });
        h.apply(&HomeAssignment { user: UserKey::new("acme", "bob"), region: Some("eu".into()), set_at: 1 });
        assert!(matches!(r.arrival(global(to("bob"), 1, id(1)), &h), Arrival::Shard(_)));
        assert_eq!(r.arrival(global(to("bob"), 1, id(1)), &h), Arrival::Dropped("replay"));
        h.apply(&HomeAssignment { user: UserKey::new("acme", "bob"), region: Some("us".into()), set_at: 2 });
        match r.arrival(global(to("bob"), 1, id(2)), &h) {
            Arrival::Forward { env, home } => {
                assert_eq!(&*home, "us");
                assert_eq!((&*env.dest, env.relay.is_none()), ("us", true));
            }
            a => panic!("expected a forward, got {a:?}"),
        }
        assert_eq!(r.arrival(global(to("bob"), MAX_HOPS, id(3)), &h), Arrival::Dropped("hops"));
        let unknown = GlobalBody::Home(HomeAssignment {
            user: UserKey::new("acme", "x"),
            region: Some("mars".into()),
            set_at: 1,
        });
        assert_eq!(r.arrival(global(unknown, 1, id(4)), &h), Arrival::Dropped("unknown_region"));
    }

    #[test]
    fn only_an_edge_s_envelope_is_given_up_and_retries_back_off() {
        let edge = Arrival::EdgeAlive(EdgeId("e".into()));
        assert_eq!(RelayIn::retry(&edge, 1), Some(Duration::from_millis(50)));
        assert_eq!(RelayIn::retry(&edge, 3), Some(Duration::from_millis(200)));
        assert_eq!(RelayIn::retry(&edge, 30), Some(Duration::from_secs(2)), "capped");
        let to_edge = Arrival::Edge(EdgeEnvelope {
            edge: EdgeId("e".into()),
            body: iris_envelope::EdgeInput::Welcome { session: iris_envelope::SessionId(1), inbox_head: 0 },
            traces: Vec::new(),
        });
        assert!(RelayIn::retry(&to_edge, EDGE_ATTEMPTS - 1).is_some());
        assert_eq!(RelayIn::retry(&to_edge, EDGE_ATTEMPTS), None);
    }
}
