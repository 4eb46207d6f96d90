#!/usr/bin/env python3
"""Where a chaos run's slow deliveries come from: rolling restarts and one-way cuts.

    chaos/recovery.py HISTORY [HISTORY ...]     (history.jsonl or history.jsonl.xz)

For the sends first tried during a rolling restart: how many were delivered,
how many of those took over 2 s (send -> the recipient's main device first got
it, the checker's measure), and send -> accepted p50 / p99 / max (a send whose
shard is moving waits for its new owner before it is accepted).

For each `one-way` cut of an edge: the sends made during the cut to users whose
session was on that edge, and when they were delivered, counted from the heal
(p50 / max, ms). An edge whose sessions a shard ended during the cut gets them
back only through its own lease renewals (ADR 0015), so this is how long the
edge took to be heard again. A user's edge is that of their latest session
(`hello_done` does not say which of a user's devices opened it, so a second
device's session counts too); sends never delivered to the main device are
counted apart.
"""
import math
import sys

from attempts import events, fault_windows


def pct(xs, q):
    """Nearest rank, as the checker's (`chaos/src/checker.rs`)."""
    return xs[max(0, math.ceil(q * len(xs)) - 1)] if xs else None


def summarize(path):
    evs = list(events(path))
    faults, started = fault_windows(evs)
    end = evs[-1]["t"] if evs else 0
    faults += [(f, t, end) for f, t in started.items()]

    edge, first, accepted, by_msg, delivered = {}, {}, {}, {}, {}
    # Accepts first: a delivery can be recorded before its send's `accepted`.
    for e in evs:
        if e["op"] == "accepted":
            k = (e["tenant"], e["id"])
            accepted.setdefault(k, e["t"])
            by_msg[(e["tenant"], e["msg_id"])] = k
    for e in evs:
        op = e["op"]
        if op == "hello_done" and e.get("ok"):
            edge[(e["tenant"], e["user"])] = e["edge"]
        elif op == "send":
            k = (e["tenant"], e["id"])
            if k not in first:
                first[k] = (e["t"], edge.get((e["tenant"], e["to"])))
        elif op == "delivered" and "device" not in e:
            k = by_msg.get((e["tenant"], e["msg_id"]))
            if k is not None and k not in delivered:
                delivered[k] = e["t"]

    print(path)
    rolling = [(a, b) for f, a, b in faults if f.startswith("rolling")]
    sends = [k for k, (t, _) in first.items() if any(a <= t <= b for a, b in rolling)]
    waits = sorted(delivered[k] - first[k][0] for k in sends if k in delivered)
    acks = sorted(accepted[k] - first[k][0] for k in sends if k in accepted)
    if rolling:
        print(
            "  rolling restarts: %d delivered, %d over 2 s; send -> accepted p50 / p99 / max %s / %s / %s ms"
            % (len(waits), sum(1 for w in waits if w > 2000), pct(acks, 0.5), pct(acks, 0.99), acks[-1] if acks else None)
        )
    for f, a, b in faults:
        if not f.startswith("one-way edge"):
            continue
        cut = f.split()[-1]
        sent = [k for k, (t, to) in first.items() if a <= t <= b and to == cut and k in accepted]
        after = sorted(delivered[k] - b for k in sent if k in delivered)
        if after:
            print(
                "  %s, %.1f s: %d sends to its sessions made during the cut, delivered at heal + p50 / max %d / %d ms; %d accepted, not delivered to the main device"
                % (f, (b - a) / 1000, len(after), pct(after, 0.5), after[-1], len(sent) - len(after))
            )


for p in sys.argv[1:]:
    summarize(p)
