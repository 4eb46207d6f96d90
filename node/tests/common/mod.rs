//! Test harness: runs the real `iris` binary on port 0 with its own data
//! directory and talks to it over real sockets.
#![allow(dead_code)]

use iris_client::{Client, ClientError, Encoding, ServerFrame, Welcome};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(10);

/// How long a starting node may take to report ready: past the nodes' own
/// 30 s wait for their topics to be listed (`iris_kafka`), so that a node
/// that gives up says why rather than the test's wait running out first.
pub const READY_WAIT: Duration = Duration::from_secs(60);

pub struct Node {
    pub child: Child,
    pub ws_url: String,
    pub quic_addr: Option<std::net::SocketAddr>,
    pub wss_url: Option<String>,
    pub metrics_url: Option<String>,
    pub api_url: Option<String>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    secret: Vec<u8>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_iris")
}

/// Extra TOML for the config (e.g. `[limits]` overrides). Ports are always 0.
pub fn start_with(extra: &str) -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut node = start_in(&dir, extra);
    node._tmp = Some(tmp);
    node
}

pub fn start() -> Node {
    start_with("")
}

/// Starts a node on an existing data directory (for restarts).
pub fn start_in(dir: &Path, extra: &str) -> Node {
    let config = dir.join("test.toml");
    let text = if extra.contains("[listen]") {
        extra.to_owned()
    } else {
        format!(
            "[listen]\nws = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\nquic = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n{extra}\n"
        )
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(&config)
        .env("IRIS_LOG", std::env::var("IRIS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("iris starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // A clustered node checks its topics and joins groups before it is
    // ready; on two cores beside starting brokers that can take a while.
    let deadline = Instant::now() + READY_WAIT;
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("iris ready:") => break line,
            Ok(_) => continue,
            Err(e) => {
                // Whether it gave up (its error is on stderr above) or is
                // still starting says which wait ran out. (Its output
                // closes as it exits: the exit is given a moment.)
                let closed = matches!(e, std::sync::mpsc::RecvTimeoutError::Disconnected);
                let until = Instant::now() + if closed { Duration::from_secs(5) } else { Duration::ZERO };
                let exited = loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break Some(status),
                        Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                        _ => break None,
                    }
                };
                let _ = child.kill();
                match exited {
                    Some(status) => panic!("node exited before it was ready ({status}); its error is above"),
                    None if closed => panic!("node closed its output before it reported ready"),
                    None => panic!("node did not report ready within {READY_WAIT:?}"),
                }
            }
        }
    };
    let word = |prefix: &str| {
        ready.split_whitespace().find(|w| w.starts_with(prefix)).map(|w| w.trim_end_matches([',', ';']).to_string())
    };
    let ws = word("ws://").unwrap_or_default();
    let labelled = |label: &str| {
        let head = ready.split("; get a token").next().unwrap_or_default();
        head.split(", ").find_map(|seg| seg.trim_start_matches("iris ready: ").strip_prefix(label)).map(str::to_owned)
    };
    let metrics = labelled("metrics ");
    let api_url = labelled("api ");
    let quic_addr = word("quic://").map(|q| q.trim_start_matches("quic://").parse().unwrap());
    let wss_url = word("wss://");
    let key = std::fs::read_to_string(dir.join("auth/dev-hs256.key")).unwrap();
    use base64::Engine;
    let secret = base64::engine::general_purpose::STANDARD.decode(key.trim()).unwrap();
    Node {
        child,
        ws_url: ws,
        quic_addr,
        wss_url,
        metrics_url: metrics,
        api_url,
        dir: dir.to_path_buf(),
        _tmp: None,
        secret,
    }
}

impl Node {
    pub fn token(&self, tenant: &str, user: &str) -> String {
        iris_auth::Signer::hs256(&self.secret).token(tenant, user, 3_600).unwrap()
    }

    pub async fn login(&self, tenant: &str, user: &str) -> (Client, Welcome) {
        self.login_with(tenant, user, None, Encoding::Json).await
    }

    pub async fn login_with(&self, tenant: &str, user: &str, resume: Option<u64>, enc: Encoding) -> (Client, Welcome) {
        Client::hello(&self.ws_url, &self.token(tenant, user), resume, enc).await.expect("login")
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "node did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn expect(c: &mut Client, what: &str, pred: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
    match c.expect(WAIT, what, pred).await {
        Ok(f) => f,
        Err(e) => panic!("waiting for {what}: {e}; buffered: {:?}", c.buffered().collect::<Vec<_>>()),
    }
}

/// Asserts that nothing matching arrives within `d` (used only where the
/// absence of a frame is the property under test, after a later frame
/// proves the server has processed everything before it).
pub async fn expect_none(c: &mut Client, d: Duration, pred: impl FnMut(&ServerFrame) -> bool) {
    match c.expect(d, "nothing", pred).await {
        Err(ClientError::Timeout(_)) => {}
        Ok(f) => panic!("unexpected frame {f:?}"),
        Err(e) => panic!("{e}"),
    }
}

pub fn is_error(code: iris_protocol::ErrorCode) -> impl FnMut(&ServerFrame) -> bool {
    move |f| matches!(f, ServerFrame::Error(e) if e.code == code)
}

pub async fn accepted(c: &mut Client, id: &str) -> iris_protocol::Accepted {
    let id = id.to_owned();
    match expect(c, &format!("accepted {id}"), |f| matches!(f, ServerFrame::Accepted(a) if a.id == id)).await {
        ServerFrame::Accepted(a) => a,
        _ => unreachable!(),
    }
}

pub async fn message(c: &mut Client) -> iris_protocol::Message {
    match expect(c, "message", |f| matches!(f, ServerFrame::Message(_))).await {
        ServerFrame::Message(m) => m,
        _ => unreachable!(),
    }
}

pub async fn synced(c: &mut Client) -> iris_protocol::Synced {
    match expect(c, "synced", |f| matches!(f, ServerFrame::Synced(_))).await {
        ServerFrame::Synced(s) => s,
        _ => unreachable!(),
    }
}

pub async fn presence_of(c: &mut Client, user: &str) -> iris_protocol::PresenceUpdate {
    let u = user.to_owned();
    match expect(c, &format!("presence of {u}"), |f| matches!(f, ServerFrame::Presence(p) if p.user == u)).await {
        ServerFrame::Presence(p) => p,
        _ => unreachable!(),
    }
}

/// A minimal HTTP/1.1 client for the service API tests: one request per
/// connection. Returns the status, the headers (lower-case names) and the
/// body parsed as JSON (Null when empty).
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> (u16, Vec<(String, String)>, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    if !body.is_empty() {
        req.push_str("content-type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw)).await.expect("response in time").unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let json = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.into()))
    };
    (status, headers, json)
}

impl Node {
    pub fn api(&self, path: &str) -> String {
        format!("{}{}", self.api_url.clone().expect("api listener").trim_end_matches("/v1"), path)
    }

    pub fn service_token(&self, tenant: &str) -> String {
        iris_auth::Signer::hs256(&self.secret).service_token(tenant, "backend", 3_600).unwrap()
    }

    pub fn api_key(&self, tenant: &str) -> String {
        // With the node's own config: a region's keys live in its store.
        let out = Command::new(bin())
            .args(["api-key", "create", "--tenant", tenant, "--data-dir"])
            .arg(&self.dir)
            .arg("--config")
            .arg(self.dir.join("test.toml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_owned()
    }
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Redis server of one test, persisting every write (AOF, fsync always),
/// so that stopping and restarting it keeps what it acknowledged. It dies
/// with the value (a `Child` is not killed on drop).
pub struct Redis(Child);

impl Redis {
    /// Starts one on `port` with its files in `dir`; returns once it answers PING.
    pub fn start(port: u16, dir: &Path) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let deadline = Instant::now() + WAIT;
        while redis_ping(port).is_err() {
            assert!(Instant::now() < deadline, "redis did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Redis(child)
    }

    /// Freezes it (SIGSTOP): its connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused one run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.0.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "signal {sig} to redis-server");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// PING over a fresh connection; an error until Redis answers PONG (it
/// answers LOADING while it replays its AOF).
fn redis_ping(port: u16) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)?;
    if &buf == b"+PONG\r\n" { Ok(()) } else { Err(std::io::Error::other("not ready")) }
}

/// Apache Kafka brokers of one test, started by `scripts/kafka` in a
/// directory of their own (one broker, or a KRaft cluster of several with
/// replication factor 3 and `min.insync.replicas = 2`). The test may pause
/// them (SIGSTOP: unreachable, state kept), kill one with -9 and restart it.
/// They are stopped with the value, and by the script's watchdog if the
/// test process dies first: no JVM outlives its test.
pub struct Kafka {
    dir: tempfile::TempDir,
    /// The bootstrap servers, `HOST:PORT[,HOST:PORT]`.
    pub addr: String,
}

fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka")
}

fn run_kafka_script(args: &[&str]) -> String {
    let out = Command::new(kafka_script()).args(args).stderr(Stdio::inherit()).output().expect("scripts/kafka runs");
    assert!(out.status.success(), "scripts/kafka {args:?} failed");
    String::from_utf8(out.stdout).unwrap().lines().last().unwrap_or_default().to_owned()
}

impl Kafka {
    /// Starts `brokers` brokers; returns once every one answers metadata.
    pub fn start(brokers: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_owned();
        let owner = std::process::id().to_string();
        let addr = run_kafka_script(&["start", &path, "--brokers", &brokers.to_string(), "--owner", &owner]);
        Kafka { dir, addr }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    /// Freezes every broker: connections stay open but nothing is answered.
    pub fn pause(&self) {
        run_kafka_script(&["pause", self.path()]);
    }

    /// Lets paused brokers run again.
    pub fn resume(&self) {
        run_kafka_script(&["resume", self.path()]);
    }

    /// Kills broker `i` (1-based) with SIGKILL.
    pub fn kill9(&self, i: usize) {
        run_kafka_script(&["kill", self.path(), &i.to_string()]);
    }

    /// Starts a killed broker again on its port and data.
    pub fn restart(&self, i: usize) {
        run_kafka_script(&["restart", self.path(), &i.to_string()]);
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the brokers said last, for the failing test's report.
            for i in 1.. {
                let Ok(log) = std::fs::read_to_string(self.dir.path().join(format!("broker-{i}/kafka.log"))) else {
                    break;
                };
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- broker {i}, last lines of its log ---");
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{line}");
                }
            }
        }
        match Command::new(kafka_script()).args(["stop", self.path()]).status() {
            Ok(s) if s.success() => {}
            other => eprintln!("scripts/kafka stop {}: {other:?} (the watchdog stops the brokers)", self.path()),
        }
    }
}

/// Sends until accepted, retrying with the same id (a retry is never stored
/// twice); an error answer or silence is retried until `deadline`. Returns
/// the msg_id.
pub async fn send_until_accepted(c: &mut Client, id: &str, to: &str, body: &str, deadline: Instant) -> String {
    loop {
        c.send(id, to, body).await.unwrap();
        let wanted = id.to_owned();
        let answer = c
            .expect(Duration::from_secs(2), "an answer", |f| {
                matches!(f, ServerFrame::Accepted(a) if a.id == wanted)
                    || matches!(f, ServerFrame::Error(e) if e.id.as_deref() == Some(wanted.as_str()))
            })
            .await;
        if let Ok(ServerFrame::Accepted(a)) = answer {
            return a.msg_id;
        }
        assert!(Instant::now() < deadline, "{id} never accepted");
    }
}

/// Messages until `want` distinct seqs were seen (duplicates dropped by
/// seq, as clients do), in seq order: (seq, msg_id, body).
pub async fn collect_until(c: &mut Client, want: u64, deadline: Instant) -> Vec<(u64, String, String)> {
    let mut got: std::collections::BTreeMap<u64, (String, String)> = Default::default();
    while (got.len() as u64) < want {
        assert!(Instant::now() < deadline, "only {} of {want} messages arrived", got.len());
        if let Ok(ServerFrame::Message(m)) = c.recv_timeout(Duration::from_secs(1)).await {
            got.entry(m.seq).or_insert((m.msg_id, m.body.as_str().unwrap().to_owned()));
        }
    }
    got.into_iter().map(|(seq, (id, body))| (seq, id, body)).collect()
}

/// Logs in, retrying until the core node owns the shards (joining the
/// consumer group takes a moment).
pub async fn login_when_ready(node: &Node, tenant: &str, user: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(
            Duration::from_secs(5),
            Client::hello(&node.ws_url, &node.token(tenant, user), None, Encoding::Json),
        )
        .await
        {
            Ok(Ok((c, _))) => return c,
            Ok(Err(e)) => {
                assert!(Instant::now() < deadline, "no welcome from the region: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {
                assert!(Instant::now() < deadline, "no welcome from the region in time");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
