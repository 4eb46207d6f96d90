#!/usr/bin/env python3
"""Readiness probes for the engines the scripts start, over their own
protocols (no client library, no JVM start per probe):

  probe.py kafka HOST:PORT BROKERS   exit 0 once the broker answers a
                                     Metadata request listing BROKERS brokers
  probe.py cql HOST:PORT             exit 0 once the node answers a CQL
                                     OPTIONS request with SUPPORTED

One attempt per call; the scripts poll with their own deadline."""

import socket
import struct
import sys


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def kafka_brokers(addr):
    """Metadata v4 (the oldest version Kafka 4 still serves), all topics
    (null array): returns the number of brokers in the answer."""
    host, port = addr.rsplit(":", 1)
    client = b"iris-probe"
    # Request header v1: api_key 3 (Metadata), version 4, correlation id, client id.
    header = struct.pack(">hhih", 3, 4, 7, len(client)) + client
    # Body: topics = null (-1: all), allow_auto_topic_creation = false.
    body = struct.pack(">ib", -1, 0)
    msg = header + body
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.settimeout(2)
        s.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        resp = recv_exact(s, size)
    # Response header v0: correlation id; body: throttle_time_ms, brokers.
    corr, _throttle, n = struct.unpack(">iii", resp[:12])
    if corr != 7:
        raise ValueError("wrong correlation id")
    return n


def cql_ready(addr):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.settimeout(2)
        # Native protocol v4 frame: version, flags, stream, opcode OPTIONS (5), length 0.
        s.sendall(struct.pack(">BBhBi", 0x04, 0, 1, 0x05, 0))
        _version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", recv_exact(s, 9))
        recv_exact(s, length)
    return opcode == 0x06  # SUPPORTED


def main():
    kind, addr = sys.argv[1], sys.argv[2]
    try:
        if kind == "kafka":
            ok = kafka_brokers(addr) >= int(sys.argv[3])
        elif kind == "cql":
            ok = cql_ready(addr)
        else:
            print(f"unknown probe {kind}", file=sys.stderr)
            sys.exit(2)
    except (OSError, ValueError, struct.error):
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
