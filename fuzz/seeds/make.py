#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs (fuzz/corpus/<target>/seed-*), the
starting points the fuzzer mutates: well-formed inputs of each kind, so
that the first runs reach past the outer checks. Run from the repo root:
python3 fuzz/seeds/make.py"""
import json, os, struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

def ws(fin, op, payload, mask=b"\x01\x02\x03\x04"):
    out = bytes([(0x80 if fin else 0) | op])
    n = len(payload)
    if n < 126:
        out += bytes([0x80 | n])
    elif n < 65536:
        out += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        out += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return out + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

hello = b'{"type":"hello","token":"t","client":"fuzz"}'
put("ws_frames", "text", b"\x07" + ws(True, 1, hello))
put("ws_frames", "fragments", b"\x03" + ws(False, 1, b"hel") + ws(True, 9, b"p") + ws(True, 0, b"lo"))
put("ws_frames", "close", b"\x00" + ws(True, 8, struct.pack(">H", 1000) + b"bye"))
put("ws_frames", "long", b"\x40" + ws(True, 2, bytes(300)))

put("ws_upgrade", "ok", b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
put("ws_upgrade", "bad", b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n")

client = [
    {"type": "hello", "token": "t", "client": "fuzz", "resume_after": 3},
    {"type": "send", "id": "c-1", "to": "bob", "body": "hi"},
    {"type": "ack", "up_to": 7},
    {"type": "read", "up_to": 7},
    {"type": "sync", "after": 0, "limit": 50},
    {"type": "presence", "status": "away"},
    {"type": "subscribe", "users": ["bob", "carol"]},
    {"type": "typing", "to": "bob", "state": "start"},
    {"type": "contacts", "upsert": [{"user": "bob", "circle": "family"}], "remove": ["eve"]},
    {"type": "ping"},
]
for i, f in enumerate(client):
    put("client_frames", f"json-{i}", b"\x00" + json.dumps(f).encode())
server = [
    {"type": "welcome", "session": "s", "inbox_head": 3},
    {"type": "accepted", "id": "c-1", "msg_id": "m", "seq": 4},
    {"type": "error", "code": "rate_limited", "message": "slow down", "id": "c-2"},
]
for i, f in enumerate(server):
    put("client_frames", f"server-json-{i}", b"\x00" + json.dumps(f).encode())

def lp(p):
    return struct.pack(">I", len(p)) + p
put("quic_framing", "two", b"\x05" + lp(hello) + lp(b""))
put("quic_framing", "too-large", b"\x00" + struct.pack(">I", 1 << 20))

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
def s(x):
    x = x.encode()
    return varint(len(x)) + x
def send_env(i):
    # ShardEnvelope { owner: UserKey, body: ShardInput::Send (variant 2) }
    return (b"\x01" + s("acme") + s("bob") + varint(2) + s("alice") + s(f"c-{i}")
            + varint(2) + b"hi" + s("e1") + varint(7))
put("envelopes", "send", send_env(1))
put("envelopes", "partition", b"".join(bytes([len(r)]) + r for r in [send_env(1), b"\x09junk", send_env(2)]))

for i, c in enumerate([
    {"contacts": [{"user": "bob"}, {"user": "carol", "circle": "family", "channels": ["h1"]}]},
]):
    put("service_api", f"contacts-{i}", b"\x00" + json.dumps(c).encode())
put("service_api", "verified", b"\x01" + json.dumps({"user": "bob", "channel": "phone:abc"}).encode())
put("service_api", "policy", b"\x02" + json.dumps({"presence": True, "last_seen": False}).encode())
put("service_api", "events", b"\x03" + json.dumps({"events": [
    {"type": "reaction", "idempotency_key": "k1", "ts": 1800000000000, "payload": {"emoji": "+1"}},
    {"type": "view", "idempotency_key": "k2", "stream": "s", "project": "p"},
]}).encode())

cfgdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "cluster-config")
for name in ["single.toml", "region-local.toml", "region-scylla.toml", "two-regions/eu.toml"]:
    with open(os.path.join(cfgdir, name), "rb") as f:
        put("config", name.replace("/", "-"), f.read())
