//! Sessions, edge leases and resync.

use super::*;

#[test]
fn sessions_per_user_are_limited() {
    let mut h = Harness::new();
    for s in 1..=3 {
        h.open("bob", s);
    }
    h.input("bob", ShardInput::SessionOpened { session: addr("e1", 4), resume_after: None });
    let f = h.notices();
    assert!(
        matches!(&f[0], (s, Notice::Refused { code, .. }) if s == &[SessionId(4)] && *code == ErrorCode::RateLimited)
    );
    assert_eq!(h.state.users[&key("bob")].sessions.len(), 3);
}

#[test]
fn an_edge_that_stops_renewing_its_lease_loses_its_sessions() {
    let mut h = Harness::new();
    h.followed("bob", 1, "dave", addr("e2", 8));
    // e2 keeps renewing, e1 does not.
    let alive = |h: &mut Harness, now: Millis| {
        let env = ShardEnvelope {
            owner: ShardKey::Shard,
            body: ShardInput::EdgeAlive { edge: EdgeId("e2".into()) },
            trace: None,
        };
        assert!(h.state.needs(&env).user.is_none());
        assert!(h.state.handle(now, env, Found::default()).is_none());
    };
    let opened = h.now;
    alive(&mut h, opened + 500);
    assert!(h.state.handle_timeout(opened + 900, opened + 900).is_none(), "within the lease");
    alive(&mut h, opened + 1_200);
    let (t, batch) = h.state.handle_timeout(opened + 1_500, opened + 1_500).expect("e1's lease expired");
    assert!(matches!(&batch.ops[0], WriteOp::Meta { meta, .. } if meta.last_seen == Some(opened + 1_500)));
    h.state.committed(t, Ok(()));
    let f = h.notices();
    assert_eq!(f.len(), 1, "dave (on the live edge) hears bob went offline: {f:?}");
    assert_eq!(presence(&f[0].1).map(|p| p.1), Some(PresenceStatus::Offline));
    assert!(h.state.users[&key("bob")].sessions.is_empty());
}

#[test]
fn a_shard_behind_on_its_input_ends_no_lease_until_it_has_run_caught_up_for_one() {
    let mut h = Harness::new();
    h.open("bob", 1); // on e1, lease 1 s
    let opened = h.now;
    // The shard falls behind: e1's heartbeats wait in (or were dropped
    // at) its input. Its last renewal is long past, but nothing expires.
    // Behind, it writes nothing on its own initiative either: no lease
    // ends, and the takeover repair due two leases in waits (a shard that
    // reads nothing may be out of the group already).
    for late in [1_500, 3_000, 6_000] {
        let written = h.state.handle_timeout(opened + late, opened + 400);
        assert!(written.is_none(), "behind at +{late}: {written:?}");
    }
    assert_eq!(h.state.users[&key("bob")].sessions.len(), 1);
    // Caught up again at +6.1 s: the repair goes (bob's record, still one
    // session), and one whole lease of grace from the last time it was
    // seen behind, in which a live edge's next beat lands.
    let (t, batch) = h.state.handle_timeout(opened + 6_900, opened + 6_900).expect("the repair, once caught up");
    assert!(
        matches!(&batch.ops[..], [WriteOp::Session { record, .. }] if record.sessions == 1),
        "grace after the backlog: only the repair: {batch:?}"
    );
    h.state.committed(t, Ok(()));
    let (_, batch) = h.state.handle_timeout(opened + 7_100, opened + 7_100).expect("e1 stayed silent for a lease");
    assert!(matches!(&batch.ops[0], WriteOp::Meta { meta, .. } if meta.last_seen == Some(opened + 7_100)));
    assert!(h.state.users[&key("bob")].sessions.is_empty());
}

#[test]
fn a_shard_behind_by_less_than_a_quarter_lease_still_ends_a_silent_edge_s_sessions() {
    let mut h = Harness::new();
    h.open("bob", 1);
    let opened = h.now;
    assert!(h.state.handle_timeout(opened + 1_100, opened + 1_000).is_some(), "100 ms behind is not a stall");
}

#[test]
fn a_session_whose_opening_cannot_be_written_is_refused() {
    let mut h = Harness::new();
    h.input("bob", ShardInput::SessionOpened { session: addr("e1", 5), resume_after: None });
    let (t, batch) = h.pending.pop().unwrap();
    assert!(matches!(&batch.ops[0], WriteOp::Session { record, .. } if record.sessions == 1 && record.nodes == ["e1"]));
    h.state.committed(t, Err(StoreError::Backend("disk".into())));
    let f = h.notices();
    assert!(
        matches!(&f[0], (s, Notice::Refused { code, .. }) if s == &[SessionId(5)] && *code == ErrorCode::Unavailable),
        "{f:?}"
    );
}

fn resyncs(outputs: &[Output]) -> Vec<(String, ShardId)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Edge(EdgeEnvelope { edge, body: EdgeInput::Resync { shard, .. }, .. }) => {
                Some((edge.0.to_string(), *shard))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_shard_asks_each_edge_it_first_hears_from_to_register_again_once() {
    let mut h = Harness::new();
    h.input("", ShardInput::EdgeAlive { edge: EdgeId("e1".into()) });
    h.input("", ShardInput::EdgeAlive { edge: EdgeId("e1".into()) });
    h.input("bob", ShardInput::SessionOpened { session: addr("e2", 5), resume_after: None });
    h.input("bob", ShardInput::SessionOpened { session: addr("e2", 6), resume_after: None });
    h.commit_all();
    let asked = resyncs(&h.outputs());
    assert_eq!(asked, vec![("e1".to_string(), ShardId(3)), ("e2".to_string(), ShardId(3))], "once per edge");
    // An edge whose lease ran out is asked again when it is heard from.
    let expired = h.state.handle_timeout(h.now + 5_000, h.now + 5_000).expect("bob went offline");
    h.pending.push(expired);
    h.commit_all();
    h.outputs();
    h.now += 5_000;
    h.input("", ShardInput::EdgeAlive { edge: EdgeId("e1".into()) });
    assert_eq!(resyncs(&h.outputs()), vec![("e1".to_string(), ShardId(3))]);
}

#[test]
fn a_resumed_session_gets_what_it_missed_and_live_traffic_without_a_welcome() {
    let mut h = Harness::new();
    // The previous owner stored three messages for bob; this shard starts
    // knowing no session of his.
    h.state.insert_user(key("bob"), UserRecord { head: 3, ..Default::default() });
    h.input("bob", ShardInput::SessionResumed { session: addr("e1", 7), after: 1 });
    h.commit_all();
    let out = h.outputs();
    assert!(
        !out.iter().any(|o| matches!(o, Output::Edge(EdgeEnvelope { body: EdgeInput::Welcome { .. }, .. }))),
        "no second welcome"
    );
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Read(Read::Replay { after: 1, inbox_head: 3, always_synced: false, session, .. }) if *session == addr("e1", 7)
        )),
        "seqs 2 and 3, unasked: {out:?}"
    );
    h.send("alice", "bob", "c-1", 1);
    h.commit_all();
    let frames = h.notices();
    assert!(frames.iter().any(|(to, f)| to == &[SessionId(7)] && matches!(f, Notice::Message { seq: 4, .. })));
    // Registering again what is registered changes nothing and writes nothing.
    h.input("bob", ShardInput::SessionResumed { session: addr("e1", 7), after: 4 });
    assert!(h.pending.is_empty(), "nothing to write");
    let again = h.outputs();
    assert!(!again.iter().any(|o| matches!(o, Output::Read(Read::Replay { .. }))), "nothing missed: {again:?}");
}

#[test]
fn a_restarted_edge_s_previous_sessions_end_when_it_says_it_started() {
    let mut h = Harness::new();
    h.add_contact("bob", "dave");
    h.open("bob", 1); // on e1
    h.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e2", 8) });
    h.commit_all();
    h.outputs();
    // e1's process restarts within the lease: its renewals never stop, so
    // only its word says that session 1 is gone.
    h.input("", ShardInput::EdgeStarted { edge: EdgeId("e1".into()) });
    let (_, batch) = h.pending.last().cloned().expect("bob's records are written");
    assert!(
        batch.ops.iter().any(|op| matches!(op, WriteOp::Session { record, .. } if record.sessions == 0)),
        "{batch:?}"
    );
    assert!(h.state.users[&key("bob")].sessions.is_empty());
    h.commit_all();
    let outs = h.outputs();
    let offline = notices_of(&outs).into_iter().filter_map(|f| presence(&f).map(|p| p.1)).collect::<Vec<_>>();
    assert_eq!(offline, vec![PresenceStatus::Offline], "dave hears bob went offline");
    assert_eq!(resyncs(&outs), vec![("e1".to_string(), ShardId(3))], "the new process is asked for its sessions");
    // A session the new process opens is kept.
    h.input("bob", ShardInput::SessionOpened { session: addr("e1", 2), resume_after: None });
    assert_eq!(h.state.users[&key("bob")].sessions, vec![addr("e1", 2)]);
}

#[test]
fn the_resync_goes_out_even_when_the_write_it_followed_failed() {
    // The first word from an edge is a session opening whose write fails:
    // the shard still asks the edge to register its sessions, since it
    // will not ask again while the lease lasts.
    let mut h = Harness::new();
    h.input("bob", ShardInput::SessionOpened { session: addr("e1", 5), resume_after: None });
    let (t, _) = h.pending.pop().unwrap();
    h.state.committed(t, Err(StoreError::Backend("disk".into())));
    assert_eq!(resyncs(&h.outputs()), vec![("e1".to_string(), ShardId(3))]);
}

#[test]
fn a_session_record_whose_write_failed_is_written_again_after_the_reset() {
    let mut h = Harness::new();
    h.open("bob", 1);
    // bob closes; the write of his (now empty) record fails.
    h.input("bob", ShardInput::SessionClosed { session: addr("e1", 1) });
    h.fail_last();
    assert!(h.state.needs_reset());
    let (t, batch) = h.state.reset().expect("a repair write");
    assert!(
        matches!(&batch.ops[..], [WriteOp::Session { user, record, .. }, WriteOp::Meta { user: m, meta, .. }]
            if *user == key("bob") && record.sessions == 0 && *m == key("bob") && meta.last_seen.is_some()),
        "his record and his last_seen, from memory: {batch:?}"
    );
    // If the repair fails too, the next reset repairs again.
    h.state.committed(t, Err(StoreError::Backend("timeout".into())));
    let (t, batch) = h.state.reset().expect("repaired again");
    assert_eq!(batch.ops.len(), 2);
    h.state.committed(t, Ok(()));
    assert!(!h.state.needs_reset());
}

#[test]
fn two_leases_after_taking_over_the_shard_writes_its_records_again() {
    // The previous owner's last commit may land after this shard's first
    // record of a user: two leases after starting, the shard writes the
    // records it wrote meanwhile once more, from memory.
    let mut h = Harness::new();
    let started = h.now + 1;
    h.open("bob", 1);
    h.open("carol", 2);
    assert!(h.state.handle_timeout(started + 1_000, started + 1_000).is_none(), "within two leases");
    h.input("", ShardInput::EdgeAlive { edge: EdgeId("e1".into()) });
    let (_, batch) = h.state.handle_timeout(started + 2_000, started + 2_000).expect("the takeover repair");
    let users: Vec<&UserKey> = batch
        .ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Session { user, record, .. } if record.sessions == 1 => Some(user),
            _ => None,
        })
        .collect();
    assert_eq!(users, vec![&key("bob"), &key("carol")], "{batch:?}");
    // Once only.
    h.input("", ShardInput::EdgeAlive { edge: EdgeId("e1".into()) });
    assert!(h.state.handle_timeout(started + 2_500, started + 2_500).is_none());
}

#[test]
fn session_records_carry_the_owner_epoch_above_a_count_of_writes() {
    // Another owner of the same shard, later: its records outrank every
    // record of the first, whatever either had written.
    let mut h = Harness::new(); // epoch 1
    for s in 1..=3 {
        h.input("bob", ShardInput::SessionOpened { session: addr("e1", s), resume_after: None });
    }
    let mut later = Harness::new();
    later.state.claimed(2);
    later.input("bob", ShardInput::SessionOpened { session: addr("e1", 4), resume_after: None });
    let versions = |h: &Harness| -> Vec<u64> {
        h.pending
            .iter()
            .flat_map(|(_, b)| b.ops.iter())
            .filter_map(|op| match op {
                WriteOp::Session { version, .. } => Some(*version),
                _ => None,
            })
            .collect()
    };
    let (first, second) = (versions(&h), versions(&later));
    assert_eq!(first, vec![1 << 32, 1 << 32 | 1, 1 << 32 | 2], "one owner's records count up");
    assert_eq!(second, vec![2 << 32]);
    assert!(second[0] > first[2], "a later owner's first record outranks an earlier owner's last");
    // Before its epoch is claimed, a shard writes nothing on its own.
    let mut unclaimed = ShardState::new(super::cfg());
    assert!(unclaimed.handle_timeout(1_000_000, 1_000_000).is_none());
}

#[test]
fn subscribers_who_missed_a_change_whose_write_failed_hear_it_with_the_repair() {
    let mut h = Harness::new();
    h.add_contact("bob", "carol");
    h.commit_all();
    h.input("bob", ShardInput::Subscribe { viewer: "carol".into(), session: addr("e2", 9) });
    let told = h.notices();
    let first: Vec<_> = told.iter().filter_map(|(_, f)| presence(f).map(|p| p.1)).collect();
    assert_eq!(first, vec![PresenceStatus::Offline], "{told:?}");
    // bob comes online, and the write of it fails: carol's notice goes
    // with the failed commit.
    h.input("bob", ShardInput::SessionOpened { session: addr("e1", 1), resume_after: None });
    h.fail_last();
    assert!(h.notices().iter().all(|(_, f)| presence(f).is_none()), "no presence notice rides on a failed commit");
    // The repair writes bob's record again and tells carol, once durable.
    let (t, _) = h.state.reset().expect("a repair write");
    assert!(h.notices().iter().all(|(_, f)| presence(f).is_none()), "not before the repair is durable");
    h.state.committed(t, Ok(()));
    let f = h.notices();
    let heard: Vec<_> = f.iter().filter_map(|(to, f)| presence(f).map(|p| (to.clone(), p.1))).collect();
    assert_eq!(heard, vec![(vec![SessionId(9)], PresenceStatus::Online)], "{f:?}");
}

#[test]
fn a_revoked_shard_tells_no_presence_it_held_or_makes_but_sends_the_rest() {
    let mut h = Harness::new();
    h.add_contact("bob", "carol");
    h.commit_all();
    h.notices();
    // alice's session opening is being written when carol subscribes to
    // bob: the answer (bob is offline, as this shard has not read what
    // comes after) waits behind the write.
    h.input("alice", ShardInput::SessionOpened { session: addr("e1", 1), resume_after: None });
    h.input("bob", ShardInput::Subscribe { viewer: "carol".into(), session: addr("e2", 9) });
    assert!(h.notices().is_empty(), "held behind alice's write");
    // The partition moves on: the next owner reads both inputs again and
    // answers carol from what it knows then.
    assert_eq!(h.state.revoked(), 1, "carol's answer is dropped");
    let (t, _) = h.pending.pop().unwrap();
    h.state.committed(t, Ok(()));
    let out = h.outputs();
    assert!(
        out.iter().any(|o| matches!(o, Output::Edge(e) if matches!(e.body, EdgeInput::Welcome { .. }))),
        "alice's welcome, whose write landed, still goes: {out:?}"
    );
    assert!(out.iter().any(|o| matches!(o, Output::Read(_))), "and the read of her pending receipts");
    assert!(notices_of(&out).iter().all(|n| presence(n).is_none()), "no presence: {out:?}");
    h.input("bob", ShardInput::Subscribe { viewer: "carol".into(), session: addr("e2", 9) });
    assert!(h.notices().is_empty(), "nor one made later");
    assert_eq!(h.state.inputs_durable(), h.state.inputs_seen(), "the write still counts");
}

#[test]
fn a_status_whose_write_failed_is_written_again_and_survives_a_reload() {
    let mut h = Harness::new();
    h.followed("bob", 1, "carol", addr("e2", 9));
    // bob goes invisible; the write fails. The client gets no answer to a
    // status, so nothing would ever set it again: the shard must.
    h.input("bob", ShardInput::SetPresence { session: addr("e1", 1), status: SetStatus::Invisible });
    h.fail_last();
    assert!(h.notices().iter().all(|(_, f)| presence(f).is_none()), "nothing rides on the failed write");
    let (t, batch) = h.state.reset().expect("a repair write");
    assert!(
        batch.ops.iter().any(
            |op| matches!(op, WriteOp::Meta { user, meta, .. } if *user == key("bob") && meta.invisible_since.is_some())
        ),
        "bob's status, from memory: {batch:?}"
    );
    h.state.committed(t, Ok(()));
    let heard: Vec<_> = h.notices().iter().filter_map(|(_, f)| presence(f).map(|p| p.1)).collect();
    assert_eq!(heard, vec![PresenceStatus::Offline], "carol hears bob is (looks) offline once it is durable");
    // The reset marked bob stale; reloading him from a store that had not
    // seen the repair yet keeps what memory holds.
    let mut stale = UserRecord::default();
    stale.meta.invisible_since = None;
    h.state.insert_user(key("bob"), stale);
    assert!(h.state.users[&key("bob")].meta.invisible_since.is_some(), "the status survives the reload");
}
