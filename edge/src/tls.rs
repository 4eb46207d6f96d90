//! TLS for every listener: certificates from PEM files (reloadable without
//! dropping sessions), a self-signed dev certificate, and the rustls server
//! configurations for QUIC (TLS 1.3, ALPN `iris/1`, 0-RTT) and wss.
//!
//! One crypto provider only: aws-lc-rs, passed explicitly everywhere.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use iris_protocol::ALPN;

/// TLS sessions remembered for resumption (about 1 KiB each).
const RESUMPTION_CACHE: usize = 50_000;

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {problem}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the key or configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The dev certificate could not be generated.
    #[error("generating the dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The dev certificate could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not usable for QUIC.
    #[error("QUIC TLS setup: {0}")]
    Quic(String),
}

/// The crypto provider every TLS object here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn pem_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem { path: path.to_owned(), problem: e.to_string() }
}

/// Loads a certificate chain and its private key from PEM files.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert, e))?;
    if chain.is_empty() {
        return Err(pem_err(cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
    let signing = provider().key_provider.load_private_key(key_der)?;
    let ck = CertifiedKey::new(chain, signing);
    // A reload caught between replacing the two files must not swap in a
    // key that does not belong to the certificate.
    ck.keys_match().map_err(|e| pem_err(key, format!("key does not match the certificate: {e}")))?;
    Ok(ck)
}

/// Where the dev certificate lives under a data directory.
pub fn dev_cert_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("dev-cert.pem"), dir.join("dev-key.pem"))
}

/// Writes a self-signed certificate for localhost (and 127.0.0.1, ::1) to
/// the data directory unless one is there; returns its paths.
pub fn ensure_dev_cert(data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert, key) = dev_cert_paths(data_dir);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let generated = rcgen::generate_simple_self_signed(names)?;
    let dir = cert.parent().expect("has a parent");
    let write = |path: &Path, text: String, private: bool| -> Result<(), TlsError> {
        let err = |source| TlsError::Write { path: path.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(err)?;
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        opts.mode(if private { 0o600 } else { 0o644 });
        // Write beside, then rename: a reader never sees half a file.
        let tmp = path.with_extension("tmp");
        let mut f = opts.open(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    };
    write(&key, generated.signing_key.serialize_pem(), true)?;
    write(&cert, generated.cert.pem(), false)?;
    Ok((cert, key))
}

/// The server's certificate, swappable at run time: new handshakes use the
/// newest one, established sessions are untouched.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the certificate and key files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let ck = load_certified_key(cert_path, key_path)?;
        Ok(Self { cert_path: cert_path.into(), key_path: key_path.into(), current: RwLock::new(Arc::new(ck)) })
    }

    /// Re-reads the files; on error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = load_certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
        Ok(())
    }

    /// The certificate chain in use (for tests and logs).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).cert.clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// QUIC transport settings.
#[derive(Debug, Clone)]
pub struct QuicSettings {
    /// A connection idle this long is closed (clients keep it alive with
    /// QUIC pings).
    pub idle_timeout: Duration,
    /// Flow-control window per stream.
    pub stream_window: u32,
    /// Flow-control window per connection.
    pub connection_window: u32,
}

/// The QUIC server configuration: TLS 1.3 only, ALPN `iris/1`, session
/// resumption and 0-RTT, one client-opened bidirectional stream per
/// connection (a second one is refused by stream flow control), no
/// unidirectional streams, migration allowed.
pub fn quic_server_config(certs: Arc<CertStore>, s: &QuicSettings) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = u32::MAX;
    // One ticket per connection: a reconnect needs only one, and the
    // cache then covers as many clients as it has entries.
    tls.send_tls13_tickets = 1;
    // 0-RTT needs stateful resumption (rustls refuses early data with
    // stateless tickets: a server-side cache is what stops replays of the
    // handshake itself). Bounded: the oldest sessions are forgotten.
    tls.session_storage = rustls::server::ServerSessionMemoryCache::new(RESUMPTION_CACHE);
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    // Iris never reads datagrams; do not advertise or buffer them.
    transport.datagram_receive_buffer_size(None);
    transport.stream_receive_window(s.stream_window.into());
    transport.receive_window(s.connection_window.into());
    transport.send_window(u64::from(s.connection_window));
    let idle = quinn::IdleTimeout::try_from(s.idle_timeout).map_err(|e| TlsError::Quic(e.to_string()))?;
    transport.max_idle_timeout(Some(idle));
    // Memory per idle connection (ADR 0014).
    iris_protocol::quic::lean_transport(&mut transport);
    config.transport_config(Arc::new(transport));
    config.migration(true);
    Ok(config)
}

/// The TLS configuration for wss and https: TLS 1.2 and 1.3, ALPN http/1.1.
pub fn https_config(certs: Arc<CertStore>) -> Result<rustls::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// The TLS acceptor for wss.
pub fn wss_acceptor(certs: Arc<CertStore>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(https_config(certs)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_cert_is_created_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ensure_dev_cert(dir.path()).unwrap();
        let first = std::fs::read(&c).unwrap();
        ensure_dev_cert(dir.path()).unwrap();
        assert_eq!(std::fs::read(&c).unwrap(), first);
        let store = CertStore::load(&c, &k).unwrap();
        assert_eq!(store.chain().len(), 1);
    }

    #[test]
    fn reload_swaps_the_certificate_and_keeps_the_old_one_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ensure_dev_cert(dir.path()).unwrap();
        let store = CertStore::load(&c, &k).unwrap();
        let before = store.chain();
        std::fs::remove_file(&c).unwrap();
        std::fs::remove_file(&k).unwrap();
        ensure_dev_cert(dir.path()).unwrap();
        store.reload().unwrap();
        assert_ne!(store.chain(), before);
        let now = store.chain();
        std::fs::write(&c, "not a pem").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.chain(), now);
    }

    #[test]
    fn quic_config_builds() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ensure_dev_cert(dir.path()).unwrap();
        let store = Arc::new(CertStore::load(&c, &k).unwrap());
        let s =
            QuicSettings { idle_timeout: Duration::from_secs(30), stream_window: 1 << 20, connection_window: 2 << 20 };
        quic_server_config(store.clone(), &s).unwrap();
        wss_acceptor(store).unwrap();
    }
}
