//! Envelopes as they come off a wire bus (Kafka): decoding any bytes never
//! panics, what decodes re-encodes to an envelope equal to it, and a
//! partition of records some of which do not decode never stops its shard:
//! the feed hands every readable envelope in order and, once they are
//! durable, commits past them and the unreadable ones between them.
#![no_main]

use iris_envelope::{EdgeEnvelope, GlobalEnvelope, HomeAssignment, ShardEnvelope, ShardId, decode, encode};
use iris_router::feed::{Feed, FeedInput, FeedOutput};
use libfuzzer_sys::fuzz_target;

fn roundtrip<T>(bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = decode::<T>(bytes) {
        let again: T = decode(&encode(&v)).expect("what encodes, decodes");
        assert_eq!(again, v);
    }
}

fuzz_target!(|data: &[u8]| {
    roundtrip::<ShardEnvelope>(data);
    roundtrip::<EdgeEnvelope>(data);
    roundtrip::<GlobalEnvelope>(data);
    roundtrip::<HomeAssignment>(data);

    // The same bytes as a partition: records, each one length byte and
    // that many bytes.
    let shard = ShardId(0);
    let mut feed = Feed::default();
    feed.handle_input(FeedInput::Assigned(vec![shard]));
    let mut rest = data;
    let mut offset = 0i64;
    let mut readable = Vec::new();
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (record, tail) = tail.split_at(n);
        rest = tail;
        match decode::<ShardEnvelope>(record) {
            Ok(env) => {
                readable.push(offset);
                feed.handle_input(FeedInput::Record { shard, offset, env });
            }
            Err(_) => feed.handle_input(FeedInput::Unreadable { shard, offset }),
        }
        offset += 1;
    }
    let mut handed = Vec::new();
    let mut committed = None;
    for round in 0..2 {
        while let Some(out) = feed.poll_output() {
            match out {
                FeedOutput::Hand { shard, offset, .. } => {
                    handed.push(offset);
                    feed.handle_input(FeedInput::Handed { shard, offset });
                }
                FeedOutput::Commit(offsets) => {
                    committed = offsets.iter().find(|(s, _)| *s == shard).map(|(_, o)| *o).or(committed);
                    feed.handle_input(FeedInput::Committed(offsets));
                }
                _ => {}
            }
        }
        if round == 0 {
            // Every handed envelope is durable.
            feed.handle_input(FeedInput::Progress(vec![(shard, handed.len() as u64)]));
        }
    }
    assert_eq!(handed, readable, "every readable envelope, in order");
    // Committed past every readable record, never beyond the end; records
    // that do not decode are passed with the readable ones around them (an
    // unreadable one behind pending work is covered by the next readable
    // record's commit, so a partition's poisoned tail waits for one).
    match readable.last() {
        Some(last) => assert!(committed.is_some_and(|c| c > *last && c <= offset), "{committed:?}"),
        None if offset > 0 => assert_eq!(committed, Some(offset), "nothing readable: all skipped"),
        None => assert_eq!(committed, None),
    }
});
