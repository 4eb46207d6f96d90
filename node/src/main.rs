//! `iris`: runs a node, issues dev tokens, checks configs.

mod cluster;
mod metrics_http;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use iris_auth::apikeys::{ApiKeys, api_key_dir, create_api_key, revoke_api_key};
use iris_auth::{KeyStore, Signer, VerifierConfig, load_or_create_dev_key, load_secret};
use iris_clock::Seed;
use iris_config::{Backend, Config};
use iris_core::{ShardsConfig, start_shards};
use iris_edge::tls::{CertStore, QuicSettings, ensure_dev_cert, https_config, quic_server_config, wss_acceptor};
use iris_edge::{EdgeConfig, Listeners, SessionConfig, start_edge};
use iris_envelope::EdgeId;
use iris_http::demo::DemoConfig;
use iris_http::{HttpConfig, HttpFront, HttpListeners, IngestLimits};
use iris_router::{InProcessBus, Ring, Router};
use iris_storage::Store;
use iris_storage::embedded::{EmbeddedConfig, EmbeddedStore};
use iris_storage::redis::{RedisConfig, RedisStore};
use iris_storage::scylladb::{ScyllaOptions, ScyllaStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Iris: a federated messaging and presence node.
#[derive(Parser)]
#[command(name = "iris", version, about)]
struct Cli {
    /// Data directory (embedded storage, dev signing key). Default ./iris-data.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// TOML config file (see cluster-config/single.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum ApiKeyAction {
    /// Create a key for a tenant; prints the key (shown once) and its id.
    Create {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a tenant's key by its id (or the key itself).
    Revoke {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The key's id, as `create` printed it.
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum HomeAction {
    /// Print the user's home region and whether it was set explicitly.
    Get {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The user.
        #[arg(long)]
        user: String,
    },
    /// Set the user's home region (or --clear it back to the hash).
    Set {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The user.
        #[arg(long)]
        user: String,
        /// The region (one of federation.regions).
        #[arg(long, required_unless_present = "clear")]
        region: Option<String>,
        /// Remove the explicit assignment.
        #[arg(long, conflicts_with = "region")]
        clear: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Print a token that a node with the same data dir (or config) accepts.
    Token {
        /// The user (`sub`); with --service, the service's name (default `service`).
        #[arg(long, required_unless_present = "service")]
        user: Option<String>,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Lifetime: 90s, 30m, 24h, 7d (default 24h).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// A service token (scope `service`) for the HTTP API instead of a
        /// user token.
        #[arg(long)]
        service: bool,
    },
    /// Manage ingestion API keys (stored hashed in the data dir).
    ApiKey {
        #[command(subcommand)]
        action: ApiKeyAction,
    },
    /// Validate a config file without starting anything.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Write a self-signed certificate for localhost to the data dir (a
    /// node creates it on first start when no certificate is configured).
    DevCert,
    /// Show or set a user's home region (needs --config naming a federated
    /// region; the change reaches every region through the global layer).
    Home {
        #[command(subcommand)]
        action: HomeAction,
    },
    /// Create or upgrade the storage schema named by --config (the scylla
    /// backend: keyspace, tables, versioned steps). Idempotent; safe to run
    /// twice or from two nodes at once.
    Migrate,
}

/// `iris home get|set`: reads this region's copy of the assignments and,
/// for `set`, records the change here and queues it for every other region.
async fn home(cfg: &Config, action: &HomeAction) -> anyhow::Result<()> {
    let (Some(cluster), Some(fed)) = (&cfg.cluster, &cfg.federation) else {
        bail!("the config names no [federation]: a single region has no home regions");
    };
    let (tenant, user) = match action {
        HomeAction::Get { tenant, user } | HomeAction::Set { tenant, user, .. } => (tenant, user),
    };
    if !iris_auth::valid_name(user) || !iris_auth::valid_name(tenant) {
        bail!("--user and --tenant must be 1-128 bytes without control characters");
    }
    let topics = iris_kafka::Topics::for_region(&cfg.region);
    let wanted = [(topics.homes.as_str(), 1), (topics.outbound.as_str(), fed.outbound_partitions as usize)];
    iris_kafka::ensure_topics_compacting(&cluster.kafka, &wanted, &[topics.homes.as_str()])
        .await
        .context("checking the region's topics")?;
    let homes = Arc::new(iris_router::HomeDirectory::new(&cfg.region, &fed.regions));
    let group = format!("iris.{}.homes.cli", cfg.region);
    iris_kafka::follow_homes(&cluster.kafka, &topics.homes, &group, homes.clone(), cluster.fetch_wait_ms)
        .await
        .context("reading the home assignments")?;
    let key = iris_envelope::UserKey::new(tenant.as_str(), user.as_str());
    if let HomeAction::Set { region, clear, .. } = action {
        let region = if *clear { None } else { region.clone() };
        if let Some(r) = &region {
            if !homes.knows(r) {
                bail!("unknown region {r:?}; federation.regions is {:?}", fed.regions);
            }
        }
        let link = Arc::new(iris_kafka::OutboundLink::new(&cluster.kafka, &topics)?);
        // A command, not a node: the assignment is stamped by the system clock.
        let federation = iris_router::Federation::new(homes.clone(), link, 1, iris_clock::system());
        federation.set_home(key.clone(), region.map(Arc::from)).await.context("recording the assignment")?;
    }
    let (region, explicit) = homes.home_of(&key);
    println!("{tenant}/{user} home {region} ({})", if explicit { "explicit" } else { "hashed" });
    Ok(())
}

fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad --ttl {s:?}: expected e.g. 90s, 30m, 24h, 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => bail!("bad --ttl {s:?}: unit must be s, m, h or d"),
    };
    if secs == 0 {
        bail!("--ttl must be positive");
    }
    Ok(secs)
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = match &cli.config {
        Some(path) => Config::load(path).with_context(|| format!("config {}", path.display()))?,
        None => Config::default(),
    };
    if let Some(dir) = &cli.data_dir {
        cfg.data_dir = Some(dir.clone());
    }
    Ok(cfg)
}

/// The ScyllaDB settings with the password read from its variable.
fn scylla_options(cfg: &Config) -> anyhow::Result<ScyllaOptions> {
    let settings = cfg.storage.scylla.clone().context("the scylla backend needs [storage.scylla]")?;
    let password = match &settings.password_env {
        Some(var) => Some(std::env::var(var).with_context(|| {
            format!("storage.scylla.password_env names {var}, which is not set in the environment")
        })?),
        None => None,
    };
    Ok(ScyllaOptions {
        settings,
        password,
        retention_secs: cfg.storage.dedup_retention_hours as i64 * 3_600,
        session_ttl_secs: cfg.storage.session_ttl_hours as i64 * 3_600,
    })
}

fn migrate(cfg: &Config) -> anyhow::Result<()> {
    if cfg.storage.backend != Backend::Scylla {
        println!("storage backend {:?} keeps no schema: nothing to migrate", cfg.storage.backend.name());
        return Ok(());
    }
    if rustls::crypto::aws_lc_rs::default_provider().install_default().is_err() {
        tracing::debug!("a crypto provider was already installed");
    }
    let options = scylla_options(cfg)?;
    let owner = format!("{}-{}", cfg.node_id, std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let applied = runtime
        .block_on(ScyllaStore::migrate(&options, &owner))
        .with_context(|| format!("migrating keyspace {}", options.settings.keyspace))?;
    if applied.is_empty() {
        println!("keyspace {} is up to date", options.settings.keyspace);
    } else {
        println!("keyspace {}: applied schema steps {applied:?}", options.settings.keyspace);
    }
    Ok(())
}

fn secret_for(cfg: &Config) -> anyhow::Result<Vec<u8>> {
    Ok(match &cfg.auth.hs256_secret_file {
        Some(path) => load_secret(path)?,
        None => load_or_create_dev_key(&cfg.data_dir())?,
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::CheckConfig { file }) => match Config::load(file) {
            Ok(_) => {
                println!("ok: {}", file.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("invalid config {}: {e}", file.display());
                std::process::exit(1);
            }
        },
        Some(Command::Migrate) => {
            if cli.config.is_none() {
                bail!("iris migrate needs --config FILE (the file naming the storage backend)");
            }
            init_tracing();
            migrate(&load_config(&cli)?)
        }
        Some(Command::Token { user, tenant, ttl, service }) => {
            let cfg = load_config(&cli)?;
            let user = user.as_deref().unwrap_or("service");
            if !iris_auth::valid_name(user) || !iris_auth::valid_name(tenant) {
                bail!("--user and --tenant must be 1-128 bytes without control characters");
            }
            let ttl = parse_ttl(ttl)?;
            let signer = Signer::hs256(&secret_for(&cfg)?);
            let token =
                if *service { signer.service_token(tenant, user, ttl)? } else { signer.token(tenant, user, ttl)? };
            println!("{token}");
            Ok(())
        }
        Some(Command::ApiKey { action }) => {
            let cfg = load_config(&cli)?;
            let dir = api_key_dir(&cfg.data_dir());
            match action {
                ApiKeyAction::Create { tenant } => {
                    if !iris_auth::valid_name(tenant) {
                        bail!("--tenant must be 1-128 bytes without control characters");
                    }
                    let (key, id) = create_api_key(&dir, tenant)?;
                    println!("id {id}");
                    println!("{key}");
                }
                ApiKeyAction::Revoke { tenant, id } => {
                    if !revoke_api_key(&dir, tenant, id)? {
                        bail!("no key {id} for tenant {tenant}");
                    }
                    println!("revoked {id}");
                }
            }
            Ok(())
        }
        Some(Command::Home { action }) => {
            if cli.config.is_none() {
                bail!("iris home needs --config FILE (a federated region's config)");
            }
            let cfg = load_config(&cli)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(home(&cfg, action))
        }
        Some(Command::DevCert) => {
            let cfg = load_config(&cli)?;
            let (cert, key) = ensure_dev_cert(&cfg.data_dir())?;
            println!("certificate {}", cert.display());
            println!("key {}", key.display());
            Ok(())
        }
        None => {
            let cfg = load_config(&cli)?;
            init_tracing();
            run_node(cfg)
        }
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    // The binary reads the environment once, here.
    let filter = std::env::var("IRIS_LOG").unwrap_or_else(|_| "info".into());
    let json = match std::env::var("IRIS_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") | Err(_) => false,
        Ok(other) => {
            eprintln!("IRIS_LOG_FORMAT={other:?} is not a log format (json or text); using text");
            false
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!("{filter},fjall=warn,lsm_tree=warn")))
        .with_writer(std::io::stderr);
    if json {
        // One JSON object per line, for log shippers: time, level, target,
        // the message and its fields, and the spans it happened in.
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        // Colour only for a person at a terminal, never in files or pipes.
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// The label of the shards' seed under the node's (`Seed::derive`).
const SHARD_SEED: &str = "core.shards";

fn run_node(cfg: Config) -> anyhow::Result<()> {
    // One crypto provider for the whole process: aws-lc-rs.
    if rustls::crypto::aws_lc_rs::default_provider().install_default().is_err() {
        tracing::debug!("a crypto provider was already installed");
    }
    let secret = secret_for(&cfg)?;
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    actix_rt::System::with_tokio_rt(move || {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("tokio runtime")
    })
    .block_on(node(cfg, secret))
}

async fn node(mut cfg: Config, secret: Vec<u8>) -> anyhow::Result<()> {
    if !cfg.roles.contains(&iris_config::Role::Edge) {
        // Not an edge: no client or API listeners.
        let l = &mut cfg.listen;
        (l.ws, l.wss, l.quic, l.http, l.https) = (None, None, None, None, None);
    }
    let data_dir = cfg.data_dir();
    check_layout(&data_dir, cfg.core.shards)?;
    // The one clock every component reads the time from, and the one seed
    // every random choice derives from (ADR 0019). A drawn seed has 63 bits
    // so that it can be written back into a config (TOML integers are i64).
    let clock = iris_clock::system();
    let root = Seed::new(cfg.seed.unwrap_or_else(|| rand::random::<u64>() >> 1));
    if cfg.seed.is_some() {
        tracing::warn!(seed = %root, "root seed fixed by the config: for reproducing a run, not for production");
    }
    tracing::debug!(seed = %root, "root seed");
    // Nodes started from one config file with one seed still differ.
    let seed = root.child(&cfg.node_id);
    let health = Arc::new(metrics_http::Health::default());
    let metrics_addr = match cfg.listen.metrics {
        Some(addr) => {
            Some(metrics_http::start(addr, health.clone()).await.with_context(|| format!("metrics listener {addr}"))?)
        }
        None => None,
    };
    let store: Arc<dyn Store> = match cfg.storage.backend {
        Backend::Redis => {
            let url = cfg.storage.redis_url.clone().unwrap_or_default();
            let config = RedisConfig {
                url: url.clone(),
                retention_secs: cfg.storage.dedup_retention_hours as i64 * 3_600,
                session_ttl_secs: cfg.storage.session_ttl_hours as i64 * 3_600,
            };
            // The URL may carry a password: name only the host part.
            let host = url.rsplit('@').next().unwrap_or_default().to_owned();
            Arc::new(RedisStore::connect(config).await.with_context(|| format!("connecting to Redis at {host}"))?)
        }
        Backend::Scylla => {
            Arc::new(ScyllaStore::connect(scylla_options(&cfg)?).await.context("opening the ScyllaDB store")?)
        }
        Backend::Embedded => Arc::new(
            EmbeddedStore::open(EmbeddedConfig {
                path: data_dir.join("store"),
                max_batch_ops: cfg.storage.max_batch_ops,
                queue_batches: cfg.storage.queue_batches,
                dedup_retention_ms: cfg.storage.dedup_retention_hours as i64 * 3_600_000,
                clock: clock.clone(),
            })
            .with_context(|| format!("opening storage in {}", data_dir.display()))?,
        ),
    };
    // In a federation an edge's id names its region too, so that a shard
    // anywhere can tell where a session lives.
    let (edge_id, http_edge) = match &cfg.federation {
        Some(_) => (
            EdgeId::qualified(&cfg.node_id, &cfg.region),
            EdgeId::qualified(&format!("{}-http", cfg.node_id), &cfg.region),
        ),
        None => (EdgeId(cfg.node_id.as_str().into()), EdgeId(format!("{}-http", cfg.node_id).into())),
    };
    let shards_cfg = ShardsConfig {
        shards: cfg.core.shards,
        threads: cfg.core.shard_threads,
        max_inflight_writes: cfg.core.max_inflight_writes,
        max_cached_users: cfg.core.max_cached_users,
        max_contacts: cfg.limits.max_contacts,
        max_subscribers: cfg.limits.max_subscribers_per_user,
        max_sessions: cfg.limits.max_sessions_per_user,
        page_max_bytes: cfg.limits.max_page_bytes,
        edge_lease_ms: cfg.core.edge_lease_ms,
        region: cfg.region.clone(),
    };
    let ring = Arc::new(Ring::new(cfg.core.shards));
    let (router, shards, mut edge_rxs) = match &cfg.cluster {
        None => {
            let (bus, shard_rxs, edge_rxs) =
                InProcessBus::new(cfg.core.shards, &[edge_id.clone(), http_edge.clone()], cfg.core.bus_queue);
            let router = Router::new(ring, Arc::new(bus));
            let shards = start_shards(
                &shards_cfg,
                shard_rxs,
                store.clone(),
                router.clone(),
                clock.clone(),
                seed.derive(SHARD_SEED),
            );
            (router, Some(Arc::new(shards)), edge_rxs)
        }
        Some(cluster) => {
            let edges = [edge_id.clone(), http_edge.clone()];
            cluster::start(&cfg, cluster, &shards_cfg, ring, store.clone(), &edges, &clock, seed.derive(SHARD_SEED))
                .await?
        }
    };
    // Development mode: a single node with no production key configured,
    // so tokens are checked against the dev key in the data dir. Only then
    // is the chat demo (which mints demo tokens) served; never in a region,
    // whatever its keys.
    let dev_key = (cfg.cluster.is_none() && cfg.auth.jwks_file.is_none() && cfg.auth.hs256_secret_file.is_none())
        .then(|| secret.clone());
    // With a JWKS file, the dev key stays out unless a secret file is
    // named explicitly: whoever can read the data dir must not mint tokens.
    let hs256 = if cfg.auth.jwks_file.is_some() && cfg.auth.hs256_secret_file.is_none() { None } else { Some(secret) };
    let keys = Arc::new(KeyStore::new(
        hs256,
        cfg.auth.jwks_file.clone(),
        VerifierConfig {
            issuer: cfg.auth.issuer.clone(),
            audience: cfg.auth.audience.clone(),
            leeway_secs: cfg.auth.leeway_secs,
        },
        clock.clone(),
    )?);
    let (cert_file, key_file) = match (&cfg.tls.cert_file, &cfg.tls.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => ensure_dev_cert(&data_dir)?,
    };
    let certs = Arc::new(CertStore::load(&cert_file, &key_file)?);
    let l = &cfg.limits;
    let ws = match cfg.listen.ws {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("WebSocket listener {addr}"))?)
        }
        None => None,
    };
    let wss = match cfg.listen.wss {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("wss listener {addr}"))?;
            Some((listener, wss_acceptor(certs.clone())?))
        }
        None => None,
    };
    let quic = match cfg.listen.quic {
        Some(addr) => {
            let settings = QuicSettings {
                idle_timeout: Duration::from_millis(cfg.quic.idle_timeout_ms),
                stream_window: cfg.quic.stream_window_bytes,
                connection_window: cfg.quic.connection_window_bytes,
            };
            let server = quic_server_config(certs.clone(), &settings)?;
            let (endpoint, buffers) =
                iris_edge::quic::endpoint(server, addr).with_context(|| format!("QUIC listener {addr}"))?;
            if !buffers.as_wanted() {
                tracing::warn!(
                    recv = ?buffers.recv,
                    send = ?buffers.send,
                    wanted = iris_protocol::quic::SOCKET_BUFFER_BYTES,
                    "the QUIC socket's buffers are smaller than wanted (raise net.core.rmem_max and \
                     net.core.wmem_max): handshake bursts may drop datagrams"
                );
            }
            Some(endpoint)
        }
        None => None,
    };
    let edge = start_edge(
        EdgeConfig {
            edge: edge_id.clone(),
            session: SessionConfig {
                node: cfg.node_id.clone(),
                region: cfg.region.clone(),
                max_body_bytes: l.max_body_bytes,
                frames_per_second: l.frames_per_second,
                frame_burst: l.frame_burst,
                heartbeat_ms: l.heartbeat_ms,
                hello_timeout_ms: l.hello_timeout_ms,
                max_subscriptions: l.max_subscriptions_per_session,
                max_list_items: l.max_list_items,
            },
            queue_frames: l.session_queue_frames,
            max_frame_bytes: l.max_frame_bytes,
            failed_auth_per_minute: cfg.auth.failed_auth_per_minute,
            tenant_sends: (l.tenant_sends_per_second, l.tenant_send_burst),
            lease_heartbeat: Duration::from_millis(cfg.core.edge_lease_ms / u64::from(cfg.core.edge_lease_renewals)),
            clock: clock.clone(),
            seed: seed.derive("edge.sessions"),
        },
        Listeners { ws, wss, quic },
        keys.clone(),
        router.clone(),
        edge_rxs.remove(&edge_id).expect("bus has this edge"),
    )?;
    let h = &cfg.http;
    let front = HttpFront::new(
        HttpConfig {
            max_body_bytes: h.max_body_bytes,
            ingest: IngestLimits {
                max_batch: h.max_batch_events,
                max_event_bytes: h.max_event_bytes,
                max_depth: h.max_payload_depth,
                max_age_ms: h.max_event_age_ms as i64,
                max_skew_ms: h.max_event_skew_ms as i64,
            },
            max_contacts: cfg.limits.max_contacts,
            tenant_events_per_second: h.tenant_events_per_second,
            tenant_event_burst: h.tenant_event_burst,
            max_pending: h.max_pending_requests,
            request_timeout: Duration::from_millis(h.request_timeout_ms),
        },
        http_edge.clone(),
        keys.clone(),
        ApiKeys::new(api_key_dir(&data_dir)),
        router,
        store.clone(),
        clock.clone(),
    );
    let demo_on = dev_key.is_some();
    let front = Arc::new(match dev_key {
        Some(key) => front.with_demo(DemoConfig::with_dev_key(&key, edge.ws_addr.map(|a| a.port()), clock.clone())),
        None => front,
    });
    let http_listener =
        |addr: std::net::SocketAddr| std::net::TcpListener::bind(addr).with_context(|| format!("HTTP listener {addr}"));
    let http_listeners = HttpListeners {
        http: cfg.listen.http.map(http_listener).transpose()?,
        https: match cfg.listen.https {
            Some(addr) => Some((http_listener(addr)?, https_config(certs.clone())?)),
            None => None,
        },
    };
    let http_on = cfg.listen.http.is_some();
    let (http, http_addrs) =
        iris_http::start(front, edge_rxs.remove(&http_edge).expect("bus has this edge"), http_listeners)?;
    let mut listening = Vec::new();
    if let Some(a) = edge.ws_addr {
        listening.push(format!("ws://{a}/v1/ws"));
    }
    if let Some(a) = edge.wss_addr {
        listening.push(format!("wss://{a}/v1/ws"));
    }
    if let Some(a) = edge.quic_addr {
        listening.push(format!("quic://{a}"));
    }
    for (i, a) in http_addrs.iter().enumerate() {
        let scheme = if i == 0 && http_on { "api http" } else { "api https" };
        listening.push(format!("{scheme}://{a}/v1"));
    }
    if let Some(a) = metrics_addr {
        listening.push(format!("metrics http://{a}/metrics"));
    }
    if let (true, Some(a)) = (demo_on && http_on, http_addrs.first()) {
        listening.push(format!("demo http://{a}/demo"));
    }
    println!(
        "iris ready: {}; get a token with: iris token --user alice --tenant acme --data-dir {}",
        listening.join(", "),
        shell_path(&data_dir)
    );
    tracing::info!(node = %cfg.node_id, data_dir = %data_dir.display(), cert = %cert_file.display(), "node started");
    health.ready();
    tokio::spawn(reload_on_sighup(certs.clone(), keys.clone()));

    let healthy = tokio::select! {
        r = wait_for_signal() => { r?; true }
        _ = store_failed(&*store) => false,
    };
    health.draining();
    if healthy && cfg.listen.drain_ms > 0 {
        // Not a wait for a condition: the time a load balancer needs to
        // see /readyz fail and send new sessions elsewhere.
        tracing::info!(drain_ms = cfg.listen.drain_ms, "draining: /readyz answers 503 before sessions close");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(cfg.listen.drain_ms)) => {}
            r = wait_for_signal() => r?,
        }
    }
    if healthy {
        tracing::info!("shutting down: closing sessions, flushing writes");
    } else {
        tracing::error!("storage failed; stopping so that a restart recovers from the journal");
    }
    if let Some(http) = http {
        http.stop(true).await;
    }
    edge.begin_shutdown();
    if !edge.drain(Duration::from_secs(5)).await {
        tracing::warn!(left = edge.live_sessions(), "sessions still open after 5 s");
    }
    if let Some(shards) = &shards {
        if !shards.drain(Duration::from_secs(5)).await {
            tracing::warn!(inflight = shards.inflight(), "writes still in flight after 5 s");
        }
    }
    store.close().await;
    if let Some(shards) = &shards {
        shards.stop();
    }
    tracing::info!("stopped");
    if !healthy {
        bail!("storage failed");
    }
    Ok(())
}

/// SIGHUP re-reads the certificate and the JWKS file; sessions stay up.
async fn reload_on_sighup(certs: Arc<CertStore>, keys: Arc<KeyStore>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reloads need a restart");
        return;
    };
    while hup.recv().await.is_some() {
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
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !store.healthy() {
            return;
        }
    }
}

/// The data layout a data directory was created with. Changing the shard
/// count (or the ring) would move users to shards that do not hold their
/// state, so a node refuses to start on a mismatch.
fn check_layout(data_dir: &Path, shards: u32) -> anyhow::Result<()> {
    let path = data_dir.join("layout.toml");
    let want = format!("shards = {shards}\nring_version = {}\n", iris_router::RING_VERSION);
    match std::fs::read_to_string(&path) {
        Ok(have) if have == want => Ok(()),
        Ok(have) => bail!(
            "{} was created with a different layout:\n{have}this config asks for:\n{want}core.shards cannot change for existing data",
            data_dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            std::fs::write(&path, want).with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn shell_path(p: &Path) -> String {
    let s = p.display().to_string();
    if s.contains(' ') { format!("{s:?}") } else { s }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
