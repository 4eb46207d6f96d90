"""Turns bench/run's raw JSON lines into results files and a Markdown summary
(medians of the runs, ratios Iris/peer). No timing assertions: the numbers
are read against the goals in docs, not checked here."""

import argparse
import json
import os
import platform
import statistics


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--idle", required=True)
    p.add_argument("--chat", required=True)
    p.add_argument("--date", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", default="0")
    a = p.parse_args()
    idle, chat = load(a.idle), load(a.chat)
    suffix = "-quick" if a.quick == "1" else ""
    machine = {"cpus": os.cpu_count(), "kernel": platform.release(), "machine": platform.machine()}
    for name, rows in (("idle", idle), ("chat", chat)):
        with open(os.path.join(a.out, f"{a.date}-{name}{suffix}.json"), "w") as f:
            json.dump({"date": a.date, "machine": machine, "rows": rows}, f, indent=1)

    lines = [f"# Benchmarks {a.date}{' (quick)' if suffix else ''}", ""]
    lines.append(f"Machine: {machine['cpus']} CPUs, Linux {machine['kernel']}, {machine['machine']}; "
                 "load generator on the same machine. Reproduce: `bench/run" + (" --quick" if suffix else "") + "`.")
    lines += ["", "## Idle sessions: server RSS per session (median of runs)", "",
              "| system | sessions | KiB per session | sessions/s connect | Iris / system |", "|---|---|---|---|---|"]
    per = {}
    for peer in ("iris", "mosquitto", "nats"):
        rows = [r for r in idle if r["peer"] == peer]
        if rows:
            per[peer] = (statistics.median(r["kib_per_session"] for r in rows),
                         statistics.median(r["connect_per_second"] for r in rows), rows[0]["sessions"])
    for peer, (kib, cps, n) in per.items():
        ratio = per["iris"][0] / kib if "iris" in per and kib > 0 else float("nan")
        lines.append(f"| {peer} | {n} | {kib:.2f} | {cps:.0f} | {ratio:.2f} |")
    lines += ["", "## Chat: one-to-one at a fixed rate", "",
              "| system | target rate | delivered | accepted p99 (ms) | delivered p50 (ms) | delivered p99 (ms) |",
              "|---|---|---|---|---|---|"]
    for r in chat:
        acc = r["send_to_accepted"]
        dl = r["send_to_delivered"]
        acc_p99 = f"{acc['p99_us'] / 1000:.2f}" if acc["count"] else "n/a"
        lines.append(f"| {r['peer']} | {r['target_rate']} | {r['delivered']}/{r['sent']} | {acc_p99} | "
                     f"{dl['p50_us'] / 1000:.2f} | {dl['p99_us'] / 1000:.2f} |")
    lines += ["", "Durability: Iris accepted = synced to disk; Mosquitto QoS 1 in memory; NATS no ack, in memory.", ""]
    with open(os.path.join(a.out, f"{a.date}-summary{suffix}.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
