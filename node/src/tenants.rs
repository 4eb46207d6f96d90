//! `iris tenant delete` and `iris tenant allow`: removes a tenant's data
//! from the node's (or the region's) store, and its API keys wherever they
//! are kept.
//!
//! The embedded store is locked by its running node, so there the node is
//! stopped first (the command says so if it is not). A store that a
//! region's nodes share (Redis, ScyllaDB) is changed under running shards
//! (docs/adr/0030-a-tenant-deleted-under-running-shards.md): the tenant is
//! barred first, every shard of the region confirms that it has forgotten
//! the tenant's users, refuses its inputs and has no write of it left in
//! flight, and only then is the data removed. The bar stays, so nothing of
//! the tenant is written again, until `iris tenant allow` lifts it.

use crate::apikeys::{KeyHome, home};
use crate::settings::Settings;
use crate::store;
use iris_auth::apikeys::revoke_all_api_keys;
use iris_storage::Store;
use std::time::Duration;

/// What was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Keys or rows of the store.
    pub records: u64,
    /// API key files (the store's own API keys count among the records).
    pub key_files: usize,
    /// Whether the tenant is barred (a store shared by a region's nodes).
    pub barred: bool,
}

/// How the deletion waits for a region's shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    /// Until every shard of the region confirmed the bar, at most this long.
    Confirm(Duration),
    /// Not at all: no shard of the region runs (the operator says so); a
    /// shard that starts later reads the bar before any input.
    Stopped,
}

pub use iris_storage::bars::MAX_BARS;
use iris_storage::bars::{bar_stands, may_bar, unconfirmed};

/// After the deletion, how long the command waits before it deletes once
/// more: a write that failed on its client (a Redis command timed out, a
/// ScyllaDB batch the batchlog replays) may still land on the server
/// after its shard counted it done and confirmed. Twice Redis's command
/// timeout.
pub const SECOND_PASS: Duration = Duration::from_secs(10);

/// How often the confirmations are read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Deletes everything of `tenant` that `settings` store and keep.
pub async fn delete(settings: &Settings, tenant: &str, shards: Shards) -> anyhow::Result<Deleted> {
    let store = store::open(&settings.store, &iris_clock::system()).await?;
    let region = (settings.shards.region.as_str(), settings.shards.shards);
    let result = delete_from(&*store, region, tenant, shards, SECOND_PASS).await;
    store.close().await;
    let (records, barred) = result?;
    let key_files = match home(settings) {
        KeyHome::Files(dir) => revoke_all_api_keys(&dir, tenant)?,
        KeyHome::Shared => 0,
    };
    Ok(Deleted { records, key_files, barred })
}

/// Deletes `tenant` from `store`; a store that keeps bars bars it first and
/// waits for the shards of `region` (its name and shard count).
/// `second_pass`: how long to wait before deleting once more
/// ([`SECOND_PASS`]; not when the region is stopped).
async fn delete_from(
    store: &dyn Store,
    (region, want): (&str, u32),
    tenant: &str,
    shards: Shards,
    second_pass: Duration,
) -> anyhow::Result<(u64, bool)> {
    if !store.keeps_bars() {
        return Ok((store.delete_tenant(tenant).await?, false));
    }
    may_bar(&store.barred_tenants().await?, tenant).map_err(anyhow::Error::msg)?;
    let id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
    let id = store.bar_tenant(tenant, id).await?;
    if let Shards::Confirm(wait) = shards {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let confirmed = store.bar_confirmations(region, tenant, id).await?;
            let missing = unconfirmed(want, &confirmed);
            if missing.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= until {
                anyhow::bail!(
                    "tenant {tenant:?} is barred, but {} of region {region}'s {want} shards have not confirmed it \
                     within {:?} (shards {}): nothing was deleted. Every shard needs a running core node; run the \
                     command again, or with --region-stopped if no node of the region runs",
                    missing.len(),
                    wait,
                    list(&missing),
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
    // An `iris tenant allow` while the command waited lets the shards that
    // had confirmed serve the tenant again: then nothing is deleted.
    if !bar_stands(&store.barred_tenants().await?, tenant, id) {
        anyhow::bail!(
            "tenant {tenant:?}'s bar was lifted or replaced while the shards confirmed it: nothing was deleted"
        );
    }
    let mut gone = store.delete_tenant(tenant).await?;
    if let Shards::Confirm(_) = shards {
        tokio::time::sleep(second_pass).await;
        gone += store.delete_tenant(tenant).await?;
    }
    Ok((gone, true))
}

/// The first few of `shards`, for a message.
fn list(shards: &[u32]) -> String {
    let mut s: Vec<String> = shards.iter().take(8).map(u32::to_string).collect();
    if shards.len() > 8 {
        s.push("…".into());
    }
    s.join(", ")
}

/// Lifts `tenant`'s bar: its users may write again. Returns whether it was
/// barred.
pub async fn allow(settings: &Settings, tenant: &str) -> anyhow::Result<bool> {
    let store = store::open(&settings.store, &iris_clock::system()).await?;
    let result = if store.keeps_bars() {
        store.lift_bar(tenant).await.map_err(anyhow::Error::from)
    } else {
        Err(anyhow::anyhow!("this store keeps no tenant bars (a single node's embedded store bars nothing)"))
    };
    store.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use iris_storage::memory::MemoryStore;
    use iris_storage::{Bar, LogKind, WriteBatch, WriteOp};

    async fn store_with(tenants: &[&str]) -> MemoryStore {
        let store = MemoryStore::new(60_000);
        for t in tenants {
            let mut b = WriteBatch::default();
            b.push(WriteOp::Log { kind: LogKind::Graph, tenant: (*t).into(), record: (&b"{}"[..]).into() });
            store.commit(b).await.unwrap();
        }
        store
    }

    async fn logged(store: &MemoryStore, tenant: &str) -> usize {
        store.read_log(LogKind::Graph, tenant, 0, 10).await.unwrap().len()
    }

    #[tokio::test]
    async fn a_region_s_tenant_is_deleted_only_once_every_shard_confirmed_its_bar() {
        let store = store_with(&["gone", "kept"]).await;
        // Barred earlier (an earlier run of the command): the bar holds.
        store.bar_tenant("gone", 5).await.unwrap();
        store.confirm_bar("eu", &Bar { tenant: "gone".into(), id: 5 }, 0).await.unwrap();
        // Shard 1 of 2 never confirms: nothing is deleted, the bar stays.
        let e = delete_from(&store, ("eu", 2), "gone", Shards::Confirm(Duration::from_millis(300)), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("1 of region eu's 2 shards") && e.to_string().contains("shards 1)"), "{e}");
        assert_eq!(logged(&store, "gone").await, 1, "nothing deleted");
        let bars = store.barred_tenants().await.unwrap();
        assert_eq!(bars, vec![Bar { tenant: "gone".into(), id: 5 }]);
        // Confirmations of another region, or of an older bar, do not count.
        store.confirm_bar("us", &bars[0], 1).await.unwrap();
        store.confirm_bar("eu", &Bar { tenant: "gone".into(), id: bars[0].id - 1 }, 1).await.unwrap();
        assert!(
            delete_from(&store, ("eu", 2), "gone", Shards::Confirm(Duration::from_millis(300)), Duration::ZERO)
                .await
                .is_err()
        );
        store.confirm_bar("eu", &bars[0], 1).await.unwrap();
        let (gone, barred) =
            delete_from(&store, ("eu", 2), "gone", Shards::Confirm(Duration::from_secs(5)), Duration::ZERO)
                .await
                .unwrap();
        assert!(gone > 0 && barred);
        assert_eq!((logged(&store, "gone").await, logged(&store, "kept").await), (0, 1));
        assert_eq!(store.barred_tenants().await.unwrap(), bars, "the bar stays, with its id");
    }

    #[tokio::test]
    async fn a_bar_lifted_while_the_shards_confirm_deletes_nothing() {
        let store = store_with(&["gone"]).await;
        store.bar_tenant("gone", 5).await.unwrap();
        store.confirm_bar("eu", &Bar { tenant: "gone".into(), id: 5 }, 0).await.unwrap();
        // While the command waits for shard 1 (polled once: it is then
        // waiting), an operator allows the tenant and deletes it again (a
        // new bar); shard 1 then confirms the first bar late.
        let shards = Shards::Confirm(Duration::from_secs(10));
        let mut deleting = Box::pin(delete_from(&store, ("eu", 2), "gone", shards, Duration::ZERO));
        assert!(futures::poll!(&mut deleting).is_pending(), "it waits for shard 1");
        assert!(store.lift_bar("gone").await.unwrap());
        store.bar_tenant("gone", 9).await.unwrap();
        store.confirm_bar("eu", &Bar { tenant: "gone".into(), id: 5 }, 1).await.unwrap();
        let e = deleting.await.unwrap_err();
        assert!(e.to_string().contains("lifted or replaced"), "{e}");
        assert_eq!(logged(&store, "gone").await, 1, "nothing deleted");
    }

    #[tokio::test]
    async fn a_stopped_region_is_deleted_at_once_and_bars_are_bounded() {
        let store = store_with(&["gone"]).await;
        let (_, barred) = delete_from(&store, ("eu", 64), "gone", Shards::Stopped, Duration::ZERO).await.unwrap();
        assert!(barred);
        assert_eq!(logged(&store, "gone").await, 0);
        for i in 1..MAX_BARS {
            store.bar_tenant(&format!("t{i}"), 1).await.unwrap();
        }
        let e = delete_from(&store, ("eu", 64), "one-more", Shards::Stopped, Duration::ZERO).await.unwrap_err();
        assert!(e.to_string().contains("iris tenant allow"), "{e}");
        // A tenant barred already may be deleted again.
        delete_from(&store, ("eu", 64), "t1", Shards::Stopped, Duration::ZERO).await.unwrap();
    }
}
