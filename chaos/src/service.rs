//! The service API's side of the workload: an ingester per tenant posting
//! batches of events with idempotency keys to the edges' HTTP listeners,
//! retrying each batch until it is answered 202 (moving to the other edge
//! when one fails), and the final reads of each tenant's events log and
//! graph log. Everything is recorded.

use crate::history::{Recorder, What};
use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Events per batch.
pub const BATCH: usize = 10;
/// Streams the events are spread over (each owned by its own shard).
const STREAMS: u64 = 3;
/// The longest answer read.
const MAX_ANSWER: u64 = 16 << 20;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how the service API is reached.
#[derive(Clone)]
pub struct Api {
    /// The edges' HTTP listeners, `IP:PORT`.
    pub nodes: Vec<String>,
}

/// One HTTP/1.1 request (`Connection: close`): the status and the body.
pub async fn request(addr: &str, method: &str, path: &str, auth: &str, body: &str) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {auth}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut s).take(MAX_ANSWER).read_to_end(&mut raw).await?;
        parse(&raw)
    })
    .await
    .context("no answer in time")?
}

/// An HTTP/1.1 answer's status and body (plain or chunked).
fn parse(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("an answer without a head") };
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("a status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_owned()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else { bail!("a cut chunk") };
        let n = usize::from_str_radix(size.trim(), 16).context("a chunk size")?;
        if n == 0 {
            return Ok((status, out));
        }
        anyhow::ensure!(after.len() >= n, "a cut chunk");
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

/// The idempotency keys of batch `n` of `tenant`.
pub fn batch_keys(tenant: &str, n: u64) -> Vec<String> {
    (0..BATCH).map(|i| format!("{tenant}-b{n}-{i}")).collect()
}

/// A tenant's ingester until `until`: batch after batch, each retried with
/// the same keys until an edge answers 202.
pub async fn ingester(rec: Recorder, api: Api, key: String, tenant: String, seed: u64, until: Instant) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut node = rng.random_range(0..api.nodes.len());
    let mut n = 1u64;
    while Instant::now() < until {
        let keys = batch_keys(&tenant, n);
        let events: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| serde_json::json!({"type": "chaos", "idempotency_key": k, "stream": format!("s{}", n % STREAMS)}))
            .collect();
        let body = serde_json::json!({ "events": events }).to_string();
        rec.record(What::Ingest { tenant: tenant.clone(), batch: n });
        match request(&api.nodes[node], "POST", "/v1/events", &key, &body).await {
            Ok((202, answer)) => {
                let a: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
                let count = |f: &str| a.get(f).and_then(serde_json::Value::as_u64).unwrap_or(u64::MAX);
                rec.record(What::Ingested {
                    tenant: tenant.clone(),
                    batch: n,
                    accepted: count("accepted"),
                    duplicates: count("duplicates"),
                });
                n += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
            }
            // Refused, failed or unanswered: the same batch again, maybe
            // on the other edge.
            _ => {
                node = (node + 1) % api.nodes.len();
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
            }
        }
    }
}

/// Reads a whole log (`/v1/events/log` or `/v1/graph/events`) of the
/// service token's tenant, page by page, from any edge that answers until
/// `deadline`: each record's `event` object, or what the last try got.
pub async fn read_log(api: &Api, path: &str, token: &str, deadline: Instant) -> Result<Vec<serde_json::Value>, String> {
    let mut node = 0;
    let mut after = 0u64;
    let mut out = Vec::new();
    let mut last = String::from("no time left to ask");
    while Instant::now() < deadline {
        let addr = &api.nodes[node];
        let page = request(addr, "GET", &format!("{path}?after={after}&limit=10000"), token, "").await;
        let body = match page {
            Ok((200, body)) => body,
            other => {
                last = match other {
                    Ok((status, body)) => {
                        format!("{addr} answered {status}: {}", body.chars().take(200).collect::<String>())
                    }
                    Err(e) => format!("{addr}: {e:#}"),
                };
                node = (node + 1) % api.nodes.len();
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let page = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| Some((v.get("events")?.as_array()?.clone(), v.get("next")?.as_u64()?)));
        let Some((events, next)) = page else {
            return Err(format!("{addr}: a page that is not a log page ({} bytes)", body.len()));
        };
        if events.is_empty() {
            return Ok(out);
        }
        out.extend(events.iter().filter_map(|e| e.get("event").cloned()));
        after = next;
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse(plain).unwrap(), (202, "{}".to_owned()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse(chunked).unwrap(), (200, "{\"a\":1}".to_owned()));
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn each_batch_has_its_own_keys() {
        let a = batch_keys("ta", 1);
        assert_eq!(a.len(), BATCH);
        assert!(batch_keys("ta", 2).iter().all(|k| !a.contains(k)));
        assert!(batch_keys("tb", 1).iter().all(|k| !a.contains(k)));
    }
}
