//! Length-prefixed framing for stream transports (QUIC): a u32 big-endian
//! length, then the payload. Sans-I/O: the caller reads into [`buf`] and
//! reports how much it read; the assembler allocates a payload only after
//! its length passed the limit.
//!
//! [`buf`]: FrameAssembler::buf

use crate::Encoding;

/// The encoding of a framed payload: JSON frames are objects and start
/// with `{`; anything else is read as the binary codec (whose frames start
/// with their version byte, and which refuses a wrong one).
pub fn encoding_of(payload: &[u8]) -> Encoding {
    if payload.first() == Some(&b'{') { Encoding::Json } else { Encoding::Binary }
}

/// How much the payload buffer grows at a time.
const GROW_BYTES: usize = 16 * 1024;

/// What the bytes read so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    /// More bytes are needed.
    Need,
    /// A whole frame.
    Frame(Vec<u8>),
    /// The announced length is over the limit (the stream is unusable now).
    TooLarge(usize),
}

/// Reassembles frames from a byte stream.
#[derive(Debug)]
pub struct FrameAssembler {
    header: [u8; 4],
    have: usize,
    payload: Vec<u8>,
    want: Option<usize>,
    max: usize,
}

impl FrameAssembler {
    /// An assembler refusing frames over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { header: [0; 4], have: 0, payload: Vec::new(), want: None, max }
    }

    /// Where the next read should go (never empty). The payload buffer
    /// grows as bytes arrive, so a peer that announces a large frame and
    /// sends it slowly pins only what it sent.
    pub fn buf(&mut self) -> &mut [u8] {
        match self.want {
            None => &mut self.header[self.have..],
            Some(len) => {
                if self.payload.len() == self.have {
                    let grow = (len - self.have).min(GROW_BYTES);
                    self.payload.resize(self.have + grow, 0);
                }
                &mut self.payload[self.have..]
            }
        }
    }

    /// Records `n` bytes read into [`FrameAssembler::buf`].
    pub fn filled(&mut self, n: usize) -> Assembled {
        self.have += n;
        if self.want.is_none() && self.have == 4 {
            let len = u32::from_be_bytes(self.header) as usize;
            if len > self.max {
                return Assembled::TooLarge(len);
            }
            self.want = Some(len);
            self.payload = Vec::new();
            self.have = 0;
        }
        match self.want {
            Some(len) if self.have == len => {
                self.want = None;
                self.have = 0;
                Assembled::Frame(std::mem::take(&mut self.payload))
            }
            _ => Assembled::Need,
        }
    }
}

/// Prefixes a payload with its length.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_payload_starting_with_a_brace_is_json_and_anything_else_binary() {
        assert_eq!(encoding_of(br#"{"type":"ping"}"#), Encoding::Json);
        assert_eq!(encoding_of(&[1, 12, 0]), Encoding::Binary);
        assert_eq!(encoding_of(b""), Encoding::Binary, "the binary codec refuses it");
    }

    fn feed(a: &mut FrameAssembler, mut bytes: &[u8], chunk: usize) -> Vec<Assembled> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let buf = a.buf();
            let n = buf.len().min(chunk).min(bytes.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            match a.filled(n) {
                Assembled::Need => {}
                other => out.push(other),
            }
        }
        out
    }

    #[test]
    fn empty_frames_complete_with_their_header() {
        let mut a = FrameAssembler::new(10);
        assert_eq!(
            feed(&mut a, &[0, 0, 0, 0, 0, 0, 0, 1, 7], 3),
            vec![Assembled::Frame(vec![]), Assembled::Frame(vec![7])]
        );
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocation() {
        let mut a = FrameAssembler::new(10);
        assert_eq!(feed(&mut a, &[0, 0, 0, 11], 4), vec![Assembled::TooLarge(11)]);
        let mut a = FrameAssembler::new(10);
        assert_eq!(feed(&mut a, &[0xff, 0xff, 0xff, 0xff], 4), vec![Assembled::TooLarge(u32::MAX as usize)]);
    }

    proptest! {
        #[test]
        fn frames_survive_any_chunking(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 1..10), chunk in 1usize..16) {
            let mut a = FrameAssembler::new(100);
            let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
            let got = feed(&mut a, &stream, chunk);
            let want: Vec<Assembled> = payloads.into_iter().map(Assembled::Frame).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn large_frames_survive_chunking(len in 0usize..70_000, chunk in 1000usize..40_000) {
            let mut a = FrameAssembler::new(100_000);
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let got = feed(&mut a, &frame(&payload), chunk);
            prop_assert_eq!(got, vec![Assembled::Frame(payload)]);
        }
    }
}
