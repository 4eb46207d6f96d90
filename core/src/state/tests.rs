use super::*;
use iris_envelope::SessionId;
use proptest::prelude::*;

fn cfg() -> ShardConfig {
    ShardConfig {
        shard: ShardId(3),
        max_cached_users: 1_000,
        max_contacts: 5,
        max_subscribers: 100,
        max_sessions: 3,
        id_seed: 42,
        recent_dedup: 0,
        edge_lease_ms: 1_000,
        region: "r1".into(),
        page_max_bytes: 1 << 16,
    }
}

fn key(u: &str) -> UserKey {
    UserKey::new("acme", u)
}

fn addr(edge: &str, s: u64) -> SessionAddr {
    SessionAddr { edge: EdgeId(edge.into()), session: SessionId(s) }
}

struct Harness {
    state: ShardState,
    now: Millis,
    pending: Vec<(Ticket, WriteBatch)>,
}

impl Harness {
    fn new() -> Self {
        Self { state: ShardState::new(cfg()), now: 1_000, pending: Vec::new() }
    }

    fn input(&mut self, owner: &str, body: ShardInput) {
        self.input_with(owner, body, None)
    }

    fn input_with(&mut self, owner: &str, body: ShardInput, dedup: Option<DedupRecord>) {
        let env = ShardEnvelope { owner: key(owner), body };
        if let Some(u) = self.state.needs(&env).user {
            self.state.insert_user(u, UserRecord::default());
        }
        self.now += 1;
        if let Some(w) = self.state.handle(self.now, env, Found { dedup, events_seen: vec![] }) {
            self.pending.push(w);
        }
    }

    fn commit_all(&mut self) -> Vec<WriteBatch> {
        let mut out = Vec::new();
        for (t, b) in self.pending.drain(..) {
            self.state.committed(t, Ok(()));
            out.push(b);
        }
        out
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.state.poll_output()).collect()
    }

    fn frames(&mut self) -> Vec<(Vec<SessionId>, ServerFrame)> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Edge(EdgeEnvelope { body: EdgeInput::Frame { to, frame, .. }, .. }) => {
                    Some((to.as_slice().to_vec(), frame))
                }
                _ => None,
            })
            .collect()
    }

    /// `owner` (on session e1/1) adds `contact` in the default circle.
    fn add_contact(&mut self, owner: &str, contact: &str) {
        self.input(
            owner,
            ShardInput::Contacts {
                session: addr("e1", 1),
                upsert: vec![ContactEntry { user: contact.into(), circle: None }],
                remove: vec![],
            },
        );
    }

    fn open(&mut self, user: &str, s: u64) {
        self.input(user, ShardInput::SessionOpened { session: addr("e1", s), resume_after: None });
        self.commit_all();
        self.outputs();
    }

    fn send(&mut self, from: &str, to: &str, id: &str, reply: u64) {
        self.input(
            to,
            ShardInput::Send { from: from.into(), client_id: id.into(), body: "hi".into(), reply: addr("e1", reply) },
        );
    }
}

fn presence(f: &ServerFrame) -> Option<(&str, PresenceStatus, Option<Millis>)> {
    match f {
        ServerFrame::Presence(p) => Some((&p.user, p.status, p.last_seen)),
        _ => None,
    }
}

#[test]
fn send_waits_for_commit_then_accepts_and_delivers() {
    let mut h = Harness::new();
    h.open("bob", 2);
    h.send("alice", "bob", "c-1", 1);
    assert!(h.outputs().is_empty(), "nothing leaves before the write is durable");
    let batches = h.commit_all();
    assert_eq!(batches[0].ops.len(), 2, "message and dedup record in one batch");
    let frames = h.frames();
    assert!(matches!(&frames[0], (s, ServerFrame::Accepted(a)) if s == &[SessionId(1)] && a.id == "c-1"));
    assert!(
        matches!(&frames[1], (s, ServerFrame::Message(m)) if s == &[SessionId(2)] && m.seq == 1 && m.from == "alice")
    );
}

#[test]
fn retry_gets_the_same_msg_id_in_flight_and_after_commit() {
    let mut h = Harness::new();
    h.send("alice", "bob", "c-1", 1);
    h.send("alice", "bob", "c-1", 1);
    assert_eq!(h.pending.len(), 1, "the retry writes nothing");
    h.commit_all();
    let ids: Vec<String> = h
        .frames()
        .into_iter()
        .filter_map(|(_, f)| match f {
            ServerFrame::Accepted(a) => Some(a.msg_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
    // After commit the record comes from storage (the actor looks it up).
    let rec = DedupRecord { msg_id: ids[0].as_str().into(), ts: 5, to: "bob".into(), seq: 1 };
    h.input_with(
        "carol",
        ShardInput::Send { from: "alice".into(), client_id: "c-1".into(), body: "x".into(), reply: addr("e1", 1) },
        Some(rec),
    );
    assert!(h.pending.is_empty(), "a retry to another recipient is not stored");
    assert!(matches!(&h.frames()[0].1, ServerFrame::Accepted(a) if a.msg_id == ids[0] && a.ts == 5));
}

#[test]
fn failed_commit_turns_accepted_into_unavailable_and_resets() {
    let mut h = Harness::new();
    h.send("alice", "bob", "c-1", 1);
    let (t, _) = h.pending.pop().unwrap();
    h.state.committed(t, Err(StoreError::Backend("disk".into())));
    let frames = h.frames();
    assert_eq!(frames.len(), 1);
    assert!(
        matches!(&frames[0].1, ServerFrame::Error(e) if e.code == ErrorCode::Unavailable && e.id.as_deref() == Some("c-1"))
    );
    assert!(h.state.needs_reset());
    h.state.reset();
    let env = ShardEnvelope { owner: key("bob"), body: ShardInput::Ack { up_to: 0, read: false } };
    assert!(h.state.needs(&env).user.is_some(), "heads reload from storage");
}

#[test]
fn a_failed_write_does_not_swallow_unrelated_outputs() {
    let mut h = Harness::new();
    h.send("alice", "bob", "c-1", 1);
    // bob's session opens while alice's write is in flight: its welcome is
    // ordered behind that write but does not depend on it.
    h.input("bob", ShardInput::SessionOpened { session: addr("e1", 5), resume_after: None });
    let (t, _) = h.pending.remove(0);
    h.state.committed(t, Err(StoreError::Backend("disk".into())));
    // The session's own write (where bob is connected) succeeds.
    let (t2, _) = h.pending.remove(0);
    h.state.committed(t2, Ok(()));
    let outs = h.outputs();
    assert!(
        outs.iter().any(|o| matches!(o, Output::Edge(EdgeEnvelope { body: EdgeInput::Welcome { .. }, .. }))),
        "{outs:?}"
    );
    // Sessions survive the reset: bob still gets live messages.
    h.state.reset();
    h.input("bob", ShardInput::Ack { up_to: 0, read: false });
    assert_eq!(h.state.users[&key("bob")].sessions.len(), 1);
}

#[test]
fn ack_and_read_emit_receipt_ranges_once() {
    let mut h = Harness::new();
    for i in 0..5 {
        h.send("alice", "bob", &format!("c-{i}"), 1);
    }
    h.commit_all();
    h.outputs();
    h.input("bob", ShardInput::Ack { up_to: 3, read: false });
    h.input("bob", ShardInput::Ack { up_to: 2, read: false });
    h.input("bob", ShardInput::Ack { up_to: 99, read: true });
    h.commit_all();
    let receipts: Vec<_> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Read(Read::Receipts { from, to, state, .. }) => Some((from, to, state)),
            _ => None,
        })
        .collect();
    assert_eq!(receipts, vec![(0, 3, ReceiptState::Delivered), (0, 5, ReceiptState::Read)]);
    h.input("bob", ShardInput::Ack { up_to: 5, read: false });
    assert!(h.outputs().is_empty(), "read implies delivered: nothing more to say");
}

#[test]
fn receipt_for_offline_sender_is_stored_and_online_sender_gets_it() {
    let mut h = Harness::new();
    h.input("alice", ShardInput::Receipt { msg_id: "m".into(), by: "bob".into(), state: ReceiptState::Read });
    assert!(matches!(h.pending[0].1.ops[0], WriteOp::Receipt { .. }));
    h.commit_all();
    h.open("alice", 1);
    h.input("alice", ShardInput::Receipt { msg_id: "m2".into(), by: "bob".into(), state: ReceiptState::Delivered });
    assert!(h.pending.is_empty());
    assert!(matches!(&h.frames()[0].1, ServerFrame::Receipt(r) if r.msg_id == "m2"));
}

#[test]
fn presence_follows_policy_and_never_leaks() {
    let mut h = Harness::new();
    // carol subscribes to bob without being a contact: offline, no last_seen.
    h.input("bob", ShardInput::Subscribe { viewer: "carol".into(), session: addr("e1", 9) });
    h.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e2", 8) });
    let f = h.frames();
    assert_eq!(presence(&f[0].1), Some(("bob", PresenceStatus::Offline, None)));
    h.open("bob", 1);
    // bob adds dave to contacts (default circle: sees presence and last_seen).
    h.add_contact("bob", "dave");
    h.commit_all();
    let f = h.frames();
    assert!(matches!(f[0].1, ServerFrame::ContactsOk(ContactsOk { count: 1 })));
    assert_eq!(f.len(), 2, "only dave's view changed: {f:?}");
    assert_eq!(f[1].0, vec![SessionId(8)]);
    assert_eq!(presence(&f[1].1), Some(("bob", PresenceStatus::Online, None)));
    // Away, then the last session ends: offline with last_seen for dave only.
    h.input("bob", ShardInput::SetPresence { session: addr("e1", 1), status: SetStatus::Away });
    assert_eq!(presence(&h.frames()[0].1), Some(("bob", PresenceStatus::Away, None)));
    h.input("bob", ShardInput::SessionClosed { session: addr("e1", 1) });
    h.commit_all();
    let f = h.frames();
    assert_eq!(f.len(), 1);
    let (_, status, seen) = presence(&f[0].1).unwrap();
    assert_eq!((status, seen.is_some()), (PresenceStatus::Offline, true));
    // Policy change: the default circle loses last_seen.
    h.input(
        "bob",
        ShardInput::CirclePolicy {
            session: addr("e1", 1),
            circle: DEFAULT_CIRCLE.into(),
            presence: None,
            last_seen: Some(false),
        },
    );
    h.commit_all();
    let f = h.frames();
    assert!(matches!(f[0].1, ServerFrame::CirclePolicyOk(_)));
    assert_eq!(presence(&f[1].1), Some(("bob", PresenceStatus::Offline, None)));
    // Back online: away does not survive the end of all sessions.
    h.open("bob", 3);
    let sub = h.state.users.get(&key("bob")).unwrap();
    assert_eq!(sub.view_for("bob", "dave").status, PresenceStatus::Online);
}

#[test]
fn invisible_looks_offline_with_frozen_last_seen_and_is_durable() {
    let mut h = Harness::new();
    h.add_contact("bob", "dave");
    h.open("bob", 1);
    h.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e1", 8) });
    h.frames();
    h.input("bob", ShardInput::SetPresence { session: addr("e1", 1), status: SetStatus::Invisible });
    let (_, batch) = h.pending.last().unwrap();
    assert!(matches!(&batch.ops[0], WriteOp::Meta { meta, .. } if meta.invisible_since.is_some()));
    h.commit_all();
    let f = h.frames();
    let (_, status, since) = presence(&f[0].1).unwrap();
    assert_eq!(status, PresenceStatus::Offline);
    h.input("bob", ShardInput::SessionClosed { session: addr("e1", 1) });
    h.commit_all();
    assert!(h.frames().is_empty(), "dave saw offline already; the frozen last_seen does not move");
    h.open("bob", 2);
    assert!(h.frames().is_empty(), "still invisible after reconnect");
    assert_eq!(h.state.users[&key("bob")].view_for("bob", "dave").last_seen, since);
}

#[test]
fn new_circles_allow_nothing_until_set() {
    let mut h = Harness::new();
    h.open("bob", 1);
    h.input(
        "bob",
        ShardInput::Contacts {
            session: addr("e1", 1),
            upsert: vec![ContactEntry { user: "dave".into(), circle: Some("work".into()) }],
            remove: vec![],
        },
    );
    h.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e1", 8) });
    h.commit_all();
    let f = h.frames();
    assert_eq!(presence(&f.last().unwrap().1), Some(("bob", PresenceStatus::Offline, None)));
    h.input(
        "bob",
        ShardInput::CirclePolicy {
            session: addr("e1", 1),
            circle: "work".into(),
            presence: Some(true),
            last_seen: None,
        },
    );
    h.commit_all();
    let f = h.frames();
    assert_eq!(presence(&f[1].1), Some(("bob", PresenceStatus::Online, None)));
}

#[test]
fn contact_limit_is_enforced_without_partial_changes() {
    let mut h = Harness::new();
    let many: Vec<ContactEntry> = (0..6).map(|i| ContactEntry { user: format!("u{i}"), circle: None }).collect();
    h.input("bob", ShardInput::Contacts { session: addr("e1", 1), upsert: many, remove: vec![] });
    assert!(h.pending.is_empty());
    assert!(matches!(&h.frames()[0].1, ServerFrame::Error(e) if e.code == ErrorCode::Forbidden));
    assert!(h.state.users[&key("bob")].contacts.is_empty());
}

#[test]
fn idle_users_are_evicted_above_the_cap() {
    let mut h = Harness::new();
    h.state.config.max_cached_users = 10;
    h.open("keep", 1);
    for i in 0..30 {
        h.input(&format!("u{i}"), ShardInput::Ack { up_to: 0, read: false });
    }
    assert!(h.state.cached_users() <= 10);
    assert!(h.state.users.contains_key(&key("keep")), "users with sessions stay");
}

fn absorb(
    batches: Vec<WriteBatch>,
    stored: &mut HashMap<String, Vec<u64>>,
    dedup: &mut HashMap<String, DedupRecord>,
    ids: &mut Vec<String>,
) {
    for b in batches {
        for op in b.ops {
            match op {
                WriteOp::Message { user, message } => {
                    stored.entry(user.user.to_string()).or_default().push(message.seq)
                }
                WriteOp::Dedup { key, record } => {
                    ids.push(key.client_id.to_string());
                    dedup.insert(key.client_id.to_string(), record);
                }
                _ => {}
            }
        }
    }
}

proptest! {
    /// Whatever the interleaving of sends, retries and commits, each
    /// recipient's seqs run 1..=n without gaps or repeats, and every client
    /// id is stored exactly once (the harness plays the store's dedup table).
    #[test]
    fn inbox_has_no_gaps_and_no_duplicates(ops in proptest::collection::vec((0u8..3, 0u8..6, any::<bool>()), 1..80)) {
        let mut h = Harness::new();
        let mut stored: HashMap<String, Vec<u64>> = HashMap::new();
        let mut dedup: HashMap<String, DedupRecord> = HashMap::new();
        let mut ids = Vec::new();
        for (to, id, commit) in ops {
            let id = format!("c-{id}");
            let body = ShardInput::Send { from: "alice".into(), client_id: id.as_str().into(), body: "hi".into(), reply: addr("e1", 1) };
            let found = dedup.get(&id).cloned();
            h.input_with(&format!("r{to}"), body, found);
            if commit {
                let batches = h.commit_all();
                absorb(batches, &mut stored, &mut dedup, &mut ids);
            }
        }
        let batches = h.commit_all();
        absorb(batches, &mut stored, &mut dedup, &mut ids);
        for seqs in stored.values() {
            prop_assert!(seqs.iter().copied().eq(1..=seqs.len() as u64), "{seqs:?}");
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), ids.len(), "a client id was stored twice: {:?}", ids);
    }
}

#[test]
fn sessions_per_user_are_limited() {
    let mut h = Harness::new();
    for s in 1..=3 {
        h.open("bob", s);
    }
    h.input("bob", ShardInput::SessionOpened { session: addr("e1", 4), resume_after: None });
    let f = h.frames();
    assert!(matches!(&f[0], (s, ServerFrame::Error(e)) if s == &[SessionId(4)] && e.code == ErrorCode::RateLimited));
    assert_eq!(h.state.users[&key("bob")].sessions.len(), 3);
}

#[test]
fn a_retry_of_a_failed_in_flight_send_is_not_accepted() {
    let mut h = Harness::new();
    h.send("alice", "bob", "c-1", 1);
    h.send("alice", "bob", "c-1", 1);
    assert_eq!(h.pending.len(), 1);
    let (t, _) = h.pending.pop().unwrap();
    h.state.committed(t, Err(StoreError::Backend("disk".into())));
    let frames = h.frames();
    assert_eq!(frames.len(), 2);
    for (_, f) in frames {
        assert!(matches!(&f, ServerFrame::Error(e) if e.code == ErrorCode::Unavailable), "{f:?}");
    }
}

fn graph_types(b: &WriteBatch) -> Vec<String> {
    b.ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Log { kind: LogKind::Graph, record, .. } => {
                let v: serde_json::Value = serde_json::from_slice(record).unwrap();
                Some(format!("{} {}", v["type"].as_str().unwrap(), v["contact"].as_str().unwrap_or("")))
            }
            _ => None,
        })
        .collect()
}

fn spec(user: &str, circle: Option<&str>, channels: &[&str]) -> iris_envelope::ContactSpec {
    iris_envelope::ContactSpec {
        user: user.into(),
        circle: circle.map(Into::into),
        channels: channels.iter().map(|c| c.to_string()).collect(),
    }
}

#[test]
fn contact_list_replacement_emits_only_the_differences() {
    let mut h = Harness::new();
    let http = addr("http", 77);
    h.input(
        "bob",
        ShardInput::ContactsReplace {
            list: vec![spec("a", None, &[]), spec("b", Some("work"), &["tel:1"])],
            reply: http.clone(),
        },
    );
    let b = h.commit_all();
    assert_eq!(graph_types(&b[0]), vec!["contact.upserted a", "contact.upserted b"]);
    // Same list again: nothing written, nothing emitted.
    h.input(
        "bob",
        ShardInput::ContactsReplace {
            list: vec![spec("a", None, &[]), spec("b", Some("work"), &["tel:1"])],
            reply: http.clone(),
        },
    );
    assert!(h.pending.is_empty());
    // Move b, drop a, add c.
    h.input(
        "bob",
        ShardInput::ContactsReplace {
            list: vec![spec("b", Some("family"), &["tel:1"]), spec("c", None, &[])],
            reply: http.clone(),
        },
    );
    let b = h.commit_all();
    assert_eq!(graph_types(&b[0]), vec!["contact.upserted b", "contact.upserted c", "contact.removed a"]);
    let replies: Vec<_> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Edge(EdgeEnvelope { body: EdgeInput::Reply { reply, .. }, .. }) => Some(reply),
            _ => None,
        })
        .collect();
    assert_eq!(replies.last(), Some(&ServiceReply::ContactsSynced { upserted: 2, removed: 1, count: 2 }));
}

fn event(i: u32, key: &str, ts: i64) -> IngestEvent {
    IngestEvent { index: i, event_type: "click".into(), project: "p".into(), ts, key: key.into(), payload: "{}".into() }
}

fn ingest(h: &mut Harness, events: Vec<IngestEvent>, stored: Vec<bool>) -> Option<(Ticket, WriteBatch)> {
    let tenant: iris_envelope::Tenant = "acme".into();
    let env = ShardEnvelope {
        owner: iris_envelope::stream_owner(&tenant, "s"),
        body: ShardInput::Ingest { stream: "s".into(), events, reply: addr("http", 1) },
    };
    assert!(h.state.needs(&env).user.is_none(), "streams have no user state");
    h.state.handle(1_000, env, Found { dedup: None, events_seen: stored })
}

#[test]
fn ingestion_drops_duplicates_within_batches_in_flight_and_stored() {
    let mut h = Harness::new();
    let w = ingest(
        &mut h,
        vec![event(0, "k1", 3_600_500), event(1, "k1", 3_600_500), event(2, "k2", 10)],
        vec![false, false, false],
    )
    .unwrap();
    let rollups: Vec<_> =
        w.1.ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::RollupAdd { key, by } => Some((key.hour_ms, *by)),
                _ => None,
            })
            .collect();
    assert_eq!(rollups, vec![(3_600_000, 1), (0, 1)], "one increment per new event, in its hour");
    // In flight: k1 again is a duplicate, k3 is stored already.
    assert!(ingest(&mut h, vec![event(0, "k1", 1), event(1, "k3", 1)], vec![false, true]).is_none());
    h.state.committed(w.0, Ok(()));
    let replies: Vec<_> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Edge(EdgeEnvelope { body: EdgeInput::Reply { reply, .. }, .. }) => Some(reply),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies,
        vec![
            ServiceReply::Ingested { accepted: vec![0, 2], duplicates: vec![1] },
            ServiceReply::Ingested { accepted: vec![], duplicates: vec![0, 1] },
        ]
    );
}

#[test]
fn an_edge_that_stops_renewing_its_lease_loses_its_sessions() {
    let mut h = Harness::new();
    h.add_contact("bob", "dave");
    h.open("bob", 1);
    h.input("bob", ShardInput::Subscribe { viewer: "dave".into(), session: addr("e2", 8) });
    h.commit_all();
    h.frames();
    // e2 keeps renewing, e1 does not.
    let alive = |h: &mut Harness, now: Millis| {
        let env = ShardEnvelope { owner: key(""), body: ShardInput::EdgeAlive { edge: EdgeId("e2".into()) } };
        assert!(h.state.needs(&env).user.is_none());
        assert!(h.state.handle(now, env, Found::default()).is_none());
    };
    let opened = h.now;
    alive(&mut h, opened + 500);
    assert!(h.state.handle_timeout(opened + 900, opened + 900).is_none(), "within the lease");
    alive(&mut h, opened + 1_200);
    let (t, batch) = h.state.handle_timeout(opened + 1_500, opened + 1_500).expect("e1's lease expired");
    assert!(matches!(&batch.ops[0], WriteOp::Meta { meta, .. } if meta.last_seen == Some(opened + 1_500)));
    h.state.committed(t, Ok(()));
    let f = h.frames();
    assert_eq!(f.len(), 1, "dave (on the live edge) hears bob went offline: {f:?}");
    assert_eq!(presence(&f[0].1).map(|p| p.1), Some(PresenceStatus::Offline));
    assert!(h.state.users[&key("bob")].sessions.is_empty());
}

#[test]
fn a_shard_behind_on_its_input_ends_no_lease_until_it_has_run_caught_up_for_one() {
    let mut h = Harness::new();
    h.open("bob", 1); // on e1, lease 1 s
    let opened = h.now;
    // The shard falls behind: e1's heartbeats wait in (or were dropped
    // at) its input. Its last renewal is long past, but nothing expires.
    for late in [1_500, 3_000, 6_000] {
        assert!(h.state.handle_timeout(opened + late, opened + 400).is_none(), "behind at +{late}: no lease ends");
    }
    // Caught up again at +6.1 s: one whole lease of grace from the last
    // time it was seen behind, in which a live edge's next beat lands.
    assert!(h.state.handle_timeout(opened + 6_900, opened + 6_900).is_none(), "grace after the backlog");
    let (_, batch) = h.state.handle_timeout(opened + 7_100, opened + 7_100).expect("e1 stayed silent for a lease");
    assert!(matches!(&batch.ops[0], WriteOp::Meta { meta, .. } if meta.last_seen == Some(opened + 7_100)));
    assert!(h.state.users[&key("bob")].sessions.is_empty());
}

#[test]
fn a_shard_behind_by_less_than_a_quarter_lease_still_ends_a_silent_edge_s_sessions() {
    let mut h = Harness::new();
    h.open("bob", 1);
    let opened = h.now;
    assert!(h.state.handle_timeout(opened + 1_100, opened + 1_000).is_some(), "100 ms behind is not a stall");
}

#[test]
fn a_session_whose_opening_cannot_be_written_is_refused() {
    let mut h = Harness::new();
    h.input("bob", ShardInput::SessionOpened { session: addr("e1", 5), resume_after: None });
    let (t, batch) = h.pending.pop().unwrap();
    assert!(matches!(&batch.ops[0], WriteOp::Session { record, .. } if record.sessions == 1 && record.nodes == ["e1"]));
    h.state.committed(t, Err(StoreError::Backend("disk".into())));
    let f = h.frames();
    assert!(
        matches!(&f[0], (s, ServerFrame::Error(e)) if s == &[SessionId(5)] && e.code == ErrorCode::Unavailable),
        "{f:?}"
    );
}

#[test]
fn inputs_count_as_durable_in_order_once_their_writes_commit() {
    let mut h = Harness::new();
    h.send("alice", "bob", "c-1", 1); // input 1 writes (ticket 1)
    h.input("bob", ShardInput::Typing { from: "alice".into(), state: iris_protocol::TypingState::Start }); // input 2, behind ticket 1
    h.send("alice", "bob", "c-2", 1); // input 3 writes (ticket 2)
    assert_eq!(h.state.inputs_durable(), 0);
    let (t1, _) = h.pending.remove(0);
    h.state.committed(t1, Ok(()));
    assert_eq!(h.state.inputs_durable(), 2, "inputs 1 and 2 are durable");
    let (t2, _) = h.pending.remove(0);
    h.state.committed(t2, Ok(()));
    assert_eq!(h.state.inputs_durable(), 3);
    h.input("bob", ShardInput::Typing { from: "alice".into(), state: iris_protocol::TypingState::Stop });
    assert_eq!(h.state.inputs_durable(), 4, "nothing in flight: durable at once");
}

fn resyncs(outputs: &[Output]) -> Vec<(String, ShardId)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Edge(EdgeEnvelope { edge, body: EdgeInput::Resync { shard, .. } }) => {
                Some((edge.0.to_string(), *shard))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_shard_asks_each_edge_it_first_hears_from_to_register_again_once() {
    let mut h = Harness::new();
    h.input("", ShardInput::EdgeAlive { edge: EdgeId("e1".into()) });
    h.input("", ShardInput::EdgeAlive { edge: EdgeId("e1".into()) });
    h.input("bob", ShardInput::SessionOpened { session: addr("e2", 5), resume_after: None });
    h.input("bob", ShardInput::SessionOpened { session: addr("e2", 6), resume_after: None });
    h.commit_all();
    let asked = resyncs(&h.outputs());
    assert_eq!(asked, vec![("e1".to_string(), ShardId(3)), ("e2".to_string(), ShardId(3))], "once per edge");
    // An edge whose lease ran out is asked again when it is heard from.
    let expired = h.state.handle_timeout(h.now + 5_000, h.now + 5_000).expect("bob went offline");
    h.pending.push(expired);
    h.commit_all();
    h.outputs();
    h.now += 5_000;
    h.input("", ShardInput::EdgeAlive { edge: EdgeId("e1".into()) });
    assert_eq!(resyncs(&h.outputs()), vec![("e1".to_string(), ShardId(3))]);
}

#[test]
fn a_resumed_session_gets_what_it_missed_and_live_traffic_without_a_welcome() {
    let mut h = Harness::new();
    // The previous owner stored three messages for bob; this shard starts
    // knowing no session of his.
    h.state.insert_user(key("bob"), UserRecord { head: 3, ..Default::default() });
    h.input("bob", ShardInput::SessionResumed { session: addr("e1", 7), after: 1 });
    h.commit_all();
    let out = h.outputs();
    assert!(
        !out.iter().any(|o| matches!(o, Output::Edge(EdgeEnvelope { body: EdgeInput::Welcome { .. }, .. }))),
        "no second welcome"
    );
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Read(Read::Replay { after: 1, inbox_head: 3, always_synced: false, session, .. }) if *session == addr("e1", 7)
        )),
        "seqs 2 and 3, unasked: {out:?}"
    );
    h.send("alice", "bob", "c-1", 1);
    h.commit_all();
    let frames = h.frames();
    assert!(frames.iter().any(|(to, f)| to == &[SessionId(7)] && matches!(f, ServerFrame::Message(m) if m.seq == 4)));
    // Registering again what is registered changes nothing and writes nothing.
    h.input("bob", ShardInput::SessionResumed { session: addr("e1", 7), after: 4 });
    assert!(h.pending.is_empty(), "nothing to write");
    let again = h.outputs();
    assert!(!again.iter().any(|o| matches!(o, Output::Read(Read::Replay { .. }))), "nothing missed: {again:?}");
}

#[test]
fn outputs_released_together_go_as_one_envelope_per_edge_without_overtaking_a_replay() {
    let frame = |edge: &str, s: u64| {
        Output::Edge(EdgeEnvelope {
            edge: EdgeId(edge.into()),
            body: EdgeInput::Frame {
                to: Recipients::Session(SessionId(s)),
                frame: ServerFrame::Pong(iris_protocol::Ping { ts: Some(s as i64) }),
                droppable: false,
            },
        })
    };
    let replay = Output::Read(Read::Replay {
        user: key("bob"),
        session: addr("e1", 9),
        after: 0,
        limit: 10,
        inbox_head: 0,
        always_synced: true,
    });
    let foreign = |s: u64| {
        Output::Edge(EdgeEnvelope {
            edge: EdgeId::qualified("n1", "elsewhere"),
            body: EdgeInput::Welcome { session: SessionId(s), inbox_head: 0 },
        })
    };
    let out = coalesce_edge_outputs(
        vec![frame("e1", 1), frame("e2", 2), frame("e1", 3), replay.clone(), frame("e1", 4), foreign(5), foreign(6)],
        "r1",
    );
    let sessions = |o: &Output| -> Vec<u64> {
        match o {
            Output::Edge(env) => env
                .body
                .clone()
                .into_parts()
                .iter()
                .map(|p| match p {
                    EdgeInput::Frame { to, .. } => to.as_slice()[0].0,
                    EdgeInput::Welcome { session, .. } => session.0,
                    _ => 0,
                })
                .collect(),
            _ => vec![],
        }
    };
    assert_eq!(out.len(), 6, "{out:?}");
    assert_eq!(sessions(&out[0]), vec![1, 3], "e1's two, in order, in one envelope");
    assert_eq!(sessions(&out[1]), vec![2]);
    assert_eq!(out[2], replay, "the replay is not overtaken");
    assert_eq!(sessions(&out[3]), vec![4]);
    assert_eq!((sessions(&out[4]), sessions(&out[5])), (vec![5], vec![6]), "another region's edge: left alone");
    assert!(matches!(&out[0], Output::Edge(EdgeEnvelope { body: EdgeInput::Batch(_), .. })));
    assert!(
        matches!(&out[1], Output::Edge(EdgeEnvelope { body: EdgeInput::Frame { .. }, .. })),
        "one alone is not wrapped"
    );
}

fn stored(seq: u64, from: &str) -> StoredMessage {
    StoredMessage { seq, msg_id: format!("m{seq}").into(), from: from.into(), body: "hi".into(), ts: 5 }
}

fn frames_of(outputs: &[Output]) -> Vec<ServerFrame> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Edge(EdgeEnvelope { body: EdgeInput::Frame { frame, .. }, .. }) => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_replay_page_read_becomes_its_messages_then_synced_or_a_retryable_error() {
    let mut s = ShardState::new(cfg());
    let read = Read::Replay {
        user: key("bob"),
        session: addr("e1", 7),
        after: 1,
        limit: 2,
        inbox_head: 9,
        always_synced: false,
    };
    assert_eq!(
        s.query(&read),
        Query::Inbox { user: &key("bob"), after: 1, limit: 2, max_bytes: 1 << 16 },
        "the page size is the shard's decision"
    );
    let page = iris_storage::InboxPage { messages: vec![stored(2, "alice"), stored(3, "alice")], more: true };
    let o = s.read_done(read.clone(), ReadResult::Inbox(Ok(page)));
    assert!(o.commit.is_none());
    let f = frames_of(&o.outputs);
    assert!(
        matches!(&f[..], [ServerFrame::Message(a), ServerFrame::Message(b), ServerFrame::Synced(Synced { inbox_head: 9, more: true })]
        if a.seq == 2 && b.seq == 3),
        "{f:?}"
    );
    // An unasked replay that read everything ends silently.
    let page = iris_storage::InboxPage { messages: vec![stored(2, "alice")], more: false };
    assert_eq!(frames_of(&s.read_done(read.clone(), ReadResult::Inbox(Ok(page))).outputs).len(), 1);
    let o = s.read_done(read, ReadResult::Inbox(Err(StoreError::Unavailable("down".into()))));
    assert!(
        matches!(&frames_of(&o.outputs)[..], [ServerFrame::Error(e)] if e.code == ErrorCode::Unavailable),
        "the client is told to retry its sync"
    );
}

#[test]
fn receipts_go_to_each_sender_s_shard_page_by_page() {
    let mut s = ShardState::new(cfg());
    let read = Read::Receipts { user: key("bob"), from: 0, to: 5, state: ReceiptState::Read };
    assert!(matches!(s.query(&read), Query::Range { from: 0, to: 5, limit: RECEIPT_PAGE, .. }));
    let o = s.read_done(read, ReadResult::Range(Ok(vec![stored(1, "alice"), stored(2, "carol")])));
    let owners: Vec<String> =
        o.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Shard(ShardEnvelope {
                    owner,
                    body: ShardInput::Receipt { by, state: ReceiptState::Read, .. },
                }) if &**by == "bob" => Some(owner.user.to_string()),
                _ => None,
            })
            .collect();
    assert_eq!(owners, ["alice", "carol"]);
    // The page ended before `to`: the next page is read from where it ended.
    assert_eq!(
        o.outputs.last(),
        Some(&Output::Read(Read::Receipts { user: key("bob"), from: 2, to: 5, state: ReceiptState::Read }))
    );
    let last = Read::Receipts { user: key("bob"), from: 2, to: 5, state: ReceiptState::Read };
    let o = s.read_done(last.clone(), ReadResult::Range(Ok(vec![stored(5, "alice")])));
    assert!(!o.outputs.iter().any(|o| matches!(o, Output::Read(_))), "done at `to`");
    assert!(s.read_done(last.clone(), ReadResult::Range(Ok(vec![]))).outputs.is_empty());
    assert!(s.read_done(last, ReadResult::Range(Err(StoreError::Unavailable("down".into())))).outputs.is_empty());
}

#[test]
fn pending_receipts_are_delivered_then_forgotten_through_the_ticket_order() {
    let mut h = Harness::new();
    let read = Read::FlushReceipts { user: key("alice"), session: addr("e1", 1) };
    assert_eq!(h.state.query(&read), Query::PendingReceipts { user: &key("alice"), limit: PENDING_RECEIPTS_MAX });
    let pending =
        vec![iris_storage::PendingReceipt { msg_id: "m1".into(), by: "bob".into(), state: ReceiptState::Delivered }];
    let o = h.state.read_done(read.clone(), ReadResult::PendingReceipts(Ok(pending)));
    assert!(matches!(&frames_of(&o.outputs)[..], [ServerFrame::Receipt(r)] if r.msg_id == "m1" && r.by == "bob"));
    let (ticket, batch) = o.commit.expect("forgetting them is a write");
    assert!(
        matches!(&batch.ops[..], [WriteOp::ReceiptsDelivered { user, msg_ids }] if *user == key("alice") && msg_ids.len() == 1)
    );
    // Like any write, it holds back what later inputs release until it commits.
    h.input("carol", ShardInput::SessionOpened { session: addr("e1", 3), resume_after: None });
    h.commit_all();
    assert!(h.outputs().is_empty(), "the welcome waits for the receipts' write: {ticket}");
    h.state.committed(ticket, Ok(()));
    assert!(!h.outputs().is_empty(), "and goes once it is durable");
    // Nothing pending, or unreadable: no write, no frame.
    assert!(h.state.read_done(read.clone(), ReadResult::PendingReceipts(Ok(vec![]))).commit.is_none());
    let o = h.state.read_done(read, ReadResult::PendingReceipts(Err(StoreError::Unavailable("down".into()))));
    assert!(o.outputs.is_empty() && o.commit.is_none(), "kept for next time");
}

#[test]
fn a_failed_load_answers_a_send_with_a_retryable_error_naming_it() {
    let mut s = ShardState::new(cfg());
    let env = ShardEnvelope {
        owner: key("bob"),
        body: ShardInput::Send {
            from: "alice".into(),
            client_id: "c-9".into(),
            body: "hi".into(),
            reply: addr("e1", 1),
        },
    };
    s.load_failed(&env);
    assert_eq!(s.inputs_durable(), 1, "answered: nothing to write, nothing to wait for");
    let out: Vec<Output> = std::iter::from_fn(|| s.poll_output()).collect();
    assert!(
        matches!(&frames_of(&out)[..], [ServerFrame::Error(e)] if e.code == ErrorCode::Unavailable && e.id.as_deref() == Some("c-9")),
        "{out:?}"
    );
}
