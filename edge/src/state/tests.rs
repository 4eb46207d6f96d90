use super::*;
use iris_envelope::{EdgeId, SessionId};

fn cfg() -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        node: "n1".into(),
        region: "r1".into(),
        max_body_bytes: 10,
        frames_per_second: 10,
        frame_burst: 5,
        heartbeat_ms: 1_000,
        hello_timeout_ms: 500,
        max_subscriptions: 2,
        max_list_items: 4,
    })
}

fn session() -> SessionState {
    SessionState::new(cfg(), SessionAddr { edge: EdgeId("e1".into()), session: SessionId(1) }, 0)
}

fn drain(s: &mut SessionState) -> Vec<SessionOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn open() -> SessionState {
    let mut s = session();
    s.handle_frame(1, br#"{"type":"hello","token":"tok","resume_after":4}"#, Encoding::Json);
    assert_eq!(drain(&mut s), vec![SessionOutput::Verify("tok".into())]);
    assert!(!s.wants_input(), "no client frames while authenticating");
    s.authenticated(Ok(Identity { tenant: "acme".into(), user: "alice".into(), scopes: vec![] }));
    let out = drain(&mut s);
    assert!(matches!(&out[0], SessionOutput::Register(u) if &*u.user == "alice"));
    assert!(
        matches!(&out[1], SessionOutput::Route { env, .. } if matches!(env.body, ShardInput::SessionOpened { resume_after: Some(4), .. }))
    );
    s.welcomed(2, 7);
    assert!(
        matches!(&drain(&mut s)[0], SessionOutput::Send(ServerFrame::Welcome(w)) if w.inbox_head == 7 && w.user == "alice")
    );
    s
}

fn error_code(o: &SessionOutput) -> Option<(ErrorCode, Option<&str>)> {
    match o {
        SessionOutput::Send(ServerFrame::Error(e)) => Some((e.code, e.id.as_deref())),
        _ => None,
    }
}

#[test]
fn first_frame_must_be_hello() {
    let mut s = session();
    s.handle_frame(1, br#"{"type":"ping"}"#, Encoding::Json);
    let out = drain(&mut s);
    assert_eq!(error_code(&out[0]), Some((ErrorCode::Unauthorized, None)));
    assert_eq!(out[1], SessionOutput::Close(CloseReason::Unauthorized));
}

#[test]
fn bad_token_closes() {
    let mut s = session();
    s.handle_frame(1, br#"{"type":"hello","token":"x"}"#, Encoding::Json);
    drain(&mut s);
    s.authenticated(Err(AuthRefusal::Invalid));
    let out = drain(&mut s);
    assert_eq!(out[0], SessionOutput::AuthFailed, "counted against the address");
    assert_eq!(error_code(&out[1]), Some((ErrorCode::Unauthorized, None)));
    assert_eq!(out[2], SessionOutput::Close(CloseReason::Unauthorized));
}

#[test]
fn a_throttled_address_is_refused_without_being_charged_again() {
    let mut s = session();
    s.handle_frame(1, br#"{"type":"hello","token":"x"}"#, Encoding::Json);
    drain(&mut s);
    s.authenticated(Err(AuthRefusal::Throttled));
    let out = drain(&mut s);
    assert_eq!(error_code(&out[0]), Some((ErrorCode::Unauthorized, None)));
    assert_eq!(out[1], SessionOutput::Close(CloseReason::Unauthorized));
}

#[test]
fn a_service_token_never_opens_a_session() {
    let mut s = session();
    s.handle_frame(1, br#"{"type":"hello","token":"x"}"#, Encoding::Json);
    drain(&mut s);
    let service = Identity { tenant: "acme".into(), user: "svc".into(), scopes: vec![iris_auth::SERVICE_SCOPE.into()] };
    s.authenticated(Ok(service));
    let out = drain(&mut s);
    assert_eq!(out[0], SessionOutput::AuthFailed);
    assert_eq!(out.last(), Some(&SessionOutput::Close(CloseReason::Unauthorized)));
    assert!(!out.iter().any(|o| matches!(o, SessionOutput::Route { .. })), "no session opened: {out:?}");
}

#[test]
fn a_shard_refusing_the_session_closes_it_with_the_matching_reason() {
    for (code, reason) in [
        (ErrorCode::RateLimited, CloseReason::Refused),
        (ErrorCode::Forbidden, CloseReason::TenantBarred),
        (ErrorCode::Unavailable, CloseReason::Unavailable),
    ] {
        let mut s = session();
        s.handle_frame(1, br#"{"type":"hello","token":"x"}"#, Encoding::Json);
        s.authenticated(Ok(Identity { tenant: "acme".into(), user: "alice".into(), scopes: vec![] }));
        drain(&mut s);
        s.wrote_from_shard(&ServerFrame::error(code, "no", None));
        assert_eq!(drain(&mut s), [SessionOutput::Close(reason)]);
    }
    // Once open, a shard's error is just a frame for the client.
    let mut s = open();
    s.wrote_from_shard(&ServerFrame::error(ErrorCode::RateLimited, "too many subscribers", None));
    assert!(drain(&mut s).is_empty());
}

#[test]
fn sends_are_charged_to_the_tenant_and_a_refused_route_answers_the_send() {
    let mut s = open();
    s.handle_frame(2, br#"{"type":"send","id":"c1","to":"bob","body":"hi"}"#, Encoding::Json);
    s.handle_frame(3, br#"{"type":"typing","to":"bob","state":"start"}"#, Encoding::Json);
    let out = drain(&mut s);
    let routes: Vec<(bool, bool)> = out
        .iter()
        .filter_map(|o| match o {
            SessionOutput::Route { ephemeral, charged, .. } => Some((*ephemeral, *charged)),
            _ => None,
        })
        .collect();
    assert_eq!(routes, [(false, true), (true, false)], "the send is charged, typing is not");
    let SessionOutput::Route { env, .. } = &out[0] else { panic!("{out:?}") };
    s.route_refused(SessionState::refusal_id(env), RouteRefusal::TenantBudget { per_second: 7 });
    s.route_refused(SessionState::refusal_id(env), RouteRefusal::Unavailable);
    let out = drain(&mut s);
    assert_eq!(error_code(&out[0]), Some((ErrorCode::RateLimited, Some("c1"))));
    assert_eq!(error_code(&out[1]), Some((ErrorCode::Unavailable, Some("c1"))));
    // Any other frame that could not be routed is answered too, without an id.
    let SessionOutput::Route { env: typing, .. } = &routes_env(&mut s) else { panic!() };
    s.route_refused(SessionState::refusal_id(typing), RouteRefusal::Unavailable);
    assert_eq!(error_code(&drain(&mut s)[0]), Some((ErrorCode::Unavailable, None)));
}

fn routes_env(s: &mut SessionState) -> SessionOutput {
    s.handle_frame(9, br#"{"type":"sync","after":0}"#, Encoding::Json);
    drain(s).into_iter().find(|o| matches!(o, SessionOutput::Route { .. })).expect("a route")
}

#[test]
fn a_closed_queue_means_shutdown_or_falling_behind() {
    let mut s = open();
    s.queue_closed(true);
    assert_eq!(drain(&mut s), [SessionOutput::Close(CloseReason::Shutdown)]);
    let mut s = open();
    s.queue_closed(false);
    assert_eq!(drain(&mut s), [SessionOutput::Close(CloseReason::Overloaded)]);
}

#[test]
fn hello_timeout_closes() {
    let mut s = session();
    s.handle_timeout(499);
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(500);
    assert_eq!(drain(&mut s).last(), Some(&SessionOutput::Close(CloseReason::Unauthorized)));
}

#[test]
fn send_is_routed_to_the_recipient_in_the_same_tenant() {
    let mut s = open();
    s.handle_frame(3, br#"{"type":"send","id":"c-1","to":"bob","body":"hi"}"#, Encoding::Json);
    let out = drain(&mut s);
    match &out[0] {
        SessionOutput::Route { env, ephemeral: false, .. } => {
            assert_eq!(env.owner.user(), Some(&UserKey::new("acme", "bob")));
            assert!(matches!(&env.body, ShardInput::Send { from, .. } if &**from == "alice"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_large_and_bad_ids_name_the_id() {
    let mut s = open();
    s.handle_frame(3, br#"{"type":"send","id":"c-2","to":"bob","body":"0123456789A"}"#, Encoding::Json);
    assert_eq!(error_code(&drain(&mut s)[0]), Some((ErrorCode::TooLarge, Some("c-2"))));
    let long = format!(r#"{{"type":"send","id":"{}","to":"bob","body":"x"}}"#, "x".repeat(65));
    s.handle_frame(4, long.as_bytes(), Encoding::Json);
    assert_eq!(error_code(&drain(&mut s)[0]).unwrap().0, ErrorCode::BadFrame);
    s.handle_frame(5, br#"{"type":"nope","id":"z"}"#, Encoding::Json);
    assert_eq!(error_code(&drain(&mut s)[0]), Some((ErrorCode::UnknownType, Some("z"))));
}

#[test]
fn three_garbage_frames_in_a_row_close_but_bad_frames_do_not() {
    let mut s = open();
    // Frames are spaced so that the rate limit (10/s) never applies.
    for t in 0..2 {
        s.handle_frame(1_000 + 200 * t, b"garbage", Encoding::Json);
    }
    s.handle_frame(2_000, br#"{"type":"send"}"#, Encoding::Json);
    s.handle_frame(2_200, b"garbage", Encoding::Json);
    assert!(!drain(&mut s).contains(&SessionOutput::Close(CloseReason::Garbage)), "the streak was broken");
    s.handle_frame(2_400, b"garbage", Encoding::Json);
    s.handle_frame(2_600, b"garbage", Encoding::Json);
    assert_eq!(drain(&mut s).last(), Some(&SessionOutput::Close(CloseReason::Garbage)));
}

#[test]
fn rate_limit_answers_rate_limited_with_the_id() {
    let mut s = open();
    let f = br#"{"type":"send","id":"r","to":"bob","body":"x"}"#;
    for _ in 0..5 {
        s.handle_frame(100, f, Encoding::Json);
    }
    drain(&mut s);
    s.handle_frame(100, f, Encoding::Json);
    assert_eq!(error_code(&drain(&mut s)[0]), Some((ErrorCode::RateLimited, Some("r"))));
    // 100 ms later one token (10/s) is back.
    s.handle_frame(200, f, Encoding::Json);
    assert!(matches!(drain(&mut s)[0], SessionOutput::Route { .. }));
}

#[test]
fn heartbeat_timeout_after_two_intervals_of_silence() {
    let mut s = open();
    s.touch(1_000);
    s.handle_timeout(2_999);
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(3_000);
    assert_eq!(drain(&mut s), vec![SessionOutput::Close(CloseReason::Timeout)]);
}

#[test]
fn subscriptions_are_bounded_deduplicated_and_said_goodbye() {
    let mut s = open();
    s.handle_frame(3, br#"{"type":"subscribe","users":["bob","bob","carol","dave"]}"#, Encoding::Json);
    let out = drain(&mut s);
    let routes = out.iter().filter(|o| matches!(o, SessionOutput::Route { .. })).count();
    assert_eq!(routes, 2, "bob once, carol; dave over the limit");
    assert_eq!(error_code(out.last().unwrap()).unwrap().0, ErrorCode::RateLimited);
    let bye = s.farewell();
    assert_eq!(bye.len(), 3, "two unsubscribes and the session end");
    assert!(matches!(bye[2].body, ShardInput::SessionClosed { .. }));
}

#[test]
fn binary_codec_sessions_decode_binary() {
    let mut s = session();
    let hello = ClientFrame::Hello(iris_protocol::Hello { token: "t".into(), device: None, resume_after: None });
    s.handle_frame(1, &hello.to_binary(), Encoding::Binary);
    assert_eq!(s.encoding(), Some(Encoding::Binary));
    assert_eq!(drain(&mut s), vec![SessionOutput::Verify("t".into())]);
}

#[test]
fn a_resync_registers_the_session_and_its_subscriptions_with_the_shard_that_owns_them() {
    // Opened with resume_after 4 at inbox head 7: the replay's seqs count.
    let mut s = open();
    s.handle_frame(3, br#"{"type":"subscribe","users":["carol","dave"]}"#, Encoding::Json);
    drain(&mut s);
    s.sent_message(6);
    s.sent_message(5);
    // The shard owns alice (this session's user) and dave, not carol.
    s.resync(|u| &*u.user == "alice" || &*u.user == "dave");
    let routed: Vec<(String, ShardInput)> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            SessionOutput::Route { env, .. } => Some((env.owner.name().to_string(), env.body)),
            _ => None,
        })
        .collect();
    assert_eq!(routed.len(), 2, "{routed:?}");
    assert!(matches!(&routed[0], (u, ShardInput::SessionResumed { after: 6, .. }) if u == "alice"));
    assert!(matches!(&routed[1], (u, ShardInput::Subscribe { viewer, .. }) if u == "dave" && &**viewer == "alice"));
    // A shard that owns none of them asks for nothing.
    s.resync(|_| false);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn every_transport_closes_with_the_documented_codes() {
    let codes: Vec<(CloseReason, u16)> = [
        CloseReason::ClientGone,
        CloseReason::Timeout,
        CloseReason::Shutdown,
        CloseReason::Garbage,
        CloseReason::Unauthorized,
        CloseReason::Refused,
        CloseReason::TenantBarred,
        CloseReason::TooLarge,
        CloseReason::Overloaded,
        CloseReason::Unavailable,
    ]
    .into_iter()
    .map(|r| (r, r.code()))
    .collect();
    use CloseReason::*;
    assert_eq!(
        codes,
        [
            (ClientGone, 1000),
            (Timeout, 1001),
            (Shutdown, 1001),
            (Garbage, 1002),
            (Unauthorized, 1008),
            (Refused, 1008),
            (TenantBarred, 1008),
            (TooLarge, 1009),
            (Overloaded, 1013),
            (Unavailable, 1013)
        ]
    );
}

#[test]
fn a_token_from_a_throttled_address_is_refused_unread_and_any_failure_is_invalid() {
    let id = Identity { tenant: "acme".into(), user: "alice".into(), scopes: vec![] };
    let mut read = false;
    let throttled = token_checked(false, || -> Result<Identity, ()> {
        read = true;
        Ok(id.clone())
    });
    assert_eq!(throttled, Err(AuthRefusal::Throttled));
    assert!(!read, "a throttled address's token is never verified");
    assert_eq!(token_checked(true, || Err::<Identity, _>("expired")), Err(AuthRefusal::Invalid));
    assert_eq!(token_checked(true, || Ok::<_, ()>(id.clone())), Ok(id));
}

#[test]
fn a_presence_word_from_an_earlier_owner_than_the_last_written_is_dropped() {
    let word =
        |status| ServerFrame::Presence(iris_protocol::PresenceUpdate { user: "bob".into(), status, last_seen: None });
    let (online, offline) = (word(iris_protocol::PresenceStatus::Online), word(iris_protocol::PresenceStatus::Offline));
    let (eu1, eu2, us1) = (OwnerMark::new("eu", 1), OwnerMark::new("eu", 2), OwnerMark::new("us", 1));
    let mut s = open();
    assert!(s.presence_from(&offline, eu2), "a word about a user not followed is written");
    s.handle_frame(3, br#"{"type":"subscribe","users":["bob"]}"#, Encoding::Json);
    drain(&mut s);
    assert!(s.presence_from(&offline, eu1), "the first word");
    assert!(s.presence_from(&online, eu2), "the successor's");
    assert!(!s.presence_from(&offline, eu1), "the zombie's, after its successor's: dropped");
    assert!(s.presence_from(&online, eu2), "the same owner again");
    assert!(s.presence_from(&offline, us1), "another region's owner (bob's home moved)");
    assert!(s.presence_from(&online, eu1), "then the first region's is not compared with it");
    assert!(!s.presence_from(&offline, OwnerMark::new("eu", 0)), "an earlier owner again");
    s.resync(|u| &*u.user == "carol");
    assert!(!s.presence_from(&offline, OwnerMark::new("eu", 0)), "a resync by another shard keeps what was seen");
    s.resync(|_| true);
    drain(&mut s);
    assert!(
        s.presence_from(&offline, OwnerMark::new("eu", 0)),
        "a resync by bob's shard forgets it: its owner answers the subscription made again (epochs may go back)"
    );
    s.handle_frame(4, br#"{"type":"unsubscribe","users":["bob"]}"#, Encoding::Json);
    assert!(s.presence_from(&offline, OwnerMark::new("eu", 0)), "unfollowed: no longer compared");
}
