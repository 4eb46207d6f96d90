//! The retention sweep of a node that runs shards: every
//! `retention.sweep_interval_secs` it trims the logs and rollups older than
//! `[retention]` keeps them (`iris_storage::retention`). In a region every
//! core node sweeps the shared store; trims are idempotent, so two sweeps
//! at once remove nothing twice and nothing within retention.

use iris_clock::SharedClock;
use iris_storage::Store;
use iris_storage::retention::{RetentionPolicy, sweep};
use std::sync::Arc;
use std::time::Duration;

/// Sweeps every `every`, the first time at once, for as long as the node runs.
pub async fn sweep_forever(store: Arc<dyn Store>, policy: RetentionPolicy, every: Duration, clock: SharedClock) {
    if !policy.trims() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (swept, failed) = sweep(&*store, &policy, clock.now_ms()).await;
        for (what, n) in [("graph_log", swept.graph_log), ("events_log", swept.events_log), ("rollups", swept.rollups)]
        {
            metrics::counter!("iris_retention_trimmed_total", "what" => what).increment(n);
        }
        match failed {
            Some(e) => {
                metrics::counter!("iris_retention_sweep_failures_total").increment(1);
                tracing::warn!(error = %e, ?swept, "retention sweep failed in part; the next one tries again");
            }
            None => tracing::debug!(?swept, "retention sweep"),
        }
    }
}
