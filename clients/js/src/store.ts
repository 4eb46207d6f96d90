// Where the client keeps what must outlive a connection (and, with a
// persistent store, a page reload): the resume point and the outbox.

import type { OutboxEntry } from './outbox.js';

/** What a store holds. */
export interface StoredState {
  /** The resume point: every message up to this seq was handed to the app. */
  lastSeq: number;
  /** Messages not yet `accepted`, oldest first. */
  outbox: OutboxEntry[];
}

/**
 * A pluggable store. One store belongs to one user: give each user (token
 * subject) its own store or namespace. Methods may be synchronous or
 * return promises; the client waits for `load` before connecting and does
 * not wait for saves.
 */
export interface IrisStore {
  /** Reads the saved state (a fresh state when nothing is saved). */
  load(): StoredState | Promise<StoredState>;
  /** Saves the resume point. */
  saveLastSeq(seq: number): void | Promise<void>;
  /** Saves the whole outbox, oldest first. */
  saveOutbox(entries: OutboxEntry[]): void | Promise<void>;
}

/** Keeps everything in memory: survives reconnects, not restarts of the app. The default. */
export class MemoryStore implements IrisStore {
  private lastSeq = 0;
  private outbox: OutboxEntry[] = [];

  load(): StoredState {
    return { lastSeq: this.lastSeq, outbox: this.outbox.map((e) => ({ ...e })) };
  }

  saveLastSeq(seq: number): void {
    this.lastSeq = seq;
  }

  saveOutbox(entries: OutboxEntry[]): void {
    this.outbox = entries.map((e) => ({ ...e }));
  }
}

/** The part of the Web Storage API this store uses. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/**
 * Keeps the state in `localStorage` (or any Web Storage) under
 * `<namespace>:seq` and `<namespace>:outbox`, so the resume point and the
 * outbox survive page reloads. Use a namespace per user, e.g.
 * `iris:acme:alice`. A value that does not parse reads as empty.
 */
export class LocalStorageStore implements IrisStore {
  private readonly storage: StorageLike;

  constructor(
    private readonly namespace: string,
    storage?: StorageLike,
  ) {
    const s = storage ?? (globalThis as { localStorage?: StorageLike }).localStorage;
    if (!s) throw new TypeError('LocalStorageStore needs localStorage (or pass a storage)');
    if (!namespace) throw new TypeError('LocalStorageStore needs a namespace');
    this.storage = s;
  }

  load(): StoredState {
    const seq = Number(this.storage.getItem(`${this.namespace}:seq`) ?? '0');
    let outbox: OutboxEntry[] = [];
    try {
      const parsed: unknown = JSON.parse(this.storage.getItem(`${this.namespace}:outbox`) ?? '[]');
      if (Array.isArray(parsed)) outbox = parsed as OutboxEntry[];
    } catch {
      outbox = [];
    }
    return { lastSeq: Number.isSafeInteger(seq) && seq >= 0 ? seq : 0, outbox };
  }

  saveLastSeq(seq: number): void {
    this.storage.setItem(`${this.namespace}:seq`, String(seq));
  }

  saveOutbox(entries: OutboxEntry[]): void {
    this.storage.setItem(`${this.namespace}:outbox`, JSON.stringify(entries));
  }
}
