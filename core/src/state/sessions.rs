//! Sessions and edge leases: who is connected where, the welcome, what a
//! returning session missed, and ending the sessions of an edge that died.

use super::*;

impl ShardState {
    /// A session opens: admitted up to `max_sessions` per user, welcomed,
    /// replayed from `resume_after`, and handed its pending receipts.
    pub(super) fn session_opened(
        &mut self,
        now: Millis,
        owner: &UserKey,
        session: SessionAddr,
        resume_after: Option<InboxSeq>,
        fx: &mut Effects,
    ) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        if !user.sessions.contains(&session) && user.sessions.len() >= self.config.max_sessions {
            let m = format!("at most {} sessions per user", self.config.max_sessions);
            fx.out.push(reply(&session, Notice::refused(ErrorCode::RateLimited, m, None)));
            return;
        }
        if !user.sessions.contains(&session) {
            user.sessions.push(session.clone());
        }
        fx.batch.push(self.records.write(owner, user));
        fx.presence_changed = user.sessions.len() == 1;
        fx.out.push(Output::Edge(EdgeEnvelope {
            edge: session.edge.clone(),
            body: EdgeInput::Welcome { session: session.session, inbox_head: user.head },
            traces: Vec::new(),
        }));
        if let Some(after) = resume_after {
            fx.out.push(Output::Read(Read::Replay {
                user: owner.clone(),
                session: session.clone(),
                after,
                limit: iris_types::MAX_PAGE_LIMIT,
                inbox_head: user.head,
                always_synced: true,
            }));
        }
        fx.out.push(Output::Read(Read::FlushReceipts { user: owner.clone(), session: session.clone() }));
        // A session opening is proof its edge lives.
        self.heard_from(session.edge, now, &mut fx.ordered);
    }

    /// A session this shard did not know registers again (the shard moved
    /// or restarted).
    pub(super) fn session_resumed(
        &mut self,
        now: Millis,
        owner: &UserKey,
        session: SessionAddr,
        after: InboxSeq,
        fx: &mut Effects,
    ) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        // The session was admitted when it opened: no session limit
        // here, and no welcome. It hears what it missed while no
        // owner knew it.
        if !user.sessions.contains(&session) {
            user.sessions.push(session.clone());
            fx.presence_changed = user.sessions.len() == 1;
            fx.batch.push(self.records.write(owner, user));
        }
        if after < user.head {
            fx.out.push(Output::Read(Read::Replay {
                user: owner.clone(),
                session: session.clone(),
                after,
                limit: iris_types::MAX_PAGE_LIMIT,
                inbox_head: user.head,
                always_synced: false,
            }));
        }
        fx.out.push(Output::Read(Read::FlushReceipts { user: owner.clone(), session: session.clone() }));
        self.heard_from(session.edge, now, &mut fx.ordered);
    }

    /// A session ended.
    pub(super) fn session_closed(&mut self, now: Millis, owner: &UserKey, session: SessionAddr, fx: &mut Effects) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        let before = user.sessions.len();
        user.sessions.retain(|s| *s != session);
        if before > 0 && user.sessions.is_empty() {
            user.away = false;
            user.meta.last_seen = Some(now);
            fx.batch.push(self.records.meta(owner, user));
            fx.presence_changed = true;
        }
        if user.sessions.len() != before {
            fx.batch.push(self.records.write(owner, user));
        }
    }

    /// Renews `edge`'s lease. The first time this shard (since it started
    /// here, or since the edge's lease ran out) hears from an edge, it asks
    /// the edge to register its sessions and subscriptions here again
    /// ([`EdgeInput::Resync`]): a shard that moved, or restarted, starts
    /// knowing no session, and an edge's sessions must not go without
    /// deliveries until they reconnect.
    pub(super) fn heard_from(&mut self, edge: EdgeId, now: Millis, out: &mut Vec<Output>) {
        if self.leases.insert(edge.clone(), now).is_none() {
            out.push(Output::Edge(EdgeEnvelope {
                edge,
                body: EdgeInput::Resync { region: self.config.region.clone(), shard: self.config.shard },
                traces: Vec::new(),
            }));
        }
    }

    /// The edges this shard holds a lease for, in order.
    pub fn leased_edges(&self) -> Vec<EdgeId> {
        let mut edges: Vec<EdgeId> = self.leases.keys().cloned().collect();
        edges.sort();
        edges
    }

    /// Ends the sessions of edges whose lease expired (a crashed edge never
    /// says goodbye): their users go offline with `last_seen`, and
    /// subscribers hear of it. Also writes again, once, the session records
    /// this shard wrote in its first two leases here (`takeover_repair`).
    /// Returns the writes, like `handle`.
    ///
    /// `caught_up` is the newest instant at which the shard's input held
    /// nothing unread. A shard further behind than a quarter lease may
    /// have heartbeats waiting in its input, or dropped at its full queue,
    /// so it ends no lease until it has run caught up for a whole lease:
    /// a busy shard never ends a live edge's sessions, and a crashed edge's
    /// users go offline one lease after the backlog clears.
    pub fn handle_timeout(&mut self, now: Millis, caught_up: Millis) -> Option<(Ticket, WriteBatch)> {
        if !self.has_claimed() {
            return None; // it may write nothing before it knows its epoch
        }
        // A shard that is behind may no longer own its partition (a node
        // cut off from the bus is put out of the group): it writes nothing
        // on its own initiative until it reads its input again.
        let behind = now - caught_up > self.config.edge_lease_ms / 4;
        let mut batch = if behind { WriteBatch::default() } else { self.takeover_repair(now) };
        let mut out = Vec::new();
        let dead = self.expired_edges(now, behind);
        if !dead.is_empty() {
            for edge in &dead {
                self.leases.remove(edge);
            }
            let (ended, notices) = self.end_sessions_on(now, &dead);
            batch.ops.extend(ended.ops);
            out = notices;
        }
        let written = self.issue_records(batch);
        if written.is_some() || !out.is_empty() {
            let own = written.as_ref().map(|(t, _)| *t);
            self.emit(out, own.into_iter().collect());
        }
        written
    }

    /// The edges whose lease ran out, sorted; none while the input is
    /// behind (see `handle_timeout`).
    fn expired_edges(&mut self, now: Millis, behind: bool) -> Vec<EdgeId> {
        let lease = self.config.edge_lease_ms;
        if behind {
            self.stalled_at = Some(now);
        }
        if self.stalled_at.is_some_and(|at| now - at <= lease) {
            return Vec::new();
        }
        let mut dead: Vec<EdgeId> =
            self.leases.iter().filter(|(_, t)| now - **t > lease).map(|(e, _)| e.clone()).collect();
        dead.sort();
        dead
    }

    /// How long after a shard started here an earlier owner's writes may
    /// still land: its commits in flight reach the store within their
    /// timeout (5 s on Redis, below the 10 s default lease) or not at all.
    /// Two leases.
    pub fn takeover_window(&self) -> Millis {
        2 * self.config.edge_lease_ms
    }

    /// Two leases after this shard started here, the session records it
    /// wrote meanwhile are written once more, from memory. A partition that
    /// moved can still have the previous owner's last commit in flight, and
    /// it may land after the new owner's record and overwrite it (found by
    /// the simulator); an owner's write reaches the store within its
    /// command timeout (5 s on Redis, below the 10 s default lease) or not
    /// at all, so by then the old owner has nothing left to land.
    fn takeover_repair(&mut self, now: Millis) -> WriteBatch {
        let mut batch = WriteBatch::default();
        let started = *self.started_at.get_or_insert(now);
        if now - started < self.takeover_window() {
            return batch;
        }
        let Some(users) = self.takeover.take() else { return batch };
        for key in users {
            if let Some(user) = self.users.get(&key) {
                batch.push(self.records.write(&key, user));
            }
        }
        batch
    }

    /// An edge process started: the sessions this shard holds on it belong
    /// to the process before, which is gone. They end now (as if its lease
    /// had run out), and the new process's lease starts.
    pub(super) fn edge_started(&mut self, now: Millis, edge: EdgeId) -> Option<(Ticket, WriteBatch)> {
        self.leases.remove(&edge);
        let (batch, out) = self.end_sessions_on(now, std::slice::from_ref(&edge));
        let written = self.issue_records(batch);
        let own = written.as_ref().map(|(t, _)| *t);
        self.emit(out, own.into_iter().collect());
        // The resync goes out even if ending the old sessions failed: the
        // shard asks an edge once per lease.
        let mut resync = Vec::new();
        self.heard_from(edge, now, &mut resync);
        self.emit(resync, Vec::new());
        written
    }

    /// A ticket for session records ending, tracked for repair.
    fn issue_records(&mut self, batch: WriteBatch) -> Option<(Ticket, WriteBatch)> {
        if batch.is_empty() {
            return None;
        }
        let t = self.issue();
        self.track_records(t, &batch);
        Some((t, batch))
    }

    /// Ends every session and subscription held on `edges` (sorted): their
    /// users go offline with `last_seen`, and subscribers hear of it. Users
    /// are taken in key order so that the writes and notices come out the
    /// same on every run.
    fn end_sessions_on(&mut self, now: Millis, edges: &[EdgeId]) -> (WriteBatch, Vec<Output>) {
        let mut out = Vec::new();
        let mut batch = WriteBatch::default();
        let mut ended = Vec::new();
        for (key, user) in self.users.iter_mut() {
            user.subscribers.retain(|s| !edges.contains(&s.session.edge));
            if user.sessions.iter().any(|s| edges.contains(&s.edge)) {
                ended.push(key.clone());
            }
        }
        ended.sort();
        for key in ended {
            let user = self.users.get_mut(&key).expect("collected above");
            user.sessions.retain(|s| !edges.contains(&s.edge));
            if user.sessions.is_empty() {
                user.away = false;
                user.meta.last_seen = Some(now);
                batch.push(self.records.meta(&key, user));
                notify_subscribers(&key.user, user, &mut out);
            }
            batch.push(self.records.write(&key, user));
        }
        (batch, out)
    }
}
