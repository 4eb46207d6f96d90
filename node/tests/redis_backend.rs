//! A node on the Redis storage backend: durable across node crashes, and
//! honest when Redis goes away (no false `accepted`, automatic recovery).

mod common;

use common::*;
use iris_client::ServerFrame;
use iris_protocol::ErrorCode;
use std::time::{Duration, Instant};

fn redis_url() -> String {
    std::env::var("IRIS_TEST_REDIS").expect("IRIS_TEST_REDIS is not set: run scripts/test, which starts Redis")
}

fn backend(url: &str) -> String {
    format!("[storage]\nbackend = \"redis\"\nredis_url = \"{url}\"\n")
}

#[tokio::test]
async fn chat_history_lives_in_redis_across_node_crashes() {
    let tmp = tempfile::tempdir().unwrap();
    let tenant = format!("r{}", std::process::id());
    let extra = backend(&redis_url());
    let mut node = start_in(tmp.path(), &extra);
    let (mut alice, _) = node.login(&tenant, "alice").await;
    for i in 1..=3 {
        alice.send(&format!("m{i}"), "bob", &format!("hello {i}")).await.unwrap();
        accepted(&mut alice, &format!("m{i}")).await;
    }
    node.kill9();
    let node = start_in(tmp.path(), &extra);
    let (mut bob, w) = node.login_with(&tenant, "bob", Some(0), iris_client::Encoding::Json).await;
    assert_eq!(w.inbox_head, 3);
    for seq in 1..=3 {
        assert_eq!(message(&mut bob).await.seq, seq);
    }
    // Retries are still recognised after the crash.
    let (mut alice, _) = node.login(&tenant, "alice").await;
    alice.send("m1", "bob", "again").await.unwrap();
    accepted(&mut alice, "m1").await;
    let (_, w) = node.login(&tenant, "bob").await;
    assert_eq!(w.inbox_head, 3);
}

#[tokio::test]
async fn redis_down_means_unavailable_never_a_false_accepted_and_recovery_is_automatic() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let redis = Redis::start(port, tmp.path());
    let node = start_with(&backend(&format!("redis://127.0.0.1:{port}")));
    let (mut alice, _) = node.login("acme", "alice").await;
    alice.send("before", "bob", "x").await.unwrap();
    accepted(&mut alice, "before").await;

    drop(redis);
    alice.send("during", "bob", "y").await.unwrap();
    let answer = expect(&mut alice, "an answer to the send", |f| {
        matches!(f, ServerFrame::Accepted(a) if a.id == "during")
            || matches!(f, ServerFrame::Error(e) if e.id.as_deref() == Some("during"))
    })
    .await;
    assert!(
        matches!(&answer, ServerFrame::Error(e) if e.code == ErrorCode::Unavailable),
        "no accepted while Redis is down: {answer:?}"
    );
    // The session stays connected.
    alice.ping(1).await.unwrap();
    expect(&mut alice, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;

    let _redis = Redis::start(port, tmp.path());
    // Retrying the same id succeeds once Redis is back (poll with a deadline).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        alice.send("during", "bob", "y").await.unwrap();
        let f = expect(&mut alice, "an answer", |f| {
            matches!(f, ServerFrame::Accepted(a) if a.id == "during")
                || matches!(f, ServerFrame::Error(e) if e.id.as_deref() == Some("during"))
        })
        .await;
        if matches!(f, ServerFrame::Accepted(_)) {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
