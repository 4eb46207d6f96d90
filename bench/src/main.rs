//! `iris-bench`: load against a running Iris node.
//!
//! `chat`: U users in pairs (user 2k sends to 2k+1 and back), a fixed total
//! send rate (open loop: sends go out on schedule whatever the replies do),
//! HDR histograms of send→accepted and send→delivered, and the node's group
//! commit figures (sends per fsync) read from its metrics before and after.
//! Prints one JSON object on stdout; progress goes to stderr once a second.

use anyhow::{Context, bail};
use base64::Engine;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
mod federation;
mod floor;
mod peers;
mod presence;
mod storm;

use iris_client::{Client, Encoding, ServerFrame};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "iris-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One-to-one chat at a fixed rate.
    Chat {
        /// The system under test.
        #[arg(long, value_enum, default_value = "iris")]
        system: System,
        /// Iris: the WebSocket URL; MQTT, NATS and XMPP: HOST:PORT. Several,
        /// comma-separated (the edges of a region): user u connects to the
        /// (u mod n)-th, so each pair of correspondents spans two of them.
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
        url: String,
        /// Metrics URL of the node (for fsync figures).
        #[arg(long)]
        metrics: Option<String>,
        /// Iris: the node's data dir (its dev key signs the tokens).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Connected users (even).
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Total sends per second.
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Use the binary codec.
        #[arg(long)]
        binary: bool,
        /// Iris over QUIC at this address (the node's dev certificate from
        /// --data-dir) instead of WebSocket.
        #[arg(long)]
        quic: Option<std::net::SocketAddr>,
        /// Spread the users' sends evenly over each interval (user u starts
        /// u/users of an interval late) instead of every user sending at the
        /// same instants, which makes a burst of `users` sends per interval.
        /// Off by default: the committed results were measured in bursts.
        #[arg(long)]
        spread: bool,
        /// The server's process: its CPU time (all threads) from the first
        /// send until the last user is done is reported, and per message
        /// delivered.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The floor under a region: the broker alone. An rdkafka producer
    /// (idempotent, acks=all) sends messages of a chat message's size at a
    /// fixed rate to a topic that a consumer in the same process reads;
    /// send-to-consumed latency, as `chat` reports send-to-delivered.
    KafkaFloor {
        /// Bootstrap servers.
        #[arg(long)]
        bootstrap: String,
        /// Messages per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Payload bytes (a chat envelope: about 150).
        #[arg(long, default_value_t = 150)]
        bytes: usize,
        /// Partitions of the topic.
        #[arg(long, default_value_t = 16)]
        partitions: usize,
        /// Producer linger, ms (Iris's producer uses 0).
        #[arg(long, default_value_t = 0)]
        linger_ms: u32,
    },
    /// The latency two federated regions add: one message at a time,
    /// first to a user homed here, then to one homed in the other region.
    CrossRegion {
        /// Region A's name.
        #[arg(long)]
        region_a: String,
        /// Region A's WebSocket URL.
        #[arg(long)]
        url_a: String,
        /// Region B's name.
        #[arg(long)]
        region_b: String,
        /// Region B's WebSocket URL.
        #[arg(long)]
        url_b: String,
        /// A data dir holding the dev key both regions accept.
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Messages in all (half on each path).
        #[arg(long, default_value_t = 400)]
        messages: usize,
    },
    /// Event ingestion over HTTP: batches posted at a fixed rate.
    Ingest {
        /// The node's API base URL.
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        api: String,
        /// An API key (iris api-key create --tenant T).
        #[arg(long)]
        key: String,
        /// Events per second, in total.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Events per batch.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The server's process: its CPU time (all threads) during the
        /// load is reported, and per event accepted.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// `GET /v1/analytics` over a month of hourly rollups: fills the
    /// tenant's rollups (one event per type, project and hour), then asks
    /// for the whole month, one query at a time, and reports the latency.
    Analytics {
        /// The node's API base URL to fill through.
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        api: String,
        /// The API base URLs to query (default: `--api`); each is timed.
        #[arg(long)]
        query: Vec<String>,
        /// An API key (iris api-key create --tenant T).
        #[arg(long)]
        key: String,
        /// Days of hourly rollups, back from now.
        #[arg(long, default_value_t = 30)]
        days: i64,
        /// Event types.
        #[arg(long, default_value_t = 4)]
        types: usize,
        /// Projects.
        #[arg(long, default_value_t = 3)]
        projects: usize,
        /// Queries per URL.
        #[arg(long, default_value_t = 300)]
        queries: usize,
        /// Fill nothing (the rollups are there from an earlier run).
        #[arg(long)]
        no_fill: bool,
    },
    /// Iris: N sessions dropped at once and resumed, with messages sent
    /// to them meanwhile; time until all resumed, and nothing lost.
    Storm {
        /// The WebSocket URL.
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
        url: String,
        /// The node's data dir (dev key).
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Sessions.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Resumes in flight at once.
        #[arg(long, default_value_t = 1_000)]
        concurrency: usize,
        /// Messages sent (one at a time, each until accepted) during the storm.
        #[arg(long, default_value_t = 1_000)]
        messages: usize,
    },
    /// Iris: one user with K subscribers changes status; time until all
    /// K have seen it.
    Presence {
        /// The WebSocket URL.
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
        url: String,
        /// The node's data dir (dev key).
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Subscribers (each its own session and user).
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        /// Status changes, alternating away and online.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// N idle authenticated sessions; the server's RSS per session.
    Idle {
        /// The system under test.
        #[arg(long, value_enum, default_value = "iris")]
        system: System,
        /// Iris: the WebSocket URL (ignored with --quic); MQTT, NATS and XMPP: HOST:PORT.
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
        url: String,
        /// QUIC address of the node; measures QUIC sessions instead.
        #[arg(long)]
        quic: Option<std::net::SocketAddr>,
        /// Iris: the node's data dir (dev key and dev certificate).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// The server's process id (RSS is read from /proc).
        #[arg(long)]
        pid: u32,
        /// Sessions to open.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Sessions opened at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// QUIC: seconds between the client's keep-alive PINGs (below the
        /// node's QUIC idle timeout, 60 s by default). Every connection
        /// sends them, so with many connections they cost real CPU.
        #[arg(long, default_value_t = 15)]
        keep_alive_secs: u64,
    },
}

/// One keep-alive HTTP/1.1 connection posting JSON.
struct HttpConn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
}

impl HttpConn {
    async fn open(host: &str) -> anyhow::Result<Self> {
        let s = tokio::net::TcpStream::connect(host).await?;
        s.set_nodelay(true)?;
        Ok(Self { stream: tokio::io::BufReader::new(s), host: host.to_owned() })
    }

    /// Posts and returns the status code (the body is read and dropped).
    async fn post(&mut self, path: &str, key: &str, body: &[u8]) -> anyhow::Result<u16> {
        Ok(self.request("POST", path, key, body).await?.0)
    }

    /// One request with an API key; the status and the body.
    async fn request(&mut self, method: &str, path: &str, key: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        self.stream.get_mut().write_all(head.as_bytes()).await?;
        self.stream.get_mut().write_all(body).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line.split_whitespace().nth(1).context("no status")?.parse()?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse()?;
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// The `analytics` benchmark (see [`Cmd::Analytics`]).
#[allow(clippy::too_many_arguments)]
async fn analytics(
    api: String,
    query: Vec<String>,
    key: String,
    days: i64,
    types: usize,
    projects: usize,
    queries: usize,
    no_fill: bool,
) -> anyhow::Result<()> {
    let host = |url: &str| url.trim_start_matches("http://").trim_end_matches('/').trim_end_matches("/v1").to_owned();
    const HOUR: i64 = 3_600_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let first = (now - days * 24 * HOUR) / HOUR * HOUR + HOUR;
    let hours: Vec<i64> = (0..days * 24).map(|h| first + h * HOUR).filter(|h| *h <= now).collect();
    let run = now;
    let mut filled = 0usize;
    if !no_fill {
        let mut conn = HttpConn::open(&host(&api)).await?;
        let mut events = Vec::new();
        for h in &hours {
            for t in 0..types {
                for p in 0..projects {
                    events.push(serde_json::json!({
                        "type": format!("type{t}"), "project": format!("project{p}"),
                        "ts": h + 60_000, "idempotency_key": format!("{run}-{h}-{t}-{p}"),
                    }));
                }
            }
        }
        for chunk in events.chunks(1_000) {
            let body = serde_json::to_vec(&serde_json::json!({ "events": chunk }))?;
            let (status, reply) = conn.request("POST", "/v1/events", &key, &body).await?;
            anyhow::ensure!(status == 202 || status == 200, "filling: {status} {}", String::from_utf8_lossy(&reply));
            filled += chunk.len();
        }
    }
    let from = now - days * 24 * HOUR;
    let path = format!("/v1/analytics?from={from}&to={}", now + HOUR);
    let urls = if query.is_empty() { vec![api.clone()] } else { query };
    let mut results = Vec::new();
    for url in urls {
        let mut conn = HttpConn::open(&host(&url)).await?;
        let mut h = hist();
        let mut rows = 0;
        for _ in 0..queries {
            let t = Instant::now();
            let (status, body) = conn.request("GET", &path, &key, b"").await?;
            h.saturating_record(t.elapsed().as_micros() as u64);
            anyhow::ensure!(status == 200, "query: {status} {}", String::from_utf8_lossy(&body));
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            rows = v["rollups"].as_array().map_or(0, Vec::len);
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
        results.push(serde_json::json!({
            "url": url, "queries": queries, "rows": rows,
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1_000.0,
        }));
    }
    println!(
        "{}",
        serde_json::json!({"scenario": "analytics", "days": days, "hours": hours.len(), "types": types,
            "projects": projects, "events_filled": filled, "results": results})
    );
    Ok(())
}

async fn ingest(
    api: String,
    key: String,
    rate: u64,
    batch: usize,
    connections: usize,
    seconds: u64,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let host = api.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let cpu_at_start = cpu_start(pid)?;
    let batches_per_sec = rate as f64 / batch as f64;
    let interval = Duration::from_secs_f64(connections as f64 / batches_per_sec);
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (host, key) = (host.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::open(&host).await?;
            let mut h = hist();
            let (mut ok, mut other) = (0u64, 0u64);
            let mut tick = tokio::time::interval(interval);
            let mut n = 0u64;
            while Instant::now() < until {
                tick.tick().await;
                let events: Vec<serde_json::Value> = (0..batch)
                    .map(|i| serde_json::json!({"type": "bench", "idempotency_key": format!("{run}-{c}-{n}-{i}"), "payload": {"i": i}}))
                    .collect();
                n += 1;
                let body = serde_json::to_vec(&serde_json::json!({ "events": events }))?;
                let t = Instant::now();
                match conn.post("/v1/events", &key, &body).await? {
                    202 => ok += batch as u64,
                    _ => other += 1,
                }
                h.saturating_record(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok((h, ok, other))
        }));
    }
    let mut all = hist();
    let (mut events, mut refused) = (0u64, 0u64);
    for t in tasks {
        let (h, ok, other) = t.await??;
        all.add(h)?;
        events += ok;
        refused += other;
    }
    let out = serde_json::json!({
        "scenario": "ingest",
        "target_events_per_second": rate,
        "batch": batch,
        "connections": connections,
        "seconds": seconds,
        "events_accepted": events,
        "events_per_second": events as f64 / seconds as f64,
        "refused_batches": refused,
        "batch_ack": summary(&all),
        "cpu": cpu_report(pid, cpu_at_start, events, "event"),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The server's and this process's CPU seconds so far, when the server's
/// pid is given.
fn cpu_start(pid: Option<u32>) -> anyhow::Result<Option<(f64, f64)>> {
    match pid {
        Some(p) => Ok(Some((cpu_seconds(&p.to_string())?, cpu_seconds("self")?))),
        None => Ok(None),
    }
}

/// The server's and this process's CPU seconds since `start`, and per
/// `unit` (`server_us_per_<unit>`, `bench_us_per_<unit>`) over `count`;
/// null when nothing was counted, or the server is gone by now.
fn cpu_report(pid: Option<u32>, start: Option<(f64, f64)>, count: u64, unit: &str) -> serde_json::Value {
    let (Some(p), Some((server0, bench0)), 1..) = (pid, start, count) else { return serde_json::Value::Null };
    let (Ok(server), Ok(bench)) = (cpu_seconds(&p.to_string()), cpu_seconds("self")) else {
        return serde_json::Value::Null;
    };
    let (server, bench) = (server - server0, bench - bench0);
    let per = |s: f64| s * 1e6 / count as f64;
    serde_json::json!({
        "server_s": server, format!("server_us_per_{unit}"): per(server),
        "bench_s": bench, format!("bench_us_per_{unit}"): per(bench),
    })
}

/// CPU seconds (user and system, all threads) a process has used so far,
/// from `/proc/<pid>/stat` (`self` for this one), in the kernel's clock
/// ticks (10 ms here).
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are plain.
    let rest = stat.rsplit_once(')').context("no ')' in /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; `rest`
    // starts at field 3.
    let ticks = |i: usize| -> anyhow::Result<f64> { Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?) };
    let hz = std::process::Command::new("getconf").arg("CLK_TCK").output().ok();
    let hz =
        hz.and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse::<f64>().ok()).unwrap_or(100.0);
    Ok((ticks(11)? + ticks(12)?) / hz)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}

/// A QUIC connector (one endpoint for many connections) that trusts the
/// node's development certificate in `data_dir`.
fn quic_connector(
    addr: std::net::SocketAddr,
    data_dir: &std::path::Path,
    keep_alive: Duration,
) -> anyhow::Result<Arc<iris_client::QuicConnector>> {
    let trust = iris_client::Trust::from_pem_file(&data_dir.join("tls/dev-cert.pem"))?;
    Ok(Arc::new(iris_client::QuicConnector::with_keep_alive(addr, "localhost", &trust, keep_alive)?))
}

/// How the idle scenario opens its sessions.
struct IdleOpts {
    sessions: usize,
    concurrency: usize,
    keep_alive: Duration,
}

/// Opens `n` connections (each made by `open(i)`), `concurrency` at a
/// time, in order, with a progress line every 1,000.
async fn open_all<F, Fut, T>(n: usize, concurrency: usize, open: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + concurrency.max(1)).min(n)).map(|i| tokio::spawn(open(i))).collect();
        next += batch.len();
        for t in batch {
            out.push(t.await??);
        }
        if next % 1_000 < concurrency.max(1) {
            eprintln!("{next} sessions open");
        }
    }
    Ok(out)
}

fn signer_for(data_dir: Option<&std::path::Path>) -> anyhow::Result<iris_auth::Signer> {
    match data_dir {
        Some(dir) => {
            let key = std::fs::read_to_string(dir.join("auth/dev-hs256.key")).context("reading the node's dev key")?;
            let secret = base64::engine::general_purpose::STANDARD.decode(key.trim())?;
            Ok(iris_auth::Signer::hs256(&secret))
        }
        // Peers do not check tokens; any signer will do.
        None => Ok(iris_auth::Signer::hs256(b"bench-bench-bench-bench-bench-be")),
    }
}

async fn idle(
    system: System,
    url: String,
    quic: Option<std::net::SocketAddr>,
    data_dir: Option<std::path::PathBuf>,
    pid: u32,
    opts: IdleOpts,
) -> anyhow::Result<()> {
    let IdleOpts { sessions, concurrency, keep_alive } = opts;
    if system == System::Iris && data_dir.is_none() {
        bail!("--data-dir is required for Iris");
    }
    let signer = Arc::new(signer_for(data_dir.as_deref())?);
    let connector = match (quic, &data_dir) {
        (Some(addr), Some(data_dir)) => Some(quic_connector(addr, data_dir, keep_alive)?),
        _ => None,
    };
    // Let a server that has just started settle too (an Erlang VM collects
    // its start-up garbage in the first seconds), so both readings match.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let mut held = open_all(sessions, concurrency, |i| {
        let (signer, url, connector) = (signer.clone(), url.clone(), connector.clone());
        async move {
            let token = signer.token("idle", &format!("idle-{i}"), 3_600)?;
            let conn = match connector {
                Some(q) => Conn::Iris(q.hello(&token, None, Encoding::Binary).await?.0),
                None => Conn::open(system, &url, &token, &format!("idle-{i}"), Encoding::Binary).await?,
            };
            anyhow::Ok(conn)
        }
    })
    .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the node settle (allocator, queues) before reading its RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    // The figure means something only if the sessions are still there:
    // the oldest and the newest Iris sessions must answer a ping.
    let (checked, alive) = if system == System::Iris { answering(&mut held).await } else { (0, 0) };
    if alive < checked {
        bail!("only {alive} of {checked} sessions checked after the reading answered a ping");
    }
    let out = serde_json::json!({
        "scenario": "idle",
        "system": format!("{system:?}").to_lowercase(),
        "transport": if quic.is_some() { "quic" } else if system == System::Iris { "websocket" } else { "tcp" },
        "sessions": sessions,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_session": (after as f64 - before as f64) / sessions as f64,
        "connect_per_second": sessions as f64 / connect_secs,
        "sessions_checked_alive": checked,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    drop(held);
    Ok(())
}

/// Pings the first and the last 500 Iris sessions of `held`; returns how
/// many were pinged and how many answered, all within 30 s.
async fn answering(held: &mut [Conn]) -> (usize, usize) {
    let n = held.len();
    let picks: std::collections::BTreeSet<usize> = (0..n.min(500)).chain(n.saturating_sub(500)..n).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut alive = 0;
    for &i in &picks {
        let Conn::Iris(c) = &mut held[i] else { continue };
        if c.ping(i as i64).await.is_err() {
            continue;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match c.recv_timeout(left).await {
                Ok(ServerFrame::Pong(p)) if p.ts == Some(i as i64) => {
                    alive += 1;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    (picks.len(), alive)
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

async fn metric_sums(url: &str) -> anyhow::Result<(f64, f64)> {
    let addr = url.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned();
    let body = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr)?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: bench\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })
    .await??;
    let get = |name: &str| {
        body.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    Ok((get("iris_fsync_batch_size_sum"), get("iris_fsync_batch_size_count")))
}

/// Connects to Iris over WebSocket (`ws://HOST:PORT/...`) from the next
/// loopback source address and says hello.
pub(crate) async fn iris_hello(
    url: &str,
    token: &str,
    resume_after: Option<u64>,
    encoding: Encoding,
) -> anyhow::Result<(Client, iris_protocol::Welcome)> {
    let host = url.strip_prefix("ws://").and_then(|r| r.split('/').next()).context("a ws:// URL")?;
    let mut c = Client::connect_over(url, peers::connect_tcp(host).await?, encoding).await?;
    let welcome = c.say_hello(token, resume_after).await?;
    Ok((c, welcome))
}

/// Which system a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum System {
    /// Iris over WebSocket.
    Iris,
    /// An MQTT 3.1.1 broker (Mosquitto).
    Mqtt,
    /// nats-server (core NATS: no acknowledgement, in memory).
    Nats,
    /// NATS JetStream: a file-backed stream, acknowledged by its PubAck
    /// (synced as the server's `sync_interval` says).
    Jetstream,
    /// An XMPP server (ejabberd).
    Xmpp,
}

/// One load-generator connection to any system.
enum Conn {
    Iris(Client),
    Mqtt(peers::Mqtt),
    Nats(peers::Nats),
    Jetstream(peers::JetStream),
    Xmpp(peers::Xmpp),
}

/// What a connection saw.
enum Seen {
    Accepted(String),
    Delivered(Vec<u8>),
    Error,
    Other,
}

impl Conn {
    async fn open(system: System, url: &str, token: &str, me: &str, encoding: Encoding) -> anyhow::Result<Self> {
        Ok(match system {
            System::Iris => Conn::Iris(iris_hello(url, token, None, encoding).await?.0),
            System::Mqtt => Conn::Mqtt(peers::Mqtt::connect(url, me, &format!("chat/{me}")).await?),
            System::Nats => Conn::Nats(peers::Nats::connect(url, &format!("chat.{me}")).await?),
            System::Jetstream => Conn::Jetstream(peers::JetStream::connect(url, me).await?),
            System::Xmpp => Conn::Xmpp(peers::Xmpp::connect(url, me).await?),
        })
    }

    /// Sends; returns the key its acknowledgement will carry, if any.
    async fn send(&mut self, id: &str, n: u64, peer: &str, body: &str) -> anyhow::Result<Option<String>> {
        match self {
            Conn::Iris(c) => {
                c.send(id, peer, body).await?;
                Ok(Some(id.to_owned()))
            }
            Conn::Mqtt(m) => {
                let pid = (n % 65_535 + 1) as u16;
                m.publish(&format!("chat/{peer}"), pid, body.as_bytes()).await?;
                Ok(Some(pid.to_string()))
            }
            Conn::Nats(c) => {
                c.publish(&format!("chat.{peer}"), body.as_bytes()).await?;
                Ok(None)
            }
            Conn::Jetstream(c) => {
                c.publish(&format!("chat.{peer}"), n, body.as_bytes()).await?;
                Ok(Some(n.to_string()))
            }
            Conn::Xmpp(x) => {
                x.publish(peer, body.as_bytes()).await?;
                Ok(None)
            }
        }
    }

    /// Cancel-safe.
    async fn next(&mut self) -> anyhow::Result<Seen> {
        Ok(match self {
            Conn::Iris(c) => match c.recv().await? {
                ServerFrame::Accepted(a) => Seen::Accepted(a.id),
                ServerFrame::Message(m) => Seen::Delivered(m.body.0.to_vec()),
                ServerFrame::Error(_) => Seen::Error,
                _ => Seen::Other,
            },
            Conn::Mqtt(m) => match m.next().await? {
                peers::PeerEvent::Acked(id) => Seen::Accepted(id.to_string()),
                peers::PeerEvent::Delivered(b) => Seen::Delivered(b),
                peers::PeerEvent::Refused => Seen::Error,
                peers::PeerEvent::Other => Seen::Other,
            },
            Conn::Nats(c) => match c.next().await? {
                peers::PeerEvent::Delivered(b) => Seen::Delivered(b),
                _ => Seen::Other,
            },
            Conn::Jetstream(c) => match c.next().await? {
                peers::PeerEvent::Acked(n) => Seen::Accepted(n.to_string()),
                peers::PeerEvent::Delivered(b) => Seen::Delivered(b),
                peers::PeerEvent::Refused => Seen::Error,
                peers::PeerEvent::Other => Seen::Other,
            },
            Conn::Xmpp(x) => match x.next().await? {
                peers::PeerEvent::Delivered(b) => Seen::Delivered(b),
                peers::PeerEvent::Refused => Seen::Error,
                _ => Seen::Other,
            },
        })
    }
}

async fn user_task(
    system: System,
    url: String,
    token: String,
    peer: String,
    me: usize,
    run: u64,
    ready: (tokio::sync::mpsc::Sender<Result<(), String>>, tokio::sync::watch::Receiver<bool>),
    (interval, phase): (Duration, Duration),
    until: Instant,
    start: Instant,
    encoding: Encoding,
    counters: Arc<Counters>,
    quic: Option<Arc<iris_client::QuicConnector>>,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    // A connect refused under the opening burst (Mosquitto has reset one
    // in a few hundred) is retried twice, as a client would.
    let mut attempt = 0;
    let opened = loop {
        let opened = match &quic {
            Some(q) => q.hello(&token, None, encoding).await.map(|(c, _)| Conn::Iris(c)).map_err(anyhow::Error::from),
            None => Conn::open(system, &url, &token, &format!("bench-{me}"), encoding).await,
        };
        match opened {
            Err(e) if attempt < 2 => {
                attempt += 1;
                eprintln!("user {me}: connecting failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            opened => break opened,
        }
    };
    let report = opened.as_ref().map(|_| ()).map_err(|e| format!("user {me}: {e}"));
    let mut c = match (ready.0.send(report).await, opened) {
        (Ok(()), Ok(c)) => c,
        (_, Err(e)) => return Err(e),
        (Err(_), Ok(_)) => bail!("the run was abandoned"),
    };
    // Nobody sends before everybody is online, or early messages would wait
    // in storage instead of being delivered live.
    let mut go = ready.1;
    while !*go.borrow_and_update() {
        if go.changed().await.is_err() {
            bail!("the run was abandoned");
        }
    }
    let start_sending = Instant::now();
    let until = start_sending + until.saturating_duration_since(start);
    let (mut acc, mut del) = (hist(), hist());
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval_at((start_sending + phase).into(), interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0u64;
    let drain_until = until + Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = tick.tick(), if Instant::now() < until => {
                // The guard was read when this select began: a tick that
                // fires after the end of the load is not a send (its
                // recipient may have left, quiet for a second, already).
                if Instant::now() >= until {
                    continue;
                }
                let id = format!("{run}-{me}-{n}");
                let now = Instant::now();
                let body = format!("{}", now.duration_since(start).as_nanos());
                if let Some(key) = c.send(&id, n, &peer, &body).await? {
                    pending.insert(key, now);
                }
                n += 1;
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            seen = c.next() => match seen? {
                Seen::Accepted(key) => {
                    if let Some(t) = pending.remove(&key) {
                        acc.saturating_record(t.elapsed().as_micros() as u64);
                        counters.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Seen::Delivered(body) => {
                    if let Some(ns) = std::str::from_utf8(&body).ok().and_then(|b| b.parse::<u128>().ok()) {
                        let sent = start + Duration::from_nanos(ns as u64);
                        del.saturating_record(Instant::now().duration_since(sent).as_micros() as u64);
                        counters.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Seen::Error => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                Seen::Other => {}
            },
            _ = tokio::time::sleep_until(drain_until.into()) => break,
            // After the load, stop once the connection has been quiet for a
            // second (the peer's last deliveries have arrived).
            _ = tokio::time::sleep(Duration::from_secs(1)), if Instant::now() >= until => break,
        }
    }
    Ok((acc, del))
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (system, url, metrics, data_dir, users, rate, seconds, binary, quic, spread, pid) = match Cli::parse().command {
        Cmd::Chat { system, url, metrics, data_dir, users, rate, seconds, binary, quic, spread, pid } => {
            (system, url, metrics, data_dir, users, rate, seconds, binary, quic, spread, pid)
        }
        Cmd::Idle { system, url, quic, data_dir, pid, sessions, concurrency, keep_alive_secs } => {
            let opts = IdleOpts { sessions, concurrency, keep_alive: Duration::from_secs(keep_alive_secs) };
            return idle(system, url, quic, data_dir, pid, opts).await;
        }
        Cmd::CrossRegion { region_a, url_a, region_b, url_b, data_dir, messages } => {
            let regions = federation::Regions { a: (region_a, url_a), b: (region_b, url_b) };
            return federation::cross_region(regions, signer_for(Some(&data_dir))?, messages).await;
        }
        Cmd::Storm { url, data_dir, sessions, concurrency, messages } => {
            let target = storm::Target { url, signer: signer_for(Some(&data_dir))? };
            return storm::storm(target, sessions, concurrency, messages).await;
        }
        Cmd::Presence { url, data_dir, subscribers, rounds } => {
            return presence::presence(url, signer_for(Some(&data_dir))?, subscribers, rounds).await;
        }
        Cmd::Analytics { api, query, key, days, types, projects, queries, no_fill } => {
            return analytics(api, query, key, days, types, projects, queries, no_fill).await;
        }
        Cmd::Ingest { api, key, rate, batch, connections, seconds, pid } => {
            return ingest(api, key, rate, batch, connections, seconds, pid).await;
        }
        Cmd::KafkaFloor { bootstrap, rate, seconds, bytes, partitions, linger_ms } => {
            let load = floor::Load { rate, seconds, bytes, partitions, linger_ms };
            return floor::kafka_floor(&bootstrap, load).await;
        }
    };
    if users < 2 || users % 2 != 0 {
        bail!("--users must be even and at least 2");
    }
    if system == System::Iris && data_dir.is_none() {
        bail!("--data-dir is required for Iris");
    }
    let signer = signer_for(data_dir.as_deref())?;
    let quic = match (quic, &data_dir) {
        (Some(addr), Some(dir)) if system == System::Iris => Some(quic_connector(addr, dir, Duration::from_secs(15))?),
        (Some(_), _) => bail!("--quic is for Iris, with --data-dir"),
        (None, _) => None,
    };
    let per_user = Duration::from_secs_f64(users as f64 / rate as f64);
    let before = match &metrics {
        Some(m) => Some(metric_sums(m).await?),
        None => None,
    };
    let counters = Arc::new(Counters::default());
    // Client ids must be new in every run, or the node rightly answers
    // them as retries of the previous run's sends.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds) + Duration::from_millis(500);
    let encoding = if binary { Encoding::Binary } else { Encoding::Json };
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(users);
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let urls: Vec<String> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    if urls.is_empty() {
        bail!("--url names no address");
    }
    if system == System::Jetstream {
        peers::JetStream::create_stream(&urls[0]).await?;
    }
    for u in 0..users {
        let name = format!("bench-{u}");
        let peer = format!("bench-{}", u ^ 1);
        let token = signer.token("bench", &name, 3_600)?;
        tasks.push(tokio::spawn(user_task(
            system,
            urls[u % urls.len()].clone(),
            token,
            peer,
            u,
            run,
            (ready_tx.clone(), go_rx.clone()),
            (per_user, if spread { per_user.mul_f64(u as f64 / users as f64) } else { Duration::ZERO }),
            until,
            start,
            encoding,
            counters.clone(),
            quic.clone(),
        )));
    }
    // Everyone connects first; one failure abandons the run instead of
    // leaving the others waiting forever.
    drop(ready_tx);
    for _ in 0..users {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => bail!("connecting: {e}"),
            Ok(None) => bail!("connecting: a user task ended early"),
            Err(_) => bail!("connecting: not all users were online within 60 s"),
        }
    }
    let cpu_at_start = cpu_start(pid)?;
    go_tx.send_replace(true);
    let progress = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "sent {} accepted {} delivered {} errors {}",
                    counters.sent.load(Ordering::Relaxed),
                    counters.accepted.load(Ordering::Relaxed),
                    counters.delivered.load(Ordering::Relaxed),
                    counters.errors.load(Ordering::Relaxed)
                );
            }
        })
    };
    let (mut acc, mut del) = (hist(), hist());
    for t in tasks {
        let (a, d) = t.await??;
        acc.add(a)?;
        del.add(d)?;
    }
    progress.abort();
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let cpu = cpu_report(pid, cpu_at_start, delivered, "msg");
    let fsync = match (&metrics, before) {
        (Some(m), Some((s0, c0))) => {
            let (s1, c1) = metric_sums(m).await?;
            let fsyncs = c1 - c0;
            serde_json::json!({ "fsyncs": fsyncs, "commits_per_fsync": if fsyncs > 0.0 { (s1 - s0) / fsyncs } else { 0.0 } })
        }
        _ => serde_json::Value::Null,
    };
    let out = serde_json::json!({
        "scenario": "chat",
        "system": format!("{system:?}").to_lowercase(),
        "users": users,
        "target_rate": rate,
        "seconds": seconds,
        "encoding": if binary { "binary" } else { "json" },
        "transport": if quic.is_some() { "quic" } else if system == System::Iris { "websocket" } else { "tcp" },
        "endpoints": urls.len(),
        "spread": spread,
        "sent": counters.sent.load(Ordering::Relaxed),
        "accepted": counters.accepted.load(Ordering::Relaxed),
        "delivered": delivered,
        "errors": counters.errors.load(Ordering::Relaxed),
        "send_to_accepted": summary(&acc),
        "send_to_delivered": summary(&del),
        "group_commit": fsync,
        "cpu": cpu,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
