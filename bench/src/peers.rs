//! Minimal protocol adapters for the systems Iris is compared with: MQTT
//! 3.1.1 (Mosquitto), NATS (nats-server) and XMPP (ejabberd). Just enough
//! to connect, receive one's own one-to-one messages, send them and see
//! deliveries. Reads are cancel-safe: partial packets stay in `buf`.

use anyhow::{Context, bail};
use base64::Engine;
use bytes::{Buf, BytesMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// What a peer connection reports.
#[derive(Debug)]
pub enum PeerEvent {
    /// The broker took a publish (MQTT PUBACK by packet id, a JetStream
    /// PubAck by the number its publish was sent with).
    Acked(u64),
    /// A message arrived on the subscription.
    Delivered(Vec<u8>),
    /// The server bounced a message (an XMPP `<message type='error'>`).
    Refused,
    /// Anything else.
    Other,
}

/// How many loopback source addresses connections are spread over
/// (127.0.0.1 to 127.0.0.8), so that no one address runs short of
/// ephemeral ports however many sessions a scenario opens.
const SOURCES: usize = 8;

/// The next source address in turn.
fn next_source() -> IpAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed) % SOURCES;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8))
}

/// A TCP connection to `addr` (HOST:PORT) from the next loopback source
/// address when `addr` is on loopback, with TCP_NODELAY on.
pub async fn connect_tcp(addr: &str) -> anyhow::Result<TcpStream> {
    let target: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(addr).await?.next().with_context(|| format!("no address for {addr}"))?,
    };
    let stream = if target.ip().is_loopback() && target.is_ipv4() {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(next_source(), 0))?;
        socket.connect(target).await?
    } else {
        TcpStream::connect(target).await?
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining_length(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn mqtt_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// An MQTT 3.1.1 connection.
pub struct Mqtt {
    stream: TcpStream,
    buf: BytesMut,
}

impl Mqtt {
    /// Connects (clean session) and subscribes to `topic` at QoS 1.
    pub async fn connect(addr: &str, client_id: &str, topic: &str) -> anyhow::Result<Self> {
        let stream = connect_tcp(addr).await?;
        let mut m = Self { stream, buf: BytesMut::with_capacity(256) };
        let mut body = Vec::new();
        mqtt_str("MQTT", &mut body);
        body.extend_from_slice(&[4, 0x02]);
        body.extend_from_slice(&600u16.to_be_bytes());
        mqtt_str(client_id, &mut body);
        m.stream.write_all(&packet(0x10, &body)).await?;
        let mut sub = 1u16.to_be_bytes().to_vec();
        mqtt_str(topic, &mut sub);
        sub.push(1);
        m.stream.write_all(&packet(0x82, &sub)).await?;
        // CONNACK, then SUBACK.
        for _ in 0..2 {
            m.next().await?;
        }
        Ok(m)
    }

    /// Publishes at QoS 1 with a packet id (answered by `Acked(id)`).
    pub async fn publish(&mut self, topic: &str, id: u16, payload: &[u8]) -> anyhow::Result<()> {
        let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
        mqtt_str(topic, &mut body);
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(payload);
        self.stream.write_all(&packet(0x32, &body)).await?;
        Ok(())
    }

    fn parse(&mut self) -> anyhow::Result<Option<(u8, Vec<u8>)>> {
        let mut len = 0usize;
        let mut shift = 0;
        let mut i = 1;
        loop {
            let Some(&b) = self.buf.get(i) else { return Ok(None) };
            len |= ((b & 0x7f) as usize) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                bail!("bad MQTT length");
            }
        }
        if self.buf.len() < i + len {
            return Ok(None);
        }
        let first = self.buf[0];
        self.buf.advance(i);
        let body = self.buf.split_to(len).to_vec();
        Ok(Some((first, body)))
    }

    /// The next packet, answering QoS 1 deliveries with PUBACK.
    pub async fn next(&mut self) -> anyhow::Result<PeerEvent> {
        loop {
            if let Some((first, body)) = self.parse()? {
                return Ok(match first >> 4 {
                    3 => {
                        let qos = (first >> 1) & 3;
                        let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
                        let mut at = 2 + tlen;
                        if qos > 0 {
                            let id = [body[at], body[at + 1]];
                            at += 2;
                            self.stream.write_all(&[0x40, 2, id[0], id[1]]).await?;
                        }
                        PeerEvent::Delivered(body[at..].to_vec())
                    }
                    4 => PeerEvent::Acked(u16::from_be_bytes([body[0], body[1]]).into()),
                    _ => PeerEvent::Other,
                });
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("MQTT connection closed");
            }
        }
    }
}

/// A NATS connection.
pub struct Nats {
    stream: TcpStream,
    buf: BytesMut,
    last_was_pong: bool,
}

impl Nats {
    /// Connects and subscribes to `subject`.
    pub async fn connect(addr: &str, subject: &str) -> anyhow::Result<Self> {
        let stream = connect_tcp(addr).await?;
        let mut n = Self { stream, buf: BytesMut::with_capacity(256), last_was_pong: false };
        n.stream
            .write_all(
                format!("CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {subject} 1\r\nPING\r\n").as_bytes(),
            )
            .await?;
        // INFO, then PONG: the subscription is in place.
        loop {
            if let PeerEvent::Other = n.next().await? {
                if n.last_was_pong {
                    break;
                }
            }
        }
        Ok(n)
    }

    /// Publishes (NATS has no per-message acknowledgement).
    pub async fn publish(&mut self, subject: &str, payload: &[u8]) -> anyhow::Result<()> {
        self.publish_to(subject, None, payload).await
    }

    /// `PUB`, with a reply subject when one is given.
    async fn publish_to(&mut self, subject: &str, reply: Option<&str>, payload: &[u8]) -> anyhow::Result<()> {
        let head = match reply {
            Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
            None => format!("PUB {subject} {}\r\n", payload.len()),
        };
        let mut out = head.into_bytes();
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out).await?;
        Ok(())
    }

    fn line_end(&self) -> Option<usize> {
        self.buf.windows(2).position(|w| w == b"\r\n")
    }

    /// The next protocol message, answering server PINGs.
    pub async fn next(&mut self) -> anyhow::Result<PeerEvent> {
        Ok(match self.next_msg().await? {
            Some(m) => PeerEvent::Delivered(m.payload),
            None => PeerEvent::Other,
        })
    }

    /// The next protocol message: a `MSG` (its subscription, subject and
    /// payload), or `None` for anything else (server PINGs are answered).
    pub async fn next_msg(&mut self) -> anyhow::Result<Option<NatsMsg>> {
        self.last_was_pong = false;
        loop {
            if let Some(end) = self.line_end() {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                if let Some(rest) = line.strip_prefix("MSG ") {
                    // MSG <subject> <sid> [reply-to] <#bytes>
                    let fields: Vec<&str> = rest.split(' ').collect();
                    let len: usize = fields.last().context("MSG without size")?.parse()?;
                    if fields.len() < 3 {
                        bail!("malformed MSG line: {line}");
                    }
                    if self.buf.len() < end + 2 + len + 2 {
                        if self.stream.read_buf(&mut self.buf).await? == 0 {
                            bail!("NATS connection closed");
                        }
                        continue;
                    }
                    let subject = fields[0].to_owned();
                    let sid = fields[1].parse().context("MSG with a bad sid")?;
                    self.buf.advance(end + 2);
                    let payload = self.buf.split_to(len).to_vec();
                    self.buf.advance(2);
                    return Ok(Some(NatsMsg { sid, subject, payload }));
                }
                self.buf.advance(end + 2);
                if line == "PING" {
                    self.stream.write_all(b"PONG\r\n").await?;
                } else if line == "PONG" {
                    self.last_was_pong = true;
                } else if line.starts_with("-ERR") {
                    bail!("NATS error: {line}");
                }
                return Ok(None);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("NATS connection closed");
            }
        }
    }

    /// Sends raw protocol bytes.
    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// A request: publishes `payload` to `subject` with `reply` as its
    /// reply subject (which the caller has subscribed to as `sid`) and
    /// waits for the answer on it.
    async fn request(&mut self, subject: &str, reply: &str, sid: u64, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.publish_to(subject, Some(reply), payload).await?;
        let answer = async {
            loop {
                if let Some(m) = self.next_msg().await? {
                    if m.sid == sid && m.subject == reply {
                        return Ok(m.payload);
                    }
                }
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, answer).await.with_context(|| format!("no answer to {subject}"))?
    }
}

/// How long a NATS request (a JetStream API call) waits for its answer.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One `MSG` from a NATS server.
#[derive(Debug)]
pub struct NatsMsg {
    /// The subscription it came through.
    pub sid: u64,
    /// The subject it was published to.
    pub subject: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// The stream every JetStream chat message is stored in.
const JS_STREAM: &str = "CHAT";

/// Subscription ids of a JetStream chat connection.
const JS_DELIVER_SID: u64 = 1;
const JS_INBOX_SID: u64 = 2;

/// NATS JetStream as a durable chat peer: every message is published to
/// the file-backed stream `CHAT` (subjects `chat.<user>`) with a reply
/// subject, and the server's PubAck (sent once the stream has stored it)
/// is the acknowledgement; each user reads its own subject live through a
/// push consumer (deliver policy new, no acknowledgements: the Iris load
/// generator does not acknowledge its deliveries either).
pub struct JetStream {
    nats: Nats,
    inbox: String,
}

/// A JetStream API answer that carries an error.
fn js_error(answer: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(answer).ok()?;
    v.get("error").map(|e| e.to_string())
}

impl JetStream {
    /// Creates the stream on the server at `addr` (file storage; the
    /// server's own `sync_interval` decides when it is synced). Creating it
    /// again with the same settings is not an error.
    pub async fn create_stream(addr: &str) -> anyhow::Result<()> {
        let mut n = Nats::connect(addr, "_INBOX.setup").await?;
        let config = serde_json::json!({
            "name": JS_STREAM,
            "subjects": ["chat.>"],
            "storage": "file",
            "retention": "limits",
            "discard": "old",
            "max_bytes": 4_i64 << 30,
            "num_replicas": 1,
        });
        let answer = n
            .request(&format!("$JS.API.STREAM.CREATE.{JS_STREAM}"), "_INBOX.setup", 1, config.to_string().as_bytes())
            .await?;
        match js_error(&answer) {
            Some(e) => bail!("JetStream refused the stream: {e}"),
            None => Ok(()),
        }
    }

    /// Connects as `me`, reading `chat.<me>` through a new push consumer.
    pub async fn connect(addr: &str, me: &str) -> anyhow::Result<Self> {
        let deliver = format!("deliver.{me}");
        let inbox = format!("_INBOX.{me}");
        let mut nats = Nats::connect(addr, &deliver).await?;
        nats.write(format!("SUB {inbox}.> {JS_INBOX_SID}\r\n").as_bytes()).await?;
        let config = serde_json::json!({
            "stream_name": JS_STREAM,
            "config": {
                "deliver_subject": deliver,
                "filter_subject": format!("chat.{me}"),
                "deliver_policy": "new",
                "ack_policy": "none",
                "inactive_threshold": 60_000_000_000_i64,
            },
        });
        let answer = nats
            .request(
                &format!("$JS.API.CONSUMER.CREATE.{JS_STREAM}"),
                &format!("{inbox}.consumer"),
                JS_INBOX_SID,
                config.to_string().as_bytes(),
            )
            .await?;
        if let Some(e) = js_error(&answer) {
            bail!("JetStream refused the consumer of {me}: {e}");
        }
        Ok(Self { nats, inbox })
    }

    /// Publishes to `subject`; the PubAck comes back as `Acked(n)`.
    pub async fn publish(&mut self, subject: &str, n: u64, payload: &[u8]) -> anyhow::Result<()> {
        let reply = format!("{}.{n}", self.inbox);
        self.nats.publish_to(subject, Some(&reply), payload).await
    }

    /// The next delivery, PubAck or refusal. Cancel-safe.
    pub async fn next(&mut self) -> anyhow::Result<PeerEvent> {
        let Some(m) = self.nats.next_msg().await? else { return Ok(PeerEvent::Other) };
        Ok(match m.sid {
            JS_DELIVER_SID => PeerEvent::Delivered(m.payload),
            JS_INBOX_SID => {
                let n = m.subject.rsplit('.').next().and_then(|n| n.parse().ok());
                match (n, js_error(&m.payload)) {
                    (Some(n), None) => PeerEvent::Acked(n),
                    _ => PeerEvent::Refused,
                }
            }
            _ => PeerEvent::Other,
        })
    }
}

/// An XMPP client connection (RFC 6120): plain TCP, in-band registration
/// (XEP-0077) of `user` with the password `user` when it is new, SASL
/// PLAIN, a bound resource and initial presence, so that one-to-one
/// `<message/>` stanzas to `user@host` are delivered live (and stored
/// offline otherwise).
pub struct Xmpp {
    stream: TcpStream,
    buf: BytesMut,
}

/// The XMPP domain the benchmark's ejabberd serves.
pub const XMPP_DOMAIN: &str = "localhost";

fn stream_header() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{XMPP_DOMAIN}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
}

/// XML character data, escaped.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_unescape(s: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(s);
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .into_bytes()
}

/// The length of the first whole top-level item in `buf`: the stream
/// header, an XML declaration, a whole stanza, or the stream's end tag.
/// `None` while it is incomplete. Text holds no raw `<`, and `>` inside a
/// quoted attribute value does not end a tag.
fn xmpp_item(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut depth = 0usize;
    loop {
        let at = i + buf[i..].iter().position(|&b| b == b'<')?;
        let mut quote = None;
        let mut end = None;
        for (k, &b) in buf[at..].iter().enumerate() {
            match (quote, b) {
                (None, b'"' | b'\'') => quote = Some(b),
                (Some(q), b) if b == q => quote = None,
                (None, b'>') => {
                    end = Some(at + k);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        let tag = &buf[at..=end];
        if tag.starts_with(b"<?") || tag.starts_with(b"<stream:stream") {
            if depth == 0 {
                return Some(end + 1);
            }
        } else if tag.starts_with(b"</") {
            if depth <= 1 {
                return Some(end + 1);
            }
            depth -= 1;
        } else if tag.ends_with(b"/>") {
            if depth == 0 {
                return Some(end + 1);
            }
        } else {
            depth += 1;
        }
        i = end + 1;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `tag` has the attribute `name` with `value`, in either quoting.
fn attr_is(tag: &[u8], name: &str, value: &str) -> bool {
    contains(tag, format!("{name}='{value}'").as_bytes()) || contains(tag, format!("{name}=\"{value}\"").as_bytes())
}

/// The text between `<open>` and `</close>` in `stanza`.
fn between<'a>(stanza: &'a [u8], open: &[u8], close: &[u8]) -> Option<&'a [u8]> {
    let start = stanza.windows(open.len()).position(|w| w == open)? + open.len();
    let len = stanza[start..].windows(close.len()).position(|w| w == close)?;
    Some(&stanza[start..start + len])
}

impl Xmpp {
    /// Connects as `user` (registered first if new) and goes online.
    pub async fn connect(addr: &str, user: &str) -> anyhow::Result<Self> {
        let stream = connect_tcp(addr).await?;
        let mut x = Self { stream, buf: BytesMut::with_capacity(1024) };
        x.stream.write_all(stream_header().as_bytes()).await?;
        x.expect(b"<stream:features").await?;
        let name = xml_escape(user);
        x.stream
            .write_all(
                format!(
                    "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>\
                     <username>{name}</username><password>{name}</password></query></iq>"
                )
                .as_bytes(),
            )
            .await?;
        let reg = x.expect(b"<iq").await?;
        // A conflict is an account that exists already: log in to it.
        if attr_is(&reg, "type", "error") && !contains(&reg, b"<conflict") {
            bail!("XMPP registration of {user} refused: {}", String::from_utf8_lossy(&reg));
        }
        let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{user}"));
        x.stream
            .write_all(
                format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>").as_bytes(),
            )
            .await?;
        let auth = x.expect_any().await?;
        if !auth.starts_with(b"<success") {
            bail!("XMPP authentication of {user} failed: {}", String::from_utf8_lossy(&auth));
        }
        x.stream.write_all(stream_header().as_bytes()).await?;
        x.expect(b"<stream:features").await?;
        x.stream
            .write_all(
                b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                  <resource>bench</resource></bind></iq>",
            )
            .await?;
        let bound = x.expect(b"<iq").await?;
        if !attr_is(&bound, "type", "result") {
            bail!("XMPP bind for {user} failed: {}", String::from_utf8_lossy(&bound));
        }
        // Available: messages to the bare JID now come here, not offline.
        // The server reflects initial presence to its sender (RFC 6121
        // 4.2.2); once it has, the session is online for the chat's start.
        x.stream.write_all(b"<presence/>").await?;
        x.expect(b"<presence").await?;
        Ok(x)
    }

    /// Sends a one-to-one chat message to `user@domain` (XMPP has no
    /// per-message acknowledgement without XEP-0198).
    pub async fn publish(&mut self, user: &str, payload: &[u8]) -> anyhow::Result<()> {
        let body = xml_escape(&String::from_utf8_lossy(payload));
        let to = xml_escape(user);
        self.stream
            .write_all(format!("<message to='{to}@{XMPP_DOMAIN}' type='chat'><body>{body}</body></message>").as_bytes())
            .await?;
        Ok(())
    }

    /// The next whole top-level item (cancel-safe).
    async fn item(&mut self) -> anyhow::Result<BytesMut> {
        loop {
            let blank = self.buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            self.buf.advance(blank);
            if let Some(n) = xmpp_item(&self.buf) {
                let item = self.buf.split_to(n);
                if item.starts_with(b"<stream:error") || item.starts_with(b"</stream:stream") {
                    bail!("XMPP stream ended: {}", String::from_utf8_lossy(&item));
                }
                return Ok(item);
            }
            if self.buf.len() > 1 << 20 {
                bail!("XMPP stanza over 1 MiB");
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("XMPP connection closed");
            }
        }
    }

    /// The next item other than the stream header or an XML declaration.
    async fn expect_any(&mut self) -> anyhow::Result<BytesMut> {
        loop {
            let item = self.item().await?;
            if !item.starts_with(b"<?") && !item.starts_with(b"<stream:stream") {
                return Ok(item);
            }
        }
    }

    /// The next item, which must start with `start`.
    async fn expect(&mut self, start: &[u8]) -> anyhow::Result<BytesMut> {
        let item = self.expect_any().await?;
        if !item.starts_with(start) {
            bail!("XMPP: expected {}, got {}", String::from_utf8_lossy(start), String::from_utf8_lossy(&item));
        }
        Ok(item)
    }

    /// The next stanza: a message's body, a bounce, or anything else.
    pub async fn next(&mut self) -> anyhow::Result<PeerEvent> {
        let item = self.item().await?;
        if !item.starts_with(b"<message") {
            return Ok(PeerEvent::Other);
        }
        let open_tag = &item[..item.iter().position(|&b| b == b'>').unwrap_or(item.len())];
        if attr_is(open_tag, "type", "error") {
            return Ok(PeerEvent::Refused);
        }
        Ok(match between(&item, b"<body>", b"</body>") {
            Some(body) => PeerEvent::Delivered(xml_unescape(body)),
            None => PeerEvent::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xmpp_items_split_at_stanza_boundaries() {
        let header = b"<?xml version='1.0'?><stream:stream id='1' xmlns='jabber:client'>";
        assert_eq!(xmpp_item(header), Some(21));
        assert_eq!(xmpp_item(&header[21..]), Some(header.len() - 21));
        let msg = b"<message from='a' note='x>y'><body>1&lt;2</body></message><presence/>";
        let n = xmpp_item(msg).unwrap();
        assert_eq!(&msg[..n], &b"<message from='a' note='x>y'><body>1&lt;2</body></message>"[..]);
        assert_eq!(xmpp_item(&msg[n..]), Some(11));
        assert_eq!(between(&msg[..n], b"<body>", b"</body>").map(xml_unescape), Some(b"1<2".to_vec()));
        // Incomplete: no item yet.
        assert_eq!(xmpp_item(b"<message><body>12"), None);
        assert_eq!(xmpp_item(b"<message a='>"), None);
        assert_eq!(xmpp_item(b"</stream:stream>"), Some(16));
        // Nested elements and self-closing ones inside, double quotes.
        let features = b"<stream:features><mechanisms xmlns=\"m\"><mechanism>PLAIN</mechanism></mechanisms>\
                         <register xmlns='r'/></stream:features><iq/>";
        assert_eq!(xmpp_item(features), Some(features.len() - 5));
        assert!(attr_is(b"<message type=\"error\">", "type", "error"));
        assert!(attr_is(b"<message type='error'>", "type", "error"));
        assert!(!attr_is(b"<message type='chat'>", "type", "error"));
    }

    #[test]
    fn xml_escape_round_trips() {
        let s = "a<b>&'\"c";
        assert_eq!(xml_unescape(xml_escape(s).as_bytes()), s.as_bytes());
    }
}
