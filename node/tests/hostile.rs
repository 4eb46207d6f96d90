//! Hostile and broken input: every bad frame gets a clear error, never a
//! crash; the node keeps serving everyone else.

mod common;

use common::*;
use iris_client::{Client, ClientError, Encoding, ServerFrame};
use iris_protocol::ErrorCode;
use std::time::Duration;

async fn expect_closed(c: &mut Client) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Ok(Err(ClientError::Closed(_) | ClientError::Ws(_))) => return,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("connection stayed open"),
        }
    }
}

#[tokio::test]
async fn frames_before_hello_and_bad_tokens_are_unauthorized() {
    let node = start();
    let mut c = Client::connect(&node.ws_url, Encoding::Json).await.unwrap();
    c.send_text(r#"{"type":"send","id":"x","to":"bob","body":"hi"}"#).await.unwrap();
    expect(&mut c, "unauthorized", is_error(ErrorCode::Unauthorized)).await;
    expect_closed(&mut c).await;

    for token in ["garbage", "", &forged(&node)] {
        let mut c = Client::connect(&node.ws_url, Encoding::Json).await.unwrap();
        c.send_text(&format!(r#"{{"type":"hello","token":"{token}"}}"#)).await.unwrap();
        expect(&mut c, "unauthorized", is_error(ErrorCode::Unauthorized)).await;
        expect_closed(&mut c).await;
    }
    // alg: none is refused.
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none =
        format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(r#"{"sub":"a","tenant":"t","exp":99999999999}"#));
    let mut c = Client::connect(&node.ws_url, Encoding::Json).await.unwrap();
    c.send_text(&format!(r#"{{"type":"hello","token":"{none}"}}"#)).await.unwrap();
    expect(&mut c, "unauthorized", is_error(ErrorCode::Unauthorized)).await;
    expect_closed(&mut c).await;
}

fn forged(_node: &Node) -> String {
    iris_auth::Signer::hs256(b"not-the-node-key-not-the-node-key!").token("acme", "alice", 600).unwrap()
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_session_stays_open() {
    let node = start();
    let (mut a, _) = node.login("acme", "alice").await;
    a.send_text(r#"{"type":"warp","id":"w1"}"#).await.unwrap();
    let e = expect(&mut a, "unknown_type", is_error(ErrorCode::UnknownType)).await;
    assert!(matches!(e, ServerFrame::Error(e) if e.id.as_deref() == Some("w1")));
    a.send_text(r#"{"type":"send","id":"s1","to":42}"#).await.unwrap();
    let e = expect(&mut a, "bad_frame", is_error(ErrorCode::BadFrame)).await;
    assert!(matches!(e, ServerFrame::Error(e) if e.id.as_deref() == Some("s1")));
    a.send_text(r#"{"no":"type"}"#).await.unwrap();
    expect(&mut a, "bad_frame", is_error(ErrorCode::BadFrame)).await;
    a.send_text(r#"{"type":"send","id":"","to":"bob","body":"x"}"#).await.unwrap();
    expect(&mut a, "bad_frame (empty id)", is_error(ErrorCode::BadFrame)).await;
    a.send_text(r#"{"type":"hello","token":"again"}"#).await.unwrap();
    expect(&mut a, "bad_frame (second hello)", is_error(ErrorCode::BadFrame)).await;
    // Two garbage frames then a good one: the streak resets, still open.
    a.send_text("not json").await.unwrap();
    a.send_text("{{{").await.unwrap();
    a.ping(5).await.unwrap();
    expect(&mut a, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;
}

#[tokio::test]
async fn three_garbage_frames_in_a_row_close() {
    let node = start();
    let (mut a, _) = node.login_with("acme", "alice", None, Encoding::Binary).await;
    // A valid header with a bad payload is a bad frame, not garbage.
    a.send_binary(vec![1, 2, 0xff, 0xff]).await.unwrap();
    expect(&mut a, "bad_frame", is_error(ErrorCode::BadFrame)).await;
    for junk in [vec![9u8, 9, 9], vec![], vec![7, 7]] {
        a.send_binary(junk).await.unwrap();
    }
    expect_closed(&mut a).await;
    // The node still serves others.
    let (mut b, _) = node.login("acme", "bob").await;
    b.ping(1).await.unwrap();
    expect(&mut b, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;
}

#[tokio::test]
async fn oversized_frames_close_with_too_large() {
    let node = start();
    let (mut a, _) = node.login("acme", "alice").await;
    a.send("huge", "bob", &"x".repeat(1_100_000)).await.unwrap();
    expect(&mut a, "too_large", is_error(ErrorCode::TooLarge)).await;
    expect_closed(&mut a).await;
}

#[tokio::test]
async fn rate_limit_per_session() {
    let node = start_with("[limits]\nframes_per_second = 1\nframe_burst = 5\n");
    let (mut a, _) = node.login("acme", "alice").await;
    for i in 0..10 {
        a.send(&format!("r{i}"), "bob", "x").await.unwrap();
    }
    let e = expect(&mut a, "rate_limited", is_error(ErrorCode::RateLimited)).await;
    assert!(matches!(e, ServerFrame::Error(e) if e.id.as_deref().is_some_and(|id| id.starts_with('r'))));
}

#[tokio::test]
async fn silent_sessions_time_out_after_two_heartbeats() {
    let node = start_with("[limits]\nheartbeat_ms = 1000\n");
    let (mut a, w) = node.login("acme", "alice").await;
    assert_eq!(w.heartbeat_ms, 1_000);
    let started = std::time::Instant::now();
    expect_closed(&mut a).await;
    assert!(started.elapsed() >= Duration::from_millis(1_900), "closed too early: {:?}", started.elapsed());
}

#[tokio::test]
async fn wrong_path_is_refused() {
    let node = start();
    let url = node.ws_url.replace("/v1/ws", "/other");
    assert!(Client::connect(&url, Encoding::Json).await.is_err());
}

#[tokio::test]
async fn tenants_have_a_send_budget_across_sessions() {
    let node = start_with("[limits]\ntenant_sends_per_second = 1\ntenant_send_burst = 3\n");
    let (mut a, _) = node.login("acme", "alice").await;
    let (mut b, _) = node.login("acme", "bob").await;
    let (mut other, _) = node.login("globex", "carol").await;
    for i in 0..2 {
        a.send(&format!("a{i}"), "x", "m").await.unwrap();
        accepted(&mut a, &format!("a{i}")).await;
    }
    b.send("b0", "x", "m").await.unwrap();
    accepted(&mut b, "b0").await;
    b.send("b1", "x", "m").await.unwrap();
    let e = expect(&mut b, "rate_limited", is_error(ErrorCode::RateLimited)).await;
    assert!(
        matches!(e, ServerFrame::Error(e) if e.id.as_deref() == Some("b1")),
        "the tenant's budget is shared by its sessions"
    );
    other.send("c0", "x", "m").await.unwrap();
    accepted(&mut other, "c0").await;
}
