//! What a node listens on and with which certificate: decided from the
//! config ([`ListenSettings`], [`TlsSource`]), then bound ([`bind_edge`],
//! [`bind_http`]).

use anyhow::Context as _;
use iris_config::{Config, Role};
use iris_edge::Listeners;
use iris_edge::tls::{CertStore, QuicSettings, ensure_dev_cert, https_config, quic_server_config, wss_acceptor};
use iris_http::HttpListeners;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The addresses to listen on; `None` is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSettings {
    /// WebSocket.
    pub ws: Option<SocketAddr>,
    /// WebSocket over TLS.
    pub wss: Option<SocketAddr>,
    /// QUIC (UDP).
    pub quic: Option<SocketAddr>,
    /// The service API.
    pub http: Option<SocketAddr>,
    /// The service API over TLS.
    pub https: Option<SocketAddr>,
    /// The operator's listener: metrics, liveness, readiness.
    pub metrics: Option<SocketAddr>,
}

impl ListenSettings {
    /// The config's listeners; a node without the edge role serves no
    /// clients and no API, whatever `[listen]` says.
    pub fn from_config(cfg: &Config) -> Self {
        let l = &cfg.listen;
        let edge = cfg.roles.contains(&Role::Edge);
        let client = |addr: Option<SocketAddr>| addr.filter(|_| edge);
        Self {
            ws: client(l.ws),
            wss: client(l.wss),
            quic: client(l.quic),
            http: client(l.http),
            https: client(l.https),
            metrics: l.metrics,
        }
    }
}

/// Where the certificate for wss, QUIC and https comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// The PEM files `[tls]` names (re-read on reload).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A self-signed certificate for localhost in this data directory's
    /// `tls/`, created on first start.
    DevCert(PathBuf),
}

impl TlsSource {
    /// The files `[tls]` names, or the dev certificate.
    pub fn from_config(cfg: &Config) -> Self {
        match (&cfg.tls.cert_file, &cfg.tls.key_file) {
            (Some(cert), Some(key)) => TlsSource::Files { cert: cert.clone(), key: key.clone() },
            _ => TlsSource::DevCert(cfg.data_dir()),
        }
    }

    /// The certificate and key files (the dev certificate is created if it
    /// does not exist yet).
    pub fn files(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        Ok(match self {
            TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
            TlsSource::DevCert(data_dir) => ensure_dev_cert(data_dir)?,
        })
    }
}

/// Binds the session edge's listeners.
pub async fn bind_edge(
    listen: &ListenSettings,
    certs: &Arc<CertStore>,
    quic: &QuicSettings,
) -> anyhow::Result<Listeners> {
    let ws = match listen.ws {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("WebSocket listener {addr}"))?)
        }
        None => None,
    };
    let wss = match listen.wss {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("wss listener {addr}"))?;
            Some((listener, wss_acceptor(certs.clone())?))
        }
        None => None,
    };
    let quic = match listen.quic {
        Some(addr) => {
            let server = quic_server_config(certs.clone(), quic)?;
            let (endpoint, buffers) =
                iris_edge::quic::endpoint(server, addr).with_context(|| format!("QUIC listener {addr}"))?;
            if !buffers.as_wanted() {
                tracing::warn!(
                    recv = ?buffers.recv,
                    send = ?buffers.send,
                    wanted = iris_protocol::quic::SOCKET_BUFFER_BYTES,
                    "the QUIC socket's buffers are smaller than wanted (raise net.core.rmem_max and \
                     net.core.wmem_max): handshake bursts may drop datagrams"
                );
            }
            Some(endpoint)
        }
        None => None,
    };
    Ok(Listeners { ws, wss, quic })
}

/// Binds the service API's listeners.
pub fn bind_http(listen: &ListenSettings, certs: &Arc<CertStore>) -> anyhow::Result<HttpListeners> {
    let bind = |addr: SocketAddr| std::net::TcpListener::bind(addr).with_context(|| format!("HTTP listener {addr}"));
    Ok(HttpListeners {
        http: listen.http.map(bind).transpose()?,
        https: match listen.https {
            Some(addr) => Some((bind(addr)?, https_config(certs.clone())?)),
            None => None,
        },
    })
}
