//! The ticket order as the shard uses it: failures, durability counts, eviction, coalesced outputs.

use super::*;

#[test]
fn a_failed_write_does_not_swallow_unrelated_outputs() {
    let mut h = Harness::new();
    h.send("alice", "bob", "c-1", 1);
    // bob's session opens while alice's write is in flight: its welcome is
    // ordered behind that write but does not depend on it.
    h.input("bob", ShardInput::SessionOpened { session: addr("e1", 5), resume_after: None });
    let (t, _) = h.pending.remove(0);
    h.state.committed(t, Err(StoreError::Backend("disk".into())));
    // The session's own write (where bob is connected) succeeds.
    let (t2, _) = h.pending.remove(0);
    h.state.committed(t2, Ok(()));
    let outs = h.outputs();
    assert!(
        outs.iter().any(|o| matches!(o, Output::Edge(EdgeEnvelope { body: EdgeInput::Welcome { .. }, .. }))),
        "{outs:?}"
    );
    // Sessions survive the reset: bob still gets live messages.
    assert!(h.state.reset().is_none(), "every session record was written");
    h.input("bob", ShardInput::Ack { up_to: 0, read: false });
    assert_eq!(h.state.users[&key("bob")].sessions.len(), 1);
}

#[test]
fn idle_users_are_evicted_above_the_cap() {
    let mut h = Harness::new();
    h.state.config.max_cached_users = 10;
    h.open("keep", 1);
    for i in 0..30 {
        h.input(&format!("u{i}"), ShardInput::Ack { up_to: 0, read: false });
    }
    assert!(h.state.cached_users() <= 10);
    assert!(h.state.users.contains_key(&key("keep")), "users with sessions stay");
}

#[test]
fn inputs_count_as_durable_in_order_once_their_writes_commit() {
    let mut h = Harness::new();
    h.send("alice", "bob", "c-1", 1); // input 1 writes (ticket 1)
    h.input("bob", ShardInput::Typing { from: "alice".into(), state: iris_types::TypingState::Start }); // input 2, behind ticket 1
    h.send("alice", "bob", "c-2", 1); // input 3 writes (ticket 2)
    assert_eq!(h.state.inputs_durable(), 0);
    let (t1, _) = h.pending.remove(0);
    h.state.committed(t1, Ok(()));
    assert_eq!(h.state.inputs_durable(), 2, "inputs 1 and 2 are durable");
    let (t2, _) = h.pending.remove(0);
    h.state.committed(t2, Ok(()));
    assert_eq!(h.state.inputs_durable(), 3);
    h.input("bob", ShardInput::Typing { from: "alice".into(), state: iris_types::TypingState::Stop });
    assert_eq!(h.state.inputs_durable(), 4, "nothing in flight: durable at once");
}

#[test]
fn outputs_released_together_go_as_one_envelope_per_edge_without_overtaking_a_replay() {
    let notice = |edge: &str, s: u64| {
        Output::Edge(EdgeEnvelope {
            edge: EdgeId(edge.into()),
            body: EdgeInput::Notice {
                to: Recipients::Session(SessionId(s)),
                notice: Notice::Synced { inbox_head: s, more: false },
                droppable: false,
            },
            traces: Vec::new(),
        })
    };
    let replay = Output::Read(Read::Replay {
        user: key("bob"),
        session: addr("e1", 9),
        after: 0,
        limit: 10,
        inbox_head: 0,
        always_synced: true,
    });
    let foreign = |s: u64| {
        Output::Edge(EdgeEnvelope {
            edge: EdgeId::qualified("n1", "elsewhere"),
            body: EdgeInput::Welcome { session: SessionId(s), inbox_head: 0 },
            traces: Vec::new(),
        })
    };
    let out = coalesce_edge_outputs(
        vec![
            notice("e1", 1),
            notice("e2", 2),
            notice("e1", 3),
            replay.clone(),
            notice("e1", 4),
            foreign(5),
            foreign(6),
        ],
        "r1",
    );
    let sessions = |o: &Output| -> Vec<u64> {
        match o {
            Output::Edge(env) => env
                .body
                .clone()
                .into_parts()
                .iter()
                .map(|p| match p {
                    EdgeInput::Notice { to, .. } => to.as_slice()[0].0,
                    EdgeInput::Welcome { session, .. } => session.0,
                    _ => 0,
                })
                .collect(),
            _ => vec![],
        }
    };
    assert_eq!(out.len(), 6, "{out:?}");
    assert_eq!(sessions(&out[0]), vec![1, 3], "e1's two, in order, in one envelope");
    assert_eq!(sessions(&out[1]), vec![2]);
    assert_eq!(out[2], replay, "the replay is not overtaken");
    assert_eq!(sessions(&out[3]), vec![4]);
    assert_eq!((sessions(&out[4]), sessions(&out[5])), (vec![5], vec![6]), "another region's edge: left alone");
    assert!(matches!(&out[0], Output::Edge(EdgeEnvelope { body: EdgeInput::Batch(_), .. })));
    assert!(
        matches!(&out[1], Output::Edge(EdgeEnvelope { body: EdgeInput::Notice { .. }, .. })),
        "one alone is not wrapped"
    );
}
