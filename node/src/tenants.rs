//! `iris tenant delete`: removes a tenant's data from the node's (or the
//! region's) store, and its API keys wherever they are kept.
//!
//! The embedded store is locked by its running node, so there the node is
//! stopped first (the command says so if it is not). In a region the
//! shared store is changed under running nodes: the tenant is cut off
//! first (its token keys and API keys gone, its sessions ended), or a shard
//! that still has one of its users in memory may write a record of it
//! again when a session closes; running the command once more after that
//! removes it (docs/operations.md).

use crate::apikeys::{KeyHome, home};
use crate::settings::Settings;
use crate::store;
use iris_auth::apikeys::revoke_all_api_keys;

/// What was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Keys or rows of the store.
    pub records: u64,
    /// API key files (the store's own API keys count among the records).
    pub key_files: usize,
}

/// Deletes everything of `tenant` that `settings` store and keep.
pub async fn delete(settings: &Settings, tenant: &str) -> anyhow::Result<Deleted> {
    let store = store::open(&settings.store, &iris_clock::system()).await?;
    let records = store.delete_tenant(tenant).await;
    store.close().await;
    let records = records?;
    let key_files = match home(settings) {
        KeyHome::Files(dir) => revoke_all_api_keys(&dir, tenant)?,
        KeyHome::Shared => 0,
    };
    Ok(Deleted { records, key_files })
}
