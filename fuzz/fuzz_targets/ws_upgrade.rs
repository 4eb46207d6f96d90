//! The WebSocket upgrade request parser: never panics, accepts only what it
//! has read (`consumed` within the input), and every refusal is an HTTP
//! response.
#![no_main]

use iris_edge::wsproto::{Upgrade, parse_upgrade};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_upgrade(data, "/v1/ws") {
        Upgrade::Incomplete => {}
        Upgrade::Accept { response, consumed } => {
            assert!(consumed <= data.len());
            assert!(response.starts_with(b"HTTP/1.1 101 "));
        }
        Upgrade::Refuse { response } => assert!(response.starts_with(b"HTTP/1.1 ")),
    }
});
