#!/usr/bin/env python3
"""How long each send attempt of a chaos run waited, by the fault it was made in.

    chaos/attempts.py HISTORY [HISTORY ...]     (history.jsonl or history.jsonl.xz)

A send attempt ends with its `accepted`, or with the next attempt of the same
id (the workload retries after `unavailable`, an error or no answer in time,
after a short pause). So the figures are what a client waited for an answer,
plus that pause where the attempt was refused. Printed per fault kind the
attempt was made in (`none`: no fault on): attempts, how many ended in a
retry, and the wait's p50 / p90 / p99 / max in milliseconds.
"""
import json
import lzma
import sys


def events(path):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt") as f:
        for line in f:
            yield json.loads(line)


def fault_windows(evs):
    """The faults that ended, as (fault, start, end); and those still on, by start."""
    faults, started = [], {}
    for e in evs:
        if e["op"] == "fault_start":
            started[e["fault"]] = e["t"]
        elif e["op"] == "fault_end" and e["fault"] in started:
            faults.append((e["fault"], started.pop(e["fault"]), e["t"]))
    return faults, started


def summarize(path):
    evs = list(events(path))
    faults = [(f.split()[0], a, b) for f, a, b in fault_windows(evs)[0]]

    def kind(t):
        for name, a, b in faults:
            if a <= t <= b:
                return name
        return "none"

    last, waits = {}, {}
    for e in evs:
        if e["op"] not in ("send", "accepted"):
            continue
        key = (e["tenant"], e["id"])
        if key in last:
            t0 = last.pop(key)
            waits.setdefault(kind(t0), []).append((e["op"] == "send", e["t"] - t0))
        if e["op"] == "send":
            last[key] = e["t"]
    rows = []
    for name in sorted(waits):
        ds = sorted(d for _, d in waits[name])
        retried = sum(1 for r, _ in waits[name] if r)

        def q(f):
            return ds[min(len(ds) - 1, int(f * len(ds)))]

        rows.append((name, len(ds), retried, q(0.5), q(0.9), q(0.99), ds[-1]))
    return rows


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        print(f"{path}\n")
        print("| made during | attempts | retried | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|---|")
        for row in summarize(path):
            print("| " + " | ".join(str(x) for x in row) + " |")
        print()


if __name__ == "__main__":
    main()
