//! The two codecs. JSON: the frame struct's own fields with `"type"` spliced
//! in front. Binary: `[BINARY_VERSION][type code][postcard(struct)]`.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The version byte every binary-codec frame starts with.
pub const BINARY_VERSION: u8 = 1;

/// Which codec a connection speaks (decided by its first frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON text frames.
    Json,
    /// The compact binary codec.
    Binary,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON (or not a binary-codec frame) at all.
    #[error("frame is not {0}")]
    Garbage(&'static str),
    /// Decodes, but is not a valid frame of its type.
    #[error("bad frame: {reason}")]
    BadFrame {
        /// What is wrong, for the error frame's message.
        reason: String,
        /// The frame's `id`, if it had a string one.
        id: Option<String>,
    },
    /// A frame whose `type` the protocol does not know.
    #[error("unknown type {ty:?}")]
    UnknownType {
        /// The type as sent.
        ty: String,
        /// The frame's `id`, if it had a string one.
        id: Option<String>,
    },
}

impl DecodeError {
    /// The frame's `id`, when the frame had one.
    pub fn id(&self) -> Option<&str> {
        match self {
            DecodeError::Garbage(_) => None,
            DecodeError::BadFrame { id, .. } | DecodeError::UnknownType { id, .. } => id.as_deref(),
        }
    }
}

#[derive(Deserialize)]
struct PeekRaw<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

/// The `type` and `id` of a JSON frame, read before the frame itself.
pub(crate) struct Peek<'a> {
    pub ty: Cow<'a, str>,
    pub id: Option<String>,
}

pub(crate) fn peek_json(bytes: &[u8]) -> Result<Peek<'_>, DecodeError> {
    // serde would read a short JSON array positionally; frames are objects.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return match serde_json::from_slice::<IgnoredAny>(bytes) {
            Ok(_) => Err(DecodeError::BadFrame { reason: "a frame is a JSON object".into(), id: None }),
            Err(_) => Err(DecodeError::Garbage("JSON")),
        };
    }
    match serde_json::from_slice::<PeekRaw<'_>>(bytes) {
        Ok(raw) => {
            let id = match raw.id {
                Some(serde_json::Value::String(s)) => Some(s),
                _ => None,
            };
            match raw.ty {
                Some(ty) => Ok(Peek { ty, id }),
                None => Err(DecodeError::BadFrame { reason: "missing \"type\"".into(), id }),
            }
        }
        Err(e) => {
            if serde_json::from_slice::<IgnoredAny>(bytes).is_ok() {
                Err(DecodeError::BadFrame { reason: format!("not a frame object: {e}"), id: None })
            } else {
                Err(DecodeError::Garbage("JSON"))
            }
        }
    }
}

pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8], peek: &Peek<'_>) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes)
        .map_err(|e| DecodeError::BadFrame { reason: format!("{} frame: {e}", peek.ty), id: peek.id.clone() })
}

pub(crate) fn encode_json<T: Serialize>(tag: &'static str, frame: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(tag.as_bytes());
    out.push(b'"');
    let at = out.len();
    // Serializing plain structs of strings and numbers into a Vec cannot fail.
    serde_json::to_writer(&mut out, frame).expect("frame structs always serialize");
    debug_assert_eq!(out[at], b'{');
    if out.len() == at + 2 {
        // The struct had no fields: `{}` becomes the closing brace alone.
        out.truncate(at);
        out.push(b'}');
    } else {
        out[at] = b',';
    }
    out
}

pub(crate) fn encode_binary<T: Serialize>(code: u8, frame: &T) -> Vec<u8> {
    let out = vec![BINARY_VERSION, code];
    postcard::to_extend(frame, out).expect("frame structs always serialize")
}

pub(crate) fn split_binary(bytes: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    match bytes {
        [BINARY_VERSION, code, rest @ ..] => Ok((*code, rest)),
        [_, _, ..] => Err(DecodeError::Garbage("a binary-codec v1 frame")),
        _ => Err(DecodeError::Garbage("a binary-codec frame")),
    }
}

/// A payload behind a valid header that does not decode is a bad frame of
/// that type (as with JSON), not garbage: only a frame without a valid
/// header counts towards closing the session.
pub(crate) fn decode_binary<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(DecodeError::BadFrame { reason: format!("{} trailing bytes", rest.len()), id: None }),
        Err(e) => Err(DecodeError::BadFrame { reason: format!("payload does not decode: {e}"), id: None }),
    }
}
