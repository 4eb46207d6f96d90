//! The chat demo at `/demo`: served, with its token endpoint, only when the
//! node runs with its development key; 404 with a production key.

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

#[tokio::test]
async fn the_demo_and_its_tokens_are_served_with_the_dev_key() {
    let node = start();
    let (status, headers, body) = http("GET", &node.api("/demo"), &[], None).await;
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/html")), "{headers:?}");
    assert!(body.as_str().unwrap().contains("<title>Iris demo</title>"));
    let (status, headers, body) = http("GET", &node.api("/demo/demo.js"), &[], None).await;
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/javascript")), "{headers:?}");
    assert!(body.as_str().unwrap().contains("/demo/token"));

    let (status, _, body) = http("POST", &node.api("/demo/token"), &[], Some(&json!({ "user": "alice" }))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], "demo");
    assert!(body["ws_port"].as_u64().is_some_and(|p| node.ws_url.contains(&format!(":{p}/"))), "{body}");
    // The token opens a session of that user in the demo tenant.
    let token = body["token"].as_str().unwrap();
    let (_client, welcome) =
        iris_client::Client::hello(&node.ws_url, token, None, iris_client::Encoding::Json).await.expect("login");
    assert_eq!(&*welcome.user, "alice");
    // It is a user token: the service API refuses it.
    let (status, _, _) =
        http("GET", &node.api("/v1/graph/events"), &[("authorization", &format!("Bearer {token}"))], None).await;
    assert_eq!(status, 403);

    for bad in [json!({ "user": "" }), json!({ "user": "a\u{7}" }), json!({ "name": "x" }), json!(["alice"])] {
        let (status, _, body) = http("POST", &node.api("/demo/token"), &[], Some(&bad)).await;
        assert_eq!(status, 400, "{bad} -> {body}");
    }
}

#[tokio::test]
async fn no_demo_and_no_demo_tokens_with_a_production_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Make a key file, then name it as the production secret.
    let out =
        Command::new(bin()).args(["token", "--user", "x", "--tenant", "x", "--data-dir"]).arg(dir).output().unwrap();
    assert!(out.status.success());
    let key = dir.join("auth/dev-hs256.key");
    let node = start_in(
        dir,
        &format!(
            "[listen]\nws = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nquic = \"off\"\nmetrics = \"off\"\n\
             [auth]\nhs256_secret_file = {:?}\n",
            key.display().to_string()
        ),
    );
    for (method, path) in [("GET", "/demo"), ("GET", "/demo/"), ("GET", "/demo/demo.js"), ("POST", "/demo/token")] {
        let (status, _, body) = http(method, &node.api(path), &[], Some(&json!({ "user": "alice" }))).await;
        assert_eq!(status, 404, "{method} {path} -> {body}");
    }
    // The node itself works: the API answers a service token.
    let tok = format!("Bearer {}", node.service_token("acme"));
    let (status, _, _) = http("GET", &node.api("/v1/graph/events"), &[("authorization", &tok)], None).await;
    assert_eq!(status, 200);
}
