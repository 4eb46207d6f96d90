#!/usr/bin/env python3
"""Derive the per-process capacity figures that terraform/modules/region-topology
sizes a region with, from the benchmark result files committed in bench/results/.

    terraform/scripts/capacity.py            # print the JSON
    terraform/scripts/capacity.py --write    # (re)write bench/results/capacity.json
    terraform/scripts/capacity.py --check    # exit 1 if the committed file differs

Every figure names the file it came from and the rows it was taken from
("select"); the value is computed here from those rows, never typed in. The
only figure that no bench in this repository measures (kernel memory per
idle TCP socket) says so with "measured": false.
"""

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "capacity.json"

REGION = "bench/results/2026-12-04-region.json"
IDLE = "bench/results/2026-11-22-idle.json"
CHAT = "bench/results/2026-11-22-chat.json"


def lines(rel):
    return [json.loads(l) for l in (ROOT / rel).read_text().splitlines() if l.strip()]


def rows(rel):
    return json.loads((ROOT / rel).read_text())["rows"]


def region_rows(system, rate):
    out = [r for r in lines(REGION) if r.get("scenario") == "chat" and r["system"] == system and r["target_rate"] == rate]
    if not out:
        sys.exit(f"capacity.py: no rows for {system} at {rate} msgs/s in {REGION}")
    return out


def region_cpu(name, system, rate, processes, what):
    """Median over runs of the summed CPU µs per message of the named processes."""
    rs = region_rows(system, rate)
    per_run = []
    for r in rs:
        cpu = r["cpu_us_per_message"]
        missing = [p for p in processes if p not in cpu]
        if missing:
            sys.exit(f"capacity.py: {system} at {rate}: no CPU figure for {missing}")
        per_run.append(sum(cpu[p] for p in processes))
    all_accepted = all(r["accepted"] == r["sent"] for r in rs)
    return name, {
        "value": round(statistics.median(per_run), 1),
        "unit": "cpu_us_per_message",
        "what": what,
        "source": REGION,
        "select": f"scenario=chat system={system} target_rate={rate}; sum of cpu_us_per_message[{', '.join(processes)}]; median of {len(rs)} runs",
        "runs": [round(v, 1) for v in per_run],
        "every_send_accepted": all_accepted,
        "measured": True,
    }


def idle_kib(name, system, transport, what):
    rs = [r for r in rows(IDLE) if r["system"] == system and r["transport"] == transport]
    if not rs:
        sys.exit(f"capacity.py: no idle rows for {system}/{transport}")
    n = max(r["sessions"] for r in rs)
    at_n = [r["kib_per_session"] for r in rs if r["sessions"] == n]
    return name, {
        "value": round(statistics.median(at_n), 2),
        "unit": "KiB_per_session",
        "what": what,
        "source": IDLE,
        "select": f"system={system} transport={transport} sessions={n} (the largest N measured); median of {len(at_n)} runs",
        "runs": at_n,
        "measured": True,
    }


def chat_ceiling(name, system, transport, p99_ms, what):
    """The highest rate at which every run delivered everything with p99 under the bound."""
    rs = [r for r in rows(CHAT) if r["system"] == system and r["transport"] == transport]
    ok = []
    for rate in sorted({r["target_rate"] for r in rs}):
        at = [r for r in rs if r["target_rate"] == rate]
        if all(r["delivered"] == r["sent"] for r in at) and statistics.median(
            r["send_to_delivered"]["p99_us"] for r in at
        ) < p99_ms * 1000:
            ok.append(rate)
    if not ok:
        sys.exit(f"capacity.py: no rate of {system}/{transport} met p99 < {p99_ms} ms")
    return name, {
        "value": max(ok),
        "unit": "msgs_per_second",
        "what": what,
        "source": CHAT,
        "select": f"system={system} transport={transport}: highest target_rate where every run delivered all it sent and the median p99 send->delivered < {p99_ms} ms",
        "measured": True,
    }


def derive():
    figures = dict(
        [
            region_cpu(
                "edge_cpu_us_per_message",
                "region-1e1c-k1",
                5000,
                ["edge-1"],
                "edge CPU per chat message, sender's and recipient's edge work together (one edge held both)",
            ),
            region_cpu("core_cpu_us_per_message", "region-1e1c-k1", 5000, ["core-1"], "core CPU per chat message"),
            region_cpu(
                "broker_cpu_us_per_message_rf1",
                "region-1e1c-k1",
                5000,
                ["broker-1"],
                "Kafka broker CPU per chat message, one broker, no replication",
            ),
            region_cpu(
                "broker_cpu_us_per_message_rf3",
                "region-1e1c-k3",
                2500,
                ["broker-1", "broker-2", "broker-3"],
                "Kafka CPU per chat message over three brokers, replication factor 3 (the highest rate at which every run accepted every send; the whole region shared 2 vCPUs, so this is pessimistic)",
            ),
            region_cpu("redis_cpu_us_per_message", "region-1e1c-k1", 5000, ["redis"], "Redis CPU per chat message (redis backend, appendfsync always)"),
            idle_kib("ws_session_kib", "iris", "websocket", "Iris process memory (RSS) per idle WebSocket session"),
            idle_kib("quic_session_kib", "iris", "quic", "Iris process memory (RSS) per idle QUIC session"),
            chat_ceiling(
                "single_node_chat_msgs_per_second",
                "iris",
                "websocket",
                50,
                "one Iris node (all roles, embedded store) on 2 shared vCPUs with the load generator: sustained chat rate",
            ),
        ]
    )
    figures["kernel_tcp_socket_kib"] = {
        "value": 4.2,
        "unit": "KiB_per_session",
        "what": "kernel memory (slab, outside the process RSS) per idle TCP socket",
        "source": "docs/capacity.md",
        "select": "the kernel-slab estimate docs/capacity.md cites; no bench in this repository measures it",
        "measured": False,
    }
    figures["records_per_message"] = {
        "value": 3,
        "unit": "kafka_records_per_message",
        "what": "Kafka records one chat message costs: the send to the shard topic, accepted to the sender's edge topic, the message to the recipient's edge topic",
        "source": "docs/capacity.md",
        "select": "the message path (ARCHITECTURE: a message, end to end)",
        "measured": False,
    }
    return {
        "schema": 1,
        "written_by": "terraform/scripts/capacity.py (do not edit by hand; run it with --write)",
        "machine": "2 shared vCPUs (bench/results/2026-11-22-summary.md); load generator on the same machine",
        "figures": figures,
    }


def main():
    text = json.dumps(derive(), indent=2, sort_keys=True) + "\n"
    if "--write" in sys.argv:
        OUT.write_text(text)
        print(f"wrote {OUT.relative_to(ROOT)}")
    elif "--check" in sys.argv:
        have = OUT.read_text() if OUT.exists() else ""
        if have != text:
            print(f"{OUT.relative_to(ROOT)} differs from what {REGION} and {IDLE} give: run terraform/scripts/capacity.py --write")
            sys.exit(1)
        print(f"ok: {OUT.relative_to(ROOT)} matches the bench results")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
