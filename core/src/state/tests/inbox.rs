//! Sends, dedup of retries and the inbox seq.

use super::*;
use proptest::prelude::*;

#[test]
fn send_waits_for_commit_then_accepts_and_delivers() {
    let mut h = Harness::new();
    h.open("bob", 2);
    h.send("alice", "bob", "c-1", 1);
    assert!(h.outputs().is_empty(), "nothing leaves before the write is durable");
    let batches = h.commit_all();
    assert_eq!(batches[0].ops.len(), 2, "message and dedup record in one batch");
    let frames = h.notices();
    assert!(matches!(&frames[0], (s, Notice::Accepted { id, .. }) if s == &[SessionId(1)] && id == "c-1"));
    assert!(
        matches!(&frames[1], (s, Notice::Message { seq, from, .. }) if s == &[SessionId(2)] && *seq == 1 && from == "alice")
    );
}

#[test]
fn retry_gets_the_same_msg_id_in_flight_and_after_commit() {
    let mut h = Harness::new();
    h.send("alice", "bob", "c-1", 1);
    h.send("alice", "bob", "c-1", 1);
    assert_eq!(h.pending.len(), 1, "the retry writes nothing");
    h.commit_all();
    let ids: Vec<String> = h
        .notices()
        .into_iter()
        .filter_map(|(_, f)| match f {
            Notice::Accepted { msg_id, .. } => Some(msg_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
    // After commit the record comes from storage (the actor looks it up).
    let rec = DedupRecord { msg_id: ids[0].as_str().into(), ts: 5, to: "bob".into(), seq: 1 };
    h.input_with(
        "carol",
        ShardInput::Send { from: "alice".into(), client_id: "c-1".into(), body: "x".into(), reply: addr("e1", 1) },
        Some(rec),
    );
    assert!(h.pending.is_empty(), "a retry to another recipient is not stored");
    assert!(matches!(&h.notices()[0].1, Notice::Accepted { msg_id, ts, .. } if *msg_id == ids[0] && *ts == 5));
}

#[test]
fn failed_commit_turns_accepted_into_unavailable_and_resets() {
    let mut h = Harness::new();
    h.send("alice", "bob", "c-1", 1);
    let (t, _) = h.pending.pop().unwrap();
    h.state.committed(t, Err(StoreError::Backend("disk".into())));
    let frames = h.notices();
    assert_eq!(frames.len(), 1);
    assert!(
        matches!(&frames[0].1, Notice::Refused { code, id, .. } if *code == ErrorCode::Unavailable && id.as_deref() == Some("c-1"))
    );
    assert!(h.state.needs_reset());
    assert!(h.state.reset().is_none(), "a send writes no session record");
    let env = ShardEnvelope { owner: key("bob").into(), body: ShardInput::Ack { up_to: 0, read: false }, trace: None };
    assert!(h.state.needs(&env).user.is_some(), "heads reload from storage");
}

fn absorb(
    batches: Vec<WriteBatch>,
    stored: &mut HashMap<String, Vec<u64>>,
    dedup: &mut HashMap<String, DedupRecord>,
    ids: &mut Vec<String>,
) {
    for b in batches {
        for op in b.ops {
            match op {
                WriteOp::Message { user, message } => {
                    stored.entry(user.user.to_string()).or_default().push(message.seq)
                }
                WriteOp::Dedup { key, record } => {
                    ids.push(key.client_id.to_string());
                    dedup.insert(key.client_id.to_string(), record);
                }
                _ => {}
            }
        }
    }
}

proptest! {
    /// Whatever the interleaving of sends, retries and commits, each
    /// recipient's seqs run 1..=n without gaps or repeats, and every client
    /// id is stored exactly once (the harness plays the store's dedup table).
    #[test]
    fn inbox_has_no_gaps_and_no_duplicates(ops in proptest::collection::vec((0u8..3, 0u8..6, any::<bool>()), 1..80)) {
        let mut h = Harness::new();
        let mut stored: HashMap<String, Vec<u64>> = HashMap::new();
        let mut dedup: HashMap<String, DedupRecord> = HashMap::new();
        let mut ids = Vec::new();
        for (to, id, commit) in ops {
            let id = format!("c-{id}");
            let body = ShardInput::Send { from: "alice".into(), client_id: id.as_str().into(), body: "hi".into(), reply: addr("e1", 1) };
            let found = dedup.get(&id).cloned();
            h.input_with(&format!("r{to}"), body, found);
            if commit {
                let batches = h.commit_all();
                absorb(batches, &mut stored, &mut dedup, &mut ids);
            }
        }
        let batches = h.commit_all();
        absorb(batches, &mut stored, &mut dedup, &mut ids);
        for seqs in stored.values() {
            prop_assert!(seqs.iter().copied().eq(1..=seqs.len() as u64), "{seqs:?}");
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), ids.len(), "a client id was stored twice: {:?}", ids);
    }
}

#[test]
fn a_retry_of_a_failed_in_flight_send_is_not_accepted() {
    let mut h = Harness::new();
    h.send("alice", "bob", "c-1", 1);
    h.send("alice", "bob", "c-1", 1);
    assert_eq!(h.pending.len(), 1);
    let (t, _) = h.pending.pop().unwrap();
    h.state.committed(t, Err(StoreError::Backend("disk".into())));
    let frames = h.notices();
    assert_eq!(frames.len(), 2);
    for (_, f) in frames {
        assert!(matches!(&f, Notice::Refused { code, .. } if *code == ErrorCode::Unavailable), "{f:?}");
    }
}

#[test]
fn a_failed_load_answers_a_send_with_a_retryable_error_naming_it() {
    let mut s = ShardState::new(cfg());
    let env = ShardEnvelope {
        owner: key("bob").into(),
        body: ShardInput::Send {
            from: "alice".into(),
            client_id: "c-9".into(),
            body: "hi".into(),
            reply: addr("e1", 1),
        },
        trace: None,
    };
    s.load_failed(&env);
    assert_eq!(s.inputs_durable(), 1, "answered: nothing to write, nothing to wait for");
    let out: Vec<Output> = std::iter::from_fn(|| s.poll_output()).collect();
    assert!(
        matches!(&notices_of(&out)[..], [Notice::Refused { code, id, .. }] if *code == ErrorCode::Unavailable && id.as_deref() == Some("c-9")),
        "{out:?}"
    );
}
