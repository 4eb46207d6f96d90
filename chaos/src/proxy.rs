//! The `slow` fault's link: a userspace TCP proxy on the path from every
//! Iris node to the brokers and Redis (the kernel here has no netem).
//!
//! Each node's connections to a broker or to Redis are redirected to a
//! listener of this proxy on the bridge (an nftables DNAT rule in the
//! node's namespace, [`crate::net::Net::redirect`]), which connects on to
//! the real address and copies both ways. Normally it adds nothing but the
//! hop; while a node's link is impaired, every chunk it copies for that
//! node (either way) waits the delay plus a random jitter, and with the
//! loss probability an extra 200 ms to 1 s: what a lost segment costs a
//! TCP connection (its retransmission timeout), since TCP never shows loss
//! to the application as anything but delay. Chunks keep their order.
//!
//! Bounded: each direction of a connection holds at most [`QUEUE`] chunks
//! of at most [`CHUNK`] bytes; when full, the proxy stops reading from that
//! side, and TCP's own flow control pushes back on the sender.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks in flight per direction of a connection.
pub const QUEUE: usize = 64;
/// Largest chunk read at once.
pub const CHUNK: usize = 16 * 1024;
/// What one lost segment costs: a retransmission timeout in this range, ms.
const STALL_MS: std::ops::RangeInclusive<u64> = 200..=1_000;

/// How a node's links are impaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Impairment {
    /// Added to every chunk, ms.
    pub delay_ms: u64,
    /// Up to this much more, drawn per chunk, ms.
    pub jitter_ms: u64,
    /// Per cent of chunks that wait a retransmission timeout more.
    pub loss_pct: u32,
}

impl Impairment {
    /// How long a chunk read now waits, given two draws in `0.0..1.0`
    /// (the jitter's and the loss's) and a third for the stall's length.
    pub fn wait(&self, draws: [f64; 3]) -> Duration {
        let jitter = (self.jitter_ms as f64 * draws[0]) as u64;
        let stall = if draws[1] * 100.0 < self.loss_pct as f64 {
            STALL_MS.start() + ((STALL_MS.end() - STALL_MS.start()) as f64 * draws[2]) as u64
        } else {
            0
        };
        Duration::from_millis(self.delay_ms + jitter + stall)
    }
}

/// The impairment of one node's links, changed while they carry traffic.
#[derive(Clone, Default)]
pub struct Knob(Arc<Mutex<Impairment>>);

impl Knob {
    /// Sets it (the default: none).
    pub fn set(&self, i: Impairment) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = i;
    }

    fn get(&self) -> Impairment {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The proxy: its own thread and runtime, so that a busy workload does not
/// delay what it copies, and it is up before any node starts.
pub struct Proxy {
    runtime: tokio::runtime::Runtime,
}

impl Proxy {
    /// A proxy with no links yet.
    pub fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chaos-proxy")
            .enable_all()
            .build()?;
        Ok(Self { runtime })
    }

    /// Listens on `bind` (a free port) for connections it carries to
    /// `upstream`, impaired by `knob`. Returns the port.
    pub fn link(&self, bind: Ipv4Addr, upstream: SocketAddr, knob: Knob) -> anyhow::Result<u16> {
        let listener = self.runtime.block_on(TcpListener::bind((bind, 0)))?;
        let port = listener.local_addr()?.port();
        self.runtime.spawn(serve(listener, upstream, knob));
        Ok(port)
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, knob: Knob) {
    loop {
        let down = match listener.accept().await {
            Ok((down, _)) => down,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin on it.
                eprintln!("chaos: proxy accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let knob = knob.clone();
        tokio::spawn(async move {
            // Unreachable upstream (a broker killed, Redis restarting): the
            // node's connection closes, as it would have on its own.
            let Ok(Ok(up)) = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(upstream)).await else {
                return;
            };
            // Nagle's delay is not part of any fault: off on both sides (a
            // socket that refuses only copies as the kernel pleases).
            for s in [&down, &up] {
                if let Err(e) = s.set_nodelay(true) {
                    eprintln!("chaos: proxy could not turn Nagle off: {e}");
                }
            }
            let (down_r, down_w) = down.into_split();
            let (up_r, up_w) = up.into_split();
            tokio::join!(pump(down_r, up_w, knob.clone()), pump(up_r, down_w, knob));
        });
    }
}

/// Copies one direction, each chunk held until its time; an end or an
/// error on either side ends it (and half-closes the writing side).
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, knob: Knob) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let reader = async move {
        let mut last = Instant::now();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let i = knob.get();
            let due = if i == Impairment::default() {
                Instant::now()
            } else {
                Instant::now() + i.wait([rand::random(), rand::random(), rand::random()])
            };
            // Never before the chunk ahead of it: order is kept.
            last = last.max(due);
            if tx.send((last, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_waits_the_delay_its_jitter_and_sometimes_a_stall() {
        let i = Impairment { delay_ms: 100, jitter_ms: 50, loss_pct: 5 };
        assert_eq!(i.wait([0.0, 0.5, 0.0]), Duration::from_millis(100));
        assert_eq!(i.wait([1.0, 0.5, 0.0]), Duration::from_millis(150));
        assert_eq!(i.wait([0.0, 0.04, 0.0]), Duration::from_millis(300), "lost: a retransmission timeout more");
        assert_eq!(i.wait([0.0, 0.04, 1.0]), Duration::from_millis(1_100));
        assert_eq!(Impairment::default().wait([0.9, 0.0, 0.9]), Duration::ZERO);
    }

    #[test]
    fn the_proxy_carries_bytes_both_ways_in_order_and_delays_them_when_told() {
        let proxy = Proxy::new().unwrap();
        // An echo server upstream.
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in echo.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        let knob = Knob::default();
        let port = proxy.link(Ipv4Addr::LOCALHOST, upstream, knob.clone()).unwrap();
        let round_trip = |payload: &[u8]| {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
            let start = std::time::Instant::now();
            c.write_all(payload).unwrap();
            let mut back = vec![0u8; payload.len()];
            c.read_exact(&mut back).unwrap();
            (back, start.elapsed())
        };
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (back, _) = round_trip(&payload);
        assert_eq!(back, payload, "every byte, in order");

        knob.set(Impairment { delay_ms: 150, jitter_ms: 0, loss_pct: 0 });
        let (back, took) = round_trip(b"ping");
        assert_eq!(back, b"ping");
        // Both ways through the proxy: twice the delay at least.
        assert!(took >= Duration::from_millis(300), "round trip {took:?}");
        knob.set(Impairment { delay_ms: 20, jitter_ms: 20, loss_pct: 30 });
        let (back, _) = round_trip(&payload);
        assert_eq!(back, payload, "impaired, still every byte in order");
    }
}
