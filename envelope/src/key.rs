//! Whose state a shard envelope touches (issue 18): a user's, a tenant's
//! event stream's, or no one's (an input addressed to a shard directly).
//!
//! On the wire a key is the [`UserKey`] it always was, so that records
//! written before the type existed read the same: a stream travels as a
//! user whose name is `"\u{1}events:<stream>"` (a control character no user
//! name may hold), a shard-addressed input as the empty user of the empty
//! tenant. Only the encoding knows that; code matches on the variants.

use crate::{Tenant, UserKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// The prefix of a stream's name on the wire.
const STREAM_PREFIX: &str = "\u{1}events:";

/// Whose state a shard envelope touches: what the ring places.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ShardKey {
    /// A user's: sessions, inbox, presence, contacts.
    User(UserKey),
    /// A tenant's event stream (ingestion): its idempotency keys.
    Stream {
        /// The tenant.
        tenant: Tenant,
        /// The stream.
        stream: Arc<str>,
    },
    /// No one's: an input for the shard itself (an edge's lease renewal or
    /// start, the shard's own tick), published to a shard by number.
    Shard,
}

impl ShardKey {
    /// A tenant's event stream.
    pub fn stream(tenant: &Tenant, stream: &str) -> Self {
        ShardKey::Stream { tenant: tenant.clone(), stream: stream.into() }
    }

    /// The user, when it is a user's key.
    pub fn user(&self) -> Option<&UserKey> {
        match self {
            ShardKey::User(u) => Some(u),
            _ => None,
        }
    }

    /// The user's or the stream's name (empty for a shard's own key): for
    /// logs and tests.
    pub fn name(&self) -> &str {
        match self {
            ShardKey::User(u) => &u.user,
            ShardKey::Stream { stream, .. } => stream,
            ShardKey::Shard => "",
        }
    }

    /// The tenant, unless it is a shard's own key.
    pub fn tenant(&self) -> Option<&Tenant> {
        match self {
            ShardKey::User(u) => Some(&u.tenant),
            ShardKey::Stream { tenant, .. } => Some(tenant),
            ShardKey::Shard => None,
        }
    }

    /// The bytes the consistent-hash ring places (those of its wire form:
    /// every key lands where it always did).
    pub fn shard_key(&self) -> Vec<u8> {
        match self {
            ShardKey::User(u) => u.shard_key(),
            other => other.wire().shard_key(),
        }
    }

    /// The key as it travels.
    fn wire(&self) -> UserKey {
        match self {
            ShardKey::User(u) => u.clone(),
            ShardKey::Stream { tenant, stream } => {
                UserKey { tenant: tenant.clone(), user: format!("{STREAM_PREFIX}{stream}").into() }
            }
            ShardKey::Shard => UserKey::new("", ""),
        }
    }

    /// The key a wire form stands for.
    fn from_wire(u: UserKey) -> Self {
        if let Some(stream) = u.user.strip_prefix(STREAM_PREFIX) {
            return ShardKey::Stream { stream: stream.into(), tenant: u.tenant };
        }
        if u.tenant.is_empty() && u.user.is_empty() {
            return ShardKey::Shard;
        }
        ShardKey::User(u)
    }
}

impl From<UserKey> for ShardKey {
    fn from(u: UserKey) -> Self {
        ShardKey::User(u)
    }
}

impl fmt::Debug for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardKey::User(u) => write!(f, "{u:?}"),
            ShardKey::Stream { tenant, stream } => write!(f, "{tenant}/stream {stream}"),
            ShardKey::Shard => f.write_str("(the shard)"),
        }
    }
}

impl Serialize for ShardKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ShardKey::User(u) => u.serialize(s),
            other => other.wire().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ShardKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        UserKey::deserialize(d).map(ShardKey::from_wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_key_travels_as_the_user_key_it_used_to_be_and_comes_back_the_same() {
        let acme: Tenant = "acme".into();
        let cases = [
            (ShardKey::User(UserKey::new("acme", "bob")), UserKey::new("acme", "bob")),
            (ShardKey::stream(&acme, "clicks"), UserKey::new("acme", "\u{1}events:clicks")),
            (ShardKey::Shard, UserKey::new("", "")),
        ];
        for (key, wire) in cases {
            let bytes = postcard::to_stdvec(&key).unwrap();
            assert_eq!(bytes, postcard::to_stdvec(&wire).unwrap(), "{key:?}");
            assert_eq!(key.shard_key(), wire.shard_key(), "{key:?} lands where it did");
            assert_eq!(postcard::from_bytes::<ShardKey>(&bytes).unwrap(), key);
        }
    }

    #[test]
    fn a_key_says_whose_it_is() {
        let acme: Tenant = "acme".into();
        let bob = ShardKey::from(UserKey::new("acme", "bob"));
        assert_eq!(bob.user(), Some(&UserKey::new("acme", "bob")));
        assert_eq!(bob.tenant(), Some(&acme));
        let stream = ShardKey::stream(&acme, "clicks");
        assert_eq!((stream.user(), stream.tenant()), (None, Some(&acme)));
        assert_eq!((ShardKey::Shard.user(), ShardKey::Shard.tenant()), (None, None));
        // An empty user of a real tenant is a user's key, not the shard's.
        let odd = ShardKey::from_wire(UserKey::new("acme", ""));
        assert!(matches!(odd, ShardKey::User(_)));
    }
}
