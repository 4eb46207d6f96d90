//! The client protocol's two codecs (JSON and binary), on what clients send
//! and on what servers send (which the Rust client decodes): decoding never
//! panics, and a frame that decodes encodes to bytes that decode to the
//! same frame, in either codec.
#![no_main]

use iris_protocol::{ClientFrame, Encoding, ServerFrame};
use libfuzzer_sys::fuzz_target;

fn other(e: Encoding) -> Encoding {
    match e {
        Encoding::Json => Encoding::Binary,
        Encoding::Binary => Encoding::Json,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else { return };
    let enc = if sel & 1 == 0 { Encoding::Json } else { Encoding::Binary };
    if let Ok(frame) = ClientFrame::decode(bytes, enc) {
        for e in [enc, other(enc)] {
            let again = ClientFrame::decode(&frame.encode(e), e).expect("what the codec encodes, it decodes");
            assert_eq!(again, frame, "{e:?}");
        }
    }
    if let Ok(frame) = ServerFrame::decode(bytes, enc) {
        for e in [enc, other(enc)] {
            let again = ServerFrame::decode(&frame.encode(e), e).expect("what the codec encodes, it decodes");
            assert_eq!(again, frame, "{e:?}");
        }
    }
});
