//! WebSocket (RFC 6455), server side, as a pure codec: the upgrade request,
//! client frames in, server frames out. No I/O; `ws.rs` drives it.
//!
//! Why our own and not tungstenite's: memory per idle session is a headline
//! goal, and tungstenite's stream holds a 320-byte struct, a resident read
//! buffer, two waker proxies and a write buffer at the capacity of the
//! largest frame, about 1 KiB per idle session here (heaptrack, ADR 0013).
//! This codec holds nothing while a session is idle: bytes are read on
//! readiness into a stack chunk, and [`Reader`] keeps only an incomplete
//! frame, freed as soon as it is complete.
//!
//! What it implements: the HTTP/1.1 upgrade (version 13, no extensions and
//! no subprotocols: offers of either are ignored, as the RFC allows),
//! masked client frames, fragmentation with control frames between
//! fragments, ping/pong, the close handshake, UTF-8 checks on text, and
//! size bounds checked from the header before any payload is buffered.

use sha1::{Digest, Sha1};

/// The longest upgrade request read (request line and headers).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// What to do with the bytes of an upgrade request read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// Not a whole request yet: read more.
    Incomplete,
    /// Write `response` (101) and speak WebSocket; the request was the
    /// first `consumed` bytes (anything after them is already frames).
    Accept { response: Vec<u8>, consumed: usize },
    /// Write `response` (an HTTP error with a message) and close.
    Refuse { response: Vec<u8> },
}

fn refuse(status: &str, message: &str, extra: &str) -> Upgrade {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{message}",
        message.len()
    );
    Upgrade::Refuse { response: response.into_bytes() }
}

/// The `Sec-WebSocket-Accept` value for a client's key.
pub fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    let digest = Sha1::new().chain_update(key.as_bytes()).chain_update(GUID).finalize();
    base64::engine::general_purpose::STANDARD.encode(&digest[..])
}

fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Reads an upgrade request for `path` from `buf`.
pub fn parse_upgrade(buf: &[u8], path: &str) -> Upgrade {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_REQUEST_BYTES {
            return refuse("431 Request Header Fields Too Large", "upgrade request over 8 KiB", "");
        }
        return Upgrade::Incomplete;
    };
    let consumed = end + 4;
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return refuse("400 Bad Request", "upgrade request is not UTF-8", "");
    };
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or("").split(' ');
    let (method, target, version) = (request.next(), request.next(), request.next());
    if version != Some("HTTP/1.1") || request.next().is_some() {
        return refuse("400 Bad Request", "expected an HTTP/1.1 request line", "");
    }
    let target = target.unwrap_or("");
    if target.split('?').next() != Some(path) {
        return refuse("404 Not Found", &format!("not found: the WebSocket endpoint is {path}"), "");
    }
    if method != Some("GET") {
        return refuse("405 Method Not Allowed", "a WebSocket upgrade is a GET", "Allow: GET\r\n");
    }
    let (mut upgrade, mut connection, mut ws_version, mut key) = (false, false, None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return refuse("400 Bad Request", "malformed header line", "");
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade |= has_token(value, "websocket"),
            "connection" => connection |= has_token(value, "upgrade"),
            "sec-websocket-version" => ws_version = Some(value),
            "sec-websocket-key" => key = Some(value),
            _ => {}
        }
    }
    if !upgrade || !connection {
        return refuse(
            "426 Upgrade Required",
            &format!("this is a WebSocket endpoint: send Upgrade: websocket to {path}"),
            "Upgrade: websocket\r\nConnection: Upgrade\r\n",
        );
    }
    if ws_version != Some("13") {
        return refuse("426 Upgrade Required", "WebSocket version 13 only", "Sec-WebSocket-Version: 13\r\n");
    }
    let key = match key {
        Some(k) if is_key(k) => k,
        _ => return refuse("400 Bad Request", "missing or malformed Sec-WebSocket-Key", ""),
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    Upgrade::Accept { response: response.into_bytes(), consumed }
}

/// A key is 16 bytes in base64.
fn is_key(key: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|k| k.len() == 16)
}

/// Why reading frames stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// A frame or message over the bound (close 1009).
    TooLarge,
    /// Text that is not UTF-8 (close 1007).
    BadText,
    /// Anything else that breaks RFC 6455 (close 1002).
    Protocol(&'static str),
}

impl WsError {
    /// The close code this error ends the connection with.
    pub fn close_code(self) -> u16 {
        match self {
            WsError::TooLarge => 1009,
            WsError::BadText => 1007,
            WsError::Protocol(_) => 1002,
        }
    }
}

/// What the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The client closes, with its code if it gave one.
    Close(Option<u16>),
}

/// Client frames, from bytes as they arrive. Holds only an incomplete
/// frame and an incomplete fragmented message; nothing once they are done.
pub struct Reader {
    buf: Vec<u8>,
    /// A fragmented message so far: its opcode and payload.
    partial: Option<(u8, Vec<u8>)>,
    max: usize,
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: usize,
    header_len: usize,
}

impl Reader {
    /// A reader of messages of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), partial: None, max }
    }

    /// Adds bytes read from the client. Call `next_event` until it returns
    /// `None` before reading more: the buffer then holds less than one
    /// frame, so it stays within the bound plus one read.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn header(&self) -> Result<Option<Header>, WsError> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0F);
        if rsv != 0 {
            return Err(WsError::Protocol("reserved bits set (no extension was agreed)"));
        }
        if b[1] & 0x80 == 0 {
            return Err(WsError::Protocol("client frames must be masked"));
        }
        let (len, at) = match b[1] & 0x7F {
            126 if b.len() < 4 => return Ok(None),
            126 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
            127 if b.len() < 10 => return Ok(None),
            127 => (u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")), 10),
            n => (n as u64, 2),
        };
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin || len > 125 {
                    return Err(WsError::Protocol("control frames are short and unfragmented"));
                }
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len() as u64);
                if len.saturating_add(so_far) > self.max as u64 {
                    return Err(WsError::TooLarge);
                }
            }
            _ => return Err(WsError::Protocol("unknown opcode")),
        }
        if b.len() < at + 4 {
            return Ok(None);
        }
        let mask = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        Ok(Some(Header { fin, opcode, mask, len: len as usize, header_len: at + 4 }))
    }

    /// The next whole event, if the bytes so far hold one.
    pub fn next_event(&mut self) -> Result<Option<Event>, WsError> {
        loop {
            let Some(h) = self.header()? else { return Ok(self.idle()) };
            let end = h.header_len + h.len;
            if self.buf.len() < end {
                return Ok(None);
            }
            let mut payload = self.buf[h.header_len..end].to_vec();
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= h.mask[i & 3];
            }
            self.buf.drain(..end);
            let event = match h.opcode {
                OP_PING => Some(Event::Ping(payload)),
                OP_PONG => Some(Event::Pong),
                OP_CLOSE => Some(Event::Close(close_code(&payload)?)),
                OP_CONTINUATION => {
                    let Some((op, mut message)) = self.partial.take() else {
                        return Err(WsError::Protocol("continuation without a message"));
                    };
                    message.extend_from_slice(&payload);
                    if h.fin {
                        Some(complete(op, message)?)
                    } else {
                        self.partial = Some((op, message));
                        None
                    }
                }
                op => {
                    if self.partial.is_some() {
                        return Err(WsError::Protocol("a new message inside a fragmented one"));
                    }
                    if h.fin {
                        Some(complete(op, payload)?)
                    } else {
                        self.partial = Some((op, payload));
                        None
                    }
                }
            };
            if let Some(event) = event {
                self.idle();
                return Ok(Some(event));
            }
        }
    }

    /// Gives the buffer back when it is empty (an idle session holds none).
    fn idle(&mut self) -> Option<Event> {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
        None
    }
}

fn complete(opcode: u8, payload: Vec<u8>) -> Result<Event, WsError> {
    if opcode == OP_TEXT {
        if std::str::from_utf8(&payload).is_err() {
            return Err(WsError::BadText);
        }
        return Ok(Event::Text(payload));
    }
    Ok(Event::Binary(payload))
}

fn close_code(payload: &[u8]) -> Result<Option<u16>, WsError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(WsError::Protocol("a close payload of one byte")),
        _ => {
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(WsError::BadText);
            }
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            // Codes a peer may send (RFC 6455 7.4, and the IANA registry).
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(WsError::Protocol("a close code a peer may not send"));
            }
            Ok(Some(code))
        }
    }
}

/// Appends one unmasked, unfragmented server frame to `out`.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and a short `reason`.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut payload = Vec::with_capacity(2 + reason.len().min(123));
    payload.extend_from_slice(&code.to_be_bytes());
    // Control payloads are at most 125 bytes; our reasons are short ASCII.
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    encode(out, OP_CLOSE, &payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = "GET /v1/ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    fn status(u: &Upgrade) -> String {
        let bytes = match u {
            Upgrade::Accept { response, .. } | Upgrade::Refuse { response } => response,
            Upgrade::Incomplete => return "incomplete".into(),
        };
        String::from_utf8_lossy(bytes).lines().next().unwrap_or("").to_owned()
    }

    #[test]
    fn the_rfc_example_key_gets_the_rfc_example_accept() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn an_upgrade_is_accepted_and_the_bytes_after_it_are_left_for_frames() {
        let mut bytes = REQUEST.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        assert_eq!(parse_upgrade(&bytes[..20], "/v1/ws"), Upgrade::Incomplete);
        match parse_upgrade(&bytes, "/v1/ws") {
            Upgrade::Accept { response, consumed } => {
                assert_eq!(consumed, REQUEST.len());
                let text = String::from_utf8(response).unwrap();
                assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{text}");
                assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_upgrades_get_an_http_error_that_says_why() {
        let cases = [
            (REQUEST.replace("/v1/ws?x=1", "/other"), "HTTP/1.1 404 Not Found"),
            (REQUEST.replace("GET", "POST"), "HTTP/1.1 405 Method Not Allowed"),
            (REQUEST.replace("Version: 13", "Version: 8"), "HTTP/1.1 426 Upgrade Required"),
            (REQUEST.replace("Upgrade: WebSocket\r\n", ""), "HTTP/1.1 426 Upgrade Required"),
            (REQUEST.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), "HTTP/1.1 400 Bad Request"),
            (REQUEST.replace("HTTP/1.1", "HTTP/1.0"), "HTTP/1.1 400 Bad Request"),
            (REQUEST.replace("Host: a", "no colon"), "HTTP/1.1 400 Bad Request"),
        ];
        for (request, want) in cases {
            assert_eq!(status(&parse_upgrade(request.as_bytes(), "/v1/ws")), want, "{request}");
        }
        let endless = format!("GET /v1/ws HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST_BYTES));
        assert_eq!(
            status(&parse_upgrade(endless.as_bytes(), "/v1/ws")),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
    }

    /// A masked client frame.
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 65_535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn frames_split_anywhere_arrive_whole_and_the_buffer_is_given_back() {
        let big = vec![b'x'; 70_000];
        let mut stream = client(true, OP_TEXT, b"{\"type\":\"hello\"}");
        stream.extend(client(true, OP_BINARY, &[1, 2, 3]));
        stream.extend(client(true, OP_TEXT, &big));
        stream.extend(client(true, OP_PING, b"p"));
        let mut r = Reader::new(100_000);
        let mut events = Vec::new();
        for chunk in stream.chunks(7) {
            r.push(chunk);
            while let Some(e) = r.next_event().unwrap() {
                events.push(e);
            }
        }
        assert_eq!(
            events,
            vec![
                Event::Text(b"{\"type\":\"hello\"}".to_vec()),
                Event::Binary(vec![1, 2, 3]),
                Event::Text(big),
                Event::Ping(b"p".to_vec())
            ]
        );
        assert_eq!(r.buf.capacity(), 0, "nothing held between frames");
    }

    #[test]
    fn fragments_are_joined_around_control_frames() {
        let mut r = Reader::new(100);
        r.push(&client(false, OP_TEXT, b"ab"));
        r.push(&client(true, OP_PING, b""));
        r.push(&client(false, OP_CONTINUATION, b"cd"));
        r.push(&client(true, OP_CONTINUATION, b"e"));
        assert_eq!(r.next_event().unwrap(), Some(Event::Ping(vec![])));
        assert_eq!(r.next_event().unwrap(), Some(Event::Text(b"abcde".to_vec())));
        assert_eq!(r.next_event().unwrap(), None);
    }

    #[test]
    fn oversized_frames_and_messages_are_refused_from_the_header() {
        let mut r = Reader::new(10);
        // Only the header of an 11-byte frame: refused before any payload.
        r.push(&client(true, OP_TEXT, &[b'a'; 11])[..6]);
        assert_eq!(r.next_event(), Err(WsError::TooLarge));
        let mut r = Reader::new(10);
        r.push(&client(false, OP_BINARY, &[0; 6]));
        r.push(&client(true, OP_CONTINUATION, &[0; 6]));
        assert_eq!(r.next_event(), Err(WsError::TooLarge), "fragments add up");
        let mut r = Reader::new(10);
        r.push(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.next_event(), Err(WsError::TooLarge), "a 64-bit length");
    }

    #[test]
    fn protocol_violations_are_errors_with_their_close_codes() {
        let unmasked = vec![0x81, 0x01, b'a'];
        let mut reserved = client(true, OP_TEXT, b"a");
        reserved[0] |= 0x40;
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (unmasked, 1002),
            (reserved, 1002),
            (client(true, 0x3, b""), 1002),
            (client(false, OP_PING, b""), 1002),
            (client(true, OP_PING, &[0; 126]), 1002),
            (client(true, OP_CONTINUATION, b"a"), 1002),
            (client(true, OP_CLOSE, &[3]), 1002),
            (client(true, OP_CLOSE, &[0x03, 0xed]), 1002),
            (client(true, OP_TEXT, &[0xff, 0xfe]), 1007),
            ([client(false, OP_TEXT, b"a"), client(true, OP_TEXT, b"b")].concat(), 1002),
        ];
        for (bytes, code) in cases {
            let mut r = Reader::new(1_000);
            r.push(&bytes);
            let e = r.next_event().expect_err("refused");
            assert_eq!(e.close_code(), code, "{bytes:?}: {e:?}");
        }
        let mut r = Reader::new(1_000);
        r.push(&client(true, OP_CLOSE, &[0x03, 0xe8, b'b', b'y', b'e']));
        assert_eq!(r.next_event().unwrap(), Some(Event::Close(Some(1000))));
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        for (n, header) in [(125usize, 2usize), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            encode(&mut out, OP_BINARY, &vec![7; n]);
            assert_eq!(out.len(), header + n, "{n}");
            assert_eq!(out[0], 0x82);
        }
        let mut out = Vec::new();
        encode_close(&mut out, 1009, "frame too large");
        assert_eq!(&out[..4], &[0x88, 17, 0x03, 0xf1]);
    }
}
