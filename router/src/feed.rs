//! The consuming side of the bus, as a pure state machine: which shard
//! partitions this node owns, the envelopes read from each partition on
//! their way into its shard's bounded queue, pausing a partition whose
//! shard is full, and which offsets may be committed (only those whose work
//! the shard reports durable).
//!
//! No I/O, no clock, no spawning: the shell (`iris_core::feed`) reads a
//! [`ShardSource`](crate::ShardSource), feeds what it reads in as
//! [`FeedInput`]s, and carries out the [`FeedOutput`]s in the order they
//! come. One rule binds the shell: every [`FeedOutput::Hand`] is answered,
//! before the next [`Feed::poll_output`], with [`FeedInput::Handed`] (the
//! shard took it) or [`FeedInput::Full`] (its queue had no room; the
//! envelope comes back). That is what keeps each partition in offset order.
//!
//! The same machine runs over the Kafka bus in a region and over the
//! simulated bus of the deterministic simulator.

use iris_envelope::{ShardEnvelope, ShardId};
use std::collections::{BTreeMap, VecDeque};

/// Envelopes held for a full shard beyond which the shell waits for room
/// for the next one instead of trying again later (so what is held stays
/// at most this plus one): only reached if pausing the partition failed (a
/// paused partition stops delivering, so what is held is at most what had
/// been fetched before the pause).
pub const MAX_HELD: usize = 4_096;

/// What happened, fed into the [`Feed`].
#[derive(Debug)]
pub enum FeedInput {
    /// The bus gave these partitions to this node.
    Assigned(Vec<ShardId>),
    /// The bus took these partitions away.
    Revoked(Vec<ShardId>),
    /// An envelope read from a partition, at its offset.
    Record {
        /// The partition (= shard).
        shard: ShardId,
        /// Its offset in the partition.
        offset: i64,
        /// The envelope.
        env: ShardEnvelope,
    },
    /// A record that could not be decoded: skipped, and its offset counts as
    /// done once the records before it are.
    Unreadable {
        /// The partition.
        shard: ShardId,
        /// Its offset.
        offset: i64,
    },
    /// The shard took the envelope of the last [`FeedOutput::Hand`].
    Handed {
        /// The partition.
        shard: ShardId,
        /// The envelope's offset.
        offset: i64,
    },
    /// The shard's queue had no room for the last [`FeedOutput::Hand`]: the
    /// envelope comes back, and is offered again after [`FeedInput::Retry`].
    Full {
        /// The partition.
        shard: ShardId,
        /// The envelope's offset.
        offset: i64,
        /// The envelope.
        env: ShardEnvelope,
    },
    /// A shard's queue was gone (its actor stopped): what the shell could
    /// not hand is dropped here too; the next owner reads it again from the
    /// last commit.
    Gone {
        /// The partition.
        shard: ShardId,
    },
    /// Time to offer held envelopes to full shards again.
    Retry,
    /// How many of the envelopes handed to each shard its actor reports
    /// durable (a running count since the shard started here).
    Progress(Vec<(ShardId, u64)>),
    /// These commits (from [`FeedOutput::Commit`]) succeeded. A failed
    /// commit needs no input: the next `Progress` offers it again.
    Committed(Vec<(ShardId, i64)>),
}

/// What the shell must do, in this order.
#[derive(Debug, PartialEq)]
pub enum FeedOutput {
    /// Start the shard's actor with an empty queue (and resume its
    /// partition, which an earlier owner here may have left paused).
    Start(ShardId),
    /// Close the shard's queue: its actor finishes what it has and stops.
    Stop(ShardId),
    /// Offer the envelope to the shard's queue without waiting (`wait`:
    /// waiting for room, since too much is held), then answer with
    /// [`FeedInput::Handed`] or [`FeedInput::Full`].
    Hand {
        /// The partition.
        shard: ShardId,
        /// The envelope's offset.
        offset: i64,
        /// The envelope.
        env: ShardEnvelope,
        /// Wait for room rather than answer `Full`.
        wait: bool,
    },
    /// Stop fetching the partition: its shard is full. Envelopes are held
    /// before the shard's queue from now on, so an empty queue does not mean
    /// the shard is caught up.
    Pause(ShardId),
    /// Fetch the partition again: nothing is held for it any more.
    Resume(ShardId),
    /// Commit these next offsets (every record before each is done).
    Commit(Vec<(ShardId, i64)>),
    /// A record arrived for a partition not owned here; it was dropped.
    NotOwned {
        /// The partition.
        shard: ShardId,
        /// The record's offset.
        offset: i64,
    },
}

/// One owned partition.
#[derive(Default)]
struct Part {
    ledger: OffsetLedger,
    /// Envelopes read and not yet in the shard's queue, in offset order.
    held: VecDeque<(i64, ShardEnvelope)>,
    /// Fetching is paused (from the first `Full` until `held` is empty).
    paused: bool,
    /// The shard's queue was full; nothing is offered until `Retry`.
    blocked: bool,
    /// A `Hand` is out and not answered yet.
    offering: bool,
    /// Queued in `ready` already.
    queued: bool,
}

impl Part {
    fn can_offer(&self) -> bool {
        !self.held.is_empty() && !self.blocked && !self.offering
    }
}

/// The consuming side of the bus for one node. See the module docs.
pub struct Feed {
    parts: BTreeMap<ShardId, Part>,
    /// Partitions with something to offer, in turn.
    ready: VecDeque<ShardId>,
    out: VecDeque<FeedOutput>,
    max_held: usize,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new(MAX_HELD)
    }
}

impl Feed {
    /// A feed that owns nothing yet; `max_held` bounds what it holds for a
    /// full shard before the shell must wait (see [`MAX_HELD`]).
    pub fn new(max_held: usize) -> Self {
        Self { parts: BTreeMap::new(), ready: VecDeque::new(), out: VecDeque::new(), max_held: max_held.max(1) }
    }

    /// The partitions owned here, in order.
    pub fn owned(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.parts.keys().copied()
    }

    /// Whether any partition has envelopes held for a full shard (the shell
    /// then sends [`FeedInput::Retry`] every little while).
    pub fn holding(&self) -> bool {
        self.parts.values().any(|p| !p.held.is_empty())
    }

    /// Envelopes held for `shard` (for tests and metrics).
    pub fn held(&self, shard: ShardId) -> usize {
        self.parts.get(&shard).map_or(0, |p| p.held.len())
    }

    /// Whether `shard`'s partition is paused.
    pub fn paused(&self, shard: ShardId) -> bool {
        self.parts.get(&shard).is_some_and(|p| p.paused)
    }

    /// Feeds one input in.
    pub fn handle_input(&mut self, input: FeedInput) {
        match input {
            FeedInput::Assigned(shards) => {
                for s in shards {
                    if !self.parts.contains_key(&s) {
                        self.parts.insert(s, Part::default());
                        self.out.push_back(FeedOutput::Start(s));
                    }
                }
            }
            FeedInput::Revoked(shards) => {
                for s in shards {
                    // What is held is dropped: nothing of it was committed,
                    // so the next owner reads it again.
                    if self.parts.remove(&s).is_some() {
                        self.ready.retain(|r| *r != s);
                        self.out.push_back(FeedOutput::Stop(s));
                    }
                }
            }
            FeedInput::Record { shard, offset, env } => match self.parts.get_mut(&shard) {
                Some(p) => {
                    p.held.push_back((offset, env));
                    self.unblock_if_over(shard);
                    self.mark_ready(shard);
                }
                None => self.out.push_back(FeedOutput::NotOwned { shard, offset }),
            },
            FeedInput::Unreadable { shard, offset } => {
                if let Some(p) = self.parts.get_mut(&shard) {
                    // Counted as handed only when nothing is held before it,
                    // so the offsets stay in order; otherwise it is simply
                    // covered by the next record's commit.
                    if p.held.is_empty() && !p.offering {
                        p.ledger.skipped(offset);
                    }
                }
            }
            FeedInput::Handed { shard, offset } => {
                if let Some(p) = self.parts.get_mut(&shard) {
                    p.offering = false;
                    p.ledger.handed(offset);
                    if p.held.is_empty() {
                        if p.paused {
                            p.paused = false;
                            self.out.push_back(FeedOutput::Resume(shard));
                        }
                    } else {
                        self.mark_ready(shard);
                    }
                }
            }
            FeedInput::Full { shard, offset, env } => {
                if let Some(p) = self.parts.get_mut(&shard) {
                    p.offering = false;
                    p.held.push_front((offset, env));
                    p.blocked = true;
                    if !p.paused {
                        p.paused = true;
                        self.out.push_back(FeedOutput::Pause(shard));
                    }
                }
                self.unblock_if_over(shard);
                self.mark_ready(shard);
            }
            FeedInput::Gone { shard } => {
                if let Some(p) = self.parts.get_mut(&shard) {
                    p.offering = false;
                    p.held.clear();
                    // What was dropped is not done: nothing of this
                    // partition is committed past what was handed before,
                    // so the next owner reads the rest again.
                    p.ledger.lost = true;
                    // A partition it held paused reads again: several
                    // shards may share it (ADR 0031), and a gone shard
                    // will never empty its held envelopes to resume it.
                    if p.paused {
                        p.paused = false;
                        p.blocked = false;
                        self.out.push_back(FeedOutput::Resume(shard));
                    }
                }
            }
            FeedInput::Retry => {
                let blocked: Vec<ShardId> = self.parts.iter().filter(|(_, p)| p.blocked).map(|(s, _)| *s).collect();
                for s in blocked {
                    if let Some(p) = self.parts.get_mut(&s) {
                        p.blocked = false;
                    }
                    self.mark_ready(s);
                }
            }
            FeedInput::Progress(durable) => {
                let mut offsets = Vec::new();
                for (s, inputs) in durable {
                    if let Some(next) = self.parts.get_mut(&s).and_then(|p| p.ledger.to_commit(inputs)) {
                        offsets.push((s, next));
                    }
                }
                if !offsets.is_empty() {
                    self.out.push_back(FeedOutput::Commit(offsets));
                }
            }
            FeedInput::Committed(offsets) => {
                for (s, next) in offsets {
                    if let Some(p) = self.parts.get_mut(&s) {
                        p.ledger.committed(next);
                    }
                }
            }
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<FeedOutput> {
        if let Some(o) = self.out.pop_front() {
            return Some(o);
        }
        while let Some(s) = self.ready.pop_front() {
            let max_held = self.max_held;
            let Some(p) = self.parts.get_mut(&s) else { continue };
            p.queued = false;
            if !p.can_offer() {
                continue;
            }
            let wait = p.held.len() > max_held;
            let (offset, env) = p.held.pop_front()?;
            p.offering = true;
            return Some(FeedOutput::Hand { shard: s, offset, env, wait });
        }
        None
    }

    /// Beyond `max_held`, pausing did not stop the records: the shell is
    /// to wait for the shard instead of trying again later.
    fn unblock_if_over(&mut self, shard: ShardId) {
        let max_held = self.max_held;
        if let Some(p) = self.parts.get_mut(&shard)
            && p.held.len() > max_held
        {
            p.blocked = false;
        }
    }

    fn mark_ready(&mut self, shard: ShardId) {
        if let Some(p) = self.parts.get_mut(&shard)
            && p.can_offer()
            && !p.queued
        {
            p.queued = true;
            self.ready.push_back(shard);
        }
    }
}

/// Maps a count of durable inputs back to partition offsets.
#[derive(Default)]
struct OffsetLedger {
    /// Offsets handed to the actor and not yet durable, in order.
    pending: VecDeque<i64>,
    handed: u64,
    /// The newest offset whose work is done, and the newest committed.
    durable: Option<i64>,
    committed: Option<i64>,
    /// Records were dropped unhanded (the shard's queue was gone): no
    /// offset after them may be committed, nor may later records be
    /// counted done.
    lost: bool,
}

impl OffsetLedger {
    fn handed(&mut self, offset: i64) {
        if self.lost {
            return;
        }
        self.handed += 1;
        self.pending.push_back(offset);
    }

    /// A record with no work (unreadable) and nothing pending before it:
    /// done as soon as everything handed before it is.
    fn skipped(&mut self, offset: i64) {
        if self.pending.is_empty() && !self.lost {
            self.durable = Some(self.durable.map_or(offset, |d| d.max(offset)));
        }
    }

    /// Given how many handed inputs are durable, the offset to commit next
    /// (the one after the newest durable), if it is not committed yet.
    fn to_commit(&mut self, durable_inputs: u64) -> Option<i64> {
        while self.handed - (self.pending.len() as u64) < durable_inputs {
            match self.pending.pop_front() {
                Some(off) => self.durable = Some(off),
                None => break,
            }
        }
        self.durable.filter(|d| self.committed != Some(*d)).map(|d| d + 1)
    }

    fn committed(&mut self, next: i64) {
        self.committed = Some(next - 1);
    }
}

#[cfg(test)]
mod tests;
