//! The command line: token, check-config, migrate, and the metrics endpoint.

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
/// run finds nothing to do.
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
}
