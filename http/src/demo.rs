//! The chat demo at `/demo`: a page built from `clients/js` (the
//! `@iris-chat/client` package) and a token endpoint for it, served only
//! when the node runs with its development key.
//!
//! Safe by construction: [`DemoConfig`] can only be made from the dev key's
//! signer, the node makes one only when no production key is configured
//! (no `auth.jwks_file`, no `auth.hs256_secret_file`), and without it the
//! routes do not exist (404). The endpoint mints tokens only for the
//! tenant [`DEMO_TENANT`], for a short time.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use iris_auth::{Signer, valid_name};
use iris_clock::SharedClock;
use serde_json::json;

/// The page, built by `clients/js/scripts/build-demo.mjs` and committed,
/// so that `cargo build` needs no npm.
const INDEX_HTML: &str = include_str!("../demo/index.html");
/// The page's script: the demo bundled with the client package.
const DEMO_JS: &str = include_str!("../demo/demo.js");

/// The only tenant the demo mints tokens for.
pub const DEMO_TENANT: &str = "demo";
/// How long a demo token lives; the page's token provider asks again
/// before it expires.
pub const DEMO_TOKEN_TTL_SECS: u64 = 600;

/// What the demo needs: the dev key's signer and where the page connects.
pub struct DemoConfig {
    signer: Signer,
    ws_port: Option<u16>,
}

impl DemoConfig {
    /// A demo signing with the node's development key (`DATA_DIR/auth/dev-hs256.key`)
    /// by the node's clock, whose page connects to the WebSocket listener on `ws_port`.
    pub fn with_dev_key(dev_key: &[u8], ws_port: Option<u16>, clock: SharedClock) -> Self {
        Self { signer: Signer::hs256(dev_key).with_clock(clock), ws_port }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// The user to log in as.
    user: String,
}

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(INDEX_HTML)
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(DEMO_JS)
}

async fn token(demo: web::Data<DemoConfig>, body: crate::Body) -> HttpResponse {
    let bad = |m: &str| HttpResponse::build(StatusCode::BAD_REQUEST).json(json!({ "error": m }));
    // Only an object: serde would also read a struct from an array.
    let req = match serde_json::from_slice::<serde_json::Value>(&body.0) {
        Ok(v @ serde_json::Value::Object(_)) => serde_json::from_value::<TokenRequest>(v).ok(),
        _ => None,
    };
    let Some(req) = req else {
        return bad("expected {\"user\": \"name\"}");
    };
    if !valid_name(&req.user) {
        return bad("a user name is 1-128 bytes without control characters");
    }
    match demo.signer.token(DEMO_TENANT, &req.user, DEMO_TOKEN_TTL_SECS) {
        Ok(token) => HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({
            "token": token,
            "tenant": DEMO_TENANT,
            "ws_port": demo.ws_port,
            "expires_in": DEMO_TOKEN_TTL_SECS,
        })),
        Err(e) => HttpResponse::InternalServerError().json(json!({ "error": e.to_string() })),
    }
}

/// Adds the demo's routes to an app.
pub(crate) fn routes(cfg: &mut web::ServiceConfig, demo: web::Data<DemoConfig>) {
    cfg.app_data(demo)
        .route("/demo", web::get().to(index))
        .route("/demo/", web::get().to(index))
        .route("/demo/demo.js", web::get().to(script))
        .route("/demo/token", web::post().to(token));
}
