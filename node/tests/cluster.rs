//! A region of separate processes on one machine: a core node and two edge
//! nodes, routing through a real Kafka-protocol broker (Tansu) and sharing
//! a real Redis, as scripts/test starts them (one test runs its own Redis, to
//! stop and restart it).

mod common;

use common::*;
use iris_client::{Client, Encoding, ServerFrame};
use iris_protocol::{PresenceStatus, ReceiptState};
use std::path::Path;
use std::time::{Duration, Instant};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test, which starts Redis and Tansu"))
}

fn node_config(node_id: &str, region: &str, roles: &str, redis_url: &str) -> String {
    format!(
        "node_id = \"{node_id}\"\nregion = \"{region}\"\nroles = [{roles}]\n\
         [listen]\nws = \"127.0.0.1:0\"\nquic = \"off\"\nhttp = \"off\"\nmetrics = \"off\"\n\
         [storage]\nbackend = \"redis\"\nredis_url = \"{}\"\n\
         [core]\nedge_lease_ms = 1500\n\
         [cluster]\nkafka = \"{}\"\nsession_timeout_ms = 3000\n",
        redis_url,
        env("IRIS_TEST_KAFKA")
    )
}

/// GET on the test Redis, by hand (RESP), as another service would read
/// `session:{tenant}:{user}`.
fn redis_get(key: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let addr = env("IRIS_TEST_REDIS").trim_start_matches("redis://").to_owned();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "*2\r\n$3\r\nGET\r\n${}\r\n{}\r\n", key.len(), key).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let len: i64 = line.trim_start_matches('$').trim().parse().unwrap();
    if len < 0 {
        return None;
    }
    let mut body = vec![0u8; len as usize + 2];
    r.read_exact(&mut body).unwrap();
    Some(String::from_utf8_lossy(&body[..len as usize]).into_owned())
}

/// A region of separate node processes with their own data dirs, sharing
/// one token key, one Redis and one Kafka.
struct Region {
    tenant: String,
    nodes: Vec<Node>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Region {
    /// Starts nodes named by (node id, roles), in order, on the shared Redis.
    fn start(nodes: &[(&str, &str)]) -> Self {
        Self::start_on(nodes, &env("IRIS_TEST_REDIS"))
    }

    /// Starts nodes on the Redis at `redis_url`.
    fn start_on(nodes: &[(&str, &str)], redis_url: &str) -> Self {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let region = format!("r{n}");
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let dirs: Vec<tempfile::TempDir> = nodes.iter().map(|_| tempfile::tempdir().unwrap()).collect();
        let mut started = Vec::new();
        for ((id, roles), dir) in nodes.iter().zip(&dirs) {
            share_key(dir.path(), key);
            started.push(start_in(dir.path(), &node_config(id, &region, roles, redis_url)));
        }
        Self { tenant: format!("t{n}"), nodes: started, _dirs: dirs }
    }
}

const CORE: &str = "\"core\", \"router\"";
const EDGE: &str = "\"edge\", \"router\"";

/// Every node of the region signs and checks tokens with the same key.
fn share_key(dir: &Path, key: &str) {
    std::fs::create_dir_all(dir.join("auth")).unwrap();
    std::fs::write(dir.join("auth/dev-hs256.key"), key).unwrap();
}

/// Logs in, retrying until the core node owns the shards (joining the
/// consumer group takes a moment).
async fn login_when_ready(node: &Node, tenant: &str, user: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(
            Duration::from_secs(5),
            Client::hello(&node.ws_url, &node.token(tenant, user), None, Encoding::Json),
        )
        .await
        {
            Ok(Ok((c, _))) => return c,
            Ok(Err(e)) => {
                assert!(Instant::now() < deadline, "no welcome from the region: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {
                assert!(Instant::now() < deadline, "no welcome from the region in time");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test]
async fn clients_on_different_edges_chat_through_the_core_node() {
    let region = Region::start(&[("core-1", CORE), ("edge-a", EDGE), ("edge-b", EDGE)]);
    let (edge_a, edge_b, tenant) = (&region.nodes[1], &region.nodes[2], region.tenant.clone());
    let mut alice = login_when_ready(edge_a, &tenant, "alice").await;
    let mut bob = login_when_ready(edge_b, &tenant, "bob").await;

    alice.send("x-1", "bob", "across edges").await.unwrap();
    let acc = accepted(&mut alice, "x-1").await;
    let m = message(&mut bob).await;
    assert_eq!((m.seq, m.from.as_str(), m.msg_id.as_str()), (1, "alice", acc.msg_id.as_str()));
    bob.read(1).await.unwrap();
    let r = expect(&mut alice, "read receipt", |f| matches!(f, ServerFrame::Receipt(_))).await;
    assert!(matches!(r, ServerFrame::Receipt(r) if r.state == ReceiptState::Read && r.by == "bob"));

    // Other services can see where bob is connected.
    let record: serde_json::Value =
        serde_json::from_str(&redis_get(&format!("session:{tenant}:bob")).unwrap()).unwrap();
    assert_eq!((record["nodes"].clone(), record["sessions"].as_u64()), (serde_json::json!(["edge-b"]), Some(1)));

    // Presence across edges.
    bob.send_text(r#"{"type":"contacts","upsert":[{"user":"alice"}]}"#).await.unwrap();
    expect(&mut bob, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    alice.subscribe(&["bob"]).await.unwrap();
    assert_eq!(presence_of(&mut alice, "bob").await.status, PresenceStatus::Online);

    // History from the other edge.
    let mut bob_elsewhere = login_when_ready(edge_a, &tenant, "bob").await;
    bob_elsewhere.sync(0, None).await.unwrap();
    assert_eq!(message(&mut bob_elsewhere).await.msg_id, acc.msg_id);
}

#[tokio::test]
async fn killing_a_core_node_moves_its_shards_and_loses_nothing_accepted() {
    let mut region = Region::start(&[("core-1", CORE), ("core-2", CORE), ("edge-a", EDGE)]);
    let tenant = region.tenant.clone();
    let mut alice = login_when_ready(&region.nodes[2], &tenant, "alice").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut accepted_ids = Vec::new();
    for i in 0..40 {
        if i == 10 {
            region.nodes[0].kill9();
        }
        // Spread over many recipients so both core nodes own some of them.
        let to = format!("bob{}", i % 8);
        let msg_id = send_until_accepted(&mut alice, &format!("k-{i}"), &to, &format!("{i}"), deadline).await;
        accepted_ids.push((to, i, msg_id));
    }
    // Every accepted message is stored once, in order, for its recipient.
    for r in 0..8 {
        let to = format!("bob{r}");
        let mut bob = login_when_ready(&region.nodes[2], &tenant, &to).await;
        bob.sync(0, Some(1_000)).await.unwrap();
        let mut got = Vec::new();
        loop {
            match bob
                .expect(WAIT, "history", |f| matches!(f, ServerFrame::Message(_) | ServerFrame::Synced(_)))
                .await
                .unwrap()
            {
                ServerFrame::Message(m) => got.push((m.seq, m.msg_id, m.body.as_str().unwrap().to_owned())),
                _ => break,
            }
        }
        let want: Vec<(String, String)> =
            accepted_ids.iter().filter(|(t, _, _)| *t == to).map(|(_, i, id)| (id.clone(), i.to_string())).collect();
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert!(seqs.iter().copied().eq(1..=seqs.len() as u64), "{to}: gaps or repeats {seqs:?}");
        let have: Vec<(String, String)> = got.into_iter().map(|(_, id, body)| (id, body)).collect();
        assert_eq!(have, want, "{to}: every accepted message once, in order");
    }
}

#[tokio::test]
async fn a_killed_edge_s_users_go_offline_within_the_lease_and_come_back() {
    let mut region = Region::start(&[("core-1", CORE), ("edge-a", EDGE), ("edge-b", EDGE)]);
    let tenant = region.tenant.clone();
    let mut alice = login_when_ready(&region.nodes[1], &tenant, "alice").await;
    let mut bob = login_when_ready(&region.nodes[2], &tenant, "bob").await;
    bob.send_text(r#"{"type":"contacts","upsert":[{"user":"alice"}]}"#).await.unwrap();
    expect(&mut bob, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    alice.subscribe(&["bob"]).await.unwrap();
    assert_eq!(presence_of(&mut alice, "bob").await.status, PresenceStatus::Online);

    region.nodes[2].kill9();
    let killed = Instant::now();
    let p = presence_of(&mut alice, "bob").await;
    assert_eq!(p.status, PresenceStatus::Offline);
    assert!(p.last_seen.is_some());
    let took = killed.elapsed();
    eprintln!("offline {took:?} after the edge died (lease 1.5 s)");
    // The lease, a lease check (a quarter lease) and the bus: well under 3 leases.
    assert!(took < Duration::from_millis(4_500), "offline only {took:?} after the edge died");
    // Bob reconnects to the other edge and is back online.
    let _bob = login_when_ready(&region.nodes[1], &tenant, "bob").await;
    assert_eq!(presence_of(&mut alice, "bob").await.status, PresenceStatus::Online);
}

#[tokio::test]
async fn clients_of_a_killed_edge_resume_on_the_other_edge_with_nothing_lost() {
    let mut region = Region::start(&[("core-1", CORE), ("edge-a", EDGE), ("edge-b", EDGE)]);
    let tenant = region.tenant.clone();
    let mut alice = login_when_ready(&region.nodes[1], &tenant, "alice").await;
    let mut bob = login_when_ready(&region.nodes[2], &tenant, "bob").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut accepted = Vec::new();
    let mut stored = Vec::new();
    for i in 0..30 {
        if i == 10 {
            // Bob has stored what reached him so far; his edge dies under traffic.
            stored = collect_until(&mut bob, 10, deadline).await;
            region.nodes[2].kill9();
        }
        accepted.push(send_until_accepted(&mut alice, &format!("k-{i}"), "bob", &i.to_string(), deadline).await);
    }
    // Bob reconnects to the surviving edge and resumes after what he stored.
    let last = stored.last().map(|s| s.0).unwrap_or(0);
    let (mut bob, _) = region.nodes[1].login_with(&tenant, "bob", Some(last), Encoding::Json).await;
    let rest = collect_until(&mut bob, 30 - last, deadline).await;
    let all: Vec<(u64, String, String)> = stored.into_iter().chain(rest.into_iter().filter(|r| r.0 > last)).collect();
    let seqs: Vec<u64> = all.iter().map(|a| a.0).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<u64>>(), "seqs 1..=30 without gaps");
    let have: Vec<(String, String)> = all.into_iter().map(|(_, id, body)| (id, body)).collect();
    let want: Vec<(String, String)> = accepted.into_iter().enumerate().map(|(i, id)| (id, i.to_string())).collect();
    assert_eq!(have, want, "every accepted message reached bob once, in order");
}

#[tokio::test]
async fn redis_stopped_mid_run_gives_no_false_accepted_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = Some(Redis::start(port, data.path()));
    let region = Region::start_on(&[("core-1", CORE), ("edge-a", EDGE)], &format!("redis://127.0.0.1:{port}"));
    let tenant = region.tenant.clone();
    let mut alice = login_when_ready(&region.nodes[1], &tenant, "alice").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..30 {
        let id = format!("k-{i}");
        if i == 10 {
            drop(redis.take());
        }
        loop {
            alice.send(&id, "bob", &i.to_string()).await.unwrap();
            let wanted = id.clone();
            let answer = alice
                .expect(Duration::from_secs(10), "an answer", |f| {
                    matches!(f, ServerFrame::Accepted(a) if a.id == wanted)
                        || matches!(f, ServerFrame::Error(e) if e.id.as_deref() == Some(wanted.as_str()))
                })
                .await
                .expect("every send is answered, Redis or not");
            match answer {
                ServerFrame::Accepted(a) => {
                    assert!(redis.is_some(), "{id} accepted while Redis was down");
                    accepted.push(a.msg_id);
                    break;
                }
                ServerFrame::Error(e) => {
                    assert_eq!(e.code, iris_protocol::ErrorCode::Unavailable, "{id}: {e:?}");
                    refused += 1;
                    // A few refusals while down, then Redis comes back with its data.
                    if redis.is_none() && refused >= 3 {
                        redis = Some(Redis::start(port, data.path()));
                    }
                    assert!(Instant::now() < deadline, "{id} never accepted");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => unreachable!(),
            }
        }
    }
    assert!(refused >= 3, "sends were refused while Redis was down");
    // Everything accepted is in Redis, once, in order.
    let mut bob = login_when_ready(&region.nodes[1], &tenant, "bob").await;
    bob.sync(0, Some(1_000)).await.unwrap();
    let history = collect_until(&mut bob, 30, deadline).await;
    let seqs: Vec<u64> = history.iter().map(|h| h.0).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<u64>>(), "seqs 1..=30 without gaps");
    let have: Vec<(String, String)> = history.into_iter().map(|(_, id, body)| (id, body)).collect();
    let want: Vec<(String, String)> = accepted.into_iter().enumerate().map(|(i, id)| (id, i.to_string())).collect();
    assert_eq!(have, want, "every accepted message stored once, in order");
}
