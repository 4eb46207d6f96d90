//! Group commit for one shard: the writes of inputs handled while earlier
//! commits are in flight wait here and then go to the store as one batch.
//!
//! Pure: the actor pushes each input's `(ticket, batch)`, asks for the next
//! commit to start, and reports each one's end. Tickets stay in order (a
//! merged commit holds consecutive tickets, its writes in ticket order), so
//! the store applies them as it would have applied them one by one, in one
//! round trip. A merged commit fails or succeeds as a whole; every ticket in
//! it gets that result.
//!
//! Inbox seqs must have no gaps (PROTOCOL), and a backend such as Redis or
//! ScyllaDB can fail one commit and take the next, or apply two running
//! commits in either order. So with such a backend (`isolate_users`) one
//! user's writes are never in two commits at once: a commit that writes to
//! a user (an inbox append, or a record that a later write replaces: the
//! session record, meta, contacts, policies, pending receipts) waits while
//! an earlier commit writing to that user runs. Otherwise a later seq could
//! land after an earlier one failed, and an older session record could land
//! after a newer one (a user shown offline while connected: found by the
//! simulator). And when a commit that appended fails, everything still
//! waiting fails with it, unwritten: a later seq can then never land after
//! an earlier one failed. (The shard answers those inputs `unavailable` and
//! reloads its users; ADR 0004.) fjall applies commits in order and fails
//! every commit after a failed one by itself, so the embedded store lets
//! one user's writes run in concurrent commits (they cost p99 latency
//! otherwise: `bench/ab`).

use crate::state::Ticket;
use iris_envelope::UserKey;
use iris_storage::{OutboxTarget, WriteBatch, WriteOp};
use std::collections::{HashMap, VecDeque};

/// The writes waiting for a commit, and how many commits are running.
#[derive(Debug)]
pub struct CommitQueue {
    waiting: VecDeque<(Ticket, WriteBatch)>,
    in_flight: usize,
    /// Users written by running commits, and how many commits.
    busy: HashMap<UserKey, usize>,
    /// Whether one user's writes wait for each other (see the module docs).
    isolate_users: bool,
    max_in_flight: usize,
    max_ops: usize,
    /// The outbox every commit's log records go to as well.
    outbox: Option<OutboxTarget>,
}

/// One store commit: the tickets it completes and their writes.
#[derive(Debug)]
pub struct Commit {
    /// The tickets, in order.
    pub tickets: Vec<Ticket>,
    /// Their writes, concatenated in ticket order.
    pub batch: WriteBatch,
    /// What [`CommitQueue::finished`] takes back when it ends.
    pub started: Started,
}

/// What a running commit holds in its queue: whether it appends to an
/// inbox, and (when users are isolated) the users it writes to, once per
/// write.
#[derive(Debug, Default)]
pub struct Started {
    appended: bool,
    users: Vec<UserKey>,
}

fn appends(batch: &WriteBatch) -> bool {
    batch.ops.iter().any(|op| matches!(op, WriteOp::Message { .. }))
}

/// The users whose state a batch writes where order matters: an append
/// takes the next seq, a record replaces the one before. (Dedup and event
/// keys are written once each; identities and rollups add up in any order;
/// a tenant's log is ordered by the store.)
fn writes_to(batch: &WriteBatch) -> impl Iterator<Item = &UserKey> {
    batch.ops.iter().filter_map(|op| match op {
        WriteOp::Message { user, .. }
        | WriteOp::Meta { user, .. }
        | WriteOp::Session { user, .. }
        | WriteOp::Receipt { user, .. }
        | WriteOp::ReceiptsDelivered { user, .. } => Some(user),
        WriteOp::Contact { owner, .. } | WriteOp::ContactRemoved { owner, .. } | WriteOp::Policy { owner, .. } => {
            Some(owner)
        }
        WriteOp::Dedup { .. }
        | WriteOp::Identity { .. }
        | WriteOp::Log { .. }
        | WriteOp::EventSeen { .. }
        | WriteOp::RollupAdd { .. } => None,
    })
}

impl CommitQueue {
    /// At most `max_in_flight` commits run at once; a merged commit holds
    /// at most `max_ops` writes (one input's writes are never split).
    pub fn new(max_in_flight: usize, max_ops: usize) -> Self {
        Self {
            waiting: VecDeque::new(),
            in_flight: 0,
            busy: HashMap::new(),
            isolate_users: true,
            max_in_flight: max_in_flight.max(1),
            max_ops: max_ops.max(1),
            outbox: None,
        }
    }

    /// The same, every commit putting its log records in `outbox` too.
    pub fn with_outbox(mut self, outbox: Option<OutboxTarget>) -> Self {
        self.outbox = outbox;
        self
    }

    /// The same, letting one user's writes run in concurrent commits when
    /// `isolate` is false (a backend that applies commits in order and
    /// whose failure fails every later commit).
    pub fn isolating_users(mut self, isolate: bool) -> Self {
        self.isolate_users = isolate;
        self
    }

    /// Queues an input's writes.
    pub fn push(&mut self, ticket: Ticket, batch: WriteBatch) {
        debug_assert!(self.waiting.back().is_none_or(|(t, _)| *t < ticket), "tickets arrive in order");
        self.waiting.push_back((ticket, batch));
    }

    /// The next commit to start, if one may start: everything waiting, up
    /// to `max_ops` writes, and up to the first input that writes to a user
    /// a running commit writes to (tickets start in order).
    pub fn poll(&mut self) -> Option<Commit> {
        if self.in_flight >= self.max_in_flight || self.waiting.is_empty() {
            return None;
        }
        let batch = WriteBatch { ops: Vec::new(), outbox: self.outbox.clone() };
        let mut commit = Commit { tickets: Vec::new(), batch, started: Started::default() };
        while let Some((_, next)) = self.waiting.front() {
            let fits = commit.batch.ops.len() + next.ops.len() <= self.max_ops;
            if !commit.tickets.is_empty() && !fits {
                break;
            }
            if self.isolate_users && writes_to(next).any(|u| self.busy.contains_key(u)) {
                break;
            }
            let (ticket, batch) = self.waiting.pop_front().expect("front exists");
            commit.started.appended |= appends(&batch);
            if self.isolate_users {
                commit.started.users.extend(writes_to(&batch).cloned());
            }
            commit.tickets.push(ticket);
            commit.batch.ops.extend(batch.ops);
        }
        if commit.tickets.is_empty() {
            return None;
        }
        for u in &commit.started.users {
            *self.busy.entry(u.clone()).or_insert(0) += 1;
        }
        self.in_flight += 1;
        Some(commit)
    }

    /// A commit started by [`CommitQueue::poll`] ended; `started` is its
    /// [`Commit::started`]. If it failed and it appended to an inbox, every
    /// input still waiting fails with it, unwritten: their tickets are
    /// returned, to be reported failed like the commit's own. (A failed
    /// commit without appends, such as forgetting delivered receipts,
    /// cannot leave a gap, so what waits goes on.)
    pub fn finished(&mut self, started: Started, ok: bool) -> Vec<Ticket> {
        self.in_flight = self.in_flight.saturating_sub(1);
        for u in &started.users {
            if let Some(n) = self.busy.get_mut(u) {
                *n -= 1;
                if *n == 0 {
                    self.busy.remove(u);
                }
            }
        }
        if ok || !started.appended { Vec::new() } else { self.waiting.drain(..).map(|(t, _)| t).collect() }
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

    fn append(user: &str, seq: u64) -> WriteBatch {
        let mut b = WriteBatch::default();
        b.push(WriteOp::Message {
            user: UserKey::new("t", user),
            message: iris_storage::StoredMessage {
                seq,
                msg_id: format!("m{seq}").into(),
                from: "x".into(),
                body: bytes::Bytes::new(),
                ts: 0,
            },
        });
        b
    }

    #[test]
    fn one_user_s_appends_are_never_in_two_running_commits() {
        let mut q = CommitQueue::new(2, 100);
        q.push(1, append("bob", 1));
        let first = q.poll().unwrap();
        q.push(2, append("bob", 2));
        q.push(3, append("ann", 1));
        assert!(q.poll().is_none(), "bob's next append waits, and ann's behind it (tickets start in order)");
        assert!(q.finished(first.started, true).is_empty());
        let next = q.poll().unwrap();
        assert_eq!(next.tickets, vec![2, 3], "together once bob's first is done");
        // A backend whose failure fails every later commit: no waiting.
        let mut q = CommitQueue::new(2, 100).isolating_users(false);
        q.push(1, append("bob", 1));
        q.poll().unwrap();
        q.push(2, append("bob", 2));
        assert_eq!(q.poll().unwrap().tickets, vec![2]);
    }

    fn session(user: &str, sessions: u32) -> WriteBatch {
        let mut b = WriteBatch::default();
        let record = iris_storage::SessionRecord { sessions, ..Default::default() };
        b.push(WriteOp::Session { user: UserKey::new("t", user), record, version: 0 });
        b
    }

    #[test]
    fn one_user_s_records_are_never_in_two_running_commits() {
        // A session closes, then another opens: the second record must not
        // land first and be overwritten by the first.
        let mut q = CommitQueue::new(2, 100);
        q.push(1, session("bob", 0));
        let first = q.poll().unwrap();
        q.push(2, session("bob", 1));
        assert!(q.poll().is_none(), "bob's newer record waits for the older one");
        q.finished(first.started, true);
        assert_eq!(q.poll().unwrap().tickets, vec![2]);
        // Another user's record does not wait.
        let mut q = CommitQueue::new(2, 100);
        q.push(1, session("bob", 0));
        q.poll().unwrap();
        q.push(2, session("ann", 1));
        assert_eq!(q.poll().unwrap().tickets, vec![2]);
    }

    #[test]
    fn a_failed_commit_fails_what_waits_so_no_later_seq_lands_after_it() {
        let mut q = CommitQueue::new(2, 100);
        q.push(1, append("bob", 1));
        let first = q.poll().unwrap();
        q.push(2, append("bob", 2));
        q.push(3, batch(1));
        assert_eq!(q.finished(first.started, false), vec![2, 3], "failed with it, unwritten");
        assert!(q.poll().is_none());
        assert_eq!((q.in_flight(), q.waiting()), (0, 0));
        // A failed commit that appended nothing leaves no gap: what waits goes on.
        q.push(4, batch(1));
        let no_appends = q.poll().unwrap();
        q.push(5, append("bob", 3));
        assert!(q.finished(no_appends.started, false).is_empty());
        assert_eq!(q.poll().unwrap().tickets, vec![5]);
    }

    /// `n` writes that no other write has to wait for (identities add up
    /// in any order).
    fn batch(n: usize) -> WriteBatch {
        let mut b = WriteBatch::default();
        for i in 0..n {
            b.push(WriteOp::Identity { user: iris_envelope::UserKey::new("t", format!("u{i}")), channel: "c".into() });
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
        q.finished(Started::default(), true);
        let merged = q.poll().expect("the waiting ones, together");
        assert_eq!((merged.tickets, merged.batch.ops.len()), (vec![2, 3], 4));
        assert!(q.poll().is_none());
        q.finished(Started::default(), true);
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
        q.finished(Started::default(), true);
        let c = q.poll().unwrap();
        assert_eq!(c.tickets, vec![3, 4]);
    }
}
