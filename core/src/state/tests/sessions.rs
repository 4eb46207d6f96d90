//! Sessions, edge leases and resync.

use super::*;

#[test]
fn sessions_per_user_are_limited() {
    let mut h = Harness::new();
    for s in 1..=3 {
        h.open("bob", s);
    }
    h.input("bob", ShardInput::SessionOpened { session: addr("e1", 4), resume_after: None });
    let f = h.frames();
    assert!(matches!(&f[0], (s, ServerFrame::Error(e)) if s == &[SessionId(4)] && e.code == ErrorCode::RateLimited));
    assert_eq!(h.state.users[&key("bob")].sessions.len(), 3);
}

#[test]
fn an_edge_that_stops_renewing_its_lease_loses_its_sessions() {
    let mut h = Harness::new();
    h.add_contact("bob", "dave");
    h.open("bob", 1);
    h.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e2", 8) });
    h.commit_all();
    h.frames();
    // e2 keeps renewing, e1 does not.
    let alive = |h: &mut Harness, now: Millis| {
        let env = ShardEnvelope { owner: key(""), body: ShardInput::EdgeAlive { edge: EdgeId("e2".into()) } };
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
    let f = h.frames();
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
    for late in [1_500, 3_000, 6_000] {
        assert!(h.state.handle_timeout(opened + late, opened + 400).is_none(), "behind at +{late}: no lease ends");
    }
    // Caught up again at +6.1 s: one whole lease of grace from the last
    // time it was seen behind, in which a live edge's next beat lands.
    assert!(h.state.handle_timeout(opened + 6_900, opened + 6_900).is_none(), "grace after the backlog");
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
    let f = h.frames();
    assert!(
        matches!(&f[0], (s, ServerFrame::Error(e)) if s == &[SessionId(5)] && e.code == ErrorCode::Unavailable),
        "{f:?}"
    );
}

fn resyncs(outputs: &[Output]) -> Vec<(String, ShardId)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Edge(EdgeEnvelope { edge, body: EdgeInput::Resync { shard, .. } }) => {
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
    let frames = h.frames();
    assert!(frames.iter().any(|(to, f)| to == &[SessionId(7)] && matches!(f, ServerFrame::Message(m) if m.seq == 4)));
    // Registering again what is registered changes nothing and writes nothing.
    h.input("bob", ShardInput::SessionResumed { session: addr("e1", 7), after: 4 });
    assert!(h.pending.is_empty(), "nothing to write");
    let again = h.outputs();
    assert!(!again.iter().any(|o| matches!(o, Output::Read(Read::Replay { .. }))), "nothing missed: {again:?}");
}
