//! Minimal protocol adapters for the systems Iris is compared with: MQTT
//! 3.1.1 (Mosquitto) and NATS (nats-server). Just enough to connect,
//! subscribe to one's own topic, publish one-to-one and see deliveries.
//! Reads are cancel-safe: partial packets stay in `buf`.

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a peer connection reports.
#[derive(Debug)]
pub enum PeerEvent {
    /// The broker took a publish (MQTT PUBACK), by packet id.
    Acked(u16),
    /// A message arrived on the subscription.
    Delivered(Vec<u8>),
    /// Anything else.
    Other,
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
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
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
                    4 => PeerEvent::Acked(u16::from_be_bytes([body[0], body[1]])),
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
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
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
        let mut out = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
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
        self.last_was_pong = false;
        loop {
            if let Some(end) = self.line_end() {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                if let Some(rest) = line.strip_prefix("MSG ") {
                    let len: usize = rest.rsplit(' ').next().context("MSG without size")?.parse()?;
                    if self.buf.len() < end + 2 + len + 2 {
                        if self.stream.read_buf(&mut self.buf).await? == 0 {
                            bail!("NATS connection closed");
                        }
                        continue;
                    }
                    self.buf.advance(end + 2);
                    let payload = self.buf.split_to(len).to_vec();
                    self.buf.advance(2);
                    return Ok(PeerEvent::Delivered(payload));
                }
                self.buf.advance(end + 2);
                if line == "PING" {
                    self.stream.write_all(b"PONG\r\n").await?;
                } else if line == "PONG" {
                    self.last_was_pong = true;
                } else if line.starts_with("-ERR") {
                    bail!("NATS error: {line}");
                }
                return Ok(PeerEvent::Other);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("NATS connection closed");
            }
        }
    }
}
