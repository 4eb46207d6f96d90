// @iris-chat/client: the Iris chat and presence client for browsers and Node.js.

export { IrisClient } from './client.js';
export type {
  AcceptedMessage,
  ConnectionState,
  IrisClientOptions,
  IrisEvents,
  PendingSend,
  SyncPage,
  TokenProvider,
  TokenReason,
  WebSocketConstructor,
  WebSocketLike,
} from './client.js';
export { IrisError, isRetryableSendError } from './errors.js';
export type { ClientErrorCode, IrisErrorCode } from './errors.js';
export { MemoryStore, LocalStorageStore } from './store.js';
export type { IrisStore, StoredState, StorageLike } from './store.js';
export type { OutboxEntry } from './outbox.js';
export { messageBytes, validName } from './protocol.js';
export type {
  Accepted,
  ContactUpsert,
  Message,
  OwnStatus,
  Presence,
  PresenceStatus,
  Receipt,
  ReceiptState,
  ServerErrorCode,
  Synced,
  Typing,
  TypingState,
  Welcome,
} from './protocol.js';
// The pure state, for apps and tests that drive it themselves.
export { backoffDelay, onClosed, onOpened, initialReconnectState, DEFAULT_BACKOFF } from './reconnect.js';
export type { BackoffPolicy, CloseAction, CloseInput, ReconnectState } from './reconnect.js';
export { Outbox, idGenerator } from './outbox.js';
export { SeqTracker } from './seq.js';
export type { SeqVerdict } from './seq.js';
export { ReceiptBook } from './receipts.js';
export { TokenBucket } from './budget.js';
export { tokenExpiry, tokenNeedsRefresh, tokenRefreshDelay } from './token.js';
