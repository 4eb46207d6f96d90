//! QUIC and TLS end to end: the same protocol over QUIC as over WebSocket,
//! QUIC and wss clients talking to each other, migration, resumption,
//! malformed framing, stream limits, token checks, certificate reload.

mod common;

use common::*;
use iris_client::{Client, ClientError, Encoding, QuicConnector, ServerFrame, Trust};
use iris_protocol::{ErrorCode, ReceiptState};
use std::time::{Duration, Instant};

fn trust(node: &Node) -> Trust {
    Trust::from_pem_file(&node.dir.join("tls/dev-cert.pem")).unwrap()
}

fn connector(node: &Node) -> QuicConnector {
    QuicConnector::new(node.quic_addr.unwrap(), "localhost", &trust(node)).unwrap()
}

async fn quic_login(node: &Node, q: &QuicConnector, user: &str, enc: Encoding) -> Client {
    q.hello(&node.token("acme", user), None, enc).await.expect("QUIC login").0
}

async fn expect_closed(c: &mut Client) -> ClientError {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return e,
            Err(_) => panic!("connection stayed open"),
        }
    }
}

#[tokio::test]
async fn quic_and_wss_clients_chat_with_everything_the_protocol_promises() {
    let node = start_with(
        "[listen]\nws = \"127.0.0.1:0\"\nmetrics = \"off\"\nquic = \"127.0.0.1:0\"\nwss = \"127.0.0.1:0\"\nhttp = \"off\"\n",
    );
    let q = connector(&node);
    let mut alice = quic_login(&node, &q, "alice", Encoding::Binary).await;
    let wss = node.wss_url.clone().unwrap().replace("127.0.0.1", "localhost");
    let (mut bob, _) =
        Client::hello_wss(&wss, &trust(&node), &node.token("acme", "bob"), None, Encoding::Json).await.unwrap();

    // Presence across transports.
    bob.send_text(r#"{"type":"contacts","upsert":[{"user":"alice"}]}"#).await.unwrap();
    expect(&mut bob, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    alice.subscribe(&["bob"]).await.unwrap();
    let p = presence_of(&mut alice, "bob").await;
    assert_eq!(p.status, iris_protocol::PresenceStatus::Online);

    // Message, receipts, history.
    alice.send("q-1", "bob", "over quic").await.unwrap();
    let acc = accepted(&mut alice, "q-1").await;
    let m = message(&mut bob).await;
    assert_eq!((m.seq, m.from.as_str(), m.body.as_str()), (1, "alice", Some("over quic")));
    bob.read(1).await.unwrap();
    let r = expect(&mut alice, "receipt", |f| matches!(f, ServerFrame::Receipt(_))).await;
    assert!(matches!(r, ServerFrame::Receipt(r) if r.msg_id == acc.msg_id && r.state == ReceiptState::Read));
    bob.send("w-1", "alice", "over wss").await.unwrap();
    assert_eq!(message(&mut alice).await.body.as_str(), Some("over wss"));
    alice.sync(0, None).await.unwrap();
    assert_eq!(message(&mut alice).await.seq, 1);
    assert!(!synced(&mut alice).await.more);

    // JSON over QUIC works too: the first frame decides.
    let mut carol = quic_login(&node, &q, "carol", Encoding::Json).await;
    carol.ping(7).await.unwrap();
    let p = expect(&mut carol, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;
    assert!(matches!(p, ServerFrame::Pong(p) if p.ts == Some(7)));
}

#[tokio::test]
async fn a_phone_that_rebinds_keeps_its_session() {
    let node = start();
    let q = connector(&node);
    let mut phone = quic_login(&node, &q, "alice", Encoding::Binary).await;
    let (mut bob, _) = node.login("acme", "bob").await;
    let before = q.local_addr().unwrap();
    let after = q.rebind().unwrap();
    assert_ne!(before, after);
    // Same session, no new hello: it still sends and receives.
    phone.send("m-1", "bob", "from the new address").await.unwrap();
    accepted(&mut phone, "m-1").await;
    assert_eq!(message(&mut bob).await.body.as_str(), Some("from the new address"));
    bob.send("b-1", "alice", "back to the phone").await.unwrap();
    assert_eq!(message(&mut phone).await.body.as_str(), Some("back to the phone"));
}

#[tokio::test]
async fn a_client_that_vanishes_resumes_with_nothing_lost() {
    let node = start();
    let q = connector(&node);
    let phone = quic_login(&node, &q, "alice", Encoding::Binary).await;
    phone.vanish();
    let (mut bob, _) = node.login("acme", "bob").await;
    for i in 1..=3 {
        bob.send(&format!("b{i}"), "alice", &format!("while away {i}")).await.unwrap();
        accepted(&mut bob, &format!("b{i}")).await;
    }
    // A new connection (resumed TLS session) with resume_after replays all.
    let started = Instant::now();
    let (mut phone, w) = q.hello(&node.token("acme", "alice"), Some(0), Encoding::Binary).await.unwrap();
    eprintln!("reconnect + hello + welcome took {:?}", started.elapsed());
    assert_eq!(w.inbox_head, 3);
    for seq in 1..=3 {
        assert_eq!(message(&mut phone).await.seq, seq);
    }
    assert_eq!(synced(&mut phone).await.inbox_head, 3);
}

#[tokio::test]
async fn reconnects_use_tls_resumption() {
    let node = start();
    let q = connector(&node);
    let (first, zero_rtt) = q.connect(Encoding::Json).await.unwrap();
    assert!(!zero_rtt, "no ticket yet");
    // The ticket arrives after the handshake; a full session proves it came.
    let mut first = first;
    first.say_hello(&node.token("acme", "alice"), None).await.unwrap();
    first.close().await.unwrap();
    let (mut second, zero_rtt) = q.connect(Encoding::Json).await.unwrap();
    assert!(zero_rtt, "the second connection resumes with 0-RTT");
    second.say_hello(&node.token("acme", "alice"), None).await.unwrap();
}

#[tokio::test]
async fn malformed_and_oversized_length_prefixes() {
    let node = start();
    let q = connector(&node);
    // A length over the 1 MiB limit: too_large, then the connection closes
    // before anything that size is read or allocated.
    let mut c = quic_login(&node, &q, "alice", Encoding::Binary).await;
    c.send_raw_quic(&(64u32 << 20).to_be_bytes()).await.unwrap();
    expect(&mut c, "too_large", is_error(ErrorCode::TooLarge)).await;
    expect_closed(&mut c).await;
    // A frame of garbage inside a valid prefix: bad_frame, still open.
    let mut c = quic_login(&node, &q, "bob", Encoding::Binary).await;
    c.send_raw_quic(&[0, 0, 0, 3, 1, 2, 0xff]).await.unwrap();
    expect(&mut c, "bad_frame", is_error(ErrorCode::BadFrame)).await;
    c.ping(1).await.unwrap();
    expect(&mut c, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;
    // A prefix cut off mid-way and then the stream ends: the session ends.
    let (mut c, _) = q.connect(Encoding::Binary).await.unwrap();
    c.send_raw_quic(&[0, 0]).await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test]
async fn extra_streams_are_refused() {
    let node = start();
    let q = connector(&node);
    let mut c = quic_login(&node, &q, "alice", Encoding::Binary).await;
    let extra = c.open_extra_stream(Duration::from_millis(300)).await;
    assert!(matches!(extra, Err(ClientError::Timeout(_))), "{extra:?}");
    // The session stream is unaffected.
    c.ping(2).await.unwrap();
    expect(&mut c, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;
}

#[tokio::test]
async fn bad_tokens_never_get_in_over_quic_and_failures_are_throttled() {
    let node = start_with("[auth]\nfailed_auth_per_minute = 3\n");
    let q = connector(&node);
    let forged = iris_auth::Signer::hs256(b"not-the-node-key-not-the-node-key!").token("acme", "alice", 60).unwrap();
    for _ in 0..3 {
        let (mut c, _) = q.connect(Encoding::Json).await.unwrap();
        c.send_text(&format!(r#"{{"type":"hello","token":"{forged}"}}"#)).await.unwrap();
        expect(&mut c, "unauthorized", is_error(ErrorCode::Unauthorized)).await;
        expect_closed(&mut c).await;
    }
    // Now even a good token from this address is refused (for a minute),
    // with the same error.
    let (mut c, _) = q.connect(Encoding::Json).await.unwrap();
    c.send_text(&format!(r#"{{"type":"hello","token":"{}"}}"#, node.token("acme", "alice"))).await.unwrap();
    expect(&mut c, "unauthorized", is_error(ErrorCode::Unauthorized)).await;
}

#[tokio::test]
async fn jwks_keys_by_kid_rotate_on_sighup() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let jwks = tmp.path().join("jwks.json");
    let keypair = |kid: &str| {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.public_key_raw());
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"});
        (iris_auth::Signer::ed25519(&kp.serialize_der(), kid), jwk)
    };
    let (k1, j1) = keypair("k1");
    let (k2, j2) = keypair("k2");
    std::fs::write(&jwks, serde_json::json!({"keys": [j1]}).to_string()).unwrap();
    let extra =
        format!("[auth]\njwks_file = \"{}\"\naudience = \"iris\"\nfailed_auth_per_minute = 1000\n", jwks.display());
    let mut node = start_with(&extra);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = |aud: &str| serde_json::json!({"sub": "alice", "tenant": "acme", "exp": now + 600, "aud": aud});
    let try_token = |token: String| {
        let url = node.ws_url.clone();
        async move { Client::hello(&url, &token, None, Encoding::Json).await }
    };
    assert!(try_token(k1.sign(&claims("iris")).unwrap()).await.is_ok());
    assert!(try_token(k1.sign(&claims("other")).unwrap()).await.is_err(), "wrong audience");
    assert!(try_token(k2.sign(&claims("iris")).unwrap()).await.is_err(), "unknown kid");
    // Rotate: k2 in, k1 out, then SIGHUP.
    std::fs::write(&jwks, serde_json::json!({"keys": [j2]}).to_string()).unwrap();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(node.child.id() as i32, libc::SIGHUP);
    }
    let deadline = Instant::now() + WAIT;
    while try_token(k2.sign(&claims("iris")).unwrap()).await.is_err() {
        assert!(Instant::now() < deadline, "k2 never accepted after SIGHUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(try_token(k1.sign(&claims("iris")).unwrap()).await.is_err(), "k1 retired");
    assert!(node.child.try_wait().unwrap().is_none(), "still running");
    let _ = &mut node;
}

#[tokio::test]
async fn certificate_reload_on_sighup_keeps_sessions() {
    let node = start();
    let q = connector(&node);
    let mut alice = quic_login(&node, &q, "alice", Encoding::Binary).await;
    // Replace the dev certificate with a new one and reload.
    let (cert, key) = (node.dir.join("tls/dev-cert.pem"), node.dir.join("tls/dev-key.pem"));
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(node.child.id() as i32, libc::SIGHUP);
    }
    // New connections see the new certificate: a client trusting only the
    // new one gets in (poll until the reload happened).
    let new_trust = Trust::from_pem_file(&cert).unwrap();
    let fresh = QuicConnector::new(node.quic_addr.unwrap(), "localhost", &new_trust).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if fresh.hello(&node.token("acme", "bob"), None, Encoding::Json).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "new certificate never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The old session is still up.
    alice.ping(3).await.unwrap();
    expect(&mut alice, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;
}

#[tokio::test]
async fn sessions_per_user_are_limited() {
    let node = start_with("[limits]\nmax_sessions_per_user = 2\n");
    let (_a, _) = node.login("acme", "alice").await;
    let (_b, _) = node.login("acme", "alice").await;
    let mut c = Client::connect(&node.ws_url, Encoding::Json).await.unwrap();
    c.send_text(&format!(r#"{{"type":"hello","token":"{}"}}"#, node.token("acme", "alice"))).await.unwrap();
    expect(&mut c, "rate_limited", is_error(ErrorCode::RateLimited)).await;
    expect_closed(&mut c).await;
}

#[tokio::test]
async fn quic_keep_alives_count_as_proof_of_life() {
    let node = start_with("[limits]\nheartbeat_ms = 1000\n");
    let trust = trust(&node);
    let pinging =
        QuicConnector::with_keep_alive(node.quic_addr.unwrap(), "localhost", &trust, Duration::from_millis(300))
            .unwrap();
    let mut alive = pinging.hello(&node.token("acme", "alice"), None, Encoding::Binary).await.unwrap().0;
    let silent =
        QuicConnector::with_keep_alive(node.quic_addr.unwrap(), "localhost", &trust, Duration::from_secs(60)).unwrap();
    let mut quiet = silent.hello(&node.token("acme", "bob"), None, Encoding::Binary).await.unwrap().0;
    // The silent session times out after two heartbeats...
    let started = Instant::now();
    expect_closed(&mut quiet).await;
    assert!(started.elapsed() >= Duration::from_millis(1_900));
    // ...while the one sending only QUIC keep-alives is still open.
    alive.ping(9).await.unwrap();
    expect(&mut alive, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;
}

#[tokio::test]
async fn under_a_load_of_handshakes_clients_prove_their_address_with_a_retry() {
    // A threshold of 0: every new client counts as under load, so each gets
    // a Retry before its handshake, and still gets in.
    let node = start_with("[quic]\nhandshakes_before_retry = 0\n");
    let q = connector(&node);
    let mut alice = quic_login(&node, &q, "alice", Encoding::Json).await;
    let _bob = quic_login(&node, &q, "bob", Encoding::Json).await;
    alice.send("r-1", "bob", "after a retry").await.unwrap();
    expect(&mut alice, "accepted", |f| matches!(f, ServerFrame::Accepted(_))).await;
    let metrics = metrics_text(node.metrics_url.as_deref().expect("metrics listener")).await;
    let retries = metrics
        .lines()
        .find_map(|l| l.strip_prefix("iris_quic_retries_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(retries >= 2.0, "two clients, two retries: {retries}\n{metrics}");
}

/// A UDP relay between one client socket and the node that can stop
/// passing the node's answers: a client behind it sends but never hears
/// back, as a client with a forged source address does.
struct OneWayRelay {
    addr: std::net::SocketAddr,
    answers: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OneWayRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn one_way_relay(node: std::net::SocketAddr) -> OneWayRelay {
    use std::sync::atomic::Ordering;
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(node).await.unwrap();
    let addr = front.local_addr().unwrap();
    let answers = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pass = answers.clone();
    let task = tokio::spawn(async move {
        let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
        let mut client = None;
        loop {
            tokio::select! {
                r = front.recv_from(&mut up) => {
                    let Ok((n, from)) = r else { return };
                    client = Some(from);
                    let _ = back.send(&up[..n]).await;
                }
                r = back.recv(&mut down) => {
                    let Ok(n) = r else { return };
                    if let Some(to) = client && pass.load(Ordering::Acquire) {
                        let _ = front.send_to(&down[..n], to).await;
                    }
                }
            }
        }
    });
    OneWayRelay { addr, answers, task }
}

/// A counter's value on the metrics page (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn hellos_from_addresses_that_never_finish_the_handshake_are_not_counted_against_them() {
    let node = start_with("[auth]\nfailed_auth_per_minute = 1\n");
    let metrics_url = node.metrics_url.clone().expect("metrics listener");
    let relay = one_way_relay(node.quic_addr.unwrap()).await;
    let q = QuicConnector::new(relay.addr, "localhost", &trust(&node)).unwrap();
    // One full session through the relay, both ways: the client holds a
    // single-use resumption ticket, so its next hello goes as 0-RTT data.
    let (mut first, _) = q.connect(Encoding::Json).await.unwrap();
    first.say_hello(&node.token("acme", "alice"), None).await.unwrap();
    first.close().await.unwrap();
    // From now on the node's answers go nowhere: its handshakes through the
    // relay never finish, as with a forged source address.
    relay.answers.store(false, std::sync::atomic::Ordering::Release);
    let forged = iris_auth::Signer::hs256(b"not-the-node-key-not-the-node-key!").token("acme", "alice", 60).unwrap();
    let (mut held, zero_rtt) = q.connect(Encoding::Json).await.unwrap();
    assert!(zero_rtt, "a resumed connection sends its hello as 0-RTT data");
    held.send_text(&format!(r#"{{"type":"hello","token":"{forged}"}}"#)).await.unwrap();
    // The node has read the hello and holds it until the address is proven.
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = metrics_text(&metrics_url).await;
        if counter(&metrics, "iris_quic_hellos_before_handshake_total") >= 1.0 {
            assert_eq!(counter(&metrics, "iris_auth_failures_total"), 0.0, "no token was checked:\n{metrics}");
            break;
        }
        assert!(Instant::now() < deadline, "the node did not read the 0-RTT hello:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One refusal would have throttled the address (1 a minute); it was
    // not counted, so a good token from the address gets in.
    let _alice = quic_login(&node, &connector(&node), "alice", Encoding::Json).await;
    drop(held);
}

/// The node's metrics page, as text.
async fn metrics_text(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").trim_end_matches("/metrics").to_owned();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut raw)).await.unwrap().unwrap();
    raw
}
