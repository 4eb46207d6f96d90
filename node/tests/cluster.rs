//! A region of separate processes on one machine: a core node and two edge
//! nodes, routing through a real Kafka-protocol broker (Tansu) and sharing
//! a real Redis, as scripts/test starts them.

mod common;

use common::*;
use iris_client::{Client, Encoding, ServerFrame};
use iris_protocol::{PresenceStatus, ReceiptState};
use std::path::Path;
use std::time::{Duration, Instant};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test, which starts Redis and Tansu"))
}

fn node_config(node_id: &str, region: &str, roles: &str) -> String {
    format!(
        "node_id = \"{node_id}\"\nregion = \"{region}\"\nroles = [{roles}]\n\
         [listen]\nws = \"127.0.0.1:0\"\nquic = \"off\"\nhttp = \"off\"\nmetrics = \"off\"\n\
         [storage]\nbackend = \"redis\"\nredis_url = \"{}\"\n\
         [cluster]\nkafka = \"{}\"\nsession_timeout_ms = 3000\n",
        env("IRIS_TEST_REDIS"),
        env("IRIS_TEST_KAFKA")
    )
}

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
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let region = format!("t{n}");
    let tenant = format!("c{n}");
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for d in &dirs {
        share_key(d.path(), key);
    }
    let _core = start_in(dirs[0].path(), &node_config("core-1", &region, "\"core\", \"router\""));
    let edge_a = start_in(dirs[1].path(), &node_config("edge-a", &region, "\"edge\", \"router\""));
    let edge_b = start_in(dirs[2].path(), &node_config("edge-b", &region, "\"edge\", \"router\""));

    let mut alice = login_when_ready(&edge_a, &tenant, "alice").await;
    let mut bob = login_when_ready(&edge_b, &tenant, "bob").await;

    alice.send("x-1", "bob", "across edges").await.unwrap();
    let acc = accepted(&mut alice, "x-1").await;
    let m = message(&mut bob).await;
    assert_eq!((m.seq, m.from.as_str(), m.msg_id.as_str()), (1, "alice", acc.msg_id.as_str()));
    bob.read(1).await.unwrap();
    let r = expect(&mut alice, "read receipt", |f| matches!(f, ServerFrame::Receipt(_))).await;
    assert!(matches!(r, ServerFrame::Receipt(r) if r.state == ReceiptState::Read && r.by == "bob"));

    // Presence across edges.
    bob.send_text(r#"{"type":"contacts","upsert":[{"user":"alice"}]}"#).await.unwrap();
    expect(&mut bob, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    alice.subscribe(&["bob"]).await.unwrap();
    assert_eq!(presence_of(&mut alice, "bob").await.status, PresenceStatus::Online);

    // History from the other edge.
    let mut bob_elsewhere = login_when_ready(&edge_a, &tenant, "bob").await;
    bob_elsewhere.sync(0, None).await.unwrap();
    assert_eq!(message(&mut bob_elsewhere).await.msg_id, acc.msg_id);
}
