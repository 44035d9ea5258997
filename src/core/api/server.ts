// The operator's control API: HTTP/1.1 with JSON bodies on a UNIX socket
// (mode 0600: only its owner may connect), served by Node's own http server
// in the core. The same endpoints serve `splitvm run` (a VM) and
// `splitvm device … --socket` (a vhost-user backend), each a ControlTarget.
//   GET  /vm                       state, uptime, resources, every device
//   PUT  /vm/state                 {"state":"paused"|"running"}
//   POST /vm/stop                  stops the guest and shuts the devices down
//   POST /devices/NAME/restart     a fresh device process resumes the queues
//   GET  /metrics                  Prometheus text format
// Every request is validated; a bad one gets a 4xx and {"error": "<one sentence>"}.
import fs from 'node:fs';
import http from 'node:http';
import type { Logger } from 'pino';
import { RestartRefused, type DeviceInfo } from '../supervisor/device-process.js';
import { coreMemoryFamily, deviceFamilies, openCoreMemoryFile, render, type MetricFamily } from './metrics.js';

export type VmState = 'running' | 'paused' | 'stopping';

/** A supervised device as the API steers it. */
export interface ControlledDevice {
  readonly name: string;
  info(): DeviceInfo;
  stats(): Promise<Record<string, number> | null>;
  restart(): Promise<void>;
}

export interface ControlTarget {
  readonly state: VmState;
  /** GET /vm's fields besides state and devices (uptime, vCPUs, memory, …). */
  summary(): Record<string, unknown>;
  readonly devices: readonly ControlledDevice[];
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Begins a clean stop; the owner exits once it is done. */
  stop(): void;
  /** Metric families of the target's own (vCPU exits, …), besides the devices' and the core's memory. */
  metrics(): MetricFamily[];
}

/** Bodies larger than this are refused: every request's body is a small JSON object. */
const MAX_BODY_BYTES = 4096;

/** The socket cannot be made (its path is taken by something else, its folder is missing or not ours). */
export class ApiSocketError extends Error {}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export interface ApiServer {
  readonly path: string;
  close(): Promise<void>;
}

/** Listens on `path` (created 0600; a stale socket there is replaced, anything else refused). */
export async function startApiServer(path: string, target: ControlTarget, log: Logger): Promise<ApiServer> {
  if (fs.existsSync(path)) {
    if (!fs.lstatSync(path).isSocket()) throw new ApiSocketError(`--api-socket ${path} exists and is not a socket`);
    fs.unlinkSync(path); // a stale socket of an earlier run
  }
  openCoreMemoryFile();
  const server = http.createServer((req, res) => {
    handle(req, target)
      .then(({ status, body, type, after }) => {
        res.writeHead(status, { 'content-type': type ?? 'application/json' });
        res.end(typeof body === 'string' ? body : JSON.stringify(body) + '\n', after);
      })
      .catch((e: Error) => {
        const status = e instanceof HttpError ? e.status : 500;
        if (status === 500) log.error({ err: e.message, method: req.method, url: req.url }, 'control API request failed');
        res.writeHead(status, { 'content-type': 'application/json', ...(e instanceof HttpError ? e.headers : {}) });
        res.end(JSON.stringify({ error: e.message }) + '\n');
      });
  });
  // The socket is created with no access for group and others: no window in which another user could connect.
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new ApiSocketError(`cannot listen on --api-socket ${path}: ${e.code ?? e.message}`)));
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(umask);
  }
  fs.chmodSync(path, 0o600);
  log.info({ socket: path }, 'control API listening');
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        try {
          fs.rmSync(path, { force: true });
        } catch {
          // A sealed core may not remove files: its launcher does, once the core is gone.
        }
      }),
  };
}

interface Reply {
  status: number;
  body: unknown;
  type?: string;
  /** Runs once the reply is written (POST /vm/stop stops only then). */
  after?: () => void;
}

const ROUTES: { pattern: RegExp; methods: string[] }[] = [
  { pattern: /^\/vm$/, methods: ['GET'] },
  { pattern: /^\/vm\/state$/, methods: ['PUT'] },
  { pattern: /^\/vm\/stop$/, methods: ['POST'] },
  { pattern: /^\/devices\/[^/]+\/restart$/, methods: ['POST'] },
  { pattern: /^\/metrics$/, methods: ['GET'] },
];

async function handle(req: http.IncomingMessage, target: ControlTarget): Promise<Reply> {
  const method = req.method ?? 'GET';
  const url = new URL(req.url ?? '/', 'http://localhost');
  const path = url.pathname;
  const route = ROUTES.find((r) => r.pattern.test(path));
  if (!route) throw new HttpError(404, `There is no endpoint ${path}.`);
  if (!route.methods.includes(method)) throw new HttpError(405, `${path} takes ${route.methods.join(' or ')}, not ${method}.`, { allow: route.methods.join(', ') });
  const body = await readBody(req);
  if (method !== 'PUT' && body.length > 0) throw new HttpError(400, `${method} ${path} takes no body.`);

  if (path === '/vm') return { status: 200, body: describe(target) };
  if (path === '/metrics') return { status: 200, body: await metrics(target), type: 'text/plain; version=0.0.4; charset=utf-8' };
  if (path === '/vm/state') {
    const wanted = parseState(body);
    if (target.state === 'stopping') throw new HttpError(409, 'The VM is stopping.');
    if (wanted === 'paused') await target.pause();
    else await target.resume();
    return { status: 200, body: { state: target.state } };
  }
  if (path === '/vm/stop') {
    if (target.state === 'stopping') throw new HttpError(409, 'The VM is already stopping.');
    return { status: 202, body: { state: 'stopping' }, after: () => target.stop() };
  }
  const name = decodeURIComponent(path.split('/')[2]!);
  const device = target.devices.find((d) => d.name === name);
  if (!device) throw new HttpError(404, `There is no device named "${name.slice(0, 64)}" (devices: ${target.devices.map((d) => d.name).join(', ') || 'none'}).`);
  if (target.state === 'stopping') throw new HttpError(409, 'The VM is stopping.');
  try {
    await device.restart();
  } catch (e) {
    if (e instanceof RestartRefused) throw new HttpError(409, `${e.message}.`);
    throw e;
  }
  return { status: 200, body: device.info() };
}

function describe(target: ControlTarget): unknown {
  return { state: target.state, ...target.summary(), devices: target.devices.map((d) => d.info()) };
}

async function metrics(target: ControlTarget): Promise<string> {
  const devices = target.devices;
  const stats = await Promise.all(devices.map((d) => d.stats()));
  return render([...target.metrics(), ...deviceFamilies(devices.map((d, i) => ({ info: d.info(), stats: stats[i]! }))), coreMemoryFamily()]);
}

function parseState(body: Buffer): 'paused' | 'running' {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw new HttpError(400, 'The body is not JSON; send {"state": "paused"} or {"state": "running"}.');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new HttpError(400, 'The body must be a JSON object such as {"state": "paused"}.');
  const keys = Object.keys(v);
  const extra = keys.filter((k) => k !== 'state');
  if (extra.length > 0) throw new HttpError(400, `Unknown field "${extra[0]!.slice(0, 64)}"; the body has only "state".`);
  const state = (v as { state?: unknown }).state;
  if (state !== 'paused' && state !== 'running') throw new HttpError(400, `"state" must be "paused" or "running", not ${JSON.stringify(state ?? null).slice(0, 64)}.`);
  return state;
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > MAX_BODY_BYTES) {
      req.resume();
      return reject(new HttpError(413, `The body is larger than ${MAX_BODY_BYTES} bytes.`));
    }
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        req.destroy();
        reject(new HttpError(413, `The body is larger than ${MAX_BODY_BYTES} bytes.`));
      } else parts.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}
