//! The WebSocket frame decoder (`edge/src/wsproto.rs`) on raw bytes, pushed
//! in chunks of any size: it never panics, every event it yields is within
//! the bounds (a message of at most `MAX` bytes, text that is UTF-8, a ping
//! of at most 125 bytes, a close code a peer may send), and an error names
//! a close code.
#![no_main]

use iris_edge::wsproto::{Event, Reader};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size (1..=256); the rest is the stream.
    let Some((&k, stream)) = data.split_first() else { return };
    let mut reader = Reader::new(MAX);
    for piece in stream.chunks(usize::from(k) + 1) {
        reader.push(piece);
        loop {
            match reader.next_event() {
                Ok(Some(event)) => check(&event),
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                    return;
                }
            }
        }
    }
});

fn check(event: &Event) {
    match event {
        Event::Text(t) => {
            assert!(t.len() <= MAX);
            assert!(std::str::from_utf8(t).is_ok());
        }
        Event::Binary(b) => assert!(b.len() <= MAX),
        Event::Ping(p) => assert!(p.len() <= 125),
        Event::Close(Some(code)) => assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)),
        Event::Close(None) | Event::Pong => {}
    }
}
