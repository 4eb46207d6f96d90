// The client's shell against a scripted fake socket: what it writes, in
// which order, after which frames.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IrisClient } from '../../dist/index.js';

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = false;
    FakeSocket.all.push(this);
    queueMicrotask(() => this.onopen?.({}));
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.closed = true;
  }
  serve(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006, reason = '') {
    this.onclose?.({ code, reason });
  }
}

async function until(check, what) {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const welcome = { type: 'welcome', user: 'bob', session: 'n:1', node: 'n', region: 'r', heartbeat_ms: 30_000, inbox_head: 2 };
const msg = (seq) => ({ type: 'message', seq, msg_id: `m${seq}`, from: 'alice', body: `b${seq}`, ts: seq });

test('replay and live duplicates are dropped; one ack covers a burst; the outbox is resent in order with the same ids', async (t) => {
  FakeSocket.all = [];
  const c = new IrisClient({ url: 'ws://x/v1/ws', token: 't', WebSocket: FakeSocket, backoff: { baseMs: 1, maxMs: 2, stableMs: 1 } });
  t.after(() => c.close());
  const got = [];
  c.on('message', (m) => got.push(m.seq));
  const opened = c.connect();
  await until(() => FakeSocket.all[0]?.sent.length === 1, 'hello');
  const s1 = FakeSocket.all[0];
  assert.deepEqual(s1.sent[0], { type: 'hello', token: 't', resume_after: 0 });
  s1.serve(welcome);
  await opened;
  s1.serve(msg(1));
  s1.serve(msg(2));
  s1.serve(msg(2)); // the same message live
  s1.serve({ type: 'synced', inbox_head: 2, more: false });
  await until(() => s1.sent.some((f) => f.type === 'ack'), 'ack');
  assert.deepEqual(got, [1, 2]);
  assert.deepEqual(s1.sent.filter((f) => f.type === 'ack'), [{ type: 'ack', up_to: 2 }]);

  const px = c.send('alice', 'x');
  const py = c.send('alice', 'y');
  const sends = s1.sent.filter((f) => f.type === 'send');
  assert.deepEqual(sends.map((f) => f.body), ['x', 'y']);
  s1.drop();

  await until(() => FakeSocket.all.length === 2 && FakeSocket.all[1].sent.length === 1, 'reconnect');
  const s2 = FakeSocket.all[1];
  assert.deepEqual(s2.sent[0], { type: 'hello', token: 't', resume_after: 2 });
  s2.serve({ ...welcome, session: 'n:2' });
  const resent = s2.sent.filter((f) => f.type === 'send');
  assert.deepEqual(resent, sends, 'same ids, same order');
  s2.serve(msg(2)); // replayed again by a server that was told 2: dropped anyway
  s2.serve({ type: 'accepted', id: sends[1].id, msg_id: 'my', ts: 1 });
  s2.serve({ type: 'accepted', id: sends[0].id, msg_id: 'mx', ts: 1 });
  s2.serve({ type: 'accepted', id: sends[0].id, msg_id: 'mx', ts: 1 }); // a retry's answer
  assert.equal((await px).msg_id, 'mx');
  assert.equal((await py).msg_id, 'my');
  assert.deepEqual(got, [1, 2]);
  assert.equal(c.pending().length, 0);
});

test('a retryable send error resends the same id; a final one rejects and leaves the outbox', async (t) => {
  FakeSocket.all = [];
  const c = new IrisClient({ url: 'ws://x/v1/ws', token: 't', WebSocket: FakeSocket });
  t.after(() => c.close());
  const opened = c.connect();
  await until(() => FakeSocket.all[0]?.sent.length === 1, 'hello');
  const s = FakeSocket.all[0];
  s.serve({ ...welcome, heartbeat_ms: 1_000 });
  await opened;
  const p = c.send('alice', 'x');
  const bad = c.send('alice', 'y');
  const [fx, fy] = s.sent.filter((f) => f.type === 'send');
  s.serve({ type: 'error', code: 'unavailable', message: 'storage', id: fx.id });
  s.serve({ type: 'error', code: 'bad_frame', message: 'no', id: fy.id });
  await assert.rejects(bad, (e) => e.code === 'bad_frame' && e.fromServer && e.id === fy.id);
  // The next heartbeat tick (half of heartbeat_ms) resends x.
  await until(() => s.sent.filter((f) => f.type === 'send' && f.id === fx.id).length === 2, 'resend');
  assert.ok(s.sent.some((f) => f.type === 'ping'), 'pings on the tick');
  s.serve({ type: 'accepted', id: fx.id, msg_id: 'm', ts: 1 });
  assert.equal((await p).msg_id, 'm');
});

test('no answer for a heartbeat interval drops the socket and reconnects', async (t) => {
  FakeSocket.all = [];
  const c = new IrisClient({ url: 'ws://x/v1/ws', token: 't', WebSocket: FakeSocket, backoff: { baseMs: 1, maxMs: 2, stableMs: 1 } });
  t.after(() => c.close());
  const disconnects = [];
  c.on('disconnect', (d) => disconnects.push(d));
  const opened = c.connect();
  await until(() => FakeSocket.all[0]?.sent.length === 1, 'hello');
  FakeSocket.all[0].serve({ ...welcome, heartbeat_ms: 1_000 });
  await opened;
  await until(() => FakeSocket.all.length === 2, 'a new socket');
  assert.equal(FakeSocket.all[0].closed, true);
  assert.equal(disconnects[0].reason, 'no answer to ping');
});

test('a refused connection reported only by an error event is retried at once, not after the open timeout', async (t) => {
  FakeSocket.all = [];
  const c = new IrisClient({ url: 'ws://x/v1/ws', token: 't', WebSocket: FakeSocket, openTimeoutMs: 60_000, backoff: { baseMs: 1, maxMs: 2, stableMs: 1 } });
  t.after(() => c.close());
  const opened = c.connect();
  await until(() => FakeSocket.all.length === 1, 'first socket');
  FakeSocket.all[0].onerror?.({});
  await until(() => FakeSocket.all.length === 2 && FakeSocket.all[1].sent.length === 1, 'second socket');
  FakeSocket.all[1].serve(welcome);
  assert.equal((await opened).user, 'bob');
});

test('at most 128 sends wait for an answer at once; the rest follow in order as answers come', async (t) => {
  FakeSocket.all = [];
  const c = new IrisClient({ url: 'ws://x/v1/ws', token: 't', WebSocket: FakeSocket });
  t.after(() => c.close());
  const sends = Array.from({ length: 300 }, (_, i) => c.send('alice', `m${i}`));
  const opened = c.connect();
  await until(() => FakeSocket.all[0]?.sent.length === 1, 'hello');
  const s = FakeSocket.all[0];
  s.serve(welcome);
  await opened;
  const onWire = () => s.sent.filter((f) => f.type === 'send');
  assert.equal(onWire().length, 128);
  assert.deepEqual(onWire().map((f) => f.body), Array.from({ length: 128 }, (_, i) => `m${i}`));
  s.serve({ type: 'accepted', id: onWire()[0].id, msg_id: 'x0', ts: 1 });
  assert.equal(onWire().length, 129);
  assert.equal(onWire()[128].body, 'm128');
  // Answer everything, in whatever order the wire shows.
  for (let i = 1; i < 300; i++) {
    await until(() => onWire().length > i, `send ${i}`);
    s.serve({ type: 'accepted', id: onWire()[i].id, msg_id: `x${i}`, ts: 1 });
  }
  const done = await Promise.all(sends);
  assert.deepEqual(done.map((a) => a.msg_id), Array.from({ length: 300 }, (_, i) => `x${i}`));
  assert.deepEqual(onWire().map((f) => f.body), Array.from({ length: 300 }, (_, i) => `m${i}`));
});
