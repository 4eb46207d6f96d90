//! The shard actors: thin actix shells around [`ShardState`].
//!
//! Each shard is an actix actor on one of a few arbiter threads. A pump task
//! feeds it envelopes from its bus partition, one at a time (`send().await`
//! waits until the actor has handled the previous one), so a shard handles
//! its inputs strictly in order. Before handing an input over the pump takes
//! a permit from the shard's in-flight-writes semaphore; the permit is held
//! until the input's writes are durable and its outputs released, so a
//! shard never has more than `max_inflight_writes` inputs outstanding (an
//! input that writes nothing still waits, with its outputs, behind the
//! newest write) and backpressure reaches the bus, then the sessions, then
//! the sockets.
//!
//! Edge leases are judged against the pump's [`InputClock`], not the wall
//! clock alone: a shard that is behind on its input has not yet read the
//! heartbeats waiting in it, so it expires no lease until it has caught up.
//!
//! The time handed to the state comes from the [`SharedClock`] the host was
//! given, never from the system directly (ADR 0019); `Instant`s here only
//! time commits for a metric.
//!
//! Commits run as spawned futures (many in flight, sharing fsyncs in the
//! store's group commit); outputs that need I/O (publishing when a queue is
//! full, the reads of replays and receipts) run under `ctx.wait`, which
//! holds every other event of the actor until they finish, so outputs leave
//! in order. A read's answer goes back into the state
//! ([`ShardState::read_done`]), which decides what follows; this shell
//! decides nothing about it.

use crate::commits::CommitQueue;
use crate::rules::{self, Dropped, EdgeFate, Refusal, ShardFate};
use crate::state::{Found, InputClock, Output, Query, ReadResult, ShardState, Ticket};
use actix::prelude::*;
use iris_clock::{Clock, SharedClock};
use iris_envelope::{EdgeEnvelope, ShardEnvelope, ShardId, ShardKey, UserKey};
use iris_router::{PublishError, Router, ShardReceiver};
use iris_storage::{Bar, DedupKey, DedupRecord, Store, StoreError, UserRecord, WriteBatch, WriteOp};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Settings for all shards of a node.
#[derive(Debug, Clone)]
pub struct ShardsConfig {
    /// Number of shards (ring partitions).
    pub shards: u32,
    /// Arbiter threads the shards are spread over.
    pub threads: usize,
    /// Most writes one shard has in flight.
    pub max_inflight_writes: usize,
    /// Users kept in memory per shard.
    pub max_cached_users: usize,
    /// Most contacts per user.
    pub max_contacts: usize,
    /// Most presence subscribers per user.
    pub max_subscribers: usize,
    /// Most sessions per user.
    pub max_sessions: usize,
    /// Most body bytes in one replay or sync page.
    pub page_max_bytes: usize,
    /// An edge silent this long loses its sessions.
    pub edge_lease_ms: u64,
    /// The region (recorded with where users are connected).
    pub region: String,
    /// Mark presence notices with the shard's owner (ADR 0021; off only
    /// during a rolling upgrade from a version whose edges cannot read them).
    pub mark_presence: bool,
    /// When set, log records also go to the shard's outbox, holding at most
    /// this many unpublished records (a region publishing its log topics,
    /// ADR 0022); `None`: logs only.
    pub outbox_max: Option<u64>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Deliver {
    env: ShardEnvelope,
    permit: OwnedSemaphorePermit,
    /// The store's idempotency record for a `send`, looked up by the pump
    /// while the envelope waited behind others.
    prefetched: Option<Prefetched>,
}

/// Envelopes the pump takes ahead of the one the actor handles, to look up
/// their idempotency records meanwhile. A shard takes its input one
/// envelope at a time, and a `send` waits for that store round trip before
/// it is handled: without the look-ahead a shard's rate was one round trip
/// per send (about 50-60 sends a second on Redis with `appendfsync always`
/// in a region on two cores; docs/performance.md). Bounded, far below the
/// state's memory of recent records (`max_inflight_writes + 1,024`), which
/// an early answer relies on (see [`ShardState::dedup_key`]).
const LOOK_AHEAD: usize = 32;

/// A look-up the pump started for a waiting `send`.
struct Prefetched {
    key: DedupKey,
    /// [`ShardState::resets`] when it started: an answer from before a
    /// reset is not used.
    resets: u64,
    answer: tokio::task::JoinHandle<Result<Option<DedupRecord>, StoreError>>,
}

impl Prefetched {
    /// Starts the look-up of `env`'s idempotency record, if it has one.
    fn start(env: &ShardEnvelope, store: &Arc<dyn Store>, resets: u64) -> Option<Self> {
        let key = ShardState::dedup_key(env)?;
        let (store, k) = (store.clone(), key.clone());
        let answer = actix_rt::spawn(async move { store.dedup(&k).await });
        Some(Self { key, resets, answer })
    }
}

/// The store granted the shard its owner epoch, and these tenants are
/// barred (sent by the pump before any input).
#[derive(Message)]
#[rtype(result = "()")]
struct Claimed(u64, Vec<Bar>);

impl Handler<Claimed> for ShardActor {
    type Result = ();

    fn handle(&mut self, msg: Claimed, ctx: &mut Context<Self>) {
        self.state.claimed(msg.0);
        let now = self.time.now_ms();
        self.state.set_bars(now, &msg.1);
        self.bars_read_at = Some(now);
        self.confirm_bars(ctx);
    }
}

/// How often a shard reads the store's tenant bars (ADR 0030): a shard
/// learns of a bar within this plus one lease check.
pub const BARS_EVERY_MS: i64 = 2_000;

struct ShardActor {
    state: ShardState,
    store: Arc<dyn Store>,
    router: Router,
    detached: Arc<Semaphore>,
    lease_check: Duration,
    /// The shard this actor runs (its ticks go to its own partition).
    shard: ShardId,
    /// Where the count of durable inputs is published (for a bus that
    /// commits consumed offsets only once their work is durable).
    progress: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The lease check; cancelled when the input closes, so that the actor
    /// stops once its in-flight work is done.
    lease_timer: Option<SpawnHandle>,
    /// Shard actors running on this host.
    running: Arc<std::sync::atomic::AtomicUsize>,
    /// Permits of handled inputs, by their arrival count, returned once
    /// that many inputs are durable (their outputs released).
    held: std::collections::VecDeque<(u64, OwnedSemaphorePermit)>,
    /// When the pump last saw the input empty.
    clock: Arc<SharedInputClock>,
    /// Where the time handed to the state comes from.
    time: SharedClock,
    /// [`ShardState::resets`], for the pump's look-ups.
    resets: Arc<std::sync::atomic::AtomicU64>,
    /// Writes waiting for a commit, merged while earlier ones run.
    commits: CommitQueue,
    /// Spans of sampled inputs, by their arrival count, ended once that
    /// many inputs are durable (at most one per held permit).
    traced: std::collections::VecDeque<(u64, iris_trace::Span)>,
    /// The region, whose shards confirm tenant bars.
    region: Arc<str>,
    /// When the tenant bars were last read (`None` while a read runs, or
    /// before the claim); only on a store that keeps bars.
    bars_read_at: Option<i64>,
}

/// The shard's [`InputClock`] (when its pump last had nothing waiting),
/// shared by the pump that marks it, the feed that tells it of envelopes
/// held upstream, and the actor's lease check that reads it. The judgement
/// is the state machine's; this only shares it between tasks.
#[derive(Debug, Default)]
pub struct SharedInputClock(std::sync::Mutex<InputClock>);

impl SharedInputClock {
    fn with<T>(&self, f: impl FnOnce(&mut InputClock) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn mark(&self, rx_empty: bool, idle: bool, time: &dyn Clock) {
        let now = time.now_ms();
        self.with(|c| c.mark(now, rx_empty, idle));
    }

    /// Tells the clock that inputs for this shard are (or are no longer)
    /// held before its queue (a Kafka partition paused because the queue
    /// was full): an empty queue then does not mean caught up.
    pub fn set_held_upstream(&self, held: bool) {
        self.with(|c| c.set_held_upstream(held));
    }

    fn caught_up(&self, now: i64) -> i64 {
        self.with(|c| c.caught_up(now))
    }

    /// A clock that judges by its shard's own ticks (see [`InputClock`]).
    fn ticking(origin: u64, now: i64) -> Self {
        Self(std::sync::Mutex::new(InputClock::default().with_ticks(origin, now)))
    }

    fn took(&self, input: &iris_envelope::ShardInput) {
        self.with(|c| c.took(input));
    }

    fn tick(&self, now: i64) -> Option<iris_envelope::ShardInput> {
        self.with(|c| c.tick(now))
    }
}

/// The shard's input has closed (its partition was revoked).
#[derive(Message)]
#[rtype(result = "()")]
struct Close;

impl Handler<Close> for ShardActor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        // A running interval would keep the actor alive forever, checking
        // leases no edge renews here any more and writing stale records.
        if let Some(timer) = self.lease_timer.take() {
            ctx.cancel_future(timer);
        }
        // Presence it holds or would make is a view from memory the
        // partition's next owner has its own of: sent late, it would land
        // after the new owner's (ShardState::revoked).
        let dropped = self.state.revoked();
        metrics::counter!("iris_shard_outputs_dropped_on_revoke_total").increment(dropped as u64);
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Edge leases are checked, and the shard's tick published to its
        // own partition, eight times per lease period.
        self.running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lease_timer = Some(ctx.run_interval(self.lease_check, |act, ctx| {
            let now = act.time.now_ms();
            if let Some(tick) = act.clock.tick(now) {
                let env = ShardEnvelope { owner: ShardKey::Shard, body: tick, trace: None };
                // Ephemeral: a tick that finds no room is simply not read,
                // and the shard judges itself behind, as it is.
                if act.router.try_to_shard_id(act.shard, env).is_err() {
                    metrics::counter!("iris_shard_ticks_dropped_total").increment(1);
                }
            }
            act.read_bars(now, ctx);
            act.confirm_bars(ctx);
            // After a failed commit, an idle shard repairs its records too.
            act.reset_if_needed(ctx);
            if let Some((ticket, batch)) = act.state.handle_timeout(now, act.clock.caught_up(now)) {
                act.commit(ticket, batch, ctx);
            }
            act.flush(ctx);
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

type Loaded = (Option<Result<(UserKey, UserRecord), StoreError>>, Result<Found, StoreError>);

impl Handler<Deliver> for ShardActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, mut msg: Deliver, ctx: &mut Context<Self>) -> Self::Result {
        self.reset_if_needed(ctx);
        let needs = self.state.needs(&msg.env);
        // The pump's early answer, unless the state forgot records since it
        // was read (it would miss a write made in between).
        let resets = self.state.resets();
        let prefetched = msg.prefetched.take().filter(|p| p.resets == resets && needs.dedup.as_ref() == Some(&p.key));
        // A reset while the record is read (a commit completion or the
        // lease timer runs meanwhile) makes the answer as stale as an early
        // one: `apply` then answers `unavailable` and the client retries.
        let read_at = needs.dedup.as_ref().map(|_| resets);
        // Bars that change while the input's records load (a tenant barred
        // or lifted) make its needs as stale: answered `unavailable` too.
        let bars_at = self.state.bars_changed();
        let store = self.store.clone();
        let load = async move {
            let user = match needs.user {
                Some(u) => Some(store.load_user(&u).await.map(|r| (u, r))),
                None => None,
            };
            let found = async {
                let dedup = match (&needs.dedup, prefetched) {
                    (Some(_), Some(p)) => match p.answer.await {
                        Ok(Ok(answer)) => answer,
                        // The look-up failed (perhaps long before the send
                        // is handled, in an outage since ended) or its task
                        // was cancelled: read again, as without it.
                        Ok(Err(_)) | Err(_) => store.dedup(&p.key).await?,
                    },
                    (Some(k), None) => store.dedup(k).await?,
                    (None, _) => None,
                };
                // One batch's idempotency keys are looked up concurrently
                // (one round trip's wait on Redis or ScyllaDB, not one each).
                let events_seen =
                    futures::future::try_join_all(needs.events.iter().map(|k| store.event_seen(k))).await?;
                Ok(Found { dedup, events_seen })
            }
            .await;
            (user, found)
        };
        Box::pin(
            load.into_actor(self).map(move |loaded: Loaded, act, ctx| act.apply(msg, loaded, (read_at, bars_at), ctx)),
        )
    }
}

impl ShardActor {
    /// `read_at`: [`ShardState::resets`] when the input's idempotency
    /// record was looked up, if it was; `bars_at`:
    /// [`ShardState::bars_changed`] when its needs were judged.
    fn apply(
        &mut self,
        msg: Deliver,
        (user, found): Loaded,
        (read_at, bars_at): (Option<u64>, u64),
        ctx: &mut Context<Self>,
    ) {
        let kind = msg.env.body.kind();
        metrics::counter!("iris_shard_envelopes_total", "kind" => kind).increment(1);
        let loaded = match user {
            Some(Ok((u, record))) => {
                self.state.insert_user(u, record);
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        };
        let mut env = msg.env;
        // A sampled input: its span runs until its writes are durable and its
        // outputs released, and those outputs carry it as their parent.
        let mut span = env.trace.and_then(|t| iris_trace::child("iris.shard.handle", iris_trace::Kind::Consumer, &t));
        if let Some(s) = &mut span {
            env.trace = Some(s.ctx());
            s.attr("iris.shard", iris_trace::Value::Int(self.shard.0.into()));
            s.attr("iris.input", iris_trace::Value::Str(kind.to_owned()));
        }
        let mut outcome = loaded.and(found).map_err(Some);
        if read_at.is_some_and(|r| r != self.state.resets()) || bars_at != self.state.bars_changed() {
            outcome = Err(None);
        }
        match outcome {
            Ok(found) => {
                if let Some((ticket, batch)) = self.state.handle(self.time.now_ms(), env, found) {
                    self.commit(ticket, batch, ctx);
                }
                if let Some(s) = span {
                    self.traced.push_back((self.state.inputs_seen(), s));
                }
            }
            Err(e) => {
                match e {
                    Some(e) => tracing::warn!(error = %e, kind, "load failed; answering unavailable"),
                    None => tracing::debug!(
                        kind,
                        "records forgotten or tenant bars changed while this input was read; answering unavailable"
                    ),
                }
                self.state.load_failed(&env);
                if let Some(mut s) = span {
                    s.fail();
                    s.end();
                }
            }
        }
        self.held.push_back((self.state.inputs_seen(), msg.permit));
        self.flush(ctx);
    }

    /// After a failed commit, once nothing is in flight: the state forgets
    /// what may be ahead of the store and commits the repair of its session
    /// records; the pump learns that its early look-ups are stale.
    fn reset_if_needed(&mut self, ctx: &mut Context<Self>) {
        if !self.state.needs_reset() {
            return;
        }
        let repair = self.state.reset();
        self.resets.store(self.state.resets(), std::sync::atomic::Ordering::Release);
        if let Some((ticket, batch)) = repair {
            self.commit(ticket, batch, ctx);
        }
    }

    fn commit(&mut self, ticket: Ticket, batch: WriteBatch, ctx: &mut Context<Self>) {
        self.commits.push(ticket, batch);
        self.start_commits(ctx);
    }

    /// Starts the commits the queue allows; each one's end is reported to
    /// the state for every ticket it held, and starts the next.
    fn start_commits(&mut self, ctx: &mut Context<Self>) {
        while let Some(commit) = self.commits.poll() {
            let store = self.store.clone();
            let messages = commit.batch.ops.iter().filter(|op| matches!(op, WriteOp::Message { .. })).count() as u64;
            let started = std::time::Instant::now();
            let (batch, tickets, token) = (commit.batch, commit.tickets, commit.started);
            metrics::histogram!("iris_shard_commit_inputs").record(tickets.len() as f64);
            let fut = async move { store.commit(batch).await };
            ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                metrics::histogram!("iris_shard_commit_seconds").record(started.elapsed().as_secs_f64());
                match &result {
                    Ok(()) => metrics::counter!("iris_messages_accepted_total").increment(messages),
                    Err(e) => tracing::error!(error = %e, ?tickets, "commit failed"),
                }
                // What waited behind a failed commit fails with it, unwritten.
                let unwritten = act.commits.finished(token, result.is_ok());
                for ticket in tickets.into_iter().chain(unwritten) {
                    act.state.committed(ticket, result.clone());
                }
                act.start_commits(ctx);
                act.flush(ctx);
            }));
        }
    }

    /// Reads the store's tenant bars again if they are due, and hands them
    /// to the state.
    fn read_bars(&mut self, now: i64, ctx: &mut Context<Self>) {
        if !self.store.keeps_bars() || self.bars_read_at.is_none_or(|at| now - at < BARS_EVERY_MS) {
            return;
        }
        self.bars_read_at = None;
        let store = self.store.clone();
        ctx.spawn(async move { store.barred_tenants().await }.into_actor(self).map(move |bars, act, ctx| {
            let now = act.time.now_ms();
            act.bars_read_at = Some(now);
            match bars {
                Ok(bars) => act.state.set_bars(now, &bars),
                Err(e) => tracing::debug!(shard = act.shard.0, error = %e, "could not read the tenant bars"),
            }
            act.confirm_bars(ctx);
        }));
    }

    /// Writes the confirmations of the bars the state says are due (at the
    /// claim, after each read of the bars and on every lease check: not per
    /// input).
    fn confirm_bars(&mut self, ctx: &mut Context<Self>) {
        for bar in self.state.bars_to_confirm(self.time.now_ms()) {
            let (store, region, shard) = (self.store.clone(), self.region.clone(), self.shard.0);
            let fut = async move {
                let result = store.confirm_bar(&region, &bar, shard).await;
                (bar, result)
            };
            ctx.spawn(fut.into_actor(self).map(|(bar, result), act, _| {
                match &result {
                    Ok(()) => tracing::debug!(shard = act.shard.0, tenant = %bar.tenant, "tenant bar confirmed"),
                    Err(e) => tracing::warn!(shard = act.shard.0, error = %e, "could not confirm a tenant bar"),
                }
                act.state.bar_confirmed(&bar, result.is_ok());
            }));
        }
    }

    /// Carries out ready outputs: publishes that fit right now go at once;
    /// from the first that must wait, the rest go in order under `ctx.wait`.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let durable = self.state.inputs_durable();
        if let Some(p) = &self.progress {
            p.store(durable, std::sync::atomic::Ordering::Release);
        }
        // Outputs of durable inputs are released below (and, when they must
        // wait for room, carried out before the actor's next event).
        let released = rules::permits_released(self.held.iter().map(|(n, _)| *n), durable);
        self.held.drain(..released);
        while self.traced.front().is_some_and(|(n, _)| *n <= durable) {
            if let Some((_, span)) = self.traced.pop_front() {
                span.end();
            }
        }
        let mut rest: Vec<Output> = Vec::new();
        for out in self.state.poll_outputs() {
            if !rest.is_empty() {
                rest.push(out);
                continue;
            }
            match out {
                Output::Edge(env) => match self.router.try_to_edge(env) {
                    Ok(()) => {}
                    Err(e) => {
                        let (refusal, env) = refused(e);
                        match rules::edge_refused(refusal, env.body.is_droppable()) {
                            EdgeFate::Wait => rest.push(Output::Edge(env)),
                            EdgeFate::Drop(why) => dropped(why),
                        }
                    }
                },
                Output::Shard(env) => self.io().to_shard(env),
                other => rest.push(other),
            }
        }
        if rest.is_empty() {
            return;
        }
        self.carry_out(rest.into(), ctx);
    }

    /// Carries out outputs in order while the actor waits (no other input
    /// is handled meanwhile). A read is made here and its answer goes back
    /// into the state, whose follow-up outputs go first.
    fn carry_out(&mut self, mut rest: std::collections::VecDeque<Output>, ctx: &mut Context<Self>) {
        let io = self.io();
        let fut = async move {
            while let Some(out) = rest.pop_front() {
                match out {
                    Output::Edge(env) => io.edge(env).await,
                    Output::Shard(env) => io.to_shard(env),
                    Output::Read(read) => return Some((read, rest)),
                }
            }
            None
        };
        ctx.wait(fut.into_actor(self).then(|next, act, _| {
            let store = act.store.clone();
            let query = next.as_ref().map(|(read, _)| owned_query(act.state.query(read)));
            async move {
                let result = match query {
                    Some(q) => Some(q.run(&*store).await),
                    None => None,
                };
                (next, result)
            }
            .into_actor(act)
            .map(|(next, result), act, ctx| {
                let (Some((read, mut rest)), Some(result)) = (next, result) else { return };
                let outcome = act.state.read_done(read, result);
                if let Some((ticket, batch)) = outcome.commit {
                    act.commit(ticket, batch, ctx);
                }
                for o in outcome.outputs.into_iter().rev() {
                    rest.push_front(o);
                }
                if !rest.is_empty() {
                    act.carry_out(rest, ctx);
                }
            })
        }));
    }

    fn io(&self) -> OutputIo {
        OutputIo { router: self.router.clone(), detached: self.detached.clone() }
    }
}

/// A refused publish: why, and the envelope back.
fn refused<T>(e: PublishError<T>) -> (Refusal, T) {
    match e {
        PublishError::Full(env) => (Refusal::Full, env),
        PublishError::Closed(env) => (Refusal::Closed, env),
    }
}

/// Counts and logs an output a rule dropped.
fn dropped(why: Dropped) {
    match why {
        Dropped::Ephemeral => metrics::counter!("iris_ephemeral_dropped_total").increment(1),
        Dropped::EdgeGone => tracing::debug!("edge gone; dropped"),
        Dropped::ShardGone => tracing::warn!("shard queue closed; envelope dropped"),
        Dropped::TooManyWaiting => {
            metrics::counter!("iris_shard_envelopes_dropped_total").increment(1);
            tracing::warn!("shard queues full and too many publishes waiting; receipt dropped");
        }
    }
}

/// What the slow path of output handling needs, owned so it can run as a
/// future while the actor waits.
struct OutputIo {
    router: Router,
    detached: Arc<Semaphore>,
}

/// A [`Query`] owned, to run while the actor waits.
enum OwnedQuery {
    Inbox { user: UserKey, after: u64, limit: usize, max_bytes: usize },
    Range { user: UserKey, from: u64, to: u64, limit: usize },
    PendingReceipts { user: UserKey, limit: usize },
}

fn owned_query(q: Query<'_>) -> OwnedQuery {
    match q {
        Query::Inbox { user, after, limit, max_bytes } => {
            OwnedQuery::Inbox { user: user.clone(), after, limit, max_bytes }
        }
        Query::Range { user, from, to, limit } => OwnedQuery::Range { user: user.clone(), from, to, limit },
        Query::PendingReceipts { user, limit } => OwnedQuery::PendingReceipts { user: user.clone(), limit },
    }
}

impl OwnedQuery {
    async fn run(self, store: &dyn Store) -> ReadResult {
        match self {
            OwnedQuery::Inbox { user, after, limit, max_bytes } => {
                ReadResult::Inbox(store.read_inbox(&user, after, limit, max_bytes).await)
            }
            OwnedQuery::Range { user, from, to, limit } => {
                ReadResult::Range(store.read_range(&user, from, to, limit).await)
            }
            OwnedQuery::PendingReceipts { user, limit } => {
                ReadResult::PendingReceipts(store.pending_receipts(&user, limit).await)
            }
        }
    }
}

impl OutputIo {
    async fn edge(&self, env: EdgeEnvelope) {
        if let Err(e) = self.router.to_edge(env).await {
            tracing::debug!(error = %e, "edge gone; dropped");
        }
    }

    /// Publishes to a shard without ever making this shard wait
    /// ([`rules::shard_refused`]).
    fn to_shard(&self, env: ShardEnvelope) {
        let Err(e) = self.router.try_to_shard(env) else { return };
        let (refusal, env) = refused(e);
        let slot = self.detached.clone().try_acquire_owned().ok();
        match rules::shard_refused(refusal, slot.is_some()) {
            ShardFate::Detach => {
                let router = self.router.clone();
                actix_rt::spawn(async move {
                    if let Err(e) = router.to_shard(env).await {
                        tracing::warn!(error = %e, "shard queue closed; envelope dropped");
                    }
                    drop(slot);
                });
            }
            ShardFate::Drop(why) => dropped(why),
        }
    }
}

/// The running shards of a node.
pub struct ShardHost {
    arbiters: std::sync::Mutex<Vec<Arbiter>>,
    permits: std::sync::Mutex<std::collections::HashMap<ShardId, Arc<Semaphore>>>,
    cfg: ShardsConfig,
    store: Arc<dyn Store>,
    router: Router,
    clock: SharedClock,
    /// The node's seed for this host, and how many shard actors it started:
    /// with the start time, what makes each actor's tick origin its own.
    seed: u64,
    starts: std::sync::atomic::AtomicU64,
    detached: Arc<Semaphore>,
    running: Arc<std::sync::atomic::AtomicUsize>,
}

impl ShardHost {
    /// Shard threads with no shard yet. Must run inside an actix `System`.
    /// The shards read the time from `clock`; `seed` (drawn afresh at every
    /// start, or derived from the node's root seed) goes into the message
    /// ids they make, which keeps them apart from an earlier run's.
    pub fn new(cfg: &ShardsConfig, store: Arc<dyn Store>, router: Router, clock: SharedClock, seed: u64) -> Self {
        Self {
            arbiters: std::sync::Mutex::new((0..cfg.threads.max(1)).map(|_| Arbiter::new()).collect()),
            permits: std::sync::Mutex::new(std::collections::HashMap::new()),
            cfg: cfg.clone(),
            store,
            router,
            clock,
            seed,
            starts: std::sync::atomic::AtomicU64::new(0),
            detached: Arc::new(Semaphore::new(rules::DETACHED_PUBLISHES)),
            running: Arc::default(),
        }
    }

    /// Starts the actor of one shard, fed from `rx`. Its state is rebuilt
    /// from storage as users come up. It stops once `rx`'s senders are gone
    /// and its in-flight writes have finished.
    /// Returns the shard's input clock, for a feeder that holds inputs
    /// before the queue (see [`SharedInputClock::set_held_upstream`]).
    pub fn start(
        &self,
        shard: ShardId,
        rx: ShardReceiver,
        progress: Option<Arc<std::sync::atomic::AtomicU64>>,
    ) -> Arc<SharedInputClock> {
        let cfg = &self.cfg;
        let arbiters = self.arbiters.lock().unwrap_or_else(|p| p.into_inner());
        if arbiters.is_empty() {
            tracing::warn!(shard = shard.0, "shard threads stopped; shard not started");
            return Arc::new(SharedInputClock::default());
        }
        let arbiter = &arbiters[shard.0 as usize % arbiters.len()];
        // Each actor started here gets seeds of its own: a shard that comes
        // back to this process (revoked, then assigned again) restarts its
        // message-id counter, and only a different seed keeps its ids apart
        // from its previous actor's if the clock stepped back (found by the
        // simulator: two messages with one id).
        let now = self.clock.now_ms();
        let started = self.starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let instance = rules::tick_origin(self.seed, shard, started, 0);
        let state = ShardState::new(rules::shard_config(cfg, shard, instance));
        let (store, router, detached) = (self.store.clone(), self.router.clone(), self.detached.clone());
        let lease_check = rules::lease_check_every(cfg.edge_lease_ms);
        let running = self.running.clone();
        let isolate_users = self.store.commits_fail_alone();
        let outbox = cfg.outbox_max.filter(|_| self.store.keeps_outbox()).map(|max| iris_storage::OutboxTarget {
            id: iris_storage::OutboxId { region: cfg.region.as_str().into(), shard: shard.0 },
            max,
        });
        let origin = rules::tick_origin(self.seed, shard, started, now);
        let clock = Arc::new(SharedInputClock::ticking(origin, now));
        let pump_clock = clock.clone();
        let (time, pump_time) = (self.clock.clone(), self.clock.clone());
        let resets = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let actor_resets = resets.clone();
        let region: Arc<str> = cfg.region.as_str().into();
        let addr = ShardActor::start_in_arbiter(&arbiter.handle(), move |_| ShardActor {
            state,
            store,
            router,
            detached,
            lease_check,
            shard,
            progress,
            lease_timer: None,
            running,
            held: std::collections::VecDeque::new(),
            clock,
            time,
            resets: actor_resets,
            commits: CommitQueue::new(rules::COMMITS_IN_FLIGHT, rules::MAX_COMMIT_OPS)
                .isolating_users(isolate_users)
                .with_outbox(outbox),
            traced: std::collections::VecDeque::new(),
            region,
            bars_read_at: None,
        });
        let sem = Arc::new(Semaphore::new(cfg.max_inflight_writes));
        self.permits.lock().unwrap_or_else(|p| p.into_inner()).insert(shard, sem.clone());
        let claims = self.store.clone();
        if !arbiter.spawn(pump(rx, addr, sem, shard, (pump_clock.clone(), pump_time), claims, resets)) {
            tracing::error!(shard = shard.0, "arbiter is gone; shard not started");
        }
        pump_clock
    }

    /// Forgets a shard whose input was closed (revoked): its actor finishes
    /// what is in flight and stops by itself.
    pub fn forget(&self, shard: ShardId) {
        self.permits.lock().unwrap_or_else(|p| p.into_inner()).remove(&shard);
    }

    /// Shard actors running here (a revoked one counts until it stops).
    pub fn running(&self) -> usize {
        self.running.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes in flight across all shards.
    pub fn inflight(&self) -> usize {
        let max = self.cfg.max_inflight_writes;
        self.permits.lock().unwrap_or_else(|p| p.into_inner()).values().map(|p| max - p.available_permits()).sum()
    }

    /// Waits (up to `deadline`) until no shard has writes in flight.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while self.inflight() > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Stops the shard threads.
    pub fn stop(&self) {
        let arbiters = std::mem::take(&mut *self.arbiters.lock().unwrap_or_else(|p| p.into_inner()));
        for a in &arbiters {
            a.stop();
        }
        for a in arbiters {
            if a.join().is_err() {
                tracing::error!("shard arbiter panicked");
            }
        }
    }
}

async fn pump(
    mut rx: ShardReceiver,
    addr: Addr<ShardActor>,
    permits: Arc<Semaphore>,
    shard: ShardId,
    (clock, time): (Arc<SharedInputClock>, SharedClock),
    store: Arc<dyn Store>,
    resets: Arc<std::sync::atomic::AtomicU64>,
) {
    let depth = metrics::gauge!("iris_shard_mailbox_depth", "shard" => shard.0.to_string());
    // The shard's owner epoch first (ADR 0021): until the store grants it,
    // the shard takes no input and writes nothing; its inputs wait in the
    // queue (and the partition pauses behind it). Then the tenants barred
    // from the region: the shard refuses their inputs from the first one
    // (ADR 0030).
    let Some(epoch) = until_read(&rx, &addr, shard, "claim the shard's epoch", || store.claim_shard(shard.0)).await
    else {
        return;
    };
    let Some(bars) = until_read(&rx, &addr, shard, "read the tenant bars", || store.barred_tenants()).await else {
        return;
    };
    if addr.send(Claimed(epoch, bars)).await.is_err() {
        return;
    }
    // Envelopes taken ahead (LOOK_AHEAD), in order, with their look-ups
    // running. The input clock counts them as waiting: an envelope is
    // "taken" when it is handed to the actor, as before.
    let mut ahead: std::collections::VecDeque<(ShardEnvelope, Option<Prefetched>)> =
        std::collections::VecDeque::with_capacity(LOOK_AHEAD);
    loop {
        let empty = rx.is_empty() && ahead.is_empty();
        clock.mark(empty, empty, &*time);
        let (env, prefetched) = match ahead.pop_front() {
            Some(next) => next,
            // Nothing waits: the envelope that comes is handed over at once
            // and its look-up is the actor's, as without the look-ahead.
            None => match rx.recv().await {
                Some(env) => (env, None),
                None => break,
            },
        };
        // Start the look-ups of what waits behind it.
        while ahead.len() < LOOK_AHEAD {
            let Ok(next) = rx.try_recv() else { break };
            let p = Prefetched::start(&next, &store, resets.load(std::sync::atomic::Ordering::Acquire));
            ahead.push_back((next, p));
        }
        clock.took(&env.body);
        clock.mark(rx.is_empty() && ahead.is_empty(), false, &*time);
        depth.set((rx.len() + ahead.len()) as f64);
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        // Revoked (the feed closed this input): what is left here (this
        // envelope, those taken ahead, those still queued) is none of it
        // durable, so the partition's next owner reads it again. A revoked
        // shard takes no more input (its answers from memory would land
        // after the new owner's).
        if rx.is_closed() {
            break;
        }
        if addr.send(Deliver { env, permit, prefetched }).await.is_err() {
            break;
        }
    }
    // The actor finishes what is in flight and stops.
    if addr.send(Close).await.is_err() {
        tracing::debug!(shard = shard.0, "shard actor already stopped");
    }
}

/// Reads from the store before the shard's first input, retrying with a
/// backoff (to 2 s) until it succeeds; `None` once the shard's input closed
/// meanwhile (revoked), after telling the actor to stop.
async fn until_read<T, F>(
    rx: &ShardReceiver,
    addr: &Addr<ShardActor>,
    shard: ShardId,
    what: &str,
    mut read: impl FnMut() -> F,
) -> Option<T>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Duration::from_millis(50);
    loop {
        match read().await {
            Ok(v) => return Some(v),
            Err(e) if rx.is_closed() => {
                tracing::debug!(shard = shard.0, error = %e, "shard revoked before it could {what}");
                // The actor stops, lease timer and all.
                if addr.send(Close).await.is_err() {
                    tracing::debug!(shard = shard.0, "shard actor already stopped");
                }
                return None;
            }
            Err(e) => {
                tracing::warn!(shard = shard.0, error = %e, "could not {what}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Starts one actor per shard on `threads` arbiters, each fed from its
/// partition receiver. Must run inside an actix `System`. `clock` and
/// `seed` are as for [`ShardHost::new`].
pub fn start_shards(
    cfg: &ShardsConfig,
    receivers: Vec<ShardReceiver>,
    store: Arc<dyn Store>,
    router: Router,
    clock: SharedClock,
    seed: u64,
) -> ShardHost {
    let host = ShardHost::new(cfg, store, router, clock, seed);
    for (i, rx) in receivers.into_iter().enumerate() {
        host.start(ShardId(i as u32), rx, None);
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;
    use iris_router::{InProcessBus, Ring};
    use iris_storage::embedded::{EmbeddedConfig, EmbeddedStore};

    /// Polls until `host` runs `want` shard actors; false at the deadline.
    async fn runs(host: &ShardHost, want: usize) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while host.running() != want {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    fn config() -> ShardsConfig {
        ShardsConfig {
            shards: 1,
            threads: 1,
            max_inflight_writes: 16,
            max_cached_users: 16,
            max_contacts: 16,
            max_subscribers: 16,
            max_sessions: 4,
            page_max_bytes: 1 << 16,
            edge_lease_ms: 200,
            region: "test".into(),
            outbox_max: None,
            mark_presence: true,
        }
    }

    /// The next `n` answers an edge receives, all `accepted`, as (client
    /// id, msg id), in order; panics on any other answer or at `deadline`.
    async fn accepted(
        edge: &mut iris_router::EdgeReceiver,
        n: usize,
        deadline: tokio::time::Instant,
    ) -> Vec<(String, String)> {
        answers(edge, n, deadline)
            .await
            .into_iter()
            .map(|(id, answer)| (id.clone(), answer.unwrap_or_else(|code| panic!("{id} refused: {code:?}"))))
            .collect()
    }

    /// A `send` from alice to bob on the test edge, client id `c{i}`.
    fn send_to_bob(edge: &iris_envelope::EdgeId, i: usize) -> ShardEnvelope {
        use iris_envelope::{SessionAddr, SessionId, ShardInput};
        ShardEnvelope {
            owner: UserKey::new("acme", "bob").into(),
            body: ShardInput::Send {
                from: "alice".into(),
                client_id: format!("c{i}").into(),
                body: bytes::Bytes::from(format!("body {i}")),
                reply: SessionAddr { edge: edge.clone(), session: SessionId(1) },
            },
            trace: None,
        }
    }

    /// A shard that finds its input already waiting looks up the records
    /// of the sends behind the one it handles (LOOK_AHEAD); a retry waiting
    /// right behind its original, and one far behind it, must still be
    /// answered as a duplicate: with the original's msg id, stored once.
    #[test]
    fn sends_looked_up_ahead_still_find_their_duplicates() {
        use iris_envelope::EdgeId;
        let dir = tempfile::tempdir().unwrap();
        actix::System::new().block_on(async {
            let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
            let edge = EdgeId("e".into());
            let (bus, _, mut edges) = InProcessBus::new(1, std::slice::from_ref(&edge), 1_024);
            let mut answers = edges.remove(&edge).unwrap();
            let router = Router::new(Arc::new(Ring::new(1)), Arc::new(bus));
            let host = ShardHost::new(&config(), store.clone(), router, iris_clock::system(), 1);
            let send = |i: usize| send_to_bob(&edge, i);
            // 60 sends, each followed at once by its retry, and every tenth
            // by a retry of a send 40 back (beyond the look-ahead).
            let (tx, rx) = tokio::sync::mpsc::channel(1_024);
            let mut sent = 0;
            for i in 0..60 {
                for env in [send(i), send(i)] {
                    tx.send(env).await.unwrap();
                    sent += 1;
                }
                if i % 10 == 0 && i >= 40 {
                    tx.send(send(i - 40)).await.unwrap();
                    sent += 1;
                }
            }
            host.start(ShardId(0), rx, None);
            let mut ids: std::collections::HashMap<String, Vec<String>> = Default::default();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            for (id, msg_id) in accepted(&mut answers, sent, deadline).await {
                ids.entry(id).or_default().push(msg_id);
            }
            assert_eq!(ids.len(), 60, "every client id accepted");
            for (id, msg_ids) in &ids {
                assert!(msg_ids.iter().all(|m| m == &msg_ids[0]), "{id}: one msg id for every retry, got {msg_ids:?}");
            }
            let record = store.load_user(&UserKey::new("acme", "bob")).await.unwrap();
            assert_eq!(record.head, 60, "each send stored once");
            drop(tx);
            assert!(runs(&host, 0).await, "the shard actor stopped");
            host.stop();

            // The shard starts again (another owner, empty memory) with
            // every send retried and waiting: the early answers are the
            // store's records, and each retry gets its original msg id.
            let (bus, _, mut edges) = InProcessBus::new(1, std::slice::from_ref(&edge), 1_024);
            let mut answers = edges.remove(&edge).unwrap();
            let router = Router::new(Arc::new(Ring::new(1)), Arc::new(bus));
            let host = ShardHost::new(&config(), store.clone(), router, iris_clock::system(), 2);
            let (tx, rx) = tokio::sync::mpsc::channel(1_024);
            for i in 0..60 {
                tx.send(send(i)).await.unwrap();
            }
            host.start(ShardId(0), rx, None);
            for (id, msg_id) in accepted(&mut answers, 60, deadline).await {
                assert_eq!(Some(&msg_id), ids[&id].first(), "{id}: the original msg id");
            }
            let record = store.load_user(&UserKey::new("acme", "bob")).await.unwrap();
            assert_eq!(record.head, 60, "no retry stored again");
            drop(tx);
            assert!(runs(&host, 0).await, "the second shard actor stopped");
            host.stop();
        });
    }

    /// Every answer an edge receives to a send, as (client id, msg id or
    /// error code), until `n` arrived; panics at `deadline`.
    async fn answers(
        edge: &mut iris_router::EdgeReceiver,
        n: usize,
        deadline: tokio::time::Instant,
    ) -> Vec<(String, Result<String, iris_types::ErrorCode>)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let env = tokio::time::timeout_at(deadline, edge.recv())
                .await
                .expect("every send answered in time")
                .expect("the edge's queue is open");
            for part in env.body.into_parts() {
                if let iris_envelope::EdgeInput::Notice { notice, .. } = part {
                    match notice {
                        iris_envelope::Notice::Accepted { id, msg_id, .. } => out.push((id, Ok(msg_id))),
                        iris_envelope::Notice::Refused { code, id, .. } => {
                            out.push((id.expect("a send's error names it"), Err(code)))
                        }
                        _ => {}
                    }
                }
            }
        }
        out
    }

    /// Commits that applied but answered a failure (a reply lost, as a
    /// Redis commit that timed out after running) reset the shard while
    /// the sends behind were looked up early, before those commits wrote:
    /// their early answers ("never seen") are stale and must not be used.
    /// Each send is followed, five sends later, by its retry (within the
    /// look-ahead); then everything is retried until accepted. Each client
    /// id must end stored once, with one msg id for all its acceptances.
    #[test]
    fn early_look_ups_from_before_a_lost_commit_reply_are_not_trusted() {
        use iris_envelope::EdgeId;
        use iris_storage::memory::MemoryStore;
        actix::System::new().block_on(async {
            let memory = Arc::new(MemoryStore::default());
            let store: Arc<dyn Store> = memory.clone();
            let edge = EdgeId("e".into());
            let (bus, _, mut edges) = InProcessBus::new(1, std::slice::from_ref(&edge), 1_024);
            let mut edge_rx = edges.remove(&edge).unwrap();
            let router = Router::new(Arc::new(Ring::new(1)), Arc::new(bus));
            let host = ShardHost::new(&config(), store.clone(), router, iris_clock::system(), 1);
            let bob = UserKey::new("acme", "bob");
            let send = |i: usize| send_to_bob(&edge, i);
            const SENDS: usize = 40;
            memory.lose_replies(6);
            let (tx, rx) = tokio::sync::mpsc::channel(1_024);
            let mut sent = 0;
            for i in 0..SENDS {
                tx.send(send(i)).await.unwrap();
                sent += 1;
                if i >= 5 {
                    tx.send(send(i - 5)).await.unwrap();
                    sent += 1;
                }
            }
            host.start(ShardId(0), rx, None);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let mut ids: std::collections::HashMap<String, Vec<String>> = Default::default();
            let mut refused = 0;
            for (id, answer) in answers(&mut edge_rx, sent, deadline).await {
                match answer {
                    Ok(msg_id) => ids.entry(id).or_default().push(msg_id),
                    Err(code) => {
                        assert_eq!(code, iris_types::ErrorCode::Unavailable, "{id}");
                        refused += 1;
                    }
                }
            }
            assert!(refused > 0, "the lost replies were answered unavailable");
            // The clients retry whatever was not accepted, until it is.
            for _ in 0..10 {
                let missing: Vec<usize> = (0..SENDS).filter(|i| !ids.contains_key(&format!("c{i}"))).collect();
                if missing.is_empty() {
                    break;
                }
                for i in &missing {
                    tx.send(send(*i)).await.unwrap();
                }
                for (id, answer) in answers(&mut edge_rx, missing.len(), deadline).await {
                    if let Ok(msg_id) = answer {
                        ids.entry(id).or_default().push(msg_id);
                    }
                }
            }
            assert_eq!(ids.len(), SENDS, "every client id accepted in the end");
            for (id, msg_ids) in &ids {
                assert!(
                    msg_ids.iter().all(|m| m == &msg_ids[0]),
                    "{id}: one msg id for every acceptance, got {msg_ids:?}"
                );
            }
            let inbox = memory.inbox(&bob);
            let bodies: std::collections::BTreeSet<&[u8]> = inbox.iter().map(|m| m.body.as_ref()).collect();
            assert_eq!(bodies.len(), inbox.len(), "no send stored twice: {} stored", inbox.len());
            assert_eq!(inbox.len(), SENDS, "each send stored once");
            drop(tx);
            assert!(runs(&host, 0).await, "the shard actor stopped");
            host.stop();
        });
    }

    #[test]
    fn a_shard_whose_input_closes_stops() {
        let dir = tempfile::tempdir().unwrap();
        actix::System::new().block_on(async {
            let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
            let (bus, _, _) = InProcessBus::new(1, &[], 16);
            let router = Router::new(Arc::new(Ring::new(1)), Arc::new(bus));
            let cfg = config();
            let host = ShardHost::new(&cfg, store, router, iris_clock::system(), 1);
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            host.start(ShardId(0), rx, None);
            assert!(runs(&host, 1).await, "the shard actor started");
            // The partition is revoked: its input closes.
            drop(tx);
            assert!(runs(&host, 0).await, "the shard actor stopped, lease timer and all");
            host.stop();
        });
    }
}
