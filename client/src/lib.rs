//! Rust client for the Iris protocol, used by tests, benchmarks and chaos tools.
