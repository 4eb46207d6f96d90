//! Several shards to a partition of the shard topic (ADR 0031): which
//! partition carries a shard, and, on the consuming side, how far each
//! shared partition may be committed and when it must be paused. Pure: the
//! Kafka source (`iris_kafka::KafkaSource`) and the simulator (`chaos/sim`)
//! read and commit, this decides.
//!
//! Shard `s` is written to partition `s % partitions`, with its id in the
//! record's `iris-shard` header. A partition's offset may be committed
//! only up to its first record whose shard has not reported it done: the
//! shards of one partition progress independently, and a commit is a
//! promise that everything before it is durable.

use iris_envelope::ShardId;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// The record header naming a record's shard when partitions are shared.
pub const SHARD_HEADER: &str = "iris-shard";

/// Shards to a partition in a new region's shard topic.
pub const SHARDS_PER_PARTITION: u32 = 8;

/// Records one shared partition keeps while its first one is not done.
/// Past it the partition stops committing (at that first record) until it
/// moves: only a shard that stopped for good, or one hundreds of thousands
/// of records behind, gets there, and re-reading is safe where skipping is
/// not. 16 bytes each: 4 MiB.
pub const MAX_OUTSTANDING: usize = 262_144;

/// How shards map onto the shard topic's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpread {
    shards: u32,
    partitions: u32,
}

impl Default for ShardSpread {
    /// One partition per shard, however many shards there are.
    fn default() -> Self {
        Self::one_per_shard(u32::MAX)
    }
}

impl ShardSpread {
    /// One partition per shard: the partition is the shard id, and records
    /// carry no shard header (the layout of every region before ADR 0031).
    pub fn one_per_shard(shards: u32) -> Self {
        Self { shards: shards.max(1), partitions: shards.max(1) }
    }

    /// `shards` over `partitions` (clamped to `1..=shards`).
    pub fn new(shards: u32, partitions: u32) -> Self {
        let shards = shards.max(1);
        Self { shards, partitions: partitions.clamp(1, shards) }
    }

    /// The layout a new region's shard topic gets: eight shards to a
    /// partition (the largest divisor of `shards` at most `shards / 8`,
    /// at least one partition), measured in ADR 0031.
    pub fn for_new_region(shards: u32) -> Self {
        let shards = shards.max(1);
        let mut p = (shards / SHARDS_PER_PARTITION).max(1);
        while !shards.is_multiple_of(p) {
            p -= 1;
        }
        Self::new(shards, p)
    }

    /// The layout of an existing shard topic of `partitions` partitions,
    /// or why `shards` cannot be spread over it.
    pub fn for_existing(shards: u32, partitions: usize) -> Result<Self, String> {
        let p = u32::try_from(partitions).unwrap_or(u32::MAX);
        if p == 0 || p > shards || !shards.is_multiple_of(p) {
            return Err(format!(
                "the shard topic has {partitions} partitions, which does not divide core.shards = {shards}"
            ));
        }
        Ok(Self::new(shards, p))
    }

    /// How a region's shards lie on its shard topic (ADR 0031): as
    /// `configured` (`cluster.shard_partitions`); else as the topic
    /// already has them (`found`, so a region made before the setting keeps
    /// its one partition per shard); else, for a new region, eight shards
    /// to a partition.
    pub fn choose(shards: u32, configured: Option<u32>, found: Option<usize>) -> Result<Self, String> {
        match (configured, found) {
            (Some(p), _) => Ok(Self::new(shards, p)),
            (None, Some(n)) => Self::for_existing(shards, n),
            (None, None) => Ok(Self::for_new_region(shards)),
        }
    }

    /// The shard topic's partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Whether a partition carries more than one shard (records then name
    /// their shard in [`SHARD_HEADER`]).
    pub fn shared(&self) -> bool {
        self.partitions < self.shards
    }

    /// The partition that carries `shard`.
    pub fn partition(&self, shard: ShardId) -> i32 {
        (shard.0 % self.partitions) as i32
    }

    /// The shards `partition` carries, in order.
    pub fn shards_of(&self, partition: i32) -> impl Iterator<Item = ShardId> + '_ {
        let p = partition.max(0) as u32;
        (p..self.shards).step_by(self.partitions as usize).map(ShardId)
    }

    /// The shard of a record read from `partition` whose header named
    /// `header` (`None`: no header). Without sharing, the partition; with
    /// it, the header, which must name a shard of this partition. A record
    /// whose shard cannot be told is an error (reported unreadable).
    pub fn shard_of(&self, partition: i32, header: Option<&[u8]>) -> Result<ShardId, String> {
        if !self.shared() {
            return Ok(ShardId(partition.max(0) as u32));
        }
        let bytes = header.ok_or_else(|| format!("no {SHARD_HEADER} header on a shared partition"))?;
        let raw: [u8; 4] = bytes.try_into().map_err(|_| format!("{SHARD_HEADER} header of {} bytes", bytes.len()))?;
        let shard = ShardId(u32::from_be_bytes(raw));
        if shard.0 >= self.shards || self.partition(shard) != partition {
            return Err(format!("{SHARD_HEADER} {} does not belong to partition {partition}", shard.0));
        }
        Ok(shard)
    }
}

/// One shared partition as its consumer sees it.
#[derive(Debug, Default)]
struct Part {
    /// Records returned and not yet known done, in offset order, with
    /// their shard. Bounded by what the shards hold: the feed stops
    /// reading while a shard's backlog is over its bound.
    outstanding: VecDeque<(i64, u32)>,
    /// The offset after the last record returned.
    next: Option<i64>,
    /// Shard → every one of its records before this offset is done.
    done: HashMap<u32, i64>,
    /// The offset last committed.
    committed: Option<i64>,
    /// The shards that asked for this partition to be paused.
    paused: BTreeSet<u32>,
    /// Past [`MAX_OUTSTANDING`]: committed no further than this, until
    /// the partition moves.
    frozen: Option<i64>,
}

/// The consuming side's decisions over the shard topic's partitions:
/// which shards an assignment brings, how far each partition may be
/// committed, when a partition pauses and resumes. Without sharing (one
/// partition per shard) each answer is the shard's own partition and
/// nothing is kept; with it, what [`Part`] says.
#[derive(Debug)]
pub struct ShardPartitions {
    spread: ShardSpread,
    parts: HashMap<i32, Part>,
}

impl ShardPartitions {
    /// Nothing owned yet.
    pub fn new(spread: ShardSpread) -> Self {
        Self { spread, parts: HashMap::new() }
    }

    /// The layout.
    pub fn spread(&self) -> ShardSpread {
        self.spread
    }

    /// `partitions` are now ours: their shards, which start afresh.
    pub fn assigned(&mut self, partitions: &[i32]) -> Vec<ShardId> {
        if self.spread.shared() {
            for p in partitions {
                // One already ours keeps what it knows (an assignment
                // repeated without a revocation must not forget records
                // not done).
                self.parts.entry(*p).or_default();
            }
        }
        self.shards_of(partitions)
    }

    /// `partitions` are no longer ours: their shards.
    pub fn revoked(&mut self, partitions: &[i32]) -> Vec<ShardId> {
        for p in partitions {
            self.parts.remove(p);
        }
        self.shards_of(partitions)
    }

    /// The shards `partitions` carry, in order.
    fn shards_of(&self, partitions: &[i32]) -> Vec<ShardId> {
        let mut shards: Vec<ShardId> = partitions.iter().flat_map(|p| self.spread.shards_of(*p)).collect();
        shards.sort_unstable();
        shards
    }

    /// A record at `offset` of `partition` was returned, for `shard`
    /// (`None`: unreadable, skipped, so done as soon as what is before it).
    /// True when this record made the partition stop committing
    /// ([`MAX_OUTSTANDING`]). Without sharing, nothing to keep.
    pub fn returned(&mut self, partition: i32, offset: i64, shard: Option<ShardId>) -> bool {
        if !self.spread.shared() {
            return false;
        }
        let Some(part) = self.parts.get_mut(&partition) else { return false };
        part.next = Some(part.next.map_or(offset + 1, |n| n.max(offset + 1)));
        if part.frozen.is_some() {
            return false;
        }
        if let Some(s) = shard {
            part.outstanding.push_back((offset, s.0));
        }
        if part.outstanding.len() > MAX_OUTSTANDING {
            part.frozen = part.outstanding.front().map(|(o, _)| *o);
            part.outstanding = VecDeque::new();
            return true;
        }
        false
    }

    /// The shards report every record of theirs before each offset done:
    /// the partitions whose committable offset moved, with it. Nothing is
    /// taken as committed until [`ShardPartitions::committed`]. Without
    /// sharing, each shard's own offset on its own partition.
    pub fn to_commit(&mut self, done: &[(ShardId, i64)]) -> Vec<(i32, i64)> {
        if !self.spread.shared() {
            return done.iter().map(|(s, next)| (s.0 as i32, *next)).collect();
        }
        let mut touched = BTreeSet::new();
        for (s, next) in done {
            let p = self.spread.partition(*s);
            if let Some(part) = self.parts.get_mut(&p) {
                let d = part.done.entry(s.0).or_insert(*next);
                *d = (*d).max(*next);
                touched.insert(p);
            }
        }
        let mut out = Vec::new();
        for p in touched {
            let Some(part) = self.parts.get_mut(&p) else { continue };
            while let Some((offset, s)) = part.outstanding.front() {
                if part.done.get(s).is_some_and(|d| d > offset) {
                    part.outstanding.pop_front();
                } else {
                    break;
                }
            }
            let at = match part.frozen {
                Some(at) => Some(at),
                None => part.outstanding.front().map(|(o, _)| *o).or(part.next),
            };
            if let Some(at) = at
                && part.committed.is_none_or(|c| c < at)
            {
                out.push((p, at));
            }
        }
        out
    }

    /// The broker took these commits.
    pub fn committed(&mut self, offsets: &[(i32, i64)]) {
        for (p, at) in offsets {
            if let Some(part) = self.parts.get_mut(p) {
                part.committed = Some(part.committed.map_or(*at, |c| c.max(*at)));
            }
        }
    }

    /// `shard` is full: the partition to pause now, if it is not already
    /// (without sharing, its own, every time: pausing is idempotent).
    pub fn pause(&mut self, shard: ShardId) -> Option<i32> {
        if !self.spread.shared() {
            return Some(shard.0 as i32);
        }
        let p = self.spread.partition(shard);
        let part = self.parts.get_mut(&p)?;
        let first = part.paused.is_empty();
        part.paused.insert(shard.0);
        first.then_some(p)
    }

    /// `shard` may read again: the partition to resume, unless another of
    /// its shards still holds it paused.
    pub fn resume(&mut self, shard: ShardId) -> Option<i32> {
        let p = self.spread.partition(shard);
        if !self.spread.shared() {
            return Some(p);
        }
        match self.parts.get_mut(&p) {
            Some(part) => {
                part.paused.remove(&shard.0);
                part.paused.is_empty().then_some(p)
            }
            // Not (or no longer) ours: resuming is harmless.
            None => Some(p),
        }
    }

    /// Records returned and not yet known done, over every partition.
    pub fn outstanding(&self) -> usize {
        self.parts.values().map(|p| p.outstanding.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_configured_one_else_the_topic_s_else_eight_shards_to_a_partition() {
        assert_eq!(ShardSpread::choose(64, Some(4), Some(64)).unwrap(), ShardSpread::new(64, 4), "configured wins");
        assert_eq!(
            ShardSpread::choose(64, None, Some(64)).unwrap(),
            ShardSpread::new(64, 64),
            "an old region keeps its layout"
        );
        assert_eq!(ShardSpread::choose(64, None, None).unwrap(), ShardSpread::new(64, 8), "a new region");
        assert!(ShardSpread::choose(64, None, Some(3)).unwrap_err().contains("does not divide"));
    }

    #[test]
    fn shards_go_round_the_partitions() {
        let s = ShardSpread::new(64, 8);
        assert!(s.shared());
        assert_eq!(s.partition(ShardId(0)), 0);
        assert_eq!(s.partition(ShardId(9)), 1);
        assert_eq!(s.partition(ShardId(63)), 7);
        let of3: Vec<u32> = s.shards_of(3).map(|s| s.0).collect();
        assert_eq!(of3, (0..8).map(|k| 3 + 8 * k).collect::<Vec<_>>());
        let all: BTreeSet<u32> = (0..8).flat_map(|p| s.shards_of(p).map(|s| s.0).collect::<Vec<_>>()).collect();
        assert_eq!(all, (0..64).collect::<BTreeSet<_>>(), "every shard in exactly one partition");
        let one = ShardSpread::one_per_shard(64);
        assert!(!one.shared());
        assert_eq!(one.partition(ShardId(63)), 63);
        assert_eq!(ShardSpread::new(4, 9).partitions(), 4, "never more partitions than shards");
    }

    /// One partition per shard (every region made before ADR 0031): the
    /// partition is the shard for every decision, and nothing is kept.
    #[test]
    fn without_sharing_each_shard_is_its_own_partition() {
        let mut parts = ShardPartitions::new(ShardSpread::one_per_shard(8));
        assert_eq!(parts.assigned(&[3, 5]), vec![ShardId(3), ShardId(5)]);
        assert!(!parts.returned(3, 10, Some(ShardId(3))));
        assert_eq!(parts.to_commit(&[(ShardId(3), 11), (ShardId(5), 2)]), vec![(3, 11), (5, 2)]);
        assert_eq!(parts.pause(ShardId(3)), Some(3));
        assert_eq!(parts.pause(ShardId(3)), Some(3), "pausing again is harmless");
        assert_eq!(parts.resume(ShardId(3)), Some(3));
        assert_eq!(parts.revoked(&[5]), vec![ShardId(5)]);
        assert_eq!(parts.outstanding(), 0);
    }

    #[test]
    fn a_new_region_puts_eight_shards_on_a_partition() {
        let p = |shards| ShardSpread::for_new_region(shards).partitions();
        assert_eq!((p(64), p(1024), p(4096)), (8, 128, 512));
        assert_eq!((p(1), p(7), p(12), p(100)), (1, 1, 1, 10), "a divisor, at least one");
        assert_eq!(ShardSpread::for_existing(64, 64).unwrap(), ShardSpread::one_per_shard(64));
        assert_eq!(ShardSpread::for_existing(64, 16).unwrap().partitions(), 16);
        for bad in [0, 12, 128] {
            assert!(ShardSpread::for_existing(64, bad).unwrap_err().contains("does not divide"), "{bad}");
        }
    }

    #[test]
    fn a_shared_partitions_records_name_their_shard() {
        let s = ShardSpread::new(6, 3);
        assert_eq!(s.shard_of(1, Some(&4u32.to_be_bytes())), Ok(ShardId(4)));
        assert!(s.shard_of(1, None).unwrap_err().contains("no iris-shard header"));
        assert!(s.shard_of(1, Some(&5u32.to_be_bytes())).unwrap_err().contains("does not belong"));
        assert!(s.shard_of(1, Some(&7u32.to_be_bytes())).is_err(), "beyond the shards");
        assert!(s.shard_of(1, Some(b"\x01")).is_err());
        let one = ShardSpread::one_per_shard(6);
        assert_eq!(one.shard_of(5, None), Ok(ShardId(5)), "one per shard: the partition is the shard");
    }

    #[test]
    fn a_partition_commits_only_what_all_its_shards_did() {
        let spread = ShardSpread::new(4, 2);
        let mut p = ShardPartitions::new(spread);
        assert_eq!(p.assigned(&[0]), vec![ShardId(0), ShardId(2)]);
        // Offsets 10..14 of partition 0: shards 0, 2, 0, 2.
        for (o, s) in [(10, 0), (11, 2), (12, 0), (13, 2)] {
            p.returned(0, o, Some(ShardId(s)));
        }
        // Shard 0 did both of its records; shard 2 nothing: 11 waits.
        assert_eq!(p.to_commit(&[(ShardId(0), 13)]), vec![(0, 11)]);
        p.committed(&[(0, 11)]);
        assert_eq!(p.to_commit(&[(ShardId(0), 13)]), vec![], "nothing new");
        // Shard 2 did its first: 13 waits.
        assert_eq!(p.to_commit(&[(ShardId(2), 12)]), vec![(0, 13)]);
        // A commit the broker refused is offered again.
        assert_eq!(p.to_commit(&[(ShardId(2), 12)]), vec![(0, 13)]);
        p.committed(&[(0, 13)]);
        // An unreadable record at the end is passed once all before it is done.
        p.returned(0, 14, None);
        assert_eq!(p.to_commit(&[(ShardId(2), 14)]), vec![(0, 15)]);
        p.committed(&[(0, 15)]);
        assert_eq!(p.outstanding(), 0);
        // A shard of a partition not owned here is ignored.
        assert_eq!(p.to_commit(&[(ShardId(1), 99)]), vec![]);
    }

    #[test]
    fn a_partition_moved_away_and_back_starts_afresh() {
        let mut p = ShardPartitions::new(ShardSpread::new(4, 2));
        p.assigned(&[0, 1]);
        p.returned(1, 5, Some(ShardId(1)));
        assert_eq!(p.revoked(&[1]), vec![ShardId(1), ShardId(3)]);
        p.returned(1, 6, Some(ShardId(3)));
        assert_eq!(p.to_commit(&[(ShardId(3), 7)]), vec![], "not ours: nothing to commit");
        p.assigned(&[1]);
        p.returned(1, 20, Some(ShardId(3)));
        assert_eq!(p.to_commit(&[(ShardId(1), 6)]), vec![(1, 20)], "only what was read since");
    }

    #[test]
    fn a_partition_whose_first_record_is_never_done_stops_committing_within_its_bound() {
        let mut p = ShardPartitions::new(ShardSpread::new(4, 2));
        p.assigned(&[0]);
        // Shard 2 stopped at offset 0; shard 0 goes on and on.
        p.returned(0, 0, Some(ShardId(2)));
        let mut froze = false;
        for o in 1..=(MAX_OUTSTANDING as i64 + 10) {
            froze |= p.returned(0, o, Some(ShardId(0)));
        }
        assert!(froze, "stopped recording at the bound");
        assert!(p.outstanding() <= MAX_OUTSTANDING, "memory bounded: {}", p.outstanding());
        let end = MAX_OUTSTANDING as i64 + 11;
        assert_eq!(p.to_commit(&[(ShardId(0), end)]), vec![(0, 0)], "never past shard 2's record");
        p.committed(&[(0, 0)]);
        // Even once shard 2 reports, what was not recorded is not assumed done.
        assert_eq!(p.to_commit(&[(ShardId(2), 1), (ShardId(0), end)]), vec![]);
        // Moving away and back starts afresh.
        p.revoked(&[0]);
        p.assigned(&[0]);
        p.returned(0, 5, Some(ShardId(0)));
        assert_eq!(p.to_commit(&[(ShardId(0), 6)]), vec![(0, 6)]);
    }

    #[test]
    fn an_assignment_repeated_keeps_what_is_not_done() {
        let mut p = ShardPartitions::new(ShardSpread::new(4, 2));
        p.assigned(&[1]);
        p.returned(1, 7, Some(ShardId(3)));
        p.returned(1, 8, Some(ShardId(1)));
        p.assigned(&[1]);
        assert_eq!(p.to_commit(&[(ShardId(1), 9)]), vec![(1, 7)], "shard 3's record is still not done");
    }

    #[test]
    fn a_partition_stays_paused_while_any_of_its_shards_is_full() {
        let mut p = ShardPartitions::new(ShardSpread::new(4, 2));
        p.assigned(&[0, 1]);
        assert_eq!(p.pause(ShardId(0)), Some(0));
        assert_eq!(p.pause(ShardId(2)), None, "already paused");
        assert_eq!(p.resume(ShardId(0)), None, "shard 2 is still full");
        assert_eq!(p.resume(ShardId(2)), Some(0));
        assert_eq!(p.resume(ShardId(1)), Some(1), "resuming what is not paused is harmless");
    }
}
