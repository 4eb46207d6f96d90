//! The WebSocket decoder on well-formed client streams built from a
//! structured input (raw bytes rarely get past the mask and length
//! checks): messages split into fragments at any points, with pings and
//! pongs between the fragments, masked with any keys, the lengths in any of
//! their three encodings, and the stream cut into reads of any size. The
//! decoder must yield exactly the messages and control frames sent, in
//! order, and no error.
#![no_main]

use arbitrary::Arbitrary;
use iris_edge::wsproto::{Event, Reader};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

#[derive(Arbitrary, Debug)]
enum Control {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Message {
    /// Text (the payload is this string's bytes) or binary.
    text: Option<String>,
    binary: Vec<u8>,
    /// Where the payload is cut into fragments (offsets, any order).
    cuts: Vec<u16>,
    /// Control frames between fragments: (after which fragment, frame).
    controls: Vec<(u8, Control)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    messages: Vec<Message>,
    masks: Vec<[u8; 4]>,
    /// Use the 16-bit or 64-bit length form where the short one would do.
    long_lengths: Vec<u8>,
    reads: Vec<u8>,
}

struct Writer<'a> {
    out: Vec<u8>,
    masks: &'a [[u8; 4]],
    long: &'a [u8],
    n: usize,
}

impl Writer<'_> {
    fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mask = if self.masks.is_empty() { [0; 4] } else { self.masks[self.n % self.masks.len()] };
        let form = if self.long.is_empty() { 0 } else { self.long[self.n % self.long.len()] % 3 };
        self.n += 1;
        self.out.push(if fin { 0x80 } else { 0 } | opcode);
        let len = payload.len();
        match form {
            // Control frames must use the short form (at most 125 bytes).
            _ if len < 126 && (form == 0 || opcode >= 0x8) => self.out.push(0x80 | len as u8),
            0 | 1 if len <= u16::MAX as usize => {
                self.out.push(0x80 | 126);
                self.out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                self.out.push(0x80 | 127);
                self.out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        self.out.extend_from_slice(&mask);
        self.out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    }

    fn control(&mut self, c: &Control, expected: &mut Vec<Event>) {
        match c {
            Control::Ping(p) => {
                let p = &p[..p.len().min(125)];
                self.frame(true, 0x9, p);
                expected.push(Event::Ping(p.to_vec()));
            }
            Control::Pong(p) => {
                self.frame(true, 0xA, &p[..p.len().min(125)]);
                expected.push(Event::Pong);
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let mut w = Writer { out: Vec::new(), masks: &input.masks, long: &input.long_lengths, n: 0 };
    let mut expected = Vec::new();
    for m in &input.messages {
        let (opcode, payload) = match &m.text {
            Some(t) => (0x1, t.as_bytes()),
            None => (0x2, &m.binary[..]),
        };
        let payload = &payload[..payload.len().min(MAX)];
        let payload = match opcode {
            // Cut text back to a character boundary: the whole must be UTF-8.
            0x1 => {
                let mut end = payload.len();
                while std::str::from_utf8(&payload[..end]).is_err() {
                    end -= 1;
                }
                &payload[..end]
            }
            _ => payload,
        };
        let mut cuts: Vec<usize> = m.cuts.iter().map(|c| usize::from(*c) % (payload.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts.push(payload.len());
        let mut from = 0;
        for (i, to) in cuts.iter().enumerate() {
            let last = i + 1 == cuts.len();
            w.frame(last, if i == 0 { opcode } else { 0x0 }, &payload[from..*to]);
            from = *to;
            if !last {
                for (_, c) in m.controls.iter().filter(|(after, _)| usize::from(*after) % cuts.len() == i) {
                    w.control(c, &mut expected);
                }
            }
        }
        expected.push(if opcode == 0x1 { Event::Text(payload.to_vec()) } else { Event::Binary(payload.to_vec()) });
    }
    w.frame(true, 0x8, &1000u16.to_be_bytes());
    expected.push(Event::Close(Some(1000)));

    let mut reader = Reader::new(MAX);
    let mut got = Vec::new();
    let mut at = 0;
    let mut r = 0;
    while at < w.out.len() {
        let n = if input.reads.is_empty() { 1 } else { usize::from(input.reads[r % input.reads.len()]) + 1 };
        r += 1;
        let end = (at + n).min(w.out.len());
        reader.push(&w.out[at..end]);
        at = end;
        while let Some(event) = reader.next_event().expect("a well-formed stream decodes") {
            got.push(event);
        }
    }
    assert_eq!(got, expected);
});
