//! The ticket ledger: the order in which a shard's writes become durable
//! and its outputs may leave. Pure; reusable by any state machine whose
//! outputs must wait for writes.
//!
//! Every write gets a ticket, in issue order. Every output is tagged with
//! the newest ticket issued when it was made, and is released only once
//! that ticket and every one before it committed. So an acknowledgement
//! never leaves before its write is synced, and outputs leave in the order
//! they were made even when commits finish out of order. An output may also
//! depend on particular tickets (the write it acknowledges, or the one a
//! duplicate waits on): if any of those failed, it is replaced by what its
//! failure looks like (`on_failure`), or dropped.
//!
//! Inputs are counted the same way: an input is durable once the newest
//! ticket at its end committed, so a bus can forget (commit the offsets of)
//! exactly the inputs whose work is durable. A failed write holds back
//! every input from the first failure on until the owner has reset and its
//! repair write, if any, committed ([`TicketLedger::repaired_by`]): what
//! failed and gets no answer a client would retry on (a status, an ack) is
//! durable only once repaired, and if the shard moves first, its next owner
//! reads those inputs again.

use std::collections::{BTreeSet, VecDeque};

/// A commit ticket.
pub type Ticket = u64;

/// See the module docs.
pub struct TicketLedger<O> {
    next: Ticket,
    /// Every ticket up to here committed (or failed).
    done_upto: Ticket,
    /// Tickets beyond `done_upto` that finished early.
    done_ahead: BTreeSet<Ticket>,
    /// Tickets whose write failed (until [`TicketLedger::forget_failures`]).
    failed: BTreeSet<Ticket>,
    /// A write failed since the last `forget_failures`.
    poisoned: bool,
    /// Outputs waiting: (tag, dependencies, output).
    waiting: VecDeque<(Ticket, Vec<Ticket>, O)>,
    ready: VecDeque<O>,
    inputs_seen: u64,
    inputs_durable: u64,
    /// (inputs seen, newest ticket then) for inputs not yet durable.
    durable_marks: VecDeque<(u64, Ticket)>,
    on_failure: fn(O) -> Option<O>,
    /// Outputs of this kind are no longer wanted
    /// ([`TicketLedger::abandon`]): those that wait and those made later are
    /// dropped; tickets are still counted.
    abandoned: Option<fn(&O) -> bool>,
}

impl<O> TicketLedger<O> {
    /// An empty ledger; `on_failure` turns an output whose write failed into
    /// what the client sees instead (or drops it).
    pub fn new(on_failure: fn(O) -> Option<O>) -> Self {
        Self {
            next: 1,
            done_upto: 0,
            done_ahead: BTreeSet::new(),
            failed: BTreeSet::new(),
            poisoned: false,
            waiting: VecDeque::new(),
            ready: VecDeque::new(),
            inputs_seen: 0,
            inputs_durable: 0,
            durable_marks: VecDeque::new(),
            on_failure,
            abandoned: None,
        }
    }

    /// Drops every output `unwanted` picks that still waits for a write,
    /// and every such output made or released from now on; the others go on
    /// as before, and outputs already released stay to be polled. Returns how
    /// many were dropped now. Writes in flight still finish and are counted.
    pub fn abandon(&mut self, unwanted: fn(&O) -> bool) -> usize {
        self.abandoned = Some(unwanted);
        let before = self.waiting.len();
        self.waiting.retain(|(_, _, o)| !unwanted(o));
        before - self.waiting.len()
    }

    fn wanted(&self, o: &O) -> bool {
        self.abandoned.is_none_or(|unwanted| !unwanted(o))
    }

    /// A new ticket for a write.
    pub fn issue(&mut self) -> Ticket {
        let t = self.next;
        self.next += 1;
        t
    }

    /// The ticket the next [`TicketLedger::issue`] returns.
    pub fn next(&self) -> Ticket {
        self.next
    }

    /// Every ticket up to this one is done (committed or failed).
    pub fn done_upto(&self) -> Ticket {
        self.done_upto
    }

    /// Whether `ticket`'s write failed.
    pub fn failed(&self, ticket: Ticket) -> bool {
        self.failed.contains(&ticket)
    }

    /// A write failed and not every write since has finished: in-memory
    /// state may be ahead of storage.
    pub fn poisoned(&self) -> bool {
        self.poisoned
    }

    /// Writes issued and not finished.
    pub fn inflight(&self) -> u64 {
        self.next - 1 - self.done_upto - self.done_ahead.len() as u64
    }

    /// Forgets failed tickets once nothing is in flight (every output that
    /// depended on them has left). The inputs they held back stay held
    /// until [`TicketLedger::repaired_by`].
    pub fn forget_failures(&mut self) {
        debug_assert_eq!(self.inflight(), 0);
        self.failed.clear();
        self.poisoned = false;
    }

    /// After [`TicketLedger::forget_failures`]: the inputs held back by the
    /// failures are durable once `repair` (the write that repairs what
    /// failed) is, or at once when nothing needed repair.
    pub fn repaired_by(&mut self, repair: Option<Ticket>) {
        if let Some(r) = repair {
            for (_, t) in &mut self.durable_marks {
                *t = (*t).max(r);
            }
        }
        self.release_inputs();
    }

    /// Whether an input whose newest ticket is `tag` is held back by a
    /// failure not yet repaired.
    fn held_by_failure(&self, tag: Ticket) -> bool {
        self.failed.first().is_some_and(|f| tag >= *f)
    }

    fn release_inputs(&mut self) {
        while let Some((_, t)) = self.durable_marks.front() {
            if *t > self.done_upto || self.held_by_failure(*t) {
                break;
            }
            let (n, _) = self.durable_marks.pop_front().expect("front exists");
            self.inputs_durable = n;
        }
    }

    /// Queues outputs made now: released once the newest ticket so far is
    /// done; replaced by their failure if any of `deps` failed.
    pub fn emit(&mut self, outputs: Vec<O>, deps: &[Ticket]) {
        let tag = self.next - 1;
        for o in outputs {
            if !self.wanted(&o) {
                continue;
            }
            if tag > self.done_upto {
                self.waiting.push_back((tag, deps.to_vec(), o));
            } else if deps.iter().any(|d| self.failed.contains(d)) {
                if let Some(o) = (self.on_failure)(o).filter(|o| self.wanted(o)) {
                    self.ready.push_back(o);
                }
            } else {
                self.ready.push_back(o);
            }
        }
    }

    /// Counts an input as handled: durable once the newest ticket so far is.
    pub fn input_done(&mut self) {
        self.inputs_seen += 1;
        let tag = self.next - 1;
        if tag <= self.done_upto && self.durable_marks.is_empty() && !self.held_by_failure(tag) {
            self.inputs_durable = self.inputs_seen;
        } else {
            self.durable_marks.push_back((self.inputs_seen, tag));
        }
    }

    /// Inputs handled so far.
    pub fn inputs_seen(&self) -> u64 {
        self.inputs_seen
    }

    /// Inputs, in arrival order, whose writes are all durable.
    pub fn inputs_durable(&self) -> u64 {
        self.inputs_durable
    }

    /// Records that `ticket`'s write finished; `ok` false if it failed.
    /// Releases what waited for it (and for the tickets before it).
    pub fn committed(&mut self, ticket: Ticket, ok: bool) {
        if !ok {
            self.failed.insert(ticket);
            self.poisoned = true;
        }
        if ticket == self.done_upto + 1 {
            self.done_upto = ticket;
            while self.done_ahead.remove(&(self.done_upto + 1)) {
                self.done_upto += 1;
            }
        } else if ticket > self.done_upto {
            self.done_ahead.insert(ticket);
        }
        self.release_inputs();
        while let Some((t, _, _)) = self.waiting.front() {
            if *t > self.done_upto {
                break;
            }
            let (_, deps, o) = self.waiting.pop_front().expect("front exists");
            let o = if deps.iter().any(|d| self.failed.contains(d)) { (self.on_failure)(o) } else { Some(o) };
            if let Some(o) = o.filter(|o| self.wanted(o)) {
                self.ready.push_back(o);
            }
        }
    }

    /// The next output released, if any.
    pub fn poll(&mut self) -> Option<O> {
        self.ready.pop_front()
    }

    /// Every output released now.
    pub fn drain(&mut self) -> Vec<O> {
        self.ready.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(o: &'static str) -> Option<&'static str> {
        match o {
            "ack" => Some("error"),
            _ => None,
        }
    }

    fn ledger() -> TicketLedger<&'static str> {
        TicketLedger::new(failure)
    }

    #[test]
    fn outputs_wait_for_every_write_before_them_and_leave_in_order() {
        let mut l = ledger();
        l.emit(vec!["free"], &[]);
        assert_eq!(l.drain(), ["free"], "nothing in flight: released at once");
        let a = l.issue();
        l.emit(vec!["a"], &[a]);
        let b = l.issue();
        l.emit(vec!["b"], &[b]);
        l.emit(vec!["after-b"], &[]);
        assert_eq!(l.inflight(), 2);
        l.committed(b, true);
        assert!(l.drain().is_empty(), "b finished first, but a is still in flight");
        l.committed(a, true);
        assert_eq!(l.drain(), ["a", "b", "after-b"]);
        assert_eq!(l.inflight(), 0);
    }

    #[test]
    fn an_output_whose_write_failed_is_replaced_by_its_failure_and_the_others_go() {
        let mut l = ledger();
        let a = l.issue();
        l.emit(vec!["ack", "frame"], &[a]);
        let b = l.issue();
        l.emit(vec!["ack"], &[b]);
        l.committed(a, false);
        l.committed(b, true);
        assert_eq!(l.drain(), ["error", "ack"], "a's ack becomes an error, its frame is dropped, b's ack goes");
        assert!(l.poisoned() && l.failed(a) && !l.failed(b));
        // A duplicate waiting on a failed write, made after it finished.
        l.emit(vec!["ack"], &[a]);
        assert_eq!(l.drain(), ["error"]);
        l.forget_failures();
        assert!(!l.poisoned() && !l.failed(a));
    }

    #[test]
    fn inputs_are_durable_in_arrival_order() {
        let mut l = ledger();
        l.input_done();
        assert_eq!(l.inputs_durable(), 1, "no write: durable at once");
        let a = l.issue();
        l.input_done();
        l.input_done(); // writes nothing, but arrived after a's write
        let b = l.issue();
        l.input_done();
        assert_eq!((l.inputs_seen(), l.inputs_durable()), (4, 1));
        l.committed(b, true);
        assert_eq!(l.inputs_durable(), 1, "b's input waits for a");
        l.committed(a, true);
        assert_eq!(l.inputs_durable(), 4);
    }

    #[test]
    fn inputs_from_a_failed_write_on_are_durable_only_once_repaired() {
        let mut l = ledger();
        let a = l.issue();
        l.input_done();
        let b = l.issue();
        l.input_done();
        l.input_done(); // no write of its own, after b
        l.committed(a, true);
        l.committed(b, false);
        assert_eq!(l.inputs_durable(), 1, "b failed: its input and those after it wait");
        l.forget_failures();
        let repair = l.issue();
        l.repaired_by(Some(repair));
        l.input_done(); // arrives during the repair
        assert_eq!(l.inputs_durable(), 1, "the repair is in flight");
        l.committed(repair, true);
        assert_eq!(l.inputs_durable(), 4);
        // A failure with nothing to repair (a send: its client retries).
        let c = l.issue();
        l.input_done();
        l.committed(c, false);
        assert_eq!(l.inputs_durable(), 4);
        l.forget_failures();
        l.repaired_by(None);
        assert_eq!(l.inputs_durable(), 5);
    }

    #[test]
    fn an_abandoned_kind_is_dropped_waiting_and_coming_the_rest_goes_on() {
        let mut l = ledger();
        let views = |o: &&'static str| o.starts_with("view");
        let a = l.issue();
        l.emit(vec!["view-a"], &[a]);
        l.committed(a, true);
        let b = l.issue();
        l.input_done();
        l.emit(vec!["view-b", "ack", "read"], &[b]);
        assert_eq!(l.abandon(views), 1, "b's view waited: dropped");
        l.emit(vec!["view-free", "free"], &[]);
        l.committed(b, false);
        assert_eq!(
            l.drain(),
            ["view-a", "error", "free"],
            "released before: still goes; b's ack turns into its failure, its read is dropped as failed outputs are; \
             no view after"
        );
        assert_eq!((l.inflight(), l.inputs_durable()), (0, 0), "the write finished; its input waits for the reset");
        l.forget_failures();
        l.repaired_by(None);
        assert_eq!(l.inputs_durable(), 1);
    }
}
