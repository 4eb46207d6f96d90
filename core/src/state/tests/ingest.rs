//! Ingestion: deduplicated event batches.

use super::*;

fn event(i: u32, key: &str, ts: i64) -> IngestEvent {
    IngestEvent { index: i, event_type: "click".into(), project: "p".into(), ts, key: key.into(), payload: "{}".into() }
}

fn ingest(h: &mut Harness, events: Vec<IngestEvent>, stored: Vec<bool>) -> Option<(Ticket, WriteBatch)> {
    let tenant: iris_envelope::Tenant = "acme".into();
    let env = ShardEnvelope {
        owner: iris_envelope::ShardKey::stream(&tenant, "s"),
        body: ShardInput::Ingest { stream: "s".into(), events, reply: addr("http", 1) },
        trace: None,
    };
    assert!(h.state.needs(&env).user.is_none(), "streams have no user state");
    h.state.handle(1_000, env, Found { dedup: None, events_seen: stored })
}

#[test]
fn ingestion_drops_duplicates_within_batches_in_flight_and_stored() {
    let mut h = Harness::new();
    let w = ingest(
        &mut h,
        vec![event(0, "k1", 3_600_500), event(1, "k1", 3_600_500), event(2, "k2", 10)],
        vec![false, false, false],
    )
    .unwrap();
    let rollups: Vec<_> =
        w.1.ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::RollupAdd { key, by } => Some((key.hour_ms, *by)),
                _ => None,
            })
            .collect();
    assert_eq!(rollups, vec![(3_600_000, 1), (0, 1)], "one increment per new event, in its hour");
    // In flight: k1 again is a duplicate, k3 is stored already.
    assert!(ingest(&mut h, vec![event(0, "k1", 1), event(1, "k3", 1)], vec![false, true]).is_none());
    h.state.committed(w.0, Ok(()));
    let replies: Vec<_> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Edge(EdgeEnvelope { body: EdgeInput::Reply { reply, .. }, .. }) => Some(reply),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies,
        vec![
            ServiceReply::Ingested { accepted: vec![0, 2], duplicates: vec![1] },
            ServiceReply::Ingested { accepted: vec![], duplicates: vec![0, 1] },
        ]
    );
}

/// A key says whose state an input touches: a user's input under a
/// stream's or the shard's own key, or an ingest under the shard's key, is
/// refused and applied to no one (no such record is ever written by a
/// node; read from the bus, it must not reach a pseudo-user).
#[test]
fn an_input_whose_key_names_the_wrong_kind_of_owner_is_refused_and_writes_nothing() {
    let mut h = Harness::new();
    let tenant: iris_envelope::Tenant = "acme".into();
    let send =
        ShardInput::Send { from: "alice".into(), client_id: "c-1".into(), body: "hi".into(), reply: addr("e1", 1) };
    for owner in [ShardKey::Shard, ShardKey::stream(&tenant, "s")] {
        let env = ShardEnvelope { owner, body: send.clone(), trace: None };
        assert_eq!(h.state.needs(&env), Needs::default(), "nothing to load for no one");
        assert!(h.state.handle(1_000, env, Found { dedup: None, events_seen: vec![] }).is_none());
    }
    let ingest = ShardEnvelope {
        owner: ShardKey::Shard,
        body: ShardInput::Ingest { stream: "s".into(), events: vec![event(0, "k1", 10)], reply: addr("http", 1) },
        trace: None,
    };
    assert!(h.state.handle(1_000, ingest, Found { dedup: None, events_seen: vec![true] }).is_none());
    let outputs = h.outputs();
    let refused_sends = notices_of(&outputs)
        .into_iter()
        .filter(|n| matches!(n, Notice::Refused { code: ErrorCode::BadFrame, id: Some(id), .. } if id == "c-1"))
        .count();
    assert_eq!(refused_sends, 2, "{outputs:?}");
    let refused_ingest = outputs.iter().any(|o| {
        matches!(
            o,
            Output::Edge(EdgeEnvelope {
                body: EdgeInput::Reply { reply: ServiceReply::Error { code: ErrorCode::BadFrame, .. }, .. },
                ..
            })
        )
    });
    assert!(refused_ingest, "{outputs:?}");
    assert_eq!(h.state.inputs_seen(), 3, "each counts as handled");
    assert_eq!(h.state.inputs_durable(), 3, "nothing waits on a write");
}
