// Receipt states per message, pure: `read` implies `delivered`, and a late
// `delivered` never undoes a `read` (docs/protocol.md, Receipts).

import type { ReceiptState } from './protocol.js';

/** Default bound of messages whose receipt state is remembered. */
export const DEFAULT_MAX_RECEIPTS = 10_000;

/** The latest receipt state of the messages this user sent, bounded (oldest forgotten first). */
export class ReceiptBook {
  private readonly states = new Map<string, ReceiptState>();

  constructor(readonly max: number = DEFAULT_MAX_RECEIPTS) {}

  /** Applies a receipt; returns the new state, or undefined when it changes nothing. */
  apply(msgId: string, state: ReceiptState): ReceiptState | undefined {
    const old = this.states.get(msgId);
    if (old === 'read' || old === state) return undefined;
    this.states.delete(msgId);
    this.states.set(msgId, state);
    if (this.states.size > this.max) {
      const oldest = this.states.keys().next().value;
      if (oldest !== undefined) this.states.delete(oldest);
    }
    return state;
  }

  /** The state of a message, if a receipt for it is remembered. */
  get(msgId: string): ReceiptState | undefined {
    return this.states.get(msgId);
  }
}
