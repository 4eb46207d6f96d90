//! Request bodies and their validation: pure functions, no I/O.

use iris_auth::valid_name;
use iris_envelope::{ContactSpec, IngestEvent, Millis};
use serde::Deserialize;
use std::sync::Arc;

/// Limits on ingestion requests.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Events in one batch.
    pub max_batch: usize,
    /// Bytes of one event's payload (as JSON text).
    pub max_event_bytes: usize,
    /// Nesting depth of a payload.
    pub max_depth: usize,
    /// How far in the past an event's `ts` may be.
    pub max_age_ms: i64,
    /// How far in the future an event's `ts` may be.
    pub max_skew_ms: i64,
}

/// `PUT /v1/contacts/{user}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactList {
    /// The whole list.
    pub contacts: Vec<ContactIn>,
}

/// One contact in a list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactIn {
    /// The contact's user name.
    pub user: String,
    /// Its circle (default `contacts`).
    #[serde(default)]
    pub circle: Option<String>,
    /// Verified channel hashes.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// Most channels per contact, and their length.
const MAX_CHANNELS: usize = 16;
const MAX_CHANNEL_CHARS: usize = 256;

fn valid_channel(c: &str) -> bool {
    !c.is_empty() && c.len() <= MAX_CHANNEL_CHARS && !c.chars().any(char::is_control)
}

/// Checks a contact list; duplicate names are an error (which one wins would
/// be a guess).
pub fn contact_list(list: ContactList, max: usize) -> Result<Vec<ContactSpec>, String> {
    if list.contacts.len() > max {
        return Err(format!("at most {max} contacts"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(list.contacts.len());
    for (i, c) in list.contacts.into_iter().enumerate() {
        if !valid_name(&c.user) {
            return Err(format!("contacts[{i}].user is not a valid user name"));
        }
        if !seen.insert(c.user.clone()) {
            return Err(format!("contacts[{i}].user {:?} appears twice", c.user));
        }
        if c.circle.as_deref().is_some_and(|x| !valid_name(x)) {
            return Err(format!("contacts[{i}].circle is not a valid circle name"));
        }
        if c.channels.len() > MAX_CHANNELS || !c.channels.iter().all(|x| valid_channel(x)) {
            return Err(format!(
                "contacts[{i}].channels: at most {MAX_CHANNELS}, each 1-{MAX_CHANNEL_CHARS} characters"
            ));
        }
        out.push(ContactSpec { user: c.user, circle: c.circle, channels: c.channels });
    }
    Ok(out)
}

/// `POST /v1/identity/verified` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verified {
    /// The user.
    pub user: String,
    /// The verified channel.
    pub channel: String,
}

/// Checks an identity report.
pub fn verified(v: &Verified) -> Result<(), String> {
    if !valid_name(&v.user) {
        return Err("user is not a valid user name".into());
    }
    if !valid_channel(&v.channel) {
        return Err(format!("channel must be 1-{MAX_CHANNEL_CHARS} characters"));
    }
    Ok(())
}

/// `PUT /v1/circles/{user}/{circle}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// May members see presence?
    #[serde(default)]
    pub presence: Option<bool>,
    /// May members see last_seen?
    #[serde(default)]
    pub last_seen: Option<bool>,
}

/// `POST /v1/events` body: the batch is read loosely so that one bad event
/// gets its own error instead of failing the batch.
#[derive(Debug, Deserialize)]
pub struct Batch {
    /// The events.
    pub events: Vec<serde_json::Value>,
}

/// A valid event and the stream it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// The stream.
    pub stream: Arc<str>,
    /// The event.
    pub event: IngestEvent,
}

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn str_field<'a>(o: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> Result<Option<&'a str>, String> {
    match o.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// Checks one event. `ts` defaults to `now`; `project` and `stream` to
/// `default`.
pub fn event(index: u32, v: &serde_json::Value, now: Millis, limits: &IngestLimits) -> Result<Routed, String> {
    let o = v.as_object().ok_or("an event is a JSON object")?;
    for k in o.keys() {
        if !["type", "ts", "idempotency_key", "project", "stream", "payload"].contains(&k.as_str()) {
            return Err(format!("unknown field {k:?}"));
        }
    }
    let event_type = str_field(o, "type")?.ok_or("type is required")?;
    let key = str_field(o, "idempotency_key")?.ok_or("idempotency_key is required")?;
    let project = str_field(o, "project")?.unwrap_or("default");
    let stream = str_field(o, "stream")?.unwrap_or("default");
    for (name, value, max) in
        [("type", event_type, 128), ("idempotency_key", key, 128), ("project", project, 128), ("stream", stream, 128)]
    {
        if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
            return Err(format!("{name} must be 1-{max} bytes without control characters"));
        }
    }
    let ts = match o.get("ts") {
        None | Some(serde_json::Value::Null) => now,
        Some(t) => t.as_i64().ok_or("ts must be an integer (ms since the epoch)")?,
    };
    if ts < now - limits.max_age_ms || ts > now + limits.max_skew_ms {
        return Err("ts is too far from now".into());
    }
    let payload = o.get("payload").cloned().unwrap_or(serde_json::Value::Null);
    if depth(&payload) > limits.max_depth {
        return Err(format!("payload nests deeper than {}", limits.max_depth));
    }
    let payload = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
    if payload.len() > limits.max_event_bytes {
        return Err(format!("payload is over {} bytes", limits.max_event_bytes));
    }
    Ok(Routed {
        stream: stream.into(),
        event: IngestEvent {
            index,
            event_type: event_type.into(),
            project: project.into(),
            ts,
            key: key.into(),
            payload: payload.into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> IngestLimits {
        IngestLimits { max_batch: 10, max_event_bytes: 100, max_depth: 3, max_age_ms: 1_000_000, max_skew_ms: 1_000 }
    }

    #[test]
    fn events_are_checked_one_by_one() {
        let now = 10_000_000;
        let ok =
            event(0, &json!({"type": "click", "idempotency_key": "k", "payload": {"a": 1}}), now, &limits()).unwrap();
        assert_eq!((ok.stream.as_ref(), ok.event.ts, ok.event.project.as_ref()), ("default", now, "default"));
        for bad in [
            json!("x"),
            json!({"idempotency_key": "k"}),
            json!({"type": "t"}),
            json!({"type": "t", "idempotency_key": "k", "extra": 1}),
            json!({"type": "t", "idempotency_key": "k", "ts": "yesterday"}),
            json!({"type": "t", "idempotency_key": "k", "ts": now + 5_000}),
            json!({"type": "t", "idempotency_key": "k", "payload": {"a": {"b": {"c": {"d": 1}}}}}),
            json!({"type": "t", "idempotency_key": "k", "payload": "x".repeat(200)}),
            json!({"type": "", "idempotency_key": "k"}),
        ] {
            assert!(event(0, &bad, now, &limits()).is_err(), "{bad}");
        }
    }

    #[test]
    fn contact_lists_refuse_duplicates_and_bad_names() {
        let list = |v: serde_json::Value| serde_json::from_value::<ContactList>(v).unwrap();
        assert!(contact_list(list(json!({"contacts": [{"user": "a"}, {"user": "a"}]})), 10).is_err());
        assert!(contact_list(list(json!({"contacts": [{"user": ""}]})), 10).is_err());
        assert!(contact_list(list(json!({"contacts": [{"user": "a"}, {"user": "b"}]})), 1).is_err());
        let ok =
            contact_list(list(json!({"contacts": [{"user": "a", "circle": "w", "channels": ["tel:1"]}]})), 10).unwrap();
        assert_eq!(ok[0].channels, vec!["tel:1".to_owned()]);
    }
}
