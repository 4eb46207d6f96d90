//! Sampled spans of a message's path through a region, exported to an
//! OpenTelemetry collector over OTLP/HTTP with the JSON encoding (ADR 0023).
//!
//! A node that is configured with `[tracing] otlp_endpoint` installs one
//! [`Tracer`] for the process ([`install`]). An edge starts a root span for
//! a sampled fraction of the messages it routes ([`root`]); the context
//! travels with the envelopes (a Kafka `traceparent` header) and every node
//! that handles them records a child span ([`child`]). Spans go to a
//! bounded queue; a task sends them in batches. A full queue or a collector
//! that does not answer costs spans (counted in `iris_trace_spans_total`),
//! never a message and never unbounded memory.

use iris_envelope::{TraceParent, to_hex};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Spans waiting to be sent, at most; beyond, new spans are dropped.
pub const QUEUED_SPANS: usize = 8_192;
/// Spans in one export request, at most.
pub const BATCH_SPANS: usize = 512;
/// How long a span waits for its batch to fill before it is sent anyway.
pub const BATCH_WAIT: Duration = Duration::from_secs(1);
/// How long one export (connect, send, answer) may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub use iris_config::OtlpEndpoint as Endpoint;

/// What is wrong with a tracing setting.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    /// The ratio is not within 0..=1.
    #[error("sample_ratio must be between 0 and 1, not {0}")]
    Ratio(f64),
    /// A tracer is already installed in this process.
    #[error("a tracer is already installed")]
    Installed,
}

/// How a node traces.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The collector.
    pub endpoint: Endpoint,
    /// The fraction of messages whose path is recorded, 0 to 1.
    pub sample_ratio: f64,
    /// `service.name` of every span (`iris`).
    pub service: String,
    /// `service.instance.id` (the node id).
    pub instance: String,
}

impl TraceConfig {
    /// Checks the ratio.
    pub fn new(endpoint: Endpoint, sample_ratio: f64, service: &str, instance: &str) -> Result<Self, TraceError> {
        if !(0.0..=1.0).contains(&sample_ratio) {
            return Err(TraceError::Ratio(sample_ratio));
        }
        Ok(Self { endpoint, sample_ratio, service: service.to_owned(), instance: instance.to_owned() })
    }
}

/// The OTLP span kinds Iris records (the values of its `kind` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Putting a record on a topic.
    Producer = 4,
    /// Handling a record read from a topic.
    Consumer = 5,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

/// A finished span, as it is exported.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanData {
    /// Its name (`iris.edge.route`, ...).
    pub name: &'static str,
    /// Its trace and its own span id.
    pub ctx: TraceParent,
    /// The span that caused it (none for a root).
    pub parent: Option<[u8; 8]>,
    /// What kind of work it was.
    pub kind: Kind,
    /// When it started and ended, ns since the Unix epoch.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// What it was about.
    pub attributes: Vec<(&'static str, Value)>,
    /// It ended in an error.
    pub error: bool,
}

/// A span in progress. Nothing is recorded unless [`Span::end`] is called.
#[derive(Debug)]
pub struct Span {
    data: SpanData,
}

impl Span {
    /// Its context: what the work it causes carries as parent.
    pub fn ctx(&self) -> TraceParent {
        self.data.ctx
    }

    /// Adds an attribute.
    pub fn attr(&mut self, key: &'static str, value: Value) {
        self.data.attributes.push((key, value));
    }

    /// Marks it failed.
    pub fn fail(&mut self) {
        self.data.error = true;
    }

    /// Ends it now and queues it for export.
    pub fn end(mut self) {
        self.data.end_ns = now_ns().max(self.data.start_ns);
        if let Some(t) = tracer() {
            t.record(self.data);
        }
    }
}

fn now_ns() -> u64 {
    // Wall time, not the injected clock: spans are compared with other
    // systems' spans by a collector, and decide nothing here.
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// The process's tracer.
pub struct Tracer {
    ratio: f64,
    queue: mpsc::Sender<SpanData>,
}

static TRACER: OnceLock<Tracer> = OnceLock::new();

/// The installed tracer, if any.
pub fn tracer() -> Option<&'static Tracer> {
    TRACER.get()
}

/// Installs the process's tracer and starts its exporter (inside a tokio
/// runtime). Once per process.
pub fn install(config: TraceConfig) -> Result<(), TraceError> {
    let (tx, rx) = mpsc::channel(QUEUED_SPANS);
    TRACER.set(Tracer { ratio: config.sample_ratio, queue: tx }).map_err(|_| TraceError::Installed)?;
    tokio::spawn(export_loop(config, rx));
    Ok(())
}

impl Tracer {
    fn record(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            metrics::counter!("iris_trace_spans_total", "outcome" => "dropped").increment(1);
        }
    }
}

/// Starts a root span for a sampled fraction of calls (none when no tracer
/// is installed or this call is not sampled).
pub fn root(name: &'static str, kind: Kind) -> Option<Span> {
    let t = tracer()?;
    if t.ratio <= 0.0 || (t.ratio < 1.0 && rand::random::<f64>() >= t.ratio) {
        return None;
    }
    let trace_id = loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            break id;
        }
    };
    let ctx = TraceParent::new(trace_id, new_span_id())?;
    Some(Span { data: span_data(name, kind, ctx, None) })
}

/// Starts a span caused by `parent` (none when no tracer is installed: the
/// sampling was decided where the trace began).
pub fn child(name: &'static str, kind: Kind, parent: &TraceParent) -> Option<Span> {
    tracer()?;
    let ctx = parent.child(new_span_id())?;
    Some(Span { data: span_data(name, kind, ctx, Some(parent.span_id)) })
}

fn span_data(name: &'static str, kind: Kind, ctx: TraceParent, parent: Option<[u8; 8]>) -> SpanData {
    SpanData { name, ctx, parent, kind, start_ns: now_ns(), end_ns: 0, attributes: Vec::new(), error: false }
}

/// The OTLP/HTTP JSON body for `spans` (ids in hex, times as decimal
/// strings, as the OTLP JSON encoding specifies).
pub fn encode(spans: &[SpanData], service: &str, instance: &str) -> String {
    use serde_json::json;
    let attr = |k: &str, v: &Value| match v {
        Value::Str(s) => json!({"key": k, "value": {"stringValue": s}}),
        Value::Int(i) => json!({"key": k, "value": {"intValue": i.to_string()}}),
    };
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let mut v = json!({
                "traceId": s.ctx.trace_hex(),
                "spanId": s.ctx.span_hex(),
                "name": s.name,
                "kind": s.kind as i32,
                "startTimeUnixNano": s.start_ns.to_string(),
                "endTimeUnixNano": s.end_ns.to_string(),
                "attributes": s.attributes.iter().map(|(k, v)| attr(k, v)).collect::<Vec<_>>(),
                "status": {"code": if s.error { 2 } else { 0 }},
            });
            if let Some(p) = s.parent {
                v["parentSpanId"] = json!(to_hex(&p));
            }
            v
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                attr("service.name", &Value::Str(service.to_owned())),
                attr("service.instance.id", &Value::Str(instance.to_owned())),
            ]},
            "scopeSpans": [{"scope": {"name": "iris"}, "spans": spans}],
        }]
    })
    .to_string()
}

async fn export_loop(config: TraceConfig, mut rx: mpsc::Receiver<SpanData>) {
    let mut batch = Vec::with_capacity(BATCH_SPANS);
    loop {
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH_SPANS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let body = encode(&batch, &config.service, &config.instance);
        batch.clear();
        match tokio::time::timeout(EXPORT_TIMEOUT, post(&config.endpoint, &body)).await {
            Ok(Ok(())) => metrics::counter!("iris_trace_spans_total", "outcome" => "exported").increment(n),
            outcome => {
                metrics::counter!("iris_trace_spans_total", "outcome" => "failed").increment(n);
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(endpoint = %config.endpoint.authority, %error, spans = n, "spans not exported");
            }
        }
    }
}

/// One POST of `body` to the collector; an answer other than 2xx is an
/// error.
async fn post(endpoint: &Endpoint, body: &str) -> std::io::Result<()> {
    let mut s = tokio::net::TcpStream::connect(&endpoint.authority).await?;
    s.set_nodelay(true)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.authority,
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    // The status line is all that is read (at most 1 KiB of the answer).
    let mut answer = [0u8; 1024];
    let mut got = 0;
    while got < answer.len() && !answer[..got].contains(&b'\n') {
        let n = s.read(&mut answer[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&answer[..got]);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') && status.len() == 3 {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("the collector answered {:?}", line.lines().next().unwrap_or(""))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_outside_zero_to_one_is_refused() {
        let e = Endpoint::parse("http://h").unwrap();
        assert_eq!(TraceConfig::new(e.clone(), 1.5, "iris", "n").unwrap_err(), TraceError::Ratio(1.5));
        assert_eq!(TraceConfig::new(e.clone(), -0.1, "iris", "n").unwrap_err(), TraceError::Ratio(-0.1));
        assert!(TraceConfig::new(e, 0.0, "iris", "n").is_ok());
    }

    #[test]
    fn spans_encode_as_otlp_json() {
        let ctx = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let span = SpanData {
            name: "iris.shard.handle",
            ctx,
            parent: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            kind: Kind::Consumer,
            start_ns: 1_700_000_000_000_000_001,
            end_ns: 1_700_000_000_000_000_002,
            attributes: vec![("iris.shard", Value::Int(7)), ("iris.tenant", Value::Str("acme".into()))],
            error: true,
        };
        let v: serde_json::Value = serde_json::from_str(&encode(&[span], "iris", "core-1")).unwrap();
        let rs = &v["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0]["value"]["stringValue"], "iris");
        assert_eq!(rs["resource"]["attributes"][1]["value"]["stringValue"], "core-1");
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["spanId"], "00f067aa0ba902b7");
        assert_eq!(s["parentSpanId"], "0102030405060708");
        assert_eq!(s["kind"], 5);
        assert_eq!(s["startTimeUnixNano"], "1700000000000000001");
        assert_eq!(s["attributes"][0]["value"]["intValue"], "7");
        assert_eq!(s["attributes"][1]["value"]["stringValue"], "acme");
        assert_eq!(s["status"]["code"], 2);
    }

    /// The exporter against a collector on a real socket: one that answers
    /// 200 takes the batch; one that answers 500 is an error.
    #[tokio::test]
    async fn a_batch_is_posted_to_the_collector() {
        for (status, ok) in [("200 OK", true), ("500 Internal Server Error", false)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap();
                        if got.len() >= i + 4 + len {
                            break;
                        }
                    }
                    assert!(n > 0, "the exporter closed before its body");
                }
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await.unwrap();
                String::from_utf8(got).unwrap()
            });
            let endpoint = Endpoint::parse(&format!("http://{addr}/v1/traces")).unwrap();
            let result = post(&endpoint, "{\"resourceSpans\":[]}").await;
            let request = server.await.unwrap();
            assert!(request.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{request}");
            assert!(request.contains("Content-Type: application/json\r\n"));
            assert!(request.ends_with("{\"resourceSpans\":[]}"));
            assert_eq!(result.is_ok(), ok, "{result:?}");
        }
    }
}
