use super::*;
use iris_envelope::{EdgeId, ShardInput, UserKey};
use proptest::prelude::*;

fn env(n: i64) -> ShardEnvelope {
    ShardEnvelope {
        owner: UserKey::new("t", format!("u{n}")).into(),
        body: ShardInput::EdgeAlive { edge: EdgeId("e".into()) },
        trace: None,
    }
}

fn drain(f: &mut Feed) -> Vec<FeedOutput> {
    std::iter::from_fn(|| f.poll_output()).collect()
}

const S: ShardId = ShardId(3);

/// A shell with a queue of `room` places per shard that answers every
/// `Hand` at once; returns the offsets it took and the other outputs.
fn run(f: &mut Feed, room: &mut usize) -> (Vec<i64>, Vec<FeedOutput>) {
    let (mut took, mut other) = (Vec::new(), Vec::new());
    while let Some(o) = f.poll_output() {
        match o {
            FeedOutput::Hand { shard, offset, env, wait } => {
                if *room > 0 || wait {
                    *room = room.saturating_sub(1);
                    took.push(offset);
                    f.handle_input(FeedInput::Handed { shard, offset });
                } else {
                    f.handle_input(FeedInput::Full { shard, offset, env });
                }
            }
            o => other.push(o),
        }
    }
    (took, other)
}

#[test]
fn an_assigned_partition_starts_its_shard_and_hands_records_in_order() {
    let mut f = Feed::default();
    f.handle_input(FeedInput::Assigned(vec![S, ShardId(4)]));
    assert_eq!(drain(&mut f), [FeedOutput::Start(S), FeedOutput::Start(ShardId(4))]);
    f.handle_input(FeedInput::Assigned(vec![S]));
    assert_eq!(drain(&mut f), [], "already owned: not started twice");
    for off in [7, 8] {
        f.handle_input(FeedInput::Record { shard: S, offset: off, env: env(off) });
    }
    let (took, other) = run(&mut f, &mut 10);
    assert_eq!(took, [7, 8]);
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn a_full_shard_pauses_its_partition_and_gets_its_envelopes_in_order_once_there_is_room() {
    let mut f = Feed::default();
    f.handle_input(FeedInput::Assigned(vec![S]));
    drain(&mut f);
    for off in 10..15 {
        f.handle_input(FeedInput::Record { shard: S, offset: off, env: env(off) });
    }
    let mut room = 2;
    let (took, other) = run(&mut f, &mut room);
    assert_eq!(took, [10, 11]);
    assert_eq!(other, [FeedOutput::Pause(S)], "paused once, at the first that did not fit");
    assert!(f.paused(S) && f.held(S) == 3);
    // Nothing is offered again until the shell says to retry.
    room = 1;
    assert_eq!(run(&mut f, &mut room), (vec![], vec![]));
    f.handle_input(FeedInput::Retry);
    assert_eq!(run(&mut f, &mut room), (vec![12], vec![]), "one place, one envelope");
    // A record fetched before the pause took effect queues behind the held ones.
    f.handle_input(FeedInput::Record { shard: S, offset: 15, env: env(15) });
    room = 10;
    f.handle_input(FeedInput::Retry);
    let (took, other) = run(&mut f, &mut room);
    assert_eq!(took, [13, 14, 15], "in offset order");
    assert_eq!(other, [FeedOutput::Resume(S)], "resumed once nothing is held");
    assert!(!f.paused(S) && !f.holding());
    // Every offset was handed, so all can be committed once durable.
    f.handle_input(FeedInput::Progress(vec![(S, 6)]));
    assert_eq!(drain(&mut f), [FeedOutput::Commit(vec![(S, 16)])]);
}

#[test]
fn a_busy_shard_does_not_hold_up_the_others() {
    let mut f = Feed::default();
    f.handle_input(FeedInput::Assigned(vec![ShardId(0), ShardId(1)]));
    drain(&mut f);
    f.handle_input(FeedInput::Record { shard: ShardId(0), offset: 0, env: env(0) });
    let Some(FeedOutput::Hand { shard, offset, env: e, .. }) = f.poll_output() else { panic!() };
    f.handle_input(FeedInput::Full { shard, offset, env: e });
    f.handle_input(FeedInput::Record { shard: ShardId(1), offset: 0, env: env(1) });
    assert_eq!(f.poll_output(), Some(FeedOutput::Pause(ShardId(0))));
    match f.poll_output() {
        Some(FeedOutput::Hand { shard: ShardId(1), offset: 0, .. }) => {}
        o => panic!("shard 1 should be offered its record, got {o:?}"),
    }
}

#[test]
fn too_much_held_makes_the_shell_wait_for_the_shard() {
    let mut f = Feed::new(2);
    f.handle_input(FeedInput::Assigned(vec![S]));
    drain(&mut f);
    for off in 0..2 {
        f.handle_input(FeedInput::Record { shard: S, offset: off, env: env(off) });
    }
    let Some(FeedOutput::Hand { offset: 0, env: e, wait: false, .. }) = f.poll_output() else { panic!() };
    f.handle_input(FeedInput::Full { shard: S, offset: 0, env: e });
    assert_eq!(f.poll_output(), Some(FeedOutput::Pause(S)));
    assert_eq!(f.poll_output(), None, "blocked until a retry");
    // The pause did not take: a third record arrives, over the bound of two.
    f.handle_input(FeedInput::Record { shard: S, offset: 2, env: env(2) });
    match f.poll_output() {
        Some(FeedOutput::Hand { offset: 0, wait: true, .. }) => {}
        o => panic!("expected a waiting hand, got {o:?}"),
    }
}

#[test]
fn a_revoked_partition_stops_its_shard_and_drops_what_it_held() {
    let mut f = Feed::default();
    f.handle_input(FeedInput::Assigned(vec![S]));
    drain(&mut f);
    for off in 0..3 {
        f.handle_input(FeedInput::Record { shard: S, offset: off, env: env(off) });
    }
    f.handle_input(FeedInput::Revoked(vec![S, ShardId(9)]));
    assert_eq!(drain(&mut f), [FeedOutput::Stop(S)], "held records are not handed after revocation");
    f.handle_input(FeedInput::Record { shard: S, offset: 3, env: env(3) });
    assert_eq!(drain(&mut f), [FeedOutput::NotOwned { shard: S, offset: 3 }]);
    f.handle_input(FeedInput::Progress(vec![(S, 3)]));
    assert_eq!(drain(&mut f), [], "nothing is committed for a partition not owned");
}

#[test]
fn commits_only_up_to_durable_inputs_and_retries_a_failed_commit() {
    let mut f = Feed::default();
    f.handle_input(FeedInput::Assigned(vec![S]));
    drain(&mut f);
    f.handle_input(FeedInput::Progress(vec![(S, 0)]));
    assert_eq!(drain(&mut f), [], "nothing handed, nothing to commit");
    // Offsets need not be contiguous (compaction, transactions).
    for off in [10, 11, 14, 15] {
        f.handle_input(FeedInput::Record { shard: S, offset: off, env: env(off) });
    }
    run(&mut f, &mut 10);
    f.handle_input(FeedInput::Progress(vec![(S, 0)]));
    assert_eq!(drain(&mut f), []);
    f.handle_input(FeedInput::Progress(vec![(S, 2)]));
    assert_eq!(drain(&mut f), [FeedOutput::Commit(vec![(S, 12)])], "next after the second input");
    // The commit failed (no `Committed`): offered again.
    f.handle_input(FeedInput::Progress(vec![(S, 2)]));
    assert_eq!(drain(&mut f), [FeedOutput::Commit(vec![(S, 12)])]);
    f.handle_input(FeedInput::Committed(vec![(S, 12)]));
    f.handle_input(FeedInput::Progress(vec![(S, 2)]));
    assert_eq!(drain(&mut f), [], "already committed");
    f.handle_input(FeedInput::Progress(vec![(S, 4)]));
    assert_eq!(drain(&mut f), [FeedOutput::Commit(vec![(S, 16)])]);
}

#[test]
fn an_unreadable_record_is_skipped_and_committed_past() {
    let mut f = Feed::default();
    f.handle_input(FeedInput::Assigned(vec![S]));
    drain(&mut f);
    f.handle_input(FeedInput::Record { shard: S, offset: 0, env: env(0) });
    run(&mut f, &mut 10);
    f.handle_input(FeedInput::Progress(vec![(S, 1)]));
    assert_eq!(drain(&mut f), [FeedOutput::Commit(vec![(S, 1)])]);
    f.handle_input(FeedInput::Committed(vec![(S, 1)]));
    f.handle_input(FeedInput::Unreadable { shard: S, offset: 1 });
    f.handle_input(FeedInput::Progress(vec![(S, 1)]));
    assert_eq!(drain(&mut f), [FeedOutput::Commit(vec![(S, 2)])], "a poisoned record does not pin the partition");
    f.handle_input(FeedInput::Record { shard: S, offset: 2, env: env(2) });
    assert_eq!(run(&mut f, &mut 10).0, [2], "and the partition goes on");
}

#[test]
fn nothing_is_committed_past_records_dropped_for_a_shard_that_is_gone() {
    let mut f = Feed::default();
    f.handle_input(FeedInput::Assigned(vec![S]));
    drain(&mut f);
    f.handle_input(FeedInput::Record { shard: S, offset: 0, env: env(0) });
    run(&mut f, &mut 10);
    // The shard's queue closes (its actor died): the next record is dropped.
    f.handle_input(FeedInput::Record { shard: S, offset: 1, env: env(1) });
    let Some(FeedOutput::Hand { shard, .. }) = f.poll_output() else { panic!() };
    f.handle_input(FeedInput::Gone { shard });
    f.handle_input(FeedInput::Unreadable { shard: S, offset: 2 });
    f.handle_input(FeedInput::Progress(vec![(S, 1)]));
    assert_eq!(drain(&mut f), [FeedOutput::Commit(vec![(S, 1)])], "up to the handed record, not past the dropped one");
    f.handle_input(FeedInput::Committed(vec![(S, 1)]));
    f.handle_input(FeedInput::Progress(vec![(S, 5)]));
    assert_eq!(drain(&mut f), [], "never past it");
}

/// A full shard that goes away does not leave its partition paused: the
/// other shards sharing it (ADR 0031) read on.
#[test]
fn a_paused_shard_that_is_gone_resumes_its_partition() {
    let mut f = Feed::default();
    f.handle_input(FeedInput::Assigned(vec![S]));
    drain(&mut f);
    for off in 0..3 {
        f.handle_input(FeedInput::Record { shard: S, offset: off, env: env(off) });
    }
    let (_, other) = run(&mut f, &mut 1);
    assert_eq!(other, [FeedOutput::Pause(S)]);
    f.handle_input(FeedInput::Gone { shard: S });
    assert_eq!(drain(&mut f), [FeedOutput::Resume(S)]);
    assert!(!f.paused(S) && !f.holding());
}

#[derive(Debug, Clone)]
enum Step {
    Record(u8),
    Take(u8),
    Durable(u8),
    Retry,
    Commit(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..3).prop_map(Step::Record),
        3 => (0u8..3).prop_map(Step::Take),
        2 => (0u8..3).prop_map(Step::Durable),
        1 => Just(Step::Retry),
        1 => any::<bool>().prop_map(Step::Commit),
    ]
}

proptest! {
    /// Whatever the interleaving of records, full queues, durability and
    /// failed commits: each shard gets its records once each, in offset
    /// order; a partition is paused exactly while something is held for
    /// it; and no commit ever covers an offset whose work is not durable.
    #[test]
    fn order_pausing_and_commits_hold_under_any_interleaving(steps in proptest::collection::vec(step(), 1..300)) {
        const ROOM: usize = 2;
        let shards = [ShardId(0), ShardId(1), ShardId(2)];
        let mut f = Feed::new(8);
        f.handle_input(FeedInput::Assigned(shards.to_vec()));
        prop_assert_eq!(drain(&mut f).len(), 3);
        let mut next_off = [0i64; 3];
        let mut sent = [0usize; 3];
        let mut queue: [VecDeque<i64>; 3] = Default::default();
        let mut taken: [Vec<i64>; 3] = Default::default();
        let mut durable = [0u64; 3];
        let mut paused = [false; 3];
        let mut committed = [0i64; 3];
        let mut last_commit: Vec<(ShardId, i64)> = Vec::new();
        for st in steps {
            match st {
                Step::Record(s) => {
                    let s = s as usize;
                    let off = next_off[s];
                    next_off[s] += 1 + (off % 3 == 2) as i64; // gaps now and then
                    f.handle_input(FeedInput::Record { shard: shards[s], offset: off, env: env(off) });
                    sent[s] += 1;
                }
                Step::Take(s) => {
                    if let Some(off) = queue[s as usize].pop_front() {
                        taken[s as usize].push(off);
                    }
                }
                Step::Durable(s) => {
                    let s = s as usize;
                    durable[s] = taken[s].len() as u64;
                    f.handle_input(FeedInput::Progress(shards.iter().zip(durable).map(|(a, b)| (*a, b)).collect()));
                }
                Step::Retry => f.handle_input(FeedInput::Retry),
                Step::Commit(ok) => {
                    if ok && !last_commit.is_empty() {
                        f.handle_input(FeedInput::Committed(std::mem::take(&mut last_commit)));
                    }
                }
            }
            while let Some(o) = f.poll_output() {
                match o {
                    FeedOutput::Hand { shard, offset, env, wait } => {
                        let q = &mut queue[shard.0 as usize];
                        if q.len() < ROOM || wait {
                            q.push_back(offset);
                            f.handle_input(FeedInput::Handed { shard, offset });
                        } else {
                            f.handle_input(FeedInput::Full { shard, offset, env });
                        }
                    }
                    FeedOutput::Pause(s) => { prop_assert!(!paused[s.0 as usize]); paused[s.0 as usize] = true; }
                    FeedOutput::Resume(s) => { prop_assert!(paused[s.0 as usize]); paused[s.0 as usize] = false; }
                    FeedOutput::Commit(offsets) => {
                        for (s, next) in &offsets {
                            let i = s.0 as usize;
                            // Every record below `next` was taken and is durable.
                            let done: Vec<i64> = taken[i][..durable[i] as usize].to_vec();
                            prop_assert!(done.last().is_some_and(|l| *l + 1 == *next), "commit {next} of shard {i} beyond durable {done:?}");
                            prop_assert!(*next >= committed[i]);
                            committed[i] = *next;
                        }
                        last_commit = offsets;
                    }
                    o => prop_assert!(false, "unexpected {o:?}"),
                }
            }
            for (i, s) in shards.iter().enumerate() {
                prop_assert_eq!(taken[i].len() + queue[i].len() + f.held(*s), sent[i], "a record lost or doubled");
                prop_assert_eq!(paused[i], f.held(*s) > 0, "paused exactly while something is held");
                prop_assert_eq!(paused[i], f.paused(*s));
                prop_assert!(f.held(*s) <= 8 + 1);
            }
        }
        for i in 0..3 {
            let mut all: Vec<i64> = taken[i].clone();
            all.extend(queue[i].iter());
            prop_assert!(all.windows(2).all(|w| w[0] < w[1]), "shard {i} out of order: {all:?}");
        }
    }
}
