//! `cross-region`: the latency a federation adds. One sender in region A
//! sends, one message at a time, first to a user homed in A (the regional
//! path), then to a user homed in B (edge → outbound topic → relay →
//! global topic → relay → B's shard, and the answers back the same way).
//! Send→accepted and send→delivered are recorded for each path; the
//! difference of the medians is what crossing regions adds here.

use crate::{hist, summary};
use anyhow::{Context, bail};
use iris_client::{Client, Encoding, ServerFrame};
use iris_envelope::UserKey;
use iris_router::HomeDirectory;
use std::time::{Duration, Instant};

/// Where the two regions are.
pub struct Regions {
    /// Region A's name and WebSocket URL.
    pub a: (String, String),
    /// Region B's name and WebSocket URL.
    pub b: (String, String),
}

fn homed(dir: &HomeDirectory, tenant: &str, region: &str, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|u| &*dir.home_of(&UserKey::new(tenant, u.as_str())).0 == region)
        .expect("some name hashes to every region")
}

/// One send, timed until accepted (sender) and delivered (recipient).
async fn one(from: &mut Client, to: &mut Client, to_name: &str, id: &str) -> anyhow::Result<(Duration, Duration)> {
    let t0 = Instant::now();
    from.send(id, to_name, id).await?;
    let wait = Duration::from_secs(30);
    let want = id.to_owned();
    let accepted = async {
        from.expect(wait, "accepted", |f| matches!(f, ServerFrame::Accepted(a) if a.id == want)).await?;
        anyhow::Ok(t0.elapsed())
    };
    let delivered = async {
        to.expect(wait, "message", |f| matches!(f, ServerFrame::Message(m) if m.body.0 == id.as_bytes())).await?;
        anyhow::Ok(t0.elapsed())
    };
    let (a, d) = tokio::join!(accepted, delivered);
    Ok((a?, d?))
}

/// Runs the probe; prints one JSON object.
pub async fn cross_region(regions: Regions, signer: iris_auth::Signer, messages: usize) -> anyhow::Result<()> {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let tenant = format!("bench{n}");
    let dir = HomeDirectory::new(&regions.a.0, &[regions.a.0.clone(), regions.b.0.clone()]);
    let alice = homed(&dir, &tenant, &regions.a.0, "alice");
    let carol = homed(&dir, &tenant, &regions.a.0, "carol");
    let bob = homed(&dir, &tenant, &regions.b.0, "bob");
    let login = |url: String, user: String| {
        let token = signer.token(&tenant, &user, 3_600);
        async move {
            let token = token?;
            Ok::<_, anyhow::Error>(Client::hello(&url, &token, None, Encoding::Json).await.context("login")?.0)
        }
    };
    let mut a = login(regions.a.1.clone(), alice.clone()).await?;
    let mut c = login(regions.a.1.clone(), carol.clone()).await?;
    let mut b = login(regions.b.1.clone(), bob.clone()).await?;
    // Warm up both paths (relays join their consumer groups first).
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, (to, name)) in [(&mut c, &carol), (&mut b, &bob)].into_iter().enumerate() {
        for attempt in 0.. {
            match one(&mut a, to, name, &format!("warm-{i}-{attempt}")).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => eprintln!("warming up: {e}"),
                Err(e) => bail!("path {i} never worked: {e}"),
            }
        }
    }
    // [local accepted, local delivered, cross accepted, cross delivered]
    let mut h = [hist(), hist(), hist(), hist()];
    // Two phases, local first, so that the receipts of one path are not
    // still crossing while the other is measured.
    for i in 0..messages {
        let id = format!("m-{i}");
        let (base, (acc, del)) = if i < messages / 2 {
            (0, one(&mut a, &mut c, &carol, &id).await?)
        } else {
            (2, one(&mut a, &mut b, &bob, &id).await?)
        };
        h[base].saturating_record(acc.as_micros() as u64);
        h[base + 1].saturating_record(del.as_micros() as u64);
        if i % 50 == 0 {
            eprintln!("cross-region: {i}/{messages}");
        }
    }
    let added = |cross: usize, local: usize, q: f64| {
        (h[cross].value_at_quantile(q) as f64 - h[local].value_at_quantile(q) as f64) / 1_000.0
    };
    let out = serde_json::json!({
        "scenario": "cross-region",
        "messages": messages,
        "same_region": { "accepted": summary(&h[0]), "delivered": summary(&h[1]) },
        "cross_region": { "accepted": summary(&h[2]), "delivered": summary(&h[3]) },
        // Differences of the paths' percentiles (not percentiles of a
        // per-message difference: the two paths carry different messages).
        "added_ms": {
            "accepted_p50": added(2, 0, 0.5),
            "accepted_p99_minus_p99": added(2, 0, 0.99),
            "delivered_p50": added(3, 1, 0.5),
            "delivered_p99_minus_p99": added(3, 1, 0.99),
        },
    });
    println!("{out}");
    Ok(())
}
