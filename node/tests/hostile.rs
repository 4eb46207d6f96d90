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

/// Reads what a raw TCP connection to `addr` gets for a WebSocket upgrade
/// request, until the server closes it (or `WAIT`).
async fn raw_upgrade(ws_url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = ws_url.trim_start_matches("ws://").trim_end_matches("/v1/ws");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    // The server may have refused and closed before the request is written.
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_node_at_its_connection_limit_refuses_more_clearly_on_every_transport() {
    let node = start_with("[limits]\nmax_connections = 2\n");
    let (mut alice, _) = node.login("acme", "alice").await;
    let (_bob, _) = node.login("acme", "bob").await;
    // A third WebSocket connection: 503 with a message, then closed.
    let answer = raw_upgrade(&node.ws_url).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
    assert!(answer.ends_with("node at its connection limit; retry"), "{answer:?}");
    // A QUIC connection: refused at once (CONNECTION_REFUSED).
    let trust = iris_client::Trust::from_pem_file(&node.dir.join("tls/dev-cert.pem")).unwrap();
    let q = iris_client::QuicConnector::new(node.quic_addr.unwrap(), "localhost", &trust).unwrap();
    let refused = tokio::time::timeout(WAIT, q.hello(&node.token("acme", "carol"), None, Encoding::Json))
        .await
        .expect("the refusal comes at once");
    let e = refused.err().expect("refused").to_string();
    assert!(e.to_lowercase().contains("refused"), "{e}");
    // The sessions held are untouched, and a closed one makes room.
    alice.send("c-1", "bob", "still here").await.unwrap();
    expect(&mut alice, "accepted", |f| matches!(f, ServerFrame::Accepted(_))).await;
    drop(alice);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Client::hello(&node.ws_url, &node.token("acme", "carol"), None, Encoding::Json).await {
            Ok(_) => break,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "no room after a session closed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Connects to `addr`, writes `prefix` and then nothing more; returns how
/// long the server took to close the connection (or `None` if it was
/// still open after `limit`).
async fn held_open(addr: &str, prefix: &[u8], limit: Duration) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(prefix).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut sink = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut sink)).await {
        Ok(_) => Some(started.elapsed()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn slowloris_is_cut_off_on_every_tcp_listener() {
    // Deadlines short enough for a test: the opening steps get 500 ms.
    let node = start_with(
        "[listen]\nws = \"127.0.0.1:0\"\nwss = \"127.0.0.1:0\"\nquic = \"off\"\nhttp = \"127.0.0.1:0\"\nmetrics = \"off\"\n\
         [limits]\nhello_timeout_ms = 500\n",
    );
    let host = |url: &str| url.split("://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let limit = Duration::from_secs(15);
    // WebSocket: an upgrade request that never ends.
    let ws = host(&node.ws_url);
    let took = held_open(&ws, b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n", limit).await.expect("ws: closed");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "ws: {took:?}");
    // WebSocket over TLS: a TLS handshake that never comes.
    let wss = host(node.wss_url.as_deref().unwrap());
    let took = held_open(&wss, b"", limit).await.expect("wss: closed");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "wss: {took:?}");
    // An upgraded WebSocket that never says hello: unauthorized, then closed.
    let mut c = Client::connect(&node.ws_url, Encoding::Json).await.unwrap();
    let f = c.recv().await.unwrap();
    assert!(matches!(&f, ServerFrame::Error(e) if e.code == ErrorCode::Unauthorized), "{f:?}");
    expect_closed(&mut c).await;
    // The service API: request headers that never end, cut off by its
    // header deadline (5 s).
    let api = host(node.api_url.as_deref().unwrap());
    let took = held_open(&api, b"GET /v1/graph/events HTTP/1.1\r\nHost: x\r\n", limit).await.expect("http: closed");
    assert!(took < Duration::from_secs(8), "http: {took:?}");
    // And the node still serves.
    let (_alice, _) = node.login("acme", "alice").await;
}

#[tokio::test]
async fn a_service_api_body_that_trickles_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = start_with("[http]\nbody_timeout_ms = 500\n");
    let api = node.api_url.as_deref().unwrap().split("://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    // The head in time, then 10 of the 100 bytes it announces, then nothing.
    let mut s = tokio::net::TcpStream::connect(&api).await.unwrap();
    s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"events\"")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut answer))
        .await
        .expect("the node closes the connection")
        .unwrap();
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request body not received within 500 ms"), "{answer}");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "{took:?}");
    // A body over the limit, announced, is refused before it is read.
    let mut s = tokio::net::TcpStream::connect(&api).await.unwrap();
    s.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(15), s.read_exact(&mut head)).await.expect("an answer").unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
}

#[tokio::test]
async fn a_quic_connection_that_never_opens_its_session_stream_is_closed() {
    let node = start_with("[limits]\nhello_timeout_ms = 500\n");
    let trust = iris_client::Trust::from_pem_file(&node.dir.join("tls/dev-cert.pem")).unwrap();
    let q = iris_client::QuicConnector::new(node.quic_addr.unwrap(), "localhost", &trust).unwrap();
    let conn = q.handshake_only().await.expect("handshake");
    let started = tokio::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(15), conn.closed()).await.expect("closed by the node");
    let took = started.elapsed();
    match &closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(u64::from(c.error_code), 1008, "{closed:?}");
            assert_eq!(&c.reason[..], b"no session stream");
        }
        other => panic!("closed by the node with a reason: {other:?}"),
    }
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "{took:?}");
    // And the node still serves.
    let (_alice, _) = node.login("acme", "alice").await;
}

#[tokio::test]
async fn a_reader_that_falls_too_far_behind_is_cut_off_and_loses_nothing() {
    let node = start();
    // Bob's client takes nothing from its socket: once the kernel's buffers
    // are full, his frames queue at the edge, and past the session queue's
    // bound (limits.session_queue_frames) the edge cuts him off.
    let (mut bob, _) = node.login("acme", "bob").await;
    let (mut alice, _) = node.login("acme", "alice").await;
    let body = "x".repeat(16 * 1024);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let sent = 3_000;
    for i in 0..sent {
        send_until_accepted(&mut alice, &format!("s-{i}"), "bob", &body, deadline).await;
    }
    // Reading now: what the socket held, then the close.
    let mut seen = 0u64;
    let closed = loop {
        match tokio::time::timeout(WAIT, bob.recv()).await.expect("bob's connection ends") {
            Ok(ServerFrame::Message(m)) => seen = seen.max(m.seq),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(seen < sent, "bob was cut off before everything reached him ({seen} of {sent})");
    eprintln!("cut off after {seen} of {sent}: {closed}");
    // Nothing is lost: he resumes where he was and pages through the rest.
    let (mut bob, _) = node.login_with("acme", "bob", Some(seen), Encoding::Json).await;
    let mut seqs = Vec::new();
    loop {
        assert!(std::time::Instant::now() < deadline, "paging stalled after {} messages", seqs.len());
        match tokio::time::timeout(WAIT, bob.recv()).await.expect("a page").unwrap() {
            ServerFrame::Message(m) => seqs.push(m.seq),
            ServerFrame::Synced(s) if s.more => bob.sync(seqs.last().copied().unwrap_or(seen), None).await.unwrap(),
            ServerFrame::Synced(_) => break,
            _ => {}
        }
    }
    assert_eq!(seqs, (seen + 1..=sent).collect::<Vec<_>>());
}
