// End to end in headless Chromium (Debian's, driven by playwright-core; no
// browser download): two users chat through the demo page served by the
// node, with receipts, typing and presence; the node is killed with -9 and
// restarted mid-conversation and both pages recover with nothing lost; a
// message typed while the node is down survives its tab being closed
// (localStorage) and is sent, once, by the next tab; a new tab reads the
// history below its stored resume point with sync.
//
// Needs CHROMIUM (default /usr/bin/chromium). Set IRIS_DEMO_SCREENSHOT to a
// path to save a screenshot of the conversation there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { IrisNode, waitFor } from '../support/iris.mjs';

const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT = 20_000;

test('two browsers chat through the demo and survive a kill -9 of the node', { skip: !existsSync(executablePath) && `no Chromium at ${executablePath}` }, async (t) => {
  const node = await IrisNode.start();
  t.after(() => node.stop());
  // playwright-core gives the browser a fresh temporary profile of its own
  // (it refuses --user-data-dir with launch()).
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  t.after(() => browser.close());

  const pageErrors = [];
  const open = async (user, context) => {
    context ??= await browser.newContext({ viewport: { width: 900, height: 560 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(`${user}: ${e.message}`));
    await page.goto(`${node.httpUrl}/demo`);
    await page.getByTestId('user').fill(user);
    await page.getByTestId('user').press('Enter');
    await page.locator('[data-testid=conn].open').waitFor({ timeout: WAIT });
    return page;
  };
  let alice = await open('alice');
  const bob = await open('bob');

  const addContact = async (page, user) => {
    await page.getByTestId('add-contact').fill(user);
    await page.getByTestId('add-contact').press('Enter');
  };
  await addContact(alice, 'bob');
  await addContact(bob, 'alice');
  // Each added the other, so each may see the other's presence.
  await alice.locator('li.contact[data-user=bob][data-status=online]').waitFor({ timeout: WAIT });
  await bob.locator('li.contact[data-user=alice][data-status=online]').waitFor({ timeout: WAIT });

  const say = async (page, text) => {
    await page.getByTestId('text').fill(text);
    await page.getByTestId('text').press('Enter');
  };
  const bodies = (page) => page.locator('#log .msg .body').allTextContents();

  // Typing reaches the other page.
  await alice.getByTestId('text').pressSequentially('hel');
  await bob.getByText('alice is typing…').waitFor({ timeout: WAIT });
  await say(alice, 'hello bob');
  await bob.locator('#log .msg[data-mine=false]', { hasText: 'hello bob' }).waitFor({ timeout: WAIT });
  // Bob's page has the conversation open: alice's tick turns to read.
  await alice.locator('#log .msg[data-mine=true][data-state=read]', { hasText: 'hello bob' }).waitFor({ timeout: WAIT });
  await say(bob, 'hi alice');
  await alice.locator('#log .msg[data-mine=false]', { hasText: 'hi alice' }).waitFor({ timeout: WAIT });

  // Bob goes away; alice sees it.
  await bob.getByTestId('status').selectOption('away');
  await alice.locator('li.contact[data-user=bob][data-status=away]').waitFor({ timeout: WAIT });

  // The node dies mid-conversation.
  await node.kill9();
  await alice.locator('[data-testid=conn].connecting').waitFor({ timeout: WAIT });
  await bob.locator('[data-testid=conn].connecting').waitFor({ timeout: WAIT });
  await say(alice, 'are you still there?');
  await say(bob, 'the node is down');
  await alice.locator('#log .msg[data-mine=true][data-state=pending]', { hasText: 'are you still there?' }).waitFor({ timeout: WAIT });
  // Alice closes her tab while the node is down: the unsent message stays
  // in localStorage, and the page she opens once the node is back sends it.
  const aliceContext = alice.context();
  await alice.close();

  await node.run(); // same data, same ports
  alice = await open('alice', aliceContext);
  await alice.locator('[data-testid=conn].open').waitFor({ timeout: WAIT });
  await bob.locator('[data-testid=conn].open').waitFor({ timeout: WAIT });
  await bob.locator('#log .msg[data-mine=false]', { hasText: 'are you still there?' }).waitFor({ timeout: WAIT });
  await alice.locator('#log .msg[data-mine=false]', { hasText: 'the node is down' }).waitFor({ timeout: WAIT });
  await alice.locator('#log .msg[data-mine=true][data-state=read]', { hasText: 'are you still there?' }).waitFor({ timeout: WAIT });
  // The pages re-subscribed by themselves: bob's status is back (away is
  // not stored by the node, and bob's page sets it again on reconnect).
  await alice.locator('li.contact[data-user=bob][data-status=away]').waitFor({ timeout: WAIT });

  // Nothing lost, nothing twice, in order, on both pages.
  const want = ['hello bob', 'hi alice', 'are you still there?', 'the node is down'];
  await waitFor(async () => (await bodies(alice)).length === 4 && (await bodies(bob)).length === 4, { timeoutMs: WAIT, what: 'four lines on each page' });
  const onAlice = await bodies(alice);
  const onBob = await bodies(bob);
  assert.deepEqual([...onAlice].sort(), [...want].sort());
  assert.deepEqual([...onBob].sort(), [...want].sort());
  assert.deepEqual(onAlice.slice(0, 2), want.slice(0, 2));

  // A new tab of bob's (same profile): his stored resume point is past
  // both messages he got, so nothing is replayed; the page reads the
  // history with sync pages.
  assert.equal(await bob.evaluate(() => localStorage.getItem('iris-demo:bob:seq')), '2');
  const bob2 = await open('bob', bob.context());
  await waitFor(async () => (await bodies(bob2)).length === 4, { timeoutMs: WAIT, what: "the history on bob's new tab" });
  assert.deepEqual((await bodies(bob2)).sort(), [...want].sort());
  await bob2.getByText('the beginning of the history').waitFor({ timeout: WAIT });
  assert.deepEqual(pageErrors, []);

  if (process.env.IRIS_DEMO_SCREENSHOT) {
    await alice.getByTestId('text').fill('');
    await alice.screenshot({ path: process.env.IRIS_DEMO_SCREENSHOT });
  }
});
