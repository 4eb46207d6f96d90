//! WebSocket transport (ws and wss): tokio-tungstenite with small buffers.

use crate::session::{EdgeContext, Inbound, LiveGuard, Transport, spawn_session};
use crate::state::CloseReason;
use futures::{SinkExt, StreamExt};
use iris_protocol::Encoding;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The WebSocket path.
pub const WS_PATH: &str = "/v1/ws";

/// Accepts connections until shutdown; with `tls`, every connection is wss.
pub async fn serve(listener: TcpListener, ctx: Arc<EdgeContext>, tls: Option<TlsAcceptor>) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let live = LiveGuard::new(&ctx);
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

fn check_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == WS_PATH {
        Ok(resp)
    } else {
        let mut r = ErrorResponse::new(Some(format!("not found: the WebSocket endpoint is {WS_PATH}")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        Err(r)
    }
}

/// Runs the WebSocket upgrade and starts the session.
async fn upgrade<S>(stream: S, ctx: Arc<EdgeContext>, peer: IpAddr, live: LiveGuard)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
    spawn_session(WsTransport { ws }, ctx, peer, live);
}

struct WsTransport<S> {
    ws: WebSocketStream<S>,
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
        CloseReason::Refused => CloseCode::Policy,
    }
}

impl<S> Transport for WsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn next(&mut self) -> Inbound {
        loop {
            return match self.ws.next().await {
                Some(Ok(Message::Text(t))) => Inbound::Frame(t.as_bytes().to_vec(), Encoding::Json),
                Some(Ok(Message::Binary(b))) => Inbound::Frame(b.to_vec(), Encoding::Binary),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    // tungstenite queued the pong; it goes out with the next
                    // flush, which the session does after every turn.
                    if self.ws.flush().await.is_err() {
                        return Inbound::Gone;
                    }
                    Inbound::Touch
                }
                Some(Ok(Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => Inbound::Gone,
                Some(Err(WsError::Capacity(_))) => Inbound::TooLarge,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    Inbound::Gone
                }
            };
        }
    }

    async fn feed(&mut self, frame: Vec<u8>, encoding: Encoding) -> bool {
        let msg = match encoding {
            Encoding::Json => Message::text(String::from_utf8(frame).expect("JSON is UTF-8")),
            Encoding::Binary => Message::binary(frame),
        };
        self.ws.feed(msg).await.is_ok()
    }

    async fn flush(&mut self) -> bool {
        self.ws.flush().await.is_ok()
    }

    async fn close(&mut self, reason: CloseReason) {
        let frame = CloseFrame { code: close_code(reason), reason: reason.as_str().into() };
        // The peer may already be gone; nothing more to do then.
        let _ = self.ws.close(Some(frame)).await;
    }
}
