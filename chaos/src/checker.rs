//! Checks a recorded history against what Iris promises. Pure: a history
//! in, a verdict per invariant out.

use crate::history::{Event, What};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How a history is judged.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Once every fault has healed, sessions opened after this long must
    /// all succeed (the region settles: group rebalances, edge leases).
    pub settle_ms: u64,
    /// ... and each within this long.
    pub hello_ms: u64,
}

/// The verdict on one invariant.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The invariant's name.
    pub name: &'static str,
    /// What it says.
    pub says: &'static str,
    /// How many cases were checked.
    pub checked: usize,
    /// How many broke it.
    pub violations: usize,
    /// The first few that did.
    pub examples: Vec<String>,
}

impl Verdict {
    fn new(name: &'static str, says: &'static str) -> Self {
        Verdict { name, says, checked: 0, violations: 0, examples: Vec::new() }
    }

    fn case(&mut self, ok: bool, example: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.violations += 1;
            if self.examples.len() < 10 {
                self.examples.push(example());
            }
        }
    }

    /// A verdict from a list of problems the harness itself found.
    pub fn from_problems(name: &'static str, says: &'static str, problems: &[String]) -> Self {
        let mut v = Verdict::new(name, says);
        v.checked = 1;
        v.violations = problems.len();
        v.examples = problems.iter().take(10).cloned().collect();
        v
    }

    /// True when nothing broke it.
    pub fn holds(&self) -> bool {
        self.violations == 0
    }
}

type UserId = (String, String);

/// Judges a history. Every invariant is reported, held or not.
pub fn check(events: &[Event], bounds: &Bounds) -> Vec<Verdict> {
    // What was sent, by (tenant, sender, client id): recipient and body.
    let mut sends: HashMap<(String, String, String), (String, String)> = HashMap::new();
    // Every accepted answer, in order.
    let mut accepted: Vec<(u64, String, String, String, String)> = Vec::new();
    let mut inboxes: HashMap<UserId, Vec<(u64, String, String, String)>> = HashMap::new();
    let mut delivered: Vec<(UserId, u64, String, String, String)> = Vec::new();
    let mut hellos: Vec<(u64, String, bool, u64, String)> = Vec::new();
    let mut healed: Option<u64> = None;
    for e in events {
        match &e.what {
            What::Send { tenant, from, to, id, body } => {
                sends.insert((tenant.clone(), from.clone(), id.clone()), (to.clone(), body.clone()));
            }
            What::Accepted { tenant, from, id, msg_id } => {
                accepted.push((e.t, tenant.clone(), from.clone(), id.clone(), msg_id.clone()))
            }
            What::Inbox { tenant, user, msgs } => {
                inboxes.insert((tenant.clone(), user.clone()), msgs.clone());
            }
            What::Delivered { tenant, user, seq, msg_id, from, body } => {
                delivered.push(((tenant.clone(), user.clone()), *seq, msg_id.clone(), from.clone(), body.clone()))
            }
            What::HelloDone { edge, ok, took_ms, error, user, tenant } => hellos.push((
                e.t.saturating_sub(*took_ms),
                edge.clone(),
                *ok,
                *took_ms,
                format!("{tenant}/{user}: {}", error.clone().unwrap_or_default()),
            )),
            What::Healed => healed = Some(e.t),
            _ => {}
        }
    }

    // Where each body is stored: (tenant, user) -> body -> (seq, msg_id).
    // (A body stored twice keeps its first place; `stored_once` reports it.)
    let stored: HashMap<&UserId, HashMap<&str, (u64, &str)>> = inboxes
        .iter()
        .map(|(u, msgs)| {
            let mut m = HashMap::new();
            for (seq, id, _, body) in msgs {
                m.entry(body.as_str()).or_insert((*seq, id.as_str()));
            }
            (u, m)
        })
        .collect();

    let mut lost = Verdict::new("nothing_accepted_lost", "every accepted message is in its recipient's inbox");
    let mut same_id = Verdict::new(
        "accepted_id_is_stored_id",
        "the msg_id a send was accepted with is the stored message's, on every retry",
    );
    for (_, tenant, from, id, msg_id) in &accepted {
        let Some((to, body)) = sends.get(&(tenant.clone(), from.clone(), id.clone())) else {
            lost.case(false, || format!("{tenant}/{from} {id}: accepted but never sent"));
            continue;
        };
        let user = (tenant.clone(), to.clone());
        let at = stored.get(&user).and_then(|m| m.get(body.as_str()));
        lost.case(at.is_some(), || format!("{tenant}/{from} {id} -> {to}: accepted as {msg_id}, not stored"));
        if let Some((_, stored_id)) = at {
            same_id.case(*stored_id == msg_id, || {
                format!("{tenant}/{from} {id}: accepted as {msg_id}, stored as {stored_id}")
            });
        }
    }

    let mut dupes = Verdict::new("stored_once", "no send is stored twice (retries deduplicated)");
    let mut order = Verdict::new(
        "inbox_in_order",
        "each inbox holds seqs 1..n without gaps, and each sender's messages in the order it sent them",
    );
    let mut tenancy = Verdict::new("tenants_never_cross", "no message reaches or is stored for another tenant");
    for ((tenant, user), msgs) in &inboxes {
        let mut bodies = HashSet::new();
        for (_, _, _, body) in msgs {
            dupes.case(bodies.insert(body.as_str()), || format!("{tenant}/{user}: {body} stored twice"));
            tenancy.case(body.starts_with(&format!("{tenant}/")), || format!("{tenant}/{user}: holds {body}"));
        }
        let seqs: Vec<u64> = msgs.iter().map(|m| m.0).collect();
        order.case(seqs.iter().copied().eq(1..=seqs.len() as u64), || {
            format!("{tenant}/{user}: seqs {:?}…", &seqs[..seqs.len().min(20)])
        });
        // A sender sends one message at a time, each after the previous was
        // accepted or given up: its messages' send numbers rise with seq.
        let mut last_by_sender: BTreeMap<&str, u64> = BTreeMap::new();
        for (seq, _, from, body) in msgs {
            let Some(n) = body.rsplit('#').next().and_then(|n| n.parse::<u64>().ok()) else { continue };
            let last = last_by_sender.entry(from.as_str()).or_insert(0);
            // The same number again is a duplicate (`stored_once`), not disorder.
            order.case(n >= *last, || format!("{tenant}/{user}: seq {seq} is {from}'s #{n} after #{last}"));
            *last = n;
        }
    }

    let mut live_ok = Verdict::new(
        "deliveries_are_stored_messages",
        "every message a client received is the stored message at that seq, for that tenant",
    );
    for ((tenant, user), seq, msg_id, _, body) in &delivered {
        let at = stored.get(&(tenant.clone(), user.clone())).and_then(|m| m.get(body.as_str()));
        live_ok.case(
            at.is_some_and(|(s, id)| s == seq && id == msg_id) && body.starts_with(&format!("{tenant}/")),
            || format!("{tenant}/{user} got seq {seq} {msg_id} ({body}); stored: {at:?}"),
        );
    }

    let mut live = Verdict::new(
        "sessions_open_after_healing",
        "once faults have healed and the region settled, every session opens, within the bound, on every edge",
    );
    if let Some(h) = healed {
        for (started, edge, ok, took, who) in &hellos {
            if *started >= h + bounds.settle_ms {
                live.case(*ok && *took <= bounds.hello_ms, || {
                    format!(
                        "{edge}: hello at {started} ms ({who}) {} after {took} ms",
                        if *ok { "ok" } else { "failed" }
                    )
                });
            }
        }
    }
    vec![lost, same_id, dupes, order, tenancy, live_ok, live]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, what: What) -> Event {
        Event { t, what }
    }

    fn send(from: &str, to: &str, n: u64) -> What {
        What::Send {
            tenant: "a".into(),
            from: from.into(),
            to: to.into(),
            id: format!("{from}-{n}"),
            body: format!("a/{from}#{n}"),
        }
    }

    fn acc(from: &str, n: u64, msg_id: &str) -> What {
        What::Accepted { tenant: "a".into(), from: from.into(), id: format!("{from}-{n}"), msg_id: msg_id.into() }
    }

    fn inbox(user: &str, msgs: &[(u64, &str, &str, &str)]) -> What {
        What::Inbox {
            tenant: "a".into(),
            user: user.into(),
            msgs: msgs.iter().map(|(s, id, f, b)| (*s, id.to_string(), f.to_string(), b.to_string())).collect(),
        }
    }

    const B: Bounds = Bounds { settle_ms: 1_000, hello_ms: 500 };

    fn broken(v: &[Verdict]) -> Vec<&'static str> {
        v.iter().filter(|v| !v.holds()).map(|v| v.name).collect()
    }

    #[test]
    fn a_clean_history_holds_everything() {
        let h = vec![
            ev(1, send("x", "y", 1)),
            ev(2, acc("x", 1, "m1")),
            ev(3, send("x", "y", 2)),
            ev(4, acc("x", 2, "m2")),
            ev(5, What::Healed),
            ev(9, inbox("y", &[(1, "m1", "x", "a/x#1"), (2, "m2", "x", "a/x#2")])),
        ];
        assert!(broken(&check(&h, &B)).is_empty());
    }

    #[test]
    fn loss_duplicates_disorder_and_wrong_ids_are_each_named() {
        let lost = vec![ev(1, send("x", "y", 1)), ev(2, acc("x", 1, "m1")), ev(3, inbox("y", &[]))];
        assert_eq!(broken(&check(&lost, &B)), vec!["nothing_accepted_lost"]);
        let twice = vec![
            ev(1, send("x", "y", 1)),
            ev(2, acc("x", 1, "m1")),
            ev(3, inbox("y", &[(1, "m1", "x", "a/x#1"), (2, "m9", "x", "a/x#1")])),
        ];
        assert_eq!(broken(&check(&twice, &B)), vec!["stored_once"]);
        let swapped = vec![ev(1, inbox("y", &[(1, "m2", "x", "a/x#2"), (2, "m1", "x", "a/x#1")]))];
        assert_eq!(broken(&check(&swapped, &B)), vec!["inbox_in_order"]);
        let gap = vec![ev(1, inbox("y", &[(1, "m1", "x", "a/x#1"), (3, "m2", "x", "a/x#2")]))];
        assert_eq!(broken(&check(&gap, &B)), vec!["inbox_in_order"]);
        let other_id =
            vec![ev(1, send("x", "y", 1)), ev(2, acc("x", 1, "m7")), ev(3, inbox("y", &[(1, "m1", "x", "a/x#1")]))];
        assert_eq!(broken(&check(&other_id, &B)), vec!["accepted_id_is_stored_id"]);
        let foreign = vec![ev(1, inbox("y", &[(1, "m1", "x", "b/x#1")]))];
        assert_eq!(broken(&check(&foreign, &B)), vec!["tenants_never_cross"]);
        let ghost = vec![
            ev(
                1,
                What::Delivered {
                    tenant: "a".into(),
                    user: "y".into(),
                    seq: 1,
                    msg_id: "m5".into(),
                    from: "x".into(),
                    body: "a/x#1".into(),
                },
            ),
            ev(2, inbox("y", &[(1, "m1", "x", "a/x#1")])),
        ];
        assert_eq!(broken(&check(&ghost, &B)), vec!["deliveries_are_stored_messages"]);
    }

    #[test]
    fn sessions_must_open_once_healed_and_settled_but_not_before() {
        let hello = |t: u64, ok: bool, took: u64| {
            ev(
                t,
                What::HelloDone {
                    tenant: "a".into(),
                    user: "y".into(),
                    edge: "edge-1".into(),
                    ok,
                    took_ms: took,
                    error: (!ok).then(|| "unavailable".into()),
                },
            )
        };
        let during = vec![ev(10, What::Healed), hello(600, false, 100)];
        assert!(broken(&check(&during, &B)).is_empty(), "refused while settling: allowed");
        let after = vec![ev(10, What::Healed), hello(2_000, false, 100)];
        assert_eq!(broken(&check(&after, &B)), vec!["sessions_open_after_healing"]);
        let slow = vec![ev(10, What::Healed), hello(3_000, true, 900)];
        assert_eq!(broken(&check(&slow, &B)), vec!["sessions_open_after_healing"]);
    }
}
