//! Which store a node opens, and how: the config's [`Backend`] turned into
//! that store's settings ([`StoreSettings::from_config`], pure), then opened
//! ([`open`]) or migrated ([`migrate`]).

use crate::settings::hours_in;
use anyhow::Context as _;
use iris_clock::SharedClock;
use iris_config::{Backend, Config, ConfigError};
use iris_storage::Store;
use iris_storage::embedded::{EmbeddedConfig, EmbeddedStore};
use iris_storage::redis::{RedisConfig, RedisStore};
use iris_storage::scylladb::{ScyllaOptions, ScyllaStore};
use std::path::PathBuf;
use std::sync::Arc;

/// The store a node opens, with its settings in the store's units.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// fjall in the data directory.
    Embedded(EmbeddedSettings),
    /// A Redis server.
    Redis(RedisConfig),
    /// A ScyllaDB (or Cassandra) cluster.
    Scylla(Box<ScyllaSettings>),
}

/// The embedded store's settings; [`open`] adds the clock.
#[derive(Debug, Clone)]
pub struct EmbeddedSettings {
    /// Its directory: `data_dir/store`.
    pub path: PathBuf,
    /// Most writes applied under one fsync.
    pub max_batch_ops: usize,
    /// Most batches waiting for the committer.
    pub queue_batches: usize,
    /// How long dedup records are kept, ms.
    pub dedup_retention_ms: i64,
}

/// The ScyllaDB store's settings; [`open`] and [`migrate`] add the password
/// from the variable `settings.password_env` names.
#[derive(Debug, Clone)]
pub struct ScyllaSettings {
    /// The `[storage.scylla]` section.
    pub settings: iris_config::Scylla,
    /// How long dedup records and event keys live, seconds.
    pub retention_secs: i64,
    /// How long a session record lives, seconds.
    pub session_ttl_secs: i64,
}

impl StoreSettings {
    /// The backend `cfg` names, with its settings.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        let s = &cfg.storage;
        let missing = |field, problem: &str| ConfigError::Invalid { field, problem: problem.into() };
        Ok(match s.backend {
            Backend::Embedded => StoreSettings::Embedded(EmbeddedSettings {
                path: cfg.data_dir().join("store"),
                max_batch_ops: s.max_batch_ops,
                queue_batches: s.queue_batches,
                dedup_retention_ms: hours_in(s.dedup_retention_hours, 3_600_000),
            }),
            Backend::Redis => StoreSettings::Redis(RedisConfig {
                url: s.redis_url.clone().ok_or_else(|| missing("storage.redis_url", "the redis backend needs it"))?,
                retention_secs: hours_in(s.dedup_retention_hours, 3_600),
                session_ttl_secs: hours_in(s.session_ttl_hours, 3_600),
            }),
            Backend::Scylla => StoreSettings::Scylla(Box::new(ScyllaSettings {
                settings: s
                    .scylla
                    .clone()
                    .ok_or_else(|| missing("storage.scylla", "the scylla backend needs [storage.scylla]"))?,
                retention_secs: hours_in(s.dedup_retention_hours, 3_600),
                session_ttl_secs: hours_in(s.session_ttl_hours, 3_600),
            })),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            StoreSettings::Embedded(_) => Backend::Embedded,
            StoreSettings::Redis(_) => Backend::Redis,
            StoreSettings::Scylla(_) => Backend::Scylla,
        }
    }
}

/// Opens (connects to) the store. `clock` stamps the embedded store's
/// dedup records.
pub async fn open(settings: &StoreSettings, clock: &SharedClock) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match settings {
        StoreSettings::Embedded(e) => {
            let store = EmbeddedStore::open(EmbeddedConfig {
                path: e.path.clone(),
                max_batch_ops: e.max_batch_ops,
                queue_batches: e.queue_batches,
                dedup_retention_ms: e.dedup_retention_ms,
                clock: clock.clone(),
            });
            // Named as before: the data directory, not its store/ child.
            let dir = e.path.parent().unwrap_or(&e.path);
            Arc::new(store.with_context(|| format!("opening storage in {}", dir.display()))?)
        }
        StoreSettings::Redis(config) => {
            // The URL may carry a password: name only the host part.
            let host = config.url.rsplit('@').next().unwrap_or_default().to_owned();
            Arc::new(
                RedisStore::connect(config.clone()).await.with_context(|| format!("connecting to Redis at {host}"))?,
            )
        }
        StoreSettings::Scylla(s) => {
            Arc::new(ScyllaStore::connect(scylla_options(s)?).await.context("opening the ScyllaDB store")?)
        }
    })
}

/// What `iris migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migrated {
    /// The backend keeps no schema.
    NothingToDo(Backend),
    /// The keyspace already had every step.
    UpToDate {
        /// The keyspace.
        keyspace: String,
    },
    /// These steps were applied.
    Applied {
        /// The keyspace.
        keyspace: String,
        /// The schema versions applied, in order.
        steps: Vec<u32>,
    },
}

/// Creates or upgrades the store's schema (the ScyllaDB backend; the others
/// keep none). `owner` names this process in the migration lock.
pub async fn migrate(settings: &StoreSettings, owner: &str) -> anyhow::Result<Migrated> {
    let StoreSettings::Scylla(s) = settings else {
        return Ok(Migrated::NothingToDo(settings.backend()));
    };
    crate::install_crypto_provider();
    let options = scylla_options(s)?;
    let keyspace = options.settings.keyspace.clone();
    let steps =
        ScyllaStore::migrate(&options, owner).await.with_context(|| format!("migrating keyspace {keyspace}"))?;
    Ok(if steps.is_empty() { Migrated::UpToDate { keyspace } } else { Migrated::Applied { keyspace, steps } })
}

/// The ScyllaDB options with the password read from its variable.
fn scylla_options(s: &ScyllaSettings) -> anyhow::Result<ScyllaOptions> {
    let password = match &s.settings.password_env {
        Some(var) => Some(std::env::var(var).with_context(|| {
            format!("storage.scylla.password_env names {var}, which is not set in the environment")
        })?),
        None => None,
    };
    Ok(ScyllaOptions {
        settings: s.settings.clone(),
        password,
        retention_secs: s.retention_secs,
        session_ttl_secs: s.session_ttl_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_scylla_backend_has_a_schema_to_migrate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let cfg = Config::from_toml(&format!("data_dir = {:?}\n", dir.display().to_string())).unwrap();
        let settings = StoreSettings::from_config(&cfg).unwrap();
        assert_eq!(migrate(&settings, "test").await.unwrap(), Migrated::NothingToDo(Backend::Embedded));
        assert!(!dir.exists(), "nothing is created");
    }

    #[tokio::test]
    async fn a_password_variable_that_is_not_set_is_named_before_connecting() {
        let cfg = Config::from_toml(
            "roles = [\"core\", \"router\"]\n[cluster]\nkafka = \"k:9092\"\n[storage]\nbackend = \"scylla\"\n\
             [storage.scylla]\nnodes = [\"127.0.0.1:9\"]\nusername = \"iris\"\n\
             password_env = \"IRIS_NODE_TEST_SURELY_UNSET\"\n",
        )
        .unwrap();
        let settings = StoreSettings::from_config(&cfg).unwrap();
        let e = format!("{:#}", migrate(&settings, "test").await.unwrap_err());
        assert!(e.contains("IRIS_NODE_TEST_SURELY_UNSET"), "{e}");
        let e = format!("{:#}", open(&settings, &iris_clock::system()).await.err().unwrap());
        assert!(e.contains("IRIS_NODE_TEST_SURELY_UNSET"), "{e}");
    }
}
