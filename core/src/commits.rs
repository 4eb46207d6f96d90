//! Group commit for one shard: the writes of inputs handled while earlier
//! commits are in flight wait here and then go to the store as one batch.
//!
//! Pure: the actor pushes each input's `(ticket, batch)`, asks for the next
//! commit to start, and reports each one's end. Tickets stay in order (a
//! merged commit holds consecutive tickets, its writes in ticket order), so
//! the store applies them as it would have applied them one by one, in one
//! round trip. A merged commit fails or succeeds as a whole; every ticket in
//! it gets that result.

use crate::state::Ticket;
use iris_storage::WriteBatch;
use std::collections::VecDeque;

/// The writes waiting for a commit, and how many commits are running.
#[derive(Debug)]
pub struct CommitQueue {
    waiting: VecDeque<(Ticket, WriteBatch)>,
    in_flight: usize,
    max_in_flight: usize,
    max_ops: usize,
}

/// One store commit: the tickets it completes and their writes.
#[derive(Debug)]
pub struct Commit {
    /// The tickets, in order.
    pub tickets: Vec<Ticket>,
    /// Their writes, concatenated in ticket order.
    pub batch: WriteBatch,
}

impl CommitQueue {
    /// At most `max_in_flight` commits run at once; a merged commit holds
    /// at most `max_ops` writes (one input's writes are never split).
    pub fn new(max_in_flight: usize, max_ops: usize) -> Self {
        Self { waiting: VecDeque::new(), in_flight: 0, max_in_flight: max_in_flight.max(1), max_ops: max_ops.max(1) }
    }

    /// Queues an input's writes.
    pub fn push(&mut self, ticket: Ticket, batch: WriteBatch) {
        debug_assert!(self.waiting.back().is_none_or(|(t, _)| *t < ticket), "tickets arrive in order");
        self.waiting.push_back((ticket, batch));
    }

    /// The next commit to start, if one may start: everything waiting, up
    /// to `max_ops` writes.
    pub fn poll(&mut self) -> Option<Commit> {
        if self.in_flight >= self.max_in_flight || self.waiting.is_empty() {
            return None;
        }
        let mut commit = Commit { tickets: Vec::new(), batch: WriteBatch::default() };
        while let Some((_, next)) = self.waiting.front() {
            let fits = commit.batch.ops.len() + next.ops.len() <= self.max_ops;
            if !commit.tickets.is_empty() && !fits {
                break;
            }
            let (ticket, batch) = self.waiting.pop_front().expect("front exists");
            commit.tickets.push(ticket);
            commit.batch.ops.extend(batch.ops);
        }
        self.in_flight += 1;
        Some(commit)
    }

    /// A commit started by [`CommitQueue::poll`] ended.
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Commits running.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Inputs whose writes wait for a commit.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iris_storage::WriteOp;

    fn batch(n: usize) -> WriteBatch {
        let mut b = WriteBatch::default();
        for i in 0..n {
            b.push(WriteOp::ReceiptsDelivered {
                user: iris_envelope::UserKey::new("t", format!("u{i}")),
                msg_ids: vec![],
            });
        }
        b
    }

    #[test]
    fn writes_that_wait_behind_running_commits_go_together_in_ticket_order() {
        let mut q = CommitQueue::new(1, 100);
        q.push(1, batch(2));
        let first = q.poll().expect("nothing running: starts at once");
        assert_eq!((first.tickets, first.batch.ops.len()), (vec![1], 2));
        q.push(2, batch(1));
        q.push(3, batch(3));
        assert!(q.poll().is_none(), "one commit at a time");
        q.finished();
        let merged = q.poll().expect("the waiting ones, together");
        assert_eq!((merged.tickets, merged.batch.ops.len()), (vec![2, 3], 4));
        assert!(q.poll().is_none());
        q.finished();
        assert_eq!((q.in_flight(), q.waiting()), (0, 0));
    }

    #[test]
    fn a_merged_commit_stops_at_the_write_bound_but_never_splits_an_input() {
        let mut q = CommitQueue::new(2, 4);
        for t in 1..=4 {
            q.push(t, batch(if t == 2 { 6 } else { 2 }));
        }
        let a = q.poll().unwrap();
        assert_eq!(a.tickets, vec![1], "ticket 2 alone is over the bound");
        let b = q.poll().unwrap();
        assert_eq!((b.tickets, b.batch.ops.len()), (vec![2], 6), "an input's writes stay whole");
        assert!(q.poll().is_none(), "two in flight");
        q.finished();
        let c = q.poll().unwrap();
        assert_eq!(c.tickets, vec![3, 4]);
    }
}
