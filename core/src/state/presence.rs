//! Presence: a user's status, who subscribed to it and what each viewer
//! may see (circle policies), and typing.

use super::*;

/// How far ahead of the shard's clock an edge's stamp on a status is
/// believed (ADR 0032): the clock skew between nodes that NTP keeps, with
/// room to spare.
pub const STATUS_STAMP_LEEWAY_MS: Millis = 1_000;

impl ShardState {
    /// The user sets online, away or invisible. `at` is the edge's stamp
    /// (`None` from edges that predate it): a status stamped before the
    /// one shown was set earlier and held back on its way (an edge cut off
    /// from the bus), so it is ignored; the newest stamp is kept in the
    /// user's meta, which survives a move of the shard (ADR 0032). A stamp
    /// ahead of this shard's clock by more than [`STATUS_STAMP_LEEWAY_MS`]
    /// is taken as that bound: an edge whose clock runs fast cannot hold
    /// the user's status against later ones for longer.
    pub(super) fn set_presence(
        &mut self,
        now: Millis,
        owner: &UserKey,
        status: SetStatus,
        at: Option<Millis>,
        fx: &mut Effects,
    ) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        let at = at.map(|at| at.min(now.saturating_add(STATUS_STAMP_LEEWAY_MS)));
        if let (Some(at), Some(shown)) = (at, user.meta.status_at)
            && at < shown
        {
            return;
        }
        let mut changed = at.is_some() && at != user.meta.status_at;
        user.meta.status_at = at.or(user.meta.status_at);
        match status {
            SetStatus::Invisible => {
                if user.meta.invisible_since.is_none() {
                    user.meta.invisible_since = Some(now);
                    changed = true;
                }
            }
            SetStatus::Online | SetStatus::Away => {
                user.away = status == SetStatus::Away;
                changed |= user.meta.invisible_since.take().is_some();
            }
        }
        if changed {
            fx.batch.push(self.records.meta(owner, user));
        }
        fx.presence_changed = true;
    }

    /// `viewer` subscribes to `owner`'s presence (bounded per user).
    pub(super) fn subscribe(&mut self, owner: &UserKey, viewer: Arc<str>, session: SessionAddr, fx: &mut Effects) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        let view = user.view_for(&owner.user, &viewer);
        let known = user.subscribers.iter().any(|s| s.viewer == viewer && s.session == session);
        if !known && user.subscribers.len() >= self.config.max_subscribers {
            fx.out.push(reply(
                &session,
                Notice::refused(ErrorCode::RateLimited, format!("too many subscribers for {}", owner.user), None),
            ));
        } else {
            if !known {
                user.subscribers.push(Subscriber { viewer, session: session.clone(), last: view });
            }
            fx.out.push(reply(&session, presence_notice(&owner.user, view)));
        }
    }

    /// `viewer` stops following `owner`.
    pub(super) fn unsubscribe(&mut self, owner: &UserKey, viewer: Arc<str>, session: SessionAddr) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        user.subscribers.retain(|s| !(s.viewer == viewer && s.session == session));
    }

    /// What a circle of `owner`'s contacts may see.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn circle_policy(
        &mut self,
        now: Millis,
        owner: &UserKey,
        session: SessionAddr,
        circle: String,
        presence: Option<bool>,
        last_seen: Option<bool>,
        fx: &mut Effects,
    ) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        let current = user.policy(&circle);
        let policy = CirclePolicy {
            presence: presence.unwrap_or(current.presence),
            last_seen: last_seen.unwrap_or(current.last_seen),
        };
        if policy != current || !user.policies.contains_key(&circle) {
            user.policies.insert(circle.clone(), policy);
            fx.batch.push(WriteOp::Policy { owner: owner.clone(), circle: circle.clone(), policy });
            let record = serde_json::json!({
                "v": GRAPH_EVENT_VERSION, "type": "circle.policy_changed", "tenant": &*owner.tenant,
                "owner": &*owner.user, "circle": &circle, "presence": policy.presence,
                "last_seen": policy.last_seen, "ts": now,
            });
            fx.batch.push(graph_log(owner, &record));
        }
        fx.out.push(reply(&session, Notice::CirclePolicyOk { circle }));
        fx.presence_changed = true;
    }

    /// `from` is typing to `owner` (dropped rather than queued).
    pub(super) fn typing(&mut self, owner: &UserKey, from: Arc<str>, state: iris_types::TypingState, fx: &mut Effects) {
        let user = self.users.get_mut(owner).expect("loaded before handling");
        let notice = Notice::Typing { from: from.to_string(), state };
        notice_to(&user.sessions, notice, true, &mut fx.out);
    }
}
