// The outbox: messages sent but not yet `accepted`, in send order, bounded.
// Pure: the client persists `entries()` through its store after each change.

import { IrisError } from './errors.js';

/** One message waiting for `accepted`. */
export interface OutboxEntry {
  /** The client id of the send: the same on every retry. */
  id: string;
  /** The recipient. */
  to: string;
  /** The body, as sent on the wire. */
  body: string;
  /** `"base64"` when `body` is base64. */
  encoding?: 'base64';
  /** When the app called `send`, ms since the epoch. */
  queuedAt: number;
}

/** Default bound of the outbox. */
export const DEFAULT_MAX_OUTBOX = 1_000;

/** Messages waiting for `accepted`, oldest first, at most `max`. */
export class Outbox {
  private readonly byId = new Map<string, OutboxEntry>();

  constructor(readonly max: number = DEFAULT_MAX_OUTBOX, restored: readonly OutboxEntry[] = []) {
    if (!Number.isInteger(max) || max < 1) throw new IrisError('invalid_argument', 'maxOutbox must be a positive integer');
    // A restored outbox larger than the bound keeps its oldest entries:
    // they were promised first.
    for (const e of restored) {
      if (this.byId.size >= max) break;
      if (isEntry(e) && !this.byId.has(e.id)) this.byId.set(e.id, { ...e });
    }
  }

  /** Queues an entry; throws `outbox_full` at the bound (nothing is queued). */
  add(entry: OutboxEntry): void {
    if (this.byId.has(entry.id)) throw new IrisError('invalid_argument', `id ${entry.id} is already in the outbox`);
    if (this.byId.size >= this.max) {
      throw new IrisError('outbox_full', `the outbox holds ${this.max} unsent messages`);
    }
    this.byId.set(entry.id, entry);
  }

  /** Removes and returns the entry with this id (on `accepted` or a final error). */
  remove(id: string): OutboxEntry | undefined {
    const e = this.byId.get(id);
    if (e) this.byId.delete(id);
    return e;
  }

  /** The entry with this id. */
  get(id: string): OutboxEntry | undefined {
    return this.byId.get(id);
  }

  /** Entries in send order (Map keeps insertion order). */
  entries(): OutboxEntry[] {
    return [...this.byId.values()];
  }

  /** How many entries wait. */
  get size(): number {
    return this.byId.size;
  }
}

function isEntry(e: unknown): e is OutboxEntry {
  if (typeof e !== 'object' || e === null) return false;
  const o = e as Record<string, unknown>;
  return typeof o.id === 'string' && typeof o.to === 'string' && typeof o.body === 'string' && typeof o.queuedAt === 'number';
}

/**
 * Makes client ids: a random 64-bit prefix per client instance and a
 * counter, so ids never repeat across page reloads or devices (the server
 * remembers ids for at least 7 days). Ids are at most 64 characters.
 */
export function idGenerator(randomBytes: (n: number) => Uint8Array): () => string {
  const prefix = [...randomBytes(8)].map((b) => b.toString(16).padStart(2, '0')).join('');
  let n = 0;
  return () => `${prefix}-${(n++).toString(36)}`;
}
