//! `iris api-key create|revoke`: where a node's ingestion API keys live.
//!
//! A store that keeps API keys (Redis, ScyllaDB) holds them for the whole
//! region: created or revoked from any machine with the region's config,
//! seen by every node within the lookup cache's time
//! (`iris_auth::apikeys::CACHE_MS`). With the embedded store (a single
//! node) they are files in the node's data directory, as the node reads
//! them.

use crate::settings::Settings;
use crate::store::{self, StoreSettings};
use anyhow::bail;
use iris_auth::apikeys::{api_key_dir, create_api_key, new_api_key, revoke_api_key, revoke_prefix};

/// Where the keys of `settings` live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyHome {
    /// The region's shared store.
    Shared,
    /// Files in the data directory.
    Files(std::path::PathBuf),
}

/// Where `settings` keeps keys: the shared stores keep them; the embedded
/// store does not (opening it here would take the running node's lock, so
/// its keys are files).
pub fn home(settings: &Settings) -> KeyHome {
    match settings.store {
        StoreSettings::Redis(_) | StoreSettings::Scylla(_) => KeyHome::Shared,
        StoreSettings::Embedded(_) => KeyHome::Files(api_key_dir(&settings.data_dir)),
    }
}

/// Creates a key for `tenant`; returns it (shown once) and its id.
pub async fn create(settings: &Settings, tenant: &str) -> anyhow::Result<(String, String)> {
    match home(settings) {
        KeyHome::Files(dir) => Ok(create_api_key(&dir, tenant)?),
        KeyHome::Shared => {
            let store = store::open(&settings.store, &iris_clock::system()).await?;
            let (key, hash) = new_api_key();
            store.put_api_key(&hash, tenant).await?;
            store.close().await;
            Ok((key, hash[..16].to_owned()))
        }
    }
}

/// Revokes `tenant`'s key named by its id (or the key itself); false when
/// the tenant has no such key.
pub async fn revoke(settings: &Settings, tenant: &str, id_or_key: &str) -> anyhow::Result<bool> {
    match home(settings) {
        KeyHome::Files(dir) => Ok(revoke_api_key(&dir, tenant, id_or_key)?),
        KeyHome::Shared => {
            let Some(prefix) = revoke_prefix(id_or_key) else {
                bail!("{id_or_key:?} is neither a key id (16+ hex characters) nor a key");
            };
            let store = store::open(&settings.store, &iris_clock::system()).await?;
            let revoked = store.revoke_api_key(tenant, &prefix).await?;
            store.close().await;
            Ok(revoked)
        }
    }
}
