//! Retention of the logs and the hourly rollups: how long each is kept
//! (per tenant where a tenant says otherwise), and the sweep that trims
//! what is older, on any backend.
//!
//! A log is trimmed from its start only: the sweep reads it in seq order
//! and removes the records before the first one still within retention.
//! A record's age is its commit time (`ts` of a graph record, `received`
//! of an ingested event), so nothing within retention is ever removed; a
//! record committed out of time order (another node's clock behind) only
//! keeps the ones before it a little longer. Dedup records and event keys
//! expire by themselves (`storage.dedup_retention_hours`: TTLs on Redis
//! and ScyllaDB, the embedded store's own sweep).

use crate::{LogKind, Store, StoreError};
use std::collections::BTreeMap;

/// How long one tenant's records are kept, ms; `None` keeps them forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keep {
    /// The graph log.
    pub graph_log: Option<i64>,
    /// The events log.
    pub events_log: Option<i64>,
    /// Hourly rollups (by the hour's start).
    pub rollups: Option<i64>,
}

/// Retention for every tenant, with exceptions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Tenants without an exception.
    pub default: Keep,
    /// Tenants with their own.
    pub tenants: BTreeMap<String, Keep>,
}

impl RetentionPolicy {
    /// What `tenant` keeps.
    pub fn keep(&self, tenant: &str) -> Keep {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }

    /// Whether a sweep has anything to do.
    pub fn trims(&self) -> bool {
        std::iter::once(&self.default)
            .chain(self.tenants.values())
            .any(|k| k.graph_log.is_some() || k.events_log.is_some() || k.rollups.is_some())
    }
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Graph log records.
    pub graph_log: u64,
    /// Events log records.
    pub events_log: u64,
    /// Rollup counters.
    pub rollups: u64,
}

/// When a log record was committed, ms: `received` for an ingested event,
/// else `ts`. `None` for a record that does not say (kept).
pub fn committed_at(kind: LogKind, record: &[u8]) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(record).ok()?;
    let field = match kind {
        LogKind::Events => v.get("received").or_else(|| v.get("ts")),
        LogKind::Graph => v.get("ts"),
    };
    field?.as_i64()
}

/// Records read per page while looking for the first one to keep.
const PAGE: usize = 1_000;

/// Trims `tenant`'s `kind` log of the records committed before
/// `before_ms`, from its start up to the first record to keep. Returns how
/// many went.
pub async fn trim_log_before(
    store: &dyn Store,
    kind: LogKind,
    tenant: &str,
    before_ms: i64,
) -> Result<u64, StoreError> {
    let mut gone = 0;
    loop {
        let page = store.read_log(kind, tenant, 0, PAGE).await?;
        let old = page.iter().take_while(|e| committed_at(kind, &e.record).is_some_and(|t| t < before_ms)).count();
        if old == 0 {
            return Ok(gone);
        }
        store.trim_log(kind, tenant, page[old - 1].seq).await?;
        gone += old as u64;
        if old < page.len() {
            return Ok(gone);
        }
    }
}

/// Trims every tenant's logs and rollups as `policy` says, as of `now_ms`.
/// A tenant that fails is skipped (the next sweep tries again); the first
/// error is returned with what was removed.
pub async fn sweep(store: &dyn Store, policy: &RetentionPolicy, now_ms: i64) -> (Swept, Option<StoreError>) {
    let mut swept = Swept::default();
    let mut failed = None;
    if !policy.trims() {
        return (swept, None);
    }
    let tenants = match store.retained_tenants().await {
        Ok(t) => t,
        Err(e) => return (swept, Some(e)),
    };
    for tenant in tenants {
        let keep = policy.keep(&tenant);
        let cut = |ms: Option<i64>| ms.map(|ms| now_ms.saturating_sub(ms));
        let step = async {
            if let Some(before) = cut(keep.graph_log) {
                swept.graph_log += trim_log_before(store, LogKind::Graph, &tenant, before).await?;
            }
            if let Some(before) = cut(keep.events_log) {
                swept.events_log += trim_log_before(store, LogKind::Events, &tenant, before).await?;
            }
            if let Some(before) = cut(keep.rollups) {
                swept.rollups += store.trim_rollups(&tenant, before).await?;
            }
            Ok::<(), StoreError>(())
        };
        if let Err(e) = step.await {
            failed.get_or_insert(e);
        }
    }
    (swept, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::{RollupKey, WriteBatch, WriteOp};
    use bytes::Bytes;

    fn now<T>(f: impl std::future::Future<Output = T>) -> T {
        futures::executor::block_on(f)
    }

    fn graph(tenant: &str, ts: i64) -> WriteOp {
        WriteOp::Log {
            kind: LogKind::Graph,
            tenant: tenant.into(),
            record: Bytes::from(format!(r#"{{"v":1,"type":"identity.verified","ts":{ts}}}"#)),
        }
    }

    fn event(tenant: &str, ts: i64, received: i64) -> WriteOp {
        WriteOp::Log {
            kind: LogKind::Events,
            tenant: tenant.into(),
            record: Bytes::from(format!(r#"{{"v":1,"ts":{ts},"received":{received}}}"#)),
        }
    }

    fn rollup(tenant: &str, hour: i64) -> WriteOp {
        let key = RollupKey { tenant: tenant.into(), event_type: "t".into(), project: "p".into(), hour_ms: hour };
        WriteOp::RollupAdd { key, by: 1 }
    }

    /// A time past the first hours, so that the rollups' cut is above 0.
    const T: i64 = 3_600_100;

    #[test]
    fn a_sweep_removes_only_what_is_older_than_each_tenants_retention() {
        let store = MemoryStore::default();
        let mut b = WriteBatch::default();
        // Commit times T+0..=T+9; one record out of order (T+5 after T+7).
        for ts in [0, 1, 2, 3, 4, 6, 7, 5, 8, 9].map(|d| T + d) {
            b.push(graph("a", ts));
            b.push(graph("b", ts));
            // Events age by `received`, not by their own `ts`.
            b.push(event("a", 0, ts));
        }
        for hour in [0, 3_600_000, 7_200_000] {
            b.push(rollup("a", hour));
            b.push(rollup("b", hour));
        }
        now(store.commit(b)).unwrap();
        let policy = RetentionPolicy {
            default: Keep { graph_log: Some(4), events_log: None, rollups: Some(3_600_000) },
            tenants: [("b".to_owned(), Keep { graph_log: None, events_log: None, rollups: None })].into(),
        };
        let (swept, failed) = now(sweep(&store, &policy, T + 10));
        assert!(failed.is_none());
        // Cut at T+6: T+0..=T+4 go; T+6 stays, and so does everything after
        // it, the late T+5 included.
        assert_eq!(swept, Swept { graph_log: 5, events_log: 0, rollups: 1 }, "b keeps its rollups");
        let left = |kind, t| now(store.read_log(kind, t, 0, 100)).unwrap();
        let times: Vec<i64> =
            left(LogKind::Graph, "a").iter().map(|e| committed_at(LogKind::Graph, &e.record).unwrap()).collect();
        assert_eq!(times, [6, 7, 5, 8, 9].map(|d| T + d));
        assert!(times.iter().all(|t| *t >= T + 5), "nothing within retention went");
        assert_eq!(left(LogKind::Graph, "b").len(), 10, "b keeps its log forever");
        assert_eq!(left(LogKind::Events, "a").len(), 10, "events are kept forever by default here");
        let hours = |t| {
            now(store.rollups(t, None, 0, i64::MAX)).unwrap().into_iter().map(|(k, _)| k.hour_ms).collect::<Vec<_>>()
        };
        assert_eq!(hours("a"), [3_600_000, 7_200_000], "the hour that started before now − 1 h went");
        assert_eq!(hours("b").len(), 3);

        // Events by `received`; a second sweep finds nothing more.
        let policy = RetentionPolicy { default: Keep { events_log: Some(1), ..Keep::default() }, ..policy };
        let (swept, _) = now(sweep(&store, &policy, T + 10));
        assert_eq!(swept.events_log, 9, "received T+0..=T+8 are older than T+9");
        let (swept, _) = now(sweep(&store, &policy, T + 10));
        assert_eq!(swept, Swept::default());
    }

    #[test]
    fn nothing_to_keep_short_means_no_sweep() {
        assert!(!RetentionPolicy::default().trims());
        let p = RetentionPolicy {
            default: Keep::default(),
            tenants: [("x".to_owned(), Keep { rollups: Some(1), ..Keep::default() })].into(),
        };
        assert!(p.trims());
    }
}
