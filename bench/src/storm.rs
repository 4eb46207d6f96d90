//! `storm`: N sessions dropped at once and reconnected with resume, while
//! messages are sent to them. Reports the time until every session has
//! resumed (its `welcome` and the `synced` that ends its replay) and proves
//! that every message accepted during the storm was delivered, once, after
//! client-side seq dedup.

use anyhow::{Context, bail};
use iris_client::{Client, Encoding, ServerFrame};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the storm needs to know about the node.
pub struct Target {
    pub url: String,
    pub signer: iris_auth::Signer,
}

fn name(i: usize) -> String {
    format!("storm-{i}")
}

pub async fn storm(t: Target, sessions: usize, concurrency: usize, messages: usize) -> anyhow::Result<()> {
    if sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    let t = Arc::new(t);
    // 1. Everyone online; remember each inbox head to resume from.
    let heads = {
        let t = t.clone();
        crate::open_all(sessions, 64, move |i| {
            let t = t.clone();
            async move {
                let token = t.signer.token("storm", &name(i), 3_600)?;
                let (c, w) = crate::iris_hello(&t.url, &token, None, Encoding::Binary).await?;
                anyhow::Ok((c, w.inbox_head))
            }
        })
        .await?
    };
    eprintln!("storm: {sessions} sessions online");
    let (clients, heads): (Vec<Client>, Vec<u64>) = heads.into_iter().unzip();
    let heads = Arc::new(heads);
    let token = t.signer.token("storm", "storm-sender", 3_600)?;
    let (mut sender, _) = crate::iris_hello(&t.url, &token, None, Encoding::Binary).await?;

    // 2. The storm: every connection drops at once (no close frame).
    drop(clients);
    let started = Instant::now();

    // 3. Messages go out while the sessions come back; each is sent until
    //    accepted (`unavailable` is retried with the same id).
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let send_task = tokio::spawn(async move {
        let mut accepted = 0u64;
        for m in 0..messages {
            let id = format!("s{run}-{m}");
            let to = name(m % sessions);
            loop {
                sender.send(&id, &to, "storm").await?;
                let f = sender
                    .expect(Duration::from_secs(30), "accepted", |f| {
                        matches!(f, ServerFrame::Accepted(a) if a.id == id)
                            || matches!(f, ServerFrame::Error(e) if e.id.as_deref() == Some(id.as_str()))
                    })
                    .await?;
                if matches!(f, ServerFrame::Accepted(_)) {
                    accepted += 1;
                    break;
                }
            }
        }
        anyhow::Ok(accepted)
    });

    // 4. Everyone reconnects at once (up to `concurrency` handshakes in
    //    flight) with resume_after, and counts distinct message seqs.
    let delivered = Arc::new(AtomicU64::new(0));
    let resumed_at = Arc::new(AtomicU64::new(0));
    let resumed_count = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut users = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let (t, heads, delivered, resumed_at, resumed_count, semaphore) =
            (t.clone(), heads.clone(), delivered.clone(), resumed_at.clone(), resumed_count.clone(), semaphore.clone());
        let mut stop = stop_rx.clone();
        users.push(tokio::spawn(async move {
            let token = t.signer.token("storm", &name(i), 3_600)?;
            let mut c = {
                let _permit = semaphore.acquire().await?;
                let mut attempt = 0;
                loop {
                    match crate::iris_hello(&t.url, &token, Some(heads[i]), Encoding::Binary).await {
                        Ok((c, _)) => break c,
                        // Refused under load: the client backs off and retries.
                        Err(e) if attempt < 20 => {
                            attempt += 1;
                            backoff(attempt, &e).await;
                        }
                        Err(e) => return Err(e).context("resuming"),
                    }
                }
            };
            let mut seen = HashSet::new();
            let mut synced = false;
            loop {
                tokio::select! {
                    f = c.recv() => match f? {
                        ServerFrame::Message(m) => {
                            if seen.insert(m.seq) {
                                delivered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        ServerFrame::Synced(_) if !synced => {
                            synced = true;
                            let at = started.elapsed().as_micros() as u64;
                            resumed_at.fetch_max(at, Ordering::Relaxed);
                            resumed_count.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    },
                    _ = stop.changed() => return anyhow::Ok(synced),
                }
            }
        }));
    }
    let accepted = send_task.await??;
    let sent_done = started.elapsed();
    // 5. Wait (bounded) until every session has resumed and everything
    //    accepted has arrived.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (delivered.load(Ordering::Relaxed) < accepted || resumed_count.load(Ordering::Relaxed) < sessions as u64)
        && Instant::now() < deadline
    {
        if users.iter().any(|u| u.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send_replace(true);
    let mut resumed = 0;
    for u in users {
        if u.await?? {
            resumed += 1;
        }
    }
    let delivered = delivered.load(Ordering::Relaxed);
    let all_resumed_s = resumed_at.load(Ordering::Relaxed) as f64 / 1e6;
    let out = serde_json::json!({
        "scenario": "storm",
        "system": "iris",
        "sessions": sessions,
        "resumed": resumed,
        "all_resumed_s": all_resumed_s,
        "resumed_per_second": resumed as f64 / all_resumed_s.max(1e-9),
        "messages_accepted": accepted,
        "messages_delivered": delivered,
        "lost": accepted.saturating_sub(delivered),
        "sending_took_s": sent_done.as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    if resumed != sessions || delivered != accepted {
        bail!("storm: {resumed}/{sessions} resumed, {delivered}/{accepted} delivered");
    }
    Ok(())
}

/// Waits before another attempt: 50 ms doubling, at most 2 s.
async fn backoff(attempt: u32, e: &anyhow::Error) {
    if attempt == 1 {
        eprintln!("storm: a resume failed ({e}); retrying");
    }
    tokio::time::sleep(Duration::from_millis((50u64 << attempt.min(6)).min(2_000))).await;
}
