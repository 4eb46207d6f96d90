//! The session driver shared by every transport: one small tokio task per
//! connection that pumps frames between the transport and its
//! [`SessionState`], and carries out the state's outputs.
//!
//! Why a task per session and not an actix actor per session: memory per
//! idle session is a headline goal, and an actix actor adds a context, a
//! mailbox and an address per connection. See docs/adr/0003.

use crate::guard::AuthGuard;
use crate::presence::{LocalPresence, QueueReceiver, SessionEvent};
use crate::state::{AuthRefusal, CloseReason, RouteRefusal, SessionConfig, SessionOutput, SessionState, token_checked};
use iris_auth::KeyStore;
use iris_clock::SharedClock;
use iris_envelope::{EdgeId, OwnerMark, SessionAddr, SessionId, ShardInput};
use iris_protocol::{Encoding, ServerFrame};
use iris_router::{PublishError, Router};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Frames written to the transport before one flush.
const WRITE_BATCH: usize = 64;

/// A client that does not take a write within this time is gone: its
/// session closes (and the shard marks it offline) instead of hanging.
pub(crate) const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// What every session of an edge shares.
pub struct EdgeContext {
    /// This edge.
    pub edge: EdgeId,
    /// Session limits.
    pub session_cfg: Arc<SessionConfig>,
    /// Frames queued per session.
    pub queue_frames: usize,
    /// Largest frame read whole.
    pub max_frame_bytes: usize,
    /// Token verification.
    pub keys: Arc<KeyStore>,
    /// Failed-auth limits per source address.
    pub guard: AuthGuard,
    /// Sends per second per tenant, across all its sessions here.
    pub tenant_sends: iris_auth::budget::TenantBudget,
    /// Where envelopes go.
    pub router: Router,
    /// The local presence map.
    pub presence: Arc<LocalPresence>,
    pub(crate) next_session: AtomicU64,
    pub(crate) live: AtomicUsize,
    /// Connections held at once; `LiveGuard::admit` refuses beyond.
    pub(crate) max_connections: usize,
    /// QUIC: handshakes above which clients get a Retry, and at most.
    pub(crate) quic_handshakes: (usize, usize),
    /// QUIC handshakes in progress.
    pub(crate) handshakes: AtomicUsize,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Where the time handed to every session's state comes from.
    pub clock: SharedClock,
}

impl EdgeContext {
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn next_id(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }
}

/// Counts a live connection for graceful shutdown.
pub(crate) struct LiveGuard(Arc<EdgeContext>);

impl LiveGuard {
    /// Counts a new connection, unless the node holds `max_connections`
    /// already: then `None`, and the caller refuses it.
    pub(crate) fn admit(ctx: &Arc<EdgeContext>) -> Option<Self> {
        let max = ctx.max_connections;
        ctx.live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Self(ctx.clone()))
    }
}

/// What a WebSocket client over plain TCP reads when the node is at its
/// connection limit (written without waiting; then the socket closes).
pub(crate) const AT_CONNECTION_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nContent-Length: 35\r\nConnection: close\r\n\r\nnode at its connection limit; retry";

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Something a transport received.
pub(crate) enum Inbound {
    /// A whole frame, and what the transport says its encoding is.
    Frame(Vec<u8>, Encoding),
    /// Proof of life without a frame (a WebSocket ping).
    Touch,
    /// A frame over the size limit.
    TooLarge,
    /// The client closed or the connection broke.
    Gone,
}

/// A connection's byte plumbing. `next` must be cancel-safe.
pub(crate) trait Transport: Send {
    /// The next thing from the client.
    fn next(&mut self) -> impl std::future::Future<Output = Inbound> + Send;
    /// Queues one encoded frame.
    fn feed(&mut self, frame: Vec<u8>, encoding: Encoding) -> impl std::future::Future<Output = bool> + Send;
    /// Pushes queued frames out.
    fn flush(&mut self) -> impl std::future::Future<Output = bool> + Send;
    /// Closes with a reason.
    fn close(&mut self, reason: CloseReason) -> impl std::future::Future<Output = ()> + Send;
    /// Did the client send anything the session did not see (transport
    /// keep-alives) since the last call?
    fn alive(&mut self) -> bool {
        false
    }
    /// Has the transport queued bytes of its own (a pong) to flush?
    fn wants_flush(&self) -> bool {
        false
    }
    /// Waits until the client's address is proven (the QUIC handshake done
    /// for a hello that came as 0-RTT data); false if it never will be (the
    /// connection ended first). TCP transports are proven from the start.
    fn address_proven(&mut self) -> impl std::future::Future<Output = bool> + Send {
        std::future::ready(true)
    }
}

/// Runs one session over a transport until it ends, in a task of its own
/// that holds only the session (`live` counts it for graceful shutdown).
///
/// The connection's setup (TLS, the WebSocket upgrade, the QUIC handshake)
/// runs in the task that accepted it, which then ends. A task keeps the
/// largest state of its future for its whole life, so the session task must
/// not contain the setup: with it, an idle WebSocket session's task was
/// 2.8 KiB instead of about 1 KiB (docs/performance.md).
pub(crate) fn spawn_session<T: Transport + 'static>(
    transport: T,
    ctx: Arc<EdgeContext>,
    peer: IpAddr,
    live: LiveGuard,
) {
    let id = ctx.next_id();
    let addr = SessionAddr { edge: ctx.edge.clone(), session: id };
    let state = SessionState::new(ctx.session_cfg.clone(), addr, ctx.now_ms());
    let rx = Some(ctx.presence.register(id, ctx.queue_frames));
    let mut session = Session { t: transport, state, rx, ctx, id, peer, accepted: false };
    tokio::spawn(async move {
        let _live = live;
        session.run().await;
        Box::pin(session.finish()).await;
    });
}

struct Session<T> {
    t: T,
    state: SessionState,
    rx: Option<QueueReceiver>,
    ctx: Arc<EdgeContext>,
    id: SessionId,
    peer: IpAddr,
    /// Counted in the presence map's accepted sessions.
    accepted: bool,
}

async fn recv(rx: &mut Option<QueueReceiver>) -> Option<SessionEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<T: Transport> Session<T> {
    async fn run(&mut self) {
        // Shutdown closes the session's queue (`LocalPresence::close_all`);
        // one that started after that sees the flag here.
        if *self.ctx.shutdown.borrow() {
            self.state.close_now(CloseReason::Shutdown);
        }
        // The task keeps its future's largest state for the connection's
        // life, idle or not (memory per idle session is a headline goal,
        // docs/performance.md). So the long-lived loop awaits only small
        // futures inline; the large ones (carrying out outputs, writing a
        // batch of deliveries) are boxed and exist only while they run.
        loop {
            if self.state.has_output() && !Box::pin(self.carry_out()).await {
                return;
            }
            if self.t.wants_flush() && !Box::pin(self.flush()).await {
                return;
            }
            if self.state.is_closed() {
                return;
            }
            let wait = (self.state.poll_timeout() - self.ctx.now_ms()).clamp(0, 3_600_000) as u64;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
            let reading = self.state.wants_input();
            tokio::select! {
                biased;
                event = recv(&mut self.rx) => match event {
                    Some(SessionEvent::Frame(frame)) => {
                        if !Box::pin(self.write_frames(frame)).await {
                            return;
                        }
                    }
                    Some(SessionEvent::Presence(frame, owner)) => {
                        if self.fresh(&frame, owner) && !Box::pin(self.write_frames(frame)).await {
                            return;
                        }
                    }
                    Some(SessionEvent::Welcome(head)) => self.state.welcomed(self.ctx.now_ms(), head),
                    Some(SessionEvent::Resync(region, shard)) => self.resync(&region, shard),
                    None => self.state.queue_closed(*self.ctx.shutdown.borrow()),
                },
                inbound = self.t.next(), if reading => self.on_inbound(inbound),
                _ = tokio::time::sleep_until(deadline) => {
                    let now = self.ctx.now_ms();
                    // QUIC keep-alives are proof of life too ("any frame counts").
                    if self.t.alive() {
                        self.state.touch(now);
                    }
                    self.state.handle_timeout(now);
                }
            }
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let now = self.ctx.now_ms();
        match inbound {
            Inbound::Frame(bytes, kind) => {
                let ty = self.state.handle_frame(now, &bytes, kind);
                metrics::counter!("iris_frames_in_total", "type" => ty).increment(1);
            }
            Inbound::Touch => self.state.touch(now),
            Inbound::TooLarge => self.state.frame_too_large(),
            Inbound::Gone => self.state.close_now(CloseReason::ClientGone),
        }
    }

    fn encode(&self, frame: &ServerFrame) -> (Vec<u8>, Encoding) {
        metrics::counter!("iris_frames_out_total", "type" => frame.type_name()).increment(1);
        if let ServerFrame::Message(_) = frame {
            metrics::counter!("iris_messages_delivered_total").increment(1);
        }
        let encoding = self.state.encoding().unwrap_or(Encoding::Json);
        (frame.encode(encoding), encoding)
    }

    fn resync(&mut self, region: &str, shard: iris_envelope::ShardId) {
        let router = &self.ctx.router;
        self.state.resync(|user| router.owns(user, region, shard));
    }

    async fn feed(&mut self, frame: &ServerFrame) -> bool {
        let (bytes, encoding) = self.encode(frame);
        matches!(tokio::time::timeout(WRITE_DEADLINE, self.t.feed(bytes, encoding)).await, Ok(true))
    }

    /// Writes a frame that came from the shards, and tells the state.
    async fn feed_from_shard(&mut self, frame: &ServerFrame) -> bool {
        if !self.feed(frame).await {
            return false;
        }
        self.state.wrote_from_shard(frame);
        true
    }

    /// Whether a marked presence word is to be written (a zombie's is not).
    fn fresh(&mut self, frame: &ServerFrame, owner: OwnerMark) -> bool {
        let fresh = self.state.presence_from(frame, owner);
        if !fresh {
            metrics::counter!("iris_presence_stale_dropped_total").increment(1);
        }
        fresh
    }

    async fn flush(&mut self) -> bool {
        matches!(tokio::time::timeout(WRITE_DEADLINE, self.t.flush()).await, Ok(true))
    }

    /// Writes one queued frame and whatever else is queued (bounded), then flushes.
    async fn write_frames(&mut self, first: Arc<ServerFrame>) -> bool {
        if !self.feed_from_shard(&first).await {
            return false;
        }
        for _ in 0..WRITE_BATCH {
            let Some(rx) = self.rx.as_mut() else { break };
            match rx.try_recv() {
                Ok(SessionEvent::Frame(f)) => {
                    if !self.feed_from_shard(&f).await {
                        return false;
                    }
                }
                Ok(SessionEvent::Presence(f, owner)) => {
                    if self.fresh(&f, owner) && !self.feed_from_shard(&f).await {
                        return false;
                    }
                }
                Ok(SessionEvent::Welcome(head)) => {
                    self.state.welcomed(self.ctx.now_ms(), head);
                    break;
                }
                Ok(SessionEvent::Resync(region, shard)) => {
                    self.resync(&region, shard);
                    break;
                }
                Err(_) => break,
            }
        }
        self.flush().await
    }

    /// Carries out the state's outputs. False when the connection is done.
    async fn carry_out(&mut self) -> bool {
        let mut wrote = false;
        while let Some(out) = self.state.poll_output() {
            match out {
                SessionOutput::Send(frame) => {
                    if !self.feed(&frame).await {
                        return false;
                    }
                    wrote = true;
                }
                SessionOutput::Route { env, ephemeral: true, .. } => match self.ctx.router.try_to_shard(env) {
                    Ok(()) => {}
                    Err(PublishError::Full(_) | PublishError::Closed(_)) => {
                        metrics::counter!("iris_ephemeral_dropped_total").increment(1);
                    }
                },
                SessionOutput::Route { env, ephemeral: false, charged } => {
                    let id = SessionState::refusal_id(&env);
                    let over = |t: &iris_envelope::Tenant| self.ctx.tenant_sends.take(t, 1, self.ctx.now_ms()).is_err();
                    if charged && env.owner.tenant().is_some_and(over) {
                        metrics::counter!("iris_tenant_rate_limited_total").increment(1);
                        let per_second = self.ctx.tenant_sends.per_second();
                        self.state.route_refused(id, RouteRefusal::TenantBudget { per_second });
                        continue;
                    }
                    // A sampled fraction of messages is traced from here
                    // (ADR 0023): the span runs until the bus has the send.
                    let mut env = env;
                    let mut span = match env.body {
                        ShardInput::Send { .. } => iris_trace::root("iris.edge.route", iris_trace::Kind::Producer),
                        _ => None,
                    };
                    if let Some(s) = &mut span {
                        env.trace = Some(s.ctx());
                        s.attr(
                            "iris.tenant",
                            iris_trace::Value::Str(env.owner.tenant().map(|t| t.to_string()).unwrap_or_default()),
                        );
                    }
                    let routed = self.ctx.router.to_shard(env).await;
                    if let Err(e) = routed {
                        tracing::warn!(error = %e, "route failed");
                        self.state.route_refused(id, RouteRefusal::Unavailable);
                        if let Some(s) = &mut span {
                            s.fail();
                        }
                    }
                    if let Some(s) = span {
                        s.end();
                    }
                }
                SessionOutput::Verify(token) => {
                    // A hello sent as 0-RTT data arrives before the handshake
                    // has proven the client's address; a refused token counts
                    // against that address, so it is checked only once the
                    // address is proven. A forged source never completes the
                    // handshake: its token is never read, nothing is counted
                    // against the address it claims, and it learns nothing.
                    let proving = Duration::from_millis(self.ctx.session_cfg.hello_timeout_ms);
                    if !matches!(tokio::time::timeout(proving, self.t.address_proven()).await, Ok(true)) {
                        return false;
                    }
                    let allowed = self.ctx.guard.allowed(self.peer, self.ctx.now_ms());
                    let result = token_checked(allowed, || {
                        // Never log the token; the reason stays server-side.
                        self.ctx.keys.verify(&token).inspect_err(|e| tracing::debug!(reason = %e, "token refused"))
                    });
                    if matches!(result, Err(AuthRefusal::Throttled)) {
                        metrics::counter!("iris_auth_throttled_total").increment(1);
                    }
                    self.state.authenticated(result);
                }
                SessionOutput::AuthFailed => {
                    self.ctx.guard.failed(self.peer, self.ctx.now_ms());
                    metrics::counter!("iris_auth_failures_total").increment(1);
                }
                SessionOutput::Register(_) => {
                    // In the map since the session started; now it counts.
                    if !self.accepted {
                        self.accepted = true;
                        self.ctx.presence.accepted();
                    }
                }
                SessionOutput::Close(reason) => {
                    if wrote {
                        self.flush().await;
                    }
                    // The peer may already be gone; nothing more to do then.
                    let _ = tokio::time::timeout(WRITE_DEADLINE, self.t.close(reason)).await;
                    return false;
                }
            }
        }
        if wrote && !self.flush().await {
            return false;
        }
        true
    }

    /// Unregisters and tells the shards the session is gone.
    async fn finish(&mut self) {
        if !self.state.is_closed() {
            self.state.close_now(CloseReason::ClientGone);
        }
        if self.rx.take().is_some() {
            self.ctx.presence.unregister(self.id, self.accepted);
        }
        for env in self.state.farewell() {
            if let Err(e) = self.ctx.router.to_shard(env).await {
                tracing::debug!(error = %e, "farewell not delivered (shutting down)");
            }
        }
    }
}
