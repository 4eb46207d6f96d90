//! QUIC's length-prefixed framing (`protocol/src/framing.rs`), with the
//! stream read in pieces of any size: the frames that come out are exactly
//! those a plain parse of the stream finds, none is over the bound, and a
//! length over the bound is refused before anything is buffered for it.
#![no_main]

use iris_protocol::framing::{Assembled, FrameAssembler};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 * 1024;

/// The frames of `stream` by a plain reading, and whether it ends with a
/// length over the bound.
fn reference(mut stream: &[u8]) -> (Vec<Vec<u8>>, Option<usize>) {
    let mut frames = Vec::new();
    while stream.len() >= 4 {
        let len = u32::from_be_bytes(stream[..4].try_into().unwrap()) as usize;
        if len > MAX {
            return (frames, Some(len));
        }
        if stream.len() < 4 + len {
            break;
        }
        frames.push(stream[4..4 + len].to_vec());
        stream = &stream[4 + len..];
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, stream)) = data.split_first() else { return };
    let (want, too_large) = reference(stream);
    let mut a = FrameAssembler::new(MAX);
    let mut got = Vec::new();
    let mut refused = None;
    let mut rest = stream;
    let step = usize::from(k) + 1;
    'read: while !rest.is_empty() {
        let buf = a.buf();
        assert!(!buf.is_empty());
        let n = buf.len().min(rest.len()).min(step);
        buf[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        match a.filled(n) {
            Assembled::Need => {}
            Assembled::Frame(f) => {
                assert!(f.len() <= MAX);
                got.push(f);
            }
            Assembled::TooLarge(len) => {
                refused = Some(len);
                break 'read;
            }
        }
    }
    assert_eq!(got, want);
    assert_eq!(refused, too_large);
});
