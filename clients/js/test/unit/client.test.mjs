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
  s.serve(welcome);
  await opened;
  const p = c.send('alice', 'x');
  const bad = c.send('alice', 'y');
  const [fx, fy] = s.sent.filter((f) => f.type === 'send');
  s.serve({ type: 'error', code: 'unavailable', message: 'storage', id: fx.id });
  s.serve({ type: 'error', code: 'bad_frame', message: 'no', id: fy.id });
  await assert.rejects(bad, (e) => e.code === 'bad_frame' && e.fromServer && e.id === fy.id);
  // Resent on its own backoff, not on the heartbeat tick (15 s away).
  await until(() => s.sent.filter((f) => f.type === 'send' && f.id === fx.id).length === 2, 'resend');
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

// ---- review fixes ----

/** Opens a client on a fake socket; returns the client and the socket. */
async function open(t, opts = {}, w = welcome) {
  FakeSocket.all = [];
  const c = new IrisClient({ url: 'ws://x/v1/ws', token: 't', WebSocket: FakeSocket, backoff: { baseMs: 1, maxMs: 2, stableMs: 1 }, ...opts });
  t.after(() => c.close());
  const opened = c.connect();
  await until(() => FakeSocket.all[0]?.sent.length === 1, 'hello');
  const s = FakeSocket.all[0];
  s.serve(w);
  await opened;
  return { c, s };
}
const tick = () => new Promise((r) => setImmediate(r));
const sentOf = (s, type) => s.sent.filter((f) => f.type === type);

test('acks and resume point saves are batched across socket messages, one frame per batch, one at synced', async (t) => {
  const saves = [];
  const store = { load: () => ({ lastSeq: 0, outbox: [] }), saveLastSeq: (n) => saves.push(n), saveOutbox() {} };
  const { s } = await open(t, { store });
  // In a browser every socket message is its own task: microtasks run between them.
  const start = Date.now();
  for (let i = 1; i <= 200; i++) {
    s.serve(msg(i));
    await tick();
  }
  s.serve({ type: 'synced', inbox_head: 200, more: false });
  // At most one per 50 ms, plus the one at synced (a slow machine gets more time, not more per message).
  const most = Math.ceil((Date.now() - start) / 50) + 1;
  const acks = sentOf(s, 'ack');
  assert.ok(acks.length >= 1 && acks.length <= most, `${acks.length} acks for 200 messages (at most ${most})`);
  assert.deepEqual(acks.at(-1), { type: 'ack', up_to: 200 }, 'synced flushes at once');
  assert.ok(saves.length <= most && saves.at(-1) === 200, `${saves.length} saves (at most ${most})`);
});

test('every frame, not only sends, goes through the frame budget, in order', async (t) => {
  const { c, s } = await open(t, { sendsPerSecond: 200, sendBurst: 5 });
  const before = s.sent.length;
  for (let i = 0; i < 20; i++) c.subscribe([`u${i}`]);
  assert.ok(s.sent.length - before <= 5, `${s.sent.length - before} frames written at once with a burst of 5`);
  await until(() => sentOf(s, 'subscribe').length === 20, 'all subscribes');
  assert.deepEqual(sentOf(s, 'subscribe').map((f) => f.users[0]), Array.from({ length: 20 }, (_, i) => `u${i}`));
  // Typing is ephemeral: dropped while frames wait, never queued.
  for (let i = 0; i < 20; i++) c.subscribe([`v${i}`]);
  c.typing('alice', 'start');
  await until(() => sentOf(s, 'subscribe').length === 40, 'the second batch');
  assert.equal(sentOf(s, 'typing').length, 0);
});

test('requests without ids are answered one at a time; an id-less unavailable retries the sync by code; no answer ends the session', async (t) => {
  const { c, s } = await open(t, { ...{}, backoff: { baseMs: 1, maxMs: 2, stableMs: 1 } }, { ...welcome, heartbeat_ms: 1_000 });
  s.serve({ type: 'synced', inbox_head: 0, more: false }); // the replay
  const page = c.sync({ after: 0 });
  const contacts = c.setContacts({ upsert: [{ user: 'carol' }] });
  assert.equal(sentOf(s, 'sync').length, 1);
  assert.equal(sentOf(s, 'contacts').length, 0, 'not on the wire while the sync is');
  // Not the "history" wording: the code and the request on the wire decide.
  s.serve({ type: 'error', code: 'unavailable', message: 'storage is failing' });
  await until(() => sentOf(s, 'sync').length === 2, 'the sync again');
  s.serve(msg(1));
  s.serve({ type: 'synced', inbox_head: 1, more: false });
  assert.deepEqual((await page).messages.map((m) => m.seq), [1]);
  await until(() => sentOf(s, 'contacts').length === 1, 'contacts after the sync');
  s.serve({ type: 'contacts_ok', count: 1 });
  assert.equal(await contacts, 1);

  // An id-less rate_limited may be about any frame: not taken for the answer,
  // but a request without an answer for heartbeat_ms ends the session.
  const lost = c.sync({ after: 1 });
  s.serve({ type: 'error', code: 'rate_limited', message: 'too many frames; slow down' });
  await assert.rejects(lost, (e) => e.code === 'disconnected');
  await until(() => FakeSocket.all.length === 2, 'a new session');
});

test('a forbidden contacts change rejects that change only; unrelated errors reject nothing', async (t) => {
  const { c, s } = await open(t);
  s.serve({ type: 'synced', inbox_head: 0, more: false });
  const errors = [];
  c.on('error', (e) => errors.push(e.code));
  const a = c.setContacts({ upsert: [{ user: 'carol' }] });
  const b = c.setCirclePolicy('friends', { presence: true });
  s.serve({ type: 'error', code: 'bad_frame', message: 'something else' });
  s.serve({ type: 'error', code: 'forbidden', message: 'at most 1 contacts' });
  await assert.rejects(a, (e) => e.code === 'forbidden');
  await until(() => sentOf(s, 'circle_policy').length === 1, 'the policy after the contacts');
  s.serve({ type: 'circle_policy_ok', circle: 'friends' });
  assert.equal(await b, 'friends');
  assert.deepEqual(errors, ['bad_frame']);
});

test('a sync page holds only the run without a gap from after + 1 (a live message above it is left out)', async (t) => {
  const { c, s } = await open(t);
  s.serve({ type: 'synced', inbox_head: 0, more: false });
  const p = c.sync({ after: 0, limit: 2 });
  s.serve(msg(1));
  s.serve(msg(5)); // live, overtaking the rest of the history
  s.serve(msg(2));
  s.serve({ type: 'synced', inbox_head: 5, more: true });
  const page = await p;
  assert.deepEqual(page.messages.map((m) => m.seq), [1, 2]);
  assert.equal(page.more, true);
});

test('autoAck false: the stored resume point and the ack follow ack(), not the handlers', async (t) => {
  const saves = [];
  const store = { load: () => ({ lastSeq: 0, outbox: [] }), saveLastSeq: (n) => saves.push(n), saveOutbox() {} };
  const { c, s } = await open(t, { store, autoAck: false });
  for (let i = 1; i <= 3; i++) s.serve(msg(i));
  s.serve({ type: 'synced', inbox_head: 3, more: false });
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(saves, []);
  assert.equal(sentOf(s, 'ack').length, 0);
  c.ack(2);
  await until(() => sentOf(s, 'ack').length === 1, 'ack');
  assert.deepEqual(sentOf(s, 'ack'), [{ type: 'ack', up_to: 2 }]);
  assert.deepEqual(saves, [2]);
  c.ack(10); // beyond what was received: stored only up to the resume point
  await until(() => sentOf(s, 'ack').length === 2, 'ack 10');
  assert.deepEqual(saves, [2, 3]);
});

test('a refused send is retried on its own backoff before any later message is written', async (t) => {
  const { c, s } = await open(t); // heartbeat 30 s: the tick is far away
  s.serve({ type: 'synced', inbox_head: 0, more: false });
  const px = c.send('alice', 'x');
  const [fx] = sentOf(s, 'send');
  s.serve({ type: 'error', code: 'rate_limited', message: 'tenant over 10 sends per second', id: fx.id });
  const py = c.send('alice', 'y');
  const pz = c.send('alice', 'z');
  assert.deepEqual(sentOf(s, 'send').map((f) => f.body), ['x'], 'y and z wait for x');
  await until(() => sentOf(s, 'send').length === 4, 'x again, then y and z');
  assert.deepEqual(sentOf(s, 'send').map((f) => f.body), ['x', 'x', 'y', 'z']);
  for (const f of sentOf(s, 'send').slice(1)) s.serve({ type: 'accepted', id: f.id, msg_id: f.body, ts: 1 });
  assert.deepEqual((await Promise.all([px, py, pz])).map((a) => a.msg_id), ['x', 'y', 'z']);
});

test('the ack is sent again after a reconnect; ack() while offline is kept', async (t) => {
  const { c, s } = await open(t, { autoAck: false });
  s.serve(msg(1));
  s.serve(msg(2));
  s.serve({ type: 'synced', inbox_head: 2, more: false });
  c.ack(1);
  await until(() => sentOf(s, 'ack').length === 1, 'ack 1');
  s.drop();
  c.ack(2); // offline
  await until(() => FakeSocket.all.length === 2 && FakeSocket.all[1].sent.length === 1, 'reconnect');
  const s2 = FakeSocket.all[1];
  s2.serve({ ...welcome, session: 'n:2' });
  await until(() => sentOf(s2, 'ack').length === 1, 'ack on the new session');
  assert.deepEqual(sentOf(s2, 'ack'), [{ type: 'ack', up_to: 2 }]);

  // With autoAck, the last ack is resent after a reconnect too.
  const { s: a } = await open(t);
  a.serve(msg(1));
  a.serve({ type: 'synced', inbox_head: 1, more: false });
  assert.deepEqual(sentOf(a, 'ack'), [{ type: 'ack', up_to: 1 }]);
  a.drop();
  await until(() => FakeSocket.all.length === 2 && FakeSocket.all[1].sent.length === 1, 'reconnect');
  const a2 = FakeSocket.all[1];
  assert.equal(a2.sent[0].resume_after, 1);
  a2.serve({ ...welcome, session: 'n:3' });
  await until(() => sentOf(a2, 'ack').length === 1, 'the ack again');
  assert.deepEqual(sentOf(a2, 'ack'), [{ type: 'ack', up_to: 1 }]);
});

test('a replay page that makes no progress stops the paging with an error instead of looping', async (t) => {
  const { c, s } = await open(t);
  const errors = [];
  c.on('error', (e) => errors.push(e.code));
  s.serve({ type: 'synced', inbox_head: 5, more: true }); // more, but nothing came
  assert.equal(sentOf(s, 'sync').length, 0);
  assert.deepEqual(errors, ['internal']);
  // A page that advanced continues from the resume point.
  const { s: s2 } = await open(t);
  s2.serve(msg(1));
  s2.serve({ type: 'synced', inbox_head: 5, more: true });
  assert.deepEqual(sentOf(s2, 'sync'), [{ type: 'sync', after: 1, limit: 1000 }]);
});

test('the replay pages the client asks for itself collect no bodies', async (t) => {
  const { c, s } = await open(t);
  for (let i = 1; i <= 50; i++) s.serve(msg(i));
  const own = c['requests']?.[0] ?? c['syncInFlight'];
  assert.ok(own, 'the replay is in flight');
  assert.equal(own.collected?.size ?? 0, 0);
});
