//! `iris`: runs a node, issues dev tokens, checks configs.
//!
//! Only the command line lives here: parsing it, dispatching subcommands,
//! setting up logging, and printing what the library returns. Every
//! decision about how a node runs is in the `iris_node` library.

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use iris_auth::Signer;
use iris_config::Config;
use iris_edge::tls::ensure_dev_cert;
use iris_node::homes::{self, HomeChange};
use iris_node::store::{self, Migrated};
use iris_node::{Node, Settings, Signals};
use std::path::{Path, PathBuf};

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
enum TenantAction {
    /// Delete everything of a tenant: messages, contacts, logs, rollups,
    /// dedup records, session records, API keys (the node stopped when its
    /// store is embedded). In a region the tenant is barred first, and stays
    /// barred (`iris tenant allow` lifts it).
    Delete {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Confirms: nothing deleted can be brought back.
        #[arg(long)]
        yes: bool,
        /// In a region: how long to wait for every shard to confirm the bar.
        #[arg(long, default_value_t = 120)]
        wait_secs: u64,
        /// In a region none of whose nodes runs: delete without waiting for
        /// the shards (each reads the bar when it starts).
        #[arg(long)]
        region_stopped: bool,
    },
    /// Lift a deleted tenant's bar: its users may write again.
    Allow {
        /// The tenant.
        #[arg(long)]
        tenant: String,
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

/// Which log topic.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogTopic {
    /// `iris.<region>.graph`: contact-graph changes.
    Graph,
    /// `iris.<region>.events`: ingested events.
    Events,
}

#[derive(Subcommand)]
enum LogsAction {
    /// Print a log topic's records, one JSON object per line
    /// (`{"seq":…,"event":{…}}`), committed records only, until stopped.
    Tail {
        /// The topic.
        #[arg(long, value_enum)]
        topic: LogTopic,
        /// Start at the oldest record kept instead of the newest.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<u64>,
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
    /// Manage ingestion API keys (stored hashed: in the region's Redis when
    /// --config names one, else in the data dir).
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
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Read the region's log topics (needs --config naming a region).
    Logs {
        #[command(subcommand)]
        action: LogsAction,
    },
    /// Drain the node running on this data dir (or config) and wait until it
    /// has stopped: readiness fails first, sessions close spread out, shards
    /// finish their writes and leave the group (docs/operations.md#stopping).
    Drain {
        /// How long to wait for the node to stop: 90s, 5m (default 5m).
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
    /// Create or upgrade the storage schema named by --config (the scylla
    /// backend: keyspace, tables, versioned steps). Idempotent; safe to run
    /// twice or from two nodes at once.
    Migrate,
}

/// A duration option (`flag`, for the messages): 90s, 30m, 24h, 7d.
fn parse_secs(flag: &str, s: &str) -> anyhow::Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad {flag} {s:?}: expected e.g. 90s, 30m, 24h, 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => bail!("bad {flag} {s:?}: unit must be s, m, h or d"),
    };
    if secs == 0 {
        bail!("{flag} must be positive");
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

/// The config's settings, converted once.
fn settings(cfg: &Config) -> anyhow::Result<Settings> {
    Ok(Settings::from_config(cfg)?)
}

/// `iris migrate`: creates or upgrades the store's schema.
fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let s = settings(cfg)?;
    let owner = format!("{}-{}", s.node_id, std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match runtime.block_on(store::migrate(&s.store, &owner))? {
        Migrated::NothingToDo(backend) => {
            println!("storage backend {:?} keeps no schema: nothing to migrate", backend.name())
        }
        Migrated::UpToDate { keyspace } => println!("keyspace {keyspace} is up to date"),
        Migrated::Applied { keyspace, steps } => println!("keyspace {keyspace}: applied schema steps {steps:?}"),
    }
    Ok(())
}

/// `iris home get|set`.
fn home(cfg: &Config, action: &HomeAction) -> anyhow::Result<()> {
    let s = settings(cfg)?;
    let (tenant, user, change) = match action {
        HomeAction::Get { tenant, user } => (tenant, user, None),
        HomeAction::Set { tenant, user, region, clear } => {
            let change = match region {
                Some(r) if !*clear => HomeChange::Set(r.clone()),
                _ => HomeChange::Clear,
            };
            (tenant, user, Some(change))
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let home = rt.block_on(homes::home(&s, tenant, user, change))?;
    println!("{tenant}/{user} home {} ({})", home.region, if home.explicit { "explicit" } else { "hashed" });
    Ok(())
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
            let ttl = parse_secs("--ttl", ttl)?;
            let signer = Signer::hs256(&settings(&cfg)?.auth.secret.load()?);
            let token =
                if *service { signer.service_token(tenant, user, ttl)? } else { signer.token(tenant, user, ttl)? };
            println!("{token}");
            Ok(())
        }
        Some(Command::ApiKey { action }) => {
            let s = settings(&load_config(&cli)?)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            match action {
                ApiKeyAction::Create { tenant } => {
                    if !iris_auth::valid_name(tenant) {
                        bail!("--tenant must be 1-128 bytes without control characters");
                    }
                    let (key, id) = rt.block_on(iris_node::apikeys::create(&s, tenant))?;
                    println!("id {id}");
                    println!("{key}");
                }
                ApiKeyAction::Revoke { tenant, id } => {
                    if !rt.block_on(iris_node::apikeys::revoke(&s, tenant, id))? {
                        bail!("no key {id} for tenant {tenant}");
                    }
                    println!("revoked {id}");
                }
            }
            Ok(())
        }
        Some(Command::Tenant { action: TenantAction::Delete { tenant, yes, wait_secs, region_stopped } }) => {
            if !iris_auth::valid_name(tenant) {
                bail!("--tenant must be 1-128 bytes without control characters");
            }
            if !*yes {
                bail!("deleting tenant {tenant:?} cannot be undone: add --yes to go ahead");
            }
            let s = settings(&load_config(&cli)?)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let shards = if *region_stopped {
                iris_node::tenants::Shards::Stopped
            } else {
                iris_node::tenants::Shards::Confirm(std::time::Duration::from_secs(*wait_secs))
            };
            let deleted = rt.block_on(iris_node::tenants::delete(&s, tenant, shards))?;
            println!("deleted tenant {tenant}: {} records, {} API key files", deleted.records, deleted.key_files);
            if deleted.barred {
                println!("tenant {tenant} stays barred: `iris tenant allow --tenant {tenant}` lets it write again");
            }
            Ok(())
        }
        Some(Command::Tenant { action: TenantAction::Allow { tenant } }) => {
            if !iris_auth::valid_name(tenant) {
                bail!("--tenant must be 1-128 bytes without control characters");
            }
            let s = settings(&load_config(&cli)?)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            if rt.block_on(iris_node::tenants::allow(&s, tenant))? {
                println!("tenant {tenant} may write again");
            } else {
                println!("tenant {tenant} was not barred");
            }
            Ok(())
        }
        Some(Command::Home { action }) => {
            if cli.config.is_none() {
                bail!("iris home needs --config FILE (a federated region's config)");
            }
            home(&load_config(&cli)?, action)
        }
        Some(Command::Logs { action: LogsAction::Tail { topic, from_beginning, limit } }) => {
            let cfg = load_config(&cli)?;
            let Some(cluster) = &cfg.cluster else {
                bail!("iris logs needs --config FILE naming a region ([cluster] with its Kafka)");
            };
            let topics = iris_kafka::logs::LogTopics::for_region(&cfg.region);
            let topic = match topic {
                LogTopic::Graph => topics.graph,
                LogTopic::Events => topics.events,
            };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            let mut left = limit.unwrap_or(u64::MAX);
            if left == 0 {
                return Ok(());
            }
            rt.block_on(iris_kafka::logs::tail(&cluster.kafka, &topic, *from_beginning, |value| {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                // A closed pipe (`| head`) ends the tail.
                if writeln!(out, "{value}").and_then(|()| out.flush()).is_err() {
                    return false;
                }
                left -= 1;
                left > 0
            }))
            .with_context(|| format!("reading {topic}"))?;
            Ok(())
        }
        Some(Command::Drain { timeout }) => {
            let cfg = load_config(&cli)?;
            let timeout = std::time::Duration::from_secs(parse_secs("--timeout", timeout)?);
            iris_node::drain::drain(&cfg.data_dir(), timeout, |line| println!("{line}"))
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

/// Runs a node on the system clock until a signal stops it.
fn run_node(cfg: Config) -> anyhow::Result<()> {
    let settings = settings(&cfg)?;
    let secret = settings.auth.secret.load()?;
    // The system clock, unless a fault test moved it (IRIS_CLOCK_OFFSET_MS).
    let (clock, offset_ms) = iris_clock::from_env().map_err(anyhow::Error::msg)?;
    if offset_ms != 0 {
        tracing::warn!(
            offset_ms,
            "{} is set: this node's wall clock is off by {offset_ms} ms (a knob for fault tests)",
            iris_clock::OFFSET_ENV
        );
    }
    iris_node::system().block_on(async move {
        let node = Node::from_settings(settings, secret, clock).await?;
        // Registered before `iris ready`, so that a signal sent on seeing it
        // is a request to stop, not the end of the process.
        let signals = Signals::os()?;
        // Removed when the node stops: how `iris drain` finds it.
        let _pid = iris_node::drain::PidFile::write(node.data_dir())?;
        println!(
            "iris ready: {}; get a token with: iris token --user alice --tenant acme --data-dir {}",
            node.addresses().urls().join(", "),
            shell_path(node.data_dir())
        );
        node.run(signals).await
    })
}

fn shell_path(p: &Path) -> String {
    let s = p.display().to_string();
    if s.contains(' ') { format!("{s:?}") } else { s }
}
