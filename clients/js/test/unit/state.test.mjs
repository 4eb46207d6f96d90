import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Outbox,
  idGenerator,
  SeqTracker,
  ReceiptBook,
  tokenExpiry,
  tokenNeedsRefresh,
  tokenRefreshDelay,
  IrisError,
  MemoryStore,
  LocalStorageStore,
  validName,
  messageBytes,
} from '../../dist/index.js';
import { parseServerFrame } from '../../dist/protocol.js';

const entry = (id, body = id) => ({ id, to: 'bob', body, queuedAt: 1 });

test('outbox: ordered, bounded, removes by id, restores within its bound', () => {
  const o = new Outbox(3);
  o.add(entry('a'));
  o.add(entry('b'));
  o.add(entry('c'));
  assert.throws(() => o.add(entry('d')), (e) => e instanceof IrisError && e.code === 'outbox_full');
  assert.throws(() => o.add(entry('a')), (e) => e.code === 'invalid_argument');
  assert.deepEqual(o.entries().map((e) => e.id), ['a', 'b', 'c']);
  assert.equal(o.remove('b').id, 'b');
  assert.equal(o.remove('b'), undefined);
  o.add(entry('d'));
  assert.deepEqual(o.entries().map((e) => e.id), ['a', 'c', 'd']);
  // Restored: oldest kept, malformed and repeated entries skipped.
  const r = new Outbox(2, [entry('x'), { id: 1 }, entry('x'), entry('y'), entry('z')]);
  assert.deepEqual(r.entries().map((e) => e.id), ['x', 'y']);
  assert.throws(() => new Outbox(0), (e) => e.code === 'invalid_argument');
});

test('client ids: unique, at most 64 characters, random per instance', () => {
  let n = 0;
  const next = idGenerator((k) => new Uint8Array(k).fill(++n));
  const ids = Array.from({ length: 1000 }, next);
  assert.equal(new Set(ids).size, 1000);
  assert.ok(ids.every((id) => id.length >= 1 && id.length <= 64));
  const other = idGenerator((k) => new Uint8Array(k).fill(++n));
  assert.notEqual(other(), ids[0]);
});

test('seq tracker: resume point advances only over contiguous seqs; duplicates dropped', () => {
  const s = new SeqTracker(10, 3);
  assert.equal(s.receive(10), 'duplicate');
  assert.equal(s.receive(11), 'new');
  assert.equal(s.receive(11), 'duplicate');
  assert.equal(s.receive(14), 'new'); // a live message overtook a page
  assert.equal(s.resumePoint, 11);
  assert.equal(s.receive(14), 'duplicate');
  assert.equal(s.receive(13), 'new');
  assert.equal(s.receive(15), 'new');
  assert.equal(s.aheadCount, 3);
  assert.equal(s.receive(16), 'deferred'); // over the bound: it comes again later
  assert.equal(s.receive(12), 'new');
  assert.equal(s.resumePoint, 15);
  assert.equal(s.aheadCount, 0);
  assert.equal(s.receive(16), 'new');
  assert.equal(s.receive(0), 'duplicate');
  assert.equal(s.receive(1.5), 'duplicate');
  assert.throws(() => new SeqTracker(-1));
});

test('receipts: read implies delivered and a late delivered never undoes it', () => {
  const b = new ReceiptBook(2);
  assert.equal(b.apply('m1', 'delivered'), 'delivered');
  assert.equal(b.apply('m1', 'delivered'), undefined);
  assert.equal(b.apply('m1', 'read'), 'read');
  assert.equal(b.apply('m1', 'delivered'), undefined);
  assert.equal(b.get('m1'), 'read');
  assert.equal(b.apply('m2', 'read'), 'read');
  assert.equal(b.apply('m3', 'delivered'), 'delivered'); // bound 2: m1 forgotten
  assert.equal(b.get('m1'), undefined);
});

const jwt = (claims) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;

test('token timing: refresh within the margin before exp', () => {
  const t = jwt({ sub: 'a', exp: 1_000 });
  assert.equal(tokenExpiry(t), 1_000);
  assert.equal(tokenExpiry('nonsense'), undefined);
  assert.equal(tokenExpiry('a.!!!.b'), undefined);
  assert.equal(tokenExpiry(jwt({ exp: 'soon' })), undefined);
  assert.equal(tokenNeedsRefresh(undefined, 0, 0), true);
  assert.equal(tokenNeedsRefresh(t, 939_999, 60_000), false);
  assert.equal(tokenNeedsRefresh(t, 940_000, 60_000), true);
  assert.equal(tokenNeedsRefresh('opaque', 1e15, 60_000), false); // the server decides
  assert.equal(tokenRefreshDelay(t, 900_000, 60_000), 40_000);
  assert.equal(tokenRefreshDelay(t, 990_000, 60_000), 0);
  assert.equal(tokenRefreshDelay('opaque', 0, 0), undefined);
});

test('stores keep the resume point and the outbox; bad stored data reads as empty', () => {
  const m = new MemoryStore();
  m.saveLastSeq(7);
  m.saveOutbox([entry('a')]);
  assert.deepEqual(m.load(), { lastSeq: 7, outbox: [entry('a')] });
  const map = new Map();
  const storage = { getItem: (k) => map.get(k) ?? null, setItem: (k, v) => map.set(k, v) };
  const l = new LocalStorageStore('ns', storage);
  assert.deepEqual(l.load(), { lastSeq: 0, outbox: [] });
  l.saveLastSeq(42);
  l.saveOutbox([entry('b')]);
  assert.deepEqual(new LocalStorageStore('ns', storage).load(), { lastSeq: 42, outbox: [entry('b')] });
  map.set('ns:seq', 'garbage');
  map.set('ns:outbox', '{not json');
  assert.deepEqual(l.load(), { lastSeq: 0, outbox: [] });
  assert.throws(() => new LocalStorageStore('x'), TypeError); // Node has no localStorage
});

test('frames: lenient parsing, names and bodies', () => {
  assert.equal(parseServerFrame('not json'), null);
  assert.equal(parseServerFrame('[1]'), null);
  assert.equal(parseServerFrame('{"type":"warp"}'), null);
  assert.equal(parseServerFrame('{"type":"message","seq":"1"}'), null);
  const m = parseServerFrame('{"type":"message","seq":1,"msg_id":"x","from":"a","body":"hi","ts":5,"extra":true}');
  assert.equal(m.seq, 1);
  assert.equal(parseServerFrame('{"type":"error","code":"too_large"}').message, '');
  assert.equal(validName('bob'), true);
  assert.equal(validName(''), false);
  assert.equal(validName('a\u0007'), false);
  assert.equal(validName('é'.repeat(64)), true); // 128 bytes
  assert.equal(validName('é'.repeat(65)), false);
  assert.equal(validName(5), false);
  assert.deepEqual([...messageBytes({ body: '/wA=', encoding: 'base64' })], [255, 0]);
  assert.deepEqual([...messageBytes({ body: 'é' })], [0xc3, 0xa9]);
});

test('token bucket: a burst at once, then the rate', async () => {
  const { TokenBucket } = await import('../../dist/index.js');
  const b = new TokenBucket(10, 3, 0);
  assert.equal(b.take(0), true);
  assert.equal(b.take(0), true);
  assert.equal(b.take(0), true);
  assert.equal(b.take(0), false);
  assert.equal(b.waitMs(0), 100);
  assert.equal(b.take(50), false);
  assert.equal(b.waitMs(50), 50);
  assert.equal(b.take(100), true);
  assert.equal(b.take(10_000), true); // refilled to the burst, no more
  assert.equal(b.take(10_000), true);
  assert.equal(b.take(10_000), true);
  assert.equal(b.take(10_000), false);
  assert.equal(b.take(5_000), false); // time going backwards refills nothing
  assert.throws(() => new TokenBucket(0, 1, 0), RangeError);
});
