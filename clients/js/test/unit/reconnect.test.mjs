import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, onClosed, onOpened, initialReconnectState, DEFAULT_BACKOFF } from '../../dist/index.js';

const P = { baseMs: 100, maxMs: 1_000, stableMs: 5_000 };
const input = (over = {}) => ({ code: 1006, reason: '', canRefreshToken: true, tokenRefusals: 0, ...over });

test('full jitter: the delay is uniform below a doubling ceiling, capped at maxMs', () => {
  assert.equal(backoffDelay(P, 0, 0), 0);
  assert.equal(backoffDelay(P, 0, 0.999), 99);
  assert.equal(backoffDelay(P, 1, 0.5), 100);
  assert.equal(backoffDelay(P, 3, 0.5), 400);
  assert.equal(backoffDelay(P, 4, 0.999), 999); // 1600 capped at 1000
  assert.equal(backoffDelay(P, 1_000, 0.999), 999); // huge attempts do not overflow
  assert.equal(backoffDelay(P, 2, 7), 400); // random clamped to [0, 1]
  assert.equal(backoffDelay(P, -3, 0.5), 50);
  assert.deepEqual(DEFAULT_BACKOFF, { baseMs: 500, maxMs: 20_000, stableMs: 10_000 });
});

test('attempts grow until a session stays open for stableMs', () => {
  let s = initialReconnectState();
  const delays = [];
  for (let i = 0; i < 6; i++) {
    const r = onClosed(s, input(), P, 1_000 * i, 0.999);
    s = r.state;
    delays.push(r.action.delayMs);
  }
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999]);
  // A session that closes right after welcome does not reset the backoff...
  s = onOpened(s, 10_000);
  let r = onClosed(s, input(), P, 10_100, 0.999);
  assert.equal(r.action.delayMs, 999);
  // ...one that held for stableMs does.
  s = onOpened(r.state, 20_000);
  r = onClosed(s, input(), P, 25_000, 0.999);
  assert.equal(r.action.delayMs, 99);
  assert.equal(r.state.attempt, 1);
});

test('close codes: refused tokens, client bugs, overload and behind', () => {
  const s = initialReconnectState();
  // 1008 with a provider: get a new token, then reconnect.
  let r = onClosed(s, input({ code: 1008, tokenRefusals: 1 }), P, 0, 0.5);
  assert.deepEqual(r.action, { kind: 'reconnect', delayMs: 50, refreshToken: true });
  // The error before the close decides as well as the code.
  r = onClosed(s, input({ code: 1000, lastErrorCode: 'unauthorized', tokenRefusals: 1 }), P, 0, 0.5);
  assert.equal(r.action.refreshToken, true);
  // Without a provider, or refused again: stop, never loop.
  r = onClosed(s, input({ code: 1008, canRefreshToken: false, tokenRefusals: 1 }), P, 0, 0.5);
  assert.deepEqual(r.action.kind, 'stop');
  assert.equal(r.action.code, 'unauthorized');
  r = onClosed(s, input({ code: 1008, tokenRefusals: 2 }), P, 0, 0.5);
  assert.equal(r.action.kind, 'stop');
  // Bugs in the client: stop.
  assert.equal(onClosed(s, input({ code: 1002 }), P, 0, 0.5).action.code, 'bad_frame');
  assert.equal(onClosed(s, input({ code: 1009 }), P, 0, 0.5).action.code, 'too_large');
  // 1008 after rate_limited (too many sessions): not a token refusal; at
  // least 5 s, and the token is kept.
  r = onClosed(s, input({ code: 1008, lastErrorCode: 'rate_limited', reason: 'session refused: limit reached' }), P, 0, 0);
  assert.equal(r.action.kind, 'reconnect');
  assert.equal(r.action.delayMs, 5_000);
  assert.equal(r.action.refreshToken, false);
  // Older servers closed it with 1013: the same.
  r = onClosed(s, input({ code: 1013, lastErrorCode: 'rate_limited', reason: 'session could not be opened; retry' }), P, 0, 0);
  assert.equal(r.action.delayMs, 5_000);
  // 1008 after forbidden (the tenant was deleted): stop, no token helps.
  r = onClosed(s, input({ code: 1008, lastErrorCode: 'forbidden', reason: 'session refused: tenant deleted' }), P, 0, 0);
  assert.deepEqual(r.action, { kind: 'stop', code: 'forbidden', reason: 'the tenant was deleted' });
  // 1013 could not be opened: at least 1 s.
  r = onClosed(s, input({ code: 1013, lastErrorCode: 'unavailable', reason: 'session could not be opened; retry' }), P, 0, 0);
  assert.equal(r.action.delayMs, 1_000);
  // Jittered above the floor, so that clients refused together spread out.
  r = onClosed(s, input({ code: 1013, lastErrorCode: 'rate_limited', reason: 'session could not be opened; retry' }), P, 0, 0.5);
  assert.equal(r.action.delayMs, 5_050);
  r = onClosed(s, input({ code: 1013, lastErrorCode: 'unavailable', reason: 'session could not be opened; retry' }), P, 0, 0.999);
  assert.equal(r.action.delayMs, 1_099);
  // 1013 fell behind: resume at once (jittered).
  r = onClosed(s, input({ code: 1013, reason: 'session fell behind; resume with resume_after' }), P, 0, 0);
  assert.equal(r.action.delayMs, 0);
  // Shutting down, heartbeat timeout, dropped: backoff and resume.
  for (const [code, reason] of [[1001, 'server shutting down'], [1001, 'heartbeat timeout'], [1006, ''], [1000, 'closed']]) {
    r = onClosed(s, input({ code, reason }), P, 0, 0.5);
    assert.deepEqual(r.action, { kind: 'reconnect', delayMs: 50, refreshToken: false }, `${code} ${reason}`);
  }
});
