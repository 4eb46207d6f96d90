//! Presence, contacts and circles end to end.

mod common;

use common::*;
use iris_client::ServerFrame;
use iris_protocol::{PresenceStatus, SetStatus};

#[tokio::test]
async fn presence_follows_contacts_and_circle_policy() {
    let node = start();
    let (mut bob, _) = node.login("acme", "bob").await;
    let (mut dave, _) = node.login("acme", "dave").await;
    let (mut eve, _) = node.login("acme", "eve").await;

    // Nobody is bob's contact yet: both see offline, no last_seen.
    dave.subscribe(&["bob"]).await.unwrap();
    eve.subscribe(&["bob"]).await.unwrap();
    let p = presence_of(&mut dave, "bob").await;
    assert_eq!((p.status, p.last_seen), (PresenceStatus::Offline, None));
    presence_of(&mut eve, "bob").await;

    // bob puts dave in the default circle: dave sees him online at once.
    bob.send_text(r#"{"type":"contacts","upsert":[{"user":"dave"}]}"#).await.unwrap();
    let ok = expect(&mut bob, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    assert!(matches!(ok, ServerFrame::ContactsOk(c) if c.count == 1));
    assert_eq!(presence_of(&mut dave, "bob").await.status, PresenceStatus::Online);

    bob.set_presence(SetStatus::Away).await.unwrap();
    assert_eq!(presence_of(&mut dave, "bob").await.status, PresenceStatus::Away);

    // The default circle loses presence: dave now sees offline.
    bob.send_text(r#"{"type":"circle_policy","circle":"contacts","presence":false}"#).await.unwrap();
    expect(&mut bob, "circle_policy_ok", |f| matches!(f, ServerFrame::CirclePolicyOk(_))).await;
    let p = presence_of(&mut dave, "bob").await;
    assert_eq!((p.status, p.last_seen), (PresenceStatus::Offline, None));

    // A new circle allows nothing until its policy is set.
    bob.send_text(r#"{"type":"contacts","upsert":[{"user":"dave","circle":"friends"}]}"#).await.unwrap();
    expect(&mut bob, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    bob.send_text(r#"{"type":"circle_policy","circle":"friends","presence":true,"last_seen":true}"#).await.unwrap();
    expect(&mut bob, "circle_policy_ok", |f| matches!(f, ServerFrame::CirclePolicyOk(_))).await;
    assert_eq!(presence_of(&mut dave, "bob").await.status, PresenceStatus::Away);

    // bob leaves: dave sees offline with last_seen; eve (no contact) saw
    // nothing change and receives nothing. Prove it by a later frame: eve
    // re-subscribes and gets exactly her one answer.
    bob.close().await.unwrap();
    let p = presence_of(&mut dave, "bob").await;
    assert_eq!(p.status, PresenceStatus::Offline);
    assert!(p.last_seen.is_some());
    eve.subscribe(&["bob"]).await.unwrap();
    let p = presence_of(&mut eve, "bob").await;
    assert_eq!((p.status, p.last_seen), (PresenceStatus::Offline, None));
    assert!(
        eve.buffered().next().is_none(),
        "eve saw a change she may not see: {:?}",
        eve.buffered().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn subscribe_answers_every_user_once_and_does_not_leak_existence() {
    let node = start();
    let (mut dave, _) = node.login("acme", "dave").await;
    dave.subscribe(&["ghost", "ghost", "dave"]).await.unwrap();
    let p = presence_of(&mut dave, "ghost").await;
    assert_eq!((p.status, p.last_seen), (PresenceStatus::Offline, None));
    // Yourself: allowed, and you see yourself online.
    assert_eq!(presence_of(&mut dave, "dave").await.status, PresenceStatus::Online);
    dave.ping(1).await.unwrap();
    expect(&mut dave, "pong", |f| matches!(f, ServerFrame::Pong(_))).await;
    let extra: Vec<_> = dave.buffered().filter(|f| matches!(f, ServerFrame::Presence(_))).collect();
    assert!(extra.is_empty(), "duplicate names count once: {extra:?}");
}

#[tokio::test]
async fn invisible_is_durable_and_freezes_last_seen() {
    let mut node = start();
    let (mut bob, _) = node.login("acme", "bob").await;
    bob.send_text(r#"{"type":"contacts","upsert":[{"user":"dave"}]}"#).await.unwrap();
    expect(&mut bob, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    let (mut dave, _) = node.login("acme", "dave").await;
    dave.subscribe(&["bob"]).await.unwrap();
    assert_eq!(presence_of(&mut dave, "bob").await.status, PresenceStatus::Online);
    bob.set_presence(SetStatus::Invisible).await.unwrap();
    let frozen = presence_of(&mut dave, "bob").await;
    assert_eq!(frozen.status, PresenceStatus::Offline);
    assert!(frozen.last_seen.is_some());

    // Survives a crash: after restart bob connects and still looks offline
    // with the same last_seen.
    node.kill9();
    let dir = node.dir.clone();
    let node = start_in(&dir, "");
    let (_bob, _) = node.login("acme", "bob").await;
    let (mut dave, _) = node.login("acme", "dave").await;
    dave.subscribe(&["bob"]).await.unwrap();
    let p = presence_of(&mut dave, "bob").await;
    assert_eq!((p.status, p.last_seen), (PresenceStatus::Offline, frozen.last_seen));
}

#[tokio::test]
async fn contacts_count_moves_and_removals() {
    let node = start();
    let (mut bob, _) = node.login("acme", "bob").await;
    bob.send_text(r#"{"type":"contacts","upsert":[{"user":"a"},{"user":"b","circle":"work"},{"user":"c"}]}"#)
        .await
        .unwrap();
    let f = expect(&mut bob, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    assert!(matches!(f, ServerFrame::ContactsOk(c) if c.count == 3));
    bob.send_text(r#"{"type":"contacts","upsert":[{"user":"a","circle":"work"}],"remove":["c","nobody"]}"#)
        .await
        .unwrap();
    let f = expect(&mut bob, "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await;
    assert!(matches!(f, ServerFrame::ContactsOk(c) if c.count == 2));
}
