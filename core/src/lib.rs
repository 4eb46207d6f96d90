//! Iris core: shard state machines (`state`) and the actix actors that run
//! them (`actor`). A user belongs to exactly one shard, chosen by the ring.

pub mod actor;
pub mod state;


pub use state::{Output, ShardConfig, ShardState, DEFAULT_CIRCLE};
pub use actor::{start_shards, ShardHost, ShardsConfig};
