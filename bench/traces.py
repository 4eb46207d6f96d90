#!/usr/bin/env python3
"""Where a region's sampled messages wait, from their traces (ADR 0023).

  bench/traces.py serve PORT FILE   a minimal OTLP/HTTP JSON sink: appends every
                                    export request's body to FILE, one per line
  bench/traces.py gaps FILE         per traced send: the edge's route, the wait
                                    from routing to the shard's handling, the
                                    handling, and the way back; then the wait
                                    by shard (busiest and quietest shards)

Give every node `[tracing] otlp_endpoint = "http://127.0.0.1:PORT/v1/traces"`
and a `sample_ratio`, run a load, then `gaps`. Used for
bench/results/2026-12-06-region-traces-5000.md.
"""
import collections
import http.server
import json
import sys


def serve(port, path):
    out = open(path, "a")

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            out.write(body.decode() + "\n")
            out.flush()
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Sink).serve_forever()


def spans(path):
    traces = collections.defaultdict(lambda: collections.defaultdict(list))
    for line in open(path):
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    attrs = {a["key"]: next(iter(a["value"].values())) for a in s.get("attributes", [])}
                    span = (int(s["startTimeUnixNano"]) / 1e6, int(s["endTimeUnixNano"]) / 1e6, attrs)
                    traces[s["traceId"]][s["name"]].append(span)
    return traces


def line(name, xs):
    xs = sorted(xs)
    n = len(xs)
    return f"| {name} | {n} | {xs[n // 2]:.1f} | {xs[int(n * 0.9)]:.1f} | {xs[int(n * 0.99)]:.1f} |"


def gaps(path):
    parts = collections.defaultdict(list)
    by_shard = collections.defaultdict(list)
    for d in spans(path).values():
        if not (d["iris.edge.route"] and d["iris.shard.handle"] and d["iris.edge.deliver"]):
            continue
        route, handle, deliver = d["iris.edge.route"][0], d["iris.shard.handle"][0], min(d["iris.edge.deliver"])
        parts["edge: routing -> the broker's acknowledgement"].append(route[1] - route[0])
        parts["routing -> the shard starts handling it"].append(handle[0] - route[0])
        parts["shard: handling -> durable, outputs released"].append(handle[1] - handle[0])
        parts["released -> the edge reads it"].append(deliver[0] - handle[1])
        parts["routing -> the edge reads it (all)"].append(deliver[0] - route[0])
        by_shard[handle[2].get("iris.shard")].append(handle[0] - route[0])
    print("| part | traced sends | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|---|")
    for name, xs in parts.items():
        print(line(name, xs))
    rows = sorted(by_shard.items(), key=lambda kv: -len(kv[1]))
    print("\nRouting -> handling, by shard (the busiest and the quietest eight):\n")
    print("| shard | traced sends | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|---|")
    for shard, xs in rows[:8] + rows[-8:]:
        print(line(str(shard), xs))


if __name__ == "__main__":
    {"serve": lambda: serve(sys.argv[2], sys.argv[3]), "gaps": lambda: gaps(sys.argv[2])}[sys.argv[1]]()
