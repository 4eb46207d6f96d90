//! Byte keys shared by key-value backends. Names never contain NUL (the edge
//! rejects control characters), so NUL separates the parts; seqs are
//! big-endian so that key order is seq order.

use crate::{DedupKey, EventKey, StoreError};
use iris_envelope::{InboxSeq, UserKey};
use serde::Serialize;

pub(crate) fn user_prefix(user: &UserKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.tenant.len() + user.user.len() + 2);
    k.extend_from_slice(user.tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(user.user.as_bytes());
    k.push(0);
    k
}

/// The prefix of every key of a tenant's users (`tenant NUL`).
pub(crate) fn user_prefix_of_tenant(tenant: &str) -> Vec<u8> {
    let mut k = tenant.as_bytes().to_vec();
    k.push(0);
    k
}

pub(crate) fn user_key(user: &UserKey) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.pop();
    k
}

pub(crate) fn inbox_key(user: &UserKey, seq: InboxSeq) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn child_key(user: &UserKey, child: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(child.as_bytes());
    k
}

/// A dedup record's key: the sender's, then the client id.
pub(crate) fn dedup_key(k: &DedupKey) -> Vec<u8> {
    child_key(&k.sender, &k.client_id)
}

/// Event dedup keys share the dedup keyspace (and its expiry sweep) under a
/// prefix byte that no tenant name can start with.
pub(crate) fn event_key(k: &EventKey) -> Vec<u8> {
    let mut v = vec![1u8];
    for part in [&k.tenant, &k.stream] {
        v.extend_from_slice(part.as_bytes());
        v.push(0);
    }
    v.extend_from_slice(k.key.as_bytes());
    v
}

pub(crate) fn seq_of_inbox_key(key: &[u8]) -> Option<InboxSeq> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

pub(crate) fn child_of_key<'a>(prefix: &[u8], key: &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(key.strip_prefix(prefix)?).ok()
}

/// Version byte in front of every stored record, so that a later layout can
/// be told apart from this one.
pub(crate) const RECORD_VERSION: u8 = 1;

pub(crate) fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_extend(v, vec![RECORD_VERSION]).expect("records always serialize")
}

pub(crate) fn dec<T: serde::de::DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T, StoreError> {
    match b.split_first() {
        Some((&RECORD_VERSION, rest)) => postcard::from_bytes(rest).map_err(|_| StoreError::Corrupt(what)),
        _ => Err(StoreError::Corrupt(what)),
    }
}

/// A user's meta, as written today or before `status_at` was appended to
/// it (those bytes end one field early, so they never read as today's).
pub(crate) fn dec_meta(b: &[u8]) -> Result<crate::UserMeta, StoreError> {
    dec("meta", b).or_else(|_| dec::<crate::UserMetaV1>("meta", b).map(Into::into))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserMeta;

    #[test]
    fn meta_written_before_its_status_stamp_still_reads() {
        // What Redis and the embedded store hold from before ADR 0032:
        // acked, read, invisible_since, last_seen.
        let v1 = enc(&(3u64, 2u64, Some(5i64), Some(9i64)));
        let want = UserMeta { acked: 3, read: 2, invisible_since: Some(5), last_seen: Some(9), status_at: None };
        assert_eq!(dec_meta(&v1).unwrap(), want);
        let today = UserMeta { status_at: Some(11), ..want };
        assert_eq!(dec_meta(&enc(&today)).unwrap(), today);
        assert!(matches!(dec_meta(&enc(&(3u64,))), Err(StoreError::Corrupt("meta"))));
        assert!(matches!(dec_meta(&[]), Err(StoreError::Corrupt("meta"))));
    }
}
