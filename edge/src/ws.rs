//! WebSocket transport (ws and wss): the [`wsproto`](crate::wsproto) codec
//! driven on readiness. An idle session holds its socket and a few words:
//! bytes are read into a stack chunk only when the socket is readable, and
//! write buffers exist only between a write and its flush.

use crate::session::{EdgeContext, Inbound, LiveGuard, Transport, spawn_session};
use crate::state::CloseReason;
use crate::wsproto::{self, Event, Reader, Upgrade};
use iris_protocol::Encoding;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The WebSocket path.
pub const WS_PATH: &str = "/v1/ws";

/// Accepts connections until shutdown; with `tls`, every connection is wss.
pub async fn serve(listener: TcpListener, ctx: Arc<EdgeContext>, tls: Option<TlsAcceptor>) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(live) = LiveGuard::admit(&ctx) else {
                        refuse_at_limit(stream, tls.is_some());
                        continue;
                    };
                    let (ctx, tls) = (ctx.clone(), tls.clone());
                    // This task does the setup and hands the session to a
                    // task of its own (`spawn_session`).
                    tokio::spawn(async move {
                        if let Err(e) = stream.set_nodelay(true) {
                            tracing::debug!(error = %e, "set_nodelay failed");
                        }
                        match tls {
                            None => upgrade(stream, ctx, peer.ip(), live).await,
                            Some(acceptor) => {
                                let hello_timeout = Duration::from_millis(ctx.session_cfg.hello_timeout_ms);
                                match tokio::time::timeout(hello_timeout, acceptor.accept(stream)).await {
                                    // Boxed: rustls's connection state is large,
                                    // and a plain session should not be sized
                                    // for it.
                                    Ok(Ok(tls_stream)) => upgrade(Box::new(tls_stream), ctx, peer.ip(), live).await,
                                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!("TLS handshake timed out"),
                                }
                            }
                        }
                    });
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

/// Refuses a connection over the node's connection limit, at once and
/// without a task: plain WebSocket gets an HTTP 503 written without waiting
/// (a full socket buffer just drops it), TLS a close (a handshake would cost
/// the CPU the limit protects).
fn refuse_at_limit(stream: tokio::net::TcpStream, tls: bool) {
    metrics::counter!("iris_connections_refused_total", "transport" => "ws").increment(1);
    if !tls && let Err(e) = stream.try_write(crate::session::AT_CONNECTION_LIMIT) {
        tracing::debug!(error = %e, "could not write the connection-limit refusal");
    }
}

/// Reads once from `io` into a stack chunk and hands the bytes to `sink`.
/// The chunk lives only during this poll, never in a session's future.
fn poll_read_into<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    sink: &mut dyn FnMut(&[u8]),
) -> Poll<std::io::Result<usize>> {
    let mut chunk = [MaybeUninit::<u8>::uninit(); 4096];
    let mut buf = ReadBuf::uninit(&mut chunk);
    ready!(Pin::new(io).poll_read(cx, &mut buf))?;
    sink(buf.filled());
    Poll::Ready(Ok(buf.filled().len()))
}

/// Reads the upgrade request and answers it; on success starts the session.
async fn upgrade<S>(mut stream: S, ctx: Arc<EdgeContext>, peer: IpAddr, live: LiveGuard)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hello_timeout = Duration::from_millis(ctx.session_cfg.hello_timeout_ms);
    let handshake = async {
        let mut request = Vec::new();
        loop {
            let n = std::future::poll_fn(|cx| poll_read_into(&mut stream, cx, &mut |b| request.extend_from_slice(b)))
                .await
                .ok()?;
            if n == 0 {
                return None;
            }
            match wsproto::parse_upgrade(&request, WS_PATH) {
                Upgrade::Incomplete => continue,
                Upgrade::Refuse { response } => {
                    // Best effort: the client may be gone already.
                    let _ = stream.write_all(&response).await;
                    let _ = stream.shutdown().await;
                    return None;
                }
                Upgrade::Accept { response, consumed } => {
                    stream.write_all(&response).await.ok()?;
                    stream.flush().await.ok()?;
                    let mut reader = Reader::new(ctx.max_frame_bytes);
                    reader.push(&request[consumed..]);
                    return Some(reader);
                }
            }
        }
    };
    let reader = match tokio::time::timeout(hello_timeout, handshake).await {
        Ok(Some(reader)) => reader,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!("WebSocket handshake timed out");
            return;
        }
    };
    spawn_session(WsTransport { io: stream, reader, out: Vec::new(), sent: 0, closing: false }, ctx, peer, live);
}

struct WsTransport<S> {
    io: S,
    reader: Reader,
    /// Frames written and not yet flushed; empty (no allocation) otherwise.
    out: Vec<u8>,
    /// How much of `out` the socket has taken (writes may be cancelled).
    sent: usize,
    /// A close frame has been written: nothing may follow it.
    closing: bool,
}

impl<S> WsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Writes what is in `out`, then forgets it. Cancel-safe: `sent`
    /// records what the socket took, so a retry writes only the rest.
    async fn push_out(&mut self) -> bool {
        while self.sent < self.out.len() {
            match self.io.write(&self.out[self.sent..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.sent += n,
            }
        }
        self.out = Vec::new();
        self.sent = 0;
        self.io.flush().await.is_ok()
    }

    /// Queues a close frame with `code` and reports the client gone. The
    /// frame goes out with the session's close (`Transport::close`);
    /// nothing is written here, so `next` stays cancel-safe.
    fn fail(&mut self, code: u16, reason: &str) -> Inbound {
        if !std::mem::replace(&mut self.closing, true) {
            wsproto::encode_close(&mut self.out, code, reason);
        }
        Inbound::Gone
    }
}

impl<S> Transport for WsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Cancel-safe: the only await is the read, whose bytes are taken
    // inside one poll. Replies (pong, close) are queued in `out` and
    // written by the session outside its select (`wants_flush`, `close`).
    async fn next(&mut self) -> Inbound {
        loop {
            if self.closing {
                return Inbound::Gone;
            }
            match self.reader.next_event() {
                Ok(Some(Event::Text(bytes))) => return Inbound::Frame(bytes, Encoding::Json),
                Ok(Some(Event::Binary(bytes))) => return Inbound::Frame(bytes, Encoding::Binary),
                Ok(Some(Event::Ping(payload))) => {
                    wsproto::encode(&mut self.out, wsproto::OP_PONG, &payload);
                    return Inbound::Touch;
                }
                Ok(Some(Event::Pong)) => return Inbound::Touch,
                // Answer the client's close; the session then ends.
                Ok(Some(Event::Close(_))) => return self.fail(1000, ""),
                Ok(None) => {}
                Err(wsproto::WsError::TooLarge) => return Inbound::TooLarge,
                Err(e) => {
                    tracing::debug!(error = ?e, "websocket protocol error");
                    return self.fail(e.close_code(), "protocol error");
                }
            }
            let (io, reader) = (&mut self.io, &mut self.reader);
            match std::future::poll_fn(|cx| poll_read_into(io, cx, &mut |b| reader.push(b))).await {
                Ok(0) | Err(_) => return Inbound::Gone,
                Ok(_) => {}
            }
        }
    }

    async fn feed(&mut self, frame: Vec<u8>, encoding: Encoding) -> bool {
        if self.closing {
            // Nothing may follow a close frame.
            return false;
        }
        let opcode = match encoding {
            Encoding::Json => wsproto::OP_TEXT,
            Encoding::Binary => wsproto::OP_BINARY,
        };
        wsproto::encode(&mut self.out, opcode, &frame);
        true
    }

    async fn flush(&mut self) -> bool {
        self.push_out().await
    }

    fn wants_flush(&self) -> bool {
        !self.out.is_empty() && !self.closing
    }

    async fn close(&mut self, reason: CloseReason) {
        // A close already queued (answering the client's, or a protocol
        // error) goes out now; otherwise ours, with the session's reason.
        if !std::mem::replace(&mut self.closing, true) {
            wsproto::encode_close(&mut self.out, reason.code(), reason.as_str());
        }
        // The peer may already be gone; nothing more to do then.
        if self.push_out().await {
            let _ = self.io.shutdown().await;
        }
    }
}
