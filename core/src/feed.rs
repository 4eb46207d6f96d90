//! The shell around [`iris_router::feed::Feed`]: reads a bus's consuming
//! side ([`ShardSource`]), starts and stops shard actors on this node's
//! [`ShardHost`] as partitions move, hands each envelope to its shard's
//! bounded queue, and commits offsets as the shards report work durable.
//! Every decision (what to hand, when to pause, what to commit) is the
//! feed's; this file only carries them out.

use crate::{ShardHost, SharedInputClock};
use iris_envelope::{ShardEnvelope, ShardId};
use iris_router::feed::{Feed, FeedInput, FeedOutput};
use iris_router::{ShardSource, SourceEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often durable offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// How often a full shard is offered its held envelopes again.
const RETRY_HELD: Duration = Duration::from_millis(2);
/// How long to wait after the source failed to read before reading again.
const READ_RETRY: Duration = Duration::from_millis(100);

/// A shard started here: its queue, how many of the envelopes handed to it
/// its actor reports durable, and its input clock.
struct Running {
    input: mpsc::Sender<ShardEnvelope>,
    progress: Arc<AtomicU64>,
    clock: Arc<SharedInputClock>,
}

enum Woke {
    Source(SourceEvent),
    Commit,
    Retry,
}

/// Runs the shards this node owns from `source` until the source closes.
/// Each shard's queue holds `queue` envelopes.
pub async fn run_feed(host: Arc<ShardHost>, mut source: impl ShardSource, queue: usize) {
    let mut feed = Feed::default();
    let mut running: HashMap<ShardId, Running> = HashMap::new();
    let mut commit = tokio::time::interval(COMMIT_EVERY);
    // A persistent interval: a sleep made anew on every turn would never
    // fire while records keep the source ready.
    let mut retry = tokio::time::interval(RETRY_HELD);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let holding = feed.holding();
        // Timers first, so that a busy source cannot starve the commits.
        let woke = tokio::select! {
            biased;
            _ = commit.tick() => Woke::Commit,
            _ = retry.tick(), if holding => Woke::Retry,
            e = source.next() => Woke::Source(e),
        };
        match woke {
            Woke::Commit => {
                let durable = running.iter().map(|(s, r)| (*s, r.progress.load(Ordering::Acquire))).collect();
                feed.handle_input(FeedInput::Progress(durable));
            }
            Woke::Retry => feed.handle_input(FeedInput::Retry),
            Woke::Source(SourceEvent::Assigned(s)) => feed.handle_input(FeedInput::Assigned(s)),
            Woke::Source(SourceEvent::Revoked(s)) => feed.handle_input(FeedInput::Revoked(s)),
            Woke::Source(SourceEvent::Record { shard, offset, env }) => {
                feed.handle_input(FeedInput::Record { shard, offset, env })
            }
            Woke::Source(SourceEvent::Unreadable { shard, offset, error }) => {
                metrics::counter!("iris_bus_unreadable_total").increment(1);
                tracing::warn!(shard = shard.0, offset, error, "unreadable envelope skipped");
                feed.handle_input(FeedInput::Unreadable { shard, offset });
            }
            Woke::Source(SourceEvent::Failed(error)) => {
                tracing::warn!(error, "shard topic read failed");
                tokio::time::sleep(READ_RETRY).await;
            }
            Woke::Source(SourceEvent::Closed) => return,
        }
        while let Some(out) = feed.poll_output() {
            carry_out(out, &mut feed, &mut running, &host, &mut source, queue).await;
        }
    }
}

/// Marks the running shards among `shards` as having envelopes wait before
/// their queues (or no longer).
fn held_upstream(running: &HashMap<ShardId, Running>, shards: &[ShardId], held: bool) {
    for s in shards {
        if let Some(r) = running.get(s) {
            r.clock.set_held_upstream(held);
        }
    }
}

async fn carry_out(
    out: FeedOutput,
    feed: &mut Feed,
    running: &mut HashMap<ShardId, Running>,
    host: &ShardHost,
    source: &mut impl ShardSource,
    queue: usize,
) {
    match out {
        FeedOutput::Start(shard) => {
            let (input, rx) = mpsc::channel(queue);
            let progress = Arc::new(AtomicU64::new(0));
            let clock = host.start(shard, rx, Some(progress.clone()));
            match source.resume(shard) {
                Ok(started) => held_upstream(running, &started, false),
                Err(e) => tracing::warn!(shard = shard.0, error = %e, "resuming a newly assigned partition failed"),
            }
            running.insert(shard, Running { input, progress, clock });
            tracing::info!(shard = shard.0, "shard assigned here");
        }
        FeedOutput::Stop(shard) => {
            // Dropping the queue's sender lets the actor finish and stop.
            running.remove(&shard);
            host.forget(shard);
            tracing::info!(shard = shard.0, "shard revoked");
        }
        FeedOutput::Hand { shard, offset, env, wait } => {
            let answer = match running.get(&shard) {
                None => FeedInput::Gone { shard },
                Some(r) if wait => {
                    tracing::warn!(shard = shard.0, "too many envelopes held for a full shard; waiting for it");
                    match r.input.send(env).await {
                        Ok(()) => FeedInput::Handed { shard, offset },
                        Err(_) => FeedInput::Gone { shard },
                    }
                }
                Some(r) => match r.input.try_send(env) {
                    Ok(()) => FeedInput::Handed { shard, offset },
                    Err(mpsc::error::TrySendError::Full(env)) => FeedInput::Full { shard, offset, env },
                    Err(mpsc::error::TrySendError::Closed(_)) => FeedInput::Gone { shard },
                },
            };
            if matches!(answer, FeedInput::Gone { .. }) {
                tracing::warn!(shard = shard.0, "shard input closed; envelopes dropped");
            }
            feed.handle_input(answer);
        }
        FeedOutput::Pause(shard) => {
            // Envelopes wait before the queue from now on: an empty queue
            // must not be taken for caught up (edge leases). Nor may the
            // queues of the shards sharing its partition, whose records
            // wait on the bus meanwhile (ADR 0031).
            held_upstream(running, &[shard], true);
            match source.pause(shard) {
                Ok(stopped) => held_upstream(running, &stopped, true),
                Err(e) => tracing::warn!(shard = shard.0, error = %e, "pausing a full shard's partition failed"),
            }
        }
        FeedOutput::Resume(shard) => match source.resume(shard) {
            // Only the shards whose records come again: on a partition
            // another full shard still holds paused, none.
            Ok(started) => held_upstream(running, &started, false),
            Err(e) => {
                tracing::warn!(shard = shard.0, error = %e, "resuming a shard's partition failed");
                held_upstream(running, &[shard], false);
            }
        },
        FeedOutput::Commit(offsets) => match source.commit(&offsets) {
            Ok(()) => feed.handle_input(FeedInput::Committed(offsets)),
            // Offered again on the next tick.
            Err(e) => tracing::warn!(partitions = offsets.len(), error = %e, "offset commit failed; retried"),
        },
        FeedOutput::NotOwned { shard, offset } => {
            tracing::warn!(shard = shard.0, offset, "envelope for a shard not owned here; dropped")
        }
    }
}
