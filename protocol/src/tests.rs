use super::*;
use proptest::prelude::*;

fn json(frame: &ServerFrame) -> serde_json::Value {
    serde_json::from_slice(&frame.to_json()).unwrap()
}

#[test]
fn hello_from_protocol_example() {
    let f = ClientFrame::from_json(br#"{"type":"hello","token":"t","device":"phone-1","resume_after":0}"#).unwrap();
    assert_eq!(
        f,
        ClientFrame::Hello(Hello { token: "t".into(), device: Some("phone-1".into()), resume_after: Some(0) })
    );
    let f = ClientFrame::from_json(br#"{"type":"hello","token":"t"}"#).unwrap();
    assert_eq!(f, ClientFrame::Hello(Hello { token: "t".into(), device: None, resume_after: None }));
}

#[test]
fn json_has_type_first_and_omits_absent_optionals() {
    let f =
        ServerFrame::Presence(PresenceUpdate { user: "bob".into(), status: PresenceStatus::Offline, last_seen: None });
    assert_eq!(f.to_json(), br#"{"type":"presence","user":"bob","status":"offline"}"#);
    let f = ServerFrame::Presence(PresenceUpdate {
        user: "bob".into(),
        status: PresenceStatus::Offline,
        last_seen: Some(5),
    });
    assert_eq!(json(&f)["last_seen"], 5);
    let f = ServerFrame::error(ErrorCode::TooLarge, "m", None);
    assert_eq!(f.to_json(), br#"{"type":"error","code":"too_large","message":"m"}"#);
    let f = ServerFrame::error(ErrorCode::RateLimited, "m", Some("c-1".into()));
    assert_eq!(json(&f)["id"], "c-1");
    assert_eq!(ServerFrame::Pong(Ping { ts: Some(123) }).to_json(), br#"{"type":"pong","ts":123}"#);
}

#[test]
fn unknown_type_keeps_id() {
    let e = ClientFrame::from_json(br#"{"type":"frobnicate","id":"x-1"}"#).unwrap_err();
    assert_eq!(e, DecodeError::UnknownType { ty: "frobnicate".into(), id: Some("x-1".into()) });
}

#[test]
fn bad_frame_vs_garbage() {
    assert!(matches!(ClientFrame::from_json(b"not json"), Err(DecodeError::Garbage(_))));
    assert!(matches!(ClientFrame::from_json(b"[1,2]"), Err(DecodeError::BadFrame { .. })));
    assert!(matches!(ClientFrame::from_json(br#"["ack",5]"#), Err(DecodeError::BadFrame { .. })));
    assert!(matches!(ClientFrame::from_json(br#"{"token":"x"}"#), Err(DecodeError::BadFrame { .. })));
    let e = ClientFrame::from_json(br#"{"type":"send","id":"c-9","to":5}"#).unwrap_err();
    assert_eq!(e.id(), Some("c-9"));
    assert!(matches!(e, DecodeError::BadFrame { .. }));
    assert!(matches!(ClientFrame::from_binary(&[]), Err(DecodeError::Garbage(_))));
    assert!(matches!(ClientFrame::from_binary(&[9, 1, 0]), Err(DecodeError::Garbage(_))));
    assert!(matches!(ClientFrame::from_binary(&[1, 200]), Err(DecodeError::UnknownType { .. })));
    assert!(matches!(ClientFrame::from_binary(&[1, 2, 0xff, 0xff]), Err(DecodeError::BadFrame { .. })));
}

#[test]
fn json_sends_may_carry_base64_bodies() {
    let f = ClientFrame::from_json(br#"{"type":"send","id":"b","to":"x","body":"/wA=","encoding":"base64"}"#).unwrap();
    assert!(matches!(f, ClientFrame::Send(s) if s.body == Body::from(vec![0xff, 0x00])));
    let e =
        ClientFrame::from_json(br#"{"type":"send","id":"b","to":"x","body":"!!","encoding":"base64"}"#).unwrap_err();
    assert!(matches!(e, DecodeError::BadFrame { id: Some(ref id), .. } if id == "b"));
    assert_eq!(ServerFrame::Pong(Ping { ts: None }).to_json(), br#"{"type":"pong"}"#);
}

#[test]
fn non_utf8_body_goes_base64_in_json() {
    let f = ServerFrame::Message(Message {
        seq: 1,
        msg_id: "m".into(),
        from: "a".into(),
        body: Body::from(vec![0xff, 0x00]),
        ts: 1,
    });
    let v = json(&f);
    assert_eq!(v["body"], "/wA=");
    assert_eq!(v["encoding"], "base64");
    assert_eq!(ServerFrame::from_binary(&f.to_binary()).unwrap(), f);
}

#[test]
fn binary_layout_starts_with_version_and_code() {
    let f = ClientFrame::Ack(UpTo { up_to: 13 });
    assert_eq!(f.to_binary(), vec![BINARY_VERSION, 3, 13]);
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9_.-]{1,12}"
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        any::<String>().prop_map(Body::from),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Body::from)
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (any::<String>(), proptest::option::of(name()), proptest::option::of(any::<u64>()))
            .prop_map(|(token, device, resume_after)| ClientFrame::Hello(Hello { token, device, resume_after })),
        (name(), name(), body()).prop_map(|(id, to, body)| ClientFrame::Send(Send { id, to, body })),
        any::<u64>().prop_map(|up_to| ClientFrame::Ack(UpTo { up_to })),
        any::<u64>().prop_map(|up_to| ClientFrame::Read(UpTo { up_to })),
        (proptest::option::of(any::<u64>()), proptest::option::of(any::<u32>()))
            .prop_map(|(after, limit)| ClientFrame::Sync(Sync { after, limit })),
        proptest::collection::vec(name(), 0..5).prop_map(|users| ClientFrame::Subscribe(Users { users })),
        (
            proptest::collection::vec((name(), proptest::option::of(name())), 0..4),
            proptest::collection::vec(name(), 0..3)
        )
            .prop_map(|(u, remove)| ClientFrame::Contacts(Contacts {
                upsert: u.into_iter().map(|(user, circle)| ContactEntry { user, circle }).collect(),
                remove,
            })),
        (name(), proptest::option::of(any::<bool>()), proptest::option::of(any::<bool>())).prop_map(
            |(circle, presence, last_seen)| ClientFrame::CirclePolicy(CirclePolicy { circle, presence, last_seen })
        ),
        proptest::option::of(any::<i64>()).prop_map(|ts| ClientFrame::Ping(Ping { ts })),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (any::<u64>(), name(), name(), body(), any::<i64>())
            .prop_map(|(seq, msg_id, from, body, ts)| ServerFrame::Message(Message { seq, msg_id, from, body, ts })),
        (name(), proptest::option::of(any::<i64>())).prop_map(|(user, last_seen)| ServerFrame::Presence(
            PresenceUpdate { user, status: PresenceStatus::Offline, last_seen }
        )),
        (any::<String>(), proptest::option::of(name())).prop_map(|(m, id)| ServerFrame::Error(ErrorFrame::new(
            ErrorCode::BadFrame,
            m,
            id
        ))),
        (any::<u64>(), any::<bool>()).prop_map(|(inbox_head, more)| ServerFrame::Synced(Synced { inbox_head, more })),
        (name(), name(), any::<i64>()).prop_map(|(id, msg_id, ts)| ServerFrame::Accepted(Accepted { id, msg_id, ts })),
    ]
}

proptest! {
    #[test]
    fn client_frames_roundtrip_both_codecs(f in client_frame()) {
        prop_assert_eq!(ClientFrame::from_binary(&f.to_binary()).unwrap(), f.clone());
        prop_assert_eq!(ClientFrame::from_json(&f.to_json()).unwrap(), f);
    }

    #[test]
    fn server_frames_roundtrip_binary(f in server_frame()) {
        prop_assert_eq!(ServerFrame::from_binary(&f.to_binary()).unwrap(), f);
    }

    #[test]
    fn server_frames_roundtrip_json(f in server_frame()) {
        prop_assert_eq!(ServerFrame::from_json(&f.to_json()).unwrap(), f);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = ClientFrame::from_binary(&bytes);
        let _ = ClientFrame::from_json(&bytes);
    }
}
