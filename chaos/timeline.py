#!/usr/bin/env python3
"""Draws a chaos run's timeline: accepted sends per second and the worst
send-to-accepted latency in each second, with the fault windows shaded.

  chaos/timeline.py RUN_DIR     (reads report.json and history.jsonl, writes timeline.png)
"""
import json
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(1)

run = sys.argv[1]
report = json.load(open(f"{run}/report.json"))
starts = {}
windows = []
healed = None
t0 = None
with open(f"{run}/history.jsonl") as f:
    for line in f:
        e = json.loads(line)
        if e["op"] == "fault_start":
            starts[e["fault"]] = e["t"]
        elif e["op"] == "fault_end" and e["fault"] in starts:
            windows.append((starts.pop(e["fault"]) / 1000, e["t"] / 1000, e["fault"]))
        elif e["op"] == "healed":
            healed = e["t"] / 1000
secs = report["per_second"]
xs = [s[0] for s in secs]
fig, ax = plt.subplots(figsize=(11, 4.5))
ax.bar(xs, [s[1] for s in secs], width=1.0, color="#4c72b0", label="accepted / s")
ax.set_xlabel("seconds since start")
ax.set_ylabel("accepted per second")
ax2 = ax.twinx()
ax2.plot(xs, [s[2] / 1000 for s in secs], color="#dd8452", linewidth=1, label="worst send→accepted (s)")
ax2.set_ylabel("worst send→accepted, s")
for a, b, name in windows:
    ax.axvspan(a, max(b, a + 0.5), color="red", alpha=0.12)
    ax.text(a, ax.get_ylim()[1] * 0.97, name, fontsize=6, rotation=90, va="top")
if healed is not None:
    ax.axvline(healed, color="green", linestyle="--", linewidth=1)
ok = "every invariant holds" if report["ok"] else "INVARIANTS BROKEN"
ax.set_title(f"chaos seed {report['seed']}: {ok}")
fig.tight_layout()
fig.savefig(f"{run}/timeline.png", dpi=100)
