//! A region of separate processes on one machine: a core node and two edge
//! nodes, routing through Apache Kafka (the broker scripts/test starts) and sharing
//! a real Redis, as scripts/test starts them (one test runs its own Redis, to
//! stop and restart it).

mod common;

use common::*;
use iris_client::{Encoding, ServerFrame};
use iris_protocol::{PresenceStatus, ReceiptState};
use std::path::Path;
use std::time::{Duration, Instant};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run scripts/test, which starts Redis and Apache Kafka"))
}

/// Where a region keeps its data and routes its envelopes.
struct Backing {
    /// The Kafka bootstrap servers.
    kafka: String,
    /// The `[storage]` section.
    storage: String,
    /// More lines of the `[cluster]` section.
    cluster: String,
}

impl Backing {
    /// The shared Redis and the broker scripts/test started.
    fn shared() -> Self {
        Self::redis(&env("IRIS_TEST_REDIS"), &env("IRIS_TEST_KAFKA"))
    }

    fn redis(redis_url: &str, kafka: &str) -> Self {
        Backing {
            kafka: kafka.to_owned(),
            storage: format!("[storage]\nbackend = \"redis\"\nredis_url = \"{redis_url}\"\n"),
            cluster: String::new(),
        }
    }
}

/// The edge lease of a test region: short, so that a killed edge's users
/// go offline within the tests' waits.
const LEASE_MS: u64 = 1_500;

fn node_config(node_id: &str, region: &str, roles: &str, backing: &Backing, lease_ms: u64) -> String {
    format!(
        "node_id = \"{node_id}\"\nregion = \"{region}\"\nroles = [{roles}]\n\
         [listen]\nws = \"127.0.0.1:0\"\nquic = \"off\"\nhttp = \"off\"\nmetrics = \"off\"\n\
         {}\
         [core]\nedge_lease_ms = {lease_ms}\n\
         [cluster]\nkafka = \"{}\"\nsession_timeout_ms = 3000\n{}",
        backing.storage, backing.kafka, backing.cluster
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
    /// The region's name.
    name: String,
    tenant: String,
    nodes: Vec<Node>,
    /// Each node's config, to restart it as it was.
    configs: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
    /// The brokers its topics are on.
    kafka: String,
}

/// Stops the nodes and deletes the region's topics: a region of 64 shards
/// has about 200 partitions, and the broker scripts/test started serves the
/// whole run.
impl Drop for Region {
    fn drop(&mut self) {
        self.nodes.clear();
        let (kafka, name) = (self.kafka.clone(), self.name.clone());
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(iris_kafka::delete_region_topics(&kafka, &name))
        })
        .join();
        match deleted {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("region {}: its topics were left: {e}", self.name),
            Err(_) => eprintln!("region {}: its topics were left: the deleting thread panicked", self.name),
        }
    }
}

impl Region {
    /// Starts nodes named by (node id, roles), in order, on the shared Redis and Kafka.
    fn start(nodes: &[(&str, &str)]) -> Self {
        Self::start_on(nodes, &Backing::shared())
    }

    /// Starts nodes on the given storage and brokers.
    fn start_on(nodes: &[(&str, &str)], backing: &Backing) -> Self {
        Self::start_with_lease(nodes, backing, LEASE_MS)
    }

    /// Starts nodes whose shards give edges a lease of `lease_ms`.
    fn start_with_lease(nodes: &[(&str, &str)], backing: &Backing, lease_ms: u64) -> Self {
        Self::start_named(&fresh_region(), nodes, backing, lease_ms)
    }

    /// Starts nodes of the region called `region`.
    fn start_named(region: &str, nodes: &[(&str, &str)], backing: &Backing, lease_ms: u64) -> Self {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dirs: Vec<tempfile::TempDir> = nodes.iter().map(|_| tempfile::tempdir().unwrap()).collect();
        let mut started = Vec::new();
        let mut configs = Vec::new();
        for ((id, roles), dir) in nodes.iter().zip(&dirs) {
            share_key(dir.path(), KEY);
            let config = node_config(id, region, roles, backing, lease_ms);
            started.push(start_in(dir.path(), &config));
            configs.push(config);
        }
        Self {
            name: region.to_owned(),
            tenant: format!("t{n}"),
            nodes: started,
            configs,
            dirs,
            kafka: backing.kafka.clone(),
        }
    }

    /// How many partitions the region's shard topic has.
    async fn shard_partitions(&self) -> Option<usize> {
        let topic = iris_kafka::Topics::for_region(&self.name).shard;
        iris_kafka::partition_count(&env("IRIS_TEST_KAFKA"), &topic).await.unwrap()
    }

    /// Kills node `i` with SIGKILL and starts it again at once, under the
    /// same id, on the same data directory.
    fn restart_after_kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
        self.nodes[i] = start_in(self.dirs[i].path(), &self.configs[i]);
    }
}

/// A region name no other test uses.
fn fresh_region() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("r{n}")
}

/// The token key every node of a test region shares.
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

const CORE: &str = "\"core\", \"router\"";
const EDGE: &str = "\"edge\", \"router\"";

/// Every node of the region signs and checks tokens with the same key.
fn share_key(dir: &Path, key: &str) {
    std::fs::create_dir_all(dir.join("auth")).unwrap();
    std::fs::write(dir.join("auth/dev-hs256.key"), key).unwrap();
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

    // Other services can see where bob is connected. (A login retried
    // while the region was getting ready leaves a first session that
    // closes a moment later: the record converges to the one session.)
    let deadline = Instant::now() + WAIT;
    loop {
        let record: serde_json::Value =
            serde_json::from_str(&redis_get(&format!("session:{tenant}:bob")).unwrap()).unwrap();
        let seen = (record["nodes"].clone(), record["sessions"].as_u64());
        if seen == (serde_json::json!(["edge-b"]), Some(1)) {
            break;
        }
        assert!(Instant::now() < deadline, "bob's session record: {record}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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

/// A new region puts eight shards on a partition of its shard topic (ADR
/// 0031): a partition that moves takes its shards along, and its offset was
/// committed only as far as all of them had made their work durable.
#[tokio::test]
async fn killing_a_core_node_moves_its_shards_and_loses_nothing_accepted() {
    let mut region = Region::start(&[("core-1", CORE), ("core-2", CORE), ("edge-a", EDGE)]);
    a_core_killed_under_traffic_loses_nothing(&mut region).await;
    assert_eq!(region.shard_partitions().await, Some(8), "64 shards, eight to a partition");
}

/// The same on a region made before `cluster.shard_partitions` (ADR
/// 0031), whose shard topic has one partition per shard: its nodes keep
/// that layout rather than refuse the topic.
#[tokio::test]
async fn a_region_made_with_a_partition_per_shard_keeps_it() {
    let name = fresh_region();
    let topic = iris_kafka::Topics::for_region(&name).shard;
    iris_kafka::ensure_topics(&env("IRIS_TEST_KAFKA"), &[(&topic, 64)]).await.unwrap();
    let mut region = Region::start_named(
        &name,
        &[("core-1", CORE), ("core-2", CORE), ("edge-a", EDGE)],
        &Backing::shared(),
        LEASE_MS,
    );
    a_core_killed_under_traffic_loses_nothing(&mut region).await;
    assert_eq!(region.shard_partitions().await, Some(64));
}

/// A configured partition count is the topic's (one that does not divide
/// the shards is refused by the config's checks).
#[tokio::test]
async fn a_configured_shard_partition_count_is_used() {
    let mut backing = Backing::shared();
    backing.cluster = "shard_partitions = 16\n".into();
    let region = Region::start_on(&[("core-1", CORE), ("edge-a", EDGE)], &backing);
    let mut alice = login_when_ready(&region.nodes[1], &region.tenant, "alice").await;
    let mut bob = login_when_ready(&region.nodes[1], &region.tenant, "bob").await;
    alice.send("p-1", "bob", "on 16 partitions").await.unwrap();
    accepted(&mut alice, "p-1").await;
    assert_eq!(message(&mut bob).await.body.as_str(), Some("on 16 partitions"));
    assert_eq!(region.shard_partitions().await, Some(16));
}

/// Sends 40 messages from one user of the region's third node to eight
/// recipients (so both core nodes own some), kills the first core node with
/// -9 after ten, and checks that every accepted message is stored once, in
/// order, for its recipient.
async fn a_core_killed_under_traffic_loses_nothing(region: &mut Region) {
    let tenant = region.tenant.clone();
    let mut alice = login_when_ready(&region.nodes[2], &tenant, "alice").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut accepted_ids = Vec::new();
    for i in 0..40 {
        if i == 10 {
            region.nodes[0].kill9();
        }
        let to = format!("bob{}", i % 8);
        let msg_id = send_until_accepted(&mut alice, &format!("k-{i}"), &to, &format!("{i}"), deadline).await;
        accepted_ids.push((to, i, msg_id));
    }
    for r in 0..8 {
        let to = format!("bob{r}");
        let want: Vec<(String, String)> =
            accepted_ids.iter().filter(|(t, _, _)| *t == to).map(|(_, i, id)| (id.clone(), i.to_string())).collect();
        assert_history(&region.nodes[2], &tenant, &to, &want).await;
    }
}

/// `user`'s whole history, read from `node`, is exactly `want` (msg_id,
/// body): seqs 1, 2, 3, … without gaps or repeats, once each, in order.
async fn assert_history(node: &Node, tenant: &str, user: &str, want: &[(String, String)]) {
    let mut c = login_when_ready(node, tenant, user).await;
    c.sync(0, Some(1_000)).await.unwrap();
    let mut got = Vec::new();
    loop {
        match c
            .expect(WAIT, "history", |f| matches!(f, ServerFrame::Message(_) | ServerFrame::Synced(_)))
            .await
            .unwrap()
        {
            ServerFrame::Message(m) => got.push((m.seq, m.msg_id, m.body.as_str().unwrap().to_owned())),
            _ => break,
        }
    }
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert!(seqs.iter().copied().eq(1..=seqs.len() as u64), "{user}: gaps or repeats {seqs:?}");
    let have: Vec<(String, String)> = got.into_iter().map(|(_, id, body)| (id, body)).collect();
    assert_eq!(have, want, "{user}: every accepted message once, in order");
}

/// Three brokers, replication factor 3, `min.insync.replicas = 2`: a broker
/// killed with -9 under traffic (the first, which every node bootstrapped
/// from) costs no accepted message and no live delivery, and the region
/// goes on when it comes back. acks=all means two copies before a send
/// reaches a shard and before a delivery reaches an edge.
#[tokio::test]
async fn a_broker_killed_under_traffic_loses_nothing_on_three_brokers() {
    let kafka = Kafka::start(3);
    let mut backing = Backing::redis(&env("IRIS_TEST_REDIS"), &kafka.addr);
    // The log topics off: with them (three more topics of a partition per
    // shard, and transaction state) a killed broker's partitions take this
    // machine's three brokers about 50 % longer to settle (60 s for the
    // test instead of 41), close to its deadline when other tests run
    // beside it. They are proven under a core killed mid-load in
    // log_topics.rs; their cost in broker failover is an open item.
    backing.cluster = "log_topics = false\n".into();
    let region = Region::start_on(&[("core-1", CORE), ("edge-a", EDGE), ("edge-b", EDGE)], &backing);
    let tenant = region.tenant.clone();
    let mut alice = login_when_ready(&region.nodes[1], &tenant, "alice").await;
    let mut bob = login_when_ready(&region.nodes[2], &tenant, "bob").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut accepted = Vec::new();
    for i in 0..40 {
        if i == 10 {
            kafka.kill9(1);
        }
        if i == 25 {
            kafka.restart(1);
        }
        accepted.push(send_until_accepted(&mut alice, &format!("k-{i}"), "bob", &i.to_string(), deadline).await);
        // Bob reads only at the end, but keeps his session alive as a
        // client must (silence for two heartbeats, 60 s, closes it): on a
        // busy machine the failovers make the sends take longer than that,
        // and the edge rightly closed a silent bob before the last ones.
        bob.ping(i).await.unwrap();
    }
    // Bob, online throughout on the other edge, got every one live.
    let live = collect_until(&mut bob, 40, deadline).await;
    let want: Vec<(String, String)> = accepted.into_iter().enumerate().map(|(i, id)| (id, i.to_string())).collect();
    let have: Vec<(String, String)> = live.iter().map(|(_, id, body)| (id.clone(), body.clone())).collect();
    assert_eq!(live.iter().map(|l| l.0).collect::<Vec<_>>(), (1..=40).collect::<Vec<u64>>(), "seqs 1..=40 live");
    assert_eq!(have, want, "every accepted message reached bob live, once, in order");
    assert_history(&region.nodes[1], &tenant, "bob", &want).await;
}

/// A region on Apache Cassandra (the ScyllaDB backend; scripts/test starts
/// Cassandra): `iris migrate` creates the keyspace, two core nodes share it,
/// and a core killed with -9 under traffic loses nothing accepted.
#[tokio::test]
async fn a_region_on_cassandra_loses_nothing_when_a_core_is_killed() {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let storage = format!(
        "[storage]\nbackend = \"scylla\"\n[storage.scylla]\nnodes = [\"{}\"]\nkeyspace = \"iris_r{n}\"\n\
         replication_factor = 1\n",
        env("IRIS_TEST_SCYLLA")
    );
    let backing = Backing { kafka: env("IRIS_TEST_KAFKA"), storage, cluster: String::new() };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("migrate.toml");
    std::fs::write(&config, node_config("migrate", "m", CORE, &backing, LEASE_MS)).unwrap();
    let out = std::process::Command::new(bin()).arg("migrate").arg("--config").arg(&config).output().unwrap();
    assert!(out.status.success(), "iris migrate: {}", String::from_utf8_lossy(&out.stderr));
    let mut region = Region::start_on(&[("core-1", CORE), ("core-2", CORE), ("edge-a", EDGE)], &backing);
    a_core_killed_under_traffic_loses_nothing(&mut region).await;
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
    // The lease, a lease check (a quarter lease) and the bus: 1.5 to 1.7 s
    // here alone, but 4.53 s was seen once beside the three brokers another
    // test starts on the same two cores; four leases still tell the lease
    // from any other way to go offline (the 60 s heartbeat).
    assert!(took < Duration::from_millis(6_000), "offline only {took:?} after the edge died");
    // Bob reconnects to the other edge and is back online.
    let _bob = login_when_ready(&region.nodes[1], &tenant, "bob").await;
    assert_eq!(presence_of(&mut alice, "bob").await.status, PresenceStatus::Online);
}

#[tokio::test]
async fn an_edge_restarted_within_its_lease_ends_the_sessions_of_its_previous_process() {
    // A lease far longer than a restart: the restarted edge renews it in
    // time, so only its word (`EdgeStarted`) can end bob's old session.
    let lease = 30_000;
    let mut region =
        Region::start_with_lease(&[("core-1", CORE), ("edge-a", EDGE), ("edge-b", EDGE)], &Backing::shared(), lease);
    let tenant = region.tenant.clone();
    let mut alice = login_when_ready(&region.nodes[1], &tenant, "alice").await;
    let mut bob = login_when_ready(&region.nodes[2], &tenant, "bob").await;
    bob.send_text(r#"{"type":"contacts","upsert":[{"user":"alice"}]}"#).await.unwrap();
    expect(&mut bob, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    alice.subscribe(&["bob"]).await.unwrap();
    assert_eq!(presence_of(&mut alice, "bob").await.status, PresenceStatus::Online);

    let killed = Instant::now();
    region.restart_after_kill9(2);
    // presence_of waits 10 s at most: a third of the lease.
    let p = presence_of(&mut alice, "bob").await;
    assert_eq!(p.status, PresenceStatus::Offline, "bob's session went with the old process");
    let took = killed.elapsed();
    eprintln!("offline {took:?} after the edge was killed and restarted (lease 30 s)");
    assert!(took < Duration::from_millis(lease / 2), "offline only after {took:?}");
    // Bob reconnects to the restarted edge and is back online.
    let _bob = login_when_ready(&region.nodes[2], &tenant, "bob").await;
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
    redis_lost_mid_run(RedisFault::Stopped).await;
}

#[tokio::test]
async fn redis_hanging_mid_run_gives_no_false_accepted_and_loses_nothing() {
    redis_lost_mid_run(RedisFault::Hanging).await;
}

/// How Redis goes away in [`redis_lost_mid_run`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum RedisFault {
    /// Killed (its connections reset), then started again on its files.
    Stopped,
    /// Frozen with SIGSTOP (its connections open, nothing answered), then
    /// let run again.
    Hanging,
}

/// Thirty sends, one at a time with retries by id; Redis goes away before
/// the eleventh and comes back after three refusals. Nothing is `accepted`
/// while it is away, every accepted message is stored once and in order,
/// and refusals come fast: the store fails commands at once while its
/// connection is down (fred's `fail_fast`), and its watchdog drops a
/// connection that leaves a `PING` unanswered for 5 s, so a refusal costs
/// a bus round trip, not a 5 s command timeout (before: 5 to 15 s each).
/// The commands caught when Redis went away still wait out their timeout:
/// the first refusal may take 5 s (the first two when Redis hangs, if the
/// second send comes before the watchdog has seen it).
async fn redis_lost_mid_run(fault: RedisFault) {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = Some(Redis::start(port, data.path()));
    let backing = Backing::redis(&format!("redis://127.0.0.1:{port}"), &env("IRIS_TEST_KAFKA"));
    let region = Region::start_on(&[("core-1", CORE), ("edge-a", EDGE)], &backing);
    let tenant = region.tenant.clone();
    let mut alice = login_when_ready(&region.nodes[1], &tenant, "alice").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut accepted = Vec::new();
    let mut away = false;
    let mut refusals: Vec<Duration> = Vec::new();
    for i in 0..30 {
        let id = format!("k-{i}");
        if i == 10 {
            match fault {
                RedisFault::Stopped => drop(redis.take()),
                RedisFault::Hanging => redis.as_ref().unwrap().pause(),
            }
            away = true;
        }
        loop {
            let asked = Instant::now();
            alice.send(&id, "bob", &i.to_string()).await.unwrap();
            let wanted = id.clone();
            // One command timeout (5 s) at most, with room for a slow machine.
            let answer = alice
                .expect(Duration::from_secs(10), "an answer", |f| {
                    matches!(f, ServerFrame::Accepted(a) if a.id == wanted)
                        || matches!(f, ServerFrame::Error(e) if e.id.as_deref() == Some(wanted.as_str()))
                })
                .await
                .expect("every send is answered, Redis or not");
            match answer {
                ServerFrame::Accepted(a) => {
                    assert!(!away, "{id} accepted while Redis was away");
                    accepted.push(a.msg_id);
                    break;
                }
                ServerFrame::Error(e) => {
                    assert_eq!(e.code, iris_protocol::ErrorCode::Unavailable, "{id}: {e:?}");
                    if away {
                        refusals.push(asked.elapsed());
                    }
                    // A few refusals while away, then Redis comes back with its data.
                    if away && refusals.len() >= 3 {
                        match fault {
                            RedisFault::Stopped => redis = Some(Redis::start(port, data.path())),
                            RedisFault::Hanging => redis.as_ref().unwrap().resume(),
                        }
                        away = false;
                    }
                    assert!(Instant::now() < deadline, "{id} never accepted");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => unreachable!(),
            }
        }
    }
    assert_eq!(refusals.len(), 3, "sends were refused while Redis was away");
    let caught = match fault {
        RedisFault::Stopped => 1,
        RedisFault::Hanging => 2,
    };
    eprintln!("{fault:?}: refusals while Redis was away took {refusals:?}");
    let waited = refusals.iter().filter(|d| **d >= Duration::from_secs(3)).count();
    assert!(waited <= caught, "refusals waited for the store instead of failing fast: {refusals:?}");
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

/// One span as an OTLP collector received it.
#[derive(Debug, Clone)]
struct Received {
    node: String,
    name: String,
    trace: String,
    span: String,
    parent: Option<String>,
}

/// A minimal OTLP/HTTP collector on a real socket: it answers every POST
/// with 200 and keeps the spans of its JSON bodies.
async fn otlp_collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Received>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 16_384];
                let body = loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break got[end + 4..end + 4 + len].to_vec();
                    }
                };
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                for rs in v["resourceSpans"].as_array().unwrap() {
                    let node = rs["resource"]["attributes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|a| a["key"] == "service.instance.id")
                        .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
                        .unwrap();
                    for ss in rs["scopeSpans"].as_array().unwrap() {
                        for sp in ss["spans"].as_array().unwrap() {
                            kept.lock().unwrap().push(Received {
                                node: node.clone(),
                                name: sp["name"].as_str().unwrap().to_owned(),
                                trace: sp["traceId"].as_str().unwrap().to_owned(),
                                span: sp["spanId"].as_str().unwrap().to_owned(),
                                parent: sp["parentSpanId"].as_str().map(str::to_owned),
                            });
                        }
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
            });
        }
    });
    (format!("http://{addr}/v1/traces"), spans)
}

/// A traced message is followed through the region (ADR 0023): the edge
/// that took it starts the trace, the core's shard records its handling
/// as a child, and both edges record the delivery of its outputs (the
/// sender's `accepted`, the recipient's `message`) as the shard's
/// children, all in one trace, sent over OTLP to the collector.
#[tokio::test]
async fn a_traced_message_is_followed_from_edge_to_core_and_back() {
    let (endpoint, spans) = otlp_collector().await;
    let mut backing = Backing::shared();
    backing.cluster = format!("[tracing]\notlp_endpoint = \"{endpoint}\"\nsample_ratio = 1.0\n");
    let region = Region::start_on(&[("core-1", CORE), ("edge-a", EDGE), ("edge-b", EDGE)], &backing);
    let (edge_a, edge_b, tenant) = (&region.nodes[1], &region.nodes[2], region.tenant.clone());
    let mut alice = login_when_ready(edge_a, &tenant, "alice").await;
    let mut bob = login_when_ready(edge_b, &tenant, "bob").await;
    alice.send("t-1", "bob", "followed").await.unwrap();
    accepted(&mut alice, "t-1").await;
    message(&mut bob).await;

    // Spans leave each node within a second of ending.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (route, handle, delivers) = loop {
        let got = spans.lock().unwrap().clone();
        let route = got.iter().find(|s| s.name == "iris.edge.route").cloned();
        if let Some(route) = route {
            let handle = got
                .iter()
                .find(|s| s.name == "iris.shard.handle" && s.parent.as_deref() == Some(route.span.as_str()))
                .cloned();
            if let Some(handle) = handle {
                let delivers: Vec<Received> = got
                    .iter()
                    .filter(|s| s.name == "iris.edge.deliver" && s.parent.as_deref() == Some(handle.span.as_str()))
                    .cloned()
                    .collect();
                if delivers.len() >= 2 {
                    break (route, handle, delivers);
                }
            }
        }
        assert!(Instant::now() < deadline, "the collector has not seen the whole path; it has {got:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((route.node.as_str(), route.parent.as_deref()), ("edge-a", None), "the sender's edge starts it");
    assert_eq!(handle.node, "core-1");
    let mut at: Vec<&str> = delivers.iter().map(|s| s.node.as_str()).collect();
    at.sort_unstable();
    assert_eq!(at, ["edge-a", "edge-b"], "accepted back to alice's edge, the message to bob's");
    for s in [&handle].into_iter().chain(&delivers) {
        assert_eq!(s.trace, route.trace, "one trace: {s:?}");
    }
    // Only sends start traces: logins, presence and leases did not.
    let traces: std::collections::BTreeSet<String> = spans.lock().unwrap().iter().map(|s| s.trace.clone()).collect();
    assert_eq!(traces.len(), 1, "{traces:?}");
}
