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
            fx.out.push(reply(&session, ServerFrame::error(ErrorCode::RateLimited, m, None)));
            return;
        }
        if !user.sessions.contains(&session) {
            user.sessions.push(session.clone());
        }
        fx.batch.push(session_write(owner, user, &self.config.region));
        fx.presence_changed = user.sessions.len() == 1;
        fx.out.push(Output::Edge(EdgeEnvelope {
            edge: session.edge.clone(),
            body: EdgeInput::Welcome { session: session.session, inbox_head: user.head },
        }));
        if let Some(after) = resume_after {
            fx.out.push(Output::Read(Read::Replay {
                user: owner.clone(),
                session: session.clone(),
                after,
                limit: iris_protocol::MAX_PAGE_LIMIT,
                inbox_head: user.head,
                always_synced: true,
            }));
        }
        fx.out.push(Output::Read(Read::FlushReceipts { user: owner.clone(), session: session.clone() }));
        // A session opening is proof its edge lives.
        self.heard_from(session.edge, now, &mut fx.out);
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
            fx.batch.push(session_write(owner, user, &self.config.region));
        }
        if after < user.head {
            fx.out.push(Output::Read(Read::Replay {
                user: owner.clone(),
                session: session.clone(),
                after,
                limit: iris_protocol::MAX_PAGE_LIMIT,
                inbox_head: user.head,
                always_synced: false,
            }));
        }
        fx.out.push(Output::Read(Read::FlushReceipts { user: owner.clone(), session: session.clone() }));
        self.heard_from(session.edge, now, &mut fx.out);
    }

    /// A session ended.
    pub(super) fn session_closed(&mut self, now: Millis, owner: &UserKey, session: SessionAddr, fx: &mut Effects) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        let before = user.sessions.len();
        user.sessions.retain(|s| *s != session);
        if before > 0 && user.sessions.is_empty() {
            user.away = false;
            user.meta.last_seen = Some(now);
            fx.batch.push(WriteOp::Meta { user: owner.clone(), meta: user.meta.clone() });
            fx.presence_changed = true;
        }
        if user.sessions.len() != before {
            fx.batch.push(session_write(owner, user, &self.config.region));
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
            }));
        }
    }

    /// Ends the sessions of edges whose lease expired (a crashed edge never
    /// says goodbye): their users go offline with `last_seen`, and
    /// subscribers hear of it. Returns the writes, like `handle`.
    ///
    /// `caught_up` is the newest instant at which the shard's input held
    /// nothing unread. A shard further behind than a quarter lease may
    /// have heartbeats waiting in its input, or dropped at its full queue,
    /// so it ends no lease until it has run caught up for a whole lease:
    /// a busy shard never ends a live edge's sessions, and a crashed edge's
    /// users go offline one lease after the backlog clears.
    pub fn handle_timeout(&mut self, now: Millis, caught_up: Millis) -> Option<(Ticket, WriteBatch)> {
        let lease = self.config.edge_lease_ms;
        if now - caught_up > lease / 4 {
            self.stalled_at = Some(now);
        }
        if self.stalled_at.is_some_and(|at| now - at <= lease) {
            return None;
        }
        let dead: Vec<EdgeId> = self.leases.iter().filter(|(_, t)| now - **t > lease).map(|(e, _)| e.clone()).collect();
        if dead.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        let mut batch = WriteBatch::default();
        for edge in &dead {
            self.leases.remove(edge);
        }
        for (key, user) in self.users.iter_mut() {
            let before = user.sessions.len();
            user.sessions.retain(|s| !dead.contains(&s.edge));
            if before > 0 && user.sessions.is_empty() {
                user.away = false;
                user.meta.last_seen = Some(now);
                batch.push(WriteOp::Meta { user: key.clone(), meta: user.meta.clone() });
                notify_subscribers(&key.user, user, &mut out);
            }
            if user.sessions.len() != before {
                batch.push(session_write(key, user, &self.config.region));
            }
            // Subscriptions held by sessions of a dead edge end too.
            user.subscribers.retain(|s| !dead.contains(&s.session.edge));
        }
        let written = if batch.is_empty() { None } else { Some((self.issue(), batch)) };
        let own = written.as_ref().map(|(t, _)| *t);
        self.emit(out, own.into_iter().collect());
        written
    }
}
