//! The clients: users of two tenants chatting with retries by id, moving to
//! the other edge when one fails and resuming after the last seq they saw;
//! a second device per active user that only receives and catches up at
//! the end; a watcher per tenant that follows everyone's presence (every active user
//! has it as a contact); probes that open a fresh session on each edge every
//! second; and, at the end, a full read of every inbox. Everything they do
//! and see is recorded.

use crate::history::{Recorder, What};
use iris_client::{Client, Encoding, ServerFrame};
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Who takes part.
#[derive(Debug, Clone)]
pub struct Population {
    /// Tenants.
    pub tenants: Vec<String>,
    /// Users of each tenant who send and receive.
    pub active: usize,
    /// Users of each tenant who only receive, and connect only at the end.
    pub offline: usize,
}

impl Population {
    /// Every (tenant, user).
    pub fn everyone(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for t in &self.tenants {
            for i in 0..self.active {
                v.push((t.clone(), format!("u{i}")));
            }
            for i in 0..self.offline {
                v.push((t.clone(), format!("off{i}")));
            }
        }
        v
    }
}

/// How a client reaches the region.
#[derive(Clone)]
pub struct Access {
    /// The edges' names and WebSocket URLs.
    pub edges: Vec<(String, String)>,
    /// Signs users' tokens.
    pub signer: Arc<iris_auth::Signer>,
}

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The user who follows everyone's presence in each tenant.
pub const WATCHER: &str = "watch";
/// How often the watcher pings (it sends nothing else; two heartbeat
/// intervals of silence would end its session).
const WATCHER_PING: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a session on one edge, recording the attempt and its outcome.
async fn hello(
    rec: &Recorder,
    access: &Access,
    edge: usize,
    tenant: &str,
    user: &str,
    resume_after: Option<u64>,
) -> Option<Client> {
    let (name, url) = &access.edges[edge];
    rec.record(What::Hello { tenant: tenant.into(), user: user.into(), edge: name.clone() });
    let started = Instant::now();
    let token = access.signer.token(tenant, user, 3_600).expect("tokens sign");
    let result = tokio::time::timeout(HELLO_TIMEOUT, Client::hello(url, &token, resume_after, Encoding::Json)).await;
    let took_ms = started.elapsed().as_millis() as u64;
    let (client, error) = match result {
        Ok(Ok((c, _))) => (Some(c), None),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(_) => (None, Some(format!("no welcome within {HELLO_TIMEOUT:?}"))),
    };
    rec.record(What::HelloDone {
        tenant: tenant.into(),
        user: user.into(),
        edge: name.clone(),
        ok: client.is_some(),
        took_ms,
        error,
    });
    client
}

/// Records a message the sending device (0) got, and moves its resume
/// point (the highest seq seen).
fn record_delivery(rec: &Recorder, tenant: &str, user: &str, m: &iris_protocol::Message, last_seq: &mut u64) {
    *last_seq = (*last_seq).max(m.seq);
    record_on(rec, tenant, user, 0, m)
}

/// Records a message that one of `user`'s devices got.
fn record_on(rec: &Recorder, tenant: &str, user: &str, device: u8, m: &iris_protocol::Message) {
    rec.record(What::Delivered {
        tenant: tenant.into(),
        user: user.into(),
        seq: m.seq,
        msg_id: m.msg_id.clone(),
        from: m.from.clone(),
        body: m.body.as_str().unwrap_or_default().to_owned(),
        device,
    });
}

/// Whether a session opens on `edge` (then closed again).
pub async fn opens(rec: &Recorder, access: &Access, edge: usize, tenant: &str, user: &str) -> bool {
    match hello(rec, access, edge, tenant, user, None).await {
        Some(c) => {
            let _closed = c.close().await;
            true
        }
        None => false,
    }
}

/// One active user until `until`: sends one message at a time to a random
/// user of its tenant, retrying with the same id until it is accepted.
pub async fn chatter(
    rec: Recorder,
    access: Access,
    pop: Population,
    tenant: String,
    me: usize,
    seed: u64,
    until: Instant,
) {
    let user = format!("u{me}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut edge = rng.random_range(0..access.edges.len());
    let peers: Vec<String> = (0..pop.active)
        .filter(|i| *i != me)
        .map(|i| format!("u{i}"))
        .chain((0..pop.offline).map(|i| format!("off{i}")))
        .collect();
    let mut last_seq = 0u64;
    let mut conn: Option<Client> = None;
    let mut n = 1u64;
    let mut to = peers[rng.random_range(0..peers.len())].clone();
    // Whether the watcher is among this user's contacts yet (stored).
    let mut watched = false;
    while Instant::now() < until {
        let Some(c) = conn.as_mut() else {
            // Resume after what was seen; a first session asks for nothing.
            let resume = (last_seq > 0).then_some(last_seq);
            conn = hello(&rec, &access, edge, &tenant, &user, resume).await;
            if conn.is_none() {
                edge = (edge + 1) % access.edges.len();
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
            }
            continue;
        };
        if !watched {
            // The default circle lets its members see presence.
            let frame = format!(r#"{{"type":"contacts","upsert":[{{"user":"{WATCHER}"}}]}}"#);
            match add_contact(c, &frame, &rec, &tenant, &user, &mut last_seq).await {
                Some(true) => {
                    rec.record(What::ContactsStored { tenant: tenant.clone(), user: user.clone() });
                    watched = true;
                }
                Some(false) => tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await,
                None => {
                    conn = None;
                    edge = (edge + 1) % access.edges.len();
                }
            }
            continue;
        }
        let id = format!("{user}-{n}");
        let body = format!("{tenant}/{user}#{n}");
        rec.record(What::Send {
            tenant: tenant.clone(),
            from: user.clone(),
            to: to.clone(),
            id: id.clone(),
            body: body.clone(),
        });
        if c.send(&id, &to, &body).await.is_err() {
            conn = None;
            edge = (edge + 1) % access.edges.len();
            continue;
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let answered = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match c.recv_timeout(left).await {
                Ok(ServerFrame::Accepted(a)) if a.id == id => {
                    rec.record(What::Accepted {
                        tenant: tenant.clone(),
                        from: user.clone(),
                        id: id.clone(),
                        msg_id: a.msg_id,
                    });
                    break Some(true);
                }
                Ok(ServerFrame::Error(e)) if e.id.as_deref() == Some(id.as_str()) => break Some(false),
                Ok(ServerFrame::Message(m)) => record_delivery(&rec, &tenant, &user, &m, &mut last_seq),
                Ok(_) => {}
                Err(iris_client::ClientError::Timeout(_)) => break Some(false),
                Err(_) => break None,
            }
        };
        match answered {
            Some(true) => {
                n += 1;
                to = peers[rng.random_range(0..peers.len())].clone();
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
            }
            // Refused or unanswered: the same id again, after a pause.
            Some(false) => tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await,
            // The connection broke: the other edge, the same id.
            None => {
                conn = None;
                edge = (edge + 1) % access.edges.len();
            }
        }
    }
    if let Some(c) = conn {
        // Best effort: the run is over.
        let _closed = c.close().await;
    }
}

/// Sends a `contacts` frame and waits for its `contacts_ok` (recording the
/// messages that come meanwhile): `Some(true)` stored, `Some(false)` refused
/// or unanswered, `None` the connection broke.
async fn add_contact(
    c: &mut Client,
    frame: &str,
    rec: &Recorder,
    tenant: &str,
    user: &str,
    last_seq: &mut u64,
) -> Option<bool> {
    if c.send_text(frame).await.is_err() {
        return None;
    }
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        match c.recv_timeout(deadline.saturating_duration_since(Instant::now())).await {
            Ok(ServerFrame::ContactsOk(_)) => return Some(true),
            Ok(ServerFrame::Error(_)) => return Some(false),
            Ok(ServerFrame::Message(m)) => record_delivery(rec, tenant, user, &m, last_seq),
            Ok(_) => {}
            Err(iris_client::ClientError::Timeout(_)) => return Some(false),
            Err(_) => return None,
        }
    }
}

/// A tenant's watcher until `until`: follows the presence of every user of
/// the tenant, recording each frame; subscribes again on every new session
/// (moving to the other edge when one fails). At the end, if it is still
/// connected, it records that its view is final ([`What::PresenceEnd`]).
pub async fn watcher(rec: Recorder, access: Access, pop: Population, tenant: String, until: Instant) {
    let everyone: Vec<String> = pop.everyone().into_iter().filter(|(t, _)| *t == tenant).map(|(_, u)| u).collect();
    let names: Vec<&str> = everyone.iter().map(String::as_str).collect();
    let mut edge = 0;
    while Instant::now() < until {
        let Some(mut c) = hello(&rec, &access, edge, &tenant, WATCHER, None).await else {
            edge = (edge + 1) % access.edges.len();
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        if c.subscribe(&names).await.is_err() {
            edge = (edge + 1) % access.edges.len();
            continue;
        }
        let since = rec.now();
        let mut ping = tokio::time::interval(WATCHER_PING);
        let broke = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break false,
                _ = ping.tick() => {
                    if c.ping(rec.now() as i64).await.is_err() {
                        break true;
                    }
                }
                f = c.recv() => match f {
                    Ok(ServerFrame::Presence(p)) => rec.record(What::Presence {
                        tenant: tenant.clone(),
                        user: p.user,
                        status: format!("{:?}", p.status).to_lowercase(),
                    }),
                    Ok(_) => {}
                    Err(_) => break true,
                },
            }
        };
        if !broke {
            rec.record(What::PresenceEnd { tenant: tenant.clone(), since });
            let _closed = c.close().await;
            return;
        }
        edge = (edge + 1) % access.edges.len();
    }
}

/// The device number of a user's second device (its first, 0, sends).
const SECOND_DEVICE: u8 = 1;

/// A device's resume point, kept as docs/protocol.md ("Writing a client")
/// says: the highest seq up to which it has every message (a live message
/// may overtake a replay or a page), and the highest it has received.
#[derive(Debug, Default)]
struct ResumePoint {
    /// Every seq up to here has been received.
    point: u64,
    /// Seqs received above `point`.
    above: std::collections::BTreeSet<u64>,
}

impl ResumePoint {
    fn got(&mut self, seq: u64) {
        if seq > self.point {
            self.above.insert(seq);
        }
        while self.above.remove(&(self.point + 1)) {
            self.point += 1;
        }
    }

    /// The highest seq received (where the next `sync` page starts).
    fn highest(&self) -> u64 {
        self.above.last().copied().unwrap_or(self.point).max(self.point)
    }
}

/// What a device's session brought before it ended.
enum DeviceFrame {
    /// The replay or a page is complete (`synced` with `more: false`).
    UpToDate,
    /// Anything else (recorded, or paged on).
    Other,
}

/// Handles one frame a device got: records messages, pages on while
/// `more`; `Err` when the session broke.
async fn device_frame(
    c: &mut Client,
    f: Result<ServerFrame, iris_client::ClientError>,
    rec: &Recorder,
    tenant: &str,
    user: &str,
    at: &mut ResumePoint,
) -> Result<DeviceFrame, ()> {
    match f {
        Ok(ServerFrame::Message(m)) => {
            record_on(rec, tenant, user, SECOND_DEVICE, &m);
            at.got(m.seq);
            Ok(DeviceFrame::Other)
        }
        Ok(ServerFrame::Synced(s)) if s.more => {
            c.sync(at.highest(), Some(1_000)).await.map_err(drop)?;
            Ok(DeviceFrame::Other)
        }
        Ok(ServerFrame::Synced(_)) => Ok(DeviceFrame::UpToDate),
        Ok(_) => Ok(DeviceFrame::Other),
        Err(_) => Err(()),
    }
}

/// A user's second device until `until`: a session of its own on an edge
/// drawn from `seed` (the next one when a session fails or breaks) that
/// only receives, resuming from its resume point on every session and
/// paging while `more`, pinging as the watcher does. At `catch_up_at`
/// (once every sender has stopped) it resumes once more and pages to the
/// end, and records that it caught up ([`What::DeviceEnd`]).
pub async fn second_device(
    rec: Recorder,
    access: Access,
    tenant: String,
    me: usize,
    seed: u64,
    until: Instant,
    catch_up_at: Instant,
) {
    let user = format!("u{me}");
    rec.record(What::DeviceStart { tenant: tenant.clone(), user: user.clone(), device: SECOND_DEVICE });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut edge = rng.random_range(0..access.edges.len());
    let mut at = ResumePoint::default();
    while Instant::now() < until {
        // Every session resumes (the first after 0: the whole inbox).
        let Some(mut c) = hello(&rec, &access, edge, &tenant, &user, Some(at.point)).await else {
            edge = (edge + 1) % access.edges.len();
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
            continue;
        };
        let mut ping = tokio::time::interval(WATCHER_PING);
        let broke = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break false,
                _ = ping.tick() => {
                    if c.ping(rec.now() as i64).await.is_err() {
                        break true;
                    }
                }
                f = c.recv() => if device_frame(&mut c, f, &rec, &tenant, &user, &mut at).await.is_err() {
                    break true;
                },
            }
        };
        let _closed = c.close().await;
        if broke {
            edge = (edge + 1) % access.edges.len();
        }
    }
    tokio::time::sleep_until(catch_up_at).await;
    let from = rec.now();
    // The region is settled by now; a minute is for one that is not.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(mut c) = hello(&rec, &access, edge, &tenant, &user, Some(at.point)).await else {
            edge = (edge + 1) % access.edges.len();
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        // Paged to the end, or the session failed (then another edge).
        let caught_up = loop {
            let f = c.recv_timeout(ANSWER_TIMEOUT).await;
            match device_frame(&mut c, f, &rec, &tenant, &user, &mut at).await {
                Ok(DeviceFrame::UpToDate) => break true,
                Ok(DeviceFrame::Other) => {}
                Err(()) => break false,
            }
        };
        let _closed = c.close().await;
        if caught_up {
            rec.record(What::DeviceEnd { tenant, user, device: SECOND_DEVICE, from });
            return;
        }
        edge = (edge + 1) % access.edges.len();
    }
}

/// Opens (and closes) a fresh session on one edge every second until
/// `until`: the liveness record of that edge.
pub async fn prober(rec: Recorder, access: Access, edge: usize, until: Instant) {
    let user = format!("probe-{}", access.edges[edge].0);
    while Instant::now() < until {
        let next = Instant::now() + Duration::from_secs(1);
        if let Some(c) = hello(&rec, &access, edge, "ta", &user, None).await {
            let _closed = c.close().await;
        }
        tokio::time::sleep_until(next.min(until)).await;
    }
}

/// Reads one user's whole inbox (any edge that answers, until `deadline`).
pub async fn read_inbox(rec: &Recorder, access: &Access, tenant: &str, user: &str, deadline: Instant) -> bool {
    let mut edge = 0;
    while Instant::now() < deadline {
        let Some(mut c) = hello(rec, access, edge, tenant, user, None).await else {
            edge = (edge + 1) % access.edges.len();
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let mut msgs = Vec::new();
        let mut after = 0u64;
        let complete = 'pages: loop {
            if c.sync(after, Some(1_000)).await.is_err() {
                break 'pages false;
            }
            loop {
                match c.recv_timeout(ANSWER_TIMEOUT).await {
                    Ok(ServerFrame::Message(m)) => {
                        after = after.max(m.seq);
                        msgs.push((m.seq, m.msg_id, m.from, m.body.as_str().unwrap_or_default().to_owned()));
                    }
                    Ok(ServerFrame::Synced(s)) if s.more => continue 'pages,
                    Ok(ServerFrame::Synced(_)) => break 'pages true,
                    Ok(_) => {}
                    Err(_) => break 'pages false,
                }
            }
        };
        let _closed = c.close().await;
        if complete {
            // A live message may have come between the pages: keep each
            // seq once, in seq order.
            msgs.sort_by_key(|m| m.0);
            msgs.dedup_by_key(|m| m.0);
            rec.record(What::Inbox { tenant: tenant.into(), user: user.into(), msgs });
            return true;
        }
        edge = (edge + 1) % access.edges.len();
    }
    false
}
