//! The vocabulary both sides of Iris name: the client contract (`iris-protocol`
//! re-exports every item here, unchanged on the wire) and the envelopes between
//! actors, nodes and regions (`iris-envelope`). Small value types only — no
//! frames, no codecs — so that core, router and storage speak the domain
//! without depending on the client protocol (ADR 0020).

use serde::{Deserialize, Serialize};

/// The most messages one replay or sync page carries.
pub const MAX_PAGE_LIMIT: u32 = 1_000;

/// Error codes clients see in `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing, bad or expired token, or a frame before `hello`.
    Unauthorized,
    /// A frame that decodes but is not valid.
    BadFrame,
    /// A frame whose `type` is unknown.
    UnknownType,
    /// A body or frame over the limit.
    TooLarge,
    /// Too many frames, sessions or subscriptions.
    RateLimited,
    /// Not allowed.
    Forbidden,
    /// The server cannot serve this now (overload, storage down); retry.
    Unavailable,
    /// A server bug.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A status a user sets for themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetStatus {
    /// Visible as online.
    Online,
    /// Visible as away until the last session ends.
    Away,
    /// Looks offline to everyone; remembered durably.
    Invisible,
}

/// One contact in a `contacts` upsert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactEntry {
    /// The contact's user name.
    pub user: String,
    /// The circle to put the contact in (default `contacts`).
    #[serde(default)]
    pub circle: Option<String>,
}

/// Typing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypingState {
    /// The user started typing.
    Start,
    /// The user stopped typing.
    Stop,
}

/// Delivery state named by a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptState {
    /// The recipient's client stored the message.
    Delivered,
    /// The recipient read the message.
    Read,
}

/// Status as others see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// At least one session, status online.
    Online,
    /// At least one session, status away.
    Away,
    /// No session, invisible, or not visible to this viewer.
    Offline,
}
