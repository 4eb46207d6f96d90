//! What the relays between a region and the global layer decide, with no
//! I/O: how an outbound envelope is stamped and where it goes on the global
//! layer; what an inbound envelope becomes in this region (a copy to drop,
//! a delivery to a shard or an edge, a forward to the user's new home, a
//! lease renewal, a home assignment); and when to stop retrying. The relay
//! shells in `iris-kafka` read, carry these out and commit.

use crate::{HomeDirectory, MAX_HOPS};
use iris_envelope::{EdgeEnvelope, EdgeId, GlobalBody, GlobalEnvelope, HomeAssignment, RelayId, ShardEnvelope};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// A foreign edge started: every shard here ends the sessions it holds
    /// on it ([`iris_envelope::ShardInput::EdgeStarted`]).
    EdgeStarted(EdgeId),
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
                let (home, _) = homes.home_of_key(&se.owner);
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
            GlobalBody::EdgeStarted { edge } => Arrival::EdgeStarted(edge),
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

/// Envelopes the outbound relay has read and the global layer has not yet
/// confirmed: reading pauses at this bound while the global layer is slow
/// or away, and the backlog waits, durable, in the outbound topic.
pub const OUT_MAX_IN_FLIGHT: usize = 4_096;

/// How long a relay waits before it tries the global layer's topics again:
/// from 200 ms, doubling, at most 5 s.
pub fn global_retry_wait(previous: Option<Duration>) -> Duration {
    previous.map_or(Duration::from_millis(200), |w| (w * 2).min(Duration::from_secs(5)))
}

/// How far each partition of a relay's input may be committed: past every
/// record that is done, never past one still in flight. Records are read in
/// offset order per partition and may be done in any order.
#[derive(Debug, Default)]
pub struct RelayLedger {
    parts: BTreeMap<i32, LedgerPart>,
    in_flight: usize,
}

#[derive(Debug)]
struct LedgerPart {
    /// The offset after the last one read.
    next_read: i64,
    /// Read, not done.
    in_flight: BTreeSet<i64>,
    /// The position last handed out to commit.
    committed: Option<i64>,
}

impl RelayLedger {
    /// A record was read.
    pub fn read(&mut self, partition: i32, offset: i64) {
        let part = self.parts.entry(partition).or_insert(LedgerPart {
            next_read: offset,
            in_flight: BTreeSet::new(),
            committed: None,
        });
        if part.in_flight.insert(offset) {
            self.in_flight += 1;
        }
        part.next_read = part.next_read.max(offset + 1);
    }

    /// A record is done (handed on, or skipped).
    pub fn done(&mut self, partition: i32, offset: i64) {
        if self.parts.get_mut(&partition).is_some_and(|p| p.in_flight.remove(&offset)) {
            self.in_flight -= 1;
        }
    }

    /// Records read and not done, over every partition.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The positions to commit now (the offset of the first record not
    /// done, per partition), only where they moved since the last call. With
    /// `owned` (the partitions assigned now), a partition no longer owned is
    /// forgotten, its position left to its new owner, even a late commit of
    /// ours must not move it back.
    pub fn to_commit(&mut self, owned: Option<&[i32]>) -> Vec<(i32, i64)> {
        if let Some(owned) = owned {
            let mut dropped = 0;
            self.parts.retain(|p, part| {
                let keep = owned.contains(p);
                if !keep {
                    dropped += part.in_flight.len();
                }
                keep
            });
            self.in_flight -= dropped;
        }
        let mut out = Vec::new();
        for (&p, part) in &mut self.parts {
            let next = part.in_flight.first().copied().unwrap_or(part.next_read);
            if part.committed.is_none_or(|c| next > c) {
                part.committed = Some(next);
                out.push((p, next));
            }
        }
        out
    }

    /// A commit of these positions could not be made: offer them again.
    pub fn not_committed(&mut self, positions: &[(i32, i64)]) {
        for (p, next) in positions {
            if let Some(part) = self.parts.get_mut(p).filter(|part| part.committed == Some(*next)) {
                part.committed = None;
            }
        }
    }
}

/// What the outbound relay does with a record of its region's outbound
/// topic.
#[derive(Debug, PartialEq)]
pub enum Outbound {
    /// Produce it, stamped, to this partition of `env.dest`'s global topic.
    Produce {
        /// The envelope, stamped ([`stamp_outbound`]).
        env: GlobalEnvelope,
        /// The global partition.
        partition: i32,
    },
    /// Unreadable: skipped, counted done (a poisoned record must not stop
    /// the relay).
    Skip,
}

/// The outbound relay's decisions (the shell, `iris_kafka::relay_out`,
/// reads, produces and commits): stamp and place each envelope, read no
/// more than [`OUT_MAX_IN_FLIGHT`] ahead of the global layer's
/// confirmations, commit an envelope only once the global layer has it, and
/// stop at the first it refuses rather than commit past it (the relay
/// restarts from its last commit; the receiving region drops the copies by
/// relay id).
#[derive(Debug)]
pub struct RelayOut {
    local: Arc<str>,
    global_partitions: i32,
    ledger: RelayLedger,
}

impl RelayOut {
    /// The outbound relay of region `local`, over a global layer whose
    /// topics have `global_partitions` partitions.
    pub fn new(local: Arc<str>, global_partitions: i32) -> Self {
        Self { local, global_partitions, ledger: RelayLedger::default() }
    }

    /// Whether the relay may read another record now.
    pub fn may_read(&self) -> bool {
        self.ledger.in_flight() < OUT_MAX_IN_FLIGHT
    }

    /// A record read at `partition`, `offset`: the envelope, or `None` when
    /// it did not decode.
    pub fn read(&mut self, partition: i32, offset: i64, env: Option<GlobalEnvelope>) -> Outbound {
        self.ledger.read(partition, offset);
        let Some(mut env) = env else {
            self.ledger.done(partition, offset);
            return Outbound::Skip;
        };
        let partition = stamp_outbound(&mut env, &self.local, partition, offset, self.global_partitions);
        Outbound::Produce { env, partition }
    }

    /// The global layer confirmed (`Ok`) or refused the record at
    /// `partition`, `offset`. A refusal stops the relay: the error says
    /// which record.
    pub fn delivered(&mut self, partition: i32, offset: i64, outcome: Result<(), String>) -> Result<(), String> {
        match outcome {
            Ok(()) => {
                self.ledger.done(partition, offset);
                Ok(())
            }
            Err(e) => Err(format!("partition {partition} offset {offset}: {e}")),
        }
    }

    /// Envelopes read and not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.ledger.in_flight()
    }

    /// The positions to commit now ([`RelayLedger::to_commit`]).
    pub fn to_commit(&mut self, owned: Option<&[i32]>) -> Vec<(i32, i64)> {
        self.ledger.to_commit(owned)
    }

    /// A commit of these positions could not be made.
    pub fn not_committed(&mut self, positions: &[(i32, i64)]) {
        self.ledger.not_committed(positions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(dest: &str) -> GlobalEnvelope {
        GlobalEnvelope {
            origin: "eu".into(),
            dest: dest.into(),
            hops: 0,
            relay: None,
            queued_at: 1,
            body: GlobalBody::EdgeAlive { edge: EdgeId("e1@eu".into()) },
        }
    }

    #[test]
    fn a_partition_is_committed_up_to_its_first_record_not_done() {
        let mut l = RelayLedger::default();
        for off in 10..14 {
            l.read(0, off);
        }
        l.read(1, 5);
        assert_eq!(l.in_flight(), 5);
        assert_eq!(l.to_commit(None), vec![(0, 10), (1, 5)], "nothing done yet: the first read");
        l.done(0, 11);
        l.done(0, 12);
        assert_eq!(l.to_commit(None), vec![], "10 still in flight holds 11 and 12 back");
        l.done(0, 10);
        l.done(1, 5);
        assert_eq!(l.to_commit(None), vec![(0, 13), (1, 6)]);
        l.done(0, 13);
        assert_eq!(l.to_commit(None), vec![(0, 14)]);
        assert_eq!(l.to_commit(None), vec![], "only positions that moved");
        l.not_committed(&[(0, 14)]);
        assert_eq!(l.to_commit(None), vec![(0, 14)], "a failed commit is offered again");
        assert_eq!(l.in_flight(), 0);
        l.done(0, 13);
        assert_eq!(l.in_flight(), 0, "done twice counts once");
    }

    #[test]
    fn a_partition_taken_away_is_forgotten_and_never_committed_by_the_old_owner() {
        let mut l = RelayLedger::default();
        l.read(0, 1);
        l.read(1, 7);
        l.read(1, 8);
        assert_eq!(l.to_commit(Some(&[0])), vec![(0, 1)]);
        assert_eq!(l.in_flight(), 1, "partition 1's records no longer count");
        l.done(1, 7);
        assert_eq!(l.to_commit(Some(&[0, 1])), vec![], "a late confirmation of a lost partition moves nothing");
        // Assigned again, it starts from wherever its owner committed.
        l.read(1, 3);
        assert_eq!(l.to_commit(Some(&[0, 1])), vec![(1, 3)]);
    }

    #[test]
    fn the_outbound_relay_stamps_skips_the_unreadable_bounds_its_reading_and_stops_at_a_refusal() {
        let mut r = RelayOut::new("eu".into(), 4);
        let Outbound::Produce { env, partition } = r.read(6, 40, Some(outbound("us"))) else { panic!("produced") };
        assert_eq!(partition, 2, "the outbound partition's place on the global layer");
        assert_eq!(env.hops, 1);
        assert_eq!(env.relay, Some(RelayId { region: "eu".into(), partition: 6, offset: 40 }));
        assert_eq!(r.read(6, 41, None), Outbound::Skip);
        assert_eq!(r.to_commit(None), vec![(6, 40)], "the unreadable one waits behind the one in flight");
        r.delivered(6, 40, Ok(())).unwrap();
        assert_eq!(r.to_commit(None), vec![(6, 42)]);
        for off in 0..OUT_MAX_IN_FLIGHT as i64 {
            assert!(r.may_read());
            r.read(0, off, Some(outbound("us")));
        }
        assert!(!r.may_read(), "reading pauses at the bound");
        r.delivered(0, 0, Ok(())).unwrap();
        assert!(r.may_read());
        let err = r.delivered(0, 1, Err("broker down".into())).unwrap_err();
        assert_eq!(err, "partition 0 offset 1: broker down");
        assert_eq!(r.to_commit(None), vec![(0, 1)], "never past the refused one");
    }

    #[test]
    fn the_global_layer_is_tried_again_from_200_ms_doubling_to_5_s() {
        let mut w = global_retry_wait(None);
        assert_eq!(w, Duration::from_millis(200));
        let mut waits = vec![w];
        for _ in 0..6 {
            w = global_retry_wait(Some(w));
            waits.push(w);
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
    }
    use iris_envelope::{ShardInput, UserKey};

    fn homes() -> HomeDirectory {
        HomeDirectory::new("eu", &["eu".to_owned(), "us".to_owned()])
    }

    fn global(body: GlobalBody, hops: u8, relay: Option<RelayId>) -> GlobalEnvelope {
        GlobalEnvelope { origin: "us".into(), dest: "eu".into(), hops, relay, queued_at: 0, body }
    }

    fn to(user: &str) -> GlobalBody {
        GlobalBody::Shard(ShardEnvelope {
            owner: UserKey::new("acme", user).into(),
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
        let started = GlobalBody::EdgeStarted { edge: EdgeId("e1@us".into()) };
        assert_eq!(r.arrival(global(started, 1, id(5)), &h), Arrival::EdgeStarted(EdgeId("e1@us".into())));
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
