//! What a shard tells a session, in the domain's words (ADR 0020).
//!
//! Core, the router and the HTTP front end build and read [`Notice`]s; only
//! the edge turns one into a client frame (`iris-protocol`'s `ServerFrame`),
//! once per envelope, whatever the session's encoding. A notice has the same
//! fields as the frame it becomes, in the same order, and the variants stand
//! at the frame's variant indices: a notice encodes, in an envelope, to
//! exactly the bytes the frame encoded to before notices existed, so nodes of
//! either version read each other's records (`envelope/tests/version1.rs`
//! pins this with records written by the earlier code). Two places, the
//! frames `welcome` and `pong`, are never a shard's to send; they are held by
//! variants that can be neither built nor decoded. New notices are appended.

use bytes::Bytes;
use iris_types::{ErrorCode, PresenceStatus, ReceiptState, TypingState};
use serde::{Deserialize, Serialize};

/// What a shard tells a session (or an HTTP request waiting on a shard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Notice {
    /// The place of the frame `welcome`: the edge writes it from
    /// [`crate::EdgeInput::Welcome`]. Never built, never decoded.
    WelcomeSlot(FrameOnly),
    /// A send is durably stored (`accepted`).
    Accepted {
        /// The client's id of the send.
        id: String,
        /// The server's message id.
        msg_id: String,
        /// When it was stored, ms since the epoch.
        ts: i64,
    },
    /// A message in the recipient's inbox (`message`).
    Message {
        /// The recipient's inbox seq.
        seq: u64,
        /// The server's message id.
        msg_id: String,
        /// The sender.
        from: String,
        /// The body, opaque bytes.
        body: Bytes,
        /// When it was stored, ms since the epoch.
        ts: i64,
    },
    /// A receipt for a message the session's user sent (`receipt`).
    Receipt {
        /// The message.
        msg_id: String,
        /// Who acknowledged it.
        by: String,
        /// Delivered or read.
        state: ReceiptState,
    },
    /// The end of a replay or sync page (`synced`).
    Synced {
        /// The inbox head.
        inbox_head: u64,
        /// Another page is waiting.
        more: bool,
    },
    /// What the session's user may see of another user (`presence`).
    Presence {
        /// The user seen.
        user: String,
        /// The status shown.
        status: PresenceStatus,
        /// Last seen, ms since the epoch: only offline, only when allowed.
        last_seen: Option<i64>,
    },
    /// Someone is typing to the session's user (`typing`).
    Typing {
        /// Who types.
        from: String,
        /// Start or stop.
        state: TypingState,
    },
    /// The place of the frame `pong`: an edge answers pings itself. Never
    /// built, never decoded.
    PongSlot(FrameOnly),
    /// A request was refused or failed (`error`).
    Refused {
        /// What kind of failure.
        code: ErrorCode,
        /// Why, for people.
        message: String,
        /// The client's id of the refused frame, when it had one.
        id: Option<String>,
    },
    /// The contact list changed (`contacts_ok`).
    ContactsOk {
        /// Contacts after the change.
        count: u32,
    },
    /// A circle's policy changed (`circle_policy_ok`).
    CirclePolicyOk {
        /// The circle.
        circle: String,
    },
    /// [`Notice::Presence`] marked with the owner of the shard that told it
    /// (ADR 0021): an edge writes a session no word about a user from an
    /// earlier owner than one whose word it already wrote, so a zombie's
    /// answer from stale memory cannot land over its successor's. Becomes
    /// the same `presence` frame.
    MarkedPresence {
        /// The user seen.
        user: String,
        /// The status shown.
        status: PresenceStatus,
        /// Last seen, ms since the epoch: only offline, only when allowed.
        last_seen: Option<i64>,
        /// Who told it.
        owner: OwnerMark,
    },
}

/// The owner of a shard, as an edge compares two presence words about one
/// user: its region (a stable hash of the name) and its owner epoch (the
/// store's claim, ADR 0021; 0 on backends that do not fence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OwnerMark {
    /// FNV-1a of the region's name: words of two regions (a user whose home
    /// moved) are not ordered by epoch.
    pub region: u32,
    /// The owner epoch, at most `u32::MAX`.
    pub epoch: u32,
}

impl OwnerMark {
    /// The mark of the owner of epoch `epoch` of a shard in `region`.
    pub fn new(region: &str, epoch: u64) -> Self {
        let mut h: u32 = 0x811c_9dc5;
        for b in region.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        OwnerMark { region: h, epoch: u32::try_from(epoch).unwrap_or(u32::MAX) }
    }

    /// Whether a word from `self` comes from an earlier owner of the same
    /// shard than one from `seen`.
    pub fn is_before(self, seen: OwnerMark) -> bool {
        self.region == seen.region && self.epoch < seen.epoch
    }
}

/// A type without values: it holds the places of client frames that are
/// never notices, so that no such notice can be built, and decoding one
/// fails as a malformed envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameOnly {}

impl Notice {
    /// A refusal with a code, a message and the client frame's id.
    pub fn refused(code: ErrorCode, message: impl Into<String>, id: Option<String>) -> Self {
        Notice::Refused { code, message: message.into(), id }
    }

    /// The notice's kind: the `type` of the frame it becomes.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Accepted { .. } => "accepted",
            Notice::Message { .. } => "message",
            Notice::Receipt { .. } => "receipt",
            Notice::Synced { .. } => "synced",
            Notice::Presence { .. } | Notice::MarkedPresence { .. } => "presence",
            Notice::Typing { .. } => "typing",
            Notice::Refused { .. } => "error",
            Notice::ContactsOk { .. } => "contacts_ok",
            Notice::CirclePolicyOk { .. } => "circle_policy_ok",
            Notice::WelcomeSlot(never) | Notice::PongSlot(never) => match *never {},
        }
    }
}
