// Token timing, pure: when to ask the provider for a new token.

/** Reads `exp` (seconds since the epoch) from a JWT without checking it; undefined if absent or unreadable. */
export function tokenExpiry(token: string): number | undefined {
  const part = token.split('.')[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const claims: unknown = JSON.parse(json);
    const exp = (claims as { exp?: unknown } | null)?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** Default margin before expiry at which a token is replaced, ms. */
export const DEFAULT_REFRESH_MARGIN_MS = 60_000;

/**
 * Whether a token must be replaced before it is used at `now` (ms): it is
 * missing, or expires within `marginMs`. A token without a readable `exp`
 * is used as it is (the server decides).
 */
export function tokenNeedsRefresh(token: string | undefined, now: number, marginMs: number): boolean {
  if (!token) return true;
  const exp = tokenExpiry(token);
  return exp !== undefined && exp * 1000 - marginMs <= now;
}

/**
 * How long from `now` until the token should be replaced, ms (0 if now);
 * undefined for a token without a readable `exp`.
 */
export function tokenRefreshDelay(token: string, now: number, marginMs: number): number | undefined {
  const exp = tokenExpiry(token);
  if (exp === undefined) return undefined;
  return Math.max(0, exp * 1000 - marginMs - now);
}
