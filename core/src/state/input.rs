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
//! [`ShardState::handle_timeout`]: super::ShardState::handle_timeout

use iris_envelope::Millis;

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

    /// The newest instant at which every input that had arrived was
    /// handed on: `now` while the pump waits for input and nothing is held
    /// upstream.
    pub fn caught_up(&self, now: Millis) -> Millis {
        if self.idle && !self.held() { now } else { self.caught_up }
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
    fn the_bug_switch_brings_back_the_old_judgement() {
        let mut c = InputClock::default().with_paused_looking_caught_up();
        c.set_held_upstream(true);
        c.mark(150, true, true);
        assert_eq!(c.caught_up(250), 250);
    }
}
