//! The contact graph and its log.

use super::*;

#[test]
fn contact_limit_is_enforced_without_partial_changes() {
    let mut h = Harness::new();
    let many: Vec<ContactEntry> = (0..6).map(|i| ContactEntry { user: format!("u{i}"), circle: None }).collect();
    h.input("bob", ShardInput::Contacts { session: addr("e1", 1), upsert: many, remove: vec![] });
    assert!(h.pending.is_empty());
    assert!(matches!(&h.notices()[0].1, Notice::Refused { code, .. } if *code == ErrorCode::Forbidden));
    assert!(h.state.users[&key("bob")].contacts.is_empty());
}

fn graph_types(b: &WriteBatch) -> Vec<String> {
    b.ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Log { kind: LogKind::Graph, record, .. } => {
                let v: serde_json::Value = serde_json::from_slice(record).unwrap();
                Some(format!("{} {}", v["type"].as_str().unwrap(), v["contact"].as_str().unwrap_or("")))
            }
            _ => None,
        })
        .collect()
}

fn spec(user: &str, circle: Option<&str>, channels: &[&str]) -> iris_envelope::ContactSpec {
    iris_envelope::ContactSpec {
        user: user.into(),
        circle: circle.map(Into::into),
        channels: channels.iter().map(|c| c.to_string()).collect(),
    }
}

#[test]
fn contact_list_replacement_emits_only_the_differences() {
    let mut h = Harness::new();
    let http = addr("http", 77);
    h.input(
        "bob",
        ShardInput::ContactsReplace {
            list: vec![spec("a", None, &[]), spec("b", Some("work"), &["tel:1"])],
            reply: http.clone(),
        },
    );
    let b = h.commit_all();
    assert_eq!(graph_types(&b[0]), vec!["contact.upserted a", "contact.upserted b"]);
    // Same list again: nothing written, nothing emitted.
    h.input(
        "bob",
        ShardInput::ContactsReplace {
            list: vec![spec("a", None, &[]), spec("b", Some("work"), &["tel:1"])],
            reply: http.clone(),
        },
    );
    assert!(h.pending.is_empty());
    // Move b, drop a, add c.
    h.input(
        "bob",
        ShardInput::ContactsReplace {
            list: vec![spec("b", Some("family"), &["tel:1"]), spec("c", None, &[])],
            reply: http.clone(),
        },
    );
    let b = h.commit_all();
    assert_eq!(graph_types(&b[0]), vec!["contact.upserted b", "contact.upserted c", "contact.removed a"]);
    let replies: Vec<_> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Edge(EdgeEnvelope { body: EdgeInput::Reply { reply, .. }, .. }) => Some(reply),
            _ => None,
        })
        .collect();
    assert_eq!(replies.last(), Some(&ServiceReply::ContactsSynced { upserted: 2, removed: 1, count: 2 }));
}
