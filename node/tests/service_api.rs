//! The service HTTP API: contact-graph sync and event ingestion, end to end
//! against the real binary.

mod common;

use common::*;
use iris_client::ServerFrame;
use iris_protocol::PresenceStatus;
use serde_json::json;

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

async fn graph_log(node: &Node, tenant: &str, after: u64) -> Vec<serde_json::Value> {
    let tok = bearer(&node.service_token(tenant));
    let (status, _, body) =
        http("GET", &node.api(&format!("/v1/graph/events?after={after}")), &[("authorization", &tok)], None).await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn contact_lists_sync_as_diffs_and_feed_the_graph_log() {
    let node = start();
    let tok = bearer(&node.service_token("acme"));
    let auth = [("authorization", tok.as_str())];
    let put = |list: serde_json::Value| {
        let url = node.api("/v1/contacts/bob");
        let auth = auth;
        async move { http("PUT", &url, &auth, Some(&json!({ "contacts": list }))).await }
    };
    let (s, _, b) = put(json!([{"user": "ann"}, {"user": "cat", "circle": "work", "channels": ["tel:1"]}])).await;
    assert_eq!(
        (s, b["upserted"].as_u64(), b["removed"].as_u64(), b["count"].as_u64()),
        (200, Some(2), Some(0), Some(2)),
        "{b}"
    );
    // The same list again changes nothing and emits nothing.
    let (s, _, b) = put(json!([{"user": "ann"}, {"user": "cat", "circle": "work", "channels": ["tel:1"]}])).await;
    assert_eq!((s, b["upserted"].as_u64(), b["removed"].as_u64()), (200, Some(0), Some(0)));
    // Move cat, drop ann, add dan.
    let (_, _, b) = put(json!([{"user": "cat", "circle": "family", "channels": ["tel:1"]}, {"user": "dan"}])).await;
    assert_eq!((b["upserted"].as_u64(), b["removed"].as_u64(), b["count"].as_u64()), (Some(2), Some(1), Some(2)));

    let log = graph_log(&node, "acme", 0).await;
    let kinds: Vec<String> = log
        .iter()
        .map(|e| format!("{} {}", e["event"]["type"].as_str().unwrap(), e["event"]["contact"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        kinds,
        [
            "contact.upserted ann",
            "contact.upserted cat",
            "contact.upserted cat",
            "contact.upserted dan",
            "contact.removed ann"
        ]
    );
    assert!(log.windows(2).all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()), "in order, each once");
    assert_eq!(log[1]["event"]["channels"], json!(["tel:1"]));
    assert_eq!(log[0]["event"]["v"], 1);
    // Reading after a position continues from there.
    let after = log[2]["seq"].as_u64().unwrap();
    assert_eq!(graph_log(&node, "acme", after).await.len(), 2);
    // Other tenants see none of it.
    assert!(graph_log(&node, "globex", 0).await.is_empty());
}

#[tokio::test]
async fn identity_and_circle_policy_reach_live_subscribers() {
    let node = start();
    let tok = bearer(&node.service_token("acme"));
    let auth = [("authorization", tok.as_str())];
    let (mut bob, _) = node.login("acme", "bob").await;
    let (mut dave, _) = node.login("acme", "dave").await;
    dave.subscribe(&["bob"]).await.unwrap();
    assert_eq!(presence_of(&mut dave, "bob").await.status, PresenceStatus::Offline, "not a contact yet");

    let (s, _, _) = http(
        "PUT",
        &node.api("/v1/contacts/bob"),
        &auth,
        Some(&json!({"contacts": [{"user": "dave", "circle": "friends"}]})),
    )
    .await;
    assert_eq!(s, 200);
    // A new circle allows nothing: still offline (and no frame for no change).
    let (s, _, b) = http("PUT", &node.api("/v1/circles/bob/friends"), &auth, Some(&json!({"presence": true}))).await;
    assert_eq!((s, b["circle"].as_str()), (200, Some("friends")), "{b}");
    assert_eq!(
        presence_of(&mut dave, "bob").await.status,
        PresenceStatus::Online,
        "the policy change reached dave at once"
    );
    let (s, _, _) = http("PUT", &node.api("/v1/circles/bob/friends"), &auth, Some(&json!({"presence": false}))).await;
    assert_eq!(s, 200);
    assert_eq!(presence_of(&mut dave, "bob").await.status, PresenceStatus::Offline);

    let (s, _, b) =
        http("POST", &node.api("/v1/identity/verified"), &auth, Some(&json!({"user": "bob", "channel": "tel:hash"})))
            .await;
    assert_eq!((s, &b), (200, &json!({"ok": true})));
    let log = graph_log(&node, "acme", 0).await;
    let types: Vec<&str> = log.iter().map(|e| e["event"]["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["contact.upserted", "circle.policy_changed", "circle.policy_changed", "identity.verified"]);
    bob.ping(1).await.unwrap();
    expect(&mut bob, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;
}

#[tokio::test]
async fn user_tokens_and_bad_requests_are_refused() {
    let node = start();
    let user = bearer(&node.token("acme", "alice"));
    let (s, _, b) =
        http("PUT", &node.api("/v1/contacts/bob"), &[("authorization", &user)], Some(&json!({"contacts": []}))).await;
    assert_eq!(s, 403, "a user token never calls service APIs: {b}");
    let (s, _, _) = http("PUT", &node.api("/v1/contacts/bob"), &[], Some(&json!({"contacts": []}))).await;
    assert_eq!(s, 401);
    let forged = bearer(
        &iris_auth::Signer::hs256(b"not-the-node-key-not-the-node-key!").service_token("acme", "x", 60).unwrap(),
    );
    let (s, _, _) = http("GET", &node.api("/v1/graph/events"), &[("authorization", &forged)], None).await;
    assert_eq!(s, 401);
    let tok = bearer(&node.service_token("acme"));
    let auth = [("authorization", tok.as_str())];
    let (s, _, b) =
        http("PUT", &node.api("/v1/contacts/bob"), &auth, Some(&json!({"contacts": [{"user": "a"}, {"user": "a"}]})))
            .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("twice"));
    let (s, _, _) = http("PUT", &node.api("/v1/contacts/bob"), &auth, Some(&json!({"list": []}))).await;
    assert_eq!(s, 400);
    let (s, _, _) = http("GET", &node.api("/v1/nope"), &auth, None).await;
    assert_eq!(s, 404);
    // A known path with a method it does not take: 405, naming the ones it does.
    let (s, headers, b) = http("DELETE", &node.api("/v1/homes/bob"), &auth, None).await;
    assert_eq!(s, 405, "{b}");
    assert!(headers.iter().any(|(k, v)| k == "allow" && v == "GET, PUT"), "{headers:?}");
    // A body must be a JSON object (serde alone would read a struct from an array).
    let (s, _, b) = http("PUT", &node.api("/v1/circles/bob/friends"), &auth, Some(&json!([true, false]))).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "invalid body: a JSON object is required");
}

async fn post_events(
    node: &Node,
    key: &str,
    events: serde_json::Value,
) -> (u16, Vec<(String, String)>, serde_json::Value) {
    http("POST", &node.api("/v1/events"), &[("x-api-key", key)], Some(&json!({ "events": events }))).await
}

#[tokio::test]
async fn ingestion_deduplicates_within_and_across_batches_and_restarts() {
    let mut node = start();
    let key = node.api_key("acme");
    let hour = 3_600_000i64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let ts = now / hour * hour + 5;
    let (s, _, b) = post_events(
        &node,
        &key,
        json!([
            {"type": "click", "idempotency_key": "k1", "ts": ts, "project": "web", "payload": {"x": 1}},
            {"type": "click", "idempotency_key": "k1", "ts": ts, "project": "web"},
            {"type": "view", "idempotency_key": "k2", "ts": ts, "project": "web"},
            {"type": "click", "idempotency_key": "k3", "ts": ts, "project": "web", "stream": "other"},
            {"idempotency_key": "k4"},
            "not an event"
        ]),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!((b["accepted"].as_u64(), b["duplicates"].as_u64()), (Some(3), Some(1)), "{b}");
    let errors: Vec<u64> = b["errors"].as_array().unwrap().iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(errors, [4, 5], "bad events get their own errors");
    // Across batches.
    let (_, _, b) =
        post_events(&node, &key, json!([{"type": "click", "idempotency_key": "k1", "ts": ts, "project": "web"}])).await;
    assert_eq!((b["accepted"].as_u64(), b["duplicates"].as_u64()), (Some(0), Some(1)));
    // Across a crash.
    node.kill9();
    let dir = node.dir.clone();
    let node =
        start_in(&dir, "[listen]\nws = \"127.0.0.1:0\"\nmetrics = \"off\"\nquic = \"off\"\nhttp = \"127.0.0.1:0\"\n");
    let (_, _, b) = post_events(&node, &key, json!([{"type": "view", "idempotency_key": "k2", "ts": ts, "project": "web"}, {"type": "view", "idempotency_key": "k5", "ts": ts, "project": "web"}])).await;
    assert_eq!((b["accepted"].as_u64(), b["duplicates"].as_u64()), (Some(1), Some(1)), "{b}");

    let (s, _, b) = http(
        "GET",
        &node.api(&format!("/v1/analytics?from={}&to={}", ts - hour, ts + hour)),
        &[("x-api-key", &key)],
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let mut rows: Vec<(String, u64)> = b["rollups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["type"].as_str().unwrap().to_owned(), r["count"].as_u64().unwrap()))
        .collect();
    rows.sort();
    assert_eq!(rows, [("click".to_owned(), 2), ("view".to_owned(), 2)]);
    let (_, _, b) = http(
        "GET",
        &node.api(&format!("/v1/analytics?type=view&from={}&to={}", ts - hour, ts + hour)),
        &[("x-api-key", &key)],
        None,
    )
    .await;
    assert_eq!(b["rollups"].as_array().unwrap().len(), 1);

    // Every accepted event is in the downstream log exactly once.
    let tok = bearer(&node.service_token("acme"));
    let (_, _, b) = http("GET", &node.api("/v1/events/log"), &[("authorization", &tok)], None).await;
    let mut keys: Vec<&str> =
        b["events"].as_array().unwrap().iter().map(|e| e["event"]["key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["k1", "k2", "k3", "k5"]);
}

#[tokio::test]
async fn bad_keys_malformed_and_oversized_batches() {
    let node = start_with("[http]\nmax_batch_events = 3\ntenant_event_burst = 3\nmax_body_bytes = 2048\n");
    let key = node.api_key("acme");
    let (s, _, _) = post_events(&node, "iris_not-a-key", json!([{"type": "t", "idempotency_key": "k"}])).await;
    assert_eq!(s, 401);
    let (s, _, _) = http("POST", &node.api("/v1/events"), &[], Some(&json!({"events": []}))).await;
    assert_eq!(s, 401);
    let (s, _, b) = post_events(&node, &key, json!([])).await;
    assert_eq!(s, 400, "{b}");
    let four: Vec<serde_json::Value> =
        (0..4).map(|i| json!({"type": "t", "idempotency_key": format!("k{i}")})).collect();
    let (s, _, _) = post_events(&node, &key, json!(four)).await;
    assert_eq!(s, 400, "over the batch limit");
    let (s, _, _) = http(
        "POST",
        &node.api("/v1/events"),
        &[("x-api-key", &key)],
        Some(&json!({"events": [{"type": "t", "idempotency_key": "big", "payload": "x".repeat(4_000)}]})),
    )
    .await;
    assert_eq!(s, 413, "over the body limit");
    let (s, _, _) = http("POST", &node.api("/v1/events"), &[("x-api-key", &key)], None).await;
    assert_eq!(s, 400, "not JSON");
    // Authorization: Bearer works for keys too.
    let (s, _, _) = http(
        "POST",
        &node.api("/v1/events"),
        &[("authorization", &bearer(&key))],
        Some(&json!({"events": [{"type": "t", "idempotency_key": "b1"}]})),
    )
    .await;
    assert_eq!(s, 202);
    // Revoked keys stop working (within the cache time).
    let id = {
        let out = std::process::Command::new(bin())
            .args(["api-key", "create", "--tenant", "acme", "--data-dir"])
            .arg(&node.dir)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let id = lines.next().unwrap().trim_start_matches("id ").to_owned();
        (id, lines.next().unwrap().to_owned())
    };
    let out = std::process::Command::new(bin())
        .args(["api-key", "revoke", "--tenant", "acme", "--id", &id.0, "--data-dir"])
        .arg(&node.dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (s, _, _) = post_events(&node, &id.1, json!([{"type": "t", "idempotency_key": "r1"}])).await;
    assert_eq!(s, 401, "revoked before first use");
}

#[tokio::test]
async fn tenants_are_rate_limited_with_retry_after() {
    let node = start_with("[http]\nmax_batch_events = 5\ntenant_events_per_second = 1\ntenant_event_burst = 5\n");
    let key = node.api_key("acme");
    let other = node.api_key("globex");
    let five: Vec<serde_json::Value> =
        (0..5).map(|i| json!({"type": "t", "idempotency_key": format!("k{i}")})).collect();
    let (s, _, _) = post_events(&node, &key, json!(five)).await;
    assert_eq!(s, 202);
    let (s, headers, b) = post_events(&node, &key, json!([{"type": "t", "idempotency_key": "k9"}])).await;
    assert_eq!(s, 429, "{b}");
    assert!(headers.iter().any(|(k, v)| k == "retry-after" && v.parse::<u64>().unwrap() >= 1));
    let (s, _, _) = post_events(&node, &other, json!([{"type": "t", "idempotency_key": "k9"}])).await;
    assert_eq!(s, 202, "another tenant has its own budget");
}

/// Random test: events of several tenants with overlapping types,
/// projects and keys; each tenant's analytics count only its own.
#[tokio::test]
async fn analytics_never_cross_tenants() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    eprintln!("analytics_never_cross_tenants seed={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let node = start();
    let tenants = ["t1", "t2", "t3"];
    let keys: Vec<String> = tenants.iter().map(|t| node.api_key(t)).collect();
    let mut expected = std::collections::HashMap::<(usize, String), u64>::new();
    for batch in 0..12 {
        let t = rng.random_range(0..tenants.len());
        let n = rng.random_range(1..20);
        let events: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                let ty = ["a", "b", "c"][rng.random_range(0..3)];
                *expected.entry((t, ty.to_owned())).or_default() += 1;
                json!({"type": ty, "idempotency_key": format!("{batch}-{i}")})
            })
            .collect();
        let (s, _, b) = post_events(&node, &keys[t], json!(events)).await;
        assert_eq!((s, b["accepted"].as_u64()), (202, Some(n)), "seed {seed}");
    }
    for (t, key) in keys.iter().enumerate() {
        let (_, _, b) = http("GET", &node.api("/v1/analytics"), &[("x-api-key", key)], None).await;
        let mut got = std::collections::HashMap::<String, u64>::new();
        for r in b["rollups"].as_array().unwrap() {
            *got.entry(r["type"].as_str().unwrap().to_owned()).or_default() += r["count"].as_u64().unwrap();
        }
        let want: std::collections::HashMap<String, u64> =
            expected.iter().filter(|((tt, _), _)| *tt == t).map(|((_, ty), n)| (ty.clone(), *n)).collect();
        assert_eq!(got, want, "seed {seed}: tenant {}", tenants[t]);
    }
}

#[tokio::test]
async fn failed_authentication_is_throttled_per_address() {
    let node = start_with("[auth]\nfailed_auth_per_minute = 3\n");
    let graph = node.api("/v1/graph/events");
    // Requests without a credential cost nothing to refuse and are not counted.
    for _ in 0..5 {
        let (s, _, _) = http("GET", &graph, &[], None).await;
        assert_eq!(s, 401);
    }
    let forged = bearer(
        &iris_auth::Signer::hs256(b"not-the-node-key-not-the-node-key!").service_token("acme", "x", 60).unwrap(),
    );
    // Three bad credentials (a forged token, bad API keys) within the minute...
    let (s, _, _) = http("GET", &graph, &[("authorization", &forged)], None).await;
    assert_eq!(s, 401);
    let (s, _, _) = http("GET", &node.api("/v1/analytics"), &[("x-api-key", "iris_nope")], None).await;
    assert_eq!(s, 401);
    let (s, _, _) = post_events(&node, "iris_nope", json!([{"type": "t", "idempotency_key": "k"}])).await;
    assert_eq!(s, 401);
    // ...and the address gets 429 with Retry-After, even with a good token,
    // whose check is not run.
    let good = bearer(&node.service_token("acme"));
    let (s, headers, b) = http("GET", &graph, &[("authorization", &good)], None).await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["error"], "too many failed authentications from this address; retry later");
    assert!(headers.iter().any(|(k, v)| k == "retry-after" && v == "60"), "{headers:?}");
}
