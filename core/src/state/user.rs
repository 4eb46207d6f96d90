//! A user's state as a shard holds it: what others may see of them (their
//! view for each viewer, by circle policy), their subscribers, and their
//! contacts, with the writes and graph events a change of contacts makes.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct View {
    pub(super) status: PresenceStatus,
    pub(super) last_seen: Option<Millis>,
}

pub(super) const HIDDEN: View = View { status: PresenceStatus::Offline, last_seen: None };

/// No view a subscriber can be told: its `last` when it must be told again.
pub(super) const UNTOLD: View = View { status: PresenceStatus::Offline, last_seen: Some(Millis::MIN) };

#[derive(Debug)]
pub(super) struct Subscriber {
    pub(super) viewer: Arc<str>,
    pub(super) session: SessionAddr,
    pub(super) last: View,
}

#[derive(Debug)]
pub(super) struct UserState {
    pub(super) head: InboxSeq,
    pub(super) meta: UserMeta,
    pub(super) contacts: BTreeMap<String, Contact>,
    pub(super) identities: Vec<String>,
    pub(super) policies: BTreeMap<String, CirclePolicy>,
    pub(super) sessions: Vec<SessionAddr>,
    pub(super) away: bool,
    pub(super) subscribers: Vec<Subscriber>,
    pub(super) last_ticket: Ticket,
    /// Durable fields may be ahead of storage (after a failed commit):
    /// reload them before the next use; sessions and subscribers stay.
    pub(super) stale: bool,
}

impl UserState {
    pub(super) fn from_record(r: UserRecord) -> Self {
        Self {
            head: r.head,
            meta: r.meta,
            contacts: r.contacts,
            identities: r.identities,
            policies: r.policies,
            sessions: Vec::new(),
            away: false,
            subscribers: Vec::new(),
            last_ticket: 0,
            stale: false,
        }
    }

    pub(super) fn refresh(&mut self, r: UserRecord) {
        self.head = r.head;
        // The metadata (status, acks, `last_seen`) is kept: the owning
        // shard is its one writer and it changes here first, so memory is
        // not behind the store (but for a previous owner's late write);
        // after a failed write it is ahead, and the reset's repair writes it
        // again (ADR 0004 point 7). `r.meta` is not taken.
        self.contacts = r.contacts;
        self.identities = r.identities;
        self.policies = r.policies;
        self.stale = false;
    }

    pub(super) fn policy(&self, circle: &str) -> CirclePolicy {
        match self.policies.get(circle) {
            Some(p) => *p,
            None if circle == DEFAULT_CIRCLE => CirclePolicy { presence: true, last_seen: true },
            None => CirclePolicy::default(),
        }
    }

    /// What `viewer` may see of this user (named `me`).
    pub(super) fn view_for(&self, me: &str, viewer: &str) -> View {
        let (presence, last_seen) = if viewer == me {
            (true, true)
        } else {
            match self.contacts.get(viewer) {
                Some(contact) => {
                    let p = self.policy(&contact.circle);
                    (p.presence, p.presence && p.last_seen)
                }
                None => (false, false),
            }
        };
        if !presence {
            return HIDDEN;
        }
        let (status, seen) = if let Some(since) = self.meta.invisible_since {
            (PresenceStatus::Offline, Some(since))
        } else if self.sessions.is_empty() {
            (PresenceStatus::Offline, self.meta.last_seen)
        } else if self.away {
            (PresenceStatus::Away, None)
        } else {
            (PresenceStatus::Online, None)
        };
        View { status, last_seen: if status == PresenceStatus::Offline && last_seen { seen } else { None } }
    }
}

pub(super) fn graph_log(owner: &UserKey, record: &serde_json::Value) -> WriteOp {
    WriteOp::Log { kind: LogKind::Graph, tenant: owner.tenant.clone(), record: record.to_string().into_bytes().into() }
}

/// Puts a contact in place; writes it and its `contact.upserted` event only
/// if it changed. Returns whether it did.
pub(super) fn upsert_contact(
    owner: &UserKey,
    user: &mut UserState,
    now: Millis,
    name: String,
    contact: Contact,
    batch: &mut WriteBatch,
) -> bool {
    if user.contacts.get(&name) == Some(&contact) {
        return false;
    }
    let record = serde_json::json!({
        "v": GRAPH_EVENT_VERSION, "type": "contact.upserted", "tenant": &*owner.tenant, "owner": &*owner.user,
        "contact": &name, "circle": &contact.circle, "channels": &contact.channels, "ts": now,
    });
    batch.push(graph_log(owner, &record));
    batch.push(WriteOp::Contact { owner: owner.clone(), contact: name.clone(), record: contact.clone() });
    user.contacts.insert(name, contact);
    true
}

/// Removes a contact with its `contact.removed` event, if it was there.
pub(super) fn remove_contact(owner: &UserKey, user: &mut UserState, now: Millis, name: String, batch: &mut WriteBatch) {
    if user.contacts.remove(&name).is_some() {
        let record = serde_json::json!({
            "v": GRAPH_EVENT_VERSION, "type": "contact.removed", "tenant": &*owner.tenant, "owner": &*owner.user,
            "contact": &name, "ts": now,
        });
        batch.push(graph_log(owner, &record));
        batch.push(WriteOp::ContactRemoved { owner: owner.clone(), contact: name });
    }
}

pub(super) fn plan_contacts(
    user: &UserState,
    upsert: &[ContactEntry],
    remove: &[String],
    max: usize,
) -> Result<(), String> {
    use std::collections::HashSet;
    let removed: HashSet<&str> = remove.iter().map(String::as_str).collect();
    let mut added: HashSet<&str> = HashSet::new();
    for e in upsert {
        if !user.contacts.contains_key(&e.user) && !removed.contains(e.user.as_str()) {
            added.insert(&e.user);
        }
    }
    let gone = removed.iter().filter(|r| user.contacts.contains_key(**r)).count();
    let count = user.contacts.len() + added.len() - gone;
    if count > max { Err(format!("at most {max} contacts")) } else { Ok(()) }
}
