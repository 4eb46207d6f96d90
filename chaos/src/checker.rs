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
    /// The p99 of send → delivered for sends first tried during a rolling
    /// restart of the whole region, at most.
    pub rolling_p99_ms: u64,
}

/// Send → delivered latency of the sends first tried in one kind of
/// period: a delivery counts once, the first time its recipient's client
/// got it (live, or replayed after it moved edges).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// `no fault`, `rolling restart` or `other faults`.
    pub during: &'static str,
    /// Sends delivered.
    pub delivered: usize,
    /// Median, ms.
    pub p50_ms: u64,
    /// 99th percentile (nearest rank), ms.
    pub p99_ms: u64,
    /// Slowest, ms.
    pub max_ms: u64,
}

/// The kinds of period a send can be first tried in.
pub const PERIODS: [&str; 3] = ["no fault", "rolling restart", "other faults"];

/// Send → delivered latency per kind of period ([`PERIODS`], in that
/// order; a period without deliveries is left out). Fault windows run from
/// a fault's start to its end as the nemesis recorded them.
pub fn delivery_latency(events: &[Event]) -> Vec<Latency> {
    let mut open: HashMap<&str, (u64, bool)> = HashMap::new();
    let mut windows: Vec<(u64, u64, bool)> = Vec::new();
    let mut first_send: HashMap<(&str, &str), u64> = HashMap::new();
    let mut first_delivery: HashMap<(&str, &str), u64> = HashMap::new();
    for e in events {
        match &e.what {
            What::FaultStart { fault } => {
                open.insert(fault, (e.t, fault.starts_with("rolling")));
            }
            What::FaultEnd { fault } => {
                if let Some((start, rolling)) = open.remove(fault.as_str()) {
                    windows.push((start, e.t, rolling));
                }
            }
            What::Send { to, body, .. } => {
                first_send.entry((to, body)).or_insert(e.t);
            }
            // The sending device's; the second device is checked apart.
            What::Delivered { user, body, device: 0, .. } => {
                first_delivery.entry((user, body)).or_insert(e.t);
            }
            _ => {}
        }
    }
    // A fault never ended lasts to the end of the record.
    let end = events.last().map_or(0, |e| e.t);
    windows.extend(open.values().map(|(start, rolling)| (*start, end, *rolling)));
    let mut by_period: [Vec<u64>; 3] = Default::default();
    for (key, sent) in &first_send {
        let Some(got) = first_delivery.get(key) else { continue };
        let covering: Vec<bool> = windows.iter().filter(|(a, b, _)| a <= sent && sent <= b).map(|w| w.2).collect();
        let period = match (covering.is_empty(), covering.iter().any(|r| *r)) {
            (true, _) => 0,
            (false, true) => 1,
            (false, false) => 2,
        };
        by_period[period].push(got.saturating_sub(*sent));
    }
    PERIODS
        .iter()
        .zip(by_period.iter_mut())
        .filter(|(_, l)| !l.is_empty())
        .map(|(during, l)| {
            l.sort_unstable();
            let rank = |q: f64| l[((q * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1];
            Latency { during, delivered: l.len(), p50_ms: rank(0.5), p99_ms: rank(0.99), max_ms: l[l.len() - 1] }
        })
        .collect()
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
            What::Delivered { tenant, user, seq, msg_id, from, body, .. } => {
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
    let presence = presence_converges(events, healed, bounds);
    let (ingestion, graph) = (ingestion_counts_exact(events), graph_changes_logged_once(events));
    let mut rolling = Verdict::new(
        "rolling_restart_delivers_in_time",
        "sends made while every node restarts in turn are delivered with p99 within the bound",
    );
    for l in delivery_latency(events).iter().filter(|l| l.during == "rolling restart") {
        rolling.case(l.p99_ms <= bounds.rolling_p99_ms, || {
            format!(
                "p99 {} ms over {} deliveries (bound {} ms; p50 {} ms, max {} ms)",
                l.p99_ms, l.delivered, bounds.rolling_p99_ms, l.p50_ms, l.max_ms
            )
        });
    }
    let devices = devices_see_every_message(events, &sends, &accepted, &stored);
    vec![lost, same_id, dupes, order, tenancy, live_ok, live, presence, ingestion, graph, rolling, devices]
}

/// Each user's second device, once caught up at the end, has got every
/// message of its inbox that was accepted before its catch-up began (live,
/// or replayed on resuming after the last seq it had).
fn devices_see_every_message(
    events: &[Event],
    sends: &HashMap<(String, String, String), (String, String)>,
    accepted: &[(u64, String, String, String, String)],
    stored: &HashMap<&UserId, HashMap<&str, (u64, &str)>>,
) -> Verdict {
    let mut v = Verdict::new(
        "devices_see_every_message",
        "every user's second device, caught up at the end, got every message accepted for that user before then",
    );
    let mut seen: HashMap<(&str, &str, u8), HashSet<u64>> = HashMap::new();
    let mut ended: Vec<(&str, &str, u8, u64)> = Vec::new();
    let mut devices: HashSet<(&str, &str, u8)> = HashSet::new();
    for e in events {
        match &e.what {
            What::Delivered { tenant, user, seq, device, .. } if *device > 0 => {
                seen.entry((tenant, user, *device)).or_default().insert(*seq);
                devices.insert((tenant, user, *device));
            }
            What::DeviceStart { tenant, user, device } => {
                devices.insert((tenant, user, *device));
            }
            What::DeviceEnd { tenant, user, device, from } => {
                ended.push((tenant, user, *device, *from));
                devices.insert((tenant, user, *device));
            }
            _ => {}
        }
    }
    for (tenant, user, device) in &devices {
        if !ended.iter().any(|(t, u, d, _)| (t, u, d) == (tenant, user, device)) {
            v.case(false, || format!("{tenant}/{user} device {device}: never caught up at the end"));
        }
    }
    // When each stored message was first accepted: (recipient, body) -> t.
    let mut first_accepted: HashMap<(&str, &str, &str), u64> = HashMap::new();
    for (t, tenant, from, id, _) in accepted {
        if let Some((to, body)) = sends.get(&(tenant.clone(), from.clone(), id.clone())) {
            first_accepted.entry((tenant, to, body)).or_insert(*t);
        }
    }
    let none = HashSet::new();
    for (tenant, user, device, from) in ended {
        let got = seen.get(&(tenant, user, device)).unwrap_or(&none);
        let Some(inbox) = stored.get(&(tenant.to_owned(), user.to_owned())) else { continue };
        for (body, (seq, _)) in inbox {
            let due = first_accepted.get(&(tenant, user, *body)).is_some_and(|t| *t < from);
            if due {
                v.case(got.contains(seq), || {
                    format!("{tenant}/{user} device {device}: seq {seq} ({body}) accepted before {from} ms, never got")
                });
            }
        }
    }
    v
}

/// Every event of a batch answered 202 is in its tenant's events log once;
/// nothing is there twice or that was never sent; and each answer counts
/// every event of its batch (accepted or duplicate).
fn ingestion_counts_exact(events: &[Event]) -> Verdict {
    let mut v = Verdict::new(
        "ingestion_counts_exact",
        "every event of an acknowledged batch is in the events log once, nothing twice, nothing unsent",
    );
    let mut sent: HashSet<(&str, u64)> = HashSet::new();
    let mut answered: Vec<(&str, u64, u64, u64)> = Vec::new();
    let mut logs: HashMap<&str, &Vec<String>> = HashMap::new();
    for e in events {
        match &e.what {
            What::Ingest { tenant, batch } => {
                sent.insert((tenant, *batch));
            }
            What::Ingested { tenant, batch, accepted, duplicates } => {
                answered.push((tenant, *batch, *accepted, *duplicates))
            }
            What::EventsLog { tenant, keys } => {
                logs.insert(tenant, keys);
            }
            _ => {}
        }
    }
    let batch_of = |key: &str| -> Option<u64> { key.rsplit_once("-b")?.1.split_once('-')?.0.parse().ok() };
    for (tenant, keys) in &logs {
        let mut seen = HashSet::new();
        for k in keys.iter() {
            v.case(seen.insert(k.as_str()), || format!("{tenant}: {k} logged twice"));
            let known = batch_of(k).is_some_and(|b| sent.contains(&(*tenant, b)));
            v.case(known, || format!("{tenant}: {k} logged but never sent"));
        }
        for (t, batch, accepted, duplicates) in answered.iter().filter(|a| a.0 == *tenant) {
            v.case(accepted + duplicates == crate::service::BATCH as u64, || {
                format!("{t}: batch {batch} answered {accepted} accepted + {duplicates} duplicates")
            });
            for k in crate::service::batch_keys(t, *batch) {
                v.case(seen.contains(k.as_str()), || format!("{t}: {k} acknowledged, not in the log"));
            }
        }
    }
    let unread: std::collections::BTreeSet<&str> =
        sent.iter().map(|(t, _)| *t).filter(|t| !logs.contains_key(t)).collect();
    for tenant in unread {
        v.case(false, || format!("{tenant}: the events log was not read"));
    }
    v
}

/// Every `contacts_ok` a user got for adding the watcher has its one
/// `contact.upserted` record in the graph log, and no such record is there
/// twice.
fn graph_changes_logged_once(events: &[Event]) -> Verdict {
    let mut v =
        Verdict::new("graph_changes_logged_once", "every acknowledged contact change is in the graph log exactly once");
    let mut stored: Vec<(&str, &str)> = Vec::new();
    let mut logs: HashMap<&str, &Vec<(String, String)>> = HashMap::new();
    for e in events {
        match &e.what {
            What::ContactsStored { tenant, user } => stored.push((tenant, user)),
            What::GraphLog { tenant, upserts } => {
                logs.insert(tenant, upserts);
            }
            _ => {}
        }
    }
    for (tenant, user) in stored {
        let Some(log) = logs.get(tenant) else {
            v.case(false, || format!("{tenant}: the graph log was not read"));
            continue;
        };
        let n = log.iter().filter(|(o, c)| o == user && c == crate::workload::WATCHER).count();
        v.case(n == 1, || format!("{tenant}/{user}: {n} contact.upserted records for the watcher, want 1"));
    }
    v
}

/// Each tenant's watcher ends connected, and from the moment the region has
/// settled after healing (or its last session's subscriptions had time to
/// answer, if later) until its end, it sees every active user (`u…`, who
/// stay connected) `online` and every offline user (`off…`, who never
/// connect before the final read) `offline`.
fn presence_converges(events: &[Event], healed: Option<u64>, bounds: &Bounds) -> Verdict {
    let mut v = Verdict::new(
        "presence_converges",
        "once healed and settled, each tenant's watcher sees every active user online and every offline one offline",
    );
    let Some(healed) = healed else { return v };
    let mut tenants: Vec<&str> = Vec::new();
    for e in events {
        if let What::Presence { tenant, .. } | What::PresenceEnd { tenant, .. } = &e.what
            && !tenants.contains(&tenant.as_str())
        {
            tenants.push(tenant);
        }
    }
    for tenant in tenants {
        let Some((end, since)) = events.iter().find_map(|e| match &e.what {
            What::PresenceEnd { tenant: t, since } if t == tenant => Some((e.t, *since)),
            _ => None,
        }) else {
            v.case(false, || format!("{tenant}: the watcher was not connected at the end"));
            continue;
        };
        let from = (healed + bounds.settle_ms).max(since + bounds.hello_ms);
        // The final session's frames, by user, in order.
        let mut frames: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
        for e in events.iter().filter(|e| e.t >= since && e.t <= end) {
            if let What::Presence { tenant: t, user, status } = &e.what
                && t == tenant
            {
                frames.entry(user).or_default().push((e.t, status));
            }
        }
        for (user, seen) in &frames {
            let want = if user.starts_with("off") { "offline" } else { "online" };
            // The view when the check starts, and every change after it.
            let at_start = seen.iter().rev().find(|(t, _)| *t <= from).into_iter();
            for (t, status) in at_start.chain(seen.iter().filter(|(t, _)| *t > from)) {
                v.case(*status == want, || {
                    format!("{tenant}/{user}: {status} at {t} ms, want {want} (from {from} ms)")
                });
            }
        }
        let users_seen = frames.len();
        v.case(users_seen > 0, || format!("{tenant}: the watcher's last session saw no one"));
    }
    v
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

    const B: Bounds = Bounds { settle_ms: 1_000, hello_ms: 500, rolling_p99_ms: 100 };

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
                    device: 0,
                },
            ),
            ev(2, inbox("y", &[(1, "m1", "x", "a/x#1")])),
        ];
        assert_eq!(broken(&check(&ghost, &B)), vec!["deliveries_are_stored_messages"]);
    }

    fn got(user: &str, from: &str, n: u64) -> What {
        What::Delivered {
            tenant: "a".into(),
            user: user.into(),
            seq: n,
            msg_id: format!("m{n}"),
            from: from.into(),
            body: format!("a/{from}#{n}"),
            device: 0,
        }
    }

    #[test]
    fn a_second_device_must_get_every_message_accepted_before_it_caught_up() {
        let on_device = |n: u64| match got("y", "x", n) {
            What::Delivered { tenant, user, seq, msg_id, from, body, .. } => {
                What::Delivered { tenant, user, seq, msg_id, from, body, device: 1 }
            }
            _ => unreachable!(),
        };
        let end = |t: u64| ev(t, What::DeviceEnd { tenant: "a".into(), user: "y".into(), device: 1, from: t });
        let stored = [(1, "m1", "x", "a/x#1"), (2, "m2", "x", "a/x#2")];
        let base = || {
            vec![
                ev(1, send("x", "y", 1)),
                ev(2, acc("x", 1, "m1")),
                ev(3, send("x", "y", 2)),
                ev(4, acc("x", 2, "m2")),
                ev(5, on_device(1)),
            ]
        };
        let mut whole = base();
        whole.extend([ev(6, on_device(2)), end(7), ev(8, inbox("y", &stored))]);
        assert!(broken(&check(&whole, &B)).is_empty(), "{:?}", broken(&check(&whole, &B)));
        let mut missed = base();
        missed.extend([end(7), ev(8, inbox("y", &stored))]);
        assert_eq!(broken(&check(&missed, &B)), vec!["devices_see_every_message"]);
        // Accepted after the catch-up began: not due.
        let mut late = base();
        late.retain(|e| e.t != 4);
        late.extend([end(3), ev(4, acc("x", 2, "m2")), ev(8, inbox("y", &stored))]);
        late.sort_by_key(|e| e.t);
        assert!(broken(&check(&late, &B)).is_empty(), "{:?}", broken(&check(&late, &B)));
        // A device that never caught up is named, whether it got anything
        // or not.
        let mut never = base();
        never.extend([ev(6, on_device(2)), ev(8, inbox("y", &stored))]);
        assert_eq!(broken(&check(&never, &B)), vec!["devices_see_every_message"]);
        let silent =
            vec![ev(0, What::DeviceStart { tenant: "a".into(), user: "y".into(), device: 1 }), ev(8, inbox("y", &[]))];
        assert_eq!(broken(&check(&silent, &B)), vec!["devices_see_every_message"]);
    }

    #[test]
    fn delivery_latency_is_counted_by_the_period_a_send_was_first_tried_in() {
        let fault = |name: &str, start: bool| {
            if start { What::FaultStart { fault: name.into() } } else { What::FaultEnd { fault: name.into() } }
        };
        let h = vec![
            ev(0, send("x", "y", 1)),
            ev(10, got("y", "x", 1)),
            ev(100, fault("rolling", true)),
            ev(110, send("x", "y", 2)),
            ev(115, send("x", "y", 2)), // a retry: the first try counts
            ev(400, got("y", "x", 2)),
            ev(450, got("y", "x", 2)), // a replay: the first delivery counts
            ev(500, fault("rolling", false)),
            ev(600, fault("kill core-1", true)),
            ev(610, send("x", "y", 3)),
            ev(640, got("y", "x", 3)),
            ev(700, fault("kill core-1", false)),
            ev(800, send("x", "y", 4)), // never delivered: not counted
            ev(900, inbox("y", &[(1, "m1", "x", "a/x#1"), (2, "m2", "x", "a/x#2"), (3, "m3", "x", "a/x#3")])),
        ];
        let l = delivery_latency(&h);
        let row = |during: &str| l.iter().find(|l| l.during == during).cloned().unwrap();
        assert_eq!(row("no fault"), Latency { during: "no fault", delivered: 1, p50_ms: 10, p99_ms: 10, max_ms: 10 });
        assert_eq!(row("rolling restart").p99_ms, 290);
        assert_eq!(row("other faults").p99_ms, 30);
        assert_eq!(broken(&check(&h, &B)), vec!["rolling_restart_delivers_in_time"], "290 ms > the 100 ms bound");
        let within = Bounds { rolling_p99_ms: 290, ..B };
        assert!(broken(&check(&h, &within)).is_empty());
    }

    #[test]
    fn presence_must_converge_once_healed_and_settled() {
        let p = |t: u64, user: &str, status: &str| {
            ev(t, What::Presence { tenant: "a".into(), user: user.into(), status: status.into() })
        };
        let end = |t: u64, since: u64| ev(t, What::PresenceEnd { tenant: "a".into(), since });
        let presence = |h: &[Event]| check(h, &B).into_iter().find(|v| v.name == "presence_converges").unwrap();
        // Offline during the faults, online from before the check starts.
        let ok = vec![
            p(5, "u0", "offline"),
            ev(10, What::Healed),
            p(12, "u0", "online"),
            p(12, "off0", "offline"),
            end(5_000, 0),
        ];
        assert!(presence(&ok).holds(), "{:?}", presence(&ok));
        let stuck = vec![ev(10, What::Healed), p(12, "u0", "offline"), end(5_000, 0)];
        assert!(!presence(&stuck).holds());
        let flaps = vec![ev(10, What::Healed), p(12, "u0", "online"), p(3_000, "u0", "offline"), end(5_000, 0)];
        assert!(!presence(&flaps).holds(), "a wrong frame after the check starts");
        let gone = vec![ev(10, What::Healed), p(12, "u0", "online")];
        assert!(!presence(&gone).holds(), "a watcher not connected at the end");
        // Frames of an earlier session do not count.
        let old = vec![p(5, "u0", "online"), ev(10, What::Healed), end(5_000, 2_000)];
        assert!(!presence(&old).holds());
    }

    #[test]
    fn ingestion_and_graph_logs_must_match_what_was_acknowledged() {
        let named = |h: &[Event], name: &str| check(h, &B).into_iter().find(|v| v.name == name).unwrap();
        let keys = |batches: &[u64]| batches.iter().flat_map(|b| crate::service::batch_keys("a", *b)).collect();
        let sent = |b: u64| ev(1, What::Ingest { tenant: "a".into(), batch: b });
        let acked = |b: u64| ev(2, What::Ingested { tenant: "a".into(), batch: b, accepted: 10, duplicates: 0 });
        let log = |k: Vec<String>| ev(9, What::EventsLog { tenant: "a".into(), keys: k });
        // Batch 2 was sent, its answer lost, and it landed: fine.
        let ok = vec![sent(1), acked(1), sent(2), log(keys(&[1, 2]))];
        assert!(named(&ok, "ingestion_counts_exact").holds());
        let missing = vec![sent(1), acked(1), log(keys(&[]))];
        assert!(!named(&missing, "ingestion_counts_exact").holds());
        let twice = vec![sent(1), acked(1), log(keys(&[1, 1]))];
        assert!(!named(&twice, "ingestion_counts_exact").holds());
        let unsent = vec![sent(1), acked(1), log(keys(&[1, 3]))];
        assert!(!named(&unsent, "ingestion_counts_exact").holds());
        let miscounted =
            vec![sent(1), ev(2, What::Ingested { tenant: "a".into(), batch: 1, accepted: 9, duplicates: 0 })];
        assert!(!named(&[miscounted, vec![log(keys(&[1]))]].concat(), "ingestion_counts_exact").holds());

        let stored = ev(1, What::ContactsStored { tenant: "a".into(), user: "u0".into() });
        let graph =
            |n: usize| ev(9, What::GraphLog { tenant: "a".into(), upserts: vec![("u0".into(), "watch".into()); n] });
        assert!(named(&[stored.clone(), graph(1)], "graph_changes_logged_once").holds());
        assert!(!named(&[stored.clone(), graph(0)], "graph_changes_logged_once").holds());
        assert!(!named(&[stored.clone(), graph(2)], "graph_changes_logged_once").holds());
        assert!(!named(&[stored], "graph_changes_logged_once").holds(), "a log never read");
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
