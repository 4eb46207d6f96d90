// The client: a thin shell around the pure state (reconnect.ts, outbox.ts,
// seq.ts, token.ts, receipts.ts) that owns the socket and the timers.

import { TokenBucket } from './budget.js';
import { IrisError, isRetryableSendError } from './errors.js';
import { Emitter } from './events.js';
import { DEFAULT_MAX_OUTBOX, Outbox, idGenerator, type OutboxEntry } from './outbox.js';
import {
  bytesToBase64,
  parseServerFrame,
  utf8Length,
  validName,
  type Accepted,
  type ClientFrame,
  type ContactUpsert,
  type ErrorFrame,
  type Message,
  type OwnStatus,
  type Presence,
  type Receipt,
  type ServerFrame,
  type Synced,
  type Typing,
  type TypingState,
  type Welcome,
} from './protocol.js';
import { ReceiptBook } from './receipts.js';
import {
  backoffDelay,
  DEFAULT_BACKOFF,
  initialReconnectState,
  onClosed,
  onOpened,
  type BackoffPolicy,
  type ReconnectState,
} from './reconnect.js';
import { DEFAULT_MAX_AHEAD, SeqTracker } from './seq.js';
import { MemoryStore, type IrisStore } from './store.js';
import { DEFAULT_REFRESH_MARGIN_MS, tokenNeedsRefresh, tokenRefreshDelay } from './token.js';

/** The part of the WebSocket API the client uses (browsers, Node's undici, `ws`). */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** A WebSocket constructor. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Why the token provider is called. */
export type TokenReason = 'initial' | 'expiring' | 'refused';

/** Gives a token (a JWT the node accepts); called again when it nears expiry or was refused. */
export type TokenProvider = (ctx: { reason: TokenReason }) => string | Promise<string>;

/** Where the connection stands. */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'closed';

/** Options of {@link IrisClient}. */
export interface IrisClientOptions {
  /** The node's WebSocket endpoint, e.g. `ws://127.0.0.1:8080/v1/ws`. */
  url: string;
  /** A fixed token. Give this or `tokenProvider`. */
  token?: string;
  /** Gives tokens; preferred over `token`, since a refused or expiring token can then be replaced. */
  tokenProvider?: TokenProvider;
  /** The WebSocket constructor; default `globalThis.WebSocket`. Node 20: pass one (e.g. `ws`) or run with `--experimental-websocket`. */
  WebSocket?: WebSocketConstructor;
  /** Resume point and outbox store; default a {@link MemoryStore}. One store per user. */
  store?: IrisStore;
  /** Sent as `hello.device` (informational). */
  device?: string;
  /** Reconnect backoff; default 0.5 s doubling to 20 s with full jitter, reset after 10 s of session. */
  backoff?: Partial<BackoffPolicy>;
  /** Most messages waiting for `accepted`; default 1,000. `send` beyond rejects with `outbox_full`. */
  maxOutbox?: number;
  /** Largest body in bytes; default 65,536 (the node's `max_body_bytes`). Larger rejects with `body_too_large`. */
  maxBodyBytes?: number;
  /**
   * Send `ack` for messages once the `message` handlers ran; default true.
   * With false, only what the app passes to {@link IrisClient.ack} is
   * acknowledged, and the stored resume point never passes it.
   */
  autoAck?: boolean;
  /** Replace a token this long before its `exp`, ms; default 60,000. */
  tokenRefreshMarginMs?: number;
  /** Time allowed from opening the socket to `welcome`, ms; default 15,000. */
  openTimeoutMs?: number;
  /** Resend a message not `accepted` after this long on an open session, ms (same id, so safe); default 10,000. */
  sendRetryMs?: number;
  /** Frames per second on average (sends and every other frame), to stay below the node's frame rate (200/s); default 150. */
  sendsPerSecond?: number;
  /** Frames at once before `sendsPerSecond` applies (the node allows bursts of 400); default 300. */
  sendBurst?: number;
  /** Most seqs remembered above a gap; default 10,000. */
  maxAhead?: number;
  /** Random numbers in [0, 1) for jitter (tests); default Math.random. */
  random?: () => number;
}

/** An accepted message, with what was sent. */
export interface AcceptedMessage extends Accepted {
  to: string;
  body: string;
}

/** The promise `send` returns, with the client id of the message ('' when it was refused before being queued). */
export type PendingSend = Promise<Accepted> & { readonly id: string };

/** The result of {@link IrisClient.sync}. */
export interface SyncPage {
  /** The messages `after + 1`, `after + 2`, … without a gap, oldest first. */
  messages: Message[];
  /** More messages follow: call again with `after` = the last seq (or `after` again if `messages` is empty). */
  more: boolean;
  /** The inbox head when the server took the request. */
  inbox_head: number;
}

/** Events of {@link IrisClient}. */
export interface IrisEvents {
  /** A session opened. */
  welcome: Welcome;
  /** A message not seen before (duplicates by seq are dropped). */
  message: Message;
  /** A receipt that advanced a message's state (`read` is never followed by `delivered`). */
  receipt: Receipt;
  /** What this user may see of a subscribed user. */
  presence: Presence;
  /** Someone types to this user. */
  typing: Typing;
  /** A message this client sent is durably stored (also for messages restored from the store). */
  accepted: AcceptedMessage;
  /** A replay or page ended. */
  synced: Synced;
  /** The connection state changed. */
  state: ConnectionState;
  /** A server error not answered through a promise, or the reason the client stopped. */
  error: IrisError;
  /** The connection ended; `retryInMs` is absent when the client stopped. */
  disconnect: { code: number; reason: string; retryInMs?: number };
}

/** Most subscriptions a session may hold (the node's default). */
const MAX_SUBSCRIPTIONS = 1_000;
/** Most names in one list frame (`max_list_items`). */
const MAX_LIST_ITEMS = 1_000;
/** Most requests waiting for their answer, per kind. */
const MAX_WAITING = 64;
/** Most explicit `sync` calls queued behind the one in flight. */
const MAX_SYNC_QUEUE = 16;
/** How long resume point saves and `ack`s are coalesced, ms (browsers run every socket message as its own task). */
const FLUSH_MS = 50;
/**
 * Most sends on the wire without an answer; the rest of the outbox follows
 * as answers come, in order. Well below the node's frame burst (400), so a
 * full outbox flushed after a reconnect is not refused as `rate_limited`.
 */
const MAX_IN_FLIGHT = 128;

interface Waiter<T> {
  resolve(v: T): void;
  reject(e: IrisError): void;
}

/**
 * A request answered without an id (`contacts`, `circle_policy`, `sync`):
 * one is on the wire at a time, so an answer or an id-less error belongs to
 * the first.
 */
interface Request {
  frame: ClientFrame;
  /** Absent for the client's own replay pages. */
  waiter?: Waiter<any>;
  /** `sync`: its `after`. */
  after?: number;
  /** `sync` with a waiter: what came while it was on the wire. */
  collected?: Map<number, Message>;
  /** When it was written, ms; 0 while it waits. */
  at: number;
}

/**
 * An Iris session that stays up: it reconnects with backoff, resumes after
 * the last seq it handed over, drops duplicates, resends its outbox in
 * order, and restores presence subscriptions and status on every
 * reconnect.
 */
export class IrisClient {
  private readonly events = new Emitter<IrisEvents>();
  private readonly WS: WebSocketConstructor;
  private readonly store: IrisStore;
  private readonly policy: BackoffPolicy;
  private readonly random: () => number;
  private readonly nextId: () => string;
  private readonly receipts = new ReceiptBook();
  private readonly waitingSends = new Map<string, Waiter<Accepted>>();
  private readonly sentAt = new Map<string, number>();
  private readonly subscriptions = new Set<string>();
  private readonly requests: Request[] = [];
  /** Frames other than `send` waiting for the frame budget. */
  private readonly queue: ClientFrame[] = [];
  private readonly connectWaiters: Waiter<Welcome>[] = [];

  private outbox: Outbox;
  private seq: SeqTracker;
  private readonly loaded: Promise<void>;
  private isLoaded = false;
  private state: ConnectionState = 'idle';
  private ws: WebSocketLike | undefined;
  private token: string | undefined;
  private refreshReason: TokenReason | undefined;
  private tokenRefusals = 0;
  private reconnectState: ReconnectState = initialReconnectState();
  private lastErrorCode: string | undefined;
  private welcome: Welcome | undefined;
  private status: OwnStatus | undefined;
  private requestRetries = 0;
  private ackWanted = 0;
  private ackSent = 0;
  /** No `send` is written before this time, ms (a refused one waits for its retry). */
  private holdUntil = 0;
  private sendRetries = 0;
  private readWanted = 0;
  private readSent = 0;
  private savedSeq = -1;
  private lastReceivedAt = 0;
  private readonly sendBudget: TokenBucket;
  private timers: {
    reconnect?: ReturnType<typeof setTimeout>;
    open?: ReturnType<typeof setTimeout>;
    tick?: ReturnType<typeof setInterval>;
    refresh?: ReturnType<typeof setTimeout>;
    pump?: ReturnType<typeof setTimeout>;
    flush?: ReturnType<typeof setTimeout>;
    request?: ReturnType<typeof setTimeout>;
  } = {};

  constructor(private readonly opts: IrisClientOptions) {
    if (!opts || typeof opts.url !== 'string' || !/^wss?:\/\//.test(opts.url)) {
      throw new IrisError('invalid_argument', 'url must be a ws:// or wss:// URL');
    }
    if (opts.token === undefined && opts.tokenProvider === undefined) {
      throw new IrisError('invalid_argument', 'give a token or a tokenProvider');
    }
    const WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new IrisError(
        'invalid_argument',
        'no WebSocket: pass options.WebSocket (on Node.js 20, the ws package, or run node with --experimental-websocket)',
      );
    }
    this.WS = WS;
    this.store = opts.store ?? new MemoryStore();
    this.policy = { ...DEFAULT_BACKOFF, ...opts.backoff };
    if (!(this.policy.baseMs > 0 && this.policy.maxMs >= this.policy.baseMs && this.policy.stableMs >= 0)) {
      throw new IrisError('invalid_argument', 'backoff needs 0 < baseMs <= maxMs and stableMs >= 0');
    }
    this.random = opts.random ?? Math.random;
    this.sendBudget = new TokenBucket(opts.sendsPerSecond ?? 150, opts.sendBurst ?? 300, Date.now());
    this.token = opts.token;
    this.outbox = new Outbox(opts.maxOutbox ?? DEFAULT_MAX_OUTBOX);
    this.seq = new SeqTracker(0, opts.maxAhead ?? DEFAULT_MAX_AHEAD);
    this.nextId = idGenerator((n) => {
      const b = new Uint8Array(n);
      globalThis.crypto.getRandomValues(b);
      return b;
    });
    this.loaded = this.load();
  }

  /** Subscribes to an event; returns a function that unsubscribes. */
  on<K extends keyof IrisEvents>(event: K, handler: (value: IrisEvents[K]) => void): () => void {
    return this.events.on(event, handler);
  }

  /** The connection state. */
  get connectionState(): ConnectionState {
    return this.state;
  }

  /** The current session's `welcome`, while one is open. */
  get session(): Welcome | undefined {
    return this.state === 'open' ? this.welcome : undefined;
  }

  /** The highest seq up to which every message was handed over (sent as `resume_after`). */
  get resumePoint(): number {
    return this.seq.resumePoint;
  }

  /** Resolves once the store was read (its outbox is then in `pending()`). */
  whenLoaded(): Promise<void> {
    return this.loaded;
  }

  /** Messages waiting for `accepted`, oldest first (after `whenLoaded`, including those restored from the store). */
  pending(): OutboxEntry[] {
    return this.outbox.entries();
  }

  /**
   * Starts the client (once) and resolves on the next `welcome`. It keeps
   * reconnecting until {@link close}; rejects only when the client stops
   * (refused token, closed).
   */
  connect(): Promise<Welcome> {
    if (this.state === 'closed') return Promise.reject(new IrisError('closed', 'the client is closed'));
    const p = new Promise<Welcome>((resolve, reject) => {
      if (this.state === 'open' && this.welcome) resolve(this.welcome);
      else this.connectWaiters.push({ resolve, reject });
    });
    if (this.state === 'idle') {
      this.setState('connecting');
      void this.loaded.then(() => this.attempt());
    }
    return p;
  }

  /** Ends the session and stops reconnecting. Unsent messages stay in the store. */
  close(): void {
    if (this.state === 'closed') return;
    this.stop(new IrisError('closed', 'the client was closed'), false);
    this.events.emit('disconnect', { code: 1000, reason: 'closed by the client' });
  }

  /**
   * Sends a message; resolves on `accepted` (the message is durably
   * stored). It waits in the outbox until then, across reconnects, and is
   * resent with the same id, so it is stored and delivered once. Rejects
   * with `invalid_name`, `body_too_large`, `outbox_full` or `closed`, or
   * with the server's code when the server refuses it for good
   * (`bad_frame`, `too_large`, …). The promise carries the message's
   * client `id`, which the `accepted` event and `pending()` also name.
   */
  send(to: string, body: string | Uint8Array): PendingSend {
    const refuse = (e: unknown): PendingSend => Object.assign(Promise.reject(e) as Promise<Accepted>, { id: '' });
    if (this.state === 'closed') return refuse(new IrisError('closed', 'the client is closed'));
    if (!validName(to)) return refuse(new IrisError('invalid_name', 'recipient must be 1-128 bytes without control characters'));
    let wire: string;
    let encoding: 'base64' | undefined;
    let bytes: number;
    if (typeof body === 'string') {
      wire = body;
      bytes = utf8Length(body);
    } else if (body instanceof Uint8Array) {
      wire = bytesToBase64(body);
      encoding = 'base64';
      bytes = body.length;
    } else {
      return refuse(new IrisError('invalid_argument', 'body must be a string or a Uint8Array'));
    }
    const max = this.opts.maxBodyBytes ?? 65_536;
    if (bytes > max) return refuse(new IrisError('body_too_large', `body is ${bytes} bytes; the limit is ${max}`));
    const entry: OutboxEntry = { id: this.nextId(), to, body: wire, queuedAt: Date.now() };
    if (encoding) entry.encoding = encoding;
    try {
      this.outbox.add(entry);
    } catch (e) {
      return refuse(e);
    }
    const p = new Promise<Accepted>((resolve, reject) => this.waitingSends.set(entry.id, { resolve, reject }));
    this.saveOutbox();
    this.pump();
    return Object.assign(p, { id: entry.id });
  }

  /** Marks messages up to `upTo` (default: the resume point) as read; the senders get `read` receipts. Kept and sent after a reconnect if offline. */
  markRead(upTo: number = this.seq.resumePoint): void {
    checkSeq(upTo);
    if (upTo <= this.readWanted) return;
    this.readWanted = upTo;
    if (this.state === 'open') this.sendRead();
  }

  /**
   * Acknowledges messages up to `upTo` (default: the resume point) once the
   * app stored them; only needed with `autoAck: false`. Kept and sent after
   * a reconnect if offline.
   */
  ack(upTo: number = this.seq.resumePoint): void {
    checkSeq(upTo);
    if (upTo <= this.ackWanted) return;
    this.ackWanted = upTo;
    this.scheduleFlush();
  }

  /**
   * Reads a page of history: messages with `seq > after`, oldest first.
   * Pages are served one at a time, after the reconnect replay. Rejects
   * with `disconnected` if the session ends first, `busy` beyond 16 queued.
   */
  sync(opts: { after?: number; limit?: number } = {}): Promise<SyncPage> {
    const after = opts.after ?? 0;
    checkSeq(after);
    if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit >= 1 && opts.limit <= 1_000)) {
      return Promise.reject(new IrisError('invalid_argument', 'limit must be an integer in 1..1000'));
    }
    const frame: ClientFrame = { type: 'sync', after };
    if (opts.limit !== undefined) frame.limit = opts.limit;
    return this.request(frame, MAX_SYNC_QUEUE, { after, collected: new Map() });
  }

  /** Sets this user's status on all their sessions; set again after every reconnect. */
  setStatus(status: OwnStatus): void {
    if (status !== 'online' && status !== 'away' && status !== 'invisible') {
      throw new IrisError('invalid_argument', 'status must be online, away or invisible');
    }
    this.status = status;
    if (this.state === 'open') this.write({ type: 'presence', status });
  }

  /** Subscribes to users' presence (`presence` events); kept across reconnects. At most 1,000. */
  subscribe(users: string[]): void {
    const fresh = checkNames(users).filter((u) => !this.subscriptions.has(u));
    if (this.subscriptions.size + fresh.length > MAX_SUBSCRIPTIONS) {
      throw new IrisError('invalid_argument', `at most ${MAX_SUBSCRIPTIONS} subscriptions`);
    }
    for (const u of fresh) this.subscriptions.add(u);
    if (this.state === 'open' && users.length > 0) this.write({ type: 'subscribe', users: [...new Set(users)] });
  }

  /** Stops presence events for these users. */
  unsubscribe(users: string[]): void {
    const names = checkNames(users);
    for (const u of names) this.subscriptions.delete(u);
    if (this.state === 'open' && names.length > 0) this.write({ type: 'unsubscribe', users: names });
  }

  /** Adds, moves or removes contacts; resolves with the number of contacts after the change. */
  setContacts(change: { upsert?: ContactUpsert[]; remove?: string[] }): Promise<number> {
    const upsert = change.upsert ?? [];
    const remove = change.remove ?? [];
    try {
      checkNames(upsert.map((c) => c.user));
      checkNames(upsert.filter((c) => c.circle !== undefined).map((c) => c.circle as string));
      checkNames(remove);
      if (upsert.length + remove.length > MAX_LIST_ITEMS) {
        throw new IrisError('invalid_argument', `at most ${MAX_LIST_ITEMS} names per change`);
      }
    } catch (e) {
      return Promise.reject(e);
    }
    const frame: ClientFrame = { type: 'contacts' };
    if (upsert.length) frame.upsert = upsert.map((c) => (c.circle === undefined ? { user: c.user } : { user: c.user, circle: c.circle }));
    if (remove.length) frame.remove = remove;
    return this.request(frame, MAX_WAITING);
  }

  /** Sets what members of a circle may see of this user; fields left out keep their value. */
  setCirclePolicy(circle: string, policy: { presence?: boolean; last_seen?: boolean }): Promise<string> {
    if (!validName(circle)) return Promise.reject(new IrisError('invalid_name', 'circle must be 1-128 bytes without control characters'));
    const frame: ClientFrame = { type: 'circle_policy', circle };
    if (typeof policy.presence === 'boolean') frame.presence = policy.presence;
    if (typeof policy.last_seen === 'boolean') frame.last_seen = policy.last_seen;
    return this.request(frame, MAX_WAITING);
  }

  /** Tells `to` this user is typing (or stopped); dropped while offline, as typing is ephemeral. */
  typing(to: string, state: TypingState): void {
    if (!validName(to)) throw new IrisError('invalid_name', 'recipient must be 1-128 bytes without control characters');
    if (state !== 'start' && state !== 'stop') throw new IrisError('invalid_argument', 'state must be start or stop');
    if (this.state === 'open') this.write({ type: 'typing', to, state });
  }

  // ---- the shell: socket, timers, frames ----

  /** Reads the store once; sends made meanwhile queue behind what it held (older, so first). */
  private async load(): Promise<void> {
    // After the constructor returns, so that the app's handlers see errors.
    await Promise.resolve();
    try {
      const s = await this.store.load();
      this.seq = new SeqTracker(Number.isSafeInteger(s.lastSeq) && s.lastSeq >= 0 ? s.lastSeq : 0, this.opts.maxAhead ?? DEFAULT_MAX_AHEAD);
      this.savedSeq = this.seq.resumePoint;
      const stored = Array.isArray(s.outbox) ? s.outbox : [];
      this.outbox = new Outbox(this.opts.maxOutbox ?? DEFAULT_MAX_OUTBOX, [...stored, ...this.outbox.entries()]);
      for (const [id, w] of this.waitingSends) {
        if (!this.outbox.get(id)) {
          w.reject(new IrisError('outbox_full', 'the outbox restored from the store is full'));
          this.waitingSends.delete(id);
        }
      }
    } catch (e) {
      this.events.emit('error', new IrisError('invalid_argument', `the store could not be read: ${String(e)}`));
    }
    this.isLoaded = true;
    if (this.outbox.size > 0) this.saveOutbox();
  }

  /** Queues a request answered without an id; `max` bounds those of its type waiting. */
  private request<T>(frame: ClientFrame, max: number, extra?: Partial<Request>): Promise<T> {
    if (this.state !== 'open') return Promise.reject(new IrisError('disconnected', 'no session is open'));
    if (this.requests.filter((r) => r.waiter && r.frame.type === frame.type).length >= max) {
      return Promise.reject(new IrisError('busy', 'too many requests waiting'));
    }
    return new Promise<T>((resolve, reject) => {
      this.requests.push({ frame, waiter: { resolve, reject }, at: 0, ...extra });
      this.nextRequest();
    });
  }

  /** Writes the first request unless it is on the wire or waits for its retry. */
  private nextRequest(): void {
    const r = this.requests[0];
    if (!r || r.at || this.timers.request || this.state !== 'open') return;
    r.at = Date.now();
    this.write(r.frame);
  }

  /** Settles the first request if it is of this type. */
  private answer(type: ClientFrame['type'], value: unknown, err?: IrisError): boolean {
    const r = this.requests[0];
    if (r?.frame.type !== type) return false;
    this.requests.shift();
    this.requestRetries = 0;
    if (err) r.waiter?.reject(err);
    else r.waiter?.resolve(value);
    this.nextRequest();
    return true;
  }

  private async attempt(): Promise<void> {
    if (this.state === 'closed') return;
    this.setState('connecting');
    let token: string;
    try {
      token = await this.currentToken();
    } catch (e) {
      const err = e instanceof IrisError ? e : new IrisError('token_unavailable', `the token provider failed: ${String(e)}`);
      if (err.code === 'unauthorized') {
        this.stop(err, true);
        return;
      }
      this.events.emit('error', err);
      this.afterClose(1006, 'no token', undefined);
      return;
    }
    if ((this.state as ConnectionState) === 'closed') return; // closed while the provider ran
    let ws: WebSocketLike;
    try {
      ws = new this.WS(this.opts.url);
    } catch (e) {
      this.stop(new IrisError('invalid_argument', `cannot open a WebSocket: ${String(e)}`), true);
      return;
    }
    this.ws = ws;
    this.lastErrorCode = undefined;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      const hello: ClientFrame = { type: 'hello', token, resume_after: this.seq.resumePoint };
      if (this.opts.device) hello.device = this.opts.device;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws || typeof ev.data !== 'string') return;
      this.lastReceivedAt = Date.now();
      const frame = parseServerFrame(ev.data);
      if (frame) this.handle(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.dropSocket();
      this.afterClose(ev.code, ev.reason, this.lastErrorCode);
    };
    ws.onerror = () => {
      // Some implementations (Node's undici) report a refused connection
      // with an error and no close event: an error ends the socket here.
      if (this.ws !== ws) return;
      this.dropSocket();
      this.afterClose(1006, 'connection failed', this.lastErrorCode);
    };
    this.timers.open = setTimeout(() => {
      if (this.ws !== ws || this.state === 'open') return;
      this.dropSocket();
      this.afterClose(1006, 'no welcome in time', this.lastErrorCode);
    }, this.opts.openTimeoutMs ?? 15_000);
  }

  private async currentToken(): Promise<string> {
    const provider = this.opts.tokenProvider;
    const margin = this.opts.tokenRefreshMarginMs ?? DEFAULT_REFRESH_MARGIN_MS;
    if (provider) {
      const reason = this.refreshReason ?? (this.token === undefined ? 'initial' : tokenNeedsRefresh(this.token, Date.now(), margin) ? 'expiring' : undefined);
      if (reason) {
        const refused = reason === 'refused' ? this.token : undefined;
        const t = await provider({ reason });
        if (typeof t !== 'string' || t.length === 0) throw new IrisError('token_unavailable', 'the token provider gave no token');
        if (refused !== undefined && t === refused) {
          throw new IrisError('unauthorized', 'the token was refused and the provider gave the same token again');
        }
        this.token = t;
        this.refreshReason = undefined;
      }
    }
    if (!this.token) throw new IrisError('token_unavailable', 'no token');
    return this.token;
  }

  private handle(f: ServerFrame): void {
    switch (f.type) {
      case 'welcome':
        return this.onWelcome(f);
      case 'message':
        return this.onMessage(f);
      case 'synced':
        return this.onSynced(f);
      case 'accepted': {
        const entry = this.outbox.remove(f.id);
        if (!entry) return; // the answer to a retry of a message already accepted
        this.sentAt.delete(f.id);
        this.sendRetries = 0;
        this.saveOutbox();
        this.waitingSends.get(f.id)?.resolve(f);
        this.waitingSends.delete(f.id);
        this.events.emit('accepted', { ...f, to: entry.to, body: entry.body });
        this.pump();
        return;
      }
      case 'receipt':
        if (this.receipts.apply(f.msg_id, f.state)) this.events.emit('receipt', f);
        return;
      case 'presence':
        return this.events.emit('presence', f);
      case 'typing':
        return this.events.emit('typing', f);
      case 'contacts_ok':
        this.answer('contacts', f.count);
        return;
      case 'circle_policy_ok':
        this.answer('circle_policy', f.circle);
        return;
      case 'error':
        return this.onError(f);
      case 'pong':
        return;
    }
  }

  private onWelcome(w: Welcome): void {
    clearTimeout(this.timers.open);
    this.welcome = w;
    this.tokenRefusals = 0;
    this.reconnectState = onOpened(this.reconnectState, Date.now());
    this.setState('open');
    // The replay that `resume_after` asked for is the first page in flight.
    this.requests.unshift({ frame: { type: 'sync', after: this.seq.resumePoint }, after: this.seq.resumePoint, at: Date.now() });
    // An ack written just before the last socket dropped may be lost: send it again.
    this.ackSent = 0;
    this.startTimers(w.heartbeat_ms);
    this.events.emit('welcome', w);
    for (const c of this.connectWaiters.splice(0)) c.resolve(w);
    if (this.state !== 'open') return; // a handler closed the client
    this.pump();
    if (this.subscriptions.size > 0) this.write({ type: 'subscribe', users: [...this.subscriptions] });
    if (this.status) this.write({ type: 'presence', status: this.status });
    if (this.readWanted > 0) this.sendRead();
    this.scheduleFlush();
  }

  private onMessage(m: Message): void {
    const verdict = this.seq.receive(m.seq);
    const r = this.requests[0];
    // A long page is not a request without an answer.
    if (r?.at && r.frame.type === 'sync') r.at = Date.now();
    if (r?.collected && m.seq > r.after!) r.collected.set(m.seq, m);
    if (verdict !== 'new') return;
    this.events.emit('message', m);
    this.scheduleFlush();
  }

  private onSynced(s: Synced): void {
    this.events.emit('synced', s);
    this.flush();
    const r = this.requests[0];
    if (r?.frame.type !== 'sync') return;
    if (r.collected) {
      // Only the run without a gap: a live message above it is not part of the page.
      const messages: Message[] = [];
      for (let n = r.after! + 1; r.collected.has(n); n++) messages.push(r.collected.get(n)!);
      this.answer('sync', { messages, more: s.more, inbox_head: s.inbox_head });
      return;
    }
    this.requests.shift();
    this.requestRetries = 0;
    const point = this.seq.resumePoint;
    if (s.more && point > r.after!) {
      // The client's own replay continues from its resume point.
      this.requests.unshift({ frame: { type: 'sync', after: point, limit: 1_000 }, after: point, at: 0 });
    } else if (s.more) {
      this.events.emit('error', new IrisError('internal', `the replay made no progress past seq ${point}; it continues after the next reconnect`));
    }
    this.nextRequest();
  }

  private onError(f: ErrorFrame): void {
    this.lastErrorCode = f.code;
    const err = new IrisError(f.code as IrisError['code'], f.message, { ...(f.id !== undefined ? { id: f.id } : {}), fromServer: true });
    if (f.id !== undefined && this.outbox.get(f.id)) {
      if (isRetryableSendError(f.code)) {
        // Resent with the same id after a backoff (the server answers a
        // retry with the original msg_id); no later message is written
        // before it, so that they are stored in order.
        this.sentAt.delete(f.id);
        this.holdUntil = Date.now() + 100 + backoffDelay(this.policy, this.sendRetries++, this.random());
        this.pump();
        return;
      }
      this.outbox.remove(f.id);
      this.sentAt.delete(f.id);
      this.saveOutbox();
      this.waitingSends.get(f.id)?.reject(err);
      this.waitingSends.delete(f.id);
      this.pump();
      return;
    }
    // Decided by code and by the one request on the wire (answers to
    // requests carry no id). An id-less `rate_limited` may be about any
    // frame (an ack, a ping), so it is not taken for the request's answer:
    // a request left unanswered for heartbeat_ms ends the session instead.
    const r = this.requests[0];
    if (r?.at && f.id === undefined) {
      if (f.code === 'unavailable' && r.frame.type === 'sync') {
        // The page could not be read: ask again after a backoff.
        r.at = 0;
        this.timers.request = setTimeout(() => {
          this.timers.request = undefined;
          this.nextRequest();
        }, 100 + backoffDelay(this.policy, this.requestRetries++, this.random()));
        return;
      }
      if ((f.code === 'unavailable' || (f.code === 'forbidden' && r.frame.type === 'contacts')) && this.answer(r.frame.type, 0, err)) return;
    }
    this.events.emit('error', err);
  }

  /**
   * Writes the queued frames, then the oldest unsent outbox entries while
   * fewer than MAX_IN_FLIGHT wait for an answer, as far as the frame budget
   * allows; otherwise comes back when it will.
   */
  private pump(): void {
    if (this.state !== 'open') return;
    const now = Date.now();
    while (this.queue.length > 0 && this.sendBudget.take(now)) this.raw(this.queue.shift()!);
    let blocked = this.queue.length > 0;
    const hold = this.holdUntil - now;
    if (!blocked && hold <= 0) {
      for (const e of this.outbox.entries()) {
        if (this.sentAt.size >= MAX_IN_FLIGHT) break;
        if (!this.sentAt.has(e.id) && !this.transmit(e, now)) {
          blocked = true;
          break;
        }
      }
    }
    if (blocked || hold > 0) {
      clearTimeout(this.timers.pump);
      this.timers.pump = setTimeout(() => this.pump(), blocked ? this.sendBudget.waitMs(now) : hold);
    }
  }

  /** Writes a `send` if the budget allows. */
  private transmit(e: OutboxEntry, now: number): boolean {
    if (!this.sendBudget.take(now)) return false;
    const frame: ClientFrame = { type: 'send', id: e.id, to: e.to, body: e.body };
    if (e.encoding) frame.encoding = e.encoding;
    this.sentAt.set(e.id, now);
    this.raw(frame);
    return true;
  }

  /** Queues a frame behind the frame budget (typing is dropped when frames wait: it is ephemeral). */
  private write(frame: ClientFrame): void {
    if (!this.ws || this.state !== 'open' || (frame.type === 'typing' && this.queue.length > 0)) return;
    this.queue.push(frame);
    this.pump();
  }

  private raw(frame: ClientFrame): void {
    try {
      this.ws?.send(JSON.stringify(frame));
    } catch {
      // The socket is closing; its close event brings the reconnect, and
      // what must be resent is still in the outbox.
    }
  }

  private sendRead(): void {
    if (this.readWanted <= this.readSent) return;
    this.readSent = this.readWanted;
    this.write({ type: 'read', up_to: this.readWanted });
  }

  /** Coalesces the resume point's save and the `ack` of the messages of FLUSH_MS (or up to `synced`) into one. */
  private scheduleFlush(): void {
    if (this.timers.flush === undefined) this.timers.flush = setTimeout(() => this.flush(), FLUSH_MS);
  }

  private flush(): void {
    clearTimeout(this.timers.flush);
    this.timers.flush = undefined;
    const auto = this.opts.autoAck ?? true;
    if (auto) this.ackWanted = Math.max(this.ackWanted, this.seq.resumePoint);
    // resume_after is what the app has stored: with autoAck false, what it acknowledged.
    const point = auto ? this.seq.resumePoint : Math.min(this.seq.resumePoint, this.ackWanted);
    if (point > this.savedSeq) {
      this.savedSeq = point;
      this.guardStore(() => this.store.saveLastSeq(point));
    }
    if (this.ackWanted > this.ackSent && this.state === 'open') {
      this.ackSent = this.ackWanted;
      this.write({ type: 'ack', up_to: this.ackSent });
    }
  }

  private saveOutbox(): void {
    // Before the store was read, a save would overwrite what it holds.
    if (!this.isLoaded) return;
    const entries = this.outbox.entries();
    this.guardStore(() => this.store.saveOutbox(entries));
  }

  private guardStore(save: () => void | Promise<void>): void {
    const report = (e: unknown) => this.events.emit('error', new IrisError('invalid_argument', `the store failed: ${String(e)}`));
    try {
      const r = save();
      if (r && typeof (r as Promise<void>).catch === 'function') (r as Promise<void>).catch(report);
    } catch (e) {
      report(e);
    }
  }

  private startTimers(heartbeatMs: number): void {
    const hb = Math.max(1_000, heartbeatMs);
    this.lastReceivedAt = Date.now();
    clearInterval(this.timers.tick);
    // A ping every half interval keeps the session alive (the node closes
    // after two silent intervals); no answer for a whole interval means
    // the connection is gone even if the socket has not noticed.
    this.timers.tick = setInterval(() => this.tick(hb), hb / 2);
    const margin = this.opts.tokenRefreshMarginMs ?? DEFAULT_REFRESH_MARGIN_MS;
    const delay = this.opts.tokenProvider && this.token ? tokenRefreshDelay(this.token, Date.now(), margin) : undefined;
    clearTimeout(this.timers.refresh);
    if (delay !== undefined && delay < 2 ** 31 - 1) {
      this.timers.refresh = setTimeout(() => {
        // Ready for the next connection; the open session is not affected.
        Promise.resolve(this.opts.tokenProvider!({ reason: 'expiring' }))
          .then((t) => {
            if (typeof t === 'string' && t) this.token = t;
          })
          .catch(() => {
            // Asked again when the next connection needs it.
          });
      }, delay);
    }
  }

  private tick(hb: number): void {
    const now = Date.now();
    const r = this.requests[0];
    const stuck = now - this.lastReceivedAt > hb ? 'no answer to ping' : r?.at && now - r.at > hb ? 'no answer to a request' : '';
    if (stuck) {
      this.dropSocket();
      this.afterClose(1006, stuck, undefined);
      return;
    }
    this.write({ type: 'ping' });
    const retryMs = this.opts.sendRetryMs ?? 10_000;
    for (const e of this.outbox.entries()) {
      const at = this.sentAt.get(e.id);
      if (at !== undefined && now - at >= retryMs && !this.transmit(e, now)) break;
    }
    this.pump();
  }

  /** Detaches and closes the current socket and clears the session's timers. */
  private dropSocket(): void {
    const ws = this.ws;
    this.ws = undefined;
    clearTimeout(this.timers.open);
    clearInterval(this.timers.tick);
    clearTimeout(this.timers.refresh);
    clearTimeout(this.timers.pump);
    clearTimeout(this.timers.request);
    this.timers.request = undefined;
    this.queue.length = 0;
    this.holdUntil = 0;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close();
      } catch {
        // Already closed.
      }
    }
  }

  private failWaiting(err: IrisError): void {
    for (const r of this.requests.splice(0)) r.waiter?.reject(err);
  }

  private afterClose(code: number, reason: string, lastErrorCode: string | undefined): void {
    if (this.state === 'closed') return;
    this.sentAt.clear();
    this.readSent = 0;
    this.failWaiting(new IrisError('disconnected', `the session ended (${code} ${reason})`));
    // A session refused by the per-user limit (1008 after rate_limited) or
    // for a deleted tenant (1008 after forbidden) is not a refused token.
    const refused =
      (code === 1008 && lastErrorCode !== 'rate_limited' && lastErrorCode !== 'forbidden') ||
      lastErrorCode === 'unauthorized';
    if (refused) this.tokenRefusals++;
    const { state, action } = onClosed(
      this.reconnectState,
      { code, reason, lastErrorCode, canRefreshToken: this.opts.tokenProvider !== undefined, tokenRefusals: this.tokenRefusals },
      this.policy,
      Date.now(),
      this.random(),
    );
    this.reconnectState = state;
    if (action.kind === 'stop') {
      this.events.emit('disconnect', { code, reason });
      this.stop(new IrisError(action.code, action.reason), true);
      return;
    }
    if (action.refreshToken) this.refreshReason = 'refused';
    this.setState('connecting');
    this.events.emit('disconnect', { code, reason, retryInMs: action.delayMs });
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => void this.attempt(), action.delayMs);
  }

  private stop(err: IrisError, report: boolean): void {
    this.flush();
    this.dropSocket();
    clearTimeout(this.timers.reconnect);
    this.setState('closed');
    this.failWaiting(err);
    for (const c of this.connectWaiters.splice(0)) c.reject(err);
    for (const w of this.waitingSends.values()) w.reject(err);
    this.waitingSends.clear();
    if (report) this.events.emit('error', err);
  }

  private setState(s: ConnectionState): void {
    if (this.state === s) return;
    this.state = s;
    this.events.emit('state', s);
  }
}

function checkSeq(n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new IrisError('invalid_argument', 'a seq is a non-negative integer');
}

function checkNames(names: unknown): string[] {
  if (!Array.isArray(names)) throw new IrisError('invalid_argument', 'expected an array of names');
  if (names.length > MAX_LIST_ITEMS) throw new IrisError('invalid_argument', `at most ${MAX_LIST_ITEMS} names at once`);
  for (const n of names) {
    if (!validName(n)) throw new IrisError('invalid_name', `not a valid name: ${JSON.stringify(n)}`);
  }
  return names as string[];
}
