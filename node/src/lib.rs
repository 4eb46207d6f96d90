//! An Iris node: edges, shards, router and the service API over one store,
//! started from one config.
//!
//! ## The node as a library
//!
//! [`Node::build`] takes a parsed [`iris_config::Config`] and the HS256
//! secret and starts everything: it turns the config once into
//! [`Settings`] (the checked types each crate takes), checks the data
//! layout, draws the root seed, opens the store, starts the shards (or
//! joins the Kafka cluster), binds every listener and starts the edge and
//! the HTTP API. It returns a [`Node`] that serves but does not report
//! ready yet, with the [`Addresses`] it is bound to. [`Node::run`] reports
//! ready (`/readyz`) and serves until [`Signals`] asks it to stop or the
//! store fails; it then drains (readiness first, then sessions, then
//! writes), closes the store and returns. The binary (`main.rs`) only
//! parses the command line, sets up logging and calls these.
//!
//! Where each decision lives:
//! - [`settings`]: units (hours, milliseconds), edge ids in a federation,
//!   the core consumer group, the lease renewal interval, the ingestion
//!   window and the shutdown timings ([`settings::SESSIONS_DRAIN`],
//!   [`settings::WRITES_DRAIN`]).
//! - [`store`]: which store the backend names, its settings, opening it and
//!   `iris migrate`.
//! - [`keys`]: where the HS256 secret comes from, whether it verifies
//!   tokens, and development mode (dev key and chat demo).
//! - [`listeners`]: no client listeners without the edge role, the dev
//!   certificate fallback, binding.
//! - [`layout`]: the shard count is fixed for the life of the data.
//! - [`cluster`]: a node in a regional cluster (topics, bus, edge queues,
//!   shards as the consumer group assigns them, federation).
//! - [`homes`]: `iris home get|set`.
//! - [`signals`]: what stops and reloads a running node.
//! - [`drain`]: `iris drain`, the pid file it finds a running node by.
//! - [`metrics_http`]: the operator's listener.

pub mod apikeys;
pub mod cluster;
pub mod drain;
pub mod homes;
pub mod keys;
pub mod layout;
pub mod listeners;
pub mod metrics_http;
pub mod retention;
pub mod settings;
pub mod signals;
pub mod store;
pub mod tenants;

pub use settings::Settings;
pub use signals::{Signals, Trigger};

use anyhow::{Context as _, bail};
use iris_auth::KeyStore;
use iris_auth::apikeys::{ApiKeys, api_key_dir};
use iris_clock::{Seed, SharedClock};
use iris_config::Config;
use iris_core::{ShardHost, start_shards};
use iris_edge::tls::CertStore;
use iris_edge::{EdgeHandle, start_edge};
use iris_http::HttpFront;
use iris_http::demo::DemoConfig;
use iris_router::{InProcessBus, Ring, Router};
use iris_storage::Store;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The label of the shards' seed under the node's (`Seed::derive`).
const SHARD_SEED: &str = "core.shards";
/// The label of the edge's seed (session ids) under the node's.
const EDGE_SEED: &str = "edge.sessions";
/// How often the node asks its store whether a write failed.
const STORE_CHECK: Duration = Duration::from_secs(1);

/// The runtime a node runs in: an actix `System` (shards and the HTTP API
/// are actix actors) on a multi-threaded tokio runtime with a worker per
/// core.
pub fn system() -> actix_rt::SystemRunner {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    actix_rt::System::with_tokio_rt(move || {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("tokio runtime")
    })
}

/// One crypto provider for the whole process: aws-lc-rs.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::aws_lc_rs::default_provider().install_default().is_err() {
        tracing::debug!("a crypto provider was already installed");
    }
}

/// Where a built node listens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// WebSocket (`/v1/ws`).
    pub ws: Option<SocketAddr>,
    /// WebSocket over TLS.
    pub wss: Option<SocketAddr>,
    /// QUIC.
    pub quic: Option<SocketAddr>,
    /// The service API.
    pub http: Option<SocketAddr>,
    /// The service API over TLS.
    pub https: Option<SocketAddr>,
    /// Metrics, liveness and readiness.
    pub metrics: Option<SocketAddr>,
    /// Whether the chat demo is served (on `http`).
    pub demo: bool,
}

impl Addresses {
    /// Each listener as a URL with what it serves, for the operator.
    pub fn urls(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(a) = self.ws {
            out.push(format!("ws://{a}/v1/ws"));
        }
        if let Some(a) = self.wss {
            out.push(format!("wss://{a}/v1/ws"));
        }
        if let Some(a) = self.quic {
            out.push(format!("quic://{a}"));
        }
        if let Some(a) = self.http {
            out.push(format!("api http://{a}/v1"));
        }
        if let Some(a) = self.https {
            out.push(format!("api https://{a}/v1"));
        }
        if let Some(a) = self.metrics {
            out.push(format!("metrics http://{a}/metrics"));
        }
        if let (true, Some(a)) = (self.demo, self.http) {
            out.push(format!("demo http://{a}/demo"));
        }
        out
    }
}

/// A started node: serving, not yet reported ready. [`Node::run`] it.
pub struct Node {
    node_id: String,
    data_dir: PathBuf,
    cert_file: PathBuf,
    shutdown: settings::ShutdownSettings,
    addresses: Addresses,
    health: Arc<metrics_http::Health>,
    store: Arc<dyn Store>,
    shards: Option<Arc<ShardHost>>,
    edge: EdgeHandle,
    http: Option<actix_web::dev::ServerHandle>,
    certs: Arc<CertStore>,
    keys: Arc<KeyStore>,
}

impl Node {
    /// Starts a node as `config` says, on the system clock. `secret` is the
    /// HS256 secret ([`keys::SecretSource::load`]); whether it verifies
    /// tokens is the config's decision. Must run inside [`system`].
    pub async fn build(config: Config, secret: Vec<u8>) -> anyhow::Result<Node> {
        let settings = Settings::from_config(&config)?;
        Self::from_settings(settings, secret, iris_clock::system()).await
    }

    /// Starts a node from settings already converted, reading the time from
    /// `clock`. Must run inside [`system`].
    pub async fn from_settings(s: Settings, secret: Vec<u8>, clock: SharedClock) -> anyhow::Result<Node> {
        install_crypto_provider();
        layout::check(&s.data_dir, s.shards.shards)?;
        // The one seed every random choice derives from (ADR 0019).
        let root = Seed::configured_or_drawn(s.seed, rand::random::<u64>());
        if s.seed.is_some() {
            tracing::warn!(seed = %root, "root seed fixed by the config: for reproducing a run, not for production");
        }
        tracing::debug!(seed = %root, "root seed");
        // Nodes started from one config file with one seed still differ.
        let seed = root.child(&s.node_id);
        if let Some(t) = &s.tracing {
            match iris_trace::install(t.clone()) {
                Ok(()) => tracing::info!(
                    endpoint = %t.endpoint.authority,
                    sample_ratio = t.sample_ratio,
                    "tracing sampled messages"
                ),
                // Several nodes in one process (tests) share the first one's.
                Err(e) => tracing::warn!(error = %e, "tracing: the process's tracer is kept"),
            }
        }
        let health = Arc::new(metrics_http::Health::default());
        let metrics = match s.listen.metrics {
            Some(addr) => Some(
                metrics_http::start(addr, health.clone()).await.with_context(|| format!("metrics listener {addr}"))?,
            ),
            None => None,
        };
        let store = store::open(&s.store, &clock).await?;
        if s.cluster.as_ref().is_none_or(|c| c.runs_shards) {
            let (policy, every) = s.retention.clone();
            tokio::spawn(retention::sweep_forever(store.clone(), policy, every, clock.clone()));
        }
        let ring = Arc::new(Ring::new(s.shards.shards));
        let edges = [s.edge_id.clone(), s.http_edge.clone()];
        let (router, shards, mut edge_rxs) = match &s.cluster {
            None => {
                let (bus, shard_rxs, edge_rxs) = InProcessBus::new(s.shards.shards, &edges, s.bus_queue);
                let router = Router::new(ring, Arc::new(bus));
                let host = start_shards(
                    &s.shards,
                    shard_rxs,
                    store.clone(),
                    router.clone(),
                    clock.clone(),
                    seed.derive(SHARD_SEED),
                );
                (router, Some(Arc::new(host)), edge_rxs)
            }
            Some(cluster) => {
                cluster::start(&s, cluster, ring, store.clone(), &edges, &clock, seed.derive(SHARD_SEED)).await?
            }
        };
        let dev_key = s.auth.dev_mode.then(|| secret.clone());
        let keys = Arc::new(s.auth.key_store(secret, clock.clone())?);
        let (cert_file, key_file) = s.tls.files()?;
        let certs = Arc::new(CertStore::load(&cert_file, &key_file)?);
        let listeners = listeners::bind_edge(&s.listen, &certs, &s.quic).await?;
        let edge = start_edge(
            s.edge_config(clock.clone(), seed.derive(EDGE_SEED)),
            listeners,
            keys.clone(),
            router.clone(),
            edge_rxs.remove(&s.edge_id).expect("bus has this edge"),
        )?;
        let front = HttpFront::new(
            s.http.clone(),
            s.http_edge.clone(),
            keys.clone(),
            ApiKeys::new(api_key_dir(&s.data_dir)),
            router,
            store.clone(),
            clock.clone(),
        );
        let front = Arc::new(match &dev_key {
            Some(key) => front.with_demo(DemoConfig::with_dev_key(key, edge.ws_addr.map(|a| a.port()), clock.clone())),
            None => front,
        });
        let http_listeners = listeners::bind_http(&s.listen, &certs)?;
        let (http, http_addrs) =
            iris_http::start(front, edge_rxs.remove(&s.http_edge).expect("bus has this edge"), http_listeners)?;
        // The API's addresses come back in order: http, then https.
        let mut api = http_addrs.into_iter();
        let http_addr = s.listen.http.and_then(|_| api.next());
        let https_addr = s.listen.https.and_then(|_| api.next());
        let addresses = Addresses {
            ws: edge.ws_addr,
            wss: edge.wss_addr,
            quic: edge.quic_addr,
            http: http_addr,
            https: https_addr,
            metrics,
            demo: dev_key.is_some(),
        };
        Ok(Node {
            node_id: s.node_id,
            data_dir: s.data_dir,
            cert_file,
            shutdown: s.shutdown,
            addresses,
            health,
            store,
            shards,
            edge,
            http,
            certs,
            keys,
        })
    }

    /// Where the node listens.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Reports ready and serves until `signals` asks it to stop (or the
    /// store fails), then shuts down in order: `/readyz` answers 503 for the
    /// drain time (a second stop request ends it early), sessions close
    /// (spread over `listen.drain_spread_ms`; again a second request ends
    /// it),
    /// writes in flight become durable, the store closes. An error if the
    /// store failed.
    pub async fn run(self, signals: Signals) -> anyhow::Result<()> {
        let Signals { mut stop, reload } = signals;
        tracing::info!(
            node = %self.node_id,
            data_dir = %self.data_dir.display(),
            cert = %self.cert_file.display(),
            "node started"
        );
        self.health.ready();
        tokio::spawn(reload_on_request(reload, self.certs.clone(), self.keys.clone()));

        let failed = tokio::select! {
            _ = signals::next(&mut stop) => false,
            _ = store_failed(&*self.store) => true,
        };
        let plan = self.shutdown.plan(failed);
        self.health.draining();
        let drain = plan.drain;
        if !drain.is_zero() {
            // Not a wait for a condition: the time a load balancer needs to
            // see /readyz fail and send new sessions elsewhere.
            tracing::info!(drain_ms = drain.as_millis() as u64, "draining: /readyz answers 503 before sessions close");
            tokio::select! {
                _ = tokio::time::sleep(drain) => {}
                _ = signals::next(&mut stop) => {}
            }
        }
        if plan.failed {
            tracing::error!("storage failed; stopping so that a restart recovers from the journal");
        } else {
            tracing::info!("shutting down: closing sessions, flushing writes");
        }
        if let Some(http) = &self.http {
            http.stop(true).await;
        }
        // A second stop request closes the rest now.
        let spread = plan.spread;
        tokio::select! {
            _ = self.edge.close_spread(spread) => {}
            _ = signals::next(&mut stop) => self.edge.close_spread(Duration::ZERO).await,
        }
        let (sessions, writes) = (self.shutdown.sessions, self.shutdown.writes);
        if !self.edge.drain(sessions).await {
            tracing::warn!(left = self.edge.live_sessions(), "sessions still open after {} s", sessions.as_secs());
        }
        if let Some(shards) = &self.shards
            && !shards.drain(writes).await
        {
            tracing::warn!(inflight = shards.inflight(), "writes still in flight after {} s", writes.as_secs());
        }
        self.store.close().await;
        if let Some(shards) = &self.shards {
            shards.stop();
        }
        tracing::info!("stopped");
        if plan.failed {
            bail!("storage failed");
        }
        Ok(())
    }
}

/// On each request, re-reads the certificate and the JWKS file; sessions
/// stay up.
async fn reload_on_request(mut requests: tokio::sync::mpsc::Receiver<()>, certs: Arc<CertStore>, keys: Arc<KeyStore>) {
    while requests.recv().await.is_some() {
        match certs.reload() {
            Ok(()) => tracing::info!("certificate reloaded"),
            Err(e) => tracing::error!(error = %e, "certificate reload failed; keeping the old one"),
        }
        match keys.reload() {
            Ok(n) => tracing::info!(keys = n, "token keys reloaded"),
            Err(e) => tracing::error!(error = %e, "key reload failed; keeping the old keys"),
        }
    }
}

/// Resolves once the store reports a failed write (checked every second).
async fn store_failed(store: &dyn Store) {
    let mut tick = tokio::time::interval(STORE_CHECK);
    loop {
        tick.tick().await;
        if !store.healthy() {
            return;
        }
    }
}
