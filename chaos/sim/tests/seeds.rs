//! The simulator in CI: many seeds hold every invariant, a seed replays
//! bit for bit, and a bug brought back is found.

use iris_sim::{Bugs, SimConfig, run_seed};

#[test]
fn seeds_hold_every_invariant() {
    let cfg = SimConfig::default();
    let mut crashes = 0;
    for seed in 0..300 {
        let out = run_seed(&cfg, seed, Bugs::default(), false);
        assert!(
            out.violations.is_empty(),
            "seed {seed}: {:?} (replay: iris-sim --seed {seed} --trace)",
            out.violations
        );
        assert!(out.accepted > 0, "seed {seed} accepted nothing");
        crashes += out.crashes;
    }
    assert!(crashes > 0, "the seeds crashed no node: the faults are not exercised");
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let cfg = SimConfig::default();
    for seed in [1, 42, 4_242] {
        let a = run_seed(&cfg, seed, Bugs::default(), true);
        let b = run_seed(&cfg, seed, Bugs::default(), true);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.trace, b.trace, "seed {seed}");
    }
    let (a, b) = (run_seed(&cfg, 1, Bugs::default(), false), run_seed(&cfg, 2, Bugs::default(), false));
    assert_ne!(a.trace_hash, b.trace_hash, "different seeds, different runs");
}

#[test]
fn committing_offsets_before_the_work_is_durable_is_found() {
    let cfg = SimConfig::default();
    let bugs = Bugs { commit_on_hand: true, ..Bugs::default() };
    let found = (0..50).find(|seed| !run_seed(&cfg, *seed, bugs, false).violations.is_empty());
    assert!(found.is_some(), "50 seeds did not find offsets committed ahead of durable work");
}

#[test]
fn the_seq_gap_it_found_is_found_again_when_brought_back() {
    let cfg = SimConfig::default();
    let bugs = Bugs { no_append_isolation: true, ..Bugs::default() };
    let found = (0..50).find_map(|seed| {
        let v = run_seed(&cfg, seed, bugs, false).violations;
        v.iter().any(|v| v.contains("inbox has seq")).then_some(seed)
    });
    assert!(found.is_some(), "50 seeds did not find a gap in inbox seqs with appends not isolated");
}
