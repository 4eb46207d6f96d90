//! Iris edge: client sessions, the local presence map, and the dispatcher
//! that hands envelopes from the bus to sessions.
//!
//! `state` holds the session state machine (all decisions, unit-tested);
//! `ws` is the WebSocket shell around it; `presence` is the local map.

/// Failed-auth limits per address (shared with the HTTP API, in `iris-auth`).
pub use iris_auth::guard;
pub mod drain;
pub mod notice;
pub mod presence;
pub mod quic;
pub mod session;
pub mod state;
pub mod tls;
pub mod ws;
/// The RFC 6455 codec (ADR 0013): public for the fuzz targets (`fuzz/`).
pub mod wsproto;

use iris_auth::KeyStore;
use iris_clock::SharedClock;
use iris_envelope::{EdgeId, EdgeInput, Notice};
use iris_protocol::ServerFrame;
use iris_router::{EdgeReceiver, Router};
pub use presence::{Delivery, LocalPresence, QueueReceiver, SessionEvent, TryRecvError};
pub use state::{CloseReason, SessionConfig, SessionState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Settings of an edge.
pub struct EdgeConfig {
    /// This edge's id.
    pub edge: EdgeId,
    /// Session limits.
    pub session: SessionConfig,
    /// Frames queued per session.
    pub queue_frames: usize,
    /// Largest frame read whole.
    pub max_frame_bytes: usize,
    /// Failed token checks allowed per source address per minute.
    pub failed_auth_per_minute: u32,
    /// Sends per second per tenant on this edge, and the burst above it.
    pub tenant_sends: (u32, u32),
    /// How often this edge renews its lease on every shard.
    pub lease_heartbeat: Duration,
    /// Client connections (WebSocket and QUIC) held at once; more are refused.
    pub max_connections: usize,
    /// QUIC handshakes in progress above which a client must prove its
    /// address first (Retry), and beyond which one is refused.
    pub quic_handshakes: (usize, usize),
    /// Where sessions read the time from (ADR 0019).
    pub clock: SharedClock,
    /// Where session ids start: drawn afresh at every start (or derived
    /// from the node's root seed), so that ids from an earlier run are not
    /// mistaken for live ones.
    pub seed: u64,
}

/// The listeners an edge serves on (already bound).
pub struct Listeners {
    /// Plain WebSocket.
    pub ws: Option<TcpListener>,
    /// WebSocket over TLS, with its acceptor.
    pub wss: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    /// QUIC.
    pub quic: Option<quinn::Endpoint>,
}

/// A running edge.
pub struct EdgeHandle {
    /// Where the WebSocket listener is bound.
    pub ws_addr: Option<SocketAddr>,
    /// Where the wss listener is bound.
    pub wss_addr: Option<SocketAddr>,
    /// Where the QUIC endpoint is bound.
    pub quic_addr: Option<SocketAddr>,
    ctx: Arc<session::EdgeContext>,
    shutdown: watch::Sender<bool>,
    /// Ends the lease renewals: only once the sessions are gone, so that a
    /// slow drain does not let the shards end them first.
    renewals: watch::Sender<bool>,
    quic: Option<quinn::Endpoint>,
}

impl EdgeHandle {
    /// Sessions (and handshakes) in progress.
    pub fn live_sessions(&self) -> usize {
        self.ctx.live.load(Ordering::Acquire)
    }

    /// Stops accepting, then closes the sessions held evenly over `spread`
    /// ([`drain::closes_due`]), each with the shutdown close reason, so
    /// that their clients reconnect elsewhere a few at a time. Returns once
    /// every session has been told (they finish on their own, see
    /// [`EdgeHandle::drain`]).
    pub async fn close_spread(&self, spread: Duration) {
        self.shutdown.send_replace(true);
        // Taken after the flag: a session that registers from now on sees
        // it when it starts and closes by itself.
        let ids = self.ctx.presence.ids();
        if !spread.is_zero() && ids.len() > 1 {
            tracing::info!(sessions = ids.len(), spread_ms = spread.as_millis() as u64, "closing sessions spread out");
            let start = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(drain::STEP);
            let mut closed = 0;
            while closed < ids.len() {
                tick.tick().await;
                let due = drain::closes_due(ids.len(), start.elapsed(), spread);
                ids[closed..due].iter().for_each(|id| self.ctx.presence.close(*id));
                closed = due;
            }
        }
        self.ctx.presence.close_all();
    }

    /// Waits (up to `deadline`) until every session has finished, then
    /// lets the QUIC endpoint send its last packets. The lease renewals end
    /// here.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while self.live_sessions() > 0 {
            if tokio::time::Instant::now() >= until {
                self.renewals.send_replace(true);
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.renewals.send_replace(true);
        if let Some(endpoint) = &self.quic {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let _ = tokio::time::timeout(left, endpoint.wait_idle()).await;
        }
        true
    }
}

/// Hands envelopes for this edge to their sessions. Never blocks: a full
/// session queue drops a droppable frame or cuts the session off.
pub async fn dispatch(mut rx: EdgeReceiver, presence: Arc<LocalPresence>) {
    while let Some(env) = rx.recv().await {
        // Sampled messages among these outputs: one span each, until the
        // frames are in their sessions' queues.
        let spans: Vec<iris_trace::Span> = env
            .traces
            .iter()
            .filter_map(|t| iris_trace::child("iris.edge.deliver", iris_trace::Kind::Consumer, t))
            .collect();
        for part in env.body.into_parts() {
            handle_part(part, &presence);
        }
        spans.into_iter().for_each(iris_trace::Span::end);
    }
}

/// One input for this edge. Resyncs are broadcast to every session: the
/// sessions themselves know their users and subscriptions.
fn handle_part(part: EdgeInput, presence: &LocalPresence) {
    match part {
        EdgeInput::Notice { to, notice, droppable } => {
            let owner = match &notice {
                Notice::MarkedPresence { owner, .. } => Some(*owner),
                _ => None,
            };
            let frame: Arc<ServerFrame> = Arc::new(notice::frame_of(notice));
            for id in to.as_slice() {
                let event = match owner {
                    Some(owner) => SessionEvent::Presence(frame.clone(), owner),
                    None => SessionEvent::Frame(frame.clone()),
                };
                match presence.deliver(*id, event, droppable) {
                    Delivery::Queued | Delivery::Unknown => {}
                    Delivery::Dropped => metrics::counter!("iris_ephemeral_dropped_total").increment(1),
                    Delivery::CutOff => {
                        metrics::counter!("iris_sessions_cut_off_total").increment(1);
                        tracing::info!(session = %id, "session fell behind; cut off");
                    }
                }
            }
        }
        EdgeInput::Welcome { session, inbox_head } => {
            presence.deliver(session, SessionEvent::Welcome(inbox_head), false);
        }
        EdgeInput::Reply { request, .. } => {
            // Service replies go to the HTTP front end's own queue.
            tracing::warn!(request = %request, "service reply reached a session edge; dropped");
        }
        EdgeInput::Resync { region, shard } => {
            let cut = presence.broadcast(&SessionEvent::Resync(region, shard));
            metrics::counter!("iris_edge_resyncs_total").increment(1);
            if cut > 0 {
                metrics::counter!("iris_sessions_cut_off_total").increment(cut as u64);
                tracing::info!(cut, "sessions fell behind during a resync; cut off");
            }
        }
        EdgeInput::Batch(_) => tracing::warn!("a batch inside a batch; dropped"),
    }
}

/// Renews this edge's lease on every shard until its sessions are gone
/// (`stop`, from [`EdgeHandle::drain`]). A shard that
/// stops hearing from an edge ends that edge's sessions (a crashed edge
/// never says goodbye). Heartbeats are ephemeral: dropped when a queue is
/// full, as one missed beat is covered by the next.
async fn heartbeat(edge: EdgeId, router: Router, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let dropped = router.edge_alive(&edge);
                metrics::counter!("iris_ephemeral_dropped_total").increment(dropped as u64);
            }
            _ = stop.changed() => return,
        }
    }
}

/// Starts the edge: its listeners and the dispatcher.
pub fn start_edge(
    cfg: EdgeConfig,
    listeners: Listeners,
    keys: Arc<KeyStore>,
    router: Router,
    edge_rx: EdgeReceiver,
) -> std::io::Result<EdgeHandle> {
    let cfg_heartbeat = cfg.lease_heartbeat;
    let ws_addr = listeners.ws.as_ref().map(TcpListener::local_addr).transpose()?;
    let wss_addr = listeners.wss.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
    let quic_addr = listeners.quic.as_ref().map(quinn::Endpoint::local_addr).transpose()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (renewals, renewals_rx) = watch::channel(false);
    let presence = Arc::new(LocalPresence::new());
    let start = session_id_start(cfg.seed);
    let ctx = Arc::new(session::EdgeContext {
        edge: cfg.edge,
        session_cfg: Arc::new(cfg.session),
        queue_frames: cfg.queue_frames,
        max_frame_bytes: cfg.max_frame_bytes,
        keys,
        guard: guard::AuthGuard::new(cfg.failed_auth_per_minute, 60_000),
        tenant_sends: iris_auth::budget::TenantBudget::new(cfg.tenant_sends.0, cfg.tenant_sends.1),
        router,
        presence: presence.clone(),
        next_session: AtomicU64::new(start),
        live: AtomicUsize::new(0),
        max_connections: cfg.max_connections,
        quic_handshakes: cfg.quic_handshakes,
        handshakes: AtomicUsize::new(0),
        shutdown: shutdown_rx,
        clock: cfg.clock,
    });
    tokio::spawn(dispatch(edge_rx, presence));
    tokio::spawn(heartbeat(ctx.edge.clone(), ctx.router.clone(), cfg_heartbeat, renewals_rx));
    let quic = listeners.quic.clone();
    // Sessions are taken only once every shard has heard that this edge
    // started (connections wait in the listeners' backlog meanwhile).
    let serving = ctx.clone();
    tokio::spawn(async move {
        announce_start(&serving).await;
        if let Some(l) = listeners.ws {
            tokio::spawn(ws::serve(l, serving.clone(), None));
        }
        if let Some((l, acceptor)) = listeners.wss {
            tokio::spawn(ws::serve(l, serving.clone(), Some(acceptor)));
        }
        if let Some(endpoint) = listeners.quic {
            tokio::spawn(quic::serve(endpoint, serving.clone()));
        }
    });
    Ok(EdgeHandle { ws_addr, wss_addr, quic_addr, ctx, shutdown, renewals, quic })
}

/// Attempts to tell every shard that this edge started, before it serves.
const ANNOUNCE_ATTEMPTS: u32 = 20;

/// Tells every shard that this edge (re)started, so that the sessions its
/// previous process held there end now rather than never: a process that
/// comes back under the same id within a lease renews the lease, and the
/// shards would keep the old sessions (users shown online, session slots
/// taken). Retried while the bus refuses; after `ANNOUNCE_ATTEMPTS` the edge
/// serves anyway and the old sessions end only when their users' shards
/// move (logged).
async fn announce_start(ctx: &session::EdgeContext) {
    let mut shutdown = ctx.shutdown.clone();
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=ANNOUNCE_ATTEMPTS {
        match ctx.router.edge_started(&ctx.edge).await {
            Ok(()) => return,
            Err(e) if attempt == ANNOUNCE_ATTEMPTS => {
                tracing::warn!(error = %e, "could not tell the shards this edge started; serving anyway");
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "telling the shards this edge started failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The first session id, from the edge's seed (a value already mixed by
/// `Seed::derive`): 48 bits, leaving room to count up without wrapping.
fn session_id_start(seed: u64) -> u64 {
    seed >> 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_start_at_48_bits_of_the_seed_leaving_room_to_count() {
        assert_eq!(session_id_start(u64::MAX), (1 << 48) - 1);
        assert_eq!(session_id_start(0x1234_5678_9abc_def0), 0x1234_5678_9abc);
        assert!(session_id_start(u64::MAX).checked_add(1 << 40).is_some(), "a trillion sessions before wrapping");
    }
}
