//! WebSocket sessions: one small tokio task per connection that pumps bytes
//! between the socket and its [`SessionState`], and carries out its outputs.
//!
//! Why a task per session and not an actix actor per session: memory per
//! idle session is a headline goal, and an actix actor adds a context, a
//! mailbox and an address per connection. The session task holds only the
//! socket, tungstenite's small buffers (configured to a few hundred bytes),
//! the state and its queue (allocated lazily). See docs/adr/0003.

use crate::presence::{LocalPresence, SessionEvent};
use crate::state::{CloseReason, SessionConfig, SessionOutput, SessionState};
use futures::{SinkExt, StreamExt};
use iris_auth::Verifier;
use iris_envelope::{EdgeId, SessionAddr, SessionId};
use iris_protocol::{Encoding, ServerFrame};
use iris_router::{PublishError, Router};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The WebSocket path.
pub const WS_PATH: &str = "/v1/ws";

/// Frames written to the socket before one flush.
const WRITE_BATCH: usize = 64;

/// A client that does not take a write within this time is gone: its
/// session closes (and the shard marks it offline) instead of hanging.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

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
    pub verifier: Arc<Verifier>,
    /// Where envelopes go.
    pub router: Router,
    /// The local presence map.
    pub presence: Arc<LocalPresence>,
    pub(crate) next_session: AtomicU64,
    pub(crate) live: AtomicUsize,
    pub(crate) shutdown: watch::Receiver<bool>,
}

struct LiveGuard<'a>(&'a AtomicUsize);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, ctx: Arc<EdgeContext>) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    ctx.live.fetch_add(1, Ordering::AcqRel);
                    tokio::spawn(run_session(stream, ctx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: back off briefly
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

fn check_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == WS_PATH {
        Ok(resp)
    } else {
        let mut r = ErrorResponse::new(Some(format!("not found: the WebSocket endpoint is {WS_PATH}")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        Err(r)
    }
}

async fn run_session(stream: TcpStream, ctx: Arc<EdgeContext>) {
    let _live = LiveGuard(&ctx.live);
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(ctx.max_frame_bytes * 2)
        .max_message_size(Some(ctx.max_frame_bytes))
        .max_frame_size(Some(ctx.max_frame_bytes));
    let hello_timeout = Duration::from_millis(ctx.session_cfg.hello_timeout_ms);
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config));
    let ws = match tokio::time::timeout(hello_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => return,
    };
    let id = SessionId(ctx.next_session.fetch_add(1, Ordering::Relaxed));
    let addr = SessionAddr { edge: ctx.edge.clone(), session: id };
    let state = SessionState::new(ctx.session_cfg.clone(), addr, now_ms());
    let mut session = WsSession { ws, state, rx: None, ctx: ctx.clone(), id };
    session.run().await;
    session.finish().await;
}

struct WsSession {
    ws: WebSocketStream<TcpStream>,
    state: SessionState,
    rx: Option<mpsc::Receiver<SessionEvent>>,
    ctx: Arc<EdgeContext>,
    id: SessionId,
}

async fn recv(rx: &mut Option<mpsc::Receiver<SessionEvent>>) -> Option<SessionEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn close_code(reason: CloseReason) -> CloseCode {
    match reason {
        CloseReason::Unauthorized => CloseCode::Policy,
        CloseReason::Garbage => CloseCode::Protocol,
        CloseReason::Timeout => CloseCode::Away,
        CloseReason::Overloaded => CloseCode::Again,
        CloseReason::Shutdown => CloseCode::Away,
        CloseReason::ClientGone => CloseCode::Normal,
        CloseReason::TooLarge => CloseCode::Size,
        CloseReason::Unavailable => CloseCode::Again,
    }
}

impl WsSession {
    async fn run(&mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        if *shutdown.borrow() {
            self.state.close_now(CloseReason::Shutdown);
        }
        loop {
            if !self.carry_out().await || self.state.is_closed() {
                return;
            }
            let wait = (self.state.poll_timeout() - now_ms()).clamp(0, 3_600_000) as u64;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
            tokio::select! {
                biased;
                _ = shutdown.changed() => self.state.close_now(CloseReason::Shutdown),
                event = recv(&mut self.rx) => match event {
                    Some(SessionEvent::Frame(frame)) => {
                        // An error before welcome means the shard could not
                        // open the session: say so and close.
                        let refused = !self.state.is_open() && matches!(*frame, ServerFrame::Error(_));
                        if !self.write_frames(frame).await {
                            return;
                        }
                        if refused {
                            self.state.close_now(CloseReason::Unavailable);
                        }
                    }
                    Some(SessionEvent::Welcome(head)) => self.state.welcomed(now_ms(), head),
                    None => self.state.close_now(CloseReason::Overloaded),
                },
                msg = self.ws.next(), if self.state.wants_input() => self.on_message(msg).await,
                _ = tokio::time::sleep_until(deadline) => self.state.handle_timeout(now_ms()),
            }
        }
    }

    async fn on_message(&mut self, msg: Option<Result<Message, WsError>>) {
        let now = now_ms();
        let kind = match &msg {
            Some(Ok(Message::Text(t))) => Some(self.state.handle_frame(now, t.as_bytes(), Encoding::Json)),
            Some(Ok(Message::Binary(b))) => Some(self.state.handle_frame(now, b, Encoding::Binary)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                self.state.touch(now);
                // tungstenite queued the pong; push it out now.
                if !self.flush().await {
                    self.state.close_now(CloseReason::ClientGone);
                }
                None
            }
            Some(Ok(Message::Frame(_))) => None,
            Some(Ok(Message::Close(_))) | None => {
                self.state.close_now(CloseReason::ClientGone);
                None
            }
            Some(Err(WsError::Capacity(_))) => {
                self.state.frame_too_large();
                None
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket read failed");
                self.state.close_now(CloseReason::ClientGone);
                None
            }
        };
        if let Some(kind) = kind {
            metrics::counter!("iris_frames_in_total", "type" => kind).increment(1);
        }
    }

    fn encode(&self, frame: &ServerFrame) -> Message {
        metrics::counter!("iris_frames_out_total", "type" => frame.type_name()).increment(1);
        if let ServerFrame::Message(_) = frame {
            metrics::counter!("iris_messages_delivered_total").increment(1);
        }
        match self.state.encoding().unwrap_or(Encoding::Json) {
            Encoding::Json => Message::text(String::from_utf8(frame.to_json()).expect("JSON is UTF-8")),
            Encoding::Binary => Message::binary(frame.to_binary()),
        }
    }

    /// Queues one message on the socket, within the write deadline.
    async fn feed(&mut self, msg: Message) -> bool {
        matches!(tokio::time::timeout(WRITE_DEADLINE, self.ws.feed(msg)).await, Ok(Ok(())))
    }

    /// Flushes the socket, within the write deadline.
    async fn flush(&mut self) -> bool {
        matches!(tokio::time::timeout(WRITE_DEADLINE, self.ws.flush()).await, Ok(Ok(())))
    }

    /// Writes one queued frame and whatever else is queued (bounded), then flushes.
    async fn write_frames(&mut self, first: Arc<ServerFrame>) -> bool {
        let msg = self.encode(&first);
        if !self.feed(msg).await {
            return false;
        }
        for _ in 0..WRITE_BATCH {
            let Some(rx) = self.rx.as_mut() else { break };
            match rx.try_recv() {
                Ok(SessionEvent::Frame(f)) => {
                    let msg = self.encode(&f);
                    if !self.feed(msg).await {
                        return false;
                    }
                }
                Ok(SessionEvent::Welcome(head)) => {
                    self.state.welcomed(now_ms(), head);
                    break;
                }
                Err(_) => break,
            }
        }
        self.flush().await
    }

    /// Carries out the state's outputs. False when the socket is gone.
    async fn carry_out(&mut self) -> bool {
        let mut wrote = false;
        while let Some(out) = self.state.poll_output() {
            match out {
                SessionOutput::Send(frame) => {
                    let msg = self.encode(&frame);
                    if !self.feed(msg).await {
                        return false;
                    }
                    wrote = true;
                }
                SessionOutput::Route { env, ephemeral: true } => match self.ctx.router.try_to_shard(env) {
                    Ok(()) => {}
                    Err(PublishError::Full(_) | PublishError::Closed(_)) => {
                        metrics::counter!("iris_ephemeral_dropped_total").increment(1);
                    }
                },
                SessionOutput::Route { env, ephemeral: false } => {
                    if let Err(e) = self.ctx.router.to_shard(env).await {
                        tracing::warn!(error = %e, "route failed");
                        let frame =
                            ServerFrame::error(iris_protocol::ErrorCode::Unavailable, "node is shutting down", None);
                        let msg = self.encode(&frame);
                        if !self.feed(msg).await {
                            return false;
                        }
                        wrote = true;
                    }
                }
                SessionOutput::Verify(token) => {
                    let result = self.ctx.verifier.verify(&token).map_err(|e| {
                        // Never log the token; the reason stays server-side.
                        tracing::debug!(reason = %e, "token refused");
                    });
                    self.state.authenticated(result);
                }
                SessionOutput::Register(user) => {
                    self.rx = Some(self.ctx.presence.register(self.id, user, self.ctx.queue_frames));
                }
                SessionOutput::Close(reason) => {
                    let frame = CloseFrame { code: close_code(reason), reason: reason.as_str().into() };
                    // The peer may already be gone; nothing more to do then.
                    let _ = tokio::time::timeout(WRITE_DEADLINE, self.ws.close(Some(frame))).await;
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
            self.ctx.presence.unregister(self.id);
        }
        for env in self.state.farewell() {
            if let Err(e) = self.ctx.router.to_shard(env).await {
                tracing::debug!(error = %e, "farewell not delivered (shutting down)");
            }
        }
    }
}
