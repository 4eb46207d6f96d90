//! `chaos`: runs a region (or two federated regions) of real processes
//! under a seeded schedule of faults while clients chat, records what every
//! client saw, and checks it.
//!
//!   chaos run --seed S --minutes M [--faults LIST] [--regions 1|2] [--out DIR]
//!   chaos schedule --seed S --minutes M [--faults LIST] [--regions 1|2]
//!   chaos check HISTORY.jsonl                              (checks a record again)
//!   chaos clean                                            (removes leftover namespaces)
//!
//! Needs root (network namespaces), iproute2, nftables, redis-server, Java
//! and Maven (Apache Kafka through scripts/kafka): `chaos/run` installs what
//! is missing, builds, and runs this.

mod checker;
mod cluster;
mod history;
mod nemesis;
mod net;
mod proxy;
mod service;
mod workload;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use history::{Recorder, What};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "chaos", about = "Fault harness for an Iris region")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One run: start the region, run the workload and the faults, check.
    Run {
        /// The seed of the schedule and the workload.
        #[arg(long)]
        seed: u64,
        /// Minutes of faults (the run lasts about a minute longer: start,
        /// settling, the liveness window and the final reads).
        #[arg(long, default_value_t = 2.0)]
        minutes: f64,
        /// Fault kinds, comma-separated, or `all` (or `none`).
        #[arg(long, default_value = "all")]
        faults: String,
        /// Where the record and the report go (a directory per run).
        #[arg(long, default_value = "chaos/results")]
        out: PathBuf,
        /// The iris binary.
        #[arg(long)]
        iris: PathBuf,
        /// Active users per tenant (two tenants).
        #[arg(long, default_value_t = 5)]
        users: usize,
        /// Over how long a draining edge closes its sessions (0: at once).
        #[arg(long, default_value_t = TUNING.drain_spread_ms)]
        drain_spread_ms: u64,
        /// One region, or two federated through a global layer.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        regions: u8,
    },
    /// Prints the schedule a seed gives, without running it.
    Schedule {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Minutes of faults.
        #[arg(long, default_value_t = 2.0)]
        minutes: f64,
        /// Fault kinds.
        #[arg(long, default_value = "all")]
        faults: String,
        /// One region, or two federated.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        regions: u8,
    },
    /// Checks a recorded history again.
    Check {
        /// The history (JSON lines).
        history: PathBuf,
    },
    /// Removes every run's leftover namespaces, bridges and Redis disks.
    Clean,
}

/// The bounds the checker holds the region to: once healed, the region
/// settles within a group session plus two leases (and then some), and
/// every session opens within 5 s; during a rolling restart, sends are
/// delivered with p99 within `ROLLING_P99_MS`.
fn bounds(tuning: &cluster::Tuning) -> checker::Bounds {
    checker::Bounds {
        settle_ms: tuning.session_timeout_ms as u64 + 2 * tuning.edge_lease_ms + 10_000,
        hello_ms: 5_000,
        rolling_p99_ms: ROLLING_P99_MS,
    }
}

/// The p99 send → delivered bound for a rolling restart (docs/chaos.md).
const ROLLING_P99_MS: u64 = 2_000;

const TUNING: cluster::Tuning =
    cluster::Tuning { shards: 16, edge_lease_ms: 3_000, session_timeout_ms: 6_000, drain_spread_ms: 2_000 };

fn kinds_of(faults: &str, layout: &cluster::Layout) -> anyhow::Result<Vec<nemesis::Kind>> {
    if faults == "none" { Ok(Vec::new()) } else { nemesis::Kind::parse_list(faults, layout.federated()) }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run { seed, minutes, faults, out, iris, users, drain_spread_ms, regions } => {
            let layout = cluster::Layout::new(regions);
            let kinds = kinds_of(&faults, &layout)?;
            let tuning = cluster::Tuning { drain_spread_ms, ..TUNING };
            let plan = Plan { seed, minutes, faults, kinds, users, tuning, layout };
            let replay = plan.replay();
            if !run(plan, &out, &iris)? {
                eprintln!("chaos: invariants broken; replay with: {replay}");
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Schedule { seed, minutes, faults, regions } => {
            let layout = cluster::Layout::new(regions);
            let s =
                nemesis::schedule(seed, &kinds_of(&faults, &layout)?, &layout.targets(), (minutes * 60_000.0) as u64);
            for f in s {
                println!("{:>7} ms  {:>6} ms  {}", f.at_ms, f.for_ms, f.describe());
            }
            Ok(())
        }
        Cmd::Check { history } => {
            let events = history::read(&history)?;
            let verdicts = checker::check(&events, &bounds(&TUNING));
            for v in &verdicts {
                println!(
                    "{} {}: {} checked, {} broken",
                    if v.holds() { "ok  " } else { "FAIL" },
                    v.name,
                    v.checked,
                    v.violations
                );
                for e in &v.examples {
                    println!("       {e}");
                }
            }
            if verdicts.iter().any(|v| !v.holds()) {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Clean => {
            net::remove_all();
            cluster::unmount_leftovers();
            Ok(())
        }
    }
}

/// What one run is: the seed, the faults and the region(s) under them.
pub struct Plan {
    /// The seed of the schedule and the workload.
    pub seed: u64,
    /// Minutes of faults.
    pub minutes: f64,
    /// The fault kinds, as given on the command line (for the replay).
    pub faults: String,
    /// ... and parsed.
    pub kinds: Vec<nemesis::Kind>,
    /// Active users per tenant.
    pub users: usize,
    /// The nodes' settings.
    pub tuning: cluster::Tuning,
    /// One region or two.
    pub layout: cluster::Layout,
}

impl Plan {
    /// The command that replays this run (`--regions` only for a federation).
    pub fn replay(&self) -> String {
        let fed =
            if self.layout.federated() { format!(" --regions {}", self.layout.regions.len()) } else { String::new() };
        format!("chaos/run --seed {} --minutes {} --faults {}{fed}", self.seed, self.minutes, self.faults)
    }
}

fn run(plan: Plan, out: &Path, iris: &Path) -> anyhow::Result<bool> {
    let Plan { seed, minutes, ref kinds, users, .. } = plan;
    let (tuning, layout) = (plan.tuning.clone(), plan.layout.clone());
    anyhow::ensure!(unsafe { libc::geteuid() } == 0, "chaos needs root (network namespaces)");
    let repo = std::env::current_dir()?;
    anyhow::ensure!(repo.join("scripts/kafka").exists(), "run chaos from the repository's top directory");
    let length_ms = (minutes * 60_000.0) as u64;
    let schedule = nemesis::schedule(seed, kinds, &layout.targets(), length_ms);
    let dir = out.join(format!("seed-{seed}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let work = tempdir_under("/tmp", &format!("iris-chaos-{seed}-"))?;
    let run_no = (std::process::id() % 250 + 1) as u8;
    eprintln!(
        "chaos: seed {seed}, {} faults over {minutes} min, {} region(s), run {run_no}, work {}",
        schedule.len(),
        layout.regions.len(),
        work.display()
    );
    let bounds = bounds(&tuning);
    let mut region = cluster::Cluster::start(run_no, layout, &work, iris, &repo, tuning)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build()?;
    let rec = Recorder::create(&dir.join("history.jsonl"))?;
    let access = workload::Access {
        edges: region.layout.edges().iter().map(|e| (e.clone(), region.edge_url(e))).collect(),
        signer: Arc::new(iris_auth::Signer::hs256(&region.key)),
    };
    let pop = workload::Population { tenants: vec!["ta".into(), "tb".into()], active: users, offline: 2 };

    // The region serves before the clock starts.
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        let startup = Recorder::create(&work.join("startup.jsonl"))?;
        for e in 0..access.edges.len() {
            while !workload::opens(&startup, &access, e, "ta", "warm-up").await {
                if tokio::time::Instant::now() >= deadline {
                    bail!("edge {} did not open a session within 180 s", access.edges[e].0);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    eprintln!("chaos: region serving; workload and faults start");

    let start = tokio::time::Instant::now();
    let faults_end = start + Duration::from_millis(length_ms);
    // After the last fault: settling, then a liveness window of 30 s.
    let work_end = faults_end + Duration::from_millis(bounds.settle_ms) + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for (ti, tenant) in pop.tenants.iter().enumerate() {
        for u in 0..pop.active {
            let s = seed.wrapping_mul(1_000).wrapping_add((ti * 100 + u) as u64);
            tasks.push(runtime.spawn(workload::chatter(
                rec.clone(),
                access.clone(),
                pop.clone(),
                tenant.clone(),
                u,
                s,
                work_end,
            )));
        }
    }
    // Each active user's second device: it catches up once every sender
    // has stopped (a send waits at most 5 s for its answer).
    let catch_up_at = work_end + Duration::from_secs(6);
    for (ti, tenant) in pop.tenants.iter().enumerate() {
        for u in 0..pop.active {
            let s = seed.wrapping_mul(1_000).wrapping_add((500 + ti * 100 + u) as u64);
            tasks.push(runtime.spawn(workload::second_device(
                rec.clone(),
                access.clone(),
                tenant.clone(),
                u,
                s,
                work_end,
                catch_up_at,
            )));
        }
    }
    for e in 0..access.edges.len() {
        tasks.push(runtime.spawn(workload::prober(rec.clone(), access.clone(), e, work_end)));
    }
    // Events never leave their region: each tenant ingests into one region
    // (in a federation, `ta` into the first and `tb` into the second), and
    // its events log is read there.
    let regions: Vec<String> = region.layout.regions.iter().map(|r| r.name.clone()).collect();
    let ingests_in = |ti: usize| regions[ti % regions.len()].clone();
    for (ti, tenant) in pop.tenants.iter().enumerate() {
        let api = service::Api { nodes: region.api_addrs(&ingests_in(ti)) };
        let key = region.api_key(&ingests_in(ti), tenant)?;
        let s = seed.wrapping_mul(1_000).wrapping_add(900 + ti as u64);
        tasks.push(runtime.spawn(service::ingester(rec.clone(), api, key, tenant.clone(), s, work_end)));
    }
    // The watchers stop a second before the chatters leave (their goodbyes
    // are not the truth the checker compares with).
    let watch_end = work_end - Duration::from_secs(1);
    for tenant in &pop.tenants {
        tasks.push(runtime.spawn(workload::watcher(
            rec.clone(),
            access.clone(),
            pop.clone(),
            tenant.clone(),
            watch_end,
        )));
    }

    // The nemesis, on this thread: each fault at its time, one at a time.
    let mut crashes = Vec::new();
    for f in &schedule {
        let at = start + Duration::from_millis(f.at_ms);
        std::thread::sleep(at.saturating_duration_since(tokio::time::Instant::now()));
        rec.record(What::FaultStart { fault: f.describe() });
        eprintln!("chaos: {:>6.1} s  {}", f.at_ms as f64 / 1000.0, f.describe());
        region.begin(f).with_context(|| format!("starting fault {}", f.describe()))?;
        std::thread::sleep(Duration::from_millis(f.for_ms));
        region.end(f).with_context(|| format!("ending fault {}", f.describe()))?;
        rec.record(What::FaultEnd { fault: f.describe() });
        crashes.extend(region.exited());
    }
    std::thread::sleep(faults_end.saturating_duration_since(tokio::time::Instant::now()));
    // Every fault ended itself; this makes sure no cut outlives the run's
    // fault window, whatever happened to an end.
    region.net.heal_all()?;
    rec.record(What::Healed);
    eprintln!("chaos: faults over; settling, then the liveness window");
    runtime.block_on(async {
        for t in tasks {
            t.await.context("a client task failed")?;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    crashes.extend(region.exited());

    // Every inbox, read whole.
    eprintln!("chaos: reading every inbox");
    let api_addrs: Vec<Vec<String>> = regions.iter().map(|r| region.api_addrs(r)).collect();
    let read_all = runtime.block_on(async {
        // A ten-minute run's inboxes take about 9 s each to read (a few
        // thousand messages): the bound is for a region that does not
        // answer, not for a slow read.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        let mut missing = Vec::new();
        for (t, u) in pop.everyone() {
            if !workload::read_inbox(&rec, &access, &t, &u, deadline).await {
                missing.push(format!("{t}/{u}"));
            }
        }
        // Each tenant's events and graph logs, whole, with their own time:
        // the events log where the tenant ingests, the graph log of every
        // region (a user's changes are logged in its home region's), as one.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        for (ti, t) in pop.tenants.iter().enumerate() {
            let token = access.signer.service_token(t, "chaos", 3_600).expect("tokens sign");
            let api = service::Api { nodes: api_addrs[ti % api_addrs.len()].clone() };
            match service::read_log(&api, "/v1/events/log", &token, deadline).await {
                Ok(log) => {
                    let keys = log.iter().filter_map(|e| e.get("key")?.as_str().map(str::to_owned)).collect();
                    rec.record(What::EventsLog { tenant: t.clone(), keys });
                }
                Err(why) => missing.push(format!("{t}: events log: {why}")),
            }
            let mut upserts = Vec::new();
            let mut complete = true;
            for nodes in &api_addrs {
                let api = service::Api { nodes: nodes.clone() };
                match service::read_log(&api, "/v1/graph/events", &token, deadline).await {
                    Ok(log) => upserts.extend(
                        log.iter()
                            .filter(|e| e.get("type").and_then(|t| t.as_str()) == Some("contact.upserted"))
                            .filter_map(|e| {
                                Some((e.get("owner")?.as_str()?.to_owned(), e.get("contact")?.as_str()?.to_owned()))
                            }),
                    ),
                    Err(why) => {
                        missing.push(format!("{t}: graph log: {why}"));
                        complete = false;
                    }
                }
            }
            if complete {
                rec.record(What::GraphLog { tenant: t.clone(), upserts });
            }
        }
        missing
    });
    rec.flush()?;
    drop(region);

    let events = history::read(&dir.join("history.jsonl"))?;
    let mut verdicts = checker::check(&events, &bounds);
    verdicts.push(checker::Verdict::from_problems(
        "every_inbox_read",
        "every user's inbox, and each tenant's events and graph logs, could be read at the end",
        &read_all,
    ));
    verdicts.push(checker::Verdict::from_problems("no_node_crashed", "no node exited by itself", &crashes));
    let ok = verdicts.iter().all(checker::Verdict::holds);
    report::write(&dir, &plan, &schedule, &verdicts, &events)?;
    if !ok {
        // The processes' own logs, for whoever replays the seed.
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        for entry in std::fs::read_dir(&work)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                std::fs::copy(&path, logs.join(path.file_name().expect("a file")))?;
            }
        }
        for (cluster, b) in [("kafka", 1), ("kafka", 2), ("kafka", 3), ("global", 1)] {
            let log = work.join(format!("{cluster}/broker-{b}/kafka.log"));
            if log.exists() {
                std::fs::copy(&log, logs.join(format!("{cluster}-{b}.log")))?;
            }
        }
    }
    let _cleaned = std::fs::remove_dir_all(&work);
    // CI keeps only what is printed: name each broken invariant and its first examples.
    for v in verdicts.iter().filter(|v| !v.holds()) {
        eprintln!("chaos: broken: {} ({} of {} checked): {}", v.name, v.violations, v.checked, v.says);
        for e in v.examples.iter().take(5) {
            eprintln!("chaos:   {e}");
        }
    }
    eprintln!("chaos: {} -> {}", if ok { "every invariant holds" } else { "INVARIANTS BROKEN" }, dir.display());
    Ok(ok)
}

fn tempdir_under(parent: &str, prefix: &str) -> anyhow::Result<PathBuf> {
    let n: u64 = rand::random();
    let p = Path::new(parent).join(format!("{prefix}{n:x}"));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

mod report;
