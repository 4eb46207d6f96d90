//! Presence, policies and circles.

use super::*;

#[test]
fn presence_follows_policy_and_never_leaks() {
    let mut h = Harness::new();
    // carol subscribes to bob without being a contact: offline, no last_seen.
    h.input("bob", ShardInput::Subscribe { viewer: "carol".into(), session: addr("e1", 9) });
    h.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e2", 8) });
    let f = h.notices();
    assert_eq!(presence(&f[0].1), Some(("bob", PresenceStatus::Offline, None)));
    h.open("bob", 1);
    // bob adds dave to contacts (default circle: sees presence and last_seen).
    h.add_contact("bob", "dave");
    h.commit_all();
    let f = h.notices();
    assert!(matches!(f[0].1, Notice::ContactsOk { count: 1 }));
    assert_eq!(f.len(), 2, "only dave's view changed: {f:?}");
    assert_eq!(f[1].0, vec![SessionId(8)]);
    assert_eq!(presence(&f[1].1), Some(("bob", PresenceStatus::Online, None)));
    // Away, then the last session ends: offline with last_seen for dave only.
    h.input("bob", ShardInput::SetPresence { session: addr("e1", 1), status: SetStatus::Away });
    assert_eq!(presence(&h.notices()[0].1), Some(("bob", PresenceStatus::Away, None)));
    h.input("bob", ShardInput::SessionClosed { session: addr("e1", 1) });
    h.commit_all();
    let f = h.notices();
    assert_eq!(f.len(), 1);
    let (_, status, seen) = presence(&f[0].1).unwrap();
    assert_eq!((status, seen.is_some()), (PresenceStatus::Offline, true));
    // Policy change: the default circle loses last_seen.
    h.input(
        "bob",
        ShardInput::CirclePolicy {
            session: addr("e1", 1),
            circle: DEFAULT_CIRCLE.into(),
            presence: None,
            last_seen: Some(false),
        },
    );
    h.commit_all();
    let f = h.notices();
    assert!(matches!(f[0].1, Notice::CirclePolicyOk { .. }));
    assert_eq!(presence(&f[1].1), Some(("bob", PresenceStatus::Offline, None)));
    // Back online: away does not survive the end of all sessions.
    h.open("bob", 3);
    let sub = h.state.users.get(&key("bob")).unwrap();
    assert_eq!(sub.view_for("bob", "dave").status, PresenceStatus::Online);
}

#[test]
fn invisible_looks_offline_with_frozen_last_seen_and_is_durable() {
    let mut h = Harness::new();
    h.add_contact("bob", "dave");
    h.open("bob", 1);
    h.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e1", 8) });
    h.notices();
    h.input("bob", ShardInput::SetPresence { session: addr("e1", 1), status: SetStatus::Invisible });
    let (_, batch) = h.pending.last().unwrap();
    assert!(matches!(&batch.ops[0], WriteOp::Meta { meta, .. } if meta.invisible_since.is_some()));
    h.commit_all();
    let f = h.notices();
    let (_, status, since) = presence(&f[0].1).unwrap();
    assert_eq!(status, PresenceStatus::Offline);
    h.input("bob", ShardInput::SessionClosed { session: addr("e1", 1) });
    h.commit_all();
    assert!(h.notices().is_empty(), "dave saw offline already; the frozen last_seen does not move");
    h.open("bob", 2);
    assert!(h.notices().is_empty(), "still invisible after reconnect");
    assert_eq!(h.state.users[&key("bob")].view_for("bob", "dave").last_seen, since);
}

#[test]
fn new_circles_allow_nothing_until_set() {
    let mut h = Harness::new();
    h.open("bob", 1);
    h.input(
        "bob",
        ShardInput::Contacts {
            session: addr("e1", 1),
            upsert: vec![ContactEntry { user: "dave".into(), circle: Some("work".into()) }],
            remove: vec![],
        },
    );
    h.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e1", 8) });
    h.commit_all();
    let f = h.notices();
    assert_eq!(presence(&f.last().unwrap().1), Some(("bob", PresenceStatus::Offline, None)));
    h.input(
        "bob",
        ShardInput::CirclePolicy {
            session: addr("e1", 1),
            circle: "work".into(),
            presence: Some(true),
            last_seen: None,
        },
    );
    h.commit_all();
    let f = h.notices();
    assert_eq!(presence(&f[1].1), Some(("bob", PresenceStatus::Online, None)));
}

/// Finding 16 of docs/chaos.md: a status held back on its way (its edge
/// cut off from the bus) lands after one the user set later through
/// another session. The edge's stamp says which came first; the older is
/// ignored, also by a later owner of the shard, which loads the stamp with
/// the user's meta (ADR 0032).
#[test]
fn a_status_stamped_before_the_one_shown_is_ignored_here_and_after_a_move() {
    let mut h = Harness::new();
    h.now = 10_000;
    h.followed("bob", 2, "dave", addr("e1", 8));
    // Set at 5,000 through e2, heard first.
    h.input("bob", ShardInput::SetPresenceAt { session: addr("e2", 2), status: SetStatus::Invisible, at: 5_000 });
    let batches = h.commit_all();
    let stored = batches.iter().flat_map(|b| &b.ops).find_map(|op| match op {
        WriteOp::Meta { meta, .. } => Some(meta.clone()),
        _ => None,
    });
    let stored = stored.expect("a stamped status writes the user's meta");
    assert_eq!(stored.status_at, Some(5_000));
    assert_eq!(presence(&h.notices()[0].1).map(|p| p.1), Some(PresenceStatus::Offline));
    // Set at 4,000 through e1, cut off until now: older, ignored, nothing written.
    h.input("bob", ShardInput::SetPresenceAt { session: addr("e1", 1), status: SetStatus::Online, at: 4_000 });
    assert!(h.commit_all().iter().all(|b| b.ops.is_empty()), "an ignored status writes nothing");
    assert!(h.notices().is_empty(), "dave still sees bob offline");
    assert_eq!(h.state.users[&key("bob")].view_for("bob", "dave").status, PresenceStatus::Offline);
    // The same status a moment later (same ms: same session, in order) applies.
    h.input("bob", ShardInput::SetPresenceAt { session: addr("e2", 2), status: SetStatus::Online, at: 5_000 });
    h.commit_all();
    assert_eq!(presence(&h.notices()[0].1).map(|p| p.1), Some(PresenceStatus::Online));
    // A new owner loads what was stored (bob invisible since 5,000) and still
    // ignores the held-back one.
    let mut moved = Harness::new();
    moved.now = h.now;
    let record = UserRecord { meta: stored, ..UserRecord::default() };
    moved.state.insert_user(key("bob"), record);
    moved.add_contact("bob", "dave");
    moved.open("bob", 2);
    moved.input("bob", ShardInput::SetPresenceAt { session: addr("e1", 1), status: SetStatus::Online, at: 4_000 });
    moved.commit_all();
    assert_eq!(moved.state.users[&key("bob")].view_for("bob", "dave").status, PresenceStatus::Offline);
    // Edges of earlier versions send unstamped statuses: applied as before.
    moved.input("bob", ShardInput::SetPresence { session: addr("e1", 1), status: SetStatus::Online });
    moved.commit_all();
    let bob = &moved.state.users[&key("bob")];
    assert_eq!((bob.view_for("bob", "dave").status, bob.meta.status_at), (PresenceStatus::Online, Some(5_000)));
}

/// An edge whose clock runs an hour fast stamps its statuses an hour
/// ahead: the shard takes them as at most a second ahead of its own clock,
/// so a status the user sets two seconds later elsewhere still holds.
#[test]
fn a_stamp_from_the_future_holds_no_longer_than_the_leeway() {
    let mut h = Harness::new();
    h.open("bob", 1);
    let fast = h.now + 3_600_000;
    h.input("bob", ShardInput::SetPresenceAt { session: addr("e1", 1), status: SetStatus::Invisible, at: fast });
    h.commit_all();
    let stored = h.state.users[&key("bob")].meta.status_at.unwrap();
    assert!(stored <= h.now + STATUS_STAMP_LEEWAY_MS, "stored {stored}, shard at {}", h.now);
    h.now += 2 * STATUS_STAMP_LEEWAY_MS;
    let later = h.now;
    h.input("bob", ShardInput::SetPresenceAt { session: addr("e2", 2), status: SetStatus::Online, at: later });
    h.commit_all();
    let bob = &h.state.users[&key("bob")];
    assert_eq!((bob.meta.invisible_since, bob.meta.status_at), (None, Some(later)));
}

/// ADR 0021, points 9 and 10: a presence notice names the owner that told
/// it, and a meta written carries a version above the owner's epoch, so
/// that neither a zombie's word nor its meta lands over a successor's.
#[test]
fn presence_notices_name_their_owner_and_metas_carry_its_epoch() {
    let mut h = Harness::new();
    h.add_contact("bob", "dave");
    h.open("bob", 1);
    h.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e1", 8) });
    h.commit_all();
    let told = h.notices();
    assert!(
        matches!(&told[..], [(_, Notice::MarkedPresence { user, owner, .. })]
            if user == "bob" && *owner == iris_envelope::OwnerMark::new("r1", 1)),
        "{told:?}"
    );
    h.input("bob", ShardInput::SetPresence { session: addr("e1", 1), status: SetStatus::Invisible });
    let (_, batch) = h.pending.last().expect("invisible is written");
    let version = batch.ops.iter().find_map(|op| match op {
        WriteOp::Meta { version, .. } => Some(*version),
        _ => None,
    });
    assert_eq!(version.map(|v| v >> 32), Some(1), "the epoch above the count: {version:?}");
    // Unmarked where edges of an earlier version remain.
    let mut old = Harness::new();
    old.state = ShardState::new(ShardConfig { mark_presence: false, ..cfg() });
    old.state.claimed(1);
    old.add_contact("bob", "dave");
    old.open("bob", 1);
    old.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e1", 8) });
    old.commit_all();
    assert!(matches!(&old.notices()[..], [(_, Notice::Presence { .. })]));
}
