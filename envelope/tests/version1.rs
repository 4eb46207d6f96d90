//! Records written before notices existed (ADR 0020), by the code of
//! 2026-12-07 when edge inputs still carried client frames
//! (`EdgeInput::Frame { frame: ServerFrame, .. }`): this build reads every
//! one as the same notices and values, and writes them again byte for byte,
//! so nodes of either version read each other's records in a rolling
//! upgrade. The hex was printed by that code from the values below; it must
//! never be regenerated from this build.

use bytes::Bytes;
use iris_envelope::*;
use iris_types::{ContactEntry, ErrorCode, PresenceStatus, ReceiptState, SetStatus, TypingState};

const EDGE_V1: &str = "0109656467652d31406575040d0000010103632d31036d2d3182a0abfef9620000010202030207036d2d3205616c69636503ff000184a0abfef9620000000403036d2d3303626f620100000005042a01000001010605056361726f6c020186a0abfef9620000000705046461766501000000000806046572696e0001000009080409736c6f7720646f776e0103632d390000000a08060a73746f726520646f776e000000000b09030000000c0a0666616d696c7900010d0305026e6f020e09";
const SHARD_V1: &str = "01040461636d6503626f6204036d2d3405616c696365000461636d6503626f620609656467652d3140657501020461636d6503626f620909656467652d314065750102037a6f650104776f726b0379616e00010278690461636d6503626f620b05616c69636501";
const GLOBAL_V1: &str = "01026575027573010102657506c60188a0abfef9620109656467652d3240757300000f0503626f62000000";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn notice(to: Recipients, notice: Notice, droppable: bool) -> EdgeInput {
    EdgeInput::Notice { to, notice, droppable }
}

fn one(n: u64) -> Recipients {
    Recipients::Session(SessionId(n))
}

#[test]
fn edge_records_of_version_1_read_as_notices_and_write_back_the_same() {
    let want = EdgeEnvelope {
        edge: EdgeId::qualified("edge-1", "eu"),
        traces: vec![],
        body: EdgeInput::Batch(vec![
            notice(one(1), Notice::Accepted { id: "c-1".into(), msg_id: "m-1".into(), ts: 1_700_000_000_001 }, false),
            notice(
                Recipients::Sessions(vec![SessionId(2), SessionId(3)]),
                Notice::Message {
                    seq: 7,
                    msg_id: "m-2".into(),
                    from: "alice".into(),
                    body: Bytes::from_static(&[0xff, 0, 1]),
                    ts: 1_700_000_000_002,
                },
                false,
            ),
            notice(
                one(4),
                Notice::Receipt { msg_id: "m-3".into(), by: "bob".into(), state: ReceiptState::Read },
                false,
            ),
            notice(one(5), Notice::Synced { inbox_head: 42, more: true }, false),
            notice(
                Recipients::Sessions(vec![SessionId(6)]),
                Notice::Presence {
                    user: "carol".into(),
                    status: PresenceStatus::Offline,
                    last_seen: Some(1_700_000_000_003),
                },
                false,
            ),
            notice(
                one(7),
                Notice::Presence { user: "dave".into(), status: PresenceStatus::Away, last_seen: None },
                false,
            ),
            notice(one(8), Notice::Typing { from: "erin".into(), state: TypingState::Start }, true),
            notice(one(9), Notice::refused(ErrorCode::RateLimited, "slow down", Some("c-9".into())), false),
            notice(one(10), Notice::refused(ErrorCode::Unavailable, "store down", None), false),
            notice(one(11), Notice::ContactsOk { count: 3 }, false),
            notice(one(12), Notice::CirclePolicyOk { circle: "family".into() }, false),
            EdgeInput::Reply {
                request: SessionId(13),
                reply: ServiceReply::Error { code: ErrorCode::Forbidden, message: "no".into() },
            },
            EdgeInput::Welcome { session: SessionId(14), inbox_head: 9 },
        ]),
    };
    let v1 = unhex(EDGE_V1);
    assert_eq!(decode::<EdgeEnvelope>(&v1).unwrap(), want);
    assert_eq!(encode(&want), v1, "a notice must encode as the frame it replaced");
}

#[test]
fn shard_records_of_version_1_read_the_same_and_write_back_the_same() {
    let addr = SessionAddr { edge: EdgeId::qualified("edge-1", "eu"), session: SessionId(1) };
    let owner: ShardKey = UserKey::new("acme", "bob").into();
    let env = |body| ShardEnvelope { owner: owner.clone(), trace: None, body };
    let want = vec![
        env(ShardInput::Receipt { msg_id: "m-4".into(), by: "alice".into(), state: ReceiptState::Delivered }),
        env(ShardInput::SetPresence { session: addr.clone(), status: SetStatus::Invisible }),
        env(ShardInput::Contacts {
            session: addr.clone(),
            upsert: vec![
                ContactEntry { user: "zoe".into(), circle: Some("work".into()) },
                ContactEntry { user: "yan".into(), circle: None },
            ],
            remove: vec!["xi".into()],
        }),
        env(ShardInput::Typing { from: "alice".into(), state: TypingState::Stop }),
    ];
    let v1 = unhex(SHARD_V1);
    assert_eq!(decode::<Vec<ShardEnvelope>>(&v1).unwrap(), want);
    assert_eq!(encode(&want), v1);
}

#[test]
fn global_records_of_version_1_read_the_same_and_write_back_the_same() {
    let want = GlobalEnvelope {
        origin: "eu".into(),
        dest: "us".into(),
        hops: 1,
        relay: Some(RelayId { region: "eu".into(), partition: 3, offset: 99 }),
        queued_at: 1_700_000_000_004,
        body: GlobalBody::Edge(EdgeEnvelope {
            edge: EdgeId::qualified("edge-2", "us"),
            traces: vec![],
            body: notice(
                one(15),
                Notice::Presence { user: "bob".into(), status: PresenceStatus::Online, last_seen: None },
                false,
            ),
        }),
    };
    let v1 = unhex(GLOBAL_V1);
    assert_eq!(decode::<GlobalEnvelope>(&v1).unwrap(), want);
    assert_eq!(encode(&want), v1);
}

#[test]
fn a_record_carrying_a_frame_no_shard_sends_is_malformed() {
    // version 1, edge "e", EdgeInput::Notice (0), Recipients::Session (0),
    // session 1, then the place of `welcome` (0) and of `pong` (7).
    for slot in [0u8, 7] {
        let bytes = [1, 1, b'e', 0, 0, 1, slot, 1, b'u', 0, 0];
        assert!(matches!(decode::<EdgeEnvelope>(&bytes), Err(EnvelopeError::Malformed(_))), "slot {slot} decoded");
    }
    let ok = [1, 1, b'e', 0, 0, 1, 9, 3, 0];
    assert_eq!(
        decode::<EdgeEnvelope>(&ok).unwrap().body,
        notice(one(1), Notice::ContactsOk { count: 3 }, false),
        "the hand-made record is otherwise well formed"
    );
}

#[test]
fn a_marked_presence_is_appended_after_every_earlier_notice() {
    // version 1, edge "e", EdgeInput::Notice (0), Recipients::Session (0),
    // session 1, then MarkedPresence: the index after CirclePolicyOk (10),
    // user "u", Online (0), then no last_seen, the mark (region, epoch as
    // varints), and not droppable.
    let mark = iris_envelope::OwnerMark::new("eu", 3);
    let marked = notice(
        one(1),
        Notice::MarkedPresence { user: "u".into(), status: PresenceStatus::Online, last_seen: None, owner: mark },
        false,
    );
    let bytes = encode(&EdgeEnvelope { edge: EdgeId("e".into()), body: marked.clone(), traces: Vec::new() });
    assert_eq!(&bytes[..10], &[1, 1, b'e', 0, 0, 1, 11, 1, b'u', 0], "appended, not inserted");
    assert_eq!(decode::<EdgeEnvelope>(&bytes).unwrap().body, marked);
    assert_eq!(
        Notice::MarkedPresence { user: "u".into(), status: PresenceStatus::Online, last_seen: None, owner: mark }
            .kind(),
        "presence"
    );
}

#[test]
fn owner_marks_order_epochs_of_one_region_only() {
    use iris_envelope::OwnerMark;
    let (eu1, eu2, us9) = (OwnerMark::new("eu", 1), OwnerMark::new("eu", 2), OwnerMark::new("us", 9));
    assert_eq!(eu1, OwnerMark::new("eu", 1), "the region's hash is stable");
    assert_ne!(eu1.region, us9.region);
    assert!(eu1.is_before(eu2));
    assert!(!eu2.is_before(eu1) && !eu1.is_before(eu1), "only an earlier epoch is before");
    assert!(!eu1.is_before(us9) && !us9.is_before(eu2), "another region's epochs are not comparable");
    assert_eq!(OwnerMark::new("eu", u64::MAX).epoch, u32::MAX, "an epoch past u32 saturates");
}
