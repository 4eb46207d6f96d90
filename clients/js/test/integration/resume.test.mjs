// The node is killed with -9 and restarted: clients reconnect, resume after
// their last seq, resend their outbox with the same ids, and nothing is
// lost or delivered twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IrisClient, MemoryStore, LocalStorageStore } from '../../dist/index.js';
import { IrisNode, waitFor, record, FAST, signHs256 } from '../support/iris.mjs';

function client(node, user, extra = {}) {
  return new IrisClient({ url: node.wsUrl, tokenProvider: () => node.token(user, 'acme'), ...FAST, ...extra });
}

const bodies = (rec) => rec.messages.map((m) => m.body);
const range = (a, b) => Array.from({ length: b - a }, (_, i) => a + i);

test('kill -9 mid-conversation: both sides recover with nothing lost and nothing twice', async (t) => {
  const node = await IrisNode.start();
  t.after(() => node.stop());
  const alice = client(node, 'alice');
  const bob = client(node, 'bob');
  t.after(() => [alice, bob].forEach((c) => c.close()));
  const a = record(alice);
  const b = record(bob);
  await Promise.all([alice.connect(), bob.connect()]);
  await alice.setContacts({ upsert: [{ user: 'bob' }] });
  await bob.setContacts({ upsert: [{ user: 'alice' }] });
  alice.subscribe(['bob']);
  await waitFor(() => a.presence.some((p) => p.user === 'bob' && p.status === 'online'), { what: 'bob online' });

  const first = await Promise.all(range(0, 5).map((i) => alice.send('bob', `a${i}`)));
  await waitFor(() => b.messages.length === 5, { what: 'the first five' });

  await node.kill9();
  await waitFor(() => a.disconnects.length > 0 && b.disconnects.length > 0, { what: 'both clients notice' });
  // Sent while the node is down: they wait in the outbox.
  const later = range(5, 10).map((i) => alice.send('bob', `a${i}`));
  const reply = bob.send('alice', 'b0');
  assert.equal(alice.pending().length, 5);
  const presenceBefore = a.presence.length;

  await node.run(); // same data directory, same ports
  const second = await Promise.all(later);
  await reply;
  await waitFor(() => b.messages.length === 10 && a.messages.length === 1, { what: 'everything after the restart' });
  assert.deepEqual(bodies(b), range(0, 10).map((i) => `a${i}`));
  assert.deepEqual(b.messages.map((m) => m.seq), range(1, 11));
  const ids = [...first, ...second].map((x) => x.msg_id);
  assert.equal(new Set(ids).size, 10);
  assert.deepEqual(b.messages.map((m) => m.msg_id), ids);
  assert.deepEqual(bodies(a), ['b0']);
  assert.ok(a.welcomes.length >= 2 && b.welcomes.length >= 2, 'both reconnected');
  // Presence subscriptions came back by themselves.
  await waitFor(() => a.presence.slice(presenceBefore).some((p) => p.user === 'bob' && p.status === 'online'), {
    what: 'alice re-subscribed to bob',
  });
  // Receipts for messages sent before and after the crash.
  bob.markRead();
  await waitFor(() => ids.every((id) => a.receipts.some((r) => r.msg_id === id && r.state === 'read')), {
    what: 'read receipts for all ten',
  });
});

test('sends in flight when the node dies are stored once, whatever got through', async (t) => {
  const node = await IrisNode.start();
  t.after(() => node.stop());
  const alice = client(node, 'alice', { sendRetryMs: 300 });
  const bob = client(node, 'bob');
  t.after(() => [alice, bob].forEach((c) => c.close()));
  const b = record(bob);
  await Promise.all([alice.connect(), bob.connect()]);

  // Fire fifty and kill the node while they are on the wire: some were
  // stored and accepted, some stored but not answered, some never arrived.
  let pendingAtKill;
  const stopKill = alice.on('accepted', () => {
    // At the first answer, synchronously: the rest are still unanswered.
    stopKill();
    pendingAtKill = alice.pending().length;
    node.child.kill('SIGKILL');
  });
  const sends = range(0, 50).map((i) => alice.send('bob', `m${i}`));
  await waitFor(() => pendingAtKill !== undefined, { what: 'the first accepted' });
  assert.ok(pendingAtKill > 0, 'killed with sends unanswered');
  await node.kill9(); // waits until the process is gone
  await node.run();
  const accepted = await Promise.all(sends);
  await waitFor(() => b.messages.length >= 50 && bob.connectionState === 'open', { what: 'fifty messages' });
  // Give a duplicate every chance to show: a sync of the whole inbox
  // proves the server holds each message once.
  const page = await bob.sync({ after: 0, limit: 1000 });
  assert.equal(page.more, false);
  assert.deepEqual(page.messages.map((m) => m.body), range(0, 50).map((i) => `m${i}`));
  assert.deepEqual(bodies(b), range(0, 50).map((i) => `m${i}`));
  assert.equal(new Set(accepted.map((x) => x.msg_id)).size, 50);
  assert.deepEqual(page.messages.map((m) => m.msg_id), accepted.map((x) => x.msg_id));
});

test('a large outbox drains in order after a restart without tripping the frame rate limit', async (t) => {
  const node = await IrisNode.start();
  t.after(() => node.stop());
  const alice = client(node, 'alice');
  const bob = client(node, 'bob');
  t.after(() => [alice, bob].forEach((c) => c.close()));
  const a = record(alice);
  const b = record(bob);
  await Promise.all([alice.connect(), bob.connect()]);
  await node.kill9();
  // More than the node's frame burst (400) waits in the outbox.
  const sends = range(0, 600).map((i) => alice.send('bob', `q${i}`));
  await node.run();
  const accepted = await Promise.all(sends);
  assert.equal(new Set(accepted.map((x) => x.msg_id)).size, 600);
  await waitFor(() => b.messages.length === 600, { what: '600 messages', timeoutMs: 60_000 });
  assert.deepEqual(bodies(b), range(0, 600).map((i) => `q${i}`));
  assert.deepEqual(a.errors.filter((e) => e.code === 'rate_limited'), []);
});

test('the outbox and resume point survive a reload through a persistent store', async (t) => {
  const node = await IrisNode.start();
  t.after(() => node.stop());
  const storage = new Map();
  const fakeLocalStorage = { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, v) };
  const bob = client(node, 'bob');
  t.after(() => bob.close());
  const b = record(bob);
  await bob.connect();

  // A page sends while the node is down, and is closed (reloaded) before
  // anything was accepted.
  await node.kill9();
  const page1 = client(node, 'alice', { store: new LocalStorageStore('iris:acme:alice', fakeLocalStorage) });
  const lost = page1.send('bob', 'sent before the reload');
  lost.catch(() => {});
  page1.close();
  await assert.rejects(lost, (e) => e.code === 'closed');
  assert.match(storage.get('iris:acme:alice:outbox'), /sent before the reload/);

  await node.run();
  const page2 = client(node, 'alice', { store: new LocalStorageStore('iris:acme:alice', fakeLocalStorage) });
  t.after(() => page2.close());
  const a2 = record(page2);
  await page2.connect();
  await waitFor(() => a2.accepted.length === 1, { what: 'the restored message accepted' });
  assert.equal(JSON.parse(storage.get('iris:acme:alice:outbox')).length, 0);
  await waitFor(() => b.messages.length === 1, { what: 'bob gets it' });
  assert.deepEqual(bodies(b), ['sent before the reload']);

  // Bob's resume point is kept too: a new client on the same store gets
  // only what came after it.
  const bobStore = new MemoryStore();
  const bob2 = client(node, 'bob', { store: bobStore });
  const b2 = record(bob2);
  await bob2.connect();
  await waitFor(() => b2.messages.length === 1, { what: 'the replay' });
  bob2.close();
  await page2.send('bob', 'after');
  const bob3 = client(node, 'bob', { store: bobStore });
  t.after(() => bob3.close());
  const b3 = record(bob3);
  await bob3.connect();
  await waitFor(() => b3.messages.length === 1, { what: 'only the new message' });
  assert.deepEqual(bodies(b3), ['after']);
  assert.equal(b3.messages[0].seq, 2);
});

test('a refused token is replaced through the provider; a fixed refused token stops the client', async (t) => {
  const node = await IrisNode.start();
  t.after(() => node.stop());
  const reasons = [];
  const forged = signHs256(Buffer.alloc(32, 7), { sub: 'alice', tenant: 'acme', exp: Math.floor(Date.now() / 1000) + 600 });
  const alice = new IrisClient({
    url: node.wsUrl,
    tokenProvider: ({ reason }) => {
      reasons.push(reason);
      return reasons.length === 1 ? forged : node.token('alice', 'acme');
    },
    ...FAST,
  });
  t.after(() => alice.close());
  const w = await alice.connect();
  assert.equal(w.user, 'alice');
  assert.deepEqual(reasons, ['initial', 'refused']);

  const fixed = new IrisClient({ url: node.wsUrl, token: forged, ...FAST });
  const f = record(fixed);
  await assert.rejects(fixed.connect(), (e) => e.code === 'unauthorized');
  assert.equal(fixed.connectionState, 'closed');
  assert.equal(f.errors.at(-1).code, 'unauthorized');

  // A token close to expiry is replaced before it is used.
  const expiring = [];
  const soon = new IrisClient({
    url: node.wsUrl,
    tokenProvider: ({ reason }) => {
      expiring.push(reason);
      return node.token('alice', 'acme', expiring.length === 1 ? 30 : 3600);
    },
    tokenRefreshMarginMs: 60_000,
    ...FAST,
  });
  t.after(() => soon.close());
  // The first token lives 30 s, inside the 60 s margin: the refresh timer
  // fires at once and the next connection uses the new token.
  await soon.connect();
  await waitFor(() => expiring.length === 2, { what: 'the proactive refresh' });
  assert.deepEqual(expiring, ['initial', 'expiring']);
});
