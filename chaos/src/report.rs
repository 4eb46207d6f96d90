//! A run's report: `report.json` and `report.md` beside its history, and a
//! PNG timeline (`chaos/timeline.py`, when matplotlib can be imported).

use crate::checker::Verdict;
use crate::history::{Event, What};
use crate::nemesis::Fault;
use std::path::Path;

/// Per second of the run: sends answered `accepted`, and their send to
/// accepted latency (worst in that second).
fn per_second(events: &[Event]) -> Vec<(u64, u64, u64)> {
    let mut first_send: std::collections::HashMap<(String, String, String), u64> = Default::default();
    let mut secs: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for e in events {
        match &e.what {
            What::Send { tenant, from, id, .. } => {
                first_send.entry((tenant.clone(), from.clone(), id.clone())).or_insert(e.t);
            }
            What::Accepted { tenant, from, id, .. } => {
                if let Some(sent) = first_send.get(&(tenant.clone(), from.clone(), id.clone())) {
                    let slot = secs.entry(e.t / 1_000).or_insert((0, 0));
                    slot.0 += 1;
                    slot.1 = slot.1.max(e.t - sent);
                }
            }
            _ => {}
        }
    }
    secs.into_iter().map(|(s, (n, worst))| (s, n, worst)).collect()
}

/// Writes the report files.
pub fn write(
    dir: &Path,
    plan: &crate::Plan,
    schedule: &[Fault],
    verdicts: &[Verdict],
    events: &[Event],
) -> anyhow::Result<()> {
    let ok = verdicts.iter().all(Verdict::holds);
    let count = |f: fn(&What) -> bool| events.iter().filter(|e| f(&e.what)).count();
    let sends = count(|w| matches!(w, What::Send { .. }));
    let accepted = count(|w| matches!(w, What::Accepted { .. }));
    let hellos = count(|w| matches!(w, What::HelloDone { .. }));
    let hellos_ok = count(|w| matches!(w, What::HelloDone { ok: true, .. }));
    let stored: usize = events
        .iter()
        .map(|e| match &e.what {
            What::Inbox { msgs, .. } => msgs.len(),
            _ => 0,
        })
        .sum();
    let latency = crate::checker::delivery_latency(events);
    let (seed, minutes, faults) = (plan.seed, plan.minutes, plan.faults.as_str());
    let regions = plan.layout.regions.len();
    let replay = plan.replay();
    let json = serde_json::json!({
        "seed": seed,
        "minutes": minutes,
        "faults": faults,
        "regions": regions,
        "ok": ok,
        "replay": replay,
        "schedule": schedule,
        "verdicts": verdicts,
        "counts": { "sends": sends, "accepted": accepted, "stored": stored, "hellos": hellos, "hellos_ok": hellos_ok },
        "per_second": per_second(events),
        "delivery_latency": latency,
    });
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&json)?)?;

    let mut md = format!(
        "# Chaos run, seed {seed}: {}\n\n{minutes} minutes of faults ({faults}){}; replay: `{replay}`\n\n\
         Sends (with retries) {sends}, accepted {accepted}, stored {stored}; sessions asked {hellos}, opened {hellos_ok}.\n\n\
         ## Invariants\n\n| invariant | holds | checked | broken | what it says |\n|---|---|---|---|---|\n",
        if ok { "every invariant holds" } else { "INVARIANTS BROKEN" },
        if regions > 1 { format!(", {regions} federated regions") } else { String::new() }
    );
    for v in verdicts {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            v.name,
            if v.holds() { "yes" } else { "**no**" },
            v.checked,
            v.violations,
            v.says
        ));
    }
    for v in verdicts.iter().filter(|v| !v.holds()) {
        md.push_str(&format!("\n### {} broken\n\n", v.name));
        for e in &v.examples {
            md.push_str(&format!("- {e}\n"));
        }
    }
    md.push_str(
        "\n## Send → delivered\n\nBy the period a send was first tried in; the first time its recipient's client got it (live, or replayed after moving edges).\n\n\
         | sends made during | delivered | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n",
    );
    for l in &latency {
        md.push_str(&format!("| {} | {} | {} | {} | {} |\n", l.during, l.delivered, l.p50_ms, l.p99_ms, l.max_ms));
    }
    md.push_str("\n## Faults\n\n| start s | length s | fault |\n|---|---|---|\n");
    for f in schedule {
        md.push_str(&format!("| {:.1} | {:.1} | {} |\n", f.at_ms as f64 / 1e3, f.for_ms as f64 / 1e3, f.describe()));
    }
    md.push_str("\nTimeline: `timeline.png` (accepted per second and the worst send-to-accepted latency in each second; fault windows shaded).\n");
    std::fs::write(dir.join("report.md"), md)?;
    let drew =
        std::process::Command::new("python3").arg("chaos/timeline.py").arg(dir).status().is_ok_and(|s| s.success());
    if !drew {
        eprintln!("chaos: no timeline drawn (python3 with matplotlib is needed)");
    }
    Ok(())
}
