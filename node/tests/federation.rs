//! Two regions on one machine, federated through a global Kafka layer.
//!
//! Each region is its own cluster: its own topics on the regional broker
//! (the one scripts/test starts; topic names carry the region) and its own
//! Redis database. The global layer is a broker of each test's own, so that
//! a test can freeze it. Nothing in a region calls the other: envelopes
//! cross only through the outbound topic, the relays and the global topics.

mod common;

use common::*;
use iris_client::{Client, Encoding, ServerFrame};
use iris_envelope::UserKey;
use iris_protocol::{PresenceStatus, ReceiptState, SetStatus};
use iris_router::HomeDirectory;
use std::path::Path;
use std::time::{Duration, Instant};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run scripts/test, which starts Redis and Apache Kafka"))
}

const ALL: &str = "\"edge\", \"core\", \"router\"";
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Two regions, `a` and `b`, each of one or more node processes.
/// Fields drop in order: the nodes before the broker they talk to.
struct Federation {
    nodes_a: Vec<Node>,
    nodes_b: Vec<Node>,
    tenant: String,
    a: String,
    b: String,
    homes: HomeDirectory,
    dirs: Vec<tempfile::TempDir>,
    global: Kafka,
}

/// One node of a federated region.
struct Spec {
    id: &'static str,
    roles: &'static str,
    relay: bool,
}

const ONE: &[Spec] = &[Spec { id: "n1", roles: ALL, relay: true }];

fn config(fed: (&str, &str, &str), node: &Spec, db: u32, lease_ms: u64) -> String {
    let (region, a, b) = fed;
    format!(
        "node_id = \"{}\"\nregion = \"{region}\"\nroles = [{}]\n\
         [listen]\nws = \"127.0.0.1:0\"\nquic = \"off\"\nhttp = \"127.0.0.1:0\"\nmetrics = \"off\"\n\
         [storage]\nbackend = \"redis\"\nredis_url = \"{}/{db}\"\n\
         [core]\nshards = 8\nedge_lease_ms = {lease_ms}\n\
         [cluster]\nkafka = \"{}\"\nsession_timeout_ms = 3000\n\
         [federation]\nregions = [\"{a}\", \"{b}\"]\nglobal_kafka = \"GLOBAL\"\nrelay = {}\n\
         presence_interval_ms = 1000\n",
        node.id,
        node.roles,
        env("IRIS_TEST_REDIS"),
        env("IRIS_TEST_KAFKA"),
        node.relay,
    )
}

impl Federation {
    fn start(a_nodes: &[Spec], b_nodes: &[Spec]) -> Self {
        Self::start_with_lease(a_nodes, b_nodes, 3_000)
    }

    fn start_with_lease(a_nodes: &[Spec], b_nodes: &[Spec], lease_ms: u64) -> Self {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let (a, b) = (format!("a{n}"), format!("b{n}"));
        let global = Kafka::start(1);
        let mut dirs = Vec::new();
        let mut start = |region: &str, nodes: &[Spec], db: u32| -> Vec<Node> {
            nodes
                .iter()
                .map(|spec| {
                    let dir = tempfile::tempdir().unwrap();
                    share_key(dir.path());
                    let text = config((region, &a, &b), spec, db, lease_ms).replace("GLOBAL", &global.addr);
                    let node = start_in(dir.path(), &text);
                    dirs.push(dir);
                    node
                })
                .collect()
        };
        let nodes_a = start(&a, a_nodes, 1);
        let nodes_b = start(&b, b_nodes, 2);
        let homes = HomeDirectory::new(&a, &[a.clone(), b.clone()]);
        Self { tenant: format!("t{n}"), a, b, global, nodes_a, nodes_b, homes, dirs }
    }

    /// A user name (from `prefix`) that the hash homes in `region`.
    fn homed(&self, region: &str, prefix: &str) -> String {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|u| &*self.homes.home_of(&UserKey::new(self.tenant.as_str(), u.as_str())).0 == region)
            .unwrap()
    }

    fn config_of(&self, region_a: bool, i: usize) -> std::path::PathBuf {
        let node = if region_a { &self.nodes_a[i] } else { &self.nodes_b[i] };
        node.dir.join("test.toml")
    }
}

fn share_key(dir: &Path) {
    std::fs::create_dir_all(dir.join("auth")).unwrap();
    std::fs::write(dir.join("auth/dev-hs256.key"), KEY).unwrap();
}

/// Logs in, retrying until the user's home shard answers (consumer groups
/// and relays take a moment to join).
async fn login(node: &Node, tenant: &str, user: &str, resume: Option<u64>) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let token = node.token(tenant, user);
        let hello = Client::hello(&node.ws_url, &token, resume, Encoding::Json);
        match tokio::time::timeout(Duration::from_secs(5), hello).await {
            Ok(Ok((c, _))) => return c,
            other => {
                assert!(Instant::now() < deadline, "no welcome for {user}: {:?}", other.map(|r| r.err()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test]
async fn users_of_two_regions_chat_with_receipts_and_history() {
    let fed = Federation::start(ONE, ONE);
    let t = fed.tenant.clone();
    let (alice, bob) = (fed.homed(&fed.a, "alice"), fed.homed(&fed.b, "bob"));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut a = login(&fed.nodes_a[0], &t, &alice, None).await;
    let mut b = login(&fed.nodes_b[0], &t, &bob, None).await;

    let msg_id = send_until_accepted(&mut a, "x-1", &bob, "hello from a", deadline).await;
    let m = message(&mut b).await;
    assert_eq!((m.seq, m.msg_id.as_str(), m.from.as_str()), (1, msg_id.as_str(), alice.as_str()));

    // Receipts travel back to the sender's region.
    b.ack(1).await.unwrap();
    let r = expect(&mut a, "delivered", |f| matches!(f, ServerFrame::Receipt(r) if r.state == ReceiptState::Delivered))
        .await;
    assert!(matches!(r, ServerFrame::Receipt(ref r) if r.msg_id == msg_id && r.by == bob), "{r:?}");
    b.read(1).await.unwrap();
    expect(&mut a, "read", |f| matches!(f, ServerFrame::Receipt(r) if r.state == ReceiptState::Read)).await;

    // And the other way.
    let reply_id = send_until_accepted(&mut b, "y-1", &alice, "hello from b", deadline).await;
    let m = message(&mut a).await;
    assert_eq!((m.seq, m.msg_id.as_str()), (1, reply_id.as_str()));

    // History lives in the recipient's home region: bob resumes from 0
    // and alice's message is there, once.
    drop(b);
    let mut b = login(&fed.nodes_b[0], &t, &bob, Some(0)).await;
    let h = collect_until(&mut b, 1, deadline).await;
    assert_eq!(h, vec![(1, msg_id, "hello from a".to_owned())]);

    // A retried send across regions is not stored twice.
    let again = send_until_accepted(&mut a, "x-1", &bob, "hello from a", deadline).await;
    assert_eq!(again, h[0].1);
    a.send("x-2", &bob, "second").await.unwrap();
    let m = message(&mut b).await;
    assert_eq!((m.seq, m.from.as_str()), (2, alice.as_str()), "the retry took no seq");
}

#[tokio::test]
async fn presence_crosses_regions_batched_and_filtered_by_policy() {
    let fed = Federation::start(ONE, ONE);
    let t = fed.tenant.clone();
    let bob = fed.homed(&fed.b, "bob");
    let (alice, carol) = (fed.homed(&fed.a, "alice"), fed.homed(&fed.a, "carol"));
    let mut b = login(&fed.nodes_b[0], &t, &bob, None).await;
    let mut a = login(&fed.nodes_a[0], &t, &alice, None).await;
    let mut c = login(&fed.nodes_a[0], &t, &carol, None).await;

    // bob lets alice (not carol) see his presence.
    b.send_text(&format!(r#"{{"type":"contacts","upsert":[{{"user":"{alice}"}}]}}"#)).await.unwrap();
    expect(&mut b, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;

    a.subscribe(&[&bob]).await.unwrap();
    c.subscribe(&[&bob]).await.unwrap();
    assert_eq!(presence_of(&mut a, &bob).await.status, PresenceStatus::Online);
    let p = presence_of(&mut c, &bob).await;
    assert_eq!((p.status, p.last_seen), (PresenceStatus::Offline, None), "carol may not see bob");

    // A burst of changes crosses at most once per interval; the last one
    // arrives, within the documented bound.
    let changed = Instant::now();
    for s in [SetStatus::Away, SetStatus::Online, SetStatus::Away, SetStatus::Online, SetStatus::Away] {
        b.set_presence(s).await.unwrap();
    }
    let mut seen = Vec::new();
    loop {
        let p = presence_of(&mut a, &bob).await;
        seen.push(p.status);
        if p.status == PresenceStatus::Away {
            break;
        }
    }
    assert!(changed.elapsed() < Duration::from_secs(5), "stale for {:?}", changed.elapsed());
    assert!(seen.len() <= 3, "five changes crossed as {} updates: {seen:?}", seen.len());
    // carol saw none of it: a later frame proves nothing was on the way.
    c.subscribe(&[&bob]).await.unwrap();
    assert_eq!(presence_of(&mut c, &bob).await.status, PresenceStatus::Offline);
    assert!(
        !c.buffered().any(|f| matches!(f, ServerFrame::Presence(p) if p.status != PresenceStatus::Offline)),
        "carol saw bob's status"
    );

    // bob leaves: alice sees offline.
    b.close().await.unwrap();
    expect(&mut a, "offline", |f| matches!(f, ServerFrame::Presence(p) if p.status == PresenceStatus::Offline)).await;
}

#[tokio::test]
async fn a_travelling_user_is_served_through_the_home_region() {
    let fed = Federation::start(ONE, ONE);
    let t = fed.tenant.clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (alice, bob) = (fed.homed(&fed.a, "alice"), fed.homed(&fed.a, "bob"));

    // bob is homed in b explicitly, through a's admin API; b learns it.
    let (na, nb) = (&fed.nodes_a[0], &fed.nodes_b[0]);
    let auth = format!("Bearer {}", na.service_token(&t));
    let (status, _, body) = http(
        "PUT",
        &na.api(&format!("/v1/homes/{bob}")),
        &[("authorization", &auth)],
        Some(&serde_json::json!({ "region": fed.b })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["explicit"], true);
    loop {
        let (status, _, body) =
            http("GET", &nb.api(&format!("/v1/homes/{bob}")), &[("authorization", &auth)], None).await;
        assert_eq!(status, 200, "{body}");
        if body["region"] == fed.b.as_str() && body["explicit"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the assignment never reached b: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _, body) = http(
        "PUT",
        &na.api(&format!("/v1/homes/{bob}")),
        &[("authorization", &auth)],
        Some(&serde_json::json!({ "region": "mars" })),
    )
    .await;
    assert_eq!(status, 400, "unknown regions are refused: {body}");
    let (status, _, body) =
        http("PUT", &na.api(&format!("/v1/homes/{bob}")), &[("authorization", &auth)], Some(&serde_json::json!({})))
            .await;
    assert_eq!(status, 400, "a body without region is refused, not taken for null: {body}");
    let (status, _, body) = http("GET", &na.api(&format!("/v1/homes/{bob}")), &[("authorization", &auth)], None).await;
    assert_eq!((status, body["region"].as_str(), body["explicit"].as_bool()), (200, Some(fed.b.as_str()), Some(true)));

    // bob travels: he connects to a's edge, and is served by his home, b.
    let mut b = login(na, &t, &bob, None).await;
    let mut a = login(na, &t, &alice, None).await;
    let to_bob = send_until_accepted(&mut a, "m-1", &bob, "welcome to a", deadline).await;
    let m = message(&mut b).await;
    assert_eq!((m.seq, m.msg_id.as_str()), (1, to_bob.as_str()));
    b.ack(1).await.unwrap();
    expect(&mut a, "delivered", |f| matches!(f, ServerFrame::Receipt(r) if r.msg_id == to_bob)).await;
    send_until_accepted(&mut b, "r-1", &alice, "thanks", deadline).await;
    assert_eq!(message(&mut a).await.from, bob);

    // Presence reflects him: online, while connected in a.
    b.send_text(&format!(r#"{{"type":"contacts","upsert":[{{"user":"{alice}"}}]}}"#)).await.unwrap();
    expect(&mut b, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    a.subscribe(&[&bob]).await.unwrap();
    assert_eq!(presence_of(&mut a, &bob).await.status, PresenceStatus::Online);

    // His history is at home: back in b, he resumes and finds it.
    drop(b);
    let mut home = login(nb, &t, &bob, Some(0)).await;
    assert_eq!(collect_until(&mut home, 1, deadline).await[0].1, to_bob);

    // The CLI sets and shows homes too (here: alice moves to b).
    let out = std::process::Command::new(bin())
        .args(["home", "set", "--tenant", &t, "--user", &alice, "--region", &fed.b, "--config"])
        .arg(fed.config_of(true, 0))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("home {} (explicit)", fed.b)));
    loop {
        let out = std::process::Command::new(bin())
            .args(["home", "get", "--tenant", &t, "--user", &alice, "--config"])
            .arg(fed.config_of(false, 0))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        if String::from_utf8_lossy(&out.stdout).contains(&format!("home {} (explicit)", fed.b)) {
            break;
        }
        assert!(Instant::now() < deadline, "b never learnt alice's new home");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_relay_killed_with_sigkill_loses_and_duplicates_nothing() {
    let a_nodes = [Spec { id: "n1", roles: ALL, relay: false }, Spec { id: "relay", roles: "\"router\"", relay: true }];
    let mut fed = Federation::start(&a_nodes, ONE);
    let t = fed.tenant.clone();
    let (alice, bob) = (fed.homed(&fed.a, "alice"), fed.homed(&fed.b, "bob"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut a = login(&fed.nodes_a[0], &t, &alice, None).await;
    let mut b = login(&fed.nodes_b[0], &t, &bob, None).await;
    let mut accepted = Vec::new();
    for i in 0..30 {
        if i == 10 {
            fed.nodes_a[1].kill9();
        }
        if i == 10 {
            // While the relay is down, sends wait in a's outbound topic: not
            // accepted (nothing stored at home yet), not lost.
            a.send("k-10", &bob, "10").await.unwrap();
            // Only k-10's answer counts: an earlier send that was retried
            // after 2 s of silence may still get its (duplicate) answer late.
            let early = a
                .expect(Duration::from_secs(2), "accepted", |f| matches!(f, ServerFrame::Accepted(x) if x.id == "k-10"))
                .await;
            assert!(early.is_err(), "accepted with no relay running: {early:?}");
            let dir = fed.dirs[1].path().to_path_buf();
            let text = std::fs::read_to_string(dir.join("test.toml")).unwrap();
            fed.nodes_a[1] = start_in(&dir, &text);
        }
        accepted.push(send_until_accepted(&mut a, &format!("k-{i}"), &bob, &i.to_string(), deadline).await);
        // b reads only at the end but stays alive as a client must (two
        // silent heartbeats, 60 s, close a session; a slow machine's sends
        // can take that long).
        b.ping(i).await.unwrap();
    }
    let got = collect_until(&mut b, 30, deadline).await;
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<u64>>(), "seqs 1..=30, no gaps");
    let have: Vec<(String, String)> = got.into_iter().map(|(_, id, body)| (id, body)).collect();
    let want: Vec<(String, String)> = accepted.into_iter().enumerate().map(|(i, id)| (id, i.to_string())).collect();
    assert_eq!(have, want, "every accepted message once, in order");
}

#[tokio::test]
async fn a_region_cut_off_from_the_global_layer_serves_its_own_and_drains_in_order() {
    let fed = Federation::start(ONE, ONE);
    let t = fed.tenant.clone();
    let (alice, carol, bob) = (fed.homed(&fed.a, "alice"), fed.homed(&fed.a, "carol"), fed.homed(&fed.b, "bob"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut a = login(&fed.nodes_a[0], &t, &alice, None).await;
    let mut c = login(&fed.nodes_a[0], &t, &carol, None).await;
    let mut b = login(&fed.nodes_b[0], &t, &bob, None).await;
    // The link works first.
    send_until_accepted(&mut a, "pre", &bob, "before", deadline).await;
    assert_eq!(message(&mut b).await.seq, 1);

    fed.global.pause();
    // Cross-region sends are queued durably in a's outbound topic, and not
    // accepted: nothing is stored in bob's home yet.
    for i in 0..10 {
        a.send(&format!("cut-{i}"), &bob, &format!("during {i}")).await.unwrap();
    }
    // a keeps serving its own users meanwhile.
    let local = send_until_accepted(&mut a, "local-1", &carol, "still here", deadline).await;
    let m = message(&mut c).await;
    assert_eq!(m.msg_id, local);
    let early: Vec<_> =
        a.buffered().filter(|f| matches!(f, ServerFrame::Accepted(x) if x.id.starts_with("cut-"))).collect();
    assert!(early.is_empty(), "accepted while cut off: {early:?}");
    let quiet = a
        .expect(
            Duration::from_secs(2),
            "accepted",
            |f| matches!(f, ServerFrame::Accepted(x) if x.id.starts_with("cut-")),
        )
        .await;
    assert!(quiet.is_err(), "accepted while cut off: {quiet:?}");

    fed.global.resume();
    // The backlog drains: all ten accepted, delivered in the order sent.
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(send_until_accepted(&mut a, &format!("cut-{i}"), &bob, &format!("during {i}"), deadline).await);
    }
    let got = collect_until(&mut b, 10, deadline).await;
    let bodies: Vec<String> = got.iter().map(|g| g.2.clone()).collect();
    assert_eq!(bodies, (0..10).map(|i| format!("during {i}")).collect::<Vec<_>>(), "in order");
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), (2..=11).collect::<Vec<u64>>());
    assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), ids, "each once");
}

/// An edge back under the same id within its lease says so in every region
/// (ADR 0012, amendment; found by the simulator): a traveller's session of
/// its previous process ends on the home shard in the other region, which
/// the lease alone would never do, since the new process renews it there.
#[tokio::test]
async fn an_edge_restarted_within_its_lease_ends_its_travellers_sessions_at_home() {
    let lease = 30_000;
    let mut fed = Federation::start_with_lease(ONE, ONE, lease);
    let t = fed.tenant.clone();
    let (alice, bob) = (fed.homed(&fed.b, "alice"), fed.homed(&fed.b, "bob"));
    // bob travels: he is connected through a's edge, his home shard is b's.
    let mut b = login(&fed.nodes_a[0], &t, &bob, None).await;
    let mut a = login(&fed.nodes_b[0], &t, &alice, None).await;
    b.send_text(&format!(r#"{{"type":"contacts","upsert":[{{"user":"{alice}"}}]}}"#)).await.unwrap();
    expect(&mut b, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    a.subscribe(&[&bob]).await.unwrap();
    assert_eq!(presence_of(&mut a, &bob).await.status, PresenceStatus::Online);

    // a's node (edge, core and relays) dies and comes back under its id.
    let killed = Instant::now();
    fed.nodes_a[0].kill9();
    let dir = fed.dirs[0].path().to_path_buf();
    let text = std::fs::read_to_string(dir.join("test.toml")).unwrap();
    fed.nodes_a[0] = start_in(&dir, &text);
    let offline =
        |f: &ServerFrame| matches!(f, ServerFrame::Presence(p) if p.user == bob && p.status == PresenceStatus::Offline);
    let heard = a.expect(Duration::from_millis(lease / 2), "bob offline", offline).await;
    let took = killed.elapsed();
    assert!(heard.is_ok(), "bob's session of the killed process was still online after {took:?} (lease 30 s)");
    eprintln!("offline in b {took:?} after a's edge was killed and restarted (lease 30 s)");
    // bob connects again through the restarted edge: online again.
    let _b = login(&fed.nodes_a[0], &t, &bob, None).await;
    let online =
        |f: &ServerFrame| matches!(f, ServerFrame::Presence(p) if p.user == bob && p.status == PresenceStatus::Online);
    a.expect(Duration::from_secs(20), "bob online", online).await.expect("bob online again");
}
