//! `presence`: one user with K subscribers changes status; how long until
//! every subscriber has seen it. The user alternates `away` and `online`
//! for a number of rounds; each round is timed from the status frame's
//! send to the last subscriber's matching `presence` frame.

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use iris_client::{ClientFrame, Encoding, ServerFrame};
use iris_protocol::{ContactEntry, Contacts, PresenceStatus, SetStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STAR: &str = "presence-star";

fn watcher(i: usize) -> String {
    format!("presence-watcher-{i}")
}

pub async fn presence(url: String, signer: iris_auth::Signer, subscribers: usize, rounds: usize) -> anyhow::Result<()> {
    if subscribers == 0 || rounds == 0 {
        bail!("--subscribers and --rounds must be at least 1");
    }
    let token = signer.token("presence", STAR, 3_600)?;
    let (mut star, _) = crate::iris_hello(&url, &token, None, Encoding::Binary).await?;
    // Every watcher is a contact (the `contacts` circle sees presence), at
    // most 1,000 names per frame (`max_list_items`).
    let names: Vec<String> = (0..subscribers).map(watcher).collect();
    for chunk in names.chunks(1_000) {
        let upsert = chunk.iter().map(|u| ContactEntry { user: u.clone(), circle: None }).collect();
        star.send_frame(&ClientFrame::Contacts(Contacts { upsert, remove: vec![] })).await?;
        star.expect(Duration::from_secs(30), "contacts_ok", |f| matches!(f, ServerFrame::ContactsOk(_))).await?;
    }
    // Watchers come online and subscribe; each first sees the star online.
    let signer = Arc::new(signer);
    let (round_tx, _) = tokio::sync::broadcast::channel::<(usize, PresenceStatus)>(rounds + 1);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<(usize, Instant)>(subscribers.max(1));
    let watchers = crate::open_all(subscribers, 64, |i| {
        let (url, signer) = (url.clone(), signer.clone());
        async move {
            let token = signer.token("presence", &watcher(i), 3_600)?;
            let (mut c, _) = crate::iris_hello(&url, &token, None, Encoding::Binary).await?;
            c.subscribe(&[STAR]).await?;
            c.expect(
                Duration::from_secs(30),
                "the star online",
                |f| matches!(f, ServerFrame::Presence(p) if p.user == STAR && p.status == PresenceStatus::Online),
            )
            .await?;
            anyhow::Ok(c)
        }
    })
    .await?;
    let mut tasks = Vec::with_capacity(subscribers);
    for (i, mut c) in watchers.into_iter().enumerate() {
        let mut rounds_rx = round_tx.subscribe();
        let seen_tx = seen_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok((round, want)) = rounds_rx.recv().await {
                c.expect(
                    Duration::from_secs(30),
                    "the star's new status",
                    |f| matches!(f, ServerFrame::Presence(p) if p.user == STAR && p.status == want),
                )
                .await
                .with_context(|| format!("watcher {i}, round {round}"))?;
                // The main task counts every watcher; once it has given up
                // there is nobody left to tell.
                if seen_tx.send((round, Instant::now())).await.is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        }));
    }
    drop(seen_tx);
    eprintln!("presence: {subscribers} subscribers watching");
    let mut all_seen = Vec::with_capacity(rounds);
    let mut each = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for round in 0..rounds {
        let (set, want) = if round % 2 == 0 {
            (SetStatus::Away, PresenceStatus::Away)
        } else {
            (SetStatus::Online, PresenceStatus::Online)
        };
        round_tx.send((round, want)).ok();
        let sent = Instant::now();
        star.set_presence(set).await?;
        let mut last = sent;
        for _ in 0..subscribers {
            let (r, at) = tokio::time::timeout(Duration::from_secs(60), seen_rx.recv())
                .await
                .context("subscribers did not all see the change within 60 s")?
                .context("a watcher failed")?;
            if r != round {
                bail!("a watcher answered round {r} during round {round}");
            }
            let us = at.saturating_duration_since(sent).as_micros() as u64;
            each.record(us.max(1))?;
            last = last.max(at);
        }
        let ms = last.duration_since(sent).as_secs_f64() * 1000.0;
        eprintln!("presence: round {round}: all {subscribers} saw it in {ms:.2} ms");
        all_seen.push(ms);
    }
    drop(round_tx);
    for t in tasks {
        t.await??;
    }
    let mut sorted = all_seen.clone();
    sorted.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "scenario": "presence",
        "system": "iris",
        "subscribers": subscribers,
        "rounds": rounds,
        "all_seen_ms_median": sorted[sorted.len() / 2],
        "all_seen_ms_per_round": all_seen,
        "each_p50_us": each.value_at_quantile(0.5),
        "each_p99_us": each.value_at_quantile(0.99),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
