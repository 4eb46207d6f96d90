// Presence with contact-circle policy, against the real node.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { IrisClient } from '../../dist/index.js';
import { IrisNode, waitFor, record, FAST } from '../support/iris.mjs';

let node;
before(async () => {
  node = await IrisNode.start();
});
after(async () => {
  await node?.stop();
});

function client(user) {
  return new IrisClient({ url: node.wsUrl, token: node.token(user, 'acme'), ...FAST });
}

const latest = (rec, user) => [...rec.presence].reverse().find((p) => p.user === user);

test('viewers see what the owner\'s circles allow, live', async (t) => {
  const bob = client('bob');
  const alice = client('alice');
  const mallory = client('mallory');
  t.after(() => [bob, alice, mallory].forEach((c) => c.close()));
  const a = record(alice);
  const m = record(mallory);
  await Promise.all([bob.connect(), alice.connect(), mallory.connect()]);

  // Bob lets his friends see his presence, not his last_seen.
  assert.equal(await bob.setContacts({ upsert: [{ user: 'alice', circle: 'friends' }] }), 1);
  assert.equal(await bob.setCirclePolicy('friends', { presence: true, last_seen: false }), 'friends');

  alice.subscribe(['bob']);
  mallory.subscribe(['bob']);
  await waitFor(() => latest(a, 'bob')?.status === 'online', { what: 'alice sees bob online' });
  await waitFor(() => latest(m, 'bob'), { what: "mallory's view of bob" });
  assert.equal(latest(m, 'bob').status, 'offline', 'mallory is in no circle of bob');
  assert.equal(latest(m, 'bob').last_seen, undefined);

  bob.setStatus('away');
  await waitFor(() => latest(a, 'bob')?.status === 'away', { what: 'alice sees bob away' });

  // Bob leaves: alice sees him offline, without last_seen (the circle does not allow it).
  bob.close();
  await waitFor(() => latest(a, 'bob')?.status === 'offline', { what: 'alice sees bob offline' });
  assert.equal(latest(a, 'bob').last_seen, undefined);
  // Mallory's view never changed, so she got nothing more.
  assert.equal(m.presence.filter((p) => p.user === 'bob').length, 1);
});

test('a new session subscribes with its first welcome; losing access reads offline', async (t) => {
  const owner = client('olga');
  const viewer = client('vera');
  t.after(() => [owner, viewer].forEach((c) => c.close()));
  const v = record(viewer);
  await Promise.all([owner.connect(), viewer.connect()]);
  await owner.setContacts({ upsert: [{ user: 'vera' }] }); // circle "contacts" allows presence and last_seen
  viewer.subscribe(['olga']);
  await waitFor(() => latest(v, 'olga')?.status === 'online', { what: 'vera sees olga' });
  owner.setStatus('away');
  await waitFor(() => latest(v, 'olga')?.status === 'away', { what: 'away' });

  // A new client (a page reload) that subscribes before connecting gets
  // the view with its first session; the closed one gets nothing more.
  // (Re-subscription after a dropped connection: resume.test.mjs.)
  const before = v.presence.length;
  viewer.close();
  const viewer2 = client('vera');
  t.after(() => viewer2.close());
  const v2 = record(viewer2);
  viewer2.subscribe(['olga']); // before connecting: sent with the session
  await viewer2.connect();
  await waitFor(() => latest(v2, 'olga')?.status === 'away', { what: 'the new session sees away' });
  assert.equal(v.presence.length, before);

  // Removing vera from the contacts takes her view away at once.
  await owner.setContacts({ remove: ['vera'] });
  await waitFor(() => latest(v2, 'olga')?.status === 'offline', { what: 'vera lost access' });
  assert.equal(latest(v2, 'olga').last_seen, undefined);
});
