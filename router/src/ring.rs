//! The consistent-hash ring that places users on shards.
//!
//! Stability matters more than anything here: every node, and every future
//! version, must place a user on the same shard, or a user's state would be
//! owned twice. So the ring pins its hash: SipHash-2-4 with zero keys (the
//! `hashring` crate's default builder, a specified algorithm), fed only
//! explicit little-endian bytes through our own `Hash` impls, never a std
//! `Hash` impl whose byte stream is not a promise. `RING_VERSION` names this
//! scheme; golden vectors in the tests fail if any of it changes.

use hashring::HashRing;
use iris_envelope::{ShardId, ShardKey, UserKey};
use std::hash::{Hash, Hasher};

/// The placement scheme's version. Bump only with a migration plan.
pub const RING_VERSION: u32 = 1;

/// Virtual nodes per shard: enough for an even spread at 8–1024 shards.
pub const VNODES_PER_SHARD: u32 = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VNode {
    shard: u32,
    replica: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(b"iris-vnode");
        state.write(&self.shard.to_le_bytes());
        state.write(&self.replica.to_le_bytes());
    }
}

struct KeyBytes<'a>(&'a [u8]);

impl Hash for KeyBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// Maps shard keys (tenant + user) to shards.
pub struct Ring {
    ring: HashRing<VNode>,
    shards: u32,
}

impl Ring {
    /// A ring over shards `0..shards`.
    ///
    /// # Panics
    /// When `shards` is zero (configuration validation rejects it first).
    pub fn new(shards: u32) -> Self {
        assert!(shards > 0, "a ring needs at least one shard");
        let mut ring = HashRing::new();
        let mut nodes = Vec::with_capacity((shards * VNODES_PER_SHARD) as usize);
        for shard in 0..shards {
            for replica in 0..VNODES_PER_SHARD {
                nodes.push(VNode { shard, replica });
            }
        }
        ring.batch_add(nodes);
        Self { ring, shards }
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard that owns a raw shard key.
    pub fn shard_for_key(&self, key: &[u8]) -> ShardId {
        let node = self.ring.get(&KeyBytes(key)).expect("ring is never empty");
        ShardId(node.shard)
    }

    /// The shard that owns a user.
    pub fn shard_of(&self, user: &UserKey) -> ShardId {
        self.shard_for_key(&user.shard_key())
    }

    /// The shard that owns a shard envelope's key (a user's or a
    /// stream's; [`ShardKey::Shard`] lands where the empty user would).
    pub fn shard_of_key(&self, key: &ShardKey) -> ShardId {
        self.shard_for_key(&key.shard_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Golden vectors: these placements are a compatibility promise.
    #[test]
    fn golden_vectors_v1() {
        let ring = Ring::new(64);
        let got: Vec<(&str, &str, u32)> = [
            ("acme", "alice"),
            ("acme", "bob"),
            ("acme", "carol"),
            ("globex", "alice"),
            ("t", "u"),
            ("tenant-with-a-long-name", "user@example.com"),
        ]
        .iter()
        .map(|(t, u)| (*t, *u, ring.shard_of(&UserKey::new(*t, *u)).0))
        .collect();
        assert_eq!(RING_VERSION, 1);
        assert_eq!(got, GOLDEN_64);
        let ring8 = Ring::new(8);
        assert_eq!(ring8.shard_of(&UserKey::new("acme", "alice")).0, GOLDEN_8_ALICE);
    }

    const GOLDEN_64: [(&str, &str, u32); 6] = [
        ("acme", "alice", 29),
        ("acme", "bob", 21),
        ("acme", "carol", 12),
        ("globex", "alice", 29),
        ("t", "u", 55),
        ("tenant-with-a-long-name", "user@example.com", 18),
    ];
    const GOLDEN_8_ALICE: u32 = 7;

    #[test]
    fn spread_is_even_enough() {
        let ring = Ring::new(16);
        let mut counts = [0u32; 16];
        for i in 0..32_000 {
            counts[ring.shard_of(&UserKey::new("t", format!("user-{i}"))).0 as usize] += 1;
        }
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        // 2,000 expected per shard; 128 vnodes keep every shard within ±35 %.
        assert!(min > 1_300 && max < 2_700, "uneven spread: {counts:?}");
    }

    proptest! {
        #[test]
        fn adding_a_shard_moves_keys_only_to_it(shards in 2u32..40, users in proptest::collection::vec("[a-z0-9]{1,16}", 1..200)) {
            let before = Ring::new(shards);
            let after = Ring::new(shards + 1);
            for u in users {
                let k = UserKey::new("t", u.as_str());
                let (a, b) = (before.shard_of(&k), after.shard_of(&k));
                prop_assert!(a == b || b.0 == shards, "{u} moved from {a:?} to {b:?}");
            }
        }

        #[test]
        fn placement_is_deterministic(t in "[a-z]{1,8}", u in "[a-z0-9]{1,16}") {
            let k = UserKey::new(t.as_str(), u.as_str());
            prop_assert_eq!(Ring::new(32).shard_of(&k), Ring::new(32).shard_of(&k));
        }
    }
}
