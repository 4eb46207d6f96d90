#!/usr/bin/env python3
"""Summarizes bench/region's runs: medians per system and rate, the highest
sustainable rate of each system (everything delivered within the run and
delivered p99 under 50 ms), ratios against the broker alone and the single
node measured in the same run, the CPU each process spent per message, and a
latency chart.

  summarize_region.py RESULTS.json OUT_DIR DATE QUICK
"""
import json
import os
import platform
import statistics
import sys
from collections import defaultdict

P99_BOUND_US = 50_000


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def med(xs):
    return statistics.median(xs) if xs else None


def delivered_of(r):
    return r.get("delivered", r.get("consumed", 0))


def p(r, q):
    key = "send_to_delivered" if "send_to_delivered" in r else "send_to_consumed"
    return r[key][q]


def main():
    runs, out, date, quick = load(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    by = defaultdict(list)
    for r in runs:
        by[(r["system"], r["target_rate"])].append(r)
    rows = {}
    for (system, rate), rs in sorted(by.items()):
        ok = [r for r in rs if not r.get("failed")]
        row = {"system": system, "rate": rate, "runs": len(rs), "failed": len(rs) - len(ok)}
        if ok:
            row["sent"] = med([r["sent"] for r in ok])
            row["delivered_fraction"] = med([delivered_of(r) / max(r["sent"], 1) for r in ok])
            row["p50_us"] = med([p(r, "p50_us") for r in ok])
            row["p99_us"] = med([p(r, "p99_us") for r in ok])
            row["sustained"] = (
                not row["failed"]
                and all(delivered_of(r) >= r["sent"] for r in ok)
                and row["p99_us"] < P99_BOUND_US
            )
            cpu = defaultdict(list)
            per_msg = defaultdict(list)
            for r in ok:
                for k, v in r.get("cpu_percent", {}).items():
                    cpu[k].append(v)
                for k, v in r.get("cpu_us_per_message", {}).items():
                    per_msg[k].append(v)
            row["cpu_percent"] = {k: med(v) for k, v in cpu.items()}
            row["cpu_us_per_message"] = {k: med(v) for k, v in per_msg.items()}
        else:
            row["sustained"] = False
        rows[(system, rate)] = row

    systems = sorted({s for s, _ in rows})
    best = {}
    carried = {}
    for s in systems:
        sustained = [rate for (sys_, rate), row in rows.items() if sys_ == s and row["sustained"]]
        best[s] = max(sustained) if sustained else 0
        # The highest rate at which every message of every run was
        # delivered within the run (whatever the latency).
        full = [
            rate
            for (sys_, rate), row in rows.items()
            if sys_ == s and not row["failed"] and row.get("delivered_fraction", 0) >= 1.0
        ]
        carried[s] = max(full) if full else 0

    lines = [f"# A region beside its floor ({date}{', quick' if quick else ''})", ""]
    lines.append(
        f"Machine: {os.cpu_count()} CPUs, {platform.release()}, "
        + next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    )
    lines.append("Reproduce: `bench/region` (see its header). Medians of the runs at each rate.")
    chats = [r for r in runs if r.get("scenario", "chat") == "chat" and "spread" in r]
    if chats:
        spread = any(r.get("spread") for r in chats)
        lines.append("Load shape: " + ("users spread evenly over each interval (`--spread`)." if spread
                                       else "every user sends at the same instants (bursts)."))
    lines.append("Sustainable: every message delivered within the run and delivered p99 under 50 ms.")
    lines.append("A rate the runs cover only up to their highest: a system sustainable at the highest rate tried")
    lines.append("may hold more (the broker alone and the single node here).")
    lines.append("")
    lines.append("## Highest sustainable rate (msgs/s) of each system")
    lines.append("")
    lines.append(
        "| system | highest sustainable rate | vs single node (embedded) | vs single node (Redis) | vs the broker alone "
        "| highest rate fully delivered (any p99) |"
    )
    lines.append("|---|---|---|---|---|---|")
    floor_of = lambda s: best.get("kafka-3" if s.endswith("k3") else "kafka-1", 0)

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "n/a"

    lowest = {}
    for (sys_, rate) in rows:
        lowest[sys_] = min(rate, lowest.get(sys_, rate))

    def rate_or_none(s, r):
        return str(r) if r else f"none (not even {lowest[s]})"

    for s in systems:
        if s.startswith("region"):
            lines.append(
                f"| {s} | {rate_or_none(s, best[s])} | {ratio(best[s], best.get('single-embedded'))} | "
                f"{ratio(best[s], best.get('single-redis'))} | {ratio(best[s], floor_of(s))} | "
                f"{rate_or_none(s, carried[s])} |"
            )
        else:
            lines.append(f"| {s} | {rate_or_none(s, best[s])} | | | | {rate_or_none(s, carried[s])} |")
    lines.append("")
    lines.append("## Delivered latency against the broker's one hop, same rate")
    lines.append("")
    lines.append("| system | rate | delivered p99 ms | broker one-hop p99 ms | ratio |")
    lines.append("|---|---|---|---|---|")
    for (s, rate), row in sorted(rows.items()):
        if not s.startswith("region") or "p99_us" not in row:
            continue
        floor_sys = "kafka-3" if s.endswith("k3") else "kafka-1"
        f = rows.get((floor_sys, rate))
        fp = f.get("p99_us") if f else None
        lines.append(
            f"| {s} | {rate} | {row['p99_us'] / 1000:.1f} | {fp / 1000:.1f} | {row['p99_us'] / fp:.1f} |"
            if fp
            else f"| {s} | {rate} | {row['p99_us'] / 1000:.1f} | (not measured at this rate) | |"
        )
    lines.append("")
    lines.append("## Every system and rate")
    lines.append("")
    lines.append("| system | rate | runs | delivered | p50 ms | p99 ms | sustained | CPU % by process | CPU µs per message by process |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for (s, rate), row in sorted(rows.items()):
        if "p99_us" not in row:
            lines.append(f"| {s} | {rate} | {row['runs']} | failed | | | no | | |")
            continue
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in row.get("cpu_percent", {}).items())
        per = ", ".join(f"{k} {v:.0f}" for k, v in row.get("cpu_us_per_message", {}).items())
        lines.append(
            f"| {s} | {rate} | {row['runs']} | {100 * row['delivered_fraction']:.1f} % | {row['p50_us'] / 1000:.2f} | "
            f"{row['p99_us'] / 1000:.2f} | {'yes' if row['sustained'] else 'no'} | {cpu} | {per} |"
        )
    md = os.path.join(out, f"{date}-region.md")
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[:20]))
    print(f"bench/region: wrote {md}", file=sys.stderr)

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for s in systems:
        pts = sorted((rate, row["p99_us"] / 1000) for (sys_, rate), row in rows.items() if sys_ == s and "p99_us" in row)
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=s)
    ax.axhline(50, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered msgs/s")
    ax.set_ylabel("delivered (consumed) p99, ms")
    ax.set_title(f"Region vs broker vs single node, {date}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = os.path.join(out, f"{date}-region-latency.png")
    fig.savefig(png, dpi=110)
    print(f"bench/region: wrote {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
