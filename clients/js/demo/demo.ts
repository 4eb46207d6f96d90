// The chat-and-presence demo served by `iris` at /demo in development mode.
// It uses nothing but the package (and the DOM).

import { IrisClient, IrisError, LocalStorageStore, type Presence } from '@iris-chat/client';

/** One line of a conversation. */
interface Line {
  /** The client id (mine) or `seq:N` (received). */
  key: string;
  peer: string;
  mine: boolean;
  body: string;
  ts: number;
  msgId?: string;
  state: 'pending' | 'sent' | 'delivered' | 'read' | 'failed';
}

/** Most lines this page keeps. */
const MAX_LINES = 2_000;
/** Most sent lines kept in localStorage across reloads. */
const MAX_SAVED_SENT = 500;
/** Messages per history page. */
const HISTORY_PAGE = 50;
/** History pages read at most per scroll to the top. */
const MAX_PAGES_PER_SCROLL = 5;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function readJson<T>(key: string, fallback: T): T {
  try {
    const v = localStorage.getItem(key);
    return v === null ? fallback : (JSON.parse(v) as T);
  } catch {
    return fallback;
  }
}

async function fetchToken(user: string): Promise<{ token: string; ws_port: number | null }> {
  const r = await fetch('/demo/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user }) });
  const j = (await r.json()) as { token?: string; ws_port?: number | null; error?: string };
  if (!r.ok || !j.token) throw new Error(j.error ?? `token endpoint answered ${r.status}`);
  return { token: j.token, ws_port: j.ws_port ?? null };
}

const rank = { failed: -1, pending: 0, sent: 1, delivered: 2, read: 3 } as const;

async function start(me: string): Promise<void> {
  const ns = `iris-demo:${me}`;
  const first = await fetchToken(me);
  if (!first.ws_port) throw new Error('the node has no WebSocket listener');
  let initial: string | undefined = first.token;
  const client = new IrisClient({
    url: `ws://${location.hostname}:${first.ws_port}/v1/ws`,
    tokenProvider: async () => {
      const t = initial;
      initial = undefined;
      return t ?? (await fetchToken(me)).token;
    },
    // The resume point and the outbox survive reloads: a reload replays only
    // what came since, and older messages are read with sync on scroll.
    store: new LocalStorageStore(ns),
    device: 'demo',
  });

  const lines = new Map<string, Line>();
  const byMsgId = new Map<string, Line>();
  const contacts = new Map<string, Presence | undefined>(readJson<string[]>(`${ns}:contacts`, []).map((u) => [u, undefined]));
  const typingFrom = new Map<string, number>();
  let active: string | undefined = [...contacts.keys()][0];

  const saveSent = () => {
    const sent = [...lines.values()].filter((l) => l.mine && l.state !== 'pending').slice(-MAX_SAVED_SENT);
    localStorage.setItem(`${ns}:sent`, JSON.stringify(sent));
  };
  const addLine = (l: Line) => {
    lines.set(l.key, l);
    if (l.msgId) byMsgId.set(l.msgId, l);
    while (lines.size > MAX_LINES) {
      const oldest = lines.keys().next().value as string;
      byMsgId.delete(lines.get(oldest)!.msgId ?? '');
      lines.delete(oldest);
    }
  };
  for (const l of readJson<Line[]>(`${ns}:sent`, [])) addLine(l);
  // Messages typed before a reload and not yet accepted come back from the store.
  await client.whenLoaded();
  for (const e of client.pending()) addLine({ key: e.id, peer: e.to, mine: true, body: e.body, ts: e.queuedAt, state: 'pending' });

  // History below the stored resume point is read page by page with sync:
  // every seq from `oldest` up is loaded.
  await client.whenLoaded();
  let oldest = client.resumePoint + 1;
  let loadingOlder = false;
  const loadOlder = async (): Promise<void> => {
    if (loadingOlder || oldest <= 1 || client.connectionState !== 'open') return;
    loadingOlder = true;
    try {
      const shownBefore = [...lines.values()].filter((l) => l.peer === active).length;
      for (let i = 0; i < MAX_PAGES_PER_SCROLL && oldest > 1; i++) {
        const after = Math.max(0, oldest - 1 - HISTORY_PAGE);
        const page = await client.sync({ after, limit: oldest - 1 - after });
        for (const m of page.messages) {
          if (!lines.has(`seq:${m.seq}`)) {
            addLine({ key: `seq:${m.seq}`, peer: m.from, mine: false, body: m.encoding === 'base64' ? '(binary)' : m.body, ts: m.ts, msgId: m.msg_id, state: 'read' });
          }
        }
        oldest = after + 1;
        if ([...lines.values()].filter((l) => l.peer === active).length > shownBefore) break;
      }
    } catch (e) {
      console.warn('history:', (e as IrisError).code);
    } finally {
      loadingOlder = false;
    }
    render(true);
  };

  const render = (keepScroll = false) => {
    const ul = $('contacts');
    ul.replaceChildren(
      ...[...contacts].map(([user, p]) => {
        const li = document.createElement('li');
        li.className = `contact${user === active ? ' active' : ''}`;
        li.dataset.user = user;
        li.dataset.status = p?.status ?? 'unknown';
        const dot = document.createElement('span');
        dot.className = `dot ${p?.status ?? ''}`;
        const name = document.createElement('span');
        name.textContent = user;
        const seen = document.createElement('span');
        seen.className = 'seen';
        seen.textContent = p?.status === 'offline' && p.last_seen ? `seen ${new Date(p.last_seen).toLocaleTimeString()}` : (p?.status ?? '');
        li.append(dot, name, seen);
        li.onclick = () => {
          active = user;
          client.markRead();
          render();
        };
        return li;
      }),
    );
    const log = $('log');
    const fromBottom = log.scrollHeight - log.scrollTop;
    const shown = [...lines.values()].filter((l) => l.peer === active).sort((a, b) => a.ts - b.ts);
    const older = document.createElement('button');
    older.type = 'button';
    older.className = 'older';
    older.dataset.testid = 'older';
    older.textContent = oldest > 1 ? '↑ older messages' : 'the beginning of the history';
    older.disabled = oldest <= 1;
    older.onclick = () => void loadOlder();
    log.replaceChildren(
      older,
      ...shown.map((l) => {
        const div = document.createElement('div');
        div.className = `msg${l.mine ? ' mine' : ''}`;
        div.dataset.state = l.state;
        div.dataset.mine = String(l.mine);
        const text = document.createElement('span');
        text.className = 'body';
        text.textContent = l.body;
        const meta = document.createElement('span');
        meta.className = 'meta';
        const tick = document.createElement('span');
        tick.className = `tick ${l.state}`;
        tick.textContent = l.mine ? { pending: '🕓', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '✗' }[l.state] : '';
        tick.title = l.state;
        meta.append(new Date(l.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }), ' ', tick);
        div.append(text, meta);
        return div;
      }),
    );
    // Older lines come in above: keep the view where it was.
    log.scrollTop = keepScroll ? log.scrollHeight - fromBottom : log.scrollHeight;
    const typing = active !== undefined && (typingFrom.get(active) ?? 0) > Date.now();
    $('typing').textContent = typing ? `${active} is typing…` : '';
    ($('text') as HTMLInputElement).disabled = !active;
    ($('send') as HTMLButtonElement).disabled = !active;
  };

  client.on('state', (s) => {
    const conn = $('conn');
    conn.textContent = s === 'open' ? 'connected' : s === 'connecting' ? 'reconnecting…' : s;
    conn.className = `conn ${s}`;
  });
  client.on('message', (m) => {
    addLine({ key: `seq:${m.seq}`, peer: m.from, mine: false, body: m.encoding === 'base64' ? '(binary)' : m.body, ts: m.ts, msgId: m.msg_id, state: 'read' });
    typingFrom.delete(m.from);
    if (!contacts.has(m.from)) addContact(m.from);
    if (m.from === active && document.visibilityState === 'visible') client.markRead();
    render();
  });
  client.on('accepted', (a) => {
    let l = lines.get(a.id);
    if (!l) {
      l = { key: a.id, peer: a.to, mine: true, body: a.body, ts: a.ts, state: 'sent' };
      addLine(l);
    }
    if (rank[l.state] < rank.sent) l.state = 'sent';
    l.msgId = a.msg_id;
    l.ts = a.ts;
    byMsgId.set(a.msg_id, l);
    saveSent();
    render();
  });
  client.on('receipt', (r) => {
    const l = byMsgId.get(r.msg_id);
    if (l && rank[r.state] > rank[l.state]) {
      l.state = r.state;
      saveSent();
      render();
    }
  });
  client.on('presence', (p) => {
    if (contacts.has(p.user)) contacts.set(p.user, p);
    render();
  });
  client.on('typing', (t) => {
    if (t.state === 'start') typingFrom.set(t.from, Date.now() + 6_000);
    else typingFrom.delete(t.from);
    render();
    setTimeout(render, 6_100);
  });
  client.on('error', (e) => console.warn('iris:', e.code, e.message));

  const addContact = (user: string) => {
    contacts.set(user, contacts.get(user));
    localStorage.setItem(`${ns}:contacts`, JSON.stringify([...contacts.keys()]));
    active ??= user;
    client.subscribe([user]);
    client.setContacts({ upsert: [{ user }] }).catch((e: IrisError) => console.warn('contacts:', e.code));
    render();
  };

  $('me').textContent = `you are ${me}`;
  $('login').classList.add('hidden');
  $('app').classList.remove('hidden');
  $('add-form').onsubmit = (ev) => {
    ev.preventDefault();
    const input = $('add') as HTMLInputElement;
    const user = input.value.trim();
    if (user && user !== me) addContact(user);
    input.value = '';
  };
  ($('status') as HTMLSelectElement).onchange = (ev) => client.setStatus((ev.target as HTMLSelectElement).value as 'online' | 'away' | 'invisible');
  let typingSentAt = 0;
  ($('text') as HTMLInputElement).oninput = () => {
    if (active && Date.now() - typingSentAt > 3_000) {
      typingSentAt = Date.now();
      client.typing(active, 'start');
    }
  };
  $('compose').onsubmit = (ev) => {
    ev.preventDefault();
    const input = $('text') as HTMLInputElement;
    const body = input.value;
    if (!active || !body) return;
    const to = active;
    const p = client.send(to, body);
    input.value = '';
    if (p.id) addLine({ key: p.id, peer: to, mine: true, body, ts: Date.now(), state: 'pending' });
    typingSentAt = 0;
    client.typing(to, 'stop');
    p.catch((e: IrisError) => {
      const l = lines.get(p.id);
      if (l) l.state = 'failed';
      console.warn('send:', e.code, e.message);
      render();
    });
    render();
  };
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && active) client.markRead();
  });

  if (contacts.size > 0) client.subscribe([...contacts.keys()]);
  render();
  $('log').onscroll = () => {
    if ($('log').scrollTop < 10) void loadOlder();
  };
  await client.connect();
  await loadOlder();
}

const saved = sessionStorage.getItem('iris-demo:user');
const boot = (user: string) =>
  start(user).catch((e: unknown) => {
    $('login').classList.remove('hidden');
    $('app').classList.add('hidden');
    $('login').querySelector('p')!.textContent = `Could not start: ${String(e)}`;
  });
$('login-form').onsubmit = (ev) => {
  ev.preventDefault();
  const user = ($('user') as HTMLInputElement).value.trim();
  if (!user) return;
  sessionStorage.setItem('iris-demo:user', user);
  void boot(user);
};
if (saved) void boot(saved);
