#!/usr/bin/env python3
"""The hop-by-hop latency of a region run, from the nodes' Prometheus
histograms read before and after it (bench/region-hops).

  hops.py RATE SHARDS PRODUCERS FETCH CHAT_JSON CORE_BEFORE CORE_AFTER EDGE_BEFORE EDGE_AFTER   -> one JSON line
  hops.py --summarize RESULTS_JSONL OUT_MD   (medians over the runs of each combination)
"""
import json
import os
import platform
import re
import statistics
import sys
import time

# (name in the report, which node, metric, label filter)
HOPS = [
    ("edge publish (send -> broker ack)", "edge", "iris_bus_publish_seconds", 'topic="shard"'),
    ("shard hop (edge produce -> core consume)", "core", "iris_bus_hop_seconds", 'hop="shard"'),
    ("commit (core -> Redis, fsync)", "core", "iris_shard_commit_seconds", ""),
    ("edge hop (core produce -> edge consume)", "edge", "iris_bus_hop_seconds", 'hop="edge"'),
]

LINE = re.compile(r'^(\w+)_bucket\{(.*)\} (\S+)$')


def buckets(path, metric, want):
    """Cumulative bucket counts {le: count} of `metric` whose labels hold `want`."""
    out = {}
    for line in open(path):
        m = LINE.match(line.strip())
        if not m or m.group(1) != metric:
            continue
        labels = m.group(2)
        if want and want not in labels:
            continue
        le = re.search(r'le="([^"]+)"', labels).group(1)
        le = float("inf") if le == "+Inf" else float(le)
        out[le] = out.get(le, 0) + float(m.group(3))
    return out


def quantile(cum, q):
    """Linear interpolation inside the bucket that holds quantile q."""
    total = cum.get(float("inf"), 0)
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le in sorted(cum):
        n = cum[le]
        if n >= rank:
            if le == float("inf"):
                return prev_le
            span = n - prev_n
            frac = (rank - prev_n) / span if span > 0 else 1.0
            return prev_le + (le - prev_le) * frac
        prev_le, prev_n = le, n
    return prev_le


PROCESSES = ("core", "edge", "broker", "redis")
# The broker's JIT compiler threads, a part of "broker" (bench/jit.sh).
JIT = "broker_jit"


def one(rate, shards, producers, fetch, chat, core_b, core_a, edge_b, edge_a,
        build="this", cpu_b=None, cpu_a=None, t0=None, t1=None, rq_b=None, rq_a=None):
    files = {"core": (core_b, core_a), "edge": (edge_b, edge_a)}
    r = json.load(open(chat))
    row = {
        "build": build,
        "rate": int(rate),
        "shards": int(shards) if shards.isdigit() else shards,
        "producers": int(producers),
        "fetch": fetch,
        "load": "spread" if r.get("spread") else "burst",
        "delivered": r["delivered"],
        "sent": r["sent"],
        "send_to_accepted_ms": {k: r["send_to_accepted"][k] / 1000 for k in ("p50_us", "p99_us")},
        "send_to_delivered_ms": {k: r["send_to_delivered"][k] / 1000 for k in ("p50_us", "p99_us")},
        "hops": {},
    }
    if cpu_b and cpu_a and t0 and t1:
        tick = os.sysconf("SC_CLK_TCK")
        secs = float(t1) - float(t0)
        used = [(int(a) - int(b)) / tick for b, a in zip(cpu_b.split(), cpu_a.split())]
        row["cpu"] = {
            name: {"percent": round(100 * u / secs, 1),
                   "us_per_delivered": round(1e6 * u / max(1, r["delivered"]), 1)}
            for name, u in zip(PROCESSES + (JIT,), used)
        }
    if rq_b and rq_a and t0 and t1:
        # Time the process's threads were runnable but waited for a CPU
        # (/proc/PID/task/*/schedstat, second field, ns), per second of run.
        secs = float(t1) - float(t0)
        waited = [(int(a) - int(b)) / 1e6 for b, a in zip(rq_b.split(), rq_a.split())]
        row["run_queue_ms_per_s"] = {name: round(w / secs, 1) for name, w in zip(PROCESSES, waited)}
    for name, node, metric, want in HOPS:
        before, after = (buckets(p, metric, want) for p in files[node])
        run = {le: after.get(le, 0) - before.get(le, 0) for le in after}
        p50, p99 = quantile(run, 0.5), quantile(run, 0.99)
        row["hops"][name] = {
            "count": int(run.get(float("inf"), 0)),
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        }
    print(json.dumps(row))


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x):
    return "-" if x is None else f"{x:.1f}"


def summarize(results, out):
    rows = [json.loads(l) for l in open(results) if l.strip()]
    groups = {}
    for r in rows:
        key = (r.get("build", "this"), r["shards"], r.get("producers", 1), r.get("fetch", "100:1"), r["load"], r["rate"])
        groups.setdefault(key, []).append(r)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        f"# A region's chat latency, hop by hop ({time.strftime('%Y-%m-%d', time.gmtime())})",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.release()}, {cpu}. Reproduce: `bench/region-hops`.",
        "One edge and one core, Redis (appendfsync always), one Apache Kafka broker, a fresh region per run;",
        "quantiles of each node's own histograms over the run (bucket-interpolated, so coarse);",
        "medians over the runs of each combination (`runs`).",
        "",
        "| build | shards | producers | fetch wait:min bytes | load | rate | runs | delivered | client send -> accepted p50 / p99 ms | client send -> delivered p50 / p99 ms | CPU % of a core: core / edge / broker / Redis | CPU µs per delivered message: core / edge / broker / Redis | broker's JIT compiler, % of a core |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (build, shards, producers, fetch, load, rate), rs in groups.items():
        a50 = med(r["send_to_accepted_ms"]["p50_us"] for r in rs)
        a99 = med(r["send_to_accepted_ms"]["p99_us"] for r in rs)
        d50 = med(r["send_to_delivered_ms"]["p50_us"] for r in rs)
        d99 = med(r["send_to_delivered_ms"]["p99_us"] for r in rs)
        got = sum(r["delivered"] for r in rs)
        sent = sum(r["sent"] for r in rs)
        with_cpu = [r for r in rs if "cpu" in r]
        pct = " / ".join(fmt(med(r["cpu"][p]["percent"] for r in with_cpu)) for p in PROCESSES) if with_cpu else "-"
        per = " / ".join(f"{med(r['cpu'][p]['us_per_delivered'] for r in with_cpu):.0f}" for p in PROCESSES) if with_cpu else "-"
        jit = fmt(med(r["cpu"][JIT]["percent"] for r in with_cpu if JIT in r["cpu"]))
        lines.append(f"| {build} | {shards} | {producers} | {fetch} | {load} | {rate} | {len(rs)} | {got} of {sent} | {fmt(a50)} / {fmt(a99)} | {fmt(d50)} / {fmt(d99)} | {pct} | {per} | {jit} |")
    builds = list(dict.fromkeys(k[0] for k in groups))
    if len(builds) > 1:
        first = builds[0]
        lines += ["", f"Ratios against `{first}` (medians; below 1 is better):", "",
                  "| build | shards | producers | fetch | load | rate | delivered p50 | delivered p99 | CPU per message, all four |",
                  "|---|---|---|---|---|---|---|---|---|"]
        def total_cpu(rs):
            with_cpu = [r for r in rs if "cpu" in r]
            return med(sum(r["cpu"][p]["us_per_delivered"] for p in PROCESSES) for r in with_cpu) if with_cpu else None
        def ratio(x, y):
            return "-" if x is None or y is None or x == 0 else f"{y / x:.2f}"
        for (build, *rest), rs in groups.items():
            if build == first or (first, *rest) not in groups:
                continue
            base = groups[(first, *rest)]
            d = lambda g, q: med(r["send_to_delivered_ms"][q] for r in g)
            lines.append(f"| {build} | {' | '.join(str(x) for x in rest)} | {ratio(d(base, 'p50_us'), d(rs, 'p50_us'))} | {ratio(d(base, 'p99_us'), d(rs, 'p99_us'))} | {ratio(total_cpu(base), total_cpu(rs))} |")
    waits = {k: rs for k, rs in groups.items() if any("run_queue_ms_per_s" in r for r in rs)}
    if waits:
        lines += ["", "Time each process's threads were runnable but waited for a CPU, ms per second of run",
                  "(`/proc/PID/task/*/schedstat`; 1,000 is one thread waiting all the time), medians:", "",
                  "| build | shards | producers | fetch | load | rate | run-queue wait ms/s: core / edge / broker / Redis |",
                  "|---|---|---|---|---|---|---|"]
        for (build, shards, producers, fetch, load, rate), rs in waits.items():
            w = [r for r in rs if "run_queue_ms_per_s" in r]
            cell = " / ".join(f"{med(r['run_queue_ms_per_s'][p] for r in w):.0f}" for p in PROCESSES)
            lines.append(f"| {build} | {shards} | {producers} | {fetch} | {load} | {rate} | {cell} |")
    lines += ["", "| build | shards | producers | fetch wait:min bytes | load | rate | hop | count (all runs) | p50 ms | p99 ms |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for (build, shards, producers, fetch, load, rate), rs in groups.items():
        for name in rs[0]["hops"]:
            hs = [r["hops"][name] for r in rs]
            count = sum(h["count"] for h in hs)
            lines.append(f"| {build} | {shards} | {producers} | {fetch} | {load} | {rate} | {name} | {count} | {fmt(med(h['p50_ms'] for h in hs))} | {fmt(med(h['p99_ms'] for h in hs))} |")
    open(out, "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "--summarize":
        summarize(sys.argv[2], sys.argv[3])
    else:
        one(*sys.argv[1:17])
