// Chat with receipts, typing, history and two devices, against the real node.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { IrisClient, IrisError, messageBytes } from '../../dist/index.js';
import { IrisNode, waitFor, record, FAST } from '../support/iris.mjs';

let node;
before(async () => {
  node = await IrisNode.start();
});
after(async () => {
  await node?.stop();
});

function client(user, extra = {}) {
  return new IrisClient({ url: node.wsUrl, token: node.token(user, 'acme'), ...FAST, ...extra });
}

test('messages arrive in order and the sender gets delivered, then read receipts', async (t) => {
  const alice = client('alice');
  const bob = client('bob');
  t.after(() => {
    alice.close();
    bob.close();
  });
  const a = record(alice);
  const b = record(bob);
  // The CLI's token works as well as one signed here.
  const cli = new IrisClient({ url: node.wsUrl, token: await node.cliToken('bob', 'acme'), ...FAST });
  t.after(() => cli.close());
  const c = record(cli);
  const [wa] = await Promise.all([alice.connect(), bob.connect(), cli.connect()]);
  assert.equal(wa.user, 'alice');

  const sent = [];
  for (const body of ['hi', 'how are you?', 'héllo ✓']) sent.push(await alice.send('bob', body));
  const ids = sent.map((s) => s.msg_id);
  assert.equal(new Set(ids).size, 3);

  await waitFor(() => b.messages.length === 3, { what: "bob's three messages" });
  assert.deepEqual(b.messages.map((m) => m.body), ['hi', 'how are you?', 'héllo ✓']);
  assert.deepEqual(b.messages.map((m) => m.seq), [1, 2, 3]);
  assert.deepEqual(b.messages.map((m) => m.msg_id), ids);
  assert.ok(b.messages.every((m) => m.from === 'alice'));
  // Both of bob's devices get every message.
  await waitFor(() => c.messages.length === 3, { what: "bob's second device" });

  // Bob's client acknowledged by itself: alice sees "delivered" for each.
  await waitFor(() => ids.every((id) => a.receipts.some((r) => r.msg_id === id && r.state === 'delivered')), {
    what: 'delivered receipts',
  });
  assert.ok(a.receipts.every((r) => r.by === 'bob'));
  bob.markRead();
  await waitFor(() => ids.every((id) => a.receipts.some((r) => r.msg_id === id && r.state === 'read')), {
    what: 'read receipts',
  });
  assert.equal(bob.resumePoint, 3);
});

test('binary bodies, typing, history pages and refusals', async (t) => {
  const carol = client('carol');
  const dave = client('dave');
  t.after(() => {
    carol.close();
    dave.close();
  });
  const d = record(dave);
  await Promise.all([carol.connect(), dave.connect()]);

  carol.typing('dave', 'start');
  await waitFor(() => d.typing.some((x) => x.from === 'carol' && x.state === 'start'), { what: 'typing' });

  await carol.send('dave', new Uint8Array([0xff, 0x00, 0x41]));
  for (let i = 0; i < 4; i++) await carol.send('dave', `m${i}`);
  await waitFor(() => d.messages.length === 5, { what: "dave's messages" });
  assert.deepEqual([...messageBytes(d.messages[0])], [0xff, 0x00, 0x41]);

  // History: two pages of two, then the rest.
  const p1 = await dave.sync({ after: 0, limit: 2 });
  assert.deepEqual(p1.messages.map((m) => m.seq), [1, 2]);
  assert.equal(p1.more, true);
  const p2 = await dave.sync({ after: 2, limit: 2 });
  assert.deepEqual(p2.messages.map((m) => m.seq), [3, 4]);
  const p3 = await dave.sync({ after: 4, limit: 2 });
  assert.deepEqual(p3.messages.map((m) => m.body), ['m3']);
  assert.equal(p3.more, false);
  // History pages are not handed over again as new messages.
  assert.equal(d.messages.length, 5);

  // Refused before sending: typed client errors.
  await assert.rejects(carol.send('', 'x'), (e) => e instanceof IrisError && e.code === 'invalid_name');
  await assert.rejects(carol.send('dave', 'x'.repeat(65_537)), (e) => e instanceof IrisError && e.code === 'body_too_large');
  // Refused by the server: its code, for that message only.
  const small = client('erin', { maxBodyBytes: 1 << 20 });
  t.after(() => small.close());
  await small.connect();
  await assert.rejects(small.send('dave', 'y'.repeat(70_000)), (e) => e instanceof IrisError && e.code === 'too_large' && e.fromServer);
  assert.equal(small.pending().length, 0);
});

test('a bounded outbox refuses the message over its bound', async (t) => {
  const frank = client('frank', { maxOutbox: 2 });
  t.after(() => frank.close());
  // Not connected: the outbox fills.
  const p1 = frank.send('gina', 'one');
  const p2 = frank.send('gina', 'two');
  await assert.rejects(frank.send('gina', 'three'), (e) => e instanceof IrisError && e.code === 'outbox_full');
  assert.deepEqual(frank.pending().map((e) => e.body), ['one', 'two']);
  await frank.connect();
  const [a1, a2] = await Promise.all([p1, p2]);
  assert.notEqual(a1.msg_id, a2.msg_id);
  assert.equal(frank.pending().length, 0);
});
