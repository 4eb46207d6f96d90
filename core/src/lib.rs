//! Iris core: shard state machines (`state`) and the actix actors that run
//! them (`actor`). A user belongs to exactly one shard, chosen by the ring.

pub mod actor;
pub mod commits;
pub mod feed;
pub mod rules;
pub mod state;

pub use actor::{ShardHost, ShardsConfig, SharedInputClock, start_shards};
pub use feed::run_feed;
pub use state::{DEFAULT_CIRCLE, Output, ShardConfig, ShardState};
