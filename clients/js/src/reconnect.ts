// Reconnection decisions, pure: no timers, no sockets. Time and randomness
// are passed in so that every decision is unit-testable.

/** Backoff bounds. */
export interface BackoffPolicy {
  /** Ceiling of the first retry's delay, ms. */
  baseMs: number;
  /** Ceiling of any retry's delay, ms. */
  maxMs: number;
  /** A session that stayed open this long resets the backoff, ms. */
  stableMs: number;
}

/** Defaults: 0.5 s doubling up to 20 s; a session of 10 s counts as stable. */
export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 500, maxMs: 20_000, stableMs: 10_000 };

/**
 * Exponential backoff with full jitter: a uniform delay in
 * `[0, min(maxMs, baseMs * 2^attempt))`. `random` is in `[0, 1)`.
 */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: number): number {
  const exp = Math.min(30, Math.max(0, attempt));
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** exp);
  const r = Math.min(Math.max(random, 0), 1);
  return Math.floor(ceiling * r);
}

/** What the client does after a connection ended. */
export type CloseAction =
  | {
      kind: 'reconnect';
      /** How long to wait before the next attempt, ms. */
      delayMs: number;
      /** Ask the token provider for a new token first. */
      refreshToken: boolean;
    }
  | {
      kind: 'stop';
      /** The error code reported to the app. */
      code: 'unauthorized' | 'bad_frame' | 'too_large' | 'rate_limited' | 'forbidden';
      /** Why, for humans. */
      reason: string;
    };

/** What the client knows when a connection ends. */
export interface CloseInput {
  /** WebSocket close code (1006 when the connection just dropped). */
  code: number;
  /** Close reason text. */
  reason: string;
  /** The code of the `error` frame that came just before the close, if any. */
  lastErrorCode?: string | undefined;
  /** Whether a token provider can give a new token. */
  canRefreshToken: boolean;
  /** Consecutive connections refused for their token, this one included when it was. */
  tokenRefusals: number;
}

/** The state of reconnection across attempts. */
export interface ReconnectState {
  /** Failed attempts since the last stable session. */
  attempt: number;
  /** When the current session got `welcome`, ms; undefined when none is open. */
  openedAt: number | undefined;
}

/** A fresh state. */
export function initialReconnectState(): ReconnectState {
  return { attempt: 0, openedAt: undefined };
}

/** Least delay after the server said the user holds too many sessions, ms. */
const RATE_LIMITED_FLOOR_MS = 5_000;
/** Least delay after the node said it could not open the session, ms. */
const UNAVAILABLE_FLOOR_MS = 1_000;
/** Refused tokens in a row after which the client stops (the server throttles refusals per address). */
export const MAX_TOKEN_REFUSALS = 2;

/** Records that a session opened at `now`. */
export function onOpened(s: ReconnectState, now: number): ReconnectState {
  return { ...s, openedAt: now };
}

/**
 * Decides what to do after a connection ended at `now`, following the close
 * codes of docs/protocol.md, and returns the next state. `random` is in
 * `[0, 1)`.
 */
export function onClosed(
  s: ReconnectState,
  input: CloseInput,
  policy: BackoffPolicy,
  now: number,
  random: number,
): { state: ReconnectState; action: CloseAction } {
  // A session that held long enough starts the backoff over.
  const stable = s.openedAt !== undefined && now - s.openedAt >= policy.stableMs;
  const attempt = stable ? 0 : s.attempt;
  const next: ReconnectState = { attempt: attempt + 1, openedAt: undefined };
  const delay = backoffDelay(policy, attempt, random);
  const reconnect = (floorMs: number, refreshToken = false): CloseAction => ({
    kind: 'reconnect',
    // Jittered above the floor too, so that clients refused together do
    // not come back together.
    delayMs: floorMs + delay,
    refreshToken,
  });

  if (input.lastErrorCode === 'rate_limited' && (input.code === 1008 || input.code === 1013)) {
    // The user holds the most sessions allowed (1008 "session refused:
    // limit reached"; 1013 from servers before 2026-12): only another
    // session ending helps, so wait longer than usual. Not a token refusal.
    return { state: next, action: reconnect(RATE_LIMITED_FLOOR_MS) };
  }
  if (input.code === 1008 && input.lastErrorCode === 'forbidden') {
    // 1008 "session refused: tenant deleted": the operator deleted the
    // user's tenant. No token helps; not a token refusal either.
    return { state: next, action: { kind: 'stop', code: 'forbidden', reason: 'the tenant was deleted' } };
  }
  if (input.code === 1008 || input.lastErrorCode === 'unauthorized') {
    // Never retry a refused token in a loop: the server counts refusals
    // per source address and then refuses every token for a minute.
    if (!input.canRefreshToken || input.tokenRefusals >= MAX_TOKEN_REFUSALS) {
      return { state: next, action: { kind: 'stop', code: 'unauthorized', reason: 'the token was refused' } };
    }
    return { state: next, action: reconnect(0, true) };
  }
  if (input.code === 1002) {
    return { state: next, action: { kind: 'stop', code: 'bad_frame', reason: 'the server could not decode frames' } };
  }
  if (input.code === 1009) {
    return { state: next, action: { kind: 'stop', code: 'too_large', reason: 'a frame was over the size limit' } };
  }
  if (input.code === 1013) {
    if (/fell behind/.test(input.reason)) {
      // Nothing stored is lost; resume at once (still jittered).
      return { state: next, action: reconnect(0) };
    }
    return { state: next, action: reconnect(UNAVAILABLE_FLOOR_MS) };
  }
  // 1000, 1001 (heartbeat timeout, server shutting down), 1006 and the rest:
  // reconnect with backoff and resume.
  return { state: next, action: reconnect(0) };
}
