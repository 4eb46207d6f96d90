//! QUIC transport: one client-opened bidirectional stream per connection,
//! carrying frames as a u32 big-endian length and a payload (JSON when it
//! starts with `{`, else the binary codec). The same session driver and
//! state machine as WebSocket run on top.

use crate::session::{EdgeContext, Inbound, LiveGuard, Transport, spawn_session};
use crate::state::CloseReason;
use iris_protocol::Encoding;
use iris_protocol::framing::{self, Assembled, FrameAssembler};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Binds the QUIC listener's UDP socket, asking for large buffers
/// ([`iris_protocol::quic::SOCKET_BUFFER_BYTES`], ADR 0014), and starts the
/// endpoint. Returns the endpoint and the buffers the kernel granted.
pub fn endpoint(
    server: quinn::ServerConfig,
    addr: std::net::SocketAddr,
) -> std::io::Result<(quinn::Endpoint, iris_protocol::quic::SocketBuffers)> {
    let (socket, buffers) = iris_protocol::quic::udp_socket(addr)?;
    let runtime = quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime)?;
    Ok((endpoint, buffers))
}

/// Accepts connections until shutdown.
pub async fn serve(endpoint: quinn::Endpoint, ctx: Arc<EdgeContext>) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    let (retry_above, max) = ctx.quic_handshakes;
                    let pending = ctx.handshakes.load(Ordering::Acquire);
                    // Under a load of handshakes, a client first proves its
                    // address: the Retry costs the node no state.
                    if pending >= retry_above && !incoming.remote_address_validated() && incoming.may_retry() {
                        metrics::counter!("iris_quic_retries_total").increment(1);
                        if let Err(e) = incoming.retry() {
                            tracing::debug!(error = %e, "QUIC retry failed");
                        }
                        continue;
                    }
                    if pending >= max {
                        metrics::counter!("iris_connections_refused_total", "transport" => "quic").increment(1);
                        incoming.refuse();
                        continue;
                    }
                    let Some(live) = LiveGuard::admit(&ctx) else {
                        // CONNECTION_REFUSED, at once: the client's connect fails.
                        metrics::counter!("iris_connections_refused_total", "transport" => "quic").increment(1);
                        incoming.refuse();
                        continue;
                    };
                    // Counted from here, so that a burst of Initials accepted
                    // before their tasks run cannot pass the caps above.
                    let handshake = Handshake::start(&ctx);
                    tokio::spawn(handle(incoming, ctx.clone(), live, handshake));
                }
                None => break,
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// Counts a QUIC handshake in progress until dropped.
struct Handshake(Arc<EdgeContext>);

impl Handshake {
    fn start(ctx: &Arc<EdgeContext>) -> Self {
        ctx.handshakes.fetch_add(1, Ordering::AcqRel);
        Self(ctx.clone())
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs the QUIC handshake and starts the session.
async fn handle(incoming: quinn::Incoming, ctx: Arc<EdgeContext>, live: LiveGuard, handshake: Handshake) {
    let peer = incoming.remote_address().ip();
    // A Retry proved the address already; otherwise only the handshake will.
    let validated = incoming.remote_address_validated();
    let hello_timeout = Duration::from_millis(ctx.session_cfg.hello_timeout_ms);
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "QUIC accept failed");
            return;
        }
    };
    // Accepting 0.5-RTT lets a resumed client's hello (sent as 0-RTT data)
    // be answered without waiting for the handshake to finish. 0-RTT data
    // can be replayed by an attacker: hello is harmless to repeat, and
    // sends are deduplicated by their client id.
    let (conn, proven) = match connecting.into_0rtt() {
        Ok((conn, done)) => {
            // The handshake goes on beside the session (0.5-RTT): it counts
            // as in progress until it completes or the connection ends, and
            // the session checks a token only after that (`address_proven`).
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                done.await;
                drop(handshake);
                // No receiver: the session has ended, and nobody waits.
                tx.send_replace(true);
            });
            (conn, (!validated).then_some(rx))
        }
        Err(connecting) => match tokio::time::timeout(hello_timeout, connecting).await {
            Ok(Ok(conn)) => (conn, None),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "QUIC handshake failed");
                return;
            }
            Err(_) => return,
        },
    };
    let (send, recv) = match tokio::time::timeout(hello_timeout, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        _ => {
            conn.close(CloseReason::Unauthorized.code().into(), b"no session stream");
            return;
        }
    };
    let reader = FrameAssembler::new(ctx.max_frame_bytes);
    let seen_datagrams = conn.stats().udp_rx.datagrams;
    spawn_session(QuicTransport { conn, send, recv, reader, seen_datagrams, proven }, ctx, peer, live);
}

/// Reads length-prefixed frames. Cancel-safe: the partial frame lives in
/// the assembler and `RecvStream::read` is cancel-safe.
async fn next_frame(assembler: &mut FrameAssembler, recv: &mut quinn::RecvStream) -> Inbound {
    loop {
        let n = match recv.read(assembler.buf()).await {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => return Inbound::Gone,
        };
        match assembler.filled(n) {
            Assembled::Need => {}
            Assembled::TooLarge(_) => return Inbound::TooLarge,
            Assembled::Frame(frame) => {
                let encoding = iris_protocol::framing::encoding_of(&frame);
                return Inbound::Frame(frame, encoding);
            }
        }
    }
}

struct QuicTransport {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    reader: FrameAssembler,
    /// Datagrams received as of the last liveness check.
    seen_datagrams: u64,
    /// Until the client's address is proven: whether the handshake is done.
    proven: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Transport for QuicTransport {
    async fn next(&mut self) -> Inbound {
        next_frame(&mut self.reader, &mut self.recv).await
    }

    async fn feed(&mut self, frame: Vec<u8>, _encoding: Encoding) -> bool {
        self.send.write_all(&framing::frame(&frame)).await.is_ok()
    }

    async fn flush(&mut self) -> bool {
        // quinn sends written data as soon as congestion control allows.
        true
    }

    async fn address_proven(&mut self) -> bool {
        let Some(done) = &mut self.proven else { return true };
        if !*done.borrow() {
            metrics::counter!("iris_quic_hellos_before_handshake_total").increment(1);
        }
        // The watch is set when the handshake completes or the connection
        // ends first; only a connection still open has proven its address.
        let proven = done.wait_for(|d| *d).await.is_ok() && self.conn.close_reason().is_none();
        if proven {
            self.proven = None;
        }
        proven
    }

    fn alive(&mut self) -> bool {
        let now = self.conn.stats().udp_rx.datagrams;
        let alive = now > self.seen_datagrams;
        self.seen_datagrams = now;
        alive
    }

    async fn close(&mut self, reason: CloseReason) {
        // Let the last frames (an error, typically) reach the client before
        // the connection closes, but not for long.
        if self.send.finish().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.send.stopped()).await;
        }
        self.conn.close(reason.code().into(), reason.as_str().as_bytes());
    }
}
