//! Iris edge: client sessions, the local presence map, and the dispatcher
//! that hands envelopes from the bus to sessions.
//!
//! `state` holds the session state machine (all decisions, unit-tested);
//! `ws` is the WebSocket shell around it; `presence` is the local map.

pub mod presence;
pub mod state;
pub mod ws;

use iris_auth::Verifier;
use iris_envelope::{EdgeId, EdgeInput};
use iris_protocol::ServerFrame;
use iris_router::{EdgeReceiver, Router};
pub use presence::{Delivery, LocalPresence, SessionEvent};
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
}

/// A running edge.
pub struct EdgeHandle {
    /// Where the WebSocket listener is bound.
    pub ws_addr: SocketAddr,
    ctx: Arc<ws::EdgeContext>,
    shutdown: watch::Sender<bool>,
}

impl EdgeHandle {
    /// Sessions (and handshakes) in progress.
    pub fn live_sessions(&self) -> usize {
        self.ctx.live.load(Ordering::Acquire)
    }

    /// Stops accepting and closes every session with a close reason.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits (up to `deadline`) until every session has finished.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while self.live_sessions() > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// Hands envelopes for this edge to their sessions. Never blocks: a full
/// session queue drops a droppable frame or cuts the session off.
pub async fn dispatch(mut rx: EdgeReceiver, presence: Arc<LocalPresence>) {
    while let Some(env) = rx.recv().await {
        match env.body {
            EdgeInput::Frame { to, frame, droppable } => {
                let frame: Arc<ServerFrame> = Arc::new(frame);
                for id in to.as_slice() {
                    match presence.deliver(*id, SessionEvent::Frame(frame.clone()), droppable) {
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
        }
    }
}

/// Starts the edge: the WebSocket listener and the dispatcher.
pub fn start_edge(
    cfg: EdgeConfig,
    listener: TcpListener,
    verifier: Arc<Verifier>,
    router: Router,
    edge_rx: EdgeReceiver,
) -> std::io::Result<EdgeHandle> {
    let ws_addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let presence = Arc::new(LocalPresence::new());
    // Session ids start at a random point so that ids from an earlier run
    // are never mistaken for live ones.
    let start = rand_start();
    let ctx = Arc::new(ws::EdgeContext {
        edge: cfg.edge,
        session_cfg: Arc::new(cfg.session),
        queue_frames: cfg.queue_frames,
        max_frame_bytes: cfg.max_frame_bytes,
        verifier,
        router,
        presence: presence.clone(),
        next_session: AtomicU64::new(start),
        live: AtomicUsize::new(0),
        shutdown: shutdown_rx,
    });
    tokio::spawn(dispatch(edge_rx, presence));
    tokio::spawn(ws::serve(listener, ctx.clone()));
    Ok(EdgeHandle { ws_addr, ctx, shutdown })
}

fn rand_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish() >> 16
}
