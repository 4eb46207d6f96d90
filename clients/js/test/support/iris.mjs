// Runs the real `iris` binary for tests: its own data directory, loopback
// ports read back from its ready line, kill -9 and restart on the same
// ports. The binary's path comes from IRIS_BIN.

import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHmac } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The iris binary under test. */
export function irisBin() {
  const bin = process.env.IRIS_BIN;
  if (!bin) throw new Error('set IRIS_BIN to the path of the iris binary (cargo build --bin iris)');
  return bin;
}

/** Polls `check` until it returns a truthy value or the deadline passes; never a fixed sleep. */
export async function waitFor(check, { timeoutMs = 15_000, what = 'condition', intervalMs = 20 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function config({ ws, http, extra }) {
  return `[listen]
ws = "127.0.0.1:${ws}"
http = "127.0.0.1:${http}"
quic = "off"
metrics = "off"
[limits]
heartbeat_ms = 2000
${extra ?? ''}
`;
}

/** A running node. */
export class IrisNode {
  constructor(dir, { extra, ownsDir = true } = {}) {
    this.dir = dir;
    this.extra = extra;
    this.ownsDir = ownsDir;
    this.wsPort = 0;
    this.httpPort = 0;
    this.child = undefined;
    this.log = [];
  }

  /** Starts a node in a fresh temporary data directory. */
  static async start(opts = {}) {
    const node = new IrisNode(mkdtempSync(join(tmpdir(), 'iris-js-')), opts);
    await node.run();
    return node;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.wsPort}/v1/ws`;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  /** Starts the binary (again, on the same ports once they are known). */
  async run() {
    const configFile = join(this.dir, 'test.toml');
    writeFileSync(configFile, config({ ws: this.wsPort, http: this.httpPort, extra: this.extra }));
    const child = spawn(irisBin(), ['--data-dir', this.dir, '--config', configFile], {
      env: { ...process.env, IRIS_LOG: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    child.stderr.on('data', (d) => this.log.push(String(d)));
    const ready = await new Promise((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => reject(new Error(`iris did not report ready: ${this.log.join('')}`)), 30_000);
      child.stdout.on('data', (d) => {
        buf += String(d);
        const line = buf.split('\n').find((l) => l.startsWith('iris ready:'));
        if (line) {
          clearTimeout(timer);
          resolve(line);
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`iris exited with ${code} before ready: ${this.log.join('')}`));
      });
    });
    this.wsPort = Number(/ws:\/\/127\.0\.0\.1:(\d+)\//.exec(ready)[1]);
    this.httpPort = Number(/api http:\/\/127\.0\.0\.1:(\d+)\//.exec(ready)[1]);
    this.secret = Buffer.from(readFileSync(join(this.dir, 'auth', 'dev-hs256.key'), 'utf8').trim(), 'base64');
  }

  /** Kills the process with SIGKILL and waits for it to be gone. */
  async kill9() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
  }

  /** Stops the node and removes its data directory. */
  async stop() {
    await this.kill9();
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** A token from the node's own CLI: `iris token` prints it as its last line. */
  async cliToken(user, tenant) {
    const { stdout } = await run(irisBin(), ['token', '--user', user, '--tenant', tenant, '--data-dir', this.dir]);
    return stdout.trim().split('\n').pop();
  }

  /** A token signed here with the node's dev key (HS256), with `ttlSecs` to live. */
  token(user, tenant, ttlSecs = 3600) {
    return signHs256(this.secret, { sub: user, tenant, exp: Math.floor(Date.now() / 1000) + ttlSecs });
  }
}

/** Signs claims as an HS256 JWT. */
export function signHs256(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  const sig = createHmac('sha256', secret).update(head).digest('base64url');
  return `${head}.${sig}`;
}

/** Records every event of a client, for assertions. */
export function record(client) {
  const r = { messages: [], receipts: [], presence: [], typing: [], accepted: [], errors: [], disconnects: [], welcomes: [] };
  client.on('message', (m) => r.messages.push(m));
  client.on('receipt', (x) => r.receipts.push(x));
  client.on('presence', (x) => r.presence.push(x));
  client.on('typing', (x) => r.typing.push(x));
  client.on('accepted', (x) => r.accepted.push(x));
  client.on('error', (x) => r.errors.push(x));
  client.on('disconnect', (x) => r.disconnects.push(x));
  client.on('welcome', (x) => r.welcomes.push(x));
  return r;
}

/** Fast reconnects for tests. */
export const FAST = { backoff: { baseMs: 50, maxMs: 400, stableMs: 1000 } };
