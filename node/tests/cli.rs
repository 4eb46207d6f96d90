//! The command line: token, check-config, migrate, and the operator's
//! listener (metrics, liveness, readiness and draining).

mod common;

use common::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

#[tokio::test]
async fn token_command_prints_a_token_the_node_accepts() {
    let node = start();
    let out = Command::new(bin())
        .args(["token", "--user", "alice", "--tenant", "acme", "--ttl", "1h", "--data-dir"])
        .arg(&node.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap();
    let (_, w) = iris_client::Client::hello(&node.ws_url, token, None, iris_client::Encoding::Json).await.unwrap();
    assert_eq!(w.user, "alice");

    let dir = tempfile::tempdir().unwrap();
    let bad = Command::new(bin())
        .args(["token", "--user", "a", "--tenant", "t", "--ttl", "5 weeks", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(!dir.path().join("auth").exists(), "a refused command leaves nothing behind");
}

#[test]
fn check_config_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[limits]\nmax_body_bytes = 1000\n").unwrap();
    let out = Command::new(bin()).arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success());
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_body_bites = 1000\n").unwrap();
    let out = Command::new(bin()).arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_body_bites"));
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../cluster-config/single.toml");
    let out = Command::new(bin()).arg("check-config").arg(example).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn changing_the_shard_count_of_existing_data_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    drop(start_in(&dir, ""));
    let config = dir.join("reshard.toml");
    std::fs::write(&config, "[listen]\nws = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\n[core]\nshards = 8\n").unwrap();
    let out = Command::new(bin()).arg("--data-dir").arg(&dir).arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("core.shards"));
}

#[tokio::test]
async fn metrics_are_served_with_iris_names() {
    let node = start();
    let (mut a, _) = node.login("acme", "alice").await;
    let (mut b, _) = node.login("acme", "bob").await;
    a.send("m1", "bob", "hi").await.unwrap();
    accepted(&mut a, "m1").await;
    message(&mut b).await;
    let url = node.metrics_url.clone().unwrap();
    let addr = url.trim_start_matches("http://").trim_end_matches("/metrics").to_owned();
    let body = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for name in [
        "iris_sessions_connected",
        "iris_frames_in_total",
        "iris_frames_out_total",
        "iris_messages_delivered_total",
        "iris_messages_accepted_total",
        "iris_fsync_batch_size",
        "iris_fsync_seconds",
        "iris_shard_mailbox_depth",
    ] {
        assert!(body.contains(name), "{name} missing from metrics");
    }
}

/// `GET path` on the operator's listener: status code and body.
async fn get(metrics_url: &str, path: &str) -> (u16, String) {
    let addr = metrics_url.trim_start_matches("http://").trim_end_matches("/metrics").to_owned();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    let raw = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    })
    .await
    .unwrap();
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn readyz_answers_503_while_a_terminated_node_drains_and_sessions_work_until_it_closes_them() {
    let mut node = start_with(
        "[listen]\nws = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\nquic = \"off\"\nhttp = \"off\"\ndrain_ms = 4000\n",
    );
    let url = node.metrics_url.clone().unwrap();
    assert_eq!(get(&url, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(&url, "/readyz").await, (200, "ready\n".to_owned()));
    let (status, body) = get(&url, "/nowhere").await;
    assert_eq!(status, 404, "{body}");
    let (mut a, _) = node.login("acme", "alice").await;

    // SAFETY: a signal to our own child process.
    unsafe {
        libc::kill(node.child.id() as i32, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(&url, "/readyz").await;
        if status == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/readyz still {status} {body:?} after SIGTERM");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(get(&url, "/healthz").await.0, 200, "alive while draining");
    // The session opened before is still served while the node drains.
    a.send("d1", "bob", "during the drain").await.unwrap();
    accepted(&mut a, "d1").await;
    // Then the node closes its sessions and exits cleanly.
    let deadline = std::time::Instant::now() + WAIT + std::time::Duration::from_secs(4);
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "node did not stop after draining");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// Starts a node with `IRIS_LOG_FORMAT` set (or not) and its stderr piped;
/// returns its log lines up to and including `node started`.
fn log_lines_until_started(format: Option<&str>) -> Vec<String> {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("test.toml");
    std::fs::write(&config, "[listen]\nws = \"127.0.0.1:0\"\nmetrics = \"off\"\nquic = \"off\"\nhttp = \"off\"\n")
        .unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("--data-dir").arg(dir.path()).arg("--config").arg(&config).env("IRIS_LOG", "info");
    cmd.env_remove("IRIS_LOG_FORMAT").stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(f) = format {
        cmd.env("IRIS_LOG_FORMAT", f);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + READY_WAIT;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("node started");
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no `node started` log line in time; got {lines:?}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn logs_are_json_lines_when_asked_and_plain_text_without_colour_in_a_pipe() {
    let json = log_lines_until_started(Some("json"));
    let started: serde_json::Value = serde_json::from_str(json.last().unwrap()).expect("a JSON object per line");
    assert_eq!(started["level"], "INFO", "{started}");
    assert_eq!(started["fields"]["message"], "node started", "{started}");
    assert!(started["timestamp"].is_string(), "{started}");
    assert!(started["fields"]["data_dir"].is_string(), "fields are kept: {started}");
    for line in &json {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    let text = log_lines_until_started(None);
    assert!(text.last().unwrap().contains("INFO"), "{text:?}");
    assert!(text.iter().all(|l| !l.contains('\u{1b}')), "no colour codes when stderr is not a terminal: {text:?}");
}

#[test]
fn migrate_is_for_the_scylla_backend_and_names_what_is_wrong() {
    let out = Command::new(bin()).arg("migrate").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let embedded = dir.path().join("embedded.toml");
    std::fs::write(&embedded, "").unwrap();
    let out = Command::new(bin()).arg("migrate").arg("--config").arg(&embedded).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to migrate"));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../cluster-config/region-scylla.toml");
    let out = Command::new(bin()).arg("check-config").arg(example).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A password variable that is not set is named, and nothing connects.
    let text = std::fs::read_to_string(example).unwrap();
    let secret = dir.path().join("secret.toml");
    std::fs::write(
        &secret,
        text.replace("# username = \"iris\"", "username = \"iris\"")
            .replace("# password_env = \"IRIS_SCYLLA_PASSWORD\"", "password_env = \"IRIS_TEST_UNSET_PASSWORD\""),
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("migrate")
        .arg("--config")
        .arg(&secret)
        .env_remove("IRIS_TEST_UNSET_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("IRIS_TEST_UNSET_PASSWORD"));

    // Nothing listens on the node's port: a clear error, not a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = dir.path().join("unreachable.toml");
    let config = text.replace("127.0.0.1:9042", &format!("127.0.0.1:{port}")) + "\n[listen]\nmetrics = \"off\"\n";
    std::fs::write(&unreachable, config).unwrap();
    let out = Command::new(bin()).arg("migrate").arg("--config").arg(&unreachable).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to ScyllaDB") && err.contains(&port.to_string()), "{err}");
    let out = Command::new(bin()).arg("--config").arg(&unreachable).output().unwrap();
    assert!(!out.status.success(), "a node does not start without its store");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ScyllaDB"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `iris migrate` against a live CQL node (Apache Cassandra, which
/// scripts/test starts as IRIS_TEST_SCYLLA): two processes at once on a new
/// keyspace both succeed, exactly one applies the schema steps, and a third
/// run finds nothing to do; API keys are then made and revoked in it.
#[test]
fn migrate_runs_from_two_processes_at_once_and_then_finds_nothing_to_do() {
    let node = std::env::var("IRIS_TEST_SCYLLA")
        .expect("IRIS_TEST_SCYLLA is not set: run scripts/test, which starts Apache Cassandra (scripts/cassandra)");
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scylla.toml");
    std::fs::write(
        &config,
        format!(
            "roles = [\"core\", \"router\"]\n[listen]\nmetrics = \"off\"\n[cluster]\nkafka = \"127.0.0.1:9\"\n\
             [storage]\nbackend = \"scylla\"\n[storage.scylla]\nnodes = [\"{node}\"]\nkeyspace = \"iris_m{n}\"\n\
             replication_factor = 1\n"
        ),
    )
    .unwrap();
    let run =
        || Command::new(bin()).arg("migrate").arg("--config").arg(&config).stdout(Stdio::piped()).spawn().unwrap();
    let (a, b) = (run(), run());
    let outs: Vec<String> = [a, b]
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "a concurrent migrate failed");
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    let applied = outs.iter().filter(|o| o.contains("applied schema steps")).count();
    let current = outs.iter().filter(|o| o.contains("is up to date")).count();
    assert_eq!((applied, current), (1, 1), "one applies, the other waits and finds nothing: {outs:?}");
    let out = run().wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("is up to date"), "{}", String::from_utf8_lossy(&out.stdout));

    // The region's ingestion keys live in the keyspace: made and revoked
    // from any machine with the config (no data directory of a node).
    let keys = tempfile::tempdir().unwrap();
    let api_key = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("api-key")
            .args(args)
            .arg("--data-dir")
            .arg(keys.path())
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, created, err) = api_key(&["create", "--tenant", "acme"]);
    assert!(ok, "{err}");
    let id = created.lines().next().and_then(|l| l.strip_prefix("id ")).expect("an id line").to_owned();
    assert!(!keys.path().join("api-keys").exists(), "no key file: the key is in the store");
    let (ok, _, err) = api_key(&["revoke", "--tenant", "acme2", "--id", &id]);
    assert!(!ok && err.contains("no key"), "another tenant cannot revoke it: {err}");
    let (ok, out, err) = api_key(&["revoke", "--tenant", "acme", "--id", &id]);
    assert!(ok && out.contains("revoked"), "{err}");
    let (ok, _, err) = api_key(&["revoke", "--tenant", "acme", "--id", &id]);
    assert!(!ok && err.contains("no key"), "revoked once: {err}");
}

/// What a tenant holds on a node, as its API and its users see it: graph
/// log, events log, rollups, and bob's inbox head.
async fn holdings(node: &Node, tenant: &str, key: &str) -> (usize, usize, usize, u64, u16) {
    let tok = format!("Bearer {}", node.service_token(tenant));
    let auth = [("authorization", tok.as_str())];
    let (_, _, graph) = http("GET", &node.api("/v1/graph/events"), &auth, None).await;
    let (_, _, events) = http("GET", &node.api("/v1/events/log"), &auth, None).await;
    let (_, _, rollups) = http("GET", &node.api("/v1/analytics"), &auth, None).await;
    let (key_status, _, _) = http("GET", &node.api("/v1/analytics"), &[("x-api-key", key)], None).await;
    let (_, welcome) = node.login(tenant, "bob").await;
    let len = |v: &serde_json::Value, f: &str| v[f].as_array().map_or(0, Vec::len);
    (len(&graph, "events"), len(&events, "events"), len(&rollups, "rollups"), welcome.inbox_head, key_status)
}

#[tokio::test]
async fn deleting_a_tenant_removes_all_of_it_and_nothing_of_another() {
    let mut node = start();
    let config = node.dir.join("test.toml");
    let mut keys = Vec::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for tenant in ["acme", "acme2"] {
        let tok = format!("Bearer {}", node.service_token(tenant));
        let body = serde_json::json!({"contacts": [{"user": "ann", "circle": "work"}]});
        let (s, _, _) = http("PUT", &node.api("/v1/contacts/bob"), &[("authorization", &tok)], Some(&body)).await;
        assert_eq!(s, 200);
        let key = node.api_key(tenant);
        let events = serde_json::json!({"events": [{"type": "click", "idempotency_key": "k1", "ts": now}]});
        let (s, _, _) = http("POST", &node.api("/v1/events"), &[("x-api-key", &key)], Some(&events)).await;
        assert_eq!(s, 202);
        let (mut alice, _) = node.login(tenant, "alice").await;
        alice.send("c-1", "bob", "hello").await.unwrap();
        accepted(&mut alice, "c-1").await;
        keys.push(key);
    }
    let full = holdings(&node, "acme", &keys[0]).await;
    assert_eq!(full, (1, 1, 1, 1, 200), "acme holds one of each");
    assert_eq!(holdings(&node, "acme2", &keys[1]).await, full);

    let dir = node.dir.clone();
    let delete = |yes: bool| {
        let mut c = Command::new(bin());
        c.args(["tenant", "delete", "--tenant", "acme", "--data-dir"]).arg(&dir).arg("--config").arg(&config);
        if yes {
            c.arg("--yes");
        }
        c.output().unwrap()
    };
    let out = delete(false);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let out = delete(true);
    assert!(!out.status.success(), "a running node's store is not deleted from under it");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", String::from_utf8_lossy(&out.stderr));

    assert!(node.sigterm().success());
    let out = delete(true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 API key files"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let text = std::fs::read_to_string(&config).unwrap();
    let node = start_in(&dir, &text);
    assert_eq!(holdings(&node, "acme", &keys[0]).await, (0, 0, 0, 0, 401), "nothing of acme is left");
    assert_eq!(holdings(&node, "acme2", &keys[1]).await, full, "acme2, whose name begins with acme's, keeps all");
}

#[tokio::test]
async fn iris_drain_closes_sessions_spread_out_and_returns_once_the_node_stopped() {
    let node = start_with(
        "[listen]\nws = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\nquic = \"off\"\nhttp = \"off\"\n\
         drain_ms = 200\ndrain_spread_ms = 4000\n",
    );
    let pid_file = node.dir.join(iris_node::drain::PID_FILE);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), node.child.id().to_string());
    const SESSIONS: usize = 12;
    let (tx, mut closes) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..SESSIONS {
        let (mut c, _) = node.login("acme", &format!("u{i}")).await;
        let tx = tx.clone();
        tokio::spawn(async move {
            let reason = loop {
                match c.recv().await {
                    Ok(_) => continue,
                    Err(iris_client::ClientError::Closed(reason)) => break reason.unwrap_or_default(),
                    Err(e) => break format!("not a close: {e}"),
                }
            };
            let _ = tx.send((std::time::Instant::now(), reason));
        });
    }
    drop(tx);
    let dir = node.dir.clone();
    let drain = tokio::task::spawn_blocking(move || {
        Command::new(bin()).args(["drain", "--timeout", "60s", "--data-dir"]).arg(&dir).output().unwrap()
    });
    let mut at = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while at.len() < SESSIONS {
        let (when, reason) = tokio::time::timeout_at(deadline, closes.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {SESSIONS} sessions closed", at.len()))
            .expect("a session task ended without a close");
        assert_eq!(reason, "server shutting down");
        at.push(when);
    }
    // Spread over the 4 s: the last is due only once it has passed, the
    // first at once (a storm would close all twelve within milliseconds).
    let span = *at.iter().max().unwrap() - *at.iter().min().unwrap();
    assert!(span >= std::time::Duration::from_secs(2), "12 sessions closed within {span:?}");
    let out = drain.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("stopped after"), "{stdout}");
    assert!(!pid_file.exists(), "the stopped node removed its pid file");
    let again = Command::new(bin()).args(["drain", "--data-dir"]).arg(&node.dir).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no node runs on"));
}
