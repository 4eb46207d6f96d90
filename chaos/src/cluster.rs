//! A region of real processes, each in its own namespace: Redis (append
//! only, fsync always), three Apache Kafka brokers (replication factor 3,
//! `min.insync.replicas` 2, `scripts/kafka`), two core nodes and two edge
//! nodes of the real `iris` binary; and the faults done to them.

use crate::nemesis::{Fault, Kind};
use crate::net::Net;
use crate::proxy::{Impairment, Knob, Proxy};
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings the nodes run with (tight, so that faults show within a run).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Shards of the region.
    pub shards: u32,
    /// An edge's lease on the shards.
    pub edge_lease_ms: u64,
    /// A core's session with the consumer group.
    pub session_timeout_ms: u32,
    /// Over how long a draining edge closes its sessions.
    pub drain_spread_ms: u64,
}

/// One Iris node of the region.
struct NodeProc {
    name: String,
    dir: PathBuf,
    child: Option<Child>,
    /// A clock offset to start with (libfaketime), seconds.
    skew_s: i64,
}

/// The region.
pub struct Cluster {
    /// The hosts.
    pub net: Net,
    work: PathBuf,
    iris: PathBuf,
    repo: PathBuf,
    nodes: Vec<NodeProc>,
    redis: Option<Child>,
    /// The Kafka bootstrap list.
    pub kafka: String,
    /// The token key (base64) every node shares.
    pub key: Vec<u8>,
    tuning: Tuning,
    /// Carries every node's connections to the brokers and Redis.
    proxy: Proxy,
    /// Each node's link impairment (the `slow` fault).
    knobs: HashMap<String, Knob>,
    /// Whether Redis's disk (a tmpfs) is mounted.
    redis_disk: bool,
}

/// The size of Redis's disk, MiB: far more than a run writes (a few MiB a
/// minute), so that only the disk-full fault fills it.
const REDIS_DISK_MB: u64 = 256;
/// The file the disk-full fault fills Redis's disk with.
const FILLER: &str = "chaos-filler";

/// The port edges serve WebSocket sessions on.
const WS_PORT: u16 = 8080;
/// The port edges serve the service API on.
const HTTP_PORT: u16 = 8090;

/// The names of a one-region run's hosts, in address order.
pub const HOSTS: [&str; 8] = ["redis", "kafka-1", "kafka-2", "kafka-3", "core-1", "core-2", "edge-1", "edge-2"];

/// The nodes of the region (what the nemesis may kill).
pub const CORES: [&str; 2] = ["core-1", "core-2"];
/// The edges.
pub const EDGES: [&str; 2] = ["edge-1", "edge-2"];
/// The brokers.
pub const BROKERS: [&str; 3] = ["kafka-1", "kafka-2", "kafka-3"];

fn faketime_lib() -> Option<PathBuf> {
    ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Makes a child die with the harness: a run that is interrupted leaves no
/// node or Redis running (the brokers have scripts/kafka's watchdog).
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; it runs in the forked child
    // before exec and touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Unmounts the Redis disks (tmpfs `chaos-redis`) that runs interrupted
/// before they could clean up left behind (`chaos clean`).
pub fn unmount_leftovers() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        if let (Some("chaos-redis"), Some(dir)) = (fields.next(), fields.next()) {
            let _unmounted = Command::new("umount").args(["-l", dir]).status();
        }
    }
}

/// Fills the file system `path` is on: writes zeros to `path` until no
/// space is left.
fn fill(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                if chunk.len() == 4_096 {
                    break;
                }
                chunk.truncate(4_096);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: signalling a process this harness started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn wait_port(addr: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline {
            bail!("nothing answers at {addr} after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Cluster {
    /// Makes the hosts and starts every process; returns once each answers.
    pub fn start(run: u8, work: &Path, iris: &Path, repo: &Path, tuning: Tuning) -> anyhow::Result<Cluster> {
        let net = Net::create(run, &HOSTS)?;
        std::fs::create_dir_all(work)?;
        let key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        let mut c = Cluster {
            net,
            work: work.to_path_buf(),
            iris: iris.to_path_buf(),
            repo: repo.to_path_buf(),
            nodes: Vec::new(),
            redis: None,
            kafka: String::new(),
            key,
            tuning,
            proxy: Proxy::new()?,
            knobs: HashMap::new(),
            redis_disk: false,
        };
        c.start_redis()?;
        c.start_kafka()?;
        c.route_through_proxy()?;
        for name in CORES.iter().chain(&EDGES) {
            let dir = work.join(name);
            std::fs::create_dir_all(dir.join("auth"))?;
            use base64::Engine;
            std::fs::write(dir.join("auth/dev-hs256.key"), base64::engine::general_purpose::STANDARD.encode(&c.key))?;
            std::fs::write(dir.join("node.toml"), c.node_config(name))?;
            c.nodes.push(NodeProc { name: name.to_string(), dir, child: None, skew_s: 0 });
        }
        for name in CORES.iter().chain(&EDGES) {
            c.start_node(name)?;
        }
        Ok(c)
    }

    /// Puts the proxy on every node's path to the brokers and Redis (before
    /// any node starts, so that every connection goes through it).
    fn route_through_proxy(&mut self) -> anyhow::Result<()> {
        let mut upstreams: Vec<std::net::SocketAddr> = vec![self.redis_addr().parse()?];
        for b in self.kafka.split(',') {
            upstreams.push(b.parse().with_context(|| format!("a broker address {b:?}"))?);
        }
        for name in CORES.iter().chain(&EDGES) {
            let knob = Knob::default();
            let mut links = Vec::new();
            for up in &upstreams {
                let std::net::SocketAddr::V4(v4) = up else { bail!("{up}: IPv4 expected") };
                let port = self.proxy.link(self.net.gateway(), *up, knob.clone())?;
                links.push((*v4.ip(), v4.port(), port));
            }
            self.net.redirect(name, &links)?;
            self.knobs.insert(name.to_string(), knob);
        }
        Ok(())
    }

    fn redis_addr(&self) -> String {
        format!("{}:6379", self.net.host("redis").ip)
    }

    fn start_redis(&mut self) -> anyhow::Result<()> {
        let host = self.net.host("redis").clone();
        let dir = self.work.join("redis");
        if !self.redis_disk {
            // A disk of its own that the disk-full fault can fill.
            std::fs::create_dir_all(&dir)?;
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={REDIS_DISK_MB}m"), "chaos-redis"])
                .arg(&dir)
                .status()?
                .success();
            anyhow::ensure!(ok, "mounting a tmpfs for Redis on {} failed", dir.display());
            self.redis_disk = true;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.work.join("redis.log"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.netns, "redis-server", "--bind", &host.ip.to_string(), "--port", "6379"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("redis-server (Debian: redis-server)")?;
        self.redis = Some(child);
        wait_port(&self.redis_addr(), Duration::from_secs(30))
    }

    fn kafka_script(&self) -> PathBuf {
        self.repo.join("scripts/kafka")
    }

    fn start_kafka(&mut self) -> anyhow::Result<()> {
        let hosts: Vec<String> = BROKERS.iter().map(|b| self.net.host(b).ip.to_string()).collect();
        let nets: Vec<String> = BROKERS.iter().map(|b| self.net.host(b).netns.clone()).collect();
        let out = Command::new(self.kafka_script())
            .arg("start")
            .arg(self.work.join("kafka"))
            .args(["--brokers", "3", "--hosts", &hosts.join(","), "--netns", &nets.join(",")])
            .args(["--owner", &std::process::id().to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("scripts/kafka could not start three brokers");
        }
        self.kafka = String::from_utf8(out.stdout)?.lines().last().unwrap_or_default().to_owned();
        Ok(())
    }

    fn node_config(&self, name: &str) -> String {
        let host = self.net.host(name);
        let edge = name.starts_with("edge");
        let roles = if edge { "\"edge\", \"router\"" } else { "\"core\", \"router\"" };
        let ws = if edge { format!("\"{}:{WS_PORT}\"", host.ip) } else { "\"off\"".into() };
        // The service API, on the edges (a core serves no clients).
        let http = if edge { format!("\"{}:{HTTP_PORT}\"", host.ip) } else { "\"off\"".into() };
        let t = &self.tuning;
        // A draining edge closes its sessions over this long, so that its
        // clients move to the other edge a few at a time.
        let spread = if edge { t.drain_spread_ms } else { 0 };
        format!(
            "node_id = \"{name}\"\nregion = \"chaos\"\nroles = [{roles}]\n\
             [listen]\nws = {ws}\nquic = \"off\"\nhttp = {http}\nmetrics = \"{}:9100\"\ndrain_spread_ms = {spread}\n\
             [limits]\nframes_per_second = 10000\nframe_burst = 10000\n\
             [storage]\nbackend = \"redis\"\nredis_url = \"redis://{}\"\n\
             [core]\nshards = {}\nedge_lease_ms = {}\n\
             [cluster]\nkafka = \"{}\"\nsession_timeout_ms = {}\n",
            host.ip,
            self.redis_addr(),
            t.shards,
            t.edge_lease_ms,
            self.kafka,
            t.session_timeout_ms
        )
    }

    /// The edges' service API listeners, `IP:PORT`.
    pub fn api_addrs(&self) -> Vec<String> {
        EDGES.iter().map(|c| format!("{}:{HTTP_PORT}", self.net.host(c).ip)).collect()
    }

    /// Creates an ingestion API key for `tenant` in the region's store, as
    /// an operator would (`iris api-key create --config`); returns the key.
    pub fn api_key(&mut self, tenant: &str) -> anyhow::Result<String> {
        let dir = self.node(CORES[0]).dir.clone();
        let out = Command::new(&self.iris)
            .args(["api-key", "create", "--tenant", tenant, "--config"])
            .arg(dir.join("node.toml"))
            .arg("--data-dir")
            .arg(&dir)
            .output()?;
        anyhow::ensure!(out.status.success(), "iris api-key create: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout)?;
        Ok(stdout.lines().last().context("a key")?.trim().to_owned())
    }

    /// The WebSocket URL of an edge.
    pub fn edge_url(&self, edge: &str) -> String {
        format!("ws://{}:{WS_PORT}/v1/ws", self.net.host(edge).ip)
    }

    fn node(&mut self, name: &str) -> &mut NodeProc {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    fn start_node(&mut self, name: &str) -> anyhow::Result<()> {
        let netns = self.net.host(name).netns.clone();
        let iris = self.iris.clone();
        let log_path = self.work.join(format!("{name}.log"));
        let node = self.node(name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns])
            .arg(&iris)
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--config")
            .arg(node.dir.join("node.toml"))
            .env("IRIS_LOG", "warn")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if node.skew_s != 0 {
            let lib = faketime_lib().context("libfaketime (Debian: faketime) is needed for the skew fault")?;
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME", format!("{:+}s", node.skew_s))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        die_with_parent(&mut cmd);
        node.child = Some(cmd.spawn().with_context(|| format!("starting {name}"))?);
        Ok(())
    }

    fn pid(&mut self, name: &str) -> Option<u32> {
        self.node(name).child.as_ref().map(Child::id)
    }

    fn kill_node(&mut self, name: &str) {
        if let Some(mut child) = self.node(name).child.take() {
            // Already gone is as good as killed.
            let _gone = child.kill();
            let _reaped = child.wait();
        }
    }

    /// Stops a node gracefully with the operator's command, `iris drain`
    /// (readiness fails, an edge's sessions close spread out, a core's
    /// shards finish and leave the group), waiting up to 20 s, then kills
    /// it. A node that has not written its pid file yet gets SIGTERM.
    fn stop_node(&mut self, name: &str) {
        let iris = self.iris.clone();
        let Some(mut child) = self.node(name).child.take() else { return };
        let dir = self.node(name).dir.clone();
        let drained = Command::new(&iris)
            .args(["drain", "--timeout", "20s", "--data-dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !drained {
            eprintln!("chaos: iris drain did not stop {name} (no pid file yet?); sending SIGTERM");
            signal(child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _gone = child.kill();
        let _reaped = child.wait();
    }

    fn peers_of(&self, names: &[&str]) -> Vec<std::net::Ipv4Addr> {
        names.iter().map(|n| self.net.host(n).ip).collect()
    }

    /// Starts a fault. Returns what must be done to end it (`end`).
    pub fn begin(&mut self, f: &Fault) -> anyhow::Result<()> {
        let t = f.target.as_str();
        match f.kind {
            Kind::Kill => self.kill_node(t),
            Kind::Pause => {
                if let Some(pid) = self.pid(t) {
                    signal(pid, libc::SIGSTOP);
                }
            }
            Kind::CutBrokers => self.net.cut(t, &self.peers_of(&BROKERS), false)?,
            Kind::CutRedis => self.net.cut(t, &self.peers_of(&["redis"]), false)?,
            Kind::CutClients => self.net.cut_clients(t, WS_PORT)?,
            Kind::OneWay => self.net.cut(t, &self.peers_of(&BROKERS), true)?,
            Kind::KillBroker => {
                let i = t.trim_start_matches("kafka-");
                let ok = Command::new(self.kafka_script())
                    .arg("kill")
                    .arg(self.work.join("kafka"))
                    .arg(i)
                    .status()?
                    .success();
                anyhow::ensure!(ok, "scripts/kafka kill {i} failed");
            }
            Kind::RestartRedis => {
                if let Some(mut r) = self.redis.take() {
                    let _gone = r.kill();
                    let _reaped = r.wait();
                }
            }
            Kind::Skew => {
                self.stop_node(t);
                self.node(t).skew_s = f.skew_s;
                self.start_node(t)?;
            }
            Kind::DiskFull => fill(&self.work.join("redis").join(FILLER))?,
            Kind::Slow => self.knobs[t].set(Impairment {
                delay_ms: f.delay_ms,
                jitter_ms: f.delay_ms / 2,
                loss_pct: f.loss_pct as u32,
            }),
            Kind::Rolling => {
                for name in CORES.iter().chain(&EDGES) {
                    self.stop_node(name);
                    self.start_node(name)?;
                    // Let it join before the next one leaves.
                    std::thread::sleep(Duration::from_secs(8));
                }
            }
        }
        Ok(())
    }

    /// Ends a fault.
    pub fn end(&mut self, f: &Fault) -> anyhow::Result<()> {
        let t = f.target.as_str();
        match f.kind {
            Kind::Kill => self.start_node(t)?,
            Kind::Pause => {
                if let Some(pid) = self.pid(t) {
                    signal(pid, libc::SIGCONT);
                }
            }
            Kind::CutBrokers | Kind::CutRedis | Kind::CutClients | Kind::OneWay => self.net.heal(t)?,
            Kind::KillBroker => {
                let i = t.trim_start_matches("kafka-");
                let ok = Command::new(self.kafka_script())
                    .arg("restart")
                    .arg(self.work.join("kafka"))
                    .arg(i)
                    .status()?
                    .success();
                anyhow::ensure!(ok, "scripts/kafka restart {i} failed");
            }
            Kind::RestartRedis => self.start_redis()?,
            Kind::Skew => {
                self.stop_node(t);
                self.node(t).skew_s = 0;
                self.start_node(t)?;
            }
            Kind::Slow => self.knobs[t].set(Impairment::default()),
            Kind::DiskFull => {
                std::fs::remove_file(self.work.join("redis").join(FILLER))?;
                // Under `appendfsync always` Redis exits when an append
                // fails ("Can't recover from AOF write error when the AOF
                // fsync policy is 'always'. Exiting..."), having answered
                // nothing it did not write: started again on the same files
                // (it drops the torn tail), as an operator would.
                let stopped = match self.redis.as_mut() {
                    Some(r) => r.try_wait()?.is_some(),
                    None => true,
                };
                if stopped {
                    self.redis = None;
                    self.start_redis()?;
                }
            }
            Kind::Rolling => {}
        }
        Ok(())
    }

    /// Nodes that exited by themselves (a crash is a finding).
    pub fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    out.push(format!("{} exited: {status}", n.name));
                    n.child = None;
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            if let Some(pid) = self.pid(&n) {
                signal(pid, libc::SIGCONT);
            }
            self.kill_node(&n);
        }
        if let Some(mut r) = self.redis.take() {
            let _gone = r.kill();
            let _reaped = r.wait();
        }
        if self.redis_disk {
            let _unmounted = Command::new("umount").arg("-l").arg(self.work.join("redis")).status();
        }
        let stopped = Command::new(self.kafka_script()).arg("stop").arg(self.work.join("kafka")).status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!("chaos: scripts/kafka stop failed; its watchdog stops the brokers");
        }
    }
}
