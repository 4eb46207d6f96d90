//! Acks into receipts, receipts held for offline senders, and the reads of replays and receipts.

use super::*;

#[test]
fn ack_and_read_emit_receipt_ranges_once() {
    let mut h = Harness::new();
    for i in 0..5 {
        h.send("alice", "bob", &format!("c-{i}"), 1);
    }
    h.commit_all();
    h.outputs();
    h.input("bob", ShardInput::Ack { up_to: 3, read: false });
    h.input("bob", ShardInput::Ack { up_to: 2, read: false });
    h.input("bob", ShardInput::Ack { up_to: 99, read: true });
    h.commit_all();
    let receipts: Vec<_> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Read(Read::Receipts { from, to, state, .. }) => Some((from, to, state)),
            _ => None,
        })
        .collect();
    assert_eq!(receipts, vec![(0, 3, ReceiptState::Delivered), (0, 5, ReceiptState::Read)]);
    h.input("bob", ShardInput::Ack { up_to: 5, read: false });
    assert!(h.outputs().is_empty(), "read implies delivered: nothing more to say");
}

#[test]
fn receipt_for_offline_sender_is_stored_and_online_sender_gets_it() {
    let mut h = Harness::new();
    h.input("alice", ShardInput::Receipt { msg_id: "m".into(), by: "bob".into(), state: ReceiptState::Read });
    assert!(matches!(h.pending[0].1.ops[0], WriteOp::Receipt { .. }));
    h.commit_all();
    h.open("alice", 1);
    h.input("alice", ShardInput::Receipt { msg_id: "m2".into(), by: "bob".into(), state: ReceiptState::Delivered });
    assert!(h.pending.is_empty());
    assert!(matches!(&h.notices()[0].1, Notice::Receipt { msg_id, .. } if msg_id == "m2"));
}

#[test]
fn a_replay_page_read_becomes_its_messages_then_synced_or_a_retryable_error() {
    let mut s = ShardState::new(cfg());
    let read = Read::Replay {
        user: key("bob"),
        session: addr("e1", 7),
        after: 1,
        limit: 2,
        inbox_head: 9,
        always_synced: false,
    };
    assert_eq!(
        s.query(&read),
        Query::Inbox { user: &key("bob"), after: 1, limit: 2, max_bytes: 1 << 16 },
        "the page size is the shard's decision"
    );
    let page = iris_storage::InboxPage { messages: vec![stored(2, "alice"), stored(3, "alice")], more: true };
    let o = s.read_done(read.clone(), ReadResult::Inbox(Ok(page)));
    assert!(o.commit.is_none());
    let f = notices_of(&o.outputs);
    assert!(
        matches!(
            &f[..],
            [
                Notice::Message { seq: 2, .. },
                Notice::Message { seq: 3, .. },
                Notice::Synced { inbox_head: 9, more: true }
            ]
        ),
        "{f:?}"
    );
    // An unasked replay that read everything ends silently.
    let page = iris_storage::InboxPage { messages: vec![stored(2, "alice")], more: false };
    assert_eq!(notices_of(&s.read_done(read.clone(), ReadResult::Inbox(Ok(page))).outputs).len(), 1);
    let o = s.read_done(read, ReadResult::Inbox(Err(StoreError::Unavailable("down".into()))));
    assert!(
        matches!(&notices_of(&o.outputs)[..], [Notice::Refused { code, .. }] if *code == ErrorCode::Unavailable),
        "the client is told to retry its sync"
    );
}

#[test]
fn receipts_go_to_each_sender_s_shard_page_by_page() {
    let mut s = ShardState::new(cfg());
    let read = Read::Receipts { user: key("bob"), from: 0, to: 5, state: ReceiptState::Read };
    assert!(matches!(s.query(&read), Query::Range { from: 0, to: 5, limit: RECEIPT_PAGE, .. }));
    let o = s.read_done(read, ReadResult::Range(Ok(vec![stored(1, "alice"), stored(2, "carol")])));
    let owners: Vec<String> = o
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Shard(ShardEnvelope {
                owner,
                body: ShardInput::Receipt { by, state: ReceiptState::Read, .. },
                trace: None,
            }) if &**by == "bob" => Some(owner.name().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(owners, ["alice", "carol"]);
    // The page ended before `to`: the next page is read from where it ended.
    assert_eq!(
        o.outputs.last(),
        Some(&Output::Read(Read::Receipts { user: key("bob"), from: 2, to: 5, state: ReceiptState::Read }))
    );
    let last = Read::Receipts { user: key("bob"), from: 2, to: 5, state: ReceiptState::Read };
    let o = s.read_done(last.clone(), ReadResult::Range(Ok(vec![stored(5, "alice")])));
    assert!(!o.outputs.iter().any(|o| matches!(o, Output::Read(_))), "done at `to`");
    assert!(s.read_done(last.clone(), ReadResult::Range(Ok(vec![]))).outputs.is_empty());
    assert!(s.read_done(last, ReadResult::Range(Err(StoreError::Unavailable("down".into())))).outputs.is_empty());
}

#[test]
fn pending_receipts_are_delivered_then_forgotten_through_the_ticket_order() {
    let mut h = Harness::new();
    let read = Read::FlushReceipts { user: key("alice"), session: addr("e1", 1) };
    assert_eq!(h.state.query(&read), Query::PendingReceipts { user: &key("alice"), limit: PENDING_RECEIPTS_MAX });
    let pending =
        vec![iris_storage::PendingReceipt { msg_id: "m1".into(), by: "bob".into(), state: ReceiptState::Delivered }];
    let o = h.state.read_done(read.clone(), ReadResult::PendingReceipts(Ok(pending)));
    assert!(
        matches!(&notices_of(&o.outputs)[..], [Notice::Receipt { msg_id, by, .. }] if msg_id == "m1" && by == "bob")
    );
    let (ticket, batch) = o.commit.expect("forgetting them is a write");
    assert!(
        matches!(&batch.ops[..], [WriteOp::ReceiptsDelivered { user, msg_ids }] if *user == key("alice") && msg_ids.len() == 1)
    );
    // Like any write, it holds back what later inputs release until it commits.
    h.input("carol", ShardInput::SessionOpened { session: addr("e1", 3), resume_after: None });
    h.commit_all();
    assert!(h.outputs().is_empty(), "the welcome waits for the receipts' write: {ticket}");
    h.state.committed(ticket, Ok(()));
    assert!(!h.outputs().is_empty(), "and goes once it is durable");
    // Nothing pending, or unreadable: no write, no frame.
    assert!(h.state.read_done(read.clone(), ReadResult::PendingReceipts(Ok(vec![]))).commit.is_none());
    let o = h.state.read_done(read, ReadResult::PendingReceipts(Err(StoreError::Unavailable("down".into()))));
    assert!(o.outputs.is_empty() && o.commit.is_none(), "kept for next time");
}

#[test]
fn an_ack_whose_write_failed_still_reads_its_receipts_and_its_mark_is_repaired() {
    let mut h = Harness::new();
    for i in 0..3 {
        h.send("alice", "bob", &format!("c-{i}"), 1);
    }
    h.commit_all();
    h.outputs();
    // The ack's mark cannot be stored; no later ack covers 1..=3 again
    // (acks only move forward), so its receipts must go now.
    h.input("bob", ShardInput::Ack { up_to: 3, read: false });
    h.fail_last();
    let reads: Vec<_> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Read(Read::Receipts { from, to, .. }) => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(reads, vec![(0, 3)], "the senders hear their receipts");
    let (_, batch) = h.state.reset().expect("the mark is written again");
    assert!(
        batch
            .ops
            .iter()
            .any(|op| matches!(op, WriteOp::Meta { user, meta, .. } if *user == key("bob") && meta.acked == 3)),
        "{batch:?}"
    );
}
