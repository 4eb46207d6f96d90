//! What every client saw, as JSON lines: the run's record, kept with its
//! report and checked offline (`chaos check FILE`).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// One thing a client did or saw, at `t` ms since the run started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the run started.
    pub t: u64,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// The kinds of event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum What {
    /// A client asked an edge for a session.
    Hello {
        /// Tenant.
        tenant: String,
        /// User.
        user: String,
        /// The edge asked.
        edge: String,
    },
    /// The session opened (`ok`) or was refused or failed (`error`), after
    /// `took_ms`.
    HelloDone {
        /// Tenant.
        tenant: String,
        /// User.
        user: String,
        /// The edge asked.
        edge: String,
        /// Whether a welcome came.
        ok: bool,
        /// How long it took.
        took_ms: u64,
        /// Why not, when not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A send (first try or retry with the same id).
    Send {
        /// Tenant.
        tenant: String,
        /// Sender.
        from: String,
        /// Recipient.
        to: String,
        /// The client id.
        id: String,
        /// The body (names the send: `tenant/from/id`).
        body: String,
    },
    /// The server accepted a send.
    Accepted {
        /// Tenant.
        tenant: String,
        /// Sender.
        from: String,
        /// The client id.
        id: String,
        /// The message id it got.
        msg_id: String,
    },
    /// A message reached a client (live or by replay or sync).
    Delivered {
        /// Tenant of the session.
        tenant: String,
        /// The recipient.
        user: String,
        /// Its seq.
        seq: u64,
        /// Its id.
        msg_id: String,
        /// Its sender.
        from: String,
        /// Its body.
        body: String,
        /// Which of the recipient's devices got it: 0 the one that sends,
        /// 1 its second device (which only receives).
        #[serde(default, skip_serializing_if = "is_zero")]
        device: u8,
    },
    /// A user's second device started (a [`What::DeviceEnd`] is due for it).
    DeviceStart {
        /// Tenant.
        tenant: String,
        /// The user.
        user: String,
        /// The device (1).
        device: u8,
    },
    /// A user's second device has caught up at the end: it resumed after
    /// its resume point, once every sender had stopped, and paged to the
    /// end of its inbox. Every message accepted before `from` must be
    /// among what it got.
    DeviceEnd {
        /// Tenant.
        tenant: String,
        /// The user.
        user: String,
        /// The device (1).
        device: u8,
        /// When its last catch-up began (ms since the run started).
        from: u64,
    },
    /// The final read: a recipient's whole inbox, read after the faults
    /// healed; `msgs` are (seq, msg_id, from, body).
    Inbox {
        /// Tenant.
        tenant: String,
        /// The recipient.
        user: String,
        /// Every stored message, in the order read.
        msgs: Vec<(u64, String, String, String)>,
    },
    /// A presence frame reached a tenant's watcher (the user `watch`,
    /// whom every active user has as a contact): what it may see of `user`.
    Presence {
        /// Tenant.
        tenant: String,
        /// Whose presence.
        user: String,
        /// `online`, `away` or `offline`.
        status: String,
    },
    /// The watcher's view, as it stands now, is its final one: it was
    /// connected and subscribed from `since` (ms since the run started)
    /// until now.
    PresenceEnd {
        /// Tenant.
        tenant: String,
        /// When its last session subscribed.
        since: u64,
    },
    /// A user's `contacts_ok` came: the watcher is among its contacts,
    /// stored (one `contact.upserted` record is due in the graph log).
    ContactsStored {
        /// Tenant.
        tenant: String,
        /// The contacts' owner.
        user: String,
    },
    /// A batch of events posted (first try or retry, the same keys).
    Ingest {
        /// Tenant.
        tenant: String,
        /// The batch's number (its keys: `service::batch_keys`).
        batch: u64,
    },
    /// A batch answered 202.
    Ingested {
        /// Tenant.
        tenant: String,
        /// The batch.
        batch: u64,
        /// Events the answer counted as accepted.
        accepted: u64,
        /// ... and as duplicates.
        duplicates: u64,
    },
    /// The final read of a tenant's events log: every record's key.
    EventsLog {
        /// Tenant.
        tenant: String,
        /// The idempotency keys, in log order.
        keys: Vec<String>,
    },
    /// The final read of a tenant's graph log: every `contact.upserted`
    /// record as (owner, contact).
    GraphLog {
        /// Tenant.
        tenant: String,
        /// (owner, contact), in log order.
        upserts: Vec<(String, String)>,
    },
    /// The nemesis started a fault.
    FaultStart {
        /// The fault's description.
        fault: String,
    },
    /// The nemesis ended a fault.
    FaultEnd {
        /// The fault's description.
        fault: String,
    },
    /// Every fault has ended: from here on the region must be live.
    Healed,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// A history being recorded, shared by every task of the run. Bounded by
/// the run: one line per event, written as it happens.
#[derive(Clone)]
pub struct Recorder {
    start: std::time::Instant,
    out: Arc<Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl Recorder {
    /// Records into `path` (created anew).
    pub fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(Self { start: std::time::Instant::now(), out: Arc::new(Mutex::new(std::io::BufWriter::new(file))) })
    }

    /// Milliseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Appends an event. A history that cannot be written fails the run,
    /// loudly, rather than checking an incomplete record.
    pub fn record(&self, what: What) {
        let line = serde_json::to_string(&Event { t: self.now(), what }).expect("events serialize");
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(out, "{line}").expect("the history file is writable");
    }

    /// Flushes what is buffered.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).flush()?;
        Ok(())
    }
}

/// Reads a recorded history.
pub fn read(path: &std::path::Path) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1)))
        .collect()
}
