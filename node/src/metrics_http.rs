//! The operator's listener: Prometheus text at `GET /metrics`, liveness at
//! `GET /healthz` and readiness at `GET /readyz`.
//!
//! The exporter's recorder renders; we serve it on our own listener so that
//! a node bound to port 0 can report where its metrics are.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Largest request head we read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Scrapes served at once; more connections are closed unanswered.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its whole request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// Where the node is in its life, as `/readyz` reports it: a load balancer
/// or an orchestrator sends new sessions only to a ready node.
#[derive(Default)]
pub struct Health(AtomicU8);

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Health {
    /// Every listener is bound and the node serves (printed `iris ready`).
    pub fn ready(&self) {
        let _ = self.0.compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutting down: new sessions should go elsewhere. Final.
    pub fn draining(&self) {
        self.0.store(DRAINING, Ordering::Release);
    }

    /// The `/readyz` answer: status line and body.
    fn readiness(&self) -> (&'static str, &'static str) {
        match self.0.load(Ordering::Acquire) {
            READY => ("200 OK", "ready\n"),
            DRAINING => ("503 Service Unavailable", "draining\n"),
            _ => ("503 Service Unavailable", "starting\n"),
        }
    }
}

/// Installs the recorder and serves it with the health endpoints; returns
/// the bound address.
pub async fn start(addr: SocketAddr, health: Arc<Health>) -> anyhow::Result<SocketAddr> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("iris_fsync_seconds".into()),
            &[0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.5],
        )?
        .set_buckets_for_metric(
            Matcher::Prefix("iris_bus_".into()),
            &[0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.5, 1.0, 5.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full("iris_shard_commit_seconds".into()),
            &[0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.5],
        )?
        .set_buckets_for_metric(
            Matcher::Full("iris_shard_commit_inputs".into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full("iris_fsync_batch_size".into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0],
        )?
        .install_recorder()?;
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let handle = handle.clone();
                        let health = health.clone();
                        tokio::spawn(async move {
                            serve(stream, handle, &health).await;
                            drop(permit);
                        });
                    }
                    // At the bound: the connection is closed unanswered.
                    Err(_) => metrics::counter!("iris_metrics_connections_refused_total").increment(1),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(bound)
}

/// Whether the request head asks for `GET path` (with or without a query).
fn is_get(head: &[u8], path: &str) -> bool {
    let Some(rest) = head.strip_prefix(b"GET ").and_then(|r| r.strip_prefix(path.as_bytes())) else {
        return false;
    };
    rest.starts_with(b" ") || rest.starts_with(b"?")
}

async fn serve(mut stream: TcpStream, handle: PrometheusHandle, health: &Health) {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    // One deadline for the whole request head, not one per read.
    let read_head = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(true);
            }
            if buf.len() > MAX_REQUEST_BYTES {
                return Some(false);
            }
        }
    };
    let head_done = match tokio::time::timeout(HEAD_DEADLINE, read_head).await {
        Ok(Some(done)) => done,
        Ok(None) | Err(_) => return,
    };
    let (status, body) = if !head_done {
        ("431 Request Header Fields Too Large", "request head too large\n".to_owned())
    } else if is_get(&buf, "/metrics") {
        ("200 OK", handle.render())
    } else if is_get(&buf, "/healthz") {
        ("200 OK", "ok\n".to_owned())
    } else if is_get(&buf, "/readyz") {
        let (status, body) = health.readiness();
        (status, body.to_owned())
    } else {
        ("404 Not Found", "not found: /metrics, /healthz and /readyz are served here\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    match tokio::time::timeout(HEAD_DEADLINE, stream.write_all(response.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics write failed"),
        Err(_) => tracing::debug!("metrics client too slow to read; closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Health, is_get};

    #[test]
    fn paths_match_whole_with_or_without_a_query() {
        assert!(is_get(b"GET /readyz HTTP/1.1\r\n", "/readyz"));
        assert!(is_get(b"GET /metrics?x=1 HTTP/1.1\r\n", "/metrics"));
        assert!(!is_get(b"GET /readyzz HTTP/1.1\r\n", "/readyz"));
        assert!(!is_get(b"POST /readyz HTTP/1.1\r\n", "/readyz"));
    }

    #[test]
    fn readiness_goes_starting_ready_draining_and_never_back() {
        let h = Health::default();
        assert_eq!(h.readiness().1, "starting\n");
        h.ready();
        assert_eq!(h.readiness(), ("200 OK", "ready\n"));
        h.draining();
        assert_eq!(h.readiness().1, "draining\n");
        h.ready();
        assert_eq!(h.readiness().1, "draining\n", "a draining node does not become ready again");
    }
}
