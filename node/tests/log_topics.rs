//! The region's log topics and region-wide service API (ADR 0022): core and
//! API nodes as separate processes on Apache Kafka and Redis (as
//! scripts/test starts them).
//!
//! Graph changes and ingested events go in through the service API while
//! the core node is killed with -9 and restarted; then the topics must hold
//! exactly the records of the logs (every accepted change once, nothing
//! else), the example consumer must rebuild the graph from them, and
//! `iris logs tail` must print them. And with two API nodes: a key created
//! with one node's config works on both, analytics and logs answer the same
//! on both, and a key revoked with the other's config stops working on
//! both within the lookup cache's time.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run scripts/test, which starts Redis and Apache Kafka"))
}

/// The token key both nodes share.
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn config(node_id: &str, region: &str, roles: &str, http: bool) -> String {
    format!(
        "node_id = \"{node_id}\"\nregion = \"{region}\"\nroles = [{roles}]\n\
         [listen]\nws = \"127.0.0.1:0\"\nquic = \"off\"\nhttp = \"{}\"\nmetrics = \"off\"\n\
         [storage]\nbackend = \"redis\"\nredis_url = \"{}\"\n\
         [core]\nedge_lease_ms = 1500\nshards = 8\n\
         [http]\nrequest_timeout_ms = 3000\n\
         [cluster]\nkafka = \"{}\"\nsession_timeout_ms = 3000\nlog_publish_interval_ms = 20\n",
        if http { "127.0.0.1:0" } else { "off" },
        env("IRIS_TEST_REDIS"),
        env("IRIS_TEST_KAFKA"),
    )
}

fn prepare(dir: &Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("auth")).unwrap();
    std::fs::write(dir.join("auth/dev-hs256.key"), KEY).unwrap();
    let path = dir.join("test.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every entry of a log over HTTP, as (seq, record).
async fn http_log(api: &Node, path: &str, tenant: &str) -> Vec<(u64, serde_json::Value)> {
    let tok = format!("Bearer {}", api.service_token(tenant));
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let url = api.api(&format!("{path}?after={after}&limit=1000"));
        let (s, _, b) = http("GET", &url, &[("authorization", &tok)], None).await;
        assert_eq!(s, 200, "{b}");
        let page = b["events"].as_array().unwrap().clone();
        if page.is_empty() {
            return out;
        }
        for e in page {
            out.push((e["seq"].as_u64().unwrap(), e["event"].clone()));
        }
        after = b["next"].as_u64().unwrap();
    }
}

/// Every record of a log topic of `tenant`, as (seq, record), in the
/// order read.
async fn topic_log(topic: &str, tenant: &str) -> Vec<(u64, serde_json::Value)> {
    let mut out = Vec::new();
    iris_kafka::logs::read_to_end(&env("IRIS_TEST_KAFKA"), topic, |value| {
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        if v["event"]["tenant"] == tenant {
            out.push((v["seq"].as_u64().unwrap(), v["event"].clone()));
        }
    })
    .await
    .unwrap();
    out
}

/// The topic's records of `tenant`, once they are the log's: sorted by
/// seq, compared whole, duplicates included.
async fn topic_matches_log(api: &Node, topic: &str, path: &str, tenant: &str) -> Vec<(u64, serde_json::Value)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = http_log(api, path, tenant).await;
        let mut on_topic = topic_log(topic, tenant).await;
        on_topic.sort_by_key(|(seq, _)| *seq);
        if on_topic == log {
            return log;
        }
        let seqs = |l: &[(u64, serde_json::Value)]| l.iter().map(|(s, _)| *s).collect::<Vec<_>>();
        assert!(
            Instant::now() < deadline,
            "{topic} never held exactly the log's records:\n topic {:?}\n log   {:?}",
            seqs(&on_topic),
            seqs(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The contact list owner `o` is given in round `r`.
fn list(o: usize, r: usize) -> serde_json::Value {
    let circle = if r % 2 == 0 { "contacts" } else { "work" };
    json!(
        (0..(r % 4 + 1))
            .map(|c| json!({"user": format!("c{}", (o + c + r) % 7), "circle": circle}))
            .collect::<Vec<_>>()
    )
}

const OWNERS: usize = 10;
const ROUNDS: usize = 6;
const BATCHES: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topics_carry_exactly_the_accepted_records_across_a_core_killed_mid_load() {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (region, tenant) = (format!("r{n}"), format!("t{n}"));
    let (core_dir, api_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let core_cfg = config("core-1", &region, "\"core\", \"router\"", false);
    let api_cfg = config("api-1", &region, "\"edge\", \"router\"", true);
    prepare(core_dir.path(), &core_cfg);
    let api_config_path = prepare(api_dir.path(), &api_cfg);
    let mut core = start_in(core_dir.path(), &core_cfg);
    let api = Arc::new(start_in(api_dir.path(), &api_cfg));
    let key = api.api_key(&tenant);

    // The load: every owner's contact list set round after round, and
    // batches of events, each retried until answered 200/202.
    let accepted = Arc::new(AtomicUsize::new(0));
    let load = {
        let (api, tenant, accepted, key) = (api.clone(), tenant.clone(), accepted.clone(), key.clone());
        tokio::spawn(async move {
            let tok = format!("Bearer {}", api.service_token(&tenant));
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut keys = Vec::new();
            for r in 0..ROUNDS.max(BATCHES) {
                for o in 0..OWNERS {
                    if r >= ROUNDS {
                        break;
                    }
                    let url = api.api(&format!("/v1/contacts/u{o}"));
                    loop {
                        let (s, _, b) =
                            http("PUT", &url, &[("authorization", &tok)], Some(&json!({"contacts": list(o, r)}))).await;
                        if s == 200 {
                            break;
                        }
                        // Unavailable, or no answer in time (the core is
                        // down, or a fresh region's reply topic was not
                        // read yet): the list may have been applied;
                        // setting it again is safe.
                        assert!(s == 503 || s == 504, "{s} {b}");
                        assert!(Instant::now() < deadline, "the region never took owner u{o}'s list: {b}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                if r < BATCHES {
                    let batch: Vec<serde_json::Value> = (0..5)
                        .map(|i| json!({"type": "click", "idempotency_key": format!("k{r}-{i}"), "stream": format!("s{}", i % 3)}))
                        .collect();
                    keys.extend((0..5).map(|i| format!("k{r}-{i}")));
                    loop {
                        let (s, _, b) = http(
                            "POST",
                            &api.api("/v1/events"),
                            &[("x-api-key", &key)],
                            Some(&json!({ "events": batch })),
                        )
                        .await;
                        if s == 202 || s == 200 {
                            break;
                        }
                        // Retried with the same keys: deduplicated.
                        assert!(s == 503 || s == 504, "{s} {b}");
                        assert!(Instant::now() < deadline, "the region never took event batch {r}: {b}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
            keys
        })
    };
    // Mid-load, the core node dies without a goodbye and comes back.
    let deadline = Instant::now() + Duration::from_secs(90);
    while accepted.load(Ordering::Relaxed) < 15 {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    core.kill9();
    let dir = core_dir.path().to_path_buf();
    let cfg = core_cfg.clone();
    core = tokio::task::spawn_blocking(move || start_in(&dir, &cfg)).await.unwrap();
    let keys = load.await.unwrap();

    let topics = iris_kafka::logs::LogTopics::for_region(&region);
    let graph = topic_matches_log(&api, &topics.graph, "/v1/graph/events", &tenant).await;
    let events = topic_matches_log(&api, &topics.events, "/v1/events/log", &tenant).await;

    // Every accepted event once (the log is the topic, checked above).
    let mut logged: Vec<String> = events.iter().map(|(_, e)| e["key"].as_str().unwrap().to_owned()).collect();
    logged.sort();
    let mut sent = keys.clone();
    sent.sort();
    assert_eq!(logged, sent, "each accepted event is on the topic once");

    // The example consumer rebuilds the graph the service API was given.
    let rebuilt = iris_example_graph_consumer::rebuild(&env("IRIS_TEST_KAFKA"), &region, &tenant).await.unwrap();
    assert_eq!(rebuilt.records as usize, graph.len());
    for o in 0..OWNERS {
        let want: BTreeMap<String, String> = list(o, ROUNDS - 1)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["user"].as_str().unwrap().to_owned(), c["circle"].as_str().unwrap().to_owned()))
            .collect();
        let got: BTreeMap<String, String> = rebuilt
            .contacts
            .get(&format!("u{o}"))
            .map(|cs| cs.iter().map(|(c, s)| (c.clone(), s.circle.clone())).collect())
            .unwrap_or_default();
        assert_eq!(got, want, "owner u{o}'s contacts as rebuilt from the topic");
    }
    let mut from_http = iris_example_graph_consumer::Graph::default();
    for (seq, e) in &graph {
        from_http.fold(&tenant, &json!({"seq": seq, "event": e}).to_string()).unwrap();
    }
    assert_eq!(rebuilt, from_http, "the topic's graph is the service API's");

    // An operator sees the stream.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin())
            .args(["logs", "tail", "--topic", "events", "--from-beginning", "--limit"])
            .arg(keys.len().to_string())
            .arg("--config")
            .arg(&api_config_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut printed: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect();
    printed.sort();
    assert_eq!(printed, events.iter().map(|(s, _)| *s).collect::<Vec<_>>(), "iris logs tail prints the records");
    drop(core);
}

/// The most a revoked key may keep working on a node: its lookup cache's
/// time, and a margin for the request's own way.
const REVOKE_BOUND: Duration = Duration::from_millis(iris_auth::apikeys::CACHE_MS as u64 + 1_000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_analytics_and_logs_are_the_regions_on_every_node() {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (region, tenant) = (format!("r{n}"), format!("t{n}"));
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let cfgs = [
        config("core-1", &region, "\"core\", \"router\"", false),
        config("api-a", &region, "\"edge\", \"router\"", true),
        config("api-b", &region, "\"edge\", \"router\"", true),
    ];
    let paths: Vec<std::path::PathBuf> = dirs.iter().zip(&cfgs).map(|(d, c)| prepare(d.path(), c)).collect();
    let nodes: Vec<Node> = dirs.iter().zip(&cfgs).map(|(d, c)| start_in(d.path(), c)).collect();
    let (a, b) = (&nodes[1], &nodes[2]);

    // Created with a's config: a key of the region, not of a's data dir.
    let key = a.api_key(&tenant);
    assert!(std::fs::read_dir(a.dir.join("api-keys")).is_err(), "no key file: the key is in Redis");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, node) in [a, b].into_iter().enumerate() {
        let events: Vec<serde_json::Value> = (0..3)
            .map(|j| json!({"type": "click", "idempotency_key": format!("n{i}-{j}"), "ts": now, "project": format!("p{i}")}))
            .collect();
        loop {
            let (s, _, body) =
                http("POST", &node.api("/v1/events"), &[("x-api-key", &key)], Some(&json!({ "events": events }))).await;
            if s == 202 || s == 200 {
                break;
            }
            assert!(s == 503 || s == 504, "node {i} refused the region's key: {s} {body}");
            assert!(Instant::now() < deadline, "node {i} never took the events: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Analytics and logs: the region's totals, whichever node is asked.
    let ask = |node: &Node, path: &str| {
        let (url, key) = (node.api(path), key.clone());
        async move { http("GET", &url, &[("x-api-key", &key)], None).await }
    };
    let (sa, _, on_a) = ask(a, "/v1/analytics").await;
    let (sb, _, on_b) = ask(b, "/v1/analytics").await;
    assert_eq!((sa, sb), (200, 200), "{on_a} {on_b}");
    assert_eq!(on_a, on_b, "both nodes answer with the region's rollups");
    let rows = on_a["rollups"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["count"].as_u64().unwrap()).sum::<u64>(), 6, "{on_a}");
    assert_eq!(rows.len(), 2, "one row per project, each node's events counted: {on_a}");
    assert_eq!(http_log(a, "/v1/events/log", &tenant).await, http_log(b, "/v1/events/log", &tenant).await);
    assert_eq!(http_log(a, "/v1/events/log", &tenant).await.len(), 6);

    // Revoked with b's config: refused on both nodes within the bound.
    let id = {
        let out = Command::new(bin())
            .args(["api-key", "create", "--tenant", &tenant, "--config"])
            .arg(&paths[2])
            .output()
            .unwrap();
        assert!(out.status.success());
        // A second key of the tenant, which must outlive the revocation.
        String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_owned()
    };
    let other = format!("{tenant}-other");
    let outsider = a.api_key(&other);
    let revoke = |tenant: &str, id: &str| {
        Command::new(bin())
            .args(["api-key", "revoke", "--tenant", tenant, "--id", id, "--config"])
            .arg(&paths[2])
            .output()
            .unwrap()
    };
    assert!(!revoke(&other, &key).status.success(), "another tenant cannot revoke the key");
    let out = revoke(&tenant, &key);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked_at = Instant::now();
    for (i, node) in [a, b].into_iter().enumerate() {
        loop {
            let (s, _, _) = ask(node, "/v1/analytics").await;
            if s == 401 {
                break;
            }
            assert_eq!(s, 200);
            assert!(revoked_at.elapsed() < REVOKE_BOUND, "node {i} still takes the revoked key after {REVOKE_BOUND:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (i, node) in [a, b].into_iter().enumerate() {
        let (s, _, body) = http("GET", &node.api("/v1/analytics"), &[("x-api-key", &id)], None).await;
        assert_eq!(s, 200, "node {i}: the tenant's other key still works: {body}");
        let (s, _, body) = http("GET", &node.api("/v1/analytics"), &[("x-api-key", &outsider)], None).await;
        assert_eq!(s, 200, "node {i}: another tenant's key still works: {body}");
    }
    drop(nodes);
}

/// Every Redis key that holds something of `tenant`, but the two a deletion
/// leaves on purpose: its log seq counters (a tenant of the same name later
/// must not hand out seqs readers have seen) and the shards' confirmations
/// of its bar (ADR 0030).
fn keys_of(tenant: &str) -> std::collections::BTreeSet<String> {
    let out = Command::new("redis-cli")
        // Quoted, NUL as \x00 (raw output would cut each key at its first NUL).
        .args(["-u", &env("IRIS_TEST_REDIS"), "--no-raw", "--scan", "--pattern", &format!("*{tenant}*")])
        .output()
        .expect("redis-cli (scripts/test installs it with redis-server)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|k| k.trim_matches('"'))
        .filter(|k| !k.starts_with("logseq") && !k.starts_with("barconf"))
        // A tenant whose name continues this one's is another tenant.
        .map(|k| k.replace("\\x00", "\0"))
        .filter(|k| k.split(['\0', ':']).any(|part| part == tenant))
        .collect()
}

/// ADR 0030: a tenant deleted while the region runs, its users online and
/// its records being written. The command bars it, waits for every shard
/// to confirm, then deletes; nothing of it is left in Redis, nothing of it
/// is written again (its open sessions' sends, a new login, its sessions
/// closing, the service API are all refused), another tenant keeps every
/// record, and `iris tenant allow` lets it write again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deleted_under_running_shards_leaves_nothing_and_writes_nothing_again() {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (region, gone, kept) = (format!("r{n}"), format!("g{n}"), format!("k{n}"));
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let cfgs = [
        config("core-1", &region, "\"core\", \"router\"", false),
        config("api-a", &region, "\"edge\", \"router\"", true),
    ];
    let paths: Vec<std::path::PathBuf> = dirs.iter().zip(&cfgs).map(|(d, c)| prepare(d.path(), c)).collect();
    let nodes: Vec<Node> = dirs.iter().zip(&cfgs).map(|(d, c)| start_in(d.path(), c)).collect();
    let api = &nodes[1];
    let deadline = Instant::now() + Duration::from_secs(90);

    // Both tenants write every kind of record: messages, contacts (the
    // graph log), events (its log and rollups), session records.
    let (mut online, mut keys) = (Vec::new(), Vec::new());
    for tenant in [&gone, &kept] {
        let mut alice = login_when_ready(api, tenant, "alice").await;
        let mut bob = login_when_ready(api, tenant, "bob").await;
        send_until_accepted(&mut alice, "m1", "bob", "hi", deadline).await;
        assert_eq!(message(&mut bob).await.body.as_str(), Some("hi"));
        let tok = format!("Bearer {}", api.service_token(tenant));
        loop {
            let list = json!({"contacts": [{"user": "alice"}]});
            let (s, _, body) = http("PUT", &api.api("/v1/contacts/bob"), &[("authorization", &tok)], Some(&list)).await;
            if s == 200 {
                break;
            }
            assert!(s == 503 || s == 504, "{s} {body}");
            assert!(Instant::now() < deadline, "the contacts were never taken: {body}");
        }
        let key = api.api_key(tenant);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let events = json!({"events": [{"type": "click", "idempotency_key": "e1", "ts": now}]});
        loop {
            let (s, _, body) = http("POST", &api.api("/v1/events"), &[("x-api-key", &key)], Some(&events)).await;
            if s == 200 || s == 202 {
                break;
            }
            assert!(s == 503 || s == 504, "{s} {body}");
            assert!(Instant::now() < deadline, "the events were never taken: {body}");
        }
        online.push((alice, bob));
        keys.push(key);
    }
    assert!(keys_of(&gone).len() >= 8, "the tenant has records of every kind: {:?}", keys_of(&gone));
    let kept_keys = keys_of(&kept);

    // Deleted under the running region, its users still online.
    let out = Command::new(bin())
        .args(["tenant", "delete", "--tenant", &gone, "--yes", "--wait-secs", "60", "--config"])
        .arg(&paths[0])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stays barred"));
    assert!(keys_of(&gone).is_empty(), "left: {:?}", keys_of(&gone));
    let retained = Command::new("redis-cli")
        .args(["-u", &env("IRIS_TEST_REDIS"), "SISMEMBER", "retained", &gone])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&retained.stdout).trim(), "0", "no longer listed for retention");
    // Its API key stops within the lookup cache's time.
    let deleted_at = Instant::now();
    loop {
        let (s, _, _) = http("GET", &api.api("/v1/analytics"), &[("x-api-key", &keys[0])], None).await;
        if s == 401 {
            break;
        }
        assert!(deleted_at.elapsed() < REVOKE_BOUND, "its API key still works after {REVOKE_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Its open sessions are refused, a new login's session too, and the
    // service API; then its sessions close.
    let (mut alice, bob) = online.remove(0);
    alice.send("m2", "bob", "after").await.unwrap();
    expect(&mut alice, "forbidden", is_error(iris_protocol::ErrorCode::Forbidden)).await;
    let refused =
        iris_client::Client::hello(&api.ws_url, &api.token(&gone, "carol"), None, iris_client::Encoding::Json).await;
    assert!(
        matches!(&refused, Err(iris_client::ClientError::Unexpected(f)) if is_error(iris_protocol::ErrorCode::Forbidden)(f)),
        "a new session of the deleted tenant: {:?}",
        refused.map(|(_, w)| w)
    );
    let tok = format!("Bearer {}", api.service_token(&gone));
    let list = json!({"contacts": [{"user": "dan"}]});
    let (s, _, body) = http("PUT", &api.api("/v1/contacts/bob"), &[("authorization", &tok)], Some(&list)).await;
    assert_eq!(s, 403, "{body}");
    drop((alice, bob));
    // Nothing of it comes back: watched for two edge leases, while its
    // sessions' ends reach the shards and the leases are checked.
    let watch = Instant::now() + Duration::from_millis(3_000);
    while Instant::now() < watch {
        assert!(keys_of(&gone).is_empty(), "written again: {:?}", keys_of(&gone));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(keys_of(&kept), kept_keys, "the other tenant keeps every record");
    let (s, _, body) = http("GET", &api.api("/v1/analytics"), &[("x-api-key", &keys[1])], None).await;
    assert_eq!(s, 200, "the other tenant's key works: {body}");
    let (mut ann, mut ben) = online.remove(0);
    send_until_accepted(&mut ann, "m2", "bob", "still here", deadline).await;
    assert_eq!(message(&mut ben).await.body.as_str(), Some("still here"));

    // Allowed again: its users write (the shards learn within seconds).
    let out =
        Command::new(bin()).args(["tenant", "allow", "--tenant", &gone, "--config"]).arg(&paths[1]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("may write again"));
    let mut alice = login_when_ready(api, &gone, "alice").await;
    send_until_accepted(&mut alice, "m9", "bob", "back", deadline).await;
    assert!(!keys_of(&gone).is_empty(), "it writes again");
    drop(nodes);
}
