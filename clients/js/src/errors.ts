import type { ServerErrorCode } from './protocol.js';

/** Codes this client raises itself, before or instead of the server. */
export type ClientErrorCode =
  /** The outbox holds `maxOutbox` unsent messages; nothing was queued. */
  | 'outbox_full'
  /** A body over `maxBodyBytes`; nothing was queued. */
  | 'body_too_large'
  /** A user or circle name the protocol refuses (1–128 bytes, no control characters). */
  | 'invalid_name'
  /** Any other argument that cannot be sent (wrong type, out of range). */
  | 'invalid_argument'
  /** The session ended while this request waited for its answer (contacts, policy, sync). */
  | 'disconnected'
  /** The client was closed, or stopped for good (see the `error` event). */
  | 'closed'
  /** Too many requests of this kind wait for answers; nothing was sent. */
  | 'busy'
  /** The token provider failed or returned no token. */
  | 'token_unavailable';

/** Every code an {@link IrisError} can carry: the server's and the client's. */
export type IrisErrorCode = ServerErrorCode | ClientErrorCode;

/** An error with a protocol or client code; act on `code`, not `message`. */
export class IrisError extends Error {
  /** The server's code (docs/protocol.md, Errors) or the client's own. */
  readonly code: IrisErrorCode;
  /** The `id` of the `send` this error is about, if any. */
  readonly id: string | undefined;
  /** True when the error came from the server in an `error` frame. */
  readonly fromServer: boolean;

  constructor(code: IrisErrorCode, message: string, opts: { id?: string; fromServer?: boolean } = {}) {
    super(message);
    this.name = 'IrisError';
    this.code = code;
    this.id = opts.id;
    this.fromServer = opts.fromServer ?? false;
  }
}

/**
 * Server codes after which a `send` is retried with the same id (the
 * server recognises the retry): the rest are final for that message.
 */
export function isRetryableSendError(code: string): boolean {
  return code === 'unavailable' || code === 'rate_limited' || code === 'internal';
}
