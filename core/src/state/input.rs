//! How far a shard has read its input, for the edge-lease check.
//!
//! A lease may end only when the shard has read everything that arrived
//! for it: a heartbeat still waiting in the shard's queue, or held before
//! it (a bus partition paused because the queue was full), would renew the
//! lease it is about to end. [`InputClock`] is that judgement, pure: the
//! actor's pump marks it as it takes envelopes, the feed tells it when
//! envelopes are held upstream, and the lease check reads
//! [`InputClock::caught_up`] (handed to [`ShardState::handle_timeout`]).
//!
//! An empty queue only says that nothing *reached* the shard: a consumer
//! that stalls (cut off from the brokers), a process that was stopped
//! (SIGSTOP, a long pause) or a clock that jumped forward all look idle and
//! caught up while the edges' renewals wait on the bus or were never
//! stamped. So in a region the clock also judges by **ticks**: the actor
//! publishes [`InputClock::tick`] to its own partition every eighth of a
//! lease, the pump shows the clock every input it takes
//! ([`InputClock::took`]), and the shard counts as caught up no further
//! than the newest tick of its own it has read back (found by the
//! simulator: a node back from a stop ended the lease of every edge, and
//! wrote offline records over the new owner's).
//!
//! [`ShardState::handle_timeout`]: super::ShardState::handle_timeout

use iris_envelope::{Millis, ShardInput};

/// When a shard last had nothing unread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputClock {
    /// The newest instant at which the queue was empty with nothing held upstream.
    caught_up: Millis,
    /// The pump waits for input (the queue is empty and the actor took
    /// everything handed to it).
    idle: bool,
    /// Envelopes for this shard are held before its queue.
    held_upstream: bool,
    /// Test-only: the bug this clock once had (a paused partition's empty
    /// queue looked caught up), for the simulator to find.
    ignore_upstream: bool,
    /// Judging by ticks: this clock's origin, and the `at` of the newest of
    /// its own ticks read back (at first, when it started).
    ticks: Option<(u64, Millis)>,
}

impl InputClock {
    /// The pump looked at its queue at `now`: `queue_empty` when nothing
    /// waits in it, `idle` when it also waits for the next envelope.
    pub fn mark(&mut self, now: Millis, queue_empty: bool, idle: bool) {
        let upstream = self.held();
        if queue_empty && !upstream {
            self.caught_up = now;
        }
        self.idle = idle && !upstream;
    }

    /// Envelopes for this shard are (or are no longer) held before its
    /// queue: while they are, an empty queue does not mean caught up.
    pub fn set_held_upstream(&mut self, held: bool) {
        self.held_upstream = held;
    }

    /// A clock that also judges by ticks (see the module's comment), with
    /// `origin` (random per shard actor, so that an earlier owner's ticks
    /// are not taken for its own), started at `now`.
    pub fn with_ticks(mut self, origin: u64, now: Millis) -> Self {
        self.ticks = Some((origin, now));
        self
    }

    /// The tick to publish to the shard's own partition at `now` (every
    /// eighth of a lease); none for a clock without ticks.
    pub fn tick(&self, now: Millis) -> Option<ShardInput> {
        self.ticks.map(|(origin, _)| ShardInput::Tick { origin, at: now })
    }

    /// The pump took `input` from the queue: one of this clock's own ticks
    /// says that everything before it on the partition has been read.
    pub fn took(&mut self, input: &ShardInput) {
        if let (Some((origin, read)), ShardInput::Tick { origin: from, at }) = (&mut self.ticks, input)
            && *from == *origin
        {
            *read = (*read).max(*at);
        }
    }

    /// The newest instant at which every input that had arrived was
    /// handed on: `now` while the pump waits for input and nothing is held
    /// upstream, but with ticks never later than the newest tick read.
    pub fn caught_up(&self, now: Millis) -> Millis {
        let queue = if self.idle && !self.held() { now } else { self.caught_up };
        match self.ticks {
            Some((_, read)) => queue.min(read),
            None => queue,
        }
    }

    /// Envelopes wait before the queue (as this clock judges it).
    fn held(&self) -> bool {
        self.held_upstream && !self.ignore_upstream
    }

    /// Brings back the bug this clock once had: held envelopes are ignored,
    /// so a paused partition with an empty queue looks caught up. For the
    /// simulator's bug switch only.
    #[doc(hidden)]
    pub fn with_paused_looking_caught_up(mut self) -> Self {
        self.ignore_upstream = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_pump_is_caught_up_now() {
        let mut c = InputClock::default();
        c.mark(100, true, true);
        assert_eq!(c.caught_up(250), 250);
    }

    #[test]
    fn a_busy_pump_is_caught_up_when_its_queue_was_last_empty() {
        let mut c = InputClock::default();
        c.mark(100, true, false);
        c.mark(150, false, false);
        assert_eq!(c.caught_up(250), 100);
    }

    #[test]
    fn an_empty_queue_with_envelopes_held_upstream_is_not_caught_up() {
        let mut c = InputClock::default();
        c.mark(100, true, true);
        c.set_held_upstream(true);
        c.mark(150, true, true);
        assert_eq!(c.caught_up(250), 100);
        c.set_held_upstream(false);
        c.mark(300, true, true);
        assert_eq!(c.caught_up(310), 310);
    }

    #[test]
    fn with_ticks_an_idle_shard_is_caught_up_only_as_far_as_its_newest_tick_read() {
        let mut c = InputClock::default().with_ticks(7, 1_000);
        c.mark(1_000, true, true);
        // Idle, but no tick has come back since the start: a consumer that
        // reads nothing looks exactly like this.
        assert_eq!(c.caught_up(5_000), 1_000);
        let tick = c.tick(4_000).unwrap();
        assert_eq!(tick, ShardInput::Tick { origin: 7, at: 4_000 });
        c.took(&tick);
        assert_eq!(c.caught_up(5_000), 4_000);
        // An older tick read late does not move it back.
        c.took(&ShardInput::Tick { origin: 7, at: 3_000 });
        assert_eq!(c.caught_up(5_000), 4_000);
        // A busy pump is still judged by its queue, when that is older.
        c.mark(4_500, false, false);
        assert_eq!(c.caught_up(5_000), 1_000);
    }

    #[test]
    fn another_origins_ticks_do_not_count() {
        let mut c = InputClock::default().with_ticks(7, 1_000);
        c.mark(1_000, true, true);
        c.took(&ShardInput::Tick { origin: 8, at: 9_000 });
        assert_eq!(c.caught_up(10_000), 1_000);
        assert_eq!(InputClock::default().tick(10), None, "no ticks unless asked for");
    }

    #[test]
    fn the_bug_switch_brings_back_the_old_judgement() {
        let mut c = InputClock::default().with_paused_looking_caught_up();
        c.set_held_upstream(true);
        c.mark(150, true, true);
        assert_eq!(c.caught_up(250), 250);
    }
}
