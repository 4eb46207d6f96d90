//! Iris core: shard state machines and their actors.
