//! The contract every [`Store`] backend must pass. Each backend's tests call
//! [`run_all`] on a fresh, empty store (the tests use unique tenants, so a
//! shared server is fine too).

use crate::*;
use bytes::Bytes;

fn msg(seq: InboxSeq, from: &str, body: &str) -> StoredMessage {
    StoredMessage {
        seq,
        msg_id: format!("m-{seq}").into(),
        from: from.into(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        ts: 1_000 + seq as i64,
    }
}

fn contact(circle: &str) -> Contact {
    Contact { circle: circle.into(), channels: vec![format!("sha256:{circle}")] }
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_owned()) }
}

/// Runs every contract check; `Err` names the first that failed.
pub async fn run_all(store: &dyn Store, tenant: &str) -> Result<(), String> {
    inbox_append_and_read(store, tenant).await?;
    taken_seqs_conflict(store, tenant).await?;
    dedup_records(store, tenant).await?;
    meta_contacts_policies(store, tenant).await?;
    receipts(store, tenant).await?;
    tenants_do_not_cross(store, tenant).await?;
    identities_logs_events_rollups(store, tenant).await?;
    retention(store, tenant).await?;
    tenant_deletion(store, tenant).await?;
    if store.keeps_outbox() {
        outbox(store, tenant).await?;
    }
    if store.keeps_api_keys() {
        api_keys(store, tenant).await?;
    }
    if store.keeps_bars() {
        bars(store, tenant).await?;
    }
    Ok(())
}

/// Tenant bars (ADR 0030): a bar holds its first id, is listed until
/// lifted, and only confirmations of that id and region count.
async fn bars(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let (t, other) = (format!("{tenant}-bar"), format!("{tenant}-bar-other"));
    let listed = |bars: &[Bar], t: &str| bars.iter().find(|b| &*b.tenant == t).map(|b| b.id);
    check(listed(&store.barred_tenants().await.map_err(e)?, &t).is_none(), "a tenant is not barred at first")?;
    check(store.bar_tenant(&t, 7).await.map_err(e)? == 7, "a new bar holds its id")?;
    check(store.bar_tenant(&t, 9).await.map_err(e)? == 7, "barring again keeps the first bar")?;
    let bars = store.barred_tenants().await.map_err(e)?;
    check(listed(&bars, &t) == Some(7) && listed(&bars, &other).is_none(), "only the barred tenant is listed")?;
    let bar = Bar { tenant: t.as_str().into(), id: 7 };
    store.confirm_bar("r1", &bar, 3).await.map_err(e)?;
    store.confirm_bar("r1", &bar, 0).await.map_err(e)?;
    store.confirm_bar("r2", &bar, 5).await.map_err(e)?;
    store.confirm_bar("r1", &Bar { tenant: t.as_str().into(), id: 6 }, 4).await.map_err(e)?;
    let mut got = store.bar_confirmations("r1", &t, 7).await.map_err(e)?;
    got.sort_unstable();
    check(got == vec![0, 3], "a region's confirmations of the bar, not another region's or bar's")?;
    check(store.bar_confirmations("r1", &other, 7).await.map_err(e)?.is_empty(), "no other tenant's")?;
    check(store.lift_bar(&t).await.map_err(e)?, "lifting a bar finds it")?;
    check(!store.lift_bar(&t).await.map_err(e)?, "lifting it again finds none")?;
    check(listed(&store.barred_tenants().await.map_err(e)?, &t).is_none(), "a lifted bar is not listed")?;
    check(store.bar_tenant(&t, 8).await.map_err(e)? == 8, "a new bar after a lift has its own id")?;
    check(
        store.bar_confirmations("r1", &t, 8).await.map_err(e)?.is_empty(),
        "the old bar's confirmations do not count",
    )?;
    store.lift_bar(&t).await.map_err(e)?;
    Ok(())
}

/// An API key hash that names its tenant, for [`fill`].
fn fake_key_hash(tenant: &str) -> String {
    format!("{:064x}", tenant.len() * 7919 + tenant.bytes().map(usize::from).sum::<usize>())
}

/// Everything one tenant writes, for [`tenant_deletion`].
async fn fill(store: &dyn Store, tenant: &str, outbox: &OutboxId) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let (ann, bob) = (UserKey::new(tenant, "ann"), UserKey::new(tenant, "bob"));
    let mut b = WriteBatch::default();
    b.push(WriteOp::Message { user: bob.clone(), message: msg(1, "ann", "hi") });
    let record = DedupRecord { msg_id: "m-1".into(), ts: 1, to: "bob".into(), seq: 1 };
    b.push(WriteOp::Dedup { key: DedupKey { sender: ann.clone(), client_id: "c1".into() }, record });
    // Versioned: once the tenant is deleted, a new owner's first meta (of
    // a tenant of the same name) must not be refused by what was left.
    b.push(WriteOp::Meta { user: bob.clone(), meta: UserMeta { acked: 1, ..UserMeta::default() }, version: 9 << 32 });
    b.push(WriteOp::Contact { owner: ann.clone(), contact: "bob".into(), record: contact("work") });
    b.push(WriteOp::Identity { user: ann.clone(), channel: "tel:1".into() });
    b.push(WriteOp::Policy { owner: ann.clone(), circle: "work".into(), policy: CirclePolicy::default() });
    let receipt = PendingReceipt { msg_id: "m-1".into(), by: "bob".into(), state: ReceiptState::Delivered };
    b.push(WriteOp::Receipt { user: ann.clone(), receipt });
    let session = SessionRecord { nodes: vec!["n".into()], region: "r".into(), sessions: 1, last_seen: None };
    b.push(WriteOp::Session { user: bob.clone(), record: session.clone(), version: 1 });
    // A user with nothing but a session record (online, never written to).
    b.push(WriteOp::Session { user: UserKey::new(tenant, "cy"), record: session, version: 1 });
    b.push(WriteOp::Log { kind: LogKind::Graph, tenant: tenant.into(), record: Bytes::from_static(b"{}") });
    b.push(WriteOp::Log { kind: LogKind::Events, tenant: tenant.into(), record: Bytes::from_static(b"{}") });
    let key = EventKey { tenant: tenant.into(), stream: "s".into(), key: "k".into() };
    b.push(WriteOp::EventSeen { key, ts: 1 });
    let rk = RollupKey { tenant: tenant.into(), event_type: "x".into(), project: "p".into(), hour_ms: 0 };
    b.push(WriteOp::RollupAdd { key: rk, by: 1 });
    if store.keeps_outbox() {
        b.outbox = Some(OutboxTarget { id: outbox.clone(), max: 100 });
    }
    store.commit(b).await.map_err(e)?;
    if store.keeps_api_keys() {
        store.put_api_key(&fake_key_hash(tenant), tenant).await.map_err(e)?;
    }
    Ok(())
}

/// What is left of a tenant [`fill`] wrote, one line per kind of record.
async fn left_of(store: &dyn Store, tenant: &str, outbox: &OutboxId) -> Result<Vec<String>, String> {
    let e = |e: StoreError| e.to_string();
    let (ann, bob) = (UserKey::new(tenant, "ann"), UserKey::new(tenant, "bob"));
    let mut left = Vec::new();
    let mut note = |held: bool, what: &str| {
        if held {
            left.push(what.to_owned());
        }
    };
    note(!store.read_inbox(&bob, 0, 10, 1 << 20).await.map_err(e)?.messages.is_empty(), "inbox");
    note(store.dedup(&DedupKey { sender: ann.clone(), client_id: "c1".into() }).await.map_err(e)?.is_some(), "dedup");
    let (a, b) = (store.load_user(&ann).await.map_err(e)?, store.load_user(&bob).await.map_err(e)?);
    note(b.meta != UserMeta::default() || b.head != 0, "meta or head");
    note(!a.contacts.is_empty(), "contacts");
    note(!a.identities.is_empty(), "identities");
    note(!a.policies.is_empty(), "policies");
    note(!store.pending_receipts(&ann, 10).await.map_err(e)?.is_empty(), "receipts");
    note(store.session(&bob).await.map_err(e)?.is_some(), "session");
    note(store.session(&UserKey::new(tenant, "cy")).await.map_err(e)?.is_some(), "a session record alone");
    for kind in [LogKind::Graph, LogKind::Events] {
        note(!store.read_log(kind, tenant, 0, 10).await.map_err(e)?.is_empty(), "log");
    }
    let key = EventKey { tenant: tenant.into(), stream: "s".into(), key: "k".into() };
    note(store.event_seen(&key).await.map_err(e)?, "event key");
    note(!store.rollups(tenant, None, i64::MIN, i64::MAX).await.map_err(e)?.is_empty(), "rollups");
    note(store.retained_tenants().await.map_err(e)?.iter().any(|t| t == tenant), "listed for retention");
    if store.keeps_outbox() {
        let held = store.read_outbox(outbox, 0, 100).await.map_err(e)?;
        note(held.iter().any(|h| &*h.tenant == tenant), "outbox");
    }
    if store.keeps_api_keys() {
        let hash = fake_key_hash(tenant);
        note(store.api_key_tenant(&hash).await.map_err(e)?.is_some(), "api key");
    }
    Ok(left)
}

/// Deleting a tenant removes every kind of record it has, on this
/// backend, and nothing of another tenant, even one whose name begins
/// with the deleted one's (or holds glob characters).
async fn tenant_deletion(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let gone = format!("{tenant}-del*");
    let kept = [format!("{tenant}-del*x"), format!("{tenant}-del"), format!("{tenant}-del*:y")];
    let outbox = OutboxId { region: format!("{tenant}-del-region").into(), shard: 1 };
    for t in std::iter::once(&gone).chain(&kept) {
        fill(store, t, &outbox).await?;
    }
    for t in std::iter::once(&gone).chain(&kept) {
        check(left_of(store, t, &outbox).await?.len() >= 10, "every kind of record was written")?;
    }
    let full = left_of(store, &kept[0], &outbox).await?;
    check(store.delete_tenant(&gone).await.map_err(e)? > 0, "deleting counts what went")?;
    let left = left_of(store, &gone, &outbox).await?;
    if !left.is_empty() {
        return Err(format!("a deleted tenant keeps its {left:?}"));
    }
    for t in &kept {
        check(left_of(store, t, &outbox).await? == full, "no other tenant loses anything")?;
    }
    let mut again = WriteBatch::default();
    let bob = UserKey::new(gone.as_str(), "bob");
    again.push(WriteOp::Meta { user: bob.clone(), meta: UserMeta { acked: 2, ..UserMeta::default() }, version: 1 });
    let written = store.commit(again).await;
    check(written.is_ok(), &format!("no version of a deleted tenant's meta is left to fence a new one ({written:?})"))?;
    check(store.load_user(&bob).await.map_err(e)?.meta.acked == 2, "the new meta is read")?;
    store.delete_tenant(&gone).await.map_err(e)?;
    Ok(())
}

/// Retention's primitives: a tenant with a log or rollups is listed; a log
/// trim removes exactly the records up to its seq, a rollup trim exactly
/// the hours before its cut, and neither touches another tenant.
async fn retention(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let t = format!("{tenant}-ret");
    let other = format!("{tenant}-ret-other");
    let hour = 3_600_000i64;
    for who in [&t, &other] {
        let mut b = WriteBatch::default();
        for i in 0..5 {
            let record = Bytes::from(format!(r#"{{"v":1,"ts":{i}}}"#));
            b.push(WriteOp::Log { kind: LogKind::Graph, tenant: who.as_str().into(), record });
        }
        for h in 0..3 {
            let key = RollupKey {
                tenant: who.as_str().into(),
                event_type: "x".into(),
                project: "p".into(),
                hour_ms: h * hour,
            };
            b.push(WriteOp::RollupAdd { key, by: 1 });
        }
        store.commit(b).await.map_err(e)?;
    }
    let listed = store.retained_tenants().await.map_err(e)?;
    check(listed.contains(&t) && listed.contains(&other), "tenants with logs and rollups are listed")?;
    let log = store.read_log(LogKind::Graph, &t, 0, 100).await.map_err(e)?;
    check(log.len() == 5, "five records")?;
    store.trim_log(LogKind::Graph, &t, log[2].seq).await.map_err(e)?;
    let left = store.read_log(LogKind::Graph, &t, 0, 100).await.map_err(e)?;
    check(left == log[3..], "a log trim removes the records up to its seq, and only those")?;
    check(store.read_log(LogKind::Graph, &other, 0, 100).await.map_err(e)?.len() == 5, "other tenants keep theirs")?;
    check(store.trim_rollups(&t, 2 * hour).await.map_err(e)? == 2, "a rollup trim counts what went")?;
    let hours: Vec<i64> =
        store.rollups(&t, None, 0, i64::MAX).await.map_err(e)?.iter().map(|(k, _)| k.hour_ms).collect();
    check(hours == [2 * hour], "a rollup trim removes the hours before its cut, and only those")?;
    check(store.rollups(&other, None, 0, i64::MAX).await.map_err(e)?.len() == 3, "other tenants keep theirs")?;
    Ok(())
}

/// API keys: stored by hash, looked up, revoked by a prefix by their own
/// tenant only.
async fn api_keys(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let hash = |n: u8| format!("{:02x}{}", n, tenant.bytes().map(|b| format!("{b:02x}")).collect::<String>());
    let other = format!("{tenant}-other");
    store.put_api_key(&hash(1), tenant).await.map_err(e)?;
    store.put_api_key(&hash(2), tenant).await.map_err(e)?;
    store.put_api_key(&hash(3), &other).await.map_err(e)?;
    check(store.api_key_tenant(&hash(1)).await.map_err(e)?.as_deref() == Some(tenant), "a key names its tenant")?;
    check(store.api_key_tenant(&hash(9)).await.map_err(e)?.is_none(), "an unknown hash names nobody")?;
    check(!store.revoke_api_key(&other, &hash(1)).await.map_err(e)?, "another tenant cannot revoke a key")?;
    check(store.api_key_tenant(&hash(1)).await.map_err(e)?.is_some(), "so it still works")?;
    check(store.revoke_api_key(tenant, &hash(1)[..16.min(hash(1).len())]).await.map_err(e)?, "revoked by id")?;
    check(store.api_key_tenant(&hash(1)).await.map_err(e)?.is_none(), "a revoked key names nobody")?;
    check(store.api_key_tenant(&hash(2)).await.map_err(e)?.is_some(), "the tenant's other key stays")?;
    check(store.api_key_tenant(&hash(3)).await.map_err(e)?.as_deref() == Some(other.as_str()), "others stay")?;
    Ok(())
}

/// Log records go to the batch's outbox in the same write, in commit
/// order, with their log seqs; trimmed entries are gone; a full outbox
/// refuses a batch with log records, applying nothing of it.
async fn outbox(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    // A region of its own per run: the server may be shared.
    let shard = OutboxId { region: format!("{tenant}-region").into(), shard: 3 };
    let target = OutboxTarget { id: shard.clone(), max: 3 };
    let log = |kind, record: &str| WriteOp::Log { kind, tenant: tenant.into(), record: Bytes::from(record.to_owned()) };
    let mut batch = WriteBatch { outbox: Some(target.clone()), ..WriteBatch::default() };
    batch.push(log(LogKind::Graph, "o1"));
    batch.push(WriteOp::Identity { user: UserKey::new(tenant, "olga"), channel: "tel:o".into() });
    batch.push(log(LogKind::Events, "o2"));
    store.commit(batch).await.map_err(e)?;
    let mut quiet = WriteBatch { outbox: Some(target.clone()), ..WriteBatch::default() };
    quiet.push(WriteOp::Identity { user: UserKey::new(tenant, "olga"), channel: "tel:p".into() });
    store.commit(quiet).await.map_err(e)?;
    let mut elsewhere = WriteBatch::default();
    elsewhere.push(log(LogKind::Graph, "not-in-outbox"));
    store.commit(elsewhere).await.map_err(e)?;

    let held = store.read_outbox(&shard, 0, 10).await.map_err(e)?;
    check(held.len() == 2, "only the outbox batch's two log records are in the outbox")?;
    check(held[0].pos < held[1].pos, "outbox positions increase in commit order")?;
    check(held[0].kind == LogKind::Graph && held[1].kind == LogKind::Events, "entries keep their log")?;
    check(held.iter().all(|h| &*h.tenant == tenant), "entries keep their tenant")?;
    check(&held[0].record[..] == b"o1" && &held[1].record[..] == b"o2", "entries keep their record")?;
    let graph = store.read_log(LogKind::Graph, tenant, 0, 1_000).await.map_err(e)?;
    let in_log = graph.iter().find(|l| &l.record[..] == b"o1").ok_or("the record is in the log too")?;
    check(in_log.seq == held[0].seq, "an outbox entry carries its log seq")?;
    check(store.read_outbox(&shard, held[0].pos, 10).await.map_err(e)?.len() == 1, "reads start after `after`")?;

    check(store.trim_outbox(&shard, held[0].pos).await.map_err(e)? == 1, "trim removes what it covers")?;
    let left = store.read_outbox(&shard, 0, 10).await.map_err(e)?;
    check(left.len() == 1 && left[0].pos == held[1].pos, "trim keeps what follows")?;

    let full = OutboxTarget { id: shard.clone(), max: 1 };
    let mut refused = WriteBatch { outbox: Some(full.clone()), ..WriteBatch::default() };
    refused.push(log(LogKind::Graph, "refused"));
    refused.push(WriteOp::Identity { user: UserKey::new(tenant, "olga"), channel: "tel:refused".into() });
    check(
        matches!(store.commit(refused).await, Err(StoreError::Unavailable(_))),
        "a full outbox refuses a batch with log records as unavailable",
    )?;
    let olga = store.load_user(&UserKey::new(tenant, "olga")).await.map_err(e)?;
    check(!olga.identities.iter().any(|c| c == "tel:refused"), "nothing of a refused batch applies")?;
    let graph = store.read_log(LogKind::Graph, tenant, 0, 1_000).await.map_err(e)?;
    check(!graph.iter().any(|l| &l.record[..] == b"refused"), "a refused batch logs nothing")?;
    let mut no_logs = WriteBatch { outbox: Some(full.clone()), ..WriteBatch::default() };
    no_logs.push(WriteOp::Identity { user: UserKey::new(tenant, "olga"), channel: "tel:fine".into() });
    store.commit(no_logs).await.map_err(e)?;
    let after_trim = store.read_outbox(&shard, 0, 10).await.map_err(e)?;
    store.trim_outbox(&shard, after_trim.last().map_or(0, |l| l.pos)).await.map_err(e)?;
    check(store.read_outbox(&shard, 0, 10).await.map_err(e)?.is_empty(), "a full trim empties the outbox")?;
    // A store that lost writes counts positions from above the published.
    check(store.raise_outbox_position(&shard, 1_000).await.map_err(e)?, "a position behind is raised")?;
    check(!store.raise_outbox_position(&shard, 5).await.map_err(e)?, "a position ahead stays")?;
    let mut next = WriteBatch { outbox: Some(target.clone()), ..WriteBatch::default() };
    next.push(log(LogKind::Graph, "after-raise"));
    store.commit(next).await.map_err(e)?;
    let held = store.read_outbox(&shard, 1_000, 10).await.map_err(e)?;
    check(held.len() == 1 && held[0].pos > 1_000, "positions go on above the raised one")?;
    store.trim_outbox(&shard, held[0].pos).await.map_err(e)?;
    let elsewhere = OutboxId { region: format!("{tenant}-elsewhere").into(), shard: 3 };
    let mut there =
        WriteBatch { outbox: Some(OutboxTarget { id: elsewhere.clone(), max: 3 }), ..WriteBatch::default() };
    there.push(log(LogKind::Graph, "there"));
    store.commit(there).await.map_err(e)?;
    check(store.read_outbox(&shard, 0, 10).await.map_err(e)?.is_empty(), "regions have outboxes of their own")?;
    check(store.read_outbox(&elsewhere, 0, 10).await.map_err(e)?.len() == 1, "the other region's has its record")?;
    Ok(())
}

async fn identities_logs_events_rollups(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let dan = UserKey::new(tenant, "dan");
    let other = format!("{tenant}-x");
    let mut batch = WriteBatch::default();
    batch.push(WriteOp::Identity { user: dan.clone(), channel: "tel:abc".into() });
    for i in 0..3 {
        batch.push(WriteOp::Log { kind: LogKind::Graph, tenant: tenant.into(), record: Bytes::from(format!("g{i}")) });
    }
    batch.push(WriteOp::Log { kind: LogKind::Graph, tenant: other.as_str().into(), record: Bytes::from("x") });
    batch.push(WriteOp::Log { kind: LogKind::Events, tenant: tenant.into(), record: Bytes::from("e0") });
    let key = EventKey { tenant: tenant.into(), stream: "s".into(), key: "k1".into() };
    batch.push(WriteOp::EventSeen { key: key.clone(), ts: 1 });
    let hour = 3_600_000 * 10;
    let rk =
        |t: &str, h: i64| RollupKey { tenant: tenant.into(), event_type: t.into(), project: "p".into(), hour_ms: h };
    batch.push(WriteOp::RollupAdd { key: rk("click", hour), by: 2 });
    batch.push(WriteOp::RollupAdd { key: rk("click", hour), by: 3 });
    batch.push(WriteOp::RollupAdd { key: rk("view", hour), by: 1 });
    store.commit(batch).await.map_err(e)?;
    let mut batch = WriteBatch::default();
    batch.push(WriteOp::RollupAdd { key: rk("click", hour), by: 4 });
    batch.push(WriteOp::RollupAdd { key: rk("click", hour + 3_600_000), by: 1 });
    batch.push(WriteOp::Log { kind: LogKind::Graph, tenant: tenant.into(), record: Bytes::from("g3") });
    store.commit(batch).await.map_err(e)?;

    check(store.load_user(&dan).await.map_err(e)?.identities == vec!["tel:abc".to_owned()], "identities read back")?;
    let log = store.read_log(LogKind::Graph, tenant, 0, 100).await.map_err(e)?;
    let records: Vec<&[u8]> = log.iter().map(|l| l.record.as_ref()).collect();
    check(records == [&b"g0"[..], b"g1", b"g2", b"g3"], "a tenant's log holds its records in order, only its own")?;
    check(log.windows(2).all(|w| w[0].seq < w[1].seq), "log seqs increase")?;
    let tail = store.read_log(LogKind::Graph, tenant, log[1].seq, 100).await.map_err(e)?;
    check(tail.len() == 2, "reading after a seq")?;
    check(store.read_log(LogKind::Events, tenant, 0, 100).await.map_err(e)?.len() == 1, "logs are separate by kind")?;
    check(store.event_seen(&key).await.map_err(e)?, "event key remembered")?;
    let other_key = EventKey { stream: "t".into(), ..key };
    check(!store.event_seen(&other_key).await.map_err(e)?, "event keys are per stream")?;
    let all = store.rollups(tenant, None, 0, i64::MAX).await.map_err(e)?;
    check(all.contains(&(rk("click", hour), 9)), "rollups add up within and across commits")?;
    check(all.contains(&(rk("view", hour), 1)) && all.len() == 3, "one counter per type, project and hour")?;
    let clicks = store.rollups(tenant, Some("click"), hour + 1, i64::MAX).await.map_err(e)?;
    check(clicks == vec![(rk("click", hour + 3_600_000), 1)], "rollups filter by type and hour range")?;
    check(store.rollups(&other, None, 0, i64::MAX).await.map_err(e)?.is_empty(), "rollups never cross tenants")?;
    let record = SessionRecord { nodes: vec!["edge-a".into()], region: "r1".into(), sessions: 2, last_seen: None };
    let mut batch = WriteBatch::default();
    batch.push(WriteOp::Session { user: dan.clone(), record: record.clone(), version: 7 << 32 | 5 });
    store.commit(batch).await.map_err(e)?;
    check(store.session(&dan).await.map_err(e)? == Some(record.clone()), "session records read back")?;
    // A record of an earlier owner (a lower epoch), landing late, is
    // dropped where records are fenced; the same version again, or a newer
    // one, is written.
    let stale = SessionRecord { nodes: Vec::new(), sessions: 0, last_seen: Some(5), ..record.clone() };
    let newer = SessionRecord { nodes: vec!["edge-b".into()], sessions: 1, ..record.clone() };
    let fenced = store.fences_session_records();
    for (step, (version, write, fenced_keeps, what)) in [
        (6 << 32 | 900, &stale, &record, "an earlier owner's record, landing late"),
        (7 << 32 | 5, &record, &record, "the same version again"),
        (7 << 32 | 6, &newer, &newer, "a newer record"),
        (7 << 32 | 5, &stale, &newer, "an older record of the same owner"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut batch = WriteBatch::default();
        batch.push(WriteOp::Session { user: dan.clone(), record: write.clone(), version });
        // A marker beside it: a refused batch applies nothing.
        let marker = UserKey::new(tenant, format!("marker-{step}").as_str());
        batch.push(WriteOp::Identity { user: marker.clone(), channel: "tel:x".into() });
        let result = store.commit(batch).await;
        let refused = fenced && !std::ptr::eq(write, fenced_keeps);
        refused_if(refused, &result, what)?;
        let marked = !store.load_user(&marker).await.map_err(e)?.identities.is_empty();
        check(marked != refused, &format!("{what}: a refused batch applies nothing"))?;
        // Where records are not fenced, the last writer wins.
        let want = if fenced { fenced_keeps } else { write };
        check(store.session(&dan).await.map_err(e)?.as_ref() == Some(want), what)?;
    }
    // A user's meta is versioned the same way: an earlier owner's status,
    // landing late, does not set back its successor's.
    let shown = UserMeta { status_at: Some(20), ..UserMeta::default() };
    let stale = UserMeta { invisible_since: Some(10), status_at: Some(10), ..UserMeta::default() };
    for (version, write, fenced_keeps, what) in [
        (7 << 32 | 2, &shown, &shown, "a meta"),
        (6 << 32 | 40, &stale, &shown, "an earlier owner's meta, landing late"),
        (7 << 32 | 1, &stale, &shown, "an older meta of the same owner"),
    ] {
        let mut batch = WriteBatch::default();
        batch.push(WriteOp::Meta { user: dan.clone(), meta: write.clone(), version });
        let result = store.commit(batch).await;
        let refused = fenced && !std::ptr::eq(write, fenced_keeps);
        refused_if(refused, &result, what)?;
        let want = if fenced { fenced_keeps } else { write };
        check(&store.load_user(&dan).await.map_err(e)?.meta == want, what)?;
    }
    let (a, b) = (store.claim_shard(3).await.map_err(e)?, store.claim_shard(3).await.map_err(e)?);
    check(!store.fences_session_records() || b > a, "claims of a shard increase")?;
    check(
        store.session(&UserKey::new(other.as_str(), "dan")).await.map_err(e)?.is_none(),
        "sessions never cross tenants",
    )?;
    Ok(())
}

/// A versioned write's commit: a conflict where it is `refused` (records
/// fenced, and it is older), else written.
fn refused_if(refused: bool, result: &Result<(), StoreError>, what: &str) -> Result<(), String> {
    check(
        if refused { matches!(result, Err(StoreError::Conflict(_))) } else { result.is_ok() },
        &format!("{what}: a conflict where records are fenced and it is older, else written ({result:?})"),
    )
}

async fn inbox_append_and_read(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let bob = UserKey::new(tenant, "bob");
    let fresh = store.load_user(&bob).await.map_err(|e| e.to_string())?;
    check(fresh == UserRecord::default(), "a new user has an empty record")?;
    let mut batch = WriteBatch::default();
    for seq in 1..=25 {
        batch.push(WriteOp::Message { user: bob.clone(), message: msg(seq, "alice", &format!("hello {seq}")) });
    }
    store.commit(batch).await.map_err(|e| e.to_string())?;
    check(store.load_user(&bob).await.map_err(|e| e.to_string())?.head == 25, "head is the highest seq")?;
    let page = store.read_inbox(&bob, 0, 10, usize::MAX).await.map_err(|e| e.to_string())?;
    check(page.messages.len() == 10 && page.more, "a page stops at limit and says more")?;
    check(page.messages.iter().map(|m| m.seq).eq(1..=10), "pages are in seq order")?;
    check(page.messages[0] == msg(1, "alice", "hello 1"), "messages read back as written")?;
    let page = store.read_inbox(&bob, 20, 10, usize::MAX).await.map_err(|e| e.to_string())?;
    check(page.messages.iter().map(|m| m.seq).eq(21..=25) && !page.more, "last page has no more")?;
    let page = store.read_inbox(&bob, 0, 100, 20).await.map_err(|e| e.to_string())?;
    check(!page.messages.is_empty() && page.messages.len() < 25 && page.more, "a page stops at max_bytes")?;
    let page = store.read_inbox(&bob, 25, 10, usize::MAX).await.map_err(|e| e.to_string())?;
    check(page.messages.is_empty() && !page.more, "nothing after the head")?;
    let range = store.read_range(&bob, 3, 6, 100).await.map_err(|e| e.to_string())?;
    check(range.iter().map(|m| m.seq).eq(4..=6), "read_range is (from, to]")?;
    Ok(())
}

/// Two owners of one user (overlapping during a shard move) must never both
/// write a seq: an append at a seq holding another message fails the whole
/// batch; the same message again (a replay) is fine. Every backend checks
/// the first append after a writer (re)loaded the user, which is when a new
/// owner recovers; embedded and Redis check every append, ScyllaDB checks
/// every append only with `checked_appends = "always"` (ADR 0011).
async fn taken_seqs_conflict(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let eve = UserKey::new(tenant, "eve");
    let first = msg(1, "alice", "from the old owner");
    let mut batch = WriteBatch::default();
    batch.push(WriteOp::Message { user: eve.clone(), message: first.clone() });
    store.commit(batch.clone()).await.map_err(e)?;
    store.commit(batch).await.map_err(|e| format!("a replay of the same message must succeed: {e}"))?;
    let key = DedupKey { sender: UserKey::new(tenant, "carol"), client_id: "late".into() };
    // The new owner recovers the user, then appends at the seq it believes free.
    check(store.load_user(&eve).await.map_err(e)?.head == 1, "the new owner recovers the head")?;
    let mut batch = WriteBatch::default();
    batch.push(WriteOp::Message { user: eve.clone(), message: msg(2, "carol", "fine on its own") });
    let clash = StoredMessage { msg_id: "other-owner".into(), ..msg(1, "carol", "from the new owner") };
    batch.push(WriteOp::Message { user: eve.clone(), message: clash });
    batch.push(WriteOp::Dedup {
        key: key.clone(),
        record: DedupRecord { msg_id: "x".into(), ts: 1, to: "eve".into(), seq: 1 },
    });
    match store.commit(batch).await {
        Err(StoreError::Conflict(_)) => {}
        other => return Err(format!("an append at a taken seq must fail with Conflict, got {other:?}")),
    }
    let inbox = store.read_inbox(&eve, 0, 10, usize::MAX).await.map_err(e)?;
    check(inbox.messages == vec![first], "a conflicting batch writes nothing, and the first message stands")?;
    check(store.dedup(&key).await.map_err(e)?.is_none(), "a conflicting batch writes no dedup record")?;
    let mut batch = WriteBatch::default();
    batch.push(WriteOp::Message { user: eve.clone(), message: msg(2, "carol", "retried after reload") });
    store.commit(batch).await.map_err(e)?;
    check(store.load_user(&eve).await.map_err(e)?.head == 2, "the retry takes the next seq")?;
    Ok(())
}

async fn dedup_records(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let key = DedupKey { sender: UserKey::new(tenant, "alice"), client_id: "c-1".into() };
    check(store.dedup(&key).await.map_err(|e| e.to_string())?.is_none(), "unknown dedup key")?;
    let record = DedupRecord { msg_id: "m-1".into(), ts: 7, to: "bob".into(), seq: 1 };
    let mut batch = WriteBatch::default();
    batch.push(WriteOp::Dedup { key: key.clone(), record: record.clone() });
    store.commit(batch).await.map_err(|e| e.to_string())?;
    check(store.dedup(&key).await.map_err(|e| e.to_string())? == Some(record), "dedup record reads back")?;
    let other = DedupKey { sender: UserKey::new(tenant, "alice"), client_id: "c-2".into() };
    check(store.dedup(&other).await.map_err(|e| e.to_string())?.is_none(), "other ids are distinct")?;
    Ok(())
}

async fn meta_contacts_policies(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let carol = UserKey::new(tenant, "carol");
    let meta = UserMeta { acked: 3, read: 2, invisible_since: Some(5), last_seen: Some(9), status_at: Some(7) };
    let mut batch = WriteBatch::default();
    batch.push(WriteOp::Meta { user: carol.clone(), meta: meta.clone(), version: 0 });
    batch.push(WriteOp::Contact { owner: carol.clone(), contact: "dave".into(), record: contact("friends") });
    batch.push(WriteOp::Contact { owner: carol.clone(), contact: "erin".into(), record: contact("contacts") });
    batch.push(WriteOp::Policy {
        owner: carol.clone(),
        circle: "friends".into(),
        policy: CirclePolicy { presence: true, last_seen: false },
    });
    store.commit(batch).await.map_err(|e| e.to_string())?;
    let mut batch = WriteBatch::default();
    batch.push(WriteOp::ContactRemoved { owner: carol.clone(), contact: "erin".into() });
    batch.push(WriteOp::Contact { owner: carol.clone(), contact: "dave".into(), record: contact("family") });
    store.commit(batch).await.map_err(|e| e.to_string())?;
    let rec = store.load_user(&carol).await.map_err(|e| e.to_string())?;
    check(rec.meta == meta, "meta reads back")?;
    check(
        rec.contacts.len() == 1 && rec.contacts.get("dave").map(|c| c.circle.as_str()) == Some("family"),
        "contacts move and remove",
    )?;
    check(
        rec.policies.get("friends") == Some(&CirclePolicy { presence: true, last_seen: false }),
        "policies read back",
    )?;
    Ok(())
}

async fn receipts(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let alice = UserKey::new(tenant, "alice");
    let mut batch = WriteBatch::default();
    for (id, state) in [("m-1", ReceiptState::Delivered), ("m-2", ReceiptState::Delivered), ("m-1", ReceiptState::Read)]
    {
        batch.push(WriteOp::Receipt {
            user: alice.clone(),
            receipt: PendingReceipt { msg_id: id.into(), by: "bob".into(), state },
        });
    }
    store.commit(batch).await.map_err(|e| e.to_string())?;
    let pending = store.pending_receipts(&alice, 100).await.map_err(|e| e.to_string())?;
    check(pending.len() == 2, "one pending receipt per message")?;
    check(pending.iter().any(|r| &*r.msg_id == "m-1" && r.state == ReceiptState::Read), "the latest state wins")?;
    let mut batch = WriteBatch::default();
    batch.push(WriteOp::ReceiptsDelivered { user: alice.clone(), msg_ids: vec!["m-1".into(), "m-2".into()] });
    store.commit(batch).await.map_err(|e| e.to_string())?;
    check(
        store.pending_receipts(&alice, 100).await.map_err(|e| e.to_string())?.is_empty(),
        "delivered receipts are gone",
    )?;
    Ok(())
}

async fn tenants_do_not_cross(store: &dyn Store, tenant: &str) -> Result<(), String> {
    let other = format!("{tenant}-other");
    let mine = UserKey::new(tenant, "bob");
    let theirs = UserKey::new(other.as_str(), "bob");
    check(
        store.load_user(&theirs).await.map_err(|e| e.to_string())?.head == 0,
        "same name in another tenant is empty",
    )?;
    let page = store.read_inbox(&theirs, 0, 100, usize::MAX).await.map_err(|e| e.to_string())?;
    check(page.messages.is_empty(), "no messages leak across tenants")?;
    check(store.load_user(&mine).await.map_err(|e| e.to_string())?.head == 25, "own tenant unaffected")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Store;
    use crate::embedded::{EmbeddedConfig, EmbeddedStore};

    #[tokio::test]
    async fn embedded_store_passes_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        super::run_all(&store, "acme").await.unwrap();
        store.close().await;
    }

    #[test]
    fn memory_store_passes_the_contract() {
        use futures::FutureExt;
        let store = crate::memory::MemoryStore::default();
        // Polled once: the simulator relies on its futures never waiting.
        super::run_all(&store, "acme").now_or_never().expect("a MemoryStore future waited").unwrap();
        let reopened = store.reopen();
        let bob = crate::UserKey::new("acme", "bob");
        assert_eq!(crate::Store::load_user(&reopened, &bob).now_or_never().unwrap().unwrap().head, 25);
    }

    #[tokio::test]
    async fn embedded_store_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
            super::run_all(&store, "acme").await.unwrap();
            store.close().await;
        }
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let bob = crate::UserKey::new("acme", "bob");
        assert_eq!(crate::Store::load_user(&store, &bob).await.unwrap().head, 25);
        store.close().await;
    }

    #[tokio::test]
    async fn concurrent_commits_share_syncs_and_all_land() {
        use crate::*;
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
        let mut tasks = Vec::new();
        for u in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let user = UserKey::new("t", format!("u{u}"));
                for seq in 1..=20 {
                    let mut b = WriteBatch::default();
                    b.push(WriteOp::Message { user: user.clone(), message: super::msg(seq, "x", "y") });
                    store.commit(b).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for u in 0..20 {
            assert_eq!(store.load_user(&UserKey::new("t", format!("u{u}"))).await.unwrap().head, 20);
        }
        store.close().await;
    }
}
