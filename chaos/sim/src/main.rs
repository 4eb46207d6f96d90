//! `iris-sim`: runs seeds of the deterministic region simulator.
//!
//! ```text
//! iris-sim --seed 7 --trace        # one seed, its event trace
//! iris-sim --seeds 10000           # seeds 0..10000, a summary
//! iris-sim --seeds 200 --check     # each seed twice: same trace hash?
//! iris-sim --seeds 2000 --bug commit-on-hand   # a fixed bug, brought back
//! ```

use clap::Parser;
use iris_sim::{Bugs, SimConfig, run_seed};
use std::time::Instant;

#[derive(Parser)]
#[command(about = "A region in one process, deterministic: seeded faults, checked invariants")]
struct Cli {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from `--from`.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Print the event trace of `--seed`.
    #[arg(long)]
    trace: bool,
    /// Run every seed twice and compare the trace hashes.
    #[arg(long)]
    check: bool,
    /// Bring back a bug this project fixed: commit-on-hand,
    /// no-user-isolation, lease-after-revoke, paused-looks-caught-up,
    /// silent-edge-restart, no-ticks, unfenced-records, clock-goes-back,
    /// shared-commit-by-shard, siblings-look-caught-up,
    /// revoked-shard-answers, local-edge-start (with --regions 2),
    /// unstamped-statuses, owner-blind-edges and unfenced-metas (with
    /// --zombies).
    #[arg(long)]
    bug: Vec<String>,
    /// Steps (simulated ms) of traffic with faults per seed.
    #[arg(long)]
    steps: Option<u64>,
    /// Let stops outlast the group's timeout (zombies; see docs/chaos.md).
    #[arg(long)]
    zombies: bool,
    /// Chance per simulated ms that a node's clock jumps (default 0.001).
    #[arg(long)]
    clock_jump: Option<f64>,
    /// Chance per simulated ms that a node stalls (default 0.002).
    #[arg(long)]
    stall: Option<f64>,
    /// Regions, federated through a simulated global layer (default 1).
    #[arg(long)]
    regions: Option<usize>,
    /// Most simulated ms a store commit takes (default 6).
    #[arg(long)]
    max_commit_ms: Option<u64>,
    /// Shards to a partition of the shard topic (ADR 0031); by default one
    /// on even seeds and two on odd ones.
    #[arg(long)]
    shards_per_partition: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut bugs = Bugs::default();
    for b in &cli.bug {
        bugs.set(b).map_err(anyhow::Error::msg)?;
    }
    let mut cfg = SimConfig::default();
    if let Some(s) = cli.steps {
        cfg.steps = s;
    }
    cfg.zombies = cli.zombies;
    if let Some(j) = cli.clock_jump {
        cfg.clock_jump = j;
    }
    if let Some(st) = cli.stall {
        cfg.stall = st;
    }
    if let Some(ms) = cli.max_commit_ms {
        cfg.max_commit_ms = ms;
    }
    if let Some(r) = cli.regions {
        anyhow::ensure!((1..=8).contains(&r), "--regions must be between 1 and 8");
        cfg.regions = r;
    }
    if let Some(per) = cli.shards_per_partition {
        anyhow::ensure!(
            per > 0 && cfg.shards.is_multiple_of(per),
            "--shards-per-partition must divide the {} shards",
            cfg.shards
        );
    }
    cfg.shards_per_partition = cli.shards_per_partition;
    if let Some(seed) = cli.seed {
        let out = run_seed(&cfg, seed, bugs, cli.trace);
        for line in &out.trace {
            println!("{line}");
        }
        println!(
            "seed {seed}: trace {:016x}, {} ms simulated, {} accepted, {} node crashes, {} edge crashes, \
             {} sessions, {} leases ended, {} failed commits, {} timed out after landing, {} stalls ({} out of the \
             group), {} clock jumps, {} edge cuts, {} frames, {} forged tokens refused, {} hello timeouts, \
             {} clients vanished, {} statuses set, {} regions, {} relayed, {} relay crashes, {} global cuts, {} violations",
            out.trace_hash,
            out.simulated_ms,
            out.accepted,
            out.crashes,
            out.edge_crashes,
            out.sessions,
            out.leases_ended,
            out.failed_commits,
            out.landed_timeouts,
            out.stalls,
            out.evictions,
            out.clock_jumps,
            out.edge_cuts,
            out.frames,
            out.bad_tokens,
            out.hello_timeouts,
            out.vanished,
            out.statuses,
            out.regions,
            out.relayed,
            out.relay_crashes,
            out.global_cuts,
            out.violations.len()
        );
        for v in &out.violations {
            println!("  violation: {v}");
        }
        if !out.violations.is_empty() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let seeds = cli.seeds.unwrap_or(1_000);
    let started = Instant::now();
    let (mut failed, mut simulated, mut accepted, mut crashes, mut nondeterministic) = (Vec::new(), 0u64, 0usize, 0, 0);
    let (mut frames, mut sessions, mut forged, mut hello_timeouts, mut vanished) = (0usize, 0usize, 0, 0, 0);
    let mut relayed = 0usize;
    for seed in cli.from..cli.from + seeds {
        let out = run_seed(&cfg, seed, bugs, false);
        if cli.check {
            let again = run_seed(&cfg, seed, bugs, false);
            if again.trace_hash != out.trace_hash {
                nondeterministic += 1;
                println!("seed {seed}: not deterministic ({:016x} then {:016x})", out.trace_hash, again.trace_hash);
            }
        }
        simulated += out.simulated_ms;
        accepted += out.accepted;
        crashes += out.crashes;
        frames += out.frames;
        sessions += out.sessions;
        forged += out.bad_tokens;
        hello_timeouts += out.hello_timeouts;
        vanished += out.vanished;
        relayed += out.relayed;
        if !out.violations.is_empty() {
            println!("seed {seed}: {}", out.violations[0]);
            failed.push(seed);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{seeds} seeds from {}: {} failed{}, {accepted} sends accepted, {crashes} crashes, {sessions} sessions \
         ({forged} forged tokens refused, {hello_timeouts} hello timeouts, {vanished} clients vanished), \
         {frames} frames{}; {:.0} seeds/min, {:.0} simulated s per wall s{}",
        cli.from,
        failed.len(),
        failed
            .first()
            .map(|s| {
                let regions = if cfg.regions > 1 { format!("--regions {} ", cfg.regions) } else { String::new() };
                format!(" (first: {s}; replay with {regions}--seed {s} --trace)")
            })
            .unwrap_or_default(),
        if cfg.regions > 1 { format!(", {relayed} envelopes across {} regions", cfg.regions) } else { String::new() },
        seeds as f64 / wall * 60.0,
        simulated as f64 / 1_000.0 / wall,
        if cli.check { format!("; {nondeterministic} not deterministic") } else { String::new() },
    );
    if !failed.is_empty() || nondeterministic > 0 {
        std::process::exit(1);
    }
    Ok(())
}
