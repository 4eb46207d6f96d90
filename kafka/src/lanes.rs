//! Edge lanes: what a node produces to one edge's topic, at most
//! [`IN_FLIGHT`] records at a time, with everything that arrives meanwhile
//! merged into the next record (ADR 0027).
//!
//! Why: an edge topic has one partition, and a core writes every output for
//! that edge to it. librdkafka's idempotent producer sends no new request
//! for a partition while five of its *messages* are in flight, and while it
//! waits its broker thread wakes at once, again and again, because the
//! queued messages are due: the core's librdkafka thread spun at about a
//! third of a core at 1,000 msgs/s (`rd_kafka_toppar_producer_serve` and
//! its locks, 46 % of the core's samples). Keeping fewer than five records
//! in flight per partition means the producer never reaches that limit,
//! and merging what waits means a slow broker gets fewer, larger records
//! instead of a queue: the batching adapts to the broker's pace, with no
//! linger when the lane is idle.
//!
//! [`Lane`] decides (pure); [`crate::KafkaBus`]'s edge writer sends.

use iris_envelope::{EdgeEnvelope, EdgeInput, MAX_TRACES};
use std::collections::VecDeque;

/// Records of one lane in flight at most: below librdkafka's five messages
/// per partition for an idempotent producer.
pub(crate) const IN_FLIGHT: usize = 4;

/// Envelopes one lane holds waiting, at most; beyond, an offer is refused
/// (`Full`), as a full producer queue was before.
pub(crate) const MAX_WAITING: usize = 8_192;

/// Encoded bytes one lane holds waiting, at most.
pub(crate) const MAX_WAITING_BYTES: usize = 4 << 20;

/// Encoded bytes all lanes of a process hold waiting, at most (checked by
/// the writer, which passes `may_queue` to [`Lane::offer`]).
pub(crate) const MAX_WAITING_BYTES_PER_PROCESS: usize = 64 << 20;

/// Encoded bytes merged into one record, at most (one envelope larger than
/// this still goes, alone): well under the broker's default 1 MiB record.
pub(crate) const MERGED_BYTES: usize = 256 << 10;

/// An envelope offered to a lane, its encoded size, and whoever waits for
/// its delivery (`N`: a notifier; several once merged).
#[derive(Debug)]
pub(crate) struct Pending<N> {
    pub env: EdgeEnvelope,
    pub size: usize,
    pub done: Vec<N>,
}

/// What to do with an offered envelope.
#[derive(Debug)]
pub(crate) enum Offer<N> {
    /// Send it now, as its own record (counted in flight).
    Send(Pending<N>),
    /// It waits in the lane, to go merged into a later record.
    Queued,
    /// The lane is at its bound: refused, given back.
    Full(Pending<N>),
}

/// One edge topic's records in flight and envelopes waiting.
#[derive(Debug)]
pub(crate) struct Lane<N> {
    in_flight: usize,
    waiting: VecDeque<Pending<N>>,
    waiting_bytes: usize,
}

impl<N> Default for Lane<N> {
    fn default() -> Self {
        Self { in_flight: 0, waiting: VecDeque::new(), waiting_bytes: 0 }
    }
}

impl<N> Lane<N> {
    /// An envelope to send: at once if the lane has room in flight and
    /// nothing waits before it (order is kept), otherwise queued, unless
    /// the lane is at its bound or the process's lanes are at theirs
    /// (`may_queue` false).
    pub fn offer(&mut self, p: Pending<N>, may_queue: bool) -> Offer<N> {
        if self.in_flight < IN_FLIGHT && self.waiting.is_empty() {
            self.in_flight += 1;
            return Offer::Send(p);
        }
        if !may_queue || self.waiting.len() >= MAX_WAITING || self.waiting_bytes + p.size > MAX_WAITING_BYTES {
            return Offer::Full(p);
        }
        self.waiting_bytes += p.size;
        self.waiting.push_back(p);
        Offer::Queued
    }

    /// An offer answered `Send` could not be handed to the producer (its
    /// queue was full) and goes back to the caller: it is no longer in
    /// flight. Only right while nothing was queued after it.
    pub fn refused(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A record of this lane was delivered (or failed for good): room for
    /// the next, which is returned (what waits, merged) if any.
    pub fn completed(&mut self) -> Option<Pending<N>> {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.next()
    }

    /// The next record to send, if there is room in flight and anything
    /// waits: the waiting envelopes from the front, merged, up to
    /// [`MERGED_BYTES`] (at least one). Counted in flight.
    pub fn next(&mut self) -> Option<Pending<N>> {
        if self.in_flight >= IN_FLIGHT || self.waiting.is_empty() {
            return None;
        }
        let mut taken: Vec<Pending<N>> = Vec::new();
        let mut bytes = 0;
        while let Some(p) = self.waiting.front() {
            if !taken.is_empty() && bytes + p.size > MERGED_BYTES {
                break;
            }
            bytes += p.size;
            taken.extend(self.waiting.pop_front());
        }
        self.waiting_bytes -= bytes;
        self.in_flight += 1;
        Some(merge(taken))
    }

    /// A record returned by [`Lane::next`] could not be handed to the
    /// producer: it goes back to the front, no longer in flight, to be
    /// tried again.
    pub fn unsent(&mut self, p: Pending<N>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.waiting_bytes += p.size;
        self.waiting.push_front(p);
    }

    /// Encoded bytes waiting.
    pub fn waiting_bytes(&self) -> usize {
        self.waiting_bytes
    }

    /// Nothing in flight and nothing waiting: the lane may be forgotten.
    pub fn idle(&self) -> bool {
        self.in_flight == 0 && self.waiting.is_empty()
    }

    /// Records in flight.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Envelopes for one edge, in order, as one: a batch of every part (batches
/// are unpacked, never nested), their distinct traces up to [`MAX_TRACES`]. The size
/// is the sum of theirs (an estimate of the merged encoding, a little over).
fn merge<N>(mut ps: Vec<Pending<N>>) -> Pending<N> {
    if ps.len() == 1 {
        return ps.pop().expect("one");
    }
    let edge = ps[0].env.edge.clone();
    let mut parts: Vec<EdgeInput> = Vec::new();
    let mut traces = Vec::new();
    let mut done = Vec::new();
    let mut size = 0;
    for p in ps {
        debug_assert_eq!(p.env.edge, edge, "a lane is one edge's");
        parts.extend(p.env.body.into_parts());
        for t in p.env.traces {
            if !traces.contains(&t) {
                traces.push(t);
            }
        }
        done.extend(p.done);
        size += p.size;
    }
    traces.truncate(MAX_TRACES);
    Pending { env: EdgeEnvelope { edge, body: EdgeInput::Batch(parts), traces }, size, done }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iris_envelope::{EdgeId, SessionId};

    fn welcome(i: u64) -> Pending<u64> {
        Pending {
            env: EdgeEnvelope {
                edge: EdgeId(std::sync::Arc::from("e1")),
                body: EdgeInput::Welcome { session: SessionId(i), inbox_head: i },
                traces: Vec::new(),
            },
            size: 10,
            done: vec![i],
        }
    }

    /// A lane with [`IN_FLIGHT`] records in flight (welcomes 0, 1, ...),
    /// each of which was sent at once.
    fn busy() -> Lane<u64> {
        let mut lane = Lane::default();
        for i in 0..IN_FLIGHT as u64 {
            assert!(matches!(lane.offer(welcome(i), true), Offer::Send(_)));
        }
        lane
    }

    fn sessions(p: &Pending<u64>) -> Vec<u64> {
        p.env
            .body
            .clone()
            .into_parts()
            .into_iter()
            .map(|part| match part {
                EdgeInput::Welcome { session, .. } => session.0,
                other => panic!("not a welcome: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn an_idle_lane_sends_at_once_and_queues_beyond_its_records_in_flight() {
        let mut lane = Lane::default();
        for i in 0..IN_FLIGHT as u64 {
            assert!(matches!(lane.offer(welcome(i), true), Offer::Send(p) if sessions(&p) == [i]));
        }
        assert!(matches!(lane.offer(welcome(10), true), Offer::Queued));
        assert!(matches!(lane.offer(welcome(11), true), Offer::Queued));
        assert_eq!(lane.in_flight(), IN_FLIGHT);
        assert!(lane.next().is_none(), "no room in flight");
    }

    #[test]
    fn what_waits_goes_merged_in_order_when_a_record_completes() {
        let mut lane = busy();
        for i in 10..15 {
            let _ = lane.offer(welcome(i), true);
        }
        let next = lane.completed().expect("what waits goes");
        assert_eq!(sessions(&next), [10, 11, 12, 13, 14]);
        assert!(matches!(next.env.body, EdgeInput::Batch(_)));
        assert_eq!(next.done, [10, 11, 12, 13, 14], "every waiter is told");
        assert_eq!(next.size, 50);
        assert_eq!(lane.in_flight(), IN_FLIGHT);
        assert!(lane.completed().is_none(), "nothing left waiting");
        assert_eq!(lane.in_flight(), IN_FLIGHT - 1);
    }

    #[test]
    fn an_offer_never_overtakes_what_waits() {
        let mut lane = busy();
        let _ = lane.offer(welcome(10), true);
        let next = lane.completed().expect("10 goes");
        // The producer's queue was full: 10 waits again, with room in
        // flight. A new envelope queues behind it rather than going first.
        lane.unsent(next);
        assert!(lane.in_flight() < IN_FLIGHT);
        assert!(matches!(lane.offer(welcome(11), true), Offer::Queued));
        assert_eq!(sessions(&lane.next().expect("both go")), [10, 11]);
    }

    #[test]
    fn a_merged_record_holds_at_most_its_bytes_and_the_rest_waits() {
        let mut lane = busy();
        let per = MERGED_BYTES / 3;
        for i in 10..14 {
            let mut p = welcome(i);
            p.size = per;
            let _ = lane.offer(p, true);
        }
        let first = lane.completed().expect("some go");
        assert_eq!(sessions(&first), [10, 11, 12]);
        let second = lane.completed().expect("the rest go");
        assert_eq!(sessions(&second), [13]);
    }

    #[test]
    fn a_full_lane_refuses_and_gives_the_envelope_back() {
        let mut lane = busy();
        for i in 0..MAX_WAITING as u64 {
            assert!(matches!(lane.offer(welcome(100 + i), true), Offer::Queued));
        }
        assert!(matches!(lane.offer(welcome(7), true), Offer::Full(p) if sessions(&p) == [7]));
        let mut big = welcome(8);
        big.size = MAX_WAITING_BYTES + 1;
        let mut fresh = busy();
        assert!(matches!(fresh.offer(big, true), Offer::Full(_)), "bytes are bounded too");
    }

    #[test]
    fn a_lane_refuses_to_queue_when_the_process_is_at_its_bound_but_still_sends() {
        let mut lane = Lane::default();
        assert!(matches!(lane.offer(welcome(1), false), Offer::Send(_)), "sending needs no room to wait");
        for i in 2..=IN_FLIGHT as u64 {
            let _ = lane.offer(welcome(i), true);
        }
        assert!(matches!(lane.offer(welcome(9), false), Offer::Full(_)));
        assert!(matches!(lane.offer(welcome(9), true), Offer::Queued));
        assert_eq!(lane.waiting_bytes(), 10);
    }

    #[test]
    fn a_trace_carried_by_several_merged_envelopes_is_kept_once() {
        let mut lane = busy();
        let t = iris_envelope::TraceParent::parse(&format!("00-{:032x}-{:016x}-01", 5, 6)).expect("valid");
        for i in 10..13 {
            let mut p = welcome(i);
            p.env.traces = vec![t.clone()];
            let _ = lane.offer(p, true);
        }
        assert_eq!(lane.completed().expect("merged").env.traces, vec![t]);
    }

    #[test]
    fn an_unsent_record_goes_back_to_the_front_and_is_tried_again() {
        let mut lane = busy();
        let _ = lane.offer(welcome(10), true);
        let _ = lane.offer(welcome(11), true);
        let next = lane.completed().expect("10 and 11");
        let _ = lane.offer(welcome(12), true);
        lane.unsent(next);
        assert_eq!(lane.in_flight(), IN_FLIGHT - 1);
        let again = lane.next().expect("tried again");
        assert_eq!(sessions(&again), [10, 11, 12], "merged again, in order, never nested");
    }

    #[test]
    fn a_refused_send_leaves_the_lane_idle() {
        let mut lane = Lane::default();
        let Offer::Send(_) = lane.offer(welcome(1), true) else { panic!("an idle lane sends") };
        lane.refused();
        assert!(lane.idle());
    }

    #[test]
    fn batches_offered_are_unpacked_into_one_and_traces_are_bounded() {
        let mut lane = busy();
        for k in 0..3u64 {
            let mut p = welcome(10 + k);
            p.env.body = EdgeInput::Batch(vec![
                EdgeInput::Welcome { session: SessionId(20 + 2 * k), inbox_head: 0 },
                EdgeInput::Welcome { session: SessionId(21 + 2 * k), inbox_head: 0 },
            ]);
            p.env.traces = (0..MAX_TRACES)
                .map(|i| {
                    iris_envelope::TraceParent::parse(&format!("00-{:032x}-{:016x}-01", i + 1, k + 1)).expect("valid")
                })
                .collect();
            let _ = lane.offer(p, true);
        }
        let next = lane.completed().expect("merged");
        assert_eq!(sessions(&next), [20, 21, 22, 23, 24, 25]);
        assert_eq!(next.env.traces.len(), MAX_TRACES);
    }
}
