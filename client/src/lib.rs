//! A Rust client for the Iris protocol (v1), used by the integration tests,
//! the benchmark and the chaos tools.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iris_client::ClientError> {
//! use iris_client::{Client, Encoding};
//! let (mut alice, welcome) = Client::hello("ws://127.0.0.1:8080/v1/ws", "TOKEN", None, Encoding::Json).await?;
//! alice.send("c-1", "bob", "hi").await?;
//! # Ok(()) }
//! ```

mod transport;

use iris_protocol::{Body, Hello, Ping, SetPresence, SetStatus, Sync, UpTo, Users};
pub use iris_protocol::{ClientFrame, Encoding, ServerFrame, Welcome};
use std::collections::VecDeque;
use std::time::Duration;
use transport::Conn;
pub use transport::{ALPN, QuicConnector, Trust};

/// Most frames `expect` keeps while skipping.
pub const MAX_BUFFERED: usize = 65_536;

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server sent a frame the client cannot decode.
    #[error("undecodable server frame: {0}")]
    Decode(#[from] iris_protocol::DecodeError),
    /// The server closed the connection.
    #[error("closed by server: {0:?}")]
    Closed(Option<String>),
    /// Nothing matching arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The server answered something else.
    #[error("unexpected frame: {0:?}")]
    Unexpected(Box<ServerFrame>),
    /// TLS or certificate setup failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// QUIC failed.
    #[error("QUIC: {0}")]
    Quic(String),
    /// `expect` skipped more frames than the client keeps.
    #[error("{0} frames skipped while waiting; none matched")]
    TooManySkipped(usize),
    /// A socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// One connection to an Iris node (WebSocket, wss or QUIC).
pub struct Client {
    conn: Conn,
    encoding: Encoding,
    buffered: VecDeque<ServerFrame>,
}

impl Client {
    /// Connects and says hello; returns once `welcome` arrives.
    pub async fn hello(
        url: &str,
        token: &str,
        resume_after: Option<u64>,
        encoding: Encoding,
    ) -> Result<(Self, Welcome), ClientError> {
        let mut c = Self::connect(url, encoding).await?;
        let w = c.say_hello(token, resume_after).await?;
        Ok((c, w))
    }

    /// The connection's encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Sends one frame in the connection's encoding.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = self.encoding == Encoding::Json;
        self.conn.send(frame.encode(self.encoding), text).await
    }

    /// Sends raw text: a WebSocket text frame, or a QUIC frame (hostile-input tests).
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.conn.send(text.as_bytes().to_vec(), true).await
    }

    /// Sends raw bytes: a WebSocket binary frame, or a QUIC frame (hostile-input tests).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.conn.send(bytes, false).await
    }

    /// `send`.
    pub async fn send(&mut self, id: &str, to: &str, body: &str) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Send(iris_protocol::Send {
            id: id.into(),
            to: to.into(),
            body: Body::from(body),
        }))
        .await
    }

    /// `ack` up to a seq.
    pub async fn ack(&mut self, up_to: u64) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Ack(UpTo { up_to })).await
    }

    /// `read` up to a seq.
    pub async fn read(&mut self, up_to: u64) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Read(UpTo { up_to })).await
    }

    /// `sync`.
    pub async fn sync(&mut self, after: u64, limit: Option<u32>) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Sync(Sync { after: Some(after), limit })).await
    }

    /// `presence`.
    pub async fn set_presence(&mut self, status: SetStatus) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Presence(SetPresence { status })).await
    }

    /// `subscribe`.
    pub async fn subscribe(&mut self, users: &[&str]) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Subscribe(Users { users: users.iter().map(|s| s.to_string()).collect() })).await
    }

    /// `unsubscribe`.
    pub async fn unsubscribe(&mut self, users: &[&str]) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Unsubscribe(Users { users: users.iter().map(|s| s.to_string()).collect() })).await
    }

    /// `ping`.
    pub async fn ping(&mut self, ts: i64) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Ping(Ping { ts: Some(ts) })).await
    }

    async fn next_from_socket(&mut self) -> Result<ServerFrame, ClientError> {
        self.conn.next().await
    }

    /// The next frame (buffered first).
    pub async fn recv(&mut self) -> Result<ServerFrame, ClientError> {
        match self.buffered.pop_front() {
            Some(f) => Ok(f),
            None => self.next_from_socket().await,
        }
    }

    /// The next frame, or `Timeout` after `d`.
    pub async fn recv_timeout(&mut self, d: Duration) -> Result<ServerFrame, ClientError> {
        match tokio::time::timeout(d, self.recv()).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout("a frame".into())),
        }
    }

    /// Waits (up to `d`) for the first frame that `pred` accepts; frames it
    /// skips stay buffered, in order, for later `recv`s. At most
    /// [`MAX_BUFFERED`] are kept: beyond that `expect` fails with
    /// `TooManySkipped` (the frames stay, for `recv`).
    pub async fn expect<F>(&mut self, d: Duration, what: &str, mut pred: F) -> Result<ServerFrame, ClientError>
    where
        F: FnMut(&ServerFrame) -> bool,
    {
        if let Some(i) = self.buffered.iter().position(&mut pred) {
            return Ok(self.buffered.remove(i).expect("index is valid"));
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            // Nothing read is dropped: the bound stops further reading.
            if self.buffered.len() >= MAX_BUFFERED {
                return Err(ClientError::TooManySkipped(self.buffered.len()));
            }
            let frame = match tokio::time::timeout_at(deadline, self.next_from_socket()).await {
                Ok(r) => r?,
                Err(_) => return Err(ClientError::Timeout(what.into())),
            };
            if pred(&frame) {
                return Ok(frame);
            }
            self.buffered.push_back(frame);
        }
    }

    /// Frames received but not yet consumed.
    pub fn buffered(&self) -> impl Iterator<Item = &ServerFrame> {
        self.buffered.iter()
    }

    /// Closes the connection politely.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.conn.close().await
    }

    /// Says hello on a connected client; returns once `welcome` arrives.
    pub async fn say_hello(&mut self, token: &str, resume_after: Option<u64>) -> Result<Welcome, ClientError> {
        self.send_frame(&ClientFrame::Hello(Hello { token: token.into(), device: None, resume_after })).await?;
        match self.recv_timeout(Duration::from_secs(10)).await? {
            ServerFrame::Welcome(w) => Ok(w),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }
}
