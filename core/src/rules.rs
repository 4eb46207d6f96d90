//! The shard shell's rules (issue 18): what `actor.rs` does with an output
//! the bus cannot take at once, how many permits a durable count frees, and
//! how one shard's limits and timers follow from the node's settings. Pure
//! and tested here; the actor only carries them out (and counts what they
//! drop in metrics).

use crate::actor::ShardsConfig;
use crate::state::ShardConfig;
use iris_envelope::ShardId;
use std::time::Duration;

/// Commits one shard runs at once (`CommitQueue`): two, so one can fill
/// while the other is on its way to the store.
pub const COMMITS_IN_FLIGHT: usize = 2;

/// Most writes merged into one commit.
pub const MAX_COMMIT_OPS: usize = 512;

/// Shard-to-shard publishes that may wait for room at once, per node.
pub const DETACHED_PUBLISHES: usize = 65_536;

/// The least time between two lease checks of a shard.
pub const MIN_LEASE_CHECK: Duration = Duration::from_millis(50);

/// Idempotency records a shard remembers beyond its writes in flight
/// ([`ShardConfig::recent_dedup`]): what the pump's look-ahead relies on.
pub const RECENT_DEDUP_MARGIN: usize = 1_024;

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue or partition has no room now.
    Full,
    /// No one reads it any more (an edge gone, a shard revoked).
    Closed,
}

/// Why an output was dropped, for the metric and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Typing or a heartbeat: the next one covers it.
    Ephemeral,
    /// The edge is gone, and its sessions with it.
    EdgeGone,
    /// The shard's queue is closed: revoked here, its new owner reads the
    /// envelope's partition, not this queue.
    ShardGone,
    /// Shard queues full and [`DETACHED_PUBLISHES`] already waiting.
    TooManyWaiting,
}

/// What becomes of an edge output the bus refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeFate {
    /// It and every output after it go in order while the actor waits.
    Wait,
    /// Dropped.
    Drop(Dropped),
}

/// An edge output refused: one that may be dropped is dropped when the
/// edge's queue is full (the rest wait, in order, so nothing overtakes
/// what a client must see first); anything for a closed edge is dropped.
pub fn edge_refused(refusal: Refusal, droppable: bool) -> EdgeFate {
    match refusal {
        Refusal::Full if droppable => EdgeFate::Drop(Dropped::Ephemeral),
        Refusal::Full => EdgeFate::Wait,
        Refusal::Closed => EdgeFate::Drop(Dropped::EdgeGone),
    }
}

/// What becomes of a shard-to-shard output (a receipt, a notice to a
/// follower's shard) the bus refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardFate {
    /// It waits for room in a task of its own: the shard goes on.
    Detach,
    /// Dropped.
    Drop(Dropped),
}

/// A shard output refused. The shard never waits for another shard's
/// queue (it could wait for itself, or for a shard that waits for it): a
/// full queue hands the publish to a detached task while one of the
/// node's [`DETACHED_PUBLISHES`] slots is free (`slot_free`), and drops it
/// beyond; a closed queue drops it.
pub fn shard_refused(refusal: Refusal, slot_free: bool) -> ShardFate {
    match refusal {
        Refusal::Full if slot_free => ShardFate::Detach,
        Refusal::Full => ShardFate::Drop(Dropped::TooManyWaiting),
        Refusal::Closed => ShardFate::Drop(Dropped::ShardGone),
    }
}

/// How many permits to give back, oldest first, now that `durable` inputs
/// are durable: each permit was taken by an input and is held until that
/// input (the `arrival`-th) is durable, which is the shard's back-pressure
/// on its bus (`max_inflight_writes` inputs outstanding at most).
pub fn permits_released(arrivals: impl IntoIterator<Item = u64>, durable: u64) -> usize {
    arrivals.into_iter().take_while(|&n| n <= durable).count()
}

/// How often a shard checks edge leases, publishes its tick and repairs
/// failed records when idle: eight times per lease, at least every
/// [`MIN_LEASE_CHECK`].
pub fn lease_check_every(edge_lease_ms: u64) -> Duration {
    Duration::from_millis(edge_lease_ms / 8).max(MIN_LEASE_CHECK)
}

/// One shard's limits from the node's settings. `instance` is what keeps
/// this actor apart from every other (see [`tick_origin`]); the message-id
/// seed folds it to 32 bits.
pub fn shard_config(cfg: &ShardsConfig, shard: ShardId, instance: u64) -> ShardConfig {
    ShardConfig {
        shard,
        max_cached_users: cfg.max_cached_users,
        max_contacts: cfg.max_contacts,
        max_subscribers: cfg.max_subscribers,
        max_sessions: cfg.max_sessions,
        id_seed: (instance ^ (instance >> 32)) as u32,
        recent_dedup: cfg.max_inflight_writes + RECENT_DEDUP_MARGIN,
        edge_lease_ms: cfg.edge_lease_ms as i64,
        region: cfg.region.as_str().into(),
        page_max_bytes: cfg.page_max_bytes,
        mark_presence: cfg.mark_presence,
    }
}

/// A shard actor's tick origin: distinct per actor started here (the
/// count), per shard, per host (the seed) and per start (the time), so that
/// a shard never takes an earlier owner's ticks for its own.
pub fn tick_origin(seed: u64, shard: ShardId, started: u64, now: i64) -> u64 {
    iris_clock::splitmix64(seed ^ (u64::from(shard.0) << 40) ^ started.rotate_left(20) ^ (now as u64).rotate_left(7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_edge_drops_only_what_may_be_dropped_and_a_gone_one_drops_all() {
        assert_eq!(edge_refused(Refusal::Full, true), EdgeFate::Drop(Dropped::Ephemeral));
        assert_eq!(edge_refused(Refusal::Full, false), EdgeFate::Wait);
        assert_eq!(edge_refused(Refusal::Closed, false), EdgeFate::Drop(Dropped::EdgeGone));
        assert_eq!(edge_refused(Refusal::Closed, true), EdgeFate::Drop(Dropped::EdgeGone));
    }

    #[test]
    fn a_full_shard_queue_detaches_while_slots_last_and_never_makes_the_shard_wait() {
        assert_eq!(shard_refused(Refusal::Full, true), ShardFate::Detach);
        assert_eq!(shard_refused(Refusal::Full, false), ShardFate::Drop(Dropped::TooManyWaiting));
        assert_eq!(shard_refused(Refusal::Closed, true), ShardFate::Drop(Dropped::ShardGone));
    }

    #[test]
    fn permits_come_back_in_arrival_order_once_their_input_is_durable() {
        assert_eq!(permits_released([1, 2, 5, 6], 0), 0);
        assert_eq!(permits_released([1, 2, 5, 6], 2), 2);
        assert_eq!(permits_released([1, 2, 5, 6], 5), 3);
        assert_eq!(permits_released([1, 2, 5, 6], 9), 4);
        // An older permit not yet durable holds back the ones behind it.
        assert_eq!(permits_released([7, 3], 5), 0);
    }

    #[test]
    fn leases_are_checked_eight_times_a_lease_but_not_more_often_than_every_50_ms() {
        assert_eq!(lease_check_every(10_000), Duration::from_millis(1_250));
        assert_eq!(lease_check_every(400), MIN_LEASE_CHECK);
        assert_eq!(lease_check_every(0), MIN_LEASE_CHECK);
    }

    #[test]
    fn a_shard_takes_the_node_s_limits_and_a_seed_of_its_own() {
        let cfg = ShardsConfig {
            shards: 8,
            threads: 2,
            max_inflight_writes: 100,
            max_cached_users: 10,
            max_contacts: 20,
            max_subscribers: 30,
            max_sessions: 4,
            page_max_bytes: 1 << 16,
            edge_lease_ms: 10_000,
            region: "eu".into(),
            outbox_max: None,
            mark_presence: true,
        };
        let a = shard_config(&cfg, ShardId(3), tick_origin(7, ShardId(3), 0, 0));
        let b = shard_config(&cfg, ShardId(3), tick_origin(7, ShardId(3), 1, 0));
        assert_eq!((a.shard, a.max_sessions, a.edge_lease_ms, &*a.region), (ShardId(3), 4, 10_000, "eu"));
        assert_eq!(a.recent_dedup, 100 + RECENT_DEDUP_MARGIN, "the look-ahead's margin");
        assert_ne!(a.id_seed, b.id_seed, "a shard started again here makes other message ids");
    }

    #[test]
    fn tick_origins_differ_by_start_shard_host_and_time() {
        let base = tick_origin(1, ShardId(0), 0, 0);
        for other in [
            tick_origin(2, ShardId(0), 0, 0),
            tick_origin(1, ShardId(1), 0, 0),
            tick_origin(1, ShardId(0), 1, 0),
            tick_origin(1, ShardId(0), 0, 1),
        ] {
            assert_ne!(base, other);
        }
    }
}
