use super::*;

use iris_envelope::SessionId;

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
        mark_presence: true,
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
        let mut state = ShardState::new(cfg());
        state.claimed(1);
        Self { state, now: 1_000, pending: Vec::new() }
    }

    fn input(&mut self, owner: &str, body: ShardInput) {
        self.input_with(owner, body, None)
    }

    fn input_with(&mut self, owner: &str, body: ShardInput, dedup: Option<DedupRecord>) {
        let env = ShardEnvelope { owner: key(owner).into(), body, trace: None };
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

    fn notices(&mut self) -> Vec<(Vec<SessionId>, Notice)> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Edge(EdgeEnvelope { body: EdgeInput::Notice { to, notice, .. }, .. }) => {
                    Some((to.as_slice().to_vec(), notice))
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

    /// `viewer` (a contact of `owner`, online on e1/`s`) follows `owner` on
    /// session `at`; everything is durable and every notice taken.
    fn followed(&mut self, owner: &str, s: u64, viewer: &str, at: SessionAddr) {
        self.add_contact(owner, viewer);
        self.open(owner, s);
        self.input(owner, ShardInput::Subscribe { viewer: viewer.into(), session: at });
        self.commit_all();
        self.notices();
    }

    /// The newest pending write fails.
    fn fail_last(&mut self) {
        let (t, _) = self.pending.pop().expect("a write pending");
        self.state.committed(t, Err(StoreError::Backend("timeout".into())));
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

fn presence(n: &Notice) -> Option<(&str, PresenceStatus, Option<Millis>)> {
    match n {
        Notice::Presence { user, status, last_seen } | Notice::MarkedPresence { user, status, last_seen, .. } => {
            Some((user, *status, *last_seen))
        }
        _ => None,
    }
}

fn stored(seq: u64, from: &str) -> StoredMessage {
    StoredMessage { seq, msg_id: format!("m{seq}").into(), from: from.into(), body: "hi".into(), ts: 5 }
}

fn notices_of(outputs: &[Output]) -> Vec<Notice> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Edge(EdgeEnvelope { body: EdgeInput::Notice { notice, .. }, .. }) => Some(notice.clone()),
            _ => None,
        })
        .collect()
}

mod bars;
mod contacts;
mod inbox;
mod ingest;
mod ordering;
mod presence;
mod receipts;
mod sessions;

/// ADR 0023: the context of a traced input goes with every edge output it
/// causes (and with the batch those are merged into), never with another
/// input's.
mod traces {
    use super::*;
    use iris_envelope::TraceParent;

    #[test]
    fn an_input_s_trace_goes_with_the_outputs_it_causes_and_no_others() {
        let mut h = Harness::new();
        h.open("bob", 2);
        let t = TraceParent::new([1; 16], [2; 8]).unwrap();
        let send =
            |id: &str, reply| ShardInput::Send { from: "alice".into(), client_id: id.into(), body: "hi".into(), reply };
        let env = ShardEnvelope { owner: key("bob").into(), body: send("traced", addr("e2", 1)), trace: Some(t) };
        h.now += 1;
        if let Some(w) = h.state.handle(h.now, env, Found { dedup: None, events_seen: vec![] }) {
            h.pending.push(w);
        }
        h.input("bob", send("plain", addr("e1", 3)));
        h.commit_all();
        let outputs = h.outputs();
        let mut seen = Vec::new();
        for o in &outputs {
            let Output::Edge(EdgeEnvelope { body: EdgeInput::Notice { notice, .. }, traces, .. }) = o else { continue };
            let what = match notice {
                Notice::Accepted { id, .. } => format!("accepted {id}"),
                Notice::Message { seq, .. } => format!("message {seq}"),
                other => format!("{other:?}"),
            };
            seen.push((what, traces.clone()));
        }
        assert_eq!(
            seen,
            vec![
                ("accepted traced".to_owned(), vec![t]),
                ("message 1".to_owned(), vec![t]),
                ("accepted plain".to_owned(), vec![]),
                ("message 2".to_owned(), vec![]),
            ],
        );
        // Merged per edge: the batch for e1 holds a traced output, so it
        // carries the trace; the one for e2 too.
        let merged = coalesce_edge_outputs(outputs, &cfg().region);
        for o in &merged {
            if let Output::Edge(env) = o {
                assert_eq!(env.traces, vec![t], "{env:?}");
            }
        }
    }
}
