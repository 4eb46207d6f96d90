//! Message bodies: opaque bytes, text in JSON, raw in the binary codec.

use base64::Engine;
use bytes::Bytes;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A message body. Cheap to clone (reference counted).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Body(pub Bytes);

impl Body {
    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the body is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the bytes are valid UTF-8 (and so travel as plain JSON text).
    pub fn is_utf8(&self) -> bool {
        std::str::from_utf8(&self.0).is_ok()
    }

    /// The body as text, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => write!(f, "Body({s:?})"),
            None => write!(f, "Body({} bytes)", self.0.len()),
        }
    }
}

impl From<&str> for Body {
    fn from(s: &str) -> Self {
        Body(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body(Bytes::from(s.into_bytes()))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body(Bytes::from(v))
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            match self.as_str() {
                Some(text) => s.serialize_str(text),
                None => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0)),
            }
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Body, E> {
        Ok(Body::from(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Body, E> {
        Ok(Body::from(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Body, E> {
        Ok(Body(Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Body, E> {
        Ok(Body::from(v))
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        if d.is_human_readable() { d.deserialize_str(BodyVisitor) } else { d.deserialize_byte_buf(BodyVisitor) }
    }
}
