//! A region of real processes, each in its own namespace: Redis (append
//! only, fsync always), three Apache Kafka brokers (replication factor 3,
//! `min.insync.replicas` 2, `scripts/kafka`), two core nodes and two edge
//! nodes of the real `iris` binary; and the faults done to them. A
//! federation run has two such regions (each with its own Redis and nodes;
//! their topics, named by region, on the same three brokers) and a global
//! Kafka layer of its own that the cores' relays carry envelopes through.

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
    /// A clock offset to start with (`IRIS_CLOCK_OFFSET_MS`), seconds.
    skew_s: i64,
}

/// The region (or the federation).
pub struct Cluster {
    /// The hosts.
    pub net: Net,
    /// What the run is made of.
    pub layout: Layout,
    work: PathBuf,
    iris: PathBuf,
    repo: PathBuf,
    nodes: Vec<NodeProc>,
    redis: Vec<RedisProc>,
    /// The regional Kafka bootstrap list.
    pub kafka: String,
    /// The global layer's bootstrap list (a federation only).
    global: String,
    /// The token key (base64) every node shares.
    pub key: Vec<u8>,
    tuning: Tuning,
    /// Carries every node's connections to the brokers and Redis.
    proxy: Proxy,
    /// Each node's link impairment (the `slow` fault).
    knobs: HashMap<String, Knob>,
    /// Nodes found to have exited by themselves when the nemesis came to
    /// stop them (reported with [`Cluster::exited`]).
    crashes: Vec<String>,
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

/// One region of a run: its Redis and its nodes (host names).
#[derive(Debug, Clone)]
pub struct RegionHosts {
    /// The region's name (in its topics, and its users' homes).
    pub name: String,
    /// Its Redis.
    pub redis: String,
    /// Its core nodes (roles core + router; in a federation, the relays).
    pub cores: Vec<String>,
    /// Its edge nodes (roles edge + router, WebSocket and the service API).
    pub edges: Vec<String>,
}

/// What a run is made of.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The regions (one, or two federated).
    pub regions: Vec<RegionHosts>,
    /// The regional brokers (every region's topics).
    pub brokers: Vec<String>,
    /// The global layer's brokers (a federation only).
    pub global: Vec<String>,
}

impl Layout {
    /// One region (`chaos`: the hosts and addresses of every run before
    /// federation runs), or two federated regions, `eu` and `us`.
    pub fn new(regions: u8) -> Layout {
        let brokers = (1..=3).map(|i| format!("kafka-{i}")).collect();
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if regions <= 1 {
            return Layout {
                regions: vec![RegionHosts {
                    name: "chaos".into(),
                    redis: "redis".into(),
                    cores: strings(&["core-1", "core-2"]),
                    edges: strings(&["edge-1", "edge-2"]),
                }],
                brokers,
                global: Vec::new(),
            };
        }
        let region = |r: &str| RegionHosts {
            name: r.into(),
            redis: format!("redis-{r}"),
            cores: vec![format!("core-{r}1"), format!("core-{r}2")],
            edges: vec![format!("edge-{r}1"), format!("edge-{r}2")],
        };
        Layout { regions: vec![region("eu"), region("us")], brokers, global: vec!["global-1".into()] }
    }

    /// Whether this is a federation.
    pub fn federated(&self) -> bool {
        self.regions.len() > 1
    }

    /// Every host, in address order: Redis, brokers, then the nodes.
    pub fn hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self.regions.iter().map(|r| r.redis.clone()).collect();
        v.extend(self.brokers.iter().chain(&self.global).cloned());
        v.extend(self.nodes());
        v
    }

    /// Every node: each region's cores, then its edges.
    pub fn nodes(&self) -> Vec<String> {
        self.regions.iter().flat_map(|r| r.cores.iter().chain(&r.edges).cloned()).collect()
    }

    /// Every core.
    pub fn cores(&self) -> Vec<String> {
        self.regions.iter().flat_map(|r| r.cores.clone()).collect()
    }

    /// Every edge.
    pub fn edges(&self) -> Vec<String> {
        self.regions.iter().flat_map(|r| r.edges.clone()).collect()
    }

    /// The region a node, a Redis or a region's name belongs to.
    pub fn region_of(&self, host: &str) -> &RegionHosts {
        self.regions
            .iter()
            .find(|r| r.name == host || r.redis == host || r.cores.iter().chain(&r.edges).any(|n| n == host))
            .unwrap_or_else(|| panic!("{host} is in no region"))
    }

    /// What the nemesis may hit.
    pub fn targets(&self) -> crate::nemesis::Targets {
        crate::nemesis::Targets {
            cores: self.cores(),
            edges: self.edges(),
            brokers: self.brokers.iter().chain(&self.global).cloned().collect(),
            redis: self.regions.iter().map(|r| r.redis.clone()).collect(),
            regions: self.regions.iter().map(|r| r.name.clone()).collect(),
        }
    }
}

/// A Redis of the run.
struct RedisProc {
    host: String,
    child: Option<Child>,
    /// Whether its disk (a tmpfs) is mounted.
    disk: bool,
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
    pub fn start(
        run: u8,
        layout: Layout,
        work: &Path,
        iris: &Path,
        repo: &Path,
        tuning: Tuning,
    ) -> anyhow::Result<Cluster> {
        let hosts = layout.hosts();
        let net = Net::create(run, &hosts.iter().map(String::as_str).collect::<Vec<_>>())?;
        std::fs::create_dir_all(work)?;
        let key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        let redis =
            layout.regions.iter().map(|r| RedisProc { host: r.redis.clone(), child: None, disk: false }).collect();
        let mut c = Cluster {
            net,
            layout,
            work: work.to_path_buf(),
            iris: iris.to_path_buf(),
            repo: repo.to_path_buf(),
            nodes: Vec::new(),
            redis,
            kafka: String::new(),
            global: String::new(),
            key,
            tuning,
            proxy: Proxy::new()?,
            knobs: HashMap::new(),
            crashes: Vec::new(),
        };
        for r in c.layout.regions.clone() {
            c.start_redis(&r.redis)?;
        }
        c.kafka = c.start_kafka("kafka", &c.layout.brokers.clone())?;
        if c.layout.federated() {
            c.global = c.start_kafka("global", &c.layout.global.clone())?;
        }
        c.route_through_proxy()?;
        for name in c.layout.nodes() {
            let name = name.as_str();
            let dir = work.join(name);
            std::fs::create_dir_all(dir.join("auth"))?;
            use base64::Engine;
            std::fs::write(dir.join("auth/dev-hs256.key"), base64::engine::general_purpose::STANDARD.encode(&c.key))?;
            std::fs::write(dir.join("node.toml"), c.node_config(name))?;
            c.nodes.push(NodeProc { name: name.to_string(), dir, child: None, skew_s: 0 });
        }
        for name in c.layout.nodes() {
            c.start_node(&name)?;
        }
        Ok(c)
    }

    /// Puts the proxy on every node's path to the brokers and Redis (before
    /// any node starts, so that every connection goes through it).
    fn route_through_proxy(&mut self) -> anyhow::Result<()> {
        for name in self.layout.nodes() {
            let name = name.as_str();
            let redis = self.layout.region_of(name).redis.clone();
            let mut upstreams: Vec<std::net::SocketAddr> = vec![self.redis_addr(&redis).parse()?];
            for b in self.kafka.split(',').chain(self.global.split(',')).filter(|b| !b.is_empty()) {
                upstreams.push(b.parse().with_context(|| format!("a broker address {b:?}"))?);
            }
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

    fn redis_addr(&self, redis: &str) -> String {
        format!("{}:6379", self.net.host(redis).ip)
    }

    fn redis_proc(&mut self, redis: &str) -> &mut RedisProc {
        self.redis.iter_mut().find(|r| r.host == redis).unwrap_or_else(|| panic!("no Redis {redis}"))
    }

    /// Redis `redis`'s directory (a tmpfs of its own).
    fn redis_dir(&self, redis: &str) -> PathBuf {
        self.work.join(redis)
    }

    fn kill_redis(&mut self, redis: &str) {
        if let Some(mut r) = self.redis_proc(redis).child.take() {
            let _gone = r.kill();
            let _reaped = r.wait();
        }
    }

    fn start_redis(&mut self, redis: &str) -> anyhow::Result<()> {
        let host = self.net.host(redis).clone();
        let dir = self.redis_dir(redis);
        if !self.redis_proc(redis).disk {
            // A disk of its own that the disk-full fault can fill.
            std::fs::create_dir_all(&dir)?;
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={REDIS_DISK_MB}m"), "chaos-redis"])
                .arg(&dir)
                .status()?
                .success();
            anyhow::ensure!(ok, "mounting a tmpfs for Redis on {} failed", dir.display());
            self.redis_proc(redis).disk = true;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.work.join(format!("{redis}.log")))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.netns, "redis-server", "--bind", &host.ip.to_string(), "--port", "6379"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("redis-server (Debian: redis-server)")?;
        self.redis_proc(redis).child = Some(child);
        wait_port(&self.redis_addr(redis), Duration::from_secs(30))
    }

    fn kafka_script(&self) -> PathBuf {
        self.repo.join("scripts/kafka")
    }

    /// Starts a Kafka cluster of `brokers` in `work/<dir>`; returns its
    /// bootstrap list.
    fn start_kafka(&mut self, dir: &str, brokers: &[String]) -> anyhow::Result<String> {
        let hosts: Vec<String> = brokers.iter().map(|b| self.net.host(b).ip.to_string()).collect();
        let nets: Vec<String> = brokers.iter().map(|b| self.net.host(b).netns.clone()).collect();
        let out = Command::new(self.kafka_script())
            .arg("start")
            .arg(self.work.join(dir))
            .args(["--brokers", &brokers.len().to_string(), "--hosts", &hosts.join(","), "--netns", &nets.join(",")])
            .args(["--owner", &std::process::id().to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("scripts/kafka could not start {} brokers in {dir}", brokers.len());
        }
        Ok(String::from_utf8(out.stdout)?.lines().last().unwrap_or_default().to_owned())
    }

    /// The Kafka directory and broker number of a broker's host name
    /// (`kafka-2`: the regional cluster's second; `global-1`).
    fn broker(&self, name: &str) -> (PathBuf, String) {
        match name.split_once('-') {
            Some(("global", i)) => (self.work.join("global"), i.to_owned()),
            Some((_, i)) => (self.work.join("kafka"), i.to_owned()),
            None => panic!("{name} is not a broker"),
        }
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
        let region = self.layout.region_of(name);
        // In a federation the cores run the relays (two per region, sharing
        // the work through their consumer groups).
        let federation = if self.layout.federated() {
            let names: Vec<String> = self.layout.regions.iter().map(|r| format!("\"{}\"", r.name)).collect();
            format!(
                "[federation]\nregions = [{}]\nglobal_kafka = \"{}\"\nrelay = {}\n",
                names.join(", "),
                self.global,
                !edge
            )
        } else {
            String::new()
        };
        format!(
            "node_id = \"{name}\"\nregion = \"{}\"\nroles = [{roles}]\n\
             [listen]\nws = {ws}\nquic = \"off\"\nhttp = {http}\nmetrics = \"{}:9100\"\ndrain_spread_ms = {spread}\n\
             [limits]\nframes_per_second = 10000\nframe_burst = 10000\n\
             [storage]\nbackend = \"redis\"\nredis_url = \"redis://{}\"\n\
             [core]\nshards = {}\nedge_lease_ms = {}\n\
             [cluster]\nkafka = \"{}\"\nsession_timeout_ms = {}\n{federation}",
            region.name,
            host.ip,
            self.redis_addr(&region.redis),
            t.shards,
            t.edge_lease_ms,
            self.kafka,
            t.session_timeout_ms
        )
    }

    /// A region's edges' service API listeners, `IP:PORT`.
    pub fn api_addrs(&self, region: &str) -> Vec<String> {
        let r = self.layout.region_of(region);
        r.edges.iter().map(|c| format!("{}:{HTTP_PORT}", self.net.host(c).ip)).collect()
    }

    /// Creates an ingestion API key for `tenant` in a region's store, as
    /// an operator would (`iris api-key create --config`); returns the key.
    pub fn api_key(&mut self, region: &str, tenant: &str) -> anyhow::Result<String> {
        let core = self.layout.region_of(region).cores[0].clone();
        let dir = self.node(&core).dir.clone();
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
            // CHAOS_NODE_LOG raises the nodes' log level when a seed is replayed to be read.
            .env("IRIS_LOG", std::env::var("CHAOS_NODE_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if node.skew_s != 0 {
            // The node's own clock, moved (docs/chaos.md: libfaketime 0.9.10
            // cannot move only the wall clock of a process that mixes Rust's
            // and librdkafka's timed waits).
            cmd.env("IRIS_CLOCK_OFFSET_MS", (node.skew_s * 1_000).to_string());
        }
        die_with_parent(&mut cmd);
        node.child = Some(cmd.spawn().with_context(|| format!("starting {name}"))?);
        Ok(())
    }

    fn pid(&mut self, name: &str) -> Option<u32> {
        self.node(name).child.as_ref().map(Child::id)
    }

    /// Takes a node's process to stop it; one that has already exited by
    /// itself (at a restart that failed, say) is recorded as a crash, not
    /// stopped again as if it ran.
    fn take_running(&mut self, name: &str) -> Option<Child> {
        let mut child = self.node(name).child.take()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.crashes.push(format!("{name} exited: {status} (found when stopping it)"));
                None
            }
            _ => Some(child),
        }
    }

    fn kill_node(&mut self, name: &str) {
        if let Some(mut child) = self.take_running(name) {
            // Gone meanwhile is as good as killed.
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
        let Some(mut child) = self.take_running(name) else { return };
        let dir = self.node(name).dir.clone();
        let drain = Command::new(&iris)
            .args(["drain", "--timeout", "20s", "--data-dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        if !drain.as_ref().is_ok_and(|o| o.status.success()) {
            let why = match &drain {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or_default().to_owned(),
                Err(e) => e.to_string(),
            };
            eprintln!("chaos: iris drain did not stop {name} ({why}); sending SIGTERM");
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

    fn peers_of(&self, names: &[String]) -> Vec<std::net::Ipv4Addr> {
        names.iter().map(|n| self.net.host(n).ip).collect()
    }

    /// Every broker, regional and global.
    fn all_brokers(&self) -> Vec<String> {
        self.layout.brokers.iter().chain(&self.layout.global).cloned().collect()
    }

    /// The Redis a fault hits: its target, or the only one.
    fn redis_target(&self, target: &str) -> String {
        if target.is_empty() || target == "redis" { self.layout.regions[0].redis.clone() } else { target.to_owned() }
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
            Kind::CutBrokers => self.net.cut(t, &self.peers_of(&self.all_brokers()), false)?,
            Kind::CutRedis => {
                let redis = self.layout.region_of(t).redis.clone();
                self.net.cut(t, &self.peers_of(&[redis]), false)?
            }
            Kind::CutClients => self.net.cut_clients(t, WS_PORT)?,
            Kind::OneWay => self.net.cut(t, &self.peers_of(&self.all_brokers()), true)?,
            Kind::CutGlobal => {
                let global = self.peers_of(&self.layout.global);
                let r = self.layout.region_of(t);
                for n in r.cores.iter().chain(&r.edges) {
                    self.net.cut(n, &global, false)?;
                }
            }
            Kind::KillBroker => {
                let (dir, i) = self.broker(t);
                let ok = Command::new(self.kafka_script()).arg("kill").arg(dir).arg(&i).status()?.success();
                anyhow::ensure!(ok, "scripts/kafka kill {t} failed");
            }
            Kind::RestartRedis => {
                let redis = self.redis_target(t);
                self.kill_redis(&redis);
            }
            Kind::Skew => {
                self.stop_node(t);
                self.node(t).skew_s = f.skew_s;
                self.start_node(t)?;
            }
            Kind::DiskFull => fill(&self.redis_dir(&self.redis_target(t)).join(FILLER))?,
            Kind::Slow => self.knobs[t].set(Impairment {
                delay_ms: f.delay_ms,
                jitter_ms: f.delay_ms / 2,
                loss_pct: f.loss_pct as u32,
            }),
            Kind::Rolling => {
                // Every region's cores first, then the edges.
                let (cores, edges) = (self.layout.cores(), self.layout.edges());
                for name in cores.iter().chain(&edges) {
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
            Kind::CutGlobal => {
                let r = self.layout.region_of(t).clone();
                for n in r.cores.iter().chain(&r.edges) {
                    self.net.heal(n)?;
                }
            }
            Kind::KillBroker => {
                let (dir, i) = self.broker(t);
                let ok = Command::new(self.kafka_script()).arg("restart").arg(dir).arg(&i).status()?.success();
                anyhow::ensure!(ok, "scripts/kafka restart {t} failed");
            }
            Kind::RestartRedis => {
                let redis = self.redis_target(t);
                self.start_redis(&redis)?
            }
            Kind::Skew => {
                self.stop_node(t);
                self.node(t).skew_s = 0;
                self.start_node(t)?;
            }
            Kind::Slow => self.knobs[t].set(Impairment::default()),
            Kind::DiskFull => {
                let redis = self.redis_target(t);
                std::fs::remove_file(self.redis_dir(&redis).join(FILLER))?;
                // Under `appendfsync always` Redis exits when an append
                // fails ("Can't recover from AOF write error when the AOF
                // fsync policy is 'always'. Exiting..."), having answered
                // nothing it did not write: started again on the same files
                // (it drops the torn tail), as an operator would.
                let stopped = match self.redis_proc(&redis).child.as_mut() {
                    Some(r) => r.try_wait()?.is_some(),
                    None => true,
                };
                if stopped {
                    self.redis_proc(&redis).child = None;
                    self.start_redis(&redis)?;
                }
            }
            Kind::Rolling => {}
        }
        Ok(())
    }

    /// Nodes that exited by themselves (a crash is a finding).
    pub fn exited(&mut self) -> Vec<String> {
        let mut out = std::mem::take(&mut self.crashes);
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
        for r in self.redis.iter().map(|r| r.host.clone()).collect::<Vec<_>>() {
            self.kill_redis(&r);
            if self.redis_proc(&r).disk {
                let _unmounted = Command::new("umount").arg("-l").arg(self.redis_dir(&r)).status();
            }
        }
        let clusters: &[&str] = if self.layout.federated() { &["kafka", "global"] } else { &["kafka"] };
        for dir in clusters {
            let stopped = Command::new(self.kafka_script()).arg("stop").arg(self.work.join(dir)).status();
            if !stopped.is_ok_and(|s| s.success()) {
                eprintln!("chaos: scripts/kafka stop {dir} failed; its watchdog stops the brokers");
            }
        }
    }
}
