//! The faults, and the seeded schedule that composes them. Pure: the same
//! seed, kinds and length give the same schedule (the cluster carries it
//! out, `cluster.rs`).

use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A kind of fault, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A node killed with -9, restarted after the fault's length.
    Kill,
    /// A node frozen (SIGSTOP) past the group and lease timeouts.
    Pause,
    /// A node cut off from every broker.
    CutBrokers,
    /// A node cut off from Redis.
    CutRedis,
    /// The clients cut off from one edge.
    CutClients,
    /// A node that hears nothing from the brokers while its own packets
    /// still leave (a half-open cut).
    OneWay,
    /// One broker killed with -9, restarted after the fault's length.
    KillBroker,
    /// Redis killed with -9 and restarted from its append-only file.
    RestartRedis,
    /// A node restarted with its wall clock skewed (`IRIS_CLOCK_OFFSET_MS`).
    Skew,
    /// Every node restarted in turn (SIGTERM, start), one at a time.
    Rolling,
    /// A node's links to the brokers and Redis slowed: a delay, jitter and
    /// lost segments (retransmission stalls), through the proxy.
    Slow,
    /// Redis's disk filled up: its append-only file cannot grow until the
    /// fault ends (the space is freed, and Redis started again if it
    /// stopped).
    DiskFull,
    /// One region cut off from the global layer (federation runs only):
    /// every node of the region, both ways, from the global brokers.
    CutGlobal,
}

impl Kind {
    /// Every kind a one-region run has, in the order `--faults all` lists
    /// them (a federation run adds [`Kind::FEDERATION`]).
    pub const ALL: [Kind; 12] = [
        Kind::Kill,
        Kind::Pause,
        Kind::CutBrokers,
        Kind::CutRedis,
        Kind::CutClients,
        Kind::OneWay,
        Kind::KillBroker,
        Kind::RestartRedis,
        Kind::Skew,
        Kind::Rolling,
        Kind::Slow,
        Kind::DiskFull,
    ];

    /// The kinds only a federation run has (after [`Kind::ALL`], so that a
    /// seed's one-region schedule is the same as before they existed).
    pub const FEDERATION: [Kind; 1] = [Kind::CutGlobal];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::CutBrokers => "cut-brokers",
            Kind::CutRedis => "cut-redis",
            Kind::CutClients => "cut-clients",
            Kind::OneWay => "one-way",
            Kind::KillBroker => "kill-broker",
            Kind::RestartRedis => "restart-redis",
            Kind::Skew => "skew",
            Kind::Rolling => "rolling",
            Kind::Slow => "slow",
            Kind::DiskFull => "disk-full",
            Kind::CutGlobal => "cut-global",
        }
    }

    /// Parses `kill,pause,…` or `all`, for a run of one region or a
    /// federation (`federated`), whose kinds are all of one region's and
    /// `cut-global`.
    pub fn parse_list(s: &str, federated: bool) -> anyhow::Result<Vec<Kind>> {
        let known: Vec<Kind> =
            Kind::ALL.iter().chain(if federated { &Kind::FEDERATION[..] } else { &[] }).copied().collect();
        if s == "all" {
            return Ok(known);
        }
        s.split(',')
            .filter(|k| !k.is_empty())
            .map(|k| {
                known.iter().copied().find(|x| x.name() == k).ok_or_else(|| {
                    if Kind::FEDERATION.iter().any(|x| x.name() == k) {
                        return anyhow::anyhow!("fault {k:?} needs a federation: --regions 2");
                    }
                    let names: Vec<&str> = known.iter().map(|k| k.name()).collect();
                    anyhow::anyhow!("unknown fault {k:?}; known: {}, or all", names.join(", "))
                })
            })
            .collect()
    }
}

/// One fault of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// When it starts, ms after the workload starts.
    pub at_ms: u64,
    /// How long it lasts.
    pub for_ms: u64,
    /// What it is.
    pub kind: Kind,
    /// The node, broker or edge it hits (a name of the run's hosts; empty
    /// for Redis and rolling restarts).
    pub target: String,
    /// For `skew`: the clock offset, seconds (negative: behind).
    pub skew_s: i64,
    /// For `slow`: the delay added each way, ms (and up to half as much
    /// again as jitter).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    /// For `slow`: per cent of chunks that wait a retransmission timeout.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub loss_pct: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Fault {
    /// How the history and the report name it.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::Skew => format!("{} {} {:+}s", self.kind.name(), self.target, self.skew_s),
            Kind::Slow => format!("{} {} +{}ms {}%", self.kind.name(), self.target, self.delay_ms, self.loss_pct),
            _ if self.target.is_empty() => self.kind.name().to_string(),
            _ => format!("{} {}", self.kind.name(), self.target),
        }
    }
}

/// What the schedule may hit.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Core nodes.
    pub cores: Vec<String>,
    /// Edge nodes.
    pub edges: Vec<String>,
    /// Brokers (the regional ones, and in a federation the global ones).
    pub brokers: Vec<String>,
    /// Redis servers, one per region.
    pub redis: Vec<String>,
    /// Regions (`cut-global` cuts one off).
    pub regions: Vec<String>,
}

/// A schedule for `length_ms` of workload: faults one after another (one at
/// a time, so that each one's effect can be told apart), each lasting 3 to
/// 15 s, with quiet gaps of 2 to 8 s, drawn from the seed; the last ends
/// before `length_ms`.
pub fn schedule(seed: u64, kinds: &[Kind], targets: &Targets, length_ms: u64) -> Vec<Fault> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    if kinds.is_empty() {
        return out;
    }
    let nodes: Vec<&String> = targets.cores.iter().chain(&targets.edges).collect();
    let mut at = rng.random_range(2_000..5_000u64);
    loop {
        let kind = kinds[rng.random_range(0..kinds.len())];
        let for_ms = match kind {
            // Past the group's session timeout and the edge lease.
            Kind::Pause => rng.random_range(8_000..15_000u64),
            Kind::Rolling => 0,
            _ => rng.random_range(3_000..15_000u64),
        };
        let target = match kind {
            Kind::Kill | Kind::Pause | Kind::CutBrokers | Kind::CutRedis | Kind::OneWay | Kind::Skew | Kind::Slow => {
                nodes[rng.random_range(0..nodes.len())].clone()
            }
            Kind::CutClients => targets.edges[rng.random_range(0..targets.edges.len())].clone(),
            Kind::KillBroker => targets.brokers[rng.random_range(0..targets.brokers.len())].clone(),
            // One Redis: nothing drawn, so that one region's schedules
            // stay as they were before federation runs.
            Kind::DiskFull | Kind::RestartRedis if targets.redis.len() > 1 => {
                targets.redis[rng.random_range(0..targets.redis.len())].clone()
            }
            Kind::DiskFull => "redis".to_string(),
            Kind::CutGlobal => targets.regions[rng.random_range(0..targets.regions.len())].clone(),
            Kind::RestartRedis | Kind::Rolling => String::new(),
        };
        let skew_s = if kind == Kind::Skew { rng.random_range(-120..=120i64) } else { 0 };
        // Drawn only for `slow`: schedules without it stay as they were.
        let (delay_ms, loss_pct) =
            if kind == Kind::Slow { (rng.random_range(20..=300u64), rng.random_range(0..=5u64)) } else { (0, 0) };
        // A rolling restart takes about 10 s per node.
        let lasts = if kind == Kind::Rolling { 10_000 * nodes.len() as u64 } else { for_ms };
        if at + lasts >= length_ms {
            break;
        }
        out.push(Fault { at_ms: at, for_ms, kind, target, skew_s, delay_ms, loss_pct });
        at += lasts + rng.random_range(2_000..8_000u64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn targets() -> Targets {
        Targets {
            cores: vec!["core-1".into(), "core-2".into()],
            edges: vec!["edge-1".into(), "edge-2".into()],
            brokers: vec!["kafka-1".into(), "kafka-2".into(), "kafka-3".into()],
            redis: vec!["redis".into()],
            regions: vec!["chaos".into()],
        }
    }

    fn federation() -> Targets {
        Targets {
            cores: vec!["core-eu1".into(), "core-us1".into()],
            edges: vec!["edge-eu1".into(), "edge-us1".into()],
            brokers: vec!["kafka-1".into(), "global-1".into()],
            redis: vec!["redis-eu".into(), "redis-us".into()],
            regions: vec!["eu".into(), "us".into()],
        }
    }

    #[test]
    fn a_federation_draws_its_own_kinds_and_every_redis() {
        let kinds = Kind::parse_list("all", true).unwrap();
        assert!(kinds.contains(&Kind::CutGlobal));
        let t = federation();
        let mut seen = HashSet::new();
        for seed in 0..50 {
            for f in schedule(seed, &kinds, &t, 300_000) {
                match f.kind {
                    Kind::CutGlobal => assert!(t.regions.contains(&f.target), "{f:?}"),
                    Kind::RestartRedis | Kind::DiskFull => assert!(t.redis.contains(&f.target), "{f:?}"),
                    _ => {}
                }
                seen.insert(f.describe());
            }
        }
        for want in ["cut-global eu", "cut-global us", "restart-redis redis-us", "disk-full redis-eu"] {
            assert!(seen.contains(want), "{want} never drawn");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let a = schedule(7, &Kind::ALL, &targets(), 300_000);
        assert_eq!(a, schedule(7, &Kind::ALL, &targets(), 300_000));
        assert_ne!(a, schedule(8, &Kind::ALL, &targets(), 300_000));
        assert!(a.len() > 5, "five minutes hold many faults: {}", a.len());
    }

    #[test]
    fn faults_come_one_at_a_time_within_the_run_and_hit_what_their_kind_may() {
        let t = targets();
        for seed in 0..50 {
            let s = schedule(seed, &Kind::ALL, &t, 120_000);
            let mut free_at = 0;
            for f in &s {
                assert!(f.at_ms >= free_at, "seed {seed}: overlapping faults {s:?}");
                free_at = f.at_ms + if f.kind == Kind::Rolling { 40_000 } else { f.for_ms };
                assert!(free_at < 120_000, "seed {seed}: {f:?} ends after the run");
                match f.kind {
                    Kind::KillBroker => assert!(t.brokers.contains(&f.target)),
                    Kind::CutClients => assert!(t.edges.contains(&f.target)),
                    Kind::RestartRedis | Kind::Rolling => assert!(f.target.is_empty()),
                    Kind::DiskFull => assert_eq!(f.target, "redis"),
                    Kind::Slow => {
                        assert!((20..=300).contains(&f.delay_ms) && f.loss_pct <= 5, "{f:?}");
                        assert!(t.cores.contains(&f.target) || t.edges.contains(&f.target));
                    }
                    _ => assert!(t.cores.contains(&f.target) || t.edges.contains(&f.target)),
                }
            }
        }
    }

    #[test]
    fn fault_lists_parse_by_name_and_unknown_ones_are_named() {
        assert_eq!(Kind::parse_list("kill,pause", false).unwrap(), vec![Kind::Kill, Kind::Pause]);
        assert_eq!(Kind::parse_list("all", false).unwrap().len(), Kind::ALL.len());
        assert_eq!(Kind::parse_list("all", true).unwrap().len(), Kind::ALL.len() + 1);
        let e = Kind::parse_list("kill,explode", false).unwrap_err().to_string();
        assert!(e.contains("explode") && e.contains("kill-broker"), "{e}");
        let e = Kind::parse_list("cut-global", false).unwrap_err().to_string();
        assert!(e.contains("--regions 2"), "{e}");
        assert_eq!(Kind::parse_list("cut-global", true).unwrap(), vec![Kind::CutGlobal]);
    }

    #[test]
    fn one_region_schedules_are_what_they_were() {
        // Seed 21's ten-minute run of every kind, as committed with its
        // report: the same seed still gives the same schedule.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/results/seed-21/report.json");
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let s = schedule(21, &Kind::ALL, &targets(), 600_000);
        assert!(s.iter().any(|f| f.kind == Kind::DiskFull) && s.len() > 20, "{s:?}");
        assert_eq!(serde_json::to_value(&s).unwrap(), report["schedule"]);
    }
}
