// The Iris client protocol (v1), JSON encoding: the frames of
// docs/protocol.md as TypeScript types, and a lenient parser for server
// frames (unknown fields and unknown frame types are ignored, as the
// protocol asks of clients).

/** Error codes the server sends (`error.code`). */
export type ServerErrorCode =
  | 'unauthorized'
  | 'bad_frame'
  | 'unknown_type'
  | 'too_large'
  | 'rate_limited'
  | 'forbidden'
  | 'unavailable'
  | 'internal';

/** A status a user can set for themselves. */
export type OwnStatus = 'online' | 'away' | 'invisible';
/** A status a viewer sees. */
export type PresenceStatus = 'online' | 'away' | 'offline';
/** Receipt states. */
export type ReceiptState = 'delivered' | 'read';
/** Typing states. */
export type TypingState = 'start' | 'stop';

/** `welcome`: the session is open. */
export interface Welcome {
  type: 'welcome';
  user: string;
  session: string;
  node: string;
  region: string;
  heartbeat_ms: number;
  inbox_head: number;
}

/** `accepted`: a `send` is durably stored. */
export interface Accepted {
  type: 'accepted';
  id: string;
  msg_id: string;
  ts: number;
}

/** `message`: one message of this user's inbox. */
export interface Message {
  type: 'message';
  seq: number;
  msg_id: string;
  from: string;
  body: string;
  ts: number;
  /** `"base64"` when `body` is base64 of bytes that are not UTF-8. */
  encoding?: 'base64';
}

/** `receipt`: a message this user sent was delivered or read. */
export interface Receipt {
  type: 'receipt';
  msg_id: string;
  by: string;
  state: ReceiptState;
}

/** `synced`: the end of a replay or a `sync` page. */
export interface Synced {
  type: 'synced';
  inbox_head: number;
  more: boolean;
}

/** `presence`: what this viewer may see of a user. */
export interface Presence {
  type: 'presence';
  user: string;
  status: PresenceStatus;
  last_seen?: number;
}

/** `typing`: someone types to this user. */
export interface Typing {
  type: 'typing';
  from: string;
  state: TypingState;
}

/** `pong`: the answer to `ping`. */
export interface Pong {
  type: 'pong';
  ts?: number;
}

/** `error`: a refused frame. */
export interface ErrorFrame {
  type: 'error';
  code: ServerErrorCode | string;
  message: string;
  id?: string;
}

/** `contacts_ok`: a contacts change is stored. */
export interface ContactsOk {
  type: 'contacts_ok';
  count: number;
}

/** `circle_policy_ok`: a circle policy is stored. */
export interface CirclePolicyOk {
  type: 'circle_policy_ok';
  circle: string;
}

/** Every server frame this client understands. */
export type ServerFrame =
  | Welcome
  | Accepted
  | Message
  | Receipt
  | Synced
  | Presence
  | Typing
  | Pong
  | ErrorFrame
  | ContactsOk
  | CirclePolicyOk;

/** A contact to add or move (`circle` defaults to `contacts` on the server). */
export interface ContactUpsert {
  user: string;
  circle?: string;
}

/** Client frames. */
export type ClientFrame =
  | { type: 'hello'; token: string; device?: string; resume_after?: number }
  | { type: 'send'; id: string; to: string; body: string; encoding?: 'base64' }
  | { type: 'ack'; up_to: number }
  | { type: 'read'; up_to: number }
  | { type: 'sync'; after?: number; limit?: number }
  | { type: 'presence'; status: OwnStatus }
  | { type: 'subscribe'; users: string[] }
  | { type: 'unsubscribe'; users: string[] }
  | { type: 'contacts'; upsert?: ContactUpsert[]; remove?: string[] }
  | { type: 'circle_policy'; circle: string; presence?: boolean; last_seen?: boolean }
  | { type: 'typing'; to: string; state: TypingState }
  | { type: 'ping'; ts?: number };

const isStr = (v: unknown): v is string => typeof v === 'string';
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * Parses one text frame from the server. Returns `null` for a frame that is
 * not JSON, not an object, of an unknown type, or missing a field this
 * client needs (the protocol asks clients to be lenient: such frames are
 * skipped, never fatal).
 */
export function parseServerFrame(text: string): ServerFrame | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const f = v as Record<string, unknown>;
  switch (f.type) {
    case 'welcome':
      return isStr(f.user) && isNum(f.heartbeat_ms) && isNum(f.inbox_head) ? (f as unknown as Welcome) : null;
    case 'accepted':
      return isStr(f.id) && isStr(f.msg_id) && isNum(f.ts) ? (f as unknown as Accepted) : null;
    case 'message':
      return isNum(f.seq) && isStr(f.msg_id) && isStr(f.from) && isStr(f.body) && isNum(f.ts)
        ? (f as unknown as Message)
        : null;
    case 'receipt':
      return isStr(f.msg_id) && isStr(f.by) && (f.state === 'delivered' || f.state === 'read')
        ? (f as unknown as Receipt)
        : null;
    case 'synced':
      return isNum(f.inbox_head) && typeof f.more === 'boolean' ? (f as unknown as Synced) : null;
    case 'presence':
      return isStr(f.user) && isStr(f.status) ? (f as unknown as Presence) : null;
    case 'typing':
      return isStr(f.from) && (f.state === 'start' || f.state === 'stop') ? (f as unknown as Typing) : null;
    case 'pong':
      return f as unknown as Pong;
    case 'error':
      return isStr(f.code) ? ({ ...f, message: isStr(f.message) ? f.message : '' } as ErrorFrame) : null;
    case 'contacts_ok':
      return isNum(f.count) ? (f as unknown as ContactsOk) : null;
    case 'circle_policy_ok':
      return isStr(f.circle) ? (f as unknown as CirclePolicyOk) : null;
    default:
      return null;
  }
}

const utf8 = new TextEncoder();

/** Byte length of a string in UTF-8. */
export function utf8Length(s: string): number {
  return utf8.encode(s).length;
}

/**
 * A user, tenant or circle name the protocol accepts: 1–128 bytes of
 * UTF-8 with no control characters.
 */
export function validName(s: unknown): s is string {
  if (typeof s !== 'string' || s.length === 0) return false;
  // Control characters: C0, DEL and C1 (Rust's char::is_control).
  if (/[\u0000-\u001f\u007f-\u009f]/.test(s)) return false;
  const n = utf8Length(s);
  return n >= 1 && n <= 128;
}

/** Decodes standard base64 (with padding) to bytes. */
export function base64ToBytes(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Encodes bytes as standard base64 with padding. */
export function bytesToBase64(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]!);
  return btoa(bin);
}

/** The bytes of a message body, whatever its encoding. */
export function messageBytes(m: Pick<Message, 'body' | 'encoding'>): Uint8Array {
  return m.encoding === 'base64' ? base64ToBytes(m.body) : utf8.encode(m.body);
}
