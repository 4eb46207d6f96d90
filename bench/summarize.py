"""Turns bench/run's raw JSON lines into results files and a Markdown summary
(medians of the runs, ratios Iris/peer). No timing assertions: the numbers
are read against the goals in docs, not checked here."""

import argparse
import json
import os
import platform
import statistics
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def median_of(rows, key):
    return statistics.median(key(r) for r in rows)


def charts(a, suffix, idle, chat):
    """PNG charts, when matplotlib is there (bench/run installs it for the
    full run); without it the tables are the whole result."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("summarize: matplotlib not available; no charts", flush=True)
        return []
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for peer in PEERS:
        sizes = sorted({r["sessions"] for r in idle if r["peer"] == peer})
        if sizes:
            ys = [median_of([r for r in idle if r["peer"] == peer and r["sessions"] == n], lambda r: r["kib_per_session"])
                  for n in sizes]
            ax.plot(sizes, ys, marker="o", label=peer)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="goal (1 KiB)")
    ax.set_xscale("log")
    ax.set_xlabel("idle sessions (N, log scale)")
    ax.set_ylabel("server RSS per session (KiB), median")
    ax.set_title(f"Memory per idle session, {a.date}")
    ax.set_ylim(bottom=0)
    ax.legend()
    path = os.path.join(a.out, f"{a.date}-idle-memory{suffix}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    written.append(path)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for peer in PEERS:
        rates = sorted({r["target_rate"] for r in chat if r["peer"] == peer})
        if not rates:
            continue
        p50 = [median_of([r for r in chat if r["peer"] == peer and r["target_rate"] == x],
                         lambda r: r["send_to_delivered"]["p50_us"] / 1000) for x in rates]
        p99 = [median_of([r for r in chat if r["peer"] == peer and r["target_rate"] == x],
                         lambda r: r["send_to_delivered"]["p99_us"] / 1000) for x in rates]
        line, = ax.plot(rates, p99, marker="o", label=f"{peer} p99")
        ax.plot(rates, p50, marker=".", linestyle=":", color=line.get_color(), label=f"{peer} p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("target send rate (msgs/s)")
    ax.set_ylabel("send to delivered (ms), median of runs")
    ax.set_title(f"One-to-one chat latency vs rate, {a.date}")
    ax.legend(fontsize=8)
    path = os.path.join(a.out, f"{a.date}-chat-latency{suffix}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    written.append(path)
    plt.close(fig)
    return written


PEERS = ("iris", "iris-quic", "mosquitto", "nats", "jetstream", "jetstream-sync", "ejabberd")

# A chat rate is sustained when every run delivered everything it sent
# and the runs' median delivered p99 is under this (issue 22).
SUSTAINED_P99_US = 50_000


def sustained(rows):
    """Whether the chat runs `rows` (one system, one rate) sustained it."""
    return bool(rows) and all(r["delivered"] >= r["sent"] for r in rows) and \
        median_of(rows, lambda r: r["send_to_delivered"]["p99_us"]) < SUSTAINED_P99_US


def sustained_rates(chat):
    """{peer: (highest sustained rate or None, the lowest rate above it not
    sustained or None, rates below it not sustained)} over the rates each
    peer was run at."""
    out = {}
    for peer in PEERS:
        rates = sorted({r["target_rate"] for r in chat if r["peer"] == peer})
        if not rates:
            continue
        ok = {}
        for rate in rates:
            rows = [r for r in chat if r["peer"] == peer and r["target_rate"] == rate]
            ok[rate] = sustained(rows)
        good = [r for r in rates if ok[r]]
        best = max(good) if good else None
        above = [r for r in rates if not ok[r] and (best is None or r > best)]
        below = [r for r in rates if not ok[r] and best is not None and r < best]
        out[peer] = (best, min(above) if above else None, below)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--idle", required=True)
    p.add_argument("--chat", required=True)
    p.add_argument("--storm", required=True)
    p.add_argument("--presence", default="/dev/null")
    p.add_argument("--ingest", default="/dev/null")
    p.add_argument("--date", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", default="0")
    a = p.parse_args()
    idle, chat, storm, presence = load(a.idle), load(a.chat), load(a.storm), load(a.presence)
    ingest = load(a.ingest)
    suffix = "-quick" if a.quick == "1" else ""
    machine = {"cpus": os.cpu_count(), "kernel": platform.release(), "machine": platform.machine()}
    for name, rows in (("idle", idle), ("chat", chat), ("storm", storm), ("presence", presence), ("ingest", ingest)):
        with open(os.path.join(a.out, f"{a.date}-{name}{suffix}.json"), "w") as f:
            json.dump({"date": a.date, "machine": machine, "rows": rows}, f, indent=1)

    lines = [f"# Benchmarks {a.date}{' (quick)' if suffix else ''}", ""]
    lines.append(f"Machine: {machine['cpus']} CPUs, Linux {machine['kernel']}, {machine['machine']}; "
                 "load generator on the same machine. Reproduce: `bench/run" + (" --quick" if suffix else "") + "`.")
    lines += ["", "## Idle sessions: server RSS per session (median of runs)", "",
              "| system | sessions | runs | KiB per session | sessions/s connect | Iris / system |",
              "|---|---|---|---|---|---|"]
    for n in sorted({r["sessions"] for r in idle}):
        per = {}
        for peer in PEERS:
            rows = [r for r in idle if r["peer"] == peer and r["sessions"] == n]
            if rows:
                per[peer] = (median_of(rows, lambda r: r["kib_per_session"]),
                             median_of(rows, lambda r: r["connect_per_second"]), len(rows))
        for peer, (kib, cps, runs) in per.items():
            ratio = per["iris"][0] / kib if "iris" in per and kib > 0 else float("nan")
            lines.append(f"| {peer} | {n} | {runs} | {kib:.2f} | {cps:.0f} | {ratio:.2f} |")
    shape = ("users spread evenly over each interval (`--spread`): a steady rate" if any(r.get("spread") for r in chat)
             else "every user sends at the same instants (bursts of all users at once)")
    lines += ["", "## Chat: one-to-one at a fixed rate (median of runs)", "", f"Load shape: {shape}.", "",
              "| system | target rate | runs | delivered/sent (all runs) | accepted p99 (ms) | delivered p50 (ms) | "
              "delivered p99 (ms) | delivered p99 per run (ms) |",
              "|---|---|---|---|---|---|---|---|"]
    for peer in PEERS:
        for rate in sorted({r["target_rate"] for r in chat if r["peer"] == peer}):
            rows = [r for r in chat if r["peer"] == peer and r["target_rate"] == rate]
            acc = [r["send_to_accepted"] for r in rows if r["send_to_accepted"]["count"]]
            acc_p99 = f"{statistics.median(x['p99_us'] for x in acc) / 1000:.2f}" if acc else "n/a"
            dl50 = median_of(rows, lambda r: r["send_to_delivered"]["p50_us"]) / 1000
            dl99 = median_of(rows, lambda r: r["send_to_delivered"]["p99_us"]) / 1000
            each = ", ".join(f"{r['send_to_delivered']['p99_us'] / 1000:.2f}" for r in rows)
            lines.append(f"| {peer} | {rate} | {len(rows)} | {sum(r['delivered'] for r in rows)}/"
                         f"{sum(r['sent'] for r in rows)} | {acc_p99} | {dl50:.2f} | {dl99:.2f} | {each} |")
    lines += ["", "Durability: Iris accepted = synced to disk; Mosquitto QoS 1 in memory; NATS no ack, in memory; "
              "JetStream accepted = its PubAck for a file-backed stream (`jetstream`: the server's default "
              "sync_interval, 2 min, so acked before synced; `jetstream-sync`: sync_interval always, synced on "
              "every write); ejabberd no ack (no XEP-0198), routed in memory (Mnesia offline storage only for "
              "users not online).", ""]
    with_cpu = [r for r in chat if r.get("cpu")]
    if with_cpu:
        lines += ["## Chat: server CPU per message delivered (median of runs)", "",
                  "The server's CPU time (user and system, every thread) from the first send until the last user "
                  "was done, divided by the messages delivered; the load generator's own beside it. On a loopback "
                  "the kernel's work for both ends of a connection is partly charged to whichever process runs it. "
                  "A system past its limit shows less CPU per message than it needs (it batches, and the load "
                  "generator, starved of CPU, sends late).", "",
                  "| system | target rate | runs | server CPU (s) | server µs per message | load generator µs per message "
                  "| Iris / system (µs per message) |",
                  "|---|---|---|---|---|---|---|"]
        iris_us = {rate: median_of([r for r in with_cpu if r["peer"] == "iris" and r["target_rate"] == rate],
                                   lambda r: r["cpu"]["server_us_per_msg"])
                   for rate in {r["target_rate"] for r in with_cpu if r["peer"] == "iris"}}
        for peer in PEERS:
            for rate in sorted({r["target_rate"] for r in with_cpu if r["peer"] == peer}):
                rows = [r for r in with_cpu if r["peer"] == peer and r["target_rate"] == rate]
                us = median_of(rows, lambda r: r["cpu"]["server_us_per_msg"])
                ratio = f"{iris_us[rate] / us:.2f}" if iris_us.get(rate, 0) > 0 and us > 0 else "n/a"
                lines.append(f"| {peer} | {rate} | {len(rows)} | {median_of(rows, lambda r: r['cpu']['server_s']):.2f} "
                             f"| {us:.1f} | {median_of(rows, lambda r: r['cpu']['bench_us_per_msg']):.1f} | {ratio} |")
        lines.append("")
    rates = sustained_rates(chat)
    if rates:
        lines += ["## Chat: highest sustained rate", "",
                  "Sustained: every run delivered everything it sent, and the runs' median delivered p99 is under "
                  "50 ms. `bench/run` steps a system's rate up until its first unsustained one (`--chat-rates` "
                  "can add lower steps). A system that sustained the highest rate tried is at least that fast (the "
                  "load generator, on the same two cores, may be the limit).", "",
                  "| system | highest sustained (msgs/s) | not sustained above it | not sustained below it | Iris / system |",
                  "|---|---|---|---|---|"]
        iris_best = rates.get("iris", (None, None, []))[0]
        for peer, (best, failed, below) in rates.items():
            ratio = f"{iris_best / best:.2f}" if iris_best and best else "n/a"
            shown = "none" if best is None else f"{best}" + ("" if failed else " or more")
            lower = ", ".join(str(r) for r in below) or "-"
            lines.append(f"| {peer} | {shown} | {failed or 'none tried'} | {lower} | {ratio} |")
        lines.append("")
    if storm:
        lines += ["## Storm: every session dropped at once and resumed (Iris)", "",
                  "| sessions | runs | all resumed in (s), median | per run (s) | messages accepted during the storm | delivered | lost |",
                  "|---|---|---|---|---|---|---|"]
        for n in sorted({r["sessions"] for r in storm}):
            rows = [r for r in storm if r["sessions"] == n]
            each = ", ".join(f"{r['all_resumed_s']:.2f}" for r in rows)
            lines.append(f"| {n} | {len(rows)} | {median_of(rows, lambda r: r['all_resumed_s']):.2f} | {each} | "
                         f"{sum(r['messages_accepted'] for r in rows)} | {sum(r['messages_delivered'] for r in rows)} | "
                         f"{sum(r['lost'] for r in rows)} |")
        lines.append("")
    if ingest:
        lines += ["## Event ingestion over HTTP (Iris, median of runs)", "",
                  "`iris-bench ingest`: batches of 100 events on 8 connections at a fixed total rate (one batch in flight on each), each answered "
                  "202 once its events, idempotency keys and rollups are synced. Server CPU: the node's, every "
                  "thread, during the load, per event accepted.", "",
                  "| target events/s | runs | accepted events/s | refused batches | batch ack p50 (ms) | p99 (ms) "
                  "| server µs per event |",
                  "|---|---|---|---|---|---|---|"]
        for rate in sorted({r["target_events_per_second"] for r in ingest}):
            rows = [r for r in ingest if r["target_events_per_second"] == rate]
            cpu = [r["cpu"]["server_us_per_event"] for r in rows if r.get("cpu")]
            lines.append(f"| {rate} | {len(rows)} | {median_of(rows, lambda r: r['events_per_second']):.0f} "
                         f"| {sum(r['refused_batches'] for r in rows)} "
                         f"| {median_of(rows, lambda r: r['batch_ack']['p50_us']) / 1000:.2f} "
                         f"| {median_of(rows, lambda r: r['batch_ack']['p99_us']) / 1000:.2f} "
                         f"| {statistics.median(cpu) if cpu else float('nan'):.1f} |")
        lines.append("")
    if presence:
        lines += ["## Presence: one user, K subscribers, a status change (Iris)", "",
                  "| subscribers | rounds | all saw it (ms), median of rounds | per round (ms) | each subscriber p50 / p99 (ms) |",
                  "|---|---|---|---|---|"]
        for r in presence:
            each = ", ".join(f"{x:.1f}" for x in r["all_seen_ms_per_round"])
            lines.append(f"| {r['subscribers']} | {r['rounds']} | {r['all_seen_ms_median']:.2f} | {each} | "
                         f"{r['each_p50_us'] / 1000:.2f} / {r['each_p99_us'] / 1000:.2f} |")
        lines.append("")
    for path in charts(a, suffix, idle, chat):
        lines.append(f"![{os.path.basename(path)}]({os.path.basename(path)})")
    lines.append("")
    with open(os.path.join(a.out, f"{a.date}-summary{suffix}.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    # summarize.py --is-sustained CHAT_JSONL SYSTEM RATE: exit 0 when the
    # runs of SYSTEM at RATE so far sustained it (bench/run's rate steps).
    if len(sys.argv) == 5 and sys.argv[1] == "--is-sustained":
        _, _, path, peer, rate = sys.argv
        runs = [r for r in load(path) if r["peer"] == peer and r["target_rate"] == int(rate)]
        sys.exit(0 if sustained(runs) else 1)
    main()
