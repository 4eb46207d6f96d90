//! The node as a library: built from a config in this process, served,
//! and stopped through a `Trigger` instead of a signal.

mod common;

use common::{accepted, message};
use iris_client::{Client, Encoding};
use iris_config::Config;
use iris_node::{Node, Signals};

#[test]
fn a_node_built_in_process_serves_clients_and_stops_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    // No metrics listener: its recorder is global to the process.
    let cfg = Config::from_toml(&format!(
        "data_dir = {dir:?}\n[listen]\nws = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nquic = \"off\"\nmetrics = \"off\"\n"
    ))
    .unwrap();
    let secret = b"a library test's secret, 32 bytes or more".to_vec();
    let signer = iris_auth::Signer::hs256(&secret);
    iris_node::system().block_on(async move {
        let node = Node::build(cfg, secret).await.unwrap();
        let addrs = node.addresses().clone();
        assert!(addrs.ws.is_some() && addrs.http.is_some() && addrs.quic.is_none() && addrs.metrics.is_none());
        assert!(addrs.demo, "a single node without configured keys is in development mode");
        let urls = addrs.urls();
        assert!(urls[0].starts_with("ws://127.0.0.1:") && urls.last().unwrap().ends_with("/demo"), "{urls:?}");
        assert_eq!(node.data_dir(), tmp.path());
        assert!(tmp.path().join("layout.toml").exists() && tmp.path().join("store").exists());

        let (trigger, signals) = Signals::manual();
        let running = tokio::spawn(node.run(signals));
        let ws = format!("ws://{}/v1/ws", addrs.ws.unwrap());
        let token = |user: &str| signer.token("acme", user, 600).unwrap();
        let (mut a, _) = Client::hello(&ws, &token("alice"), None, Encoding::Json).await.unwrap();
        let (mut b, welcome) = Client::hello(&ws, &token("bob"), None, Encoding::Json).await.unwrap();
        assert_eq!(welcome.user, "bob");
        a.send("m1", "bob", "hi from a library").await.unwrap();
        accepted(&mut a, "m1").await;
        message(&mut b).await;

        trigger.reload();
        trigger.stop();
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(20), running).await;
        stopped.expect("the node stops when asked").unwrap().unwrap();
    });
}
