// The entry of a 9p device process serving one client over a stream socket
// (`splitvm device 9p --listen`, src/core/p9-listen.ts):
//   node dist/src/devices/p9/listen-main.js '<json config>'
// It runs in the same jail as a virtio device (launched by the same
// launcher) and under the same policy (policies/p9.policy): the same
// P9Session on the share's root fd, with messages framed by their size
// field on the connection instead of carried by a virtqueue.
//
// fds: 2 log, 3 the launcher's control socketpair (unused here), 4 the
// accepted connection, 5 the share's root directory (O_PATH).
import fs from 'node:fs';
import net from 'node:net';
import { pino, type Logger } from 'pino';
import * as libc from '../../sys/libc.js';
import { FD_BACKEND, FD_LOG, FD_MEMORY } from '../contract.js';
import { installPolicy } from '../seccomp/index.js';
import type { P9Options } from './backend.js';
import { parseP9Options } from './kind.js';
import { HEADER, MAX_MSIZE, TWRITE_HEADER } from './protocol.js';
import { P9Session, type Exchange } from './session.js';
import { Share } from './share.js';

/** The connection's fd: where the virtio device has its guest memory. */
const FD_CONNECTION = FD_MEMORY;
/** Requests of one client being served at once; reading stops beyond. */
const MAX_IN_FLIGHT = 64;

function fatal(log: Logger | undefined, msg: string): never {
  if (log) log.fatal(msg);
  else fs.writeSync(FD_LOG, `${JSON.stringify({ level: 60, time: Date.now(), msg })}\n`);
  libc.exitNow(1);
}

/** One request read off the connection: the whole message is in `msg`; Rread's data gets its own buffer. */
class SocketExchange implements Exchange {
  readonly replyCapacity = MAX_MSIZE;
  data: Buffer | null = null;
  constructor(readonly message: Buffer) {}
  writeData(count: number): Uint8Array[] | null {
    return this.message.length >= TWRITE_HEADER + count ? [this.message.subarray(TWRITE_HEADER, TWRITE_HEADER + count)] : null;
  }
  readSpace(max: number): Uint8Array[] {
    this.data = Buffer.allocUnsafe(max);
    return [this.data];
  }
}

function serve(conn: net.Socket, session: P9Session, log: Logger): void {
  // Received bytes not yet part of a whole message, kept as chunks (joined once per message, not per chunk).
  let chunks: Buffer[] = [];
  let total = 0;
  let inFlight = 0;
  const take = (): void => {
    while (total >= HEADER && inFlight < MAX_IN_FLIGHT) {
      if (chunks[0]!.length < HEADER) chunks = [Buffer.concat(chunks, total)];
      const size = chunks[0]!.readUInt32LE(0);
      if (size < HEADER || size > MAX_MSIZE) {
        log.warn({ size }, 'client sent a message size out of bounds: closing');
        libc.exitNow(0);
      }
      if (total < size) break;
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
      const msg = all.subarray(0, size);
      const rest = all.subarray(size);
      chunks = rest.length > 0 ? [rest] : [];
      total = rest.length;
      const ex = new SocketExchange(msg);
      inFlight++;
      void session.handle(ex).then((r) => {
        inFlight--;
        conn.cork();
        conn.write(r.bytes);
        if (r.dataBytes > 0 && ex.data) conn.write(ex.data.subarray(0, r.dataBytes));
        conn.uncork();
        if (conn.isPaused() && inFlight < MAX_IN_FLIGHT) conn.resume();
        take();
      });
    }
    if (inFlight >= MAX_IN_FLIGHT) conn.pause();
  };
  conn.on('data', (d: Buffer) => {
    chunks.push(d);
    total += d.length;
    take();
  });
  conn.on('end', () => {
    log.info('client closed the connection');
    libc.exitNow(0);
  });
  conn.on('error', (e) => {
    log.info({ err: e.message }, 'connection error: exiting');
    libc.exitNow(0);
  });
}

function main(): void {
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(process.argv[2] ?? '') as Record<string, unknown>;
  } catch {
    fatal(undefined, 'device config: argument is not valid JSON');
  }
  const seccomp = config.seccomp;
  if (seccomp !== 'enforce' && seccomp !== 'log' && seccomp !== 'off') fatal(undefined, 'device config: seccomp must be "enforce", "log" or "off"');
  const log = pino({ level: 'info', base: { device: String(config.name), pid: process.pid } }, pino.destination({ fd: FD_LOG, sync: true }));
  process.on('uncaughtException', (e) => fatal(log, `uncaught exception: ${e.stack ?? e.message}`));
  process.on('unhandledRejection', (e) => fatal(log, `unhandled rejection: ${(e as Error)?.stack ?? String(e)}`));
  let session: P9Session;
  let conn: net.Socket;
  let options: P9Options;
  try {
    options = parseP9Options(config.p9);
    session = new P9Session(new Share(FD_BACKEND, options.readOnly), log);
    // allowHalfOpen: Node would otherwise shut the socket down itself on the client's end (shutdown(2), which the policy kills)
    conn = new net.Socket({ fd: FD_CONNECTION, readable: true, writable: true, allowHalfOpen: true });
  } catch (e) {
    fatal(log, `device setup failed: ${(e as Error).message}`);
  }
  try {
    installPolicy('p9', seccomp);
  } catch (e) {
    fatal(log, `cannot install the seccomp policy: ${(e as Error).message}`);
  }
  log.info({ seccomp, readOnly: options.readOnly }, 'serving one 9P client');
  serve(conn, session, log);
}

main();
