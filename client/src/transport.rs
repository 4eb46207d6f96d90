//! The client's transports: WebSocket, wss and QUIC.

use crate::{Client, ClientError};
use futures::{SinkExt, StreamExt};
use iris_protocol::framing::{self, Assembled, FrameAssembler};
use iris_protocol::quic;
use iris_protocol::{Encoding, ServerFrame, Welcome};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The largest frame the client reads whole.
const MAX_FRAME_BYTES: usize = 16 << 20;

pub use iris_protocol::ALPN;

/// Which certificates the client trusts (the node's dev certificate, or a
/// private CA), as a rustls client configuration (aws-lc-rs provider).
#[derive(Clone)]
pub struct Trust {
    pub(crate) config: Arc<rustls::ClientConfig>,
}

fn tls_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Tls(e.to_string())
}

impl Trust {
    /// Trusts the certificates in a PEM file (e.g. `data_dir/tls/dev-cert.pem`).
    pub fn from_pem_file(path: &Path) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(tls_err)? {
            roots.add(cert.map_err(tls_err)?).map_err(tls_err)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { config: Arc::new(config) })
    }
}

pub(crate) enum Conn {
    Ws(WebSocketStream<MaybeTlsStream<TcpStream>>),
    Wss(Box<WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>>),
    Quic(Box<QuicConn>),
}

pub(crate) struct QuicConn {
    pub(crate) conn: quinn::Connection,
    pub(crate) send: quinn::SendStream,
    recv: quinn::RecvStream,
    assembler: FrameAssembler,
}

async fn ws_send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    msg: Message,
) -> Result<(), ClientError> {
    ws.send(msg).await?;
    Ok(())
}

async fn ws_next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Result<ServerFrame, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(ServerFrame::from_json(t.as_bytes())?),
            Some(Ok(Message::Binary(b))) => return Ok(ServerFrame::from_binary(&b)?),
            Some(Ok(Message::Close(frame))) => {
                return Err(ClientError::Closed(frame.map(|f: CloseFrame| f.reason.to_string())));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ClientError::Closed(None)),
        }
    }
}

impl Conn {
    pub(crate) async fn send(&mut self, payload: Vec<u8>, text: bool) -> Result<(), ClientError> {
        let msg = |payload: Vec<u8>| {
            if text { Message::text(String::from_utf8_lossy(&payload).into_owned()) } else { Message::binary(payload) }
        };
        match self {
            Conn::Ws(ws) => ws_send(ws, msg(payload)).await,
            Conn::Wss(ws) => ws_send(ws, msg(payload)).await,
            Conn::Quic(q) => {
                q.send.write_all(&framing::frame(&payload)).await.map_err(|e| ClientError::Quic(e.to_string()))
            }
        }
    }

    /// Cancel-safe: every arm keeps its partial state in `self`.
    pub(crate) async fn next(&mut self) -> Result<ServerFrame, ClientError> {
        match self {
            Conn::Ws(ws) => ws_next(ws).await,
            Conn::Wss(ws) => ws_next(ws).await,
            Conn::Quic(q) => q.next().await,
        }
    }

    pub(crate) async fn close(&mut self) -> Result<(), ClientError> {
        match self {
            Conn::Ws(ws) => ws.close(None).await?,
            Conn::Wss(ws) => (**ws).close(None).await?,
            Conn::Quic(q) => {
                // Finishing the stream ends the session; the server closes.
                if q.send.finish().is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), q.conn.closed()).await;
                }
            }
        }
        Ok(())
    }
}

impl QuicConn {
    async fn next(&mut self) -> Result<ServerFrame, ClientError> {
        loop {
            let n = match self.recv.read(self.assembler.buf()).await {
                Ok(Some(n)) => n,
                Ok(None) => return Err(ClientError::Closed(None)),
                Err(quinn::ReadError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(c))) => {
                    return Err(ClientError::Closed(Some(String::from_utf8_lossy(&c.reason).into_owned())));
                }
                Err(e) => return Err(ClientError::Quic(e.to_string())),
            };
            match self.assembler.filled(n) {
                Assembled::Need => {}
                Assembled::TooLarge(n) => return Err(ClientError::Quic(format!("server frame of {n} bytes"))),
                Assembled::Frame(f) if f.first() == Some(&b'{') => return Ok(ServerFrame::from_json(&f)?),
                Assembled::Frame(f) => return Ok(ServerFrame::from_binary(&f)?),
            }
        }
    }
}

impl Client {
    /// Opens a WebSocket without saying hello.
    pub async fn connect(url: &str, encoding: Encoding) -> Result<Self, ClientError> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_nodelay(true)?;
        }
        Ok(Client::from_conn(Conn::Ws(ws), encoding))
    }

    /// Opens a WebSocket over a TCP connection made by the caller (a load
    /// generator that picks its source addresses, say).
    pub async fn connect_over(url: &str, tcp: TcpStream, encoding: Encoding) -> Result<Self, ClientError> {
        tcp.set_nodelay(true)?;
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await?;
        Ok(Client::from_conn(Conn::Ws(ws), encoding))
    }

    /// Opens a wss connection (`wss://host:port/v1/ws`) trusting `trust`.
    pub async fn connect_wss(url: &str, trust: &Trust, encoding: Encoding) -> Result<Self, ClientError> {
        let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().map_err(tls_err)?;
        let host = uri.host().ok_or_else(|| tls_err("url has no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(tls_err)?;
        let tls = tokio_rustls::TlsConnector::from(trust.config.clone()).connect(name, tcp).await?;
        let (ws, _) = tokio_tungstenite::client_async(url, tls).await?;
        Ok(Client::from_conn(Conn::Wss(Box::new(ws)), encoding))
    }

    /// wss: connects and says hello.
    pub async fn hello_wss(
        url: &str,
        trust: &Trust,
        token: &str,
        resume_after: Option<u64>,
        encoding: Encoding,
    ) -> Result<(Self, Welcome), ClientError> {
        let mut c = Self::connect_wss(url, trust, encoding).await?;
        let w = c.say_hello(token, resume_after).await?;
        Ok((c, w))
    }

    fn from_conn(conn: Conn, encoding: Encoding) -> Self {
        Client { conn, encoding, buffered: VecDeque::new() }
    }
}

/// Connects to a node over QUIC, reusing TLS session tickets so that
/// reconnects can send their hello as 0-RTT data.
pub struct QuicConnector {
    endpoint: quinn::Endpoint,
    server: SocketAddr,
    server_name: String,
}

impl QuicConnector {
    /// A connector for `server`, whose certificate must name `server_name`
    /// and be trusted by `trust`. Binds a UDP socket on loopback.
    pub fn new(server: SocketAddr, server_name: &str, trust: &Trust) -> Result<Self, ClientError> {
        Self::with_keep_alive(server, server_name, trust, Duration::from_secs(15))
    }

    /// As [`QuicConnector::new`], with QUIC keep-alive pings every `keep_alive`.
    pub fn with_keep_alive(
        server: SocketAddr,
        server_name: &str,
        trust: &Trust,
        keep_alive: Duration,
    ) -> Result<Self, ClientError> {
        let mut tls = (*trust.config).clone();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.enable_early_data = true;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(tls_err)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        // Mobile-friendly: keep NAT bindings and the server's idle timer alive.
        transport.keep_alive_interval(Some(keep_alive));
        // The server opens no streams (PROTOCOL.md: one client-opened
        // stream), so none are allowed; quinn sets up state for each
        // stream it allows in advance.
        transport.max_concurrent_bidi_streams(0u32.into());
        transport.max_concurrent_uni_streams(0u32.into());
        // Memory per connection (ADR 0014): the load generator holds many.
        iris_protocol::quic::lean_transport(&mut transport);
        config.transport_config(Arc::new(transport));
        let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
        let runtime = quinn::default_runtime().ok_or_else(|| ClientError::Quic("no async runtime".into()))?;
        let mut endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, quic::udp_socket(bind)?.0, runtime)?;
        endpoint.set_default_client_config(config);
        Ok(Self { endpoint, server, server_name: server_name.into() })
    }

    /// The local UDP address.
    pub fn local_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Moves every connection of this connector to a new UDP socket (what a
    /// phone does when it switches from Wi-Fi to cellular).
    pub fn rebind(&self) -> Result<SocketAddr, ClientError> {
        // One socket carries all of the connector's connections (ADR 0014).
        let (socket, _) = quic::udp_socket(SocketAddr::new(self.endpoint.local_addr()?.ip(), 0))?;
        let addr = socket.local_addr()?;
        self.endpoint.rebind(socket)?;
        Ok(addr)
    }

    /// Opens a connection and its session stream. Returns the client and
    /// whether the connection was attempted with 0-RTT.
    pub async fn connect(&self, encoding: Encoding) -> Result<(Client, bool), ClientError> {
        self.connect_with(encoding, true).await
    }

    async fn connect_with(&self, encoding: Encoding, early: bool) -> Result<(Client, bool), ClientError> {
        let connecting =
            self.endpoint.connect(self.server, &self.server_name).map_err(|e| ClientError::Quic(e.to_string()))?;
        let attempt = if early { connecting.into_0rtt() } else { Err(connecting) };
        let (conn, zero_rtt) = match attempt {
            Ok((conn, _accepted)) => (conn, true),
            Err(connecting) => (connecting.await.map_err(|e| ClientError::Quic(e.to_string()))?, false),
        };
        let (send, recv) = conn.open_bi().await.map_err(|e| ClientError::Quic(e.to_string()))?;
        let quic = QuicConn { conn, send, recv, assembler: FrameAssembler::new(MAX_FRAME_BYTES) };
        Ok((Client::from_conn(Conn::Quic(Box::new(quic)), encoding), zero_rtt))
    }

    /// Completes a handshake and opens no stream (a client that holds a
    /// connection without ever starting its session).
    pub async fn handshake_only(&self) -> Result<quinn::Connection, ClientError> {
        let connecting =
            self.endpoint.connect(self.server, &self.server_name).map_err(|e| ClientError::Quic(e.to_string()))?;
        connecting.await.map_err(|e| ClientError::Quic(e.to_string()))
    }

    /// Connects and says hello; returns once `welcome` arrives.
    pub async fn hello(
        &self,
        token: &str,
        resume_after: Option<u64>,
        encoding: Encoding,
    ) -> Result<(Client, Welcome), ClientError> {
        let (mut c, zero_rtt) = self.connect(encoding).await?;
        match c.say_hello(token, resume_after).await {
            Ok(w) => Ok((c, w)),
            // The server forgot the session (restart, full cache): the early
            // data was dropped. Say hello again on a full handshake.
            Err(ClientError::Quic(_)) if zero_rtt => {
                let (mut c, _) = self.connect_with(encoding, false).await?;
                let w = c.say_hello(token, resume_after).await?;
                Ok((c, w))
            }
            Err(e) => Err(e),
        }
    }
}

impl Client {
    /// QUIC only: tries to open a second stream on this connection (the
    /// server allows one per connection, so this waits until `d` passes).
    pub async fn open_extra_stream(&self, d: Duration) -> Result<(), ClientError> {
        match &self.conn {
            Conn::Quic(q) => match tokio::time::timeout(d, q.conn.open_bi()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(ClientError::Quic(e.to_string())),
                Err(_) => Err(ClientError::Timeout("a second stream".into())),
            },
            _ => Err(ClientError::Quic("not a QUIC client".into())),
        }
    }

    /// QUIC only: writes raw bytes to the session stream, no framing added
    /// (malformed-length tests).
    pub async fn send_raw_quic(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match &mut self.conn {
            Conn::Quic(q) => q.send.write_all(bytes).await.map_err(|e| ClientError::Quic(e.to_string())),
            _ => Err(ClientError::Quic("not a QUIC client".into())),
        }
    }

    /// Drops the connection without any goodbye: no close frame, no stream
    /// finish (a phone that lost coverage). The server finds out by timeout.
    pub fn vanish(self) {
        if let Conn::Quic(q) = &self.conn {
            // Keep the QUIC connection state alive but silent: dropping it
            // would send CONNECTION_CLOSE.
            std::mem::forget(q.conn.clone());
        }
        std::mem::forget(self);
    }
}
