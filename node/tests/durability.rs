//! Nothing accepted is lost: kill -9 under load, graceful SIGTERM.

mod common;

use common::*;
use iris_client::{Encoding, ServerFrame};
use std::collections::BTreeMap;

/// Senders stream messages; the node is killed with SIGKILL mid-stream.
/// Every message that was `accepted` must be in the recipient's inbox after
/// restart, in order, once.
#[tokio::test]
async fn kill_9_loses_nothing_accepted() {
    let mut node = start();
    let mut senders = Vec::new();
    for s in 0..4 {
        let (c, _) = node.login("acme", &format!("sender{s}")).await;
        senders.push(c);
    }
    // Each sender pipelines sends without waiting; collect what was accepted.
    let mut tasks = Vec::new();
    for (s, mut c) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut accepted = BTreeMap::new();
            for i in 0..2_000 {
                if c.send(&format!("{s}-{i}"), "sink", &format!("{s}-{i}")).await.is_err() {
                    break;
                }
                // Drain what has arrived so far without blocking.
                while let Ok(Ok(f)) = tokio::time::timeout(std::time::Duration::from_millis(0), c.recv()).await {
                    if let ServerFrame::Accepted(a) = f {
                        accepted.insert(a.id, a.msg_id);
                    }
                }
            }
            loop {
                match tokio::time::timeout(std::time::Duration::from_secs(5), c.recv()).await {
                    Ok(Ok(ServerFrame::Accepted(a))) => {
                        accepted.insert(a.id, a.msg_id);
                    }
                    Ok(Ok(_)) => {}
                    _ => break,
                }
            }
            accepted
        }));
    }
    // Kill once at least some messages were accepted: poll the sink's inbox
    // head through a fresh session.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, w) = node.login("acme", "sink").await;
        if w.inbox_head >= 500 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress before kill");
    }
    node.kill9();
    let mut accepted = BTreeMap::new();
    for t in tasks {
        accepted.extend(t.await.unwrap());
    }
    assert!(accepted.len() >= 500, "only {} accepted", accepted.len());

    let dir = node.dir.clone();
    let node = start_in(&dir, "");
    let (mut sink, w) = node.login_with("acme", "sink", Some(0), Encoding::Binary).await;
    let mut stored = BTreeMap::new();
    // Bodies in inbox order.
    let mut order: Vec<String> = Vec::new();
    let mut last = 0;
    loop {
        match sink.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Message(m) => {
                assert_eq!(m.seq, last + 1, "gap or repeat in the inbox");
                last = m.seq;
                let body = m.body.as_str().unwrap().to_owned();
                order.push(body.clone());
                stored.insert(body, m.msg_id);
            }
            ServerFrame::Synced(s) if s.more => sink.sync(last, Some(1_000)).await.unwrap(),
            ServerFrame::Synced(_) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(last, w.inbox_head);
    for (id, msg_id) in &accepted {
        assert_eq!(stored.get(id), Some(msg_id), "accepted {id} is missing after kill -9");
    }
    // Per-sender order: within one sender, later ids have later seqs.
    let mut newest: BTreeMap<&str, u32> = BTreeMap::new();
    for body in &order {
        let (sender, i) = body.rsplit_once('-').expect("bodies are sender-index");
        let i: u32 = i.parse().expect("index");
        if let Some(prev) = newest.insert(sender, i) {
            assert!(i > prev, "{body} stored after {sender}-{prev}");
        }
    }
    eprintln!("accepted {} of {} stored before the kill", accepted.len(), stored.len());
}

#[tokio::test]
async fn sigterm_closes_sessions_with_a_reason_and_exits_cleanly() {
    let mut node = start();
    let (mut a, _) = node.login("acme", "alice").await;
    a.send("t1", "bob", "before shutdown").await.unwrap();
    accepted(&mut a, "t1").await;
    let status = node.sigterm();
    assert!(status.success(), "exit status {status:?}");
    let closed = loop {
        match a.recv_timeout(WAIT).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(&closed, iris_client::ClientError::Closed(Some(r)) if r.contains("shutting down")), "{closed:?}");
    let dir = node.dir.clone();
    let node = start_in(&dir, "");
    let (_, w) = node.login("acme", "bob").await;
    assert_eq!(w.inbox_head, 1);
}
