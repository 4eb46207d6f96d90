//! Tenant bars (ADR 0030).

use super::*;
use iris_storage::Bar;

fn bar(tenant: &str, id: u64) -> Bar {
    Bar { tenant: tenant.into(), id }
}

fn writes_of(batches: &[WriteBatch], tenant: &str) -> usize {
    let mine = |u: &UserKey| &*u.tenant == tenant;
    batches
        .iter()
        .flat_map(|b| &b.ops)
        .filter(|op| match op {
            WriteOp::Message { user, .. } | WriteOp::Meta { user, .. } | WriteOp::Session { user, .. } => mine(user),
            WriteOp::Dedup { key, .. } => mine(&key.sender),
            WriteOp::Contact { owner, .. } => mine(owner),
            _ => false,
        })
        .count()
}

#[test]
fn a_barred_tenant_is_forgotten_refused_and_never_written_while_others_are_served() {
    let mut h = Harness::new();
    h.open("bob", 1);
    h.add_contact("bob", "dave");
    h.commit_all();
    h.outputs();
    h.state.set_bars(h.now, &[bar("acme", 7)]);
    assert!(h.state.is_barred("acme") && !h.state.is_barred("other"));
    assert!(h.state.users.keys().all(|k| &*k.tenant != "acme"), "its users are forgotten");
    // Its inputs need nothing loaded and are refused, unwritten.
    let env = ShardEnvelope {
        owner: key("bob").into(),
        body: ShardInput::Send {
            from: "alice".into(),
            client_id: "c1".into(),
            body: "hi".into(),
            reply: addr("e1", 4),
        },
        trace: None,
    };
    assert_eq!(h.state.needs(&env), Needs::default());
    assert!(h.state.handle(h.now, env, Found::default()).is_none());
    let f = h.notices();
    assert!(
        matches!(&f[..], [(s, Notice::Refused { code, .. })] if s == &[SessionId(4)] && *code == ErrorCode::Forbidden),
        "{f:?}"
    );
    // A user loaded while the bar came is not taken back in.
    h.state.insert_user(key("carol"), UserRecord::default());
    assert!(!h.state.users.contains_key(&key("carol")));
    // bob's edge dies: his session was forgotten with him, nothing is written.
    let written = h.state.handle_timeout(h.now + 5_000, h.now + 5_000);
    assert_eq!(writes_of(&written.into_iter().map(|(_, b)| b).collect::<Vec<_>>(), "acme"), 0);
    // Another tenant is served as before.
    let other = UserKey::new("other", "ann");
    let open = ShardEnvelope {
        owner: other.clone().into(),
        body: ShardInput::SessionOpened { session: addr("e1", 9), resume_after: None },
        trace: None,
    };
    let needed = h.state.needs(&open).user.expect("a user of another tenant is loaded");
    h.state.insert_user(needed, UserRecord::default());
    let (_, batch) = h.state.handle(h.now, open, Found::default()).expect("her session is recorded");
    assert_eq!(writes_of(&[batch], "other"), 1);
    assert_eq!(h.state.users[&other].sessions.len(), 1);
}

#[test]
fn a_bar_is_confirmed_once_every_write_issued_before_it_finished() {
    let mut h = Harness::new();
    h.state.set_bars(h.now, &[]); // read at the claim, long ago
    h.now += h.state.takeover_window();
    h.open("bob", 1);
    h.send("alice", "bob", "c1", 2); // in flight
    assert_eq!(h.pending.len(), 1);
    let now = h.now;
    h.state.set_bars(now, &[bar("acme", 7)]);
    assert!(h.state.bars_to_confirm(now).is_empty(), "a write of the tenant may still land");
    h.commit_all();
    assert_eq!(h.state.bars_to_confirm(now), vec![bar("acme", 7)]);
    assert!(h.state.bars_to_confirm(now).is_empty(), "handed out once");
    h.state.bar_confirmed(&bar("acme", 7), false);
    assert_eq!(h.state.bars_to_confirm(now), vec![bar("acme", 7)], "a failed confirmation is due again");
    h.state.bar_confirmed(&bar("acme", 7), true);
    let changed = h.state.bars_changed();
    h.state.set_bars(now, &[bar("acme", 7)]);
    assert!(h.state.bars_to_confirm(now).is_empty(), "the same bar read again changes nothing");
    assert_eq!(h.state.bars_changed(), changed);
    // A new bar of the tenant (lifted and barred again) is confirmed anew.
    h.state.set_bars(now, &[bar("acme", 8)]);
    assert_eq!(h.state.bars_to_confirm(now), vec![bar("acme", 8)]);
    // A stale report of the old bar does not touch the new one.
    h.state.bar_confirmed(&bar("acme", 7), false);
    assert!(h.state.bars_to_confirm(now).is_empty());
    // Lifted: the tenant is served again, and inputs judged before see it.
    let changed = h.state.bars_changed();
    h.state.set_bars(now, &[]);
    assert!(!h.state.is_barred("acme"));
    assert!(h.state.bars_changed() > changed, "a lift is a change too");
    h.open("bob", 3);
    assert_eq!(h.state.users[&key("bob")].sessions.len(), 1);
}

#[test]
fn a_shard_just_started_confirms_only_once_an_earlier_owner_s_writes_cannot_land() {
    let mut h = Harness::new();
    let claimed = h.now;
    h.state.set_bars(claimed, &[bar("acme", 1), bar("beta", 2)]);
    let window = h.state.takeover_window();
    assert!(h.state.bars_to_confirm(claimed + window - 1).is_empty(), "it has written nothing, the earlier owner may");
    assert_eq!(h.state.bars_to_confirm(claimed + window), vec![bar("acme", 1), bar("beta", 2)]);
}

#[test]
fn reads_asked_before_a_bar_send_and_write_nothing_after_it() {
    let mut h = Harness::new();
    h.open("bob", 1);
    h.state.set_bars(h.now, &[bar("acme", 7)]);
    let session = addr("e1", 1);
    let page = iris_storage::InboxPage { messages: vec![stored(1, "alice")], more: false };
    let replay = Read::Replay {
        user: key("bob"),
        session: session.clone(),
        after: 0,
        limit: 10,
        inbox_head: 1,
        always_synced: true,
    };
    let o = h.state.read_done(replay, ReadResult::Inbox(Ok(page)));
    assert!(o.outputs.is_empty() && o.commit.is_none(), "{:?}", o.outputs);
    let pending =
        vec![iris_storage::PendingReceipt { msg_id: "m1".into(), by: "ann".into(), state: ReceiptState::Read }];
    let flush = Read::FlushReceipts { user: key("bob"), session };
    let o = h.state.read_done(flush, ReadResult::PendingReceipts(Ok(pending)));
    assert!(o.outputs.is_empty() && o.commit.is_none(), "no receipt goes out, none is forgotten");
}
