//! An example downstream consumer of a region's graph topic: it rebuilds one
//! tenant's contact graph from `iris.<region>.graph`, by the rules of
//! docs/events-schema.md ("Rebuilding the graph"). A search indexer or a
//! recommender starts the same way.
//!
//! Each owner's records are in one partition, in the order the owner's
//! shard applied them, so folding every partition in its own order gives
//! each owner's final state whatever the interleaving across partitions.
//! Records of a `v` this consumer does not know stop it (the schema's
//! rule); graph record types it does not know are skipped.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The record version this consumer understands.
pub const KNOWN_VERSION: u64 = 1;

/// One contact as the graph holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactState {
    /// The circle it is in.
    pub circle: String,
    /// The verified channels the owner knows it under.
    pub channels: Vec<String>,
}

/// One circle's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PolicyState {
    /// Members may see online/away.
    pub presence: bool,
    /// Members may see last_seen.
    pub last_seen: bool,
}

/// A tenant's contact graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Graph {
    /// Owner → contact → state.
    pub contacts: BTreeMap<String, BTreeMap<String, ContactState>>,
    /// Owner → circle → policy (circles whose policy was set).
    pub policies: BTreeMap<String, BTreeMap<String, PolicyState>>,
    /// User → verified channels.
    pub identities: BTreeMap<String, BTreeSet<String>>,
    /// Records folded in.
    #[serde(skip)]
    pub records: u64,
}

fn text<'a>(v: &'a serde_json::Value, field: &str) -> anyhow::Result<&'a str> {
    v.get(field).and_then(|f| f.as_str()).ok_or_else(|| anyhow::anyhow!("record without {field:?}: {v}"))
}

impl Graph {
    /// Folds one topic value (`{"seq":…,"event":{…}}`) in, if it is of
    /// `tenant`.
    pub fn fold(&mut self, tenant: &str, value: &str) -> anyhow::Result<()> {
        let v: serde_json::Value = serde_json::from_str(value)?;
        let event = v.get("event").ok_or_else(|| anyhow::anyhow!("value without \"event\": {value}"))?;
        let version = event.get("v").and_then(|n| n.as_u64()).unwrap_or(0);
        anyhow::ensure!(
            version == KNOWN_VERSION,
            "record version {version} is unknown here: stopping, as the schema says"
        );
        if text(event, "tenant")? != tenant {
            return Ok(());
        }
        self.records += 1;
        match text(event, "type")? {
            "contact.upserted" => {
                let channels = event
                    .get("channels")
                    .and_then(|c| c.as_array())
                    .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                let state = ContactState { circle: text(event, "circle")?.to_owned(), channels };
                self.contacts
                    .entry(text(event, "owner")?.to_owned())
                    .or_default()
                    .insert(text(event, "contact")?.to_owned(), state);
            }
            "contact.removed" => {
                let owner = text(event, "owner")?;
                if let Some(contacts) = self.contacts.get_mut(owner) {
                    contacts.remove(text(event, "contact")?);
                    if contacts.is_empty() {
                        self.contacts.remove(owner);
                    }
                }
            }
            "circle.policy_changed" => {
                let flag = |f: &str| event.get(f).and_then(|b| b.as_bool()).unwrap_or(false);
                let policy = PolicyState { presence: flag("presence"), last_seen: flag("last_seen") };
                self.policies
                    .entry(text(event, "owner")?.to_owned())
                    .or_default()
                    .insert(text(event, "circle")?.to_owned(), policy);
            }
            "identity.verified" => {
                self.identities
                    .entry(text(event, "user")?.to_owned())
                    .or_default()
                    .insert(text(event, "channel")?.to_owned());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Reads `iris.<region>.graph` from the start to its current end and
/// rebuilds `tenant`'s graph.
pub async fn rebuild(kafka: &str, region: &str, tenant: &str) -> anyhow::Result<Graph> {
    let topic = iris_kafka::logs::LogTopics::for_region(region).graph;
    let mut graph = Graph::default();
    let mut failed = None;
    iris_kafka::logs::read_to_end(kafka, &topic, |value| {
        if failed.is_none() {
            if let Err(e) = graph.fold(tenant, value) {
                failed = Some(e);
            }
        }
    })
    .await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(graph),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_records_into_the_latest_state() {
        let mut g = Graph::default();
        let records = [
            r#"{"seq":1,"event":{"v":1,"type":"contact.upserted","tenant":"acme","owner":"bob","contact":"cat","circle":"work","channels":["tel:1"],"ts":1}}"#,
            r#"{"seq":2,"event":{"v":1,"type":"contact.upserted","tenant":"acme","owner":"bob","contact":"dan","circle":"contacts","channels":[],"ts":2}}"#,
            r#"{"seq":3,"event":{"v":1,"type":"contact.removed","tenant":"acme","owner":"bob","contact":"cat","ts":3}}"#,
            r#"{"seq":4,"event":{"v":1,"type":"circle.policy_changed","tenant":"acme","owner":"bob","circle":"work","presence":true,"last_seen":false,"ts":4}}"#,
            r#"{"seq":5,"event":{"v":1,"type":"identity.verified","tenant":"acme","user":"bob","channel":"tel:9","ts":5}}"#,
            r#"{"seq":9,"event":{"v":1,"type":"contact.upserted","tenant":"globex","owner":"bob","contact":"eve","circle":"x","channels":[],"ts":5}}"#,
            r#"{"seq":6,"event":{"v":1,"type":"something.new","tenant":"acme","ts":6}}"#,
        ];
        for r in records {
            g.fold("acme", r).unwrap();
        }
        assert_eq!(g.records, 6, "the other tenant's record is not folded");
        assert_eq!(g.contacts["bob"].keys().collect::<Vec<_>>(), ["dan"]);
        assert!(g.policies["bob"]["work"].presence);
        assert!(g.identities["bob"].contains("tel:9"));
        let err = g.fold("acme", r#"{"seq":7,"event":{"v":2,"tenant":"acme","type":"contact.removed"}}"#);
        assert!(err.is_err(), "an unknown version stops the consumer");
    }
}
