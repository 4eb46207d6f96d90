//! The broker alone, as the floor under a region: what one producer and one
//! consumer move through the same Kafka, with the settings Iris uses
//! (idempotent producer, acks=all, a fetch answered as soon as data is
//! there), at a fixed rate, with send-to-consumed latency.

use anyhow::Context;
use hdrhistogram::Histogram;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Load offered before the measured window (sent and consumed, not counted).
const WARM_UP: Duration = Duration::from_secs(1);

/// The load to offer.
pub struct Load {
    /// Messages per second.
    pub rate: u64,
    /// Seconds of load.
    pub seconds: u64,
    /// Payload bytes.
    pub bytes: usize,
    /// Partitions of the topic.
    pub partitions: usize,
    /// Producer linger, ms.
    pub linger_ms: u32,
}

#[derive(Default)]
struct Delivered {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Counting(Arc<Delivered>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Runs the load and prints one JSON object.
pub async fn kafka_floor(bootstrap: &str, load: Load) -> anyhow::Result<()> {
    anyhow::ensure!(load.bytes >= 16, "--bytes must be at least 16 (the send time rides in the payload)");
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let topic = format!("bench.floor.{n}");
    iris_kafka::ensure_topics(bootstrap, &[(&topic, load.partitions)]).await.context("creating the topic")?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench.floor.{n}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("socket.nagle.disable", "true")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..load.partitions as i32 {
        tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let delivered = Arc::new(Delivered::default());
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", load.linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("socket.nagle.disable", "true")
        .create_with_context(Counting(delivered.clone()))?;

    // Warm up: the consumer is fetching and the producer has its id before
    // the clock starts, or the first messages' wait would be counted.
    // One warm-up message per partition: each partition's fetching starts
    // on its own.
    for p in 0..load.partitions as i32 {
        producer.send(BaseRecord::to(&topic).key("warm-up").payload("warm-up").partition(p)).map_err(|(e, _)| e)?;
    }
    let warm_until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut warm = std::collections::HashSet::new();
    while warm.len() < load.partitions {
        match tokio::time::timeout_at(warm_until, consumer.recv()).await {
            Ok(Ok(m)) if m.key() == Some(b"warm-up".as_slice()) => {
                warm.insert(m.partition());
            }
            Ok(_) => {}
            Err(_) => anyhow::bail!("the warm-up messages were not all consumed within 30 s"),
        }
    }
    let start = Instant::now();
    let total = load.rate * (load.seconds + WARM_UP.as_secs());
    let reader = tokio::spawn(async move {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        let mut got = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(load.seconds + 10);
        while got < total {
            let m = match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    eprintln!("consume: {e}");
                    continue;
                }
                Err(_) => break,
            };
            if let Some(p) = m.payload() {
                let mut ns = [0u8; 16];
                ns.copy_from_slice(&p[..16]);
                let sent = start + Duration::from_nanos(u128::from_be_bytes(ns) as u64);
                // The first second is warm-up: the first burst after the
                // broker sat idle waits up to a few hundred ms (the path's
                // first use); the region it is compared with is warm.
                if sent >= start + WARM_UP {
                    h.saturating_record(Instant::now().saturating_duration_since(sent).as_micros() as u64);
                }
            }
            got += 1;
        }
        (got, h)
    });

    // Open loop: every millisecond, what the rate owes by now.
    let mut sent = 0u64;
    let mut payload = vec![b'x'; load.bytes];
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let until = start + WARM_UP + Duration::from_secs(load.seconds);
    let mut full = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        let owed = ((start.elapsed().as_secs_f64() * load.rate as f64) as u64).min(total);
        while sent < owed {
            let key = (sent as u32).to_be_bytes();
            payload[..16].copy_from_slice(&start.elapsed().as_nanos().to_be_bytes());
            let record = BaseRecord::to(&topic).key(&key).payload(&payload);
            match producer.send(record) {
                Ok(()) => sent += 1,
                Err((e, _)) => {
                    full += 1;
                    if full % 10_000 == 1 {
                        eprintln!("produce: {e}");
                    }
                    break;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    let (got, h) = reader.await?;
    let out = serde_json::json!({
        "scenario": "kafka-floor",
        "system": "kafka",
        "target_rate": load.rate,
        "seconds": load.seconds,
        "bytes": load.bytes,
        "partitions": load.partitions,
        "linger_ms": load.linger_ms,
        "sent": sent,
        "acknowledged": delivered.ok.load(Ordering::Relaxed),
        "failed": delivered.failed.load(Ordering::Relaxed),
        "consumed": got,
        "warm_up_seconds": WARM_UP.as_secs(),
        "send_to_consumed": crate::summary(&h),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
