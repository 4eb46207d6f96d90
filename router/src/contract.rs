//! The contract every bus must pass, on both its sides: publishing
//! ([`Bus`]) and consuming shard partitions ([`ShardSource`]) and edge
//! queues. The in-process bus runs it in this crate's tests; the Kafka bus
//! runs it against a real broker in `iris-kafka`'s. Like
//! `iris_storage::contract`, `Err` names the first check that failed.

use crate::{Bus, ShardSource, SourceEvent};
use async_trait::async_trait;
use iris_envelope::{EdgeEnvelope, EdgeId, EdgeInput, SessionId, ShardEnvelope, ShardId, ShardInput, UserKey};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A bus under test, fresh: nothing published yet, at least two shard
/// partitions, two edges.
#[async_trait]
pub trait BusFixture: Send {
    /// The publishing side.
    fn bus(&self) -> Arc<dyn Bus>;
    /// The consuming side of the shard partitions (one node owning them all).
    fn source(&mut self) -> &mut dyn ShardSource;
    /// The two edges.
    fn edges(&self) -> [EdgeId; 2];
    /// The next envelope for `edge`, or `None` after `within`. A bus may
    /// carry several envelopes for an edge as one batch
    /// ([`EdgeInput::Batch`]); the fixture hands out its parts one at a time.
    async fn next_edge(&mut self, edge: &EdgeId, within: Duration) -> Option<EdgeEnvelope>;
    /// Writes a record that does not decode to `shard`'s partition and
    /// returns true, or returns false where the bus cannot carry one.
    async fn poison(&mut self, shard: ShardId) -> bool;
    /// How long a bus may take to hand over what was published (a broker's
    /// group join takes seconds; an in-process queue none).
    fn patience(&self) -> Duration;
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// The next event of the source, or `None` after `within`.
async fn next_event(src: &mut dyn ShardSource, within: Duration) -> Option<SourceEvent> {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, src.next()).await {
            Err(_) => return None,
            // A broker may report a transient failure while it elects or
            // rebalances: keep reading until the deadline.
            Ok(SourceEvent::Failed(_)) => continue,
            Ok(e) => return Some(e),
        }
    }
}

/// Reads records until `want` of them arrived, skipping ownership events.
async fn records(f: &mut dyn BusFixture, want: usize) -> Result<Vec<(ShardId, i64, ShardEnvelope)>, String> {
    let within = f.patience();
    let mut got = Vec::new();
    while got.len() < want {
        match next_event(f.source(), within).await {
            Some(SourceEvent::Record { shard, offset, env }) => got.push((shard, offset, env)),
            Some(SourceEvent::Assigned(_)) => {}
            Some(e) => return Err(format!("expected records, got {e:?}")),
            None => return Err(format!("only {} of {want} records arrived", got.len())),
        }
    }
    Ok(got)
}

fn shard_env(tenant: &str, name: &str) -> ShardEnvelope {
    ShardEnvelope {
        owner: UserKey::new(tenant, name).into(),
        body: ShardInput::EdgeAlive { edge: EdgeId("contract".into()) },
        trace: None,
    }
}

/// Runs every check, in order (each builds on the state the last left).
pub async fn run_all(f: &mut dyn BusFixture, tenant: &str) -> Result<(), String> {
    owns_every_partition(f).await?;
    each_partition_in_publish_order(f, tenant).await?;
    a_paused_partition_waits_and_the_others_do_not(f, tenant).await?;
    edges_get_their_own_in_order(f).await?;
    a_poisoned_record_does_not_stop_its_partition(f, tenant).await?;
    Ok(())
}

/// Before anything is published, the one node of the group owns the two
/// partitions the checks use.
async fn owns_every_partition(f: &mut dyn BusFixture) -> Result<(), String> {
    let within = f.patience();
    let mut owned = std::collections::BTreeSet::new();
    while !(owned.contains(&ShardId(0)) && owned.contains(&ShardId(1))) {
        match next_event(f.source(), within).await {
            Some(SourceEvent::Assigned(s)) => owned.extend(s),
            Some(SourceEvent::Revoked(s)) => s.iter().for_each(|s| {
                owned.remove(s);
            }),
            Some(e) => return Err(format!("owns_every_partition: unexpected {e:?} before assignment")),
            None => return Err(format!("owns_every_partition: only {owned:?} assigned")),
        }
    }
    Ok(())
}

/// Waited-for and fire-and-forget publishes to two partitions, interleaved:
/// each partition hands them back in publish order, with increasing
/// offsets, and none lands in the other partition.
async fn each_partition_in_publish_order(f: &mut dyn BusFixture, tenant: &str) -> Result<(), String> {
    let bus = f.bus();
    const N: usize = 40;
    for i in 0..N {
        for s in [0u32, 1] {
            let env = shard_env(tenant, &format!("s{s}-{i}"));
            if i % 2 == 0 {
                bus.publish_shard(ShardId(s), env).await.map_err(|e| format!("publish_shard: {e}"))?;
            } else {
                bus.try_publish_shard(ShardId(s), env).map_err(|e| format!("try_publish_shard: {e}"))?;
            }
        }
    }
    let got = records(f, 2 * N).await.map_err(|e| format!("each_partition_in_publish_order: {e}"))?;
    let mut next: HashMap<ShardId, i64> = HashMap::new();
    for (shard, offset, _) in &got {
        next.insert(*shard, offset + 1);
    }
    let mut per: HashMap<ShardId, Vec<(i64, String)>> = HashMap::new();
    for (shard, offset, env) in got {
        per.entry(shard).or_default().push((offset, env.owner.name().to_string()));
    }
    for s in [0u32, 1] {
        let seen = per.remove(&ShardId(s)).unwrap_or_default();
        let names: Vec<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
        let want: Vec<String> = (0..N).map(|i| format!("s{s}-{i}")).collect();
        check(names == want, || format!("each_partition_in_publish_order: shard {s} got {names:?}"))?;
        check(seen.windows(2).all(|w| w[0].0 < w[1].0), || {
            format!("each_partition_in_publish_order: shard {s} offsets not increasing")
        })?;
    }
    check(per.is_empty(), || format!("each_partition_in_publish_order: records of other shards {per:?}"))?;
    // Everything read is done: committing it must succeed.
    let done: Vec<(ShardId, i64)> = next.into_iter().collect();
    f.source().commit(&done).map_err(|e| format!("commit: {e}"))
}

/// While partition 0 is paused, what is published to it stays on the bus
/// and partition 1 still delivers; after resuming, partition 0 delivers
/// what it held, in order.
async fn a_paused_partition_waits_and_the_others_do_not(f: &mut dyn BusFixture, tenant: &str) -> Result<(), String> {
    let bus = f.bus();
    let stopped = f.source().pause(ShardId(0)).map_err(|e| format!("pause: {e}"))?;
    check(stopped.contains(&ShardId(0)), || format!("a_paused_partition_waits: pausing shard 0 stopped {stopped:?}"))?;
    for i in 0..3 {
        bus.publish_shard(ShardId(0), shard_env(tenant, &format!("held-{i}"))).await.map_err(|e| e.to_string())?;
    }
    bus.publish_shard(ShardId(1), shard_env(tenant, "sentinel")).await.map_err(|e| e.to_string())?;
    let got = records(f, 1).await.map_err(|e| format!("a_paused_partition_waits: {e}"))?;
    check(got[0].0 == ShardId(1) && &*got[0].2.owner.name() == "sentinel", || {
        format!("a_paused_partition_waits: a paused partition delivered {:?}", got[0].2.owner)
    })?;
    let started = f.source().resume(ShardId(0)).map_err(|e| format!("resume: {e}"))?;
    check(started.contains(&ShardId(0)), || format!("a_paused_partition_waits: resuming shard 0 started {started:?}"))?;
    let got = records(f, 3).await.map_err(|e| format!("a_paused_partition_waits, after resuming: {e}"))?;
    let names: Vec<String> = got.iter().map(|(s, _, e)| format!("{}:{}", s.0, e.owner.name())).collect();
    check(names == ["0:held-0", "0:held-1", "0:held-2"], || {
        format!("a_paused_partition_waits: after resuming got {names:?}")
    })
}

/// Envelopes for two edges reach each edge's own queue, in order.
async fn edges_get_their_own_in_order(f: &mut dyn BusFixture) -> Result<(), String> {
    let bus = f.bus();
    let [a, b] = f.edges();
    for i in 0..10u64 {
        for (k, e) in [&a, &b].into_iter().enumerate() {
            let env = EdgeEnvelope {
                edge: e.clone(),
                body: EdgeInput::Welcome { session: SessionId(i * 2 + k as u64), inbox_head: i },
                traces: Vec::new(),
            };
            if i % 2 == 0 {
                bus.publish_edge(env).await.map_err(|e| format!("publish_edge: {e}"))?;
            } else {
                bus.try_publish_edge(env).map_err(|e| format!("try_publish_edge: {e}"))?;
            }
        }
    }
    let within = f.patience();
    for (k, e) in [a, b].into_iter().enumerate() {
        for i in 0..10u64 {
            let got = f.next_edge(&e, within).await;
            let ok = matches!(&got, Some(EdgeEnvelope { edge, body: EdgeInput::Welcome { session, inbox_head }, .. })
                if *edge == e && *session == SessionId(i * 2 + k as u64) && *inbox_head == i);
            check(ok, || format!("edges_get_their_own_in_order: edge {e:?} envelope {i}: got {got:?}"))?;
        }
    }
    Ok(())
}

/// A record that does not decode is reported, and the partition goes on.
async fn a_poisoned_record_does_not_stop_its_partition(f: &mut dyn BusFixture, tenant: &str) -> Result<(), String> {
    if !f.poison(ShardId(1)).await {
        return Ok(());
    }
    f.bus().publish_shard(ShardId(1), shard_env(tenant, "after-poison")).await.map_err(|e| e.to_string())?;
    let within = f.patience();
    match next_event(f.source(), within).await {
        Some(SourceEvent::Unreadable { shard: ShardId(1), .. }) => {}
        e => return Err(format!("a_poisoned_record: expected it reported unreadable, got {e:?}")),
    }
    let got = records(f, 1).await.map_err(|e| format!("a_poisoned_record: {e}"))?;
    check(&*got[0].2.owner.name() == "after-poison", || format!("a_poisoned_record: then got {:?}", got[0].2.owner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EdgeReceiver, InProcessBus, InProcessSource};

    struct InProcess {
        bus: Arc<InProcessBus>,
        source: InProcessSource,
        edges: HashMap<EdgeId, EdgeReceiver>,
    }

    #[async_trait]
    impl BusFixture for InProcess {
        fn bus(&self) -> Arc<dyn Bus> {
            self.bus.clone()
        }
        fn source(&mut self) -> &mut dyn ShardSource {
            &mut self.source
        }
        fn edges(&self) -> [EdgeId; 2] {
            [EdgeId("a".into()), EdgeId("b".into())]
        }
        async fn next_edge(&mut self, edge: &EdgeId, within: Duration) -> Option<EdgeEnvelope> {
            let rx = self.edges.get_mut(edge)?;
            tokio::time::timeout(within, rx.recv()).await.ok().flatten()
        }
        async fn poison(&mut self, _: ShardId) -> bool {
            false // typed channels carry no bytes to poison
        }
        fn patience(&self) -> Duration {
            Duration::from_secs(5)
        }
    }

    #[tokio::test]
    async fn the_in_process_bus_passes_the_contract() {
        let edges = [EdgeId("a".into()), EdgeId("b".into())];
        let (bus, shards, edge_rxs) = InProcessBus::new(4, &edges, 256);
        let mut f = InProcess { bus: Arc::new(bus), source: InProcessSource::new(shards), edges: edge_rxs };
        run_all(&mut f, "t").await.unwrap();
    }

    #[tokio::test]
    async fn the_contract_catches_a_source_that_ignores_pause() {
        struct Unpausable(InProcessSource);
        #[async_trait]
        impl ShardSource for Unpausable {
            async fn next(&mut self) -> SourceEvent {
                self.0.next().await
            }
            fn pause(&mut self, s: ShardId) -> Result<Vec<ShardId>, crate::BusError> {
                Ok(vec![s])
            }
            fn resume(&mut self, s: ShardId) -> Result<Vec<ShardId>, crate::BusError> {
                self.0.resume(s)
            }
            fn commit(&mut self, o: &[(ShardId, i64)]) -> Result<(), crate::BusError> {
                self.0.commit(o)
            }
        }
        struct Broken(InProcess, Unpausable);
        #[async_trait]
        impl BusFixture for Broken {
            fn bus(&self) -> Arc<dyn Bus> {
                self.0.bus()
            }
            fn source(&mut self) -> &mut dyn ShardSource {
                &mut self.1
            }
            fn edges(&self) -> [EdgeId; 2] {
                self.0.edges()
            }
            async fn next_edge(&mut self, edge: &EdgeId, within: Duration) -> Option<EdgeEnvelope> {
                self.0.next_edge(edge, within).await
            }
            async fn poison(&mut self, s: ShardId) -> bool {
                self.0.poison(s).await
            }
            fn patience(&self) -> Duration {
                Duration::from_millis(200)
            }
        }
        let edges = [EdgeId("a".into()), EdgeId("b".into())];
        let (bus, shards, edge_rxs) = InProcessBus::new(2, &edges, 256);
        let (_, unused, _) = InProcessBus::new(0, &[], 1);
        let inner = InProcess { bus: Arc::new(bus), source: InProcessSource::new(unused), edges: edge_rxs };
        let mut f = Broken(inner, Unpausable(InProcessSource::new(shards)));
        let e = run_all(&mut f, "t").await.unwrap_err();
        assert!(e.contains("a_paused_partition_waits"), "{e}");
    }
}
