//! Messaging end to end over real WebSockets against the real binary.

mod common;

use common::*;
use iris_client::{Encoding, ServerFrame};
use iris_protocol::{ErrorCode, ReceiptState};

#[tokio::test]
async fn two_users_chat_with_receipts() {
    let node = start();
    let (mut alice, w) = node.login("acme", "alice").await;
    assert_eq!(w.user, "alice");
    assert_eq!(w.inbox_head, 0);
    assert_eq!(w.heartbeat_ms, 30_000);
    let (mut bob, _) = node.login("acme", "bob").await;

    alice.send("c-1", "bob", "hi bob").await.unwrap();
    let acc = accepted(&mut alice, "c-1").await;
    let m = message(&mut bob).await;
    assert_eq!((m.seq, m.from.as_str(), m.body.as_str()), (1, "alice", Some("hi bob")));
    assert_eq!(m.msg_id, acc.msg_id);
    assert_eq!(m.ts, acc.ts);

    bob.ack(1).await.unwrap();
    let r = expect(&mut alice, "delivered receipt", |f| matches!(f, ServerFrame::Receipt(_))).await;
    assert!(
        matches!(r, ServerFrame::Receipt(r) if r.msg_id == acc.msg_id && r.by == "bob" && r.state == ReceiptState::Delivered)
    );
    bob.read(1).await.unwrap();
    let r = expect(&mut alice, "read receipt", |f| matches!(f, ServerFrame::Receipt(_))).await;
    assert!(matches!(r, ServerFrame::Receipt(r) if r.state == ReceiptState::Read));

    // Reply in the other direction, binary codec on bob's side this time.
    let (mut bob2, _) = node.login_with("acme", "bob", None, Encoding::Binary).await;
    bob2.send("b-1", "alice", "hello alice").await.unwrap();
    accepted(&mut bob2, "b-1").await;
    let m = message(&mut alice).await;
    assert_eq!((m.seq, m.from.as_str()), (1, "bob"));
}

#[tokio::test]
async fn retries_are_deduplicated_even_across_restarts() {
    let mut node = start();
    let (mut alice, _) = node.login("acme", "alice").await;
    let (mut bob, _) = node.login("acme", "bob").await;
    alice.send("same", "bob", "once").await.unwrap();
    let first = accepted(&mut alice, "same").await;
    alice.send("same", "bob", "twice?").await.unwrap();
    let second = accepted(&mut alice, "same").await;
    assert_eq!((first.msg_id.as_str(), first.ts), (second.msg_id.as_str(), second.ts));
    // A different `to` with the same id is still the same send.
    alice.send("same", "carol", "other").await.unwrap();
    assert_eq!(accepted(&mut alice, "same").await.msg_id, first.msg_id);
    // Bob got exactly one message: the next one he gets is seq 2.
    alice.send("next", "bob", "two").await.unwrap();
    accepted(&mut alice, "next").await;
    assert_eq!(message(&mut bob).await.seq, 1);
    assert_eq!(message(&mut bob).await.seq, 2);

    node.kill9();
    let dir = node.dir.clone();
    let node2 = start_in(&dir, "");
    let (mut alice, _) = node2.login("acme", "alice").await;
    alice.send("same", "bob", "after restart").await.unwrap();
    assert_eq!(accepted(&mut alice, "same").await.msg_id, first.msg_id);
    let (_, w) = node2.login("acme", "bob").await;
    assert_eq!(w.inbox_head, 2, "the retry after restart stored nothing");
}

#[tokio::test]
async fn offline_messages_replay_on_resume_and_sync_pages() {
    let node = start();
    let (mut alice, _) = node.login("acme", "alice").await;
    for i in 1..=25 {
        alice.send(&format!("m{i}"), "bob", &format!("msg {i}")).await.unwrap();
    }
    for i in 1..=25 {
        accepted(&mut alice, &format!("m{i}")).await;
    }
    // Resume after 20: 21..=25, then synced.
    let (mut bob, w) = node.login_with("acme", "bob", Some(20), Encoding::Json).await;
    assert_eq!(w.inbox_head, 25);
    let mut seqs = Vec::new();
    loop {
        match bob.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Message(m) => seqs.push(m.seq),
            ServerFrame::Synced(s) => {
                assert_eq!((s.inbox_head, s.more), (25, false));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seqs, (21..=25).collect::<Vec<_>>());
    // No resume_after: nothing replayed; sync pages of 10.
    let (mut bob2, _) = node.login("acme", "bob").await;
    bob2.sync(0, Some(10)).await.unwrap();
    let mut got = Vec::new();
    let mut after = 0;
    loop {
        match bob2.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Message(m) => {
                after = m.seq;
                got.push(m.seq);
            }
            ServerFrame::Synced(s) if s.more => bob2.sync(after, Some(10)).await.unwrap(),
            ServerFrame::Synced(_) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, (1..=25).collect::<Vec<_>>());
}

#[tokio::test]
async fn every_device_gets_every_message() {
    let node = start();
    let (mut phone, _) = node.login("acme", "bob").await;
    let (mut laptop, _) = node.login_with("acme", "bob", None, Encoding::Binary).await;
    let (mut alice, _) = node.login("acme", "alice").await;
    for i in 0..3 {
        alice.send(&format!("d{i}"), "bob", "x").await.unwrap();
    }
    for dev in [&mut phone, &mut laptop] {
        for seq in 1..=3 {
            assert_eq!(message(dev).await.seq, seq);
        }
    }
}

#[tokio::test]
async fn offline_sender_gets_receipts_when_back() {
    let node = start();
    let (mut alice, _) = node.login("acme", "alice").await;
    alice.send("r1", "bob", "hi").await.unwrap();
    let acc = accepted(&mut alice, "r1").await;
    alice.close().await.unwrap();
    let (mut bob, _) = node.login_with("acme", "bob", Some(0), Encoding::Json).await;
    message(&mut bob).await;
    // Wait until alice's session is gone, as the shard sees it: her own
    // presence reads offline to herself.
    bob.read(1).await.unwrap();
    let (mut alice, _) = node.login("acme", "alice").await;
    let r = expect(&mut alice, "pending receipt", |f| matches!(f, ServerFrame::Receipt(_))).await;
    assert!(matches!(r, ServerFrame::Receipt(r) if r.msg_id == acc.msg_id && r.state == ReceiptState::Read));
}

#[tokio::test]
async fn typing_and_ping() {
    let node = start();
    let (mut alice, _) = node.login("acme", "alice").await;
    let (mut bob, _) = node.login("acme", "bob").await;
    alice.send_text(r#"{"type":"typing","to":"bob","state":"start"}"#).await.unwrap();
    let t = expect(&mut bob, "typing", |f| matches!(f, ServerFrame::Typing(_))).await;
    assert!(matches!(t, ServerFrame::Typing(t) if t.from == "alice"));
    alice.ping(123).await.unwrap();
    let p = expect(&mut alice, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;
    assert!(matches!(p, ServerFrame::Pong(p) if p.ts == Some(123)));
}

#[tokio::test]
async fn bodies_over_the_limit_are_too_large_with_the_id() {
    let node = start_with("[limits]\nmax_body_bytes = 1000\n");
    let (mut alice, _) = node.login("acme", "alice").await;
    alice.send("big", "bob", &"x".repeat(1001)).await.unwrap();
    let e = expect(&mut alice, "too_large", is_error(ErrorCode::TooLarge)).await;
    assert!(matches!(e, ServerFrame::Error(e) if e.id.as_deref() == Some("big")));
    alice.send("ok", "bob", &"x".repeat(1000)).await.unwrap();
    accepted(&mut alice, "ok").await;
}

/// Random test: many users in two tenants with overlapping names; no
/// message ever reaches the other tenant.
#[tokio::test]
async fn tenants_never_cross() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    eprintln!("tenants_never_cross seed={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let node = start();
    let names = ["ann", "ben", "cat", "dan", "eve"];
    let mut clients = Vec::new();
    for tenant in ["t1", "t2"] {
        for n in names {
            let (c, _) = node.login(tenant, n).await;
            clients.push((tenant, n, c));
        }
    }
    let mut expected: std::collections::HashMap<(String, String), Vec<String>> = Default::default();
    for i in 0..60 {
        let from = rng.random_range(0..clients.len());
        let to = names[rng.random_range(0..names.len())];
        let (tenant, name, c) = &mut clients[from];
        let body = format!("{tenant}:{name}:{i}");
        c.send(&format!("s{i}"), to, &body).await.unwrap();
        accepted(c, &format!("s{i}")).await;
        expected.entry((tenant.to_string(), to.to_string())).or_default().push(body);
    }
    for (tenant, name, c) in &mut clients {
        let want = expected.remove(&(tenant.to_string(), name.to_string())).unwrap_or_default();
        c.sync(0, Some(1_000)).await.unwrap();
        // Live deliveries were buffered before the history page: clients
        // drop duplicates by seq, and so does this check.
        let mut got = std::collections::BTreeMap::new();
        loop {
            match c
                .expect(WAIT, "history", |f| matches!(f, ServerFrame::Message(_) | ServerFrame::Synced(_)))
                .await
                .unwrap()
            {
                ServerFrame::Message(m) => {
                    got.insert(m.seq, m.body.as_str().unwrap().to_owned());
                }
                _ => break,
            }
        }
        assert!(got.keys().copied().eq(1..=got.len() as u64), "seed {seed}: gaps in {got:?}");
        let bodies: Vec<String> = got.into_values().collect();
        assert!(
            bodies.iter().all(|b| b.starts_with(&format!("{tenant}:"))),
            "seed {seed}: {tenant}/{name} got {bodies:?}"
        );
        assert_eq!(bodies, want, "seed {seed}: {tenant}/{name}");
    }
}
