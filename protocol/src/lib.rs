//! Iris client wire protocol v1: frames, the JSON codec and the binary codec.
//!
//! Both codecs encode exactly the same frames. JSON frames are objects with a
//! `"type"` field. Binary frames are `[version = 1][type code][postcard body]`;
//! the byte layout is documented in `docs/protocol-binary.md`.

mod body;
mod codec;
mod frames;
pub mod framing;
#[cfg(feature = "quic")]
pub mod quic;

pub use body::Body;
pub use codec::{BINARY_VERSION, DecodeError, Encoding};
pub use frames::*;
pub use iris_types::{ContactEntry, ErrorCode, MAX_PAGE_LIMIT, PresenceStatus, ReceiptState, SetStatus, TypingState};

use serde::{Deserialize, Serialize};

/// The ALPN protocol of Iris over QUIC.
pub const ALPN: &[u8] = b"iris/1";

/// The most characters a client id (`send.id`) may have.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Default page size for `sync`.
pub const DEFAULT_SYNC_LIMIT: u32 = 100;

/// Declares a frame enum and its codecs from one table of
/// `Variant(Struct) = "json type", binary code;` rows, so the two codecs can
/// never disagree about which types exist.
macro_rules! frame_enum {
    ($(#[$meta:meta])* $name:ident { $( $(#[$vmeta:meta])* $variant:ident($ty:ty) = $tag:literal, $code:literal; )* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* $variant($ty), )*
        }

        impl $name {
            /// The frame's `type` on the wire.
            pub fn type_name(&self) -> &'static str {
                match self { $( Self::$variant(_) => $tag, )* }
            }

            /// The frame's type code in the binary codec.
            pub fn type_code(&self) -> u8 {
                match self { $( Self::$variant(_) => $code, )* }
            }

            /// Encodes the frame as one JSON object.
            pub fn to_json(&self) -> Vec<u8> {
                match self { $( Self::$variant(f) => codec::encode_json($tag, f), )* }
            }

            /// Encodes the frame in the binary codec.
            pub fn to_binary(&self) -> Vec<u8> {
                match self { $( Self::$variant(f) => codec::encode_binary($code, f), )* }
            }

            /// Encodes the frame in the given encoding.
            pub fn encode(&self, encoding: Encoding) -> Vec<u8> {
                match encoding {
                    Encoding::Json => self.to_json(),
                    Encoding::Binary => self.to_binary(),
                }
            }

            /// Decodes one JSON frame.
            pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
                let peek = codec::peek_json(bytes)?;
                match peek.ty.as_ref() {
                    $( $tag => codec::decode_json::<$ty>(bytes, &peek).map(Self::$variant), )*
                    other => Err(DecodeError::UnknownType { ty: other.to_owned(), id: peek.id }),
                }
            }

            /// Decodes one binary-codec frame.
            pub fn from_binary(bytes: &[u8]) -> Result<Self, DecodeError> {
                let (code, payload) = codec::split_binary(bytes)?;
                match code {
                    $( $code => codec::decode_binary::<$ty>(payload).map(Self::$variant), )*
                    other => Err(DecodeError::UnknownType { ty: format!("code {other}"), id: None }),
                }
            }

            /// Decodes one frame in the given encoding.
            pub fn decode(bytes: &[u8], encoding: Encoding) -> Result<Self, DecodeError> {
                match encoding {
                    Encoding::Json => Self::from_json(bytes),
                    Encoding::Binary => Self::from_binary(bytes),
                }
            }
        }
    };
}

frame_enum! {
    /// Frames a client sends.
    ClientFrame {
        /// `hello`
        Hello(Hello) = "hello", 1;
        /// `send`
        Send(Send) = "send", 2;
        /// `ack`
        Ack(UpTo) = "ack", 3;
        /// `read`
        Read(UpTo) = "read", 4;
        /// `sync`
        Sync(Sync) = "sync", 5;
        /// `presence`
        Presence(SetPresence) = "presence", 6;
        /// `subscribe`
        Subscribe(Users) = "subscribe", 7;
        /// `unsubscribe`
        Unsubscribe(Users) = "unsubscribe", 8;
        /// `contacts`
        Contacts(Contacts) = "contacts", 9;
        /// `circle_policy`
        CirclePolicy(CirclePolicy) = "circle_policy", 10;
        /// `typing`
        Typing(TypingTo) = "typing", 11;
        /// `ping`
        Ping(Ping) = "ping", 12;
    }
}

frame_enum! {
    /// Frames the server sends.
    ServerFrame {
        /// `welcome`
        Welcome(Welcome) = "welcome", 64;
        /// `accepted`
        Accepted(Accepted) = "accepted", 65;
        /// `message`
        Message(Message) = "message", 66;
        /// `receipt`
        Receipt(Receipt) = "receipt", 67;
        /// `synced`
        Synced(Synced) = "synced", 68;
        /// `presence`
        Presence(PresenceUpdate) = "presence", 69;
        /// `typing`
        Typing(TypingFrom) = "typing", 70;
        /// `pong`
        Pong(Ping) = "pong", 71;
        /// `error`
        Error(ErrorFrame) = "error", 72;
        /// `contacts_ok`
        ContactsOk(ContactsOk) = "contacts_ok", 73;
        /// `circle_policy_ok`
        CirclePolicyOk(CirclePolicyOk) = "circle_policy_ok", 74;
    }
}

impl ClientFrame {
    /// The `id` field of the frame, when it has one (echoed in errors).
    pub fn id(&self) -> Option<&str> {
        match self {
            ClientFrame::Send(s) => Some(&s.id),
            _ => None,
        }
    }
}

impl ServerFrame {
    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, id: Option<String>) -> Self {
        ServerFrame::Error(ErrorFrame::new(code, message, id))
    }
}

#[cfg(test)]
mod tests;
