//! The frame types of protocol v1, one struct per `type`.
//!
//! Structs derive serde for both codecs. Optional fields that the JSON form
//! omits when absent have hand-written `Serialize` impls that look at
//! `is_human_readable()`: JSON (human readable) leaves `None` out, the binary
//! codec (postcard, not human readable) always writes every field so that it
//! stays a fixed, positional layout.

use crate::body::Body;
use iris_types::{ContactEntry, PresenceStatus, ReceiptState, SetStatus, TypingState};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

/// Client → server: open a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The JWT that names the user (`sub`) and tenant (`tenant`).
    pub token: String,
    /// The client's own name for the device, informational.
    #[serde(default)]
    pub device: Option<String>,
    /// The highest inbox seq the client already stored; replay starts above it.
    #[serde(default)]
    pub resume_after: Option<u64>,
}

/// Client → server: send a message to another user of the same tenant.
///
/// In JSON, `body` is text; a client that sends binary data over JSON puts
/// it in base64 and adds `"encoding":"base64"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The client's id for this send (1–64 characters), the dedup key.
    pub id: String,
    /// The recipient's user name.
    pub to: String,
    /// The message body.
    pub body: Body,
}

#[derive(Deserialize)]
struct SendJson {
    id: String,
    to: String,
    body: String,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
struct SendBinary {
    id: String,
    to: String,
    body: Body,
}

/// Decodes `body` as named by an `encoding` field (JSON only).
fn decode_body<E: serde::de::Error>(body: String, encoding: Option<&str>) -> Result<Body, E> {
    match encoding {
        None | Some("utf8") => Ok(Body::from(body)),
        Some("base64") => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map(Body::from)
                .map_err(|_| E::custom("body is not valid base64"))
        }
        Some(other) => Err(E::custom(format!("unknown encoding {other:?} (use base64)"))),
    }
}

impl Serialize for Send {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let flagged = s.is_human_readable() && !self.body.is_utf8();
        let mut st = s.serialize_struct("Send", if flagged { 4 } else { 3 })?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("to", &self.to)?;
        st.serialize_field("body", &self.body)?;
        if flagged {
            st.serialize_field("encoding", "base64")?;
        }
        st.end()
    }
}

impl<'de> Deserialize<'de> for Send {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let j = SendJson::deserialize(d)?;
            let body = decode_body(j.body, j.encoding.as_deref())?;
            Ok(Send { id: j.id, to: j.to, body })
        } else {
            let b = SendBinary::deserialize(d)?;
            Ok(Send { id: b.id, to: b.to, body: b.body })
        }
    }
}

/// Client → server: cumulative acknowledgement (`ack` and `read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpTo {
    /// Everything up to and including this seq.
    pub up_to: u64,
}

/// Client → server: ask for history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    /// Messages with seq above this (default 0).
    #[serde(default)]
    pub after: Option<u64>,
    /// At most this many messages (default 100, at most 1,000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Client → server: set one's own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPresence {
    /// The status to set.
    pub status: SetStatus,
}

/// Client → server: `subscribe` and `unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Users {
    /// User names in the session's tenant.
    pub users: Vec<String>,
}

/// Client → server: change one's contacts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Contacts {
    /// Contacts to add or move.
    #[serde(default)]
    pub upsert: Vec<ContactEntry>,
    /// Contacts to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Client → server: change what a circle may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CirclePolicy {
    /// The circle's name.
    pub circle: String,
    /// May members see online/away? Absent keeps the current value.
    #[serde(default)]
    pub presence: Option<bool>,
    /// May members see last_seen? Absent keeps the current value.
    #[serde(default)]
    pub last_seen: Option<bool>,
}

/// Client → server: typing notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingTo {
    /// The user being typed to.
    pub to: String,
    /// Start or stop.
    pub state: TypingState,
}

/// `ping` and `pong`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Ping {
    /// The client's timestamp, echoed back.
    #[serde(default)]
    pub ts: Option<i64>,
}

impl Serialize for Ping {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let json = s.is_human_readable();
        let mut st = s.serialize_struct("Ping", usize::from(!json || self.ts.is_some()))?;
        match (json, self.ts) {
            (true, Some(ts)) => st.serialize_field("ts", &ts)?,
            (true, None) => {}
            (false, ts) => st.serialize_field("ts", &ts)?,
        }
        st.end()
    }
}

/// Server → client: the session is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The user, as the token names it.
    pub user: String,
    /// This session's id.
    pub session: String,
    /// The node that holds the session.
    pub node: String,
    /// The node's region.
    pub region: String,
    /// The heartbeat interval; silence for two intervals closes the session.
    pub heartbeat_ms: u64,
    /// The highest seq in the user's inbox.
    pub inbox_head: u64,
}

/// Server → client: a send is durably stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The client's id of the send.
    pub id: String,
    /// The server's message id.
    pub msg_id: String,
    /// Server timestamp, milliseconds since the epoch.
    pub ts: i64,
}

/// Server → client: a message in the user's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The recipient's inbox sequence.
    pub seq: u64,
    /// The server's message id.
    pub msg_id: String,
    /// The sender.
    pub from: String,
    /// The body.
    pub body: Body,
    /// Server timestamp, milliseconds since the epoch.
    pub ts: i64,
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // JSON carries text; a body that is not UTF-8 (sent through the binary
        // codec) goes as base64 with `"encoding":"base64"` beside it.
        let flagged = s.is_human_readable() && !self.body.is_utf8();
        let mut st = s.serialize_struct("Message", if flagged { 6 } else { 5 })?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("msg_id", &self.msg_id)?;
        st.serialize_field("from", &self.from)?;
        st.serialize_field("body", &self.body)?;
        st.serialize_field("ts", &self.ts)?;
        if flagged {
            st.serialize_field("encoding", "base64")?;
        }
        st.end()
    }
}

#[derive(Deserialize)]
struct MessageJson {
    seq: u64,
    msg_id: String,
    from: String,
    body: String,
    ts: i64,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
struct MessageBinary {
    seq: u64,
    msg_id: String,
    from: String,
    body: Body,
    ts: i64,
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let j = MessageJson::deserialize(d)?;
            let body = decode_body(j.body, j.encoding.as_deref())?;
            Ok(Message { seq: j.seq, msg_id: j.msg_id, from: j.from, body, ts: j.ts })
        } else {
            let b = MessageBinary::deserialize(d)?;
            Ok(Message { seq: b.seq, msg_id: b.msg_id, from: b.from, body: b.body, ts: b.ts })
        }
    }
}

/// Server → client: a receipt for a message this user sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The message.
    pub msg_id: String,
    /// The recipient who acknowledged.
    pub by: String,
    /// Delivered or read.
    pub state: ReceiptState,
}

/// Server → client: end of a replay or sync page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    /// The highest seq in the inbox.
    pub inbox_head: u64,
    /// Another page is waiting.
    pub more: bool,
}

/// Server → client: presence of one user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PresenceUpdate {
    /// The user.
    pub user: String,
    /// What the viewer may see.
    pub status: PresenceStatus,
    /// Last seen (ms since the epoch), only with offline and only when allowed.
    #[serde(default)]
    pub last_seen: Option<i64>,
}

impl Serialize for PresenceUpdate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let json = s.is_human_readable();
        let omit = json && self.last_seen.is_none();
        let mut st = s.serialize_struct("PresenceUpdate", if omit { 2 } else { 3 })?;
        st.serialize_field("user", &self.user)?;
        st.serialize_field("status", &self.status)?;
        if !omit {
            if json {
                st.serialize_field("last_seen", &self.last_seen.unwrap_or_default())?;
            } else {
                st.serialize_field("last_seen", &self.last_seen)?;
            }
        }
        st.end()
    }
}

/// Server → client: someone is typing to this user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingFrom {
    /// Who is typing.
    pub from: String,
    /// Start or stop.
    pub state: TypingState,
}

/// Server → client: the contact list changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactsOk {
    /// The number of contacts the owner has after the change.
    pub count: u32,
}

/// Server → client: the circle's policy changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CirclePolicyOk {
    /// The circle.
    pub circle: String,
}

/// Server → client: an error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorFrame {
    /// Machine-readable code.
    pub code: crate::ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// The `id` of the client frame this answers, when it had one.
    #[serde(default)]
    pub id: Option<String>,
}

impl Serialize for ErrorFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let json = s.is_human_readable();
        let omit = json && self.id.is_none();
        let mut st = s.serialize_struct("ErrorFrame", if omit { 2 } else { 3 })?;
        st.serialize_field("code", &self.code)?;
        st.serialize_field("message", &self.message)?;
        if !omit {
            if json {
                st.serialize_field("id", self.id.as_deref().unwrap_or_default())?;
            } else {
                st.serialize_field("id", &self.id)?;
            }
        }
        st.end()
    }
}

impl ErrorFrame {
    /// An error frame with a code, a message and the client frame's id.
    pub fn new(code: crate::ErrorCode, message: impl Into<String>, id: Option<String>) -> Self {
        Self { code, message: message.into(), id }
    }
}
